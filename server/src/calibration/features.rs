//! What a calibration looks at for one judged image: the raw primary score and, per defect category,
//! how severe its worst flagged region is.

use crate::pipeline::region_category::RegionCategory;

/// Number of defect categories (`RegionCategory::ALL`), one severity each.
pub const CATEGORY_COUNT: usize = RegionCategory::ALL.len();

/// One image's features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    /// The primary score before any calibration, in [0, 1].
    pub score: f32,
    /// Per category, in `RegionCategory::ALL` order: the highest severity of its regions (0 when none).
    pub severities: [f32; CATEGORY_COUNT],
}

impl Features {
    /// A score with no flagged regions.
    pub fn score_only(score: f32) -> Features {
        Features { score, severities: [0.0; CATEGORY_COUNT] }
    }

    /// The score and the worst severity per category of `regions` (category, severity).
    pub fn from_regions(score: f32, regions: impl IntoIterator<Item = (RegionCategory, f32)>) -> Features {
        let mut features = Features::score_only(score);
        for (category, severity) in regions {
            let slot = &mut features.severities[category_index(category)];
            // NaN never wins (max ignores it), so a broken severity cannot poison the calibration.
            *slot = slot.max(severity);
        }
        features
    }

    /// The severity of one category.
    pub fn severity(&self, category: RegionCategory) -> f32 {
        self.severities[category_index(category)]
    }
}

/// The position of `category` in `RegionCategory::ALL` (and in every per-category array here).
pub fn category_index(category: RegionCategory) -> usize {
    RegionCategory::ALL.iter().position(|&c| c == category).expect("ALL lists every category")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_category_keeps_its_worst_region() {
        let f = Features::from_regions(
            0.4,
            [(RegionCategory::Hand, 0.2), (RegionCategory::Text, 0.5), (RegionCategory::Hand, 0.7), (RegionCategory::Hand, f32::NAN)],
        );
        assert_eq!(f.score, 0.4);
        assert_eq!(f.severity(RegionCategory::Hand), 0.7);
        assert_eq!(f.severity(RegionCategory::Text), 0.5);
        assert_eq!(f.severity(RegionCategory::Face), 0.0);
    }
}
