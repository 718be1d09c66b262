//! What a score means, in words: five bands over the plausibility score, cut where the human
//! ratings of Expl-AIGI-Eval (RichHF-18K dev + test, 1,950 images, `../shared/data/expl-aigi-eval`)
//! change level.
//!
//! Those ratings are the mean of three annotators' 1–5 plausibility marks mapped to 0–1, so they
//! sit on a grid of twelfths. Each band boundary lies halfway between two grid levels, which makes
//! the share of human-rated images per band exact (counted in the README's "What a score means"):
//!
//! | band            | scores       | share of the 1,950 | percentiles |
//! |-----------------|--------------|--------------------|-------------|
//! | badly flawed    | < 0.458      | 182 (9.3 %)        | 0 – 9.3     |
//! | flawed          | 0.458–0.542  | 147 (7.5 %)        | 9.3 – 16.9  |
//! | typical         | 0.542–0.625  | 1,138 (58.4 %)     | 16.9 – 75.2 |
//! | good            | 0.625–0.792  | 258 (13.2 %)       | 75.2 – 88.5 |
//! | very plausible  | ≥ 0.792      | 225 (11.5 %)       | 88.5 – 100  |
//!
//! (one image rated 0.625 falls in "good".) The default rejection threshold of the hosts is the lower
//! edge of "typical": it rejects what people rated flawed or worse, the bottom 17 %.

/// One band: its name, its lowest score (inclusive) and what it means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreBand {
    pub name: &'static str,
    pub lower: f32,
    pub meaning: &'static str,
}

/// The bands, lowest first; each ends where the next begins, the last at 1.
pub const SCORE_BANDS: [ScoreBand; 5] = [
    ScoreBand {
        name: "badly flawed",
        lower: 0.0,
        meaning: "Obvious defects; people rated 9% of the Expl-AIGI-Eval images this low.",
    },
    ScoreBand {
        name: "flawed",
        lower: 11.0 / 24.0,
        meaning: "Clear defects; 7.5% of the human-rated images (percentiles 9-17).",
    },
    ScoreBand {
        name: "typical",
        lower: 13.0 / 24.0,
        meaning: "Minor flaws, as most generations; 58% of the human-rated images (percentiles 17-75).",
    },
    ScoreBand {
        name: "good",
        lower: 15.0 / 24.0,
        meaning: "Few visible flaws; 13% of the human-rated images (percentiles 75-88).",
    },
    ScoreBand {
        name: "very plausible",
        lower: 19.0 / 24.0,
        meaning: "Looks real; the top 11.5% of the human-rated images.",
    },
];

/// The lower edge of "typical": the hosts' default rejection threshold.
pub const DEFAULT_REJECT_BELOW: f32 = SCORE_BANDS[2].lower;

/// The band a score falls in (NaN and values below 0 in the lowest, above 1 in the highest).
pub fn band_of(score: f32) -> &'static ScoreBand {
    SCORE_BANDS.iter().rev().find(|band| score >= band.lower).unwrap_or(&SCORE_BANDS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_human_rating_level_falls_in_the_band_the_table_names() {
        let twelfths = |k: u32| k as f32 / 12.0;
        let names: Vec<&str> = (0..=12).map(|k| band_of(twelfths(k)).name).collect();
        assert_eq!(
            names,
            [
                "badly flawed", "badly flawed", "badly flawed", "badly flawed", "badly flawed", "badly flawed",
                "flawed", "typical", "good", "good", "very plausible", "very plausible", "very plausible",
            ]
        );
        assert_eq!(band_of(0.625).name, "good");
    }

    #[test]
    fn bands_are_ordered_and_cover_zero_to_one() {
        assert_eq!(SCORE_BANDS[0].lower, 0.0);
        assert!(SCORE_BANDS.windows(2).all(|w| w[0].lower < w[1].lower && w[1].lower < 1.0));
        assert_eq!(band_of(f32::NAN).name, "badly flawed");
        assert_eq!(band_of(-1.0).name, "badly flawed");
        assert_eq!(band_of(2.0).name, "very plausible");
    }
}
