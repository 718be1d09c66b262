//! `heie bench`: throughput and time to first token of the gRPC service under N concurrent clients,
//! at several `--parallel` settings in one run (an in-process server per setting), or against a
//! running server (`--addr`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use image::{Rgb, RgbImage};
use serde::Serialize;
use tonic::transport::Channel;

use crate::service::{self, ServeOptions, ServiceLimits};

use super::model_args::ModelArgs;
use super::serve::{DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Drive this running server instead of starting one (one row, at the server's own --parallel).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Slot counts to measure, each with a fresh in-process server.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u32, 4, 8])]
    pub parallel: Vec<u32>,
    /// Concurrent clients, each sending one Evaluate after another.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Evaluations per setting.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Images to send (cycled); default: generated pictures of --width × --height.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
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
    #[command(flatten)]
    pub model: ModelArgs,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub parallel: u32,
    pub clients: usize,
    pub requests: usize,
    pub wall_s: f64,
    pub images_per_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    pub latency_p50_ms: f64,
    pub generated_tokens_per_s: f64,
    /// Mean sequences per decode step on the server (in-process runs only).
    pub mean_decode_batch: Option<f64>,
    /// images/s relative to the first row.
    pub speedup: f64,
}

/// Runs the command.
pub fn run(args: BenchArgs) -> anyhow::Result<usize> {
    anyhow::ensure!(args.clients >= 1 && args.requests >= 1, "--clients and --requests must be at least 1");
    anyhow::ensure!(args.parallel.iter().all(|p| (1..=64).contains(p)), "--parallel values must be 1..=64");
    let images = Arc::new(load_images(&args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = runtime.block_on(async {
        let mut rows = Vec::new();
        if let Some(addr) = args.addr {
            let mut client = connect(addr).await?;
            let info = client.get_info(pb::GetInfoRequest {}).await.context("GetInfo")?.into_inner();
            let parallel = info.limits.map(|l| l.parallel_slots).unwrap_or(0);
            rows.push(measure(addr, parallel, &args, &images, None).await?);
        } else {
            for &parallel in &args.parallel {
                let limits = ServiceLimits {
                    max_pixels: args.model.max_pixels,
                    max_batch: DEFAULT_MAX_BATCH,
                    parallel,
                    max_queue: (args.clients as u32).max(64),
                    max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                    max_tiles: args.model.max_tiles,
                    default_max_tokens: args.max_tokens,
                };
                let options = ServeOptions { addr: "127.0.0.1:0".parse()?, metrics_addr: None, limits };
                let model = args.model.clone();
                let queue = (args.clients).max(64);
                let mut server = service::start(options, move || model.start_evaluator(parallel, queue)).await?;
                server.ready().await?;
                let engine = server.evaluator().context("server ready")?.engine().clone();
                let before = (engine.metrics().decode_steps.load(Ordering::Relaxed), engine.metrics().decode_sequences.load(Ordering::Relaxed));
                let mut row = measure(server.addr, parallel, &args, &images, None).await?;
                let steps = engine.metrics().decode_steps.load(Ordering::Relaxed) - before.0;
                let seqs = engine.metrics().decode_sequences.load(Ordering::Relaxed) - before.1;
                row.mean_decode_batch = (steps > 0).then(|| seqs as f64 / steps as f64);
                drop(engine);
                server.shutdown(Duration::from_secs(5)).await?;
                if !args.json {
                    eprintln!("heie bench: parallel {parallel}: {:.2} images/s", row.images_per_s);
                }
                rows.push(row);
            }
        }
        anyhow::Ok(rows)
    })?;
    let base = rows.first().map(|r| r.images_per_s).unwrap_or(0.0);
    for r in &mut rows {
        r.speedup = if base > 0.0 { r.images_per_s / base } else { 0.0 };
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(0)
}

fn load_images(args: &BenchArgs) -> anyhow::Result<Vec<Vec<u8>>> {
    if !args.images.is_empty() {
        return args.images.iter().map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))).collect();
    }
    anyhow::ensure!(args.width > 0 && args.height > 0, "--width and --height must be > 0");
    // Eight different pictures, so no two neighbouring requests see the same pixels.
    (0..8u32)
        .map(|k| {
            let (w, h) = (args.width, args.height);
            let img = RgbImage::from_fn(w, h, |x, y| {
                let block = (x / (w / 8 + 1) + y / (h / 6 + 1) + k) % 3 == 0;
                if block {
                    Rgb([(200 + k * 7) as u8, 40, (30 * k) as u8])
                } else {
                    Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y + 31 * k) % 256) as u8])
                }
            });
            let mut out = Vec::new();
            image::codecs::png::PngEncoder::new(&mut out).write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)?;
            Ok(out)
        })
        .collect()
}

use image::ImageEncoder as _;

async fn connect(addr: SocketAddr) -> anyhow::Result<EvaluatorClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await.with_context(|| format!("cannot connect to {addr}"))?;
    Ok(EvaluatorClient::new(channel).max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES))
}

/// One client's measurement of one request: time to the first text and to Done, tokens generated.
struct Sample {
    ttft: Option<Duration>,
    latency: Duration,
    generated: u32,
}

async fn one_request(client: &mut EvaluatorClient<Channel>, image: Vec<u8>, options: pb::Options) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let request = pb::EvaluateRequest {
        image: Some(pb::Image { source: Some(pb::image::Source::Encoded(image)), generation_prompt: None }),
        options: Some(options),
    };
    let mut stream = client.evaluate(request).await?.into_inner();
    let (mut ttft, mut generated) = (None, 0);
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::evaluate_event::Event::TextDelta(_)) if ttft.is_none() => ttft = Some(started.elapsed()),
            Some(pb::evaluate_event::Event::Done(d)) => generated = d.tokens.map(|t| t.generated_tokens).unwrap_or(0),
            _ => {}
        }
    }
    Ok(Sample { ttft, latency: started.elapsed(), generated })
}

async fn measure(
    addr: SocketAddr,
    parallel: u32,
    args: &BenchArgs,
    images: &Arc<Vec<Vec<u8>>>,
    mean_decode_batch: Option<f64>,
) -> anyhow::Result<BenchRow> {
    let options = pb::Options {
        explanation: Some(!args.no_explanation),
        max_tokens_per_section: args.max_tokens,
        // Heatmaps at a fixed small size: the benchmark measures the model, not PNG encoding.
        heatmap_width: 64,
        heatmap_height: 48,
        seed: Some(0),
        ..Default::default()
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients.min(args.requests) {
        let (next, images, options) = (next.clone(), images.clone(), options.clone());
        let total = args.requests;
        let mut client = connect(addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                samples.push(one_request(&mut client, images[i % images.len()].clone(), options.clone()).await?);
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.context("a bench client panicked")??);
    }
    let wall = started.elapsed().as_secs_f64();
    let mut ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft).map(|d| d.as_secs_f64() * 1000.0).collect();
    let mut latency: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64() * 1000.0).collect();
    let generated: u64 = samples.iter().map(|s| u64::from(s.generated)).sum();
    Ok(BenchRow {
        parallel,
        clients: args.clients.min(args.requests),
        requests: samples.len(),
        wall_s: wall,
        images_per_s: samples.len() as f64 / wall,
        ttft_p50_ms: percentile(&mut ttft, 0.50),
        ttft_p95_ms: percentile(&mut ttft, 0.95),
        latency_p50_ms: percentile(&mut latency, 0.50),
        generated_tokens_per_s: generated as f64 / wall,
        mean_decode_batch,
        speedup: 0.0,
    })
}

/// Nearest-rank percentile (0 for no samples).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "parallel  clients  requests  wall s  images/s  speedup  TTFT p50 ms  TTFT p95 ms  latency p50 ms  gen tok/s  mean decode batch\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{:>8}  {:>7}  {:>8}  {:>6.2}  {:>8.2}  {:>6.2}x  {:>11.1}  {:>11.1}  {:>14.1}  {:>9.1}  {:>17}\n",
            r.parallel,
            r.clients,
            r.requests,
            r.wall_s,
            r.images_per_s,
            r.speedup,
            r.ttft_p50_ms,
            r.ttft_p95_ms,
            r.latency_p50_ms,
            r.generated_tokens_per_s,
            r.mean_decode_batch.map(|m| format!("{m:.2}")).unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.95), 5.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        let mut twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&mut twenty, 0.95), 19.0);
    }
}
