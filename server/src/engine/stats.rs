//! Per-sequence timings and token counts, measured by the engine.

use std::time::{Duration, Instant};

/// What one sequence cost. Time in a shared batch is charged to every sequence in it, which is what a
/// client experiences.
#[derive(Debug, Clone, Default)]
pub struct SequenceStats {
    /// Vision tower time for the sequence's tiles.
    pub image_encode: Duration,
    /// llama_decode time while the sequence was appending text or image embeddings.
    pub prefill: Duration,
    /// The part of `prefill` spent on image embeddings (comparable to llama.cpp's image eval).
    pub image_prefill: Duration,
    /// llama_decode time while the sequence was generating.
    pub decode: Duration,
    /// Time spent in the admission queue before a slot was free.
    pub queued: Duration,
    pub prompt_tokens: u32,
    /// The part of `prompt_tokens` taken from the shared-prefix cache instead of being computed.
    pub cached_prompt_tokens: u32,
    pub image_tokens: u32,
    /// Tiles of the image, and how many of them came from the tile-feature cache.
    pub image_tiles: u32,
    pub image_tiles_cached: u32,
    pub generated_tokens: u32,
    /// When the first generated token was sampled, relative to admission.
    pub first_token: Option<Duration>,
    pub(crate) admitted_at: Option<Instant>,
}

impl SequenceStats {
    /// Every tile of the image came from the tile-feature cache (the image was judged before).
    pub fn image_cached(&self) -> bool {
        self.image_tiles > 0 && self.image_tiles_cached == self.image_tiles
    }

    /// Generated tokens per second of decode time.
    pub fn decode_tokens_per_s(&self) -> f64 {
        let secs = self.decode.as_secs_f64();
        if secs > 0.0 {
            self.generated_tokens as f64 / secs
        } else {
            0.0
        }
    }
}
