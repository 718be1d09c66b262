//! `heie serve`: the gRPC service. Flags fall back to `HEIE_*` environment variables, then to an
//! optional TOML file (`--config`, keys spelled like the flags: `max-queue = 8`), then to defaults.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory};
use serde::Deserialize;

use crate::pipeline::options::MAX_TOKENS_PER_SECTION;
use crate::service::{self, ServeOptions, ServiceLimits};

use super::model_args::ModelArgs;

pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";
pub const DEFAULT_PARALLEL: u32 = 4;
pub const DEFAULT_MAX_QUEUE: u32 = 64;
pub const DEFAULT_MAX_BATCH: u32 = 16;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
pub const DEFAULT_SHUTDOWN_GRACE_S: f64 = 10.0;
pub const DEFAULT_MAX_TOKENS: u32 = 192;

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
    /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM before they are cancelled [default: 10].
    #[arg(long, env = "HEIE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<f64>,
    /// Token cap per section when a request leaves it at 0 [default: 192].
    #[arg(long, env = "HEIE_MAX_TOKENS")]
    pub max_tokens: Option<u32>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The config file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ConfigFile {
    addr: Option<SocketAddr>,
    parallel: Option<u32>,
    max_queue: Option<u32>,
    max_batch: Option<u32>,
    max_message_bytes: Option<usize>,
    metrics_addr: Option<SocketAddr>,
    shutdown_grace: Option<f64>,
    max_tokens: Option<u32>,
    model: Option<PathBuf>,
    mmproj: Option<PathBuf>,
    heads: Option<PathBuf>,
    n_gpu_layers: Option<i32>,
    threads: Option<i32>,
    ctx_size: Option<u32>,
    max_tiles: Option<u32>,
    max_pixels: Option<u64>,
    batch_size: Option<u32>,
}

fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

/// The serve flags after merging the config file in, with every default applied.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub options: ServeOptions,
    pub shutdown_grace: Duration,
    pub model: ModelArgs,
}

/// Merges `args` (flags and environment), the config file and the defaults. `matches` tells which
/// model flags were given explicitly (their clap defaults must not hide the file's values).
pub fn settings(args: &ServeArgs, matches: Option<&ArgMatches>) -> anyhow::Result<ServeSettings> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => ConfigFile::default(),
    };
    let explicit = |id: &str| {
        matches
            .and_then(|m| m.value_source(id))
            .is_some_and(|s| matches!(s, ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    let mut model = args.model.clone();
    model.model = model.model.or(file.model);
    model.mmproj = model.mmproj.or(file.mmproj);
    model.heads = model.heads.or(file.heads);
    model.threads = model.threads.or(file.threads);
    macro_rules! from_file {
        ($($field:ident),*) => {$(
            if !explicit(stringify!($field)) {
                if let Some(v) = file.$field {
                    model.$field = v;
                }
            }
        )*};
    }
    from_file!(n_gpu_layers, ctx_size, max_tiles, max_pixels, batch_size);

    let parallel = args.parallel.or(file.parallel).unwrap_or(DEFAULT_PARALLEL);
    let max_queue = args.max_queue.or(file.max_queue).unwrap_or(DEFAULT_MAX_QUEUE);
    let max_batch = args.max_batch.or(file.max_batch).unwrap_or(DEFAULT_MAX_BATCH);
    let max_message_bytes = args.max_message_bytes.or(file.max_message_bytes).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    let grace = args.shutdown_grace.or(file.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE_S);
    let max_tokens = args.max_tokens.or(file.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    anyhow::ensure!((1..=64).contains(&parallel), "--parallel must be 1..=64, got {parallel}");
    anyhow::ensure!(max_queue >= 1, "--max-queue must be at least 1");
    anyhow::ensure!((1..=1024).contains(&max_batch), "--max-batch must be 1..=1024, got {max_batch}");
    anyhow::ensure!(max_message_bytes >= 1024, "--max-message-bytes must be at least 1024");
    anyhow::ensure!(grace.is_finite() && grace >= 0.0, "--shutdown-grace must be a number of seconds >= 0");
    anyhow::ensure!(
        (1..=MAX_TOKENS_PER_SECTION).contains(&max_tokens),
        "--max-tokens must be 1..={MAX_TOKENS_PER_SECTION}, got {max_tokens}"
    );
    anyhow::ensure!((1..=40).contains(&model.max_tiles), "--max-tiles must be 1..=40, got {}", model.max_tiles);
    let addr = match args.addr.or(file.addr) {
        Some(a) => a,
        None => DEFAULT_ADDR.parse().expect("the default address parses"),
    };
    Ok(ServeSettings {
        options: ServeOptions {
            addr,
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            limits: ServiceLimits {
                max_pixels: model.max_pixels,
                max_batch,
                parallel,
                max_queue,
                max_message_bytes,
                max_tiles: model.max_tiles,
                default_max_tokens: max_tokens,
            },
        },
        shutdown_grace: Duration::from_secs_f64(grace),
        model,
    })
}

/// The `serve` subcommand's matches, re-parsed from the process arguments, to learn which model
/// flags were set explicitly.
fn serve_matches(argv: Vec<OsString>) -> Option<ArgMatches> {
    let matches = super::Cli::command().try_get_matches_from(argv).ok()?;
    matches.subcommand_matches("serve").cloned()
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<usize> {
    let matches = serve_matches(std::env::args_os().collect());
    let settings = settings(&args, matches.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("heie-rpc").build()?;
    runtime.block_on(serve(settings))?;
    Ok(0)
}

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let ServeSettings { options, shutdown_grace, model } = settings;
    let (slots, queue) = (options.limits.parallel, options.limits.max_queue as usize);
    let mut server = service::start(options, move || model.start_evaluator(slots, queue)).await?;
    eprintln!("heie: listening on {} (loading the model; health NOT_SERVING)", server.addr);
    if let Some(m) = server.metrics_addr {
        eprintln!("heie: metrics on http://{m}/metrics");
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
    signal.await;
    eprintln!("heie: shutting down (grace {:.1} s)", shutdown_grace.as_secs_f64());
    server.shutdown(shutdown_grace).await?;
    eprintln!("heie: stopped");
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(argv: &[&str]) -> (ServeArgs, ArgMatches) {
        let argv: Vec<OsString> = std::iter::once("heie").chain(argv.iter().copied()).map(OsString::from).collect();
        let cli = super::super::Cli::parse_from(argv.clone());
        let super::super::Command::Serve(args) = cli.command else { panic!("serve") };
        (args, serve_matches(argv).expect("matches"))
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("heie.toml");
        std::fs::write(&config, "addr = \"127.0.0.1:7000\"\nparallel = 2\nmax-queue = 3\nmax-tiles = 4\nctx-size = 2048\n").unwrap();
        let path = config.to_str().unwrap();
        let (args, m) = parse(&["serve", "--config", path, "--parallel", "8", "--ctx-size", "1024"]);
        let s = settings(&args, Some(&m)).unwrap();
        assert_eq!(s.options.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(s.options.limits.parallel, 8, "flag beats file");
        assert_eq!(s.options.limits.max_queue, 3, "file beats default");
        assert_eq!(s.options.limits.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(s.model.max_tiles, 4, "file beats a clap default");
        assert_eq!(s.model.ctx_size, 1024, "an explicit model flag beats the file");
        assert_eq!(s.options.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);

        std::fs::write(&config, "paralel = 2\n").unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        let e = settings(&args, Some(&m)).unwrap_err();
        assert!(format!("{e:#}").contains("paralel"), "{e:#}");
    }
}
