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

#[test]
fn a_good_image_writes_heatmap_overlay_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let image = write(dir.path(), "photo.png", &png_bytes(120, 90));
    let out_dir = dir.path().join("out");
    let out = Command::new(heie_bin())
        .arg("eval")
        .arg(&image)
        .args(["--model", model("tiny-llm.gguf").to_str().unwrap(), "--mmproj", model("tiny-mmproj.gguf").to_str().unwrap()])
        .args(["--max-tokens", "6", "--threads", "1", "--json", "--out", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
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
