//! The HEIE chain of thought as a program the engine runs: prompt and tiles, the three sections, the
//! `[MAP]`/`[SCORE]` markers whose hidden states are captured, and the zero-shot rating turn.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::{
    GenerationEnd, SequenceEnd, SequenceProgram, SequenceStats, Step, TileBitmap, Token, TokenVerdict,
};

use super::boxes::{parse_boxes, RegionBox};
use super::events::{EvalEvent, EventSender};
use super::explanation::{Section, HEADING_ANALYSIS, HEADING_REGIONS, MAP_MARKER, SCORE_MARKER};
use super::captured::Captured;
use super::finalize::Finalizer;
use super::heads_worker::MapsRequest;
use super::prepared::PreparedRequest;
use super::prompt;
use super::prompt_tokens::PromptTokens;
use super::rating::{rating_from_logits, Rating, LEVELS};
use super::section_text::{Progress, SectionText};
use super::tiling::Tiling;

pub use super::cot_plan::{context_budget, ContextBudget};
use super::cot_plan::{plan, Item, Marker};

pub struct CotProgram {
    tokens: Arc<PromptTokens>,
    plan: Vec<Item>,
    at: usize,
    tiles: Vec<TileBitmap>,
    tiling: Tiling,
    events: EventSender,
    section: Option<Section>,
    text: Option<SectionText>,
    /// Captures expected from the Feed in flight, by token index.
    feed_captures: Vec<(usize, Marker)>,
    native_sampled_marker: Option<Marker>,
    native_section: Section,
    captured: Captured,
    finalizer: Finalizer,
}

/// What every program of an evaluator shares.
pub struct ProgramSetup {
    pub tokens: Arc<PromptTokens>,
    /// Trained heads give the primary score (else the rating turn does).
    pub trained: bool,
    pub finalizer: Finalizer,
}

/// When and as what a program starts.
pub struct ProgramStart {
    pub request_id: u64,
    /// When the request arrived (the total time counts from here).
    pub started: Instant,
    /// The time the request took before its program was built (decoding, preparing, tiling).
    pub preprocess: std::time::Duration,
}

impl CotProgram {
    /// Builds the program of one prepared request. `tiles` are the tile bitmaps then the thumbnail,
    /// in order, cut as `tiling` says; a reference in the request is fed instead of generating the
    /// sections (teacher forcing).
    pub fn new(
        setup: &ProgramSetup,
        prepared: PreparedRequest,
        tiling: Tiling,
        tiles: Vec<TileBitmap>,
        events: EventSender,
        start: ProgramStart,
    ) -> CotProgram {
        let PreparedRequest { options, heatmap_size, after_image, reference, .. } = prepared;
        let plan = plan(&setup.tokens, setup.trained, after_image, &options, reference.as_ref());
        let captured = Captured::new(start.request_id, tiling, heatmap_size, &options, start.preprocess, start.started);
        let finalizer = setup.finalizer.clone();
        CotProgram {
            tokens: setup.tokens.clone(),
            plan,
            at: 0,
            tiles,
            tiling,
            events,
            section: None,
            text: None,
            feed_captures: Vec::new(),
            native_sampled_marker: None,
            native_section: Section::Description,
            captured,
            finalizer,
        }
    }

    fn n_map_markers(&self) -> usize {
        self.tiling.n_tiles() as usize + usize::from(self.tiling.has_thumbnail)
    }

    fn emit(&mut self, event: EvalEvent) {
        self.events.send(event);
    }

    fn enter(&mut self, section: Section) {
        if self.section != Some(section) {
            self.section = Some(section);
            self.emit(EvalEvent::StageStarted(section));
        }
    }

    fn show(&mut self, section: Section, text: String) {
        if text.is_empty() {
            return;
        }
        self.enter(section);
        self.captured.sections.append(section, &text);
        self.emit(EvalEvent::TextDelta { section, text });
    }

    /// A Feed of `prefix` then `count` markers, capturing the last token of each marker.
    fn marker_feed(&mut self, prefix: &[Token], marker: Marker, count: usize, suffix: &[Token]) -> Step {
        let marker_tokens = match marker {
            Marker::Map => self.tokens.map_marker.clone(),
            Marker::Score => self.tokens.score_marker.clone(),
        };
        let mut tokens = prefix.to_vec();
        self.feed_captures.clear();
        for _ in 0..count {
            tokens.extend_from_slice(&marker_tokens);
            self.feed_captures.push((tokens.len() - 1, marker));
        }
        tokens.extend_from_slice(suffix);
        let capture = self.feed_captures.iter().map(|(i, _)| *i).collect();
        Step::Feed { tokens, capture, logits: false }
    }

    /// Parses the regions text into boxes and reports them, once: both the end of the regions section
    /// and the marker step (reached without it when the explanation is skipped) call this.
    fn report_regions(&mut self) {
        if self.captured.boxes_reported {
            return;
        }
        self.captured.boxes_reported = true;
        let boxes: Vec<RegionBox> = parse_boxes(self.captured.sections.get(Section::Regions));
        for b in &boxes {
            self.emit(EvalEvent::Region(b.clone()));
        }
        self.captured.boxes = boxes;
    }

    fn native_section_of(text: &str) -> Section {
        match (text.rfind(HEADING_REGIONS), text.rfind(HEADING_ANALYSIS)) {
            (_, Some(_)) => Section::Analysis,
            (Some(_), None) => Section::Regions,
            _ => Section::Description,
        }
    }
}

impl SequenceProgram for CotProgram {
    // About 80 lines: one arm per plan item, each a few lines; the match is the plan's meaning in one
    // place, which splitting would scatter.
    fn next_step(&mut self) -> Step {
        loop {
            let Some(item) = self.plan.get(self.at).cloned() else { return Step::Finish };
            match item {
                Item::SharedPrefix(tokens) => {
                    self.at += 1;
                    return Step::Prefix(tokens);
                }
                Item::Tiles => {
                    self.at += 1;
                    return Step::Images(std::mem::take(&mut self.tiles));
                }
                Item::Text { tokens, shown } => {
                    self.at += 1;
                    if let Some((section, text)) = shown {
                        self.show(section, text);
                    }
                    self.feed_captures.clear();
                    return Step::Feed { tokens, capture: Vec::new(), logits: false };
                }
                Item::Generate { section, max_tokens, stops } => {
                    if self.text.is_none() {
                        self.enter(section);
                        self.text = Some(SectionText::new(stops));
                        return Step::Generate { max_tokens, sampling: self.captured.sampling };
                    }
                    // The generation ended (on_generation_end ran): move on.
                    self.text = None;
                    if section == Section::Regions {
                        self.report_regions();
                    }
                    self.at += 1;
                }
                Item::MapMarkers => {
                    self.at += 1;
                    self.report_regions();
                    let n = self.n_map_markers();
                    self.show(Section::Regions, format!("{}{}", prompt::map_sentence(), MAP_MARKER.repeat(n)));
                    let prefix = self.tokens.map_sentence.clone();
                    return self.marker_feed(&prefix, Marker::Map, n, &[]);
                }
                Item::ScoreMarker => {
                    self.at += 1;
                    self.show(Section::Analysis, format!("{}{}.", prompt::score_sentence(), SCORE_MARKER));
                    let (prefix, suffix) = (self.tokens.score_sentence.clone(), self.tokens.period.clone());
                    return self.marker_feed(&prefix, Marker::Score, 1, &suffix);
                }
                Item::NativeAnswer { max_tokens } => {
                    if self.text.is_none() {
                        self.enter(Section::Description);
                        self.text = Some(SectionText::new(&[]));
                        return Step::Generate { max_tokens, sampling: self.captured.sampling };
                    }
                    self.text = None;
                    self.report_regions();
                    self.at += 1;
                }
                Item::CompleteNativeMarkers => {
                    self.at += 1;
                    let missing_maps = self.n_map_markers().saturating_sub(self.captured.map_hidden.len());
                    if missing_maps > 0 {
                        self.show(Section::Regions, MAP_MARKER.repeat(missing_maps));
                        // Re-entered below for the score marker if that is missing too.
                        self.at -= 1;
                        return self.marker_feed(&[], Marker::Map, missing_maps, &[]);
                    }
                    if self.captured.score_hidden.is_none() {
                        self.show(Section::Analysis, format!("{}{}.", prompt::score_sentence(), SCORE_MARKER));
                        let (prefix, suffix) = (self.tokens.score_sentence.clone(), self.tokens.period.clone());
                        return self.marker_feed(&prefix, Marker::Score, 1, &suffix);
                    }
                }
                Item::Rating => {
                    if self.captured.rating.is_none() {
                        self.feed_captures.clear();
                        return Step::Feed { tokens: self.tokens.rating_turn.clone(), capture: Vec::new(), logits: true };
                    }
                    self.at += 1;
                }
            }
        }
    }

    fn on_token(&mut self, token: Token, bytes: &[u8]) -> TokenVerdict {
        self.events.count_generated();
        let native = matches!(self.plan.get(self.at), Some(Item::NativeAnswer { .. }));
        let Some(text) = self.text.as_mut() else { return TokenVerdict::Stop { rollback: 0 } };
        let progress = text.push(bytes);
        let verdict = match progress {
            Progress::Text(t) => {
                if native {
                    let section = Self::native_section_of(self.text.as_ref().map(|t| t.text()).unwrap_or(""));
                    self.native_section = section;
                    self.show(section, t);
                } else if let Some(section) = self.section {
                    self.show(section, t);
                }
                TokenVerdict::Continue
            }
            Progress::Stop { text, rollback } => {
                if let Some(section) = self.section {
                    self.show(section, text);
                }
                TokenVerdict::Stop { rollback }
            }
        };
        if native && verdict == TokenVerdict::Continue {
            let marker = if Some(&token) == self.tokens.map_marker.first() {
                Some(Marker::Map)
            } else if Some(&token) == self.tokens.score_marker.first() {
                Some(Marker::Score)
            } else {
                None
            };
            if marker.is_some() {
                self.native_sampled_marker = marker;
                return TokenVerdict::ContinueAndCapture;
            }
        }
        verdict
    }

    fn on_generation_end(&mut self, end: GenerationEnd) {
        if end == GenerationEnd::Length {
            self.captured.hit_length = true;
        }
        if let Some(text) = self.text.as_mut() {
            let rest = text.finish();
            let section = if matches!(self.plan.get(self.at), Some(Item::NativeAnswer { .. })) {
                self.native_section
            } else {
                self.section.unwrap_or(Section::Description)
            };
            self.show(section, rest);
        }
    }

    fn on_hidden(&mut self, index: Option<usize>, hidden: &[f32]) {
        let marker = match index {
            None => self.native_sampled_marker.take(),
            Some(i) => self.feed_captures.iter().find(|(at, _)| *at == i).map(|(_, m)| *m),
        };
        match marker {
            // Extra sampled [MAP]s beyond one per tile + global carry no tile to map: ignored.
            Some(Marker::Map) if self.captured.map_hidden.len() < self.n_map_markers() => {
                self.captured.map_hidden.push(hidden.to_vec());
                if self.captured.map_hidden.len() == self.n_map_markers() {
                    // Every [MAP] state is in: the trained heatmap can be computed while the model
                    // writes its analysis.
                    let captured = &mut self.captured;
                    captured.maps = self.finalizer.maps_in_background(|| MapsRequest {
                        projected: std::mem::take(&mut captured.projected),
                        map_hidden: captured.map_hidden.clone(),
                        tiling: captured.tiling.clone(),
                        out_size: captured.output_size(),
                    });
                }
            }
            Some(Marker::Score) if self.captured.score_hidden.is_none() => {
                self.captured.score_hidden = Some(hidden.to_vec())
            }
            _ => {}
        }
    }

    fn on_logits(&mut self, logits: &[f32]) {
        let mut level_logits = [f32::NEG_INFINITY; 5];
        for (slot, &token) in level_logits.iter_mut().zip(self.tokens.level_tokens.iter()) {
            *slot = logits.get(token as usize).copied().unwrap_or(f32::NEG_INFINITY);
        }
        let rating: Rating = rating_from_logits(level_logits);
        let best = (0..5).max_by(|&a, &b| rating.probabilities[a].total_cmp(&rating.probabilities[b])).unwrap_or(0);
        self.show(Section::Rating, format!("{} {}", prompt::RATING_ANSWER_PREFIX, LEVELS[best].0));
        self.captured.rating = Some(rating);
    }

    fn on_image_features(&mut self, features: &[f32], n_tokens: usize) {
        self.captured.tokens_per_tile = n_tokens;
        if let Some(pending) = self.finalizer.project_in_background(features) {
            self.captured.projected.push(pending);
        }
        if self.captured.emit_captures {
            self.captured.features.push(features.to_vec());
        }
    }

    fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }

    fn finish(&mut self, end: SequenceEnd, stats: &SequenceStats) {
        let captured = std::mem::take(&mut self.captured);
        let (closed, _) = super::events::event_channel();
        let events = std::mem::replace(&mut self.events, closed);
        self.finalizer.submit(captured, end, stats.clone(), events);
    }
}

#[cfg(test)]
#[path = "cot_program_tests.rs"]
mod tests;
