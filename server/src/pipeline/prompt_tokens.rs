//! The fixed texts of the chain of thought, tokenised once per model instead of once per request.

use crate::engine::{EngineError, Model, Token};

use super::explanation::{MAP_MARKER, SCORE_MARKER};
use super::prompt;
use super::rating::LEVELS;

/// Token ids of every fixed text the program feeds, for one model.
#[derive(Debug, Clone)]
pub struct PromptTokens {
    pub before_image: Vec<Token>,
    pub opening: Vec<Token>,
    pub regions_heading: Vec<Token>,
    pub map_sentence: Vec<Token>,
    pub analysis_heading: Vec<Token>,
    pub score_sentence: Vec<Token>,
    pub period: Vec<Token>,
    pub rating_turn: Vec<Token>,
    /// One marker's tokens: the single special token in native mode, its spelling otherwise.
    pub map_marker: Vec<Token>,
    pub score_marker: Vec<Token>,
    /// The first token of " excellent", " good", " fair", " poor", " bad".
    pub level_tokens: [Token; 5],
    pub native: bool,
}

impl PromptTokens {
    pub fn new(model: &Model, native_markers: Option<(Token, Token)>) -> Result<PromptTokens, EngineError> {
        let t = |s: &str| model.tokenize(s, true);
        let mut level_tokens = [0; 5];
        for (slot, (word, _)) in level_tokens.iter_mut().zip(LEVELS.iter()) {
            *slot = *model
                .tokenize(&format!(" {word}"), false)
                .first()
                .ok_or_else(|| EngineError::Load(format!("the vocabulary cannot spell the rating word {word:?}")))?;
        }
        let mut distinct = level_tokens.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != 5 {
            return Err(EngineError::Load(
                "the rating words do not start with five distinct tokens in this vocabulary".into(),
            ));
        }
        let (map_marker, score_marker) = match native_markers {
            Some((map, score)) => (vec![map], vec![score]),
            // Spelled out, not parsed as specials: a stock vocabulary has no such tokens.
            None => (model.tokenize(MAP_MARKER, false), model.tokenize(SCORE_MARKER, false)),
        };
        Ok(PromptTokens {
            before_image: t(&prompt::before_image()),
            opening: t(&prompt::opening()),
            regions_heading: t(&prompt::regions_heading()),
            map_sentence: t(&prompt::map_sentence()),
            analysis_heading: t(&prompt::analysis_heading()),
            score_sentence: t(&prompt::score_sentence()),
            period: t("."),
            rating_turn: t(&prompt::rating_turn()),
            map_marker,
            score_marker,
            level_tokens,
            native: native_markers.is_some(),
        })
    }
}

/// The tokens of the chat text after the image, and how many of them are the client's prompt. The
/// template is tokenised with special tokens parsed; the prompt with parsing off, so that
/// `<|im_end|>`, `<|im_start|>` or `[SCORE]` written in it stay text and cannot end the turn or
/// pose as a marker.
pub fn after_image_tokens(model: &Model, generation_prompt: Option<&str>, native: bool) -> (Vec<Token>, usize) {
    let (head, user, tail) = prompt::after_image(generation_prompt, native);
    let mut tokens = model.tokenize(&head, true);
    let user = user.map(|u| literal_tokens(model, &u)).unwrap_or_default();
    let n_user = user.len();
    tokens.extend(user);
    tokens.extend(model.tokenize(&tail, true));
    (tokens, n_user)
}

/// Client text as plain text. Special-token parsing off keeps control tokens (`<|im_end|>`) out, but
/// llama.cpp still matches user-defined tokens (a fine-tuned vocabulary's `[MAP]`, `[SCORE]`) in
/// the text; each such match is re-tokenised in two pieces, split after its first character, so
/// the same bytes reach the model as ordinary tokens.
fn literal_tokens(model: &Model, text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for token in model.tokenize(text, false) {
        if !model.is_special(token) {
            out.push(token);
            continue;
        }
        let spelled = String::from_utf8_lossy(&model.token_bytes(token)).into_owned();
        let split = spelled.char_indices().nth(1).map(|(i, _)| i).unwrap_or(spelled.len());
        for piece in [&spelled[..split], &spelled[split..]] {
            out.extend(model.tokenize(piece, false).into_iter().filter(|t| !model.is_special(*t)));
        }
    }
    out
}
