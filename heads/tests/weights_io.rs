//! Determinism, save/load round trip, and clear errors for every mismatch.
mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{tiny_config, Buffers};
use heie_heads::weights::{CONFIG_KEY, FORMAT_KEY, FORMAT_VERSION};
use heie_heads::{FusionVariant, Heads, HeadsError};

fn outputs_equal(a: &heie_heads::HeadsOutput, b: &heie_heads::HeadsOutput) -> bool {
    a.heatmap == b.heatmap && a.local == b.local && a.global == b.global && a.local_weight == b.local_weight
        && a.sigma_local == b.sigma_local && a.sigma_global == b.sigma_global && a.score == b.score
        && a.s_token == b.s_token && a.s_map == b.s_map
}

#[test]
fn same_seed_same_output_other_seed_other_output() {
    let cfg = tiny_config(64, 2);
    let buf = Buffers::new(&cfg, 2, 2, 7);
    let a = Heads::init(cfg.clone(), 42).unwrap().forward(&buf.input(20, 20)).unwrap();
    let b = Heads::init(cfg.clone(), 42).unwrap().forward(&buf.input(20, 20)).unwrap();
    assert!(outputs_equal(&a, &b));
    let c = Heads::init(cfg, 43).unwrap().forward(&buf.input(20, 20)).unwrap();
    assert_ne!(a.heatmap, c.heatmap);
    assert_ne!(a.s_token, c.s_token);
}

#[test]
fn save_load_round_trip_gives_identical_output() {
    for fusion in [FusionVariant::Adaptive, FusionVariant::Learned, FusionVariant::Fixed { local_weight: 0.25 }] {
        let mut cfg = tiny_config(64, 4);
        cfg.fusion = fusion;
        let heads = Heads::init(cfg.clone(), 9).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heads.safetensors");
        heads.save(&path).unwrap();
        let loaded = Heads::load(&path, 64, 16).unwrap();
        assert_eq!(loaded.config(), heads.config());
        let buf = Buffers::new(&cfg, 3, 2, 8);
        let a = heads.forward(&buf.input(40, 30)).unwrap();
        let b = loaded.forward(&buf.input(40, 30)).unwrap();
        assert!(outputs_equal(&a, &b), "{fusion:?}");
    }
}

/// A saved tiny model, its tensors and metadata, for corrupting.
struct Saved {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

fn saved() -> Saved {
    let heads = Heads::init(tiny_config(64, 2), 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heads.safetensors");
    heads.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    Saved { _dir: dir, path, tensors, meta }
}

impl Saved {
    fn rewrite(&self, tensors: &HashMap<String, Tensor>, meta: HashMap<String, String>) {
        let mut named: Vec<_> = tensors.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        safetensors::serialize_to_file(named, Some(meta), &self.path).unwrap();
    }
}

fn err_text(r: heie_heads::Result<Heads>) -> (HeadsError, String) {
    let e = r.expect_err("load must fail");
    let s = e.to_string();
    (e, s)
}

#[test]
fn load_rejects_other_llm_width_and_token_count() {
    let s = saved();
    let (e, msg) = err_text(Heads::load(&s.path, 1536, 4));
    assert!(matches!(e, HeadsError::ModelMismatch { what: "llm_width", weights: 64, model: 1536 }), "{msg}");
    assert!(msg.contains("64") && msg.contains("1536"));
    let (e, msg) = err_text(Heads::load(&s.path, 64, 256));
    assert!(matches!(e, HeadsError::ModelMismatch { what: "tokens_per_tile", weights: 4, model: 256 }), "{msg}");
    assert!(Heads::load(&s.path, 64, 4).is_ok());
}

#[test]
fn load_names_a_tensor_with_the_wrong_shape() {
    let s = saved();
    let mut t = s.tensors.clone();
    t.insert("mapper.image_proj.weight".into(), Tensor::zeros((32, 65), candle_core::DType::F32, &Device::Cpu).unwrap());
    s.rewrite(&t, s.meta.clone());
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::TensorShape { .. }), "{msg}");
    assert!(msg.contains("mapper.image_proj.weight") && msg.contains("[32, 65]") && msg.contains("[32, 64]"), "{msg}");
}

#[test]
fn load_rejects_missing_and_extra_tensors() {
    let s = saved();
    let mut t = s.tensors.clone();
    t.remove("mapper.sigma_hyper.layers.2.bias").unwrap();
    s.rewrite(&t, s.meta.clone());
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::MissingTensors(_)) && msg.contains("mapper.sigma_hyper.layers.2.bias"), "{msg}");

    let mut t = s.tensors.clone();
    t.insert("fusion.local_logit".into(), Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap());
    s.rewrite(&t, s.meta.clone());
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::UnexpectedTensors(_)) && msg.contains("fusion.local_logit"), "{msg}");
}

#[test]
fn load_rejects_wrong_dtype_and_non_finite_values() {
    let s = saved();
    let mut t = s.tensors.clone();
    let name = "token_scorer.fc2.bias".to_string();
    t.insert(name.clone(), t[&name].to_dtype(candle_core::DType::F16).unwrap());
    s.rewrite(&t, s.meta.clone());
    let (_, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(msg.contains(&name) && msg.contains("f32"), "{msg}");

    let mut t = s.tensors.clone();
    t.insert(name.clone(), Tensor::new(&[f32::NAN], &Device::Cpu).unwrap());
    s.rewrite(&t, s.meta.clone());
    let (_, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(msg.contains(&name) && msg.contains("NaN"), "{msg}");
}

#[test]
fn load_rejects_truncated_files_and_foreign_metadata() {
    let s = saved();
    let bytes = std::fs::read(&s.path).unwrap();
    std::fs::write(&s.path, &bytes[..bytes.len() - 100]).unwrap();
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::Format { .. }), "{msg}");

    std::fs::write(&s.path, b"not a safetensors file").unwrap();
    assert!(matches!(Heads::load(&s.path, 64, 4), Err(HeadsError::Format { .. })));

    let mut meta = s.meta.clone();
    meta.remove(FORMAT_KEY);
    s.rewrite(&s.tensors, meta);
    let (_, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(msg.contains(FORMAT_KEY), "{msg}");

    let mut meta = s.meta.clone();
    meta.insert(CONFIG_KEY.into(), meta[CONFIG_KEY].replace("\"hidden_width\": 32", "\"hidden_width\": 30"));
    s.rewrite(&s.tensors, meta);
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::Config { field: "hidden_width", .. }), "{msg}");

    // A format-2 file (before the map scorer's mass term): refused, naming both versions.
    let mut t = s.tensors.clone();
    t.remove("map_scorer.mass_weight_raw");
    let mut meta = s.meta.clone();
    meta.insert(FORMAT_KEY.into(), "2".into());
    s.rewrite(&t, meta);
    let (e, msg) = err_text(Heads::load(&s.path, 64, 4));
    assert!(matches!(e, HeadsError::Format { .. }) && msg.contains("format version 2") && msg.contains(FORMAT_VERSION), "{msg}");

    let missing = s.path.with_file_name("absent.safetensors");
    assert!(matches!(Heads::load(&missing, 64, 4), Err(HeadsError::Io { .. })));
}

#[test]
fn saved_config_carries_the_current_calibration() {
    let mut cfg = tiny_config(64, 2);
    cfg.calibration.token_weight = 3.0;
    cfg.calibration.bias = -0.5;
    let heads = Heads::init(cfg, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.safetensors");
    heads.save(&path).unwrap();
    let loaded = Heads::load(&path, 64, 4).unwrap();
    assert!((loaded.config().calibration.token_weight - 3.0).abs() < 1e-5);
    assert_eq!(loaded.config().calibration.bias, -0.5);
}
