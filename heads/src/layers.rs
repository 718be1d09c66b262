//! Small differentiable building blocks shared by the mapper and the scorer.
//!
//! candle-nn's fast `LayerNorm` and `softmax_last_dim` kernels have no backward pass, so gradients would
//! silently stop at them during training; these blocks use only ops with autodiff support (our own
//! kernels in `kernels.rs` included).

use candle_core::{Module, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::error::Result;

/// Uniform(±1/√fan_in), PyTorch's default for linear and conv layers.
fn fan_in_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// Affine layer `y = x·Wᵀ + b`, weight stored `[out, in]` (PyTorch layout, easy to port checkpoints).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Creates (or loads) `weight` `[out, in]` and `bias` `[out]` under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", fan_in_uniform(in_dim))?;
        let bias = vb.get_with_hints(out_dim, "bias", fan_in_uniform(in_dim))?;
        Ok(Self { weight, bias })
    }

    /// Builds a layer from explicit tensors (tests, hand-set weights).
    pub fn from_tensors(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Flatten leading dims into one plain 2-D GEMM: candle's broadcast batched matmul is much slower.
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().expect("linear input has a last dim");
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = crate::kernels::add(&y, &self.bias).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut out = dims;
        *out.last_mut().expect("non-empty") = self.bias.dim(0)?;
        y.reshape(out)
    }
}

/// Layer normalisation over the last dimension (ε = 1e-6 as in SAM's decoder).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

/// LayerNorm's ε (SAM's decoder value).
pub const LAYER_NORM_EPS: f32 = 1e-6;

impl LayerNorm {
    /// Creates `weight` (ones) and `bias` (zeros) of width `dim`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?, bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))? })
    }

    /// The scale γ `[dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift β `[dim]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::kernels::layer_norm(x, &self.weight, &self.bias, LAYER_NORM_EPS).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// Multi-layer perceptron with ReLU between layers (none after the last), as SAM's hypernetworks.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// `dims` = [input, hidden..., output]; one `Linear` per consecutive pair, named `layers.{i}`.
    pub fn new(dims: &[usize], vb: VarBuilder) -> Result<Self> {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(w[0], w[1], vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// Multi-head attention with an optional reduced internal width (SAM's `downsample_rate`).
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl Attention {
    /// Attention over width `dim` with `heads` heads, computed internally at `dim / downsample`.
    pub fn new(dim: usize, heads: usize, downsample: usize, vb: VarBuilder) -> Result<Self> {
        let inner = dim / downsample;
        Ok(Self {
            q_proj: Linear::new(dim, inner, vb.pp("q_proj"))?,
            k_proj: Linear::new(dim, inner, vb.pp("k_proj"))?,
            v_proj: Linear::new(dim, inner, vb.pp("v_proj"))?,
            out_proj: Linear::new(inner, dim, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// Builds an attention layer from explicit projections (tests with hand-set weights).
    pub fn from_parts(q_proj: Linear, k_proj: Linear, v_proj: Linear, out_proj: Linear, heads: usize) -> Self {
        Self { q_proj, k_proj, v_proj, out_proj, heads }
    }

    /// 0/1 mask `[heads, 1, inner]` selecting each head's slice of the inner width.
    fn head_mask(&self, inner: usize, device: &candle_core::Device) -> candle_core::Result<Tensor> {
        let dh = inner / self.heads;
        let m: Vec<f32> = (0..self.heads * inner).map(|i| ((i % inner) / dh == i / inner) as u8 as f32).collect();
        Tensor::from_vec(m, (self.heads, 1, inner), device)
    }

    /// `[B, N, inner]` → `[B, heads·N, inner]`: row `(j, n)` keeps only head j's slice of row n.
    fn block_diagonal(x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let h = mask.dim(0)?;
        x.unsqueeze(1)?.broadcast_mul(&mask.unsqueeze(0)?)?.reshape((b, h * n, c))
    }

    /// `q` `[B, Nq, dim]`, `k` and `v` `[B, Nk, dim]` → `[B, Nq, dim]`.
    ///
    /// Exact multi-head attention, arranged for what the mapper does: every attention has 3 tokens on one
    /// side and 256 image tokens on the other. Two rewrites keep the work proportional to the short side:
    /// - heads are a block-diagonal expansion of the short side (row `(head, token)` keeps only that head's
    ///   slice) instead of a `[B, heads, N, d]` split, so there are B GEMM calls rather than B·heads tiny ones;
    /// - the long side is never projected: `q·(W x + b) = (Wᵀq)·x + q·b` and `Σ a·(W x + b) = W (Σ a x) + b`
    ///   (since Σ a = 1) move each projection onto the short side. On CPU this is ~5× fewer FLOPs than
    ///   projecting 256 image tokens, for the same numbers up to rounding.
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (b, nq, _) = q.dims3()?;
        let nk = k.dim(1)?;
        let h = self.heads;
        let inner = self.q_proj.weight().dim(0)?;
        let scale = 1.0 / ((inner / h) as f64).sqrt();
        let mask = self.head_mask(inner, q.device())?;
        let row_bias = |t: &Tensor, bias: &Tensor| -> candle_core::Result<Tensor> {
            // t [B, R, inner] · bias [inner] → [B, R, 1]
            t.broadcast_mul(bias)?.sum_keepdim(D::Minus1)
        };
        let out = if nq <= nk {
            // Short query side (token → image).
            let qb = Self::block_diagonal(&self.q_proj.forward(q)?, &mask)?; // [B, h·nq, inner]
            let q_in_key_space = qb.broadcast_matmul(self.k_proj.weight())?; // [B, h·nq, dim]
            let scores = q_in_key_space.matmul(&k.t()?)?.broadcast_add(&row_bias(&qb, self.k_proj.bias())?)?;
            let attn = candle_nn::ops::softmax(&(scores * scale)?, D::Minus1)?; // [B, h·nq, nk]
            let ctx = self.v_proj.forward(&attn.matmul(v)?)?; // [B, h·nq, inner]
            // Keep each head's slice of its own rows and sum over heads: concatenated head outputs.
            let ctx = ctx.reshape((b, h, nq, inner))?.broadcast_mul(&mask.unsqueeze(0)?)?.sum(1)?;
            self.out_proj.forward(&ctx)?
        } else {
            // Short key side (image → token).
            let kb = Self::block_diagonal(&self.k_proj.forward(k)?, &mask)?; // [B, h·nk, inner]
            let k_in_query_space = kb.broadcast_matmul(self.q_proj.weight())?; // [B, h·nk, dim]
            let key_bias = row_bias(&kb, self.q_proj.bias())?.transpose(1, 2)?; // [B, 1, h·nk]
            let scores = q.matmul(&k_in_query_space.t()?)?.broadcast_add(&key_bias)?;
            let scores = (scores * scale)?.reshape((b, nq, h, nk))?;
            let attn = candle_nn::ops::softmax(&scores, D::Minus1)?.reshape((b, nq, h * nk))?;
            // Values already through out_proj's weight; its bias is added once at the end.
            let vb = Self::block_diagonal(&self.v_proj.forward(v)?, &mask)?; // [B, h·nk, inner]
            let v_out = vb.broadcast_matmul(&self.out_proj.weight().t()?)?; // [B, h·nk, dim]
            crate::kernels::add(&attn.matmul(&v_out)?, self.out_proj.bias()).map_err(|e| candle_core::Error::Msg(e.to_string()))?
        };
        Ok(out)
    }
}

/// Transposed convolution with kernel 2 and stride 2 on channels-last maps (exact ×2 upsampling).
///
/// Weight stored `[in, out, 2, 2]` like PyTorch's `ConvTranspose2d`. With kernel = stride the output
/// pixels do not overlap, so the op is one GEMM `[pixels, in] × [in, 4·out]` plus a pixel rearrangement:
/// faster than a generic transposed convolution and differentiable through plain ops.
#[derive(Debug, Clone)]
pub struct ConvTranspose2x2 {
    weight: Tensor,
    bias: Tensor,
}

impl ConvTranspose2x2 {
    /// Creates `weight` `[in, out, 2, 2]` and `bias` `[out]`.
    pub fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((in_ch, out_ch, 2, 2), "weight", fan_in_uniform(in_ch))?,
            bias: vb.get_with_hints(out_ch, "bias", fan_in_uniform(in_ch))?,
        })
    }

    /// Builds the layer from explicit tensors (tests).
    pub fn from_tensors(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    /// The weight `[in, out, 2, 2]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The weight as one GEMM operand `[in, 4·out]`, column `(ky·2 + kx)·out + o` = output sub-pixel
    /// `(ky, kx)`, channel `o`.
    pub fn gemm_weight(&self) -> candle_core::Result<Tensor> {
        let (cin, cout, _, _) = self.weight.dims4()?;
        // [in, out, ky, kx] → [in, ky, kx, out] so one GEMM column block is one output sub-pixel.
        self.weight.permute((0, 2, 3, 1))?.reshape((cin, 4 * cout))
    }
}

impl Module for ConvTranspose2x2 {
    /// `x` `[B, H, W, in]` → `[B, 2H, 2W, out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, w, cin) = x.dims4()?;
        let (_, cout, _, _) = self.weight.dims4()?;
        let y = x.reshape((b * h * w, cin))?.matmul(&self.gemm_weight()?)?;
        y.reshape((b, h, w, 2, 2, cout))?
            .permute((0, 1, 3, 2, 4, 5))?
            .reshape((b, 2 * h, 2 * w, cout))?
            .broadcast_add(&self.bias)
    }
}

/// `softplus(x) = ln(1 + eˣ)`, written as `relu(x) + ln(1 + e^{-|x|})` so it never overflows.
pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}
