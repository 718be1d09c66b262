//! The typed events an evaluation emits, in order, and the channel that carries them.

use std::time::Duration;

use ndarray::Array2;
use serde::Serialize;
use tokio::sync::mpsc;

use super::boxes::RegionBox;
use super::explanation::Section;
use super::tiling::Tiling;

/// Which part of the system produced a heatmap or score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputMode {
    /// From a stock model: grounding boxes and rating-word probabilities.
    ZeroShot,
    /// From the trained HEIE heads.
    Trained,
}

/// How the chain of thought is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptMode {
    /// The engine writes headings and marker text; the model writes each section.
    Guided,
    /// The vocabulary has `[MAP]`/`[SCORE]` tokens: the model writes everything, markers captured when sampled.
    Native,
}

/// Why an evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    Completed,
    Cancelled,
    /// A section hit its token cap or the context filled (the outputs are still produced).
    Length,
    Error,
}

/// Where time went, measured by the engine and the pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub queued_ms: f64,
    pub image_encode_ms: f64,
    pub prefill_ms: f64,
    /// The image-embedding part of `prefill_ms`.
    pub image_prefill_ms: f64,
    pub decode_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
    pub time_to_first_token_ms: f64,
    pub decode_tokens_per_s: f64,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Token counts of one evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TokenCounts {
    pub prompt: u32,
    pub image: u32,
    pub generated: u32,
}

/// A zero-shot or trained heatmap at the requested size, values in [0, 1].
#[derive(Debug, Clone)]
pub struct HeatmapOutput {
    pub map: Array2<f32>,
    pub mode: OutputMode,
    /// Trained mode: the per-pixel weight of the local (tile) map in the fusion, for debugging.
    pub local_weight: Option<Array2<f32>>,
}

/// The trained heads' intermediate values, for debugging and the paper's ablations.
#[derive(Debug, Clone, Serialize)]
pub struct TrainedScoreParts {
    pub s_token: f32,
    pub s_map: f32,
}

/// A plausibility score in [0, 1] (1 = flawless).
#[derive(Debug, Clone, Serialize)]
pub struct ScoreOutput {
    pub score: f32,
    pub mode: OutputMode,
    /// Rating-word probabilities (excellent, good, fair, poor, bad), from the zero-shot rating turn.
    pub level_probabilities: [f32; 5],
    pub trained: Option<TrainedScoreParts>,
}

/// One event of an evaluation. Order: Started, then per section StageStarted and TextDeltas (Regions
/// interleaved after the regions section), then Heatmap(s), Score(s), Done. An Error replaces Done.
#[derive(Debug, Clone)]
pub enum EvalEvent {
    Started { request_id: u64, tiling: Tiling, mode: OutputMode, prompt_mode: PromptMode },
    StageStarted(Section),
    TextDelta { section: Section, text: String },
    Region(RegionBox),
    Heatmap(HeatmapOutput),
    Score(ScoreOutput),
    /// What the language model produced for the heads (only with `EvalOptions::emit_captures`).
    Captures(std::sync::Arc<super::captured::Captured>),
    Done { finish_reason: FinishReason, timings: Timings, tokens: TokenCounts },
    Error(String),
}

/// The sending side of an evaluation's bounded event channel, used from the engine thread.
///
/// The engine thread must never wait on a slow client, so sends never block: when the channel is
/// full, text deltas are merged and held until there is room; other events wait in order behind them.
pub struct EventSender {
    tx: mpsc::Sender<EvalEvent>,
    backlog: std::collections::VecDeque<EvalEvent>,
}

pub type EventReceiver = mpsc::Receiver<EvalEvent>;

/// Events a request may have waiting before text deltas start to merge.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;

pub fn event_channel() -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    (EventSender { tx, backlog: Default::default() }, rx)
}

impl EventSender {
    /// Queues an event; returns false when the receiver is gone (the client disconnected).
    pub fn send(&mut self, event: EvalEvent) -> bool {
        if let (EvalEvent::TextDelta { section, text }, Some(EvalEvent::TextDelta { section: last, text: held })) =
            (&event, self.backlog.back_mut())
        {
            if last == section {
                held.push_str(text);
                return self.flush();
            }
        }
        self.backlog.push_back(event);
        self.flush()
    }

    /// Moves held events into the channel as far as there is room.
    pub fn flush(&mut self) -> bool {
        while let Some(event) = self.backlog.pop_front() {
            match self.tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Hands over everything still held, at the end of a request. The caller (the finalizer, which
    /// serves every evaluation in turn) must not wait on one client that has stopped reading: what
    /// does not fit now is delivered by a thread of its own, which ends once the client has taken it
    /// or has gone away.
    pub fn deliver_rest(mut self) {
        if !self.flush() || self.backlog.is_empty() {
            return;
        }
        let delivery = move || {
            while let Some(event) = self.backlog.pop_front() {
                if self.tx.blocking_send(event).is_err() {
                    return;
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().name("heie-deliver".into()).spawn(delivery) {
            tracing::error!("could not start a thread for the last events of a request (they are lost): {e}");
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn stage(n: u8) -> EvalEvent {
        // Stage events never merge, so each takes a place in the channel.
        EvalEvent::StageStarted(if n.is_multiple_of(2) { Section::Description } else { Section::Analysis })
    }

    #[test]
    fn the_last_events_of_a_stalled_client_do_not_hold_up_the_caller_and_all_arrive_in_order() {
        let (mut events, mut receiver) = event_channel();
        let n = EVENT_CHANNEL_CAPACITY + 40;
        for i in 0..n {
            assert!(events.send(stage(i as u8)));
        }
        // Nobody reads: the channel is full and 40 events are held.
        let t0 = Instant::now();
        events.deliver_rest();
        assert!(t0.elapsed() < Duration::from_secs(1), "deliver_rest waited for the client");
        let mut received = Vec::new();
        while received.len() < n {
            received.push(receiver.blocking_recv().expect("every event arrives"));
        }
        for (i, e) in received.iter().enumerate() {
            assert!(matches!((e, i % 2), (EvalEvent::StageStarted(Section::Description), 0) | (EvalEvent::StageStarted(Section::Analysis), 1)), "event {i} out of order");
        }
        assert!(receiver.blocking_recv().is_none(), "the delivery thread ends and closes the channel");
    }
}
