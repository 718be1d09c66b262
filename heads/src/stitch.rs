//! The hierarchy: tile maps → local map, thumbnail map → global map, both at the requested output size.
//!
//! InternVL's tiles cover a *stretched* resize of the image to `cols·448 × rows·448` (no letterbox), and
//! the thumbnail is a stretched resize of the whole image. So stitching the tile maps in row-major grid
//! order and resizing the result to the image size is the exact inverse geometry; the same holds for
//! the thumbnail map. With a 1×1 grid InternVL adds no thumbnail: the single tile is then both the local
//! and the global map.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Where output sample `i` of a bilinear resize reads: `v = src[lo] + (src[hi] − src[lo])·frac`.
#[derive(Debug, Clone, Copy)]
pub struct AxisSample {
    /// Lower source index.
    pub lo: u32,
    /// Upper source index (= `lo` at the edges).
    pub hi: u32,
    /// Blend weight of `hi`.
    pub frac: f32,
}

/// The sampling plan of one axis: half-pixel centres (`align_corners = false`), clamped at the edges.
/// Shared by the graph ([`AxisResize`]) and the serving fast path (`render`), so both sample alike.
pub fn axis_plan(len_in: usize, len_out: usize) -> Vec<AxisSample> {
    let scale = len_in as f64 / len_out as f64;
    (0..len_out)
        .map(|i| {
            let src = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (len_in - 1) as f64);
            let l = src.floor() as usize;
            AxisSample { lo: l as u32, hi: (l + 1).min(len_in - 1) as u32, frac: (src - l as f64) as f32 }
        })
        .collect()
}

/// Bilinear resampling of one axis, as two gathers and a blend (differentiable through `index_select`).
///
/// Uses half-pixel centres (`align_corners = false`, like PyTorch and OpenCV) with edge clamping. It is not
/// antialiased when shrinking, which is fine here: maps are only shrunk for the score's small conv net.
#[derive(Debug, Clone)]
pub struct AxisResize {
    lo: Tensor,
    hi: Tensor,
    frac: Tensor,
    len_out: usize,
}

impl AxisResize {
    /// Plans the resampling of an axis of length `len_in` to `len_out`.
    pub fn new(len_in: usize, len_out: usize, device: &Device) -> Result<Self> {
        let plan = axis_plan(len_in, len_out);
        Ok(Self {
            lo: Tensor::from_vec(plan.iter().map(|p| p.lo).collect(), len_out, device)?,
            hi: Tensor::from_vec(plan.iter().map(|p| p.hi).collect(), len_out, device)?,
            frac: Tensor::from_vec(plan.iter().map(|p| p.frac).collect(), len_out, device)?,
            len_out,
        })
    }

    /// Resamples `x` along `dim` (0-based, any rank).
    pub fn apply(&self, x: &Tensor, dim: usize) -> Result<Tensor> {
        // candle's CPU gather needs contiguous input (narrowed thumbnails are strided views).
        let x = x.contiguous()?;
        let a = x.index_select(&self.lo, dim)?;
        let b = x.index_select(&self.hi, dim)?;
        // Shape the blend weights so they broadcast along every other axis.
        let mut shape = vec![1usize; x.rank()];
        shape[dim] = self.len_out;
        let frac = self.frac.reshape(shape)?;
        Ok((&a + (b - &a)?.broadcast_mul(&frac)?)?)
    }
}

/// Bilinear resize of the last two axes of `x` (`[..., H, W]`) to `out_h × out_w`.
pub fn resize(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let rank = x.rank();
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    let dev = x.device();
    // Columns first: it runs on the (usually smaller) input height, so the blend touches fewer pixels.
    let x = if w == out_w { x.clone() } else { AxisResize::new(w, out_w, dev)?.apply(x, rank - 1)? };
    if h == out_h {
        Ok(x)
    } else {
        AxisResize::new(h, out_h, dev)?.apply(&x, rank - 2)
    }
}

/// Places tile maps `[rows·cols, h, w]` (row-major tile order) into one map `[..., rows·h, cols·w]`.
///
/// Leading batch axes are allowed: `[S, rows·cols, h, w]` → `[S, rows·h, cols·w]`.
pub fn stitch(tiles: &Tensor, cols: usize, rows: usize) -> Result<Tensor> {
    let dims = tiles.dims();
    let rank = dims.len();
    let (h, w) = (dims[rank - 2], dims[rank - 1]);
    let lead: usize = dims[..rank - 3].iter().product();
    let t = tiles.reshape((lead, rows, cols, h, w))?.permute((0, 1, 3, 2, 4))?;
    let mut out: Vec<usize> = dims[..rank - 3].to_vec();
    out.extend([rows * h, cols * w]);
    Ok(t.contiguous()?.reshape(out)?)
}

/// Local and global maps at the output size.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Stitched tile maps, `[..., out_h, out_w]`.
    pub local: Tensor,
    /// Thumbnail map (or the single tile for a 1×1 grid), `[..., out_h, out_w]`.
    pub global: Tensor,
}

/// Builds the local and global maps from per-tile maps `[..., N(+1), h, w]`, tiles first in row-major
/// order and the thumbnail last when `has_thumbnail`.
pub fn hierarchy(maps: &Tensor, cols: usize, rows: usize, has_thumbnail: bool, out_h: usize, out_w: usize) -> Result<Hierarchy> {
    let axis = maps.rank() - 3;
    let n = cols * rows;
    let tiles = maps.narrow(axis, 0, n)?;
    let local = resize(&stitch(&tiles, cols, rows)?, out_h, out_w)?;
    let global = if has_thumbnail {
        resize(&maps.narrow(axis, n, 1)?.squeeze(axis)?, out_h, out_w)?
    } else {
        // 1×1 grid: the only view of the image is the tile itself.
        local.clone()
    };
    Ok(Hierarchy { local, global })
}
