//! What the serving API returns: the heatmap side alone ([`HeadsMaps`], before the `[SCORE]` state is
//! known) and the whole result for one image ([`HeadsOutput`]).

use candle_core::Tensor;
use ndarray::Array2;

use crate::render::Rendered;

/// The heatmap side of the heads' output, before the `[SCORE]` state is known: every map at output
/// size and the map scorer's `S_map`. [`Heads::score_maps`](crate::Heads::score_maps) completes it.
#[derive(Debug, Clone)]
pub struct HeadsMaps {
    pub(crate) rendered: Rendered,
    pub(crate) s_map: Tensor,
}

/// Results for one image; every map is `out_height × out_width`.
#[derive(Debug, Clone)]
pub struct HeadsOutput {
    /// Fused heatmap in [0, 1].
    pub heatmap: Array2<f32>,
    /// Local (stitched tiles) heatmap in [0, 1].
    pub local: Array2<f32>,
    /// Global (thumbnail) heatmap in [0, 1].
    pub global: Array2<f32>,
    /// Weight of the local map per pixel, in [0, 1] (the global one is `1 − local_weight`).
    pub local_weight: Array2<f32>,
    /// Laplace scale σ of the local map.
    pub sigma_local: Array2<f32>,
    /// Laplace scale σ of the global map.
    pub sigma_global: Array2<f32>,
    /// Calibrated plausibility score in [0, 1].
    pub score: f32,
    /// Raw (unbounded) score from the `[SCORE]` hidden state.
    pub s_token: f32,
    /// Raw (unbounded) score from the fused heatmap.
    pub s_map: f32,
}
