//! The serving core: everything a request needs whichever port it came in on — admission (places
//! and the pixel pool), the one submit path for one or many images, the request log, the metrics and
//! the one serving state — with no transport in it. `grpc/` and `http/` are thin edges over it: they
//! read their wire format into the `heie.v1` request messages (the schema of the core's inputs and
//! outputs), call [`evaluate::open`], [`batch::open`], [`rerank::run`] or [`info::get`], and map a
//! [`ServingError`]'s [`Code`] to their own statuses.
//!
//! | file | concept |
//! | --- | --- |
//! | `state.rs` | where the server stands (loading, serving, leaving, draining…), read by health and admission |
//! | `code.rs`, `error.rs` | the canonical outcome codes, and why a request could not be served |
//! | `admission.rs` | places (slots + queue) taken before any work, and the bounded pixel pool |
//! | `requests.rs` | request messages → checked images and options, every rejection naming its field |
//! | `submit.rs` | the one submit path: admit, check, decode and queue one or many images |
//! | `call.rs` | one call from start to end: its log line and its metrics, however it ends |
//! | `evaluate.rs`, `batch.rs`, `rerank.rs`, `info.rs` | the four calls |
//! | `encode.rs` | pipeline events → `heie.v1` events (heatmaps encoded, boxes in pixels) |
//! | `outgoing.rs` | a response stream that notices a client that stopped reading |
//! | `request_log.rs`, `metrics.rs` | the access log line and the Prometheus metrics |
//! | `api_keys.rs` | who may call (both edges check the same keys) |

pub mod admission;
pub mod api_keys;
pub mod batch;
mod call;
pub mod code;
pub mod encode;
pub mod error;
pub mod evaluate;
pub mod info;
pub mod metrics;
pub mod outgoing;
pub mod request_log;
pub mod requests;
pub mod rerank;
pub mod state;
mod submit;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::pipeline::Evaluator;

pub use api_keys::{ApiKey, ApiKeys};
pub use code::Code;
pub use error::ServingError;
pub use state::ServingState;

/// Limits and defaults the core enforces; reported by GetInfo.
#[derive(Debug, Clone)]
pub struct ServingLimits {
    pub max_pixels: u64,
    pub max_batch: u32,
    pub parallel: u32,
    /// Requests that may wait for a slot; with `parallel`, the places admission hands out (the one
    /// queue limit: the engine's own queue is sized from the same two numbers).
    pub max_queue: u32,
    pub max_message_bytes: usize,
    pub max_tiles: u32,
    /// Used where a request leaves `max_tokens_per_section` at 0.
    pub default_max_tokens: u32,
    /// Pixel work (decoding, tiling, heatmap encoding) running at once.
    pub image_workers: u32,
    /// A stream whose client took nothing for this long while events waited is cancelled.
    pub stall_timeout: Duration,
}

impl ServingLimits {
    /// Places admission hands out: one per image in a slot or waiting for one.
    pub fn places(&self) -> u32 {
        self.parallel + self.max_queue
    }
}

/// The core every edge calls.
pub struct Serving {
    /// Set once the model is loaded and warmed up.
    evaluator: OnceLock<Arc<Evaluator>>,
    limits: ServingLimits,
    admission: admission::Admission,
    metrics: metrics::ServiceMetrics,
    state: state::StateCell,
}

impl Serving {
    pub fn new(limits: ServingLimits) -> Serving {
        Serving {
            evaluator: OnceLock::new(),
            admission: admission::Admission::new(limits.places(), limits.image_workers),
            limits,
            metrics: metrics::ServiceMetrics::default(),
            state: state::StateCell::default(),
        }
    }

    /// The model is loaded and warmed up: from now on calls are served.
    pub fn set_ready(&self, evaluator: Arc<Evaluator>) {
        let _ = self.evaluator.set(evaluator);
        self.state.set(ServingState::Serving);
    }

    /// Where the server stands now.
    pub fn state(&self) -> ServingState {
        self.state.get()
    }

    /// Moves the server on (the composition calls this as it loads, drains and stops).
    pub fn set_state(&self, next: ServingState) {
        self.state.set(next);
    }

    /// Every change of the state, as it happens (gRPC health's Watch).
    pub fn watch_state(&self) -> tokio::sync::watch::Receiver<ServingState> {
        self.state.subscribe()
    }

    /// What health checks report (gRPC health and `/healthz` alike).
    pub fn is_serving(&self) -> bool {
        self.state.get().is_serving()
    }

    /// The evaluator, when a new call may start now.
    fn evaluator(&self) -> Result<Arc<Evaluator>, ServingError> {
        self.state.get().admits()?;
        self.evaluator.get().cloned().ok_or(ServingError::NotReady)
    }

    /// The loaded evaluator, whatever the state (tests and the benchmark read its metrics).
    pub fn loaded(&self) -> Option<Arc<Evaluator>> {
        self.evaluator.get().cloned()
    }

    /// The error for an evaluation that failed after it started: UNAVAILABLE when a worker thread
    /// died under it (the server is about to restart; retrying is right), INTERNAL otherwise.
    fn failure(&self, message: String) -> ServingError {
        match self.evaluator.get().and_then(|e| e.death()) {
            Some(cause) => ServingError::EngineDied(cause),
            None => ServingError::internal(message),
        }
    }

    /// The limits the core enforces (the HTTP edge sizes its body limit from them).
    pub fn limits(&self) -> &ServingLimits {
        &self.limits
    }

    fn defaults(&self) -> requests::RequestDefaults {
        requests::RequestDefaults::from(&self.limits)
    }

    fn device(&self) -> String {
        self.evaluator.get().map(|e| e.info().device.clone()).unwrap_or_default()
    }

    /// Resolves with the error to end in-flight calls with, once they must end (the grace period
    /// is over, or the engine died).
    async fn cancelled(&self) -> ServingError {
        self.state.cancelled().await
    }

    /// A call refused at the door (no or a wrong API key): counted and logged like every other
    /// finished call, so an operator sees who is being turned away.
    pub fn record_refusal(&self, rpc: &'static str, peer: Option<std::net::SocketAddr>, error: &ServingError) {
        self.metrics.record_request(rpc, error.code());
        request_log::finish(&request_log::RequestLog::start(rpc, peer), "rejected", error.code());
    }

    /// The Prometheus exposition of the service and engine metrics.
    pub fn render_metrics(&self) -> String {
        let engine = self.evaluator.get().map(|e| e.engine_metrics().clone());
        self.metrics.render(engine.as_deref(), engine.is_some())
    }
}

/// Sleeps until the deadline, or forever without one (for `select!`).
pub async fn expired(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
