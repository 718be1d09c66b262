//! Serving fast path for the parameter-free tail of the forward pass: stitch, resize and fuse at the
//! output resolution in one parallel pass, writing the output arrays directly.
//!
//! At 1024×768 the graph version of this tail ([`crate::stitch`] + [`crate::fusion`] as candle ops) costs
//! ~25 full-image tensor passes and allocations — more than the whole mapper. This computes the same
//! formulas in the same order (same sampling plan, same blends), so it matches the graph to float
//! rounding (tested); training keeps using the graph, which is differentiable.

use ndarray::Array2;
use rayon::prelude::*;

use crate::stitch::{axis_plan, AxisSample};

/// How the local weight is chosen per pixel.
#[derive(Debug, Clone, Copy)]
pub enum WeightRule {
    /// `w_l = sigmoid(σ_g − σ_l)`.
    Adaptive,
    /// `w_l` constant (the Fixed and Learned variants).
    Constant(f32),
}

/// The per-tile maps of one image, `[N(+1), side, side]` row-major, tiles then thumbnail.
#[derive(Debug, Clone, Copy)]
pub struct TileMaps<'a> {
    /// Heatmap probabilities.
    pub probs: &'a [f32],
    /// σ (already `exp(clamp(log σ))`, see `fusion::sigma_from_log`).
    pub sigma: &'a [f32],
    /// Side of one tile map.
    pub side: usize,
    /// Grid columns.
    pub cols: usize,
    /// Grid rows.
    pub rows: usize,
    /// Whether the last map is the thumbnail.
    pub has_thumbnail: bool,
}

/// The output maps, each `out_h × out_w`.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Fused heatmap.
    pub heatmap: Array2<f32>,
    /// Local map.
    pub local: Array2<f32>,
    /// Global map.
    pub global: Array2<f32>,
    /// Local weight.
    pub local_weight: Array2<f32>,
    /// σ of the local map.
    pub sigma_local: Array2<f32>,
    /// σ of the global map.
    pub sigma_global: Array2<f32>,
}

/// A source map after the column pass: `rows × out_w`, plus its row plan.
struct Columns {
    data: Vec<f32>,
    row_plan: Vec<AxisSample>,
}

fn columns(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Columns {
    let plan = axis_plan(w, out_w);
    let mut data = Vec::with_capacity(h * out_w);
    for r in 0..h {
        let row = &src[r * w..(r + 1) * w];
        data.extend(plan.iter().map(|p| {
            let a = row[p.lo as usize];
            a + (row[p.hi as usize] - a) * p.frac
        }));
    }
    Columns { data, row_plan: axis_plan(h, out_h) }
}

/// Stitches `[rows·cols, side, side]` maps into one `[rows·side, cols·side]` map.
fn stitch(maps: &[f32], side: usize, cols: usize, rows: usize) -> Vec<f32> {
    let width = cols * side;
    let mut out = vec![0f32; rows * side * width];
    for r in 0..rows {
        for c in 0..cols {
            let tile = &maps[(r * cols + c) * side * side..][..side * side];
            for y in 0..side {
                out[(r * side + y) * width + c * side..][..side].copy_from_slice(&tile[y * side..][..side]);
            }
        }
    }
    out
}

/// Output row `y` of a column-resampled source: the row pass of the bilinear resize.
#[inline(always)]
fn blend_row(c: &Columns, out_w: usize, y: usize, out: &mut [f32]) {
    let p = c.row_plan[y];
    let a = &c.data[p.lo as usize * out_w..][..out_w];
    let b = &c.data[p.hi as usize * out_w..][..out_w];
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + (b - a) * p.frac;
    }
}

/// Renders the output maps of one image at `out_h × out_w`.
pub fn render(maps: TileMaps, rule: WeightRule, out_h: usize, out_w: usize) -> Rendered {
    let TileMaps { probs, sigma, side, cols, rows, has_thumbnail } = maps;
    let (h, w) = (rows * side, cols * side);
    let n = rows * cols;
    let local_p = columns(&stitch(probs, side, cols, rows), h, w, out_h, out_w);
    let local_s = columns(&stitch(sigma, side, cols, rows), h, w, out_h, out_w);
    let thumb = |m: &[f32]| columns(&m[n * side * side..][..side * side], side, side, out_h, out_w);
    let (global_p, global_s) = if has_thumbnail { (thumb(probs), thumb(sigma)) } else { (
        // 1×1 grid: the single tile is also the global view (see `stitch`).
        Columns { data: local_p.data.clone(), row_plan: local_p.row_plan.clone() },
        Columns { data: local_s.data.clone(), row_plan: local_s.row_plan.clone() },
    ) };

    let len = out_h * out_w;
    // The outputs are written once, in place, without being zeroed first: filling 6 fresh full-size
    // arrays with zeros was a sizeable share of the serving profile.
    let mut outs: [Vec<f32>; 6] = std::array::from_fn(|_| Vec::with_capacity(len));
    {
        let [heat, local, global, weight, sig_l, sig_g] = outs.each_mut().map(|v| &mut v.spare_capacity_mut()[..len]);
        const BAND_ROWS: usize = 16;
        let band = out_w * BAND_ROWS;
        heat.par_chunks_mut(band)
            .zip(local.par_chunks_mut(band))
            .zip(global.par_chunks_mut(band))
            .zip(weight.par_chunks_mut(band))
            .zip(sig_l.par_chunks_mut(band))
            .zip(sig_g.par_chunks_mut(band))
            .enumerate()
            .for_each(|(b, (((((heat, local), global), weight), sig_l), sig_g))| {
                // One output row of each map, computed here and then stored.
                let [mut h, mut l, mut g, mut wl, mut sl, mut sg] = std::array::from_fn(|_| vec![0f32; out_w]);
                crate::kernels::wide(|| for r in 0..heat.len() / out_w {
                    let y = b * BAND_ROWS + r;
                    // Row-blend each source into the output row first (simple loops the compiler vectorises).
                    blend_row(&local_p, out_w, y, &mut l);
                    blend_row(&global_p, out_w, y, &mut g);
                    blend_row(&local_s, out_w, y, &mut sl);
                    blend_row(&global_s, out_w, y, &mut sg);
                    // Separate simple loops over equal-length rows, so each one vectorises.
                    match rule {
                        WeightRule::Adaptive => {
                            for ((wl, &sl), &sg) in wl.iter_mut().zip(&sl).zip(&sg) {
                                *wl = 1.0 / (1.0 + crate::kernels::exp(sl - sg));
                            }
                        }
                        WeightRule::Constant(c) => wl.fill(c),
                    }
                    for (((h, &wl), &l), &g) in h.iter_mut().zip(&wl).zip(&l).zip(&g) {
                        *h = g + wl * (l - g);
                    }
                    let row = r * out_w..(r + 1) * out_w;
                    for (dst, src) in [
                        (&mut heat[row.clone()], &h),
                        (&mut local[row.clone()], &l),
                        (&mut global[row.clone()], &g),
                        (&mut weight[row.clone()], &wl),
                        (&mut sig_l[row.clone()], &sl),
                        (&mut sig_g[row.clone()], &sg),
                    ] {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            d.write(s);
                        }
                    }
                });
            });
    }
    for v in &mut outs {
        // SAFETY: the pass above wrote each of the first `len` values of every output (the bands tile
        // `0..len` and each band writes all of its rows in full); `len` ≤ capacity.
        unsafe { v.set_len(len) };
    }
    let [heat, local, global, weight, sig_l, sig_g] = outs;
    let arr = |v: Vec<f32>| Array2::from_shape_vec((out_h, out_w), v).expect("out_h·out_w values");
    Rendered {
        heatmap: arr(heat),
        local: arr(local),
        global: arr(global),
        local_weight: arr(weight),
        sigma_local: arr(sig_l),
        sigma_global: arr(sig_g),
    }
}
