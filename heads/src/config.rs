//! Hyper-parameters of the heads, stored as JSON next to (inside) the weights.

use serde::{Deserialize, Serialize};

use crate::error::{HeadsError, Result};

/// How the local (tile) and global (thumbnail) heatmaps are combined per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FusionVariant {
    /// The paper's rule: weights `e^{-σ}` from the predicted Laplace scales, normalised per pixel.
    Adaptive,
    /// A constant weight on the local map (ablation / fallback when σ is untrained).
    Fixed {
        /// Weight of the local map, in [0, 1]; the global map gets `1 - local_weight`.
        local_weight: f32,
    },
    /// One learned scalar (through a sigmoid) for the whole image.
    Learned,
}

/// Parameters of the monotone calibration `S = sigmoid(a·S_token + b·S_map + c)`.
///
/// `a` and `b` must be positive: they are stored in the weights as softplus pre-activations so that
/// training keeps them positive, which makes the score monotone increasing in both inputs. The values here
/// initialise a fresh model; `Heads::save` writes back the current (trained) values so the JSON is truthful.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationConfig {
    /// `a`, the weight of the token score (> 0).
    pub token_weight: f32,
    /// `b`, the weight of the map score (> 0).
    pub map_weight: f32,
    /// `c`, the bias.
    pub bias: f32,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self { token_weight: 1.0, map_weight: 1.0, bias: 0.0 }
    }
}

/// All hyper-parameters of the heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadsConfig {
    /// Width W of the LLM hidden states and of the projected image features (1536 for InternVL3-2B).
    pub llm_width: usize,
    /// Side g of the square token grid of one tile (16 for InternVL3: 256 tokens per tile).
    pub token_grid: usize,
    /// Width D of the mapper's tokens.
    #[serde(default = "default_hidden_width")]
    pub hidden_width: usize,
    /// Number of attention heads in every attention layer.
    #[serde(default = "default_attention_heads")]
    pub attention_heads: usize,
    /// Number of two-way attention layers.
    #[serde(default = "default_two_way_layers")]
    pub two_way_layers: usize,
    /// Hidden width of the MLP inside each two-way layer.
    #[serde(default = "default_mlp_dim")]
    pub mlp_dim: usize,
    /// The cross-attentions work at `hidden_width / cross_attention_downsample` (SAM uses 2).
    #[serde(default = "default_cross_attention_downsample")]
    pub cross_attention_downsample: usize,
    /// How local and global maps are fused.
    #[serde(default = "default_fusion")]
    pub fusion: FusionVariant,
    /// Side of the square the fused heatmap is resized to before the map scorer's conv net.
    #[serde(default = "default_score_map_size")]
    pub score_map_size: usize,
    /// Calibration of the final score.
    #[serde(default)]
    pub calibration: CalibrationConfig,
}

fn default_hidden_width() -> usize {
    256
}
fn default_attention_heads() -> usize {
    8
}
fn default_two_way_layers() -> usize {
    2
}
fn default_mlp_dim() -> usize {
    2048
}
fn default_cross_attention_downsample() -> usize {
    2
}
fn default_fusion() -> FusionVariant {
    FusionVariant::Adaptive
}
fn default_score_map_size() -> usize {
    64
}

/// Upper bound on any single size, to turn absurd configs into errors instead of huge allocations.
const MAX_DIM: usize = 1 << 16;

impl HeadsConfig {
    /// A config with the paper's defaults for an LLM of width `llm_width` and a `token_grid`² token tile.
    pub fn new(llm_width: usize, token_grid: usize) -> Self {
        Self {
            llm_width,
            token_grid,
            hidden_width: default_hidden_width(),
            attention_heads: default_attention_heads(),
            two_way_layers: default_two_way_layers(),
            mlp_dim: default_mlp_dim(),
            cross_attention_downsample: default_cross_attention_downsample(),
            fusion: default_fusion(),
            score_map_size: default_score_map_size(),
            calibration: CalibrationConfig::default(),
        }
    }

    /// Image tokens per tile (`token_grid²`).
    pub fn tokens_per_tile(&self) -> usize {
        self.token_grid * self.token_grid
    }

    /// Side of one tile's heatmap: the decoder upsamples the token grid ×4.
    pub fn tile_map_size(&self) -> usize {
        4 * self.token_grid
    }

    /// Parses and validates a JSON config.
    pub fn from_json(json: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(json)
            .map_err(|e| HeadsError::Config { field: "json", reason: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Serialises the config to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialisation cannot fail")
    }

    /// Checks every value and their consistency; every later stage relies on this.
    pub fn validate(&self) -> Result<()> {
        let err = |field, reason: String| Err(HeadsError::Config { field, reason });
        for (field, v) in [
            ("llm_width", self.llm_width),
            ("token_grid", self.token_grid),
            ("hidden_width", self.hidden_width),
            ("attention_heads", self.attention_heads),
            ("two_way_layers", self.two_way_layers),
            ("mlp_dim", self.mlp_dim),
            ("cross_attention_downsample", self.cross_attention_downsample),
            ("score_map_size", self.score_map_size),
        ] {
            if v == 0 || v > MAX_DIM {
                return err(field, format!("must be in 1..={MAX_DIM}, got {v}"));
            }
        }
        // The decoder's channel widths are D/4 and D/8, and the positional encoding splits D in quarters.
        if !self.hidden_width.is_multiple_of(8) {
            return err("hidden_width", format!("must be a multiple of 8, got {}", self.hidden_width));
        }
        if !self.hidden_width.is_multiple_of(self.attention_heads) {
            return err(
                "attention_heads",
                format!("{} heads do not divide hidden_width {}", self.attention_heads, self.hidden_width),
            );
        }
        if !self.hidden_width.is_multiple_of(self.cross_attention_downsample)
            || !(self.hidden_width / self.cross_attention_downsample).is_multiple_of(self.attention_heads)
        {
            return err(
                "cross_attention_downsample",
                format!(
                    "hidden_width {} / {} must be divisible by attention_heads {}",
                    self.hidden_width, self.cross_attention_downsample, self.attention_heads
                ),
            );
        }
        // Three stride-2 convolutions must divide the scorer input exactly.
        if !self.score_map_size.is_multiple_of(8) {
            return err("score_map_size", format!("must be a multiple of 8, got {}", self.score_map_size));
        }
        if let FusionVariant::Fixed { local_weight } = self.fusion {
            if !(0.0..=1.0).contains(&local_weight) {
                return err("fusion.local_weight", format!("must be in [0, 1], got {local_weight}"));
            }
        }
        let c = &self.calibration;
        for (field, v) in [("calibration.token_weight", c.token_weight), ("calibration.map_weight", c.map_weight)] {
            // Strictly positive and not so large that the softplus inverse overflows.
            if !(v.is_finite() && v > 0.0 && v < 1e4) {
                return err(field, format!("must be in (0, 1e4) to keep the score monotone, got {v}"));
            }
        }
        if !c.bias.is_finite() {
            return err("calibration.bias", format!("must be finite, got {}", c.bias));
        }
        Ok(())
    }
}
