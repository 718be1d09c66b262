//! Test-only faults (cargo feature `fault-injection`, which only the integration tests enable):
//! threads that die on purpose and decode steps that take longer, so tests can check what a server
//! does when its engine dies or its work is slow, whatever the machine's speed. Without the feature
//! nothing here can trigger, so release binaries carry no trigger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `HEIE_FAULT=engine-panic:N`, `engine-exit:N` or `finalizer-panic:N` makes that thread panic (or
/// return) when it takes its N-th job (the warm-up evaluation is job 1).
#[cfg(feature = "fault-injection")]
pub fn injected_fault(thread: &str, job: u64) -> Option<&'static str> {
    let spec = std::env::var("HEIE_FAULT").ok()?;
    let (what, at) = spec.split_once(':')?;
    let at: u64 = at.parse().ok()?;
    let (who, kind) = what.split_once('-')?;
    (who == thread && at == job).then_some(if kind == "exit" { "exit" } else { "panic" })
}

/// Every decode step of one engine takes this much longer, so a test can hold a slot, or space decode steps, by a known time whatever the machine's
/// speed. A server process starts with `HEIE_FAULT_STEP_DELAY_MS=N`; an in-process test sets it on
/// its own engine with `Engine::set_step_delay` (other engines in the same test binary are not
/// touched). Without the feature it stays zero and nothing can change it.
#[derive(Clone, Default)]
pub struct StepDelay(Arc<AtomicU64>);

impl StepDelay {
    /// The delay a new engine starts with: `HEIE_FAULT_STEP_DELAY_MS` in test builds, else none.
    pub fn from_env() -> StepDelay {
        let delay = StepDelay::default();
        #[cfg(feature = "fault-injection")]
        if let Some(ms) = std::env::var("HEIE_FAULT_STEP_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            delay.set(std::time::Duration::from_millis(ms));
        }
        delay
    }

    /// The extra time of each step, if any.
    #[inline]
    pub fn get(&self) -> Option<std::time::Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us)),
        }
    }

    #[cfg(feature = "fault-injection")]
    pub fn set(&self, delay: std::time::Duration) {
        self.0.store(delay.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// `HEIE_FAULT_REFERENCE_COT=FILE` feeds every evaluation without a reference of its own the chain of
/// thought in FILE (teacher forcing), so a server process on the random-weight fixtures, which never
/// write grounding markup by themselves, writes the boxes a test needs (regions, their masks and
/// sentences). None when unset.
#[cfg(feature = "fault-injection")]
pub fn injected_reference_text() -> Option<String> {
    let path = std::env::var_os("HEIE_FAULT_REFERENCE_COT")?;
    Some(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("HEIE_FAULT_REFERENCE_COT {path:?}: {e}")))
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn injected_reference_text() -> Option<String> {
    None
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn injected_fault(_thread: &str, _job: u64) -> Option<&'static str> {
    None
}
