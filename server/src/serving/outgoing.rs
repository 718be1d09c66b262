//! The response stream of a streaming RPC, watched for a client that stopped reading.
//!
//! HTTP/2 flow control stops the transport from taking events once a client stops reading; from
//! then on its events wait here. A stream whose events have waited `--stall-timeout` without the
//! transport taking one is stalled: its evaluation is cancelled (freeing its slot), the waiting
//! events are dropped at once, and the stream ends with the failure — all without a thread or a
//! blocked task per stalled client.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;

use super::ServingError;

type Item<T> = Result<T, ServingError>;

struct Inner<T> {
    rx: Option<mpsc::Receiver<Item<T>>>,
    failure: Option<ServingError>,
    waker: Option<Waker>,
}

struct State<T> {
    inner: Mutex<Inner<T>>,
    /// Events the transport has taken so far.
    taken: AtomicU64,
}

impl<T> State<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stream an edge hands to its transport (mapping the error to its own wire form).
pub struct OutStream<T> {
    state: Arc<State<T>>,
}

/// The service's side: sends events and ends the stream. It holds the stream's state weakly: when
/// the transport drops the stream (the client reset it), the receiver goes with it and `tx.closed()`
/// tells the service at once.
pub(crate) struct Outgoing<T> {
    pub tx: mpsc::Sender<Item<T>>,
    state: Weak<State<T>>,
}

/// A stream buffering up to `buffer` events.
pub(crate) fn channel<T>(buffer: usize) -> (Outgoing<T>, OutStream<T>) {
    let (tx, rx) = mpsc::channel(buffer);
    let state = Arc::new(State { inner: Mutex::new(Inner { rx: Some(rx), failure: None, waker: None }), taken: AtomicU64::new(0) });
    (Outgoing { tx, state: Arc::downgrade(&state) }, OutStream { state })
}

impl<T> Stream for OutStream<T> {
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut inner = self.state.lock();
        let Some(rx) = inner.rx.as_mut() else { return Poll::Ready(inner.failure.take().map(Err)) };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                self.state.taken.fetch_add(1, Ordering::Relaxed);
                if item.is_err() {
                    // A status is the stream's last item.
                    inner.rx = None;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                inner.rx = None;
                Poll::Ready(inner.failure.take().map(Err))
            }
            Poll::Pending => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Outgoing<T> {
    /// Ends the stream with `status`, never waiting on the client: queued at once when there is
    /// room, otherwise the events still waiting are dropped and the status takes their place.
    pub fn fail(&self, status: ServingError) {
        if let Err(e) = self.tx.try_send(Err(status)) {
            let status = match e {
                mpsc::error::TrySendError::Full(Err(s)) | mpsc::error::TrySendError::Closed(Err(s)) => s,
                _ => return,
            };
            let Some(state) = self.state.upgrade() else { return };
            let mut inner = state.lock();
            inner.rx = None;
            inner.failure = Some(status);
            if let Some(w) = inner.waker.take() {
                w.wake();
            }
        }
    }

    /// Resolves once events have waited `timeout` without the transport taking any.
    pub async fn stalled(&self, timeout: Duration) {
        let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let taken_now = || self.state.upgrade().map(|s| s.taken.load(Ordering::Relaxed));
        let Some(mut last_taken) = taken_now() else { return std::future::pending().await };
        let mut waiting_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(tick).await;
            let waiting = self.tx.max_capacity() - self.tx.capacity();
            // The stream is gone: the client left, which `tx.closed()` reports.
            let Some(taken) = taken_now() else { return std::future::pending().await };
            if waiting == 0 || taken != last_taken {
                // Nothing waits, or the client took something: it is reading.
                waiting_since = if waiting == 0 { None } else { Some(Instant::now()) };
                last_taken = taken;
                continue;
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= timeout {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_reader_is_never_stalled_and_a_non_reader_is_after_the_timeout() {
        let (out, mut stream) = channel::<u32>(4);
        for i in 0..4 {
            out.tx.send(Ok(i)).await.unwrap();
        }
        // The client reads one event a second: never stalled over a 3 s timeout.
        let reader = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                stream.next().await;
            }
        };
        tokio::select! {
            _ = reader => {}
            _ = out.stalled(Duration::from_secs(3)) => panic!("a reading client was called stalled"),
        }
        // Now nobody reads what waits: stalled after about the timeout.
        out.tx.send(Ok(9)).await.unwrap();
        let t0 = Instant::now();
        out.stalled(Duration::from_secs(3)).await;
        assert!(t0.elapsed() >= Duration::from_secs(3) && t0.elapsed() < Duration::from_secs(5));
        out.fail(ServingError::Stalled(3.0));
        let next = stream.next().await.unwrap();
        assert_eq!(next.unwrap(), 9, "room was left, so the status queued behind the waiting event");
        assert_eq!(stream.next().await.unwrap().unwrap_err().code(), crate::serving::Code::Cancelled);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn failing_a_full_stream_drops_what_waits_and_ends_it_with_the_status() {
        let (out, mut stream) = channel::<u32>(2);
        out.tx.send(Ok(1)).await.unwrap();
        out.tx.send(Ok(2)).await.unwrap();
        out.fail(ServingError::Stalled(3.0));
        assert_eq!(stream.next().await.unwrap().unwrap_err().code(), crate::serving::Code::Cancelled);
        assert!(stream.next().await.is_none());
        assert!(out.tx.send(Ok(3)).await.is_err(), "the sender sees the stream gone");
    }
}
