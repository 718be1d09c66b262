//! The gRPC edge: `heie.v1.Evaluator`, `grpc.health.v1.Health` and reflection on one port, over the
//! serving core. Each method reads its deadline (`grpc-timeout`) and peer, calls the core, and maps
//! a [`crate::serving::ServingError`] to a status (`status.rs`); nothing else happens here.
//!
//! | file | concept |
//! | --- | --- |
//! | `status.rs` | the core's codes as gRPC statuses |
//! | `deadline.rs` | the `grpc-timeout` header as a deadline |
//! | `auth.rs` | the API key interceptor |
//! | `health.rs` | health over the core's one serving state |
//! | `listener.rs` | the tonic server: services, keepalive, stream limits, TLS, graceful stop |

mod auth;
pub mod deadline;
mod health;
mod listener;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_server::Evaluator as EvaluatorRpc;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::serving::outgoing::OutStream;
use crate::serving::{batch, evaluate, info, rerank, Serving};

pub use listener::{GrpcOptions, GrpcServer};

/// The `heie.v1.Evaluator` implementation.
#[derive(Clone)]
pub struct EvaluatorService {
    serving: Arc<Serving>,
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A core stream as tonic takes it: each failure as its status.
fn wire<T: Send + 'static>(events: OutStream<T>) -> EventStream<T> {
    Box::pin(events.map(|item| item.map_err(status::status)))
}

#[tonic::async_trait]
impl EvaluatorRpc for EvaluatorService {
    type EvaluateStream = EventStream<pb::EvaluateEvent>;
    type EvaluateBatchStream = EventStream<pb::BatchEvent>;

    async fn evaluate(&self, request: Request<pb::EvaluateRequest>) -> Result<Response<Self::EvaluateStream>, Status> {
        let (deadline, peer) = (deadline::from_metadata(request.metadata()), request.remote_addr());
        let events = evaluate::open(self.serving.clone(), request.into_inner(), deadline, peer).await.map_err(status::status)?;
        Ok(Response::new(wire(events)))
    }

    async fn evaluate_batch(&self, request: Request<pb::EvaluateBatchRequest>) -> Result<Response<Self::EvaluateBatchStream>, Status> {
        let (deadline, peer) = (deadline::from_metadata(request.metadata()), request.remote_addr());
        let events = batch::open(self.serving.clone(), request.into_inner(), deadline, peer).await.map_err(status::status)?;
        Ok(Response::new(wire(events)))
    }

    async fn rerank(&self, request: Request<pb::RerankRequest>) -> Result<Response<pb::RerankResponse>, Status> {
        let (deadline, peer) = (deadline::from_metadata(request.metadata()), request.remote_addr());
        let ranked = rerank::run(self.serving.clone(), request.into_inner(), deadline, peer).await.map_err(status::status)?;
        Ok(Response::new(ranked))
    }

    async fn get_info(&self, request: Request<pb::GetInfoRequest>) -> Result<Response<pb::ServerInfo>, Status> {
        info::get(&self.serving, request.remote_addr()).map(Response::new).map_err(status::status)
    }
}
