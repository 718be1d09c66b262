//! Token sampling: greedy by default (deterministic), or temperature sampling from a seeded stream.

use super::runtime::Token;
use super::program::Sampling;

/// A per-sequence sampler. The random stream is SplitMix64, so a seed gives the same tokens on every
/// machine and build.
pub struct Sampler {
    sampling: Sampling,
    state: u64,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Sampler {
        Sampler { sampling, state: sampling.seed ^ 0x9E37_79B9_7F4A_7C15 }
    }

    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn sample(&mut self, logits: &[f32]) -> Token {
        if self.sampling.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.sampling.temperature as f64;
        let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max) as f64;
        let weight = |v: f32| if v.is_finite() { ((v as f64 - max) / t).exp() } else { 0.0 };
        let total: f64 = logits.iter().map(|&v| weight(v)).sum();
        if total.is_nan() || total <= 0.0 {
            return argmax(logits);
        }
        let mut target = self.next_unit() * total;
        for (i, &v) in logits.iter().enumerate() {
            target -= weight(v);
            if target <= 0.0 {
                return i as Token;
            }
        }
        argmax(logits)
    }
}

/// The index of the largest finite logit (the first on ties).
pub fn argmax(logits: &[f32]) -> Token {
    let mut best = 0usize;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as Token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(Sampling::default());
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, seed });
            (0..40).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn low_temperature_concentrates_on_the_maximum() {
        let mut s = Sampler::new(Sampling { temperature: 0.01, seed: 1 });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5]), 1);
        }
    }
}
