//! The whole heads as one differentiable candle graph: tiles in, maps and scores out.
//!
//! `Heads::forward` (the serving API) and training call the same `HeadsModel::forward`, so there is one
//! definition of every module and of the geometry.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::calibration::Calibration;
use crate::config::HeadsConfig;
use crate::error::Result;
use crate::fusion::{sigma_from_log, Fusion};
use crate::mapper::Mapper;
use crate::scorer::{MapScorer, TokenScorer};
use crate::stitch::hierarchy;

/// Inputs as tensors. The caller guarantees the shapes (`Heads::forward` checks them for slices).
#[derive(Debug, Clone)]
pub struct TensorInput {
    /// Tile grid columns.
    pub grid_cols: usize,
    /// Tile grid rows.
    pub grid_rows: usize,
    /// `[MAP]` hidden states `[N(+1), W]`: the `cols·rows` tiles in row-major order, then the thumbnail.
    pub map_hidden: Tensor,
    /// Image features `[N(+1), g², W]`, same order.
    pub features: Tensor,
    /// Whether the last row of `map_hidden`/`features` is the thumbnail (never for a 1×1 grid).
    pub has_thumbnail: bool,
    /// `[SCORE]` hidden state `[W]`.
    pub score_hidden: Tensor,
    /// Output map height.
    pub out_height: usize,
    /// Output map width.
    pub out_width: usize,
}

/// Outputs as tensors; maps are `[out_h, out_w]`, scores `[1]`.
#[derive(Debug, Clone)]
pub struct TensorOutput {
    /// Per-tile (and thumbnail) heatmap logits `[N(+1), 4g, 4g]`, before stitching.
    pub tile_logits: Tensor,
    /// Per-tile log σ `[N(+1), 4g, 4g]`.
    pub tile_log_sigma: Tensor,
    /// Fused heatmap in [0, 1].
    pub heatmap: Tensor,
    /// Local heatmap H_l in [0, 1].
    pub local: Tensor,
    /// Global heatmap H_g in [0, 1].
    pub global: Tensor,
    /// log σ of H_l (the log of the resized σ; what the Laplace NLL takes).
    pub log_sigma_local: Tensor,
    /// log σ of H_g.
    pub log_sigma_global: Tensor,
    /// σ of H_l: per-tile `exp(clamp(log σ))` (see `fusion::LOG_SIGMA_RANGE`), stitched and resized.
    pub sigma_local: Tensor,
    /// σ of H_g.
    pub sigma_global: Tensor,
    /// Per-pixel weight of H_l in the fusion.
    pub local_weight: Tensor,
    /// Raw token score.
    pub s_token: Tensor,
    /// Raw map score.
    pub s_map: Tensor,
    /// Calibrated score in [0, 1].
    pub score: Tensor,
}

/// All learned modules. Parameter names are the module paths (`mapper.*`, `fusion.*`, `token_scorer.*`,
/// `map_scorer.*`, `calibration.*`).
#[derive(Debug, Clone)]
pub struct HeadsModel {
    /// The mapper base block, shared by tiles and thumbnail.
    pub mapper: Mapper,
    /// The local/global fusion.
    pub fusion: Fusion,
    /// S_token.
    pub token_scorer: TokenScorer,
    /// S_map.
    pub map_scorer: MapScorer,
    /// Calib(S_token, S_map).
    pub calibration: Calibration,
}

impl HeadsModel {
    /// Creates (or loads, depending on `vb`'s backend) every parameter for a validated `cfg`.
    pub fn new(cfg: &HeadsConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mapper: Mapper::new(cfg, vb.pp("mapper"))?,
            fusion: Fusion::new(cfg.fusion, vb.pp("fusion"))?,
            token_scorer: TokenScorer::new(cfg, vb.pp("token_scorer"))?,
            map_scorer: MapScorer::new(cfg, vb.pp("map_scorer"))?,
            calibration: Calibration::new(&cfg.calibration, vb.pp("calibration"))?,
        })
    }

    /// The full forward pass, differentiable end to end.
    pub fn forward(&self, input: &TensorInput) -> Result<TensorOutput> {
        // All tiles and the thumbnail go through the mapper as one batch: one big projection GEMM.
        let maps = self.mapper.forward(&input.map_hidden, &input.features)?;
        let probs = candle_nn::ops::sigmoid(&maps.logits)?;
        // Probabilities and σ share the geometry; stitch and resize them together.
        let both = Tensor::stack(&[&probs, &sigma_from_log(&maps.log_sigma)?], 0)?;
        let h = hierarchy(&both, input.grid_cols, input.grid_rows, input.has_thumbnail, input.out_height, input.out_width)?;
        let pick = |t: &Tensor, i: usize| -> Result<Tensor> { Ok(t.narrow(0, i, 1)?.squeeze(0)?) };
        let (local, sigma_local) = (pick(&h.local, 0)?, pick(&h.local, 1)?);
        let (global, sigma_global) = (pick(&h.global, 0)?, pick(&h.global, 1)?);

        let fused = self.fusion.forward(&local, &global, &sigma_local, &sigma_global)?;
        let s_token = self.token_scorer.forward(&input.score_hidden)?;
        let s_map = self.map_scorer.forward(&fused.fused)?;
        let score = self.calibration.forward(&s_token, &s_map)?;
        debug_assert_eq!(fused.fused.dims(), &[input.out_height, input.out_width]);
        Ok(TensorOutput {
            tile_logits: maps.logits,
            tile_log_sigma: maps.log_sigma,
            heatmap: fused.fused,
            local,
            global,
            log_sigma_local: fused.sigma_local.log()?,
            log_sigma_global: fused.sigma_global.log()?,
            sigma_local: fused.sigma_local,
            sigma_global: fused.sigma_global,
            local_weight: fused.local_weight,
            s_token,
            s_map,
            score,
        })
    }
}
