//! `heie serve --http` as a process, spoken to by curl: `HEIE_HTTP` turns the HTTP edge on, the
//! address is printed, SSE streams through `curl -N`, errors come back as JSON with their status,
//! SIGTERM stops the process cleanly, and SIGHUP re-reads `--api-key-file` for the HTTP port too.

mod http_support;
mod service_support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use http_support::*;
use serde_json::json;
use service_support::serial_blocking;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "120"]).args(args).output().expect("curl runs (.ci/setup installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn curl_streams_an_evaluation_and_sees_errors_as_json() {
    let _serial = serial_blocking();
    // No HEIE_LOG: the default log, which has the access log on.
    let mut server = HttpProcess::spawn(&["--max-tokens", "6", "--parallel", "1"], &[("HEIE_HTTP", "127.0.0.1:0"), ("HEIE_LOG", "")]);
    let base = format!("http://{}", server.http);

    let health = curl(&["-i", &format!("{base}/healthz")]);
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\n{\"status\":\"SERVING\"}"), "{health}");

    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("request.json");
    std::fs::write(&body, json!({ "image": { "encoded": b64(&example_png()) } }).to_string()).unwrap();
    let stream = curl(&["-N", "-H", "Content-Type: application/json", "--data-binary", &format!("@{}", body.display()), &format!("{base}/v1/evaluate")]);
    let blocks: Vec<&str> = stream.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert!(blocks[0].starts_with("event: started\ndata: {\"started\":{"), "{}", blocks[0]);
    assert!(blocks.iter().any(|b| b.starts_with("event: textDelta\ndata: {\"textDelta\":{\"section\":\"SECTION_DESCRIPTION\"")), "{stream}");
    assert!(blocks.iter().any(|b| b.starts_with("event: score\ndata: {\"score\":{\"score\":")), "{stream}");
    assert!(blocks.last().unwrap().starts_with("event: done\ndata: {\"done\":{"), "{stream}");
    assert!(stream.ends_with("\n\n"), "every message ends with a blank line");

    let refused = curl(&["-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-d", r#"{"image":{"encoded":"AAAA"}}"#, &format!("{base}/v1/evaluate")]);
    let (json_body, status) = refused.rsplit_once('\n').unwrap();
    assert_eq!(status, "400");
    let error: serde_json::Value = serde_json::from_str(json_body).unwrap();
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT");
    assert!(error["error"]["message"].as_str().unwrap().starts_with("image.encoded: "), "{error}");

    let info: serde_json::Value = serde_json::from_str(&curl(&[&format!("{base}/v1/info")])).unwrap();
    assert_eq!(info["limits"]["parallelSlots"], 1);
    let page = curl(&[&format!("{base}/")]);
    assert!(page.contains("<title>HEIE"), "{page}");

    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status:?}; stderr {:?}", server.stderr());
    assert!(server.stderr().iter().any(|l| l == "heie: stopped"), "{:?}", server.stderr());
    // The access log is on by default: one line per call, `/v1/info` included.
    let lines: Vec<String> = server.stderr().into_iter().filter(|l| l.contains("heie::request")).collect();
    for (rpc, outcome) in [("Evaluate", "completed"), ("Evaluate", "rejected"), ("GetInfo", "completed")] {
        let found = lines.iter().any(|l| l.contains(&format!("rpc=\"{rpc}\"")) && l.contains(&format!("outcome=\"{outcome}\"")));
        assert!(found, "no {rpc} {outcome} line in the default log: {lines:?}");
    }
}

/// `GET url` with an optional bearer key: the HTTP status and the body.
fn get_with_key(url: &str, key: Option<&str>) -> (u16, String) {
    let mut args = vec!["-w".to_string(), "\n%{http_code}".to_string()];
    if let Some(k) = key {
        args.extend(["-H".to_string(), format!("Authorization: Bearer {k}")]);
    }
    args.push(url.to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    let (body, status) = out.rsplit_once('\n').expect("curl wrote the status last");
    (status.parse().expect("an HTTP status"), body.to_string())
}

/// Waits (bounded, polling) until `probe` holds.
fn eventually(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn write_keys(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn sighup_reloads_the_key_file_for_the_http_port_and_a_broken_file_keeps_the_old_keys() {
    let _serial = serial_blocking();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    write_keys(&keys, "# operators\nhttp-key-one\n");
    let keys_arg = keys.display().to_string();
    let mut server = HttpProcess::spawn(&["--http", "127.0.0.1:0", "--api-key-file", &keys_arg], &[("HEIE_LOG", "info")]);
    let info = format!("http://{}/v1/info", server.http);
    let code = |key: Option<&str>| get_with_key(&info, key).0;

    let (status, body) = get_with_key(&info, None);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "UNAUTHENTICATED", "{error}");
    assert_eq!(code(Some("http-key-one")), 200);
    assert_eq!(get_with_key(&format!("http://{}/healthz", server.http), None).0, 200, "health needs no key");

    // A key added to the file works after SIGHUP; the one taken out is refused.
    write_keys(&keys, "http-key-two\n");
    server.signal("-HUP");
    assert!(eventually(Duration::from_secs(20), || code(Some("http-key-two")) == 200), "the new key is accepted: {:?}", server.stderr());
    assert_eq!(code(Some("http-key-one")), 401, "the removed key is refused");
    assert_eq!(code(Some("wrong")), 401);

    // A file with no key, then no file at all: each reload fails, says so, and the keys in use stay.
    let failures = |s: &HttpProcess| s.stderr().iter().filter(|l| l.contains("reloading the API keys failed")).count();
    for missing in [false, true] {
        let what = if missing { "a missing file" } else { "a file with no key" };
        let before = failures(&server);
        if missing {
            std::fs::remove_file(&keys).unwrap();
        } else {
            write_keys(&keys, "# nobody\n");
        }
        server.signal("-HUP");
        assert!(eventually(Duration::from_secs(20), || failures(&server) > before), "{what}: the failed reload is logged: {:?}", server.stderr());
        assert_eq!(code(Some("http-key-two")), 200, "{what}: the keys in use stay");
        assert_eq!(code(Some("http-key-one")), 401, "{what}: no old key comes back");
    }
    assert!(!server.stderr().iter().any(|l| l.contains("http-key-")), "keys are never logged: {:?}", server.stderr());
    // Refusals at the door leave their request line like every other call.
    let refused = server.stderr().into_iter().filter(|l| l.contains("heie::request") && l.contains("rpc=\"GetInfo\"") && l.contains("status=\"UNAUTHENTICATED\"")).count();
    assert!(refused >= 3, "{refused} refused GetInfo lines: {:?}", server.stderr());
    assert!(server.terminate(Duration::from_secs(20)).success(), "{:?}", server.stderr());
}

#[test]
fn the_sse_stream_carries_the_regions_as_proto3_json_before_done() {
    let _serial = serial_blocking();
    let reference = service_support::reference_cot();
    let mut server = HttpProcess::spawn(
        &["--max-tokens", "4", "--parallel", "1"],
        &[("HEIE_HTTP", "127.0.0.1:0"), ("HEIE_FAULT_REFERENCE_COT", reference.to_str().unwrap())],
    );
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("request.json");
    std::fs::write(&body, json!({ "image": { "encoded": b64(&example_png()) } }).to_string()).unwrap();
    let url = format!("http://{}/v1/evaluate", server.http);
    let stream = curl(&["-N", "-H", "Content-Type: application/json", "--data-binary", &format!("@{}", body.display()), &url]);
    let blocks: Vec<&str> = stream.split("\n\n").filter(|b| !b.is_empty()).collect();
    let names: Vec<&str> = blocks.iter().map(|b| b.lines().next().unwrap().trim_start_matches("event: ")).collect();
    let at = names.iter().position(|n| *n == "regions").unwrap_or_else(|| panic!("no regions event: {names:?}"));
    assert!(names.iter().rposition(|n| *n == "score").unwrap() < at && names[at + 1..] == ["done"], "{names:?}");
    let data: serde_json::Value = serde_json::from_str(blocks[at].split_once("\ndata: ").unwrap().1).unwrap();
    let regions = data["regions"]["regions"].as_array().expect("a list of regions");
    assert_eq!(regions.len(), 2, "{data}");
    let hand = &regions[0];
    // proto3 JSON: camelCase fields, enums as their names, bytes as base64.
    assert_eq!(hand["id"], 1);
    assert_eq!(hand["label"], "the left hand");
    assert_eq!(hand["source"], "REGION_SOURCE_GROUNDED_BOX");
    assert!(hand["category"].as_str().unwrap().starts_with("REGION_CATEGORY_"), "{hand}");
    assert_eq!(hand["box"]["pixelX1"], 64, "[[100,500,300,900]] on the 640×480 example");
    assert_eq!(hand["box"]["pixelY2"], 432);
    assert!((0.0..=1.0).contains(&hand["severity"].as_f64().unwrap()), "{hand}");
    assert_eq!(hand["sentences"][1], "Hand: the left hand has six fingers that merge into the sign.");
    let mask = image::load_from_memory(&unb64(hand["maskPng"].as_str().unwrap())).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (640, 480));
    assert_eq!(mask.pixels().filter(|p| p[0] == 255).count(), (192 - 64) * (432 - 240), "the mask is the box");
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
