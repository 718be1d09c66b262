//! The line `heie eval` prints after each image and the record stored in image metadata, both from
//! the pipeline's one summary line (`pipeline/summary.rs`).

use crate::pipeline::events::{FinishReason, OutputMode};
use crate::pipeline::summary::score_phrase;
use crate::pipeline::EvalResult;

use super::metadata::{ScoreMode, ScoreRecord};

/// How the generation ended, in words.
pub fn finish_phrase(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Completed => "completed",
        FinishReason::Length => "stopped at length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Error => "failed",
    }
}

/// `score 0.254 (zero-shot) · stopped at length`: what `heie eval` prints after the explanation.
pub fn result_line(result: &EvalResult) -> String {
    let mut line = score_phrase(result.scores.first());
    if let Some(reason) = result.finish_reason {
        line.push_str(" · ");
        line.push_str(finish_phrase(reason));
    }
    line
}

/// The metadata record of a judged image, or None when it has no score (nothing worth storing).
pub fn score_record(result: &EvalResult) -> Option<ScoreRecord> {
    let primary = result.scores.first()?;
    let mode = match primary.mode {
        OutputMode::Trained => ScoreMode::Trained,
        OutputMode::ZeroShot => ScoreMode::ZeroShot,
    };
    Some(ScoreRecord { score: primary.score, mode, summary: result.summary.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_words() {
        assert_eq!(finish_phrase(FinishReason::Length), "stopped at length");
    }
}
