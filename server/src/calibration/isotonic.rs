//! The monotone part of a calibration: P(keep) as a non-decreasing function of the raw score, fitted by
//! pool-adjacent-violators (PAV) and stored as knots joined by straight lines.

/// A non-decreasing, piecewise-linear map from score to probability. Knots have strictly increasing
/// `x` and non-decreasing `y` in [0, 1]; outside the knots the end values hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// Least-squares non-decreasing fit of `values` with `weights` (pool adjacent violators): one fitted
/// value per input, in input order.
pub fn pool_adjacent_violators(values: &[f64], weights: &[f64]) -> Vec<f64> {
    assert_eq!(values.len(), weights.len(), "one weight per value");
    // Each block: (weighted mean, total weight, how many inputs it covers).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(values.len());
    for (&v, &w) in values.iter().zip(weights) {
        blocks.push((v, w, 1));
        while blocks.len() > 1 && blocks[blocks.len() - 2].0 > blocks[blocks.len() - 1].0 {
            let (m2, w2, n2) = blocks.pop().expect("two blocks");
            let (m1, w1, n1) = blocks.pop().expect("two blocks");
            let w = w1 + w2;
            blocks.push(((m1 * w1 + m2 * w2) / w, w, n1 + n2));
        }
    }
    blocks.into_iter().flat_map(|(mean, _, n)| std::iter::repeat_n(mean, n)).collect()
}

impl Isotonic {
    /// Fits P(keep | score) on examples (score, kept). Examples with the same score are pooled first,
    /// so equal scores always map to equal probabilities. Panics on no examples (the caller checks).
    pub fn fit(scores: &[f64], kept: &[bool]) -> Isotonic {
        assert!(!scores.is_empty() && scores.len() == kept.len(), "examples with one label each");
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        // Distinct scores with their keep rate and count.
        let (mut xs, mut rates, mut counts) = (Vec::new(), Vec::new(), Vec::<f64>::new());
        for &i in &order {
            let label = if kept[i] { 1.0 } else { 0.0 };
            if xs.last() == Some(&scores[i]) {
                let n = counts.last_mut().expect("a group");
                let r = rates.last_mut().expect("a group");
                *r = (*r * *n + label) / (*n + 1.0);
                *n += 1.0;
            } else {
                xs.push(scores[i]);
                rates.push(label);
                counts.push(1.0);
            }
        }
        let fitted = pool_adjacent_violators(&rates, &counts);
        // Each run of equal fitted values becomes a flat segment: a knot at its first and its last score.
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (i, (&xi, &yi)) in xs.iter().zip(&fitted).enumerate() {
            let starts = i == 0 || fitted[i - 1] != yi;
            let ends = i + 1 == xs.len() || fitted[i + 1] != yi;
            if starts || ends {
                x.push(xi);
                y.push(yi);
            }
        }
        Isotonic { x, y }
    }

    /// P(keep) at `score`: linear between knots, the end values beyond them.
    pub fn at(&self, score: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        if score <= x[0] {
            return y[0];
        }
        if score >= x[x.len() - 1] {
            return y[y.len() - 1];
        }
        // The first knot above `score` (exists: score is below the last knot).
        let hi = x.partition_point(|&k| k <= score);
        let lo = hi - 1;
        let t = (score - x[lo]) / (x[hi] - x[lo]);
        y[lo] + t * (y[hi] - y[lo])
    }

    /// Checks what a file could get wrong; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.x.is_empty() {
            return Err("isotonic.x: no knots".into());
        }
        if self.x.len() != self.y.len() {
            return Err(format!("isotonic.y: {} values for {} knots in isotonic.x", self.y.len(), self.x.len()));
        }
        if let Some(i) = self.x.iter().position(|v| !v.is_finite()) {
            return Err(format!("isotonic.x[{i}] is not a finite number"));
        }
        if let Some(i) = self.y.iter().position(|v| !(v.is_finite() && (0.0..=1.0).contains(v))) {
            return Err(format!("isotonic.y[{i}] must be a probability in [0, 1]"));
        }
        if let Some(i) = self.x.windows(2).position(|w| w[0] >= w[1]) {
            return Err(format!("isotonic.x must increase strictly; x[{}] >= x[{}]", i, i + 1));
        }
        if let Some(i) = self.y.windows(2).position(|w| w[0] > w[1]) {
            return Err(format!("isotonic.y must not decrease (monotone in the score); y[{}] > y[{}]", i, i + 1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pav_pools_the_textbook_sequence() {
        // 1, 3, 2, 4, 3, 5 → the violators (3, 2) and (4, 3) pool to 2.5 and 3.5.
        let fitted = pool_adjacent_violators(&[1.0, 3.0, 2.0, 4.0, 3.0, 5.0], &[1.0; 6]);
        assert_eq!(fitted, [1.0, 2.5, 2.5, 3.5, 3.5, 5.0]);
        // A decreasing sequence pools to its mean; weights count.
        assert_eq!(pool_adjacent_violators(&[3.0, 2.0, 1.0], &[1.0; 3]), [2.0, 2.0, 2.0]);
        assert_eq!(pool_adjacent_violators(&[4.0, 1.0], &[1.0, 3.0]), [1.75, 1.75]);
        // Pooling cascades backwards: 1, 5, 6, 0 → 1, then (5, 6, 0) = 11/3.
        let cascade = pool_adjacent_violators(&[1.0, 5.0, 6.0, 0.0], &[1.0; 4]);
        assert_eq!(cascade[0], 1.0);
        assert!(cascade[1..].iter().all(|&v| (v - 11.0 / 3.0).abs() < 1e-12));
    }

    #[test]
    fn the_fit_is_monotone_pools_ties_and_interpolates() {
        let scores = [0.1, 0.2, 0.2, 0.3, 0.4, 0.5];
        let kept = [false, true, false, false, true, true];
        let map = Isotonic::fit(&scores, &kept);
        map.validate().unwrap();
        // 0.1 → 0; (0.2: 1/2, 0.3: 0) pool to 1/3; 0.4, 0.5 → 1.
        assert_eq!(map.x, [0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(map.at(0.1), 0.0);
        assert!((map.at(0.2) - 1.0 / 3.0).abs() < 1e-12 && (map.at(0.3) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(map.at(0.45), 1.0);
        assert!((map.at(0.15) - 1.0 / 6.0).abs() < 1e-12, "halfway between 0 and 1/3");
        assert!((map.at(0.35) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((map.at(-5.0), map.at(5.0)), (0.0, 1.0));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |x: Vec<f64>, y: Vec<f64>| Isotonic { x, y }.validate().unwrap_err();
        assert!(bad(vec![], vec![]).contains("isotonic.x"));
        assert!(bad(vec![0.1, 0.2], vec![0.5]).contains("isotonic.y"));
        assert!(bad(vec![0.1, f64::NAN], vec![0.5, 0.6]).contains("isotonic.x[1]"));
        assert!(bad(vec![0.2, 0.1], vec![0.5, 0.6]).contains("increase"));
        assert!(bad(vec![0.1, 0.2], vec![0.6, 0.5]).contains("must not decrease"));
        assert!(bad(vec![0.1, 0.2], vec![0.6, 1.5]).contains("isotonic.y[1]"));
    }
}
