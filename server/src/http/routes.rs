//! The router: `/healthz`, the `/v1/*` API behind [`access::v1_access`], the page, and JSON answers
//! for unknown paths and wrong methods, all behind the `Host` check and the cross-site gate. Each
//! handler reads its request message and hands it to the same service function the gRPC method calls.

use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use heie_proto::v1 as pb;

use super::error::ApiError;
use super::{access, cross_site, deadline, host_check, json, page, sse, AppState};
use crate::serving::{evaluate, info, rerank, Code};

pub(super) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/info", get(get_info))
        .route("/v1/evaluate", post(post_evaluate))
        .route("/v1/rerank", post(post_rerank))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::v1_access));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(page::index))
        .route("/static/{file}", get(page::asset))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        // Outermost last: a foreign Host is refused before anything else looks at the request,
        // then cross-site requests (and preflights, which no route has) before the key check.
        .layer(middleware::from_fn_with_state(state.clone(), cross_site::check))
        .layer(middleware::from_fn_with_state(state.clone(), host_check::check))
        .with_state(state)
}

/// 200 `{"status":"SERVING"}` once the model is loaded and warmed up; 503 `NOT_SERVING` while
/// loading and from the start of shutdown (before its drain delay, like gRPC health).
async fn healthz(State(state): State<AppState>) -> Response {
    let serving = state.serving.is_serving();
    let (status, word) = if serving { (StatusCode::OK, "SERVING") } else { (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING") };
    (status, [("content-type", "application/json")], format!("{{\"status\":\"{word}\"}}")).into_response()
}

async fn get_info(State(state): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Result<Response, ApiError> {
    Ok(json::reply(&info::get(&state.serving, Some(peer))?))
}

/// Answers with the evaluation's events as SSE once it is admitted; refusals before that are plain
/// JSON errors.
async fn post_evaluate(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = deadline::from_headers(&headers)?;
    let request: pb::EvaluateRequest = json::read(&headers, body, &state.body, "EvaluateRequest").await?;
    let events = evaluate::open(state.serving.clone(), request, deadline, Some(peer)).await?;
    Ok(sse::response(events))
}

/// If the client disconnects, this future is dropped with the service call inside it, which
/// cancels every image still being scored.
async fn post_rerank(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = deadline::from_headers(&headers)?;
    let request: pb::RerankRequest = json::read(&headers, body, &state.body, "RerankRequest").await?;
    Ok(json::reply(&rerank::run(state.serving.clone(), request, deadline, Some(peer)).await?))
}

async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route; the API is GET /healthz, GET /v1/info, POST /v1/evaluate, POST /v1/rerank")
}

async fn wrong_method() -> ApiError {
    ApiError::with_status(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, "this route does not take that method")
}
