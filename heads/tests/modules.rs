//! Exact values of modules on hand-set weights: fusion, calibration, map scorer, attention, transposed
//! conv, losses.
use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use heie_heads::calibration::Calibration;
use heie_heads::fusion::Fusion;
use heie_heads::layers::{Attention, ConvTranspose2x2, Linear};
use heie_heads::scorer::MapScorer;
use heie_heads::training::losses::{focal_loss, laplace_nll, score_mse};
use heie_heads::{CalibrationConfig, FusionVariant, HeadsConfig};

fn dev() -> Device {
    Device::Cpu
}

fn full(v: f32) -> Tensor {
    Tensor::full(v, (2, 3), &dev()).unwrap()
}

fn all_close(t: &Tensor, want: f32, tol: f32) -> bool {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| (v - want).abs() <= tol)
}

fn zeros_vb() -> VarBuilder<'static> {
    VarBuilder::zeros(candle_core::DType::F32, &dev())
}

#[test]
fn adaptive_fusion_follows_the_smaller_sigma() {
    let f = Fusion::new(FusionVariant::Adaptive, zeros_vb()).unwrap();
    let (l, g) = (full(0.9), full(0.1));
    // σ_l = e^-5 ≪ σ_g = e^3: the local map wins.
    let o = f.forward(&l, &g, &full((-5f32).exp()), &full(3f32.exp())).unwrap();
    assert!(all_close(&o.fused, 0.9, 1e-6));
    // And the other way round.
    let o = f.forward(&l, &g, &full(3f32.exp()), &full((-5f32).exp())).unwrap();
    assert!(all_close(&o.fused, 0.1, 1e-6));
    // Equal σ: the plain mean.
    let o = f.forward(&l, &g, &full(1.3), &full(1.3)).unwrap();
    assert!(all_close(&o.local_weight, 0.5, 1e-7));
    assert!(all_close(&o.fused, 0.5, 1e-6));
    // σ_l = 1, σ_g = 2: w_l = e^-1 / (e^-1 + e^-2).
    let o = f.forward(&full(1.0), &full(0.0), &full(1.0), &full(2.0)).unwrap();
    let w = (-1f32).exp() / ((-1f32).exp() + (-2f32).exp());
    assert!(all_close(&o.local_weight, w, 1e-6));
    assert!(all_close(&o.fused, w, 1e-6));
    assert!(all_close(&o.sigma_global, 2.0, 1e-6));
}

#[test]
fn extreme_sigmas_stay_finite() {
    let f = Fusion::new(FusionVariant::Adaptive, zeros_vb()).unwrap();
    // log σ far outside the clamp range gives finite σ and a finite, saturated weight.
    let sl = heie_heads::fusion::sigma_from_log(&full(500.0)).unwrap();
    let sg = heie_heads::fusion::sigma_from_log(&full(400.0)).unwrap();
    assert!(all_close(&sl, 10f32.exp(), 1e-2));
    let o = f.forward(&full(1.0), &full(0.0), &sl, &sg).unwrap();
    assert!(o.fused.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    assert!(all_close(&o.local_weight, 0.5, 1e-6));
}

#[test]
fn fixed_and_learned_fusion() {
    let f = Fusion::new(FusionVariant::Fixed { local_weight: 0.3 }, zeros_vb()).unwrap();
    let o = f.forward(&full(1.0), &full(0.5), &full(0.01), &full(100.0)).unwrap();
    assert!(all_close(&o.fused, 0.3 + 0.7 * 0.5, 1e-6));
    assert!(all_close(&o.local_weight, 0.3, 1e-7));
    // A learned logit of ln 3 gives w_l = 3/4.
    let f = Fusion::Learned(Tensor::new(&[3f32.ln()], &dev()).unwrap());
    let o = f.forward(&full(1.0), &full(0.0), &full(1.0), &full(1.0)).unwrap();
    assert!(all_close(&o.fused, 0.75, 1e-6));
}

fn scalar(t: &Tensor) -> f32 {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

fn calib(a: f32, b: f32, c: f32) -> Calibration {
    let vm = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev());
    Calibration::new(&CalibrationConfig { token_weight: a, map_weight: b, bias: c }, vb).unwrap()
}

#[test]
fn calibration_exact_and_monotone() {
    let cal = calib(2.0, 0.5, -1.0);
    let t = |v: f32| Tensor::new(&[v], &dev()).unwrap();
    // sigmoid(2·1 + 0.5·2 − 1) = sigmoid(2)
    let s = scalar(&cal.forward(&t(1.0), &t(2.0)).unwrap());
    assert!((s - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6, "{s}");
    let eff = cal.effective().unwrap();
    assert!((eff.token_weight - 2.0).abs() < 1e-5 && (eff.map_weight - 0.5).abs() < 1e-5 && eff.bias == -1.0);
    let mut prev = 0.0;
    for i in -20..=20 {
        let x = i as f32 * 0.5;
        let a = scalar(&cal.forward(&t(x), &t(0.0)).unwrap());
        let b = scalar(&cal.forward(&t(0.0), &t(x)).unwrap());
        assert!((0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b));
        // Strictly increasing until f32 saturates at 1.
        assert!(a >= prev && (a > prev || i == -20 || a == 1.0), "{x}: {a} after {prev}");
        assert!(b >= 0.0);
        prev = a;
    }
    // Large weights (softplus inverse path for big values) are reproduced too.
    let eff = calib(60.0, 1e-3, 0.0).effective().unwrap();
    assert!((eff.token_weight - 60.0).abs() < 1e-3 && (eff.map_weight - 1e-3).abs() < 1e-6);
}

#[test]
fn fresh_map_scorer_is_minus_ten_times_the_mean_and_falls_as_the_map_grows() {
    let vm = candle_nn::VarMap::new();
    let mut cfg = HeadsConfig::new(64, 2);
    cfg.score_map_size = 16;
    let scorer = MapScorer::new(&cfg, VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev())).unwrap();
    assert!((scorer.mass_weight().unwrap() - 1.0).abs() < 1e-6);
    // A fresh conv branch outputs exactly 0 (zero output layer): S_map = −1·10·mean(H).
    let blob = Tensor::from_vec((0..6 * 9).map(|i| if i % 9 < 3 { 0.9f32 } else { 0.0 }).collect(), (6, 9), &dev()).unwrap();
    assert!((scalar(&scorer.forward(&blob).unwrap()) + 3.0).abs() < 1e-5);
    let mut prev = f32::INFINITY;
    for i in 0..=10 {
        let s = scalar(&scorer.forward(&Tensor::full(i as f32 / 10.0, (6, 9), &dev()).unwrap()).unwrap());
        assert!(s < prev, "{i}: {s} after {prev}");
        prev = s;
    }
}

fn lin(w: &[[f32; 2]; 2], b: [f32; 2]) -> Linear {
    Linear::from_tensors(Tensor::new(w, &dev()).unwrap(), Tensor::new(&b, &dev()).unwrap())
}

#[test]
fn tiny_attention_exact() {
    let id = [[1.0, 0.0], [0.0, 1.0]];
    // k_proj doubles: scores = 2·q·k / √2.
    let att = Attention::from_parts(lin(&id, [0.0; 2]), lin(&[[2.0, 0.0], [0.0, 2.0]], [0.0; 2]), lin(&id, [0.0; 2]), lin(&id, [0.5, 0.0]), 1);
    let q = Tensor::new(&[[[1f32, 0.0]]], &dev()).unwrap();
    let k = Tensor::new(&[[[1f32, 0.0], [0.0, 1.0]]], &dev()).unwrap();
    let v = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0]]], &dev()).unwrap();
    let out: Vec<f32> = att.forward(&q, &k, &v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let s0 = 2.0 / 2f32.sqrt();
    let p0 = s0.exp() / (s0.exp() + 1.0);
    let want = [p0 * 1.0 + (1.0 - p0) * 3.0 + 0.5, p0 * 2.0 + (1.0 - p0) * 4.0];
    assert!((out[0] - want[0]).abs() < 1e-5 && (out[1] - want[1]).abs() < 1e-5, "{out:?} vs {want:?}");

    // Two heads of width 1 attend independently.
    let att2 = Attention::from_parts(lin(&id, [0.0; 2]), lin(&id, [0.0; 2]), lin(&id, [0.0; 2]), lin(&id, [0.0; 2]), 2);
    let out: Vec<f32> = att2.forward(&q, &k, &v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let p = 1f32.exp() / (1f32.exp() + 1.0); // head 0: scores [1, 0]
    assert!((out[0] - (p * 1.0 + (1.0 - p) * 3.0)).abs() < 1e-5);
    assert!((out[1] - 3.0).abs() < 1e-5); // head 1: scores [0, 0] → mean of 2 and 4
}

#[test]
fn transposed_conv_matches_definition() {
    // out[2i+ky, 2j+kx, co] = Σ_ci x[i, j, ci]·w[ci, co, ky, kx] + b[co]
    let (h, w, cin, cout) = (2, 3, 2, 3);
    let xs: Vec<f32> = (0..h * w * cin).map(|i| i as f32 * 0.1 - 0.5).collect();
    let ws: Vec<f32> = (0..cin * cout * 4).map(|i| (i as f32 * 0.37).sin()).collect();
    let bs = [0.1f32, -0.2, 0.3];
    let conv = ConvTranspose2x2::from_tensors(
        Tensor::from_vec(ws.clone(), (cin, cout, 2, 2), &dev()).unwrap(),
        Tensor::new(&bs, &dev()).unwrap(),
    );
    let x = Tensor::from_vec(xs.clone(), (1, h, w, cin), &dev()).unwrap();
    let y: Vec<f32> = conv.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for oy in 0..2 * h {
        for ox in 0..2 * w {
            for co in 0..cout {
                let (i, j, ky, kx) = (oy / 2, ox / 2, oy % 2, ox % 2);
                let mut want = bs[co];
                for ci in 0..cin {
                    want += xs[(i * w + j) * cin + ci] * ws[((ci * cout + co) * 2 + ky) * 2 + kx];
                }
                let got = y[(oy * 2 * w + ox) * cout + co];
                assert!((got - want).abs() < 1e-5, "({oy},{ox},{co}): {got} vs {want}");
            }
        }
    }
}

#[test]
fn losses_exact() {
    let t = |v: &[f32]| Tensor::new(v, &dev()).unwrap();
    // Laplace: √2/σ·|H − H_gt| + ln σ with σ = e^{ln 2} = 2 and σ = 1.
    let nll = scalar(&laplace_nll(&t(&[0.5, 1.0]), &t(&[0.0, 0.0]), &t(&[2f32.ln(), 0.0])).unwrap());
    let want = ((2f32.sqrt() / 2.0 * 0.5 + 2f32.ln()) + (2f32.sqrt() * 1.0)) / 2.0;
    assert!((nll - want).abs() < 1e-6, "{nll} vs {want}");
    // Focal: p = 0.8 on a positive, p = 0.3 on a negative, α = 0.25, γ = 2.
    let fl = scalar(&focal_loss(&t(&[0.8, 0.3]), &t(&[1.0, 0.0]), 0.25, 2.0).unwrap());
    let want = (-0.25 * 0.2f32.powi(2) * 0.8f32.ln() - 0.75 * 0.3f32.powi(2) * 0.7f32.ln()) / 2.0;
    assert!((fl - want).abs() < 1e-6, "{fl} vs {want}");
    // Saturated wrong predictions stay finite.
    assert!(scalar(&focal_loss(&t(&[0.0]), &t(&[1.0]), 0.25, 2.0).unwrap()).is_finite());
    let mse = scalar(&score_mse(&t(&[0.5, 0.0]), &t(&[0.0, 1.0])).unwrap());
    assert!((mse - 0.625).abs() < 1e-7);
}

/// Plain multi-head attention, per head and per query, for comparison.
fn reference_attention(q: &[Vec<f32>], k: &[Vec<f32>], v: &[Vec<f32>], heads: usize) -> Vec<Vec<f32>> {
    let inner = q[0].len();
    let dh = inner / heads;
    q.iter()
        .map(|qi| {
            let mut out = vec![0f32; inner];
            for h in 0..heads {
                let r = h * dh..(h + 1) * dh;
                let s: Vec<f32> = k.iter().map(|kj| qi[r.clone()].iter().zip(&kj[r.clone()]).map(|(a, b)| a * b).sum::<f32>() / (dh as f32).sqrt()).collect();
                let m = s.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, vj) in v.iter().enumerate() {
                    for c in r.clone() {
                        out[c] += e[j] / z * vj[c];
                    }
                }
            }
            out
        })
        .collect()
}

fn project(x: &[Vec<f32>], w: &[f32], b: &[f32]) -> Vec<Vec<f32>> {
    let (out, inp) = (b.len(), x[0].len());
    x.iter().map(|r| (0..out).map(|o| b[o] + (0..inp).map(|i| w[o * inp + i] * r[i]).sum::<f32>()).collect()).collect()
}

#[test]
fn multi_head_attention_matches_reference_both_ways() {
    let (d, inner, heads) = (8, 4, 2);
    let vals = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| ((i * 37 + seed * 11) % 29) as f32 / 14.0 - 1.0).collect() };
    let params: Vec<(Vec<f32>, Vec<f32>, usize, usize)> = vec![
        (vals(inner * d, 1), vals(inner, 2), inner, d),
        (vals(inner * d, 3), vals(inner, 4), inner, d),
        (vals(inner * d, 5), vals(inner, 6), inner, d),
        (vals(d * inner, 7), vals(d, 8), d, inner),
    ];
    let lin = |p: &(Vec<f32>, Vec<f32>, usize, usize)| {
        Linear::from_tensors(Tensor::from_vec(p.0.clone(), (p.2, p.3), &dev()).unwrap(), Tensor::from_vec(p.1.clone(), p.2, &dev()).unwrap())
    };
    let att = Attention::from_parts(lin(&params[0]), lin(&params[1]), lin(&params[2]), lin(&params[3]), heads);
    let rows = |n: usize, seed: usize| -> Vec<Vec<f32>> {
        (0..n).map(|i| (0..d).map(|c| ((i * 31 + c * 17 + seed * 7) % 23) as f32 / 7.0 - 1.5).collect()).collect()
    };
    let tensor = |r: &Vec<Vec<f32>>| Tensor::from_vec(r.concat(), (1, r.len(), d), &dev()).unwrap();
    // Few queries against many keys, many against few, and equal counts (both code paths).
    for (nq, nk) in [(3, 10), (10, 3), (4, 4)] {
        let (q, k, v) = (rows(nq, 1), rows(nk, 2), rows(nk, 3));
        let got: Vec<f32> = att.forward(&tensor(&q), &tensor(&k), &tensor(&v)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let ctx = reference_attention(
            &project(&q, &params[0].0, &params[0].1),
            &project(&k, &params[1].0, &params[1].1),
            &project(&v, &params[2].0, &params[2].1),
            heads,
        );
        let want = project(&ctx, &params[3].0, &params[3].1).concat();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "{nq}×{nk}: {diff}");
    }
}
