//! The in-flight request-body budget shared by every HTTP connection (`--max-body-bytes-in-flight`).
//!
//! Bodies are buffered whole before they are decoded, so without a shared budget N slow uploads
//! hold N bodies in memory at once, however few of them the queue could ever admit. Each body
//! reserves its bytes here before it is read (its Content-Length, or chunk by chunk when it has
//! none) and holds them in a [`BodyPermit`] that gives them back when dropped: on success, on any
//! error, on a client disconnect (the handler's future is dropped) and on a panic (unwinding drops it).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Permits are KiB: a semaphore counts at most `u32::MAX` permits per acquisition, and a
/// budget in bytes would pass that at 4 GiB.
const UNIT: u64 = 1024;

/// The budget: a semaphore whose permits are KiB of request body.
#[derive(Clone, Debug)]
pub(super) struct BodyBudget {
    permits: Arc<Semaphore>,
    total_units: u64,
}

/// Bytes of the budget held by one body; returned when dropped.
#[derive(Debug)]
pub(super) struct BodyPermit {
    budget: BodyBudget,
    held: Option<OwnedSemaphorePermit>,
}

/// The budget cannot take the bytes now.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Spent;

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub(super) fn new(bytes: u64) -> BodyBudget {
        let total_units = bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS as u64);
        BodyBudget { permits: Arc::new(Semaphore::new(total_units as usize)), total_units }
    }

    /// An empty permit, to be grown as a body arrives.
    pub(super) fn permit(&self) -> BodyPermit {
        BodyPermit { budget: self.clone(), held: None }
    }

    /// Bytes not held by any body now.
    pub(super) fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    /// The whole budget, in bytes.
    pub(super) fn total_bytes(&self) -> u64 {
        self.total_units * UNIT
    }
}

impl BodyPermit {
    /// Makes this permit hold at least `bytes`, at once or not at all (never waits: a body that
    /// does not fit is refused, not queued, so a flood cannot park connections here).
    pub(super) fn grow_to(&mut self, bytes: u64) -> Result<(), Spent> {
        let want = bytes.div_ceil(UNIT);
        let have = self.held.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have).map_err(|_| Spent)?;
        match self.budget.permits.clone().try_acquire_many_owned(more) {
            Ok(p) => {
                match &mut self.held {
                    Some(held) => held.merge(p),
                    None => self.held = Some(p),
                }
                Ok(())
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => Err(Spent),
        }
    }

    /// Bytes this permit holds.
    pub(super) fn bytes(&self) -> u64 {
        self.held.as_ref().map_or(0, |p| p.num_permits() as u64 * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_and_give_it_back_on_every_path() {
        let budget = BodyBudget::new(100 * 1024);
        assert_eq!(budget.total_bytes(), 100 * 1024);
        let mut a = budget.permit();
        a.grow_to(60 * 1024).unwrap();
        assert_eq!(a.bytes(), 60 * 1024);
        let mut b = budget.permit();
        assert_eq!(b.grow_to(50 * 1024), Err(Spent), "refused at once when it would pass the budget");
        assert_eq!(b.bytes(), 0, "a refused body holds nothing");
        // Growing chunk by chunk (a body without Content-Length) takes only the difference.
        b.grow_to(10 * 1024).unwrap();
        b.grow_to(40 * 1024).unwrap();
        assert_eq!(budget.available_bytes(), 0);
        assert_eq!(b.grow_to(40 * 1024 + 1), Err(Spent));
        assert_eq!(b.bytes(), 40 * 1024, "a failed growth keeps what it held");
        drop(a);
        assert_eq!(budget.available_bytes(), 60 * 1024, "dropping returns the bytes");
        // A panicking handler gives its bytes back while unwinding.
        let budget2 = budget.clone();
        let r = std::panic::catch_unwind(move || {
            let mut c = budget2.permit();
            c.grow_to(60 * 1024).unwrap();
            panic!("handler failed");
        });
        assert!(r.is_err());
        assert_eq!(budget.available_bytes(), 60 * 1024);
        drop(b);
        assert_eq!(budget.available_bytes(), 100 * 1024);
        // A partial KiB still counts as one.
        let mut d = budget.permit();
        d.grow_to(1).unwrap();
        assert_eq!(d.bytes(), 1024);
    }

    #[tokio::test]
    async fn a_dropped_request_future_gives_its_bytes_back() {
        let budget = BodyBudget::new(1 << 20);
        let held = budget.clone();
        // A handler stuck reading a stalled body, then cancelled (the client went away).
        let task = tokio::spawn(async move {
            let mut p = held.permit();
            p.grow_to(1 << 20).unwrap();
            std::future::pending::<()>().await;
            drop(p);
        });
        while budget.available_bytes() != 0 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        assert_eq!(budget.available_bytes(), 1 << 20);
    }
}
