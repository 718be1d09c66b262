//! Service hardening (issue 11), against real `heie serve` processes and real tonic clients on the
//! fixture models: admission before work, early failures that name their field, truncated images
//! refused, client text kept literal, stalled clients cancelled, one log line per request, and the
//! peak memory of a flood of large images.

mod service_support;

use std::time::Duration;

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use image::{ImageEncoder, RgbImage};
use service_support::*;
use tonic::transport::Channel;
use tonic::Code;

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut out)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn webp(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn invalid(got: &Collected) -> (String, String) {
    let status = got.status.as_ref().expect("the call fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(got.events.is_empty(), "refused before any event: {:?}", got.kinds());
    let message = status.message().to_string();
    let field = message.split(':').next().unwrap().to_string();
    (field, message)
}

/// Lines of the request log (target `heie::request`) in the server's stderr. stderr is a pipe here,
/// as in a log file or collector: no line may carry terminal colour codes.
fn request_lines(server: &ServeProcess) -> Vec<String> {
    let lines: Vec<String> = server.stderr().into_iter().filter(|l| l.contains("heie::request")).collect();
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "colour codes in a piped log: {lines:?}");
    lines
}

/// Waits (bounded) for a log line containing every needle.
async fn wait_for_line(server: &ServeProcess, needles: &[&str]) -> String {
    for _ in 0..100 {
        if let Some(l) = request_lines(server).into_iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no request log line with {needles:?}: {:?}", request_lines(server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_failures_name_their_field_and_every_request_leaves_one_log_line() {
    let _serial = serial().await;
    let server = ServeProcess::spawn_with_env(&["--addr", "127.0.0.1:0", "--max-tokens", "4"], &[("HEIE_LOG", "heie::request=info,warn")]);
    let mut c = client(server.addr).await;

    // GetInfo reports every limit a request can hit.
    let info = c.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let limits = info.limits.unwrap();
    assert_eq!((limits.max_heatmap_side, limits.max_generation_prompt_bytes), (8192, 4096));
    assert_eq!((limits.default_max_tokens_per_section, limits.context_tokens, limits.stall_timeout_ms), (4, 4096, 30_000));
    assert_eq!(limits.max_temperature, 5.0);
    // The advertised token cap is what the context really takes (one tile, no prompt), not the
    // option's absolute ceiling of 2048, which --ctx-size 4096 refuses for every image: that value
    // is admitted, one more is refused naming the option.
    let fit = limits.max_tokens_per_section;
    assert!(fit > 4 && fit < 2048, "max_tokens_per_section {fit} at --ctx-size 4096");
    let one_tile = |max_tokens: u32| request(image_of(56, 56), pb::Options { max_tiles: 1, ..options(max_tokens) });
    let mut admitted = c.evaluate(one_tile(fit)).await.expect("the advertised maximum is admitted").into_inner();
    assert!(admitted.message().await.unwrap().is_some(), "it starts");
    drop(admitted);
    let refused = c.evaluate(one_tile(fit + 1)).await.expect_err("one more does not fit");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("options.max_tokens_per_section"), "{}", refused.message());

    // Truncated images: refused before any work, never judged half grey.
    let picture = test_image(480, 320);
    let cuts = [("JPEG", jpeg(&picture), 5), ("PNG", png(&picture), 2), ("WebP", webp(&picture), 2)];
    for (format, bytes, divisor) in cuts {
        let got = evaluate(&mut c, request(encoded(bytes[..bytes.len() / divisor].to_vec()), options(4))).await;
        let (field, message) = invalid(&got);
        assert_eq!(field, "image.encoded", "{format}");
        assert!(message.contains("image data truncated"), "{format}: {message}");
    }

    // A 1×1 image asking for an 8192×8192 RAW_F32 heatmap (256 MiB) fails now, not after the evaluation.
    let huge = pb::Options { heatmap_width: 8192, heatmap_height: 8192, heatmap_encodings: vec![pb::HeatmapEncoding::RawF32Le as i32], ..options(4) };
    let got = evaluate(&mut c, request(image_of(1, 1), huge)).await;
    let (field, message) = invalid(&got);
    assert_eq!(field, "options.heatmap_encodings[0]");
    assert!(message.contains("--max-message-bytes"), "{message}");

    // Three sections of 2048 tokens cannot fit the 4096-token context: refused up front.
    let got = evaluate(&mut c, request(image_of(64, 48), options(2048))).await;
    let (field, message) = invalid(&got);
    assert_eq!(field, "options.max_tokens_per_section");
    assert!(message.contains("--ctx-size") && message.contains("4096"), "{message}");

    // A prompt over the cap names the image's prompt.
    let mut long_prompt = image_of(64, 48);
    long_prompt.generation_prompt = Some("x".repeat(4097));
    let (field, _) = invalid(&evaluate(&mut c, request(long_prompt, options(4))).await);
    assert_eq!(field, "image.generation_prompt");

    // A success, then the log: one line per request, rejections included.
    let ok = evaluate(&mut c, request(image_of(64, 48), options(4))).await;
    assert!(ok.status.is_none(), "{:?}", ok.status);
    let id = ok.started().unwrap().request_id.clone();
    let line = wait_for_line(&server, &["rpc=\"Evaluate\"", "outcome=\"completed\"", "status=\"OK\""]).await;
    for needle in ["rpc=\"Evaluate\"", &format!("request_id={id}"), "peer=127.0.0.1:", "image=64x48", "tiles=", "prompt_tokens=", "image_tokens=", "generated_tokens=", "queue_ms=", "total_ms="] {
        assert!(line.contains(needle), "{needle:?} missing from {line}");
    }
    let rejected = request_lines(&server).into_iter().filter(|l| l.contains("outcome=\"rejected\"") && l.contains("status=\"INVALID_ARGUMENT\"")).count();
    // Six bad inputs above, and the token cap one past the advertised maximum.
    assert_eq!(rejected, 7, "{:?}", request_lines(&server));
    assert!(wait_for_line(&server, &["rpc=\"GetInfo\"", "status=\"OK\""]).await.contains("GetInfo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_at_once_and_a_batch_needs_all_its_places() {
    let _serial = serial().await;
    // 5 ms a decode step (test-only HEIE_FAULT_STEP_DELAY_MS): the long requests below hold their
    // places for many seconds on any machine.
    let server = ServeProcess::spawn_with_env(
        &["--addr", "127.0.0.1:0", "--parallel", "1", "--max-queue", "1"],
        &[("HEIE_LOG", "heie::request=info,warn"), ("HEIE_FAULT_STEP_DELAY_MS", "5")],
    );
    let mut c = client(server.addr).await;
    // Two long requests take both places (one slot, one queue position).
    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(c.evaluate(request(image_of(64, 48), long_options())).await.expect("admitted").into_inner());
    }
    // The third is refused at once, and a batch of two refused whole.
    let status = refused(c.evaluate(request(image_of(64, 48), options(4))).await, "over the places");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let batch = pb::EvaluateBatchRequest { images: vec![image_of(32, 32), image_of(32, 32)], options: Some(options(4)) };
    assert_eq!(refused(c.evaluate_batch(batch).await, "batch").code(), Code::ResourceExhausted);
    // A batch larger than the server's places could never run: the client's fault, named.
    let batch = pb::EvaluateBatchRequest { images: vec![image_of(32, 32); 3], options: Some(options(4)) };
    let status = refused(c.evaluate_batch(batch).await, "batch over capacity");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("images:"), "{status:?}");
    // Leaving frees the places.
    drop(streams);
    let mut served = None;
    for _ in 0..100 {
        let got = evaluate(&mut c, request(image_of(64, 48), options(4))).await;
        if got.status.as_ref().map(|s| s.code()) != Some(Code::ResourceExhausted) {
            served = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = served.expect("places freed");
    assert!(served.status.is_none(), "{:?}", served.status);
    wait_for_line(&server, &["outcome=\"rejected\"", "status=\"RESOURCE_EXHAUSTED\""]).await;
    wait_for_line(&server, &["outcome=\"cancelled\"", "status=\"CANCELLED\""]).await;
}

/// A client whose HTTP/2 window is tiny and who never reads: the transport stops taking events.
async fn stalling_client(addr: std::net::SocketAddr) -> EvaluatorClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(Some(256))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    EvaluatorClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cancelled_and_its_slot_freed() {
    let _serial = serial().await;
    let server = ServeProcess::spawn_with_env(
        &["--addr", "127.0.0.1:0", "--parallel", "1", "--stall-timeout", "1", "--metrics-addr", "127.0.0.1:0"],
        // 5 ms a decode step: the long request cannot finish before the 1 s stall limit, however
        // fast the machine.
        &[("HEIE_LOG", "heie::request=info,warn"), ("HEIE_FAULT_STEP_DELAY_MS", "5")],
    );
    let metrics_addr = server.metrics_addr.unwrap();
    // A long, hot request whose client reads nothing: its events fill the window, then wait.
    let mut staller = stalling_client(server.addr).await;
    let stalled = staller.evaluate(request(image_of(64, 48), long_options())).await.expect("admitted").into_inner();
    // A second request waits for the only slot; it is served once the stall frees it.
    let mut c = client(server.addr).await;
    let got = tokio::time::timeout(Duration::from_secs(120), evaluate(&mut c, request(image_of(64, 48), options(4)))).await.expect("served");
    assert!(got.status.is_none(), "{:?}", got.status);
    let line = wait_for_line(&server, &["outcome=\"stalled\""]).await;
    assert!(line.contains("status=\"CANCELLED\""), "{line}");
    // The tokens it wrote before it was cancelled are in its line (its Done, which carries the engine's
    // count, never came): it filled the client's window, so it wrote some.
    let generated: u32 = line.split("generated_tokens=").nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).expect("a count");
    assert!(generated > 0, "{line}");
    let text = tokio::task::spawn_blocking(move || scrape(metrics_addr)).await.unwrap();
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"CANCELLED\"} 1"), "{text}");
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 1"), "{text}");
    // When the stalled client reads at last, its stream ends with the reason, not with a result.
    let mut stalled = stalled;
    let end = loop {
        match stalled.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stalled stream ended as if complete"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Cancelled, "{end:?}");
    assert!(end.message().contains("read nothing"), "{end:?}");
}

/// 32 concurrent requests, each a ~130 KB PNG of a flat 6300×6300 image (40 MP, inside the default
/// pixel budget), against `heie serve` with default flags: every request completes or is refused
/// RESOURCE_EXHAUSTED, and the server's peak resident memory (VmHWM) stays under 1.5 GB. Memory, not
/// time: nothing here is timed. `HEIE_MEASURE_BIN` measures another build of `heie` the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_images_keeps_peak_memory_bounded() {
    let _serial = serial().await;
    let flat = RgbImage::from_pixel(6300, 6300, image::Rgb([120, 130, 140]));
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(&mut bytes, image::codecs::png::CompressionType::Best, image::codecs::png::FilterType::Adaptive)
        .write_image(flat.as_raw(), 6300, 6300, image::ExtendedColorType::Rgb8)
        .unwrap();
    drop(flat);
    assert!((100_000..200_000).contains(&bytes.len()), "a ~130 KB PNG, got {}", bytes.len());
    let server = match std::env::var_os("HEIE_MEASURE_BIN") {
        Some(bin) => ServeProcess::spawn_bin(std::path::Path::new(&bin), &["--addr", "127.0.0.1:0"], &[]),
        None => ServeProcess::spawn_with_env(&["--addr", "127.0.0.1:0"], &[]),
    };
    let pid = server.child.id();
    let before = peak_rss_kib(pid);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (addr, bytes) = (server.addr, bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            evaluate(&mut c, request(encoded(bytes), options(8))).await
        }));
    }
    let (mut completed, mut refused) = (0, 0);
    for t in tasks {
        let got = t.await.unwrap();
        match &got.status {
            None => {
                assert!(got.done().is_some());
                completed += 1;
            }
            Some(s) if s.code() == Code::ResourceExhausted => refused += 1,
            Some(s) => panic!("neither completed nor RESOURCE_EXHAUSTED: {s:?}"),
        }
    }
    let peak = peak_rss_kib(pid);
    eprintln!("flood: {completed} completed, {refused} refused; peak RSS {:.0} MiB (before the flood {:.0} MiB)", peak as f64 / 1024.0, before as f64 / 1024.0);
    assert_eq!(completed + refused, 32);
    assert!(completed >= 1);
    assert!(peak < 1_500_000_000 / 1024, "peak RSS {peak} KiB is over 1.5 GB");
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
