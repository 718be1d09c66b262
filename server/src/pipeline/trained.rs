//! The trained HEIE heads in the pipeline: feeds them what the language model captured and turns
//! their output into the primary heatmap and score (mode `trained`).

use std::path::Path;

use heie_heads::{Heads, HeadsError};

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

    /// Completes one image's heads output once the language model is done: the heatmap side was
    /// computed on the heads thread when the `[MAP]` states were captured (see `heads_worker.rs`); the
    /// `[SCORE]` state adds the score.
    pub fn run(&self, captured: &Captured) -> Result<(HeatmapOutput, ScoreOutput), String> {
        let maps = match &captured.maps {
            Some(pending) => pending.wait()?,
            None => {
                let n_views = captured.tiling.n_tiles() as usize + usize::from(captured.tiling.has_thumbnail);
                return Err(format!("expected {n_views} [MAP] states, captured {}", captured.map_hidden.len()));
            }
        };
        let score_hidden = captured.score_hidden.as_deref().ok_or("the [SCORE] state was not captured")?;
        let out = self.heads.score_maps(maps, score_hidden).map_err(|e| e.to_string())?;
        let heatmap = HeatmapOutput { map: out.heatmap, mode: OutputMode::Trained, local_weight: Some(out.local_weight) };
        let score = ScoreOutput {
            score: out.score,
            mode: OutputMode::Trained,
            level_probabilities: captured.rating.as_ref().map(|r| r.probabilities).unwrap_or([0.0; 5]),
            trained: Some(TrainedScoreParts { s_token: out.s_token, s_map: out.s_map }),
            uncalibrated: None,
        };
        Ok((heatmap, score))
    }
}
