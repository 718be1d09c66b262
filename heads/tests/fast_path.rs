//! The serving fast path (`render`, custom kernels) agrees with the plain candle graph.
mod common;

use candle_core::{Device, Tensor, Var};
use common::{tiny_config, values, Buffers};
use heie_heads::{kernels, FusionVariant, Heads, MapsInput, ProjectedView, ViewInput};
use ndarray::Array2;

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn serving_path_matches_graph_path() {
    for (fusion, cols, rows, out_w, out_h) in [
        (FusionVariant::Adaptive, 3, 2, 100, 61),
        (FusionVariant::Adaptive, 1, 1, 9, 31),
        (FusionVariant::Learned, 2, 3, 16, 24),
        (FusionVariant::Fixed { local_weight: 0.8 }, 4, 1, 50, 7),
    ] {
        let mut cfg = tiny_config(64, 2);
        cfg.fusion = fusion;
        let heads = Heads::init(cfg.clone(), 21).unwrap();
        let buf = Buffers::new(&cfg, cols, rows, 22);
        let fast = heads.forward(&buf.input(out_w, out_h)).unwrap();
        let graph = heads.forward_graph(&buf.input(out_w, out_h)).unwrap();
        for (name, a, b) in [
            ("heatmap", &fast.heatmap, &graph.heatmap),
            ("local", &fast.local, &graph.local),
            ("global", &fast.global, &graph.global),
            ("local_weight", &fast.local_weight, &graph.local_weight),
            ("sigma_local", &fast.sigma_local, &graph.sigma_local),
            ("sigma_global", &fast.sigma_global, &graph.sigma_global),
        ] {
            let d = max_diff(a, b);
            assert!(d < 1e-5, "{fusion:?} {cols}×{rows} {name}: {d}");
        }
        assert!((fast.score - graph.score).abs() < 1e-5 && (fast.s_map - graph.s_map).abs() < 1e-4);
        assert_eq!(fast.s_token, graph.s_token);
    }
}

#[test]
fn views_projected_in_advance_give_the_same_output() {
    for (cols, rows) in [(3, 2), (1, 1)] {
        let cfg = tiny_config(64, 2);
        let heads = Heads::init(cfg.clone(), 31).unwrap();
        let buf = Buffers::new(&cfg, cols, rows, 32);
        let whole = heads.forward(&buf.input(37, 23)).unwrap();
        // One view at a time, as the server projects each tile when the vision encoder delivers it.
        let projected: Vec<ProjectedView> = buf.features.iter().map(|f| heads.project_view(f).unwrap()).collect();
        let score_hidden = buf.score.as_slice();
        let view = |i: usize| ViewInput { map_hidden: buf.hidden[i].as_slice(), features: &projected[i] };
        // In two stages, the heatmap before the [SCORE] state exists, as the server runs it.
        let maps_input = MapsInput {
            grid_cols: cols,
            grid_rows: rows,
            tiles: (0..cols * rows).map(view).collect(),
            thumbnail: buf.thumbnail.then(|| view(cols * rows)),
            out_width: 37,
            out_height: 23,
        };
        let staged = heads.score_maps(heads.forward_maps(&maps_input).unwrap(), score_hidden).unwrap();
        for (name, a, b) in [("heatmap", &staged.heatmap, &whole.heatmap), ("local_weight", &staged.local_weight, &whole.local_weight)] {
            let d = max_diff(a, b);
            assert!(d < 1e-5, "{cols}×{rows} {name}: {d}");
        }
        assert!((staged.score - whole.score).abs() < 1e-5, "{} vs {}", staged.score, whole.score);
        let short = heads.score_maps(heads.forward_maps(&maps_input).unwrap(), &score_hidden[1..]).unwrap_err();
        assert!(short.to_string().contains("score_hidden has 63 values, expected 64"), "{short}");

        // Views projected by other heads (other weights) are refused, not silently mixed in.
        let other = Heads::init(cfg.clone(), 33).unwrap();
        match other.forward_maps(&maps_input) {
            Err(heie_heads::HeadsError::Input { field: "features", reason }) => {
                assert!(reason.contains("tiles[0].features") && reason.contains("other heads"), "{reason}")
            }
            r => panic!("expected a features error, got {r:?}"),
        }
    }
}

#[test]
fn projecting_a_view_checks_its_features() {
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 1).unwrap();
    let mut features = values(cfg.tokens_per_tile() * 64, 5);
    let short = heads.project_view(&features[1..]).unwrap_err().to_string();
    assert!(short.contains("255 values, expected 256"), "{short}");
    features[7] = f32::NAN;
    let nan = heads.project_view(&features).unwrap_err().to_string();
    assert!(nan.contains("NaN or infinite"), "{nan}");
}

fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(d < tol, "max diff {d}");
}

#[test]
fn fused_layer_norm_matches_reference_values_and_gradients() {
    let x = Var::from_tensor(&t(values(6 * 10, 1).iter().map(|v| v * 3.0 + 0.5).collect(), &[2, 3, 10])).unwrap();
    let g = Var::from_tensor(&t(values(10, 2), &[10])).unwrap();
    let b = Var::from_tensor(&t(values(10, 3), &[10])).unwrap();
    let ours = kernels::layer_norm(&x, &g, &b, 1e-6).unwrap();
    let reference = candle_nn::ops::layer_norm_slow(&x, &g, &b, 1e-6).unwrap();
    close(&ours, &reference, 1e-5);
    // Weight the outputs so the gradient is not trivially zero (Σ of a LayerNorm output is constant).
    let w = t(values(60, 4), &[2, 3, 10]);
    let go = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let gr = (&reference * &w).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [&x, &g, &b] {
        close(go.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap(), 1e-4);
    }
}

#[test]
fn fast_gelu_matches_erf_gelu_values_and_gradient() {
    let x = Var::from_tensor(&t(values(1000, 5).iter().map(|v| v * 6.0).collect(), &[1000])).unwrap();
    let ours = kernels::gelu(&x).unwrap();
    let reference = x.gelu_erf().unwrap();
    close(&ours, &reference, 1e-6);
    let go = ours.sum_all().unwrap().backward().unwrap();
    let gr = reference.sum_all().unwrap().backward().unwrap();
    close(go.get(x.as_tensor()).unwrap(), gr.get(x.as_tensor()).unwrap(), 1e-5);
}

#[test]
fn fast_exp_is_within_two_ulp_of_libm() {
    // Dense sweep of the range where e^x is a normal float, plus the clamped ends.
    let mut worst = 0f32;
    let mut x = -87.0f32;
    while x < 88.0 {
        let (ours, libm) = (kernels::exp(x), x.exp());
        worst = worst.max(((ours - libm) / libm).abs());
        x += 0.001_7;
    }
    assert!(worst <= 2.0 * f32::EPSILON, "worst relative error {worst}");
    assert_eq!(kernels::exp(0.0), 1.0);
    assert!(kernels::exp(-1000.0) >= 0.0 && kernels::exp(-1000.0) < 1e-37);
    assert!(kernels::exp(1000.0).is_finite() && kernels::exp(1000.0) > 1e38);
}

/// The serving mapper (fused upsampling and read-out, `upsample.rs`) against the graph mapper, at a
/// shape with every dimension distinct and > 1 so no index mix-up can cancel out.
#[test]
fn serving_mapper_matches_graph_mapper() {
    let mut cfg = tiny_config(48, 3);
    cfg.hidden_width = 64;
    let heads = Heads::init(cfg.clone(), 5).unwrap();
    let b = 4;
    let hidden = t(values(b * 48, 6), &[b, 48]);
    let features = t(values(b * 9 * 48, 7).iter().map(|v| v * 2.0).collect(), &[b, 9, 48]);
    let mapper = &heads.model().mapper;
    let graph = mapper.forward(&hidden, &features).unwrap();
    let fast = mapper.forward_serving(&hidden, &mapper.project_image(&features).unwrap()).unwrap();
    assert_eq!(fast.logits.dims(), &[b, 12, 12]);
    assert_eq!(fast.log_sigma.dims(), &[b, 12, 12]);
    // The maps must vary over pixels and tiles, or equality would prove little.
    let spread = |x: &Tensor| {
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
    };
    assert!(spread(&graph.logits) > 0.01 && spread(&graph.log_sigma) > 0.01);
    close(&fast.logits, &graph.logits, 1e-5);
    close(&fast.log_sigma, &graph.log_sigma, 1e-5);
}

#[test]
fn parallel_add_matches_broadcast_add_values_and_gradients() {
    // Large enough to split into several parallel tasks (> 16 Ki values), with a [N, D] and a [D] rhs.
    let a = Var::from_tensor(&t(values(3 * 70 * 90, 8), &[3, 70, 90])).unwrap();
    for rhs_shape in [vec![70, 90], vec![90], vec![3, 70, 90]] {
        let n: usize = rhs_shape.iter().product();
        let b = Var::from_tensor(&t(values(n, 9), &rhs_shape)).unwrap();
        let ours = kernels::add(&a, &b).unwrap();
        let reference = a.broadcast_add(&b).unwrap();
        close(&ours, &reference, 0.0 + f32::MIN_POSITIVE);
        let w = t(values(3 * 70 * 90, 10), &[3, 70, 90]);
        let go = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (&reference * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            close(go.get(v.as_tensor()).unwrap(), gr.get(v.as_tensor()).unwrap(), 1e-4);
        }
    }
    let wrong = t(values(70, 11), &[70]);
    assert!(kernels::add(&a, &wrong).is_err(), "[70] is not a suffix of [3, 70, 90]");
}
