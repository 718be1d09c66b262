//! Fitting a calibration to one user's keep/reject decisions, and measuring it on held-out images.

use serde::{Deserialize, Serialize};

use super::features::{Features, CATEGORY_COUNT};
use super::isotonic::Isotonic;
use super::logistic::{self, Prior};
use super::map::{CalibrationMap, WEIGHT_COUNT};
use super::metrics::{accuracy, auc, best_threshold};
use super::split::{held_out_split, HELD_OUT_EVERY};

/// The L2 penalty λ of the logistic regression. Two reasons it is needed at all: a category no training
/// image was flagged for has an all-zero column (its weight is not determined without a penalty), and a
/// category flagged only on rejected images separates the data perfectly (its weight would run to −∞).
/// λ = 1 is the pull of about one example: a few dozen decisions outweigh it, a handful do not. The
/// score's weight is pulled towards 1 (trust the isotonic map), each severity's towards 0 (no effect);
/// the bias is free.
pub const LAMBDA: f64 = 1.0;

/// One judged image with the user's decision.
#[derive(Debug, Clone)]
pub struct Example {
    /// Its file name; orders the held-out split.
    pub name: String,
    pub features: Features,
    pub kept: bool,
}

/// What a calibration was fitted and measured on (also the file's `examples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleCounts {
    pub train: u32,
    pub held_out: u32,
    pub kept: u32,
    pub rejected: u32,
}

/// How the raw and the calibrated score did on the held-out images (also the file's `held_out`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOut {
    pub auc_before: f64,
    pub auc_after: f64,
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    /// Thresholds (keep when score ≥ it) that maximise accuracy on the training part, of the raw and of
    /// the calibrated score: the held-out accuracies use them.
    pub threshold_before: f64,
    pub threshold_after: f64,
}

/// A fit's counts and held-out numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub examples: ExampleCounts,
    pub held_out: HeldOut,
}

/// A fitted calibration with its report.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub map: CalibrationMap,
    pub report: Report,
}

/// Splits `examples`, fits on the training part (isotonic map, then the penalised logistic
/// regression), and measures raw and calibrated scores on the held-out part. The calibration
/// returned is the one measured: fitted on the training part only.
pub fn fit_calibration(examples: &[Example]) -> Result<Fitted, String> {
    let kept_count = examples.iter().filter(|e| e.kept).count();
    let rejected_count = examples.len() - kept_count;
    if kept_count < HELD_OUT_EVERY || rejected_count < HELD_OUT_EVERY {
        return Err(format!(
            "need at least {HELD_OUT_EVERY} kept and {HELD_OUT_EVERY} rejected images (every {HELD_OUT_EVERY}th of each is held out \
             to measure the calibration); got {kept_count} kept and {rejected_count} rejected"
        ));
    }
    if let Some(e) = examples.iter().find(|e| !e.features.score.is_finite()) {
        return Err(format!("{}: the score is not a number", e.name));
    }
    let names: Vec<String> = examples.iter().map(|e| e.name.clone()).collect();
    let labels: Vec<bool> = examples.iter().map(|e| e.kept).collect();
    let (train, held_out) = held_out_split(&names, &labels);
    let part = |indices: &[usize]| -> (Vec<&Example>, Vec<bool>) {
        (indices.iter().map(|&i| &examples[i]).collect(), indices.iter().map(|&i| examples[i].kept).collect())
    };
    let (train_examples, train_labels) = part(&train);
    let (held_examples, held_labels) = part(&held_out);

    let raw = |set: &[&Example]| -> Vec<f64> { set.iter().map(|e| f64::from(e.features.score)).collect() };
    let isotonic = Isotonic::fit(&raw(&train_examples), &train_labels);
    let rows: Vec<Vec<f64>> = train_examples.iter().map(|e| CalibrationMap::row(&isotonic, &e.features)).collect();
    let mut prior = Prior {
        lambda: LAMBDA,
        centers: std::iter::once(None).chain(std::iter::once(Some(1.0))).chain([Some(0.0); CATEGORY_COUNT]).collect(),
        fitted: vec![true; WEIGHT_COUNT],
    };
    let mut weights = logistic::fit(&rows, &train_labels, &prior);
    if weights[1] < 0.0 {
        // A negative score weight would rank better raw scores lower; hold it at 0 and refit the rest.
        prior.centers[1] = Some(0.0);
        prior.fitted[1] = false;
        weights = logistic::fit(&rows, &train_labels, &prior);
    }
    let map = CalibrationMap {
        isotonic,
        bias: weights[0],
        score_weight: weights[1],
        severity_weights: std::array::from_fn(|c| weights[2 + c]),
    };

    let calibrated = |set: &[&Example]| -> Vec<f64> { set.iter().map(|e| f64::from(map.calibrate(&e.features))).collect() };
    let threshold_before = best_threshold(&raw(&train_examples), &train_labels);
    let threshold_after = best_threshold(&calibrated(&train_examples), &train_labels);
    let both = "the held-out part has both labels by construction";
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let examples = ExampleCounts {
        train: count(train.len()),
        held_out: count(held_out.len()),
        kept: count(kept_count),
        rejected: count(rejected_count),
    };
    let held_out = HeldOut {
        auc_before: auc(&raw(&held_examples), &held_labels).expect(both),
        auc_after: auc(&calibrated(&held_examples), &held_labels).expect(both),
        accuracy_before: accuracy(&raw(&held_examples), &held_labels, threshold_before),
        accuracy_after: accuracy(&calibrated(&held_examples), &held_labels, threshold_after),
        threshold_before,
        threshold_after,
    };
    Ok(Fitted { map, report: Report { examples, held_out } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::region_category::RegionCategory;

    fn example(n: usize, score: f32, hand: f32, kept: bool) -> Example {
        Example { name: format!("img{n:03}.png"), features: Features::from_regions(score, [(RegionCategory::Hand, hand)]), kept }
    }

    /// A user who rejects every image with a flagged hand, whatever its score, and otherwise keeps
    /// images by score.
    fn hand_hater() -> Vec<Example> {
        (0..80)
            .map(|n| {
                let score = 0.3 + 0.6 * (n % 20) as f32 / 19.0;
                let hand = if n % 4 == 1 { 0.6 } else { 0.0 };
                let kept = hand == 0.0 && score > 0.45;
                example(n, score, hand, kept)
            })
            .collect()
    }

    #[test]
    fn a_user_who_rejects_flagged_hands_gets_them_ranked_lower() {
        let fitted = fit_calibration(&hand_hater()).unwrap();
        let map = &fitted.map;
        assert!(map.severity_weights[0] < -2.0, "hand weight {:?}", map.severity_weights);
        // The same raw score ranks lower with a flagged hand…
        let clean = map.calibrate(&Features::score_only(0.8));
        let handy = map.calibrate(&Features::from_regions(0.8, [(RegionCategory::Hand, 0.6)]));
        assert!(handy < clean - 0.3, "clean {clean}, with a hand {handy}");
        // …so much that a hand at 0.8 falls below a clean 0.5, which the raw score had the other way.
        assert!(handy < map.calibrate(&Features::score_only(0.5)));
        // Categories nobody was flagged for keep the weight the prior gives them: 0.
        assert!(map.severity_weights[1..].iter().all(|&w| w.abs() < 1e-9), "{:?}", map.severity_weights);
        // On held-out images the calibrated score separates better than the raw one.
        let r = &fitted.report.held_out;
        assert!(r.auc_after > r.auc_before && r.auc_after > 0.95, "{r:?}");
        assert!(r.accuracy_after >= r.accuracy_before, "{r:?}");
        let e = &fitted.report.examples;
        assert_eq!((e.train, e.held_out, e.kept + e.rejected), (60, 20, 80));
    }

    #[test]
    fn the_calibrated_score_never_falls_as_the_raw_score_rises() {
        let fitted = fit_calibration(&hand_hater()).unwrap();
        for hand in [0.0, 0.3, 0.6] {
            let mut last = 0.0;
            for k in 0..=100 {
                let now = fitted.map.calibrate(&Features::from_regions(k as f32 / 100.0, [(RegionCategory::Hand, hand)]));
                assert!((0.0..=1.0).contains(&now) && now >= last, "hand {hand}: {now} after {last} at {k}");
                last = now;
            }
        }
    }

    #[test]
    fn too_few_examples_of_a_label_are_refused() {
        let few: Vec<Example> = (0..10).map(|n| example(n, 0.5, 0.0, n < 7)).collect();
        let err = fit_calibration(&few).unwrap_err();
        assert!(err.contains("at least 4 kept and 4 rejected") && err.contains("7 kept and 3 rejected"), "{err}");
    }
}
