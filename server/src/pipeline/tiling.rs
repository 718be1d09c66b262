//! InternVL's dynamic tiling (`dynamic_preprocess` in the HF model code), reproduced exactly.
//!
//! llama.cpp's own InternVL tiling picks different grids (640×480 → 5 tiles where HF picks 6), so
//! the engine feeds the tiles cut here one by one; that gives HF parity and per-tile features for
//! the heatmap mapper. The geometry helpers map between original-image pixels and tile pixels,
//! which is what stitching tile heatmaps back together needs.

use image::imageops;
use image::RgbImage;
use serde::Serialize;

/// A grid of `cols × rows` tiles (HF's `(i, j)` = `(cols, rows)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TileGrid {
    pub cols: u32,
    pub rows: u32,
}

impl TileGrid {
    /// Number of tiles in the grid.
    pub fn n_tiles(&self) -> u32 {
        self.cols * self.rows
    }
}

/// Candidate grids with `min_tiles ≤ cols·rows ≤ max_tiles`, ordered by tile count.
///
/// HF builds a Python `set` and sorts it by `i*j` with a stable sort, so grids with the same tile
/// count come out in CPython's hash order. We order them by `cols` instead; this never changes the
/// result when `min_tiles == 1` (the server's setting). Two grids with the same count can only tie
/// on aspect difference when the image's ratio is exactly midway between theirs, one on each side,
/// and because they share a count the area tie rule treats them alike, so order alone would pick.
/// With `min_tiles == 1` every such midpoint is strictly closer to some other candidate (checked
/// exactly for all `max_tiles ≤ 40`, and pixel-by-pixel against the Python for sizes up to
/// 700×700 at 6 and 12 tiles), so the pair never wins. With `min_tiles > 1` real ties exist (e.g.
/// 1:2 vs 2:1 at ratio 5/4 when `min_tiles = 2`) and HF's pick there depends on CPython internals.
fn candidate_grids(min_tiles: u32, max_tiles: u32) -> Vec<TileGrid> {
    let mut grids: Vec<TileGrid> = (1..=max_tiles)
        .flat_map(|cols| (1..=max_tiles / cols).map(move |rows| TileGrid { cols, rows }))
        .filter(|g| g.n_tiles() >= min_tiles)
        .collect();
    grids.sort_by_key(TileGrid::n_tiles); // stable, like Python's `sorted`
    grids
}

/// Picks the tile grid for an image exactly as InternVL's `find_closest_aspect_ratio`.
///
/// The grid whose `cols/rows` is closest to `width/height` wins; on an exact tie a later (larger)
/// grid replaces the current one only if the image has more than half the pixels the larger grid
/// would resample to. Falls back to 1×1 when no grid qualifies (e.g. `min_tiles > max_tiles`), as
/// HF does; a zero-sized image also yields 1×1 because every difference is then NaN or infinite.
pub fn choose_grid(
    width: u32,
    height: u32,
    min_tiles: u32,
    max_tiles: u32,
    tile_size: u32,
) -> TileGrid {
    // f64 and the same operation order as the Python, so float ties are reproduced bit-for-bit.
    let aspect_ratio = f64::from(width) / f64::from(height);
    let area = f64::from(width) * f64::from(height);
    let size = f64::from(tile_size);
    let mut best_diff = f64::INFINITY;
    let mut best = TileGrid { cols: 1, rows: 1 };
    for grid in candidate_grids(min_tiles, max_tiles) {
        let diff = (aspect_ratio - f64::from(grid.cols) / f64::from(grid.rows)).abs();
        if diff < best_diff {
            best_diff = diff;
            best = grid;
        } else if diff == best_diff
            && area > 0.5 * size * size * f64::from(grid.cols) * f64::from(grid.rows)
        {
            best = grid;
        }
    }
    best
}

/// Where the tiles of one image came from: enough to map between original and tile pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tiling {
    pub grid: TileGrid,
    pub tile_size: u32,
    pub original_width: u32,
    pub original_height: u32,
    /// Whether a whole-image thumbnail follows the tiles (InternVL adds one when there are ≥2 tiles).
    pub has_thumbnail: bool,
}

impl Tiling {
    /// Number of grid tiles (the thumbnail not counted).
    pub fn n_tiles(&self) -> u32 {
        self.grid.n_tiles()
    }

    /// Resized-over-original scale along x: the image is stretched to `cols · tile_size` wide.
    pub fn scale_x(&self) -> f32 {
        (self.grid.cols * self.tile_size) as f32 / self.original_width as f32
    }

    /// Resized-over-original scale along y: the image is stretched to `rows · tile_size` high.
    pub fn scale_y(&self) -> f32 {
        (self.grid.rows * self.tile_size) as f32 / self.original_height as f32
    }

    /// The area tile `index` (row-major) covers, as `[x0, y0, x1, y1]` in original pixels.
    ///
    /// # Panics
    /// If `index >= n_tiles()`.
    pub fn tile_rect_in_original(&self, index: u32) -> [f32; 4] {
        assert!(
            index < self.n_tiles(),
            "tile {index} out of {} tiles",
            self.n_tiles()
        );
        let (col, row) = (index % self.grid.cols, index / self.grid.cols);
        let size = self.tile_size as f32;
        [
            col as f32 * size / self.scale_x(),
            row as f32 * size / self.scale_y(),
            (col + 1) as f32 * size / self.scale_x(),
            (row + 1) as f32 * size / self.scale_y(),
        ]
    }

    /// The tile containing original-pixel point `(x, y)` and the point's position inside that
    /// tile, in tile pixels. Points on or past the far edge belong to the last row/column, so
    /// every point of the image (edges included) maps to a real tile.
    pub fn original_point_to_tile(&self, x: f32, y: f32) -> (u32, f32, f32) {
        let size = self.tile_size as f32;
        let (rx, ry) = (x * self.scale_x(), y * self.scale_y());
        let col = ((rx / size).floor().max(0.0) as u32).min(self.grid.cols - 1);
        let row = ((ry / size).floor().max(0.0) as u32).min(self.grid.rows - 1);
        (
            row * self.grid.cols + col,
            rx - col as f32 * size,
            ry - row as f32 * size,
        )
    }
}

/// Cuts an image into InternVL tiles: the chosen grid's tiles in row-major order, each
/// `tile_size` square, plus a `tile_size` thumbnail of the whole image when there is more than
/// one tile (InternVL3's `use_thumbnail = True`).
///
/// Resampling is Catmull-Rom (bicubic, a = -0.5), the kernel of PIL's `BICUBIC` that HF uses;
/// both widen the kernel when shrinking, so values match closely though not bit-for-bit.
/// Bicubic resize with PIL's BICUBIC kernel (Catmull-Rom, support widened when shrinking, as HF's
/// preprocessing does) through fast_image_resize's SIMD convolution: `image`'s generic resizer took
/// ~70 ms per resize of a 1024×768 image here, fast_image_resize a few.
fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    use fast_image_resize as fr;
    let src = fr::images::ImageRef::new(image.width(), image.height(), image.as_raw(), fr::PixelType::U8x3)
        .expect("an RgbImage's buffer holds width × height × 3 bytes");
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom));
    fr::Resizer::new().resize(&src, &mut dst, &options).expect("same pixel type on both sides, non-empty sizes");
    RgbImage::from_raw(width, height, dst.into_vec()).expect("the resized buffer holds width × height × 3 bytes")
}

/// Picks the grid ([`choose_grid`]) and cuts the image into its tiles, plus the thumbnail when there
/// is more than one tile.
pub fn split(
    image: &RgbImage,
    min_tiles: u32,
    max_tiles: u32,
    tile_size: u32,
) -> (Tiling, Vec<RgbImage>, Option<RgbImage>) {
    let (width, height) = image.dimensions();
    split_into(image, choose_grid(width, height, min_tiles, max_tiles, tile_size), tile_size)
}

/// Cuts the image into the tiles of a grid already chosen for it, plus the thumbnail when there is
/// more than one tile.
pub fn split_into(image: &RgbImage, grid: TileGrid, tile_size: u32) -> (Tiling, Vec<RgbImage>, Option<RgbImage>) {
    let (width, height) = image.dimensions();
    let resized = resize_bicubic(image, grid.cols * tile_size, grid.rows * tile_size);
    let tiles: Vec<RgbImage> = (0..grid.n_tiles())
        .map(|i| {
            let (x, y) = ((i % grid.cols) * tile_size, (i / grid.cols) * tile_size);
            imageops::crop_imm(&resized, x, y, tile_size, tile_size).to_image()
        })
        .collect();
    let thumbnail = (tiles.len() != 1)
        .then(|| resize_bicubic(image, tile_size, tile_size));
    let tiling = Tiling {
        grid,
        tile_size,
        original_width: width,
        original_height: height,
        has_thumbnail: thumbnail.is_some(),
    };
    (tiling, tiles, thumbnail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(cols: u32, rows: u32) -> TileGrid {
        TileGrid { cols, rows }
    }

    /// Expected grids worked out by hand from the rule (tile 448, so 0.5·448² = 100352 and the
    /// tie threshold for an i×j grid is 100352·i·j). `d(i,j)` = |w/h − i/j|.
    #[test]
    fn choose_grid_matches_hand_computed_rule() {
        let cases: &[(u32, u32, u32, TileGrid)] = &[
            // Square 448: d(1,1)=0; d(2,2)=0 ties but 200704 ≤ 401408 → stays 1×1.
            (448, 448, 6, grid(1, 1)),
            (448, 448, 12, grid(1, 1)),
            // Square 1000: 1e6 > 401408 → 2×2; with 12, 3×3 ties too and 1e6 > 903168 → 3×3.
            (1000, 1000, 6, grid(2, 2)),
            (1000, 1000, 12, grid(3, 3)),
            // 640×480, ratio 4/3: d(1,1)=.333, d(3,2)=.167 best within 6; 4×3 is exact within 12.
            (640, 480, 6, grid(3, 2)),
            (640, 480, 12, grid(4, 3)),
            (1024, 768, 6, grid(3, 2)),
            (1024, 768, 12, grid(4, 3)),
            // 16:9 = 1.778: d(2,1)=.222 beats d(3,2)=.278; within 12, 4×2 ties 2×1 exactly
            // (same ratio 2.0) and 2073600 > 100352·8 = 802816 → 4×2.
            (1920, 1080, 6, grid(2, 1)),
            (1920, 1080, 12, grid(4, 2)),
            // 1280×720: same ratio, 921600 > 802816 → 4×2.
            (1280, 720, 12, grid(4, 2)),
            // 896×448, ratio 2: 2×1 exact; 4×2 ties but 401408 ≤ 802816 → 2×1.
            (896, 448, 12, grid(2, 1)),
            // 1792×896: 1605632 > 802816 → 4×2.
            (1792, 896, 12, grid(4, 2)),
            // Tall 300×1200, ratio 1/4: 1×4 exact; 2×8 has 16 tiles, over both limits.
            (300, 1200, 6, grid(1, 4)),
            (300, 1200, 12, grid(1, 4)),
            // 448×1344, ratio 1/3: 1×3 exact; 2×6 ties, 602112 ≤ 100352·12 = 1204224 → 1×3.
            (448, 1344, 12, grid(1, 3)),
            // Tiny 10×10: 1×1 exact; the 2×2 tie needs area > 401408.
            (10, 10, 6, grid(1, 1)),
            (10, 10, 12, grid(1, 1)),
            // Extreme 5000×100, ratio 50: the widest grid is the closest.
            (5000, 100, 6, grid(6, 1)),
            (5000, 100, 12, grid(12, 1)),
            (1, 1000, 6, grid(1, 6)),
            // Cross-count tie: 500×400, ratio 1.25: d(1,1) = d(3,2) = 0.25 exactly (binary
            // fractions); 200000 ≤ 100352·6 = 602112 → 1×1 stays ...
            (500, 400, 6, grid(1, 1)),
            // ... while 1000×800 has 800000 > 602112 → 3×2.
            (1000, 800, 6, grid(3, 2)),
            // Within 12, d(4,3) = |1.25 − 1.333| = .083 beats both.
            (1000, 800, 12, grid(4, 3)),
        ];
        for &(w, h, max, expected) in cases {
            assert_eq!(
                choose_grid(w, h, 1, max, 448),
                expected,
                "{w}x{h} max {max}"
            );
        }
    }

    #[test]
    fn tie_threshold_is_strictly_greater() {
        // Tile 10: a square ties 1×1 with 2×2; threshold 0.5·100·4 = 200 pixels.
        assert_eq!(choose_grid(14, 14, 1, 4, 10), grid(1, 1)); // 196 ≤ 200
        assert_eq!(choose_grid(15, 15, 1, 4, 10), grid(2, 2)); // 225 > 200
    }

    #[test]
    fn min_tiles_excludes_small_grids_and_empty_range_falls_back() {
        // Min 2: 1×1 is not a candidate, so a square picks the exact 2×2.
        assert_eq!(choose_grid(448, 448, 2, 6, 448), grid(2, 2));
        // Min 6 max 6, ratio 4/3: d(2,3)=.667, d(3,2)=.167, d(1,6), d(6,1) far → 3×2.
        assert_eq!(choose_grid(640, 480, 6, 6, 448), grid(3, 2));
        assert_eq!(choose_grid(640, 480, 7, 6, 448), grid(1, 1));
    }

    #[test]
    fn candidates_are_complete_and_ordered_by_count() {
        let grids = candidate_grids(1, 6);
        assert_eq!(grids.len(), 14); // 6 + 3 + 2 + 1 + 1 + 1 over cols = 1..6
        assert!(grids.windows(2).all(|w| w[0].n_tiles() <= w[1].n_tiles()));
        assert!(grids.contains(&grid(2, 3)) && grids.contains(&grid(3, 2)));
        assert_eq!(candidate_grids(1, 12).len(), 35);
    }

    #[test]
    fn geometry_of_a_3x2_tiling() {
        let t = Tiling {
            grid: grid(3, 2),
            tile_size: 448,
            original_width: 640,
            original_height: 480,
            has_thumbnail: true,
        };
        assert_eq!(t.n_tiles(), 6);
        assert!((t.scale_x() - 1344.0 / 640.0).abs() < 1e-6);
        assert!((t.scale_y() - 896.0 / 480.0).abs() < 1e-6);
        let r = t.tile_rect_in_original(4); // row 1, col 1
        let expected = [640.0 / 3.0, 240.0, 1280.0 / 3.0, 480.0];
        for (a, b) in r.iter().zip(expected) {
            assert!((a - b).abs() < 1e-3, "{r:?}");
        }
        let (index, tx, ty) = t.original_point_to_tile(320.0, 300.0);
        assert_eq!(index, 4);
        assert!((tx - (320.0 * 2.1 - 448.0)).abs() < 1e-3, "{tx}");
        assert!((ty - (300.0 * 896.0 / 480.0 - 448.0)).abs() < 1e-3, "{ty}");
        // The far corner belongs to the last tile, at its far edge.
        let (index, tx, ty) = t.original_point_to_tile(640.0, 480.0);
        assert_eq!((index, tx.round(), ty.round()), (5, 448.0, 448.0));
        assert_eq!(t.original_point_to_tile(0.0, 0.0), (0, 0.0, 0.0));
    }

    #[test]
    fn tile_rects_cover_the_image_without_gaps() {
        let t = Tiling {
            grid: grid(4, 3),
            tile_size: 448,
            original_width: 1000,
            original_height: 700,
            has_thumbnail: true,
        };
        for i in 0..t.n_tiles() {
            let [x0, y0, x1, y1] = t.tile_rect_in_original(i);
            assert!((x1 - x0 - 250.0).abs() < 1e-3 && (y1 - y0 - 700.0 / 3.0).abs() < 1e-3);
            let (j, _, _) = t.original_point_to_tile((x0 + x1) / 2.0, (y0 + y1) / 2.0);
            assert_eq!(i, j);
        }
        let last = t.tile_rect_in_original(11);
        assert!(
            (last[2] - 1000.0).abs() < 1e-2 && (last[3] - 700.0).abs() < 1e-2,
            "{last:?}"
        );
    }

    #[test]
    fn split_cuts_tiles_and_places_content() {
        // 64×48 with tile 16 → ratio 4/3 → 3×2 grid within 6 (as 640×480), resized to 48×32.
        let mut image = RgbImage::from_pixel(64, 48, image::Rgb([255, 255, 255]));
        for y in 0..16 {
            for x in 44..64 {
                image.put_pixel(x, y, image::Rgb([255, 0, 0]));
            }
        }
        let (tiling, tiles, thumbnail) = split(&image, 1, 6, 16);
        assert_eq!(tiling.grid, grid(3, 2));
        assert_eq!(tiles.len(), 6);
        assert!(tiles.iter().all(|t| t.dimensions() == (16, 16)));
        assert!(tiling.has_thumbnail);
        assert_eq!(thumbnail.unwrap().dimensions(), (16, 16));

        // The block (x 44..64, y 0..16) resizes to x 33..48, y 0..10.7: inside tile 2 (top right).
        let (index, tx, ty) = tiling.original_point_to_tile(54.0, 8.0);
        assert_eq!(index, 2);
        let red = tiles[2].get_pixel(tx as u32, ty as u32);
        assert!(red[0] > 200 && red[1] < 40, "{red:?}");
        let is_red = |p: &image::Rgb<u8>| p[0] > 200 && p[1] < 100;
        for (i, tile) in tiles.iter().enumerate() {
            assert_eq!(tile.pixels().any(is_red), i == 2, "tile {i}");
        }
    }

    #[test]
    fn single_tile_has_no_thumbnail() {
        let image = RgbImage::from_pixel(20, 20, image::Rgb([1, 2, 3]));
        let (tiling, tiles, thumbnail) = split(&image, 1, 6, 32);
        assert_eq!((tiling.n_tiles(), tiles.len()), (1, 1));
        assert!(thumbnail.is_none() && !tiling.has_thumbnail);
        assert_eq!(tiles[0].dimensions(), (32, 32));
        assert_eq!(tiles[0].get_pixel(16, 16).0, [1, 2, 3]);
    }
}
