//! Implausibility heatmaps: rasterizing zero-shot boxes, resampling, encoding and visual overlays.
//!
//! A heatmap is an `Array2<f32>` of shape `(height, width)` with values in `[0, 1]`, the same
//! layout the trained mapper produces, so everything downstream treats both modes alike.

use std::io::Cursor;

use image::{ImageBuffer, ImageFormat, Luma, Rgb, RgbImage};
use ndarray::Array2;

use super::boxes::RegionBox;

/// Paints boxes as soft-edged regions: 1 inside each box, easing (smoothstep) to 0 over a margin
/// of 10% of the box's shorter side (at least one pixel) outside it. Overlaps take the maximum,
/// so a region flagged twice is no "more wrong" than one flagged once.
///
/// The soft edge is there because grounding boxes are coarse: a hard step would claim false
/// precision and score badly on saliency metrics that compare against smooth ground truth.
pub fn rasterize_boxes(boxes: &[RegionBox], width: u32, height: u32) -> Array2<f32> {
    let mut map = Array2::<f32>::zeros((height as usize, width as usize));
    for region in boxes {
        let [x0, y0, x1, y1] = region.to_pixels(width, height);
        let margin = (0.1 * (x1 - x0).min(y1 - y0)).max(1.0);
        // Only pixels within the margin can be touched; clamp that window to the image.
        let span = |lo: f32, hi: f32, len: u32| {
            let start = (lo - margin).floor().max(0.0) as usize;
            let end = ((hi + margin).ceil().max(0.0) as usize).min(len as usize);
            start..end
        };
        for row in span(y0, y1, height) {
            let cy = row as f32 + 0.5;
            let dy = (y0 - cy).max(cy - y1).max(0.0);
            for col in span(x0, x1, width) {
                let cx = col as f32 + 0.5;
                let dx = (x0 - cx).max(cx - x1).max(0.0);
                let value = 1.0 - smoothstep((dx.hypot(dy) / margin).min(1.0));
                let cell = &mut map[[row, col]];
                *cell = cell.max(value);
            }
        }
    }
    map
}

fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Clamps to `[0, 1]`, mapping NaN to 0 so a bad value can never light up a pixel.
fn unit(value: f32) -> f32 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

fn encode_png<P: image::PixelWithColorType>(buffer: &ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = Cursor::new(Vec::new());
    // Writing to memory only fails for a zero-sized image, which PNG cannot represent.
    buffer
        .write_to(&mut out, ImageFormat::Png)
        .expect("PNG needs a non-empty image");
    out.into_inner()
}

/// Encodes a heatmap as an 8-bit grayscale PNG (0 → black, 1 → white; values clamped).
///
/// # Panics
/// If the map has a zero dimension, which PNG cannot represent.
pub fn to_gray_png(map: &Array2<f32>) -> Vec<u8> {
    let (height, width) = map.dim();
    let pixels = map
        .iter()
        .map(|&v| (unit(v) * 255.0).round() as u8)
        .collect();
    gray_png(width as u32, height as u32, pixels)
}

/// Encodes `width × height` 8-bit gray samples, row-major, as a PNG (region masks use it too).
///
/// # Panics
/// If the size is zero or `pixels` is not `width × height` long.
pub fn gray_png(width: u32, height: u32, pixels: Vec<u8>) -> Vec<u8> {
    let buffer = ImageBuffer::<Luma<u8>, _>::from_raw(width, height, pixels)
        .expect("one byte per pixel");
    encode_png(&buffer)
}

/// Encodes a heatmap as a 16-bit grayscale PNG, for consumers that need more than 256 levels.
///
/// # Panics
/// If the map has a zero dimension, which PNG cannot represent.
pub fn to_png16(map: &Array2<f32>) -> Vec<u8> {
    let (height, width) = map.dim();
    let pixels = map
        .iter()
        .map(|&v| (unit(v) * 65535.0).round() as u16)
        .collect();
    let buffer = ImageBuffer::<Luma<u16>, _>::from_raw(width as u32, height as u32, pixels)
        .expect("one sample per map cell");
    encode_png(&buffer)
}

/// The raw values, row-major, as little-endian `f32` bytes (lossless, for programmatic clients).
pub fn to_f32_le(map: &Array2<f32>) -> Vec<u8> {
    map.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bilinear resampling to `width × height`, with pixel centres aligned like image resizers
/// (`align_corners = false`) so a map and the image it describes stay registered.
pub fn resize(map: &Array2<f32>, width: u32, height: u32) -> Array2<f32> {
    let (src_h, src_w) = map.dim();
    let (width, height) = (width as usize, height as usize);
    if src_h == 0 || src_w == 0 {
        return Array2::zeros((height, width));
    }
    let (rows, cols) = (resize_taps(height, src_h), resize_taps(width, src_w));
    Array2::from_shape_fn((height, width), |(r, c)| sample(map, rows[r], cols[c]))
}

/// For each of `out_len` output indices of [`resize`] along one axis: the two source indices it
/// blends and the weight of the second. Public so code that needs a few values of a resized map (a
/// region's severity) samples exactly what `resize` would give without building the whole map.
pub fn resize_taps(out_len: usize, src_len: usize) -> Vec<(usize, usize, f32)> {
    if src_len == 0 {
        return Vec::new();
    }
    let scale = src_len as f32 / out_len as f32;
    (0..out_len)
        .map(|i| {
            let pos = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (src_len - 1) as f32);
            let lo = pos.floor() as usize;
            (lo, (lo + 1).min(src_len - 1), pos - lo as f32)
        })
        .collect()
}

/// The value of `map` resized to the taps' output size, at one output cell (`resize`'s formula).
#[inline]
pub fn sample(map: &Array2<f32>, (y0, y1, fy): (usize, usize, f32), (x0, x1, fx): (usize, usize, f32)) -> f32 {
    let top = map[[y0, x0]] * (1.0 - fx) + map[[y0, x1]] * fx;
    let bottom = map[[y1, x0]] * (1.0 - fx) + map[[y1, x1]] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Inferno colormap stops at 0, ¼, ½, ¾, 1: perceptually ordered and readable in grayscale,
/// so "hotter" always reads as "more implausible". Linear interpolation between stops is
/// close enough for a visual aid.
const COLORMAP: [[f32; 3]; 5] = [
    [0.0, 0.0, 4.0],
    [87.0, 16.0, 110.0],
    [188.0, 55.0, 84.0],
    [249.0, 142.0, 9.0],
    [252.0, 255.0, 164.0],
];

/// The colormap colour for a value in `[0, 1]` (clamped).
pub fn colormap(value: f32) -> Rgb<u8> {
    let pos = unit(value) * (COLORMAP.len() - 1) as f32;
    let lo = (pos.floor() as usize).min(COLORMAP.len() - 2);
    let t = pos - lo as f32;
    let (a, b) = (COLORMAP[lo], COLORMAP[lo + 1]);
    Rgb(std::array::from_fn(|c| {
        (a[c] + (b[c] - a[c]) * t).round() as u8
    }))
}

/// Blends the colormapped heatmap over the image, weighting each pixel by `alpha × value`, so
/// clean regions keep their original look and only suspicious ones are tinted. The map is
/// resized to the image first when their sizes differ.
pub fn overlay(image: &RgbImage, map: &Array2<f32>, alpha: f32) -> RgbImage {
    let (width, height) = image.dimensions();
    let resized;
    let map = if map.dim() == (height as usize, width as usize) {
        map
    } else {
        resized = resize(map, width, height);
        &resized
    };
    let alpha = unit(alpha);
    RgbImage::from_fn(width, height, |x, y| {
        let value = unit(map[[y as usize, x as usize]]);
        let weight = alpha * value;
        let (base, tint) = (image.get_pixel(x, y), colormap(value));
        Rgb(std::array::from_fn(|c| {
            (f32::from(base[c]) * (1.0 - weight) + f32::from(tint[c]) * weight).round() as u8
        }))
    })
}

/// [`overlay`] encoded as an RGB PNG.
///
/// # Panics
/// If the image has a zero dimension, which PNG cannot represent.
pub fn overlay_png(image: &RgbImage, map: &Array2<f32>, alpha: f32) -> Vec<u8> {
    encode_png(&overlay(image, map, alpha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(x1: f32, y1: f32, x2: f32, y2: f32) -> RegionBox {
        RegionBox {
            label: None,
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn no_boxes_is_all_zero_with_the_right_shape() {
        let map = rasterize_boxes(&[], 40, 30);
        assert_eq!(map.dim(), (30, 40));
        assert!(map.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn inside_is_one_far_outside_is_zero() {
        // 200×100 image; box covers x 50..100, y 25..75 in pixels; margin = 0.1·50 = 5 px.
        let map = rasterize_boxes(&[rb(250.0, 250.0, 500.0, 750.0)], 200, 100);
        assert_eq!(map.dim(), (100, 200));
        assert_eq!(map[[50, 75]], 1.0);
        assert_eq!(map[[25, 50]], 1.0); // corner pixel centre (50.5, 25.5) is inside
        assert_eq!(map[[50, 110]], 0.0);
        assert_eq!(map[[10, 75]], 0.0);
        assert!(map.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn soft_edge_falls_monotonically_to_zero() {
        let map = rasterize_boxes(&[rb(250.0, 250.0, 500.0, 750.0)], 200, 100);
        let row: Vec<f32> = (95..=110).map(|c| map[[50, c]]).collect();
        assert_eq!(row[0], 1.0);
        assert!(row.windows(2).all(|w| w[1] <= w[0]), "{row:?}");
        assert!(row.iter().any(|&v| v > 0.05 && v < 0.95), "{row:?}");
        // Pixel centre 102.5 is 2.5 px out of 5: smoothstep(0.5) = 0.5.
        assert!((map[[50, 102]] - 0.5).abs() < 1e-6);
        assert_eq!(*row.last().unwrap(), 0.0);
    }

    #[test]
    fn tiny_boxes_still_get_a_one_pixel_margin() {
        // 1000×1000 image, box 2 px wide: margin is max(0.2, 1) = 1 px.
        let map = rasterize_boxes(&[rb(500.0, 500.0, 502.0, 502.0)], 1000, 1000);
        assert_eq!(map[[500, 501]], 1.0);
        assert!(map[[500, 502]] > 0.0 && map[[500, 502]] < 1.0); // 0.5 px outside
        assert_eq!(map[[500, 504]], 0.0);
    }

    #[test]
    fn overlapping_boxes_combine_with_max() {
        // Pixels 0..40 (margin 4) and 42..80 (margin 3.8): their soft edges overlap in 38..46.
        let (a, b) = (rb(0.0, 0.0, 400.0, 400.0), rb(420.0, 0.0, 800.0, 400.0));
        let both = rasterize_boxes(&[a.clone(), b.clone()], 100, 100);
        let (ma, mb) = (
            rasterize_boxes(&[a], 100, 100),
            rasterize_boxes(&[b], 100, 100),
        );
        for ((&x, &y), &z) in ma.iter().zip(mb.iter()).zip(both.iter()) {
            assert_eq!(z, x.max(y));
        }
        // Where the edges cross, each box wins on its own side and neither value is summed.
        let (v40, v41) = (both[[20, 40]], both[[20, 41]]);
        assert!(
            v40 == ma[[20, 40]] && v40 > mb[[20, 40]] && v40 < 1.0,
            "{v40}"
        );
        assert!(
            v41 == mb[[20, 41]] && v41 > ma[[20, 41]] && v41 < 1.0,
            "{v41}"
        );
    }

    #[test]
    fn gray_png_roundtrips() {
        let map = Array2::from_shape_fn((3, 4), |(r, c)| (r * 4 + c) as f32 / 11.0);
        let mut noisy = map.clone();
        noisy[[0, 0]] = -3.0;
        noisy[[2, 3]] = f32::NAN;
        let decoded = image::load_from_memory(&to_gray_png(&noisy))
            .unwrap()
            .into_luma8();
        assert_eq!(decoded.dimensions(), (4, 3));
        assert_eq!(decoded.get_pixel(0, 0)[0], 0);
        assert_eq!(decoded.get_pixel(3, 2)[0], 0);
        assert_eq!(
            decoded.get_pixel(2, 1)[0],
            (6.0f32 / 11.0 * 255.0).round() as u8
        );
    }

    #[test]
    fn png16_roundtrips() {
        let map = Array2::from_shape_vec((1, 3), vec![0.0, 0.5, 2.0]).unwrap();
        let decoded = image::load_from_memory(&to_png16(&map))
            .unwrap()
            .into_luma16();
        assert_eq!(decoded.as_raw(), &[0, 32768, 65535]);
    }

    #[test]
    fn f32_le_is_row_major() {
        let map = Array2::from_shape_vec((2, 2), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let bytes = to_f32_le(&map.t().to_owned()); // transposed: logical order 1, 3, 2, 4
        let values: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, [1.0, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn resize_is_identity_at_same_size_and_interpolates_between_centres() {
        let map = Array2::from_shape_fn((5, 7), |(r, c)| (r * 7 + c) as f32 / 34.0);
        assert_eq!(resize(&map, 7, 5), map);
        let row = Array2::from_shape_vec((1, 2), vec![0.0, 1.0]).unwrap();
        let up = resize(&row, 4, 3);
        assert_eq!(up.dim(), (3, 4));
        assert_eq!(up.row(1).to_vec(), vec![0.0, 0.25, 0.75, 1.0]);
        let constant = Array2::from_elem((3, 3), 0.4f32);
        assert!(resize(&constant, 10, 2)
            .iter()
            .all(|&v| (v - 0.4).abs() < 1e-6));
    }

    #[test]
    fn colormap_is_dark_to_bright() {
        assert_eq!(colormap(0.0).0, [0, 0, 4]);
        assert_eq!(colormap(1.0).0, [252, 255, 164]);
        assert_eq!(colormap(2.0), colormap(1.0));
        let luma = |v: f32| colormap(v).0.iter().map(|&c| u32::from(c)).sum::<u32>();
        assert!((0..10).all(|i| luma(i as f32 / 10.0) < luma((i + 1) as f32 / 10.0)));
    }

    #[test]
    fn overlay_tints_only_where_the_map_is_high() {
        let image = RgbImage::from_pixel(8, 6, Rgb([10, 200, 30]));
        let mut map = Array2::<f32>::zeros((6, 8));
        map[[2, 3]] = 1.0;
        let out = overlay(&image, &map, 1.0);
        assert_eq!(out.get_pixel(0, 0), image.get_pixel(0, 0));
        assert_eq!(*out.get_pixel(3, 2), colormap(1.0));
        let half = overlay(&image, &map, 0.5);
        // 0.5·10 + 0.5·252 = 131, 0.5·200 + 0.5·255 = 227.5 → 228, 0.5·30 + 0.5·164 = 97
        assert_eq!(half.get_pixel(3, 2).0, [131, 228, 97]);
    }

    #[test]
    fn overlay_resizes_a_smaller_map_and_encodes() {
        let image = RgbImage::from_pixel(16, 12, Rgb([255, 255, 255]));
        let map = Array2::from_elem((3, 4), 1.0f32);
        let out = overlay(&image, &map, 1.0);
        assert_eq!(out.dimensions(), (16, 12));
        assert!(out.pixels().all(|p| *p == colormap(1.0)));
        let decoded = image::load_from_memory(&overlay_png(&image, &map, 1.0)).unwrap();
        assert_eq!(decoded.into_rgb8(), out);
    }
}
