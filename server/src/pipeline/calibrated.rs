//! The one place a user's calibration (`heie serve/eval --calibration`) touches a score: the primary
//! score, in the finalizer, before it is sent and before the summary and band are made from it.

use crate::calibration::{Calibration, Features};

use super::events::ScoreOutput;

/// `score` with the calibration applied: the calibrated value in `score`, the raw one in
/// `uncalibrated`. Without a calibration, `score` unchanged. `features` gives the calibration's
/// input for the raw score.
pub fn calibrated(mut score: ScoreOutput, calibration: Option<&Calibration>, features: impl FnOnce(f32) -> Features) -> ScoreOutput {
    if let Some(calibration) = calibration {
        let raw = score.score;
        score.score = calibration.calibrate(&features(raw));
        score.uncalibrated = Some(raw);
    }
    score
}
