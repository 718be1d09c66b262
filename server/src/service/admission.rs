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

use super::ServiceError;

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
    pub fn admit(&self, n: usize, field: &str) -> Result<Places, ServiceError> {
        if n > self.capacity as usize {
            return Err(ServiceError::invalid(
                field,
                format!("{n} images need {n} places but the server has {} (--parallel + --max-queue)", self.capacity),
            ));
        }
        self.places.clone().try_acquire_many_owned(n as u32).map_err(|_| {
            let free = self.places.available_permits();
            ServiceError::QueueFull(format!("{n} place(s) needed, {free} of {} free", self.capacity))
        })
    }

    /// Runs CPU-heavy pixel work (decoding, tiling, heatmap encoding) on the bounded pool. Waiting for
    /// a worker is cancellable: a request dropped while it waits never starts its job.
    pub async fn on_pixel_pool<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
        let _worker = self.pixel_pool.clone().acquire_owned().await.map_err(ServiceError::internal)?;
        tokio::task::spawn_blocking(job).await.map_err(ServiceError::internal)
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
    use tonic::Code;

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

    #[tokio::test]
    async fn the_pixel_pool_runs_at_most_its_width_at_once() {
        let a = Arc::new(Admission::new(8, 2));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (0..6).map(|_| {
            let (a, running, peak) = (a.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                a.on_pixel_pool(move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
                .await
                .unwrap()
            })
        });
        for j in jobs.collect::<Vec<_>>() {
            j.await.unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
