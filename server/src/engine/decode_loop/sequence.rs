//! One sequence in a slot and the moves it makes between decodes: asking its program for the next
//! step, taking the cached shared prefix instead of computing it, sampling a token and applying the
//! program's verdict on it.

use std::sync::atomic::Ordering;

use super::cached_states::Chain;
use super::image_work::ImageWork;
use super::DecodeLoop;
use crate::engine::program::{GenerationEnd, SequenceEnd, SequenceProgram, Step, TokenVerdict};
use crate::engine::runtime::{Runtime, Token, Vocabulary};
use crate::engine::sampler::Sampler;
use crate::engine::stats::SequenceStats;
use crate::engine::EngineError;

/// Where a sequence is in its current step.
pub(super) enum SlotState {
    /// Needs `next_step`.
    Ready,
    /// `publish`: these tokens are the shared prefix; once fed, the prefix cache takes their cells.
    Feeding { tokens: Vec<Token>, capture: Vec<usize>, logits: bool, done: usize, publish: bool },
    Generating { remaining: u32, sampler: Sampler, next: Option<(Token, bool)> },
    /// An image step in progress, done a piece per engine step while other sequences run.
    Imaging(ImageWork),
}

pub(super) struct Slot {
    pub seq: i32,
    pub program: Box<dyn SequenceProgram>,
    pub pos: i32,
    pub state: SlotState,
    pub stats: SequenceStats,
    /// Logits after the last completed Feed: where a following Generate samples its first token.
    pub pending_logits: Option<Vec<f32>>,
    /// The shared prefix, while the sequence holds exactly that prefix and nothing else: an image
    /// taken now starts a chain (`cached_states.rs`).
    pub prefix_only: Option<Vec<Token>>,
    pub chain: Chain,
    /// A step taken from the program but put off until the sequence has settled (`cached_states.rs`).
    pub held: Option<Step>,
    pub end: Option<SequenceEnd>,
}

impl Slot {
    pub fn new(seq: i32, program: Box<dyn SequenceProgram>, stats: SequenceStats) -> Slot {
        Slot {
            seq,
            program,
            pos: 0,
            state: SlotState::Ready,
            stats,
            pending_logits: None,
            prefix_only: None,
            chain: Chain::default(),
            held: None,
            end: None,
        }
    }
}

impl<R: Runtime> DecodeLoop<R> {
    /// Resolves slot `i` from `Ready` into Feeding/Generating/Imaging, taking trivial steps (empty
    /// feeds, a cached prefix, a generation's first token) on the way; notices cancellation. Long for
    /// a function because it is one `match` over the program's steps, each arm a few lines.
    pub(super) fn advance(&mut self, i: usize) {
        loop {
            let slot = &mut self.scheduler.slots[i];
            if slot.end.is_some() {
                return;
            }
            if slot.program.is_cancelled() {
                slot.end = Some(SequenceEnd::Cancelled);
                return;
            }
            match &slot.state {
                SlotState::Feeding { .. } | SlotState::Imaging(_) => return,
                SlotState::Generating { next: Some(_), .. } => return,
                SlotState::Generating { next: None, .. } => {
                    // First token of a generation: sample from the logits the previous Feed left.
                    let Some(logits) = slot.pending_logits.take() else {
                        slot.end = Some(SequenceEnd::Failed(EngineError::Decode(
                            "a generation step must follow text".into(),
                        )));
                        return;
                    };
                    self.sample_into(i, &logits);
                    continue;
                }
                SlotState::Ready => {}
            }
            // A held step was counted when it was first taken.
            let (step, fresh) = match slot.held.take() {
                Some(step) => (step, false),
                None => (slot.program.next_step(), true),
            };
            match step {
                Step::Finish => {
                    slot.end = Some(SequenceEnd::Completed);
                    return;
                }
                Step::Feed { tokens, capture, logits } => {
                    if tokens.is_empty() {
                        continue;
                    }
                    slot.prefix_only = None;
                    if fresh {
                        slot.stats.prompt_tokens += tokens.len() as u32;
                    }
                    if self.defer_text(i, &tokens, capture.is_empty() && !logits) {
                        continue;
                    }
                    if self.unsettled(i) {
                        self.settle(i, Step::Feed { tokens, capture, logits });
                        continue;
                    }
                    self.scheduler.slots[i].state = SlotState::Feeding { tokens, capture, logits, done: 0, publish: false };
                }
                Step::Prefix(tokens) => {
                    if slot.pos != 0 {
                        slot.end = Some(SequenceEnd::Failed(EngineError::Decode(
                            "a shared prefix must be the first step of a sequence".into(),
                        )));
                        return;
                    }
                    if tokens.is_empty() {
                        continue;
                    }
                    slot.stats.prompt_tokens += tokens.len() as u32;
                    slot.prefix_only = Some(tokens.clone());
                    let cached = self.prefix.as_ref().filter(|p| self.speedups.prefix_cache && p.tokens == tokens);
                    if let Some(cached) = cached {
                        match self.runtime.restore_cells(slot.seq, &cached.cells) {
                            Ok(()) => {
                                slot.pos = tokens.len() as i32;
                                slot.stats.cached_prompt_tokens += tokens.len() as u32;
                                self.metrics.prefix_cache_hits.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            // The sequence holds no cells after a failed restore: compute the prefix.
                            Err(e) => tracing::warn!(error = %e, "the cached prefix could not be restored; computing it"),
                        }
                    }
                    let publish = self.speedups.prefix_cache;
                    slot.state = SlotState::Feeding { tokens, capture: Vec::new(), logits: false, done: 0, publish };
                }
                Step::Generate { max_tokens, sampling } => {
                    slot.prefix_only = None;
                    if !self.reach_generation(i) {
                        self.settle(i, Step::Generate { max_tokens, sampling });
                        continue;
                    }
                    let slot = &mut self.scheduler.slots[i];
                    if slot.end.is_some() {
                        return;
                    }
                    slot.state = SlotState::Generating { remaining: max_tokens, sampler: Sampler::new(sampling), next: None };
                }
                Step::Images(tiles) => {
                    let prefix = slot.prefix_only.take();
                    if tiles.is_empty() {
                        continue;
                    }
                    if self.unsettled(i) {
                        self.settle(i, Step::Images(tiles));
                        continue;
                    }
                    self.start_image(i, tiles, prefix);
                    return;
                }
            }
        }
    }

    /// Samples the next token of generating slot `i` and applies the program's verdict.
    pub(super) fn sample_into(&mut self, i: usize, logits: &[f32]) {
        let slot = &mut self.scheduler.slots[i];
        let SlotState::Generating { remaining, sampler, next } = &mut slot.state else { return };
        let end = if *remaining == 0 {
            Some((GenerationEnd::Length, 0))
        } else {
            let token = sampler.sample(logits);
            *remaining -= 1;
            if slot.stats.first_token.is_none() {
                slot.stats.first_token = slot.stats.admitted_at.map(|t| t.elapsed());
            }
            let vocab = self.runtime.vocab();
            if vocab.is_eog(token) {
                Some((GenerationEnd::EndOfText, 0))
            } else {
                slot.stats.generated_tokens += 1;
                let bytes = vocab.token_bytes(token);
                match slot.program.on_token(token, &bytes) {
                    TokenVerdict::Continue => {
                        *next = Some((token, false));
                        None
                    }
                    TokenVerdict::ContinueAndCapture => {
                        *next = Some((token, true));
                        None
                    }
                    TokenVerdict::Stop { rollback } => Some((GenerationEnd::Stopped, rollback)),
                }
            }
        };
        if let Some((end, rollback)) = end {
            if rollback > 0 {
                slot.pos = (slot.pos - rollback as i32).max(0);
                self.runtime.remove_cells(slot.seq, slot.pos);
            }
            slot.state = SlotState::Ready;
            slot.pending_logits = None;
            slot.program.on_generation_end(end);
        }
    }
}
