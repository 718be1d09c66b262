//! The scheduler's decisions, kept free of any runtime call so they can be tested without a model:
//! which waiting jobs get slots (oldest first, into the lowest free sequence id), which are turned
//! away (cancelled while waiting, or refused once shutdown has begun), which sequences put rows into
//! this step's decode and how many (one token per generating sequence, prefill chunks in the room
//! left), whose image moves on, and which finished sequences leave their slots.
//!
//! What the decisions imply for the runtime (clearing a new sequence's cells, freeing an ended one's)
//! is left to the decode loop: [`Scheduler::start`] returns the id to clear, [`Scheduler::reap`] takes
//! a callback.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::sequence::{Slot, SlotState};
use crate::engine::metrics::EngineMetrics;
use crate::engine::program::SequenceEnd;
use crate::engine::stats::SequenceStats;
use crate::engine::{EngineError, Job};

/// One sequence's share of a decode step, in slot order; the batch builder turns it into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Planned {
    /// The token a generating sequence sampled last step.
    Token { slot: usize },
    /// The next `take` tokens of a feeding sequence's text.
    Chunk { slot: usize, take: usize },
}

pub(super) struct Scheduler {
    /// The sequences in a slot, kept in sequence-id order: with per-sequence KV streams llama.cpp
    /// puts only sequences with consecutive ids into one micro-batch, so gaps and disorder would
    /// split a decode step into several graph runs.
    pub slots: Vec<Slot>,
    /// Jobs taken off the channel that wait for a free slot, oldest first. Holding them here (at most
    /// `max_queue`, which `Engine::submit` enforces) lets a job cancelled while it waits leave the
    /// queue within one step, instead of keeping its place until a slot frees.
    waiting: VecDeque<Job>,
    free_seqs: Vec<i32>,
    metrics: Arc<EngineMetrics>,
}

impl Scheduler {
    pub fn new(n_slots: usize, metrics: Arc<EngineMetrics>) -> Scheduler {
        Scheduler { slots: Vec::new(), waiting: VecDeque::new(), free_seqs: (0..n_slots as i32).rev().collect(), metrics }
    }

    /// Nothing running and nothing waiting: the loop may block for the next command.
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.waiting.is_empty()
    }

    /// A job taken off the channel joins the back of the queue.
    pub fn enqueue(&mut self, job: Job) {
        self.waiting.push_back(job);
    }

    /// Ends the waiting jobs that must not start: all of them once shutdown has begun (`closing`,
    /// refused), else those cancelled while waiting. Returns whether admission may go on.
    pub fn turn_away(&mut self, closing: bool) -> bool {
        if closing {
            self.refuse_waiting();
            return false;
        }
        if self.waiting.iter().any(|job| job.program.is_cancelled()) {
            let (cancelled, waiting): (VecDeque<Job>, VecDeque<Job>) =
                std::mem::take(&mut self.waiting).into_iter().partition(|job| job.program.is_cancelled());
            self.waiting = waiting;
            for job in cancelled {
                self.end_queued(job, SequenceEnd::Cancelled);
            }
        }
        true
    }

    /// The oldest waiting job, when a slot is free for it.
    pub fn next_admission(&mut self) -> Option<Job> {
        if self.free_seqs.is_empty() {
            return None;
        }
        self.waiting.pop_front()
    }

    /// Puts an admitted job into the lowest free sequence id (see `slots` for why the lowest) and
    /// returns that id: the caller clears any cells the id still has.
    pub fn start(&mut self, job: Job) -> i32 {
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let lowest = (0..self.free_seqs.len()).min_by_key(|&k| self.free_seqs[k]).expect("admission checks for a free slot");
        let seq = self.free_seqs.swap_remove(lowest);
        let now = Instant::now();
        let stats = SequenceStats { queued: now - job.enqueued_at, admitted_at: Some(now), ..Default::default() };
        let at = self.slots.partition_point(|s| s.seq < seq);
        self.slots.insert(at, Slot::new(seq, job.program, stats));
        self.metrics.active.store(self.slots.len(), Ordering::Relaxed);
        seq
    }

    /// Ends every waiting job with [`SequenceEnd::Refused`] (shutdown: they never start).
    pub fn refuse_waiting(&mut self) {
        while let Some(job) = self.waiting.pop_front() {
            self.end_queued(job, SequenceEnd::Refused);
        }
    }

    /// Marks every running sequence cancelled (the loop is stopping); [`Scheduler::reap`] ends them.
    pub fn cancel_running(&mut self) {
        for slot in &mut self.slots {
            slot.end = Some(SequenceEnd::Cancelled);
        }
    }

    /// Ends a queued job that never started: refused (shutdown has begun) or cancelled while waiting.
    fn end_queued(&mut self, mut job: Job, end: SequenceEnd) {
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let stats = SequenceStats { queued: job.enqueued_at.elapsed(), ..Default::default() };
        self.metrics.record_end(&end);
        job.program.finish(end, &stats);
    }

    /// Decides this step's rows into `plan` (cleared first; reused so a step allocates nothing) and
    /// returns whether the step captures hidden states. Every generating sequence gets its row first;
    /// feeding sequences take chunks of the room left, in slot order, at most one token each when
    /// `batched_text` is off. Hidden-state output makes the runtime output every row of the batch, so
    /// a capturing step carries no unrelated prefill: those chunks wait one step. A sequence whose next
    /// rows would pass `ctx_per_seq` ends here, failed.
    pub fn plan_batch(&mut self, capacity: usize, batched_text: bool, ctx_per_seq: i32, plan: &mut Vec<Planned>) -> bool {
        plan.clear();
        // Ended sequences count too: one cancelled this step still holds its state until reaped.
        let capturing = self.slots.iter().any(|s| match &s.state {
            SlotState::Generating { next: Some((_, capture)), .. } => *capture,
            SlotState::Feeding { capture, done, .. } => capture.iter().any(|&c| c >= *done),
            _ => false,
        });
        let generating = self
            .slots
            .iter()
            .filter(|s| s.end.is_none() && matches!(s.state, SlotState::Generating { next: Some(_), .. }))
            .count();
        // Room for prefill once every generating slot has its row.
        let mut room = capacity.saturating_sub(generating);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.end.is_some() {
                continue;
            }
            match &slot.state {
                SlotState::Generating { next: Some(_), .. } => {
                    if slot.pos >= ctx_per_seq {
                        let why = format!("generation reached {ctx_per_seq} tokens");
                        slot.end = Some(SequenceEnd::Failed(EngineError::ContextFull(why)));
                        continue;
                    }
                    plan.push(Planned::Token { slot: i });
                }
                SlotState::Feeding { tokens, capture, done, .. } => {
                    let has_capture = capture.iter().any(|&c| c >= *done);
                    if (capturing && !has_capture) || room == 0 {
                        continue;
                    }
                    let left = tokens.len() - done;
                    if slot.pos + left as i32 > ctx_per_seq {
                        let why = format!("{left} more tokens at position {} of {ctx_per_seq}", slot.pos);
                        slot.end = Some(SequenceEnd::Failed(EngineError::ContextFull(why)));
                        continue;
                    }
                    let per_step = if batched_text { room } else { 1 };
                    let take = left.min(per_step);
                    plan.push(Planned::Chunk { slot: i, take });
                    room -= take;
                }
                _ => {}
            }
        }
        capturing
    }

    /// Whose image moves on this step: the oldest image in progress, and whether it may go all the way
    /// (no other sequence is feeding or generating, so nobody would wait for it).
    pub fn image_turn(&self) -> Option<(usize, bool)> {
        let oldest = (0..self.slots.len())
            .filter(|&i| self.slots[i].end.is_none() && matches!(self.slots[i].state, SlotState::Imaging(_)))
            .min_by_key(|&i| self.slots[i].stats.admitted_at)?;
        let others_running = self.slots.iter().enumerate().any(|(k, s)| {
            k != oldest && s.end.is_none() && matches!(s.state, SlotState::Feeding { .. } | SlotState::Generating { .. })
        });
        Some((oldest, !others_running))
    }

    /// Ends finished sequences: `free_cells` is called with each one's id before its slot is freed,
    /// then its program is told how it ended.
    pub fn reap(&mut self, mut free_cells: impl FnMut(i32)) {
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].end.is_some() {
                let mut slot = self.slots.remove(i);
                free_cells(slot.seq);
                self.free_seqs.push(slot.seq);
                let end = slot.end.take().unwrap_or(SequenceEnd::Completed);
                self.metrics.record_end(&end);
                slot.program.finish(end, &slot.stats);
            } else {
                i += 1;
            }
        }
        self.metrics.active.store(self.slots.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
