//! Collects an evaluation's event stream into one result, for callers that want the whole answer
//! (the CLI, Rerank, the benchmark, tests).

use serde::Serialize;

use super::boxes::RegionBox;
use super::captured::SectionTexts;
use super::regions::Region;
use super::events::{EvalEvent, EventReceiver, FinishReason, HeatmapOutput, OutputMode, PromptMode, ScoreOutput, Timings, TokenCounts};
use super::tiling::Tiling;

/// Everything an evaluation produced.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub request_id: u64,
    pub tiling: Option<Tiling>,
    pub mode: Option<OutputMode>,
    pub prompt_mode: Option<PromptMode>,
    pub explanation: SectionTexts,
    pub boxes: Vec<RegionBox>,
    /// Heatmaps in the order sent: the primary (trained when heads are loaded) first.
    #[serde(skip)]
    pub heatmaps: Vec<HeatmapOutput>,
    /// Scores in the order sent: the primary first.
    pub scores: Vec<ScoreOutput>,
    /// The flagged regions (empty when none, or when no score was computed). Masks are not JSON:
    /// `cli/report.rs` writes them as files.
    #[serde(skip)]
    pub regions: Vec<Region>,
    pub finish_reason: Option<FinishReason>,
    pub timings: Timings,
    pub tokens: TokenCounts,
    pub error: Option<String>,
    /// The one-line verdict for people, from Done (empty when the evaluation failed).
    pub summary: String,
    /// Tile features and marker hidden states, when asked for.
    #[serde(skip)]
    pub captures: Option<std::sync::Arc<super::captured::Captured>>,
    /// Event kinds in arrival order, for checking the stream's shape.
    #[serde(skip)]
    pub event_order: Vec<&'static str>,
}

impl EvalResult {
    /// The primary score (trained when heads are loaded, else zero-shot).
    pub fn score(&self) -> Option<f32> {
        self.scores.first().map(|s| s.score)
    }

    pub fn heatmap(&self) -> Option<&HeatmapOutput> {
        self.heatmaps.first()
    }

    /// Blocks until the stream ends, calling `on_event` for each event as it arrives.
    pub fn collect(mut receiver: EventReceiver, mut on_event: impl FnMut(&EvalEvent)) -> EvalResult {
        let mut result = EvalResult {
            request_id: 0,
            tiling: None,
            mode: None,
            prompt_mode: None,
            explanation: SectionTexts::default(),
            boxes: Vec::new(),
            heatmaps: Vec::new(),
            scores: Vec::new(),
            regions: Vec::new(),
            finish_reason: None,
            timings: Timings::default(),
            tokens: TokenCounts::default(),
            error: None,
            summary: String::new(),
            captures: None,
            event_order: Vec::new(),
        };
        while let Some(event) = receiver.blocking_recv() {
            on_event(&event);
            result.absorb(event);
        }
        result
    }

    /// Folds one event into the result.
    pub fn absorb(&mut self, event: EvalEvent) {
        self.event_order.push(event_kind(&event));
        match event {
            EvalEvent::Started { request_id, tiling, mode, prompt_mode } => {
                self.request_id = request_id;
                self.tiling = Some(tiling);
                self.mode = Some(mode);
                self.prompt_mode = Some(prompt_mode);
            }
            EvalEvent::StageStarted(_) => {}
            EvalEvent::TextDelta { section, text } => self.explanation.append(section, &text),
            EvalEvent::Region(b) => self.boxes.push(b),
            EvalEvent::Heatmap(h) => self.heatmaps.push(h),
            EvalEvent::Score(s) => self.scores.push(s),
            EvalEvent::Regions(r) => self.regions = r,
            EvalEvent::Done { finish_reason, timings, tokens, summary } => {
                self.finish_reason = Some(finish_reason);
                self.summary = summary;
                self.timings = timings;
                self.tokens = tokens;
            }
            EvalEvent::Captures(c) => self.captures = Some(c),
            EvalEvent::Error(e) => {
                self.finish_reason = Some(FinishReason::Error);
                self.error = Some(e);
            }
            EvalEvent::Refused => {
                self.finish_reason = Some(FinishReason::Error);
                self.error = Some("the engine is shutting down; the evaluation was not started".into());
            }
        }
    }
}

/// A short name for each event kind.
pub fn event_kind(event: &EvalEvent) -> &'static str {
    match event {
        EvalEvent::Started { .. } => "started",
        EvalEvent::StageStarted(_) => "stage",
        EvalEvent::TextDelta { .. } => "text",
        EvalEvent::Region(_) => "region",
        EvalEvent::Heatmap(_) => "heatmap",
        EvalEvent::Score(_) => "score",
        EvalEvent::Regions(_) => "regions",
        EvalEvent::Captures(_) => "captures",
        EvalEvent::Done { .. } => "done",
        EvalEvent::Error(_) => "error",
        EvalEvent::Refused => "refused",
    }
}
