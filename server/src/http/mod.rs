//! The HTTP edge beside gRPC (`heie serve --http ADDR`): a JSON API whose bodies are the proto3 JSON
//! of the same `heie.v1` messages, server-sent events for the evaluation stream, and the web page.
//!
//! A thin edge: each route turns its body into the `heie_proto::v1` request message and calls the
//! serving core (`crate::serving`) as the gRPC methods do, so validation, limits, the queue,
//! cancellation, deadlines, health and metrics are the core's. This module adds only what HTTP needs: the body
//! limit, JSON, SSE framing, status codes and the embedded page.
//!
//! | file | concept |
//! | --- | --- |
//! | `routes.rs` | the router and one handler per route |
//! | `access.rs` | the one gate every `/v1/*` request passes (where API keys are checked) |
//! | `json.rs` | reading a size- and time-limited proto3 JSON body, writing JSON replies |
//! | `body_budget.rs` | the request-body bytes all connections together may hold |
//! | `error.rs` | errors as `{"error":{"code","message"}}` with the HTTP status of their gRPC code |
//! | `deadline.rs` | the `X-Heie-Timeout-Ms` header |
//! | `sse.rs` | an evaluation's events as server-sent events |
//! | `page.rs` | the page's static files, embedded in the binary |
//! | `host_check.rs` | the `Host` allow-list (`--allowed-hosts`), against DNS rebinding |
//! | `cross_site.rs` | cross-site requests refused, CORS for `--cors-origin` |
//! | `connections.rs` | the accept loop: header and keep-alive timeouts, `--max-connections` |
//! | `tls_handshake.rs` | HTTPS with the gRPC port's certificate (when the server has TLS), handshakes bounded |

mod access;
mod body_budget;
mod connections;
mod cross_site;
mod deadline;
mod error;
mod host_check;
mod json;
mod page;
mod routes;
mod sse;
mod tls_handshake;

pub use connections::ConnectionOptions;
pub use cross_site::CorsOrigins;
pub use host_check::AllowedHosts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::serving::{ApiKeys, Serving};

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    serving: Arc<Serving>,
    /// The same API keys the gRPC port checks (a no-op set when the server has none).
    keys: ApiKeys,
    /// Size and time limits of request bodies, and the budget they share.
    body: json::BodyRules,
    /// The `Host` values this port answers for.
    hosts: Arc<AllowedHosts>,
    /// The origins whose pages may call the API (`--cors-origin`).
    cors: Arc<CorsOrigins>,
    /// The port speaks HTTPS (its own origin is `https://HOST`).
    tls: bool,
}

/// Everything the HTTP port is configured with beyond its address and certificate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpOptions {
    pub bodies: BodyOptions,
    pub connections: ConnectionOptions,
    /// `--allowed-hosts`, on top of the defaults (see [`AllowedHosts`]); `*` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// `--cors-origin` origins whose pages may call the API (see [`CorsOrigins`]).
    pub cors_origins: Vec<String>,
}

/// How long a request body may take to arrive, and how many body bytes all connections together
/// may hold while they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyOptions {
    pub timeout: Duration,
    /// `None`: [`default_body_bytes_in_flight`] of the body limit.
    pub max_in_flight: Option<usize>,
}

/// 30 s: a full-size body (about 85 MiB at the default --max-message-bytes) arrives in that time
/// over a 25 Mbit/s link, and a client that sends slower than that would hold its share of the
/// budget for longer than any of our requests takes to evaluate. (nginx's `client_body_timeout`
/// is 60 s between two reads; ours bounds the whole body, so a drip cannot extend it.)
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for BodyOptions {
    fn default() -> BodyOptions {
        BodyOptions { timeout: DEFAULT_BODY_TIMEOUT, max_in_flight: None }
    }
}

/// The largest request body the HTTP API accepts for a `max_message_bytes` message (the JSON of a
/// message is longer: base64).
pub fn body_limit(max_message_bytes: usize) -> usize {
    json::body_limit(max_message_bytes)
}

/// Four full-size bodies: enough that one large upload never blocks another (typical images are a
/// few MB, so hundreds of those fit), while the bodies' memory stays a fixed multiple of the body
/// limit (about 340 MiB at the default) instead of growing with the number of connections. Sizing
/// it from --parallel + --max-queue would allow 68 full bodies (5.8 GB) at the defaults, more than
/// the queue ever holds decoded at once.
pub fn default_body_bytes_in_flight(body_limit: usize) -> usize {
    body_limit.saturating_mul(4)
}

/// The running HTTP server. Dropping it aborts it.
pub(crate) struct HttpServer {
    /// The address actually bound (the real port when asked for port 0).
    pub addr: SocketAddr,
    graceful: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The task has ended and been reaped (a JoinHandle must not be polled again).
    finished: bool,
}

impl HttpServer {
    /// Binds `addr` (so a bad address fails at start-up) and serves the API and the page, over TLS
    /// when `tls` is given (the gRPC port's certificate).
    pub(crate) async fn start(
        addr: SocketAddr,
        serving: Arc<Serving>,
        keys: ApiKeys,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        options: HttpOptions,
    ) -> std::io::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let hosts = AllowedHosts::new(&options.allowed_hosts, addr).map_err(invalid)?;
        let cors = CorsOrigins::new(&options.cors_origins).map_err(invalid)?;
        let limit = body_limit(serving.limits().max_message_bytes);
        let bodies = options.bodies;
        let in_flight = bodies.max_in_flight.unwrap_or_else(|| default_body_bytes_in_flight(limit));
        let body = json::BodyRules { limit, timeout: bodies.timeout, budget: body_budget::BodyBudget::new(in_flight as u64) };
        let state = AppState { serving, keys, body, hosts: Arc::new(hosts), cors: Arc::new(cors), tls: tls.is_some() };
        let app = routes::router(state);
        let (graceful, stop) = oneshot::channel::<()>();
        let handshakes = tls.map(|config| Arc::new(tls_handshake::TlsHandshakes::new(config)));
        let task = tokio::spawn(connections::serve(listener, handshakes, app, options.connections, stop));
        Ok(HttpServer { addr, graceful: Some(graceful), task, finished: false })
    }

    /// Starts a graceful shutdown: no new connections are accepted, open ones finish what they are
    /// doing. (`/healthz` already answers 503: it reads the core's one state, which the drain turned
    /// NOT_SERVING before its delay.)
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
    }

    /// Waits until every connection has closed, at most `within`; aborts the server after that.
    pub(crate) async fn finish(&mut self, within: Duration) -> bool {
        if self.finished {
            return true;
        }
        let ended = tokio::time::timeout(within, &mut self.task).await;
        self.finished = ended.is_ok();
        match ended {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "the HTTP server failed");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the HTTP server task failed");
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
