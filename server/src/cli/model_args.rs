//! Model flags shared by every command that loads the model (`eval`, `serve`, `bench`, ...).

use std::path::PathBuf;

use clap::Args;

use std::sync::Arc;

use crate::calibration::Calibration;
use crate::engine::{Engine, EngineConfig, Sampling, SpeedUps, DEFAULT_IMAGE_CACHE_MB};
use crate::pipeline::summary::mode_name;
use crate::pipeline::trained::TrainedHeads;
use crate::pipeline::{EvalOptions, Evaluator};
use crate::pipeline::image_input::DEFAULT_MAX_PIXELS;
use crate::pipeline::options::MAX_TILES;

use super::default_model;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// InternVL text model (GGUF). Absent: InternVL3-2B-Instruct Q8_0 from the Hugging Face cache
    /// (downloaded on first use).
    #[arg(long, env = "HEIE_MODEL")]
    pub model: Option<PathBuf>,
    /// The model's vision projector (mmproj GGUF); required with --model.
    #[arg(long, env = "HEIE_MMPROJ")]
    pub mmproj: Option<PathBuf>,
    /// Layers offloaded to the GPU (-1 = all; ignored by CPU builds).
    #[arg(long, env = "HEIE_N_GPU_LAYERS", default_value_t = -1, allow_negative_numbers = true)]
    pub n_gpu_layers: i32,
    /// CPU threads for llama.cpp (default: all cores).
    #[arg(long, env = "HEIE_THREADS")]
    pub threads: Option<i32>,
    /// KV cells per concurrent sequence (a 6-tile image needs about 2,400 with the explanation).
    #[arg(long, env = "HEIE_CTX_SIZE", default_value_t = 4096)]
    pub ctx_size: u32,
    /// Most tiles an image is cut into (InternVL's max_num), plus a thumbnail when more than one.
    #[arg(long, env = "HEIE_MAX_TILES", default_value_t = 6)]
    pub max_tiles: u32,
    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "HEIE_MAX_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Tokens per llama_decode call (prefill chunk).
    #[arg(long, env = "HEIE_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,
    /// Trained HEIE heads (safetensors from `heie train` or `heie heads init`): heatmap and score then
    /// come from them (mode `trained`); without, zero-shot.
    #[arg(long, env = "HEIE_HEADS")]
    pub heads: Option<PathBuf>,
    /// Switch engine optimisations off, to measure them (`heie bench` does this itself): any of
    /// batched-text, prefix-cache, batched-vision, batched-image-prefill, per-sequence-kv, or `all`.
    #[arg(long = "disable-speedup", value_delimiter = ',', value_name = "NAME")]
    pub disable_speedups: Vec<String>,
    /// Flash attention: auto (off when the model runs on the CPU, where it measured slower at 1, 4
    /// and 16 requests in flight; llama.cpp's choice on a GPU), on or off.
    #[arg(long, env = "HEIE_FLASH_ATTN", value_enum, default_value_t = FlashAttn::Auto)]
    pub flash_attn: FlashAttn,
    /// Memory for images already judged, in MiB: an image judged again after the same prompt takes its
    /// KV cells and tile features from here and skips the vision tower and the image's prefill
    /// (least recently used first; 0 = off). An InternVL3-2B image of 3 tiles takes ~28 MiB.
    #[arg(long, env = "HEIE_IMAGE_CACHE_MB", default_value_t = DEFAULT_IMAGE_CACHE_MB)]
    pub image_cache_mb: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashAttn {
    Auto,
    On,
    Off,
}

impl ModelArgs {
    /// Starts the engine alone (callers that pair it with several heads, or none).
    pub fn start_engine(&self, slots: u32, max_queue: usize) -> anyhow::Result<Arc<Engine>> {
        Ok(Arc::new(Engine::start(&self.engine_config(slots, max_queue)?)?))
    }

    /// Greedy options for batch jobs (extraction, evaluation): the same image always gives the same
    /// features, explanation and scores.
    pub fn greedy_options(&self, explanation: bool, max_tokens_per_section: u32) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            explanation,
            max_tokens_per_section,
            sampling: Sampling { temperature: 0.0, seed: 0 },
            max_tiles: self.max_tiles,
            ..EvalOptions::default()
        }
        .validated()?)
    }

    /// Starts the engine and the evaluator (with the heads, when given): what every command needs.
    pub fn start_evaluator(&self, slots: u32, max_queue: usize) -> anyhow::Result<Evaluator> {
        self.start_calibrated_evaluator(slots, max_queue, None)
    }

    /// As [`ModelArgs::start_evaluator`], with a user's calibration applied to every primary score
    /// (`--calibration` of `eval` and `serve`). A calibration fitted on another model's or mode's
    /// scores is applied, with a warning: its numbers describe those scores, not these.
    pub fn start_calibrated_evaluator(
        &self,
        slots: u32,
        max_queue: usize,
        calibration: Option<Arc<Calibration>>,
    ) -> anyhow::Result<Evaluator> {
        let engine = self.start_engine(slots, max_queue)?;
        let heads = match &self.heads {
            Some(path) => Some(Arc::new(
                TrainedHeads::load(path, engine.info())
                    .map_err(|e| anyhow::anyhow!("heads {}: {e}", path.display()))?,
            )),
            None => None,
        };
        let evaluator = Evaluator::with_calibration(engine, heads, calibration)?;
        if let Some(c) = evaluator.calibration() {
            let with = &c.file.fitted_with;
            let (llm, mode) = (&evaluator.info().llm_name, mode_name(evaluator.output_mode()));
            // An empty name (a calibration fitted from a CSV) is not known, so not a mismatch.
            let differs = |fitted: &str, here: &str| !fitted.is_empty() && fitted != here;
            if differs(&with.llm, llm) || differs(&with.mode, mode) {
                tracing::warn!(
                    calibration = %c.name,
                    "the calibration was fitted on {} scores of {}, but this server gives {mode} scores of {llm}; its mapping may not fit them",
                    with.mode,
                    with.llm
                );
            }
        }
        Ok(evaluator)
    }

    /// Resolves the model files (downloading the default pair when none is given) into an engine config.
    pub fn engine_config(&self, slots: u32, max_queue: usize) -> anyhow::Result<EngineConfig> {
        let (model, mmproj) = match (&self.model, &self.mmproj) {
            (Some(m), Some(p)) => (m.clone(), p.clone()),
            (Some(_), None) => anyhow::bail!("--mmproj is required with --model (the vision projector of the same model)"),
            (None, Some(_)) => anyhow::bail!("--model is required with --mmproj"),
            (None, None) => default_model::resolve()?,
        };
        if !(1..=MAX_TILES).contains(&self.max_tiles) {
            anyhow::bail!("--max-tiles must be 1..={MAX_TILES}, got {}", self.max_tiles);
        }
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(4));
        Ok(EngineConfig {
            model,
            mmproj,
            n_gpu_layers: self.n_gpu_layers,
            threads,
            ctx_per_sequence: self.ctx_size,
            slots,
            n_batch: self.batch_size,
            max_queue,
            // One image's tiles and thumbnail in one vision encode.
            vision_batch_tiles: self.max_tiles as usize + 1,
            flash_attention: match self.flash_attn {
                FlashAttn::Auto => None,
                FlashAttn::On => Some(true),
                FlashAttn::Off => Some(false),
            },
            speedups: self.speedups()?,
            image_cache_bytes: self.image_cache_mb.saturating_mul(1 << 20),
        })
    }

    /// The engine optimisations left on by `--disable-speedup`.
    pub fn speedups(&self) -> anyhow::Result<SpeedUps> {
        let mut speedups = SpeedUps::ALL;
        for name in &self.disable_speedups {
            speedups = match name.as_str() {
                "all" => SpeedUps::NONE,
                name => speedups.without(name).map_err(|e| anyhow::anyhow!("--disable-speedup: {e}"))?,
            };
        }
        Ok(speedups)
    }
}
