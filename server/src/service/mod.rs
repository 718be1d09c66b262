//! The gRPC service behind `heie serve`: the `heie.v1.Evaluator` RPCs over the pipeline, plus health,
//! reflection, deadlines, metrics and graceful shutdown.
//!
//! Transport types stop here: [`convert`] turns requests into validated pipeline inputs, [`events`]
//! turns pipeline events into wire events, and [`status`] maps every failure to a gRPC code.

pub mod admission;
pub mod auth;
pub mod batch;
pub mod convert;
pub mod deadline;
pub mod evaluate;
pub mod events;
pub mod info;
pub mod metrics;
pub mod outgoing;
pub mod request_log;
pub mod rerank;
pub mod server;
pub mod status;
pub mod tls;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_server::Evaluator as EvaluatorRpc;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pipeline::Evaluator;

pub use auth::{ApiKey, ApiKeys};
pub use crate::http::BodyOptions as HttpBodyOptions;
pub use server::{start, NetworkOptions, RunningServer, ServeOptions};
pub use tls::TlsFiles;
pub use status::ServiceError;

/// Limits and defaults the service enforces; reported by GetInfo.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    pub max_pixels: u64,
    pub max_batch: u32,
    pub parallel: u32,
    pub max_queue: u32,
    pub max_message_bytes: usize,
    pub max_tiles: u32,
    /// Used where a request leaves `max_tokens_per_section` at 0.
    pub default_max_tokens: u32,
    /// Pixel work (decoding, tiling, heatmap encoding) running at once.
    pub image_workers: u32,
    /// A stream whose client took nothing for this long while events waited is cancelled.
    pub stall_timeout: std::time::Duration,
}

/// State every RPC shares.
pub(crate) struct Shared {
    /// Set once the model is loaded and warmed up; until then every RPC answers UNAVAILABLE.
    evaluator: OnceLock<Arc<Evaluator>>,
    limits: ServiceLimits,
    /// Places (slots + queue) and the pixel pool: taken before a request's work starts.
    admission: admission::Admission,
    metrics: metrics::ServiceMetrics,
    /// Turns true at the end of the shutdown grace period: in-flight work is cancelled.
    stop: watch::Receiver<bool>,
    /// Turns true when shutdown begins, before the drain delay: health reads NOT_SERVING on every
    /// port from then on (gRPC health and the HTTP `/healthz` alike), while calls are still served.
    leaving: AtomicBool,
    /// Turns true when shutdown starts refusing new work (after the drain delay).
    draining: AtomicBool,
}

impl Shared {
    fn evaluator(&self) -> Result<Arc<Evaluator>, ServiceError> {
        if *self.stop.borrow() || self.draining.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let evaluator = self.evaluator.get().cloned().ok_or(ServiceError::NotReady)?;
        if let Some(cause) = evaluator.engine().liveness().death() {
            return Err(ServiceError::EngineDied(cause));
        }
        Ok(evaluator)
    }

    /// The error for an evaluation that failed after it started: UNAVAILABLE when a worker thread
    /// died under it (the server is about to restart; retrying is right), INTERNAL otherwise.
    fn failure(&self, message: String) -> ServiceError {
        match self.evaluator.get().and_then(|e| e.engine().liveness().death()) {
            Some(cause) => ServiceError::EngineDied(cause),
            None => ServiceError::internal(message),
        }
    }

    /// What health checks report: serving once the model is loaded, until shutdown begins (load
    /// balancers must stop sending before anything is refused, so this turns false first).
    pub(crate) fn is_serving(&self) -> bool {
        !self.leaving.load(Ordering::Acquire) && self.evaluator().is_ok()
    }

    /// Shutdown has begun: health says NOT_SERVING from now on; calls are still served until
    /// [`Shared::start_draining`].
    pub(crate) fn begin_leaving(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// After the drain delay: new calls are refused.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The limits the service enforces (the HTTP edge sizes its body limit from them).
    pub(crate) fn limits(&self) -> &ServiceLimits {
        &self.limits
    }

    fn defaults(&self) -> convert::RequestDefaults {
        convert::RequestDefaults {
            max_pixels: self.limits.max_pixels,
            max_tiles: self.limits.max_tiles,
            max_tokens_per_section: self.limits.default_max_tokens,
            max_batch: self.limits.max_batch,
            max_message_bytes: self.limits.max_message_bytes,
        }
    }

    fn device(&self) -> String {
        self.evaluator.get().map(|e| e.engine().info().device.clone()).unwrap_or_default()
    }

    /// Resolves when the server starts cancelling in-flight work.
    async fn stopping(&self) {
        let mut stop = self.stop.clone();
        // An error means the sender is gone, i.e. the server is gone: stop as well.
        let _ = stop.wait_for(|s| *s).await;
    }

    /// A call refused at the door (no or a wrong API key): counted and logged like every other
    /// finished call, so an operator sees who is being turned away.
    pub(crate) fn record_refusal(&self, rpc: &'static str, peer: Option<std::net::SocketAddr>, error: &ServiceError) {
        self.metrics.record_request(rpc, error.code());
        request_log::finish(&request_log::RequestLog::start(rpc, peer), "rejected", error.code());
    }

    /// The Prometheus exposition of the service and engine metrics.
    pub(crate) fn render_metrics(&self) -> String {
        let engine = self.evaluator.get().map(|e| e.engine().metrics().clone());
        self.metrics.render(engine.as_deref(), engine.is_some())
    }
}

/// The `heie.v1.Evaluator` implementation.
#[derive(Clone)]
pub struct EvaluatorService {
    shared: Arc<Shared>,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EvaluatorRpc for EvaluatorService {
    type EvaluateStream = EventStream<pb::EvaluateEvent>;
    type EvaluateBatchStream = EventStream<pb::BatchEvent>;

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<Self::EvaluateStream>, Status> {
        evaluate::handle(self.shared.clone(), request).await
    }

    async fn evaluate_batch(
        &self,
        request: Request<pb::EvaluateBatchRequest>,
    ) -> Result<Response<Self::EvaluateBatchStream>, Status> {
        batch::handle(self.shared.clone(), request).await
    }

    async fn rerank(&self, request: Request<pb::RerankRequest>) -> Result<Response<pb::RerankResponse>, Status> {
        rerank::handle(self.shared.clone(), request).await
    }

    async fn get_info(&self, request: Request<pb::GetInfoRequest>) -> Result<Response<pb::ServerInfo>, Status> {
        info::get(&self.shared, request.remote_addr()).map(Response::new).map_err(Status::from)
    }
}
