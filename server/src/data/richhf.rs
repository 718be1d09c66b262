//! RichHF-18K: `tf.train.Example` records (decoded with prost) whose images are Pick-a-Pic files found by
//! `filename` under an images folder.
//!
//! Fields used: `filename` (bytes), `artifact_score` (= plausibility, float in [0, 1]),
//! `misalignment_score`, `aesthetics_score`, `overall_score`, `artifact_map` and `misalignment_map`
//! (encoded 8-bit images, 512×512), `prompt_misalignment_label` (bytes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use prost::Message;

use super::tfrecord::TfRecordReader;
use super::{decode_gray_map, DataError, Sample};

/// `tf.train.BytesList`.
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tf.train.FloatList`.
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tf.train.Int64List`.
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// `tf.train.Feature`: one of the three lists.
#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    #[prost(oneof = "FeatureKind", tags = "1, 2, 3")]
    pub kind: Option<FeatureKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum FeatureKind {
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

/// `tf.train.Features`.
#[derive(Clone, PartialEq, Message)]
pub struct Features {
    #[prost(map = "string, message", tag = "1")]
    pub feature: HashMap<String, Feature>,
}

/// `tf.train.Example`.
#[derive(Clone, PartialEq, Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

impl Example {
    fn get(&self, name: &str) -> Option<&FeatureKind> {
        self.features.as_ref()?.feature.get(name)?.kind.as_ref()
    }

    /// The first value of a bytes feature.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.get(name)? {
            FeatureKind::BytesList(l) => l.value.first().map(|v| v.as_slice()),
            _ => None,
        }
    }

    /// The first value of a float feature.
    pub fn float(&self, name: &str) -> Option<f32> {
        match self.get(name)? {
            FeatureKind::FloatList(l) => l.value.first().copied(),
            _ => None,
        }
    }

    /// Adds a bytes feature (for writing test files).
    pub fn with_bytes(mut self, name: &str, value: Vec<u8>) -> Self {
        self.insert(name, FeatureKind::BytesList(BytesList { value: vec![value] }));
        self
    }

    /// Adds a float feature (for writing test files).
    pub fn with_float(mut self, name: &str, value: f32) -> Self {
        self.insert(name, FeatureKind::FloatList(FloatList { value: vec![value] }));
        self
    }

    fn insert(&mut self, name: &str, kind: FeatureKind) {
        self.features.get_or_insert_with(Features::default).feature.insert(name.to_string(), Feature { kind: Some(kind) });
    }
}

/// One RichHF-18K record.
#[derive(Debug, Clone, PartialEq)]
pub struct RichHfRecord {
    pub filename: String,
    pub artifact_score: Option<f32>,
    pub misalignment_score: Option<f32>,
    pub aesthetics_score: Option<f32>,
    pub overall_score: Option<f32>,
    /// Encoded (PNG) 8-bit artifact heatmap.
    pub artifact_map: Option<Vec<u8>>,
    pub misalignment_map: Option<Vec<u8>>,
    pub prompt_misalignment_label: Option<String>,
}

impl RichHfRecord {
    /// Decodes one record's `tf.train.Example`.
    pub fn decode(bytes: &[u8]) -> Result<RichHfRecord, DataError> {
        let example = Example::decode(bytes).map_err(|e| DataError::Format(format!("not a tf.train.Example: {e}")))?;
        let filename = example
            .bytes("filename")
            .ok_or_else(|| DataError::Format("record has no `filename` bytes feature".into()))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(RichHfRecord {
            filename: text(filename),
            artifact_score: example.float("artifact_score"),
            misalignment_score: example.float("misalignment_score"),
            aesthetics_score: example.float("aesthetics_score"),
            overall_score: example.float("overall_score"),
            artifact_map: example.bytes("artifact_map").map(<[u8]>::to_vec),
            misalignment_map: example.bytes("misalignment_map").map(<[u8]>::to_vec),
            prompt_misalignment_label: example.bytes("prompt_misalignment_label").map(text),
        })
    }

    /// The artifact heatmap in [0, 1] (8-bit values / 255).
    pub fn artifact_heatmap(&self) -> Result<Option<Array2<f32>>, DataError> {
        self.artifact_map.as_deref().map(decode_gray_map).transpose()
    }
}

/// The samples of a RichHF-18K split: records of `tfrecord`, images under `images`.
pub fn samples(tfrecord: &Path, images: &Path) -> Result<impl Iterator<Item = Result<Sample, DataError>>, DataError> {
    let file = std::fs::File::open(tfrecord).map_err(|e| DataError::io(tfrecord, e))?;
    let images = images.to_path_buf();
    let source = tfrecord.to_path_buf();
    Ok(TfRecordReader::new(std::io::BufReader::new(file)).map(move |record| {
        let bytes = record.map_err(|e| DataError::Format(format!("{}: {e}", source.display())))?;
        let r = RichHfRecord::decode(&bytes)?;
        let id = Path::new(&r.filename).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| r.filename.clone());
        Ok(Sample {
            id,
            image: images.join(&r.filename),
            heatmap: r.artifact_heatmap()?,
            score: r.artifact_score,
            reference_cot: None,
        })
    }))
}

/// Path helper for users who keep images next to the TFRecord.
pub fn default_images_dir(tfrecord: &Path) -> PathBuf {
    tfrecord.parent().map(Path::to_path_buf).unwrap_or_default()
}
