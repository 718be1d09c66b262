//! `heie serve`: the gRPC service (and, with `--http`, the HTTP API and page beside it) until SIGINT or
//! SIGTERM, then a graceful drain. Its settings (flags, environment, config file) are `settings.rs`.

mod args;
mod config_file;
mod settings;

use std::time::Duration;

use crate::server::{self, NetworkOptions, TlsFiles};
use crate::serving::ApiKeys;

pub use args::ServeArgs;
pub use settings::{settings, ServeSettings};
pub use args::{
    DEFAULT_ADDR, DEFAULT_DRAIN_DELAY_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_QUEUE, DEFAULT_MAX_TOKENS,
    DEFAULT_PARALLEL, DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_STALL_TIMEOUT_S,
};
use settings::serve_matches;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<usize> {
    let matches = serve_matches(std::env::args_os().collect());
    let settings = settings(&args, matches.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("heie-rpc").build()?;
    runtime.block_on(serve(settings))?;
    Ok(0)
}

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let ServeSettings { options, shutdown_grace, drain_delay, model, calibration } = settings;
    let (slots, queue) = (options.limits.parallel, options.limits.max_queue as usize);
    let max_tokens = options.limits.default_max_tokens;
    let network = describe_network(&options.network);
    let http_scheme = if options.network.tls.is_some() { "https" } else { "http" };
    let calibration_line = calibration.as_ref().map(|c| {
        let r = &c.file.held_out;
        format!(
            "calibration {} applied to every primary score ({} examples; held-out AUC {:.3} → {:.3})",
            c.name, c.file.examples.train, r.auc_before, r.auc_after
        )
    });
    let mut server = server::start(options, move || {
        let evaluator = model.start_calibrated_evaluator(slots, queue, calibration)?;
        check_context(&evaluator, model.max_tiles, max_tokens)?;
        Ok(evaluator)
    })
    .await?;
    eprintln!("heie: listening on {} (loading the model; health NOT_SERVING)", server.addr);
    eprintln!("heie: {network}");
    if let Some(c) = &calibration_line {
        eprintln!("heie: {c}");
    }
    if let Some(m) = server.metrics_addr {
        eprintln!("heie: metrics on http://{m}/metrics");
    }
    let reload = tokio::spawn(reload_keys_on_sighup(server.api_keys().clone()));
    if let Some(h) = server.http_addr {
        eprintln!("heie: HTTP API and page on {http_scheme}://{h}/");
    }
    let mut signal = std::pin::pin!(shutdown_signal());
    tokio::select! {
        ready = server.ready() => ready?,
        _ = &mut signal => {
            eprintln!("heie: stopping before the model finished loading");
            return Ok(());
        }
    }
    eprintln!("heie: serving on {}", server.addr);
    let died = tokio::select! {
        _ = signal => None,
        cause = server.died() => Some(cause),
    };
    reload.abort();
    if let Some(cause) = died {
        // Health is NOT_SERVING and in-flight requests have been told (UNAVAILABLE); exit non-zero
        // so that a supervisor (systemd, Kubernetes) starts a fresh process.
        tracing::error!(%cause, "exiting: the server cannot evaluate any more");
        let _ = server.shutdown(Duration::from_secs(1)).await;
        anyhow::bail!("{cause}; exiting so that a supervisor restarts the server");
    }
    eprintln!(
        "heie: shutting down (health NOT_SERVING; drain delay {:.1} s, grace {:.1} s)",
        drain_delay.as_secs_f64(),
        shutdown_grace.as_secs_f64()
    );
    server.drain(drain_delay, shutdown_grace).await?;
    eprintln!("heie: stopped");
    Ok(())
}

/// Start-up check: a request at the server's own defaults — the most tiles `--max-tiles` allows, each
/// section at `--max-tokens` — must fit the context each request gets, or every such request would
/// be refused; the message names the flag to raise.
fn check_context(evaluator: &crate::pipeline::Evaluator, max_tiles: u32, max_tokens: u32) -> anyhow::Result<()> {
    let options = crate::pipeline::EvalOptions { max_tiles, max_tokens_per_section: max_tokens, ..Default::default() };
    let needed = evaluator.worst_case_context(&options);
    let ctx = evaluator.info().ctx_per_sequence as usize;
    anyhow::ensure!(
        needed <= ctx,
        "--max-tiles {max_tiles} with --max-tokens {max_tokens} needs up to {needed} context tokens per request but --ctx-size is {ctx}: \
         raise --ctx-size to at least {needed} (or lower --max-tiles / --max-tokens)"
    );
    Ok(())
}

/// One line on how the port is protected and limited (never the keys themselves).
fn describe_network(n: &NetworkOptions) -> String {
    let transport = n.tls.as_ref().map(TlsFiles::describe).unwrap_or_else(|| "plaintext (no TLS)".to_string());
    let keys = if n.api_keys.is_enabled() {
        match n.api_keys.file() {
            Some(f) => format!("{} API key(s) required (file {}, reloaded on SIGHUP)", n.api_keys.len(), f.display()),
            None => format!("{} API key(s) required", n.api_keys.len()),
        }
    } else {
        "no API key required".to_string()
    };
    let keepalive = match n.keepalive_interval {
        Some(i) => format!("keepalive every {:.0} s (timeout {:.0} s)", i.as_secs_f64(), n.keepalive_timeout.as_secs_f64()),
        None => "no keepalive pings".to_string(),
    };
    format!("{transport}; {keys}; HTTP/2 {keepalive}, at most {} streams per connection", n.max_concurrent_streams)
}

/// Re-reads the API key file on each SIGHUP; a failed reload keeps the keys in use.
async fn reload_keys_on_sighup(keys: ApiKeys) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the API key file will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(file) = keys.file() else {
                tracing::info!("SIGHUP: there is no --api-key-file to reload");
                continue;
            };
            match keys.reload() {
                Ok(n) => tracing::info!(file = %file.display(), keys = n, "SIGHUP: API keys reloaded"),
                Err(e) => tracing::error!(error = %e, keys_in_use = keys.len(), "SIGHUP: reloading the API keys failed; the keys in use stay"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = keys;
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

