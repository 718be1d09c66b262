//! `heie extract`: runs the serving pipeline on every labelled image and stores what the heads need
//! (tile features, `[MAP]`/`[SCORE]` hidden states, tiling geometry) with the labels, in shards.
//! The captures come from the same engine code that serves, so training sees exactly what serving sees.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::Array2;

use crate::data::{DataError, Sample};
use crate::pipeline::captured::Captured;
use crate::pipeline::heatmap::resize;
use crate::pipeline::image_input::load_path;
use crate::pipeline::reference::ReferenceCot;
use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

use super::shards::{self, FeatureSample, SampleMeta, ShardError};

/// Options of an extraction run.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub out: PathBuf,
    /// Samples per shard file.
    pub shard_size: usize,
    /// Longer side of the stored ground-truth heatmaps (the training loss resolution).
    pub gt_side: usize,
    /// Evaluations kept in flight (the engine batches them).
    pub parallel: usize,
    pub max_pixels: u64,
    pub options: EvalOptions,
    /// Feed each sample's reference chain of thought instead of generating one (samples without a
    /// reference are generated).
    pub teacher_forcing: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    pub extracted: usize,
    /// Samples already in the shards (resumed run).
    pub already_done: usize,
    /// `(id, reason)` of every sample that could not be used.
    pub skipped: Vec<(String, String)>,
    /// Of `extracted`: with the reference fed (teacher forcing) and with a generated chain of thought
    /// although teacher forcing was asked for (the sample has no reference).
    pub teacher_forced: usize,
    pub generated_without_reference: usize,
    pub elapsed: Duration,
}

impl ExtractReport {
    pub fn images_per_second(&self) -> f64 {
        self.extracted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Model(String),
}

/// Size of a stored ground-truth map: the image's aspect, longer side at most `gt_side`.
pub fn gt_size(width: u32, height: u32, gt_side: usize) -> (usize, usize) {
    let long = width.max(height).max(1) as f64;
    let scale = (gt_side as f64 / long).min(1.0);
    let w = ((width as f64 * scale).round() as usize).max(1);
    let h = ((height as f64 * scale).round() as usize).max(1);
    (w, h)
}

/// Turns one evaluation's captures and the sample's labels into a shard entry.
pub fn feature_sample(captured: &Captured, sample: &Sample, gt_side: usize) -> Result<FeatureSample, String> {
    let tiling = &captured.tiling;
    let n_views = tiling.n_tiles() as usize + usize::from(tiling.has_thumbnail);
    if captured.features.len() != n_views || captured.map_hidden.len() != n_views {
        return Err(format!(
            "expected {n_views} feature blocks and [MAP] states, captured {} and {}",
            captured.features.len(),
            captured.map_hidden.len()
        ));
    }
    let score_hidden = captured.score_hidden.clone().ok_or("the [SCORE] state was not captured")?;
    let (w, h) = gt_size(tiling.original_width, tiling.original_height, gt_side);
    let heatmap = sample.heatmap.as_ref().map(|m| fit_map(m, w, h));
    Ok(FeatureSample {
        meta: SampleMeta {
            id: sample.id.clone(),
            grid_cols: tiling.grid.cols as usize,
            grid_rows: tiling.grid.rows as usize,
            has_thumbnail: tiling.has_thumbnail,
            width: tiling.original_width,
            height: tiling.original_height,
            score: sample.score,
            has_heatmap: heatmap.is_some(),
        },
        features: shards::to_f16(&captured.features.concat()),
        map_hidden: shards::to_f16(&captured.map_hidden.concat()),
        score_hidden: shards::to_f16(&score_hidden),
        heatmap,
    })
}

/// Resizes a map to `w × h` (bilinear) unless it already has that size; values stay in [0, 1].
pub fn fit_map(map: &Array2<f32>, w: usize, h: usize) -> Array2<f32> {
    if map.dim() == (h, w) {
        map.clone()
    } else {
        resize(map, w as u32, h as u32).mapv(|v| v.clamp(0.0, 1.0))
    }
}

/// Extracts `samples` into `config.out`, skipping ids already there. `on_done(id, ok)` runs after each.
///
/// Longer than 80 lines on purpose: it is one pipelined loop (keep `parallel` evaluations queued, then
/// take the oldest) whose queue, skip log, report and shard buffer both halves change; split, each half
/// would take five of them as arguments and the order of a sample's outcomes would be harder to follow.
pub fn extract(
    evaluator: &Evaluator,
    samples: impl Iterator<Item = Result<Sample, DataError>>,
    config: &ExtractConfig,
    mut on_done: impl FnMut(&str, bool),
) -> Result<ExtractReport, ExtractError> {
    let started = Instant::now();
    let info = evaluator.engine().info().clone();
    let (width, tpt) = (info.n_embd, info.tokens_per_tile);
    std::fs::create_dir_all(&config.out).map_err(|e| DataError::io(&config.out, e))?;
    let index = shards::index(&config.out)?;
    if let Some(shape) = index.shape {
        if shape != (width, tpt) {
            return Err(ExtractError::Model(format!(
                "{} holds shards for width {} / {} tokens per tile, the model has {width} / {tpt}",
                config.out.display(),
                shape.0,
                shape.1
            )));
        }
    }
    let mut report = ExtractReport::default();
    let mut next_shard = index.next_shard;
    let mut buffer: Vec<FeatureSample> = Vec::new();
    let skipped_log = config.out.join("skipped.tsv");
    let skip = |report: &mut ExtractReport, id: String, reason: String| {
        tracing::warn!(id, reason, "skipped");
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&skipped_log) {
            let _ = writeln!(f, "{id}\t{}", reason.replace(['\t', '\n'], " "));
        }
        report.skipped.push((id, reason));
    };
    let flush = |buffer: &mut Vec<FeatureSample>, next_shard: &mut usize| -> Result<(), ShardError> {
        if buffer.is_empty() {
            return Ok(());
        }
        shards::write_shard(&config.out.join(shards::shard_name(*next_shard)), width, tpt, buffer)?;
        *next_shard += 1;
        buffer.clear();
        Ok(())
    };

    let mut options = config.options.clone();
    options.emit_captures = true;
    // Each evaluation in flight, with whether its reference was fed.
    let mut in_flight: VecDeque<(Sample, crate::pipeline::events::EventReceiver, bool)> = VecDeque::new();
    let mut samples = samples.peekable();
    loop {
        // Keep `parallel` evaluations queued so the engine can batch their decode steps.
        while in_flight.len() < config.parallel.max(1) {
            let Some(next) = samples.next() else { break };
            let sample = match next {
                Ok(s) => s,
                Err(e) => {
                    let id = format!("#{}", report.extracted + report.skipped.len() + report.already_done);
                    skip(&mut report, id.clone(), e.to_string());
                    on_done(&id, false);
                    continue;
                }
            };
            if index.ids.contains(&sample.id) {
                report.already_done += 1;
                on_done(&sample.id, true);
                continue;
            }
            let reference = match (config.teacher_forcing, &sample.reference_cot) {
                (true, Some(text)) => match ReferenceCot::parse(text) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        skip(&mut report, sample.id.clone(), format!("reference chain of thought: {e}"));
                        on_done(&sample.id, false);
                        continue;
                    }
                },
                _ => None,
            };
            let forced = reference.is_some();
            let options = EvalOptions { reference, ..options.clone() };
            let started = load_path(&sample.image, config.max_pixels)
                .map_err(|e| e.to_string())
                .and_then(|image| evaluator.evaluate(&image, options).map_err(|e| e.to_string()));
            match started {
                Ok((_, events)) => in_flight.push_back((sample, events, forced)),
                Err(reason) => {
                    skip(&mut report, sample.id.clone(), format!("{}: {reason}", sample.image.display()));
                    on_done(&sample.id, false);
                }
            }
        }
        let Some((sample, events, forced)) = in_flight.pop_front() else { break };
        let result = EvalResult::collect(events, |_| {});
        let entry = match (&result.error, &result.captures) {
            (Some(e), _) => Err(format!("evaluation failed: {e}")),
            (None, None) => Err("no captures were emitted".to_string()),
            (None, Some(c)) => feature_sample(c, &sample, config.gt_side),
        };
        match entry {
            Ok(fs) => {
                buffer.push(fs);
                report.extracted += 1;
                match (config.teacher_forcing, forced) {
                    (true, true) => report.teacher_forced += 1,
                    (true, false) => report.generated_without_reference += 1,
                    (false, _) => {}
                }
                on_done(&sample.id, true);
                if buffer.len() >= config.shard_size {
                    flush(&mut buffer, &mut next_shard)?;
                }
            }
            Err(reason) => {
                skip(&mut report, sample.id.clone(), reason);
                on_done(&sample.id, false);
            }
        }
    }
    flush(&mut buffer, &mut next_shard)?;
    report.elapsed = started.elapsed();
    Ok(report)
}
