//! Failures as the API's JSON error body, `{"error":{"code":"INVALID_ARGUMENT","message":"…"}}`, with
//! the HTTP status of their gRPC code. The message is the same text a gRPC client gets.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::serving::{Code, ServingError};

/// An error reply of the HTTP API.
#[derive(Debug)]
pub(super) struct ApiError {
    code: Code,
    /// Usually the status of `code`; 413 for an oversized body, 408 for one too slow to
    /// arrive (DEADLINE_EXCEEDED is 504 otherwise: the server's own deadline), 405 for a wrong method.
    status: StatusCode,
    message: String,
    /// Ask the client to close the connection after this reply (`Connection: close`): sent when
    /// the request's body was left unread, so the connection cannot carry another request.
    close: bool,
}

impl ApiError {
    /// An error with the HTTP status of its gRPC code.
    pub(super) fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, status: http_status(code), message: message.into(), close: false }
    }

    /// An error whose HTTP status says more than its code's (413 Payload Too Large, 405, 404).
    pub(super) fn with_status(status: StatusCode, code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, status, message: message.into(), close: false }
    }

    /// The same error, with `Connection: close` on its reply.
    pub(super) fn closing(mut self) -> ApiError {
        self.close = true;
        self
    }

    /// The body of an error, also sent as the data of an SSE `error` event.
    pub(super) fn body(code: Code, message: &str) -> serde_json::Value {
        serde_json::json!({ "code": code.name(), "message": message })
    }
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": ApiError::body(self.code, &self.message) }).to_string();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        // Busy and loading are temporary: tell well-behaved clients when to come back.
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // RFC 9110 requires a challenge with every 401; RFC 6750 names the scheme the API takes.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"heie\""));
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The HTTP status of a gRPC code (the API contract's table).
pub(super) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // 499 is nginx's "client closed request"; nobody reads it, but logs and metrics do.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_contract_has_its_status() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::DeadlineExceeded, 504),
            (Code::Unavailable, 503),
            (Code::OutOfRange, 400),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }
}
