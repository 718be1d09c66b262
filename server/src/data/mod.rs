//! Labelled data for training and evaluation: RichHF-18K TFRecords, Expl-AIGI-Eval JSONL, plain folders,
//! and the synthetic defect generator (`heie synth`). Every format yields the same [`Sample`]s.

pub mod dataset;
pub mod expl_aigi;
pub mod folder;
pub mod richhf;
pub mod synth;
pub mod tfrecord;

use std::path::{Path, PathBuf};

use ndarray::Array2;

pub use dataset::{open, DataFormat, DataSpec};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unique within the split; names output files (`ID.heatmap.png`) and shard entries.
    pub id: String,
    pub image: PathBuf,
    /// Ground-truth implausibility heatmap in [0, 1], when the data has one.
    pub heatmap: Option<Array2<f32>>,
    /// Ground-truth plausibility score in [0, 1] (1 = flawless).
    pub score: Option<f32>,
    /// Reference chain of thought with `[MAP]`/`[SCORE]` markers (Expl-AIGI-Eval).
    pub reference_cot: Option<String>,
}

/// The data layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Format(String),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

/// Decodes an encoded grayscale heatmap (8-bit: v/255, 16-bit: v/65535; colour images are converted to
/// luma first) into [0, 1].
pub fn decode_gray_map(bytes: &[u8]) -> Result<Array2<f32>, DataError> {
    let img = image::load_from_memory(bytes).map_err(|e| DataError::Format(format!("heatmap image: {e}")))?;
    let sixteen = matches!(
        img.color(),
        image::ColorType::L16 | image::ColorType::La16 | image::ColorType::Rgb16 | image::ColorType::Rgba16
    );
    let (w, h) = (img.width() as usize, img.height() as usize);
    let values: Vec<f32> = if sixteen {
        img.to_luma16().into_raw().into_iter().map(|v| v as f32 / 65535.0).collect()
    } else {
        img.to_luma8().into_raw().into_iter().map(|v| v as f32 / 255.0).collect()
    };
    Ok(Array2::from_shape_vec((h, w), values).expect("h·w values"))
}

/// Reads and decodes a heatmap file.
pub fn read_gray_map(path: &Path) -> Result<Array2<f32>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_gray_map(&bytes).map_err(|e| DataError::Invalid { path: path.to_path_buf(), reason: e.to_string() })
}
