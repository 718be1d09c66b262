//! The base block of the Adaptive Hierarchical Implausibility Mapper: one tile (or the thumbnail) in,
//! a heatmap-logit map and a log-σ map out.
//!
//! The structure follows SAM's mask decoder: output tokens attend to the image tokens and back through
//! two-way attention layers, the image tokens are upsampled ×4, and a hypernetwork turns each output
//! token into a per-pixel linear read-out of the upsampled features. Here the prompt is the `[MAP]`
//! hidden state and the two output tokens are "heatmap" and "σ" (Laplace scale of the heatmap error).

use candle_core::{Device, Module, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::config::HeadsConfig;
use crate::error::Result;
use crate::layers::{Attention, ConvTranspose2x2, LayerNorm, Linear, Mlp};
use crate::upsample::Upsampler;

/// One two-way attention layer: tokens ↔ image tokens.
#[derive(Debug, Clone)]
struct TwoWayLayer {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_token_to_image: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
    cross_image_to_token: Attention,
    norm4: LayerNorm,
    /// SAM's first layer replaces (not adds to) the tokens with their self-attention and skips the
    /// positional term, since the tokens *are* their own positional encoding at that point.
    skip_first_layer_pe: bool,
}

impl TwoWayLayer {
    fn new(cfg: &HeadsConfig, skip_first_layer_pe: bool, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_width;
        let h = cfg.attention_heads;
        let ds = cfg.cross_attention_downsample;
        Ok(Self {
            self_attn: Attention::new(d, h, 1, vb.pp("self_attn"))?,
            norm1: LayerNorm::new(d, vb.pp("norm1"))?,
            cross_token_to_image: Attention::new(d, h, ds, vb.pp("cross_attn_token_to_image"))?,
            norm2: LayerNorm::new(d, vb.pp("norm2"))?,
            mlp: Mlp::new(&[d, cfg.mlp_dim, d], vb.pp("mlp"))?,
            norm3: LayerNorm::new(d, vb.pp("norm3"))?,
            cross_image_to_token: Attention::new(d, h, ds, vb.pp("cross_attn_image_to_token"))?,
            norm4: LayerNorm::new(d, vb.pp("norm4"))?,
            skip_first_layer_pe,
        })
    }

    fn forward(&self, queries: &Tensor, keys: &Tensor, query_pe: &Tensor, key_pe: &Tensor) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let k = crate::kernels::add(keys, key_pe)?;
        let queries = self.norm2.forward(&(&queries + self.cross_token_to_image.forward(&q, &k, keys)?)?)?;

        let queries = self.norm3.forward(&(&queries + self.mlp.forward(&queries)?)?)?;

        let q = (&queries + query_pe)?;
        let keys = self.norm4.forward(&crate::kernels::add(keys, &self.cross_image_to_token.forward(&k, &q, &queries)?)?)?;
        Ok((queries, keys))
    }
}

/// 2-D sinusoidal positional encoding of a g×g token grid, `[g², D]`, tokens in row-major order.
///
/// Channels `[0, D/2)` encode the row, `[D/2, D)` the column, each as sin/cos pairs at frequencies
/// spaced geometrically from 1 to g/2 cycles per tile side: the lowest separates the halves of the tile,
/// the highest alternates between neighbouring tokens, so none is wasted on a 16×16 grid.
pub fn positional_encoding(grid: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let quarter = dim / 4;
    let max_freq = (grid as f64 / 2.0).max(1.0);
    let freqs: Vec<f64> = (0..quarter)
        .map(|i| max_freq.powf(i as f64 / (quarter.max(2) - 1) as f64))
        .collect();
    let mut pe = Vec::with_capacity(grid * grid * dim);
    for r in 0..grid {
        for c in 0..grid {
            for p in [r, c] {
                let pos = (p as f64 + 0.5) / grid as f64;
                for &f in &freqs {
                    let angle = 2.0 * std::f64::consts::PI * f * pos;
                    pe.push(angle.sin() as f32);
                    pe.push(angle.cos() as f32);
                }
            }
        }
    }
    Ok(Tensor::from_vec(pe, (grid * grid, dim), device)?)
}

/// The mapper's outputs for a batch of tiles.
#[derive(Debug, Clone)]
pub struct MapperOutput {
    /// Heatmap logits `[B, 4g, 4g]`.
    pub logits: Tensor,
    /// Natural log of the Laplace scale σ of the heatmap error, `[B, 4g, 4g]`.
    pub log_sigma: Tensor,
}

/// The mapper base block (shared by all tiles and the thumbnail).
#[derive(Debug, Clone)]
pub struct Mapper {
    map_proj: Linear,
    map_norm: LayerNorm,
    image_proj: Linear,
    image_norm: LayerNorm,
    heatmap_token: Tensor,
    sigma_token: Tensor,
    layers: Vec<TwoWayLayer>,
    final_attn: Attention,
    final_norm: LayerNorm,
    upscale1: ConvTranspose2x2,
    upscale_norm: LayerNorm,
    upscale2: ConvTranspose2x2,
    heatmap_hyper: Mlp,
    sigma_hyper: Mlp,
    image_pe: Tensor,
    grid: usize,
    llm_width: usize,
}

impl Mapper {
    /// Creates (or loads) all mapper parameters under `vb` (conventionally prefix `mapper`).
    pub fn new(cfg: &HeadsConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_width;
        let layers = (0..cfg.two_way_layers)
            .map(|i| TwoWayLayer::new(cfg, i == 0, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            // LLM hidden states (after the final RMSNorm) and projector outputs have scales unrelated to
            // our init; normalising right after the projection keeps the attention logits sane.
            map_proj: Linear::new(cfg.llm_width, d, vb.pp("map_proj"))?,
            map_norm: LayerNorm::new(d, vb.pp("map_norm"))?,
            image_proj: Linear::new(cfg.llm_width, d, vb.pp("image_proj"))?,
            image_norm: LayerNorm::new(d, vb.pp("image_norm"))?,
            heatmap_token: vb.get_with_hints((1, d), "heatmap_token", Init::Randn { mean: 0.0, stdev: 1.0 })?,
            sigma_token: vb.get_with_hints((1, d), "sigma_token", Init::Randn { mean: 0.0, stdev: 1.0 })?,
            layers,
            final_attn: Attention::new(d, cfg.attention_heads, cfg.cross_attention_downsample, vb.pp("final_attn"))?,
            final_norm: LayerNorm::new(d, vb.pp("final_norm"))?,
            upscale1: ConvTranspose2x2::new(d, d / 4, vb.pp("upscale1"))?,
            upscale_norm: LayerNorm::new(d / 4, vb.pp("upscale_norm"))?,
            upscale2: ConvTranspose2x2::new(d / 4, d / 8, vb.pp("upscale2"))?,
            heatmap_hyper: Mlp::new(&[d, d, d, d / 8], vb.pp("heatmap_hyper"))?,
            sigma_hyper: Mlp::new(&[d, d, d, d / 8], vb.pp("sigma_hyper"))?,
            image_pe: positional_encoding(cfg.token_grid, d, vb.device())?,
            grid: cfg.token_grid,
            llm_width: cfg.llm_width,
        })
    }

    /// `map_hidden` `[B, W]`, `features` `[B, g², W]` (row-major token grid) → maps `[B, 4g, 4g]`.
    pub fn forward(&self, map_hidden: &Tensor, features: &Tensor) -> Result<MapperOutput> {
        let (b, _) = map_hidden.dims2()?;
        let g = self.grid;
        let (queries, keys) = self.decode(map_hidden, &self.project_image(features)?)?;
        let d = keys.dim(2)?;
        let up = keys.reshape((b, g, g, d))?;
        let up = self.upscale1.forward(&up)?;
        let up = crate::kernels::gelu(&self.upscale_norm.forward(&up)?)?;
        let up = crate::kernels::gelu(&self.upscale2.forward(&up)?)?;
        let side = 4 * g;
        let up = up.reshape((b, side * side, d / 8))?;

        let read_out = |hyper: &Mlp, index: usize| -> Result<Tensor> {
            let token = queries.narrow(1, index, 1)?; // [B, 1, D]
            let weights = hyper.forward(&token)?.transpose(1, 2)?.contiguous()?; // [B, D/8, 1]
            Ok(up.matmul(&weights)?.reshape((b, side, side))?)
        };
        Ok(MapperOutput { logits: read_out(&self.heatmap_hyper, 0)?, log_sigma: read_out(&self.sigma_hyper, 1)? })
    }

    /// The image side's input: `features` `[B, g², W]` → `image_norm(image_proj(features)) + PE`,
    /// `[B, g², D]`. It depends on the image alone, so serving can compute it as soon as a tile's features
    /// exist, while the text is still being written (the widest matrix product of the heads: W → D for
    /// every image token).
    pub fn project_image(&self, features: &Tensor) -> Result<Tensor> {
        let g = self.grid;
        debug_assert_eq!(features.dims()[1..], [g * g, self.llm_width]);
        let image = self.image_norm.forward(&self.image_proj.forward(features)?)?;
        crate::kernels::add(&image, &self.image_pe)
    }

    /// [`Mapper::forward`] for inference, from image tokens already through [`Mapper::project_image`]:
    /// the same decoder, then the upsampling and read-outs through the fused `upsample.rs` path (no
    /// gradients; equal to `forward` up to rounding).
    pub fn forward_serving(&self, map_hidden: &Tensor, projected_image: &Tensor) -> Result<MapperOutput> {
        let (b, _) = map_hidden.dims2()?;
        let side = 4 * self.grid;
        let (queries, keys) = self.decode(map_hidden, projected_image)?;
        let hyper_weights = |hyper: &Mlp, index: usize| -> Result<Vec<f32>> {
            Ok(hyper.forward(&queries.narrow(1, index, 1)?)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let upsampler = Upsampler { upscale1: &self.upscale1, norm: &self.upscale_norm, upscale2: &self.upscale2 };
        let maps = upsampler.read_out(
            &keys.contiguous()?,
            self.grid,
            &hyper_weights(&self.heatmap_hyper, 0)?,
            &hyper_weights(&self.sigma_hyper, 1)?,
        )?;
        let dev = map_hidden.device();
        Ok(MapperOutput {
            logits: Tensor::from_vec(maps.logits, (b, side, side), dev)?,
            log_sigma: Tensor::from_vec(maps.log_sigma, (b, side, side), dev)?,
        })
    }

    /// The two-way transformer: `map_hidden` `[B, W]`, `image` `[B, g², D]` (from
    /// [`Mapper::project_image`]) → output tokens `[B, 3, D]` (heatmap, σ, prompt; after the final
    /// attention) and image tokens `[B, g², D]`.
    fn decode(&self, map_hidden: &Tensor, image: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, _) = map_hidden.dims2()?;
        let g = self.grid;
        debug_assert_eq!(image.dims()[..2], [b, g * g]);

        let prompt = self.map_norm.forward(&self.map_proj.forward(map_hidden)?)?.unsqueeze(1)?;
        let d = prompt.dim(2)?;
        let fixed = Tensor::cat(&[&self.heatmap_token, &self.sigma_token], 0)?.unsqueeze(0)?.broadcast_as((b, 2, d))?;
        let tokens = Tensor::cat(&[&fixed, &prompt], 1)?;

        // `[g², D]`, added to every tile's keys (`kernels::add` repeats it over the batch).
        let key_pe = &self.image_pe;

        let (mut queries, mut keys) = (tokens.clone(), image.clone());
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, &tokens, key_pe)?;
        }
        let q = (&queries + &tokens)?;
        let k = crate::kernels::add(&keys, key_pe)?;
        let queries = self.final_norm.forward(&(&queries + self.final_attn.forward(&q, &k, &keys)?)?)?;
        Ok((queries, keys))
    }
}

