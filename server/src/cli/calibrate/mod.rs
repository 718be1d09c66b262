//! `heie calibrate`: fits a calibration to one user's keep/reject decisions — judging the images of a
//! keep folder and a reject folder, or reading a labelled `heie-score` CSV — prints how the raw and
//! the calibrated score separate them on held-out images, and writes the calibration file that
//! `heie serve/eval --calibration` apply.

mod judge;
mod score_csv;

use std::path::PathBuf;

use clap::Args;

use crate::calibration::file::{CalibrationFile, FittedWith};
use crate::calibration::fit::{fit_calibration, Example, Report};
use crate::pipeline::summary::mode_name;

use super::model_args::ModelArgs;

pub use judge::features_of;
pub use score_csv::{parse_labelled, LabelledRows};

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Folder of images you keep (PNG, JPEG, WebP).
    #[arg(long, value_name = "DIR", required_unless_present = "labels", requires = "reject")]
    pub keep: Option<PathBuf>,
    /// Folder of images you reject.
    #[arg(long, value_name = "DIR", required_unless_present = "labels", requires = "keep")]
    pub reject: Option<PathBuf>,
    /// Instead of judging folders: the CSV `heie-score` wrote, with a keep/reject column added
    /// (see --label-column); nothing is judged again.
    #[arg(long, value_name = "CSV", conflicts_with_all = ["keep", "reject"])]
    pub labels: Option<PathBuf>,
    /// The column of --labels holding keep or reject (also 1/0, yes/no); rows left empty are skipped.
    #[arg(long, default_value = "label", requires = "labels")]
    pub label_column: String,
    /// The calibration file to write (JSON, format heie-calibration/1).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Token cap of each generated section while judging.
    #[arg(long, default_value_t = 192)]
    pub max_tokens: u32,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Runs the command; returns how many images failed to be judged (they are left out of the fit).
pub fn run(args: CalibrateArgs) -> anyhow::Result<usize> {
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        anyhow::ensure!(parent.is_dir(), "--out {}: folder {} does not exist", args.out.display(), parent.display());
    }
    let (examples, failures, fitted_with) = match &args.labels {
        Some(csv) => from_csv(&args, csv)?,
        None => from_folders(&args)?,
    };
    let fitted = fit_calibration(&examples).map_err(anyhow::Error::msg)?;
    print_report(&fitted.report);
    let file = CalibrationFile::new(&fitted, fitted_with);
    file.save(&args.out).map_err(anyhow::Error::msg)?;
    println!("wrote {} (apply it with heie serve --calibration or heie eval --calibration)", args.out.display());
    if failures > 0 {
        eprintln!("heie: {failures} image(s) could not be judged and were left out");
    }
    Ok(failures)
}

fn from_folders(args: &CalibrateArgs) -> anyhow::Result<(Vec<Example>, usize, FittedWith)> {
    let (keep, reject) = (args.keep.as_ref().expect("clap requires it"), args.reject.as_ref().expect("clap requires it"));
    let mut images = judge::labelled_images(keep, true)?;
    let kept = images.len();
    images.extend(judge::labelled_images(reject, false)?);
    let options = args.model.greedy_options(true, args.max_tokens)?;
    let evaluator = args.model.start_evaluator(1, 1)?;
    println!("judging {} images ({kept} kept, {} rejected)", images.len(), images.len() - kept);
    let (examples, failures) = judge::judge(&evaluator, &options, args.model.max_pixels, &images);
    let info = evaluator.info();
    let fitted_with = FittedWith {
        llm: info.llm_name.clone(),
        mmproj: info.mmproj_name.clone(),
        heads: args.model.heads.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()),
        mode: mode_name(evaluator.output_mode()).to_string(),
    };
    Ok((examples, failures.len(), fitted_with))
}

fn from_csv(args: &CalibrateArgs, csv: &std::path::Path) -> anyhow::Result<(Vec<Example>, usize, FittedWith)> {
    let rows = score_csv::read_labelled(csv, &args.label_column).map_err(anyhow::Error::msg)?;
    let kept = rows.examples.iter().filter(|e| e.kept).count();
    println!(
        "read {} labelled rows ({kept} kept, {} rejected; {} unlabelled and {} without a score skipped)",
        rows.examples.len(),
        rows.examples.len() - kept,
        rows.unlabelled,
        rows.unscored
    );
    // The CSV does not name the model; an empty name means "not known" and is never warned about.
    let fitted_with = FittedWith { llm: String::new(), mmproj: String::new(), heads: None, mode: rows.mode.clone().unwrap_or_default() };
    Ok((rows.examples, 0, fitted_with))
}

fn print_report(report: &Report) {
    let (e, r) = (&report.examples, &report.held_out);
    println!("fitted on {} images, measured on {} held-out images (every 4th of each label by file name):", e.train, e.held_out);
    println!("                AUC    accuracy  (threshold from the training part)");
    println!("  raw score     {:.3}  {:.3}     (keep at >= {:.3})", r.auc_before, r.accuracy_before, r.threshold_before);
    println!("  calibrated    {:.3}  {:.3}     (keep at >= {:.3})", r.auc_after, r.accuracy_after, r.threshold_after);
}
