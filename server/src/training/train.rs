//! `heie train`: fits the heads on extracted shards with the paper's losses and schedule.
//!
//! Loss per image: focal loss on the fused heatmap + Laplace NLL `√2/σ·|H − H_gt| + ln σ` on the local
//! and the global map + MSE of the score (terms without a label are left out), averaged over the batch.
//! AdamW (lr 3e-4, weight decay 0.01), linear warm-up over the first 3% of steps, cosine decay to 0,
//! batch 16. After every epoch the dev split is scored; the best epoch (lowest dev loss) is written to
//! `--out`. Finally the calibration `(a, b, c)` is refitted on dev (score MSE, other weights frozen).
//! Before the first step the token scorer's input standardisation is fitted on the training set's
//! `[SCORE]` states (see `heie_heads::standardize`). Shuffling is seeded per epoch and the checkpoint
//! holds the optimiser's moments and step (`checkpoint.rs`), so a resumed run continues exactly as the
//! uninterrupted one would have. Shards stay f16 in memory; each sample is widened to f32 when used.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use heie_heads::model::TensorInput;
use heie_heads::training::adamw::{AdamW, AdamWParams};
use heie_heads::training::losses::{focal_loss, laplace_nll, score_mse};
use heie_heads::training::metrics::MetricsAccumulator;
use heie_heads::{Heads, HeadsConfig, HeadsInput, TileFeatures};
use serde::Serialize;

use crate::data::synth::Rng;

use super::checkpoint::{self, TrainState};
use super::config::TrainConfig;
use super::error::{Result, TrainError};
use super::shards::{self, DenseFeatures, FeatureSample};

/// Losses and metrics of one pass over a split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub dev_loss: Option<f64>,
    pub dev_cc: Option<f64>,
    pub dev_plcc: Option<f64>,
    pub mean_step_ms: f64,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochStats>,
    pub steps: usize,
    pub best_epoch: Option<usize>,
    pub train_samples: usize,
    pub dev_samples: usize,
    pub mean_step_ms: f64,
}

/// The samples of one or more shard folders, held in memory as f16.
pub struct ShardSet {
    pub samples: Vec<FeatureSample>,
    pub llm_width: usize,
    pub tokens_per_tile: usize,
}

impl ShardSet {
    pub fn load(dir: &Path) -> Result<ShardSet> {
        let paths = shards::list_shards(dir)?;
        if paths.is_empty() {
            return Err(TrainError::Setup(format!("{} holds no shard-*.safetensors files", dir.display())));
        }
        let mut samples = Vec::new();
        let mut shape = None;
        for path in paths {
            let (meta, s) = shards::read_shard(&path)?;
            let this = (meta.llm_width, meta.tokens_per_tile);
            if shape.is_some_and(|prev| prev != this) {
                return Err(TrainError::Setup(format!("{}: shards of different models in one folder", path.display())));
            }
            shape = Some(this);
            samples.extend(s);
        }
        let (llm_width, tokens_per_tile) = shape.expect("at least one shard");
        Ok(ShardSet { samples, llm_width, tokens_per_tile })
    }
}

/// The slices of a sample (`d` = its [`FeatureSample::dense`] copy) as the heads' input, with maps
/// rendered at `out_w × out_h`.
pub fn heads_input<'a>(s: &FeatureSample, d: &'a DenseFeatures, llm_width: usize, tokens_per_tile: usize, out_w: usize, out_h: usize) -> HeadsInput<'a> {
    let n_tiles = s.meta.grid_cols * s.meta.grid_rows;
    let view = |i: usize| TileFeatures {
        map_hidden: &d.map_hidden[i * llm_width..(i + 1) * llm_width],
        features: &d.features[i * tokens_per_tile * llm_width..(i + 1) * tokens_per_tile * llm_width],
    };
    HeadsInput {
        grid_cols: s.meta.grid_cols,
        grid_rows: s.meta.grid_rows,
        tiles: (0..n_tiles).map(view).collect(),
        thumbnail: s.meta.has_thumbnail.then(|| view(n_tiles)),
        score_hidden: &d.score_hidden,
        out_width: out_w,
        out_height: out_h,
    }
}

/// The loss resolution of a sample: its stored ground truth's size, else the image's aspect at 64 px.
fn loss_size(s: &FeatureSample) -> (usize, usize) {
    match &s.heatmap {
        Some(h) => (h.ncols(), h.nrows()),
        None => super::extract::gt_size(s.meta.width, s.meta.height, 64),
    }
}

struct Losses {
    total: Tensor,
    map_pred: Option<Vec<f32>>,
    score_pred: f32,
}

fn sample_loss(heads: &Heads, s: &FeatureSample, set: (usize, usize), cfg: &TrainConfig) -> Result<Losses> {
    let (w, h) = loss_size(s);
    // The f32 copy lives only until the input tensors are built.
    let input: TensorInput = heads.input_tensors(&heads_input(s, &s.dense(), set.0, set.1, w, h))?;
    let out = heads.forward_tensors(&input)?;
    let dev = Device::Cpu;
    let mut total = Tensor::zeros((), candle_core::DType::F32, &dev)?;
    if let Some(gt) = &s.heatmap {
        let gt = Tensor::from_slice(gt.as_slice().expect("standard layout"), (h, w), &dev)?;
        let focal = focal_loss(&out.heatmap, &gt, cfg.focal_alpha, cfg.focal_gamma)?;
        let lap = (laplace_nll(&out.local, &gt, &out.log_sigma_local)? + laplace_nll(&out.global, &gt, &out.log_sigma_global)?)?;
        total = (total + focal.affine(cfg.focal_weight, 0.0)?)?;
        total = (total + lap.affine(cfg.laplace_weight, 0.0)?)?;
    }
    if let Some(score) = s.meta.score {
        let target = Tensor::new(&[score], &dev)?;
        total = (total + score_mse(&out.score, &target)?.affine(cfg.score_weight, 0.0)?)?;
    }
    let map_pred = s.heatmap.as_ref().map(|_| out.heatmap.flatten_all()?.to_vec1::<f32>()).transpose()?;
    let score_pred = out.score.flatten_all()?.to_vec1::<f32>()?[0];
    Ok(Losses { total, map_pred, score_pred })
}

/// Dev loss and metrics (at the stored ground-truth resolution).
pub fn validate(heads: &Heads, dev: &ShardSet, cfg: &TrainConfig) -> Result<(f64, Option<f64>, Option<f64>)> {
    let mut acc = MetricsAccumulator::new();
    let mut loss = 0.0;
    for s in &dev.samples {
        let l = sample_loss(heads, s, (dev.llm_width, dev.tokens_per_tile), cfg)?;
        loss += l.total.to_scalar::<f32>()? as f64;
        if let (Some(pred), Some(gt)) = (&l.map_pred, &s.heatmap) {
            let pred = ndarray::ArrayView2::from_shape(gt.dim(), pred).expect("same size");
            acc.add_map(pred, gt.view());
        }
        if let Some(gt) = s.meta.score {
            acc.add_score(l.score_pred, gt);
        }
    }
    let summary = acc.summary();
    Ok((loss / dev.samples.len().max(1) as f64, summary.cc, summary.plcc))
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to 0.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let warm = ((cfg.warmup * total as f64).ceil() as usize).max(1);
    if step < warm {
        return cfg.lr * (step + 1) as f64 / warm as f64;
    }
    let progress = (step - warm) as f64 / (total.saturating_sub(warm)).max(1) as f64;
    cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[allow(clippy::too_many_arguments)]
/// Trains `heads_config` (or resumes) and writes the best heads to `out`. `on_step(epoch, step, total,
/// loss)` reports progress; `on_epoch` sees each epoch's stats after its checkpoint is written and may
/// stop the run there (`Break`), as an interruption would: `--resume` continues it.
///
/// Longer than 80 lines on purpose: the setup checks, then one epoch loop that reads in order (shuffle,
/// batches with their loss and optimiser step, dev loss, checkpoint, best heads, the caller's stop),
/// every step of it updating the one resumable state that `checkpoint.rs` saves.
pub fn train(
    train_set: &ShardSet,
    dev_set: Option<&ShardSet>,
    heads_config: HeadsConfig,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    mut on_step: impl FnMut(usize, usize, usize, f64),
    mut on_epoch: impl FnMut(&EpochStats) -> ControlFlow<()>,
) -> Result<TrainReport> {
    let (w, t) = (train_set.llm_width, train_set.tokens_per_tile);
    if heads_config.llm_width != w || heads_config.tokens_per_tile() != t {
        return Err(TrainError::Setup(format!(
            "heads config is for width {} / {} tokens per tile, the shards hold {w} / {t}",
            heads_config.llm_width,
            heads_config.tokens_per_tile()
        )));
    }
    if let Some(dev) = dev_set {
        if (dev.llm_width, dev.tokens_per_tile) != (w, t) {
            return Err(TrainError::Setup("dev shards come from another model than the training shards".into()));
        }
    }
    let n = train_set.samples.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size.max(1));
    let total_steps = steps_per_epoch * cfg.epochs;
    let params = AdamWParams { lr: cfg.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: cfg.weight_decay };
    let (heads, mut state, mut opt) = if resume && checkpoint::exists(out) {
        let (heads, state, moments, step) = checkpoint::load(out, cfg, w, t)?;
        let mut opt = AdamW::new(heads.trainable(), params)?;
        opt.restore(step, &moments)?;
        tracing::info!(epochs_done = state.epochs_done, step, "resuming");
        (heads, state, opt)
    } else {
        let heads = Heads::init(heads_config.clone(), cfg.seed)?;
        let rows: Vec<Vec<f32>> = train_set.samples.iter().map(|s| shards::to_f32(&s.score_hidden)).collect();
        heads.fit_score_statistics(rows.iter().map(Vec::as_slice))?;
        let opt = AdamW::new(heads.trainable(), params)?;
        (heads, TrainState { epochs_done: 0, step: 0, best_dev_loss: None, config: cfg.clone(), heads: heads_config }, opt)
    };
    let mut report = TrainReport { train_samples: n, dev_samples: dev_set.map_or(0, |d| d.samples.len()), ..Default::default() };
    let mut step_time = Duration::ZERO;
    let mut steps_timed = 0usize;
    for epoch in state.epochs_done..cfg.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(cfg.seed.wrapping_add(epoch as u64 + 1)).shuffle(&mut order);
        let mut epoch_loss = 0.0;
        let epoch_started = (step_time, steps_timed);
        for batch in order.chunks(cfg.batch_size.max(1)) {
            let started = Instant::now();
            opt.set_learning_rate(learning_rate(cfg, state.step, total_steps));
            let mut sum: Option<Tensor> = None;
            for &i in batch {
                let l = sample_loss(&heads, &train_set.samples[i], (w, t), cfg)?.total;
                sum = Some(match sum {
                    None => l,
                    Some(s) => (s + l)?,
                });
            }
            let loss = sum.expect("non-empty batch").affine(1.0 / batch.len() as f64, 0.0)?;
            opt.backward_step(&loss)?;
            let value = loss.to_scalar::<f32>()? as f64;
            epoch_loss += value * batch.len() as f64;
            state.step += 1;
            step_time += started.elapsed();
            steps_timed += 1;
            on_step(epoch, state.step, total_steps, value);
        }
        let mut stats = EpochStats {
            epoch,
            train_loss: epoch_loss / n.max(1) as f64,
            mean_step_ms: (step_time - epoch_started.0).as_secs_f64() * 1e3 / (steps_timed - epoch_started.1).max(1) as f64,
            ..Default::default()
        };
        let improved = match dev_set {
            Some(dev) => {
                let (loss, cc, plcc) = validate(&heads, dev, cfg)?;
                (stats.dev_loss, stats.dev_cc, stats.dev_plcc) = (Some(loss), cc, plcc);
                state.best_dev_loss.is_none_or(|best| loss < best)
            }
            None => true,
        };
        if improved {
            state.best_dev_loss = stats.dev_loss.or(state.best_dev_loss);
            heads.save(out)?;
            report.best_epoch = Some(epoch);
        }
        state.epochs_done = epoch + 1;
        checkpoint::save(out, &heads, &opt, &state)?;
        let flow = on_epoch(&stats);
        report.epochs.push(stats);
        if flow.is_break() {
            break;
        }
    }
    report.steps = state.step;
    report.mean_step_ms = step_time.as_secs_f64() * 1e3 / steps_timed.max(1) as f64;
    let finished = state.epochs_done == cfg.epochs;
    if let (Some(dev), true) = (dev_set, finished && cfg.calibration_steps > 0 && out.exists()) {
        let best = Heads::load(out, w, t)?;
        fit_calibration(&best, dev, cfg.calibration_steps)?;
        best.save(out)?;
    }
    Ok(report)
}

/// Refits `(a, b, c)` of the calibration on the labelled dev samples (score MSE, everything else fixed).
pub fn fit_calibration(heads: &Heads, dev: &ShardSet, steps: usize) -> Result<()> {
    let (w, t) = (dev.llm_width, dev.tokens_per_tile);
    let (mut tokens, mut maps, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for s in dev.samples.iter().filter(|s| s.meta.score.is_some()) {
        let (ow, oh) = loss_size(s);
        let out = heads.forward_tensors(&heads.input_tensors(&heads_input(s, &s.dense(), w, t, ow, oh))?)?;
        tokens.push(out.s_token.flatten_all()?.to_vec1::<f32>()?[0]);
        maps.push(out.s_map.flatten_all()?.to_vec1::<f32>()?[0]);
        targets.push(s.meta.score.expect("filtered"));
    }
    if targets.len() < 2 {
        return Ok(());
    }
    let dev_cpu = Device::Cpu;
    let (tok, map, tgt) = (Tensor::new(tokens, &dev_cpu)?, Tensor::new(maps, &dev_cpu)?, Tensor::new(targets, &dev_cpu)?);
    let vars: Vec<_> = heads.trainable().into_iter().filter(|(name, _)| name.starts_with("calibration.")).collect();
    let mut opt = AdamW::new(vars, AdamWParams { lr: 0.05, weight_decay: 0.0, ..Default::default() })?;
    for _ in 0..steps {
        let pred = heads.model().calibration.forward(&tok, &map)?;
        opt.backward_step(&score_mse(&pred, &tgt)?)?;
    }
    Ok(())
}
