//! `heie evaluate`: the paper's metrics (heads/src/training/metrics.rs) for the zero-shot outputs, any
//! number of heads files and a constant baseline, all from one pass of the engine over a split; or for
//! another system's saved outputs (`--predictions DIR`). Maps are compared at `resolution × resolution`.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::Instant;

use heie_heads::training::metrics::{MetricsAccumulator, MetricsSummary};
use heie_heads::Heads;
use ndarray::Array2;
use serde::Serialize;

use crate::data::{folder, read_gray_map, DataError, Sample};
use crate::pipeline::image_input::load_path;
use crate::pipeline::{EvalOptions, EvalResult, Evaluator, OutputMode};

use super::extract::{feature_sample, fit_map};
use super::train::heads_input;

/// One table row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    pub metrics: MetricsSummary,
}

/// The result of an evaluation run.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluateReport {
    pub resolution: usize,
    pub images: usize,
    pub rows: Vec<Row>,
    pub skipped: Vec<(String, String)>,
    pub seconds: f64,
}

/// The systems compared in an engine run.
pub struct Systems {
    pub zero_shot: bool,
    /// `(name, heads)`, e.g. `("trained", …)`, `("init", …)`.
    pub heads: Vec<(String, Heads)>,
    /// A constant prediction: an empty heatmap and the split's mean score.
    pub constant: bool,
}

/// One system's outputs for one image, at the comparison resolution.
struct Prediction {
    map: Option<Array2<f32>>,
    score: Option<f32>,
}

struct Table {
    names: Vec<String>,
    accs: Vec<MetricsAccumulator>,
}

impl Table {
    fn new(names: Vec<String>) -> Table {
        let accs = names.iter().map(|_| MetricsAccumulator::new()).collect();
        Table { names, accs }
    }

    fn add(&mut self, system: usize, pred: &Prediction, gt_map: Option<&Array2<f32>>, gt_score: Option<f32>) {
        if let (Some(p), Some(g)) = (&pred.map, gt_map) {
            self.accs[system].add_map(p.view(), g.view());
        }
        if let (Some(p), Some(g)) = (pred.score, gt_score) {
            self.accs[system].add_score(p, g);
        }
    }

    fn rows(&self) -> Vec<Row> {
        self.names.iter().zip(&self.accs).map(|(n, a)| Row { system: n.clone(), metrics: a.summary() }).collect()
    }
}

/// Runs the engine over `samples` once and scores every system on the same images.
///
/// Longer than 80 lines on purpose: like `extract`, one pipelined loop over the samples whose queue and
/// per-system accumulators both halves change.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_pipeline(
    evaluator: &Evaluator,
    samples: impl Iterator<Item = Result<Sample, DataError>>,
    systems: &Systems,
    options: &EvalOptions,
    resolution: usize,
    parallel: usize,
    max_pixels: u64,
    mut on_done: impl FnMut(&str, bool),
) -> EvaluateReport {
    let started = Instant::now();
    let info = evaluator.engine().info().clone();
    let mut names = Vec::new();
    if systems.zero_shot {
        names.push("zero-shot".to_string());
    }
    names.extend(systems.heads.iter().map(|(n, _)| n.clone()));
    let mut table = Table::new(names);
    let mut options = options.clone();
    options.emit_captures = !systems.heads.is_empty();
    let mut skipped = Vec::new();
    let mut images = 0;
    // For the constant row: every image's ground-truth map and score, scored once the mean is known.
    let mut constant_inputs: Vec<(Option<Array2<f32>>, Option<f32>)> = Vec::new();
    let mut in_flight = VecDeque::new();
    let mut samples = samples.enumerate();
    loop {
        while in_flight.len() < parallel.max(1) {
            let Some((k, next)) = samples.next() else { break };
            match next.map_err(|e| (format!("#{k}"), e.to_string())).and_then(|s| {
                let image = load_path(&s.image, max_pixels).map_err(|e| (s.id.clone(), format!("{}: {e}", s.image.display())))?;
                let (_, events) = evaluator.evaluate(&image, options.clone()).map_err(|e| (s.id.clone(), e.to_string()))?;
                Ok((s, events))
            }) {
                Ok(pair) => in_flight.push_back(pair),
                Err((id, reason)) => {
                    on_done(&id, false);
                    skipped.push((id, reason));
                }
            }
        }
        let Some((sample, events)) = in_flight.pop_front() else { break };
        let result = EvalResult::collect(events, |_| {});
        if let Some(e) = result.error {
            on_done(&sample.id, false);
            skipped.push((sample.id, e));
            continue;
        }
        let gt_map = sample.heatmap.as_ref().map(|m| fit_map(m, resolution, resolution));
        let mut preds = Vec::new();
        if systems.zero_shot {
            let map = result.heatmaps.iter().find(|h| h.mode == OutputMode::ZeroShot).map(|h| square(&h.map, resolution));
            let score = result.scores.iter().find(|s| s.mode == OutputMode::ZeroShot).map(|s| s.score);
            preds.push(Prediction { map, score });
        }
        if !systems.heads.is_empty() {
            let fs = match result.captures.as_deref().ok_or("no captures".to_string()).and_then(|c| feature_sample(c, &sample, 1)) {
                Ok(fs) => fs,
                Err(reason) => {
                    on_done(&sample.id, false);
                    skipped.push((sample.id, reason));
                    continue;
                }
            };
            // Through the shards' f16 rounding, so evaluation sees what training saw.
            let dense = fs.dense();
            for (name, heads) in &systems.heads {
                let input = heads_input(&fs, &dense, info.n_embd, info.tokens_per_tile, resolution, resolution);
                match heads.forward(&input) {
                    Ok(out) => preds.push(Prediction { map: Some(out.heatmap), score: Some(out.score) }),
                    Err(e) => {
                        tracing::warn!(id = sample.id, system = name, "heads failed: {e}");
                        preds.push(Prediction { map: None, score: None });
                    }
                }
            }
        }
        for (i, p) in preds.iter().enumerate() {
            table.add(i, p, gt_map.as_ref(), sample.score);
        }
        if systems.constant {
            constant_inputs.push((gt_map, sample.score));
        }
        images += 1;
        on_done(&sample.id, true);
    }
    let mut rows = table.rows();
    if systems.constant {
        rows.push(constant_row(&constant_inputs, resolution));
    }
    EvaluateReport { resolution, images, rows, skipped, seconds: started.elapsed().as_secs_f64() }
}

fn constant_row(inputs: &[(Option<Array2<f32>>, Option<f32>)], resolution: usize) -> Row {
    let scores: Vec<f32> = inputs.iter().filter_map(|(_, s)| *s).collect();
    let mean = if scores.is_empty() { 0.5 } else { scores.iter().sum::<f32>() / scores.len() as f32 };
    let empty = Array2::<f32>::zeros((resolution, resolution));
    let mut acc = MetricsAccumulator::new();
    for (map, score) in inputs {
        if let Some(g) = map {
            acc.add_map(empty.view(), g.view());
        }
        if let Some(s) = score {
            acc.add_score(mean, *s);
        }
    }
    Row { system: "constant".into(), metrics: acc.summary() }
}

fn square(map: &Array2<f32>, resolution: usize) -> Array2<f32> {
    fit_map(map, resolution, resolution)
}

/// Scores another system's outputs: `DIR/ID.heatmap.png` (8- or 16-bit) and `DIR/scores.csv`.
/// Images with neither are skipped with a reason.
pub fn evaluate_predictions(
    samples: impl Iterator<Item = Result<Sample, DataError>>,
    dir: &Path,
    name: &str,
    resolution: usize,
) -> Result<EvaluateReport, DataError> {
    let started = Instant::now();
    let scores: HashMap<String, f32> = folder::read_scores(dir)?;
    let mut table = Table::new(vec![name.to_string()]);
    let (mut images, mut skipped) = (0, Vec::new());
    for (k, s) in samples.enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                skipped.push((format!("#{k}"), e.to_string()));
                continue;
            }
        };
        let path = dir.join(format!("{}{}", s.id, folder::HEATMAP_SUFFIX));
        let map = if path.is_file() {
            match read_gray_map(&path) {
                Ok(m) => Some(square(&m, resolution)),
                Err(e) => {
                    skipped.push((s.id, e.to_string()));
                    continue;
                }
            }
        } else {
            None
        };
        let score = scores.get(&s.id).copied();
        if map.is_none() && score.is_none() {
            skipped.push((s.id.clone(), format!("no {} and no score in {}", path.display(), folder::SCORES_FILE)));
            continue;
        }
        let gt = s.heatmap.as_ref().map(|m| square(m, resolution));
        table.add(0, &Prediction { map, score }, gt.as_ref(), s.score);
        images += 1;
    }
    Ok(EvaluateReport { resolution, images, rows: table.rows(), skipped, seconds: started.elapsed().as_secs_f64() })
}

/// The report as a Markdown table (the paper's columns; ↓ = lower is better).
pub fn markdown(report: &EvaluateReport) -> String {
    let f = |v: Option<f64>, digits: usize| v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into());
    let mut out = format!(
        "Maps compared at {r}×{r}; {n} images.\n\n| System | Maps | Scores | PLCC | SRCC | KLD ↓ | CC | SIM | NSS | AUC-Judd | MSE(GT=0) ↓ | MSE(all) ↓ |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        r = report.resolution,
        n = report.images
    );
    for row in &report.rows {
        let m = &row.metrics;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.system,
            m.n_maps,
            m.n_scores,
            f(m.plcc, 3),
            f(m.srcc, 3),
            f(m.kld, 3),
            f(m.cc, 3),
            f(m.sim, 3),
            f(m.nss, 3),
            f(m.auc_judd, 3),
            f(m.mse_gt0, 5),
            f(m.mse_all, 5)
        ));
    }
    out
}

/// Writes `PATH.json` and `PATH.md`.
pub fn write_report(report: &EvaluateReport, stem: &Path) -> std::io::Result<()> {
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(stem.with_extension("json"), serde_json::to_string_pretty(report).expect("report serialises"))?;
    std::fs::write(stem.with_extension("md"), markdown(report))
}
