//! Counters the engine thread updates and the service exports (Prometheus) or the bench reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::image_cache::Evicted;
use super::program::SequenceEnd;

/// Lock-free engine counters, shared between the engine thread and readers.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    pub queue_depth: AtomicUsize,
    pub active: AtomicUsize,
    pub decode_steps: AtomicU64,
    pub decode_rows: AtomicU64,
    /// Sum of sequences per decode step (mean batch size = this / decode_steps).
    pub decode_sequences: AtomicU64,
    /// Decode steps that carried more than one sequence: the evidence continuous batching works.
    pub multi_sequence_steps: AtomicU64,
    pub max_sequences_in_step: AtomicUsize,
    pub image_encodes: AtomicU64,
    /// Sequences that started from the cached shared prefix instead of computing it.
    pub prefix_cache_hits: AtomicU64,
    pub image_encode_micros: AtomicU64,
    /// Tiles whose features came from the tile-feature cache, tiles that had to be encoded, and
    /// tiles the cache dropped to stay in its budget (`--image-cache-mb`); its current size.
    pub image_cache_hits: AtomicU64,
    pub image_cache_misses: AtomicU64,
    pub image_cache_evictions: AtomicU64,
    pub image_cache_bytes: AtomicU64,
    /// Images whose whole prefill (vision tower and KV cells) came from the image cache, images after
    /// the shared prefix it did not hold, and images it dropped to stay in its budget.
    pub image_cache_image_hits: AtomicU64,
    pub image_cache_image_misses: AtomicU64,
    pub image_cache_image_evictions: AtomicU64,
    /// Sequences whose whole prompt up to the first generated token (prefix, image, instruction, the
    /// answer's opening) came from the image cache: the first token sampled from saved logits.
    pub image_cache_prompt_hits: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
}

impl EngineMetrics {
    pub(crate) fn record_decode(&self, rows: usize, sequences: usize) {
        self.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.decode_rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.decode_sequences.fetch_add(sequences as u64, Ordering::Relaxed);
        if sequences > 1 {
            self.multi_sequence_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.max_sequences_in_step.fetch_max(sequences, Ordering::Relaxed);
    }

    pub(crate) fn record_image_encode(&self, took: Duration) {
        self.image_encodes.fetch_add(1, Ordering::Relaxed);
        self.image_encode_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// What an insert into the image cache did: the entries it pushed out and the bytes it now holds.
    pub(crate) fn record_image_cache_insert(&self, evicted: Evicted, used_bytes: usize) {
        self.image_cache_evictions.fetch_add(evicted.tiles, Ordering::Relaxed);
        self.image_cache_image_evictions.fetch_add(evicted.states, Ordering::Relaxed);
        self.image_cache_bytes.store(used_bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_end(&self, end: &SequenceEnd) {
        let counter = match end {
            SequenceEnd::Completed => &self.completed,
            // A refused sequence never ran; it counts with those that were stopped early.
            SequenceEnd::Cancelled | SequenceEnd::Refused => &self.cancelled,
            SequenceEnd::Failed(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
