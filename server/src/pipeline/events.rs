//! The typed events an evaluation emits, in order, and the channel that carries them.

use std::time::Duration;

use ndarray::Array2;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::Notify;

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
    /// Every tile's features came from the engine's image cache (this image was judged before).
    pub image_cached: bool,
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
    /// Set when a user's calibration replaced `score` (primary score only): the score before it.
    pub uncalibrated: Option<f32>,
}

/// One event of an evaluation. Order: Started, then per section StageStarted and TextDeltas (Region
/// boxes interleaved after the regions section), then Heatmap(s), Score(s), Regions (when a score
/// was computed), Done. An Error replaces Done.
#[derive(Debug, Clone)]
pub enum EvalEvent {
    Started { request_id: u64, tiling: Tiling, mode: OutputMode, prompt_mode: PromptMode },
    StageStarted(Section),
    TextDelta { section: Section, text: String },
    Region(RegionBox),
    Heatmap(HeatmapOutput),
    Score(ScoreOutput),
    /// The flagged regions as data (see `regions.rs`); once, after the scores, possibly empty.
    Regions(Vec<super::regions::Region>),
    /// What the language model produced for the heads (only with `EvalOptions::emit_captures`).
    Captures(std::sync::Arc<super::captured::Captured>),
    /// `summary`: the one-line verdict for people ([`super::summary::summary_line`]).
    Done { finish_reason: FinishReason, timings: Timings, tokens: TokenCounts, summary: String },
    Error(String),
    /// The evaluation never started: the server began shutting down while it was queued (retrying
    /// it elsewhere is safe). Replaces Done.
    Refused,
}

/// The sending side of an evaluation's event queue, used from the engine and finalizer threads.
///
/// The engine thread must never wait on a slow client, so sends never block: once
/// [`EVENT_CHANNEL_CAPACITY`] events are waiting, text deltas merge into the last waiting one, so a
/// client that stops reading holds a bounded amount (every other event kind comes a bounded number
/// of times per request). When the sender is dropped, what is waiting stays for the receiver to
/// take; nothing — no thread, no task — waits on the client's behalf.
pub struct EventSender {
    shared: Arc<Queue>,
}

/// The receiving side. Dropping it is how a request is cancelled: the sender sees
/// [`EventSender::is_closed`], and waiting events are freed at once.
pub struct EventReceiver {
    shared: Arc<Queue>,
}

/// Events a request may have waiting before text deltas start to merge.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;

struct Queue {
    state: Mutex<QueueState>,
    /// Tokens the model has written for this request so far, readable while it runs and after it was
    /// cancelled (when its Done, which carries the engine's count, never reaches anyone).
    generated: AtomicU32,
    /// Wakes an async receiver.
    ready: Notify,
    /// Wakes a blocking receiver.
    ready_blocking: Condvar,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<EvalEvent>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue half-updated (push/pop are atomic),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.ready.notify_one();
        self.ready_blocking.notify_all();
    }
}

pub fn event_channel() -> (EventSender, EventReceiver) {
    let shared = Arc::new(Queue {
        state: Mutex::default(),
        generated: AtomicU32::new(0),
        ready: Notify::new(),
        ready_blocking: Condvar::new(),
    });
    (EventSender { shared: shared.clone() }, EventReceiver { shared })
}

impl EventSender {
    /// Queues an event; returns false when the receiver is gone (the client disconnected).
    pub fn send(&mut self, event: EvalEvent) -> bool {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return false;
        }
        let full = state.events.len() >= EVENT_CHANNEL_CAPACITY;
        match (&event, state.events.back_mut()) {
            (EvalEvent::TextDelta { section, text }, Some(EvalEvent::TextDelta { section: last, text: held }))
                if full && last == section =>
            {
                held.push_str(text)
            }
            _ => state.events.push_back(event),
        }
        drop(state);
        self.shared.wake();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_gone
    }

    /// Counts one token the model wrote.
    pub fn count_generated(&self) {
        self.shared.generated.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        self.shared.lock().sender_gone = true;
        self.shared.wake();
    }
}

/// Reads how many tokens a request's model wrote, independently of its receiver (which a cancelled
/// call drops first).
#[derive(Clone)]
pub struct GeneratedTokens {
    shared: Arc<Queue>,
}

impl GeneratedTokens {
    pub fn get(&self) -> u32 {
        self.shared.generated.load(Ordering::Relaxed)
    }
}

impl EventReceiver {
    /// The request's count of generated tokens, readable after this receiver is dropped.
    pub fn generated_tokens(&self) -> GeneratedTokens {
        GeneratedTokens { shared: self.shared.clone() }
    }

    /// The next event, waiting for it; `None` once the sender is gone and everything was taken.
    pub async fn recv(&mut self) -> Option<EvalEvent> {
        loop {
            {
                let mut state = self.shared.lock();
                if let Some(event) = state.events.pop_front() {
                    return Some(event);
                }
                if state.sender_gone {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits, so a send between the check above and
            // this await is not missed.
            self.shared.ready.notified().await;
        }
    }

    /// [`EventReceiver::recv`] for a thread outside any async runtime.
    pub fn blocking_recv(&mut self) -> Option<EvalEvent> {
        let mut state = self.shared.lock();
        loop {
            if let Some(event) = state.events.pop_front() {
                return Some(event);
            }
            if state.sender_gone {
                return None;
            }
            state = self.shared.ready_blocking.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<EvalEvent> {
        self.shared.lock().events.pop_front()
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let dropped = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.events)
        };
        // Heatmaps can be large: freed here, outside the lock.
        drop(dropped);
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
    fn a_stalled_receiver_never_holds_up_the_sender_and_every_event_arrives_in_order() {
        let (mut events, mut receiver) = event_channel();
        let n = EVENT_CHANNEL_CAPACITY + 40;
        let t0 = Instant::now();
        for i in 0..n {
            assert!(events.send(stage(i as u8)));
        }
        // Nobody reads, and the sender finishes and goes away: nothing waits for the client.
        drop(events);
        assert!(t0.elapsed() < Duration::from_secs(1), "the sender waited for the client");
        let mut received = Vec::new();
        while let Some(e) = receiver.blocking_recv() {
            received.push(e);
        }
        assert_eq!(received.len(), n, "every event arrives, then the end");
        for (i, e) in received.iter().enumerate() {
            assert!(matches!((e, i % 2), (EvalEvent::StageStarted(Section::Description), 0) | (EvalEvent::StageStarted(Section::Analysis), 1)), "event {i} out of order");
        }
    }

    #[test]
    fn text_merges_only_when_the_queue_is_full_and_a_dropped_receiver_closes_the_sender() {
        let (mut events, mut receiver) = event_channel();
        let delta = |t: &str| EvalEvent::TextDelta { section: Section::Analysis, text: t.into() };
        for _ in 0..EVENT_CHANNEL_CAPACITY {
            events.send(delta("a"));
        }
        for _ in 0..1000 {
            events.send(delta("b"));
        }
        let mut n = 0;
        let mut text = String::new();
        while let Some(EvalEvent::TextDelta { text: t, .. }) = receiver.try_recv() {
            n += 1;
            text.push_str(&t);
        }
        assert_eq!(n, EVENT_CHANNEL_CAPACITY, "the overflow merged into the last waiting delta");
        assert_eq!(text.len(), EVENT_CHANNEL_CAPACITY + 1000, "no text lost");
        assert!(!events.is_closed());
        drop(receiver);
        assert!(events.is_closed());
        assert!(!events.send(delta("c")), "a send after the client left reports it");
    }

    #[tokio::test]
    async fn an_async_receiver_wakes_for_events_sent_from_another_thread() {
        let (mut events, mut receiver) = event_channel();
        let sender = std::thread::spawn(move || {
            for i in 0..50u8 {
                events.send(stage(i));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut n = 0;
        while receiver.recv().await.is_some() {
            n += 1;
        }
        sender.join().unwrap();
        assert_eq!(n, 50);
    }
}
