//! Per-pixel fusion of the local and global heatmaps.
//!
//! Adaptive (the paper): each map's error is modelled as Laplace with scale σ, and the maps are weighted
//! by `e^{-σ}`, normalised per pixel: `w_l = e^{-σ_l} / (e^{-σ_l} + e^{-σ_g}) = sigmoid(σ_g − σ_l)`.
//! The sigmoid form is the same number without the underflow of `e^{-σ}` for large σ.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::config::FusionVariant;
use crate::error::Result;

/// log σ is clamped to this range before `σ = exp(log σ)`: beyond it the weight is already saturated,
/// and an untrained σ head could otherwise produce `inf − inf = NaN`.
pub const LOG_SIGMA_RANGE: (f64, f64) = (-10.0, 10.0);

/// `σ = exp(clamp(log σ))`, applied per tile before the maps are resized: resizing σ (a convex blend
/// of positive values) rather than log σ needs one `exp` per tile pixel instead of one per output pixel.
pub fn sigma_from_log(log_sigma: &Tensor) -> Result<Tensor> {
    let (lo, hi) = LOG_SIGMA_RANGE;
    Ok(log_sigma.clamp(lo, hi)?.exp()?)
}

/// The fusion rule, with its parameter when learned.
#[derive(Debug, Clone)]
pub enum Fusion {
    /// `w_l = sigmoid(σ_g − σ_l)` per pixel.
    Adaptive,
    /// `w_l` constant.
    Fixed(f32),
    /// `w_l = sigmoid(logit)` with a learned scalar `logit` (`fusion.local_logit`, shape `[1]`).
    Learned(Tensor),
}

/// Fused map and the quantities that produced it, all `[..., H, W]`.
#[derive(Debug, Clone)]
pub struct FusionOutput {
    /// `w_l·H_l + (1 − w_l)·H_g`.
    pub fused: Tensor,
    /// `w_l` per pixel (broadcast to the map shape for the constant variants).
    pub local_weight: Tensor,
    /// σ of the local map.
    pub sigma_local: Tensor,
    /// σ of the global map.
    pub sigma_global: Tensor,
}

impl Fusion {
    /// Creates the fusion of `variant` (a parameter only for `Learned`, initialised to an even split).
    pub fn new(variant: FusionVariant, vb: VarBuilder) -> Result<Self> {
        Ok(match variant {
            FusionVariant::Adaptive => Fusion::Adaptive,
            FusionVariant::Fixed { local_weight } => Fusion::Fixed(local_weight),
            FusionVariant::Learned => Fusion::Learned(vb.get_with_hints(1, "local_logit", Init::Const(0.0))?),
        })
    }

    /// The local weight when it is the same for every pixel (Fixed, Learned), `None` for Adaptive.
    pub fn constant_weight(&self) -> Result<Option<f32>> {
        Ok(match self {
            Fusion::Adaptive => None,
            Fusion::Fixed(w) => Some(*w),
            Fusion::Learned(logit) => Some(candle_nn::ops::sigmoid(logit)?.flatten_all()?.to_vec1::<f32>()?[0]),
        })
    }

    /// Fuses probability maps `local`, `global` given their σ maps (all the same shape).
    pub fn forward(&self, local: &Tensor, global: &Tensor, sigma_local: &Tensor, sigma_global: &Tensor) -> Result<FusionOutput> {
        let (sigma_local, sigma_global) = (sigma_local.clone(), sigma_global.clone());
        let local_weight = match self {
            Fusion::Adaptive => candle_nn::ops::sigmoid(&(&sigma_global - &sigma_local)?)?,
            Fusion::Fixed(w) => local.ones_like()?.affine(*w as f64, 0.0)?,
            Fusion::Learned(logit) => candle_nn::ops::sigmoid(logit)?.broadcast_as(local.shape())?.contiguous()?,
        };
        // w·L + (1−w)·G = G + w·(L − G): one product fewer.
        let fused = (global + (&local_weight * (local - global)?)?)?;
        Ok(FusionOutput { fused, local_weight, sigma_local, sigma_global })
    }
}
