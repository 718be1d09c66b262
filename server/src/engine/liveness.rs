//! Death notices of the worker threads a server cannot run without (the engine thread, the
//! finalizer). A thread that dies — a panic, or an exit nobody asked for — records why here; the
//! service watches it, reports NOT_SERVING and exits so that a supervisor restarts the process,
//! instead of answering every later request with a misleading error.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Once};

use tokio::sync::watch;

/// Shared by the threads it watches and whoever waits for a death; cheap to clone.
#[derive(Clone, Debug)]
pub struct Liveness {
    death: Arc<watch::Sender<Option<String>>>,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness { death: Arc::new(watch::channel(None).0) }
    }
}

impl Liveness {
    /// Records a death; the first cause wins.
    pub fn record_death(&self, cause: String) {
        tracing::error!(%cause, "a worker thread died");
        self.death.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(cause);
                true
            } else {
                false
            }
        });
    }

    /// The cause, once a thread has died.
    pub fn death(&self) -> Option<String> {
        self.death.borrow().clone()
    }

    /// Resolves with the cause when a watched thread dies.
    pub async fn died(&self) -> String {
        let mut rx = self.death.subscribe();
        let cause = rx.wait_for(Option::is_some).await.map(|c| c.clone().unwrap_or_default());
        match cause {
            Ok(cause) => cause,
            // The sender lives in `self`, so it cannot be gone while we wait.
            Err(_) => std::future::pending().await,
        }
    }

    /// Runs `body` (a thread's whole life), recording a panic in it as that thread's death.
    ///
    /// The death is recorded by a panic hook, i.e. before unwinding drops anything: whoever sees a
    /// request's channel close because of the panic finds the cause already here.
    pub fn watch<T>(&self, thread: &str, body: impl FnOnce() -> T) -> Option<T> {
        install_panic_hook();
        let _ = WATCHED.try_with(|w| *w.borrow_mut() = Some((self.clone(), thread.to_string())));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = WATCHED.try_with(|w| w.borrow_mut().take());
        match outcome {
            Ok(v) => Some(v),
            Err(payload) => {
                // Already recorded by the hook; this only matters if the hook could not run.
                self.record_death(format!("the {thread} thread panicked: {}", panic_message(&*payload)));
                None
            }
        }
    }
}

thread_local! {
    /// The liveness this thread reports to, and the thread's name in the cause.
    static WATCHED: RefCell<Option<(Liveness, String)>> = const { RefCell::new(None) };
}

/// Chains a hook in front of the existing one (which still prints the panic) that records the
/// death of a watched thread at the moment it panics.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = WATCHED.try_with(|w| {
                if let Ok(w) = w.try_borrow() {
                    if let Some((liveness, thread)) = w.as_ref() {
                        liveness.record_death(format!("the {thread} thread panicked: {}", panic_message(info.payload())));
                    }
                }
            });
            previous(info);
        }));
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_recorded_once_with_its_message() {
        let l = Liveness::default();
        assert_eq!(l.watch("test", || 5), Some(5));
        assert_eq!(l.death(), None);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.died().await }
        });
        let l2 = l.clone();
        std::thread::spawn(move || l2.watch("engine", || panic!("boom {}", 7))).join().unwrap();
        l.record_death("second".into());
        assert_eq!(waiter.await.unwrap(), "the engine thread panicked: boom 7");
        assert_eq!(l.death().as_deref(), Some("the engine thread panicked: boom 7"));
    }
}
