//! The HEIE chain-of-thought format (Expl-AIGI-Eval): its fixed texts, a parser and a renderer.
//!
//! ```text
//! Sure.
//! ### Image Description
//! …
//!
//! ### Problematic Regions Identification
//! …
//! So, the potential problematic regions in the image are [MAP]
//!
//! ### Analysis of Issues
//! …
//! Based on the overall analysis, the plausibility score for this image is [SCORE].
//! ```
//!
//! The engine writes the fixed parts itself and lets the model write the bodies, so these strings
//! must match the training data byte for byte: a fine-tuned model conditions on them.

use serde::{Deserialize, Serialize};

/// The acknowledgement every dataset answer starts with (followed by a space and a newline).
pub const PREAMBLE: &str = "Sure.";
pub const HEADING_DESCRIPTION: &str = "### Image Description";
pub const HEADING_REGIONS: &str = "### Problematic Regions Identification";
pub const HEADING_ANALYSIS: &str = "### Analysis of Issues";
/// Closes the regions section; the `[MAP]` marker(s) follow it after a space.
pub const MAP_SENTENCE: &str = "So, the potential problematic regions in the image are";
/// Closes the analysis section; ` [SCORE].` follows it.
pub const SCORE_SENTENCE: &str =
    "Based on the overall analysis, the plausibility score for this image is";
/// Token whose hidden state feeds the heatmap mapper.
pub const MAP_MARKER: &str = "[MAP]";
/// Token whose hidden state feeds the scorer.
pub const SCORE_MARKER: &str = "[SCORE]";

/// A step of the evaluation's text output, in the order they are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Description,
    Regions,
    Analysis,
    /// The zero-shot rating turn, where the next rating word's probabilities give the score.
    Rating,
}

impl Section {
    /// The markdown heading that opens the section; the rating turn has none.
    pub fn heading(self) -> Option<&'static str> {
        match self {
            Section::Description => Some(HEADING_DESCRIPTION),
            Section::Regions => Some(HEADING_REGIONS),
            Section::Analysis => Some(HEADING_ANALYSIS),
            Section::Rating => None,
        }
    }
}

/// The three written sections of an explanation, without headings or marker sentences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParsedExplanation {
    pub description: String,
    pub regions: String,
    pub analysis: String,
    /// How many `[MAP]` markers the whole text contains.
    pub n_map_markers: usize,
    /// How many `[SCORE]` markers the whole text contains.
    pub n_score_markers: usize,
}

/// Why a text is not an explanation in the HEIE format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplanationError {
    #[error("explanation has no \"{heading}\" heading")]
    MissingHeading {
        section: Section,
        heading: &'static str,
    },
    #[error("explanation heading \"{later}\" comes before \"{earlier}\"")]
    OutOfOrder {
        earlier: &'static str,
        later: &'static str,
    },
}

/// Splits an explanation into its sections.
///
/// Headings are recognised on their own line, tolerating surrounding whitespace and a trailing
/// colon (about 10% of the dataset writes `### Image Description:`). The regions body ends at
/// [`MAP_SENTENCE`] and the analysis body at [`SCORE_SENTENCE`] when they are present; anything
/// before the first heading (the "Sure." preamble) is ignored.
pub fn parse_explanation(text: &str) -> Result<ParsedExplanation, ExplanationError> {
    let description = find_heading(text, Section::Description)?;
    let regions = find_heading(text, Section::Regions)?;
    let analysis = find_heading(text, Section::Analysis)?;
    for (earlier, later) in [(description, regions), (regions, analysis)] {
        if later.start < earlier.start {
            return Err(ExplanationError::OutOfOrder {
                earlier: earlier.heading,
                later: later.heading,
            });
        }
    }
    let regions_body = cut_at(&text[regions.end..analysis.start], MAP_SENTENCE);
    Ok(ParsedExplanation {
        description: text[description.end..regions.start].trim().to_string(),
        regions: regions_body.trim().to_string(),
        analysis: cut_at(&text[analysis.end..], SCORE_SENTENCE)
            .trim()
            .to_string(),
        n_map_markers: text.matches(MAP_MARKER).count(),
        n_score_markers: text.matches(SCORE_MARKER).count(),
    })
}

/// Writes an explanation in exactly the dataset's layout.
///
/// `n_map_markers` markers follow the map sentence with no separator between them (they are
/// single special tokens, one per tile plus the thumbnail in HEIE); with zero markers the
/// sentence ends without a trailing space.
pub fn render_explanation(
    description: &str,
    regions: &str,
    n_map_markers: usize,
    analysis: &str,
) -> String {
    let markers = if n_map_markers == 0 {
        String::new()
    } else {
        format!(" {}", MAP_MARKER.repeat(n_map_markers))
    };
    format!(
        "{PREAMBLE} \n{HEADING_DESCRIPTION}\n{description}\n\n{HEADING_REGIONS}\n{regions}\n\
         {MAP_SENTENCE}{markers}\n\n{HEADING_ANALYSIS}\n{analysis}\n{SCORE_SENTENCE} {SCORE_MARKER}."
    )
}

/// Byte span of a heading line, newline included.
#[derive(Debug, Clone, Copy)]
struct HeadingLine {
    heading: &'static str,
    start: usize,
    end: usize,
}

fn find_heading(text: &str, section: Section) -> Result<HeadingLine, ExplanationError> {
    let heading = section
        .heading()
        .expect("only written sections are searched");
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        if line.trim().trim_end_matches(':').trim_end() == heading {
            return Ok(HeadingLine {
                heading,
                start,
                end,
            });
        }
        start = end;
    }
    Err(ExplanationError::MissingHeading { section, heading })
}

fn cut_at<'a>(body: &'a str, sentence: &str) -> &'a str {
    body.find(sentence).map_or(body, |i| &body[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Sure. \n### Image Description\nA cat on a sofa.\n\n\
        ### Problematic Regions Identification\nThe front paws.\n\
        So, the potential problematic regions in the image are [MAP]\n\n\
        ### Analysis of Issues\n- Paws: six toes.\n\
        Based on the overall analysis, the plausibility score for this image is [SCORE].";

    #[test]
    fn parses_the_three_sections_and_counts_markers() {
        let parsed = parse_explanation(SAMPLE).unwrap();
        assert_eq!(parsed.description, "A cat on a sofa.");
        assert_eq!(parsed.regions, "The front paws.");
        assert_eq!(parsed.analysis, "- Paws: six toes.");
        assert_eq!((parsed.n_map_markers, parsed.n_score_markers), (1, 1));
    }

    #[test]
    fn render_then_parse_roundtrips() {
        let text = render_explanation(
            "A cat on a sofa.",
            "The front paws.",
            1,
            "- Paws: six toes.",
        );
        assert_eq!(text, SAMPLE);
        let three = render_explanation("d", "r", 3, "a");
        assert!(three.contains("are [MAP][MAP][MAP]\n\n###"));
        assert_eq!(parse_explanation(&three).unwrap().n_map_markers, 3);
        assert!(render_explanation("d", "r", 0, "a").contains("in the image are\n\n###"));
    }

    #[test]
    fn headings_with_colons_and_spaces_are_accepted() {
        let text = SAMPLE
            .replace("### Image Description\n", "### Image Description:\n\n")
            .replace("### Analysis of Issues\n", "  ### Analysis of Issues : \n");
        let parsed = parse_explanation(&text).unwrap();
        assert_eq!(parsed.description, "A cat on a sofa.");
        assert_eq!(parsed.analysis, "- Paws: six toes.");
    }

    #[test]
    fn missing_sentences_leave_whole_bodies() {
        let text = "### Image Description\nd\n### Problematic Regions Identification\nr\n\
                    ### Analysis of Issues\na";
        let parsed = parse_explanation(text).unwrap();
        assert_eq!(
            (
                parsed.description.as_str(),
                parsed.regions.as_str(),
                parsed.analysis.as_str()
            ),
            ("d", "r", "a")
        );
        assert_eq!((parsed.n_map_markers, parsed.n_score_markers), (0, 0));
    }

    #[test]
    fn missing_or_misordered_headings_are_errors() {
        let err = parse_explanation(&SAMPLE.replace(HEADING_ANALYSIS, "### Analysis")).unwrap_err();
        assert_eq!(
            err,
            ExplanationError::MissingHeading {
                section: Section::Analysis,
                heading: HEADING_ANALYSIS
            }
        );
        assert_eq!(
            err.to_string(),
            "explanation has no \"### Analysis of Issues\" heading"
        );
        // A heading mentioned inside a line is not a heading.
        let inline = SAMPLE.replace("### Image Description\n", "see ### Image Description\n");
        assert!(matches!(
            parse_explanation(&inline),
            Err(ExplanationError::MissingHeading {
                section: Section::Description,
                ..
            })
        ));
        let swapped = "### Problematic Regions Identification\nr\n### Image Description\nd\n### Analysis of Issues\na";
        assert!(matches!(
            parse_explanation(swapped),
            Err(ExplanationError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn sections_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Section::Description).unwrap(),
            "\"description\""
        );
        assert_eq!(
            serde_json::from_str::<Section>("\"rating\"").unwrap(),
            Section::Rating
        );
        assert_eq!(Section::Regions.heading(), Some(HEADING_REGIONS));
        assert_eq!(Section::Rating.heading(), None);
    }

    /// Every reference answer of Expl-AIGI-Eval (RichHF-18K dev + test).
    fn dataset_answers() -> Vec<String> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/expl-aigi-eval"
        );
        ["RichHF-18K_dev.jsonl", "RichHF-18K_test.jsonl"]
            .iter()
            .flat_map(|name| {
                let path = format!("{dir}/{name}");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                text.lines()
                    .map(|line| {
                        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                        entry["conversations"][1]["value"]
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn parses_every_dataset_answer() {
        let answers = dataset_answers();
        assert_eq!(answers.len(), 995 + 955);
        for (i, answer) in answers.iter().enumerate() {
            let parsed = parse_explanation(answer).unwrap_or_else(|e| panic!("entry {i}: {e}"));
            assert_eq!(
                (parsed.n_map_markers, parsed.n_score_markers),
                (1, 1),
                "entry {i}"
            );
            for body in [&parsed.description, &parsed.regions, &parsed.analysis] {
                assert!(
                    !body.is_empty() && !body.contains("###"),
                    "entry {i}: {parsed:?}"
                );
            }
            assert!(
                !parsed.regions.contains(MAP_SENTENCE) && !parsed.analysis.contains(SCORE_SENTENCE)
            );
            // Rendering normalises the layout but keeps the content.
            let rendered =
                render_explanation(&parsed.description, &parsed.regions, 1, &parsed.analysis);
            assert_eq!(parse_explanation(&rendered).unwrap(), parsed, "entry {i}");
        }
    }

    #[test]
    fn canonical_dataset_answers_render_byte_for_byte() {
        let answers = dataset_answers();
        // The first three answers of each file are in the canonical layout.
        for i in [0, 1, 2, 995, 996, 997] {
            let p = parse_explanation(&answers[i]).unwrap();
            assert_eq!(
                render_explanation(&p.description, &p.regions, 1, &p.analysis),
                answers[i],
                "entry {i}"
            );
        }
        // 1734 of 1950 are canonical; the rest use "Heading:" or irregular spacing.
        let exact = answers
            .iter()
            .filter(|a| {
                let p = parse_explanation(a).unwrap();
                render_explanation(&p.description, &p.regions, 1, &p.analysis) == **a
            })
            .count();
        assert!(exact >= 1734, "{exact}");
    }
}
