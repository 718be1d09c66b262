//! The trained HEIE heads in the pipeline: feeds them what the language model captured and turns
//! their output into the primary heatmap and score (mode `trained`).

use std::path::Path;

use heie_heads::{Heads, HeadsError, HeadsInput, TileFeatures};

use crate::engine::ModelInfo;

use super::captured::Captured;
use super::events::{HeatmapOutput, OutputMode, ScoreOutput, TrainedScoreParts};

/// Heads loaded for the running model (their widths were checked against it at load).
#[derive(Debug)]
pub struct TrainedHeads {
    heads: Heads,
}

impl TrainedHeads {
    /// Loads a heads file and checks it fits the running model's width and tokens per tile.
    pub fn load(path: &Path, info: &ModelInfo) -> Result<TrainedHeads, HeadsError> {
        Ok(TrainedHeads { heads: Heads::load(path, info.n_embd, info.tokens_per_tile)? })
    }

    pub fn from_heads(heads: Heads) -> TrainedHeads {
        TrainedHeads { heads }
    }

    pub fn heads(&self) -> &Heads {
        &self.heads
    }

    /// Runs the heads on one image's captures; the heatmap is `height × width`.
    pub fn run(&self, captured: &Captured, width: u32, height: u32) -> Result<(HeatmapOutput, ScoreOutput), String> {
        let input = heads_input(captured, width as usize, height as usize)?;
        let out = self.heads.forward(&input).map_err(|e| e.to_string())?;
        let heatmap = HeatmapOutput { map: out.heatmap, mode: OutputMode::Trained, local_weight: Some(out.local_weight) };
        let score = ScoreOutput {
            score: out.score,
            mode: OutputMode::Trained,
            level_probabilities: captured.rating.as_ref().map(|r| r.probabilities).unwrap_or([0.0; 5]),
            trained: Some(TrainedScoreParts { s_token: out.s_token, s_map: out.s_map }),
        };
        Ok((heatmap, score))
    }
}

/// Arranges captures as the heads expect: grid tiles with their `[MAP]` states, then the thumbnail
/// with the global one. Fails when a sequence ended before every marker was captured.
pub fn heads_input(captured: &Captured, out_width: usize, out_height: usize) -> Result<HeadsInput<'_>, String> {
    let n_tiles = captured.tiling.n_tiles() as usize;
    let n_views = n_tiles + usize::from(captured.tiling.has_thumbnail);
    if captured.features.len() != n_views || captured.map_hidden.len() != n_views {
        return Err(format!(
            "expected {n_views} tile feature blocks and [MAP] states, captured {} and {}",
            captured.features.len(),
            captured.map_hidden.len()
        ));
    }
    let score_hidden = captured.score_hidden.as_deref().ok_or("the [SCORE] state was not captured")?;
    let view = |i: usize| TileFeatures { map_hidden: &captured.map_hidden[i], features: &captured.features[i] };
    Ok(HeadsInput {
        grid_cols: captured.tiling.grid.cols as usize,
        grid_rows: captured.tiling.grid.rows as usize,
        tiles: (0..n_tiles).map(view).collect(),
        thumbnail: captured.tiling.has_thumbnail.then(|| view(n_tiles)),
        score_hidden,
        out_width,
        out_height,
    })
}
