//! Output shapes and value ranges for several grids.
mod common;

use common::{tiny_config, Buffers};
use heie_heads::Heads;

fn check_ranges(out: &heie_heads::HeadsOutput, h: usize, w: usize) {
    for m in [&out.heatmap, &out.local, &out.global, &out.local_weight, &out.sigma_local, &out.sigma_global] {
        assert_eq!(m.dim(), (h, w));
        assert!(m.iter().all(|v| v.is_finite()));
    }
    for m in [&out.heatmap, &out.local, &out.global, &out.local_weight] {
        assert!(m.iter().all(|v| (0.0..=1.0).contains(v)), "map outside [0, 1]");
    }
    assert!(out.sigma_local.iter().chain(out.sigma_global.iter()).all(|v| *v > 0.0));
    assert!((0.0..=1.0).contains(&out.score));
    assert!(out.s_token.is_finite() && out.s_map.is_finite());
}

#[test]
fn single_tile_without_thumbnail_is_both_local_and_global() {
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 1).unwrap();
    let buf = Buffers::new(&cfg, 1, 1, 3);
    let out = heads.forward(&buf.input(37, 23)).unwrap();
    check_ranges(&out, 23, 37);
    assert_eq!(out.local, out.global);
    // Same map and same σ on both sides: the adaptive weights are exactly one half.
    assert!(out.local_weight.iter().all(|w| (*w - 0.5).abs() < 1e-6));
    let diff = (&out.heatmap - &out.local).mapv(f32::abs);
    assert!(diff.iter().all(|d| *d < 1e-6));
}

#[test]
fn three_by_two_grid_with_thumbnail() {
    let cfg = tiny_config(64, 4);
    let heads = Heads::init(cfg.clone(), 1).unwrap();
    let buf = Buffers::new(&cfg, 3, 2, 4);
    let out = heads.forward(&buf.input(96, 50)).unwrap();
    check_ranges(&out, 50, 96);
    assert_ne!(out.local, out.global, "thumbnail must give its own global map");
}

#[test]
#[allow(clippy::needless_range_loop)] // y, x index the stitched map too
fn two_by_three_grid_and_native_resolution() {
    // 2 columns × 3 rows of 4g = 8-pixel tiles: out 16×24 is the stitched size itself.
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 2).unwrap();
    let buf = Buffers::new(&cfg, 2, 3, 5);
    let out = heads.forward(&buf.input(16, 24)).unwrap();
    check_ranges(&out, 24, 16);

    // The tensor-level output exposes per-tile maps: the local map at native size is their stitching.
    let t = heads.forward_tensors(&heads.input_tensors(&buf.input(16, 24)).unwrap()).unwrap();
    assert_eq!(t.tile_logits.dims(), &[7, 8, 8]);
    assert_eq!(t.tile_log_sigma.dims(), &[7, 8, 8]);
    let logits: Vec<Vec<Vec<f32>>> = t.tile_logits.to_vec3().unwrap();
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    for r in 0..3 {
        for c in 0..2 {
            let tile = &logits[r * 2 + c];
            for y in 0..8 {
                for x in 0..8 {
                    let got = out.local[(r * 8 + y, c * 8 + x)];
                    assert!((got - sig(tile[y][x])).abs() < 1e-5, "tile ({r},{c}) pixel ({y},{x})");
                }
            }
        }
    }
}

#[test]
fn one_by_n_and_n_by_one_grids() {
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 3).unwrap();
    for (cols, rows) in [(4, 1), (1, 3)] {
        let buf = Buffers::new(&cfg, cols, rows, 6);
        let out = heads.forward(&buf.input(33, 17)).unwrap();
        check_ranges(&out, 17, 33);
    }
}
