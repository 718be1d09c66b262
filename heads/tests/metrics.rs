//! The metrics against values computed by hand (the arithmetic is in the comments), including the
//! degenerate maps on which the reference implementation divides by zero.

use heie_heads::training::metrics::{
    auc_judd, average_ranks, cc, kld, map_metrics, mse, nss, pearson, sim, spearman, MetricsAccumulator, KLD_EPS,
};
use ndarray::{arr2, Array2};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6, "{a} != {b}");
}

/// pred = [.2 .4; .6 .8], gt = [0 0; 0 1].
fn example() -> (Array2<f32>, Array2<f32>) {
    (arr2(&[[0.2, 0.4], [0.6, 0.8]]), arr2(&[[0.0, 0.0], [0.0, 1.0]]))
}

#[test]
fn mse_is_the_mean_squared_pixel_error() {
    let (p, g) = example();
    // (.04 + .16 + .36 + .04) / 4
    close(mse(p.view(), g.view()), 0.15);
}

#[test]
fn cc_is_pearson_over_pixels() {
    let (p, g) = example();
    // dp = [-.3 -.1 .1 .3], dg = [-.25 -.25 -.25 .75]: Σdp·dg = .3, Σdp² = .2, Σdg² = .75
    close(cc(p.view(), g.view()), 0.3 / (0.2f64 * 0.75).sqrt());
}

#[test]
fn kld_normalises_both_maps_and_uses_the_reference_epsilon() {
    let (p, g) = example();
    // P = pred / 2 = [.1 .2 .3 .4], Q = [0 0 0 1]: 1·ln(1 / (.4 + ε) + ε)
    close(kld(p.view(), g.view()), (1.0 / (0.4 + KLD_EPS) + KLD_EPS).ln());
    // Soft ground truth: Q = [.5 .5 0 0] against P = [.1 .2 .3 .4].
    let g2 = arr2(&[[0.3f32, 0.3], [0.0, 0.0]]);
    let expected = 0.5 * (0.5f64 / 0.1).ln() + 0.5 * (0.5f64 / 0.2).ln();
    assert!((kld(p.view(), g2.view()) - expected).abs() < 1e-5);
}

#[test]
fn sim_is_the_intersection_of_the_normalised_maps() {
    let (p, g) = example();
    close(sim(p.view(), g.view()), 0.4);
    // Identical maps (up to scale) have SIM 1.
    close(sim(p.view(), p.mapv(|v| v * 3.0).view()), 1.0);
}

#[test]
fn nss_uses_the_unbiased_standard_deviation() {
    let (p, g) = example();
    // mean .5, unbiased variance .2 / 3; the only fixation has .8.
    close(nss(p.view(), g.view()), 0.3 / (0.2f64 / 3.0).sqrt());
}

#[test]
fn auc_judd_thresholds_at_fixation_values() {
    let (p, g) = example();
    // The fixation has the highest value: tp jumps to 1 at fp 0.
    close(auc_judd(p.view(), g.view()), 1.0);
    // Fixations .9 and .3, other pixels .1 .5 .7 .2: points (0,0) (0,.5) (.5,1) (1,1):
    // .5·(.5 + 1)/2 + .5·(1 + 1)/2 = .875 (the MIT loop gives the same; Mann–Whitney would give .75).
    let p = arr2(&[[0.1f32, 0.9, 0.5], [0.3, 0.7, 0.2]]);
    let g = arr2(&[[0.0f32, 1.0, 0.0], [0.4, 0.0, 0.0]]);
    close(auc_judd(p.view(), g.view()), 0.875);
    // Reversed prediction: fixations lowest.
    let rev = p.mapv(|v| 1.0 - v);
    // Fixations .1 and .7, others .9 .5 .3 .8: (0,0) → (.5,.5) at .7 → (1,1) at .1: area .125+.375 = .5
    close(auc_judd(rev.view(), g.view()), 0.5);
}

#[test]
fn a_constant_prediction_gives_finite_neutral_values() {
    let p = Array2::from_elem((2, 2), 0.5f32);
    let g = arr2(&[[0.0f32, 1.0], [0.0, 0.0]]);
    let m = map_metrics(p.view(), g.view());
    assert_eq!(m.cc, Some(0.0));
    assert_eq!(m.nss, Some(0.0));
    close(m.auc_judd.unwrap(), 0.5);
    // Uniform P = .25 everywhere: ln(1 / (.25 + ε) + ε) and min(.25, 1).
    close(m.kld.unwrap(), (1.0 / (0.25 + KLD_EPS) + KLD_EPS).ln());
    close(m.sim.unwrap(), 0.25);
    close(m.mse, 0.25 * 3.0 / 4.0 + 0.25 / 4.0);
}

#[test]
fn all_zero_maps_never_give_nan() {
    let zero = Array2::<f32>::zeros((3, 3));
    let g = arr2(&[[0.0f32, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]);
    let m = map_metrics(zero.view(), g.view());
    assert_eq!(m.cc, Some(0.0));
    assert_eq!(m.sim, Some(0.0));
    assert_eq!(m.nss, Some(0.0));
    close(m.auc_judd.unwrap(), 0.5);
    // P = 0 everywhere: Σ Q·ln(Q/ε + ε) with Q = [2/3, 1/3].
    let q = [2.0 / 3.0, 1.0 / 3.0f64];
    close(m.kld.unwrap(), q.iter().map(|&q| q * (q / KLD_EPS + KLD_EPS).ln()).sum());
    // Both maps empty: only MSE exists, and it is 0.
    let both = map_metrics(zero.view(), zero.view());
    assert!(both.gt_empty);
    assert_eq!(both.mse, 0.0);
    assert_eq!((both.cc, both.kld, both.sim, both.nss, both.auc_judd), (None, None, None, None, None));
    for v in [cc(zero.view(), zero.view()), kld(zero.view(), zero.view()), sim(zero.view(), zero.view())] {
        assert_eq!(v, 0.0);
    }
    assert_eq!(nss(zero.view(), zero.view()), 0.0);
    assert_eq!(auc_judd(zero.view(), zero.view()), 0.5);
}

#[test]
fn srcc_averages_tied_ranks() {
    assert_eq!(average_ranks(&[3.0, 1.0, 2.0, 2.0]), vec![4.0, 1.0, 2.5, 2.5]);
    // ranks x = [1 2.5 2.5 4], y = [1 2 3 4]: Σdx·dy = 4.5, Σdx² = 4.5, Σdy² = 5.
    close(spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 2.0, 3.0, 4.0]), 4.5 / (4.5f64 * 5.0).sqrt());
    // Monotone but non-linear: SRCC 1, PLCC below 1.
    let x = [1.0, 2.0, 3.0, 4.0];
    let y = [1.0, 4.0, 9.0, 100.0];
    close(spearman(&x, &y), 1.0);
    assert!(pearson(&x, &y) < 0.9);
}

#[test]
fn plcc_of_constant_or_tiny_samples_is_zero() {
    assert_eq!(pearson(&[0.5, 0.5, 0.5], &[0.1, 0.2, 0.3]), 0.0);
    assert_eq!(pearson(&[0.5], &[0.1]), 0.0);
    assert_eq!(spearman(&[0.5, 0.5, 0.5], &[0.1, 0.2, 0.3]), 0.0);
    // x = [0 1 2], y = [0 1 1]: dx = [-1 0 1], dy = [-2/3 1/3 1/3]: 1 / √(2 · 2/3)
    close(pearson(&[0.0, 1.0, 2.0], &[0.0, 1.0, 1.0]), 1.0 / (2.0f64 * 2.0 / 3.0).sqrt());
}

#[test]
fn the_summary_averages_over_the_right_images() {
    let mut acc = MetricsAccumulator::new();
    let (p, g) = example();
    acc.add_map(p.view(), g.view());
    // An empty ground truth: counts for MSE(all) and MSE(GT=0) only.
    let empty = Array2::<f32>::zeros((2, 2));
    acc.add_map(p.view(), empty.view());
    acc.add_score(0.1, 0.0);
    acc.add_score(0.4, 0.5);
    acc.add_score(0.9, 1.0);
    let s = acc.summary();
    assert_eq!((s.n_maps, s.n_empty_gt, s.n_scores), (2, 1, 3));
    // MSE with the empty GT: (.04 + .16 + .36 + .64) / 4 = .3
    close(s.mse_gt0.unwrap(), 0.3);
    close(s.mse_all.unwrap(), (0.15 + 0.3) / 2.0);
    close(s.cc.unwrap(), 0.3 / (0.2f64 * 0.75).sqrt());
    close(s.sim.unwrap(), 0.4);
    close(s.auc_judd.unwrap(), 1.0);
    close(s.srcc.unwrap(), 1.0);
    // dx = [-.366.. .0333.. .4333..], dy = [-.5 0 .5]
    let x = [0.1, 0.4, 0.9f64];
    let mx = x.iter().sum::<f64>() / 3.0;
    let dx: Vec<f64> = x.iter().map(|v| v - mx).collect();
    let expected = (dx[0] * -0.5 + dx[2] * 0.5) / ((dx.iter().map(|d| d * d).sum::<f64>()) * 0.5).sqrt();
    close(s.plcc.unwrap(), expected);
    // Nothing added: every average is absent, not NaN.
    let none = MetricsAccumulator::new().summary();
    assert_eq!((none.mse_all, none.cc, none.plcc), (None, None, None));
}
