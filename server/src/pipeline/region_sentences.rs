//! Which sentences of an explanation describe a region: the explanation (description, regions and
//! analysis) cut into clean sentences for people, and the rule that picks a region's among them.

use super::captured::SectionTexts;
use super::explanation::{MAP_MARKER, MAP_SENTENCE, PREAMBLE, SCORE_MARKER, SCORE_SENTENCE};

/// At most this many sentences per region: enough to say what is wrong, short enough for a list.
pub const MAX_SENTENCES_PER_REGION: usize = 5;

/// Words of four letters or more that say nothing about what a region shows, so sharing one is no
/// sign that a sentence is about it: function words, the explanation's own vocabulary ("image",
/// "region", "issue"), and positions ("left hand" must not match "the left side of the road").
const STOP_WORDS: &[&str] = &[
    "about", "above", "across", "after", "again", "along", "also", "appear", "appears", "area", "around", "being",
    "below", "beside", "between", "both", "bottom", "center", "centre", "could", "does", "each", "from", "front",
    "have", "having", "here", "image", "into", "issue", "just", "left", "like", "look", "looks", "lower", "middle",
    "more", "most", "near", "other", "over", "part", "photo", "picture", "potential", "problematic", "region",
    "right", "same", "seem", "seems", "side", "some", "such", "sure", "than", "that", "their", "them", "then",
    "there", "these", "they", "this", "those", "through", "under", "upper", "very", "what", "when", "where",
    "which", "while", "with", "within", "would",
];

/// The explanation's sentences, in order: headings, the "Sure." preamble, grounding markup
/// (`<ref>` tags kept as their words, `<box>` coordinates dropped), list bullets and the
/// `[MAP]`/`[SCORE]` marker sentences removed; one per line at least, split after `.`, `!`, `?`.
pub fn explanation_sentences(sections: &SectionTexts) -> Vec<String> {
    [&sections.description, &sections.regions, &sections.analysis]
        .into_iter()
        .flat_map(|text| strip_markup(text).lines().flat_map(line_sentences).collect::<Vec<_>>())
        .collect()
}

/// The sentences of `sentences` about the region named `label`: those that name it (whole words,
/// any case), or, when none does, those that share a content word with it (four letters or more,
/// not in [`STOP_WORDS`]; a final plural `s` ignored); in order, each once, at most
/// [`MAX_SENTENCES_PER_REGION`]. No label, no sentences.
pub fn sentences_about(label: &str, sentences: &[String]) -> Vec<String> {
    let label = label.trim().to_lowercase();
    if label.is_empty() {
        return Vec::new();
    }
    let naming: Vec<&String> = sentences.iter().filter(|s| contains_words(&s.to_lowercase(), &label)).collect();
    let chosen = if naming.is_empty() {
        let wanted = content_words(&label);
        sentences.iter().filter(|s| content_words(&s.to_lowercase()).iter().any(|w| wanted.contains(w))).collect()
    } else {
        naming
    };
    let mut out: Vec<String> = Vec::new();
    for sentence in chosen {
        if out.len() == MAX_SENTENCES_PER_REGION {
            break;
        }
        if !out.contains(sentence) {
            out.push(sentence.clone());
        }
    }
    out
}

/// `<ref>X</ref>` becomes `X`; `<box>…</box>` (or an unclosed one, to the end of its line) goes.
fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<box>") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "<box>".len()..];
        rest = match (after.find("</box>"), after.find('\n')) {
            (Some(close), newline) if newline.is_none_or(|n| close < n) => &after[close + "</box>".len()..],
            (_, Some(newline)) => &after[newline..],
            (_, None) => "",
        };
    }
    out.push_str(rest);
    out.replace("<ref>", "").replace("</ref>", "")
}

/// The sentences of one line of (markup-free) text.
fn line_sentences(line: &str) -> Vec<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line == PREAMBLE {
        return Vec::new();
    }
    let line = line.trim_start_matches(['-', '*', '•']).trim_start();
    let mut sentences = Vec::new();
    let mut start = 0;
    for (i, c) in line.char_indices() {
        let end = i + c.len_utf8();
        if matches!(c, '.' | '!' | '?') && line[end..].starts_with(char::is_whitespace) {
            sentences.push(&line[start..end]);
            start = end;
        }
    }
    sentences.push(&line[start..]);
    sentences
        .into_iter()
        .map(tidy)
        .filter(|s| !s.is_empty() && !is_marker_sentence(s))
        .collect()
}

/// Whitespace collapsed, and no space left before punctuation where a box was cut out.
fn tidy(sentence: &str) -> String {
    let joined = sentence.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if matches!(c, '.' | ',' | ';' | ':' | '!' | '?') && out.ends_with(' ') {
            out.pop();
        }
        out.push(c);
    }
    out
}

/// The sentences that carry `[MAP]`/`[SCORE]` (or start to, when generation was cut) are the
/// format's scaffolding, not a description of anything.
fn is_marker_sentence(sentence: &str) -> bool {
    sentence.contains(MAP_MARKER)
        || sentence.contains(SCORE_MARKER)
        || sentence.starts_with(MAP_SENTENCE)
        || sentence.starts_with(SCORE_SENTENCE)
}

/// Whether `phrase` occurs in `text` with no letter or digit glued to either end.
fn contains_words(text: &str, phrase: &str) -> bool {
    text.match_indices(phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + phrase.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The content words of lower-case text, a final plural `s` removed.
fn content_words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 4 && !STOP_WORDS.contains(w))
        .map(|w| if w.ends_with('s') && !w.ends_with("ss") { &w[..w.len() - 1] } else { w })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Expl-AIGI-Eval answer (RichHF-18K dev, id 00847abb…) as the server streams it, with the
    /// regions written as InternVL grounds them in zero-shot mode.
    fn dataset_sections() -> SectionTexts {
        SectionTexts {
            description: "Sure. \n### Image Description\nA black and white portrait of a woman with short, dark hair \
                styled in a 1950s or 1960s fashion, holding a sign that reads \"ROCK N ROLL.\" She wears a dark top \
                or jacket with a serious expression in front of a vertically striped backdrop.\n\n"
                .into(),
            regions: "### Problematic Regions Identification\nIssues around <ref>the woman's eyes</ref>\
                <box>[[402,210,598,260]]</box>, nose, <ref>hand</ref><box>[[120,610,330,880]]</box> holding the \
                sign, and the 'O' in \"ROLL\" on the sign.\nSo, the potential problematic regions in the image are \
                [MAP]\n\n"
                .into(),
            analysis: "### Analysis of Issues\n- Eyes: Unnatural appearance; left eye larger and more rounded.\n\
                - Nose: Inconsistent shading and structure; undefined bridge and disproportionate nostrils.\n\
                - Hand: Distorted fingers lacking proper anatomical structure; incorrect proportions.\n\
                - Sign: Distorted or incomplete 'O' in \"ROLL.\"\n\
                Based on the overall analysis, the plausibility score for this image is [SCORE]."
                .into(),
            rating: "Poor".into(),
        }
    }

    #[test]
    fn the_explanation_becomes_clean_sentences_without_headings_markup_or_markers() {
        let sentences = explanation_sentences(&dataset_sections());
        assert_eq!(
            sentences,
            vec![
                "A black and white portrait of a woman with short, dark hair styled in a 1950s or 1960s fashion, \
                 holding a sign that reads \"ROCK N ROLL.\" She wears a dark top or jacket with a serious expression \
                 in front of a vertically striped backdrop.",
                "Issues around the woman's eyes, nose, hand holding the sign, and the 'O' in \"ROLL\" on the sign.",
                "Eyes: Unnatural appearance; left eye larger and more rounded.",
                "Nose: Inconsistent shading and structure; undefined bridge and disproportionate nostrils.",
                "Hand: Distorted fingers lacking proper anatomical structure; incorrect proportions.",
                "Sign: Distorted or incomplete 'O' in \"ROLL.\"",
            ]
        );
    }

    #[test]
    fn a_region_gets_the_sentences_naming_it_in_order() {
        let sentences = explanation_sentences(&dataset_sections());
        assert_eq!(
            sentences_about("hand", &sentences),
            vec![
                "Issues around the woman's eyes, nose, hand holding the sign, and the 'O' in \"ROLL\" on the sign.",
                "Hand: Distorted fingers lacking proper anatomical structure; incorrect proportions.",
            ]
        );
        // Whole words only: "hand" is not in "handle".
        assert!(sentences_about("hand", &["The handle is bent.".to_string()]).is_empty());
    }

    #[test]
    fn failing_a_naming_sentence_a_shared_content_word_links_them() {
        let sentences = explanation_sentences(&dataset_sections());
        // No sentence says "the woman's eyes" except the regions one; "left eyes" is named nowhere,
        // so its content word "eye" (from "eyes") links the analysis lines about eyes.
        assert_eq!(
            sentences_about("left eyes", &sentences),
            vec![
                "Issues around the woman's eyes, nose, hand holding the sign, and the 'O' in \"ROLL\" on the sign.",
                "Eyes: Unnatural appearance; left eye larger and more rounded.",
            ]
        );
        // Stop words and short words link nothing ("left", "the", "of").
        assert!(sentences_about("the left of", &sentences).is_empty());
        assert!(sentences_about("  ", &sentences).is_empty());
    }

    #[test]
    fn at_most_five_sentences_each_once() {
        let sentences: Vec<String> =
            ["The hand is odd.", "The hand is odd.", "A hand.", "Hand two.", "Hand three.", "Hand four.", "Hand five."]
                .map(String::from)
                .to_vec();
        assert_eq!(
            sentences_about("HAND", &sentences),
            vec!["The hand is odd.", "A hand.", "Hand two.", "Hand three.", "Hand four."]
        );
    }

    #[test]
    fn cut_generations_and_unclosed_boxes_leave_no_coordinates() {
        let sections = SectionTexts {
            regions: "The <ref>cup</ref><box>[[1,2,3,4]</box> floats. A <ref>chair</ref><box>[[5,6,\nSo, the \
                potential problematic regions in the image are"
                .into(),
            ..SectionTexts::default()
        };
        assert_eq!(explanation_sentences(&sections), vec!["The cup floats.", "A chair"]);
    }
}
