//! The one error type of the heads layer.

use std::path::PathBuf;

/// Everything that can go wrong in the heads: bad configuration, inputs that do not match the model,
/// weight files that do not match the configuration or the running LLM, and numerical backend errors.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    /// A configuration value is out of range or inconsistent with another one.
    #[error("invalid heads config: {field}: {reason}")]
    Config { field: &'static str, reason: String },

    /// A forward input does not match the configuration (tile count, vector widths, output size).
    #[error("invalid heads input: {field}: {reason}")]
    Input { field: &'static str, reason: String },

    /// The weights were trained for a different LLM than the one that is running.
    #[error("heads weights do not fit the running model: {what}: weights have {weights}, model has {model}")]
    ModelMismatch { what: &'static str, weights: usize, model: usize },

    /// A stored tensor has a shape other than the one the configuration implies.
    #[error("tensor `{name}` has shape {found:?} in the weights file but {expected:?} is expected")]
    TensorShape { name: String, found: Vec<usize>, expected: Vec<usize> },

    /// Tensors the model needs are absent from the weights file.
    #[error("weights file lacks tensor(s): {}", .0.join(", "))]
    MissingTensors(Vec<String>),

    /// The weights file holds tensors the model does not know (another architecture or variant).
    #[error("weights file has unexpected tensor(s): {}", .0.join(", "))]
    UnexpectedTensors(Vec<String>),

    /// The weights file is unreadable, truncated, or not in the format this crate writes.
    #[error("bad heads weights file {path}: {reason}")]
    Format { path: PathBuf, reason: String },

    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// An error from the tensor backend (should not happen with validated inputs).
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the heads layer.
pub type Result<T> = std::result::Result<T, HeadsError>;
