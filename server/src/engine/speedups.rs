//! The engine's throughput optimisations, each of which can be switched off so `heie bench` can measure
//! it against the naive way of driving llama.cpp in the same run. None of them changes what a sequence
//! computes, only how many llama.cpp calls it takes.

/// Which optimisations the decode loop uses. `Default` = all on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeedUps {
    /// Forced text (prompt, headings, marker sentences, the rating question) goes through llama.cpp in
    /// `n_batch` chunks; off, one token per decode, as a naive generate-style loop would.
    pub batched_text: bool,
    /// The prompt prefix every request shares (system prompt up to `<img>`) is computed once and its
    /// KV cells shared with each new sequence; off, every sequence prefills it.
    pub prefix_cache: bool,
    /// All tiles of an image go through the vision tower in one batched encode; off, one encode per tile.
    pub batched_vision: bool,
    /// Image embeddings of all tiles are decoded in `n_batch` chunks across tile boundaries; off, one
    /// decode per tile (llama.cpp's helper decodes per image chunk).
    pub batched_image_prefill: bool,
    /// One KV stream per sequence, so a token attends over its own sequence's cells only; off, one
    /// unified cache whose attention spans every sequence in flight (llama.cpp's `kv_unified`).
    pub per_sequence_kv: bool,
}

impl Default for SpeedUps {
    fn default() -> Self {
        SpeedUps::ALL
    }
}

impl SpeedUps {
    pub const ALL: SpeedUps = SpeedUps {
        batched_text: true,
        prefix_cache: true,
        batched_vision: true,
        batched_image_prefill: true,
        per_sequence_kv: true,
    };
    pub const NONE: SpeedUps = SpeedUps {
        batched_text: false,
        prefix_cache: false,
        batched_vision: false,
        batched_image_prefill: false,
        per_sequence_kv: false,
    };

    /// The names accepted by [`SpeedUps::without`], as used on the command line.
    pub const NAMES: [&'static str; 5] =
        ["batched-text", "prefix-cache", "batched-vision", "batched-image-prefill", "per-sequence-kv"];

    fn flags(&self) -> [bool; 5] {
        [self.batched_text, self.prefix_cache, self.batched_vision, self.batched_image_prefill, self.per_sequence_kv]
    }

    /// The names of the optimisations that are off, in [`SpeedUps::NAMES`] order.
    pub fn disabled_names(&self) -> Vec<&'static str> {
        let on = self.flags();
        Self::NAMES.iter().zip(on).filter(|(_, on)| !on).map(|(n, _)| *n).collect()
    }

    /// A copy with the named optimisation switched off.
    pub fn without(mut self, name: &str) -> Result<SpeedUps, String> {
        match name {
            "batched-text" => self.batched_text = false,
            "prefix-cache" => self.prefix_cache = false,
            "batched-vision" => self.batched_vision = false,
            "batched-image-prefill" => self.batched_image_prefill = false,
            "per-sequence-kv" => self.per_sequence_kv = false,
            other => return Err(format!("unknown speed-up {other:?} (known: {})", Self::NAMES.join(", "))),
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::SpeedUps;

    #[test]
    fn every_name_switches_exactly_one_optimisation_off() {
        for name in SpeedUps::NAMES {
            let s = SpeedUps::ALL.without(name).unwrap();
            let on = s.flags();
            assert_eq!(on.iter().filter(|b| !**b).count(), 1, "{name}");
        }
        assert_eq!(SpeedUps::NONE.disabled_names(), SpeedUps::NAMES.to_vec());
        assert!(SpeedUps::ALL.disabled_names().is_empty());
        assert!(SpeedUps::ALL.without("warp-drive").unwrap_err().contains("prefix-cache"));
    }
}
