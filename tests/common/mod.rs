//! Shared helpers of the end-to-end tests: fixture paths, engines on the tiny models, test images.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use heie_server::engine::{Engine, EngineConfig};
use image::{Rgb, RgbImage};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

pub fn model(name: &str) -> PathBuf {
    fixture("models").join(name)
}

pub fn config(llm: &str, mmproj: &str, slots: u32) -> EngineConfig {
    EngineConfig {
        model: model(llm),
        mmproj: model(mmproj),
        n_gpu_layers: 0,
        threads: 1,
        ctx_per_sequence: 4096,
        slots,
        n_batch: 512,
        max_queue: 64,
        vision_batch_tiles: 7,
        flash_attention: None,
        speedups: Default::default(),
        image_cache_bytes: heie_server::engine::DEFAULT_IMAGE_CACHE_MB << 20,
    }
}

pub fn engine(llm: &str, mmproj: &str, slots: u32) -> Arc<Engine> {
    Arc::new(Engine::start(&config(llm, mmproj, slots)).expect("fixture engine starts"))
}

/// A deterministic picture with structure (gradients and a block), so tiles differ from each other.
pub fn test_image(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let block = x > width / 3 && x < width / 2 && y > height / 4 && y < height / 2;
        if block {
            Rgb([250, 20, 30])
        } else {
            Rgb([(x * 255 / width.max(1)) as u8, (y * 255 / height.max(1)) as u8, ((x + y) % 256) as u8])
        }
    })
}

pub fn heie_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_heie"))
}

/// The error of a call that must fail (tonic's streaming responses are not `Debug`, so `expect_err`
/// cannot be used on them).
pub fn refused<T>(result: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(_) => panic!("{what}: the call succeeded"),
        Err(status) => status,
    }
}
