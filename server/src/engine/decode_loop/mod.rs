//! The engine thread: owns the runtime (context and vision tower) and runs every active sequence's
//! next tokens through one decode per step (continuous batching).
//!
//! A step: each sequence moves to work it can batch (`sequence.rs`), the scheduler decides who puts
//! rows into the decode (`scheduler.rs`), the batch is built, decoded and its outputs dispatched
//! (`batch.rs`), one image moves on by a piece (`image_work.rs`), and finished sequences leave.

mod batch;
mod cached_states;
mod image_work;
mod scheduler;
mod sequence;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::faults::{injected_fault, StepDelay};
use super::image_cache::ImageCache;
use super::metrics::EngineMetrics;
use super::runtime::{Runtime, Token};
use super::speedups::SpeedUps;
use super::Command;
use batch::Row;
use scheduler::{Planned, Scheduler};

/// The shared prompt prefix (system prompt up to the image) as the first sequence that computed it
/// left it: its tokens and a copy of its KV cells, restored into every later sequence that starts
/// with the same tokens.
struct CachedPrefix {
    tokens: Vec<Token>,
    cells: Vec<u8>,
}

/// What `admit` decided.
enum Admission {
    /// Keep running.
    Continue,
    /// Stop: asked to (Shutdown, or every sender gone).
    Stop,
    /// Stop although nobody asked (a test-only injected fault).
    Exit,
}

pub(super) struct DecodeLoop<R: Runtime> {
    runtime: R,
    commands: Receiver<Command>,
    metrics: Arc<EngineMetrics>,
    ctx_per_seq: i32,
    scheduler: Scheduler,
    speedups: SpeedUps,
    /// Images and tiles computed before (`--image-cache-mb`; empty and unused at 0).
    image_cache: ImageCache,
    /// The shared prefix, once a sequence has computed it.
    prefix: Option<CachedPrefix>,
    /// Shutdown has begun: queued jobs are refused, not started.
    closing: Arc<AtomicBool>,
    /// Jobs taken from the queue so far (counts fault-injection points in test builds).
    jobs_taken: u64,
    /// Extra time per step (test builds only; always zero in release).
    step_delay: StepDelay,
    /// This step's plan and rows, kept between steps so a step allocates neither.
    plan: Vec<Planned>,
    rows: Vec<Row>,
}

impl<R: Runtime> DecodeLoop<R> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: R,
        commands: Receiver<Command>,
        metrics: Arc<EngineMetrics>,
        n_slots: usize,
        ctx_per_seq: i32,
        speedups: SpeedUps,
        image_cache: ImageCache,
        closing: Arc<AtomicBool>,
        step_delay: StepDelay,
    ) -> DecodeLoop<R> {
        DecodeLoop {
            runtime,
            commands,
            scheduler: Scheduler::new(n_slots, metrics.clone()),
            metrics,
            ctx_per_seq,
            speedups,
            image_cache,
            prefix: None,
            closing,
            jobs_taken: 0,
            step_delay,
            plan: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Runs until shutdown or until every sender is gone (true), or until an injected fault makes it
    /// return unasked (false).
    pub fn run(mut self) -> bool {
        let requested = loop {
            match self.admit() {
                Admission::Continue => {}
                Admission::Stop => break true,
                Admission::Exit => break false,
            }
            if self.scheduler.slots.is_empty() {
                continue;
            }
            self.step();
        };
        self.scheduler.cancel_running();
        self.reap();
        self.scheduler.refuse_waiting();
        requested
    }

    /// Takes queued jobs into free slots; blocks when nothing is running or waiting. Jobs cancelled
    /// while they wait end here, at once. Once shutdown has begun, every waiting job is refused
    /// instead, free slots or not.
    fn admit(&mut self) -> Admission {
        loop {
            // Nothing to step: sleep until a command arrives (shutdown sends Wake or Shutdown).
            let command = if self.scheduler.is_idle() {
                match self.commands.recv() {
                    Ok(c) => c,
                    Err(_) => return Admission::Stop,
                }
            } else {
                match self.commands.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Admission::Stop,
                }
            };
            match command {
                Command::Shutdown => return Admission::Stop,
                Command::Wake => {}
                Command::Run(job) => self.scheduler.enqueue(job),
            }
        }
        if !self.scheduler.turn_away(self.closing.load(Ordering::Acquire)) {
            return Admission::Continue;
        }
        while let Some(job) = self.scheduler.next_admission() {
            self.jobs_taken += 1;
            match injected_fault("engine", self.jobs_taken) {
                Some("exit") => return Admission::Exit,
                Some(_) => panic!("injected fault: the engine thread panics at job {}", self.jobs_taken),
                None => {}
            }
            let seq = self.scheduler.start(job);
            self.runtime.remove_cells(seq, 0);
        }
        Admission::Continue
    }

    /// One scheduling step: advance every slot to work it can batch, decode once, dispatch outputs.
    fn step(&mut self) {
        if let Some(delay) = self.step_delay.get() {
            std::thread::sleep(delay);
        }
        for i in 0..self.scheduler.slots.len() {
            self.advance(i);
        }
        let (mut plan, mut rows) = (std::mem::take(&mut self.plan), std::mem::take(&mut self.rows));
        let capacity = self.runtime.batch_capacity();
        let capturing = self.scheduler.plan_batch(capacity, self.speedups.batched_text, self.ctx_per_seq, &mut plan);
        if !plan.is_empty() {
            self.build_batch(&plan, capturing, &mut rows);
            self.decode_and_dispatch(&rows, capturing);
        }
        (self.plan, self.rows) = (plan, rows);
        self.image_work();
        self.reap();
    }

    /// Ends finished sequences, freeing their KV cells.
    fn reap(&mut self) {
        let runtime = &mut self.runtime;
        self.scheduler.reap(|seq| runtime.remove_cells(seq, 0));
    }
}
