//! The benchmark's clients: real gRPC Evaluate calls against a server, each client sending one request
//! after another, and what each request cost as the client saw it and as the server reported it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use image::{ImageEncoder as _, Rgb, RgbImage};
use tonic::transport::Channel;

use crate::cli::serve::DEFAULT_MAX_MESSAGE_BYTES;

use super::report::{mean, percentile, BenchRow};

/// Eight different generated pictures (so neighbouring requests never see the same pixels), as PNG.
pub fn generated_images(width: u32, height: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    anyhow::ensure!(width > 0 && height > 0, "--width and --height must be > 0");
    (0..8u32)
        .map(|k| {
            let img = RgbImage::from_fn(width, height, |x, y| {
                let block = (x / (width / 8 + 1) + y / (height / 6 + 1) + k).is_multiple_of(3);
                if block {
                    Rgb([(200 + k * 7) as u8, 40, (30 * k) as u8])
                } else {
                    Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y + 31 * k) % 256) as u8])
                }
            });
            let mut out = Vec::new();
            image::codecs::png::PngEncoder::new(&mut out).write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)?;
            Ok(out)
        })
        .collect()
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<EvaluatorClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await.with_context(|| format!("cannot connect to {addr}"))?;
    Ok(EvaluatorClient::new(channel).max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES))
}

/// One request as measured: latency to Done on the client, the server's own timings from the Done
/// event, and the time to the first *generated* token. That one comes from the server
/// (`Timings.time_to_first_token_ms`: arrival to the first sampled token), not from the first TextDelta:
/// in guided mode the first TextDelta is heading text the server writes before anything is decoded.
struct Sample {
    ttft: Option<Duration>,
    latency: Duration,
    generated: u32,
    timings: pb::Timings,
}

async fn one_request(client: &mut EvaluatorClient<Channel>, image: Vec<u8>, options: pb::Options) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let request = pb::EvaluateRequest {
        image: Some(pb::Image { source: Some(pb::image::Source::Encoded(image)), generation_prompt: None }),
        options: Some(options),
    };
    let mut stream = client.evaluate(request).await?.into_inner();
    let (mut generated, mut timings) = (0, None);
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::evaluate_event::Event::Done(d)) => {
                anyhow::ensure!(d.message.is_empty(), "the server failed a request: {}", d.message);
                generated = d.tokens.map(|t| t.generated_tokens).unwrap_or(0);
                timings = d.timings;
            }
            _ => {}
        }
    }
    let timings = timings.context("the stream ended without a Done event")?;
    // 0 when nothing was generated (e.g. a score-only request): no TTFT to report.
    let ttft = (timings.time_to_first_token_ms > 0.0).then(|| Duration::from_secs_f64(timings.time_to_first_token_ms / 1000.0));
    Ok(Sample { ttft, latency: started.elapsed(), generated, timings })
}

/// The request options every benchmark request uses.
pub fn request_options(max_tokens: u32, explanation: bool) -> pb::Options {
    pb::Options {
        explanation: Some(explanation),
        max_tokens_per_section: max_tokens,
        // Heatmaps at a fixed small size: the benchmark measures the model, not PNG encoding.
        heatmap_width: 64,
        heatmap_height: 48,
        seed: Some(0),
        ..Default::default()
    }
}

/// Sends `requests` evaluations from `clients` concurrent clients, each on its own connection to the
/// next of `addrs` in turn, and summarises them.
pub async fn measure(
    addrs: &[SocketAddr],
    path: &str,
    clients: usize,
    requests: usize,
    images: &Arc<Vec<Vec<u8>>>,
    options: &pb::Options,
) -> anyhow::Result<BenchRow> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    anyhow::ensure!(!addrs.is_empty(), "no server to measure");
    for k in 0..clients.min(requests) {
        let (next, images, options) = (next.clone(), images.clone(), options.clone());
        let mut client = connect(addrs[k % addrs.len()]).await?;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft).map(ms).collect();
    let mut latency: Vec<f64> = samples.iter().map(|s| ms(s.latency)).collect();
    let generated: u64 = samples.iter().map(|s| u64::from(s.generated)).sum();
    let server = |f: fn(&pb::Timings) -> f64| samples.iter().map(|s| f(&s.timings)).collect::<Vec<f64>>();
    let pre_post: f64 = server(|t| t.preprocess_ms + t.heads_ms).iter().sum();
    let total: f64 = latency.iter().sum();
    Ok(BenchRow {
        path: path.to_string(),
        in_flight: clients.min(requests),
        requests: samples.len(),
        wall_s: wall,
        images_per_s: samples.len() as f64 / wall,
        latency_p50_ms: percentile(&mut latency, 0.50),
        latency_p95_ms: percentile(&mut latency, 0.95),
        ttft_p50_ms: percentile(&mut ttft, 0.50),
        ttft_p95_ms: percentile(&mut ttft, 0.95),
        generated_tokens_per_s: generated as f64 / wall,
        sequence_decode_tokens_per_s: mean(&server(|t| t.decode_tokens_per_s)),
        image_encode_ms: mean(&server(|t| t.image_encode_ms)),
        prefill_ms: mean(&server(|t| t.prefill_ms)),
        pre_post_share: if total > 0.0 { pre_post / total } else { 0.0 },
        mean_decode_batch: None,
        vs_naive: None,
    })
}
