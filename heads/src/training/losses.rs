//! The paper's training losses as candle functions (differentiable, mean-reduced scalars).

use candle_core::Tensor;

use crate::error::Result;

/// Probabilities are clamped to `[EPS, 1 − EPS]` inside the logs so a saturated prediction gives a large
/// but finite loss (and gradient) instead of `inf`.
const EPS: f64 = 1e-6;

/// Binary focal loss (Lin et al.) on a probability map against a target in [0, 1] (soft targets allowed):
/// `−α·t·(1−p)^γ·ln p − (1−α)·(1−t)·p^γ·ln(1−p)`, averaged over pixels.
pub fn focal_loss(pred: &Tensor, target: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let p = pred.clamp(EPS, 1.0 - EPS)?;
    let one_minus_p = p.affine(-1.0, 1.0)?;
    let one_minus_t = target.affine(-1.0, 1.0)?;
    let pos = (target * one_minus_p.powf(gamma)?)?.mul(&p.log()?)?.affine(-alpha, 0.0)?;
    let neg = (one_minus_t * p.powf(gamma)?)?.mul(&one_minus_p.log()?)?.affine(-(1.0 - alpha), 0.0)?;
    Ok((pos + neg)?.mean_all()?)
}

/// Laplace negative log-likelihood (up to a constant) of `target` under a Laplace with mean `pred` and
/// scale σ = exp(`log_sigma`): `√2/σ·|H − H_gt| + ln σ`, averaged over pixels. Taking log σ keeps σ > 0.
pub fn laplace_nll(pred: &Tensor, target: &Tensor, log_sigma: &Tensor) -> Result<Tensor> {
    let abs_err = (pred - target)?.abs()?;
    let scaled = (abs_err * log_sigma.neg()?.exp()?)?.affine(std::f64::consts::SQRT_2, 0.0)?;
    Ok((scaled + log_sigma)?.mean_all()?)
}

/// Mean squared error of predicted scores against targets (same shapes).
pub fn score_mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred - target)?.sqr()?.mean_all()?)
}
