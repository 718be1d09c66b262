//! Forward time for one image: 3×2 tiles + thumbnail, g = 16 (256 tokens per tile), output 1024×768,
//! at the LLM widths of InternVL3-8B (3584) and InternVL3-2B (1536). Three measurements each:
//!
//! - `forward`: the whole pass from raw features (what the training tools run);
//! - `project_view`: one view's projection, which the server runs per tile as soon as the vision
//!   encoder delivers it, while the text is still being written;
//! - `forward_maps`: the heatmap side from projected views, which the server runs as soon as the last
//!   `[MAP]` state is captured, while the model writes its analysis;
//! - `score_maps`: what is left once the `[SCORE]` state exists: the server's critical path.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use heie_heads::{Heads, HeadsConfig, HeadsInput, MapsInput, ProjectedView, TileFeatures, ViewInput};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// The bench image: a 3×2 grid of `views(0..6)`, the thumbnail `views(6)`, a 1024×768 output.
fn image<'a, I>(views: impl Fn(usize) -> ViewInput<'a, I>) -> MapsInput<'a, I> {
    MapsInput { grid_cols: 3, grid_rows: 2, tiles: (0..6).map(&views).collect(), thumbnail: Some(views(6)), out_width: 1024, out_height: 768 }
}

fn bench_width(c: &mut Criterion, name: &str, width: usize) {
    let heads = Heads::init(HeadsConfig::new(width, 16), 1).expect("init");
    let tokens = 256;
    let hidden: Vec<Vec<f32>> = (0..7).map(|i| values(width, i)).collect();
    let features: Vec<Vec<f32>> = (0..7).map(|i| values(tokens * width, 100 + i)).collect();
    let score = values(width, 999);
    let tile = |i: usize| TileFeatures { map_hidden: &hidden[i], features: &features[i] };
    let raw = image(tile);
    let input = HeadsInput {
        grid_cols: raw.grid_cols,
        grid_rows: raw.grid_rows,
        tiles: raw.tiles,
        thumbnail: raw.thumbnail,
        score_hidden: &score,
        out_width: raw.out_width,
        out_height: raw.out_height,
    };
    c.bench_function(&format!("forward_{name}"), |b| b.iter(|| heads.forward(&input).expect("forward")));
    c.bench_function(&format!("project_view_W{width}"), |b| b.iter(|| heads.project_view(&features[0]).expect("project")));
    let projected: Vec<ProjectedView> = features.iter().map(|f| heads.project_view(f).expect("project")).collect();
    let maps_input = image(|i| ViewInput { map_hidden: hidden[i].as_slice(), features: &projected[i] });
    c.bench_function(&format!("forward_maps_{name}"), |b| b.iter(|| heads.forward_maps(&maps_input).expect("maps")));
    let maps = heads.forward_maps(&maps_input).expect("maps");
    c.bench_function(&format!("score_maps_{name}"), |b| {
        b.iter_batched(|| maps.clone(), |maps| heads.score_maps(maps, &score).expect("score"), BatchSize::LargeInput)
    });
}

fn forward(c: &mut Criterion) {
    bench_width(c, "3x2+thumb_W3584_g16_1024x768", 3584);
    bench_width(c, "3x2+thumb_W1536_g16_1024x768", 1536);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = forward
}
criterion_main!(benches);
