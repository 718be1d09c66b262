//! The checks every input passes before the heads use it: grid, tile count, thumbnail, output size,
//! then every buffer's length and finiteness. The first problem is reported, naming the field. The
//! checks take the heads' config and id rather than the heads, so that this module imports nothing
//! from `heads.rs`, which calls it.

use rayon::prelude::*;

use crate::config::HeadsConfig;
use crate::error::{HeadsError, Result};
use crate::inputs::{HeadsInput, TileFeatures, ViewImage, ViewInput, MAX_OUTPUT_SIDE, MAX_TILES};

pub(crate) fn input_err(field: &'static str, reason: String) -> HeadsError {
    HeadsError::Input { field, reason }
}

/// Whether every value is finite. Branch-free (NaN and ±∞ are the values whose exponent bits are all
/// ones), so it vectorises: `iter().all(is_finite)` stops at each element to test for an early exit.
pub(crate) fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values.iter().fold(0u32, |bad, x| bad | ((x.to_bits() & EXPONENT) == EXPONENT) as u32) == 0
}

/// Checks one buffer's length and (except the features: [`pack_features`] checks those while copying
/// them) finiteness; `name` names it in the error.
fn check_values(name: &dyn Fn() -> String, field: &'static str, values: &[f32], len: usize) -> Result<()> {
    if values.len() != len {
        return Err(input_err(field, format!("{} has {} values, expected {len}", name(), values.len())));
    }
    if field != "features" && !all_finite(values) {
        return Err(input_err(field, format!("{} contains NaN or infinite values", name())));
    }
    Ok(())
}

/// Copies every view's features into one buffer (tiles, then the thumbnail), checking that they are
/// finite on the way: one parallel pass over the largest input (25 MB for an 8B model) instead of a
/// check and then a copy. `tiles` = how many views are tiles, for the error's name.
pub(crate) fn pack_features(views: &[&TileFeatures], tiles: usize) -> Result<Vec<f32>> {
    const CHUNK: usize = 16 * 1024;
    let total: usize = views.iter().map(|v| v.features.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut rest = &mut out.spare_capacity_mut()[..total];
    for (i, view) in views.iter().enumerate() {
        let (dst, tail) = rest.split_at_mut(view.features.len());
        rest = tail;
        // `all` may stop early on a bad chunk, leaving others unwritten: then the buffer is dropped unused.
        let finite = dst.par_chunks_mut(CHUNK).zip(view.features.par_chunks(CHUNK)).all(|(d, s)| {
            for (d, &s) in d.iter_mut().zip(s) {
                d.write(s);
            }
            all_finite(s)
        });
        if !finite {
            let name = if i < tiles { format!("tiles[{i}]") } else { "thumbnail".to_string() };
            return Err(input_err("features", format!("{name}.features contains NaN or infinite values")));
        }
    }
    // SAFETY: every view's `all` returned true, so every chunk was copied: all `total` values are
    // written (the views' slices tile `0..total`), and `total` ≤ capacity.
    unsafe { out.set_len(total) };
    Ok(out)
}

/// Checks `input` against `config`: grid, tile count, thumbnail, output size, then every buffer's
/// length and (except the features: [`pack_features`] checks those while copying them) finiteness,
/// in order; the first problem is reported. Returns the tiles, then the thumbnail.
pub(crate) fn validate<'i, 'a>(config: &HeadsConfig, heads_id: u64, input: &'i HeadsInput<'a>) -> Result<Vec<&'i TileFeatures<'a>>> {
    let geometry = (input.grid_cols, input.grid_rows, input.out_width, input.out_height);
    let views = validate_views(config, heads_id, geometry, &input.tiles, input.thumbnail.as_ref())?;
    check_score_hidden(config, input.score_hidden)?;
    Ok(views)
}

/// [`validate`] for everything but the `[SCORE]` state; `geometry` = (grid columns, grid rows, output
/// width, output height). `heads_id` tells a [`ProjectedView`](crate::ProjectedView) made by other heads.
pub(crate) fn validate_views<'i, 'a, I: ViewImage>(
    config: &HeadsConfig,
    heads_id: u64,
    (cols, rows, out_width, out_height): (usize, usize, usize, usize),
    tiles: &'i [ViewInput<'a, I>],
    thumbnail: Option<&'i ViewInput<'a, I>>,
) -> Result<Vec<&'i ViewInput<'a, I>>> {
    let w = config.llm_width;
    if cols == 0 || rows == 0 || cols * rows > MAX_TILES {
        return Err(input_err("grid", format!("{cols}×{rows} tiles; need 1..={MAX_TILES} tiles")));
    }
    if tiles.len() != cols * rows {
        return Err(input_err("tiles", format!("{} tiles given for a {cols}×{rows} grid (need {})", tiles.len(), cols * rows)));
    }
    let single = cols * rows == 1;
    match (thumbnail, single) {
        (Some(_), true) => return Err(input_err("thumbnail", "a 1×1 grid has no thumbnail".into())),
        (None, false) => return Err(input_err("thumbnail", format!("a {cols}×{rows} grid needs the thumbnail"))),
        _ => {}
    }
    for (field, side) in [("out_width", out_width), ("out_height", out_height)] {
        if side == 0 || side > MAX_OUTPUT_SIDE {
            return Err(input_err(field, format!("{side} is not in 1..={MAX_OUTPUT_SIDE}")));
        }
    }
    let views: Vec<&ViewInput<I>> = tiles.iter().chain(thumbnail).collect();
    for (i, tile) in views.iter().enumerate() {
        let name = || if i < cols * rows { format!("tiles[{i}]") } else { "thumbnail".to_string() };
        check_values(&|| format!("{}.map_hidden", name()), "map_hidden", tile.map_hidden, w)?;
        if let Some(reason) = tile.features.foreign_to(heads_id) {
            return Err(input_err("features", format!("{}.features {reason}", name())));
        }
        check_values(&|| format!("{}.features", name()), "features", tile.features.values(), I::expected_len(config))?;
    }
    Ok(views)
}

/// Checks the `[SCORE]` state's length and finiteness.
pub(crate) fn check_score_hidden(config: &HeadsConfig, score_hidden: &[f32]) -> Result<()> {
    check_values(&|| "score_hidden".into(), "score_hidden", score_hidden, config.llm_width)
}
