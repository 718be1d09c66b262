//! The fake llama-server (`fixtures/fake_llama_server.py`) as the bench tests drive it: where llama.cpp's
//! argument definitions are (the fake reads llama-server's flags from them), the environment that points
//! the fake at them and at its log, an instance the test starts itself (for `--llama-server http://…`),
//! and the log read back.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fake_llama_server.py")
}

/// llama.cpp's `common/arg.cpp` as vendored by the llama-cpp-sys-2 crate this build links (its version
/// read from Cargo.lock), in Cargo's registry sources: llama-server's flags are defined there, so the
/// fake accepts exactly the flags of the llama.cpp HEIE runs, with no hand-kept copy to drift.
pub fn llama_arg_cpp() -> PathBuf {
    let lock_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"llama-cpp-sys-2\""))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string)))
        .expect("llama-cpp-sys-2 in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let sources = cargo_home.join("registry/src");
    let found = std::fs::read_dir(&sources).into_iter().flatten().flatten().find_map(|registry| {
        let candidate = registry.path().join(format!("llama-cpp-sys-2-{version}/llama.cpp/common/arg.cpp"));
        candidate.is_file().then_some(candidate)
    });
    found.unwrap_or_else(|| {
        panic!(
            "llama.cpp's common/arg.cpp of llama-cpp-sys-2 {version} is not under {}/*/ (the fake llama-server reads \
             llama-server's flags from it; a build fetches that crate there)",
            sources.display()
        )
    })
}

/// The environment a fake needs: the flag definitions, its log, and a deliberate fault (`load`,
/// `stream`) or none.
pub fn env(log: &Path, fault: Option<&str>) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("FAKE_LLAMA_SERVER_ARG_CPP", llama_arg_cpp().display().to_string()),
        ("FAKE_LLAMA_SERVER_LOG", log.display().to_string()),
    ];
    if let Some(fault) = fault {
        vars.push(("FAKE_LLAMA_SERVER_FAULT", fault.to_string()));
    }
    vars
}

/// Runs the fake on `args` to its end (for what it refuses): exit code and stderr.
pub fn run(log: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(script()).args(args).envs(env(log, None)).stdin(Stdio::null()).output().expect("the fake runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every event the fakes logged, in order.
pub fn events(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// The events of one kind (`start`, `health`, `chat`, `refused`, `refused-argv`).
pub fn of(events: &[Value], kind: &str) -> Vec<Value> {
    events.iter().filter(|e| e["event"] == kind).cloned().collect()
}

/// A fake started by the test on a free port, for the bench's running-server form; killed on drop.
pub struct RunningFake {
    child: Child,
    pub url: String,
}

impl RunningFake {
    pub fn start(log: &Path, model: &Path, mmproj: &Path) -> RunningFake {
        let mut child = Command::new(script())
            .args(["--model", model.to_str().unwrap(), "--mmproj", mmproj.to_str().unwrap()])
            .args(["--host", "127.0.0.1", "--port", "0", "--parallel", "2"])
            .envs(env(log, None))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fake starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // llama-server's own "listening" line names the port; anything before it is kept for the panic.
        let mut before = Vec::new();
        let url = lines.by_ref().map_while(Result::ok).find_map(|l| {
            let url = l.split("server is listening on ").nth(1).map(str::to_string);
            before.push(l);
            url
        });
        let url = url.unwrap_or_else(|| panic!("the fake llama-server did not start:\n{}", before.join("\n")));
        // Keep draining its stderr so that it can never block on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        RunningFake { child, url }
    }
}

impl Drop for RunningFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
