//! `heie synth --out DIR`: a synthetic data set with exact defect masks (see `data/synth.rs`).

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::synth::{generate, DefectKind, SynthConfig};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder; gets train/, dev/ and test/ plain-folder splits.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Source images to corrupt (PNG, JPEG, WebP); procedurally drawn scenes when absent.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Number of images over all splits.
    #[arg(long, default_value_t = 500)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of drawn scenes; longer side of source images after scaling down.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    #[arg(long, default_value_t = 0.1)]
    pub dev_fraction: f32,
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f32,
    /// Share of images without any defect (score 1, empty heatmap).
    #[arg(long, default_value_t = 0.2)]
    pub clean_share: f32,
    /// Defect kinds to draw from (comma-separated); default all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<DefectKind>,
}

pub fn run(args: SynthArgs) -> anyhow::Result<usize> {
    for (name, v) in [("--dev-fraction", args.dev_fraction), ("--test-fraction", args.test_fraction), ("--clean-share", args.clean_share)] {
        if !(0.0..=1.0).contains(&v) {
            anyhow::bail!("{name} must be in [0, 1], got {v}");
        }
    }
    if args.dev_fraction + args.test_fraction > 1.0 {
        anyhow::bail!("--dev-fraction + --test-fraction exceed 1");
    }
    if !(16..=4096).contains(&args.size) {
        anyhow::bail!("--size must be 16..=4096, got {}", args.size);
    }
    let config = SynthConfig {
        count: args.count,
        seed: args.seed,
        size: args.size,
        source: args.source.clone(),
        dev_fraction: args.dev_fraction,
        test_fraction: args.test_fraction,
        clean_share: args.clean_share,
        kinds: if args.kinds.is_empty() { DefectKind::ALL.to_vec() } else { args.kinds.clone() },
    };
    let bar = ProgressBar::new(args.count as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} images {per_sec}").expect("static template"));
    let (train, dev, test) = generate(&config, &args.out, || bar.inc(1))?;
    bar.finish_and_clear();
    eprintln!("heie synth: wrote {train} train, {dev} dev, {test} test images to {}", args.out.display());
    Ok(0)
}
