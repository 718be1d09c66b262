//! Stitching and resizing geometry.
use candle_core::{Device, Tensor};
use heie_heads::stitch::{hierarchy, resize, stitch};

fn tile_stack(n: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Tensor {
    let mut v = Vec::with_capacity(n * h * w);
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                v.push(f(i, y, x));
            }
        }
    }
    Tensor::from_vec(v, (n, h, w), &Device::Cpu).unwrap()
}

#[test]
fn stitch_places_tiles_row_major_on_non_square_grid() {
    // 3 columns × 2 rows of 4×5 tiles (h = 4, w = 5) → 8 × 15.
    let tiles = tile_stack(6, 4, 5, |i, y, x| (i * 100 + y * 10 + x) as f32);
    let m: Vec<Vec<f32>> = stitch(&tiles, 3, 2).unwrap().to_vec2().unwrap();
    assert_eq!((m.len(), m[0].len()), (8, 15));
    for r in 0..2 {
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    assert_eq!(m[r * 4 + y][c * 5 + x], ((r * 3 + c) * 100 + y * 10 + x) as f32);
                }
            }
        }
    }
}

#[test]
fn hot_pixel_in_tile_lands_at_the_right_image_pixels() {
    // Grid 3 cols × 2 rows, 4×4 tile maps → stitched 8 × 12; output 24 × 36 is an exact ×3 upscale.
    let (r, c) = (1, 2);
    let tiles = tile_stack(7, 4, 4, |i, y, x| if i == r * 3 + c && y == 1 && x == 2 { 1.0 } else { 0.0 });
    let h = hierarchy(&tiles, 3, 2, true, 24, 36).unwrap();
    let local: Vec<Vec<f32>> = h.local.to_vec2().unwrap();
    // The source pixel (4 + 1, 8 + 2) = (5, 10) covers output rows 15..18 and columns 30..33; its
    // centre pixel (16, 31) samples it exactly.
    assert!((local[16][31] - 1.0).abs() < 1e-6);
    let mut mass_rows = vec![];
    let mut mass_cols = vec![];
    for (y, row) in local.iter().enumerate() {
        for (x, v) in row.iter().enumerate() {
            if *v > 0.0 {
                mass_rows.push(y);
                mass_cols.push(x);
            }
        }
    }
    // Bilinear support: one source pixel reaches at most one output pixel beyond its own block.
    assert!(mass_rows.iter().all(|y| (14..=18).contains(y)), "rows {mass_rows:?}");
    assert!(mass_cols.iter().all(|x| (29..=33).contains(x)), "cols {mass_cols:?}");
    // The thumbnail (index 6) is all zero: the global map is too.
    assert!(h.global.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| *v == 0.0));
}

#[test]
fn global_map_is_the_resized_thumbnail_and_single_tile_is_both() {
    let tiles = tile_stack(3, 2, 2, |i, y, x| if i == 2 { (y * 2 + x) as f32 } else { 9.0 });
    let h = hierarchy(&tiles, 2, 1, true, 2, 2).unwrap();
    assert_eq!(h.global.to_vec2::<f32>().unwrap(), vec![vec![0.0, 1.0], vec![2.0, 3.0]]);
    let one = tile_stack(1, 2, 2, |_, y, x| (y + x) as f32);
    let h = hierarchy(&one, 1, 1, false, 3, 5).unwrap();
    assert_eq!(h.local.to_vec2::<f32>().unwrap(), h.global.to_vec2::<f32>().unwrap());
}

#[test]
fn bilinear_resize_uses_half_pixel_centres() {
    let x = Tensor::new(&[[0f32, 1.0]], &Device::Cpu).unwrap();
    let y: Vec<Vec<f32>> = resize(&x, 1, 4).unwrap().to_vec2().unwrap();
    assert_eq!(y, vec![vec![0.0, 0.25, 0.75, 1.0]]);
    // Shrinking 4 → 2 samples at source positions 0.5 and 2.5.
    let x = Tensor::new(&[[0f32], [1.0], [2.0], [3.0]], &Device::Cpu).unwrap();
    let y: Vec<Vec<f32>> = resize(&x, 2, 1).unwrap().to_vec2().unwrap();
    assert_eq!(y, vec![vec![0.5], vec![2.5]]);
    // Same size is the identity; constants stay constant at any size.
    let z = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
    assert_eq!(resize(&z, 2, 2).unwrap().to_vec2::<f32>().unwrap(), z.to_vec2::<f32>().unwrap());
    let k = Tensor::full(0.7f32, (3, 5), &Device::Cpu).unwrap();
    assert!(resize(&k, 11, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| (v - 0.7).abs() < 1e-6));
}
