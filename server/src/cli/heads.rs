//! `heie heads init`: writes freshly initialised (seeded) heads, so the trained-mode path runs before
//! any training.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use heie_heads::{Heads, HeadsConfig};

#[derive(Args, Debug)]
pub struct HeadsArgs {
    #[command(subcommand)]
    pub command: HeadsCommand,
}

#[derive(Subcommand, Debug)]
pub enum HeadsCommand {
    /// Write a seeded, untrained heads file.
    Init(InitArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Heads config (JSON, see heads/README.md); without it, defaults for --llm-width and --token-grid.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The LLM's hidden width (1536 for InternVL3-2B, 3584 for 8B).
    #[arg(long, required_unless_present = "config")]
    pub llm_width: Option<usize>,
    /// Side of the token grid of one tile (16 for InternVL3: 256 tokens per tile).
    #[arg(long, default_value_t = 16)]
    pub token_grid: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (safetensors; the config is stored in its metadata).
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: HeadsArgs) -> anyhow::Result<usize> {
    match args.command {
        HeadsCommand::Init(init) => {
            let config = match (&init.config, init.llm_width) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                    HeadsConfig::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                }
                (None, Some(width)) => HeadsConfig::new(width, init.token_grid),
                (None, None) => anyhow::bail!("give --config or --llm-width"),
            };
            let heads = Heads::init(config, init.seed)?;
            heads.save(&init.out)?;
            eprintln!("heie: wrote untrained heads to {}", init.out.display());
            Ok(0)
        }
    }
}
