//! Serving fast path for the mapper's tail: ×4 upsampling of the image tokens (two 2×2 transposed
//! convolutions with LayerNorm and GELU) and the hypernetwork read-outs, for inference only.
//!
//! The graph version (`Mapper::forward`) is ~12 tensor ops whose intermediates are full `[B, 4g, 4g, C]`
//! maps: two 6-D pixel-shuffle copies, bias broadcasts, separate LayerNorm and GELU passes, and a
//! read-out matmul that only needs a dot product per pixel. Every upsampled pixel depends on one image
//! token only, so here the two GEMMs stay as they are and everything between and after them is fused
//! into one pass each, the read-out included; the pixel shuffle becomes the index arithmetic of the
//! final write. Same formulas in the same order (shared row kernels), equal to the graph to rounding
//! (`tests/fast_path.rs`).

use candle_core::{Storage, Tensor};
use rayon::prelude::*;

use crate::error::{HeadsError, Result};
use crate::kernels::{dot, gelu_value, layer_norm_row, wide};
use crate::layers::{ConvTranspose2x2, LayerNorm, LAYER_NORM_EPS};

/// Token rows per parallel task in the LayerNorm/GELU pass.
const ROWS_PER_TASK: usize = 64;

/// Calls `f` with the values of a contiguous CPU f32 tensor, in place.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(HeadsError::Candle(candle_core::Error::Msg("upsample: expected a contiguous CPU tensor".into())));
    };
    Ok(f(&cpu.as_slice::<f32>()?[start..end]))
}

/// The upsampling modules of the mapper.
#[derive(Debug, Clone, Copy)]
pub struct Upsampler<'a> {
    /// First ×2 transposed convolution, `D → D/4`.
    pub upscale1: &'a ConvTranspose2x2,
    /// LayerNorm after it.
    pub norm: &'a LayerNorm,
    /// Second ×2 transposed convolution, `D/4 → D/8`.
    pub upscale2: &'a ConvTranspose2x2,
}

/// Per-pixel read-outs of one batch, each `[B, 4g, 4g]` row-major.
#[derive(Debug, Clone)]
pub struct ReadOut {
    /// Heatmap logits.
    pub logits: Vec<f32>,
    /// log σ.
    pub log_sigma: Vec<f32>,
}

impl Upsampler<'_> {
    /// `keys` `[B, g², D]` (image tokens, row-major g×g grid) and the hypernetwork outputs `heat_weights`,
    /// `sigma_weights` (`B × D/8` each) → `heat_weights[b]·gelu(up(keys))` per pixel, same for σ.
    ///
    /// Equals the graph's `up = gelu(upscale2(gelu(norm(upscale1(keys)))))` followed by
    /// `up · weights` per tile.
    pub fn read_out(&self, keys: &Tensor, grid: usize, heat_weights: &[f32], sigma_weights: &[f32]) -> Result<ReadOut> {
        let (b, tokens, d) = keys.dims3()?;
        let g = grid;
        assert_eq!(tokens, g * g, "read_out: keys are not a g×g grid");
        let c1 = self.upscale1.bias().dim(0)?;
        let c2 = self.upscale2.bias().dim(0)?;
        assert_eq!(heat_weights.len(), b * c2);
        assert_eq!(sigma_weights.len(), b * c2);
        let bias1 = self.upscale1.bias().to_vec1::<f32>()?;
        let gamma = self.norm.weight().to_vec1::<f32>()?;
        let beta = self.norm.bias().to_vec1::<f32>()?;
        let bias2 = self.upscale2.bias().to_vec1::<f32>()?;

        // GEMM 1: per token, 4 sub-pixels × c1 channels (column order (ky, kx, channel)).
        let y1 = keys.reshape((b * tokens, d))?.matmul(&self.upscale1.gemm_weight()?)?;
        // Bias, LayerNorm, GELU per sub-pixel; rows of z are (b, ty, tx, ky, kx), `c1` wide.
        let mut z = vec![0f32; b * tokens * 4 * c1];
        with_values(&y1, |y1| {
            z.par_chunks_mut(ROWS_PER_TASK * c1).zip(y1.par_chunks(ROWS_PER_TASK * c1)).for_each(|(z, y)| {
                let mut v = vec![0f32; c1];
                wide(|| {
                    for (z, y) in z.chunks_mut(c1).zip(y.chunks(c1)) {
                        for ((v, &y), &bias) in v.iter_mut().zip(y).zip(&bias1) {
                            *v = y + bias;
                        }
                        layer_norm_row(&v, &gamma, &beta, LAYER_NORM_EPS, z);
                        for z in z.iter_mut() {
                            *z = gelu_value(*z);
                        }
                    }
                })
            });
        })?;
        // GEMM 2: per first-level sub-pixel, 4 sub-pixels × c2 channels.
        let z = Tensor::from_vec(z, (b * tokens * 4, c1), keys.device())?;
        let y2 = z.matmul(&self.upscale2.gemm_weight()?)?;

        // Bias, GELU and both dot products per output pixel. One task = one token row of one tile =
        // 4 output rows of 4g pixels (a contiguous block of both outputs).
        let side = 4 * g;
        let mut logits = vec![0f32; b * side * side];
        let mut log_sigma = vec![0f32; b * side * side];
        with_values(&y2, |y2| {
            let unit = 4 * side;
            logits.par_chunks_mut(unit).zip(log_sigma.par_chunks_mut(unit)).enumerate().for_each(|(task, (lo, ls))| {
                let (tile, ty) = (task / g, task % g);
                let hw = &heat_weights[tile * c2..][..c2];
                let sw = &sigma_weights[tile * c2..][..c2];
                let mut u = vec![0f32; c2];
                wide(|| for tx in 0..g {
                    for (ky, kx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let row = ((tile * g + ty) * g + tx) * 4 + ky * 2 + kx;
                        for (ky2, kx2) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let y = &y2[row * 4 * c2 + (ky2 * 2 + kx2) * c2..][..c2];
                            for ((u, &y), &bias) in u.iter_mut().zip(y).zip(&bias2) {
                                *u = gelu_value(y + bias);
                            }
                            let at = (2 * ky + ky2) * side + 4 * tx + 2 * kx + kx2;
                            lo[at] = dot(&u, hw);
                            ls[at] = dot(&u, sw);
                        }
                    }
                });
            });
        })?;
        Ok(ReadOut { logits, log_sigma })
    }
}
