//! Building an image's regions: the flagged areas as data a host can act on (inpaint one, reject
//! the image for a bad hand), each with its box, mask, kind, severity and the sentences about it.
//!
//! - Zero-shot: one region per grounding box the model wrote, in order; its mask is the box.
//! - Trained: one region per connected area of the primary heatmap at or above 0.5 (largest first),
//!   joined to the grounding box it overlaps most for its label and sentences.
//!
//! Severity = (1 − s) × mean of H over the mask, s the primary score and H the primary heatmap at
//! image size (the formula written in the proto's `Region.severity`; keep the two the same).

use std::sync::Arc;

use ndarray::Array2;

use super::boxes::{RegionBox, COORD_MAX};
use super::captured::SectionTexts;
use super::events::OutputMode;
use super::heatmap::{resize_taps, sample};
use super::heatmap_components::{components, Components};
use super::region_category::{categorize, RegionCategory};
use super::region_mask::{nearest_cell, RegionMask};
use super::region_sentences::{explanation_sentences, sentences_about};

/// A heatmap cell at or above this is flagged (the heads are trained on maps in 0..1; half is
/// "more likely implausible than not").
pub const FLAG_THRESHOLD: f32 = 0.5;

/// Components smaller than this share of the heatmap's cells are dropped: at the heads' output
/// resolution such specks are single cells of noise around the threshold, and a host cannot act on
/// a region a few pixels wide (at 1024 × 1024 the limit is about 32 × 32 pixels).
pub const MIN_COMPONENT_SHARE: f64 = 0.001;

/// Where a region came from, as `heie.v1.RegionSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    GroundedBox,
    HeatmapComponent,
}

impl RegionSource {
    /// The name people read (`heie eval --json`).
    pub fn name(self) -> &'static str {
        match self {
            RegionSource::GroundedBox => "grounded-box",
            RegionSource::HeatmapComponent => "heatmap-component",
        }
    }
}

/// One flagged region of an image.
#[derive(Debug, Clone)]
pub struct Region {
    /// 1-based, in list order.
    pub id: u32,
    /// The grounding label; empty when the model gave none (or no box overlaps a component).
    pub label: String,
    pub sentences: Vec<String>,
    pub category: RegionCategory,
    /// The box on InternVL's 0–1000 grid `[x1, y1, x2, y2]`.
    pub bounds: [f32; 4],
    /// The box in pixels of the image, `[x1, y1, x2, y2)`; the mask's tight bounds.
    pub pixels: [u32; 4],
    /// (1 − s) × mean of H over the mask, in 0..1.
    pub severity: f32,
    pub mask: RegionMask,
    pub source: RegionSource,
}

/// What the regions of one image are built from.
pub struct RegionInputs<'a> {
    /// The grounding boxes, in the order written.
    pub boxes: &'a [RegionBox],
    pub sections: &'a SectionTexts,
    /// The primary heatmap (trained heads' when loaded, else the zero-shot one), at its own size.
    pub heatmap: &'a Array2<f32>,
    pub mode: OutputMode,
    /// The primary score, before any calibration.
    pub score: f32,
    /// The image as people see it (EXIF orientation applied), in pixels.
    pub image_size: (u32, u32),
}

/// The regions of one image, ids from 1.
pub fn build_regions(inputs: &RegionInputs) -> Vec<Region> {
    let (width, height) = inputs.image_size;
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let sentences = explanation_sentences(inputs.sections);
    let sampler = Sampler::new(inputs.heatmap, width, height);
    let shapes = match inputs.mode {
        OutputMode::ZeroShot => grounded_shapes(inputs, &sampler),
        OutputMode::Trained => component_shapes(inputs, &sampler),
    };
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, shape)| {
            let measured = shape.measured;
            let sentences = sentences_about(&shape.label, &sentences);
            let category = categorize(&shape.label, &sentences);
            let mean = (measured.sum / measured.pixels as f64) as f32;
            Region {
                id: i as u32 + 1,
                bounds: shape.bounds.unwrap_or_else(|| per_mille(measured.bounds, width, height)),
                label: shape.label,
                sentences,
                category,
                pixels: measured.bounds,
                severity: ((1.0 - inputs.score) * mean).clamp(0.0, 1.0),
                mask: shape.mask,
                source: shape.source,
            }
        })
        .collect()
}

/// A region measured against the heatmap, before its sentences are found.
struct Shape {
    label: String,
    mask: RegionMask,
    source: RegionSource,
    /// The 0–1000 box when the model wrote it; else derived from the mask's pixels.
    bounds: Option<[f32; 4]>,
    measured: Measured,
}

/// Zero-shot: each grounding box as its own mask (never empty: `pixel_bounds` is at least a pixel).
fn grounded_shapes(inputs: &RegionInputs, sampler: &Sampler) -> Vec<Shape> {
    let (width, height) = inputs.image_size;
    inputs
        .boxes
        .iter()
        .map(|b| {
            let [x1, y1, x2, y2] = b.pixel_bounds(width, height);
            let mut measured = Measured::default();
            for y in y1..y2 {
                for x in x1..x2 {
                    measured.add(x, y, sampler.value(x, y));
                }
            }
            Shape {
                label: b.label.clone().unwrap_or_default(),
                mask: RegionMask::Rect { width, height, bounds: [x1, y1, x2, y2] },
                source: RegionSource::GroundedBox,
                bounds: Some([b.x1, b.y1, b.x2, b.y2]),
                measured,
            }
        })
        .collect()
}

/// Trained: each large enough component of the heatmap, largest first, labelled by the grounding
/// box it overlaps most. A component too small to cover one image pixel is dropped.
fn component_shapes(inputs: &RegionInputs, sampler: &Sampler) -> Vec<Shape> {
    let (width, height) = inputs.image_size;
    let found = Arc::new(components(inputs.heatmap, FLAG_THRESHOLD));
    let min_cells = (MIN_COMPONENT_SHARE * (found.width * found.height) as f64).ceil() as usize;
    let mut kept: Vec<u32> = (1..=found.stats().len() as u32).filter(|&k| found.get(k).cells >= min_cells).collect();
    // Stable: equal sizes keep the order a raster scan meets them.
    kept.sort_by_key(|&k| std::cmp::Reverse(found.get(k).cells));
    let mut measured = measure_components(&found, sampler);
    kept.into_iter()
        .filter_map(|label| {
            let measured = std::mem::take(&mut measured[label as usize - 1]);
            if measured.pixels == 0 {
                return None;
            }
            let name = most_overlapping_box(inputs.boxes, &found, label)
                .and_then(|b| b.label.clone())
                .unwrap_or_default();
            let mask = RegionMask::Component { width, height, components: found.clone(), label };
            Some(Shape { label: name, mask, source: RegionSource::HeatmapComponent, bounds: None, measured })
        })
        .collect()
}

/// Every component measured at image size in one pass over the image's pixels, so the cost is the
/// image's size however many components there are; index `k - 1` is component `k`.
fn measure_components(found: &Components, sampler: &Sampler) -> Vec<Measured> {
    let (width, height) = sampler.size;
    let mut measured: Vec<Measured> = (0..found.stats().len()).map(|_| Measured::default()).collect();
    let cells_x: Vec<usize> = (0..width).map(|x| nearest_cell(x, width, found.width)).collect();
    for y in 0..height {
        let cell_y = nearest_cell(y, height, found.height);
        for (x, &cell_x) in (0..width).zip(&cells_x) {
            let label = found.label_at(cell_x, cell_y);
            if label != 0 {
                measured[label as usize - 1].add(x, y, sampler.value(x, y));
            }
        }
    }
    measured
}

/// The box with the most of component `label`'s cells inside it (the first on a tie); None when
/// no box holds any.
fn most_overlapping_box<'b>(
    boxes: &'b [RegionBox],
    found: &Components,
    label: u32,
) -> Option<&'b RegionBox> {
    let [cx1, cy1, cx2, cy2] = found.get(label).bounds;
    let overlap = |b: &RegionBox| {
        let [bx1, by1, bx2, by2] = b.pixel_bounds(found.width as u32, found.height as u32).map(|v| v as usize);
        let (xs, ys) = (cx1.max(bx1)..cx2.min(bx2), cy1.max(by1)..cy2.min(by2));
        ys.flat_map(|y| xs.clone().map(move |x| (x, y))).filter(|&(x, y)| found.label_at(x, y) == label).count()
    };
    let mut best: Option<(&RegionBox, usize)> = None;
    for b in boxes {
        let n = overlap(b);
        if n > 0 && best.is_none_or(|(_, m)| n > m) {
            best = Some((b, n));
        }
    }
    best.map(|(b, _)| b)
}

/// Pixel bounds as a 0–1000 box.
fn per_mille([x1, y1, x2, y2]: [u32; 4], width: u32, height: u32) -> [f32; 4] {
    let (sx, sy) = (COORD_MAX / width as f32, COORD_MAX / height as f32);
    [x1 as f32 * sx, y1 as f32 * sy, x2 as f32 * sx, y2 as f32 * sy]
}

/// The heatmap read at image size (the values `heatmap::resize` to the image's size would give),
/// a pixel at a time, without building the image-sized map.
struct Sampler<'a> {
    map: &'a Array2<f32>,
    rows: Vec<(usize, usize, f32)>,
    cols: Vec<(usize, usize, f32)>,
    size: (u32, u32),
}

impl<'a> Sampler<'a> {
    fn new(map: &'a Array2<f32>, width: u32, height: u32) -> Sampler<'a> {
        let (map_h, map_w) = map.dim();
        Sampler { map, rows: resize_taps(height as usize, map_h), cols: resize_taps(width as usize, map_w), size: (width, height) }
    }

    /// H at image pixel (`x`, `y`), in 0..1; an empty map reads 0, and so does a NaN from the heads
    /// (it must not poison a mean).
    fn value(&self, x: u32, y: u32) -> f64 {
        if self.rows.is_empty() || self.cols.is_empty() {
            return 0.0;
        }
        let h = sample(self.map, self.rows[y as usize], self.cols[x as usize]);
        if h.is_nan() { 0.0 } else { h.clamp(0.0, 1.0) as f64 }
    }
}

/// A mask's pixel count, the sum of H over it and its tight pixel bounds.
struct Measured {
    pixels: u64,
    sum: f64,
    bounds: [u32; 4],
}

impl Default for Measured {
    fn default() -> Measured {
        Measured { pixels: 0, sum: 0.0, bounds: [u32::MAX, u32::MAX, 0, 0] }
    }
}

impl Measured {
    fn add(&mut self, x: u32, y: u32, h: f64) {
        self.pixels += 1;
        self.sum += h;
        let b = &mut self.bounds;
        (b[0], b[1], b[2], b[3]) = (b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::heatmap::rasterize_boxes;

    fn grounded(label: &str, x1: f32, y1: f32, x2: f32, y2: f32) -> RegionBox {
        RegionBox { label: Some(label.into()), x1, y1, x2, y2 }
    }

    fn sections() -> SectionTexts {
        SectionTexts {
            regions: "The <ref>left hand</ref><box>[[100,500,300,900]]</box> has six fingers. The <ref>sign</ref>\
                <box>[[600,100,900,300]]</box> text is garbled.\nSo, the potential problematic regions in the image are [MAP]"
                .into(),
            analysis: "- Hand: the fingers merge.\n- Sign: letters are unreadable.".into(),
            ..SectionTexts::default()
        }
    }

    #[test]
    fn zero_shot_gives_one_region_per_box_with_the_box_as_mask() {
        let boxes = vec![grounded("left hand", 100.0, 500.0, 300.0, 900.0), grounded("sign", 600.0, 100.0, 900.0, 300.0)];
        let heatmap = rasterize_boxes(&boxes, 50, 40);
        let sections = sections();
        let inputs = RegionInputs { boxes: &boxes, sections: &sections, heatmap: &heatmap, mode: OutputMode::ZeroShot, score: 0.25, image_size: (50, 40) };
        let regions = build_regions(&inputs);
        assert_eq!(regions.len(), 2);
        let hand = &regions[0];
        assert_eq!((hand.id, hand.label.as_str(), hand.source), (1, "left hand", RegionSource::GroundedBox));
        assert_eq!(hand.bounds, [100.0, 500.0, 300.0, 900.0]);
        assert_eq!(hand.pixels, [5, 20, 15, 36]);
        // Only the sentence naming "left hand": the shared-word fallback is for labels named nowhere.
        assert_eq!(hand.sentences, vec!["The left hand has six fingers."]);
        let gray = hand.mask.to_gray();
        let inside = gray.iter().enumerate().filter(|(_, v)| **v == 255).map(|(i, _)| (i % 50, i / 50));
        assert!(inside.clone().all(|(x, y)| (5..15).contains(&x) && (20..36).contains(&y)));
        assert_eq!(inside.count(), 10 * 16, "the mask is exactly the box");
        // Inside its box the zero-shot map is 1, so severity is 1 − s.
        assert!((hand.severity - 0.75).abs() < 1e-6, "{}", hand.severity);
        assert_eq!(regions[1].id, 2);
        assert_eq!(regions[1].sentences, vec!["The sign text is garbled.", "Sign: letters are unreadable."]);
    }

    #[test]
    fn severity_is_one_minus_score_times_the_mean_of_the_map_over_the_mask() {
        let boxes = vec![grounded("", 0.0, 0.0, 500.0, 1000.0)];
        // Left half at 0.2 and 0.6 in alternate rows: the mean over the box is 0.4.
        let heatmap = Array2::from_shape_fn((4, 4), |(r, c)| if c < 2 { if r % 2 == 0 { 0.2 } else { 0.6 } } else { 1.0 });
        let sections = SectionTexts::default();
        let inputs = RegionInputs { boxes: &boxes, sections: &sections, heatmap: &heatmap, mode: OutputMode::ZeroShot, score: 0.5, image_size: (4, 4) };
        let regions = build_regions(&inputs);
        assert!((regions[0].severity - 0.2).abs() < 1e-6, "{}", regions[0].severity);
        assert!(regions[0].sentences.is_empty() && regions[0].label.is_empty());
    }

    #[test]
    fn trained_regions_are_components_largest_first_labelled_by_the_box_they_overlap_most() {
        // A 20×10 map: a small blob top-left (inside the sign box's cells), a large one bottom-right
        // (inside the hand box), a speck under 0.1 % cannot exist at this size, so check the cut at a
        // bigger map below.
        let mut heatmap = Array2::<f32>::zeros((10, 20));
        for (r, c) in [(1, 1), (1, 2), (2, 1)] {
            heatmap[[r, c]] = 0.9;
        }
        for r in 5..9 {
            for c in 12..18 {
                heatmap[[r, c]] = 0.8;
            }
        }
        let boxes = vec![grounded("sign", 0.0, 0.0, 200.0, 400.0), grounded("left hand", 550.0, 450.0, 1000.0, 1000.0)];
        let sections = sections();
        let inputs = RegionInputs { boxes: &boxes, sections: &sections, heatmap: &heatmap, mode: OutputMode::Trained, score: 0.2, image_size: (40, 20) };
        let regions = build_regions(&inputs);
        assert_eq!(regions.iter().map(|r| (r.id, r.label.as_str())).collect::<Vec<_>>(), vec![(1, "left hand"), (2, "sign")]);
        let big = &regions[0];
        assert_eq!(big.source, RegionSource::HeatmapComponent);
        // Cells 12..18 × 5..9 of a 20×10 grid are pixels 24..36 × 10..18 of the 40×20 image.
        assert_eq!(big.pixels, [24, 10, 36, 18]);
        assert_eq!(big.bounds, [600.0, 500.0, 900.0, 900.0]);
        assert_eq!(big.mask.to_gray().iter().filter(|v| **v == 255).count(), 12 * 8);
        assert!(big.sentences.contains(&"The left hand has six fingers.".to_string()));
        assert!(big.severity > 0.0 && big.severity <= 0.8);
        // A component no box touches has no label and no sentences.
        let inputs = RegionInputs { boxes: &[], ..inputs };
        assert!(build_regions(&inputs).iter().all(|r| r.label.is_empty() && r.sentences.is_empty()));
    }

    #[test]
    fn a_component_that_covers_no_image_pixel_is_no_region() {
        // A 4-cell map over a 1-pixel image: the pixel's centre falls in cell 2, so the component of
        // cell 0 has no pixel and the one of cells 2..4 becomes region 1.
        let heatmap = Array2::from_shape_vec((1, 4), vec![1.0, 0.0, 1.0, 1.0]).unwrap();
        let sections = SectionTexts::default();
        let inputs = RegionInputs { boxes: &[], sections: &sections, heatmap: &heatmap, mode: OutputMode::Trained, score: 0.5, image_size: (1, 1) };
        let regions = build_regions(&inputs);
        assert_eq!(regions.iter().map(|r| (r.id, r.pixels)).collect::<Vec<_>>(), vec![(1, [0, 0, 1, 1])]);
        // H at image size is the map resized (bilinear): the pixel's centre is halfway between
        // cells 1 (0) and 2 (1), so H = 0.5 there and severity = (1 − 0.5) × 0.5.
        assert!((regions[0].severity - 0.25).abs() < 1e-6, "{}", regions[0].severity);
    }

    #[test]
    fn specks_under_a_thousandth_of_the_map_are_dropped() {
        // 100×100 = 10 000 cells: 10 is the limit; a 3×3 speck goes, a 4×4 patch stays.
        let mut heatmap = Array2::<f32>::zeros((100, 100));
        for r in 10..13 {
            for c in 10..13 {
                heatmap[[r, c]] = 1.0;
            }
        }
        for r in 50..54 {
            for c in 50..54 {
                heatmap[[r, c]] = 1.0;
            }
        }
        let sections = SectionTexts::default();
        let inputs = RegionInputs { boxes: &[], sections: &sections, heatmap: &heatmap, mode: OutputMode::Trained, score: 0.0, image_size: (100, 100) };
        let regions = build_regions(&inputs);
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].pixels, [50, 50, 54, 54]);
        assert!((regions[0].severity - 1.0).abs() < 1e-6);
    }
}
