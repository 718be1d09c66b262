//! Monotone calibration of the two raw scores into the final score in [0, 1].
//!
//! `S = sigmoid(a·S_token + b·S_map + c)` with `a = softplus(â)`, `b = softplus(b̂)`: positive by
//! construction, so S increases with both inputs whatever training does to `â`, `b̂`.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::config::CalibrationConfig;
use crate::error::Result;
use crate::layers::softplus;

/// Inverse of softplus, `ln(eʸ − 1)`, for initialising the raw parameters from positive weights.
pub(crate) fn softplus_inverse(y: f32) -> f64 {
    let y = y as f64;
    // For large y, ln(e^y − 1) = y + ln(1 − e^{−y}) avoids overflow.
    y + (-(-y).exp()).ln_1p()
}

/// The calibration parameters (`calibration.token_weight_raw`, `.map_weight_raw`, `.bias`, each `[1]`).
#[derive(Debug, Clone)]
pub struct Calibration {
    token_weight_raw: Tensor,
    map_weight_raw: Tensor,
    bias: Tensor,
}

impl Calibration {
    /// Creates the parameters, initialised so the effective `(a, b, c)` equal `init`.
    pub fn new(init: &CalibrationConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            token_weight_raw: vb.get_with_hints(1, "token_weight_raw", Init::Const(softplus_inverse(init.token_weight)))?,
            map_weight_raw: vb.get_with_hints(1, "map_weight_raw", Init::Const(softplus_inverse(init.map_weight)))?,
            bias: vb.get_with_hints(1, "bias", Init::Const(init.bias as f64))?,
        })
    }

    /// `s_token`, `s_map` `[1]` (or any equal shapes) → calibrated score of the same shape.
    pub fn forward(&self, s_token: &Tensor, s_map: &Tensor) -> Result<Tensor> {
        let a = softplus(&self.token_weight_raw)?;
        let b = softplus(&self.map_weight_raw)?;
        let z = (s_token.broadcast_mul(&a)? + s_map.broadcast_mul(&b)?)?.broadcast_add(&self.bias)?;
        Ok(candle_nn::ops::sigmoid(&z)?)
    }

    /// The current effective `(a, b, c)`, e.g. to write a truthful config next to trained weights.
    pub fn effective(&self) -> Result<CalibrationConfig> {
        let scalar = |t: &Tensor| -> Result<f32> { Ok(t.flatten_all()?.to_vec1::<f32>()?[0]) };
        Ok(CalibrationConfig {
            token_weight: scalar(&softplus(&self.token_weight_raw)?)?,
            map_weight: scalar(&softplus(&self.map_weight_raw)?)?,
            bias: scalar(&self.bias)?,
        })
    }
}
