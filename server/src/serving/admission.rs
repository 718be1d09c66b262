//! Admission before work: a request takes its places (one per image) before any of its bytes are
//! decoded, and pixel work runs on a bounded pool.
//!
//! A place is a slot or a queue position of the engine: there are `--parallel + --max-queue` of
//! them. A request that cannot have all its places at once is refused RESOURCE_EXHAUSTED on the spot,
//! so a flood of large images costs the server their compressed bytes only. An admitted request then
//! decodes, tiles and encodes heatmaps on the pixel pool, `--image-workers` jobs at a time, so peak
//! memory is bounded by the pool's width times the largest image, not by the number of requests.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServingError;

/// The places a request holds until its stream ends; dropping it frees them.
pub(crate) type Places = OwnedSemaphorePermit;

/// The service's admission state.
pub(crate) struct Admission {
    places: Arc<Semaphore>,
    capacity: u32,
    pixel_pool: Arc<Semaphore>,
}

impl Admission {
    pub fn new(capacity: u32, image_workers: u32) -> Admission {
        Admission {
            places: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            pixel_pool: Arc::new(Semaphore::new(image_workers.max(1) as usize)),
        }
    }

    /// Takes `n` places now or fails: RESOURCE_EXHAUSTED when they are taken, INVALID_ARGUMENT (on
    /// `field`) when `n` is more than the server ever has, so a retry could never succeed.
    pub fn admit(&self, n: usize, field: &str) -> Result<Places, ServingError> {
        if n > self.capacity as usize {
            return Err(ServingError::invalid(
                field,
                format!("{n} images need {n} places but the server has {} (--parallel + --max-queue)", self.capacity),
            ));
        }
        self.places.clone().try_acquire_many_owned(n as u32).map_err(|_| {
            let free = self.places.available_permits();
            ServingError::QueueFull(format!("{n} place(s) needed, {free} of {} free", self.capacity))
        })
    }

    /// Runs CPU-heavy pixel work (decoding, tiling, heatmap encoding) on the bounded pool. Waiting for
    /// a worker is cancellable: a request dropped while it waits never starts its job.
    pub async fn on_pixel_pool<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ServingError> {
        let _worker = self.pixel_pool.clone().acquire_owned().await.map_err(ServingError::internal)?;
        tokio::task::spawn_blocking(job).await.map_err(ServingError::internal)
    }
}

/// The default width of the pixel pool: the cores, at most 4 (a 40-megapixel decode holds about
/// 120 MB while it runs).
pub fn default_image_workers() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2).min(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::Code;

    #[tokio::test]
    async fn places_are_all_or_nothing_and_freed_on_drop() {
        let a = Admission::new(3, 1);
        let two = a.admit(2, "images").unwrap();
        assert_eq!(a.admit(2, "images").unwrap_err().code(), Code::ResourceExhausted);
        let one = a.admit(1, "image").unwrap();
        assert_eq!(a.admit(1, "image").unwrap_err().code(), Code::ResourceExhausted);
        drop(two);
        drop(one);
        assert!(a.admit(3, "images").is_ok());
        assert_eq!(a.admit(4, "images").unwrap_err().code(), Code::InvalidArgument);
    }

    /// Jobs wait at a gate until the test opens it, so "two at once" is reached by waiting for it,
    /// not by hoping 30 ms sleeps overlap on a busy machine; a third job would get in at once if the
    /// pool let it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pixel_pool_runs_at_most_its_width_at_once() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        use std::time::{Duration, Instant};
        let a = Arc::new(Admission::new(8, 2));
        let (running, peak, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let (a, running, peak, gate) = (a.clone(), running.clone(), peak.clone(), gate.clone());
                tokio::spawn(async move {
                    a.on_pixel_pool(move || {
                        peak.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                        while !gate.load(SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while running.load(SeqCst) < 2 {
            assert!(Instant::now() < deadline, "two jobs never ran at once");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Give a third job every chance to (wrongly) start before the gate opens.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(running.load(SeqCst), 2, "the pool ran more jobs than its width");
        gate.store(true, SeqCst);
        for j in jobs {
            j.await.unwrap();
        }
        assert_eq!(peak.load(SeqCst), 2);
    }
}
