//! Prometheus metrics: what the core counts, plus the engine's counters, in the text exposition
//! format (served on `GET /metrics` of `--metrics-addr` by `server/metrics_endpoint.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::EngineMetrics;
use crate::pipeline::events::{Timings, TokenCounts};

/// A cumulative histogram with fixed bucket bounds (Prometheus semantics: each bucket counts
/// observations ≤ its bound).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum of observations, in micro-units so it can be an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if value <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const TOKENS_PER_SECOND: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];

/// What the service itself measures.
#[derive(Debug)]
pub struct ServiceMetrics {
    /// (method, gRPC code name) → finished requests.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    time_to_first_token: Histogram,
    request_duration: Histogram,
    decode_tokens_per_second: Histogram,
    generated_tokens: AtomicU64,
    decode_micros: AtomicU64,
    images: AtomicU64,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        ServiceMetrics {
            requests: Mutex::new(BTreeMap::new()),
            time_to_first_token: Histogram::new(SECONDS),
            request_duration: Histogram::new(SECONDS),
            decode_tokens_per_second: Histogram::new(TOKENS_PER_SECOND),
            generated_tokens: AtomicU64::new(0),
            decode_micros: AtomicU64::new(0),
            images: AtomicU64::new(0),
        }
    }
}

impl ServiceMetrics {
    /// Counts one finished RPC by method and outcome.
    pub fn record_request(&self, method: &'static str, code: super::Code) {
        let code = code.name();
        // A poisoned lock only means another thread panicked mid-increment; the map is still valid.
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((method, code)).or_default() += 1;
    }

    /// Records the timings of one image's finished evaluation.
    pub fn record_evaluation(&self, timings: &Timings, tokens: &TokenCounts) {
        self.images.fetch_add(1, Ordering::Relaxed);
        if timings.time_to_first_token_ms > 0.0 {
            self.time_to_first_token.observe(timings.time_to_first_token_ms / 1000.0);
        }
        self.request_duration.observe((timings.total_ms + timings.queued_ms) / 1000.0);
        if timings.decode_tokens_per_s > 0.0 {
            self.decode_tokens_per_second.observe(timings.decode_tokens_per_s);
        }
        self.generated_tokens.fetch_add(u64::from(tokens.generated), Ordering::Relaxed);
        self.decode_micros.fetch_add((timings.decode_ms * 1000.0) as u64, Ordering::Relaxed);
    }

    /// The whole exposition: service metrics, then the engine's when the model is loaded.
    pub fn render(&self, engine: Option<&EngineMetrics>, ready: bool) -> String {
        let mut out = String::new();
        let line = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        line(&mut out, "heie_ready", "gauge", "1 once the model is loaded and warmed up.", u8::from(ready).to_string());
        let _ = writeln!(out, "# HELP heie_requests_total Finished RPCs by method and gRPC status code.");
        let _ = writeln!(out, "# TYPE heie_requests_total counter");
        for ((method, code), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "heie_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}");
        }
        line(&mut out, "heie_images_evaluated_total", "counter", "Images whose evaluation finished.", self.images.load(Ordering::Relaxed).to_string());
        self.time_to_first_token.render(&mut out, "heie_time_to_first_token_seconds", "From arrival (queueing and image decoding included) to the first token the model sampled.");
        self.request_duration.render(&mut out, "heie_evaluation_duration_seconds", "From admission to Done, queueing included.");
        self.decode_tokens_per_second.render(&mut out, "heie_decode_tokens_per_second", "Generation speed of each evaluation.");
        line(&mut out, "heie_generated_tokens_total", "counter", "Tokens generated.", self.generated_tokens.load(Ordering::Relaxed).to_string());
        line(
            &mut out,
            "heie_decode_seconds_total",
            "counter",
            "Wall time of generation summed over evaluations (tokens/s = rate(generated) / rate(this)).",
            (self.decode_micros.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
        );
        if let Some(e) = engine {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            line(&mut out, "heie_queue_depth", "gauge", "Requests waiting for a slot.", e.queue_depth.load(Ordering::Relaxed).to_string());
            line(&mut out, "heie_active_sequences", "gauge", "Sequences holding a slot.", e.active.load(Ordering::Relaxed).to_string());
            line(&mut out, "heie_decode_steps_total", "counter", "llama_decode calls of the generation loop.", get(&e.decode_steps).to_string());
            line(&mut out, "heie_decode_rows_total", "counter", "Tokens fed through those decode calls.", get(&e.decode_rows).to_string());
            line(
                &mut out,
                "heie_decode_sequences_total",
                "counter",
                "Sequences summed over decode steps (mean batch size = this / heie_decode_steps_total).",
                get(&e.decode_sequences).to_string(),
            );
            line(
                &mut out,
                "heie_multi_sequence_decode_steps_total",
                "counter",
                "Decode steps that carried more than one sequence (continuous batching at work).",
                get(&e.multi_sequence_steps).to_string(),
            );
            line(&mut out, "heie_max_sequences_in_step", "gauge", "Largest decode batch so far, in sequences.", e.max_sequences_in_step.load(Ordering::Relaxed).to_string());
            line(&mut out, "heie_image_encodes_total", "counter", "Tiles run through the vision tower.", get(&e.image_encodes).to_string());
            line(
                &mut out,
                "heie_prefix_cache_hits_total",
                "counter",
                "Sequences that started from the cached system prompt instead of computing it.",
                get(&e.prefix_cache_hits).to_string(),
            );
            line(&mut out, "heie_image_cache_hits_total", "counter", "Tiles whose features came from the image cache (not encoded again).", get(&e.image_cache_hits).to_string());
            line(&mut out, "heie_image_cache_misses_total", "counter", "Tiles the image cache did not hold (encoded).", get(&e.image_cache_misses).to_string());
            line(&mut out, "heie_image_cache_evictions_total", "counter", "Tiles dropped from the image cache to stay within --image-cache-mb.", get(&e.image_cache_evictions).to_string());
            line(&mut out, "heie_image_cache_image_hits_total", "counter", "Images judged again whose whole prefill (vision tower and KV cells) came from the image cache.", get(&e.image_cache_image_hits).to_string());
            line(&mut out, "heie_image_cache_image_misses_total", "counter", "Images after the shared prompt that the image cache did not hold (computed, then kept).", get(&e.image_cache_image_misses).to_string());
            line(&mut out, "heie_image_cache_prompt_hits_total", "counter", "Images judged again with the same prompt: everything up to the first generated token came from the image cache.", get(&e.image_cache_prompt_hits).to_string());
            line(&mut out, "heie_image_cache_image_evictions_total", "counter", "Saved sequences (at the end of an image, or at its first generated token) dropped from the image cache to stay within --image-cache-mb.", get(&e.image_cache_image_evictions).to_string());
            line(&mut out, "heie_image_cache_bytes", "gauge", "Bytes the image cache holds (images' KV cells and tile features).", get(&e.image_cache_bytes).to_string());
            line(
                &mut out,
                "heie_image_encode_seconds_total",
                "counter",
                "Time spent in the vision tower.",
                (get(&e.image_encode_micros) as f64 / 1e6).to_string(),
            );
            let _ = writeln!(out, "# HELP heie_sequences_total Engine sequences by how they ended.\n# TYPE heie_sequences_total counter");
            for (outcome, counter) in [("completed", &e.completed), ("cancelled", &e.cancelled), ("failed", &e.failed)] {
                let _ = writeln!(out, "heie_sequences_total{{outcome=\"{outcome}\"}} {}", get(counter));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_requests_are_labelled() {
        let m = ServiceMetrics::default();
        m.record_request("Evaluate", super::super::Code::Ok);
        m.record_request("Evaluate", super::super::Code::Ok);
        m.record_request("Rerank", super::super::Code::ResourceExhausted);
        let timings = Timings { time_to_first_token_ms: 30.0, total_ms: 200.0, decode_tokens_per_s: 40.0, decode_ms: 100.0, ..Default::default() };
        m.record_evaluation(&timings, &TokenCounts { prompt: 1, image: 2, generated: 4 });
        let engine = EngineMetrics::default();
        engine.multi_sequence_steps.store(7, Ordering::Relaxed);
        engine.prefix_cache_hits.store(3, Ordering::Relaxed);
        engine.image_cache_hits.store(5, Ordering::Relaxed);
        engine.image_cache_image_hits.store(2, Ordering::Relaxed);
        let text = m.render(Some(&engine), true);
        assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 2"), "{text}");
        assert!(text.contains("heie_requests_total{method=\"Rerank\",code=\"RESOURCE_EXHAUSTED\"} 1"));
        assert!(text.contains("heie_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("heie_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("heie_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("heie_generated_tokens_total 4"));
        assert!(text.contains("heie_multi_sequence_decode_steps_total 7"));
        assert!(text.contains("heie_prefix_cache_hits_total 3"));
        assert!(text.contains("heie_image_cache_hits_total 5"));
        assert!(text.contains("heie_image_cache_image_hits_total 2"));
        assert!(text.contains("heie_ready 1"));
    }
}
