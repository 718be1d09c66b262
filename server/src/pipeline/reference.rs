//! A reference chain of thought for teacher forcing: HEIE trains its heads with the ground-truth
//! explanation in context, so extraction can feed the dataset's text instead of generating one, and the
//! `[MAP]`/`[SCORE]` hidden states then follow the same words the paper's model saw.

use crate::engine::{Model, Token};

use super::explanation::{parse_explanation, ExplanationError, MAP_MARKER, SCORE_MARKER};

/// Largest reference accepted, in bytes. Expl-AIGI-Eval's answers are under 2 KB; the cap keeps a
/// stray file from filling the sequence's context (the text is fed, never truncated).
pub const MAX_REFERENCE_BYTES: usize = 8192;

/// Why a text cannot be fed as a reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("{0} bytes, more than the {MAX_REFERENCE_BYTES} accepted")]
    TooLong(usize),
    #[error(transparent)]
    Format(#[from] ExplanationError),
    /// The markers show the text is a HEIE chain of thought whose sections end where the engine's
    /// marker sentences go; without them the bodies would run into the forced sentences.
    #[error("no {0} marker")]
    MissingMarker(&'static str),
    #[error("chat control text {0:?} inside")]
    ChatControl(&'static str),
}

/// The model-written bodies of a reference explanation (no headings, marker sentences or markers):
/// what replaces each generated section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceCot {
    pub description: String,
    pub regions: String,
    pub analysis: String,
}

/// Text that would end or restart the chat turn: the bodies are tokenised with special tokens parsed
/// (so `<ref>`/`<box>` become the tokens InternVL writes), which would let a reference inject turns.
const CHAT_CONTROL: &[&str] = &["<|im_start|>", "<|im_end|>", "<|endoftext|>"];

impl ReferenceCot {
    /// Parses a chain of thought in the Expl-AIGI-Eval layout (headings, `[MAP]`, `[SCORE]`).
    pub fn parse(text: &str) -> Result<ReferenceCot, ReferenceError> {
        if text.len() > MAX_REFERENCE_BYTES {
            return Err(ReferenceError::TooLong(text.len()));
        }
        let parsed = parse_explanation(text)?;
        if parsed.n_map_markers == 0 {
            return Err(ReferenceError::MissingMarker(MAP_MARKER));
        }
        if parsed.n_score_markers == 0 {
            return Err(ReferenceError::MissingMarker(SCORE_MARKER));
        }
        if let Some(control) = CHAT_CONTROL.iter().find(|c| text.contains(*c)) {
            return Err(ReferenceError::ChatControl(control));
        }
        Ok(ReferenceCot { description: parsed.description, regions: parsed.regions, analysis: parsed.analysis })
    }

    /// Tokenises each body with the model that will read it.
    pub fn tokenize(&self, model: &Model) -> ReferenceTokens {
        let section = |text: &str| ReferenceSection { text: text.to_string(), tokens: model.tokenize(text, true) };
        ReferenceTokens {
            description: section(&self.description),
            regions: section(&self.regions),
            analysis: section(&self.analysis),
        }
    }
}

/// One body: the text shown to clients and the tokens fed in its place.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceSection {
    pub text: String,
    pub tokens: Vec<Token>,
}

/// A reference tokenised for one model, handed to the chain-of-thought program.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceTokens {
    pub description: ReferenceSection,
    pub regions: ReferenceSection,
    pub analysis: ReferenceSection,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::explanation::render_explanation;

    #[test]
    fn parses_the_bodies_and_rejects_what_cannot_be_fed() {
        let text = render_explanation("A cat.", "<ref>paw</ref><box>[[1,2,3,4]]</box>", 1, "- Paw: six toes.");
        let r = ReferenceCot::parse(&text).unwrap();
        assert_eq!((r.description.as_str(), r.analysis.as_str()), ("A cat.", "- Paw: six toes."));
        assert_eq!(r.regions, "<ref>paw</ref><box>[[1,2,3,4]]</box>");

        let no_score = text.replace("[SCORE]", "");
        assert_eq!(ReferenceCot::parse(&no_score), Err(ReferenceError::MissingMarker(SCORE_MARKER)));
        let no_map = text.replace("[MAP]", "");
        assert_eq!(ReferenceCot::parse(&no_map), Err(ReferenceError::MissingMarker(MAP_MARKER)));
        let long = render_explanation(&"x".repeat(MAX_REFERENCE_BYTES), "r", 1, "a");
        assert!(matches!(ReferenceCot::parse(&long), Err(ReferenceError::TooLong(_))));
        let injected = text.replace("A cat.", "A cat.<|im_end|>");
        assert_eq!(ReferenceCot::parse(&injected), Err(ReferenceError::ChatControl("<|im_end|>")));
        let e = ReferenceCot::parse("### Image Description\nd").unwrap_err();
        assert!(e.to_string().contains("Problematic Regions Identification"), "{e}");
    }
}
