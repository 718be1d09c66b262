//! Feature shards: what `heie extract` captured, in safetensors files with f16 tensors.
//!
//! A shard `shard-NNNNN.safetensors` holds up to `shard_size` samples. Sample `k` has tensors
//! `k.features` `[V, T, W]` (tiles in grid order, then the thumbnail), `k.map_hidden` `[V, W]`,
//! `k.score_hidden` `[W]` and, when labelled, `k.heatmap` `[h, w]` (the ground truth resized to at most
//! `gt_side` on its longer side). The header metadata `heie.shard` is JSON: format, LLM width, tokens per
//! tile and per sample the id, tile grid, original size and score. Files are written to a temporary name
//! and renamed, so a shard on disk is always complete (what makes extraction resumable).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use half::f16;
use ndarray::Array2;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

pub const SHARD_FORMAT: u32 = 1;
const META_KEY: &str = "heie.shard";

/// The shard layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Per-sample metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleMeta {
    pub id: String,
    pub grid_cols: usize,
    pub grid_rows: usize,
    pub has_thumbnail: bool,
    /// Original image size.
    pub width: u32,
    pub height: u32,
    pub score: Option<f32>,
    pub has_heatmap: bool,
}

/// A shard's header metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub format: u32,
    pub llm_width: usize,
    pub tokens_per_tile: usize,
    pub samples: Vec<SampleMeta>,
}

/// One extracted sample. The vectors stay f16, as stored: a training set of InternVL3-2B features is
/// 5.5 MB per image in f16 and would be twice that in f32, so only the batch being trained is widened
/// (see [`FeatureSample::dense`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSample {
    pub meta: SampleMeta,
    /// `V × T × W`, row-major.
    pub features: Vec<f16>,
    /// `V × W`.
    pub map_hidden: Vec<f16>,
    /// `W`.
    pub score_hidden: Vec<f16>,
    /// The ground truth (small: at most `gt_side`²), kept in f32.
    pub heatmap: Option<Array2<f32>>,
}

/// The f32 copy of a sample's vectors, made for the moment it is trained or evaluated on.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseFeatures {
    pub features: Vec<f32>,
    pub map_hidden: Vec<f32>,
    pub score_hidden: Vec<f32>,
}

/// Rounds f32 values to the f16 the shards store.
pub fn to_f16(values: &[f32]) -> Vec<f16> {
    values.iter().map(|&v| f16::from_f32(v)).collect()
}

/// Widens f16 values to f32.
pub fn to_f32(values: &[f16]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

impl FeatureSample {
    /// Tiles plus the thumbnail.
    pub fn n_views(&self) -> usize {
        self.meta.grid_cols * self.meta.grid_rows + usize::from(self.meta.has_thumbnail)
    }

    /// The vectors in f32.
    pub fn dense(&self) -> DenseFeatures {
        DenseFeatures { features: to_f32(&self.features), map_hidden: to_f32(&self.map_hidden), score_hidden: to_f32(&self.score_hidden) }
    }
}

fn f16_bytes(values: &[f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_values(bytes: &[u8]) -> Vec<f16> {
    bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()
}

/// The name of shard `index`.
pub fn shard_name(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// Writes one shard atomically (temporary file, then rename).
pub fn write_shard(path: &Path, llm_width: usize, tokens_per_tile: usize, samples: &[FeatureSample]) -> Result<(), ShardError> {
    let fmt = |reason: String| ShardError::Format { path: path.to_path_buf(), reason };
    let meta = ShardMeta {
        format: SHARD_FORMAT,
        llm_width,
        tokens_per_tile,
        samples: samples.iter().map(|s| s.meta.clone()).collect(),
    };
    let mut buffers: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (k, s) in samples.iter().enumerate() {
        let v = s.n_views();
        let expect = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(fmt(format!("sample {} {name}: {len} values, expected {want}", s.meta.id)))
            }
        };
        expect("features", s.features.len(), v * tokens_per_tile * llm_width)?;
        expect("map_hidden", s.map_hidden.len(), v * llm_width)?;
        expect("score_hidden", s.score_hidden.len(), llm_width)?;
        buffers.insert(format!("{k}.features"), (vec![v, tokens_per_tile, llm_width], f16_bytes(&s.features)));
        buffers.insert(format!("{k}.map_hidden"), (vec![v, llm_width], f16_bytes(&s.map_hidden)));
        buffers.insert(format!("{k}.score_hidden"), (vec![llm_width], f16_bytes(&s.score_hidden)));
        if let Some(h) = &s.heatmap {
            let values: Vec<f32> = h.iter().copied().collect();
            buffers.insert(format!("{k}.heatmap"), (vec![h.nrows(), h.ncols()], f16_bytes(&to_f16(&values))));
        }
    }
    let views = buffers
        .iter()
        .map(|(name, (shape, bytes))| Ok((name.clone(), TensorView::new(Dtype::F16, shape.clone(), bytes).map_err(|e| fmt(e.to_string()))?)))
        .collect::<Result<Vec<_>, ShardError>>()?;
    let info = HashMap::from([(META_KEY.to_string(), serde_json::to_string(&meta).expect("metadata serialises"))]);
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, Some(info), &tmp).map_err(|e| fmt(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| ShardError::Io { path: path.to_path_buf(), source: e })
}

fn read_meta_from(path: &Path, bytes: &[u8]) -> Result<ShardMeta, ShardError> {
    let fmt = |reason: String| ShardError::Format { path: path.to_path_buf(), reason };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(format!("not a safetensors file: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| fmt(format!("no `{META_KEY}` metadata: not a heie feature shard")))?;
    let meta: ShardMeta = serde_json::from_str(json).map_err(|e| fmt(format!("bad `{META_KEY}` metadata: {e}")))?;
    if meta.format != SHARD_FORMAT {
        return Err(fmt(format!("shard format {} (this build reads {SHARD_FORMAT})", meta.format)));
    }
    Ok(meta)
}

/// Reads only a shard's metadata (the header is at the start of the file).
pub fn read_meta(path: &Path) -> Result<ShardMeta, ShardError> {
    let io = |e| ShardError::Io { path: path.to_path_buf(), source: e };
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(ShardError::Format { path: path.to_path_buf(), reason: "header larger than 100 MB".into() });
    }
    let mut buf = len.to_vec();
    buf.resize(8 + n as usize, 0);
    f.read_exact(&mut buf[8..]).map_err(io)?;
    // read_metadata checks the data size against the buffer: give it a header-only view of the sizes.
    let header: serde_json::Value =
        serde_json::from_slice(&buf[8..]).map_err(|e| ShardError::Format { path: path.to_path_buf(), reason: e.to_string() })?;
    let json = header
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(|v| v.as_str())
        .ok_or_else(|| ShardError::Format { path: path.to_path_buf(), reason: format!("no `{META_KEY}` metadata") })?;
    let meta: ShardMeta =
        serde_json::from_str(json).map_err(|e| ShardError::Format { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(meta)
}

/// Reads every sample of a shard.
pub fn read_shard(path: &Path) -> Result<(ShardMeta, Vec<FeatureSample>), ShardError> {
    let bytes = std::fs::read(path).map_err(|e| ShardError::Io { path: path.to_path_buf(), source: e })?;
    let meta = read_meta_from(path, &bytes)?;
    let fmt = |reason: String| ShardError::Format { path: path.to_path_buf(), reason };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| fmt(e.to_string()))?;
    let (w, t) = (meta.llm_width, meta.tokens_per_tile);
    let mut samples = Vec::with_capacity(meta.samples.len());
    for (k, m) in meta.samples.iter().enumerate() {
        let v = m.grid_cols * m.grid_rows + usize::from(m.has_thumbnail);
        let get = |name: &str, shape: Option<&[usize]>| -> Result<(Vec<usize>, Vec<f16>), ShardError> {
            let view = st.tensor(&format!("{k}.{name}")).map_err(|e| fmt(format!("sample {k} ({}): {e}", m.id)))?;
            if view.dtype() != Dtype::F16 {
                return Err(fmt(format!("{k}.{name} is {:?}, expected F16", view.dtype())));
            }
            if let Some(s) = shape {
                if view.shape() != s {
                    return Err(fmt(format!("{k}.{name} has shape {:?}, expected {s:?}", view.shape())));
                }
            }
            Ok((view.shape().to_vec(), f16_values(view.data())))
        };
        let (_, features) = get("features", Some(&[v, t, w]))?;
        let (_, map_hidden) = get("map_hidden", Some(&[v, w]))?;
        let (_, score_hidden) = get("score_hidden", Some(&[w]))?;
        let heatmap = if m.has_heatmap {
            let (shape, values) = get("heatmap", None)?;
            if shape.len() != 2 {
                return Err(fmt(format!("{k}.heatmap has shape {shape:?}, expected [h, w]")));
            }
            Some(Array2::from_shape_vec((shape[0], shape[1]), to_f32(&values)).expect("shape checked by safetensors"))
        } else {
            None
        };
        samples.push(FeatureSample { meta: m.clone(), features, map_hidden, score_hidden, heatmap });
    }
    Ok((meta, samples))
}

/// The shard files of a folder, sorted.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, ShardError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ShardError::Io { path: dir.to_path_buf(), source: e })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("shard-") && name.ends_with(".safetensors")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What a shard folder already holds: ids, the next shard index and the model shape (for resuming).
#[derive(Debug, Clone, Default)]
pub struct ShardIndex {
    pub ids: HashSet<String>,
    pub next_shard: usize,
    pub shape: Option<(usize, usize)>,
    pub shards: Vec<PathBuf>,
    pub samples_per_shard: Vec<usize>,
}

/// Scans a shard folder (missing folder = empty); checks every shard was written for the same model.
pub fn index(dir: &Path) -> Result<ShardIndex, ShardError> {
    let mut idx = ShardIndex::default();
    if !dir.exists() {
        return Ok(idx);
    }
    for path in list_shards(dir)? {
        let meta = read_meta(&path)?;
        let shape = (meta.llm_width, meta.tokens_per_tile);
        if let Some(prev) = idx.shape {
            if prev != shape {
                return Err(ShardError::Format {
                    path,
                    reason: format!("width/tokens per tile {shape:?} differ from the other shards' {prev:?}"),
                });
            }
        }
        idx.shape = Some(shape);
        let n: usize = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("shard-"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        idx.next_shard = idx.next_shard.max(n + 1);
        idx.samples_per_shard.push(meta.samples.len());
        idx.ids.extend(meta.samples.into_iter().map(|s| s.id));
        idx.shards.push(path);
    }
    Ok(idx)
}
