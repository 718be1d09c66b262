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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_heie_and_the_naive_path_side_by_side_and_prints_json() {
    let _serial = serial().await;
    let out = std::process::Command::new(heie_bin())
        .args(["bench", "--model", model(LLM).to_str().unwrap(), "--mmproj", model(MMPROJ).to_str().unwrap()])
        .args(["--threads", "1", "--parallel", "1,2", "--paths", "heie,naive,no-prefix-cache", "--requests", "4"])
        .args(["--max-tokens", "2", "--width", "96", "--height", "64", "--json"])
        .env("HEIE_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = rows.as_array().unwrap();
    let settings: Vec<(String, u64)> =
        rows.iter().map(|r| (r["path"].as_str().unwrap().to_string(), r["in_flight"].as_u64().unwrap())).collect();
    let expected: Vec<(String, u64)> = [1, 2]
        .into_iter()
        .flat_map(|n| ["heie", "naive", "no-prefix-cache"].map(|p| (p.to_string(), n)))
        .collect();
    assert_eq!(settings, expected);
    for row in rows {
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
        // Each row is compared with the naive row of the same in-flight count.
        assert!(row["vs_naive"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(rows[1]["vs_naive"], 1.0);
    assert_eq!(rows[0]["mean_decode_batch"], 1.0, "one slot decodes one sequence per step");
}
