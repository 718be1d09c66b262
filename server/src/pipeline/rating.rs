//! Zero-shot plausibility score from rating-word probabilities (Q-Align's expectation trick).
//!
//! Instead of asking the model for a number (which LLMs give poorly and coarsely), the engine
//! prompts "... the quality of this image is" and reads the next-token logits of five rating
//! words. The score is the expected level under the softmax over just those words, which is
//! continuous and well calibrated in rank order.

use serde::Serialize;

/// Rating words and the score each stands for, best first (Q-Align's five levels).
pub const LEVELS: [(&str, f32); 5] = [
    ("excellent", 1.0),
    ("good", 0.75),
    ("fair", 0.5),
    ("poor", 0.25),
    ("bad", 0.0),
];

/// A zero-shot rating: the expected level and the distribution it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rating {
    /// Expected level in `[0, 1]`; 1 = flawless.
    pub score: f32,
    /// Probability of each word in [`LEVELS`] order; sums to 1.
    pub probabilities: [f32; 5],
}

/// Softmax over the five rating-word logits (in [`LEVELS`] order) and its expected level.
///
/// A non-finite logit (NaN or ±inf, e.g. from a masked or broken vocabulary entry) counts as
/// impossible; if no logit is finite, every level is equally likely, which gives the neutral 0.5
/// rather than an error the caller could do nothing about.
pub fn rating_from_logits(logits: [f32; 5]) -> Rating {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let probabilities = if max == f32::NEG_INFINITY {
        [0.2; 5]
    } else {
        // Subtracting the max keeps exp() ≤ 1, so large logits cannot overflow; the max term
        // contributes exp(0) = 1, so the sum is never zero.
        let weights = logits.map(|l| if l.is_finite() { (l - max).exp() } else { 0.0 });
        let sum: f32 = weights.iter().sum();
        weights.map(|w| w / sum)
    };
    let score = probabilities
        .iter()
        .zip(LEVELS)
        .map(|(p, (_, level))| p * level)
        .sum();
    Rating {
        score,
        probabilities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG_INF: f32 = f32::NEG_INFINITY;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn equal_logits_are_uniform_and_neutral() {
        let r = rating_from_logits([3.0; 5]);
        assert!(r.probabilities.iter().all(|&p| close(p, 0.2)));
        // (1 + 0.75 + 0.5 + 0.25 + 0) / 5 = 0.5
        assert!(close(r.score, 0.5));
    }

    #[test]
    fn a_single_possible_word_decides_the_score() {
        let r = rating_from_logits([0.0, NEG_INF, NEG_INF, NEG_INF, NEG_INF]);
        assert_eq!(r.probabilities, [1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(r.score, 1.0);
        let r = rating_from_logits([NEG_INF, NEG_INF, NEG_INF, 7.0, NEG_INF]);
        assert_eq!(r.score, 0.25);
    }

    #[test]
    fn hand_computed_mixture() {
        // exp(logits) ∝ [4, 3, 2, 1, 1], sum 11:
        // score = (4·1 + 3·0.75 + 2·0.5 + 1·0.25 + 1·0) / 11 = 7.5 / 11 = 0.681818…
        let r = rating_from_logits([4f32.ln(), 3f32.ln(), 2f32.ln(), 0.0, 0.0]);
        let expected = [4.0 / 11.0, 3.0 / 11.0, 2.0 / 11.0, 1.0 / 11.0, 1.0 / 11.0];
        for (p, e) in r.probabilities.iter().zip(expected) {
            assert!(close(*p, e), "{:?}", r.probabilities);
        }
        assert!(close(r.score, 7.5 / 11.0), "{}", r.score);
    }

    #[test]
    fn large_logits_do_not_overflow_and_shifts_do_not_matter() {
        // Only "excellent" and "good" possible, equally: score (1 + 0.75) / 2 = 0.875.
        let r = rating_from_logits([1000.0, 1000.0, NEG_INF, NEG_INF, NEG_INF]);
        assert!(close(r.score, 0.875) && close(r.probabilities[0], 0.5));
        let a = rating_from_logits([1.0, -2.0, 0.5, 3.0, -1.0]);
        let b = rating_from_logits([101.0, 98.0, 100.5, 103.0, 99.0]);
        assert!(close(a.score, b.score));
    }

    #[test]
    fn non_finite_logits_count_as_impossible() {
        // NaN and +inf are dropped; "fair" and "poor" share: (0.5 + 0.25) / 2 = 0.375.
        let r = rating_from_logits([f32::NAN, f32::INFINITY, 0.0, 0.0, NEG_INF]);
        assert!(close(r.score, 0.375));
        assert_eq!(r.probabilities[..2], [0.0, 0.0]);
        let all_bad = rating_from_logits([f32::NAN, f32::INFINITY, NEG_INF, NEG_INF, f32::NAN]);
        assert_eq!(all_bad.probabilities, [0.2; 5]);
        assert!(close(all_bad.score, 0.5));
    }

    #[test]
    fn probabilities_sum_to_one() {
        let r = rating_from_logits([-30.0, 12.0, 0.1, 5.5, -0.7]);
        assert!(close(r.probabilities.iter().sum(), 1.0));
        assert!((0.0..=1.0).contains(&r.score));
    }
}
