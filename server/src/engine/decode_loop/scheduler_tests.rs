//! The scheduler's decisions, checked without a model: programs are stand-ins that only record how
//! they ended, and slot states are set by hand where a real run would have reached them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::image_work::ImageWork;
use super::super::sequence::{Slot, SlotState};
use super::{Planned, Scheduler};
use crate::engine::metrics::EngineMetrics;
use crate::engine::program::{Sampling, SequenceEnd, SequenceProgram, Step, TokenVerdict};
use crate::engine::runtime::TileBitmap;
use crate::engine::sampler::Sampler;
use crate::engine::stats::SequenceStats;
use crate::engine::{EngineError, Job, Token};

/// How each program ended, by name, in the order they ended.
type Ends = Arc<Mutex<Vec<(&'static str, SequenceEnd)>>>;

/// The names stand-ins can have.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

struct StandIn {
    name: &'static str,
    cancelled: Arc<AtomicBool>,
    ends: Ends,
}

impl SequenceProgram for StandIn {
    /// Never called by the scheduler (the decode loop asks for steps); the harness uses it to ask a
    /// running program its name.
    fn next_step(&mut self) -> Step {
        Step::Prefix(vec![NAMES.iter().position(|n| *n == self.name).expect("a known name") as Token])
    }
    fn on_token(&mut self, _: Token, _: &[u8]) -> TokenVerdict {
        TokenVerdict::Continue
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    fn finish(&mut self, end: SequenceEnd, _: &SequenceStats) {
        self.ends.lock().unwrap().push((self.name, end));
    }
}

/// A scheduler with `n_slots` slots, and what the engine around it would do.
struct Harness {
    scheduler: Scheduler,
    metrics: Arc<EngineMetrics>,
    ends: Ends,
    /// Cells cleared, in order: on admission (`start`) and when a sequence leaves (`reap`).
    cleared: Vec<i32>,
}

impl Harness {
    fn new(n_slots: usize) -> Harness {
        let metrics = Arc::new(EngineMetrics::default());
        let ends = Ends::default();
        Harness { scheduler: Scheduler::new(n_slots, metrics.clone()), metrics, ends, cleared: Vec::new() }
    }

    /// A job arrives, counted in the queue as `Engine::submit` counts it; returns its cancel switch.
    fn submit(&mut self, name: &'static str) -> Arc<AtomicBool> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let program = StandIn { name, cancelled: cancelled.clone(), ends: self.ends.clone() };
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        self.scheduler.enqueue(Job { program: Box::new(program), enqueued_at: Instant::now() });
        cancelled
    }

    /// The decode loop's admission, without its fault-injection point.
    fn admit(&mut self, closing: bool) {
        if !self.scheduler.turn_away(closing) {
            return;
        }
        while let Some(job) = self.scheduler.next_admission() {
            let seq = self.scheduler.start(job);
            self.cleared.push(seq);
        }
    }

    fn reap(&mut self) {
        let cleared = &mut self.cleared;
        self.scheduler.reap(|seq| cleared.push(seq));
    }

    /// `(sequence id, program name)` of every slot, in slot order.
    fn running(&mut self) -> Vec<(i32, &'static str)> {
        self.scheduler.slots.iter_mut().map(|s| (s.seq, name_of(s))).collect()
    }

    fn ended(&self) -> Vec<(&'static str, SequenceEnd)> {
        self.ends.lock().unwrap().clone()
    }

    fn slot_named(&mut self, name: &str) -> &mut Slot {
        let i = self.scheduler.slots.iter_mut().position(|s| name_of(s) == name).expect("running");
        &mut self.scheduler.slots[i]
    }
}

/// A slot's program name: a stand-in answers `next_step` with its name's index in `NAMES`.
fn name_of(slot: &mut Slot) -> &'static str {
    match slot.program.next_step() {
        Step::Prefix(tokens) => NAMES[tokens[0] as usize],
        other => panic!("not a stand-in's step: {other:?}"),
    }
}

fn generating(next: Token, capture: bool) -> SlotState {
    SlotState::Generating { remaining: 8, sampler: Sampler::new(Sampling::default()), next: Some((next, capture)) }
}

fn feeding(len: usize, capture: Vec<usize>) -> SlotState {
    SlotState::Feeding { tokens: vec![1; len], capture, logits: false, done: 0, publish: false }
}

/// Slots with the given states, sequence ids 0.. in order, as if admitted one after the other.
fn with_states(states: Vec<SlotState>) -> Harness {
    let mut h = Harness::new(states.len());
    for name in &NAMES[..states.len()] {
        h.submit(name);
    }
    h.admit(false);
    let t0 = Instant::now();
    for (k, (slot, state)) in h.scheduler.slots.iter_mut().zip(states).enumerate() {
        slot.state = state;
        slot.stats.admitted_at = Some(t0 + Duration::from_millis(k as u64));
    }
    h
}

#[test]
fn jobs_are_admitted_oldest_first_into_the_lowest_free_ids() {
    let mut h = Harness::new(2);
    for name in ["a", "b", "c"] {
        h.submit(name);
    }
    h.admit(false);
    assert_eq!(h.running(), [(0, "a"), (1, "b")]);
    assert_eq!(h.cleared, [0, 1], "a new sequence starts from empty cells");
    assert_eq!(h.metrics.queue_depth.load(Ordering::Relaxed), 1, "c still waits");
    assert_eq!(h.metrics.active.load(Ordering::Relaxed), 2);
    assert!(h.ended().is_empty());
}

#[test]
fn a_freed_slot_goes_to_the_oldest_waiting_job_and_slots_stay_in_id_order() {
    let mut h = Harness::new(3);
    for name in ["a", "b", "c", "d", "e"] {
        h.submit(name);
    }
    h.admit(false);
    h.slot_named("b").end = Some(SequenceEnd::Completed);
    h.reap();
    assert_eq!(h.ended(), [("b", SequenceEnd::Completed)]);
    assert_eq!(h.cleared, [0, 1, 2, 1], "b's cells are freed when it leaves");
    h.admit(false);
    // d takes b's id 1 and its place between a and c: consecutive ids batch into one micro-batch.
    assert_eq!(h.running(), [(0, "a"), (1, "d"), (2, "c")]);
    assert_eq!(h.metrics.queue_depth.load(Ordering::Relaxed), 1, "e still waits");
}

#[test]
fn the_lowest_free_id_is_taken_whatever_order_ids_were_freed_in() {
    let mut h = Harness::new(3);
    for name in ["a", "b", "c", "d", "e"] {
        h.submit(name);
    }
    h.admit(false);
    h.slot_named("c").end = Some(SequenceEnd::Completed);
    h.reap();
    h.slot_named("a").end = Some(SequenceEnd::Completed);
    h.reap();
    h.admit(false);
    assert_eq!(h.running(), [(0, "d"), (1, "b"), (2, "e")]);
}

#[test]
fn a_job_cancelled_while_waiting_ends_at_once_and_never_takes_a_slot() {
    let mut h = Harness::new(1);
    h.submit("a");
    h.submit("b");
    let cancel_c = h.submit("c");
    h.submit("d");
    h.admit(false);
    cancel_c.store(true, Ordering::SeqCst);
    // No slot is free, yet c leaves the queue on the next admission pass.
    h.admit(false);
    assert_eq!(h.ended(), [("c", SequenceEnd::Cancelled)]);
    assert_eq!(h.metrics.queue_depth.load(Ordering::Relaxed), 2);
    assert_eq!(h.metrics.cancelled.load(Ordering::Relaxed), 1);
    h.slot_named("a").end = Some(SequenceEnd::Completed);
    h.reap();
    h.admit(false);
    assert_eq!(h.running(), [(0, "b")], "b keeps its place ahead of d; c is gone");
}

#[test]
fn a_cancelled_running_sequence_frees_its_slot_and_cells_for_the_next_job() {
    let mut h = Harness::new(2);
    h.submit("a");
    let cancel_b = h.submit("b");
    h.submit("c");
    h.admit(false);
    cancel_b.store(true, Ordering::SeqCst);
    // The decode loop notices a running sequence's cancellation before batching it (`advance`).
    h.slot_named("b").end = Some(SequenceEnd::Cancelled);
    h.reap();
    assert_eq!(h.ended(), [("b", SequenceEnd::Cancelled)]);
    assert_eq!(h.cleared.last(), Some(&1));
    h.admit(false);
    assert_eq!(h.running(), [(0, "a"), (1, "c")]);
    assert_eq!(h.metrics.queue_depth.load(Ordering::Relaxed), 0);
}

#[test]
fn once_shutdown_begins_waiting_jobs_are_refused_even_with_free_slots() {
    let mut h = Harness::new(2);
    h.submit("a");
    h.admit(false);
    h.submit("b");
    h.submit("c");
    h.admit(true);
    assert_eq!(h.running(), [(0, "a")], "the running sequence runs on; the free slot stays free");
    assert_eq!(h.ended(), [("b", SequenceEnd::Refused), ("c", SequenceEnd::Refused)]);
    assert_eq!(h.metrics.queue_depth.load(Ordering::Relaxed), 0);
}

#[test]
fn stopping_cancels_running_sequences_and_refuses_waiting_ones() {
    let mut h = Harness::new(1);
    h.submit("a");
    h.submit("b");
    h.admit(false);
    h.scheduler.cancel_running();
    h.reap();
    h.scheduler.refuse_waiting();
    assert_eq!(h.ended(), [("a", SequenceEnd::Cancelled), ("b", SequenceEnd::Refused)]);
    assert!(h.scheduler.is_idle());
    assert_eq!(h.metrics.active.load(Ordering::Relaxed), 0);
}

#[test]
fn generating_sequences_get_their_rows_before_prefill_takes_the_room_left() {
    let mut h = with_states(vec![feeding(10, vec![]), generating(5, false), feeding(3, vec![]), generating(6, false)]);
    let mut plan = Vec::new();
    let capturing = h.scheduler.plan_batch(8, true, 4096, &mut plan);
    assert!(!capturing);
    // Two rows are kept for the generating sequences; the first feeder takes the other six, and the
    // second waits for a later step.
    assert_eq!(plan, [Planned::Chunk { slot: 0, take: 6 }, Planned::Token { slot: 1 }, Planned::Token { slot: 3 }]);
}

#[test]
fn prefill_goes_in_chunks_no_larger_than_the_batch() {
    let mut h = with_states(vec![feeding(10, vec![])]);
    let mut plan = Vec::new();
    let mut takes = Vec::new();
    loop {
        h.scheduler.plan_batch(4, true, 4096, &mut plan);
        let [Planned::Chunk { take, .. }] = plan[..] else { break };
        takes.push(take);
        let SlotState::Feeding { done, tokens, .. } = &mut h.scheduler.slots[0].state else { unreachable!() };
        *done += take;
        if *done == tokens.len() {
            h.scheduler.slots[0].state = SlotState::Ready;
        }
    }
    assert_eq!(takes, [4, 4, 2]);
}

#[test]
fn without_batched_text_each_feeding_sequence_takes_one_token_a_step() {
    let mut h = with_states(vec![feeding(10, vec![]), feeding(3, vec![])]);
    let mut plan = Vec::new();
    h.scheduler.plan_batch(512, false, 4096, &mut plan);
    assert_eq!(plan, [Planned::Chunk { slot: 0, take: 1 }, Planned::Chunk { slot: 1, take: 1 }]);
}

#[test]
fn a_capturing_step_carries_only_the_rows_that_capture_and_the_generating_ones() {
    let mut h = with_states(vec![feeding(10, vec![]), generating(5, true), feeding(4, vec![2]), generating(6, false)]);
    let mut plan = Vec::new();
    let capturing = h.scheduler.plan_batch(512, true, 4096, &mut plan);
    assert!(capturing, "a sampled marker is fed with hidden states on");
    // Hidden states make every row an output, so the plain prefill of slot 0 waits a step.
    assert_eq!(plan, [Planned::Token { slot: 1 }, Planned::Chunk { slot: 2, take: 4 }, Planned::Token { slot: 3 }]);
    // A capture already fed no longer makes a step capture.
    let SlotState::Feeding { done, .. } = &mut h.scheduler.slots[2].state else { unreachable!() };
    *done = 3;
    h.scheduler.slots[1].state = generating(7, false);
    assert!(!h.scheduler.plan_batch(512, true, 4096, &mut plan));
    assert_eq!(plan[0], Planned::Chunk { slot: 0, take: 10 });
}

#[test]
fn a_sequence_that_would_pass_its_context_fails_instead_of_decoding() {
    let mut h = with_states(vec![feeding(8, vec![]), generating(5, false), feeding(2, vec![])]);
    h.scheduler.slots[0].pos = 10;
    h.scheduler.slots[1].pos = 16;
    h.scheduler.slots[2].pos = 14;
    let mut plan = Vec::new();
    h.scheduler.plan_batch(512, true, 16, &mut plan);
    assert_eq!(plan, [Planned::Chunk { slot: 2, take: 2 }], "exactly filling the context is allowed");
    let context_full = |s: &Slot| matches!(s.end, Some(SequenceEnd::Failed(EngineError::ContextFull(_))));
    assert!(context_full(&h.scheduler.slots[0]) && context_full(&h.scheduler.slots[1]));
    h.reap();
    assert_eq!(h.metrics.failed.load(Ordering::Relaxed), 2);
}

#[test]
fn ended_sequences_get_no_rows() {
    let mut h = with_states(vec![generating(5, false), feeding(3, vec![])]);
    h.scheduler.slots[0].end = Some(SequenceEnd::Cancelled);
    let mut plan = Vec::new();
    h.scheduler.plan_batch(512, true, 4096, &mut plan);
    assert_eq!(plan, [Planned::Chunk { slot: 1, take: 3 }], "the cancelled sequence's row is room for prefill");
}

#[test]
fn the_oldest_image_moves_on_and_goes_all_the_way_only_when_nobody_waits() {
    let tile = || TileBitmap { rgb: vec![0; 12], width: 2, height: 2 };
    let image = || SlotState::Imaging(ImageWork::new(vec![tile(), tile()], Vec::new(), None));
    let mut h = with_states(vec![SlotState::Ready, image(), image()]);
    // Slot 2 was admitted before slot 1 here: age, not slot order, decides.
    h.scheduler.slots[2].stats.admitted_at = h.scheduler.slots[0].stats.admitted_at;
    assert_eq!(h.scheduler.image_turn(), Some((2, true)), "no one feeds or generates: all tiles at once");
    h.scheduler.slots[0].state = generating(5, false);
    assert_eq!(h.scheduler.image_turn(), Some((2, false)), "a generating stream waits for one piece only");
    h.scheduler.slots[2].end = Some(SequenceEnd::Cancelled);
    assert_eq!(h.scheduler.image_turn(), Some((1, false)));
    h.scheduler.slots[1].state = SlotState::Ready;
    assert_eq!(h.scheduler.image_turn(), None);
}
