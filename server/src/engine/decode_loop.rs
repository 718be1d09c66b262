//! The engine thread: owns the llama context and the vision tower, and runs every active sequence's
//! next tokens through one `llama_decode` per step (continuous batching).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use super::ffi::{Batch, Context, Model, Token, Vision};
use super::faults::{injected_fault, StepDelay};
use super::metrics::EngineMetrics;
use super::program::{GenerationEnd, SequenceEnd, SequenceProgram, Step, TileBitmap, TokenVerdict};
use super::speedups::SpeedUps;
use super::sampler::Sampler;
use super::stats::SequenceStats;
use super::{Command, EngineError, Job};

/// Where a sequence is in its current step.
enum SlotState {
    /// Needs `next_step`.
    Ready,
    /// `publish`: these tokens are the shared prefix; once fed, the prefix cache takes their cells.
    Feeding { tokens: Vec<Token>, capture: Vec<usize>, logits: bool, done: usize, publish: bool },
    Generating { remaining: u32, sampler: Sampler, next: Option<(Token, bool)> },
    /// An image step in progress, done a piece per engine step while other sequences run.
    Imaging(ImageWork),
}

/// An image's tiles on their way into the context: encoded through the vision tower, then their
/// embedding rows decoded into the sequence. Done in pieces — one tile's encode, or one `n_batch`
/// chunk of rows — between the decode steps of the other sequences, so a new image never stalls
/// running streams for longer than one piece.
struct ImageWork {
    tiles: Vec<TileBitmap>,
    /// Tiles encoded so far.
    encoded: usize,
    /// Encoded tiles whose rows are not all decoded yet, oldest first, and how many rows of the front
    /// one are.
    pending: VecDeque<Vec<f32>>,
    front_rows_done: usize,
}

impl ImageWork {
    fn pending_rows(&self, width: usize) -> usize {
        self.pending.iter().map(|f| f.len() / width).sum::<usize>() - self.front_rows_done
    }

    fn done(&self) -> bool {
        self.encoded == self.tiles.len() && self.pending.is_empty()
    }
}

struct Slot {
    seq: i32,
    program: Box<dyn SequenceProgram>,
    pos: i32,
    state: SlotState,
    stats: SequenceStats,
    /// Logits after the last completed Feed: where a following Generate samples its first token.
    pending_logits: Option<Vec<f32>>,
    end: Option<SequenceEnd>,
}

/// What a batch row belongs to, for dispatching outputs after the decode.
enum Row {
    Generated { slot: usize, capture: bool },
    Fed { slot: usize, index: usize },
}

pub(super) struct DecodeLoop {
    pub model: Arc<Model>,
    pub ctx: Context,
    pub vision: Vision,
    pub commands: Receiver<Command>,
    pub metrics: Arc<EngineMetrics>,
    pub ctx_per_seq: i32,
    pub batch: Batch,
    pub embd_batch: Batch,
    slots: Vec<Slot>,
    /// Jobs taken off the channel that wait for a free slot, oldest first. Holding them here (at most
    /// `max_queue`, which `Engine::submit` enforces) lets a job cancelled while it waits leave the
    /// queue within one step, instead of keeping its place until a slot frees.
    waiting: VecDeque<Job>,
    free_seqs: Vec<i32>,
    speedups: SpeedUps,
    /// The shared prefix whose cells the sequence `prefix_seq` holds, once a sequence has computed it.
    prefix: Option<Vec<Token>>,
    prefix_seq: i32,
    /// Shutdown has begun: queued jobs are refused, not started.
    closing: Arc<AtomicBool>,
    /// Jobs taken from the queue so far (counts fault-injection points in test builds).
    jobs_taken: u64,
    /// Extra time per step (test builds only; always zero in release).
    step_delay: StepDelay,
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

/// KV cells kept for the cached prefix (InternVL's is about 60 tokens; a byte-level vocabulary's a few
/// hundred). Longer prefixes are simply not cached.
pub(super) const PREFIX_CELLS: u32 = 1024;

impl DecodeLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Arc<Model>,
        ctx: Context,
        vision: Vision,
        commands: Receiver<Command>,
        metrics: Arc<EngineMetrics>,
        n_slots: usize,
        ctx_per_seq: i32,
        n_batch: usize,
        speedups: SpeedUps,
        closing: Arc<AtomicBool>,
        step_delay: StepDelay,
    ) -> DecodeLoop {
        let width = model.n_embd();
        DecodeLoop {
            model,
            ctx,
            vision,
            commands,
            metrics,
            ctx_per_seq,
            batch: Batch::tokens(n_batch),
            embd_batch: Batch::embeddings(n_batch, width),
            slots: Vec::new(),
            waiting: VecDeque::new(),
            free_seqs: (0..n_slots as i32).rev().collect(),
            speedups,
            prefix: None,
            // The sequence id after the slots' ids; the context is created with one more sequence.
            prefix_seq: n_slots as i32,
            closing,
            jobs_taken: 0,
            step_delay,
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
            if self.slots.is_empty() {
                continue;
            }
            self.step();
        };
        for slot in &mut self.slots {
            slot.end = Some(SequenceEnd::Cancelled);
        }
        self.reap();
        while let Some(job) = self.waiting.pop_front() {
            self.end_queued(job, SequenceEnd::Refused);
        }
        requested
    }

    /// Takes queued jobs into free slots; blocks when nothing is running or waiting. Jobs cancelled
    /// while they wait end here, at once. Once shutdown has begun, every waiting job is refused
    /// instead, free slots or not.
    fn admit(&mut self) -> Admission {
        let flag = self.closing.clone();
        let closing = || flag.load(Ordering::Acquire);
        loop {
            // Nothing to step: sleep until a command arrives (shutdown sends Wake or Shutdown).
            let idle = self.slots.is_empty() && self.waiting.is_empty();
            let command = if idle {
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
                Command::Run(job) => self.waiting.push_back(job),
            }
        }
        if closing() {
            while let Some(job) = self.waiting.pop_front() {
                self.end_queued(job, SequenceEnd::Refused);
            }
            return Admission::Continue;
        }
        if self.waiting.iter().any(|job| job.program.is_cancelled()) {
            let (cancelled, waiting): (VecDeque<Job>, VecDeque<Job>) =
                std::mem::take(&mut self.waiting).into_iter().partition(|job| job.program.is_cancelled());
            self.waiting = waiting;
            for job in cancelled {
                self.end_queued(job, SequenceEnd::Cancelled);
            }
        }
        while !self.free_seqs.is_empty() {
            let Some(job) = self.waiting.pop_front() else { break };
            if !self.start(job) {
                return Admission::Exit;
            }
        }
        Admission::Continue
    }

    /// Ends a queued job that never started: refused (shutdown has begun) or cancelled while waiting.
    fn end_queued(&mut self, mut job: Job, end: SequenceEnd) {
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let stats = SequenceStats { queued: job.enqueued_at.elapsed(), ..Default::default() };
        self.metrics.record_end(&end);
        job.program.finish(end, &stats);
    }

    /// Puts a job into a free slot. False only when a test-injected fault asks the loop to exit.
    fn start(&mut self, job: Job) -> bool {
        self.jobs_taken += 1;
        match injected_fault("engine", self.jobs_taken) {
            Some("exit") => return false,
            Some(_) => panic!("injected fault: the engine thread panics at job {}", self.jobs_taken),
            None => {}
        }
        self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        // The lowest free id, and slots kept in id order: with per-sequence KV streams llama.cpp puts
        // only sequences with consecutive ids into one micro-batch, so gaps and disorder would split a
        // decode step into several graph runs.
        let lowest = (0..self.free_seqs.len()).min_by_key(|&k| self.free_seqs[k]).expect("admit checks for a free slot");
        let seq = self.free_seqs.swap_remove(lowest);
        let now = Instant::now();
        let stats = SequenceStats { queued: now - job.enqueued_at, admitted_at: Some(now), ..Default::default() };
        self.ctx.remove_from(seq, 0);
        let at = self.slots.partition_point(|s| s.seq < seq);
        self.slots.insert(at, Slot {
            seq,
            program: job.program,
            pos: 0,
            state: SlotState::Ready,
            stats,
            pending_logits: None,
            end: None,
        });
        self.metrics.active.store(self.slots.len(), Ordering::Relaxed);
        true
    }

    /// One scheduling step: advance every slot to work it can batch, decode once, dispatch outputs.
    fn step(&mut self) {
        if let Some(delay) = self.step_delay.get() {
            std::thread::sleep(delay);
        }
        for i in 0..self.slots.len() {
            self.advance(i);
        }
        let rows = self.build_batch();
        if !rows.is_empty() {
            self.decode_and_dispatch(rows);
        }
        self.image_work();
        self.reap();
    }

    /// Moves the oldest image in progress on by one piece, or all the way when no other sequence is
    /// running (nobody would wait, and the vision tower then encodes all its tiles in one batch).
    fn image_work(&mut self) {
        let oldest = (0..self.slots.len())
            .filter(|&i| self.slots[i].end.is_none() && matches!(self.slots[i].state, SlotState::Imaging(_)))
            .min_by_key(|&i| self.slots[i].stats.admitted_at);
        let Some(i) = oldest else { return };
        let others_running = self.slots.iter().enumerate().any(|(k, s)| {
            k != i && s.end.is_none() && matches!(s.state, SlotState::Feeding { .. } | SlotState::Generating { .. })
        });
        loop {
            if let Err(e) = self.image_piece(i, !others_running) {
                self.slots[i].end = Some(SequenceEnd::Failed(e));
                return;
            }
            let SlotState::Imaging(work) = &self.slots[i].state else { return };
            if work.done() {
                self.slots[i].state = SlotState::Ready;
                return;
            }
            if others_running {
                return;
            }
        }
    }

    /// Resolves `Ready` slots into Feeding/Generating, running image steps and trivial transitions.
    fn advance(&mut self, i: usize) {
        loop {
            let slot = &mut self.slots[i];
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
            match slot.program.next_step() {
                Step::Finish => {
                    slot.end = Some(SequenceEnd::Completed);
                    return;
                }
                Step::Feed { tokens, capture, logits } => {
                    if tokens.is_empty() {
                        continue;
                    }
                    slot.stats.prompt_tokens += tokens.len() as u32;
                    slot.state = SlotState::Feeding { tokens, capture, logits, done: 0, publish: false };
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
                    if self.speedups.prefix_cache && self.prefix.as_ref() == Some(&tokens) {
                        self.ctx.share_prefix(self.prefix_seq, slot.seq);
                        slot.pos = tokens.len() as i32;
                        slot.stats.cached_prompt_tokens += tokens.len() as u32;
                        self.metrics.prefix_cache_hits.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let publish = self.speedups.prefix_cache && tokens.len() <= (PREFIX_CELLS as usize).min(self.ctx_per_seq as usize);
                    slot.state = SlotState::Feeding { tokens, capture: Vec::new(), logits: false, done: 0, publish };
                }
                Step::Generate { max_tokens, sampling } => {
                    slot.state = SlotState::Generating { remaining: max_tokens, sampler: Sampler::new(sampling), next: None };
                }
                Step::Images(tiles) => {
                    if tiles.is_empty() {
                        continue;
                    }
                    let work = ImageWork { tiles, encoded: 0, pending: VecDeque::new(), front_rows_done: 0 };
                    slot.state = SlotState::Imaging(work);
                    return;
                }
            }
        }
    }

    /// Samples the next token of a generating slot and applies the program's verdict.
    fn sample_into(&mut self, i: usize, logits: &[f32]) {
        let slot = &mut self.slots[i];
        let SlotState::Generating { remaining, sampler, next } = &mut slot.state else { return };
        let end = if *remaining == 0 {
            Some((GenerationEnd::Length, 0))
        } else {
            let token = sampler.sample(logits);
            *remaining -= 1;
            if slot.stats.first_token.is_none() {
                slot.stats.first_token = slot.stats.admitted_at.map(|t| t.elapsed());
            }
            if self.model.is_eog(token) {
                Some((GenerationEnd::EndOfText, 0))
            } else {
                slot.stats.generated_tokens += 1;
                let bytes = self.model.token_bytes(token);
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
                self.ctx.remove_from(slot.seq, slot.pos);
            }
            slot.state = SlotState::Ready;
            slot.pending_logits = None;
            slot.program.on_generation_end(end);
        }
    }

    /// One piece of slot `i`'s image work: decode a chunk of encoded rows when a full `n_batch` chunk
    /// is ready (or nothing is left to encode), else encode the next tile — or, with `all_tiles`, every
    /// remaining tile in one batched encode. Rows go into the sequence in `n_batch` chunks across tile
    /// boundaries: one decode per chunk, not one per tile.
    fn image_piece(&mut self, i: usize, all_tiles: bool) -> Result<(), EngineError> {
        let width = self.model.n_embd();
        let capacity = self.embd_batch.capacity();
        let SlotState::Imaging(work) = &mut self.slots[i].state else { return Ok(()) };
        let pending = work.pending_rows(width);
        let encode_next = work.encoded < work.tiles.len() && pending < capacity && (pending == 0 || self.speedups.batched_image_prefill);
        if encode_next {
            let t0 = Instant::now();
            let take = if all_tiles { work.tiles.len() - work.encoded } else { 1 };
            let tiles = &work.tiles[work.encoded..work.encoded + take];
            let features = if self.speedups.batched_vision && take > 1 {
                let views: Vec<(&[u8], u32, u32)> = tiles.iter().map(|t| (t.rgb.as_slice(), t.width, t.height)).collect();
                self.vision.encode_tiles(&views)?
            } else {
                tiles.iter().map(|t| self.vision.encode_tile(&t.rgb, t.width, t.height)).collect::<Result<Vec<_>, _>>()?
            };
            let encode = t0.elapsed();
            self.metrics.record_image_encode(encode);
            let slot = &mut self.slots[i];
            slot.stats.image_encode += encode;
            let SlotState::Imaging(work) = &mut slot.state else { return Ok(()) };
            work.encoded += take;
            for f in features {
                // The program keeps each tile's features for the heads, in tile order.
                slot.program.on_image_features(&f, f.len() / width);
                // Only whole rows are queued: an empty tile would leave the decode loop below nothing
                // to take (and no way to make progress).
                if f.len() >= width {
                    work.pending.push_back(f);
                }
            }
            return Ok(());
        }
        // Decode one chunk: up to n_batch rows, across tile boundaries unless that speed-up is off.
        let slot = &mut self.slots[i];
        let SlotState::Imaging(work) = &mut slot.state else { return Ok(()) };
        if slot.pos + pending as i32 > self.ctx_per_seq {
            return Err(EngineError::ContextFull(format!("{pending} image tokens at position {} of {}", slot.pos, self.ctx_per_seq)));
        }
        let t1 = Instant::now();
        self.ctx.set_embeddings(false);
        self.embd_batch.clear();
        while self.embd_batch.len() < capacity {
            let Some(front) = work.pending.front() else { break };
            let row = &front[work.front_rows_done * width..(work.front_rows_done + 1) * width];
            self.embd_batch.push_embedding(row, slot.pos + self.embd_batch.len() as i32, slot.seq, false);
            work.front_rows_done += 1;
            if work.front_rows_done * width == front.len() {
                work.pending.pop_front();
                work.front_rows_done = 0;
                if !self.speedups.batched_image_prefill {
                    break;
                }
            }
        }
        let rows = self.embd_batch.len();
        self.ctx.decode(&self.embd_batch)?;
        slot.pos += rows as i32;
        slot.stats.image_tokens += rows as u32;
        slot.stats.prefill += t1.elapsed();
        slot.stats.image_prefill += t1.elapsed();
        Ok(())
    }

    /// Fills the shared token batch: one token for every generating slot first, then prefill chunks
    /// in the room left. Rows go in slot (= sequence id) order, so that with per-sequence KV streams
    /// llama.cpp can put one token of every sequence into a single micro-batch.
    fn build_batch(&mut self) -> Vec<Row> {
        self.batch.clear();
        let mut rows = Vec::new();
        let capacity = self.batch.capacity();
        // Hidden-state output makes llama.cpp output every row of the batch, so a step that captures
        // carries no unrelated prefill: those chunks wait one step.
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
                SlotState::Generating { next: Some((token, capture)), .. } => {
                    if slot.pos >= self.ctx_per_seq {
                        slot.end = Some(SequenceEnd::Failed(EngineError::ContextFull(format!(
                            "generation reached {} tokens",
                            self.ctx_per_seq
                        ))));
                        continue;
                    }
                    self.batch.push_token(*token, slot.pos, slot.seq, true);
                    rows.push(Row::Generated { slot: i, capture: *capture });
                }
                SlotState::Feeding { tokens, capture, done, .. } => {
                    let has_capture = capture.iter().any(|&c| c >= *done);
                    if (capturing && !has_capture) || room == 0 {
                        continue;
                    }
                    if slot.pos + (tokens.len() - done) as i32 > self.ctx_per_seq {
                        slot.end = Some(SequenceEnd::Failed(EngineError::ContextFull(format!(
                            "{} more tokens at position {} of {}",
                            tokens.len() - done,
                            slot.pos,
                            self.ctx_per_seq
                        ))));
                        continue;
                    }
                    let per_step = if self.speedups.batched_text { room } else { 1 };
                    let take = (tokens.len() - done).min(per_step);
                    for k in *done..*done + take {
                        let last = k + 1 == tokens.len();
                        let output = capturing || last || capture.contains(&k);
                        self.batch.push_token(tokens[k], slot.pos + (k - done) as i32, slot.seq, output);
                        rows.push(Row::Fed { slot: i, index: k });
                    }
                    room -= take;
                }
                _ => {}
            }
        }
        if !rows.is_empty() {
            self.ctx.set_embeddings(capturing);
        }
        rows
    }

    fn decode_and_dispatch(&mut self, rows: Vec<Row>) {
        let t0 = Instant::now();
        let result = self.ctx.decode(&self.batch);
        let elapsed = t0.elapsed();
        // Per-step cost, for profiling (`HEIE_LOG=heie_server::engine=trace`).
        tracing::trace!(rows = rows.len(), embeddings = self.ctx.embeddings_on(), ms = elapsed.as_secs_f64() * 1000.0, "decode step");
        let mut in_batch = vec![false; self.slots.len()];
        for row in &rows {
            let (Row::Generated { slot, .. } | Row::Fed { slot, .. }) = row;
            in_batch[*slot] = true;
        }
        let n_seqs = in_batch.iter().filter(|b| **b).count();
        self.metrics.record_decode(rows.len(), n_seqs);
        if let Err(e) = result {
            for (i, hit) in in_batch.iter().enumerate() {
                if *hit {
                    self.slots[i].end = Some(SequenceEnd::Failed(e.clone()));
                }
            }
            return;
        }
        for (i, hit) in in_batch.iter().enumerate() {
            if *hit {
                let slot = &mut self.slots[i];
                match slot.state {
                    SlotState::Generating { .. } => slot.stats.decode += elapsed,
                    _ => slot.stats.prefill += elapsed,
                }
            }
        }
        for (row_index, row) in rows.iter().enumerate() {
            match *row {
                Row::Generated { slot: i, capture } => {
                    let slot = &mut self.slots[i];
                    slot.pos += 1;
                    if let SlotState::Generating { next, .. } = &mut slot.state {
                        *next = None;
                    }
                    if capture {
                        if let Some(hidden) = self.ctx.hidden(row_index) {
                            slot.program.on_hidden(None, hidden);
                        }
                    }
                    match self.ctx.logits(row_index) {
                        Some(logits) => {
                            // Sampling borrows the context's logits while mutating the slot.
                            let logits = logits.to_vec();
                            self.sample_into(i, &logits);
                        }
                        None => {
                            self.slots[i].end =
                                Some(SequenceEnd::Failed(EngineError::Decode("no logits for a generated token".into())))
                        }
                    }
                }
                Row::Fed { slot: i, index } => {
                    let slot = &mut self.slots[i];
                    let SlotState::Feeding { tokens, capture, logits, done, publish } = &mut slot.state else { continue };
                    slot.pos += 1;
                    *done = index + 1;
                    if capture.contains(&index) {
                        if let Some(hidden) = self.ctx.hidden(row_index) {
                            slot.program.on_hidden(Some(index), hidden);
                        }
                    }
                    if *done == tokens.len() {
                        let want_logits = *logits;
                        let row_logits = self.ctx.logits(row_index).map(|l| l.to_vec());
                        if want_logits {
                            if let Some(l) = &row_logits {
                                slot.program.on_logits(l);
                            }
                        }
                        slot.pending_logits = row_logits;
                        if *publish {
                            // Later sequences share these cells instead of computing them again.
                            self.ctx.remove_from(self.prefix_seq, 0);
                            self.ctx.share_prefix(slot.seq, self.prefix_seq);
                            self.prefix = Some(std::mem::take(tokens));
                        }
                        slot.state = SlotState::Ready;
                    }
                }
            }
        }
    }

    /// Ends finished sequences: frees their KV cells and slot, and tells their programs.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].end.is_some() {
                let mut slot = self.slots.remove(i);
                self.ctx.remove_from(slot.seq, 0);
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
