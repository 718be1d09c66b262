//! The verisimilitude scorer: one raw score from the `[SCORE]` hidden state, one from the fused heatmap.
//! Both are unbounded (logit-like) and rise with plausibility; `calibration` maps them to [0, 1].

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Init, VarBuilder};

use crate::config::HeadsConfig;
use crate::error::Result;
use crate::calibration::softplus_inverse;
use crate::layers::{softplus, Linear};
use crate::standardize::Standardize;
use crate::stitch::resize;

/// `S_token = FFN(standardise([SCORE] hidden))`: `W → D → 1` with GELU. The standardisation (see
/// `standardize.rs`) is fitted on the training set's `[SCORE]` states before training.
#[derive(Debug, Clone)]
pub struct TokenScorer {
    input: Standardize,
    fc1: Linear,
    fc2: Linear,
}

impl TokenScorer {
    /// Creates `input.{mean,scale}` `[W]`, `fc1` `[D, W]` and `fc2` `[1, D]`.
    pub fn new(cfg: &HeadsConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            input: Standardize::new(cfg.llm_width, vb.clone())?,
            fc1: Linear::new(cfg.llm_width, cfg.hidden_width, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.hidden_width, 1, vb.pp("fc2"))?,
        })
    }

    /// `hidden` `[W]` → `[1]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = crate::kernels::gelu(&self.fc1.forward(&self.input.forward(&hidden.unsqueeze(0)?)?)?)?;
        Ok(self.fc2.forward(&x)?.reshape(1)?)
    }
}

/// Channel widths of the map scorer's three stride-2 convolutions.
const MAP_CHANNELS: [usize; 4] = [1, 16, 32, 64];

/// Scale of the predicted defect mass `mean(heatmap)` in the monotone term: defects cover a few percent
/// of an image, so ×10 brings the typical mass to order 1, like the conv branch's output.
const MASS_SCALE: f64 = 10.0;

/// `S_map = FFN(pool(conv(resize(H)))) − softplus(m̂)·10·mean(H)` on the fused heatmap H.
///
/// The monotone term is the prior that more predicted defect means a less plausible image; its sign is
/// fixed by construction (`softplus > 0`), so no training run can turn it around. Why it is needed:
/// without it, S_map's relation to the amount of predicted defect was whatever the random conv net
/// started with, and the score loss did not correct it: the `[SCORE]` FFN fits the training scores
/// first and absorbs the loss. Measured on the fixture model (synthetic noise defects): after training,
/// S_map *rose* with the predicted mass (correlation 0.96) and had PLCC −0.23 on held-out images,
/// although the predicted mass itself had −0.33 (the right sign) there.
///
/// The conv branch still reads the *shape* of the evidence (one sharp blob vs. diffuse noise), but its
/// output layer starts at zero, so an untrained map scorer is the monotone term alone and the branch only
/// adds what the score loss supports. The heatmap enters detached: the map is trained by its own
/// losses against exact masks, and a score gradient through `mean(H)` would only push the whole map up
/// or down.
#[derive(Debug, Clone)]
pub struct MapScorer {
    convs: Vec<Conv2d>,
    fc1: Linear,
    fc2: Linear,
    mass_weight_raw: Tensor,
    size: usize,
}

impl MapScorer {
    /// Creates `conv.{0,1,2}` (3×3, stride 2, padding 1), `fc1` `[64, 64]`, `fc2` `[1, 64]` (zero) and
    /// `mass_weight_raw` `[1]` (softplus⁻¹ of 1).
    pub fn new(cfg: &HeadsConfig, vb: VarBuilder) -> Result<Self> {
        let conv_cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let convs = MAP_CHANNELS
            .windows(2)
            .enumerate()
            .map(|(i, c)| candle_nn::conv2d(c[0], c[1], 3, conv_cfg, vb.pp(format!("conv.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let width = MAP_CHANNELS[3];
        Ok(Self {
            convs,
            fc1: Linear::new(width, width, vb.pp("fc1"))?,
            fc2: Linear::from_tensors(
                vb.pp("fc2").get_with_hints((1, width), "weight", Init::Const(0.0))?,
                vb.pp("fc2").get_with_hints(1, "bias", Init::Const(0.0))?,
            ),
            mass_weight_raw: vb.get_with_hints(1, "mass_weight_raw", Init::Const(softplus_inverse(1.0)))?,
            size: cfg.score_map_size,
        })
    }

    /// `heatmap` `[H, W]` in [0, 1] → `[1]`.
    pub fn forward(&self, heatmap: &Tensor) -> Result<Tensor> {
        let heatmap = heatmap.detach();
        let mass = heatmap.mean_all()?.affine(MASS_SCALE, 0.0)?.reshape(1)?;
        let monotone = (softplus(&self.mass_weight_raw)? * mass)?;
        let mut x = resize(&heatmap, self.size, self.size)?.reshape((1, 1, self.size, self.size))?;
        for conv in &self.convs {
            x = crate::kernels::gelu(&conv.forward(&x)?)?;
        }
        let pooled = x.mean((2, 3))?; // [1, C]
        let h = crate::kernels::gelu(&self.fc1.forward(&pooled)?)?;
        let shape = self.fc2.forward(&h)?.reshape(1)?;
        Ok((shape - monotone)?)
    }

    /// The effective weight `softplus(m̂)` of the monotone mass term (positive).
    pub fn mass_weight(&self) -> Result<f32> {
        Ok(softplus(&self.mass_weight_raw)?.to_vec1::<f32>()?[0])
    }
}
