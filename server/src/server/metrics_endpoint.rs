//! `GET /metrics` on its own port (`--metrics-addr`), kept off the API ports so scrapers need no key
//! and the API needs no exception for them.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::serving::Serving;

/// Serves the core's exposition on `listener` until the returned sender is used or dropped.
pub fn start(listener: TcpListener, serving: Arc<Serving>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let serving = serving.clone();
            async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], serving.render_metrics()) }
        }),
    );
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    stop
}
