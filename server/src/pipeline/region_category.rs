//! The kind of defect a flagged region shows, from a fixed rule over its label and sentences, so a
//! host can treat hands differently from text (per-category thresholds, which regions to inpaint).
//!
//! The rule, in order:
//! 1. the category of the **first category word in the label** ("Face & Hat" → face, "Shadow of the
//!    hand" → physics, "Background pedestrians" → background);
//! 2. if the label has none, the category of the first category word in the region's sentences;
//! 3. if neither has one, **object** when the label still names something once defect words
//!    ("texture", "edges", "blurred" …), position words ("left", "upper" …) and small words are set
//!    aside ("Flying object", "Ship's structure", "Accessories"), else **other**.
//!
//! First word rather than a fixed priority because these labels put the thing that is wrong first
//! ("Teeth and gums", "Cup in hand" is a cup). Words are matched whole, case-insensitively, after
//! splitting on everything that is not a letter ("man's" → "man", "s"). The word lists are below;
//! the README reports what the rule makes of the 1,950 Expl-AIGI-Eval explanations.

use serde::Serialize;

/// Kinds of defect, as `heie.v1.RegionCategory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionCategory {
    Hand,
    Face,
    Body,
    Text,
    Object,
    Physics,
    Background,
    Other,
}

impl RegionCategory {
    pub const ALL: [RegionCategory; 8] = [
        RegionCategory::Hand,
        RegionCategory::Face,
        RegionCategory::Body,
        RegionCategory::Text,
        RegionCategory::Object,
        RegionCategory::Physics,
        RegionCategory::Background,
        RegionCategory::Other,
    ];

    /// The name people type (`--reject-if hand>0.5`) and read.
    pub fn name(self) -> &'static str {
        match self {
            RegionCategory::Hand => "hand",
            RegionCategory::Face => "face",
            RegionCategory::Body => "body",
            RegionCategory::Text => "text",
            RegionCategory::Object => "object",
            RegionCategory::Physics => "physics",
            RegionCategory::Background => "background",
            RegionCategory::Other => "other",
        }
    }
}

/// Words that put a region in a category (whole words, lower case).
const CATEGORY_WORDS: [(RegionCategory, &[&str]); 6] = [
    (
        RegionCategory::Hand,
        &[
            "hand", "hands", "finger", "fingers", "fingertip", "fingertips", "thumb", "thumbs", "palm", "palms",
            "wrist", "wrists", "fist", "fists", "knuckle", "knuckles", "fingernail", "fingernails", "grip",
            "gripping", "grasp", "grasping",
        ],
    ),
    (
        RegionCategory::Face,
        &[
            "face", "faces", "facial", "eye", "eyes", "eyebrow", "eyebrows", "eyelid", "eyelids", "pupil", "pupils",
            "iris", "mouth", "mouths", "lip", "lips", "teeth", "tooth", "nose", "noses", "nostril", "nostrils",
            "ear", "ears", "cheek", "cheeks", "chin", "jaw", "jawline", "forehead", "expression", "expressions",
            "smile", "gums", "beard", "mustache", "moustache", "hair", "hairline", "head", "heads", "muzzle",
            "snout", "beak",
        ],
    ),
    (
        RegionCategory::Body,
        &[
            "body", "bodies", "limb", "limbs", "arm", "arms", "forearm", "forearms", "elbow", "elbows", "leg",
            "legs", "knee", "knees", "foot", "feet", "toe", "toes", "ankle", "ankles", "shoulder", "shoulders",
            "neck", "torso", "chest", "waist", "hip", "hips", "anatomy", "anatomical", "anatomically", "posture",
            "pose", "poses", "stance", "tail", "tails", "paw", "paws", "wing", "wings", "hoof", "hooves", "claw",
            "claws", "fin", "fins", "gill", "gills", "muscle", "muscles", "silhouette",
        ],
    ),
    (
        RegionCategory::Text,
        &[
            "text", "texts", "textual", "letter", "letters", "lettering", "word", "words", "writing", "written",
            "sign", "signs", "signage", "signboard", "logo", "logos", "font", "fonts", "typography", "caption",
            "captions", "inscription", "inscriptions", "spelling", "misspelled", "misspelt", "digits",
            "numerals", "label", "labels", "banner", "banners", "headline", "title",
        ],
    ),
    (
        RegionCategory::Physics,
        &[
            "shadow", "shadows", "shadowing", "shading", "lighting", "light", "lights", "illumination",
            "reflection", "reflections", "reflective", "mirror", "perspective", "gravity", "physics",
            "physically", "floating", "floats", "levitating", "scale", "depth", "glare", "highlights", "glow",
        ],
    ),
    (
        RegionCategory::Background,
        &[
            "background", "backgrounds", "backdrop", "sky", "skies", "cloud", "clouds", "scenery", "landscape",
            "horizon", "distance", "distant", "surroundings", "environment", "wall", "walls", "floor",
            "ground", "terrain", "foliage",
        ],
    ),
];

/// Words that say how something is wrong, or where, rather than what it is: a label made only of
/// these (and small words) names no object.
const NOT_A_THING: &[&str] = &[
    // defects and qualities
    "texture", "textures", "artifact", "artifacts", "artefact", "artefacts", "detail", "details", "edge",
    "edges", "color", "colors", "colour", "colours", "coloring", "colouring", "blur", "blurred", "blurry",
    "blurring", "distortion", "distortions", "distorted", "style", "composition", "overall", "image",
    "picture", "area", "areas", "region", "regions", "part", "parts", "pattern", "patterns", "line", "lines",
    "look", "looks", "quality", "rendering", "rendered", "transition", "transitions", "element", "elements",
    "issue", "issues", "problem", "problems", "inconsistency", "inconsistencies", "inconsistent", "noise",
    "sharpness", "clarity", "contrast", "saturation", "tone", "tones", "shape", "shapes", "form", "forms",
    "unnatural", "unrealistic", "unfinished", "odd", "strange", "weird", "poor", "poorly", "defined",
    "definition", "proportion", "proportions", "symmetry", "asymmetry", "integration", "blending",
    "merging", "merged", "melted", "appearance", "realism", "coherence", "consistency", "structure",
    "structures", "general", "various", "multiple", "other", "misc", "miscellaneous", "visual", "visuals",
    "smudge", "smudged", "smudging", "warping", "warped", "deformation", "deformed", "irregular",
    // places
    "left", "right", "upper", "lower", "top", "bottom", "center", "centre", "middle", "corner", "corners",
    "side", "sides", "front", "near", "around", "foreground", "central",
    // small words
    "the", "a", "an", "of", "and", "or", "on", "in", "at", "to", "with", "by", "for", "from", "its", "their",
    "his", "her", "s", "some", "all", "this", "that", "these", "those", "is", "are",
];

/// The category of a region named `label` and described by `sentences` (see the module comment).
pub fn categorize(label: &str, sentences: &[String]) -> RegionCategory {
    if let Some(category) = first_category_word(label) {
        return category;
    }
    if let Some(category) = sentences.iter().find_map(|sentence| first_category_word(sentence)) {
        return category;
    }
    if words(label).any(|word| !NOT_A_THING.contains(&word.as_str())) {
        RegionCategory::Object
    } else {
        RegionCategory::Other
    }
}

fn first_category_word(text: &str) -> Option<RegionCategory> {
    words(text).find_map(|word| {
        CATEGORY_WORDS
            .iter()
            .find(|(_, list)| list.contains(&word.as_str()))
            .map(|(category, _)| *category)
    })
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::RegionCategory::*;
    use super::*;

    fn of(label: &str, sentences: &[&str]) -> RegionCategory {
        categorize(label, &sentences.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_first_category_word_of_the_label_decides() {
        assert_eq!(of("Face & Hat", &["warped, lacking crisp definition"]), Face);
        assert_eq!(of("Hands", &["Poor proportions, blurred fingers."]), Hand);
        assert_eq!(of("Teeth and Gums", &[]), Face);
        assert_eq!(of("Shadow of the hand", &[]), Physics);
        assert_eq!(of("Background Pedestrians", &["Blurred, lacking detail."]), Background);
        assert_eq!(of("WELCOME sign", &[]), Text);
        assert_eq!(of("Tail Fin", &["Unnaturally sharp tip."]), Body);
        assert_eq!(of("Color and Lighting", &["Poor integration with the sky."]), Physics);
        assert_eq!(of("man's LEFT HAND", &[]), Hand);
    }

    #[test]
    fn sentences_decide_when_the_label_names_no_category() {
        assert_eq!(of("Edges", &["Shadows fall the wrong way."]), Physics);
        assert_eq!(of("", &["Human-like hands with distinct fingers."]), Hand);
        assert_eq!(of("", &["Anatomical inaccuracy.", "Odd fingers."]), Body);
    }

    #[test]
    fn a_label_naming_a_thing_is_an_object_and_one_naming_only_defects_is_other() {
        assert_eq!(of("Flying Object", &["Appears unnatural and indistinct."]), Object);
        assert_eq!(of("Ship's Structure", &["Irregular shapes."]), Object);
        assert_eq!(of("Accessories", &[]), Object);
        assert_eq!(of("Unfinished look", &["Not well-rendered."]), Other);
        assert_eq!(of("Edges", &["Blurred and inconsistent with image style."]), Other);
        assert_eq!(of("", &[]), Other);
    }

    #[test]
    fn words_match_whole_so_parts_of_words_do_not_count() {
        // "handle" is not "hand", "eyeglasses" not "eye", "signature" not "sign".
        assert_eq!(of("door handle", &[]), Object);
        assert_eq!(of("eyeglasses", &[]), Object);
        assert_eq!(of("signature", &[]), Object);
    }

    #[test]
    fn every_category_has_a_name_people_type() {
        let names: Vec<&str> = RegionCategory::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["hand", "face", "body", "text", "object", "physics", "background", "other"]);
    }
}
