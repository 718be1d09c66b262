//! `heie evaluate --data …`: the paper's metrics table for zero-shot, heads files and a constant
//! baseline (one engine pass), or for another system's outputs (`--predictions DIR`, no model needed).
//!
//! Every heads file runs through `Heads::forward` on the same captures (what the pipeline's trained mode
//! runs), rendered directly at the comparison resolution; the engine runs once, zero-shot.

use std::path::PathBuf;

use clap::Args;
use heie_heads::Heads;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data;
use crate::pipeline::Evaluator;
use crate::training::evaluate::{evaluate_pipeline, evaluate_predictions, markdown, write_report, Systems};

use super::data_args::DataArgs;
use super::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// More heads files to compare with the one given by --heads, each `FILE` or `NAME=FILE` (the row's
    /// name; default the file stem), e.g. `--compare init=init.safetensors`.
    #[arg(long)]
    pub compare: Vec<String>,
    /// Add the zero-shot row (always on when neither --heads nor --compare is given).
    #[arg(long)]
    pub zero_shot: bool,
    /// Add a constant-prediction row (empty heatmap, the split's mean score).
    #[arg(long)]
    pub constant: bool,
    /// Score another system's outputs instead: DIR/ID.heatmap.png (8/16-bit) and DIR/scores.csv.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Side of the square the maps are compared at (512: RichHF-18K; 384: the RAHF reimplementation).
    #[arg(long, default_value_t = 512)]
    pub resolution: usize,
    /// Writes REPORT.json and REPORT.md.
    #[arg(long, short, default_value = "heie-evaluate")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    #[arg(long, default_value_t = 192)]
    pub max_tokens: u32,
    #[arg(long)]
    pub no_explanation: bool,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<usize> {
    if !(8..=4096).contains(&args.resolution) {
        anyhow::bail!("--resolution must be 8..=4096, got {}", args.resolution);
    }
    let spec = args.data.spec()?;
    let samples = data::open(&spec)?.take(args.data.limit.unwrap_or(usize::MAX));
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} images {per_sec} {msg}").expect("static template"));
    let report = match &args.predictions {
        Some(dir) => {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "predictions".into());
            evaluate_predictions(samples, dir, &name, args.resolution)?
        }
        None => {
            let options = args.model.greedy_options(!args.no_explanation, args.max_tokens)?;
            let engine = args.model.start_engine(args.parallel, args.parallel as usize * 2)?;
            let info = engine.info().clone();
            let mut heads = Vec::new();
            let primary = args.model.heads.as_ref().map(|p| p.to_string_lossy().into_owned());
            for spec in primary.iter().chain(&args.compare) {
                let (name, path) = match spec.split_once('=') {
                    Some((n, p)) => (n.to_string(), PathBuf::from(p)),
                    None => {
                        let p = PathBuf::from(spec);
                        (p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.clone()), p)
                    }
                };
                let h = Heads::load(&path, info.n_embd, info.tokens_per_tile)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                heads.push((name, h));
            }
            let systems = Systems { zero_shot: args.zero_shot || heads.is_empty(), heads, constant: args.constant };
            let evaluator = Evaluator::new(engine)?;
            evaluate_pipeline(&evaluator, samples, &systems, &options, args.resolution, args.parallel as usize, args.model.max_pixels, |id, _| {
                bar.set_message(id.to_string());
                bar.inc(1);
            })
        }
    };
    bar.finish_and_clear();
    write_report(&report, &args.out)?;
    println!("{}", markdown(&report));
    for (id, reason) in &report.skipped {
        eprintln!("heie evaluate: skipped {id}: {reason}");
    }
    eprintln!(
        "heie evaluate: {} images in {:.1} s; wrote {} and {}",
        report.images,
        report.seconds,
        args.out.with_extension("json").display(),
        args.out.with_extension("md").display()
    );
    Ok(0)
}
