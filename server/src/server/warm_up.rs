//! One tiny evaluation end to end before the server says SERVING, so every lazy first-use cost
//! (kernels, buffers, the heads) is paid before the first real request.

use anyhow::Context as _;
use image::{Rgb, RgbImage};

use crate::pipeline::{EvalOptions, EvalResult, Evaluator};

pub fn run(evaluator: &Evaluator) -> anyhow::Result<()> {
    let image = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 128]));
    let options = EvalOptions { explanation: false, max_tokens_per_section: 2, max_tiles: 1, ..EvalOptions::default() };
    let (_, events) = evaluator.evaluate(&image, options).context("warm-up evaluation")?;
    let result = EvalResult::collect(events, |_| {});
    if let Some(e) = result.error {
        anyhow::bail!("warm-up evaluation failed: {e}");
    }
    anyhow::ensure!(result.score().is_some(), "warm-up evaluation produced no score");
    Ok(())
}
