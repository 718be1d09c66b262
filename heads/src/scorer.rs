//! The verisimilitude scorer: one raw score from the `[SCORE]` hidden state, one from the fused heatmap.
//! Both are unbounded (logit-like); `calibration` maps them to [0, 1].

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::config::HeadsConfig;
use crate::error::Result;
use crate::layers::Linear;
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

/// `S_map = FFN(pool(conv(resize(heatmap))))`: the *shape* of the evidence (one sharp blob vs. diffuse
/// noise) says more about plausibility than its mean, hence a conv net rather than a pooled statistic.
#[derive(Debug, Clone)]
pub struct MapScorer {
    convs: Vec<Conv2d>,
    fc1: Linear,
    fc2: Linear,
    size: usize,
}

impl MapScorer {
    /// Creates `conv.{0,1,2}` (3×3, stride 2, padding 1) and `fc1` `[64, 64]`, `fc2` `[1, 64]`.
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
            fc2: Linear::new(width, 1, vb.pp("fc2"))?,
            size: cfg.score_map_size,
        })
    }

    /// `heatmap` `[H, W]` in [0, 1] → `[1]`.
    pub fn forward(&self, heatmap: &Tensor) -> Result<Tensor> {
        let mut x = resize(heatmap, self.size, self.size)?.reshape((1, 1, self.size, self.size))?;
        for conv in &self.convs {
            x = crate::kernels::gelu(&conv.forward(&x)?)?;
        }
        let pooled = x.mean((2, 3))?; // [1, C]
        let h = crate::kernels::gelu(&self.fc1.forward(&pooled)?)?;
        Ok(self.fc2.forward(&h)?.reshape(1)?)
    }
}
