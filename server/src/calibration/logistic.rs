//! L2-penalised logistic regression fitted by Newton's method: small, exact and dependency-free for the
//! few thousand rows and ten weights a calibration has.

/// What the penalty pulls each weight towards, and which weights may move at all.
#[derive(Debug, Clone)]
pub struct Prior {
    /// Penalty strength λ: the objective is Σ log-loss + λ/2 · Σ_{j penalised} (w_j − center_j)².
    pub lambda: f64,
    /// Per weight: `Some(center)` penalised towards `center`, `None` free (the bias).
    pub centers: Vec<Option<f64>>,
    /// Per weight: false holds it at its center (or 0 when free) instead of fitting it.
    pub fitted: Vec<bool>,
}

/// P(y = 1) for one row of features under `weights` (same length).
pub fn predict(weights: &[f64], row: &[f64]) -> f64 {
    sigmoid(weights.iter().zip(row).map(|(w, x)| w * x).sum())
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The weights minimising the penalised log-loss of `labels` given `rows` (each the same length as
/// `prior.centers`). Newton steps with step halving until the step is below 1e-10 (the objective is
/// strictly convex in the fitted weights when every free weight is pinned by the data).
pub fn fit(rows: &[Vec<f64>], labels: &[bool], prior: &Prior) -> Vec<f64> {
    let d = prior.centers.len();
    assert!(rows.iter().all(|r| r.len() == d) && rows.len() == labels.len(), "rows of {d} features, one label each");
    let active: Vec<usize> = (0..d).filter(|&j| prior.fitted[j]).collect();
    let mut w: Vec<f64> = prior.centers.iter().map(|c| c.unwrap_or(0.0)).collect();
    let mut loss = objective(&w, rows, labels, prior);
    for _ in 0..200 {
        let (grad, hess) = gradient_and_hessian(&w, rows, labels, prior, &active);
        let Some(step) = solve(hess, grad) else { break };
        let mut scale = 1.0;
        let mut improved = false;
        for _ in 0..40 {
            let mut trial = w.clone();
            for (k, &j) in active.iter().enumerate() {
                trial[j] -= scale * step[k];
            }
            let trial_loss = objective(&trial, rows, labels, prior);
            if trial_loss <= loss {
                w = trial;
                loss = trial_loss;
                improved = true;
                break;
            }
            scale *= 0.5;
        }
        let size = step.iter().map(|s| (s * scale).abs()).fold(0.0, f64::max);
        if !improved || size < 1e-10 {
            break;
        }
    }
    w
}

fn objective(w: &[f64], rows: &[Vec<f64>], labels: &[bool], prior: &Prior) -> f64 {
    let data: f64 = rows
        .iter()
        .zip(labels)
        .map(|(row, &y)| {
            let z: f64 = w.iter().zip(row).map(|(a, b)| a * b).sum();
            // log(1 + e^z) − y·z, computed without overflow.
            let softplus = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
            softplus - if y { z } else { 0.0 }
        })
        .sum();
    data + penalty(w, prior)
}

fn penalty(w: &[f64], prior: &Prior) -> f64 {
    w.iter().zip(&prior.centers).filter_map(|(wj, c)| c.map(|c| (wj - c).powi(2))).sum::<f64>() * prior.lambda / 2.0
}

/// Gradient and Hessian of the objective over the fitted weights `active`.
fn gradient_and_hessian(w: &[f64], rows: &[Vec<f64>], labels: &[bool], prior: &Prior, active: &[usize]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let k = active.len();
    let mut grad = vec![0.0; k];
    let mut hess = vec![vec![0.0; k]; k];
    for (row, &y) in rows.iter().zip(labels) {
        let p = predict(w, row);
        let r = p - if y { 1.0 } else { 0.0 };
        let v = p * (1.0 - p);
        for (a, &ja) in active.iter().enumerate() {
            grad[a] += r * row[ja];
            for (b, &jb) in active.iter().enumerate() {
                hess[a][b] += v * row[ja] * row[jb];
            }
        }
    }
    for (a, &j) in active.iter().enumerate() {
        if let Some(center) = prior.centers[j] {
            grad[a] += prior.lambda * (w[j] - center);
            hess[a][a] += prior.lambda;
        }
    }
    (grad, hess)
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; None when `a` is singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= factor * a[col][k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so the synthetic data is the same on every run.
    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn newton_recovers_the_weights_that_generated_the_labels() {
        let truth = [-0.5, 2.0, -3.0];
        let mut rng = Rng(0x5eed);
        let rows: Vec<Vec<f64>> = (0..4000).map(|_| vec![1.0, rng.unit() * 4.0 - 2.0, rng.unit() * 2.0 - 1.0]).collect();
        let labels: Vec<bool> = rows.iter().map(|r| rng.unit() < predict(&truth, r)).collect();
        let prior = Prior { lambda: 1e-6, centers: vec![None, Some(0.0), Some(0.0)], fitted: vec![true; 3] };
        let w = fit(&rows, &labels, &prior);
        for (got, want) in w.iter().zip(truth) {
            assert!((got - want).abs() < 0.2, "fitted {w:?}, generated with {truth:?}");
        }
    }

    #[test]
    fn the_penalty_keeps_separable_data_finite_and_held_weights_stay() {
        // Perfectly separated by the second feature: without the penalty its weight runs to infinity.
        let rows = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![1.0, 1.0], vec![1.0, 1.0]];
        let labels = [true, true, false, false];
        let prior = Prior { lambda: 1.0, centers: vec![None, Some(0.0)], fitted: vec![true, true] };
        let w = fit(&rows, &labels, &prior);
        // By symmetry the optimum has b = −w/2, and ∂/∂w = 2σ(b + w) + λw = 0 gives w = −2σ(w/2): ≈ −0.802.
        assert!((w[1] + 2.0 * sigmoid(w[1] / 2.0)).abs() < 1e-9 && (w[0] + w[1] / 2.0).abs() < 1e-9, "{w:?}");
        assert!((w[1] + 0.802).abs() < 1e-3, "{w:?}");
        let held = Prior { lambda: 1.0, centers: vec![None, Some(0.0)], fitted: vec![true, false] };
        assert_eq!(fit(&rows, &labels, &held)[1], 0.0);
    }

    #[test]
    fn the_linear_solver_solves_and_refuses_singular_systems() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }
}
