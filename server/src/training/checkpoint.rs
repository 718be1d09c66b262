//! The resumable state of a training run, written after every epoch next to `--out`:
//! `OUT.last.safetensors` (the heads), `OUT.optimizer.safetensors` (AdamW's moments `m.NAME`/`v.NAME`,
//! the step in the `heie.optimizer` metadata) and `OUT.state.json` (epochs done, best dev loss, the run's
//! configs). The learning rate is a function of the step, so the step restores the schedule too.
//! `state.json` is written last and names the step; a resume whose optimizer file disagrees (a crash
//! between the writes) is refused rather than continued from mismatched pieces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use heie_heads::training::adamw::AdamW;
use heie_heads::{Heads, HeadsConfig};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::error::TrainError;

const OPTIMIZER_KEY: &str = "heie.optimizer";

/// How far a run got: `OUT.state.json`, saved next to the output after every epoch, for `--resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    pub step: usize,
    pub best_dev_loss: Option<f64>,
    pub config: TrainConfig,
    pub heads: HeadsConfig,
}

#[derive(Debug, Serialize, Deserialize)]
struct OptimizerMeta {
    step: usize,
}

pub fn state_path(out: &Path) -> PathBuf {
    out.with_extension("state.json")
}

pub fn last_path(out: &Path) -> PathBuf {
    out.with_extension("last.safetensors")
}

pub fn optimizer_path(out: &Path) -> PathBuf {
    out.with_extension("optimizer.safetensors")
}

fn setup(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Setup(format!("{}: {reason}", path.display()))
}

/// Writes the three files (each via a temporary name and a rename; the state last).
pub fn save(out: &Path, heads: &Heads, opt: &AdamW, state: &TrainState) -> Result<(), TrainError> {
    heads.save(last_path(out))?;
    let path = optimizer_path(out);
    let tensors = opt.state()?;
    let meta = HashMap::from([(OPTIMIZER_KEY.to_string(), serde_json::to_string(&OptimizerMeta { step: opt.step_count() }).expect("serialises"))]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta)).map_err(|e| setup(&path, e))?;
    write_atomic(&path, &bytes)?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    write_atomic(&state_path(out), json.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| setup(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| setup(path, e))
}

/// Whether `out` has a checkpoint to resume from.
pub fn exists(out: &Path) -> bool {
    state_path(out).exists()
}

/// Loads the heads and the run state, and restores `opt`'s moments and step (`opt` must have been
/// built over `heads`' trainable variables). The run's hyper-parameters must match the saved ones.
pub fn load(out: &Path, cfg: &TrainConfig, llm_width: usize, tokens_per_tile: usize) -> Result<(Heads, TrainState, HashMap<String, Tensor>, usize), TrainError> {
    let sp = state_path(out);
    let json = std::fs::read_to_string(&sp).map_err(|e| setup(&sp, e))?;
    let state: TrainState = serde_json::from_str(&json).map_err(|e| setup(&sp, format!("bad state file: {e}")))?;
    let saved = serde_json::to_value(&state.config).expect("serialises");
    if saved != serde_json::to_value(cfg).expect("serialises") {
        return Err(setup(&sp, format!("was written by a run with other settings ({saved}); resume with the same flags")));
    }
    let heads = Heads::load(last_path(out), llm_width, tokens_per_tile)?;
    let path = optimizer_path(out);
    let bytes = std::fs::read(&path).map_err(|e| setup(&path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| setup(&path, format!("not a safetensors file: {e}")))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(OPTIMIZER_KEY))
        .ok_or_else(|| setup(&path, format!("no `{OPTIMIZER_KEY}` metadata")))?;
    let meta: OptimizerMeta = serde_json::from_str(meta).map_err(|e| setup(&path, format!("bad `{OPTIMIZER_KEY}` metadata: {e}")))?;
    if meta.step != state.step {
        return Err(setup(&path, format!("optimizer state is at step {}, {} at step {}: an interrupted save", meta.step, sp.display(), state.step)));
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| setup(&path, e))?;
    Ok((heads, state, tensors, meta.step))
}
