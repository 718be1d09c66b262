//! The composition of `heie serve`, above both edges: binds the gRPC port, the HTTP port (when
//! asked for) and the metrics port, starts the serving core and its two edges over it, loads and
//! warms up the model in the background, and drains and stops them together.
//!
//! The ports are bound before the model loads, so orchestrators can connect and poll health at once:
//! health says NOT_SERVING (and calls UNAVAILABLE) until the model is loaded and one small image has
//! gone through the whole pipeline — the first real request then pays no first-use costs. If the
//! engine or finalizer thread dies, the core's state turns `Dead` (health NOT_SERVING on both ports,
//! calls in flight end UNAVAILABLE) and [`RunningServer::died`] resolves, so `heie serve` can exit
//! and be restarted.

mod metrics_endpoint;
mod options;

mod warm_up;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::grpc::{GrpcOptions, GrpcServer};
use crate::http::HttpServer;
use crate::pipeline::Evaluator;
use crate::serving::{ApiKeys, Serving, ServingState};

pub use options::{NetworkOptions, ServeOptions, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS};
pub use crate::tls::TlsFiles;

/// A started server. Dropping it without [`RunningServer::shutdown`] aborts it.
pub struct RunningServer {
    /// The gRPC address actually bound (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The metrics address actually bound, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The HTTP API's address actually bound, when enabled.
    pub http_addr: Option<SocketAddr>,
    grpc: GrpcServer,
    http: Option<HttpServer>,
    serving: Arc<Serving>,
    metrics_stop: Option<tokio::sync::oneshot::Sender<()>>,
    api_keys: ApiKeys,
}

/// Binds the ports and starts serving; `load` builds the evaluator (on a blocking thread) while
/// health reports NOT_SERVING.
pub async fn start(options: ServeOptions, load: impl FnOnce() -> anyhow::Result<Evaluator> + Send + 'static) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(options.addr).await.with_context(|| format!("cannot listen on {}", options.addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match options.metrics_addr {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a} (metrics)"))?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let network = options.network;
    let grpc_tls = network.tls.as_ref().map(TlsFiles::server_config).transpose()?;
    // The HTTP port serves HTTPS with the same files, so keys never cross a network in clear there.
    let http_tls = match (&network.tls, options.http_addr) {
        (Some(files), Some(_)) => Some(files.rustls_config()?),
        _ => None,
    };
    let serving = Arc::new(Serving::new(options.limits.clone()));
    let http = match options.http_addr {
        Some(a) => Some(
            HttpServer::start(a, serving.clone(), network.api_keys.clone(), http_tls, network.http.clone())
                .await
                .with_context(|| format!("cannot listen on {a} (HTTP)"))?,
        ),
        None => None,
    };
    let grpc = GrpcServer::start(
        listener,
        serving.clone(),
        GrpcOptions {
            tls: grpc_tls,
            api_keys: network.api_keys.clone(),
            keepalive_interval: network.keepalive_interval,
            keepalive_timeout: network.keepalive_timeout,
            max_concurrent_streams: network.max_concurrent_streams,
            max_message_bytes: options.limits.max_message_bytes,
        },
    )?;
    let metrics_stop = metrics_listener.map(|l| metrics_endpoint::start(l, serving.clone()));
    tokio::spawn(load_in_background(serving.clone(), load));
    Ok(RunningServer { addr, metrics_addr, http_addr: http.as_ref().map(|h| h.addr), grpc, http, serving, metrics_stop, api_keys: network.api_keys })
}

/// Loads and warms up the model, then serves; from then on a dead engine or finalizer turns the
/// state `Dead` at once, which ends the calls in flight (UNAVAILABLE) instead of leaving them hanging.
async fn load_in_background(serving: Arc<Serving>, load: impl FnOnce() -> anyhow::Result<Evaluator> + Send + 'static) {
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<Evaluator> {
        let evaluator = load()?;
        warm_up::run(&evaluator)?;
        Ok(evaluator)
    })
    .await;
    match loaded {
        Ok(Ok(evaluator)) => {
            let info = evaluator.info();
            tracing::info!(llm = %info.llm_name, device = %info.device, slots = info.slots, "model loaded and warmed up");
            let evaluator = Arc::new(evaluator);
            serving.set_ready(evaluator.clone());
            let cause = evaluator.died().await;
            serving.set_state(ServingState::Dead(cause));
        }
        Ok(Err(e)) => serving.set_state(ServingState::Failed(format!("{e:#}"))),
        Err(e) => serving.set_state(ServingState::Failed(format!("loading the model panicked: {e}"))),
    }
}

impl RunningServer {
    /// Waits until the model is loaded and warmed up (health SERVING), or fails with why not.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let mut state = self.serving.watch_state();
        let now = state.wait_for(|s| *s != ServingState::Loading).await.context("the loader stopped")?.clone();
        match now {
            ServingState::Failed(e) => anyhow::bail!("{e}"),
            _ => Ok(()),
        }
    }

    /// The evaluator, once ready (tests and the benchmark read its engine metrics).
    pub fn evaluator(&self) -> Option<Arc<Evaluator>> {
        self.serving.loaded()
    }

    /// Where the server stands (what both ports' health checks report).
    pub fn state(&self) -> ServingState {
        self.serving.state()
    }

    /// The Prometheus exposition, as `GET /metrics` serves it.
    pub fn metrics_text(&self) -> String {
        self.serving.render_metrics()
    }

    /// Resolves with the cause when a thread the server cannot run without (the engine, the
    /// finalizer) has died; health is NOT_SERVING by then and requests in flight have ended.
    pub async fn died(&self) -> String {
        let mut state = self.serving.watch_state();
        match state.wait_for(|s| matches!(s, ServingState::Dead(_))).await.map(|s| s.clone()) {
            Ok(ServingState::Dead(cause)) => cause,
            // The loader failed or the server is gone: nothing can die.
            _ => std::future::pending().await,
        }
    }

    /// The API keys in force (shared: a reload is seen by the running server).
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// [`RunningServer::drain`] without the delay.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.drain(Duration::ZERO, grace).await
    }

    /// Graceful shutdown. Health goes NOT_SERVING on both ports at once (one state), and the server
    /// goes on serving for `delay`, so load balancers polling health stop sending before anything is
    /// refused. Then new connections and calls are refused, requests still queued for a slot end at
    /// once with UNAVAILABLE (they never started: safe to retry elsewhere), and requests in a slot get
    /// `grace` to finish; after that they are cancelled (UNAVAILABLE) and the server stops.
    pub async fn drain(mut self, delay: Duration, grace: Duration) -> anyhow::Result<()> {
        self.serving.set_state(ServingState::Leaving);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.serving.set_state(ServingState::Draining);
        if let Some(evaluator) = self.serving.loaded() {
            evaluator.stop_admitting();
        }
        self.grpc.begin_shutdown();
        if let Some(http) = self.http.as_mut() {
            http.begin_shutdown();
        }
        let started = tokio::time::Instant::now();
        let mut finished = self.grpc.finish(grace).await;
        // HTTP streams get what is left of the same grace period.
        let http_finished = match self.http.as_mut() {
            Some(http) => http.finish(grace.saturating_sub(started.elapsed())).await,
            None => true,
        };
        if finished.is_none() || !http_finished {
            tracing::warn!(grace_s = grace.as_secs_f64(), "grace period over; cancelling in-flight requests");
            self.serving.set_state(ServingState::Stopped);
            if let Some(http) = self.http.as_mut() {
                http.finish(Duration::from_secs(5)).await;
            }
            if finished.is_none() {
                finished = self.grpc.finish(Duration::from_secs(5)).await;
            }
        }
        if let Some(m) = self.metrics_stop.take() {
            let _ = m.send(());
        }
        finished.unwrap_or_else(|| anyhow::bail!("connections did not close after the grace period; aborted"))
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Calls still running end now; the edges abort when dropped with this.
        self.serving.set_state(ServingState::Stopped);
    }
}
