//! `heie extract --data … --out SHARDS`: engine captures and labels into feature shards (resumable).

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data;
use crate::pipeline::Evaluator;
use crate::training::extract::{extract, ExtractConfig};

use super::data_args::DataArgs;
use super::model_args::ModelArgs;

#[derive(Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Shard folder; samples already in it are skipped (resume).
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub shard_size: usize,
    /// Longer side of the stored ground-truth maps (the training loss resolution).
    #[arg(long, default_value_t = 128)]
    pub gt_side: usize,
    /// Images evaluated concurrently (the engine batches them; also sets its slots).
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    /// Token cap per generated section.
    #[arg(long, default_value_t = 192)]
    pub max_tokens: u32,
    /// Skip the description and regions sections (faster; the [MAP] states then follow less text).
    #[arg(long)]
    pub no_explanation: bool,
    /// Feed each sample's reference chain of thought (Expl-AIGI-Eval's answer, `ID.cot.txt` of a
    /// folder) instead of generating one, as HEIE trains with the ground-truth CoT in context; samples
    /// without one are generated. A reference that is not in the HEIE format skips its sample.
    #[arg(long)]
    pub teacher_forcing: bool,
}

pub fn run(args: ExtractArgs) -> anyhow::Result<usize> {
    let spec = args.data.spec()?;
    if args.model.heads.is_some() {
        anyhow::bail!("extract captures the language model's outputs; --heads is not used here");
    }
    if args.shard_size == 0 || !(8..=4096).contains(&args.gt_side) || args.parallel == 0 {
        anyhow::bail!("--shard-size and --parallel must be positive and --gt-side in 8..=4096");
    }
    let options = args.model.greedy_options(!args.no_explanation, args.max_tokens)?;
    let engine = args.model.start_engine(args.parallel, args.parallel as usize * 2)?;
    let evaluator = Evaluator::new(engine)?;
    let config = ExtractConfig {
        out: args.out.clone(),
        shard_size: args.shard_size,
        gt_side: args.gt_side,
        parallel: args.parallel as usize,
        max_pixels: args.model.max_pixels,
        options,
        teacher_forcing: args.teacher_forcing,
    };
    let samples = data::open(&spec)?.take(args.data.limit.unwrap_or(usize::MAX));
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} images {per_sec} {msg}").expect("static template"));
    let report = extract(&evaluator, samples, &config, |id, _| {
        bar.set_message(id.to_string());
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let forcing = if args.teacher_forcing {
        format!(
            "; {} teacher-forced, {} generated (no reference)",
            report.teacher_forced, report.generated_without_reference
        )
    } else {
        String::new()
    };
    eprintln!(
        "heie extract: {} extracted ({:.2} images/s), {} already in {}, {} skipped{}{forcing}",
        report.extracted,
        report.images_per_second(),
        report.already_done,
        args.out.display(),
        report.skipped.len(),
        if report.skipped.is_empty() { String::new() } else { format!(" (reasons in {})", args.out.join("skipped.tsv").display()) }
    );
    Ok(0)
}
