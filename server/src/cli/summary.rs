//! One-line, human-readable summaries of a judgement: the line `heie eval` prints after each image and
//! the `summary` stored in image metadata. Written for people, never Rust debug formatting.

use crate::pipeline::events::{FinishReason, OutputMode};
use crate::pipeline::EvalResult;

use super::metadata::{ScoreMode, ScoreRecord};

/// Longest summary stored in metadata, in characters (a browser column, not an essay).
pub const MAX_SUMMARY_CHARS: usize = 200;

/// `zero-shot` or `trained`.
pub fn mode_name(mode: OutputMode) -> &'static str {
    match mode {
        OutputMode::ZeroShot => "zero-shot",
        OutputMode::Trained => "trained",
    }
}

/// How the generation ended, in words.
pub fn finish_phrase(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Completed => "completed",
        FinishReason::Length => "stopped at length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Error => "failed",
    }
}

/// `score 0.254 (zero-shot)`, or `no score` when the stream carried none.
pub fn score_phrase(result: &EvalResult) -> String {
    match result.scores.first() {
        Some(s) => format!("score {:.3} ({})", s.score, mode_name(s.mode)),
        None => "no score".into(),
    }
}

/// `score 0.254 (zero-shot) · stopped at length`: what `heie eval` prints after the explanation.
pub fn result_line(result: &EvalResult) -> String {
    let mut line = score_phrase(result);
    if let Some(reason) = result.finish_reason {
        line.push_str(" · ");
        line.push_str(finish_phrase(reason));
    }
    line
}

/// The first sentence of generated text, headings and line breaks removed.
fn first_sentence(text: &str) -> String {
    let body: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    // Control characters (a random or broken model emits them) have no place in a one-line summary.
    let joined: String = body.join(" ").chars().filter(|c| !c.is_control()).collect();
    let joined = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    let end = joined
        .char_indices()
        .find(|&(i, c)| matches!(c, '.' | '!' | '?') && joined[i + c.len_utf8()..].starts_with(' '))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(joined.len());
    joined[..end].to_string()
}

/// The markers as a reader wants them: `[SCORE]` as the score, `[MAP]` as a pointer to the heatmap.
fn for_people(text: &str, score: f32) -> String {
    text.replace("[SCORE]", &format!("{score:.3}")).replace("[MAP]", "(see the heatmap)")
}

/// Cuts to `max` characters at a character boundary, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// The metadata record of a judged image, or None when it has no score (nothing worth storing).
/// Its summary: `score 0.254 (zero-shot): ` + the analysis' first sentence (else the regions'), clipped.
pub fn score_record(result: &EvalResult) -> Option<ScoreRecord> {
    let primary = result.scores.first()?;
    let verdict = [&result.explanation.analysis, &result.explanation.regions, &result.explanation.description]
        .into_iter()
        .map(|t| first_sentence(t))
        .find(|s| !s.is_empty());
    let head = score_phrase(result);
    let summary = match verdict {
        Some(v) => clip(&format!("{head}: {}", for_people(&v, primary.score)), MAX_SUMMARY_CHARS),
        None => head,
    };
    let mode = match primary.mode {
        OutputMode::Trained => ScoreMode::Trained,
        OutputMode::ZeroShot => ScoreMode::ZeroShot,
    };
    Some(ScoreRecord { score: primary.score, mode, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sentence_skips_headings_and_joins_lines() {
        let text = "### Analysis of Issues\nThe left hand has\nsix fingers. The sky is fine.\n";
        assert_eq!(first_sentence(text), "The left hand has six fingers.");
        assert_eq!(first_sentence("no full stop at all"), "no full stop at all");
        assert_eq!(first_sentence("v1.5 looks off. Next."), "v1.5 looks off.");
        assert_eq!(first_sentence("### Heading only\n"), "");
    }

    #[test]
    fn markers_and_control_characters_are_for_people() {
        assert_eq!(first_sentence("a\u{12}b c."), "ab c.");
        assert_eq!(for_people("score is [SCORE], regions [MAP]", 0.25), "score is 0.250, regions (see the heatmap)");
    }

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("ééééé", 5), "ééééé");
        assert_eq!(clip("éééééé", 5), "éééé…");
    }

    #[test]
    fn phrases_are_words() {
        assert_eq!(mode_name(OutputMode::ZeroShot), "zero-shot");
        assert_eq!(finish_phrase(FinishReason::Length), "stopped at length");
    }
}
