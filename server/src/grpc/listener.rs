//! The tonic server of the gRPC port: the Evaluator, health and reflection (v1 and v1alpha), API
//! keys on every service but health, HTTP/2 keepalive pings, a per-connection stream limit,
//! optional TLS, and a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use heie_proto::v1::evaluator_server::EvaluatorServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;

use crate::serving::{ApiKeys, Serving};

use super::{auth, health, EvaluatorService};

/// How the gRPC port serves.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    pub tls: Option<ServerTlsConfig>,
    /// Keys every `heie.v1` call and reflection must present (a no-op set when the server has none).
    pub api_keys: ApiKeys,
    /// How often the server pings an idle HTTP/2 connection; `None` = never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Streams (calls) one connection may have open at once; more wait on the client side.
    pub max_concurrent_streams: u32,
    /// Largest message either way.
    pub max_message_bytes: usize,
}

/// The running gRPC server. Dropping it aborts it.
pub struct GrpcServer {
    graceful: Option<oneshot::Sender<()>>,
    /// `None` once it has ended and been reaped (a JoinHandle must not be polled again).
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// The accepted connections with Nagle's algorithm off. tonic sets `TCP_NODELAY` only on listeners
/// it binds itself, not on an incoming stream; left on, each small streamed event after the first
/// waits for the client's delayed ACK — a ~40 ms stall in the middle of a stream, measured by
/// `heie bench`'s inter-token gap at every load.
fn no_delay(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        })
    })
}

impl GrpcServer {
    /// Serves on `listener` until [`GrpcServer::begin_shutdown`].
    pub fn start(listener: TcpListener, serving: Arc<Serving>, options: GrpcOptions) -> anyhow::Result<GrpcServer> {
        // Reflection v1, plus v1alpha for the many clients (grpcio's descriptor database, older
        // grpcurl) that still only speak it; both describe the same files.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(heie_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Every service but health checks the API key (a no-op without keys): reflection would
        // otherwise tell anyone the API.
        let keys = options.api_keys.clone();
        let reflection_v1 = InterceptedService::new(reflection().build_v1().context("building the reflection service")?, auth::interceptor(keys.clone()));
        let reflection_v1alpha =
            InterceptedService::new(reflection().build_v1alpha().context("building the reflection service")?, auth::interceptor(keys.clone()));
        let limit = options.max_message_bytes;
        let evaluator = InterceptedService::new(
            EvaluatorServer::new(EvaluatorService { serving: serving.clone() }).max_decoding_message_size(limit).max_encoding_message_size(limit),
            auth::interceptor(keys),
        );
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(options.keepalive_interval)
            .http2_keepalive_timeout(Some(options.keepalive_timeout))
            .max_concurrent_streams(Some(options.max_concurrent_streams));
        if let Some(tls) = options.tls {
            builder = builder.tls_config(tls).context("setting up TLS")?;
        }
        let (graceful, graceful_rx) = oneshot::channel::<()>();
        let serve = builder
            .add_service(health::service(serving))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(evaluator)
            .serve_with_incoming_shutdown(no_delay(listener), async {
                let _ = graceful_rx.await;
            });
        Ok(GrpcServer { graceful: Some(graceful), task: Some(tokio::spawn(serve)) })
    }

    /// Stops accepting connections and calls; calls in flight go on.
    pub fn begin_shutdown(&mut self) {
        if let Some(g) = self.graceful.take() {
            let _ = g.send(());
        }
    }

    /// Waits at most `within` for every connection to close: `None` when they did not. Once it has
    /// answered, it has nothing more to wait for.
    pub async fn finish(&mut self, within: Duration) -> Option<anyhow::Result<()>> {
        let task = self.task.as_mut()?;
        let ended = tokio::time::timeout(within, task).await.ok()?;
        self.task = None;
        match ended {
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(e)) => Some(Err(e).context("the gRPC server failed")),
            Err(e) => Some(Err(anyhow::anyhow!("the gRPC server task failed: {e}"))),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
