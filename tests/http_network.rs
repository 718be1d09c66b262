//! The `--http` port against a hostile network (issue 24, items 3 and 5), on a real `heie serve`
//! process over raw sockets: foreign `Host` headers refused (DNS rebinding), cross-site and non-JSON
//! POSTs refused before any evaluation (counted in the metrics), CORS only for `--cors-origin`,
//! the page's content security policy; slow request heads closed after `--header-timeout`, idle
//! connections after `--keep-alive-timeout`, and connections past `--max-connections` kept waiting
//! while a real client still gets `/healthz` once a place frees.
//!
//! Timing checks bound only from below (never closed before the limit); the upper bounds are
//! generous, for a loaded machine.

mod http_support;
mod service_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A `GET /metrics` sample's value (0 when absent).
fn metric(metrics: SocketAddr, name: &str) -> f64 {
    service_support::sample(&service_support::scrape(metrics), name).unwrap_or(0.0)
}

fn evaluate_body() -> String {
    json!({ "image": { "encoded": b64(&example_png()) }, "options": { "maxTokensPerSection": 2, "explanation": false } }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_cross_site_and_non_json_requests_are_refused_before_any_evaluation() {
    let server = HttpProcess::spawn(
        &["--http", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--max-tokens", "4", "--cors-origin", "http://app.example:3000"],
        &[],
    );
    let (http, metrics) = (server.http, server.metrics_addr.expect("a metrics address"));
    let own_origin = format!("http://{http}");
    let evaluated = || metric(metrics, "heie_images_evaluated_total");
    let before = evaluated();
    let body = evaluate_body();

    // DNS rebinding: the browser names the attacker's host; refused with a JSON error, page included.
    for path in ["/v1/info", "/"] {
        let reply = send_raw(http, &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.example:{}\r\n\r\n", http.port())).await;
        let m = expect_error(reply, 403, "PERMISSION_DENIED").await;
        assert!(m.contains("rebind.evil.example") && m.contains("--allowed-hosts"), "{m}");
    }
    let rebound_post = format!(
        "POST /v1/evaluate HTTP/1.1\r\nHost: rebind.evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    expect_error(send_raw(http, &rebound_post).await, 403, "PERMISSION_DENIED").await;
    // Probes by address and loopback names still work; /healthz answers whatever the Host.
    let health = send_raw(http, "GET /healthz HTTP/1.1\r\nHost: probe.internal\r\n\r\n").await;
    assert_eq!(health.status, 200);
    assert_eq!(send_raw(http, &format!("GET /v1/info HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", http.port())).await.status, 200);

    // A form POST (text/plain, urlencoded, multipart) or a no-cors fetch: refused 415 unread.
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x")] {
        let headers: Vec<(&str, &str)> = content_type.map(|t| ("Content-Type", t)).into_iter().chain([("Origin", "http://evil.example")]).collect();
        let reply = send(http, "POST", "/v1/evaluate", &headers, body.as_bytes()).await;
        // The foreign Origin is what is refused first.
        expect_error(reply, 403, "PERMISSION_DENIED").await;
        let same_site: Vec<(&str, &str)> = content_type.map(|t| ("Content-Type", t)).into_iter().collect();
        let reply = send_untyped(http, "/v1/evaluate", &same_site, body.as_bytes()).await;
        assert_eq!(reply.header("connection"), Some("close"), "the unread body closes the connection");
        let m = expect_error(reply, 415, "INVALID_ARGUMENT").await;
        assert!(m.contains("application/json"), "{m}");
    }
    // JSON from a foreign origin: refused too (a browser would have preflighted it; curl need not).
    let reply = send(http, "POST", "/v1/evaluate", &[("Content-Type", "application/json"), ("Origin", "http://evil.example")], body.as_bytes()).await;
    let m = expect_error(reply, 403, "PERMISSION_DENIED").await;
    assert!(m.contains("--cors-origin http://evil.example"), "{m}");
    // A preflight from a foreign origin gets no CORS headers.
    let preflight = send(http, "OPTIONS", "/v1/evaluate", &[("Origin", "http://evil.example"), ("Access-Control-Request-Method", "POST")], b"").await;
    assert!(preflight.header("access-control-allow-origin").is_none());
    expect_error(preflight, 403, "PERMISSION_DENIED").await;
    assert_eq!(evaluated(), before, "none of the refused requests ran an evaluation");
    let refused = metric(metrics, "heie_requests_total{method=\"Evaluate\",code=\"PERMISSION_DENIED\"}");
    assert!(refused >= 6.0, "refusals are counted: {refused}");

    // The server's own page (same origin) and a --cors-origin origin are served.
    let mut own = send(http, "POST", "/v1/evaluate", &[("Content-Type", "application/json; charset=utf-8"), ("Origin", &own_origin)], body.as_bytes()).await;
    assert_eq!(own.status, 200);
    while own.next_event().await.is_some() {}
    let preflight = send(http, "OPTIONS", "/v1/evaluate", &[("Origin", "http://app.example:3000"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "content-type, authorization")], b"").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("http://app.example:3000"));
    assert!(preflight.header("access-control-allow-headers").is_some_and(|h| h.contains("content-type") && h.contains("authorization")));
    let mut cors = send(http, "POST", "/v1/evaluate", &[("Content-Type", "application/json"), ("Origin", "http://app.example:3000")], body.as_bytes()).await;
    assert_eq!(cors.status, 200);
    assert_eq!(cors.header("access-control-allow-origin"), Some("http://app.example:3000"));
    while cors.next_event().await.is_some() {}
    assert_eq!(evaluated(), before + 2.0, "the two allowed requests ran");

    // The page is sent with its content security policy.
    let page = get(http, "/").await;
    let csp = page.header("content-security-policy").expect("a CSP").to_string();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}

/// Sends raw request bytes on a new connection and reads the reply head.
async fn send_raw(addr: SocketAddr, request: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("HTTP port reachable");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_head(stream).await
}

/// A POST with exactly these headers (no Content-Type unless given).
async fn send_untyped(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("HTTP port reachable");
    stream.write_all(request.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    read_head(stream).await
}

/// Waits until the server closes `stream` (end of stream or reset) and returns when, failing after
/// `within`. Bytes the server sends first are read and ignored.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Instant {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection")
}

const HEADER_TIMEOUT_S: u64 = 2;
const KEEP_ALIVE_TIMEOUT_S: u64 = 4;
const MAX_CONNECTIONS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_idle_connections_and_connections_past_the_limit_are_bounded() {
    let server = HttpProcess::spawn(
        &[
            "--http",
            "127.0.0.1:0",
            "--header-timeout",
            &HEADER_TIMEOUT_S.to_string(),
            "--keep-alive-timeout",
            &KEEP_ALIVE_TIMEOUT_S.to_string(),
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
        ],
        &[],
    );
    let http = server.http;
    let header_timeout = Duration::from_secs(HEADER_TIMEOUT_S);

    // Slowloris: a head sent a byte at a time, never finished, is closed after --header-timeout.
    let mut slow = TcpStream::connect(http).await.unwrap();
    let opened = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let drip = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("a dripping head is closed");
    drip.abort();
    let after = closed - opened;
    assert!(after >= header_timeout - Duration::from_millis(100), "closed after {after:?}, before --header-timeout");
    eprintln!("slow head closed after {after:?}");

    // Keep-alive: after a reply, an idle connection stays open past --header-timeout (idle is not
    // slow) and is closed after --keep-alive-timeout.
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    while !reply.windows(18).any(|w| w == b"{\"status\":\"SERVING") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "a reply: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let replied = Instant::now();
    let closed = closed_by_server(&mut idle, Duration::from_secs(60)).await;
    let after = closed - replied;
    assert!(after >= Duration::from_secs(KEEP_ALIVE_TIMEOUT_S) - Duration::from_millis(100), "idle closed after {after:?}: {:?}", server.stderr());
    eprintln!("idle keep-alive connection closed after {after:?}");

    // --max-connections: four silent connections take every place; a fifth client's /healthz waits
    // until one is closed (by the header timeout), then is answered.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        silent.push(TcpStream::connect(http).await.unwrap());
    }
    let reply = tokio::time::timeout(Duration::from_secs(60), get(http, "/healthz")).await.expect("/healthz is answered once a place frees");
    let waited = opened.elapsed();
    assert_eq!(reply.status, 200);
    assert!(waited >= header_timeout - Duration::from_millis(100), "answered after {waited:?}: it did not wait for a place");
    for mut s in silent {
        closed_by_server(&mut s, Duration::from_secs(60)).await;
    }
    eprintln!("the fifth client waited {waited:?} for a place");
    // The server is fine afterwards.
    assert_eq!(get(http, "/healthz").await.status, 200);
}
