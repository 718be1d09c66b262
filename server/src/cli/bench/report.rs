//! What one benchmark setting measured, and the table `heie bench` prints.

use serde::Serialize;

/// One measured (path, in-flight) setting.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `heie`, `naive`, `no-<speed-up>`, `remote` (a running server) or `remote×N` (N replicas).
    pub path: String,
    /// Requests in flight at once (clients), and the server's sequence slots.
    pub in_flight: usize,
    pub requests: usize,
    pub wall_s: f64,
    pub images_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// Time to the first generated (sampled) token, from the request's arrival at the server: queue,
    /// image work and prefill included; server-written heading text does not count.
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    /// Generated tokens over wall time, all sequences together.
    pub generated_tokens_per_s: f64,
    /// Mean of each sequence's own decode rate (its tokens over the decode steps it took part in).
    pub sequence_decode_tokens_per_s: f64,
    pub image_encode_ms: f64,
    pub prefill_ms: f64,
    /// Image decoding, tiling, heads and heatmap rendering, as a share of end-to-end time.
    pub pre_post_share: f64,
    pub mean_decode_batch: Option<f64>,
    /// images/s over the naive path's at the same in-flight count (when both were measured).
    pub vs_naive: Option<f64>,
}

/// Nearest-rank percentile (0 for no samples).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Fills `vs_naive` from the naive row with the same in-flight count.
pub fn compare_with_naive(rows: &mut [BenchRow]) {
    let naive: Vec<(usize, f64)> = rows.iter().filter(|r| r.path == "naive").map(|r| (r.in_flight, r.images_per_s)).collect();
    for r in rows.iter_mut() {
        r.vs_naive = naive
            .iter()
            .find(|(n, _)| *n == r.in_flight)
            .filter(|(_, base)| *base > 0.0)
            .map(|(_, base)| r.images_per_s / base);
    }
}

pub fn table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<24} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>8}\n",
        "path", "in flight", "reqs", "images/s", "vs naive", "lat p50", "lat p95", "TTFT p50", "TTFT p95", "gen tok/s",
        "seq tok/s", "encode", "prefill", "pre+post", "batch", "wall s"
    );
    out.push_str(&format!("{:<24} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>8}\n",
        "", "", "", "", "", "ms", "ms", "ms", "ms", "", "", "ms", "ms", "%", "", ""));
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:>9} {:>5} {:>8.2} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>9.1} {:>8.2} {:>6} {:>8.2}\n",
            r.path,
            r.in_flight,
            r.requests,
            r.images_per_s,
            r.vs_naive.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into()),
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.ttft_p50_ms,
            r.ttft_p95_ms,
            r.generated_tokens_per_s,
            r.sequence_decode_tokens_per_s,
            r.image_encode_ms,
            r.prefill_ms,
            r.pre_post_share * 100.0,
            r.mean_decode_batch.map(|m| format!("{m:.2}")).unwrap_or_else(|| "-".into()),
            r.wall_s,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.95), 5.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        let mut twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&mut twenty, 0.95), 19.0);
    }
}
