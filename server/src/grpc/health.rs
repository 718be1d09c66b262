//! `grpc.health.v1.Health` over the core's one serving state: Check reads it, Watch streams its
//! changes. Nothing is copied into a second health store, so gRPC health and `/healthz` cannot
//! disagree, even for an instant.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt as _};

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::serving::{Serving, ServingState};

/// The health service of the gRPC port.
pub fn service(serving: Arc<Serving>) -> HealthServer<StateHealth> {
    HealthServer::new(StateHealth { serving })
}

/// Health answered from the serving state.
pub struct StateHealth {
    serving: Arc<Serving>,
}

/// The services health knows: the server as a whole ("") and the evaluator; both share one state.
fn known(service: &str) -> bool {
    service.is_empty() || service == heie_proto::EVALUATOR_SERVICE_NAME
}

fn response(state: &ServingState) -> HealthCheckResponse {
    let status = if state.is_serving() { ServingStatus::Serving } else { ServingStatus::NotServing };
    HealthCheckResponse { status: status as i32 }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Health for StateHealth {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if !known(service) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        Ok(Response::new(response(&self.serving.state())))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        if !known(&request.get_ref().service) {
            // The protocol: an unknown service is reported, not refused, and the call stays open.
            let unknown = HealthCheckResponse { status: ServingStatus::ServiceUnknown as i32 };
            let stream = tokio_stream::once(Ok(unknown)).chain(tokio_stream::pending());
            return Ok(Response::new(Box::pin(stream)));
        }
        // The current status at once, then one message per change of what health reports, until
        // the server stops taking calls: the stream ends then (after NOT_SERVING), so an open Watch
        // does not hold the connection through the drain's grace period.
        let mut states = self.serving.watch_state();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let state = states.borrow_and_update().clone();
                let now = response(&state);
                if last.replace(now.status) != Some(now.status) && tx.send(Ok(now)).await.is_err() {
                    return;
                }
                if state.ends_health_watches() {
                    return;
                }
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
