//! The trained HEIE heads in the pipeline: feeds them what the language model captured and turns
//! their output into the primary heatmap and score (mode `trained`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use heie_heads::{Heads, HeadsError, HeadsInput, ProjectedView, ViewInput};

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

    /// Starts projecting one view's image features for the heads on a rayon worker, so that the widest
    /// matrix product of the heads (every image token from the LLM's width to the mapper's) runs while
    /// the text is still being written instead of after the last marker, and the raw features (~1.5 MB a
    /// tile at the 2B shape, 3.7 MB at 8B) are not kept for the whole evaluation.
    pub fn project_in_background(self: &Arc<Self>, features: Vec<f32>) -> PendingProjection {
        let (done, result) = sync_channel(1);
        let heads = Arc::clone(self);
        rayon::spawn(move || {
            // A panic must not reach rayon (it would abort the process): it becomes this view's error.
            let projected = catch_unwind(AssertUnwindSafe(|| heads.heads.project_view(&features).map_err(|e| e.to_string())))
                .unwrap_or_else(|_| Err("the projection panicked".into()));
            // The evaluation may have ended (cancelled) and dropped its receiver: nothing to deliver.
            let _ = done.send(projected);
        });
        PendingProjection { result: Mutex::new(result) }
    }

    /// Runs the heads on one image's captures; the heatmap is `height × width`. Waits for the views'
    /// projections (normally finished long before: they started when the tiles were encoded).
    pub fn run(&self, captured: &Captured, width: u32, height: u32) -> Result<(HeatmapOutput, ScoreOutput), String> {
        let projected = wait_for_views(captured)?;
        let input = heads_input(captured, &projected, width as usize, height as usize)?;
        let out = self.heads.forward_projected(&input).map_err(|e| e.to_string())?;
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

/// One view's projection under way (see [`TrainedHeads::project_in_background`]).
#[derive(Debug)]
pub struct PendingProjection {
    /// In a mutex only so that [`Captured`] can be shared (it is waited on by one thread).
    result: Mutex<Receiver<Result<ProjectedView, String>>>,
}

impl PendingProjection {
    fn wait(&self) -> Result<ProjectedView, String> {
        let result = self.result.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        result.recv().unwrap_or_else(|_| Err("the projection worker stopped".into()))
    }
}

fn view_name(i: usize, n_tiles: usize) -> String {
    if i < n_tiles { format!("tiles[{i}]") } else { "thumbnail".to_string() }
}

/// Every view's projection, in order, once the counts are right. Fails when a sequence ended before
/// every tile was encoded or every marker captured.
fn wait_for_views(captured: &Captured) -> Result<Vec<ProjectedView>, String> {
    let n_tiles = captured.tiling.n_tiles() as usize;
    let n_views = n_tiles + usize::from(captured.tiling.has_thumbnail);
    if captured.projected.len() != n_views || captured.map_hidden.len() != n_views {
        return Err(format!(
            "expected {n_views} tile feature blocks and [MAP] states, captured {} and {}",
            captured.projected.len(),
            captured.map_hidden.len()
        ));
    }
    let view = |(i, p): (usize, &PendingProjection)| p.wait().map_err(|e| format!("{}.features: {e}", view_name(i, n_tiles)));
    captured.projected.iter().enumerate().map(view).collect()
}

/// Arranges captures as the heads expect: grid tiles with their `[MAP]` states, then the thumbnail
/// with the global one. `projected` has one view per `[MAP]` state (checked by [`wait_for_views`]).
fn heads_input<'a>(
    captured: &'a Captured,
    projected: &'a [ProjectedView],
    out_width: usize,
    out_height: usize,
) -> Result<HeadsInput<'a, &'a ProjectedView>, String> {
    let n_tiles = captured.tiling.n_tiles() as usize;
    let score_hidden = captured.score_hidden.as_deref().ok_or("the [SCORE] state was not captured")?;
    let view = |i: usize| ViewInput { map_hidden: captured.map_hidden[i].as_slice(), features: &projected[i] };
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
