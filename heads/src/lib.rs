//! HEIE's native heads: from the VLM's `[MAP]`/`[SCORE]` hidden states and per-tile image features to a
//! pixel heatmap of implausible regions and a calibrated plausibility score.
//!
//! Pipeline: [`mapper`] (per tile and thumbnail) → [`stitch`] (local and global maps at image size) →
//! [`fusion`] (σ-weighted per pixel) → [`scorer`] + [`calibration`] (final score). All learned modules
//! are candle modules in one [`model::HeadsModel`], so training and serving share them.
//! This crate knows nothing of llama.cpp: callers hand in plain `f32` slices.
//!
//! The top level is the serving API: [`Heads`] (init, load, save, the forward passes), its inputs and
//! outputs. Everything only training needs — the optimiser, the losses, the evaluation metrics and the
//! tensor-level side of [`Heads`] (the differentiable graph, the trainable variables) — is in
//! [`training`]. The other modules are the building blocks of both, public for tests and tensor-level use.

// The serving API.
mod heads;
mod input_checks;
mod inputs;
mod outputs;

// Everything only training needs.
pub mod training;

// The building blocks.
pub mod calibration;
pub mod config;
pub mod error;
pub mod fusion;
mod init;
pub mod kernels;
pub mod layers;
pub mod mapper;
pub mod model;
pub mod render;
pub mod scorer;
pub mod standardize;
pub mod stitch;
pub mod upsample;
pub mod weights;

pub use config::{CalibrationConfig, FusionVariant, HeadsConfig};
pub use error::{HeadsError, Result};
pub use heads::Heads;
pub use inputs::{HeadsInput, MapsInput, ProjectedView, TileFeatures, ViewImage, ViewInput, MAX_OUTPUT_SIDE, MAX_TILES};
pub use outputs::{HeadsMaps, HeadsOutput};
