//! Teacher forcing: the reference chain of thought is fed instead of generated, on the real llama.cpp
//! with the tiny fixture models, through the pipeline and through `heie extract --teacher-forcing`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use heie_server::data::expl_aigi::parse_line;
use heie_server::pipeline::explanation::{render_explanation, MAP_MARKER};
use heie_server::pipeline::prompt;
use heie_server::pipeline::reference::ReferenceCot;
use heie_server::pipeline::{EvalOptions, EvalResult, Evaluator, PromptMode};
use heie_server::training::shards::{read_shard, shard_name, to_f32};

use common::{engine, fixture, heie_bin, model, test_image};

const DESCRIPTION: &str = "A red block on a gradient background.";
const REGIONS: &str = "Problematic area: <ref>the block</ref><box>[[333,250,500,500]]</box> has a hard edge.";
const ANALYSIS: &str = "- Block: flat colour with no shading.";

fn reference() -> ReferenceCot {
    ReferenceCot::parse(&render_explanation(DESCRIPTION, REGIONS, 1, ANALYSIS)).expect("a valid reference")
}

fn evaluate(evaluator: &Evaluator, reference: Option<ReferenceCot>) -> EvalResult {
    let options = EvalOptions { max_tokens_per_section: 8, emit_captures: true, reference, ..Default::default() };
    let (_, events) = evaluator.evaluate(&test_image(1024, 768), options).expect("evaluation starts");
    EvalResult::collect(events, |_| {})
}

#[test]
fn a_teacher_forced_evaluation_streams_the_reference_and_captures_every_marker_in_its_context() {
    let evaluator = Evaluator::new(engine("tiny-llm.gguf", "tiny-mmproj.gguf", 1)).unwrap();
    let result = evaluate(&evaluator, Some(reference()));
    assert_eq!(result.error, None);
    let tiling = result.tiling.unwrap();
    let n_markers = (tiling.grid.cols * tiling.grid.rows) as usize + usize::from(tiling.has_thumbnail);
    assert!(n_markers > 2);
    // Every section is the reference, verbatim, in the dataset's layout, with one [MAP] per view.
    let text = &result.explanation;
    assert_eq!(text.description, format!("{}{DESCRIPTION}", prompt::opening()));
    assert_eq!(
        text.regions,
        format!("{}{REGIONS}{}{}", prompt::regions_heading(), prompt::map_sentence(), MAP_MARKER.repeat(n_markers))
    );
    assert_eq!(text.chain_of_thought(), render_explanation(DESCRIPTION, REGIONS, n_markers, ANALYSIS));
    assert!(!text.rating.is_empty(), "the rating turn still runs");
    assert_eq!(result.tokens.generated, 0, "nothing is sampled when the reference is fed");
    // The reference's grounding box is reported as a region.
    assert_eq!(result.boxes.len(), 1);
    let b = &result.boxes[0];
    assert_eq!((b.label.as_deref(), b.x1, b.y1, b.x2, b.y2), (Some("the block"), 333.0, 250.0, 500.0, 500.0));

    let captures = result.captures.clone().unwrap();
    assert_eq!(captures.map_hidden.len(), n_markers);
    assert!(captures.score_hidden.is_some());
    assert!(result.score().is_some());

    // The states follow the fed text: a generated chain of thought puts other words before the markers.
    let generated = evaluate(&evaluator, None);
    assert!(generated.tokens.generated > 0);
    let generated = generated.captures.unwrap();
    assert_ne!(generated.score_hidden, captures.score_hidden);
    assert_ne!(generated.map_hidden[0], captures.map_hidden[0]);
    // And the same reference gives the same states.
    assert_eq!(evaluate(&evaluator, Some(reference())).captures.unwrap().score_hidden, captures.score_hidden);
}

#[test]
fn a_dataset_reference_is_fed_in_native_mode_with_the_vocabulary_markers() {
    let evaluator = Evaluator::new(engine("tiny-llm-native.gguf", "tiny-mmproj.gguf", 1)).unwrap();
    assert_eq!(evaluator.prompt_mode(), PromptMode::Native);
    // A real Expl-AIGI-Eval answer.
    let jsonl = std::fs::read_to_string(fixture("expl-aigi-eval/RichHF-18K_dev.jsonl")).unwrap();
    let entry = parse_line(jsonl.lines().next().unwrap(), Path::new("/")).unwrap();
    let reference = ReferenceCot::parse(&entry.reference_cot.unwrap()).unwrap();
    let result = evaluate(&evaluator, Some(reference.clone()));
    assert_eq!(result.error, None);
    let tiling = result.tiling.unwrap();
    let n_markers = (tiling.grid.cols * tiling.grid.rows) as usize + usize::from(tiling.has_thumbnail);
    assert_eq!(result.tokens.generated, 0);
    assert_eq!(
        result.explanation.chain_of_thought(),
        render_explanation(&reference.description, &reference.regions, n_markers, &reference.analysis)
    );
    let captures = result.captures.clone().unwrap();
    assert_eq!(captures.map_hidden.len(), n_markers);
    assert!(captures.score_hidden.is_some());
}

fn heie(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(heie_bin()).args(args).current_dir(cwd).output().expect("heie runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "heie {args:?} failed: {stderr}");
    stderr
}

#[test]
fn extract_with_teacher_forcing_feeds_references_and_counts_the_samples_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (llm, mmproj) = (model("tiny-llm.gguf"), model("tiny-mmproj.gguf"));
    let engine = ["--model", llm.to_str().unwrap(), "--mmproj", mmproj.to_str().unwrap(), "--threads", "1", "--max-tokens", "4"];
    heie(&["synth", "--out", "data", "--count", "4", "--size", "112", "--seed", "3", "--dev-fraction", "0", "--test-fraction", "0"], d);
    let extract_with = |data: &str, out: &str, forcing: bool| {
        let mut args = vec!["extract", "--data", data, "--out", out, "--gt-side", "32", "--parallel", "2"];
        if forcing {
            args.push("--teacher-forcing");
        }
        args.extend(engine);
        heie(&args, d)
    };
    let extract = |data: &str, out: &str| extract_with(data, out, true);
    // `heie synth` writes a reference for every image.
    let log = extract("data/train", "shards");
    assert!(log.contains("4 extracted") && log.contains("0 skipped"), "{log}");
    assert!(log.contains("4 teacher-forced, 0 generated (no reference)"), "{log}");
    // The shards hold the states of the fed text: without the flag the same images give other ones.
    let log = extract_with("data/train", "shards-generated", false);
    assert!(log.contains("4 extracted") && !log.contains("teacher-forced"), "{log}");
    let score_states = |dir: &str| -> BTreeMap<String, Vec<f32>> {
        let (_, samples) = read_shard(&d.join(dir).join(shard_name(0))).unwrap();
        samples.into_iter().map(|s| (s.meta.id, to_f32(&s.score_hidden))).collect()
    };
    let (forced, generated) = (score_states("shards"), score_states("shards-generated"));
    assert_eq!(forced.len(), 4);
    for (id, state) in &forced {
        assert_ne!(Some(state), generated.get(id), "{id}: the [SCORE] state ignores the reference");
    }

    // Expl-AIGI-Eval lines: one with a reference, one without (generated), one whose reference lacks the
    // [SCORE] marker and one over the size limit (both skipped, named in the log).
    let images: Vec<_> = std::fs::read_dir(d.join("data/train"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".png") && !n.ends_with(".heatmap.png"))
        .collect();
    let good = render_explanation(DESCRIPTION, REGIONS, 1, ANALYSIS);
    let no_score = good.replace("[SCORE]", "");
    let too_long = render_explanation(&"long ".repeat(2000), REGIONS, 1, ANALYSIS);
    let line = |id: &str, image: &str, answer: Option<&str>| {
        let conversations = match answer {
            Some(a) => serde_json::json!([{"from": "human", "value": "<image>\nFind the issues."}, {"from": "gpt", "value": a}]),
            None => serde_json::json!([]),
        };
        serde_json::json!({"id": id, "image": format!("train/{image}"), "score": 0.5, "conversations": conversations}).to_string()
    };
    let jsonl = [
        line("with-ref", &images[0], Some(&good)),
        line("no-ref", &images[1], None),
        line("bad-ref", &images[2], Some(&no_score)),
        line("long-ref", &images[3], Some(&too_long)),
    ]
    .join("\n");
    std::fs::write(d.join("data/split.jsonl"), jsonl).unwrap();
    let log = extract("data/split.jsonl", "shards-jsonl");
    assert!(log.contains("2 extracted") && log.contains("2 skipped"), "{log}");
    assert!(log.contains("1 teacher-forced, 1 generated (no reference)"), "{log}");
    let skipped = std::fs::read_to_string(d.join("shards-jsonl/skipped.tsv")).unwrap();
    assert!(skipped.contains("bad-ref\treference chain of thought: no [SCORE] marker"), "{skipped}");
    assert!(skipped.contains("long-ref\treference chain of thought:") && skipped.contains("bytes"), "{skipped}");
    assert!(log.contains("bad-ref") && log.contains("long-ref"), "the log names the samples: {log}");
}

#[test]
fn extract_with_long_generations_in_flight_does_not_stall() {
    // Regression: extraction reads the oldest evaluation's stream only; when the finalizer waited on a
    // younger one's full channel, full-length sections in flight stalled the run for good. The
    // finalizer now hands what does not fit to a delivery thread (`EventSender::deliver_rest`).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (llm, mmproj) = (model("tiny-llm.gguf"), model("tiny-mmproj.gguf"));
    heie(&["synth", "--out", "data", "--count", "16", "--size", "224", "--seed", "1", "--dev-fraction", "0", "--test-fraction", "0"], d);
    let mut child = Command::new(heie_bin())
        .args(["extract", "--data", "data/train", "--out", "shards", "--parallel", "4", "--threads", "1", "--max-tokens", "192"])
        .args(["--model", llm.to_str().unwrap(), "--mmproj", mmproj.to_str().unwrap()])
        .current_dir(d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("heie extract stalled");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("16 extracted"), "{log}");
}
