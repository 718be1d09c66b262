//! HTTPS for the `--http` port: when the server has `--tls-cert`/`--tls-key` (and `--tls-client-ca`),
//! the page and the JSON API are served over TLS with the same certificate and client-certificate
//! rule as gRPC, so API keys never cross the network in clear on either port.
//!
//! A handshake flood must not starve other clients. Each handshake runs on its connection's own
//! task (as nginx runs each on its event loop and tonic on a task of its own), so none waits for
//! another; what a flood could still take is memory and sockets, bounded here:
//!
//! - per peer address: at most [`MAX_HANDSHAKES_PER_PEER`] handshakes at once; more from the same
//!   address are closed at once (nginx's `limit_conn` on `$binary_remote_addr`, applied where it
//!   costs least: before any TLS work);
//! - in total: at most [`MAX_HANDSHAKES`]; more are closed at once rather than queued, so a flood
//!   never stops the accept loop (the old design waited for a free handshake slot before accepting,
//!   and 128 silent sockets made every real client wait up to the 10 s handshake timeout);
//! - in time: the first byte must come within [`FIRST_BYTE_TIMEOUT`] (a real client sends its
//!   ClientHello at once), the whole handshake within [`HANDSHAKE_TIMEOUT`].
//!
//! A connection whose first byte is not a TLS handshake record but looks like an HTTP request gets
//! nginx's answer, a 400 with a sentence, instead of TLS bytes the client cannot show.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::serving::Code;
use crate::tls::{FIRST_BYTE_TIMEOUT, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_PEER};

use super::error::ApiError;

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1, content type 22).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The port's TLS acceptor and the handshakes it has in progress.
pub(super) struct TlsHandshakes {
    acceptor: TlsAcceptor,
    in_progress: Mutex<InProgress>,
}

#[derive(Default)]
struct InProgress {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// One handshake's place in the counts, given back when it ends however it ends.
struct Slot<'a> {
    owner: &'a TlsHandshakes,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        counts.total -= 1;
        if let Some(n) = counts.by_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_peer.remove(&self.ip);
            }
        }
    }
}

impl TlsHandshakes {
    pub(super) fn new(config: Arc<tokio_rustls::rustls::ServerConfig>) -> TlsHandshakes {
        TlsHandshakes { acceptor: TlsAcceptor::from(config), in_progress: Mutex::new(InProgress::default()) }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, InProgress> {
        self.in_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a handshake from `ip`, or `None` when that address or everyone is at the limit.
    fn slot(&self, ip: IpAddr) -> Option<Slot<'_>> {
        let mut counts = self.counts();
        let mine = counts.by_peer.get(&ip).copied().unwrap_or(0);
        if counts.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        counts.total += 1;
        *counts.by_peer.entry(ip).or_insert(0) += 1;
        Some(Slot { owner: self, ip })
    }

    /// Runs the handshake of a new connection: the TLS stream, or `None` (refused, silent, plain
    /// HTTP, failed or too slow; the socket is closed by dropping it).
    pub(super) async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream<TcpStream>> {
        let Some(_slot) = self.slot(peer.ip()) else {
            tracing::debug!(%peer, "HTTPS handshake refused: too many in progress from this address or in total");
            return None;
        };
        let started = tokio::time::Instant::now();
        let mut first = [0u8; 1];
        match tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(_) => return None,
            Err(_) => {
                tracing::debug!(%peer, "HTTPS connection sent nothing within {FIRST_BYTE_TIMEOUT:?}; closed");
                return None;
            }
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if first[0].is_ascii_uppercase() {
                answer_plain_http(tcp).await;
            }
            tracing::debug!(%peer, "plain HTTP (or not TLS) sent to the HTTPS port");
            return None;
        }
        let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "HTTPS handshake timed out");
                None
            }
        }
    }
}

/// The reply to plain HTTP on the HTTPS port (as nginx's "The plain HTTP request was sent to HTTPS
/// port"), as the API's JSON error. The request head is read first and the socket drained after:
/// closing with unread bytes makes the kernel send a reset, which can reach the client before the
/// reply and hide it.
async fn answer_plain_http(mut tcp: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_head).await;
    let body = serde_json::json!({ "error": ApiError::body(
        Code::InvalidArgument,
        // Clients recognise this start (heie_client: PLAIN_HTTP_TO_HTTPS) as a TLS mismatch, not a bad request.
        "this port speaks HTTPS: a plain HTTP request was sent to it; use an https:// address",
    ) })
    .to_string();
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let wrote = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(reply.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
    if matches!(wrote, Ok(Ok(()))) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async { while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {} }).await;
    }
}
