//! Turns what the language model produced into the final outputs — heatmaps and scores — off the
//! engine thread, so rasterising, the trained heads and the last events never stall decoding.

use std::sync::mpsc::{channel, Sender};
use std::time::Instant;

use crate::engine::{Liveness, SequenceEnd, SequenceStats};

use super::calibrated::calibrated;
use super::captured::Captured;
use super::events::{
    ms, EvalEvent, EventSender, FinishReason, HeatmapOutput, OutputMode, ScoreOutput, Timings, TokenCounts,
};
use super::heatmap::rasterize_boxes;
use super::regions::{build_regions, Region, RegionInputs};
use super::summary::summary_line;
use crate::engine::injected_fault;
use super::heads_worker::{HeadsWorker, MapsRequest};
use super::pending::Pending;
use super::trained::TrainedHeads;
use crate::calibration::{Calibration, Features};
use heie_heads::{HeadsMaps, ProjectedView};
use std::sync::Arc;

struct FinalizeJob {
    captured: Captured,
    end: SequenceEnd,
    stats: SequenceStats,
    events: EventSender,
}

/// A handle to the finalizer thread; cloned into every program.
#[derive(Clone)]
pub struct Finalizer {
    jobs: Sender<FinalizeJob>,
    /// The heads' early work (see `heads_worker.rs`), when the server has trained heads.
    heads_worker: Option<HeadsWorker>,
}

impl Finalizer {
    /// Starts the finalizer thread; it ends when every handle is dropped.
    pub fn start(heads: Option<Arc<TrainedHeads>>) -> Finalizer {
        Finalizer::start_watched(heads, None, Liveness::default())
    }

    /// As [`Finalizer::start`], with a user's calibration applied to every primary score, reporting a
    /// panic of the thread to `liveness` (after a panic no evaluation could ever finish again, so the
    /// server must know).
    pub fn start_watched(heads: Option<Arc<TrainedHeads>>, calibration: Option<Arc<Calibration>>, liveness: Liveness) -> Finalizer {
        let (jobs, receiver) = channel::<FinalizeJob>();
        let finalizer = Finalizer { jobs, heads_worker: heads.clone().map(HeadsWorker::start) };
        std::thread::Builder::new()
            .name("heie-finalize".into())
            .spawn(move || {
                liveness.watch("finalizer", || {
                    for (n, job) in receiver.into_iter().enumerate() {
                        if injected_fault("finalizer", n as u64 + 1).is_some() {
                            panic!("injected fault: the finalizer panics at job {}", n + 1);
                        }
                        finalize(job, heads.as_deref(), calibration.as_deref());
                    }
                });
            })
            .expect("spawning the finalizer thread");
        finalizer
    }

    /// Starts the heads' work on one view's image features now, while the text is being written; None
    /// when the server has no trained heads.
    pub fn project_in_background(&self, features: &[f32]) -> Option<Pending<ProjectedView>> {
        self.heads_worker.as_ref().map(|worker| worker.project(features.to_vec()))
    }

    /// Starts one image's heatmap side now that its `[MAP]` states exist; None without trained heads.
    pub fn maps_in_background(&self, request: impl FnOnce() -> MapsRequest) -> Option<Pending<HeadsMaps>> {
        self.heads_worker.as_ref().map(|worker| worker.maps(request()))
    }

    pub fn submit(&self, captured: Captured, end: SequenceEnd, stats: SequenceStats, events: EventSender) {
        // The thread lives as long as any handle; a send can only fail during process teardown.
        let _ = self.jobs.send(FinalizeJob { captured, end, stats, events });
    }
}

/// The regions of one image, from its primary heatmap and score (see `regions.rs`).
fn regions_of(captured: &Captured, heatmap: &ndarray::Array2<f32>, score: f32, mode: OutputMode) -> Vec<Region> {
    build_regions(&RegionInputs {
        boxes: &captured.boxes,
        sections: &captured.sections,
        heatmap,
        mode,
        score,
        image_size: (captured.tiling.original_width, captured.tiling.original_height),
    })
}

fn finalize(job: FinalizeJob, heads: Option<&TrainedHeads>, calibration: Option<&Calibration>) {
    let FinalizeJob { captured, end, stats, mut events } = job;
    let t0 = Instant::now();
    let finish_reason = match &end {
        SequenceEnd::Completed if captured.hit_length => FinishReason::Length,
        SequenceEnd::Completed => FinishReason::Completed,
        SequenceEnd::Cancelled => FinishReason::Cancelled,
        SequenceEnd::Refused => {
            events.send(EvalEvent::Refused);
            return;
        }
        SequenceEnd::Failed(e) => {
            events.send(EvalEvent::Error(e.to_string()));
            return;
        }
    };
    // The primary score (the first one sent) decides the summary line; a calibration replaces it
    // before it is sent, so every client, the band and the summary see the calibrated score.
    let mut primary: Option<ScoreOutput> = None;
    if finish_reason != FinishReason::Cancelled {
        let (width, height) = captured.output_size();
        let mut trained = None;
        if let Some(heads) = heads {
            match heads.run(&captured) {
                Ok(outputs) => trained = Some(outputs),
                Err(e) => {
                    events.send(EvalEvent::Error(format!("trained heads failed: {e}")));
                    return;
                }
            }
        }
        let zero_shot = rasterize_boxes(&captured.boxes, width, height);
        // Regions are built from the primary heatmap and score, before the events take them.
        let regions = match (&trained, &captured.rating) {
            (Some((heatmap, score)), _) => Some(regions_of(&captured, &heatmap.map, score.score, OutputMode::Trained)),
            (None, Some(rating)) => Some(regions_of(&captured, &zero_shot, rating.score, OutputMode::ZeroShot)),
            (None, None) => None,
        };
        // What the calibration sees besides the raw score: the worst region severity per category.
        let primary_features =
            |raw: f32| Features::from_regions(raw, regions.iter().flatten().map(|r| (r.category, r.severity)));
        if let Some((heatmap, score)) = trained {
            let score = calibrated(score, calibration, primary_features);
            primary = Some(score.clone());
            events.send(EvalEvent::Heatmap(heatmap));
            events.send(EvalEvent::Score(score));
        }
        events.send(EvalEvent::Heatmap(HeatmapOutput { map: zero_shot, mode: OutputMode::ZeroShot, local_weight: None }));
        if let Some(rating) = &captured.rating {
            let mut score = ScoreOutput {
                score: rating.score,
                mode: OutputMode::ZeroShot,
                level_probabilities: rating.probabilities,
                trained: None,
                uncalibrated: None,
            };
            if primary.is_none() {
                score = calibrated(score, calibration, primary_features);
                primary = Some(score.clone());
            }
            events.send(EvalEvent::Score(score));
        }
        if let Some(regions) = regions {
            events.send(EvalEvent::Regions(regions));
        }
    }
    let tokens = TokenCounts { prompt: stats.prompt_tokens, image: stats.image_tokens, generated: stats.generated_tokens };
    let timings = Timings {
        preprocess_ms: ms(captured.preprocess),
        queued_ms: ms(stats.queued),
        image_encode_ms: ms(stats.image_encode),
        prefill_ms: ms(stats.prefill),
        image_prefill_ms: ms(stats.image_prefill),
        decode_ms: ms(stats.decode),
        postprocess_ms: ms(t0.elapsed()),
        total_ms: ms(captured.started.elapsed()),
        time_to_first_token_ms: stats.first_token.map(|f| ms(f) + ms(stats.queued) + ms(captured.preprocess)).unwrap_or(0.0),
        decode_tokens_per_s: stats.decode_tokens_per_s(),
        image_cached: stats.image_cached(),
    };
    let summary = summary_line(&captured.sections, primary.as_ref());
    if captured.emit_captures {
        events.send(EvalEvent::Captures(std::sync::Arc::new(captured)));
    }
    events.send(EvalEvent::Done { finish_reason, timings, tokens, summary });
}
