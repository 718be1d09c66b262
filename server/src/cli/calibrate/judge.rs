//! `heie calibrate --keep DIR --reject DIR`: judges every image of the two folders in-process (as
//! `heie eval` does, greedy so the same image always gives the same features) and turns each result
//! into a calibration example.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::calibration::fit::Example;
use crate::calibration::Features;
use crate::data::folder::image_files;
use crate::pipeline::image_input::load_path;
use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

/// What a calibration sees of one judged image: its raw primary score and the worst region severity
/// per category. None when the evaluation gave no score.
pub fn features_of(result: &EvalResult) -> Option<Features> {
    let primary = result.scores.first()?;
    let raw = primary.uncalibrated.unwrap_or(primary.score);
    Some(Features::from_regions(raw, result.regions.iter().map(|r| (r.category, r.severity))))
}

/// The images of `dir` (PNG, JPEG, WebP; sorted by name) with their label; an error when it has none.
pub fn labelled_images(dir: &Path, kept: bool) -> anyhow::Result<Vec<(String, std::path::PathBuf, bool)>> {
    let flag = if kept { "--keep" } else { "--reject" };
    let images = image_files(dir).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", dir.display()))?;
    anyhow::ensure!(!images.is_empty(), "{flag} {} has no PNG, JPEG or WebP images", dir.display());
    Ok(images
        .into_iter()
        .map(|(_, path)| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, path, kept)
        })
        .collect())
}

/// Judges each image; returns the examples and the images that failed, with why.
pub fn judge(
    evaluator: &Evaluator,
    options: &EvalOptions,
    max_pixels: u64,
    images: &[(String, std::path::PathBuf, bool)],
) -> (Vec<Example>, Vec<String>) {
    let progress = ProgressBar::new(images.len() as u64);
    progress.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("static template"));
    let (mut examples, mut failures) = (Vec::new(), Vec::new());
    for (name, path, kept) in images {
        progress.set_message(name.clone());
        match judge_one(evaluator, options, max_pixels, path) {
            Ok(features) => examples.push(Example { name: name.clone(), features, kept: *kept }),
            Err(e) => {
                let line = format!("{}: {e:#}", path.display());
                progress.suspend(|| eprintln!("heie: {line}"));
                failures.push(line);
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    (examples, failures)
}

fn judge_one(evaluator: &Evaluator, options: &EvalOptions, max_pixels: u64, path: &Path) -> anyhow::Result<Features> {
    let image = load_path(path, max_pixels)?;
    let (_, events) = evaluator.evaluate(&image, options.clone())?;
    let result = EvalResult::collect(events, |_| {});
    if let Some(e) = &result.error {
        anyhow::bail!("{e}");
    }
    features_of(&result).ok_or_else(|| anyhow::anyhow!("the evaluation gave no score"))
}
