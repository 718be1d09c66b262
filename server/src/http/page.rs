//! The web page, embedded in the binary: no files to install, no CDN, no build step. `GET /` is the
//! page; `GET /static/NAME` its script and style sheet.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use crate::serving::Code;

use super::error::ApiError;

/// The page's files: (name under /static/, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("page/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("page/style.css")),
];

const INDEX: &str = include_str!("page/index.html");

/// What the page may load and do: its own script, style sheet and API only, images from its own
/// data and blob URLs (the picture being judged, the heatmap), no framing by other sites (so a
/// hostile page cannot overlay it and steal clicks), no forms posted anywhere, no `<base>` tricks.
/// Inline scripts and styles are refused, so injected markup cannot run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers every page file gets: revalidate on each load (the binary may have been upgraded), no
/// sniffing of content types, the content security policy, and `X-Frame-Options` for browsers that
/// predate `frame-ancestors`.
fn headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
    ]
}

pub(super) async fn index() -> Response {
    (StatusCode::OK, headers("text/html; charset=utf-8"), INDEX).into_response()
}

pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (StatusCode::OK, headers(content_type), *body).into_response(),
        None => ApiError::new(Code::NotFound, format!("no static file {name:?}")).into_response(),
    }
}
