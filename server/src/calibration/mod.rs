//! Calibration to one user's taste: from their keep/reject decisions on judged images, a map from the
//! raw primary score and the per-category region severities to their P(keep), which then replaces the
//! score (`heie calibrate` fits it; `heie serve/eval --calibration` apply it in the pipeline's
//! finalizer). See README.md here for the method and the file.

pub mod features;
pub mod file;
pub mod fit;
pub mod isotonic;
pub mod logistic;
pub mod map;
pub mod metrics;
pub mod split;

use std::path::Path;

pub use features::Features;
pub use file::CalibrationFile;
pub use map::CalibrationMap;

/// A calibration loaded for use: the function and what GetInfo says about it.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The file's name without directories (ServerInfo.calibration.name).
    pub name: String,
    pub file: CalibrationFile,
    pub map: CalibrationMap,
}

impl Calibration {
    /// Loads and checks a calibration file.
    pub fn load(path: &Path) -> Result<Calibration, String> {
        let file = CalibrationFile::load(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Calibration { name, map: file.map(), file })
    }

    /// The calibrated score of an image with these features.
    pub fn calibrate(&self, features: &Features) -> f32 {
        self.map.calibrate(features)
    }
}
