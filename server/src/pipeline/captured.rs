//! Everything one evaluation collected on the engine thread, handed to the finalizer when it ends.

use std::time::{Duration, Instant};

use crate::engine::Sampling;

use super::boxes::RegionBox;
use super::explanation::Section;
use super::options::EvalOptions;
use super::rating::Rating;
use super::tiling::{TileGrid, Tiling};
use super::pending::Pending;
use heie_heads::{HeadsMaps, ProjectedView};

/// The explanation text of each section, as shown to the client.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SectionTexts {
    pub description: String,
    pub regions: String,
    pub analysis: String,
    pub rating: String,
}

impl SectionTexts {
    pub fn append(&mut self, section: Section, text: &str) {
        self.get_mut(section).push_str(text);
    }

    pub fn get(&self, section: Section) -> &str {
        match section {
            Section::Description => &self.description,
            Section::Regions => &self.regions,
            Section::Analysis => &self.analysis,
            Section::Rating => &self.rating,
        }
    }

    fn get_mut(&mut self, section: Section) -> &mut String {
        match section {
            Section::Description => &mut self.description,
            Section::Regions => &mut self.regions,
            Section::Analysis => &mut self.analysis,
            Section::Rating => &mut self.rating,
        }
    }

    /// The whole chain of thought (description, regions, analysis), exactly as streamed.
    pub fn chain_of_thought(&self) -> String {
        format!("{}{}{}", self.description, self.regions, self.analysis)
    }
}

/// The outputs of the language model for one image: texts, boxes, the rating, and the inputs of the
/// trained heads (tile features, `[MAP]` and `[SCORE]` hidden states).
#[derive(Debug)]
pub struct Captured {
    pub request_id: u64,
    pub tiling: Tiling,
    /// The size the heatmaps are rendered at (decided once, by the request's preparation).
    pub heatmap_size: (u32, u32),
    pub sampling: Sampling,
    pub sections: SectionTexts,
    pub boxes: Vec<RegionBox>,
    pub boxes_reported: bool,
    pub rating: Option<Rating>,
    /// Post-projector features of each tile, then of the thumbnail: `tokens_per_tile × n_embd` each.
    /// Kept only when the captures are emitted (extraction, offline evaluation).
    pub features: Vec<Vec<f32>>,
    /// The same views being projected for the trained heads, when the server has heads (until the
    /// heatmap job takes them).
    pub projected: Vec<Pending<ProjectedView>>,
    /// The trained heads' heatmap side, started when the last `[MAP]` state was captured.
    pub maps: Option<Pending<HeadsMaps>>,
    pub tokens_per_tile: usize,
    /// One per tile in grid order, then the global (thumbnail) one.
    pub map_hidden: Vec<Vec<f32>>,
    pub score_hidden: Option<Vec<f32>>,
    /// A section stopped at its token cap.
    pub hit_length: bool,
    pub preprocess: Duration,
    pub started: Instant,
    pub emit_captures: bool,
}

impl Captured {
    pub fn new(request_id: u64, tiling: Tiling, heatmap_size: (u32, u32), options: &EvalOptions, preprocess: Duration, started: Instant) -> Captured {
        Captured {
            request_id,
            tiling,
            heatmap_size,
            sampling: options.sampling,
            sections: SectionTexts::default(),
            boxes: Vec::new(),
            boxes_reported: false,
            rating: None,
            features: Vec::new(),
            projected: Vec::new(),
            maps: None,
            tokens_per_tile: 0,
            map_hidden: Vec::new(),
            score_hidden: None,
            hit_length: false,
            preprocess,
            started,
            emit_captures: options.emit_captures,
        }
    }

    /// The heatmaps' size.
    pub fn output_size(&self) -> (u32, u32) {
        self.heatmap_size
    }
}

impl Default for Captured {
    fn default() -> Self {
        let tiling = Tiling {
            grid: TileGrid { cols: 1, rows: 1 },
            tile_size: 0,
            original_width: 0,
            original_height: 0,
            has_thumbnail: false,
        };
        Captured::new(0, tiling, (0, 0), &EvalOptions::default(), Duration::ZERO, Instant::now())
    }
}
