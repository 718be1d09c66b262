//! Bad input to `heie eval`: each case ends with a clear one-line error and a non-zero exit, never a
//! panic or an abort inside llama.cpp.

mod common;

use std::path::Path;
use std::process::Command;

use common::{heie_bin, model, test_image};

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn eval(args: &[&str], image: &Path, model_file: &str, mmproj_file: &str) -> Outcome {
    let out = Command::new(heie_bin())
        .arg("eval")
        .arg(image)
        .args(["--model", model(model_file).to_str().unwrap(), "--mmproj", model(mmproj_file).to_str().unwrap()])
        .args(["--max-tokens", "4", "--threads", "1"])
        .args(args)
        .env("HEIE_LOG", "error")
        .output()
        .expect("heie runs");
    Outcome { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

/// The error is one `heie:` line naming the problem; the process exited normally with a failure code.
fn assert_clean_failure(outcome: &Outcome, needle: &str) {
    assert!(matches!(outcome.code, Some(1) | Some(2)), "exit code {:?}, stderr {}", outcome.code, outcome.stderr);
    assert!(!outcome.stderr.contains("panicked"), "{}", outcome.stderr);
    let lines: Vec<&str> = outcome.stderr.lines().filter(|l| l.starts_with("heie:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {}", outcome.stderr);
    assert!(lines[0].to_lowercase().contains(&needle.to_lowercase()), "{:?} lacks {needle:?}", lines[0]);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn png_bytes(width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    test_image(width, height).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    test_image(width, height).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// CRC-32 (IEEE), to write a structurally valid PNG header that declares a 0×0 image.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn zero_sized_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&0u32.to_be_bytes());
    chunk.extend_from_slice(&0u32.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    png
}

#[test]
fn an_image_path_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = eval(&[], &dir.path().join("missing.png"), "tiny-llm.gguf", "tiny-mmproj.gguf");
    assert_clean_failure(&outcome, "does not exist");
}

#[test]
fn bad_image_bytes_each_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let png = png_bytes(64, 48);
    let jpeg = jpeg_bytes(64, 48);
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (write(dir.path(), "garbage.png", b"this is not an image at all, just text"), "not a recognised image"),
        (write(dir.path(), "truncated.png", &png[..png.len() / 2]), "truncated.png"),
        (write(dir.path(), "truncated.jpg", &jpeg[..jpeg.len() / 3]), "truncated.jpg"),
        (write(dir.path(), "zero.png", &zero_sized_png()), "zero.png"),
    ];
    for (path, needle) in cases {
        let outcome = eval(&[], &path, "tiny-llm.gguf", "tiny-mmproj.gguf");
        assert_clean_failure(&outcome, needle);
    }
}

#[test]
fn an_image_over_the_pixel_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "big.png", &png_bytes(100, 100));
    let outcome = eval(&["--max-pixels", "5000"], &path, "tiny-llm.gguf", "tiny-mmproj.gguf");
    assert_clean_failure(&outcome, "5000");
}

#[test]
fn model_file_problems() {
    let dir = tempfile::tempdir().unwrap();
    let image = write(dir.path(), "ok.png", &png_bytes(32, 32));
    let corrupt = write(dir.path(), "corrupt.gguf", b"GGUF\x03\x00\x00\x00 definitely not a model");
    let outcome = eval(&[], &image, "no-such-model.gguf", "tiny-mmproj.gguf");
    assert_clean_failure(&outcome, "does not exist");
    let outcome = eval(&[], &image, corrupt.to_str().unwrap(), "tiny-mmproj.gguf");
    assert_clean_failure(&outcome, "corrupt.gguf");
    let outcome = eval(&[], &image, "tiny-llm.gguf", corrupt.to_str().unwrap());
    assert_clean_failure(&outcome, "corrupt.gguf");
    // A text model given as the mmproj.
    let outcome = eval(&[], &image, "tiny-llm.gguf", "tiny-llm.gguf");
    assert_clean_failure(&outcome, "not an InternVL mmproj");
}

#[test]
fn an_mmproj_of_another_width_is_not_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    let image = write(dir.path(), "ok.png", &png_bytes(32, 32));
    let outcome = eval(&[], &image, "tiny-llm-w96.gguf", "tiny-mmproj.gguf");
    assert_clean_failure(&outcome, "not a pair");
}

/// `heie eval IMAGE --json --out OUT_DIR` on the fixture pair, one thread, `max_tokens` per section.
fn eval_json(image: &Path, out_dir: &Path, max_tokens: &str) -> Command {
    let mut command = Command::new(heie_bin());
    command
        .arg("eval")
        .arg(image)
        .args(["--model", model("tiny-llm.gguf").to_str().unwrap(), "--mmproj", model("tiny-mmproj.gguf").to_str().unwrap()])
        .args(["--max-tokens", max_tokens, "--threads", "1", "--json", "--out", out_dir.to_str().unwrap()]);
    command
}

#[test]
fn a_good_image_writes_heatmap_overlay_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let image = write(dir.path(), "photo.png", &png_bytes(120, 90));
    let out_dir = dir.path().join("out");
    let out = eval_json(&image, &out_dir, "6").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let score = json["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert_eq!(json["mode"], "zero-shot");
    let heatmap = image::open(out_dir.join("photo.heatmap.png")).unwrap();
    assert_eq!((heatmap.width(), heatmap.height()), (120, 90));
    let overlay = image::open(out_dir.join("photo.overlay.png")).unwrap();
    assert_eq!((overlay.width(), overlay.height()), (120, 90));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("photo.json")).unwrap()).unwrap();
    assert_eq!(written["score"], json["score"]);
    assert!(written["explanation"]["analysis"].as_str().unwrap().contains("[SCORE]"));
}

#[test]
fn regions_are_in_the_json_with_each_mask_written_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = write(dir.path(), "photo.png", &png_bytes(200, 100));
    let out_dir = dir.path().join("out");
    let out = eval_json(&image, &out_dir, "4")
        // The fixture model never writes grounding boxes; this test-only hook feeds it a chain of
        // thought with two (see tests/README.md).
        .env("HEIE_FAULT_REFERENCE_COT", common::fixture("reference-cot/hand-and-sign.txt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("photo.json")).unwrap()).unwrap();
    assert_eq!(written["regions"], json["regions"], "the file and stdout agree");
    let regions = json["regions"].as_array().expect("a regions list");
    assert_eq!(regions.len(), 2, "{json}");
    let hand = &regions[0];
    assert_eq!((hand["id"].as_u64(), hand["label"].as_str()), (Some(1), Some("the left hand")));
    assert_eq!(hand["source"], "grounded-box");
    let categories = ["hand", "face", "body", "text", "object", "physics", "background", "other"];
    assert!(categories.contains(&hand["category"].as_str().unwrap()), "{hand}");
    assert_eq!(hand["sentences"][0], "Problematic areas: the left hand holding the sign, and the sign.");
    let b = &hand["box"];
    assert_eq!((b["x1"].as_f64(), b["y2"].as_f64()), (Some(100.0), Some(900.0)));
    assert_eq!([&b["pixel_x1"], &b["pixel_y1"], &b["pixel_x2"], &b["pixel_y2"]].map(|v| v.as_u64().unwrap()), [20, 50, 60, 90]);
    let severity = hand["severity"].as_f64().unwrap();
    // Zero-shot: the map is 1 inside a box, so severity is 1 − score.
    assert!((severity - (1.0 - json["score"].as_f64().unwrap())).abs() < 1e-4, "{json}");
    assert_eq!(hand["mask"], "photo.region-1.png");
    let mask = image::open(out_dir.join("photo.region-1.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (200, 100));
    let inside: Vec<(u32, u32)> = mask.enumerate_pixels().filter(|(_, _, p)| p[0] == 255).map(|(x, y, _)| (x, y)).collect();
    assert_eq!(inside.len(), 40 * 40);
    assert!(inside.iter().all(|&(x, y)| (20..60).contains(&x) && (50..90).contains(&y)));
    assert_eq!(regions[1]["mask"], "photo.region-2.png");
    assert!(out_dir.join("photo.region-2.png").is_file());

    // Judged again, now with no region (the fixture's own chain of thought has no boxes): the two
    // masks the first run listed go; a file of the same shape it never wrote stays.
    let unrelated = write(&out_dir, "photo.region-9.png", b"not ours");
    let again = eval_json(&image, &out_dir, "4").output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["regions"].as_array().map(Vec::len), Some(0), "{json}");
    assert!(!out_dir.join("photo.region-1.png").exists() && !out_dir.join("photo.region-2.png").exists());
    assert_eq!(std::fs::read(&unrelated).unwrap(), b"not ours");
}
