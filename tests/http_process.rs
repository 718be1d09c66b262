//! `heie serve --http` as a process, spoken to by curl: `HEIE_HTTP` turns the HTTP edge on, the
//! address is printed, SSE streams through `curl -N`, errors come back as JSON with their status,
//! and SIGTERM stops the process cleanly.

mod http_support;
mod service_support;

use std::process::Command;
use std::time::Duration;

use http_support::*;
use serde_json::json;

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-sS", "--max-time", "120"]).args(args).output().expect("curl runs (.ci/setup installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn curl_streams_an_evaluation_and_sees_errors_as_json() {
    let mut server = HttpProcess::spawn(&["--max-tokens", "6", "--parallel", "1"], &[("HEIE_HTTP", "127.0.0.1:0")]);
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

    let refused = curl(&["-w", "\n%{http_code}", "-d", r#"{"image":{"encoded":"AAAA"}}"#, &format!("{base}/v1/evaluate")]);
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
}
