//! llama.cpp's own `llama-server`, given the same work as HEIE: the same images, HEIE's system prompt
//! and instruction, and as many generated tokens (`max_tokens` with `ignore_eos`), streamed through its
//! OpenAI-compatible chat endpoint. It does its own image tiling (mtmd), as its users get. The bench
//! either starts it (a path to the binary; one process per in-flight count, with that many slots, the
//! same threads, batch, flash-attention setting and per-slot context) or drives a running one (a URL).

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;

use crate::pipeline::prompt::{GROUNDING_HINT, INSTRUCTION, SYSTEM_PROMPT};

use super::closed_loop::{summarise, RequestCounter};
use super::report::{BenchRow, Sample, ServerSide};

/// Where the peer comes from (`--llama-server`).
#[derive(Debug, Clone)]
pub enum PeerSource {
    /// Start this binary for every in-flight count.
    Binary(PathBuf),
    /// A server already running at this base URL (`http://host:port`).
    Running(String),
}

impl PeerSource {
    pub fn parse(value: &str) -> anyhow::Result<PeerSource> {
        if value.starts_with("http://") {
            return Ok(PeerSource::Running(value.trim_end_matches('/').to_string()));
        }
        anyhow::ensure!(!value.contains("://"), "--llama-server {value:?}: a path to the binary or an http:// URL");
        let path = PathBuf::from(value);
        anyhow::ensure!(path.is_file(), "--llama-server {}: no such file", path.display());
        Ok(PeerSource::Binary(path))
    }
}

/// How to start the peer so it matches HEIE's engine settings.
pub struct PeerSettings<'a> {
    pub model: &'a Path,
    pub mmproj: &'a Path,
    pub threads: i32,
    pub ctx_per_slot: u32,
    pub batch: u32,
    /// The flash-attention setting HEIE runs with (`None`: the backend's choice).
    pub flash_attention: Option<bool>,
    pub n_gpu_layers: i32,
}

/// llama-server's `--flash-attn` value for a setting.
fn flash_attn_flag(setting: Option<bool>) -> &'static str {
    match setting {
        None => "auto",
        Some(true) => "on",
        Some(false) => "off",
    }
}

/// A peer to send requests to; a process the bench started is killed when this is dropped.
pub struct Peer {
    pub base: String,
    child: Option<Child>,
    log: Option<PathBuf>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

impl Peer {
    /// Starts (or connects to) the peer with `slots` parallel slots and waits until it is healthy.
    pub fn start(source: &PeerSource, settings: &PeerSettings, slots: usize) -> anyhow::Result<Peer> {
        let binary = match source {
            PeerSource::Running(base) => {
                let mut peer = Peer { base: base.clone(), child: None, log: None };
                peer.wait_healthy(Duration::from_secs(10))?;
                return Ok(peer);
            }
            PeerSource::Binary(binary) => binary,
        };
        // A free port: bind, read it back, release it for the peer.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::env::temp_dir().join(format!("heie-bench-llama-server-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let args: Vec<String> = vec![
            "--model".into(), settings.model.display().to_string(),
            "--mmproj".into(), settings.mmproj.display().to_string(),
            "--host".into(), "127.0.0.1".into(),
            "--port".into(), port.to_string(),
            "--parallel".into(), slots.to_string(),
            // Total context: each slot gets HEIE's per-sequence context, in its own KV stream.
            "--ctx-size".into(), (settings.ctx_per_slot as usize * slots).to_string(),
            "--no-kv-unified".into(),
            "--threads".into(), settings.threads.to_string(),
            "--threads-batch".into(), settings.threads.to_string(),
            "--batch-size".into(), settings.batch.to_string(),
            "--ubatch-size".into(), settings.batch.to_string(),
            "--flash-attn".into(), flash_attn_flag(settings.flash_attention).into(),
            "--n-gpu-layers".into(), settings.n_gpu_layers.to_string(),
            "--no-webui".into(),
        ];
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut peer = Peer { base: format!("http://127.0.0.1:{port}"), child: Some(child), log: Some(log) };
        if let Err(e) = peer.wait_healthy(Duration::from_secs(300)) {
            return Err(e.context(format!("llama-server did not come up; its log ends:\n{}", peer.log_tail())));
        }
        Ok(peer)
    }

    fn log_tail(&self) -> String {
        let text = self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("llama-server exited with {status}");
                }
            }
            match ureq::get(&format!("{}/health", self.base)).timeout(Duration::from_secs(2)).call() {
                Ok(r) if r.status() == 200 => return Ok(()),
                _ if started.elapsed() > limit => anyhow::bail!("{} not healthy after {limit:?}", self.base),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// The chat request: HEIE's system prompt, the image, HEIE's instruction, `max_tokens` generated.
fn request_body(image: &[u8], max_tokens: u32) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(image);
    serde_json::json!({
        "messages": [
            { "role": "system", "content": SYSTEM_PROMPT },
            { "role": "user", "content": [
                { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{data}") } },
                { "type": "text", "text": format!("{INSTRUCTION} {GROUNDING_HINT}") },
            ] },
        ],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0.0,
        "stream": true,
        "stream_options": { "include_usage": true },
    })
    .to_string()
}

/// One streamed chat completion, timed like HEIE's requests: TTFT to the first streamed content
/// (llama-server streams each token as it is sampled), gaps between content chunks.
fn one_request(agent: &ureq::Agent, base: &str, image: &[u8], max_tokens: u32) -> anyhow::Result<Sample> {
    let started = Instant::now();
    let response = agent
        .post(&format!("{base}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&request_body(image, max_tokens))
        .map_err(|e| anyhow::anyhow!("llama-server request failed: {e}"))?;
    let (mut first, mut last, mut gaps) = (None::<Duration>, None::<Instant>, Vec::new());
    let (mut generated, mut prompt_tokens, mut chunks, mut server) = (0u32, 0u32, 0u32, ServerSide::default());
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.context("reading llama-server's stream")?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data.trim() == "[DONE]" {
            break;
        }
        let event: serde_json::Value = serde_json::from_str(data).with_context(|| format!("llama-server sent {data:?}"))?;
        anyhow::ensure!(event.get("error").is_none(), "llama-server failed a request: {}", event["error"]);
        let content = event["choices"][0]["delta"]["content"].as_str().unwrap_or("");
        if !content.is_empty() {
            let now = Instant::now();
            first.get_or_insert(now - started);
            if let Some(previous) = last {
                gaps.push(now - previous);
            }
            last = Some(now);
            chunks += 1;
        }
        if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
            generated = usage["completion_tokens"].as_u64().unwrap_or(0) as u32;
            prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as u32;
        }
        if let Some(t) = event.get("timings").filter(|t| t.is_object()) {
            server.decode_tokens_per_s = t["predicted_per_second"].as_f64().unwrap_or(0.0);
            server.prefill_ms = t["prompt_ms"].as_f64().unwrap_or(0.0);
        }
    }
    anyhow::ensure!(chunks > 0, "llama-server streamed no text");
    Ok(Sample { ttft: first, latency: started.elapsed(), generated: generated.max(chunks), prompt_tokens, gaps, server })
}

/// Sends `requests` chat completions from `clients` concurrent clients (blocking HTTP, one thread each)
/// and summarises them as a bench row.
pub async fn measure(
    peer: &Peer,
    clients: usize,
    requests: usize,
    images: &Arc<Vec<Vec<u8>>>,
    max_tokens: u32,
) -> anyhow::Result<BenchRow> {
    let counter = Arc::new(RequestCounter::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(requests) {
        let (counter, images, base) = (counter.clone(), images.clone(), peer.base.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
            let mut samples = Vec::new();
            while let Some(i) = counter.take() {
                samples.push(one_request(&agent, &base, &images[i % images.len()], max_tokens)?);
            }
            anyhow::Ok(samples)
        }));
    }
    summarise(super::report::PEER, tasks, started).await
}
