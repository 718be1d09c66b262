//! The JSON written per image by `heie eval` (and printed with `--json`).

use std::path::Path;

use image::RgbImage;
use serde_json::{json, Value};

use crate::pipeline::rating::LEVELS;
use crate::pipeline::EvalResult;

pub fn eval_report(path: &Path, image: &RgbImage, result: &EvalResult, heatmap: &Path, overlay: &Path) -> Value {
    let primary = result.scores.first();
    let levels: serde_json::Map<String, Value> = primary
        .map(|s| {
            LEVELS.iter().zip(s.level_probabilities.iter()).map(|((name, _), p)| (name.to_string(), json!(p))).collect()
        })
        .unwrap_or_default();
    json!({
        "image": path.display().to_string(),
        "width": image.width(),
        "height": image.height(),
        "score": primary.map(|s| s.score),
        "mode": primary.map(|s| s.mode),
        "level_probabilities": levels,
        "scores": result.scores,
        "prompt_mode": result.prompt_mode,
        "tiling": result.tiling,
        "boxes": result.boxes,
        "explanation": result.explanation,
        "timings": result.timings,
        "tokens": result.tokens,
        "finish_reason": result.finish_reason,
        "summary": result.summary,
        "heatmap": heatmap.display().to_string(),
        "overlay": overlay.display().to_string(),
    })
}
