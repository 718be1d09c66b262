//! The JSON written per image by `heie eval` (and printed with `--json`).

use std::path::Path;

use image::RgbImage;
use serde_json::{json, Value};

use crate::pipeline::rating::LEVELS;
use crate::pipeline::regions::Region;
use crate::pipeline::EvalResult;

/// The file name of region `id`'s mask beside `NAME.json`: `NAME.region-<id>.png`.
pub fn region_mask_name(stem: &str, id: u32) -> String {
    format!("{stem}.region-{id}.png")
}

/// The region masks an earlier run wrote for this image that the new result does not have: the `mask`
/// names its `NAME.json` (`previous`) lists, less `kept`. Only names of the form
/// [`region_mask_name`] for `stem` count, so a hand-edited JSON cannot name another file to delete,
/// and a file the earlier JSON never listed is left alone.
pub fn stale_region_masks(previous: &Value, stem: &str, kept: &[String]) -> Vec<String> {
    let Some(regions) = previous.get("regions").and_then(Value::as_array) else { return Vec::new() };
    regions
        .iter()
        .filter_map(|r| r.get("mask").and_then(Value::as_str))
        .filter(|name| {
            let id = name.strip_prefix(stem).and_then(|n| n.strip_prefix(".region-")).and_then(|n| n.strip_suffix(".png"));
            id.and_then(|id| id.parse::<u32>().ok()).is_some_and(|id| region_mask_name(stem, id) == *name)
        })
        .filter(|name| !kept.iter().any(|k| k == name))
        .map(str::to_string)
        .collect()
}

/// `mask_names`: each region's mask file name (see [`region_mask_name`]), in region order.
pub fn eval_report(path: &Path, image: &RgbImage, result: &EvalResult, heatmap: &Path, overlay: &Path, mask_names: &[String]) -> Value {
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
        "regions": result.regions.iter().zip(mask_names).map(|(r, mask)| region(r, mask)).collect::<Vec<_>>(),
        "explanation": result.explanation,
        "timings": result.timings,
        "tokens": result.tokens,
        "finish_reason": result.finish_reason,
        "summary": result.summary,
        "heatmap": heatmap.display().to_string(),
        "overlay": overlay.display().to_string(),
    })
}

/// One region as `heie eval` writes it: the wire's fields with names people read (category "hand",
/// source "grounded-box") and the mask as a file name.
fn region(r: &Region, mask: &str) -> Value {
    let [x1, y1, x2, y2] = r.bounds;
    let [pixel_x1, pixel_y1, pixel_x2, pixel_y2] = r.pixels;
    json!({
        "id": r.id,
        "label": r.label,
        "sentences": r.sentences,
        "category": r.category.name(),
        "box": { "x1": x1, "y1": y1, "x2": x2, "y2": y2, "pixel_x1": pixel_x1, "pixel_y1": pixel_y1, "pixel_x2": pixel_x2, "pixel_y2": pixel_y2 },
        "severity": r.severity,
        "source": r.source.name(),
        "mask": mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_masks_are_the_earlier_runs_own_minus_the_kept() {
        let previous = json!({ "regions": [
            { "mask": "photo.region-1.png" },
            { "mask": "photo.region-2.png" },
            { "mask": "photo.region-3.png" },
            // Not names this image's masks can have: never deleted.
            { "mask": "../photo.region-4.png" },
            { "mask": "other.region-1.png" },
            { "mask": "photo.region-01.png" },
            { "mask": "photo.heatmap.png" },
            { "mask": 7 },
        ] });
        let kept = vec!["photo.region-1.png".to_string()];
        assert_eq!(stale_region_masks(&previous, "photo", &kept), ["photo.region-2.png", "photo.region-3.png"]);
        assert!(stale_region_masks(&json!({ "score": 0.5 }), "photo", &[]).is_empty());
    }
}
