//! How well a score separates kept from rejected images: AUC (Mann–Whitney) and accuracy at a threshold.

/// P(a random kept image scores above a random rejected one), ties counting half; None without
/// both classes.
pub fn auc(scores: &[f64], kept: &[bool]) -> Option<f64> {
    let positives = kept.iter().filter(|&&k| k).count();
    let negatives = kept.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mid-ranks (tied scores share the mean of their ranks) summed over the kept images.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let mid_rank = (start + end) as f64 / 2.0 + 1.0;
        rank_sum += order[start..=end].iter().filter(|&&i| kept[i]).count() as f64 * mid_rank;
        start = end + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Share of images classified right when `score >= threshold` means keep.
pub fn accuracy(scores: &[f64], kept: &[bool], threshold: f64) -> f64 {
    let right = scores.iter().zip(kept).filter(|&(&s, &k)| (s >= threshold) == k).count();
    right as f64 / scores.len().max(1) as f64
}

/// The threshold with the highest accuracy on these examples: a midpoint between two neighbouring
/// distinct scores, or just beyond either end (keep all / reject all); the lowest of equal bests.
pub fn best_threshold(scores: &[f64], kept: &[bool]) -> f64 {
    let mut distinct: Vec<f64> = scores.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let Some((&first, &last)) = distinct.first().zip(distinct.last()) else { return 0.5 };
    let mut candidates = vec![first];
    candidates.extend(distinct.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    candidates.push(last + 1e-9);
    let mut best = (candidates[0], accuracy(scores, kept, candidates[0]));
    for &t in &candidates[1..] {
        let a = accuracy(scores, kept, t);
        if a > best.1 {
            best = (t, a);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_and_halves_ties() {
        // Perfect, inverted and chance orderings.
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), Some(1.0));
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]), Some(0.0));
        // Kept {0.5, 0.3}, rejected {0.4, 0.3}: pairs (0.5>0.4) 1, (0.5>0.3) 1, (0.3<0.4) 0,
        // (0.3=0.3) ½ → 2.5 / 4.
        assert_eq!(auc(&[0.5, 0.3, 0.4, 0.3], &[true, true, false, false]), Some(0.625));
        // All scores equal: every pair a tie.
        assert_eq!(auc(&[0.7; 5], &[true, false, true, false, false]), Some(0.5));
        // Kept {3}, rejected {1, 2, 3, 4}: 1 + 1 + ½ + 0 = 2.5 of 4.
        assert_eq!(auc(&[3.0, 1.0, 2.0, 3.0, 4.0], &[true, false, false, false, false]), Some(0.625));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn the_best_threshold_maximises_accuracy() {
        let scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.4];
        let kept = [false, false, false, true, true, true];
        let t = best_threshold(&scores, &kept);
        assert!((t - 0.35).abs() < 1e-12, "{t}");
        assert_eq!(accuracy(&scores, &kept, t), 1.0);
        // All kept: the lowest threshold keeps everything.
        assert_eq!(accuracy(&[0.2, 0.4], &[true, true], best_threshold(&[0.2, 0.4], &[true, true])), 1.0);
        // All rejected: a threshold above every score.
        assert_eq!(accuracy(&[0.2, 0.4], &[false, false], best_threshold(&[0.2, 0.4], &[false, false])), 1.0);
    }
}
