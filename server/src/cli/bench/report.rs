//! What one benchmark setting measured, and the table `heie bench` prints.

use std::time::Duration;

use serde::Serialize;

/// One request as a client measured it.
pub struct Sample {
    /// Arrival to the first generated (sampled) token; `None` when nothing was generated.
    pub ttft: Option<Duration>,
    /// Send to the end of the response, on the client.
    pub latency: Duration,
    pub generated: u32,
    /// Every position the request put into the context before generating: text and image tokens.
    pub prompt_tokens: u32,
    /// Time between consecutive pieces of streamed text.
    pub gaps: Vec<Duration>,
    pub server: ServerSide,
}

/// What the server itself reported about a request (0 where a server does not say).
#[derive(Default)]
pub struct ServerSide {
    pub decode_tokens_per_s: f64,
    pub image_encode_ms: f64,
    pub prefill_ms: f64,
    /// Image decoding, tiling, heads and heatmap rendering.
    pub pre_post_ms: f64,
}

/// The path every other row is compared with: the server users would run instead.
pub const PEER: &str = "llama-server";
/// HEIE's engine with every speed-up off: the ablation.
pub const NO_SPEEDUPS: &str = "no-speedups";

/// One measured (path, in-flight) setting.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `heie`, `no-speedups`, `no-<speed-up>`, `llama-server`, `remote` (a running server) or
    /// `remote×N` (N replicas).
    pub path: String,
    /// Requests in flight at once (clients), and the server's sequence slots.
    pub in_flight: usize,
    /// Which round of `--rounds` measured it (1 = the first); ratios compare rows of one round.
    pub round: usize,
    pub requests: usize,
    pub wall_s: f64,
    pub images_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// Time to the first generated text, as the client saw it (sent to received, for both servers):
    /// upload, queue, image work and prefill included; server-written heading text does not count.
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    /// Gaps between consecutive pieces of streamed text of a running stream, over every request of
    /// the setting: how long a reader saw its stream stall while other requests' images arrived.
    pub gap_p95_ms: f64,
    pub gap_max_ms: f64,
    /// Mean text + image positions each request put into the context, and tokens it generated.
    pub prompt_tokens: f64,
    pub generated_per_request: f64,
    /// Generated tokens over wall time, all sequences together.
    pub generated_tokens_per_s: f64,
    /// Mean of each sequence's own decode rate (its tokens over the decode steps it took part in).
    pub sequence_decode_tokens_per_s: f64,
    pub image_encode_ms: f64,
    pub prefill_ms: f64,
    /// Image decoding, tiling, heads and heatmap rendering, as a share of end-to-end time.
    pub pre_post_share: f64,
    pub mean_decode_batch: Option<f64>,
    /// images/s over llama-server's at the same in-flight count (when both were measured).
    pub vs_llama_server: Option<f64>,
    /// images/s over the no-speedups path's at the same in-flight count (when both were measured).
    pub vs_no_speedups: Option<f64>,
}

impl BenchRow {
    /// Summarises the samples of one setting that took `wall` from first send to last answer.
    pub fn from_samples(path: &str, in_flight: usize, samples: &[Sample], wall: Duration) -> BenchRow {
        let wall = wall.as_secs_f64();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let mut ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft.as_ref()).map(ms).collect();
        let mut latency: Vec<f64> = samples.iter().map(|s| ms(&s.latency)).collect();
        let mut gaps: Vec<f64> = samples.iter().flat_map(|s| s.gaps.iter().map(ms)).collect();
        let generated: u64 = samples.iter().map(|s| u64::from(s.generated)).sum();
        let server = |f: fn(&ServerSide) -> f64| samples.iter().map(|s| f(&s.server)).collect::<Vec<f64>>();
        let pre_post: f64 = server(|t| t.pre_post_ms).iter().sum();
        let total: f64 = latency.iter().sum();
        let per_request = |f: fn(&Sample) -> u32| mean(&samples.iter().map(|s| f64::from(f(s))).collect::<Vec<_>>());
        BenchRow {
            path: path.to_string(),
            in_flight,
            round: 1,
            requests: samples.len(),
            wall_s: wall,
            images_per_s: samples.len() as f64 / wall,
            latency_p50_ms: percentile(&mut latency, 0.50),
            latency_p95_ms: percentile(&mut latency, 0.95),
            ttft_p50_ms: percentile(&mut ttft, 0.50),
            ttft_p95_ms: percentile(&mut ttft, 0.95),
            gap_p95_ms: percentile(&mut gaps, 0.95),
            gap_max_ms: gaps.iter().copied().fold(0.0, f64::max),
            prompt_tokens: per_request(|s| s.prompt_tokens),
            generated_per_request: per_request(|s| s.generated),
            generated_tokens_per_s: generated as f64 / wall,
            sequence_decode_tokens_per_s: mean(&server(|t| t.decode_tokens_per_s)),
            image_encode_ms: mean(&server(|t| t.image_encode_ms)),
            prefill_ms: mean(&server(|t| t.prefill_ms)),
            pre_post_share: if total > 0.0 { pre_post / total } else { 0.0 },
            mean_decode_batch: None,
            vs_llama_server: None,
            vs_no_speedups: None,
        }
    }
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

/// Each path's ratios over the rounds, per in-flight count: the median and the range, so a lead is
/// read with its spread (empty with one round).
pub fn spread(rows: &[BenchRow]) -> String {
    let mut out = String::new();
    if rows.iter().all(|r| r.round <= 1) {
        return out;
    }
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for r in rows {
        if seen.contains(&(r.path.as_str(), r.in_flight)) {
            continue;
        }
        seen.push((r.path.as_str(), r.in_flight));
        let same = || rows.iter().filter(|o| o.path == r.path && o.in_flight == r.in_flight);
        for (base, pick) in [(PEER, (|o: &BenchRow| o.vs_llama_server) as fn(&BenchRow) -> Option<f64>), (NO_SPEEDUPS, |o: &BenchRow| o.vs_no_speedups)] {
            let mut values: Vec<f64> = same().filter_map(pick).collect();
            if values.is_empty() || r.path == base {
                continue;
            }
            let median = percentile(&mut values, 0.5);
            let (low, high) = (values[0], values[values.len() - 1]);
            out.push_str(&format!(
                "{} ÷ {base} at {} in flight: {median:.2}x median, {low:.2}x to {high:.2}x over {} rounds\n",
                r.path,
                r.in_flight,
                values.len()
            ));
        }
    }
    out
}

/// images/s of each row over those of the `base` path's row with the same in-flight count and round.
fn ratios(rows: &[BenchRow], base: &str) -> Vec<Option<f64>> {
    rows.iter()
        .map(|r| {
            rows.iter()
                .find(|b| b.path == base && b.in_flight == r.in_flight && b.round == r.round && b.images_per_s > 0.0)
                .map(|b| r.images_per_s / b.images_per_s)
        })
        .collect()
}

/// Fills the ratio columns: against llama-server and against the no-speedups ablation.
pub fn compare(rows: &mut [BenchRow]) {
    let (peer, ablation) = (ratios(rows, PEER), ratios(rows, NO_SPEEDUPS));
    for ((r, p), a) in rows.iter_mut().zip(peer).zip(ablation) {
        r.vs_llama_server = p;
        r.vs_no_speedups = a;
    }
}

pub fn table(rows: &[BenchRow]) -> String {
    let ratio = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
    let mut out = format!(
        "{:<22} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7}\n",
        "path", "flight", "reqs", "images/s", "vs llama-", "vs no-", "lat p50", "lat p95", "TTFT p50", "TTFT p95",
        "gap p95", "gap max", "prompt", "gen", "gen tok/s", "encode", "prefill", "pre+pst", "batch", "wall s"
    );
    out.push_str(&format!(
        "{:<22} {:>6} {:>5} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7}\n",
        "", "", "", "", "server", "speedups", "ms", "ms", "ms", "ms", "ms", "ms", "tokens", "/req", "", "ms", "ms", "%", "", ""
    ));
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(1);
    for r in rows {
        let path = if rounds > 1 { format!("{} #{}", r.path, r.round) } else { r.path.clone() };
        out.push_str(&format!(
            "{:<22} {:>6} {:>5} {:>8.2} {:>9} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.0} {:>5.0} {:>9.1} {:>7.2} {:>7.1} {:>7.2} {:>6} {:>7.2}\n",
            path,
            r.in_flight,
            r.requests,
            r.images_per_s,
            ratio(r.vs_llama_server),
            ratio(r.vs_no_speedups),
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.ttft_p50_ms,
            r.ttft_p95_ms,
            r.gap_p95_ms,
            r.gap_max_ms,
            r.prompt_tokens,
            r.generated_per_request,
            r.generated_tokens_per_s,
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

    fn row(path: &str, in_flight: usize, images_per_s: f64) -> BenchRow {
        let samples = [Sample {
            ttft: None,
            latency: Duration::from_millis(10),
            generated: 1,
            prompt_tokens: 2,
            gaps: vec![Duration::from_millis(3), Duration::from_millis(7)],
            server: ServerSide::default(),
        }];
        BenchRow { images_per_s, ..BenchRow::from_samples(path, in_flight, &samples, Duration::from_secs(1)) }
    }

    #[test]
    fn rows_are_compared_with_the_peer_and_the_ablation_at_the_same_in_flight_count() {
        let mut rows =
            vec![row("heie", 1, 6.0), row(PEER, 1, 4.0), row(NO_SPEEDUPS, 1, 2.0), row("heie", 4, 9.0), row(PEER, 16, 1.0)];
        compare(&mut rows);
        assert_eq!((rows[0].vs_llama_server, rows[0].vs_no_speedups), (Some(1.5), Some(3.0)));
        assert_eq!(rows[1].vs_llama_server, Some(1.0));
        assert_eq!((rows[3].vs_llama_server, rows[3].vs_no_speedups), (None, None), "nothing measured at 4 to compare with");
        assert!((rows[0].gap_p95_ms - 7.0).abs() < 1e-9 && (rows[0].gap_max_ms - 7.0).abs() < 1e-9);
        assert!(table(&rows).contains("1.50x"));
    }

    #[test]
    fn rounds_are_compared_within_themselves_and_summarised_with_their_spread() {
        let in_round = |path: &str, images_per_s: f64, round: usize| BenchRow { round, ..row(path, 4, images_per_s) };
        let mut rows = vec![
            in_round("heie", 6.0, 1),
            in_round(PEER, 4.0, 1),
            in_round(PEER, 2.0, 2),
            in_round("heie", 5.0, 2),
            in_round("heie", 3.0, 3),
            in_round(PEER, 3.0, 3),
        ];
        compare(&mut rows);
        assert_eq!(rows[0].vs_llama_server, Some(1.5));
        assert_eq!(rows[3].vs_llama_server, Some(2.5), "round 2's heie over round 2's peer");
        let text = spread(&rows);
        assert!(text.contains("heie ÷ llama-server at 4 in flight: 1.50x median, 1.00x to 2.50x over 3 rounds"), "{text}");
        assert!(table(&rows).contains("heie #2"));
        assert_eq!(spread(&[row("heie", 1, 1.0)]), "", "one round has no spread to show");
    }

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
