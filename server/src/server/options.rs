//! Where and how `heie serve` serves: its addresses, the core's limits, and the network settings of
//! both ports.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::HttpOptions;
use crate::serving::{ApiKeys, ServingLimits};

use crate::tls::TlsFiles;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the HTTP/JSON API and the web page here too.
    pub http_addr: Option<SocketAddr>,
    pub limits: ServingLimits,
    pub network: NetworkOptions,
}

/// Transport security and connection limits.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Serve TLS on both ports (and require client certificates when the files name a client CA).
    pub tls: Option<TlsFiles>,
    /// Keys every `heie.v1` call and reflection must present; none = open.
    pub api_keys: ApiKeys,
    /// How often the gRPC port pings an idle HTTP/2 connection; `None` = never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Streams (calls) one gRPC connection may have open at once; more wait on the client side.
    pub max_concurrent_streams: u32,
    /// The HTTP port's bodies, connections, allowed hosts and CORS origins.
    pub http: HttpOptions,
}

pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 64;

impl Default for NetworkOptions {
    /// Plaintext, no keys, keepalive every 30 s (20 s to answer), 64 streams per connection.
    fn default() -> NetworkOptions {
        NetworkOptions {
            tls: None,
            api_keys: ApiKeys::none(),
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            http: HttpOptions::default(),
        }
    }
}
