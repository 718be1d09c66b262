//! The one gate every `/v1/*` request passes before its handler, and the place API keys are checked.
//!
//! `/healthz` and the page's static files do not pass here: orchestrators and browsers load them
//! without a key. Requests refused here get the same JSON error body as every other failure
//! (UNAUTHENTICATED → 401, PERMISSION_DENIED → 403).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

use super::AppState;

/// Lets a `/v1/*` request through to its handler, or answers for it: with `--api-key`/`--api-key-file`
/// set, the request must carry `Authorization: Bearer KEY`, checked by the same [`ApiKeys`] as the
/// gRPC port (constant time, reloaded on SIGHUP), so both transports refuse alike.
pub(super) async fn v1_access(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.keys.check(authorization) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            state.serving.record_refusal(rpc_of(request.uri().path()), peer, &e);
            ApiError::from(e).into_response()
        }
    }
}

/// The RPC a `/v1/*` path stands for, as the request log and the metrics name it.
pub(super) fn rpc_of(path: &str) -> &'static str {
    match path {
        "/v1/evaluate" => "Evaluate",
        "/v1/rerank" => "Rerank",
        "/v1/info" => "GetInfo",
        _ => "unknown",
    }
}
