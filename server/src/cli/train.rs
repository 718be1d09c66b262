//! `heie train --shards … --out heads.safetensors`: fits the heads on extracted features.

use std::path::PathBuf;

use clap::Args;
use heie_heads::{FusionVariant, HeadsConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::training::config::TrainConfig;
use crate::training::train::{train, ShardSet};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Shard folder of the training split (from `heie extract`).
    #[arg(long)]
    pub shards: PathBuf,
    /// Shard folder of the dev split: validation every epoch, best checkpoint, calibration.
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Output heads file (the best epoch); OUT.last.safetensors and OUT.state.json are kept for --resume.
    #[arg(long, short)]
    pub out: PathBuf,
    /// A heads config JSON (widths, layers, fusion); default: the paper's sizes for the shards' model.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the config's mapper width.
    #[arg(long)]
    pub hidden_width: Option<usize>,
    /// Override the config's two-way MLP width.
    #[arg(long)]
    pub mlp_dim: Option<usize>,
    /// Override the attention heads.
    #[arg(long)]
    pub attention_heads: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.03)]
    pub warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight of the score MSE against the heatmap losses (focal + Laplace, weight 1 each).
    #[arg(long, default_value_t = 1.0)]
    pub score_weight: f64,
    /// Steps of the calibration refit on dev after training (0 = keep the trained calibration).
    #[arg(long, default_value_t = 300)]
    pub calibration_steps: usize,
    /// Continue from OUT.last.safetensors / OUT.state.json.
    #[arg(long)]
    pub resume: bool,
    /// Fixed local weight instead of the σ-adaptive fusion (an ablation row of the paper).
    #[arg(long)]
    pub fixed_fusion: Option<f32>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<usize> {
    if args.epochs == 0 || args.batch_size == 0 || args.lr.is_nan() || args.lr <= 0.0 || !(0.0..1.0).contains(&args.warmup) {
        anyhow::bail!("--epochs and --batch-size must be positive, --lr > 0 and --warmup in [0, 1)");
    }
    let train_set = ShardSet::load(&args.shards)?;
    let dev_set = args.dev.as_deref().map(ShardSet::load).transpose()?;
    let grid = (train_set.tokens_per_tile as f64).sqrt().round() as usize;
    if grid * grid != train_set.tokens_per_tile {
        anyhow::bail!("{} tokens per tile is not a square token grid", train_set.tokens_per_tile);
    }
    let mut config = match &args.config {
        Some(path) => HeadsConfig::from_json(&std::fs::read_to_string(path)?)?,
        None => HeadsConfig::new(train_set.llm_width, grid),
    };
    if let Some(v) = args.hidden_width {
        config.hidden_width = v;
    }
    if let Some(v) = args.mlp_dim {
        config.mlp_dim = v;
    }
    if let Some(v) = args.attention_heads {
        config.attention_heads = v;
    }
    if let Some(w) = args.fixed_fusion {
        config.fusion = FusionVariant::Fixed { local_weight: w };
    }
    config.validate()?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        seed: args.seed,
        score_weight: args.score_weight,
        calibration_steps: args.calibration_steps,
        ..TrainConfig::default()
    };
    if args.resume && !crate::training::checkpoint::exists(&args.out) {
        tracing::warn!(out = %args.out.display(), "--resume: no checkpoint next to the output yet, starting from the beginning");
    }
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg}").expect("static template"));
    let report = train(
        &train_set,
        dev_set.as_ref(),
        config,
        &cfg,
        &args.out,
        args.resume,
        |epoch, step, total, loss| {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
        },
        |e| {
            bar.suspend(|| {
                let f = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "–".into());
                eprintln!(
                    "epoch {}: train loss {:.4}, dev loss {}, dev CC {}, dev PLCC {}, {:.1} ms/step",
                    e.epoch + 1,
                    e.train_loss,
                    f(e.dev_loss),
                    f(e.dev_cc),
                    f(e.dev_plcc),
                    e.mean_step_ms
                )
            });
            std::ops::ControlFlow::Continue(())
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "heie train: {} samples, {} steps ({:.1} ms/step), best epoch {}, wrote {}",
        report.train_samples,
        report.steps,
        report.mean_step_ms,
        report.best_epoch.map(|e| (e + 1).to_string()).unwrap_or_else(|| "–".into()),
        args.out.display()
    );
    Ok(0)
}
