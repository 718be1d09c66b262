//! The weights file: one safetensors file holding every parameter (f32, named by module path) and, in
//! the safetensors header metadata, the JSON config (`heie.heads.config`) and a format version
//! (`heie.heads.format`, see [`FORMAT_VERSION`]). One file means weights and config cannot drift apart on disk.
//!
//! Loading trusts nothing: every tensor name, shape, dtype and value is checked against the shapes the
//! configuration implies, and the configuration against the running LLM.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::config::HeadsConfig;
use crate::error::{HeadsError, Result};

/// Metadata key of the format version.
pub const FORMAT_KEY: &str = "heie.heads.format";
/// The format version this crate writes and reads (2: the token scorer's fitted input statistics;
/// 3: the map scorer's monotone mass term `map_scorer.mass_weight_raw`). Older files are refused with
/// the version in the message rather than loaded with a guessed default: a format-2 map scorer was
/// trained without the term, and adding one would change its scores.
pub const FORMAT_VERSION: &str = "3";
/// Metadata key of the JSON config.
pub const CONFIG_KEY: &str = "heie.heads.config";

fn format_err(path: &Path, reason: impl Into<String>) -> HeadsError {
    HeadsError::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Writes all variables of `varmap` and `config` to `path` (via a temporary file and a rename, so a
/// crash never leaves a half-written weights file under the real name).
pub fn save(path: &Path, config: &HeadsConfig, varmap: &VarMap) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let tensors: BTreeMap<String, Tensor> =
        data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
    drop(data);
    let metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
        (CONFIG_KEY.to_string(), config.to_json()),
    ]);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
        .map_err(|e| format_err(path, e.to_string()))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|source| HeadsError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| HeadsError::Io { path: path.to_path_buf(), source })
}

/// Reads the config and the raw tensors of a weights file (format checks only; see [`check_tensors`]).
pub fn read(path: &Path) -> Result<(HeadsConfig, HashMap<String, Tensor>)> {
    let bytes = std::fs::read(path).map_err(|source| HeadsError::Io { path: path.to_path_buf(), source })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    match meta.get(FORMAT_KEY) {
        Some(v) if v == FORMAT_VERSION => {}
        Some(v) => return Err(format_err(path, format!("format version {v}, this build reads {FORMAT_VERSION}"))),
        None => return Err(format_err(path, format!("no `{FORMAT_KEY}` metadata: not a HEIE heads file"))),
    }
    let json = meta.get(CONFIG_KEY).ok_or_else(|| format_err(path, format!("no `{CONFIG_KEY}` metadata")))?;
    let config = HeadsConfig::from_json(json)?;
    // Full deserialisation validates offsets and sizes against the file length (truncation, corruption).
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| format_err(path, format!("unreadable tensor data: {e}")))?;
    Ok((config, tensors))
}

/// Checks `found` against `expected` (name → shape): same names, same shapes, f32, finite values.
pub fn check_tensors(path: &Path, expected: &BTreeMap<String, Vec<usize>>, found: &HashMap<String, Tensor>) -> Result<()> {
    let mut missing: Vec<String> = expected.keys().filter(|k| !found.contains_key(*k)).cloned().collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(HeadsError::MissingTensors(missing));
    }
    let mut extra: Vec<String> = found.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(HeadsError::UnexpectedTensors(extra));
    }
    for (name, shape) in expected {
        let t = &found[name];
        if t.dims() != shape.as_slice() {
            return Err(HeadsError::TensorShape { name: name.clone(), found: t.dims().to_vec(), expected: shape.clone() });
        }
        if t.dtype() != DType::F32 {
            return Err(format_err(path, format!("tensor `{name}` is {:?}, expected f32", t.dtype())));
        }
        if t.flatten_all()?.to_vec1::<f32>()?.iter().any(|v| !v.is_finite()) {
            return Err(format_err(path, format!("tensor `{name}` contains NaN or infinite values")));
        }
    }
    Ok(())
}

/// Name → shape of every variable in `varmap`.
pub fn shapes(varmap: &VarMap) -> BTreeMap<String, Vec<usize>> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
}
