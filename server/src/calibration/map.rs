//! A fitted calibration as a function: raw score and category severities in, the user's P(keep) out.
//!
//! calibrated = σ(bias + w_s · logit(clip(iso(s))) + Σ_c w_c · severity_c), where iso is the isotonic
//! map of the raw score. For fixed severities it never decreases as s grows: iso is non-decreasing,
//! clip and logit are increasing, and the fit keeps w_s ≥ 0.

use super::features::{Features, CATEGORY_COUNT};
use super::isotonic::Isotonic;
use super::logistic::sigmoid;

/// The isotonic output is kept in [LOGIT_CLIP, 1 − LOGIT_CLIP] before its logit: a stretch of scores
/// where every training image was kept (P = 1) would otherwise give an infinite feature. 0.01 bounds
/// the logit to ±4.6, which leaves the severities room to overrule it.
pub const LOGIT_CLIP: f64 = 0.01;

/// Number of logistic weights: bias, score, one per category.
pub const WEIGHT_COUNT: usize = 2 + CATEGORY_COUNT;

/// The calibration function.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationMap {
    pub isotonic: Isotonic,
    pub bias: f64,
    /// Weight of logit(clip(iso(s))); at least 0.
    pub score_weight: f64,
    /// Per category, in `RegionCategory::ALL` order.
    pub severity_weights: [f64; CATEGORY_COUNT],
}

impl CalibrationMap {
    /// The logistic regression's input for one image: [1, logit(clip(iso(s))), severities…].
    pub fn row(isotonic: &Isotonic, features: &Features) -> Vec<f64> {
        let p = isotonic.at(f64::from(features.score)).clamp(LOGIT_CLIP, 1.0 - LOGIT_CLIP);
        let mut row = Vec::with_capacity(WEIGHT_COUNT);
        row.push(1.0);
        row.push((p / (1.0 - p)).ln());
        row.extend(features.severities.iter().map(|&s| if s.is_finite() { f64::from(s) } else { 0.0 }));
        row
    }

    /// The weights in row order.
    pub fn weights(&self) -> Vec<f64> {
        let mut w = vec![self.bias, self.score_weight];
        w.extend(self.severity_weights);
        w
    }

    /// The calibrated score of one image, in [0, 1].
    pub fn calibrate(&self, features: &Features) -> f32 {
        let row = CalibrationMap::row(&self.isotonic, features);
        let z: f64 = self.weights().iter().zip(&row).map(|(w, x)| w * x).sum();
        sigmoid(z) as f32
    }
}
