//! Validated evaluation options. Built once at the edge (CLI flags, gRPC request); inner code trusts them.

pub use crate::engine::Sampling;

use super::reference::ReferenceCot;

/// Largest per-section token cap a request may ask for.
pub const MAX_TOKENS_PER_SECTION: u32 = 2048;
/// Largest heatmap side a request may ask for.
pub const MAX_HEATMAP_SIDE: u32 = 8192;
/// Largest client prompt (`generation_prompt`), in UTF-8 bytes.
pub const MAX_GENERATION_PROMPT_BYTES: usize = 4096;
/// Most tiles an image may be cut into (InternVL's `max_num` is trained up to 40; more would not fit
/// any context a server is given).
pub const MAX_TILES: u32 = 40;
/// Largest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 5.0;
/// Tokens for the analysis when the long explanation is skipped (rerank fast path).
pub const SHORT_ANALYSIS_TOKENS: u32 = 48;

#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Generate the description and regions sections; when false, only a short analysis and the score.
    pub explanation: bool,
    pub max_tokens_per_section: u32,
    /// Heatmap size; `None` = the image's size.
    pub heatmap_size: Option<(u32, u32)>,
    pub sampling: Sampling,
    /// Upper bound on tiles (InternVL's max_num).
    pub max_tiles: u32,
    /// Optional text-to-image prompt, given to the judge as context.
    pub generation_prompt: Option<String>,
    /// Emit [`super::EvalEvent::Captures`] with the tile features and marker hidden states (for
    /// feature extraction and tests; they are large).
    pub emit_captures: bool,
    /// Only the primary score is wanted (Rerank's fast path): implies no long explanation, and the
    /// steps that cannot change the primary score are skipped — the rating turn when trained heads
    /// give the score, the `[MAP]`/`[SCORE]` markers when the rating turn does.
    pub score_only: bool,
    /// Teacher forcing: the reference chain of thought is fed in place of every generated section
    /// (parsed, so it is known to fit the format); the markers and the rating are as usual.
    pub reference: Option<ReferenceCot>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            explanation: true,
            max_tokens_per_section: 192,
            heatmap_size: None,
            sampling: Sampling::default(),
            max_tiles: 6,
            generation_prompt: None,
            emit_captures: false,
            score_only: false,
            reference: None,
        }
    }
}

/// An option outside its range, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct OptionError {
    pub field: &'static str,
    pub reason: String,
}

impl EvalOptions {
    /// Checks ranges; the only place options are validated.
    pub fn validated(self) -> Result<EvalOptions, OptionError> {
        let bad = |field, reason: String| Err(OptionError { field, reason });
        if self.max_tokens_per_section == 0 || self.max_tokens_per_section > MAX_TOKENS_PER_SECTION {
            return bad("max_tokens_per_section", format!("must be 1..={MAX_TOKENS_PER_SECTION}, got {}", self.max_tokens_per_section));
        }
        if !(0.0..=MAX_TEMPERATURE).contains(&self.sampling.temperature) || self.sampling.temperature.is_nan() {
            return bad("temperature", format!("must be in [0, {MAX_TEMPERATURE}], got {}", self.sampling.temperature));
        }
        if self.max_tiles == 0 || self.max_tiles > MAX_TILES {
            return bad("max_tiles", format!("must be 1..={MAX_TILES}, got {}", self.max_tiles));
        }
        if let Some((w, h)) = self.heatmap_size {
            if w == 0 || h == 0 || w > MAX_HEATMAP_SIDE || h > MAX_HEATMAP_SIDE {
                return bad("heatmap_size", format!("each side must be 1..={MAX_HEATMAP_SIDE}, got {w}×{h}"));
            }
        }
        if let Some(p) = &self.generation_prompt {
            if p.len() > MAX_GENERATION_PROMPT_BYTES {
                return bad("generation_prompt", format!("at most {MAX_GENERATION_PROMPT_BYTES} bytes, got {}", p.len()));
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_values_name_their_field() {
        assert!(EvalOptions::default().validated().is_ok());
        let e = EvalOptions { max_tokens_per_section: 0, ..Default::default() }.validated().unwrap_err();
        assert_eq!(e.field, "max_tokens_per_section");
        let e = EvalOptions { sampling: Sampling { temperature: f32::NAN, seed: 0 }, ..Default::default() }
            .validated()
            .unwrap_err();
        assert_eq!(e.field, "temperature");
        let e = EvalOptions { heatmap_size: Some((0, 10)), ..Default::default() }.validated().unwrap_err();
        assert_eq!(e.field, "heatmap_size");
        let e = EvalOptions { max_tiles: 41, ..Default::default() }.validated().unwrap_err();
        assert_eq!(e.field, "max_tiles");
    }
}
