//! `heie train`'s checkpoint: an interrupted run resumed with `--resume` ends with exactly the weights
//! of the uninterrupted run, which needs the optimiser's moments, its step and the schedule restored.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use candle_core::Tensor;
use heie_heads::HeadsConfig;
use heie_server::training::checkpoint;
use heie_server::training::shards::{to_f16, FeatureSample, SampleMeta};
use heie_server::training::config::TrainConfig;
use heie_server::training::train::{train, ShardSet};
use ndarray::Array2;

const W: usize = 8;
const T: usize = 4;

/// Twelve 1×1-grid samples whose features, states, maps and scores differ from each other.
fn set() -> ShardSet {
    let wave = |n: usize, k: f32| to_f16(&(0..n).map(|i| (i as f32 * 0.37 + k).sin()).collect::<Vec<_>>());
    let samples = (0..12)
        .map(|i| {
            let k = i as f32;
            FeatureSample {
                meta: SampleMeta {
                    id: format!("s{i}"),
                    grid_cols: 1,
                    grid_rows: 1,
                    has_thumbnail: false,
                    width: 8,
                    height: 8,
                    score: Some(i as f32 / 11.0),
                    has_heatmap: true,
                },
                features: wave(T * W, k),
                map_hidden: wave(W, 2.0 * k),
                score_hidden: wave(W, 3.0 * k),
                heatmap: Some(Array2::from_shape_fn((8, 8), |(y, x)| if x + y < i { 1.0 } else { 0.0 })),
            }
        })
        .collect();
    ShardSet { samples, llm_width: W, tokens_per_tile: T }
}

fn heads_config() -> HeadsConfig {
    HeadsConfig { hidden_width: 8, attention_heads: 2, mlp_dim: 16, ..HeadsConfig::new(W, 2) }
}

fn config() -> TrainConfig {
    TrainConfig { epochs: 3, batch_size: 4, lr: 1e-2, calibration_steps: 0, ..TrainConfig::default() }
}

fn run(out: &Path, cfg: &TrainConfig, resume: bool, stop_after: Option<usize>) -> usize {
    let mut epochs = 0;
    let report = train(&set(), None, heads_config(), cfg, out, resume, |_, _, _, _| {}, |_| {
        epochs += 1;
        if Some(epochs) == stop_after {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    report.steps
}

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    let (_, t) = heie_heads::weights::read(path).unwrap();
    t.into_iter().map(|(k, v): (String, Tensor)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

#[test]
fn a_resumed_run_ends_with_the_weights_of_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, interrupted) = (dir.path().join("straight.safetensors"), dir.path().join("resumed.safetensors"));
    let cfg = config();
    assert_eq!(run(&straight, &cfg, false, None), 9);

    // Stopped after the first epoch: the checkpoint holds step 3 and non-zero moments.
    assert_eq!(run(&interrupted, &cfg, false, Some(1)), 3);
    let state = std::fs::read_to_string(checkpoint::state_path(&interrupted)).unwrap();
    assert!(state.contains("\"step\": 3"), "{state}");
    let moments = tensors_raw(&checkpoint::optimizer_path(&interrupted));
    assert!(moments.contains_key("m.token_scorer.fc1.weight") && moments.contains_key("v.token_scorer.fc1.weight"));
    assert!(!moments.keys().any(|k| k.contains(".input.")), "fitted statistics are not optimised");
    assert!(moments.values().any(|v| v.iter().any(|&x| x != 0.0)));
    // The checkpoint is not already the final state, so the comparison below is not vacuous: resuming
    // with zero moments at step 0 (weights only) takes other steps and ends elsewhere.
    assert_ne!(tensors(&checkpoint::last_path(&interrupted)), tensors(&checkpoint::last_path(&straight)));

    // Resuming with other settings is refused; with the same settings it finishes the remaining steps.
    let other = TrainConfig { lr: 2e-2, ..config() };
    let err = train(&set(), None, heads_config(), &other, &interrupted, true, |_, _, _, _| {}, |_| ControlFlow::Continue(())).unwrap_err();
    assert!(err.to_string().contains("other settings"), "{err}");
    assert_eq!(run(&interrupted, &cfg, true, None), 9);
    assert_eq!(tensors(&interrupted), tensors(&straight), "resumed weights differ from the uninterrupted run's");
}

fn tensors_raw(path: &Path) -> HashMap<String, Vec<f32>> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    t.into_iter().map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}
