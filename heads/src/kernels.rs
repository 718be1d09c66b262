//! Fast CPU forward kernels with autodiff backward passes, for the ops that dominate the mapper's time.
//!
//! candle's differentiable LayerNorm and GELU are compositions of ~8 elementwise tensor ops, each a full
//! pass and allocation (10 ms for one LayerNorm over 7×256×256 on this machine, vs 0.5 ms fused), and its
//! fused LayerNorm kernel has no backward. These ops compute the forward in one parallel pass and express
//! the backward with ordinary candle ops, so training still differentiates through them.
//!
//! [`add`] exists for scheduling rather than arithmetic: candle splits every elementwise op over 64 Ki
//! values into fixed per-thread shares and spin-waits for all of them, so on a shared machine each such
//! add waits for whichever thread the OS has descheduled; rayon's work stealing lets the running thread
//! take the waiting share instead.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::error::Result;

/// Rows per parallel task: big enough to amortise scheduling, small enough to split 7×256 rows.
const ROWS_PER_TASK: usize = 64;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("kernel input must be contiguous"),
    }
}

/// Runs `f` compiled for AVX2 when the CPU has it (detected at run time, cached by std), else as is.
///
/// The crate is built for baseline x86-64, so its loops vectorise 4 lanes wide (SSE2); the elementwise
/// kernels below are compute-bound (GELU, `exp`), and AVX2 runs them 8 wide. `f` is inlined into the
/// AVX2 function, so it must be small: call this around a task's inner loop, not around a parallel
/// iterator. Results are bit-identical either way: the same IEEE operations in the same order per lane
/// (no FMA is enabled, so no multiply-add gets fused), only more lanes at once.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of `avx2`.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `eˣ` for f32 without a libm call, so loops over it vectorise (libm's `expf` is a scalar call: it was
/// the largest single item in the serving profile, from GELU and the per-pixel fusion weight).
///
/// Cephes' `expf` scheme: `x = n·ln2 + r` with |r| ≤ ln2/2, `eʳ` by a degree-7 polynomial, `2ⁿ` put
/// straight into the exponent bits. Relative error ≤ 2 ulp (tested against `f32::exp`). Inputs are
/// clamped to [−87.3, 88.3] so that `2ⁿ` fits the exponent field: below, `e^-87.3 ≈ 1.2e-38` stands in
/// for smaller values (0 in libm), above, `≈ 2.1e38` for larger ones (∞); no caller can tell them apart.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| ≤ 128.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer with plain float ops (SSE2 has no
    // round instruction, so `f32::round` would not vectorise).
    const ROUND: f32 = 12_582_912.0;
    // max/min rather than clamp: clamp's comparisons kept the loop scalar.
    let x = x.max(-87.3).min(88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // 2ⁿ from the integer n + 127 ∈ [1, 254] as exponent bits. Adding 2²³ leaves that integer in the
    // low mantissa bits, read off by a bit cast: `n as i32` (a saturating conversion) would not vectorise.
    const TWO_23: f32 = 8_388_608.0;
    let biased = ((n + 127.0) + TWO_23).to_bits() - TWO_23.to_bits();
    er * f32::from_bits(biased << 23)
}

/// `erf` for f32 (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7): one `exp` instead of libm's series.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Exact (erf) GELU of one value, `x·Φ(x)`; the serving fast paths use it so they match [`gelu`].
#[inline(always)]
pub fn gelu_value(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// Lanes of the partial sums in [`sum`] and [`dot`].
const LANES: usize = 8;

/// `Σ f(i)` over `0..len` in [`LANES`] interleaved partial sums, so the adds are independent and
/// vectorise (a single running sum is one long dependency chain, ~4 cycles per value).
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (lane, a) in acc.iter_mut().enumerate() {
            *a += f(base + lane);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in full..len {
        s += f(i);
    }
    s
}

/// `Σ x`, see [`lane_sum`].
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    lane_sum(x.len(), |i| x[i])
}

/// `Σ a·b` over the shorter length, see [`lane_sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    lane_sum(n, |i| a[i] * b[i])
}

/// LayerNorm of one row `x` into `out`: `(x − μ)/√(σ² + eps)·γ + β` (the same arithmetic as
/// [`layer_norm`], which calls it, so fast paths that normalise rows themselves match it exactly).
#[inline(always)]
pub fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = gamma.len();
    let (x, beta, out) = (&x[..n], &beta[..n], &mut out[..n]);
    let mean = sum(x) / n as f32;
    let var = lane_sum(n, |i| (x[i] - mean) * (x[i] - mean)) / n as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..n {
        out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
    }
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "heie-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16 * 1024).zip(x.par_chunks(16 * 1024)).for_each(|(o, x)| {
            wide(|| {
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = gelu_value(v);
                }
            })
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        let cdf = ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
        let pdf = (x.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt());
        let d = (cdf? + (x * pdf?)?)?;
        Ok(Some(grad.mul(&d)?))
    }
}

/// Exact (erf) GELU, `x·Φ(x)`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

struct AddOp;

impl CustomOp2 for AddOp {
    fn name(&self) -> &'static str {
        "heie-add"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous_f32(s1, l1)?;
        let b = contiguous_f32(s2, l2)?;
        let mut out = vec![0f32; a.len()];
        // `b` repeats along the leading axes of `a` (checked by `add`); tasks hold whole repeats of it.
        let per_task = b.len() * (16 * 1024 / b.len()).max(1);
        out.par_chunks_mut(per_task).zip(a.par_chunks(per_task)).for_each(|(o, a)| {
            wide(|| {
                for (o, a) in o.chunks_mut(b.len()).zip(a.chunks(b.len())) {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = a + b;
                    }
                }
            })
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let repeats = grad.elem_count() / b.elem_count();
        let d_b = grad.reshape((repeats, b.elem_count()))?.sum(0)?.reshape(b.shape())?;
        Ok((Some(grad.clone()), Some(d_b)))
    }
}

/// `a + b` where `b`'s shape is `a`'s or a suffix of it (`b` repeated along `a`'s leading axes: a bias
/// `[D]` or a positional encoding `[N, D]` added to `[B, N, D]`).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (da, db) = (a.dims(), b.dims());
    if db.is_empty() || db.len() > da.len() || da[da.len() - db.len()..] != *db {
        return Err(candle_core::Error::Msg(format!("kernels::add: {db:?} is not a suffix of {da:?}")).into());
    }
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddOp)?)
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "heie-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let gamma = contiguous_f32(s2, l2)?;
        let beta = contiguous_f32(s3, l3)?;
        let n = gamma.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK).zip(x.par_chunks(n * ROWS_PER_TASK)).for_each(|(o, x)| {
            wide(|| {
                for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                    layer_norm_row(x, gamma, beta, self.eps, o);
                }
            })
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(D::Minus1)? as f64;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let inv = ((centred.sqr()?.sum_keepdim(D::Minus1)? / n)? + self.eps as f64)?.sqrt()?.recip()?;
        let xhat = centred.broadcast_mul(&inv)?;
        let lead: Vec<usize> = (0..x.rank() - 1).collect();
        let d_beta = grad.sum(lead.clone())?;
        let d_gamma = (grad * &xhat)?.sum(lead)?;
        // dx = inv·(g − mean(g) − x̂·mean(g·x̂)) with g = grad·γ
        let g = grad.broadcast_mul(gamma)?;
        let dx = (g.broadcast_sub(&g.mean_keepdim(D::Minus1)?)?
            - xhat.broadcast_mul(&(&g * &xhat)?.mean_keepdim(D::Minus1)?)?)?
        .broadcast_mul(&inv)?;
        Ok((Some(dx), Some(d_gamma), Some(d_beta)))
    }
}

/// LayerNorm over the last dimension: `(x − μ)/√(σ² + eps)·γ + β`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNormOp { eps })?)
}
