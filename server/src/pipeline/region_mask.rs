//! A region's mask at image size, kept in the compact form it came from (a box, or a component of the
//! heatmap's cell grid), so an image with many regions costs no image-sized buffer per region. The
//! bytes at image size are made only at the edge, one region at a time, to encode the PNG.

use std::sync::Arc;

use super::heatmap_components::Components;

#[derive(Debug, Clone)]
pub enum RegionMask {
    /// The pixels `[x1, x2) × [y1, y2)` of a `width × height` image (a grounding box).
    Rect { width: u32, height: u32, bounds: [u32; 4] },
    /// The pixels of a `width × height` image whose nearest heatmap cell is in component `label`.
    Component { width: u32, height: u32, components: Arc<Components>, label: u32 },
}

impl RegionMask {
    /// The image's size (the mask's).
    pub fn size(&self) -> (u32, u32) {
        match self {
            RegionMask::Rect { width, height, .. } | RegionMask::Component { width, height, .. } => (*width, *height),
        }
    }

    /// Pixel bounds `[x1, y1, x2, y2)` outside which no pixel is inside (not always tight for a
    /// component: scanning them finds the tight box).
    fn scan_bounds(&self) -> [u32; 4] {
        match self {
            RegionMask::Rect { bounds, .. } => *bounds,
            RegionMask::Component { width, height, components, label } => {
                let [x1, y1, x2, y2] = components.get(*label).bounds;
                let (lo_x, hi_x) = pixel_span(x1, x2, components.width, *width);
                let (lo_y, hi_y) = pixel_span(y1, y2, components.height, *height);
                [lo_x, lo_y, hi_x, hi_y]
            }
        }
    }

    /// Whether pixel (`x`, `y`) is inside; `cell_x`/`cell_y` are its nearest cells (see
    /// [`nearest_cell`]), unused for a box.
    #[inline]
    fn contains(&self, x: u32, y: u32, cell_x: usize, cell_y: usize) -> bool {
        match self {
            RegionMask::Rect { bounds: [x1, y1, x2, y2], .. } => (*x1..*x2).contains(&x) && (*y1..*y2).contains(&y),
            RegionMask::Component { components, label, .. } => components.label_at(cell_x, cell_y) == *label,
        }
    }

    /// The heatmap grid's size in cells, `(1, 1)` for a box (whose test needs no cells).
    fn grid(&self) -> (usize, usize) {
        match self {
            RegionMask::Rect { .. } => (1, 1),
            RegionMask::Component { components, .. } => (components.width, components.height),
        }
    }

    /// The mask at image size, row-major, 255 inside and 0 outside (for the PNG at the edge).
    pub fn to_gray(&self) -> Vec<u8> {
        let (width, height) = self.size();
        let (grid_w, grid_h) = self.grid();
        let mut bytes = vec![0u8; width as usize * height as usize];
        let [x1, y1, x2, y2] = self.scan_bounds();
        let cells_x: Vec<usize> = (x1..x2).map(|x| nearest_cell(x, width, grid_w)).collect();
        for y in y1..y2 {
            let cell_y = nearest_cell(y, height, grid_h);
            let row = &mut bytes[y as usize * width as usize..][..width as usize];
            for (x, &cell_x) in (x1..x2).zip(&cells_x) {
                if self.contains(x, y, cell_x, cell_y) {
                    row[x as usize] = 255;
                }
            }
        }
        bytes
    }
}

/// The cell of a `cells`-long grid axis whose span holds the centre of pixel `i` of a `pixels`-long
/// image axis (nearest-neighbour scaling, exact in integers).
#[inline]
pub fn nearest_cell(i: u32, pixels: u32, cells: usize) -> usize {
    let cell = (2 * i as u64 + 1) * cells as u64 / (2 * pixels as u64);
    (cell as usize).min(cells.saturating_sub(1))
}

/// Pixels of a `pixels`-long axis that may map into cells `[c1, c2)` of a `cells`-long one (one pixel
/// of slack on each side; the caller tests each pixel).
fn pixel_span(c1: usize, c2: usize, cells: usize, pixels: u32) -> (u32, u32) {
    let (cells, pixels64) = (cells as u64, pixels as u64);
    let lo = (c1 as u64 * pixels64 / cells).saturating_sub(1);
    let hi = ((c2 as u64 * pixels64).div_ceil(cells) + 1).min(pixels64);
    (lo as u32, hi as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::heatmap_components::components;
    use ndarray::Array2;

    #[test]
    fn a_box_mask_is_exactly_its_pixels() {
        let mask = RegionMask::Rect { width: 5, height: 3, bounds: [1, 1, 3, 2] };
        #[rustfmt::skip]
        assert_eq!(mask.to_gray(), vec![
            0, 0, 0, 0, 0,
            0, 255, 255, 0, 0,
            0, 0, 0, 0, 0,
        ]);
    }

    #[test]
    fn a_component_is_scaled_to_image_size_by_nearest_cell() {
        // A 2×2 grid with its top-right cell flagged, stretched over a 4×4 image.
        let map = Array2::from_shape_vec((2, 2), vec![0.0, 1.0, 0.0, 0.0]).unwrap();
        let mask = RegionMask::Component { width: 4, height: 4, components: Arc::new(components(&map, 0.5)), label: 1 };
        let gray = mask.to_gray();
        let inside: Vec<(usize, usize)> = (0..16).filter(|i| gray[*i] == 255).map(|i| (i % 4, i / 4)).collect();
        assert_eq!(inside, vec![(2, 0), (3, 0), (2, 1), (3, 1)]);
        // Shrunk below the grid's size, a pixel takes its nearest cell, so a component can vanish.
        let map = Array2::from_shape_vec((1, 4), vec![1.0, 0.0, 1.0, 1.0]).unwrap();
        let shared = Arc::new(components(&map, 0.5));
        let of = |label| RegionMask::Component { width: 1, height: 1, components: shared.clone(), label };
        assert_eq!((of(1).to_gray(), of(2).to_gray()), (vec![0], vec![255]), "the one pixel's centre is in cell 2");
    }

    #[test]
    fn nearest_cells_cover_the_grid_evenly() {
        let cells: Vec<usize> = (0..6).map(|i| nearest_cell(i, 6, 3)).collect();
        assert_eq!(cells, vec![0, 0, 1, 1, 2, 2]);
        let cells: Vec<usize> = (0..3).map(|i| nearest_cell(i, 3, 6)).collect();
        assert_eq!(cells, vec![1, 3, 5]);
    }
}
