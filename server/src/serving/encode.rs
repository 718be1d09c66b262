//! Pipeline events → wire events: the outgoing half of the edge. Heatmaps are resized to the
//! requested size (the pipeline already renders at it; this guards the contract) and encoded once
//! per requested encoding.

use std::sync::Arc;

use heie_proto::v1 as pb;

use crate::pipeline::score_band::band_of;
use image::imageops::FilterType;
use image::RgbImage;

use crate::pipeline::boxes::RegionBox;
use crate::pipeline::events::{FinishReason, HeatmapOutput, ScoreOutput, Timings, TokenCounts};
use crate::pipeline::explanation::Section;
use crate::pipeline::heatmap::{gray_png, overlay_png, resize, to_f32_le, to_gray_png};
use crate::pipeline::region_category::RegionCategory;
use crate::pipeline::regions::{Region, RegionSource};
use crate::pipeline::rating::LEVELS;
use crate::pipeline::tiling::Tiling;
use crate::pipeline::{EvalEvent, OutputMode, PromptMode};

/// How much of the colour map the overlay encoding blends over the image.
const OVERLAY_ALPHA: f32 = 0.6;

/// What one pipeline event becomes on the wire.
pub enum Outgoing {
    /// Zero or more wire events (internal events like stage starts have no wire form).
    Events(Vec<pb::EvaluateEvent>),
    /// The evaluation failed after it started; the detail to report.
    Failed(String),
    /// The evaluation never started (the server began shutting down while it was queued).
    Refused,
}

/// Encodes the events of one image's evaluation.
pub struct EventEncoder {
    /// The input image's size, for region boxes in pixels.
    image_size: (u32, u32),
    /// The picture the overlay encoding blends the map over (only when one was asked for), already
    /// at the heatmap's size: the full decoded image is not kept for the length of an evaluation.
    overlay_base: Option<Arc<RgbImage>>,
    encodings: Vec<pb::HeatmapEncoding>,
    heatmap_size: (u32, u32),
    device: String,
}

impl EventEncoder {
    pub fn new(
        image_size: (u32, u32),
        overlay_base: Option<Arc<RgbImage>>,
        encodings: Vec<pb::HeatmapEncoding>,
        heatmap_size: (u32, u32),
        device: String,
    ) -> Self {
        EventEncoder { image_size, overlay_base, encodings, heatmap_size, device }
    }

    /// Whether this event needs CPU work worth moving off the async runtime.
    pub fn is_heavy(event: &EvalEvent) -> bool {
        matches!(event, EvalEvent::Heatmap(_) | EvalEvent::Regions(_))
    }

    pub fn encode(&self, event: EvalEvent) -> Outgoing {
        use pb::evaluate_event::Event;
        let wrap = |e: Event| pb::EvaluateEvent { event: Some(e) };
        let one = |e: Event| Outgoing::Events(vec![wrap(e)]);
        match event {
            EvalEvent::Started { request_id, tiling, mode, prompt_mode } => one(Event::Started(started(request_id, &tiling, mode, prompt_mode))),
            EvalEvent::TextDelta { section: s, text } => {
                one(Event::TextDelta(pb::TextDelta { section: section(s) as i32, text }))
            }
            EvalEvent::Region(b) => one(Event::RegionBox(region(&b, self.image_size.0, self.image_size.1))),
            EvalEvent::Heatmap(h) => Outgoing::Events(self.heatmaps(h).into_iter().map(|h| wrap(Event::Heatmap(h))).collect()),
            EvalEvent::Score(s) => one(Event::Score(score(&s))),
            EvalEvent::Regions(r) => one(Event::Regions(pb::Regions { regions: r.iter().map(region_of_image).collect() })),
            EvalEvent::Done { finish_reason, timings, tokens, summary } => {
                one(Event::Done(pb::Done { summary, ..done(finish_reason, &timings, &tokens, &self.device, String::new()) }))
            }
            EvalEvent::Error(message) => Outgoing::Failed(message),
            EvalEvent::Refused => Outgoing::Refused,
            EvalEvent::StageStarted(_) | EvalEvent::Captures(_) => Outgoing::Events(Vec::new()),
        }
    }

    fn heatmaps(&self, h: HeatmapOutput) -> Vec<pb::Heatmap> {
        let (width, height) = self.heatmap_size;
        let map = if h.map.dim() == (height as usize, width as usize) { h.map } else { resize(&h.map, width, height) };
        let source = match h.mode {
            OutputMode::Trained => pb::HeatmapSource::Fused,
            OutputMode::ZeroShot => pb::HeatmapSource::ZeroShot,
        };
        self.encodings
            .iter()
            .map(|&encoding| {
                let data = match encoding {
                    pb::HeatmapEncoding::RawF32Le => to_f32_le(&map),
                    pb::HeatmapEncoding::OverlayPng => {
                        let resized;
                        let base = match &self.overlay_base {
                            Some(b) if b.dimensions() == (width, height) => b.as_ref(),
                            Some(b) => {
                                resized = image::imageops::resize(b.as_ref(), width, height, FilterType::Triangle);
                                &resized
                            }
                            // Not kept because not asked for: grey, never reached through the service.
                            None => {
                                resized = RgbImage::from_pixel(width, height, image::Rgb([128, 128, 128]));
                                &resized
                            }
                        };
                        overlay_png(base, &map, OVERLAY_ALPHA)
                    }
                    // Validated at the edge: only known encodings reach here; PNG8 is the default.
                    pb::HeatmapEncoding::Png8 | pb::HeatmapEncoding::Unspecified => to_gray_png(&map),
                };
                pb::Heatmap { width, height, encoding: encoding as i32, data, source: source as i32 }
            })
            .collect()
    }
}

pub fn heads_mode(mode: OutputMode) -> pb::HeadsMode {
    match mode {
        OutputMode::ZeroShot => pb::HeadsMode::ZeroShot,
        OutputMode::Trained => pb::HeadsMode::Trained,
    }
}

pub fn prompt_mode(mode: PromptMode) -> pb::PromptMode {
    match mode {
        PromptMode::Guided => pb::PromptMode::Guided,
        PromptMode::Native => pb::PromptMode::Native,
    }
}

fn section(s: Section) -> pb::Section {
    match s {
        Section::Description => pb::Section::Description,
        Section::Regions => pb::Section::Regions,
        Section::Analysis => pb::Section::Analysis,
        Section::Rating => pb::Section::Rating,
    }
}

fn started(request_id: u64, tiling: &Tiling, mode: OutputMode, prompt: PromptMode) -> pb::Started {
    pb::Started {
        request_id: request_id.to_string(),
        tiles: Some(pb::Tiles {
            cols: tiling.grid.cols,
            rows: tiling.grid.rows,
            has_thumbnail: tiling.has_thumbnail,
            tile_size: tiling.tile_size,
        }),
        mode: heads_mode(mode) as i32,
        prompt_mode: prompt_mode(prompt) as i32,
        image_width: tiling.original_width,
        image_height: tiling.original_height,
    }
}

fn region(b: &RegionBox, width: u32, height: u32) -> pb::RegionBox {
    let [pixel_x1, pixel_y1, pixel_x2, pixel_y2] = b.pixel_bounds(width, height);
    pb::RegionBox {
        label: b.label.clone().unwrap_or_default(),
        x1: b.x1,
        y1: b.y1,
        x2: b.x2,
        y2: b.y2,
        pixel_x1,
        pixel_y1,
        pixel_x2,
        pixel_y2,
    }
}

/// One flagged region; its mask is made at image size and encoded here, one region at a time.
fn region_of_image(r: &Region) -> pb::Region {
    let [x1, y1, x2, y2] = r.bounds;
    let [pixel_x1, pixel_y1, pixel_x2, pixel_y2] = r.pixels;
    let (width, height) = r.mask.size();
    pb::Region {
        id: r.id,
        label: r.label.clone(),
        sentences: r.sentences.clone(),
        category: region_category(r.category) as i32,
        r#box: Some(pb::RegionBox { label: r.label.clone(), x1, y1, x2, y2, pixel_x1, pixel_y1, pixel_x2, pixel_y2 }),
        severity: r.severity,
        mask_png: gray_png(width, height, r.mask.to_gray()),
        source: match r.source {
            RegionSource::GroundedBox => pb::RegionSource::GroundedBox,
            RegionSource::HeatmapComponent => pb::RegionSource::HeatmapComponent,
        } as i32,
    }
}

fn region_category(c: RegionCategory) -> pb::RegionCategory {
    match c {
        RegionCategory::Hand => pb::RegionCategory::Hand,
        RegionCategory::Face => pb::RegionCategory::Face,
        RegionCategory::Body => pb::RegionCategory::Body,
        RegionCategory::Text => pb::RegionCategory::Text,
        RegionCategory::Object => pb::RegionCategory::Object,
        RegionCategory::Physics => pb::RegionCategory::Physics,
        RegionCategory::Background => pb::RegionCategory::Background,
        RegionCategory::Other => pb::RegionCategory::Other,
    }
}

fn score(s: &ScoreOutput) -> pb::Score {
    pb::Score {
        score: s.score,
        mode: heads_mode(s.mode) as i32,
        // Zero-shot scores are the expectation over these; trained scores may not have them.
        levels: if s.level_probabilities.iter().any(|p| *p > 0.0) {
            LEVELS
                .iter()
                .zip(s.level_probabilities)
                .map(|((level, _), probability)| pb::LevelProbability { level: level.to_string(), probability })
                .collect()
        } else {
            Vec::new()
        },
        s_token: s.trained.as_ref().map(|t| t.s_token),
        s_map: s.trained.as_ref().map(|t| t.s_map),
        band: band_of(s.score).name.to_string(),
        uncalibrated_score: s.uncalibrated,
    }
}

pub fn finish_reason(f: FinishReason) -> pb::FinishReason {
    match f {
        FinishReason::Completed => pb::FinishReason::Completed,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::Error => pb::FinishReason::Error,
    }
}

pub fn done(f: FinishReason, t: &Timings, tokens: &TokenCounts, device: &str, message: String) -> pb::Done {
    pb::Done {
        timings: Some(pb::Timings {
            preprocess_ms: t.preprocess_ms,
            image_encode_ms: t.image_encode_ms,
            prefill_ms: t.prefill_ms,
            decode_ms: t.decode_ms,
            decode_tokens_per_s: t.decode_tokens_per_s,
            total_ms: t.total_ms,
            time_to_first_token_ms: t.time_to_first_token_ms,
            queue_ms: t.queued_ms,
            heads_ms: t.postprocess_ms,
            image_cached: t.image_cached,
        }),
        tokens: Some(pb::TokenCounts { prompt_tokens: tokens.prompt, image_tokens: tokens.image, generated_tokens: tokens.generated }),
        finish_reason: finish_reason(f) as i32,
        device: device.to_string(),
        message,
        summary: String::new(),
    }
}

/// The Done event of an image that failed inside a batch (the stream itself goes on).
pub fn failed_done(message: &str, device: &str) -> pb::EvaluateEvent {
    pb::EvaluateEvent {
        event: Some(pb::evaluate_event::Event::Done(done(
            FinishReason::Error,
            &Timings::default(),
            &TokenCounts::default(),
            device,
            super::error::clean_message(message),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn heatmaps_come_at_the_requested_size_in_every_encoding() {
        let image = Arc::new(RgbImage::from_pixel(16, 8, image::Rgb([10, 20, 30])));
        let encodings = vec![pb::HeatmapEncoding::RawF32Le, pb::HeatmapEncoding::Png8, pb::HeatmapEncoding::OverlayPng];
        let encoder = EventEncoder::new((40, 30), Some(image), encodings, (16, 8), "cpu".into());
        let map = Array2::from_shape_fn((30, 40), |(r, c)| ((r + c) % 2) as f32);
        let Outgoing::Events(events) = encoder.encode(EvalEvent::Heatmap(HeatmapOutput { map, mode: OutputMode::ZeroShot, local_weight: None })) else {
            panic!("heatmaps are events")
        };
        assert_eq!(events.len(), 3);
        for e in events {
            let Some(pb::evaluate_event::Event::Heatmap(h)) = e.event else { panic!("a heatmap") };
            assert_eq!((h.width, h.height), (16, 8));
            assert_eq!(h.source, pb::HeatmapSource::ZeroShot as i32);
            match pb::HeatmapEncoding::try_from(h.encoding).unwrap() {
                pb::HeatmapEncoding::RawF32Le => assert_eq!(h.data.len(), 16 * 8 * 4),
                _ => {
                    let img = image::load_from_memory(&h.data).unwrap();
                    assert_eq!((img.width(), img.height()), (16, 8));
                }
            }
        }
    }

    #[test]
    fn region_pixels_are_inside_the_image_and_never_empty() {
        let b = RegionBox { label: Some("hand".into()), x1: 0.0, y1: 500.0, x2: 1000.0, y2: 500.4 };
        let r = region(&b, 100, 50);
        assert_eq!((r.pixel_x1, r.pixel_x2), (0, 100));
        assert_eq!(r.pixel_y1, 25);
        assert!(r.pixel_y2 > r.pixel_y1 && r.pixel_y2 <= 50);
        assert_eq!(r.label, "hand");
    }
}
