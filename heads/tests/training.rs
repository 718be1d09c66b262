//! The tensor-level forward is differentiable end to end: losses reach every module and a few SGD steps
//! lower them.
mod common;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use common::{tiny_config, Buffers};
use heie_heads::training::losses::{focal_loss, laplace_nll, score_mse};
use heie_heads::{FusionVariant, Heads};

fn total_loss(heads: &Heads, buf: &Buffers, gt: &Tensor, score_gt: &Tensor) -> Tensor {
    let input = heads.input_tensors(&buf.input(24, 16)).unwrap();
    let out = heads.forward_tensors(&input).unwrap();
    let l = focal_loss(&out.heatmap, gt, 0.25, 2.0).unwrap();
    let l = (l + laplace_nll(&out.local, gt, &out.log_sigma_local).unwrap()).unwrap();
    let l = (l + laplace_nll(&out.global, gt, &out.log_sigma_global).unwrap()).unwrap();
    (l + score_mse(&out.score, score_gt).unwrap()).unwrap()
}

#[test]
fn gradients_reach_every_parameter_and_sgd_lowers_the_loss() {
    let mut cfg = tiny_config(64, 2);
    cfg.fusion = FusionVariant::Learned;
    let heads = Heads::init(cfg.clone(), 11).unwrap();
    let buf = Buffers::new(&cfg, 3, 2, 12);
    // A blob in the upper-left corner as the artifact map.
    let gt: Vec<f32> = (0..16 * 24).map(|i| if i / 24 < 6 && i % 24 < 8 { 1.0 } else { 0.0 }).collect();
    let gt = Tensor::from_vec(gt, (16, 24), &Device::Cpu).unwrap();
    let score_gt = Tensor::new(&[0.9f32], &Device::Cpu).unwrap();

    let first = total_loss(&heads, &buf, &gt, &score_gt).to_scalar::<f32>().unwrap();
    // The map scorer's output layer starts at zero (see `scorer::MapScorer`), so its conv branch gets a
    // gradient only once that layer has moved: check every parameter after one step.
    let mut opt = candle_nn::SGD::new(heads.varmap().all_vars(), 0.05).unwrap();
    opt.backward_step(&total_loss(&heads, &buf, &gt, &score_gt)).unwrap();
    let loss = total_loss(&heads, &buf, &gt, &score_gt);
    let grads = loss.backward().unwrap();
    let data = heads.varmap().data().lock().unwrap();
    let mut without = vec![];
    for (name, var) in data.iter() {
        match grads.get(var.as_tensor()) {
            Some(g) if g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0 => {}
            _ => without.push(name.clone()),
        }
    }
    drop(data);
    without.sort();
    assert!(without.is_empty(), "no gradient for {without:?}");

    for _ in 0..4 {
        opt.backward_step(&total_loss(&heads, &buf, &gt, &score_gt)).unwrap();
    }
    let last = total_loss(&heads, &buf, &gt, &score_gt).to_scalar::<f32>().unwrap();
    assert!(last < first, "loss {first} → {last}");
}
