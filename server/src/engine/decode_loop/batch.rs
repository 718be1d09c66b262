//! Batch building: the scheduler's plan for a step turned into the runtime's token batch (a sampled
//! token per generating sequence, prefill chunks of forced text), one decode, and each row's outputs
//! (logits, hidden states) handed back to the sequence it belongs to.

use super::scheduler::Planned;
use super::sequence::SlotState;
use super::{CachedPrefix, DecodeLoop};
use crate::engine::program::SequenceEnd;
use crate::engine::runtime::Runtime;
use crate::engine::EngineError;

/// What a batch row belongs to, for dispatching outputs after the decode.
pub(super) enum Row {
    Generated { slot: usize, capture: bool },
    Fed { slot: usize, index: usize },
}

impl<R: Runtime> DecodeLoop<R> {
    /// Fills the runtime's token batch from `plan` into `rows`. Rows go in slot (= sequence id) order,
    /// so that with per-sequence KV streams llama.cpp can put one token of every sequence into a
    /// single micro-batch. A fed token outputs when it is its text's last (its logits are kept), a
    /// capture, or on a capturing step (where the runtime outputs every row anyway).
    pub(super) fn build_batch(&mut self, plan: &[Planned], capturing: bool, rows: &mut Vec<Row>) {
        rows.clear();
        self.runtime.clear_batch();
        for &planned in plan {
            match planned {
                Planned::Token { slot: i } => {
                    let slot = &self.scheduler.slots[i];
                    let SlotState::Generating { next: Some((token, capture)), .. } = slot.state else { continue };
                    self.runtime.push_token(token, slot.pos, slot.seq, true);
                    rows.push(Row::Generated { slot: i, capture });
                }
                Planned::Chunk { slot: i, take } => {
                    let slot = &self.scheduler.slots[i];
                    let SlotState::Feeding { tokens, capture, done, .. } = &slot.state else { continue };
                    for k in *done..*done + take {
                        let last = k + 1 == tokens.len();
                        let output = capturing || last || capture.contains(&k);
                        self.runtime.push_token(tokens[k], slot.pos + (k - done) as i32, slot.seq, output);
                        rows.push(Row::Fed { slot: i, index: k });
                    }
                }
            }
        }
    }

    /// Decodes the batch `rows` describes and dispatches each row's outputs. A failed decode fails
    /// every sequence with a row in it.
    pub(super) fn decode_and_dispatch(&mut self, rows: &[Row], capturing: bool) {
        let t0 = std::time::Instant::now();
        let result = self.runtime.decode_batch(capturing);
        let elapsed = t0.elapsed();
        // Per-step cost, for profiling (`HEIE_LOG=heie_server::engine=trace`).
        tracing::trace!(rows = rows.len(), embeddings = capturing, ms = elapsed.as_secs_f64() * 1000.0, "decode step");
        let slots = &mut self.scheduler.slots;
        let mut in_batch = vec![false; slots.len()];
        for row in rows {
            let (Row::Generated { slot, .. } | Row::Fed { slot, .. }) = row;
            in_batch[*slot] = true;
        }
        let n_seqs = in_batch.iter().filter(|b| **b).count();
        self.metrics.record_decode(rows.len(), n_seqs);
        if let Err(e) = result {
            for (i, hit) in in_batch.iter().enumerate() {
                if *hit {
                    slots[i].end = Some(SequenceEnd::Failed(e.clone()));
                }
            }
            return;
        }
        for (i, hit) in in_batch.iter().enumerate() {
            if *hit {
                let slot = &mut slots[i];
                match slot.state {
                    SlotState::Generating { .. } => slot.stats.decode += elapsed,
                    _ => slot.stats.prefill += elapsed,
                }
            }
        }
        for (row_index, row) in rows.iter().enumerate() {
            match *row {
                Row::Generated { slot, capture } => self.dispatch_generated(row_index, slot, capture),
                Row::Fed { slot, index } => self.dispatch_fed(row_index, slot, index),
            }
        }
    }

    /// A generated token's row: it is now in the context; its hidden state goes to the program when
    /// asked for, and its logits give the sequence's next token.
    fn dispatch_generated(&mut self, row_index: usize, i: usize, capture: bool) {
        let slot = &mut self.scheduler.slots[i];
        slot.pos += 1;
        if let SlotState::Generating { next, .. } = &mut slot.state {
            *next = None;
        }
        if capture {
            if let Some(hidden) = self.runtime.hidden(row_index) {
                slot.program.on_hidden(None, hidden);
            }
        }
        match self.runtime.logits(row_index) {
            Some(logits) => {
                // Sampling borrows the runtime's logits while mutating the slot.
                let logits = logits.to_vec();
                self.sample_into(i, &logits);
            }
            None => {
                self.scheduler.slots[i].end =
                    Some(SequenceEnd::Failed(EngineError::Decode("no logits for a generated token".into())))
            }
        }
    }

    /// A fed token's row: a capture's hidden state goes to the program; after a text's last token its
    /// logits are kept for a following generation (and given to the program when it asked), and a
    /// shared prefix is published for later sequences.
    fn dispatch_fed(&mut self, row_index: usize, i: usize, index: usize) {
        let slot = &mut self.scheduler.slots[i];
        let SlotState::Feeding { tokens, capture, logits, done, publish } = &mut slot.state else { return };
        slot.pos += 1;
        *done = index + 1;
        if capture.contains(&index) {
            if let Some(hidden) = self.runtime.hidden(row_index) {
                slot.program.on_hidden(Some(index), hidden);
            }
        }
        if *done == tokens.len() {
            let want_logits = *logits;
            let row_logits = self.runtime.logits(row_index).map(|l| l.to_vec());
            if want_logits {
                if let Some(l) = &row_logits {
                    slot.program.on_logits(l);
                }
            }
            slot.pending_logits = row_logits;
            if *publish {
                // Later sequences take a copy of these cells instead of computing them again.
                match self.runtime.save_cells(slot.seq, usize::MAX) {
                    Ok(Some(cells)) => self.prefix = Some(CachedPrefix { tokens: std::mem::take(tokens), cells }),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "the shared prefix could not be saved; later sequences compute it"),
                }
            }
            slot.state = SlotState::Ready;
        }
    }
}
