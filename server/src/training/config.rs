//! The hyper-parameters of a training run (`heie train`'s flags), saved in its checkpoint so that a
//! resume with other settings is refused.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub focal_alpha: f64,
    pub focal_gamma: f64,
    pub focal_weight: f64,
    pub laplace_weight: f64,
    pub score_weight: f64,
    /// Steps of the calibration fit on dev (0 = keep the trained calibration).
    pub calibration_steps: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 16,
            lr: 3e-4,
            warmup: 0.03,
            weight_decay: 0.01,
            seed: 0,
            focal_alpha: 0.25,
            focal_gamma: 2.0,
            focal_weight: 1.0,
            laplace_weight: 1.0,
            score_weight: 1.0,
            calibration_steps: 300,
        }
    }
}
