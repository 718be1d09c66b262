//! `heie calibrate` on the fixture, end to end: two folders of generated PNGs judged in-process, the
//! file written and read back, `heie serve --calibration` reporting it in GetInfo and replacing every
//! primary score by exactly what the file says (raw score kept in `uncalibrated_score`, band and
//! summary from the calibrated one), `heie eval --calibration` the same, a labelled heie-score CSV as
//! the other input, and broken files refused by name.
//!
//! The fixture is a random-weight model: whether its scores separate the two folders is whatever it
//! is (the AUCs are printed, not asserted); these tests check the mechanics. It never writes grounding
//! markup, so the test-only `HEIE_FAULT_REFERENCE_COT` feeds every evaluation a chain of thought with a
//! hand and a sign: each image then has a `hand` and a `text` region whose severities the calibration
//! sees.

mod service_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use heie_proto::v1 as pb;
use heie_server::calibration::{CalibrationFile, Features};
use heie_server::pipeline::region_category::RegionCategory;
use heie_server::pipeline::score_band::band_of;
use image::{Rgb, RgbImage};
use service_support::*;

/// Keep: smooth gradients of several sizes. Reject: seeded noise. Four of each is the least a fit takes.
fn folders(root: &Path, per_label: u32) -> (PathBuf, PathBuf) {
    let (keep, reject) = (root.join("keep"), root.join("reject"));
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::create_dir_all(&reject).unwrap();
    for n in 0..per_label {
        let (w, h) = (48 + 8 * n, 40 + 4 * n);
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, (n * 40) as u8]))
            .save(keep.join(format!("smooth{n:02}.png")))
            .unwrap();
        let mut state = 0x9e37_79b9_u32.wrapping_mul(n + 1);
        RgbImage::from_fn(w, h, |_, _| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
        })
        .save(reject.join(format!("noise{n:02}.png")))
        .unwrap();
    }
    (keep, reject)
}

fn reference_cot() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference-cot/hand-and-sign.txt")
}

/// The features the served primary score was calibrated from: its raw score and its Regions event.
fn served_features(raw: f32, regions: &pb::Regions) -> Features {
    let category = |value: i32| RegionCategory::ALL[usize::try_from(value - 1).expect("a category is set")];
    Features::from_regions(raw, regions.regions.iter().map(|r| (category(r.category), r.severity)))
}

fn heie(args: &[&str]) -> std::process::Output {
    Command::new(heie_bin())
        .env("HEIE_FAULT_REFERENCE_COT", reference_cot())
        .args(args)
        .args(["--model", model(LLM).to_str().unwrap(), "--mmproj", model(MMPROJ).to_str().unwrap()])
        .args(["--threads", "1", "--n-gpu-layers", "0"])
        .env("HEIE_LOG", "error")
        .output()
        .expect("heie runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrate_writes_a_file_that_serve_and_eval_apply_exactly() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (keep, reject) = folders(dir.path(), 4);
    let out = dir.path().join("mine.calibration.json");
    let run = heie(&[
        "calibrate", "--keep", keep.to_str().unwrap(), "--reject", reject.to_str().unwrap(),
        "--out", out.to_str().unwrap(), "--max-tokens", "4",
    ]);
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "stdout {stdout}\nstderr {}", text(&run.stderr));
    assert!(stdout.contains("judging 8 images (4 kept, 4 rejected)"), "{stdout}");
    assert!(stdout.contains("fitted on 6 images, measured on 2 held-out images"), "{stdout}");
    assert!(stdout.contains("raw score") && stdout.contains("calibrated") && stdout.contains("AUC"), "{stdout}");
    println!("{stdout}");

    let file = CalibrationFile::load(&out).unwrap();
    assert_eq!(file.format, "heie-calibration/1");
    assert_eq!((file.examples.train, file.examples.held_out, file.examples.kept, file.examples.rejected), (6, 2, 4, 4));
    assert_eq!(file.fitted_with.mode, "zero-shot");
    assert!(!file.fitted_with.llm.is_empty() && file.fitted_with.heads.is_none(), "{:?}", file.fitted_with);
    // Only the categories the images were flagged for carry a weight; the others keep the prior's 0.
    let w = &file.weights.severity;
    assert_eq!((w.face, w.body, w.object, w.physics, w.background, w.other), (0.0, 0.0, 0.0, 0.0, 0.0, 0.0), "{w:?}");
    assert!(w.hand != 0.0 && w.text != 0.0, "{w:?}");
    let report = &file.held_out;

    // Served: GetInfo reports it, every primary score is the file's function of the raw one.
    let cot = reference_cot();
    let mut server = ServeProcess::spawn_with_env(
        &["--addr", "127.0.0.1:0", "--calibration", out.to_str().unwrap()],
        &[("HEIE_FAULT_REFERENCE_COT", cot.to_str().unwrap())],
    );
    assert!(server.stderr().iter().any(|l| l.contains("calibration mine.calibration.json applied")), "{:?}", server.stderr());
    let mut c = client(server.addr).await;
    let info = c.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    let calibration = info.calibration.expect("GetInfo reports the calibration");
    assert_eq!(calibration.name, "mine.calibration.json");
    assert_eq!(calibration.examples, 6);
    assert_eq!((calibration.auc_before, calibration.auc_after), (report.auc_before, report.auc_after));

    let map = file.map();
    for (w, h) in [(64, 48), (96, 96)] {
        let got = evaluate(&mut c, request(image_of(w, h), options(4))).await;
        assert!(got.status.is_none(), "{:?}", got.status);
        let scores = got.scores();
        let primary = scores[0];
        let raw = primary.uncalibrated_score.expect("the raw score is kept");
        let regions = got.regions();
        let features = served_features(raw, regions[0]);
        assert!(features.severity(RegionCategory::Hand) > 0.0 && features.severity(RegionCategory::Text) > 0.0, "{features:?}");
        assert_eq!(primary.score, map.calibrate(&features), "exactly the file's mapping");
        assert_eq!(primary.band, band_of(primary.score).name, "the band is the calibrated score's");
        let summary = &got.done().unwrap().summary;
        assert!(summary.starts_with(&format!("score {:.3} (calibrated; zero-shot {raw:.3})", primary.score)), "{summary}");
    }
    drop(c);
    assert!(server.terminate(std::time::Duration::from_secs(15)).success());

    // `heie eval --calibration`: the JSON carries both scores, the same mapping.
    let image = dir.path().join("judge-me.png");
    test_image(80, 60).save(&image).unwrap();
    let eval = heie(&[
        "eval", image.to_str().unwrap(), "--json", "--max-tokens", "4", "--out", dir.path().join("out").to_str().unwrap(),
        "--calibration", out.to_str().unwrap(),
    ]);
    assert!(eval.status.success(), "{}", text(&eval.stderr));
    let report: serde_json::Value = serde_json::from_str(text(&eval.stdout).lines().last().unwrap()).unwrap();
    let score = &report["scores"][0];
    let raw = score["uncalibrated"].as_f64().expect("uncalibrated in the JSON") as f32;
    let regions = report["regions"].as_array().expect("regions in the JSON");
    let features = Features::from_regions(
        raw,
        regions.iter().map(|r| {
            let name = r["category"].as_str().unwrap();
            let category = *RegionCategory::ALL.iter().find(|c| c.name() == name).expect("a category name");
            (category, r["severity"].as_f64().unwrap() as f32)
        }),
    );
    assert_eq!(score["score"].as_f64().unwrap() as f32, map.calibrate(&features), "{report}");
}

#[test]
fn a_labelled_heie_score_csv_calibrates_without_judging() {
    let _serial = serial_blocking();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("scores.csv");
    let mut rows = String::from("file,score,uncalibrated_score,mode,finish_reason,rejected_by,regions,summary,error,severity_hand,severity_text,label\n");
    for n in 0..12 {
        let score = 0.3 + 0.05 * n as f32;
        let hand = if n % 3 == 0 { "0.7" } else { "" };
        let label = if hand.is_empty() && score > 0.45 { "keep" } else { "reject" };
        rows.push_str(&format!("img{n:02}.png,{score:.6},,zero-shot,completed,,,\"a summary, with a comma\",,{hand},,{label}\n"));
    }
    rows.push_str("unlabelled.png,0.5,,zero-shot,completed,,,,,,,\n");
    std::fs::write(&csv, rows).unwrap();
    let out = dir.path().join("from-csv.json");
    let run = Command::new(heie_bin())
        .args(["calibrate", "--labels", csv.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("HEIE_LOG", "error")
        .output()
        .unwrap();
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout} {}", text(&run.stderr));
    assert!(stdout.contains("read 12 labelled rows (6 kept, 6 rejected; 1 unlabelled"), "{stdout}");
    let file = CalibrationFile::load(&out).unwrap();
    assert!(file.weights.severity.hand < 0.0, "rejected hands weigh against keeping: {:?}", file.weights);
    assert_eq!(file.fitted_with.mode, "zero-shot");

    // The label column must exist; its name is a flag.
    let run = Command::new(heie_bin())
        .args(["calibrate", "--labels", csv.to_str().unwrap(), "--label-column", "verdict", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("no `verdict` column"), "{}", text(&run.stderr));
}

#[test]
fn broken_calibration_files_stop_serve_and_eval_naming_the_field() {
    let _serial = serial_blocking();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"format": "heie-calibration/1", "created": "x"}"#).unwrap();
    let image = dir.path().join("i.png");
    test_image(32, 32).save(&image).unwrap();
    let eval = heie(&["eval", image.to_str().unwrap(), "--calibration", bad.to_str().unwrap()]);
    assert_eq!(eval.status.code(), Some(2));
    let stderr = text(&eval.stderr);
    assert!(stderr.contains("bad.json") && stderr.contains("fitted_with"), "{stderr}");

    std::fs::write(&bad, r#"{"format": "something-else"}"#).unwrap();
    let serve = heie(&["serve", "--addr", "127.0.0.1:0", "--calibration", bad.to_str().unwrap()]);
    assert_eq!(serve.status.code(), Some(2));
    assert!(text(&serve.stderr).contains("this heie reads \"heie-calibration/1\""), "{}", text(&serve.stderr));

    let run = heie(&["calibrate", "--keep", dir.path().to_str().unwrap(), "--out", bad.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "--keep without --reject is a usage error");
}
