//! `heie serve`'s flags and their defaults. Each falls back to a `HEIE_*` environment variable, then to
//! the config file (`config_file.rs`), then to the default here; `settings.rs` merges and checks them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::cli::model_args::ModelArgs;
use crate::serving::ApiKey;

pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_PARALLEL: u32 = 4;
pub const DEFAULT_MAX_QUEUE: u32 = 64;
pub const DEFAULT_MAX_BATCH: u32 = 16;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
pub const DEFAULT_SHUTDOWN_GRACE_S: f64 = 10.0;
pub const DEFAULT_MAX_TOKENS: u32 = 192;
pub const DEFAULT_STALL_TIMEOUT_S: u64 = 30;
pub const DEFAULT_DRAIN_DELAY_S: f64 = 0.0;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with any of these flags as keys (`addr = "0.0.0.0:50051"`, `max-queue = 8`, `model = "…"`);
    /// flags and environment variables override it.
    #[arg(long, env = "HEIE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, env = "HEIE_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Sequences decoded together (continuous batching slots) [default: 4].
    #[arg(long, env = "HEIE_PARALLEL")]
    pub parallel: Option<u32>,
    /// Requests that may wait for a slot; more get RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, env = "HEIE_MAX_QUEUE")]
    pub max_queue: Option<u32>,
    /// Most images in one EvaluateBatch or Rerank request [default: 16].
    #[arg(long, env = "HEIE_MAX_BATCH")]
    pub max_batch: Option<u32>,
    /// Largest gRPC message accepted or sent, in bytes [default: 67108864].
    #[arg(long, env = "HEIE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, env = "HEIE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Also serve the HTTP/JSON API (SSE streams) and the web page on http://ADDR/ (https:// with the
    /// same certificate and client-certificate rule as gRPC when --tls-cert is set).
    #[arg(long, env = "HEIE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM before they are cancelled [default: 10].
    #[arg(long, env = "HEIE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<f64>,
    /// Token cap per section when a request leaves it at 0 [default: 192].
    #[arg(long, env = "HEIE_MAX_TOKENS")]
    pub max_tokens: Option<u32>,
    /// Seconds a stream may have events waiting without its client reading any before it is cancelled and its slot freed; 0 = never [default: 30].
    #[arg(long, env = "HEIE_STALL_TIMEOUT")]
    pub stall_timeout: Option<f64>,
    /// Images decoded, tiled or heatmap-encoded at once; bounds the memory of pixel work [default: cores, at most 4].
    #[arg(long, env = "HEIE_IMAGE_WORKERS")]
    pub image_workers: Option<u32>,
    /// Seconds between SIGTERM turning health NOT_SERVING and the server refusing new work, so load
    /// balancers polling health move away first [default: 0].
    #[arg(long, env = "HEIE_DRAIN_DELAY")]
    pub drain_delay: Option<f64>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "HEIE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "HEIE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS; needs --tls-cert).
    #[arg(long, env = "HEIE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// An API key clients must send as `authorization: Bearer KEY` (repeatable; the variable holds one).
    #[arg(long, env = "HEIE_API_KEY", hide_env_values = true)]
    pub api_key: Vec<ApiKey>,
    /// File of API keys, one per line (# comments); re-read on SIGHUP.
    #[arg(long, env = "HEIE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Seconds between HTTP/2 keepalive pings on a connection; 0 turns them off [default: 30].
    #[arg(long, env = "HEIE_HTTP2_KEEPALIVE_INTERVAL")]
    pub http2_keepalive_interval: Option<f64>,
    /// Seconds a keepalive ping may go unanswered before the connection is closed [default: 20].
    #[arg(long, env = "HEIE_HTTP2_KEEPALIVE_TIMEOUT")]
    pub http2_keepalive_timeout: Option<f64>,
    /// Calls one connection may have open at once; more wait in the client [default: 64].
    #[arg(long, env = "HEIE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Seconds an HTTP request body may take to arrive in full; slower ones get 408 and their
    /// connection is closed [default: 30].
    #[arg(long, env = "HEIE_BODY_TIMEOUT")]
    pub body_timeout: Option<f64>,
    /// Bytes of HTTP request bodies all connections together may hold while they arrive; a request
    /// whose body does not fit gets 503 with Retry-After before it is read [default: 4 × the HTTP
    /// body limit, about 341 MiB at the default --max-message-bytes].
    #[arg(long, env = "HEIE_MAX_BODY_BYTES_IN_FLIGHT")]
    pub max_body_bytes_in_flight: Option<usize>,
    /// Seconds an HTTP request head may take to arrive (from the connection's start, or from the
    /// first byte of a later request); slower connections are closed [default: 10].
    #[arg(long, env = "HEIE_HEADER_TIMEOUT")]
    pub header_timeout: Option<f64>,
    /// Seconds an HTTP connection may sit idle between requests before it is closed [default: 30].
    #[arg(long, env = "HEIE_KEEP_ALIVE_TIMEOUT")]
    pub keep_alive_timeout: Option<f64>,
    /// HTTP connections open at once (TLS handshakes included); more wait to be accepted [default: 512].
    #[arg(long, env = "HEIE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Host names the HTTP port answers for besides localhost, the loopback addresses and the bound
    /// address (any address when bound to 0.0.0.0 or [::]); other Host headers get 403, against DNS
    /// rebinding. `*` allows every host (behind a proxy that checks Host). Repeatable or comma-separated.
    #[arg(long, env = "HEIE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// An origin (`https://app.example:8443`) whose pages may call the HTTP API from the browser
    /// (CORS); `*` for any. Repeatable or comma-separated [default: none, only the server's own page].
    #[arg(long, env = "HEIE_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// A calibration file from `heie calibrate`: every primary score becomes the calibrated one
    /// (Score.uncalibrated_score keeps the raw one; GetInfo reports the file).
    #[arg(long, env = "HEIE_CALIBRATION", value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}
