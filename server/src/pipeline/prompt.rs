//! The InternVL chat prompt (ChatML) and the fixed texts of the HEIE chain of thought.

use super::explanation::{HEADING_ANALYSIS, HEADING_DESCRIPTION, HEADING_REGIONS, MAP_SENTENCE, SCORE_SENTENCE};

/// InternVL3's default system message (from its chat template), which the model was tuned with.
pub const SYSTEM_PROMPT: &str = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。";

/// The instruction of Expl-AIGI-Eval (one of its phrasings), plus the grounding request that lets a
/// stock InternVL answer the regions step with boxes.
pub const INSTRUCTION: &str = "Locate every issue in this AIGC image and provide a description of each problem.";
pub const GROUNDING_HINT: &str = "In the problematic regions step, give each region as <ref>name</ref><box>[[x1, y1, x2, y2]]</box> with coordinates from 0 to 1000.";

/// The question of the zero-shot rating turn, and the answer prefix whose next token is read.
pub const RATING_QUESTION: &str = "Rate the plausibility of this image in one word: excellent, good, fair, poor or bad.";
pub const RATING_ANSWER_PREFIX: &str = "The plausibility of this image is";

/// Chat text up to and including `<img>`, where the tile embeddings go.
pub fn before_image() -> String {
    format!("<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<img>")
}

/// Chat text from `</img>` to the start of the assistant's answer and the first heading, in three
/// parts: the template before the client's prompt, the prompt itself (client text: it must be
/// tokenised with special-token parsing off), and the template after it.
pub fn after_image(generation_prompt: Option<&str>, native: bool) -> (String, Option<String>, String) {
    let hint = if native { String::new() } else { format!(" {GROUNDING_HINT}") };
    let end = format!("{hint}<|im_end|>\n<|im_start|>assistant\n");
    match generation_prompt {
        Some(p) => (
            format!("</img>\n{INSTRUCTION} The image was generated from the prompt: \""),
            Some(p.replace('"', "'")),
            format!("\".{end}"),
        ),
        None => (format!("</img>\n{INSTRUCTION}"), None, end),
    }
}

/// The assistant's opening, as in the dataset.
pub fn opening() -> String {
    format!("Sure. \n{HEADING_DESCRIPTION}\n")
}

pub fn regions_heading() -> String {
    format!("\n\n{HEADING_REGIONS}\n")
}

/// The sentence before the `[MAP]` markers.
pub fn map_sentence() -> String {
    format!("\n{MAP_SENTENCE} ")
}

pub fn analysis_heading() -> String {
    format!("\n\n{HEADING_ANALYSIS}\n")
}

/// The sentence before `[SCORE]`.
pub fn score_sentence() -> String {
    format!("\n{SCORE_SENTENCE} ")
}

/// Closes the answer and asks the rating question; the next token after this is a level word.
pub fn rating_turn() -> String {
    format!("<|im_end|>\n<|im_start|>user\n{RATING_QUESTION}<|im_end|>\n<|im_start|>assistant\n{RATING_ANSWER_PREFIX}")
}
