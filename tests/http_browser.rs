//! The web page in a real browser: `heie serve --http` as a process, Debian's Chromium driven by
//! playwright-core (`tests/browser/page.test.mjs`). It loads the page, submits the fixture image,
//! checks that the explanation streams in before the score and that the heatmap overlay is drawn,
//! then the opacity slider, dark mode, a refused image, progress while queued, a full server, a
//! ranking and a phone-width layout. A second server with `--api-key` checks that the page asks for
//! the key, explains the refusal, and judges the image once the key is entered. A server fed a
//! two-box chain of thought checks the flagged regions (`browser/regions.test.mjs`): the list, the
//! band beside the score, and pointing at a region outlining its box and marking its sentences.
//! Screenshots land in `target/browser/` (their paths are printed).
//!
//! Needs `node`, `/usr/bin/chromium` (or `HEIE_CHROMIUM`) and `npm ci` in `tests/browser`; `.ci/setup`
//! installs all three. Missing pieces fail the test with what to install.

mod http_support;
mod service_support;

use std::path::PathBuf;
use std::process::Command;

use http_support::*;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// What the browser tests need (node, Chromium, playwright-core), checked with what to install.
fn browser_tools() -> (PathBuf, PathBuf) {
    let browser_dir = workspace().join("tests/browser");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing: run .ci/setup (it installs nodejs, chromium and the npm packages of tests/browser)"
    );
    let chromium = std::env::var_os("HEIE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(chromium.exists(), "{} is missing: `apt-get install chromium` (.ci/setup does) or set HEIE_CHROMIUM", chromium.display());
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in {} (.ci/setup does)",
        browser_dir.display()
    );
    (browser_dir, chromium)
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    target.join("browser")
}

/// Runs one of the node scripts in tests/browser and fails with its output and the server's log.
fn run_script(script: &str, args: &[&std::ffi::OsStr], server: &HttpProcess) {
    let (browser_dir, chromium) = browser_tools();
    let run = Command::new("node")
        .current_dir(&browser_dir)
        .arg(script)
        .args(args)
        .env("HEIE_CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(run.status.success(), "{script} failed ({:?}):\n{stdout}\n{stderr}\nserver: {:?}", run.status, server.stderr());
}

fn assert_screenshot(path: &std::path::Path) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(image.width() >= 390 && image.height() > 300, "{}", path.display());
}

#[test]
fn the_page_streams_an_evaluation_in_chromium() {
    // Each decode step takes 10 ms longer, so the script's long evaluations (3 × 1100 tokens) hold
    // the slot for half a minute on any machine: the page's request then always finds it taken. On
    // a fast machine an undelayed one ended within the second the page needed to submit.
    let server = HttpProcess::spawn(
        &["--http", "127.0.0.1:0", "--parallel", "1", "--max-queue", "2", "--max-tokens", "24"],
        &[("HEIE_FAULT_STEP_DELAY_MS", "10")],
    );
    let out_dir = screenshot_dir();
    let url = format!("http://{}/", server.http);
    let image = example_png_path();
    run_script("page.test.mjs", &[url.as_ref(), image.as_os_str(), out_dir.as_os_str()], &server);
    for shot in ["page.png", "page-dark.png", "page-full.png", "page-queued.png", "page-batch.png", "page-phone.png"] {
        assert_screenshot(&out_dir.join(shot));
    }
    println!("screenshots in {}", out_dir.display());
}

#[test]
fn the_page_asks_for_the_api_key_and_then_uses_it() {
    let key = "browser-test-key-5678";
    let server = HttpProcess::spawn(&["--http", "127.0.0.1:0", "--max-tokens", "8", "--api-key", key], &[]);
    let out_dir = screenshot_dir();
    let url = format!("http://{}/", server.http);
    let image = example_png_path();
    run_script("key.test.mjs", &[url.as_ref(), image.as_os_str(), key.as_ref(), out_dir.as_os_str()], &server);
    assert_screenshot(&out_dir.join("page-key.png"));
}

#[test]
fn pointing_at_a_flagged_region_outlines_its_box_and_marks_its_sentences() {
    // The fixture model never writes grounding boxes; the test-only hook feeds it a chain of thought
    // with two ("the left hand", "the sign").
    let reference = service_support::reference_cot();
    let server = HttpProcess::spawn(&["--http", "127.0.0.1:0", "--max-tokens", "8"], &[("HEIE_FAULT_REFERENCE_COT", reference.to_str().unwrap())]);
    let out_dir = screenshot_dir();
    let url = format!("http://{}/", server.http);
    let image = example_png_path();
    run_script("regions.test.mjs", &[url.as_ref(), image.as_os_str(), out_dir.as_os_str()], &server);
    assert_screenshot(&out_dir.join("page-regions.png"));
}

/// A page on another origin (another port) tries a `text/plain` form POST, a `no-cors` fetch and a
/// preflighted JSON fetch to `/v1/evaluate` of a server without a key; none may run an evaluation
/// (counted by the server's metrics). Then the server is loaded under a rebound name (Chromium's
/// resolver maps `rebind.test` to it) and must refuse it 403 (`browser/cross_site.test.mjs`).
#[test]
fn a_page_on_another_origin_cannot_make_the_browser_run_evaluations() {
    let server = HttpProcess::spawn(&["--http", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--max-tokens", "4"], &[]);
    let metrics = server.metrics_addr.expect("a metrics address");
    let evaluated = || service_support::sample(&service_support::scrape(metrics), "heie_images_evaluated_total").unwrap_or(0.0);
    let before = evaluated();
    let url = format!("http://{}/", server.http);
    let image = example_png_path();
    run_script("cross_site.test.mjs", &[url.as_ref(), image.as_os_str()], &server);
    let text = service_support::scrape(metrics);
    assert_eq!(evaluated(), before, "no evaluation ran: {text}");
    let refused: f64 = ["PERMISSION_DENIED", "INVALID_ARGUMENT"]
        .iter()
        .filter_map(|code| service_support::sample(&text, &format!("heie_requests_total{{method=\"Evaluate\",code=\"{code}\"}}")))
        .sum();
    assert!(refused >= 3.0, "the form POST, the no-cors fetch and the preflight were refused and counted: {text}");
}
