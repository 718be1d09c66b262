//! The `--http` port's connections: our own accept loop over hyper's HTTP/1.1 connection, because
//! `axum::serve` exposes neither timeouts nor a bound on open connections, and without them a
//! client sending headers a byte a second, or simply holding sockets open, keeps them for ever.
//!
//! - `--max-connections`: each connection holds a permit from accept to close; with none left the
//!   loop stops accepting and newcomers wait in the kernel's accept queue (as nginx does when its
//!   `worker_connections` are used up) until a connection closes, so file handles cannot run out.
//! - `--header-timeout`: a request head must have arrived this long after the connection opened
//!   (first request) or after its first byte (later requests); otherwise the connection is closed.
//! - `--keep-alive-timeout`: a connection with no request in progress and no byte of a next one is
//!   closed after this long.
//!
//! hyper's own `header_read_timeout` is off: its clock starts when hyper begins waiting for a head,
//! which on a kept-alive connection is the end of the previous reply, so it cannot tell an idle
//! keep-alive connection (cheap, and what browsers do) from a slow head (an attack). We tell them
//! apart by watching the bytes read while no request is in progress.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::Instant;

use super::tls_handshake::TlsHandshakes;

/// Time limits and the connection bound of the HTTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub header_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

/// 10 s: a request head is a few hundred bytes (at most hyper's ~400 KB buffer); a client that cannot
/// send it in 10 s on any working link is broken or hostile. (nginx's `client_header_timeout` is 60 s,
/// from the dial-up era; a slow-header client then holds a socket six times as long.)
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// 30 s: longer than the page's health poll (15 s), so an open page keeps one connection; an idle
/// connection costs one file handle and a few KB, which `--max-connections` bounds anyway.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// 512: room under the common 1024 open-files soft limit (systemd's default) for the gRPC port's
/// connections, the model files and the log, with the HTTP port full.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Accepts connections on `listener` and serves `router` on each (over TLS when `tls` is given)
/// until `stop` fires; then stops accepting, asks every connection to close after its request in
/// progress, and returns once all have closed.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsHandshakes>>,
    router: Router,
    options: ConnectionOptions,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        // Nagle's algorithm off: each SSE event goes out at once instead of waiting for the
        // client's delayed ACK (~40 ms).
        let _ = tcp.set_nodelay(true);
        let (tls, router, closing) = (tls.clone(), router.clone(), closing_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(tcp, peer, tls, router, options, closing).await;
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a permit until it closes: all permits back means all closed.
    let _ = permits.acquire_many(options.max_connections as u32).await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<TlsHandshakes>>,
    router: Router,
    options: ConnectionOptions,
    mut closing: watch::Receiver<bool>,
) {
    let opened = Instant::now();
    match tls {
        None => serve_io(tcp, peer, router, options, opened, closing).await,
        Some(tls) => {
            let stream = tokio::select! {
                stream = tls.accept(tcp, peer) => stream,
                _ = closing.wait_for(|c| *c) => None,
            };
            if let Some(stream) = stream {
                serve_io(stream, peer, router, options, opened, closing).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes, closing it on the timeouts above.
async fn serve_io<IO>(io: IO, peer: SocketAddr, router: Router, options: ConnectionOptions, opened: Instant, mut closing: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reads, reads_rx) = watch::channel(0u64);
    let (activity, activity_rx) = watch::channel(Activity::default());
    let activity = Arc::new(activity);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The peer address goes into each request's log line, as on the gRPC port.
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_progress = InProgress::enter(&activity);
        let mut router = router.clone();
        async move {
            // A Router is always ready, so it is called without poll_ready.
            let response = tower_service::Service::call(&mut router, request).await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { inner: body, _in_progress: in_progress })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(Watched { io, reads }), service);
    tokio::pin!(conn);
    let timers = expiry(options, opened, activity_rx, reads_rx);
    tokio::pin!(timers);
    let mut draining = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            why = &mut timers, if !draining => match why {
                // hyper closes an idle connection at once, and one with a request after its reply.
                Expired::Idle => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                // A head that does not finish: nothing to answer, close the socket (as nginx does).
                Expired::Header => {
                    tracing::debug!(%peer, "HTTP request head not received within --header-timeout; closing");
                    return;
                }
            },
        }
    }
}

/// Why a connection's clock ran out.
enum Expired {
    /// No request in progress and none begun for `--keep-alive-timeout`.
    Idle,
    /// A request head began (or the connection opened) and did not finish within `--header-timeout`.
    Header,
}

/// What the timers see of a connection's requests.
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    /// Requests whose reply has not been sent (or dropped) yet.
    in_progress: usize,
    /// Requests begun since the connection opened: a request that begins and ends between two
    /// looks of the timers still shows here.
    started: u64,
}

/// Resolves when the connection has been idle or slow past its limit; never while a request is in
/// progress (its body and reply have limits of their own: `--body-timeout`, `--stall-timeout`).
async fn expiry(options: ConnectionOptions, opened: Instant, mut activity: watch::Receiver<Activity>, mut reads: watch::Receiver<u64>) -> Expired {
    // The first head is due from the moment the connection opens: a client connects to send one.
    let mut head_due = Some(opened + options.header_timeout);
    loop {
        // The watch's read guard must be gone before the next await (it is not Send).
        let seen = activity.wait_for(|a| a.in_progress == 0).await.map(|a| a.started);
        let Ok(seen) = seen else { return std::future::pending().await };
        // Any request begun since `since` ends the head phase. For the first head that is the
        // connection's start: hyper may have read, answered and finished a whole request before
        // these timers were first polled.
        let (due, since) = match head_due.take() {
            Some(due) => (due, 0),
            None => {
                reads.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep(options.keep_alive_timeout) => return Expired::Idle,
                    _ = activity.wait_for(|a| a.started != seen) => continue,
                    // A byte arrived with no request in progress: the next head has begun.
                    _ = reads.changed() => (Instant::now() + options.header_timeout, seen),
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => return Expired::Header,
            _ = activity.wait_for(|a| a.started != since) => {}
        }
    }
}

/// A request in progress on a connection, from its head until its reply's body is done or dropped.
struct InProgress(Arc<watch::Sender<Activity>>);

impl InProgress {
    fn enter(activity: &Arc<watch::Sender<Activity>>) -> InProgress {
        activity.send_modify(|a| {
            a.in_progress += 1;
            a.started += 1;
        });
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_progress -= 1);
    }
}

/// A reply body that keeps its request counted as in progress until hyper has sent or dropped it
/// (an SSE stream is a request in progress for as long as it streams).
struct Tracked {
    inner: Body,
    _in_progress: InProgress,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, counting reads that brought bytes (how the timers see a head begin).
struct Watched<IO> {
    io: IO,
    reads: watch::Sender<u64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.reads.send_modify(|n| *n += 1);
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
