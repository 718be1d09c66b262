//! The `heie` command line: one file per subcommand.

pub mod data_args;
pub mod bench;
pub mod calibrate;
pub mod default_model;
pub mod download_progress;
pub mod evaluate;
pub mod extract;
pub mod env_vars;
pub mod eval;
pub mod heads;
pub mod metadata;
pub mod model_args;
pub mod report;
pub mod summary;
pub mod synth;
pub mod train;
pub mod serve;

use clap::{FromArgMatches as _, Parser, Subcommand};

/// HEIE: where an AI-generated image is implausible (heatmap), how plausible it is (score), and why
/// (a streamed chain of thought), from an InternVL model through llama.cpp.
#[derive(Parser, Debug)]
#[command(name = "heie", version, about)]
pub struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    /// The level comes from HEIE_LOG (e.g. `info`, `heie_server=debug`).
    #[arg(long, global = true, env = "HEIE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process arguments with every flag's environment variable (see `env_vars`); prints
    /// help or the error and exits on bad input, like clap's own `parse`.
    pub fn parse_with_env() -> Cli {
        let matches = env_vars::command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// How the process log is written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Judge images: stream the explanation, write heatmap, overlay and JSON per image.
    Eval(eval::EvalArgs),
    /// Manage trained heads files.
    Heads(heads::HeadsArgs),
    /// Serve the gRPC API (heie.v1.Evaluator, health, reflection) and optional Prometheus metrics.
    Serve(serve::ServeArgs),
    /// Measure the service: images/s and time to first token under concurrent clients at several --parallel.
    Bench(bench::BenchArgs),
    /// Write a synthetic data set with exact defect masks (train/dev/test plain folders).
    Synth(synth::SynthArgs),
    /// Run the engine on a labelled split and store features and labels in shards for training.
    Extract(extract::ExtractArgs),
    /// Fit heads on extracted shards (paper losses, AdamW, warm-up + cosine, best checkpoint on dev).
    Train(train::TrainArgs),
    /// Print and write the paper's metrics for zero-shot, heads files, or another system's outputs.
    Evaluate(evaluate::EvaluateArgs),
    /// Fit a calibration to your own keep/reject decisions (two folders, or a labelled heie-score CSV).
    Calibrate(calibrate::CalibrateArgs),
}
