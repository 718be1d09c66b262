//! The kind of defect a flagged region shows, from a fixed rule over its label and sentences.
//! (The rule itself lands in the next commit; the type and signature are the contract.)

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

/// The category of a region named `label` and described by `sentences`.
pub fn categorize(label: &str, sentences: &[String]) -> RegionCategory {
    let _ = (label, sentences);
    RegionCategory::Other
}
