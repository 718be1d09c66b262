//! Forward-time input validation and config validation.
mod common;

use common::{tiny_config, values, Buffers};
use heie_heads::{FusionVariant, Heads, HeadsConfig, HeadsError, TileFeatures};

fn field_of(r: heie_heads::Result<heie_heads::HeadsOutput>) -> (&'static str, String) {
    match r {
        Err(HeadsError::Input { field, reason }) => (field, reason),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn every_shape_mismatch_is_a_clear_error() {
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 1).unwrap();
    let buf = Buffers::new(&cfg, 3, 2, 1);

    let mut input = buf.input(10, 10);
    input.tiles.pop();
    let (f, r) = field_of(heads.forward(&input));
    assert_eq!(f, "tiles");
    assert!(r.contains("5 tiles") && r.contains("3×2"), "{r}");

    let mut input = buf.input(10, 10);
    input.grid_cols = 2;
    assert_eq!(field_of(heads.forward(&input)).0, "tiles");

    let mut input = buf.input(10, 10);
    input.thumbnail = None;
    assert_eq!(field_of(heads.forward(&input)).0, "thumbnail");

    let short = values(63, 1);
    let mut input = buf.input(10, 10);
    input.tiles[4].map_hidden = &short;
    let (f, r) = field_of(heads.forward(&input));
    assert_eq!(f, "map_hidden");
    assert!(r.contains("tiles[4]") && r.contains("63") && r.contains("64"), "{r}");

    // Features of a 16-token tile against a 4-token config: wrong tokens per tile.
    let big = values(16 * 64, 2);
    let mut input = buf.input(10, 10);
    input.thumbnail = Some(TileFeatures { map_hidden: &buf.hidden[6], features: &big });
    let (f, r) = field_of(heads.forward(&input));
    assert_eq!(f, "features");
    assert!(r.contains("thumbnail") && r.contains("1024") && r.contains("256"), "{r}");

    let mut input = buf.input(10, 10);
    input.score_hidden = &short;
    assert_eq!(field_of(heads.forward(&input)).0, "score_hidden");

    assert_eq!(field_of(heads.forward(&buf.input(0, 10))).0, "out_width");
    assert_eq!(field_of(heads.forward(&buf.input(10, 100_000))).0, "out_height");

    let mut nan = buf.features[0].clone();
    nan[3] = f32::NAN;
    let mut input = buf.input(10, 10);
    input.tiles[0].features = &nan;
    let (_, r) = field_of(heads.forward(&input));
    assert!(r.contains("NaN"), "{r}");

    let single = Buffers::new(&cfg, 1, 1, 2);
    let mut input = single.input(10, 10);
    input.thumbnail = Some(input.tiles[0]);
    let (f, r) = field_of(heads.forward(&input));
    assert_eq!(f, "thumbnail");
    assert!(r.contains("1×1"), "{r}");

    let mut input = single.input(10, 10);
    input.grid_cols = 0;
    assert_eq!(field_of(heads.forward(&input)).0, "grid");
}

#[test]
fn config_validation_names_the_field() {
    let bad = |f: fn(&mut HeadsConfig), field: &str| {
        let mut c = HeadsConfig::new(64, 2);
        f(&mut c);
        match c.validate() {
            Err(HeadsError::Config { field: got, reason }) => assert_eq!(got, field, "{reason}"),
            other => panic!("expected config error on {field}, got {other:?}"),
        }
        assert!(Heads::init(c, 0).is_err());
    };
    bad(|c| c.llm_width = 0, "llm_width");
    bad(|c| c.token_grid = 0, "token_grid");
    bad(|c| c.hidden_width = 100, "hidden_width");
    bad(|c| c.attention_heads = 7, "attention_heads");
    bad(|c| c.cross_attention_downsample = 64, "cross_attention_downsample");
    bad(|c| c.score_map_size = 20, "score_map_size");
    bad(|c| c.fusion = FusionVariant::Fixed { local_weight: 1.5 }, "fusion.local_weight");
    bad(|c| c.calibration.token_weight = 0.0, "calibration.token_weight");
    bad(|c| c.calibration.map_weight = -1.0, "calibration.map_weight");
    bad(|c| c.calibration.bias = f32::NAN, "calibration.bias");
    assert!(HeadsConfig::new(64, 2).validate().is_ok());
}

#[test]
fn config_json_defaults_and_round_trip() {
    let c = HeadsConfig::from_json(r#"{"llm_width": 1536, "token_grid": 16}"#).unwrap();
    assert_eq!(c, HeadsConfig::new(1536, 16));
    assert_eq!((c.hidden_width, c.attention_heads, c.two_way_layers), (256, 8, 2));
    let mut c2 = c.clone();
    c2.fusion = FusionVariant::Fixed { local_weight: 0.4 };
    assert_eq!(HeadsConfig::from_json(&c2.to_json()).unwrap(), c2);
    assert!(matches!(HeadsConfig::from_json(r#"{"llm_width": 1536}"#), Err(HeadsError::Config { field: "json", .. })));
    assert!(HeadsConfig::from_json(r#"{"llm_width": 1536, "token_grid": 16, "typo": 1}"#).is_err());
}

#[test]
fn non_finite_features_name_the_view() {
    let cfg = tiny_config(64, 2);
    let heads = Heads::init(cfg.clone(), 1).unwrap();
    let buf = Buffers::new(&cfg, 3, 2, 1);
    for (view, bad) in [(5, f32::INFINITY), (6, f32::NAN), (0, f32::NEG_INFINITY)] {
        let mut values = buf.features[view].clone();
        let last = values.len() - 1;
        values[last] = bad;
        let mut input = buf.input(10, 10);
        if view < 6 {
            input.tiles[view].features = &values;
        } else {
            input.thumbnail = Some(TileFeatures { map_hidden: &buf.hidden[6], features: &values });
        }
        let name = if view < 6 { format!("tiles[{view}].features") } else { "thumbnail.features".into() };
        // Both paths: serving (checks while packing) and the tensor path (checks first).
        let (f, r) = field_of(heads.forward(&input));
        assert!(f == "features" && r.contains(&name) && r.contains("NaN or infinite"), "{f}: {r}");
        match heads.input_tensors(&input) {
            Err(HeadsError::Input { field, reason }) => assert!(field == "features" && reason.contains(&name), "{reason}"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
}
