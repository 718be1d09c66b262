//! The plain-folder format, for users' own data and `heie synth`:
//!
//! ```text
//! DIR/ID.png (or .jpg/.jpeg/.webp)   the image
//! DIR/ID.heatmap.png                 optional ground-truth heatmap (8- or 16-bit gray, any size)
//! DIR/ID.cot.txt                     optional reference chain of thought
//! DIR/scores.csv                     optional `id,score` lines (a header line is allowed)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{read_gray_map, DataError, Sample};

pub const SCORES_FILE: &str = "scores.csv";
pub const HEATMAP_SUFFIX: &str = ".heatmap.png";
pub const COT_SUFFIX: &str = ".cot.txt";
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// Parses `id,score` lines; a first line whose score is not a number is a header.
pub fn parse_scores(text: &str, path: &Path) -> Result<HashMap<String, f32>, DataError> {
    let mut scores = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Invalid { path: path.to_path_buf(), reason: format!("line {}: {reason}", n + 1) };
        let (id, score) = line.split_once(',').ok_or_else(|| bad(format!("expected `id,score`, got {line:?}")))?;
        match score.trim().parse::<f32>() {
            Ok(s) if s.is_finite() => {
                scores.insert(id.trim().to_string(), s);
            }
            _ if n == 0 => {} // header
            _ => return Err(bad(format!("score {score:?} is not a finite number"))),
        }
    }
    Ok(scores)
}

/// Reads `DIR/scores.csv` (empty when absent).
pub fn read_scores(dir: &Path) -> Result<HashMap<String, f32>, DataError> {
    let path = dir.join(SCORES_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_scores(&text, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(DataError::io(&path, e)),
    }
}

/// The images of a folder, sorted by id (deterministic order).
pub fn image_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut images = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(HEATMAP_SUFFIX) || !path.is_file() {
            continue;
        }
        let Some((stem, ext)) = name.rsplit_once('.') else { continue };
        if IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            images.push((stem.to_string(), path));
        }
    }
    images.sort();
    Ok(images)
}

/// The samples of a plain folder. Heatmaps are read lazily, as the iterator advances.
pub fn samples(dir: &Path) -> Result<impl Iterator<Item = Result<Sample, DataError>>, DataError> {
    let scores = read_scores(dir)?;
    let images = image_files(dir)?;
    let dir = dir.to_path_buf();
    Ok(images.into_iter().map(move |(id, image)| {
        let heatmap_path = dir.join(format!("{id}{HEATMAP_SUFFIX}"));
        let heatmap = if heatmap_path.is_file() { Some(read_gray_map(&heatmap_path)?) } else { None };
        let cot_path = dir.join(format!("{id}{COT_SUFFIX}"));
        let reference_cot = if cot_path.is_file() {
            Some(std::fs::read_to_string(&cot_path).map_err(|e| DataError::io(&cot_path, e))?)
        } else {
            None
        };
        Ok(Sample { score: scores.get(&id).copied(), id, image, heatmap, reference_cot })
    }))
}
