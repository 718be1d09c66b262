//! Slow and oversized uploads against a real `heie serve --http` process (issue 24, item 2): request
//! bodies share one in-flight budget (`--max-body-bytes-in-flight`), a request whose declared body
//! does not fit is refused with 503 before any of it is read, a body that stalls gets 408 after
//! `--body-timeout` and its connection is closed, and the server's memory stays bounded by the
//! budget instead of growing with the number of connections.

mod http_support;
mod service_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Each stalled upload declares this much (raised --max-message-bytes lets it through the size limit)…
const DECLARED: usize = 40_000_000;
/// …sends this much of it, and stops.
const SENT: usize = 36_000_000;
/// The in-flight budget: room for two such bodies, not three.
const BUDGET: usize = 100_000_000;
const CONNECTIONS: usize = 8;
const BODY_TIMEOUT_S: u64 = 2;

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reads one reply head (status line and headers) byte by byte, so nothing after it is consumed.
async fn read_head_raw(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte)).await.expect("a reply within 60 s").expect("read");
        assert_eq!(n, 1, "connection closed inside a reply head: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().expect("a status code");
    (status, head.to_ascii_lowercase())
}

/// Reads the rest of a `Content-Length` reply and then expects the server to close the connection.
async fn read_body_then_eof(stream: &mut TcpStream, head: &str) -> serde_json::Value {
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).expect("a content-length").trim().parse().unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("the reply's body");
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut rest)).await.expect("the server closes the connection").unwrap_or(0);
    assert_eq!(n, 0, "nothing follows the reply: the connection is closed");
    serde_json::from_slice(&body).expect("a JSON error body")
}

/// Opens a connection and sends only the head of a POST whose body is `declared` bytes, asking
/// (`Expect: 100-continue`) to be told before sending it: 100 means the server started reading.
async fn start_upload(addr: SocketAddr, declared: usize) -> (TcpStream, u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("HTTP port reachable");
    let head = format!(
        "POST /v1/evaluate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, head) = read_head_raw(&mut stream).await;
    (stream, status, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_are_bounded_by_the_budget_and_timed_out() {
    let mut server = HttpProcess::spawn(
        &[
            "--max-tokens",
            "6",
            "--parallel",
            "1",
            "--max-message-bytes",
            &(DECLARED + DECLARED / 4).to_string(),
            "--max-body-bytes-in-flight",
            &BUDGET.to_string(),
            "--body-timeout",
            &BODY_TIMEOUT_S.to_string(),
        ],
        &[("HEIE_HTTP", "127.0.0.1:0")],
    );
    let addr = server.http;
    let pid = server.child.id();
    let (rss_before, hwm_before) = memory(pid);

    // Eight uploads, one after another: those that fit in the budget are read (100 Continue), the
    // rest are refused from their Content-Length alone, before a byte of their body was sent.
    let fit = BUDGET / DECLARED;
    let mut admitted = Vec::new();
    for i in 0..CONNECTIONS {
        let started = Instant::now();
        let (mut stream, status, head) = start_upload(addr, DECLARED).await;
        if i < fit {
            assert_eq!(status, 100, "upload {i} fits in the budget and is read: {head}");
            admitted.push((stream, started));
        } else {
            assert_eq!(status, 503, "upload {i} would pass the budget: refused before its body: {head}");
            assert!(head.contains("retry-after: 1\r\n"), "{head}");
            assert!(head.contains("connection: close\r\n"), "{head}");
            let body = read_body_then_eof(&mut stream, &head).await;
            assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("--max-body-bytes-in-flight"), "{body}");
        }
    }
    assert_eq!(admitted.len(), fit);

    // The admitted ones send most of their body, then stall.
    let junk = vec![b' '; SENT];
    for (stream, _) in &mut admitted {
        // A loaded machine may pass the body timeout while writing; the 408 below still must come.
        let _ = stream.write_all(&junk).await;
    }
    drop(junk);
    let (rss_stalled, _) = memory(pid);

    // Each stalled body is refused with 408, not before --body-timeout, and its connection closed.
    for (stream, started) in &mut admitted {
        let (status, head) = read_head_raw(stream).await;
        assert_eq!(status, 408, "{head}");
        assert!(started.elapsed() >= Duration::from_secs(BODY_TIMEOUT_S), "408 after {:?}, before --body-timeout", started.elapsed());
        assert!(head.contains("connection: close\r\n"), "{head}");
        let body = read_body_then_eof(stream, &head).await;
        assert_eq!(body["error"]["code"], "DEADLINE_EXCEEDED", "{body}");
    }
    drop(admitted);

    // Memory is bounded by the admitted bodies (at most BUDGET bytes), not by the 8 × 36 MB sent;
    // half a budget of slack covers allocator and per-connection buffers.
    let bound = rss_before + BUDGET as u64 * 3 / 2;
    let (rss_after, hwm_after) = memory(pid);
    eprintln!(
        "RSS before {} MB, while stalled {} MB, after {} MB; peak {} MB (peak before {} MB); bound {} MB",
        rss_before >> 20,
        rss_stalled >> 20,
        rss_after >> 20,
        hwm_after >> 20,
        hwm_before >> 20,
        bound >> 20
    );
    assert!(rss_stalled <= bound, "RSS while stalled {rss_stalled} > {bound}");
    assert!(hwm_after <= hwm_before.max(bound), "peak RSS {hwm_after} > {bound} (peak before the flood {hwm_before})");

    // The budget came back: a full-size upload is read again (then abandoned)…
    // (64 MB: more than what would be left had one stalled body kept its 40.)
    let (stream, status, head) = start_upload(addr, DECLARED * 8 / 5).await;
    assert_eq!(status, 100, "the stalled bodies gave their bytes back: {head}");
    drop(stream);
    // …and a normal evaluation still works.
    let body = json!({ "image": { "encoded": b64(&example_png()) } });
    let reply = post_json(addr, "/v1/evaluate", &body).await;
    assert_eq!(reply.status, 200);
    let events = reply.events().await;
    assert_eq!(events.last().map(|e| e.name.as_str()), Some("done"), "{events:?}");

    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status:?}; stderr {:?}", server.stderr());
}
