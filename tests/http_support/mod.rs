//! Helpers of the HTTP API tests: an in-process server with `--http` on the fixture models, a
//! `heie serve --http` child process (over `service_support`'s one process helper), and a plain HTTP/1.1 client (written here on a TCP socket so
//! the tests see exactly the bytes on the wire: status lines, chunked framing, SSE blocks).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use heie_server::engine::Engine;
use heie_server::pipeline::Evaluator;
use heie_server::server::{self, RunningServer, ServeOptions};
use heie_server::serving::ServingLimits;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::service_support::{config, ServeProcess, LLM, MMPROJ};

/// Starts an in-process server (gRPC and HTTP on 127.0.0.1:0) and waits until it is ready.
pub async fn start_http_server(limits: ServingLimits) -> RunningServer {
    start_http_server_with(limits, Default::default()).await
}

/// [`start_http_server`] with network options (API keys, TLS) of the test's choosing.
pub async fn start_http_server_with(limits: ServingLimits, network: server::NetworkOptions) -> RunningServer {
    let options = ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        limits: limits.clone(),
        network,
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

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("valid base64")
}

/// The fixture image every page test uses.
pub fn example_png() -> Vec<u8> {
    std::fs::read(example_png_path()).expect("fixture image")
}

pub fn example_png_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/example.png")
}

/// An open HTTP/1.1 exchange: the reply's status and headers, and its body still to read.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    left: Option<usize>,
    finished: bool,
    sse_buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("SSE data is JSON ({e}): {}", self.data))
    }
}

/// Sends one request on a new connection and reads the status line and headers. A POST without a
/// `Content-Type` in `headers` is sent as `application/json`, as every client of the API sends it.
pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("HTTP port reachable");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    if method == "POST" && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before taking the whole body; that is fine.
    let _ = stream.write_all(body).await;
    read_head(stream).await
}

/// Reads a reply's status line and headers from `stream`.
pub async fn read_head(stream: TcpStream) -> Reply {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("a status line");
    assert!(line.starts_with("HTTP/1.1 "), "an HTTP/1.1 status line: {line:?}");
    let status: u16 = line[9..12].parse().expect("a status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("a header line");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').expect("name: value");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let left = get("content-length").map(|v| v.parse().expect("a length"));
    Reply { status, headers, reader, chunked, left, finished: false, sse_buffer: String::new() }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The next piece of the body as it arrives (a chunk, or what a read returns), `None` at its end.
    pub async fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.finished {
            return None;
        }
        if self.chunked {
            let mut size = String::new();
            self.reader.read_line(&mut size).await.expect("a chunk size");
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("a hex chunk size: {size:?}"));
            if size == 0 {
                let mut end = String::new();
                let _ = self.reader.read_line(&mut end).await;
                self.finished = true;
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.expect("a whole chunk");
            assert_eq!(&chunk[size..], b"\r\n", "chunk framing");
            chunk.truncate(size);
            return Some(chunk);
        }
        match self.left {
            Some(0) => {
                self.finished = true;
                None
            }
            Some(n) => {
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body).await.expect("the whole body");
                self.left = Some(0);
                Some(body)
            }
            None => {
                let mut body = Vec::new();
                self.reader.read_to_end(&mut body).await.unwrap();
                self.finished = true;
                (!body.is_empty()).then_some(body)
            }
        }
    }

    pub async fn body(mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(p) = self.next_piece().await {
            all.extend(p);
        }
        all
    }

    pub async fn json(self) -> serde_json::Value {
        let body = self.body().await;
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("a JSON body ({e}): {}", String::from_utf8_lossy(&body)))
    }

    /// The next SSE message (comments skipped), `None` when the stream ends.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.sse_buffer.find("\n\n") {
                let block: String = self.sse_buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent { name, data: data.join("\n") });
                }
            }
            let piece = self.next_piece().await?;
            self.sse_buffer.push_str(std::str::from_utf8(&piece).expect("SSE is UTF-8"));
        }
    }

    pub async fn events(mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(e) = self.next_event().await {
            all.push(e);
        }
        all
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, &[], b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Reply {
    send(addr, "POST", path, &[], body.to_string().as_bytes()).await
}

/// Asserts the API's error body and status, and returns the message.
pub async fn expect_error(reply: Reply, status: u16, code: &str) -> String {
    assert_eq!(reply.status, status, "status of an {code} error");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json().await;
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().expect("a message").to_string()
}

/// A `heie serve --http` child process (one llama.cpp thread): the one [`ServeProcess`] helper,
/// with both addresses at hand; killed when dropped.
pub struct HttpProcess {
    pub process: ServeProcess,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

impl HttpProcess {
    /// Spawns `heie serve --addr 127.0.0.1:0 ARGS` (ARGS name the HTTP address) on the fixture models
    /// and waits until it serves. `HEIE_LOG` is `warn` unless `env` sets it; a variable given as `""`
    /// is removed (`("HEIE_LOG", "")`: the default log).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> HttpProcess {
        let args: Vec<&str> = ["--addr", "127.0.0.1:0"].into_iter().chain(args.iter().copied()).collect();
        let process = ServeProcess::spawn_threads(1, &args, env);
        let http = process.http_addr.unwrap_or_else(|| panic!("no HTTP address printed; stderr: {:?}", process.stderr()));
        let grpc = process.addr;
        HttpProcess { process, http, grpc }
    }
}

impl std::ops::Deref for HttpProcess {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.process
    }
}

impl std::ops::DerefMut for HttpProcess {
    fn deref_mut(&mut self) -> &mut ServeProcess {
        &mut self.process
    }
}
