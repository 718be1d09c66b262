//! The tonic server: Evaluator + grpc.health.v1 + reflection v1 on one port, the Prometheus
//! endpoint on another, model loading and warm-up in the background, graceful shutdown.
//!
//! The port is bound before the model loads, so orchestrators can connect and poll health at once:
//! health says NOT_SERVING (and RPCs UNAVAILABLE) until the model is loaded and one small image has
//! gone through the whole pipeline — the first real request then pays no first-use costs.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use heie_proto::v1::evaluator_server::EvaluatorServer;
use image::{Rgb, RgbImage};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

use super::metrics::{self, ServiceMetrics};
use super::{EvaluatorService, ServiceLimits, Shared};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub limits: ServiceLimits,
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
    shared: Arc<Shared>,
    readiness: watch::Receiver<Readiness>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    graceful: Option<oneshot::Sender<()>>,
    metrics_stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
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

    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        evaluator: OnceLock::new(),
        limits: options.limits.clone(),
        metrics: ServiceMetrics::default(),
        stop: stop_rx,
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
    let reflection_v1 = reflection().build_v1().context("building the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("building the reflection service")?;
    let limit = options.limits.max_message_bytes;
    let evaluator = EvaluatorServer::new(EvaluatorService { shared: shared.clone() })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let (graceful, graceful_rx) = oneshot::channel::<()>();
    let serve = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(evaluator)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
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
    let (s, h) = (shared.clone(), health.clone());
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
                let _ = s.evaluator.set(Arc::new(evaluator));
                set_health(&h, ServingStatus::Serving).await;
                Readiness::Serving
            }
            Ok(Err(e)) => Readiness::Failed(format!("{e:#}")),
            Err(e) => Readiness::Failed(format!("loading the model panicked: {e}")),
        };
        let _ = ready_tx.send(state);
    });

    Ok(RunningServer { addr, metrics_addr, shared, readiness, health, stop, graceful: Some(graceful), metrics_stop, task })
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

    /// Graceful shutdown: health goes NOT_SERVING, new connections are refused, in-flight requests
    /// get `grace` to finish; after that they are cancelled (UNAVAILABLE) and the server stops.
    pub async fn shutdown(mut self, grace: Duration) -> anyhow::Result<()> {
        set_health(&self.health, ServingStatus::NotServing).await;
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
        let finished = match tokio::time::timeout(grace, &mut self.task).await {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::warn!(grace_s = grace.as_secs_f64(), "grace period over; cancelling in-flight requests");
                let _ = self.stop.send(true);
                tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.ok()
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
