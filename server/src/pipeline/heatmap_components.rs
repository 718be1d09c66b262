//! The connected areas of a heatmap that are flagged: cells at or above a threshold, joined when
//! they touch (8-connected, so a diagonal line of cells is one area, as a person would see it).

use ndarray::Array2;

/// Every component of one map, labelled in one grid (shared by the regions cut from it, so a
/// component costs no more memory than its number).
#[derive(Debug)]
pub struct Components {
    /// The map's size, in cells.
    pub width: usize,
    pub height: usize,
    /// Row-major, one per cell: 0 = not flagged, `k` = in component `k` (1-based).
    labels: Vec<u32>,
    /// Per component `k` (at `k - 1`): its number of cells and its cell bounds `[x1, y1, x2, y2)`.
    stats: Vec<ComponentStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentStats {
    pub cells: usize,
    pub bounds: [usize; 4],
}

impl Components {
    /// The component of the cell at (`x`, `y`), 0 when the cell is not flagged.
    #[inline]
    pub fn label_at(&self, x: usize, y: usize) -> u32 {
        self.labels[y * self.width + x]
    }

    /// Components in the order found (a raster scan meets their first cells in this order).
    pub fn stats(&self) -> &[ComponentStats] {
        &self.stats
    }

    pub fn get(&self, label: u32) -> ComponentStats {
        self.stats[label as usize - 1]
    }
}

/// Labels the 8-connected components of the cells of `map` whose value is at least `threshold`
/// (NaN is never flagged).
pub fn components(map: &Array2<f32>, threshold: f32) -> Components {
    let (height, width) = map.dim();
    let mut labels = vec![0u32; width * height];
    let mut stats = Vec::new();
    // Flood fill with an explicit stack: a recursive fill would overflow on a map-sized component.
    let mut stack = Vec::new();
    let flagged = |y: usize, x: usize| map[[y, x]] >= threshold;
    for start in 0..width * height {
        if labels[start] != 0 || !flagged(start / width, start % width) {
            continue;
        }
        let label = stats.len() as u32 + 1;
        let mut component = ComponentStats { cells: 0, bounds: [usize::MAX, usize::MAX, 0, 0] };
        labels[start] = label;
        stack.push(start);
        while let Some(cell) = stack.pop() {
            let (x, y) = (cell % width, cell / width);
            component.cells += 1;
            let b = &mut component.bounds;
            (b[0], b[1], b[2], b[3]) = (b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1));
            for ny in y.saturating_sub(1)..(y + 2).min(height) {
                for nx in x.saturating_sub(1)..(x + 2).min(width) {
                    let next = ny * width + nx;
                    if labels[next] == 0 && flagged(ny, nx) {
                        labels[next] = label;
                        stack.push(next);
                    }
                }
            }
        }
        stats.push(component);
    }
    Components { width, height, labels, stats }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[&str]) -> Array2<f32> {
        let (h, w) = (rows.len(), rows[0].len());
        Array2::from_shape_fn((h, w), |(r, c)| if rows[r].as_bytes()[c] == b'#' { 0.9 } else { 0.1 })
    }

    #[test]
    fn diagonal_neighbours_join_and_separate_areas_stay_apart() {
        let c = components(
            &map(&[
                "#....#", //
                ".#...#", //
                "..#...", //
                "......", //
                "##....",
            ]),
            0.5,
        );
        assert_eq!(c.stats().len(), 3);
        assert_eq!(c.get(1), ComponentStats { cells: 3, bounds: [0, 0, 3, 3] });
        assert_eq!(c.get(2), ComponentStats { cells: 2, bounds: [5, 0, 6, 2] });
        assert_eq!(c.get(3), ComponentStats { cells: 2, bounds: [0, 4, 2, 5] });
        assert_eq!((c.label_at(2, 2), c.label_at(3, 3), c.label_at(5, 1)), (1, 0, 2));
    }

    #[test]
    fn the_threshold_is_inclusive_and_nan_is_never_flagged() {
        let m = Array2::from_shape_vec((1, 4), vec![0.5, 0.4999, f32::NAN, 1.0]).unwrap();
        let c = components(&m, 0.5);
        assert_eq!(c.stats().len(), 2);
        assert_eq!((c.label_at(0, 0), c.label_at(1, 0), c.label_at(2, 0), c.label_at(3, 0)), (1, 0, 0, 2));
    }

    #[test]
    fn a_map_wide_component_does_not_overflow() {
        let m = Array2::from_elem((600, 600), 1.0f32);
        let c = components(&m, 0.5);
        assert_eq!(c.get(1), ComponentStats { cells: 360_000, bounds: [0, 0, 600, 600] });
    }
}
