//! `heie bench`: images/s, latency percentiles, time to first token, inter-token gaps, decode rate and
//! image encode time at several in-flight counts, side by side in one run, for HEIE's engine (an
//! in-process server per setting, driven by real gRPC clients), llama.cpp's own `llama-server` given
//! the same work (the peer), and HEIE with its speed-ups off (the ablation) — or against running
//! servers (`--addr`: one, or several replicas that the clients are spread over, e.g. to compare one
//! replica with two behind a proxy or balanced by the client).

mod client;
mod closed_loop;
mod path;
mod peer;
mod report;
mod target;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use heie_proto::v1 as pb;

use crate::server::{self, ServeOptions};
use crate::serving::ServingLimits;

use super::model_args::ModelArgs;
use super::serve::{DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES};
use client::{connect, generated_images, measure, request_options};
use path::{BenchPath, PathKind};
use peer::{Peer, PeerSettings, PeerSource};
pub use report::percentile;
use report::{compare, spread, table, BenchRow};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Drive running servers instead of starting one: `host:port` (every address a name resolves to
    /// is a replica), `dns:///host:port`, or several (repeated or comma-separated); the clients are
    /// spread over all of them in turn. One row per --parallel (default: the replicas' slots summed).
    #[arg(long, value_delimiter = ',')]
    pub addr: Vec<String>,
    /// Requests in flight at once [default: 1,4,16]; each setting gets a fresh in-process server with
    /// as many slots.
    #[arg(long, value_delimiter = ',')]
    pub parallel: Vec<usize>,
    /// What to compare: heie (all speed-ups), llama-server (llama.cpp's own server given the same
    /// images, prompt and generated-token count; needs --llama-server), no-speedups (HEIE's engine with
    /// every speed-up off), or no-<speed-up> to measure one on its own (no-batched-text,
    /// no-prefix-cache, no-batched-vision, no-batched-image-prefill, no-per-sequence-kv).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["heie".to_string(), "no-speedups".to_string()])]
    pub paths: Vec<String>,
    /// The llama-server to compare with: a path to the binary (started once per in-flight count with
    /// as many slots and the same model, threads, batch, flash attention and per-slot context) or the
    /// http:// URL of one already running.
    #[arg(long, value_name = "PATH|URL")]
    pub llama_server: Option<String>,
    /// Measure every path this many times per in-flight count, alternating their order from round to
    /// round (heie, llama-server, then llama-server, heie, ...), so a change in the machine's load
    /// falls on both sides alike; ratios are taken within a round and summarised with their spread.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Evaluations per setting (default: 3 per request in flight, at least 8), after one warm-up.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Images to send (cycled); default: generated pictures of --width × --height.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// With generated pictures: cycle this many (the same images judged again, as a re-run ComfyUI
    /// graph does; both servers may then reuse cached work); 0 = a new picture for every request.
    /// The warm-up request always uses a picture no measured request uses.
    #[arg(long, default_value_t = 0)]
    pub repeat: u32,
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Token cap per section of each request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u32,
    /// Score only (short analysis), as Rerank's fast mode.
    #[arg(long)]
    pub no_explanation: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JSON to this file (with the device and model names).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs the command.
pub fn run(mut args: BenchArgs) -> anyhow::Result<usize> {
    let targets = if args.addr.is_empty() { Vec::new() } else { target::parse_targets(&args.addr)? };
    if args.parallel.is_empty() && targets.is_empty() {
        args.parallel = vec![1, 4, 16];
    }
    anyhow::ensure!(args.parallel.iter().all(|p| (1..=64).contains(p)), "--parallel values must be 1..=64");
    anyhow::ensure!(args.requests != Some(0), "--requests must be at least 1");
    anyhow::ensure!((1..=20).contains(&args.rounds), "--rounds must be 1..=20");
    let mut paths = args.paths.iter().map(|p| BenchPath::parse(p)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("--paths: {e}"))?;
    // HEIE's paths first: the peer is then asked for as many tokens as `heie` generated.
    paths.sort_by_key(|p| p.kind == PathKind::LlamaServer);
    let peer = match (&args.llama_server, paths.iter().any(|p| p.kind == PathKind::LlamaServer)) {
        (Some(value), true) => Some(PeerSource::parse(value)?),
        (None, true) => anyhow::bail!("--paths llama-server needs --llama-server PATH|URL"),
        (Some(_), false) => anyhow::bail!("--llama-server is given but --paths has no llama-server"),
        (None, false) => None,
    };
    anyhow::ensure!(peer.is_none() || targets.is_empty(), "--addr drives running HEIE servers; leave out --llama-server with it");
    anyhow::ensure!(args.model.disable_speedups.is_empty(), "use --paths to choose speed-ups in heie bench, not --disable-speedup");
    anyhow::ensure!(args.repeat == 0 || args.images.is_empty(), "--repeat cycles generated pictures; leave it out with --image");
    let most_requests = args.parallel.iter().map(|&p| requests_for(&args, p)).chain([requests_for(&args, 1)]).max().unwrap_or(8);
    let images = Arc::new(if args.images.is_empty() {
        let count = if args.repeat > 0 { args.repeat } else { most_requests as u32 };
        generated_images(args.width, args.height, count)?
    } else {
        args.images.iter().map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))).collect::<Result<_, _>>()?
    });
    let options = request_options(args.max_tokens, !args.no_explanation);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut device = String::new();
    let mut rows = runtime.block_on(async {
        let mut rows = Vec::new();
        if !targets.is_empty() {
            let addrs = target::resolve_targets(&targets).await?;
            let mut slots = 0;
            for &addr in &addrs {
                let mut client = connect(addr).await?;
                let info = client.get_info(pb::GetInfoRequest {}).await.with_context(|| format!("GetInfo of {addr}"))?.into_inner();
                slots += info.limits.map(|l| l.parallel_slots as usize).unwrap_or(1).max(1);
                device = info.device.clone();
            }
            let name = if addrs.len() == 1 { "remote".to_string() } else { format!("remote×{}", addrs.len()) };
            let in_flight = if args.parallel.is_empty() { vec![slots] } else { args.parallel.clone() };
            for parallel in in_flight {
                if !args.json {
                    eprintln!("heie bench: {parallel} in flight over {}", addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
                }
                rows.push(measure(&addrs, &name, parallel, requests_for(&args, parallel), &images, &options).await?);
            }
        } else {
            for &parallel in &args.parallel {
                for round in 1..=args.rounds {
                    // Odd rounds in the given order (HEIE's paths first), even rounds reversed.
                    let order: Vec<&BenchPath> = if round % 2 == 1 { paths.iter().collect() } else { paths.iter().rev().collect() };
                    for path in order {
                        let mut row = match &path.kind {
                            PathKind::Heie(_) => {
                                let (row, on) = measure_in_process(&args, path, parallel, &images, &options).await?;
                                device = on;
                                row
                            }
                            PathKind::LlamaServer => {
                                let source = peer.as_ref().expect("checked above");
                                let tokens = peer_max_tokens(&args, &rows, parallel);
                                measure_peer(&args, source, parallel, &images, tokens).await?
                            }
                        };
                        row.round = round;
                        if !args.json {
                            eprintln!("heie bench: {} × {parallel} (round {round}): {:.2} images/s", path.name, row.images_per_s);
                        }
                        rows.push(row);
                    }
                }
            }
        }
        anyhow::Ok(rows)
    })?;
    compare(&mut rows);
    // Which SIMD this heie's llama.cpp was compiled for (portable or `cargo build-native`): the
    // figures depend on it. About this process's build only, not --addr's servers or the peer's.
    let cpu_build = crate::engine::cpu_build_features();
    if let Some(path) = &args.out {
        let report = serde_json::json!({
            "device": device,
            "llama_cpp_cpu_build": cpu_build,
            "model": args.model.model,
            "mmproj": args.model.mmproj,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !args.json {
        eprintln!("heie bench: device {device}; this heie's llama.cpp CPU build: {cpu_build}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
        print!("{}", spread(&rows));
    }
    Ok(0)
}

/// The warm-up's picture: one the measured requests never send, so neither server's caches start
/// with a measured image in them.
fn warm_up_image(args: &BenchArgs) -> anyhow::Result<Arc<Vec<Vec<u8>>>> {
    Ok(Arc::new(vec![client::generated_image(args.width, args.height, u32::MAX / 2)?]))
}

fn requests_for(args: &BenchArgs, parallel: usize) -> usize {
    args.requests.unwrap_or((3 * parallel).max(8))
}

/// Tokens the peer generates per image: as many as `heie` generated on average at the same in-flight
/// count when it was measured, else every section at its cap.
fn peer_max_tokens(args: &BenchArgs, rows: &[BenchRow], parallel: usize) -> u32 {
    let measured = rows.iter().find(|r| r.path == "heie" && r.in_flight == parallel).map(|r| r.generated_per_request.round() as u32);
    let sections = if args.no_explanation { 1 } else { 3 };
    measured.filter(|&n| n > 0).unwrap_or(sections * args.max_tokens)
}

/// Starts llama-server with `parallel` slots (or uses the running one), warms it up with one request
/// and measures it on the same images.
async fn measure_peer(
    args: &BenchArgs,
    source: &PeerSource,
    parallel: usize,
    images: &Arc<Vec<Vec<u8>>>,
    max_tokens: u32,
) -> anyhow::Result<BenchRow> {
    let config = args.model.engine_config(parallel as u32, 1)?;
    // The setting HEIE runs with, so both sides get the same attention kernels.
    let flash_attention = crate::engine::flash_attention_for(config.flash_attention, crate::engine::runs_on_gpu(config.n_gpu_layers));
    let settings = PeerSettings {
        model: &config.model,
        mmproj: &config.mmproj,
        threads: config.threads,
        ctx_per_slot: config.ctx_per_sequence,
        batch: config.n_batch,
        flash_attention,
        n_gpu_layers: config.n_gpu_layers,
    };
    let source = source.clone();
    let started = tokio::task::block_in_place(|| Peer::start(&source, &settings, parallel))?;
    peer::measure(&started, 1, 1, &warm_up_image(args)?, max_tokens).await.context("llama-server warm-up request")?;
    let row = peer::measure(&started, parallel, requests_for(args, parallel), images, max_tokens).await?;
    tokio::task::block_in_place(|| drop(started));
    Ok(row)
}

/// Starts a server with `path`'s engine configuration and `parallel` slots, warms it up with one
/// request (load-time and first-call costs are not what is measured), and measures.
async fn measure_in_process(
    args: &BenchArgs,
    path: &BenchPath,
    parallel: usize,
    images: &Arc<Vec<Vec<u8>>>,
    options: &pb::Options,
) -> anyhow::Result<(BenchRow, String)> {
    let requests = requests_for(args, parallel);
    let limits = ServingLimits {
        max_pixels: args.model.max_pixels,
        max_batch: DEFAULT_MAX_BATCH,
        parallel: parallel as u32,
        max_queue: (requests as u32).max(64),
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        max_tiles: args.model.max_tiles,
        default_max_tokens: args.max_tokens,
        image_workers: crate::serving::admission::default_image_workers(),
        stall_timeout: std::time::Duration::from_secs(crate::cli::serve::DEFAULT_STALL_TIMEOUT_S),
    };
    let serve = ServeOptions { addr: "127.0.0.1:0".parse()?, metrics_addr: None, http_addr: None, limits, network: Default::default() };
    let mut model = args.model.clone();
    let PathKind::Heie(speedups) = &path.kind else { anyhow::bail!("{} is not an in-process path", path.name) };
    model.disable_speedups = speedups.disabled_names().iter().map(|n| n.to_string()).collect();
    let queue = requests.max(64);
    let mut server = server::start(serve, move || model.start_evaluator(parallel as u32, queue)).await?;
    server.ready().await?;
    measure(&[server.addr], &path.name, 1, 1, &warm_up_image(args)?, options).await.context("warm-up request")?;
    let engine = server.evaluator().context("server ready")?.engine().clone();
    let device = engine.info().device.clone();
    let metrics = engine.metrics();
    let before = (metrics.decode_steps.load(Ordering::Relaxed), metrics.decode_sequences.load(Ordering::Relaxed));
    let mut row = measure(&[server.addr], &path.name, parallel, requests, images, options).await?;
    let steps = metrics.decode_steps.load(Ordering::Relaxed) - before.0;
    let seqs = metrics.decode_sequences.load(Ordering::Relaxed) - before.1;
    row.mean_decode_batch = (steps > 0).then(|| seqs as f64 / steps as f64);
    drop(engine);
    server.shutdown(Duration::from_secs(5)).await?;
    Ok((row, device))
}
