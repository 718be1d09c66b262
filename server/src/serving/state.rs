//! Where the server stands, held once: gRPC health, `/healthz`, GetInfo and admission all read this
//! one value, so no two of them can disagree (a load balancer probing HTTP stops sending to a
//! draining replica at the same instant as one probing gRPC health).

use tokio::sync::watch;

use super::error::ServingError;

/// The life of a server, in order; `Failed` and `Dead` can follow any earlier state.
#[derive(Debug, Clone, PartialEq)]
pub enum ServingState {
    /// The model is loading and warming up: health NOT_SERVING, calls refused as not ready.
    Loading,
    /// Health SERVING; calls served.
    Serving,
    /// Shutdown has begun (its drain delay): health NOT_SERVING so load balancers stop sending,
    /// while calls are still served.
    Leaving,
    /// After the drain delay: new calls are refused; calls in flight finish within the grace period.
    Draining,
    /// The grace period is over: calls still in flight are cancelled.
    Stopped,
    /// The model could not be loaded.
    Failed(String),
    /// A thread the server cannot run without died (the cause); the process is about to exit.
    Dead(String),
}

impl ServingState {
    /// What health checks report: SERVING only in [`ServingState::Serving`].
    pub fn is_serving(&self) -> bool {
        matches!(self, ServingState::Serving)
    }

    /// Whether a new call may start now, or why not.
    pub fn admits(&self) -> Result<(), ServingError> {
        match self {
            ServingState::Serving | ServingState::Leaving => Ok(()),
            ServingState::Loading | ServingState::Failed(_) => Err(ServingError::NotReady),
            ServingState::Draining | ServingState::Stopped => Err(ServingError::ShuttingDown),
            ServingState::Dead(cause) => Err(ServingError::EngineDied(cause.clone())),
        }
    }

    /// The server takes no more calls (or never will): health watchers are told NOT_SERVING and their
    /// streams end, so they do not hold connections open through a drain.
    pub fn ends_health_watches(&self) -> bool {
        matches!(self, ServingState::Draining | ServingState::Stopped | ServingState::Failed(_) | ServingState::Dead(_))
    }

    /// Why calls in flight must end now, once they must: the grace period ended or the engine died.
    pub fn cancels_in_flight(&self) -> Option<ServingError> {
        match self {
            ServingState::Stopped => Some(ServingError::ShuttingDown),
            ServingState::Dead(cause) => Some(ServingError::EngineDied(cause.clone())),
            _ => None,
        }
    }
}

/// The one state: set by the server's composition (loading, draining) and by the engine's watcher
/// (death), read everywhere else.
#[derive(Debug)]
pub struct StateCell {
    tx: watch::Sender<ServingState>,
}

impl Default for StateCell {
    fn default() -> StateCell {
        StateCell { tx: watch::channel(ServingState::Loading).0 }
    }
}

impl StateCell {
    pub fn get(&self) -> ServingState {
        self.tx.borrow().clone()
    }

    /// Moves to `next`, unless the server already failed or died (those are final).
    pub fn set(&self, next: ServingState) {
        self.tx.send_if_modified(|now| {
            if matches!(now, ServingState::Failed(_) | ServingState::Dead(_)) || *now == next {
                return false;
            }
            *now = next;
            true
        });
    }

    /// A receiver that sees every change (gRPC health's Watch streams from it).
    pub fn subscribe(&self) -> watch::Receiver<ServingState> {
        self.tx.subscribe()
    }

    /// Resolves with the error to end calls in flight with, once they must end.
    pub async fn cancelled(&self) -> ServingError {
        let mut rx = self.tx.subscribe();
        let error = match rx.wait_for(|s| s.cancels_in_flight().is_some()).await {
            Ok(state) => state.cancels_in_flight(),
            // The sender lives as long as the core; gone means the server is gone.
            Err(_) => None,
        };
        error.unwrap_or(ServingError::ShuttingDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_admission_and_cancellation_follow_one_state() {
        let cell = StateCell::default();
        assert!(!cell.get().is_serving());
        assert_eq!(cell.get().admits(), Err(ServingError::NotReady));
        cell.set(ServingState::Serving);
        assert!(cell.get().is_serving() && cell.get().admits().is_ok());
        cell.set(ServingState::Leaving);
        assert!(!cell.get().is_serving(), "health turns first");
        assert!(cell.get().admits().is_ok(), "calls are still served during the drain delay");
        cell.set(ServingState::Draining);
        assert_eq!(cell.get().admits(), Err(ServingError::ShuttingDown));
        let waiting = tokio::spawn({
            let mut rx = cell.subscribe();
            async move { rx.wait_for(|s| s.cancels_in_flight().is_some()).await.map(|s| s.clone()).ok() }
        });
        cell.set(ServingState::Dead("engine: boom".into()));
        assert_eq!(waiting.await.unwrap(), Some(ServingState::Dead("engine: boom".into())));
        assert_eq!(cell.cancelled().await, ServingError::EngineDied("engine: boom".into()));
        cell.set(ServingState::Serving);
        assert!(matches!(cell.get(), ServingState::Dead(_)), "death is final");
    }
}
