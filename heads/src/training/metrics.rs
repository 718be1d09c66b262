//! The evaluation metrics of RichHF-18K / HEIE, as the RAHF reference implementation defines them.
//!
//! Heatmaps are compared per image, then averaged: MSE over every image; MSE(GT=0) over images whose
//! ground truth sums to 0; CC, KLD, SIM, NSS and AUC-Judd over images with a non-empty ground truth.
//! Scores: PLCC and SRCC (average ranks for ties) over all images.
//!
//! The reference code divides by zero on degenerate maps (a constant prediction has no standard
//! deviation, an all-zero map no distribution). Here those cases have fixed, finite values, chosen as the
//! limits a nearly-constant map tends to: CC = NSS = PLCC = SRCC = 0 (no linear relation), an all-zero
//! prediction is the all-zero distribution for KLD/SIM, and AUC-Judd counts tied saliency values as one
//! block (a constant map scores exactly 0.5; the MIT code gets ≈ 0.5 by jittering).

use ndarray::{ArrayView2, Zip};
use serde::{Deserialize, Serialize};

/// KLD's epsilon, as in the reference implementation.
pub const KLD_EPS: f64 = 1e-8;

/// Mean squared error over pixels.
pub fn mse(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    if pred.is_empty() {
        return 0.0;
    }
    let sum: f64 = Zip::from(pred).and(gt).fold(0.0, |acc, &p, &g| acc + (p as f64 - g as f64).powi(2));
    sum / pred.len() as f64
}

/// Pearson's linear correlation coefficient over pixels (0 when either map is constant).
pub fn cc(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    let p: Vec<f64> = pred.iter().map(|&v| v as f64).collect();
    let g: Vec<f64> = gt.iter().map(|&v| v as f64).collect();
    pearson(&p, &g)
}

/// Kullback–Leibler divergence of the prediction from the ground truth, both normalised to sum 1:
/// `Σ gt·ln(gt/(pred+ε) + ε)` with ε = 1e-8. An all-zero map stays all zero.
pub fn kld(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    let (ps, gs) = (total(pred), total(gt));
    Zip::from(pred).and(gt).fold(0.0, |acc, &p, &g| {
        let q = normalised(g, gs);
        if q == 0.0 {
            return acc;
        }
        acc + q * (q / (normalised(p, ps) + KLD_EPS) + KLD_EPS).ln()
    })
}

/// Similarity (histogram intersection) of the two maps normalised to sum 1: `Σ min(pred, gt)`.
pub fn sim(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    let (ps, gs) = (total(pred), total(gt));
    Zip::from(pred).and(gt).fold(0.0, |acc, &p, &g| acc + normalised(p, ps).min(normalised(g, gs)))
}

/// Normalised scanpath saliency: the prediction standardised with its unbiased standard deviation,
/// averaged over the pixels where the ground truth is positive. 0 for a constant prediction or an
/// empty ground truth.
pub fn nss(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    let n = pred.len();
    if n < 2 {
        return 0.0;
    }
    let mean = pred.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = pred.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let (sum, count) = Zip::from(pred).and(gt).fold((0.0, 0usize), |(s, c), &p, &g| {
        if g > 0.0 {
            (s + p as f64, c + 1)
        } else {
            (s, c)
        }
    });
    if count == 0 || std <= 0.0 || !std.is_finite() {
        return 0.0;
    }
    (sum / count as f64 - mean) / std
}

/// AUC-Judd: pixels with a positive ground truth are the fixations; one ROC point per distinct
/// prediction value at a fixation (thresholds from high to low) with true-positive rate = fixations at or
/// above it / all fixations and false-positive rate = other pixels at or above it / all other pixels;
/// the area under the points (from (0,0), closed at (1,1)) by the trapezoid rule.
///
/// With distinct values this is exactly the MIT/RAHF loop; ties are counted together. 0.5 when the
/// ground truth is empty or covers every pixel (no ROC exists).
pub fn auc_judd(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> f64 {
    check_shapes(pred, gt);
    let mut fix: Vec<f32> = Vec::new();
    let mut other: Vec<f32> = Vec::new();
    Zip::from(pred).and(gt).for_each(|&p, &g| if g > 0.0 { fix.push(p) } else { other.push(p) });
    if fix.is_empty() || other.is_empty() {
        return 0.5;
    }
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    fix.sort_unstable_by(desc);
    other.sort_unstable_by(desc);
    let (nf, no) = (fix.len() as f64, other.len() as f64);
    let (mut area, mut tp_prev, mut fp_prev) = (0.0, 0.0, 0.0);
    let (mut i, mut j) = (0usize, 0usize);
    while i < fix.len() {
        let threshold = fix[i];
        while i < fix.len() && fix[i] >= threshold {
            i += 1;
        }
        while j < other.len() && other[j] >= threshold {
            j += 1;
        }
        let (tp, fp) = (i as f64 / nf, j as f64 / no);
        area += (fp - fp_prev) * (tp + tp_prev) / 2.0;
        (tp_prev, fp_prev) = (tp, fp);
    }
    area + (1.0 - fp_prev) * (1.0 + tp_prev) / 2.0
}

/// Pearson's linear correlation of two samples (PLCC for scores); 0 when either is constant or the
/// samples have fewer than two values.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: samples of different lengths");
    let n = x.len();
    if n < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let denom = (sxx * syy).sqrt();
    if denom <= 0.0 || !denom.is_finite() {
        return 0.0;
    }
    (sxy / denom).clamp(-1.0, 1.0)
}

/// Spearman's rank correlation: Pearson over ranks, tied values getting the average of their ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// 1-based ranks with ties sharing the mean of the ranks they span (`scipy.stats.rankdata` "average").
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start..end hold equal values: ranks start+1 ..= end, mean (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            ranks[k] = rank;
        }
        start = end;
    }
    ranks
}

/// The per-image heatmap metrics; the distribution metrics are `None` for an empty ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MapMetrics {
    pub mse: f64,
    /// Whether the ground truth sums to 0.
    pub gt_empty: bool,
    pub cc: Option<f64>,
    pub kld: Option<f64>,
    pub sim: Option<f64>,
    pub nss: Option<f64>,
    pub auc_judd: Option<f64>,
}

/// All heatmap metrics of one image.
pub fn map_metrics(pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> MapMetrics {
    let gt_empty = total(gt) <= 0.0;
    let some = |f: fn(ArrayView2<f32>, ArrayView2<f32>) -> f64| if gt_empty { None } else { Some(f(pred, gt)) };
    MapMetrics {
        mse: mse(pred, gt),
        gt_empty,
        cc: some(cc),
        kld: some(kld),
        sim: some(sim),
        nss: some(nss),
        auc_judd: some(auc_judd),
    }
}

/// The averaged metrics of one system on one split (the paper's table row). A metric is `None` when no
/// image qualifies for it (no empty ground truth for MSE(GT=0), no scores for PLCC/SRCC, ...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// Images with a heatmap comparison.
    pub n_maps: usize,
    /// Of those, images whose ground truth is empty.
    pub n_empty_gt: usize,
    /// Images with both a predicted and a ground-truth score.
    pub n_scores: usize,
    pub mse_all: Option<f64>,
    pub mse_gt0: Option<f64>,
    pub cc: Option<f64>,
    pub kld: Option<f64>,
    pub sim: Option<f64>,
    pub nss: Option<f64>,
    pub auc_judd: Option<f64>,
    pub plcc: Option<f64>,
    pub srcc: Option<f64>,
}

/// Accumulates per-image results and averages them as the reference does.
#[derive(Debug, Clone, Default)]
pub struct MetricsAccumulator {
    maps: Vec<MapMetrics>,
    pred_scores: Vec<f64>,
    gt_scores: Vec<f64>,
}

impl MetricsAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one image's heatmaps (same shape, values expected in [0, 1]).
    pub fn add_map(&mut self, pred: ArrayView2<f32>, gt: ArrayView2<f32>) -> MapMetrics {
        let m = map_metrics(pred, gt);
        self.maps.push(m);
        m
    }

    /// Adds one image's predicted and ground-truth score.
    pub fn add_score(&mut self, pred: f32, gt: f32) {
        self.pred_scores.push(pred as f64);
        self.gt_scores.push(gt as f64);
    }

    /// The per-image map metrics added so far.
    pub fn per_image(&self) -> &[MapMetrics] {
        &self.maps
    }

    /// Averages everything added.
    pub fn summary(&self) -> MetricsSummary {
        let mean = |values: Vec<f64>| -> Option<f64> {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let nonempty = |f: fn(&MapMetrics) -> Option<f64>| mean(self.maps.iter().filter_map(f).collect());
        let n_scores = self.pred_scores.len();
        MetricsSummary {
            n_maps: self.maps.len(),
            n_empty_gt: self.maps.iter().filter(|m| m.gt_empty).count(),
            n_scores,
            mse_all: mean(self.maps.iter().map(|m| m.mse).collect()),
            mse_gt0: mean(self.maps.iter().filter(|m| m.gt_empty).map(|m| m.mse).collect()),
            cc: nonempty(|m| m.cc),
            kld: nonempty(|m| m.kld),
            sim: nonempty(|m| m.sim),
            nss: nonempty(|m| m.nss),
            auc_judd: nonempty(|m| m.auc_judd),
            plcc: (n_scores > 0).then(|| pearson(&self.pred_scores, &self.gt_scores)),
            srcc: (n_scores > 0).then(|| spearman(&self.pred_scores, &self.gt_scores)),
        }
    }
}

fn check_shapes(pred: ArrayView2<f32>, gt: ArrayView2<f32>) {
    assert_eq!(pred.dim(), gt.dim(), "metrics: prediction and ground truth differ in shape");
}

fn total(map: ArrayView2<f32>) -> f64 {
    map.iter().map(|&v| v as f64).sum()
}

fn normalised(v: f32, sum: f64) -> f64 {
    if sum > 0.0 {
        v as f64 / sum
    } else {
        0.0
    }
}
