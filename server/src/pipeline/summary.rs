//! The one-line verdict for people, computed once here and carried in `Done`: what `heie eval`
//! prints, what image metadata stores, and what every client (Python, ComfyUI, A1111) shows, so no
//! client formats its own. Written for people, never Rust debug formatting.

use super::captured::SectionTexts;
use super::events::{OutputMode, ScoreOutput};

/// Longest summary, in characters (a browser column or a node's title, not an essay).
pub const MAX_SUMMARY_CHARS: usize = 200;

/// `zero-shot` or `trained`.
pub fn mode_name(mode: OutputMode) -> &'static str {
    match mode {
        OutputMode::ZeroShot => "zero-shot",
        OutputMode::Trained => "trained",
    }
}

/// `score 0.254 (zero-shot)`; `score 0.612 (calibrated; zero-shot 0.254)` when a user's calibration
/// replaced the score; `no score` when the evaluation produced none.
pub fn score_phrase(primary: Option<&ScoreOutput>) -> String {
    match primary {
        Some(ScoreOutput { score, mode, uncalibrated: Some(raw), .. }) => {
            format!("score {score:.3} (calibrated; {} {raw:.3})", mode_name(*mode))
        }
        Some(ScoreOutput { score, mode, .. }) => format!("score {score:.3} ({})", mode_name(*mode)),
        None => "no score".into(),
    }
}

/// `score 0.254 (zero-shot): ` + the analysis' first sentence (else the regions', else the
/// description's), markers made readable, clipped to [`MAX_SUMMARY_CHARS`]; just the score phrase
/// when there is no text or no score.
pub fn summary_line(sections: &SectionTexts, primary: Option<&ScoreOutput>) -> String {
    let head = score_phrase(primary);
    // `[SCORE]` in the text stands for the score the model saw: the uncalibrated one.
    let Some(score) = primary.map(|p| p.uncalibrated.unwrap_or(p.score)) else { return head };
    let verdict = [&sections.analysis, &sections.regions, &sections.description]
        .into_iter()
        .map(|t| first_sentence(t))
        .find(|s| !s.is_empty());
    match verdict {
        Some(v) => clip(&format!("{head}: {}", for_people(&v, score)), MAX_SUMMARY_CHARS),
        None => head,
    }
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

    fn primary(score: f32, mode: OutputMode) -> ScoreOutput {
        ScoreOutput { score, mode, level_probabilities: [0.0; 5], trained: None, uncalibrated: None }
    }

    #[test]
    fn a_calibrated_score_says_so_and_keeps_the_raw_one() {
        let mut sections = SectionTexts::default();
        sections.analysis = "Overall [SCORE].".into();
        let calibrated = ScoreOutput { uncalibrated: Some(0.254), ..primary(0.612, OutputMode::ZeroShot) };
        assert_eq!(summary_line(&sections, Some(&calibrated)), "score 0.612 (calibrated; zero-shot 0.254): Overall 0.254.");
    }

    #[test]
    fn the_line_leads_with_the_score_and_falls_back_to_later_sections() {
        let mut sections = SectionTexts::default();
        assert_eq!(summary_line(&sections, None), "no score");
        assert_eq!(summary_line(&sections, Some(&primary(0.25, OutputMode::Trained))), "score 0.250 (trained)");
        sections.regions = "### Regions\nThe hand [MAP] is odd. More.".into();
        assert_eq!(
            summary_line(&sections, Some(&primary(0.254, OutputMode::ZeroShot))),
            "score 0.254 (zero-shot): The hand (see the heatmap) is odd."
        );
        sections.analysis = "Overall [SCORE].".into();
        assert_eq!(summary_line(&sections, Some(&primary(0.5, OutputMode::ZeroShot))), "score 0.500 (zero-shot): Overall 0.500.");
        sections.analysis = "x".repeat(400);
        assert_eq!(summary_line(&sections, Some(&primary(0.5, OutputMode::ZeroShot))).chars().count(), MAX_SUMMARY_CHARS);
    }
}
