//! The tonic server: Evaluator + grpc.health.v1 + reflection v1 on one port, the Prometheus
//! endpoint on another, the HTTP API and page (`crate::http`) on a third when asked for, model
//! loading and warm-up in the background, graceful shutdown.
//!
//! The port is bound before the model loads, so orchestrators can connect and poll health at once:
//! health says NOT_SERVING (and RPCs UNAVAILABLE) until the model is loaded and one small image has
//! gone through the whole pipeline — the first real request then pays no first-use costs.
//!
//! On the network: optional TLS (and mutual TLS), API keys checked on every `heie.v1` call and on
//! reflection (health stays open for probes), HTTP/2 keepalive pings and a per-connection stream
//! limit. If the engine or finalizer thread dies, health turns NOT_SERVING at once and
//! [`RunningServer::died`] resolves, so `heie serve` can exit and be restarted.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use heie_proto::v1::evaluator_server::EvaluatorServer;
use image::{Rgb, RgbImage};
use tokio::sync::{oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

use super::auth::ApiKeys;
use super::metrics::{self, ServiceMetrics};
use super::tls::TlsFiles;
use crate::http::{BodyOptions as HttpBodyOptions, HttpServer};
use super::{EvaluatorService, ServiceLimits, Shared};

/// The accepted connections with Nagle's algorithm off. tonic sets `TCP_NODELAY` only on listeners
/// it binds itself, not on an incoming stream; left on, each small streamed event after the first
/// waits for the client's delayed ACK — a ~40 ms stall in the middle of a stream, measured by
/// `heie bench`'s inter-token gap at every load.
fn no_delay(listener: tokio::net::TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        })
    })
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the HTTP/JSON API and the web page here too.
    pub http_addr: Option<SocketAddr>,
    pub limits: ServiceLimits,
    pub network: NetworkOptions,
}

/// Transport security and connection limits of the gRPC port.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Serve TLS (and require client certificates when the files name a client CA).
    pub tls: Option<TlsFiles>,
    /// Keys every `heie.v1` call and reflection must present; none = open.
    pub api_keys: ApiKeys,
    /// How often the server pings an idle HTTP/2 connection; `None` = never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Streams (calls) one connection may have open at once; more wait on the client side.
    pub max_concurrent_streams: u32,
    /// Time and in-flight budget of the HTTP API's request bodies.
    pub http_bodies: HttpBodyOptions,
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
            http_bodies: HttpBodyOptions::default(),
        }
    }
}

/// Where the server stands.
#[derive(Debug, Clone, PartialEq)]
enum Readiness {
    Loading,
    Serving,
    Failed(String),
}

/// A started server. Dropping it without [`RunningServer::shutdown`] aborts it.
pub struct RunningServer {
    /// The gRPC address actually bound (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The metrics address actually bound, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The HTTP API's address actually bound, when enabled.
    pub http_addr: Option<SocketAddr>,
    http: Option<HttpServer>,
    shared: Arc<Shared>,
    readiness: watch::Receiver<Readiness>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    graceful: Option<oneshot::Sender<()>>,
    metrics_stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Set when a thread the server cannot run without has died.
    death: watch::Receiver<Option<String>>,
    api_keys: ApiKeys,
}

/// Binds the ports and starts serving; `load` builds the evaluator (on a blocking thread) while
/// health reports NOT_SERVING.
pub async fn start(
    options: ServeOptions,
    load: impl FnOnce() -> anyhow::Result<Evaluator> + Send + 'static,
) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match options.metrics_addr {
        Some(a) => Some(metrics::bind(a).await.with_context(|| format!("cannot listen on {a} (metrics)"))?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let network = options.network.clone();
    let tls = match &network.tls {
        Some(files) => Some(files.server_config()?),
        None => None,
    };
    // The HTTP port serves HTTPS with the same files, so keys never cross a network in clear there.
    let http_tls = match (&network.tls, options.http_addr) {
        (Some(files), Some(_)) => Some(files.rustls_config()?),
        _ => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        evaluator: OnceLock::new(),
        limits: options.limits.clone(),
        admission: super::admission::Admission::new(
            options.limits.parallel + options.limits.max_queue,
            options.limits.image_workers,
        ),
        metrics: ServiceMetrics::default(),
        stop: stop_rx,
        leaving: Default::default(),
        draining: Default::default(),
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    // Reflection v1, plus v1alpha for the many clients (grpcio's descriptor database, older grpcurl)
    // that still only speak it; both describe the same files.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(heie_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Every service but health checks the API key (a no-op without keys): reflection would
    // otherwise tell anyone the API.
    let keys = network.api_keys.clone();
    let reflection_v1 = InterceptedService::new(
        reflection().build_v1().context("building the reflection service")?,
        keys.interceptor(),
    );
    let reflection_v1alpha = InterceptedService::new(
        reflection().build_v1alpha().context("building the reflection service")?,
        keys.interceptor(),
    );
    let limit = options.limits.max_message_bytes;
    let evaluator = InterceptedService::new(
        EvaluatorServer::new(EvaluatorService { shared: shared.clone() })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        keys.interceptor(),
    );

    let http = match options.http_addr {
        Some(a) => Some(HttpServer::start(a, shared.clone(), keys.clone(), http_tls, network.http_bodies).await.with_context(|| format!("cannot listen on {a} (HTTP)"))?),
        None => None,
    };
    let http_addr = http.as_ref().map(|h| h.addr);

    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(network.keepalive_interval)
        .http2_keepalive_timeout(Some(network.keepalive_timeout))
        .max_concurrent_streams(Some(network.max_concurrent_streams));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("setting up TLS")?;
    }
    let (graceful, graceful_rx) = oneshot::channel::<()>();
    let serve = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(evaluator)
        .serve_with_incoming_shutdown(no_delay(listener), async {
            let _ = graceful_rx.await;
        });
    let task = tokio::spawn(serve);

    let metrics_stop = metrics_listener.map(|l| {
        let (tx, rx) = oneshot::channel::<()>();
        let s = shared.clone();
        tokio::spawn(async move {
            let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || s.render_metrics());
            if let Err(e) = metrics::serve(l, render, async {
                let _ = rx.await;
            })
            .await
            {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        tx
    });

    let (ready_tx, readiness) = watch::channel(Readiness::Loading);
    let (death_tx, death) = watch::channel(None::<String>);
    let (s, h, stop_on_death) = (shared.clone(), health.clone(), stop.clone());
    tokio::spawn(async move {
        let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<Evaluator> {
            let evaluator = load()?;
            warm_up(&evaluator)?;
            Ok(evaluator)
        })
        .await;
        let state = match outcome {
            Ok(Ok(evaluator)) => {
                let info = evaluator.engine().info();
                tracing::info!(llm = %info.llm_name, device = %info.device, slots = info.slots, "model loaded and warmed up");
                let liveness = evaluator.engine().liveness().clone();
                let _ = s.evaluator.set(Arc::new(evaluator));
                set_health(&h, ServingStatus::Serving).await;
                // From now on, a dead engine or finalizer turns health NOT_SERVING at once and ends
                // the requests in flight (UNAVAILABLE) instead of leaving them hanging.
                let h = h.clone();
                tokio::spawn(async move {
                    let cause = liveness.died().await;
                    set_health(&h, ServingStatus::NotServing).await;
                    let _ = stop_on_death.send(true);
                    let _ = death_tx.send(Some(cause));
                });
                Readiness::Serving
            }
            Ok(Err(e)) => Readiness::Failed(format!("{e:#}")),
            Err(e) => Readiness::Failed(format!("loading the model panicked: {e}")),
        };
        let _ = ready_tx.send(state);
    });

    Ok(RunningServer {
        addr,
        metrics_addr,
        http_addr,
        http,
        shared,
        readiness,
        health,
        stop,
        graceful: Some(graceful),
        metrics_stop,
        task,
        death,
        api_keys: network.api_keys,
    })
}

/// Runs one tiny evaluation end to end, so every lazy first-use cost is paid before SERVING.
fn warm_up(evaluator: &Evaluator) -> anyhow::Result<()> {
    let image = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let options = EvalOptions { explanation: false, max_tokens_per_section: 2, max_tiles: 1, ..EvalOptions::default() };
    let (_, events) = evaluator.evaluate(&image, options).context("warm-up evaluation")?;
    let result = EvalResult::collect(events, |_| {});
    if let Some(e) = result.error {
        anyhow::bail!("warm-up evaluation failed: {e}");
    }
    anyhow::ensure!(result.score().is_some(), "warm-up evaluation produced no score");
    Ok(())
}

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(heie_proto::EVALUATOR_SERVICE_NAME, status).await;
}

impl RunningServer {
    /// Waits until the model is loaded and warmed up (health SERVING), or fails with why not.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let state = self.readiness.wait_for(|r| *r != Readiness::Loading).await.context("the loader stopped")?.clone();
        match state {
            Readiness::Failed(e) => anyhow::bail!("{e}"),
            _ => Ok(()),
        }
    }

    /// The evaluator, once ready (tests and the benchmark read its engine metrics).
    pub fn evaluator(&self) -> Option<Arc<Evaluator>> {
        self.shared.evaluator.get().cloned()
    }

    /// The Prometheus exposition, as `GET /metrics` serves it.
    pub fn metrics_text(&self) -> String {
        self.shared.render_metrics()
    }

    /// Resolves with the cause when a thread the server cannot run without (the engine, the
    /// finalizer) has died; health is NOT_SERVING by then and requests in flight have ended.
    pub async fn died(&self) -> String {
        let mut death = self.death.clone();
        let cause = death.wait_for(Option::is_some).await.map(|c| c.clone().unwrap_or_default());
        match cause {
            Ok(cause) => cause,
            // The loader failed: no engine, nothing can die.
            Err(_) => std::future::pending().await,
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

    /// Graceful shutdown. Health goes NOT_SERVING first, and the server goes on serving for
    /// `delay`, so load balancers polling health stop sending before anything is refused. Then new
    /// connections and calls are refused, requests still queued for a slot end at once with
    /// UNAVAILABLE (they never started: safe to retry elsewhere), and requests in a slot get `grace`
    /// to finish; after that they are cancelled (UNAVAILABLE) and the server stops.
    pub async fn drain(mut self, delay: Duration, grace: Duration) -> anyhow::Result<()> {
        self.shared.begin_leaving();
        set_health(&self.health, ServingStatus::NotServing).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.shared.start_draining();
        if let Some(evaluator) = self.shared.evaluator.get() {
            evaluator.engine().stop_admitting();
        }
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
        let started = tokio::time::Instant::now();
        if let Some(http) = self.http.as_mut() {
            http.begin_shutdown();
        }
        let finished = tokio::time::timeout(grace, &mut self.task).await.ok();
        // HTTP streams get what is left of the same grace period.
        let http_finished = match self.http.as_mut() {
            Some(http) => http.finish(grace.saturating_sub(started.elapsed())).await,
            None => true,
        };
        let finished = match finished {
            Some(r) if http_finished => Some(r),
            _ => {
                tracing::warn!(grace_s = grace.as_secs_f64(), "grace period over; cancelling in-flight requests");
                let _ = self.stop.send(true);
                if let Some(http) = self.http.as_mut() {
                    http.finish(Duration::from_secs(5)).await;
                }
                match finished {
                    Some(r) => Some(r),
                    None => tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.ok(),
                }
            }
        };
        if let Some(m) = self.metrics_stop.take() {
            let _ = m.send(());
        }
        match finished {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e).context("the gRPC server failed"),
            Some(Err(e)) => Err(anyhow::anyhow!("the gRPC server task failed: {e}")),
            None => {
                self.task.abort();
                anyhow::bail!("connections did not close after the grace period; aborted")
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
        if let Some(m) = self.metrics_stop.take() {
            let _ = m.send(());
        }
    }
}
