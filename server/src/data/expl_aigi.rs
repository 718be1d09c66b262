//! Expl-AIGI-Eval JSONL: one object per line with `id`, `image` and `heatmap` (paths relative to the
//! images folder), `score`, and `conversations` whose `gpt` turn is the reference chain of thought.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_gray_map, DataError, Sample};

#[derive(Debug, Deserialize)]
struct Line {
    id: String,
    image: String,
    #[serde(default)]
    heatmap: Option<String>,
    #[serde(default)]
    score: Option<f32>,
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Debug, Deserialize)]
struct Turn {
    from: String,
    value: String,
}

/// One parsed line, before the heatmap file is read.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplAigiEntry {
    pub id: String,
    pub image: PathBuf,
    pub heatmap: Option<PathBuf>,
    pub score: Option<f32>,
    pub reference_cot: Option<String>,
}

/// Parses one JSONL line; relative paths are resolved against `root`.
pub fn parse_line(line: &str, root: &Path) -> Result<ExplAigiEntry, DataError> {
    let l: Line = serde_json::from_str(line).map_err(|e| DataError::Format(format!("bad JSONL line: {e}")))?;
    let resolve = |p: &str| root.join(p.strip_prefix("./").unwrap_or(p));
    // The answer turn; "Sure. " and other preambles before the first heading are dropped.
    let reference_cot = l.conversations.iter().rev().find(|t| t.from == "gpt").map(|t| match t.value.find("###") {
        Some(i) => t.value[i..].to_string(),
        None => t.value.clone(),
    });
    Ok(ExplAigiEntry {
        id: l.id,
        image: resolve(&l.image),
        heatmap: l.heatmap.as_deref().map(resolve),
        score: l.score,
        reference_cot,
    })
}

/// The samples of a JSONL split; images and heatmaps under `root`.
pub fn samples(jsonl: &Path, root: &Path) -> Result<impl Iterator<Item = Result<Sample, DataError>>, DataError> {
    let file = std::fs::File::open(jsonl).map_err(|e| DataError::io(jsonl, e))?;
    let root = root.to_path_buf();
    let source = jsonl.to_path_buf();
    let lines = std::io::BufReader::new(file).lines().enumerate();
    Ok(lines.filter_map(move |(n, line)| {
        let line = match line {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(e) => return Some(Err(DataError::io(&source, e))),
        };
        Some(parse_line(&line, &root).map_err(|e| DataError::Format(format!("{}:{}: {e}", source.display(), n + 1))).and_then(
            |entry| {
                let heatmap = entry.heatmap.as_deref().map(read_gray_map).transpose()?;
                Ok(Sample { id: entry.id, image: entry.image, heatmap, score: entry.score, reference_cot: entry.reference_cot })
            },
        ))
    }))
}
