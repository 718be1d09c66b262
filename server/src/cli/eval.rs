//! `heie eval IMAGE…`: streams the explanation, then writes a heatmap, an overlay and a JSON per image.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::calibration::Calibration;
use crate::engine::Sampling;
use crate::pipeline::events::EvalEvent;
use crate::pipeline::heatmap::{gray_png, overlay_png, to_gray_png};
use crate::pipeline::image_input::load_path;
use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

use super::metadata::write_into_file;
use super::model_args::ModelArgs;
use super::report::{eval_report, region_mask_name, stale_region_masks};
use super::summary::{result_line, score_record};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Images to judge (PNG, JPEG or WebP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder for NAME.heatmap.png, NAME.overlay.png, NAME.json and NAME.region-<id>.png (each region's mask).
    #[arg(long, short, default_value = "heie-out")]
    pub out: PathBuf,
    /// Print one JSON object per image on stdout instead of streaming the explanation.
    #[arg(long)]
    pub json: bool,
    /// Token cap of each generated section.
    #[arg(long, default_value_t = 192)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy, deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the sampler (with --temperature > 0).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the description and regions; a short analysis and the score only.
    #[arg(long)]
    pub no_explanation: bool,
    /// The text-to-image prompt the images were generated from (context for the judge).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Also write score, mode and a one-line summary into each image file (key `heie`: PNG iTXt,
    /// JPEG comment, WebP XMP), pixels untouched; see server/src/cli/metadata/README.md.
    #[arg(long)]
    pub write_metadata: bool,
    /// A calibration file from `heie calibrate`: every primary score becomes the calibrated one (the
    /// raw score stays in the JSON as `uncalibrated`).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
}

/// Runs the command; returns how many images failed.
pub fn run(args: EvalArgs) -> anyhow::Result<usize> {
    // Cheap checks first, so a typo fails before a model loads.
    for path in &args.images {
        if !path.is_file() {
            anyhow::bail!("image {} does not exist", path.display());
        }
    }
    let options = EvalOptions {
        explanation: !args.no_explanation,
        max_tokens_per_section: args.max_tokens,
        sampling: Sampling { temperature: args.temperature, seed: args.seed },
        max_tiles: args.model.max_tiles,
        generation_prompt: args.prompt.clone(),
        ..EvalOptions::default()
    }
    .validated()?;
    let calibration = match &args.calibration {
        Some(path) => Some(std::sync::Arc::new(Calibration::load(path).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let evaluator = args.model.start_calibrated_evaluator(1, 1, calibration)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;

    let progress = if args.images.len() > 1 {
        let bar = ProgressBar::new(args.images.len() as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("static template"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut failures = 0;
    for path in &args.images {
        progress.set_message(path.display().to_string());
        if let Err(e) = eval_one(&evaluator, path, &options, &args) {
            progress.suspend(|| eprintln!("heie: {}: {e:#}", path.display()));
            failures += 1;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(failures)
}

fn eval_one(evaluator: &Evaluator, path: &Path, options: &EvalOptions, args: &EvalArgs) -> anyhow::Result<()> {
    let image = load_path(path, args.model.max_pixels)?;
    let (_, events) = evaluator.evaluate(&image, options.clone())?;
    let stream = !args.json;
    let mut stdout = std::io::stdout();
    if stream {
        writeln!(stdout, "==> {}", path.display())?;
    }
    let result = EvalResult::collect(events, |event| {
        if let (true, EvalEvent::TextDelta { text, .. }) = (stream, event) {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
        }
    });
    if let Some(e) = &result.error {
        anyhow::bail!("{e}");
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let heatmap_file = args.out.join(format!("{stem}.heatmap.png"));
    let overlay_file = args.out.join(format!("{stem}.overlay.png"));
    let json_file = args.out.join(format!("{stem}.json"));
    if let Some(heatmap) = result.heatmap() {
        std::fs::write(&heatmap_file, to_gray_png(&heatmap.map))?;
        std::fs::write(&overlay_file, overlay_png(&image, &heatmap.map, 0.5))?;
    }
    let mut mask_names = Vec::with_capacity(result.regions.len());
    for region in &result.regions {
        let name = region_mask_name(&stem, region.id);
        let (width, height) = region.mask.size();
        std::fs::write(args.out.join(&name), gray_png(width, height, region.mask.to_gray()))?;
        mask_names.push(name);
    }
    // Judged again with fewer regions: the masks the earlier run listed in NAME.json and this one has
    // not would otherwise sit beside the new report as if they belonged to it.
    let previous = std::fs::read(&json_file).ok().and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    for name in previous.map(|p| stale_region_masks(&p, &stem, &mask_names)).unwrap_or_default() {
        match std::fs::remove_file(args.out.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot remove the earlier run's {name}"))),
        }
    }
    let report = eval_report(path, &image, &result, &heatmap_file, &overlay_file, &mask_names);
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&json_file, &text)?;
    if args.write_metadata {
        let record = score_record(&result).context("no score to write into the image")?;
        write_into_file(path, &record).context("writing the score into the image")?;
    }
    if stream {
        writeln!(
            stdout,
            "\n\n{} · wrote {}, {}, {}{}",
            result_line(&result),
            heatmap_file.display(),
            overlay_file.display(),
            json_file.display(),
            if args.write_metadata { format!(" and the score into {}", path.display()) } else { String::new() }
        )?;
    } else {
        writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}
