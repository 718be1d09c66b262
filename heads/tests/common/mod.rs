//! Shared fixtures: a tiny config (W = 64) and deterministic pseudo-random inputs.
#![allow(dead_code)]

use heie_heads::{HeadsConfig, HeadsInput, TileFeatures};

/// Small enough for fast tests, same structure as the real heads.
pub fn tiny_config(llm_width: usize, token_grid: usize) -> HeadsConfig {
    let mut c = HeadsConfig::new(llm_width, token_grid);
    c.hidden_width = 32;
    c.attention_heads = 4;
    c.mlp_dim = 64;
    c.score_map_size = 16;
    c
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Owned buffers for one image.
pub struct Buffers {
    pub hidden: Vec<Vec<f32>>,
    pub features: Vec<Vec<f32>>,
    pub score: Vec<f32>,
    pub cols: usize,
    pub rows: usize,
    pub thumbnail: bool,
}

impl Buffers {
    /// Tiles (and thumbnail unless 1×1) for `cfg`.
    pub fn new(cfg: &HeadsConfig, cols: usize, rows: usize, seed: u64) -> Self {
        let thumbnail = cols * rows > 1;
        let n = cols * rows + thumbnail as usize;
        let w = cfg.llm_width;
        Self {
            hidden: (0..n).map(|i| values(w, seed * 1000 + i as u64)).collect(),
            features: (0..n).map(|i| values(cfg.tokens_per_tile() * w, seed * 1000 + 500 + i as u64)).collect(),
            score: values(w, seed * 1000 + 999),
            cols,
            rows,
            thumbnail,
        }
    }

    pub fn input(&self, out_width: usize, out_height: usize) -> HeadsInput<'_> {
        let n = self.cols * self.rows;
        let tile = |i: usize| TileFeatures { map_hidden: &self.hidden[i], features: &self.features[i] };
        HeadsInput {
            grid_cols: self.cols,
            grid_rows: self.rows,
            tiles: (0..n).map(tile).collect(),
            thumbnail: self.thumbnail.then(|| tile(n)),
            score_hidden: &self.score,
            out_width,
            out_height,
        }
    }
}
