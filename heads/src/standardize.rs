//! Per-dimension standardisation of an LLM hidden state with statistics fitted on the training data.
//!
//! Why: the last-layer state at a marker token is dominated by what every image shares (the same
//! text, the same position). Measured on the fixture model, the `[SCORE]` state has norm 8 with a
//! per-dimension spread across images of 0.007: the image-dependent part is under 1% of the input. An
//! FFN on the raw state sees an almost constant vector and cannot fit the scores even on the training
//! set; after `(x − mean) / std` the image-dependent part is what it sees. The statistics are fitted
//! (like the calibration), not trained: [`is_statistic`] keeps them out of the optimiser. A fresh model
//! has mean 0 and scale 1, the identity.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::error::{HeadsError, Result};

/// Smallest scale: f16 feature shards resolve unit-sized values to about 5e-4, so a spread below this
/// is storage noise, and dividing by it would amplify that noise into the largest input.
pub const MIN_SCALE: f32 = 1e-3;

/// Parameter-name suffixes of the fitted statistics.
const STATISTIC_SUFFIXES: [&str; 2] = [".input.mean", ".input.scale"];

/// Whether a parameter name (as in the weights file) is a fitted statistic rather than a trained weight.
pub fn is_statistic(name: &str) -> bool {
    STATISTIC_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// `(x − mean) / scale` with `mean`, `scale` `[W]` (stored as `input.mean`, `input.scale`).
#[derive(Debug, Clone)]
pub struct Standardize {
    mean: Tensor,
    scale: Tensor,
}

impl Standardize {
    /// Creates (or loads) the statistics of width `dim` under `vb.pp("input")`: identity when fresh.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("input");
        Ok(Self { mean: vb.get_with_hints(dim, "mean", Init::Const(0.0))?, scale: vb.get_with_hints(dim, "scale", Init::Const(1.0))? })
    }

    /// `x` `[..., W]` → standardised, same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(&self.mean)?.broadcast_div(&self.scale)?)
    }
}

/// Mean and standard deviation (population, floored at [`MIN_SCALE`]) per dimension of `rows`, each of
/// length `dim`. Errors on no rows, a wrong length or non-finite values.
pub fn statistics<'a>(rows: impl IntoIterator<Item = &'a [f32]>, dim: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let bad = |reason: String| HeadsError::Input { field: "statistics", reason };
    // f64 accumulators: thousands of unit-sized values whose spread is 1e-3 of their size.
    let (mut sum, mut sum_sq, mut n) = (vec![0f64; dim], vec![0f64; dim], 0usize);
    for row in rows {
        if row.len() != dim {
            return Err(bad(format!("a row has {} values, expected {dim}", row.len())));
        }
        if !row.iter().all(|v| v.is_finite()) {
            return Err(bad("a row contains NaN or infinite values".into()));
        }
        for ((s, q), &v) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(row) {
            *s += v as f64;
            *q += v as f64 * v as f64;
        }
        n += 1;
    }
    if n == 0 {
        return Err(bad("no rows to fit on".into()));
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let scale = sum_sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / n as f64 - m * m).max(0.0).sqrt() as f32).max(MIN_SCALE))
        .collect();
    Ok((mean.into_iter().map(|m| m as f32).collect(), scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_mean_and_floored_std_and_bad_rows_fail() {
        let rows: [&[f32]; 2] = [&[1.0, 5.0], &[3.0, 5.0]];
        let (mean, scale) = statistics(rows, 2).unwrap();
        assert_eq!(mean, vec![2.0, 5.0]);
        assert_eq!(scale, vec![1.0, MIN_SCALE]);
        assert!(statistics(std::iter::empty(), 2).is_err());
        assert!(statistics([&[1.0f32][..]], 2).is_err());
        assert!(statistics([&[f32::NAN, 0.0][..]], 2).is_err());
        assert!(is_statistic("token_scorer.input.mean") && !is_statistic("token_scorer.fc1.weight"));
    }
}
