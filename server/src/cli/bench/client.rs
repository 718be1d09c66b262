//! The benchmark's clients: real gRPC Evaluate calls against a server, each client sending one request
//! after another, and what each request cost as the client saw it and as the server reported it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use image::{ImageEncoder as _, Rgb, RgbImage};
use tonic::transport::Channel;

use crate::cli::serve::DEFAULT_MAX_MESSAGE_BYTES;

use super::closed_loop::{summarise, RequestCounter};
use super::report::{BenchRow, Sample, ServerSide};

/// `count` different generated pictures, as PNG: picture `k` differs from every other in its block
/// pattern and colours, so no two requests of a run share pixels unless the run asks for repeats.
pub fn generated_images(width: u32, height: u32, count: u32) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..count).map(|k| generated_image(width, height, k)).collect()
}

/// Picture number `k` of [`generated_images`].
pub fn generated_image(width: u32, height: u32, k: u32) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(width > 0 && height > 0, "--width and --height must be > 0");
    let img = RgbImage::from_fn(width, height, |x, y| {
        let block = (x / (width / 8 + 1) + y / (height / 6 + 1) + k).is_multiple_of(3);
        if block {
            Rgb([200u32.wrapping_add(k.wrapping_mul(7)) as u8, 40, k.wrapping_mul(30) as u8])
        } else {
            // The top-left row spells k in binary, so pictures stay distinct past the colour cycle.
            let bit = y == 0 && x < 32 && (k >> x) & 1 == 1;
            let blue = if bit { 255 } else { (x + y).wrapping_add(k.wrapping_mul(31)) as u8 };
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, blue])
        }
    });
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<EvaluatorClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await.with_context(|| format!("cannot connect to {addr}"))?;
    Ok(EvaluatorClient::new(channel).max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES))
}

async fn one_request(client: &mut EvaluatorClient<Channel>, image: Vec<u8>, options: pb::Options) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let request = pb::EvaluateRequest {
        image: Some(pb::Image { source: Some(pb::image::Source::Encoded(image)), generation_prompt: None }),
        options: Some(options),
    };
    let mut stream = client.evaluate(request).await?.into_inner();
    let (mut generated, mut prompt_tokens, mut timings) = (0, 0, None);
    // Arrival of each piece of text: the gaps between them are what a reader of the stream sees stall.
    // The first text arrives once the image is in the context, so the gaps are those of a running stream.
    let (mut last_text, mut gaps) = (None::<Instant>, Vec::new());
    // Time to the first *generated* text as this client sees it (llama-server's is measured the same
    // way): the answer's opening and the section headings the server writes itself are not generated.
    let mut ttft = None;
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::evaluate_event::Event::TextDelta(delta)) => {
                let now = Instant::now();
                if let Some(last) = last_text {
                    gaps.push(now - last);
                }
                last_text = Some(now);
                if ttft.is_none() && !is_server_written(&delta.text) {
                    ttft = Some(now - started);
                }
            }
            Some(pb::evaluate_event::Event::Done(d)) => {
                anyhow::ensure!(d.message.is_empty(), "the server failed a request: {}", d.message);
                let tokens = d.tokens.unwrap_or_default();
                generated = tokens.generated_tokens;
                prompt_tokens = tokens.prompt_tokens + tokens.image_tokens;
                timings = d.timings;
            }
            _ => {}
        }
    }
    let t = timings.context("the stream ended without a Done event")?;
    // A score-only request generates nothing worth a TTFT.
    if generated == 0 {
        ttft = None;
    }
    let server = ServerSide {
        decode_tokens_per_s: t.decode_tokens_per_s,
        image_encode_ms: t.image_encode_ms,
        prefill_ms: t.prefill_ms,
        pre_post_ms: t.preprocess_ms + t.heads_ms,
    };
    Ok(Sample { ttft, latency: started.elapsed(), generated, prompt_tokens, gaps, server })
}

/// Text the server writes before or between generated pieces, each sent as a delta of its own: the
/// answer's opening ("Sure. ### Image Description") and the section headings.
fn is_server_written(text: &str) -> bool {
    text == crate::pipeline::prompt::opening() || text.trim_start().starts_with("###")
}

/// The request options every benchmark request uses.
pub fn request_options(max_tokens: u32, explanation: bool) -> pb::Options {
    pb::Options {
        explanation: Some(explanation),
        max_tokens_per_section: max_tokens,
        // Heatmaps at the server's default size: rendering one is part of what a user waits for.
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
    anyhow::ensure!(!addrs.is_empty(), "no server to measure");
    let counter = Arc::new(RequestCounter::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients.min(requests) {
        let (counter, images, options) = (counter.clone(), images.clone(), options.clone());
        let mut client = connect(addrs[k % addrs.len()]).await?;
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while let Some(i) = counter.take() {
                samples.push(one_request(&mut client, images[i % images.len()].clone(), options.clone()).await?);
            }
            anyhow::Ok(samples)
        }));
    }
    summarise(path, tasks, started).await
}
