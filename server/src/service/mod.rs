//! The gRPC service behind `heie serve`: the `heie.v1.Evaluator` RPCs over the pipeline, plus health,
//! reflection, deadlines, metrics and graceful shutdown.
//!
//! Transport types stop here: [`convert`] turns requests into validated pipeline inputs, [`events`]
//! turns pipeline events into wire events, and [`status`] maps every failure to a gRPC code.

pub mod batch;
pub mod convert;
pub mod deadline;
pub mod evaluate;
pub mod events;
pub mod info;
pub mod metrics;
pub mod rerank;
pub mod server;
pub mod status;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_server::Evaluator as EvaluatorRpc;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pipeline::Evaluator;

pub use server::{start, RunningServer, ServeOptions};
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
}

/// State every RPC shares.
pub(crate) struct Shared {
    /// Set once the model is loaded and warmed up; until then every RPC answers UNAVAILABLE.
    evaluator: OnceLock<Arc<Evaluator>>,
    limits: ServiceLimits,
    metrics: metrics::ServiceMetrics,
    /// Turns true at the end of the shutdown grace period: in-flight work is cancelled.
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn evaluator(&self) -> Result<Arc<Evaluator>, ServiceError> {
        if *self.stop.borrow() {
            return Err(ServiceError::ShuttingDown);
        }
        self.evaluator.get().cloned().ok_or(ServiceError::NotReady)
    }

    fn defaults(&self) -> convert::RequestDefaults {
        convert::RequestDefaults {
            max_pixels: self.limits.max_pixels,
            max_tiles: self.limits.max_tiles,
            max_tokens_per_section: self.limits.default_max_tokens,
            max_batch: self.limits.max_batch,
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

    async fn get_info(&self, _request: Request<pb::GetInfoRequest>) -> Result<Response<pb::ServerInfo>, Status> {
        let result = info::server_info(&self.shared);
        let code = result.as_ref().map(|_| tonic::Code::Ok).unwrap_or_else(|e| e.code());
        self.shared.metrics.record_request("GetInfo", code);
        result.map(Response::new).map_err(Status::from)
    }
}
