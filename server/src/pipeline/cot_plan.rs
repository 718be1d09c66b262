//! The plan of one evaluation's chain of thought, before it runs: the items in order (prompt, tiles,
//! sections generated or fed, the `[MAP]`/`[SCORE]` markers, the rating turn), and the worst-case
//! context they can take. `cot_program.rs` runs the plan on the engine; the request's preparation
//! sizes it against `--ctx-size` before any pixel is decoded.

use crate::engine::Token;

use super::explanation::Section;
use super::options::{EvalOptions, SHORT_ANALYSIS_TOKENS};
use super::prompt;
use super::prompt_tokens::PromptTokens;
use super::reference::ReferenceTokens;

/// One item of the program's plan.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// The system prompt up to `<img>`: the same for every request, so the engine may reuse it.
    SharedPrefix(Vec<Token>),
    /// Forced text, shown as part of `section` (None = hidden chat scaffolding).
    Text { tokens: Vec<Token>, shown: Option<(Section, String)> },
    /// Every tile, then the thumbnail.
    Tiles,
    /// The model writes a section.
    Generate { section: Section, max_tokens: u32, stops: &'static [&'static str] },
    /// The marker sentence and one `[MAP]` per tile plus one global, captured.
    MapMarkers,
    /// The score sentence and `[SCORE]`, captured.
    ScoreMarker,
    /// Native mode: the model writes the whole answer, markers captured when sampled.
    NativeAnswer { max_tokens: u32 },
    /// Native mode: markers the model did not write are added so the heads always get their inputs.
    CompleteNativeMarkers,
    /// The rating question; the next token's logits over the five level words give the score.
    Rating,
}

/// What a captured hidden state belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Marker {
    Map,
    Score,
}

pub(super) const DESCRIPTION_STOPS: &[&str] = &["\n\n", "###"];
pub(super) const REGIONS_STOPS: &[&str] = &["\n\n", "###", "So, the potential"];
pub(super) const ANALYSIS_STOPS: &[&str] = &["###", "Based on the overall"];

/// The items of one evaluation, in order. `trained`: trained heads give the primary score (else the
/// rating turn does); `reference`: the sections to feed instead of generating them.
pub(super) fn plan(
    tokens: &PromptTokens,
    trained: bool,
    after_image: Vec<Token>,
    options: &EvalOptions,
    reference: Option<&ReferenceTokens>,
) -> Vec<Item> {
    let cap = options.max_tokens_per_section;
    // What the primary score needs, when only the score is wanted (extraction needs everything).
    let score_only = options.score_only && !options.emit_captures;
    let explanation = options.explanation && !score_only;
    let markers = !score_only || trained;
    let rating = !score_only || !trained;
    let shown = |s: Section, text: String| Some((s, text));
    let text = |tokens: &[Token], s: Option<(Section, String)>| Item::Text { tokens: tokens.to_vec(), shown: s };
    let mut plan = vec![
        Item::SharedPrefix(tokens.before_image.clone()),
        Item::Tiles,
        Item::Text { tokens: after_image, shown: None },
    ];
    // Teacher forcing feeds the reference where the model would write, in native mode too: the
    // forced plan writes the markers with the vocabulary's own [MAP]/[SCORE] tokens there.
    if tokens.native && reference.is_none() {
        let answer_cap = if explanation { cap.saturating_mul(3) } else { cap.min(SHORT_ANALYSIS_TOKENS) };
        plan.push(Item::NativeAnswer { max_tokens: answer_cap });
        if markers {
            plan.push(Item::CompleteNativeMarkers);
        }
    } else {
        // A reference is fed whole whatever `explanation` says: it costs prefill only, and the
        // markers' states should follow the text the heads are trained with.
        let explanation = explanation || (reference.is_some() && !score_only);
        let body = |section: Section, max_tokens: u32, stops: &'static [&'static str]| {
            let fed = reference.map(|r| match section {
                Section::Description => &r.description,
                Section::Regions => &r.regions,
                _ => &r.analysis,
            });
            match fed {
                Some(r) if r.tokens.is_empty() => None,
                Some(r) => Some(Item::Text { tokens: r.tokens.clone(), shown: shown(section, r.text.clone()) }),
                None => Some(Item::Generate { section, max_tokens, stops }),
            }
        };
        plan.push(text(&tokens.opening, shown(Section::Description, prompt::opening())));
        if explanation {
            plan.extend(body(Section::Description, cap, DESCRIPTION_STOPS));
        }
        if markers {
            plan.push(text(&tokens.regions_heading, shown(Section::Regions, prompt::regions_heading())));
            if explanation {
                plan.extend(body(Section::Regions, cap, REGIONS_STOPS));
            }
            plan.push(Item::MapMarkers);
        }
        plan.push(text(&tokens.analysis_heading, shown(Section::Analysis, prompt::analysis_heading())));
        let analysis_cap = if explanation { cap } else { cap.min(SHORT_ANALYSIS_TOKENS) };
        plan.extend(body(Section::Analysis, analysis_cap, ANALYSIS_STOPS));
        if markers {
            plan.push(Item::ScoreMarker);
        }
    }
    if rating {
        plan.push(Item::Rating);
    }
    plan
}

/// The most KV cells one evaluation can take, by kind: what [`context_budget`] adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextBudget {
    /// Fixed chat text, headings, marker sentences and markers, the rating turn.
    pub fixed_text: usize,
    /// The client's generation prompt (as tokenised).
    pub user_text: usize,
    /// Tiles and thumbnail × tokens per tile.
    pub image: usize,
    /// Every generated section at its token cap.
    pub generated: usize,
}

impl ContextBudget {
    pub fn total(&self) -> usize {
        self.fixed_text + self.user_text + self.image + self.generated
    }
}

/// The worst-case context an evaluation with these options needs: every item of its plan at its
/// largest (each generation runs to its cap, native markers all added), for `n_views` tiles
/// including the thumbnail. `after_image` is the chat text after the image, of which `user_tokens`
/// are the client's prompt.
#[allow(clippy::too_many_arguments)]
pub fn context_budget(
    tokens: &PromptTokens,
    trained: bool,
    after_image: Vec<Token>,
    user_tokens: usize,
    options: &EvalOptions,
    reference: Option<&ReferenceTokens>,
    n_views: usize,
    tokens_per_tile: usize,
) -> ContextBudget {
    let mut budget = ContextBudget { user_text: user_tokens, ..Default::default() };
    let score = tokens.score_sentence.len() + tokens.score_marker.len() + tokens.period.len();
    for item in plan(tokens, trained, after_image, options, reference) {
        match item {
            Item::SharedPrefix(t) | Item::Text { tokens: t, .. } => budget.fixed_text += t.len(),
            Item::Tiles => budget.image += n_views * tokens_per_tile,
            Item::Generate { max_tokens, .. } | Item::NativeAnswer { max_tokens } => budget.generated += max_tokens as usize,
            Item::MapMarkers => budget.fixed_text += tokens.map_sentence.len() + n_views * tokens.map_marker.len(),
            Item::ScoreMarker => budget.fixed_text += score,
            Item::CompleteNativeMarkers => budget.fixed_text += n_views * tokens.map_marker.len() + score,
            Item::Rating => budget.fixed_text += tokens.rating_turn.len(),
        }
    }
    budget.fixed_text = budget.fixed_text.saturating_sub(user_tokens);
    budget
}

