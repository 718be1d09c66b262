//! `heie eval` without `--model`/`--mmproj` takes the default pair from the Hugging Face cache,
//! downloading it on first use. No network: a small server here speaks the part of the hub's protocol
//! that hf-hub uses (`GET /{repo}/resolve/{revision}/{file}`, first a `Range: bytes=0-0` probe that
//! must answer `ETag`, `X-Repo-Commit` and `Content-Range`, then the ranged download) and serves the
//! fixture GGUFs under the default names; `HF_ENDPOINT` points at it and `HF_HOME` at a temp folder.
//! Then, with that server gone and `HF_HUB_OFFLINE=1`, the cached files are used.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{heie_bin, model, test_image};
use heie_server::cli::default_model::{DEFAULT_MMPROJ_FILE, DEFAULT_MODEL_FILE, DEFAULT_REPO};

/// The commit the fake hub says `main` points at.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One request the fake hub saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    range: Option<String>,
}

/// A hub stand-in on 127.0.0.1: serves `files` (name → bytes) of `DEFAULT_REPO` at revision `main`.
struct FakeHub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHub {
    fn start(files: Vec<(&'static str, Vec<u8>)>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (files, seen) = (files.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &files, &seen);
                });
            }
            // The listener is dropped here: the port refuses connections from now on.
        });
        FakeHub { addr, seen, stop, thread: Some(thread) }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting and closes the port.
    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shut();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Answers one request (the connection is closed after it, so the client opens one per request).
fn serve_one(conn: TcpStream, files: &[(&'static str, Vec<u8>)], seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    seen.lock().unwrap().push(Seen { method: method.clone(), path: path.clone(), range: range.clone() });
    let mut out = conn;
    let file = path
        .strip_prefix(&format!("/{DEFAULT_REPO}/resolve/main/"))
        .and_then(|name| files.iter().find(|(n, _)| *n == name));
    let Some((_, bytes)) = file else {
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    // `bytes=A-B` or `bytes=A-`; no Range header means the whole file.
    let size = bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => (a.parse::<usize>().unwrap_or(0), b.parse::<usize>().map(|b| b.min(size - 1)).unwrap_or(size - 1)),
        None => (0, size - 1),
    };
    let body = &bytes[start..=end];
    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{size}\r\nAccept-Ranges: bytes\r\n\
         ETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len(),
        sha256_hex(bytes)
    );
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        out.write_all(body)?;
    }
    out.flush()
}

/// `heie eval IMAGE` with no model flags, the hub at `endpoint` and the cache under `hf_home`.
fn eval_default(image: &Path, out: &Path, hf_home: &Path, endpoint: &str, offline: bool) -> Output {
    let mut cmd = Command::new(heie_bin());
    cmd.arg("eval").arg(image).args(["--max-tokens", "4", "--threads", "1", "--n-gpu-layers", "0", "--out"]).arg(out);
    // Nothing from the caller's environment may choose the model, the cache or a proxy.
    for var in ["HEIE_MODEL", "HEIE_MMPROJ", "HF_TOKEN", "HF_HUB_OFFLINE", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", hf_home).env("HF_ENDPOINT", endpoint).env("HEIE_LOG", "error");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    }
    cmd.output().expect("heie runs")
}

#[test]
fn without_model_flags_eval_fetches_the_default_pair_into_the_hf_cache_and_then_runs_from_it_offline() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("photo.png");
    test_image(64, 48).save(&image).unwrap();
    let hf_home = dir.path().join("hf");
    let llm = std::fs::read(model("tiny-llm.gguf")).unwrap();
    let mmproj = std::fs::read(model("tiny-mmproj.gguf")).unwrap();
    let mut hub = FakeHub::start(vec![(DEFAULT_MODEL_FILE, llm.clone()), (DEFAULT_MMPROJ_FILE, mmproj.clone())]);

    // First use: both files are fetched through the hub protocol and the image is judged.
    let out = eval_default(&image, &dir.path().join("out1"), &hf_home, &hub.endpoint(), false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "heie eval with the default model: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("score "), "{stdout}");
    assert!(dir.path().join("out1/photo.json").is_file());
    let seen = hub.seen();
    for file in [DEFAULT_MODEL_FILE, DEFAULT_MMPROJ_FILE] {
        let path = format!("/{DEFAULT_REPO}/resolve/main/{file}");
        assert!(seen.iter().any(|s| s.path == path && s.range.as_deref() == Some("bytes=0-0")), "{file} probed: {seen:?}");
        assert!(seen.iter().any(|s| s.path == path && s.method == "GET" && s.range.as_deref() == Some("bytes=0-")), "{file} downloaded: {seen:?}");
    }

    // The files landed in the cache as hf-hub lays it out: snapshots/COMMIT/NAME → blobs/ETAG, refs/main.
    let repo_dir = hf_home.join("hub").join(format!("models--{}", DEFAULT_REPO.replace('/', "--")));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(), COMMIT);
    for (file, bytes) in [(DEFAULT_MODEL_FILE, &llm), (DEFAULT_MMPROJ_FILE, &mmproj)] {
        let snapshot = repo_dir.join("snapshots").join(COMMIT).join(file);
        assert_eq!(std::fs::read(&snapshot).unwrap_or_else(|e| panic!("{}: {e}", snapshot.display())), **bytes, "{file} cached whole");
        assert_eq!(std::fs::read(repo_dir.join("blobs").join(sha256_hex(bytes))).unwrap(), **bytes, "{file}'s blob");
    }

    // The hub is gone (its port refuses connections) and the process is told it is offline: the
    // cached pair is used.
    let requests_before = hub.seen().len();
    hub.shut();
    let out = eval_default(&image, &dir.path().join("out2"), &hf_home, &hub.endpoint(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "heie eval from the cache, offline: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("score "));
    assert!(dir.path().join("out2/photo.json").is_file());
    assert_eq!(hub.seen().len(), requests_before, "nothing was asked of the hub");

    // An empty cache with no hub: one clear error naming the repository, the file and the way out.
    let out = eval_default(&image, &dir.path().join("out3"), &dir.path().join("empty-hf"), &hub.endpoint(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("heie: error: ")).unwrap_or_else(|| panic!("one error line: {stderr}"));
    assert!(line.contains(&format!("{DEFAULT_REPO}/{DEFAULT_MODEL_FILE}")) && line.contains("pass --model and --mmproj"), "{line}");
}
