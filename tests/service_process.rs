//! `heie serve` as a process: flags, environment and TOML config merged; port 0 reported; a tonic
//! client over TCP; the Prometheus endpoint; SIGTERM stops it cleanly. `heie bench` as a process: its
//! rows, HEIE's ablations, and its llama-server peer — in CI the fake `fixtures/fake_llama_server.py`
//! (started by the bench, or running), a real llama-server where `HEIE_TEST_LLAMA_SERVER` names one.

mod fake_peer;
mod service_support;

use std::time::Duration;

use heie_proto::v1 as pb;
use serde_json::{json, Value};
use service_support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_merges_config_answers_rpcs_exports_metrics_and_stops_on_sigterm() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("heie.toml");
    // The file sets the batch limit and token default; the flag overrides its parallel; the
    // environment sets the queue.
    std::fs::write(&config, "parallel = 1\nmax-batch = 2\nmax-tokens = 4\nmax-tiles = 2\nmetrics-addr = \"127.0.0.1:0\"\n").unwrap();
    let mut server = ServeProcess::spawn_with_env(
        &["--config", config.to_str().unwrap(), "--addr", "127.0.0.1:0", "--parallel", "2"],
        &[("HEIE_MAX_QUEUE", "5")],
    );
    assert_ne!(server.addr.port(), 0, "the real port is printed");
    let metrics_addr = server.metrics_addr.expect("the metrics address is printed");

    let mut c = client(server.addr).await;
    let info = c.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let limits = info.limits.unwrap();
    assert_eq!((limits.parallel_slots, limits.max_batch, limits.max_queue, limits.max_tiles), (2, 2, 5, 2));

    // Unset max_tokens_per_section takes the configured default of 4 per section.
    let got = evaluate(&mut c, pb::EvaluateRequest { image: Some(image_of(300, 200)), options: None }).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    let tiles = got.started().unwrap().tiles.unwrap();
    assert!(tiles.cols * tiles.rows <= 2, "max-tiles from the file");
    assert!(got.done().unwrap().tokens.unwrap().generated_tokens <= 3 * 4 + 1);
    let batch = pb::EvaluateBatchRequest { images: vec![image_of(64, 64); 3], options: None };
    let status = refused(c.evaluate_batch(batch).await, "over max-batch");
    assert_eq!(status.code(), Code::InvalidArgument);

    let text = tokio::task::spawn_blocking(move || scrape(metrics_addr)).await.unwrap();
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 1"), "{text}");
    assert!(text.contains("heie_requests_total{method=\"EvaluateBatch\",code=\"INVALID_ARGUMENT\"} 1"), "{text}");
    assert!(text.contains("heie_requests_total{method=\"GetInfo\",code=\"OK\"} 1"), "{text}");
    assert_eq!(sample(&text, "heie_ready"), Some(1.0));
    assert!(sample(&text, "heie_image_encodes_total").unwrap() >= 2.0);
    assert!(sample(&text, "heie_image_encode_seconds_total").unwrap() > 0.0);
    assert!(sample(&text, "heie_generated_tokens_total").unwrap() > 0.0);

    drop(c);
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status:?}; stderr {:?}", server.stderr());
    assert!(server.stderr().iter().any(|l| l == "heie: stopped"), "{:?}", server.stderr());
}

#[test]
fn serve_reports_a_bad_config_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "max-queue = \"many\"\n").unwrap();
    let out = std::process::Command::new(heie_bin()).args(["serve", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("heie: error: config") && stderr.contains("max-queue"), "{stderr}");
}

/// `heie bench` on the fixture model pair; callers add the rest.
fn bench_on_the_fixture() -> std::process::Command {
    let mut command = std::process::Command::new(heie_bin());
    command.args(["bench", "--model", model(LLM).to_str().unwrap(), "--mmproj", model(MMPROJ).to_str().unwrap()]);
    command
}

/// Runs a bench command with `--json` and returns its rows; the run must succeed.
fn bench_rows(command: &mut std::process::Command) -> Vec<serde_json::Value> {
    let out = command.arg("--json").env("HEIE_LOG", "error").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let serde_json::Value::Array(rows) = rows else { panic!("expected an array of rows, got {rows}") };
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_heie_and_its_ablations_side_by_side_and_prints_json() {
    let _serial = serial().await;
    let rows = bench_rows(
        bench_on_the_fixture()
            .args(["--threads", "1", "--parallel", "1,2", "--paths", "heie,no-speedups,no-prefix-cache", "--requests", "4"])
            .args(["--max-tokens", "2", "--width", "96", "--height", "64"]),
    );
    let settings: Vec<(String, u64)> =
        rows.iter().map(|r| (r["path"].as_str().unwrap().to_string(), r["in_flight"].as_u64().unwrap())).collect();
    let expected: Vec<(String, u64)> = [1, 2]
        .into_iter()
        .flat_map(|n| ["heie", "no-speedups", "no-prefix-cache"].map(|p| (p.to_string(), n)))
        .collect();
    assert_eq!(settings, expected);
    for row in &rows {
        assert_eq!(row["requests"], 4);
        assert!(row["images_per_s"].as_f64().unwrap() > 0.0);
        let (p50, p95) = (row["latency_p50_ms"].as_f64().unwrap(), row["latency_p95_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p95 >= p50, "{row}");
        let (t50, t95) = (row["ttft_p50_ms"].as_f64().unwrap(), row["ttft_p95_ms"].as_f64().unwrap());
        assert!(t50 > 0.0 && t95 >= t50 && t50 <= p50, "{row}");
        assert!(row["image_encode_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["sequence_decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{row}");
        let share = row["pre_post_share"].as_f64().unwrap();
        assert!(share > 0.0 && share < 1.0, "{row}");
        assert!(row["mean_decode_batch"].as_f64().unwrap() >= 1.0);
        // Each row is compared with the no-speedups row of the same in-flight count; there is no
        // llama-server row to compare with.
        assert!(row["vs_no_speedups"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["vs_llama_server"].is_null(), "{row}");
        // Every text piece after the first leaves a gap; the stream ends with at least two.
        let (g95, gmax) = (row["gap_p95_ms"].as_f64().unwrap(), row["gap_max_ms"].as_f64().unwrap());
        assert!(g95 > 0.0 && gmax >= g95 && gmax <= p95, "{row}");
        assert!(row["prompt_tokens"].as_f64().unwrap() > row["generated_per_request"].as_f64().unwrap(), "{row}");
    }
    assert_eq!(rows[1]["vs_no_speedups"], 1.0);
    assert_eq!(rows[0]["mean_decode_batch"], 1.0, "one slot decodes one sequence per step");
}

#[test]
fn bench_asks_for_the_llama_server_it_compares_with() {
    let bench = |extra: &[&str]| {
        let out = bench_on_the_fixture().args(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = bench(&["--paths", "heie,llama-server"]);
    assert!(missing.contains("--llama-server PATH|URL"), "{missing}");
    let absent = bench(&["--paths", "llama-server", "--llama-server", "/nonexistent/llama-server"]);
    assert!(absent.contains("no such file"), "{absent}");
    let old_name = bench(&["--paths", "naive"]);
    assert!(old_name.contains("no-speedups"), "{old_name}");
}

/// Against a real llama-server (a bench prerequisite, not a CI one: building it takes ~15 minutes; see
/// the README's Throughput section). `HEIE_TEST_LLAMA_SERVER=PATH cargo test --test service_process --
/// --ignored` runs it; CI runs the same bench against the fake below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HEIE_TEST_LLAMA_SERVER (a llama-server binary built from llama.cpp)"]
async fn bench_compares_with_a_real_llama_server_on_the_same_work() {
    let binary = std::env::var("HEIE_TEST_LLAMA_SERVER")
        .expect("HEIE_TEST_LLAMA_SERVER must name a llama-server binary to run this test (see the README's Throughput section)");
    let _serial = serial().await;
    let rows = bench_rows(
        bench_on_the_fixture()
            .args(["--threads", "1", "--parallel", "2", "--paths", "llama-server,heie", "--llama-server", &binary])
            .args(["--requests", "4", "--max-tokens", "4", "--width", "96", "--height", "64"]),
    );
    // HEIE runs first whatever the order given, so the peer is asked for as many tokens.
    assert_eq!(rows[0]["path"], "heie");
    assert_eq!(rows[1]["path"], "llama-server");
    assert_eq!(rows[1]["generated_per_request"].as_f64().unwrap(), rows[0]["generated_per_request"].as_f64().unwrap().round());
    for row in &rows {
        assert_eq!(row["requests"], 4, "{row}");
        assert!(row["ttft_p50_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["prompt_tokens"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["vs_llama_server"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(rows[1]["vs_llama_server"], 1.0);
}

/// HEIE's resolved flash-attention setting for `--flash-attn auto` as llama-server spells it: the peer
/// must run the same attention kernels.
fn heie_flash_attn_auto() -> &'static str {
    use heie_server::engine::{flash_attention_for, runs_on_gpu};
    match flash_attention_for(None, runs_on_gpu(-1)) {
        None => "auto",
        Some(true) => "on",
        Some(false) => "off",
    }
}

/// A request the peer received carried HEIE's work: its system prompt and instruction, the bench's image
/// (a PNG of the size asked for), as many tokens as asked, greedy, with usage in the stream.
fn assert_heie_work(chat: &Value, (width, height): (u64, u64), max_tokens: f64) {
    use heie_server::pipeline::prompt::{GROUNDING_HINT, INSTRUCTION, SYSTEM_PROMPT};
    assert_eq!(chat["system"], SYSTEM_PROMPT);
    assert_eq!(chat["text"], format!("{INSTRUCTION} {GROUNDING_HINT}"));
    assert_eq!((chat["image"]["width"].as_u64(), chat["image"]["height"].as_u64()), (Some(width), Some(height)), "{chat}");
    assert_eq!(chat["max_tokens"].as_f64(), Some(max_tokens), "{chat}");
    assert_eq!(chat["temperature"], 0.0);
    assert_eq!(chat["include_usage"], true);
}

/// The peer path in CI, against the fake llama-server (`fixtures/fake_llama_server.py`, which knows
/// llama-server's flags from llama.cpp's own source and refuses any other): one peer per in-flight count
/// started with HEIE's settings, given HEIE's work, its stream read into rows beside HEIE's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_starts_llama_server_with_heies_settings_and_gives_it_heies_work() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("peer.jsonl");
    let script = fake_peer::script();
    let rows = bench_rows(
        bench_on_the_fixture()
            .args(["--threads", "1", "--parallel", "1,2", "--paths", "llama-server,heie", "--llama-server", script.to_str().unwrap()])
            .args(["--requests", "3", "--max-tokens", "2", "--width", "96", "--height", "64", "--ctx-size", "1024", "--batch-size", "64"])
            .envs(fake_peer::env(&log, None)),
    );
    let events = fake_peer::events(&log);
    assert_eq!(fake_peer::of(&events, "refused"), Vec::<Value>::new(), "every request well-formed, none sent before /health said ready");

    let starts = fake_peer::of(&events, "start");
    assert_eq!(starts.len(), 2, "one peer per in-flight count: {starts:?}");
    for (start, slots) in starts.iter().zip([1u64, 2]) {
        let flag = |name: &str| start["parsed"][name].clone();
        assert_eq!(flag("--model"), model(LLM).to_str().unwrap());
        assert_eq!(flag("--mmproj"), model(MMPROJ).to_str().unwrap());
        assert_eq!(flag("--parallel"), slots, "a slot per request in flight");
        assert_eq!(flag("--ctx-size"), 1024 * slots, "HEIE's per-sequence context for each slot");
        assert_eq!(flag("--kv-unified"), false, "a KV stream per slot, as HEIE's per-sequence cache");
        assert_eq!((flag("--threads"), flag("--threads-batch")), (json!(1), json!(1)));
        assert_eq!((flag("--batch-size"), flag("--ubatch-size")), (json!(64), json!(64)));
        assert_eq!(flag("--flash-attn"), heie_flash_attn_auto(), "HEIE's resolved flash-attention setting");
        assert_eq!(flag("--n-gpu-layers"), -1);
    }

    let settings: Vec<(&str, u64)> = rows.iter().map(|r| (r["path"].as_str().unwrap(), r["in_flight"].as_u64().unwrap())).collect();
    assert_eq!(settings, [("heie", 1), ("llama-server", 1), ("heie", 2), ("llama-server", 2)], "HEIE first at each in-flight count");
    let chats = fake_peer::of(&events, "chat");
    for (pair, start) in rows.chunks(2).zip(&starts) {
        let (heie, peer) = (&pair[0], &pair[1]);
        let asked = heie["generated_per_request"].as_f64().unwrap().round();
        assert!(asked > 0.0, "{heie}");
        let served: Vec<&Value> = chats.iter().filter(|c| c["pid"] == start["pid"]).collect();
        assert_eq!(served.len(), 1 + 3, "a warm-up, then the measured requests");
        for chat in &served {
            assert_heie_work(chat, (96, 64), asked);
        }
        assert_eq!(peer["requests"], 3, "{peer}");
        assert_eq!(peer["generated_per_request"].as_f64(), Some(asked), "as many tokens as HEIE generated: {peer}");
        let (ttft, latency) = (peer["ttft_p50_ms"].as_f64().unwrap(), peer["latency_p50_ms"].as_f64().unwrap());
        assert!(ttft > 0.0 && ttft <= latency, "{peer}");
        // The server's own numbers, read from its usage and timings.
        assert_eq!(peer["prompt_tokens"].as_f64(), served[0]["prompt_tokens"].as_f64(), "{peer}");
        assert_eq!(peer["prefill_ms"].as_f64(), served[0]["prompt_ms"].as_f64(), "{peer}");
        assert_eq!(peer["sequence_decode_tokens_per_s"].as_f64(), served[0]["predicted_per_second"].as_f64(), "{peer}");
        assert_eq!(peer["vs_llama_server"], 1.0);
        let ratio = heie["images_per_s"].as_f64().unwrap() / peer["images_per_s"].as_f64().unwrap();
        assert!((heie["vs_llama_server"].as_f64().unwrap() - ratio).abs() <= 1e-9 * ratio, "{heie}");
    }
}

/// `--flash-attn` reaches the peer as HEIE runs with it: `auto` resolved the way HEIE resolves it, `on`
/// and `off` as given. Only the peer path runs (asked for every section at its cap), so no engine starts.
#[test]
fn bench_gives_the_peer_heies_flash_attention_setting() {
    let dir = tempfile::tempdir().unwrap();
    let script = fake_peer::script();
    for (setting, expected) in [("auto", heie_flash_attn_auto()), ("on", "on"), ("off", "off")] {
        let log = dir.path().join(format!("peer-{setting}.jsonl"));
        let rows = bench_rows(
            bench_on_the_fixture()
                .args(["--threads", "1", "--parallel", "1", "--paths", "llama-server", "--llama-server", script.to_str().unwrap()])
                .args(["--requests", "1", "--max-tokens", "2", "--width", "96", "--height", "64", "--flash-attn", setting])
                .envs(fake_peer::env(&log, None)),
        );
        let events = fake_peer::events(&log);
        let starts = fake_peer::of(&events, "start");
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0]["parsed"]["--flash-attn"], expected, "--flash-attn {setting}");
        assert_eq!(rows[0]["generated_per_request"], 3.0 * 2.0, "three sections at --max-tokens each");
        for chat in fake_peer::of(&events, "chat") {
            assert_heie_work(&chat, (96, 64), 6.0);
        }
    }
}

/// `--llama-server http://…`: a peer already running (here the fake, started by the test) is driven as
/// it is, with HEIE's work, and not restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_running_llama_server_given_its_url() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("peer.jsonl");
    let fake = fake_peer::RunningFake::start(&log, &model(LLM), &model(MMPROJ));
    let rows = bench_rows(
        bench_on_the_fixture()
            .args(["--threads", "1", "--parallel", "2", "--paths", "heie,llama-server", "--llama-server", &fake.url])
            .args(["--requests", "4", "--max-tokens", "2", "--width", "96", "--height", "64"]),
    );
    let events = fake_peer::events(&log);
    assert_eq!(fake_peer::of(&events, "start").len(), 1, "only the test started it");
    assert_eq!(fake_peer::of(&events, "refused"), Vec::<Value>::new());
    let (heie, peer) = (&rows[0], &rows[1]);
    assert_eq!((&heie["path"], &peer["path"]), (&json!("heie"), &json!("llama-server")));
    let asked = heie["generated_per_request"].as_f64().unwrap().round();
    let chats = fake_peer::of(&events, "chat");
    assert_eq!(chats.len(), 1 + 4, "a warm-up, then the measured requests");
    for chat in &chats {
        assert_heie_work(chat, (96, 64), asked);
    }
    assert_eq!((&peer["requests"], &peer["in_flight"]), (&json!(4), &json!(2)), "{peer}");
    assert_eq!(peer["generated_per_request"].as_f64(), Some(asked), "{peer}");
    assert!(peer["ttft_p50_ms"].as_f64().unwrap() > 0.0, "{peer}");
    assert!(heie["vs_llama_server"].as_f64().unwrap() > 0.0, "{heie}");
}

/// A peer that dies while starting, or fails a request mid-stream, fails the bench with one line that
/// says so (and, for a peer the bench started, the end of its log), never a row of zeros.
#[test]
fn bench_fails_clearly_when_the_peer_dies_at_start_or_fails_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let script = fake_peer::script();
    let cases = [
        ("load", ["llama-server did not come up", "exiting due to model loading error", "llama-server exited with"]),
        ("stream", ["llama-server warm-up request", "llama-server failed a request", "decoding failed"]),
    ];
    for (fault, needles) in cases {
        let log = dir.path().join(format!("peer-{fault}.jsonl"));
        let out = bench_on_the_fixture()
            .args(["--threads", "1", "--parallel", "1", "--paths", "llama-server", "--llama-server", script.to_str().unwrap()])
            .args(["--requests", "1", "--max-tokens", "2", "--width", "96", "--height", "64", "--json"])
            .envs(fake_peer::env(&log, Some(fault)))
            .env("HEIE_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{fault}: {stderr}");
        assert!(out.stdout.is_empty(), "{fault}: no rows");
        assert!(stderr.starts_with("heie: error: "), "{fault}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{fault}: {needle:?} missing from {stderr}");
        }
    }
}

/// The fake refuses what llama-server refuses (an unknown flag, a value its handler rejects, a missing
/// value or model file) with exit 1 and llama.cpp's message, so a wrong flag in the bench fails the
/// tests above instead of passing them.
#[test]
fn the_fake_llama_server_refuses_what_llama_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (llm, mmproj) = (model(LLM), model(MMPROJ));
    let base = ["--model", llm.to_str().unwrap(), "--mmproj", mmproj.to_str().unwrap(), "--port", "0"];
    let cases: [(&[&str], &str); 6] = [
        (&["--no-kv-unify"], "error: invalid argument: --no-kv-unify"),
        (&["--flash-attn", "yes"], "error: unknown value for --flash-attn: 'yes'"),
        (&["--threads", "one"], "error while handling argument \"--threads\""),
        (&["--parallel", "0"], "invalid value for n_parallel"),
        (&["--ctx-size"], "expected value for argument"),
        (&["--model", "/nonexistent/model.gguf"], "--model /nonexistent/model.gguf"),
    ];
    for (extra, needle) in cases {
        let log = dir.path().join("refused.jsonl");
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, stderr) = fake_peer::run(&log, &args);
        assert_eq!(code, Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {needle:?} missing from {stderr}");
        let events = fake_peer::events(&log);
        assert!(fake_peer::of(&events, "start").is_empty(), "{extra:?} never serves");
    }
}

/// The PNG8 primary heatmap and the primary score of one image's events.
fn primary_of(events: &[pb::evaluate_event::Event]) -> (Vec<u8>, f32) {
    use pb::evaluate_event::Event;
    let heatmap = events.iter().find_map(|e| if let Event::Heatmap(h) = e { Some(h.data.clone()) } else { None });
    let score = events.iter().find_map(|e| if let Event::Score(s) = e { Some(s.score) } else { None });
    (heatmap.expect("a heatmap"), score.expect("a score"))
}

/// Where the Regions event sits: once, after every Score, right before Done (the last event).
fn assert_regions_after_scores_before_done(kinds: &[&str]) {
    assert_eq!(kinds.iter().filter(|k| **k == "regions").count(), 1, "{kinds:?}");
    let at = kinds.iter().position(|k| *k == "regions").unwrap();
    assert!(kinds.iter().rposition(|k| *k == "score").unwrap() < at, "{kinds:?}");
    assert_eq!(&kinds[at + 1..], ["done"], "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_regions_are_the_grounding_boxes_with_exact_masks_after_the_scores_on_evaluate_and_batch() {
    let _serial = serial().await;
    let reference = reference_cot();
    let server = ServeProcess::spawn_with_env(&["--addr", "127.0.0.1:0"], &[("HEIE_FAULT_REFERENCE_COT", reference.to_str().unwrap())]);
    let mut c = client(server.addr).await;
    let got = evaluate(&mut c, request(image_of(200, 100), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    assert_regions_after_scores_before_done(&got.kinds());
    let regions = &got.regions()[0].regions;
    // One region per grounding box, in the order written, each the box the stream reported.
    let boxes: Vec<&pb::RegionBox> =
        got.events.iter().filter_map(|e| if let pb::evaluate_event::Event::RegionBox(b) = e { Some(b) } else { None }).collect();
    assert_eq!(boxes.len(), 2, "the fed reference has two boxes");
    assert_eq!(regions.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(), ["the left hand", "the sign"]);
    for (r, b) in regions.iter().zip(&boxes) {
        assert_eq!(r.r#box.as_ref(), Some(*b), "region {} has its grounding box", r.id);
        assert_eq!(r.source, pb::RegionSource::GroundedBox as i32);
    }
    assert_eq!(
        (regions[0].r#box.as_ref().unwrap().pixel_x1, regions[0].r#box.as_ref().unwrap().pixel_y2),
        (20, 90),
        "[[100,500,300,900]] on 200×100"
    );
    // Each mask is exactly its box: its nonzero pixels fill the pixel box.
    let (heatmap, score) = primary_of(&got.events);
    let masks = check_regions(regions, (200, 100), &heatmap, score);
    for (r, m) in regions.iter().zip(&masks) {
        let b = r.r#box.as_ref().unwrap();
        assert_eq!(m.count as u32, (b.pixel_x2 - b.pixel_x1) * (b.pixel_y2 - b.pixel_y1), "region {}: the mask is the box", r.id);
    }
    assert_eq!(
        regions[0].sentences,
        [
            "Problematic areas: the left hand holding the sign, and the sign.",
            "Hand: the left hand has six fingers that merge into the sign."
        ]
    );
    assert!(regions[1].sentences.contains(&"Sign: the letters of the sign are garbled.".to_string()), "{:?}", regions[1].sentences);

    // EvaluateBatch: one Regions per image, in each image's stream at the same place.
    let batch = pb::EvaluateBatchRequest { images: vec![image_of(120, 90), image_of(64, 128)], options: Some(options(4)) };
    let mut stream = c.evaluate_batch(batch).await.unwrap().into_inner();
    let mut per_image: Vec<Vec<pb::evaluate_event::Event>> = vec![Vec::new(); 2];
    while let Some(ev) = stream.message().await.unwrap() {
        if let Some(pb::batch_event::Payload::Event(e)) = ev.payload {
            per_image[ev.index as usize].push(e.event.unwrap());
        }
    }
    for (events, size) in per_image.iter().zip([(120, 90), (64, 128)]) {
        let kinds: Vec<&str> = events.iter().map(kind).collect();
        assert_regions_after_scores_before_done(&kinds);
        let regions = events.iter().find_map(|e| if let pb::evaluate_event::Event::Regions(r) = e { Some(&r.regions) } else { None }).unwrap();
        assert_eq!(regions.len(), 2);
        let (heatmap, score) = primary_of(events);
        check_regions(regions, size, &heatmap, score);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_regions_are_heatmap_components_largest_first_joined_to_the_box_they_overlap_most() {
    use heie_heads::{Heads, HeadsConfig};
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let heads = dir.path().join("heads.safetensors");
    // tiny-mmproj: 4 tokens per tile = a 2×2 token grid; the LLM is 64 wide.
    Heads::init(HeadsConfig::new(64, 2), TRAINED_HEADS_SEED).unwrap().save(&heads).unwrap();
    let reference = reference_cot();
    let server = ServeProcess::spawn_with_env(
        &["--addr", "127.0.0.1:0", "--heads", heads.to_str().unwrap()],
        &[("HEIE_FAULT_REFERENCE_COT", reference.to_str().unwrap())],
    );
    let mut c = client(server.addr).await;
    let got = evaluate(&mut c, request(image_of(200, 100), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    assert_regions_after_scores_before_done(&got.kinds());
    let heatmaps = got.heatmaps();
    assert_eq!(heatmaps[0].source, pb::HeatmapSource::Fused as i32, "the trained map is the primary");
    assert_eq!((heatmaps[0].width, heatmaps[0].height), (200, 100));
    let regions = &got.regions()[0].regions;
    assert!(!regions.is_empty(), "these heads flag part of the fixture image (seed {TRAINED_HEADS_SEED})");
    let (heatmap, score) = primary_of(&got.events);
    let masks = check_regions(regions, (200, 100), &heatmap, score);
    let heat = image::load_from_memory(&heatmap).unwrap().to_luma8();
    let boxes: Vec<&pb::RegionBox> =
        got.events.iter().filter_map(|e| if let pb::evaluate_event::Event::RegionBox(b) = e { Some(b) } else { None }).collect();
    for (r, m) in regions.iter().zip(&masks) {
        assert_eq!(r.source, pb::RegionSource::HeatmapComponent as i32);
        let mask = image::load_from_memory(&r.mask_png).unwrap().to_luma8();
        // The heatmap is at its own (= the image's) size, so every mask pixel is a flagged cell.
        for (x, y, p) in mask.enumerate_pixels() {
            if p[0] == 255 {
                assert!(heat.get_pixel(x, y)[0] >= 128, "region {}: ({x}, {y}) is under 0.5", r.id);
            }
        }
        // Its label is the box holding most of its pixels (none → empty, no sentences).
        let overlap = |b: &pb::RegionBox| {
            mask.enumerate_pixels()
                .filter(|(x, y, p)| p[0] == 255 && (b.pixel_x1..b.pixel_x2).contains(x) && (b.pixel_y1..b.pixel_y2).contains(y))
                .count()
        };
        let best = boxes.iter().map(|b| overlap(b)).max().unwrap_or(0);
        if best == 0 {
            assert!(r.label.is_empty() && r.sentences.is_empty(), "region {}: {r:?}", r.id);
        } else {
            let first_best = boxes.iter().find(|b| overlap(b) == best).unwrap();
            assert_eq!(r.label, first_best.label, "region {}", r.id);
            assert!(!r.sentences.is_empty(), "region {}: its label is named in the text", r.id);
        }
        assert!(m.count * 1000 >= 200 * 100, "region {}: no speck under 0.1 % of the map", r.id);
    }
    assert!(masks.windows(2).all(|w| w[0].count >= w[1].count), "largest first: {masks:?}");
}

/// Random heads whose fused map flags part of the fixture image (checked by the test above).
const TRAINED_HEADS_SEED: u64 = 3;
