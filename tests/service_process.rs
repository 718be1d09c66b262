//! `heie serve` as a process: flags, environment and TOML config merged; port 0 reported; a tonic
//! client over TCP; the Prometheus endpoint; SIGTERM stops it cleanly.

mod service_support;

use std::time::Duration;

use heie_proto::v1 as pb;
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
/// --ignored` runs it.
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
