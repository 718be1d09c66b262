//! Data flags shared by `extract` and `evaluate`.

use std::path::PathBuf;

use clap::Args;

use crate::data::{DataFormat, DataSpec};

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A split: a RichHF-18K `.tfrecord`, an Expl-AIGI-Eval `.jsonl`, or a plain folder
    /// (images, `ID.heatmap.png`, `scores.csv`).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the images (and JSONL heatmaps) are found in; default: the data file's folder.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Format, when the extension does not tell.
    #[arg(long, value_enum)]
    pub format: Option<DataFormat>,
    /// Use only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl DataArgs {
    pub fn spec(&self) -> anyhow::Result<DataSpec> {
        Ok(DataSpec::new(&self.data, self.format, self.images.as_deref())?)
    }
}
