//! `heie serve` against a client nobody here wrote: tests/python/test_grpc_client.py (grpcio, its
//! health and reflection packages, stubs generated at test time) run by pytest against a real
//! `heie serve` process.

mod service_support;

use std::process::Command;
use std::time::Duration;

use service_support::ServeProcess;

fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn grpcio_client_sees_health_reflection_and_a_streamed_evaluation() {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1, grpc_reflection.v1alpha, grpc_tools, pytest"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "the Python gRPC client packages are missing; run `pip install -r tests/python/requirements.txt`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let mut server = ServeProcess::spawn(&["--addr", "127.0.0.1:0", "--parallel", "2", "--max-tokens", "8", "--shutdown-grace", "1"]);
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python/test_grpc_client.py"])
        .current_dir(repo_root())
        .env("HEIE_TEST_SERVER", server.addr.to_string())
        .output()
        .expect("pytest runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed:\n{report}\nserver stderr: {:?}", server.stderr());
    assert!(report.contains("4 passed"), "{report}");
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "heie serve exits cleanly on SIGTERM: {status:?}");
}
