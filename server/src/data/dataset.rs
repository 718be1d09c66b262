//! One entry point for every data format: `--data PATH [--images DIR] [--format …]` → samples.

use std::path::{Path, PathBuf};

use super::{expl_aigi, folder, richhf, DataError, Sample};

/// The on-disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataFormat {
    /// RichHF-18K TFRecord (`train.tfrecord`, `dev.tfrecord`, `test.tfrecord`).
    Richhf,
    /// Expl-AIGI-Eval JSONL.
    ExplAigi,
    /// A folder of images with `ID.heatmap.png` and `scores.csv`.
    Folder,
}

/// Where a split is and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub path: PathBuf,
    pub format: DataFormat,
    /// Images folder for RichHF and JSONL (default: the data file's folder).
    pub images: PathBuf,
}

impl DataSpec {
    /// Resolves the format (from the extension or the folder when not given) and the images folder.
    pub fn new(path: &Path, format: Option<DataFormat>, images: Option<&Path>) -> Result<DataSpec, DataError> {
        let format = match format {
            Some(f) => f,
            None if path.is_dir() => DataFormat::Folder,
            None => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("tfrecord") | Some("tfrecords") => DataFormat::Richhf,
                Some("jsonl") => DataFormat::ExplAigi,
                _ => {
                    return Err(DataError::Invalid {
                        path: path.to_path_buf(),
                        reason: "not a folder, .tfrecord or .jsonl file (or it does not exist); pass --format".into(),
                    })
                }
            },
        };
        if !path.exists() {
            return Err(DataError::Invalid { path: path.to_path_buf(), reason: "does not exist".into() });
        }
        let images = match images {
            Some(dir) => dir.to_path_buf(),
            None if format == DataFormat::Folder => path.to_path_buf(),
            None => richhf::default_images_dir(path),
        };
        Ok(DataSpec { path: path.to_path_buf(), format, images })
    }
}

/// The samples of a split, in the file's order.
pub fn open(spec: &DataSpec) -> Result<Box<dyn Iterator<Item = Result<Sample, DataError>>>, DataError> {
    Ok(match spec.format {
        DataFormat::Richhf => Box::new(richhf::samples(&spec.path, &spec.images)?),
        DataFormat::ExplAigi => Box::new(expl_aigi::samples(&spec.path, &spec.images)?),
        DataFormat::Folder => Box::new(folder::samples(&spec.path)?),
    })
}
