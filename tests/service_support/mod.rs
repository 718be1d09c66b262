//! Helpers of the gRPC service tests: an in-process server on the fixture models, a `heie serve`
//! child process, tonic clients, request builders and a stream reader.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use heie_server::cli::serve::{DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES};
use heie_server::engine::Engine;
use heie_server::pipeline::Evaluator;
use heie_server::server::{self, RunningServer, ServeOptions};
use heie_server::serving::ServingLimits;
use image::codecs::png::PngEncoder;
use image::{ImageEncoder, RgbImage};
use tonic::transport::Channel;

#[path = "../common/mod.rs"]
mod common;
// Each test binary uses its own subset of these.
#[allow(unused_imports)]
pub use common::{config, fixture, heie_bin, model, refused, test_image};

pub const LLM: &str = "tiny-llm.gguf";
pub const MMPROJ: &str = "tiny-mmproj.gguf";

/// Serialises the tests of one binary: each starts an engine whose llama.cpp threads busy-wait, and
/// several at once on a 2-core machine slow each other down a hundredfold.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the binary's one-test-at-a-time lock (async tests).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// [`serial`] for plain `#[test]` functions (outside any runtime).
pub fn serial_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

pub fn limits(parallel: u32, max_queue: u32) -> ServingLimits {
    ServingLimits {
        max_pixels: 4_000_000,
        max_batch: DEFAULT_MAX_BATCH,
        parallel,
        max_queue,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        max_tiles: 6,
        default_max_tokens: 8,
        image_workers: 2,
        stall_timeout: Duration::from_secs(30),
    }
}

/// Starts an in-process server on 127.0.0.1:0 over the fixture models and waits until SERVING.
pub async fn start_server(limits: ServingLimits, metrics: bool) -> RunningServer {
    let options = ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: metrics.then(|| "127.0.0.1:0".parse().unwrap()),
        http_addr: None,
        limits: limits.clone(),
        network: Default::default(),
    };
    let mut server = server::start(options, move || {
        let mut cfg = config(LLM, MMPROJ, limits.parallel);
        cfg.max_queue = limits.max_queue as usize;
        Ok(Evaluator::new(Arc::new(Engine::start(&cfg)?))?)
    })
    .await
    .expect("server starts");
    server.ready().await.expect("server becomes ready");
    server
}

pub async fn client(addr: SocketAddr) -> EvaluatorClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connects");
    EvaluatorClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

pub fn encoded(bytes: Vec<u8>) -> pb::Image {
    pb::Image { source: Some(pb::image::Source::Encoded(bytes)), generation_prompt: None }
}

pub fn raw(width: u32, height: u32, channels: u32, pixels: Vec<u8>) -> pb::Image {
    pb::Image { source: Some(pb::image::Source::Raw(pb::RawImage { width, height, channels, pixels })), generation_prompt: None }
}

pub fn image_of(width: u32, height: u32) -> pb::Image {
    encoded(png(&test_image(width, height)))
}

pub fn options(max_tokens: u32) -> pb::Options {
    pb::Options { max_tokens_per_section: max_tokens, ..Default::default() }
}

/// The largest per-section cap whose worst case (three sections) still fits the fixture's 4096-token
/// context next to the prompt and a few tiles: larger requests are refused before they start.
pub const LONG_TOKENS: u32 = 1100;

/// Options for a request that holds its slot for seconds: hot sampling rarely hits end-of-sequence,
/// so it runs until its large token caps (tests cancel it long before).
pub fn long_options() -> pb::Options {
    pb::Options { max_tokens_per_section: LONG_TOKENS, temperature: 5.0, seed: Some(7), ..Default::default() }
}

pub fn request(image: pb::Image, options: pb::Options) -> pb::EvaluateRequest {
    pb::EvaluateRequest { image: Some(image), options: Some(options) }
}

/// Everything one Evaluate stream delivered, in order.
#[derive(Debug, Default)]
pub struct Collected {
    pub events: Vec<pb::evaluate_event::Event>,
    pub status: Option<tonic::Status>,
}

impl Collected {
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(kind).collect()
    }
    pub fn started(&self) -> Option<&pb::Started> {
        self.events.iter().find_map(|e| if let pb::evaluate_event::Event::Started(s) = e { Some(s) } else { None })
    }
    pub fn scores(&self) -> Vec<&pb::Score> {
        self.events.iter().filter_map(|e| if let pb::evaluate_event::Event::Score(s) = e { Some(s) } else { None }).collect()
    }
    pub fn heatmaps(&self) -> Vec<&pb::Heatmap> {
        self.events.iter().filter_map(|e| if let pb::evaluate_event::Event::Heatmap(h) = e { Some(h) } else { None }).collect()
    }
    pub fn regions(&self) -> Vec<&pb::Regions> {
        self.events.iter().filter_map(|e| if let pb::evaluate_event::Event::Regions(r) = e { Some(r) } else { None }).collect()
    }
    pub fn done(&self) -> Option<&pb::Done> {
        self.events.iter().find_map(|e| if let pb::evaluate_event::Event::Done(d) = e { Some(d) } else { None })
    }
    pub fn text(&self, section: pb::Section) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                pb::evaluate_event::Event::TextDelta(t) if t.section == section as i32 => Some(t.text.as_str()),
                _ => None,
            })
            .collect()
    }
}

pub fn kind(e: &pb::evaluate_event::Event) -> &'static str {
    use pb::evaluate_event::Event::*;
    match e {
        Started(_) => "started",
        TextDelta(_) => "text",
        RegionBox(_) => "region",
        Heatmap(_) => "heatmap",
        Score(_) => "score",
        Regions(_) => "regions",
        Done(_) => "done",
    }
}

/// A chain of thought with two grounding boxes ("the left hand", "the sign"): a server started with
/// `HEIE_FAULT_REFERENCE_COT` set to it feeds it to every evaluation (the random fixtures never write
/// grounding markup themselves).
pub fn reference_cot() -> std::path::PathBuf {
    fixture("reference-cot/hand-and-sign.txt")
}

/// What one region's mask holds, read from its PNG.
#[derive(Debug, PartialEq, Eq)]
pub struct MaskPixels {
    /// The tight bounds `[x1, y1, x2, y2)` of its nonzero pixels.
    pub bounds: [u32; 4],
    pub count: usize,
}

/// Checks one image's regions as a client can: ids 1.., each mask an 8-bit gray PNG at the image's
/// size holding only 0 and 255, its nonzero pixels inside the region's pixel box, and severity in
/// 0..1 and equal to (1 − score) × the mean of the PNG8 heatmap (at image size) over the mask,
/// within the PNG's rounding. Returns what each mask holds.
pub fn check_regions(regions: &[pb::Region], size: (u32, u32), heatmap_png8: &[u8], score: f32) -> Vec<MaskPixels> {
    let heat = image::load_from_memory(heatmap_png8).expect("the heatmap decodes").to_luma8();
    assert_eq!(heat.dimensions(), size, "the check needs the heatmap at the image's size");
    regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.id as usize, i + 1, "ids count from 1 in order");
            let mask = image::load_from_memory(&r.mask_png).expect("the mask decodes");
            assert_eq!(mask.color(), image::ColorType::L8, "region {}: 8-bit gray", r.id);
            let mask = mask.to_luma8();
            assert_eq!(mask.dimensions(), size, "region {}: the mask is at image size", r.id);
            let (mut bounds, mut count, mut sum) = ([u32::MAX, u32::MAX, 0, 0], 0usize, 0f64);
            for (x, y, p) in mask.enumerate_pixels() {
                assert!(p[0] == 0 || p[0] == 255, "region {}: mask values are 0 or 255", r.id);
                if p[0] == 255 {
                    count += 1;
                    sum += heat.get_pixel(x, y)[0] as f64 / 255.0;
                    bounds = [bounds[0].min(x), bounds[1].min(y), bounds[2].max(x + 1), bounds[3].max(y + 1)];
                }
            }
            assert!(count > 0, "region {}: a mask is never empty", r.id);
            let b = r.r#box.as_ref().expect("every region has a box");
            assert_eq!(bounds, [b.pixel_x1, b.pixel_y1, b.pixel_x2, b.pixel_y2], "region {}: the box is the mask's bounds", r.id);
            assert!((0.0..=1.0).contains(&r.severity), "region {}: severity {}", r.id, r.severity);
            let expected = (1.0 - score as f64) * sum / count as f64;
            assert!((r.severity as f64 - expected).abs() <= 0.5 / 255.0 + 1e-4, "region {}: severity {} but (1 − s) × mean H = {expected}", r.id, r.severity);
            MaskPixels { bounds, count }
        })
        .collect()
}

/// Runs one Evaluate to its end (a status error included).
pub async fn evaluate(client: &mut EvaluatorClient<Channel>, req: pb::EvaluateRequest) -> Collected {
    let mut out = Collected::default();
    let mut stream = match client.evaluate(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            out.status = Some(status);
            return out;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(e)) => out.events.push(e.event.expect("every event has a case")),
            Ok(None) => break,
            Err(status) => {
                out.status = Some(status);
                break;
            }
        }
    }
    out
}

/// `GET /metrics` over plain HTTP/1.0.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint reachable");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: heie\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of an unlabelled sample (or one with its full label set) in a Prometheus exposition.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// A `heie serve` child process; killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The HTTP API's address, when started with `--http`.
    pub http_addr: Option<SocketAddr>,
    pub stderr_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Spawns `heie serve ARGS` on the fixture models and waits for its `serving on` line.
    pub fn spawn(extra: &[&str]) -> ServeProcess {
        ServeProcess::spawn_with_env(extra, &[])
    }

    /// [`ServeProcess::spawn`] with extra environment variables for the child.
    pub fn spawn_with_env(extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::spawn_threads(2, extra, env)
    }

    /// [`ServeProcess::spawn_with_env`] with `threads` llama.cpp threads.
    pub fn spawn_threads(threads: u32, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::spawn_full(&heie_bin(), threads, extra, env)
    }

    /// [`ServeProcess::spawn_with_env`] with another `heie` binary (to measure another build).
    pub fn spawn_bin(bin: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::spawn_full(bin, 2, extra, env)
    }

    fn spawn_full(bin: &std::path::Path, threads: u32, extra: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--model", model(LLM).to_str().unwrap(), "--mmproj", model(MMPROJ).to_str().unwrap()])
            .args(["--threads", &threads.to_string(), "--n-gpu-layers", "0"])
            .args(extra)
            .env_remove("HEIE_CONFIG")
            .env_remove("HEIE_HTTP")
            .env("HEIE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A variable given as "" is removed (`("HEIE_LOG", "")`: the default log).
        for (name, value) in env {
            if value.is_empty() {
                cmd.env_remove(name);
            } else {
                cmd.env(name, value);
            }
        }
        let mut child = cmd.spawn().expect("heie serve starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut addr, mut metrics_addr, mut http_addr) = (None, None, None);
        while addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("heie: serving on ") {
                        addr = Some(a.trim().parse().expect("a socket address"));
                    }
                    let http_line = line.strip_prefix("heie: HTTP API and page on ");
                    if let Some(a) = http_line.and_then(|l| l.strip_prefix("http://").or_else(|| l.strip_prefix("https://"))) {
                        http_addr = Some(a.trim_end_matches('/').parse().expect("a socket address"));
                    }
                    if let Some(m) = line.strip_prefix("heie: metrics on http://") {
                        metrics_addr = Some(m.trim_end_matches("/metrics").parse().expect("a socket address"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("heie serve did not report serving; stderr: {:?}", lines.lock().unwrap());
                }
            }
        }
        ServeProcess { child, addr: addr.unwrap(), metrics_addr, http_addr, stderr_lines: lines }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "heie serve did not exit after SIGTERM; stderr: {:?}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// Sends a signal (`-HUP`, `-TERM`, …) by name.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill").args([name, &pid]).status().expect("kill runs");
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "heie serve did not exit; stderr: {:?}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
