//! Cross-site requests to `/v1/*`: refused unless they come from this server's own page or an
//! origin named by `--cors-origin`.
//!
//! A page on another site can make a visitor's browser send "simple" requests without asking the
//! server first: a form POST (`text/plain`, `multipart/form-data`, urlencoded) or a `no-cors`
//! fetch. The page cannot read the answers, but the server still runs the evaluation: on a server
//! without a key, any website its users visit could spend its GPU. Two rules close that:
//!
//! - a POST must say `Content-Type: application/json` — a browser cannot send that to another
//!   origin without a CORS preflight, which this server only answers for `--cors-origin` origins;
//! - a request with an `Origin` header (browsers send one with every POST and every cross-origin
//!   fetch) must come from this server's own origin or a `--cors-origin` one.
//!
//! CORS is opt-in: `--cors-origin https://app.example` (repeatable; `*` for any) answers preflights
//! from those origins and lets their pages read replies.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::serving::{Code, ServingError};

use super::error::ApiError;
use super::AppState;

/// The origins of `--cors-origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins {
    any: bool,
    /// `scheme://host[:port]`, lower case, no trailing slash.
    origins: Vec<String>,
}

impl CorsOrigins {
    /// Parses `--cors-origin` values: `http(s)://host[:port]` (as browsers write `Origin`) or `*`.
    pub fn new(configured: &[String]) -> Result<CorsOrigins, String> {
        let mut out = CorsOrigins::default();
        for entry in configured {
            let entry = entry.trim().trim_end_matches('/');
            if entry == "*" {
                out.any = true;
                continue;
            }
            let rest = entry.strip_prefix("http://").or_else(|| entry.strip_prefix("https://"));
            let valid = rest.is_some_and(|r| !r.is_empty() && !r.contains('/') && !r.contains('?') && !r.contains('#'));
            if !valid {
                return Err(format!("--cors-origin: {entry:?} is not an origin (scheme://host[:port], as a browser sends it, or `*`)"));
            }
            out.origins.push(entry.to_ascii_lowercase());
        }
        Ok(out)
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// The headers a preflight may ask for: what the page and clients send.
const ALLOWED_HEADERS: &str = "authorization, content-type, accept, x-heie-timeout-ms";

/// The gate: preflights answered, cross-site and non-JSON requests to `/v1/*` refused, CORS
/// headers added to replies for `--cors-origin` origins.
pub(super) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let cors = origin.as_deref().filter(|o| state.cors.allows(o)).map(str::to_string);
    let preflight = request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let refusal = if preflight {
        match &cors {
            Some(origin) => return preflight_answer(origin),
            None => Some(forbidden_origin(origin.as_deref().unwrap_or("(no origin)"))),
        }
    } else if origin.as_deref().is_some_and(|o| cors.is_none() && !same_origin(o, request.headers(), state.tls)) {
        Some(forbidden_origin(origin.as_deref().unwrap_or_default()))
    } else if request.method() == Method::POST && !is_json(request.headers()) {
        Some(ServingError::invalid(
            "content-type",
            "send the body with `Content-Type: application/json` (other types are refused: browsers send them \
             across sites without asking, so any web page could make its visitors run evaluations here)",
        ))
    } else {
        None
    };
    if let Some(error) = refusal {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        state.serving.record_refusal(super::access::rpc_of(request.uri().path()), peer, &error);
        let reply = match error.code() {
            // 415 says which header to fix; the body is left unread, so the connection closes.
            Code::InvalidArgument => ApiError::with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.code(), error.to_string()).closing(),
            _ => ApiError::from(error),
        };
        return with_cors(reply.into_response(), cors.as_deref());
    }
    with_cors(next.run(request).await, cors.as_deref())
}

/// Whether `Origin` is this server's own: its scheme and the `Host` the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap, tls: bool) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let scheme = if tls { "https://" } else { "http://" };
    origin.strip_prefix(scheme).is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

fn forbidden_origin(origin: &str) -> ServingError {
    ServingError::Forbidden(format!(
        "cross-origin requests from {origin} are not allowed; start the server with --cors-origin {origin} to let that site's pages call it"
    ))
}

fn preflight_answer(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    with_cors(response, Some(origin))
}

/// Adds the CORS headers of an allowed origin (the origin itself, never `*`: replies vary by it).
fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_as_browsers_write_them() {
        let cors = CorsOrigins::new(&["https://App.Example/".into(), "http://127.0.0.1:3000".into()]).unwrap();
        assert!(cors.allows("https://app.example") && cors.allows("http://127.0.0.1:3000"));
        assert!(!cors.allows("http://app.example") && !cors.allows("null") && !cors.allows("http://127.0.0.1:3001"));
        assert!(CorsOrigins::new(&["*".into()]).unwrap().allows("http://anything.example"));
        for bad in ["app.example", "https://app.example/path", "ftp://x", "https://"] {
            assert!(CorsOrigins::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn same_origin_is_the_scheme_and_the_host_the_request_names() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin("http://127.0.0.1:8080", &h, false));
        assert!(!same_origin("https://127.0.0.1:8080", &h, false));
        assert!(same_origin("https://127.0.0.1:8080", &h, true));
        assert!(!same_origin("http://127.0.0.1:9090", &h, false));
        assert!(!same_origin("null", &h, false));
    }

    #[test]
    fn only_application_json_counts_as_json() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(with("application/json") && with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain") && !with("application/x-www-form-urlencoded") && !with("multipart/form-data; boundary=x"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
