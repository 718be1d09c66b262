//! Closed-loop load, the shape of every bench path: a fixed number of clients, each sending its next
//! request as soon as its last one is answered, until the run's request count is used up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use tokio::task::JoinHandle;

use super::report::{BenchRow, Sample};

/// The requests of one run, handed out to the clients one at a time.
pub struct RequestCounter {
    next: AtomicUsize,
    total: usize,
}

impl RequestCounter {
    pub fn new(total: usize) -> RequestCounter {
        RequestCounter { next: AtomicUsize::new(0), total }
    }

    /// The index of the next request to send (it picks the image), or None once all are taken.
    pub fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }
}

/// Waits for every client (the first error wins) and summarises their samples as `path`'s row; the
/// wall time runs from `started`, before the first request.
pub async fn summarise(
    path: &str,
    clients: Vec<JoinHandle<anyhow::Result<Vec<Sample>>>>,
    started: Instant,
) -> anyhow::Result<BenchRow> {
    let in_flight = clients.len();
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(client.await.context("a bench client panicked")??);
    }
    Ok(BenchRow::from_samples(path, in_flight, &samples, started.elapsed()))
}
