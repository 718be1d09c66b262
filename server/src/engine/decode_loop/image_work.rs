//! Image work: a sequence's tiles through the vision tower, then their embedding rows decoded into the
//! sequence. Done in pieces — one tile's encode, or one `n_batch` chunk of rows — between the decode
//! steps of the other sequences, so a new image never stalls running streams for longer than one
//! piece. Which image moves on, and whether it may go all the way, is the scheduler's call.
//! An image judged before never gets here: `cached_states.rs` looks it up first, and saves the
//! sequence once an image that follows the shared prefix is in.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::sequence::SlotState;
use super::DecodeLoop;
use crate::engine::image_cache::{StateKey, TileKey};
use crate::engine::program::SequenceEnd;
use crate::engine::runtime::{Runtime, TileBitmap, Vocabulary};
use crate::engine::EngineError;

/// An image's tiles on their way into the context.
pub(super) struct ImageWork {
    tiles: Vec<TileBitmap>,
    /// Each tile's cache key (empty when the cache is off).
    keys: Vec<TileKey>,
    /// Where the finished sequence is saved in the image cache (`None`: not saved), and every tile's
    /// features gathered for that entry.
    save_as: Option<StateKey>,
    features: Vec<Arc<Vec<f32>>>,
    /// Tiles encoded so far.
    encoded: usize,
    /// Encoded tiles whose rows are not all decoded yet, oldest first, and how many rows of the front
    /// one are.
    pending: VecDeque<Arc<Vec<f32>>>,
    front_rows_done: usize,
}

impl ImageWork {
    pub fn new(tiles: Vec<TileBitmap>, keys: Vec<TileKey>, save_as: Option<StateKey>) -> ImageWork {
        ImageWork { tiles, keys, save_as, features: Vec::new(), encoded: 0, pending: VecDeque::new(), front_rows_done: 0 }
    }

    fn pending_rows(&self, width: usize) -> usize {
        self.pending.iter().map(|f| f.len() / width).sum::<usize>() - self.front_rows_done
    }

    fn done(&self) -> bool {
        self.encoded == self.tiles.len() && self.pending.is_empty()
    }
}

impl<R: Runtime> DecodeLoop<R> {
    /// Moves the scheduler's chosen image on by one piece, or all the way when no other sequence is
    /// running (nobody would wait, and the vision tower then encodes all its tiles in one batch).
    pub(super) fn image_work(&mut self) {
        let Some((i, all_the_way)) = self.scheduler.image_turn() else { return };
        loop {
            if let Err(e) = self.image_piece(i, all_the_way) {
                self.scheduler.slots[i].end = Some(SequenceEnd::Failed(e));
                return;
            }
            let SlotState::Imaging(work) = &mut self.scheduler.slots[i].state else { return };
            if work.done() {
                let (save_as, features) = (work.save_as.take(), std::mem::take(&mut work.features));
                self.scheduler.slots[i].state = SlotState::Ready;
                if let Some(key) = save_as {
                    let image_tokens = self.scheduler.slots[i].stats.image_tokens;
                    if image_tokens > 0 {
                        self.save_state(i, key, features, image_tokens, None);
                    }
                }
                return;
            }
            if !all_the_way {
                return;
            }
        }
    }

    /// One piece of slot `i`'s image work: decode a chunk of encoded rows when a full `n_batch` chunk
    /// is ready (or nothing is left to encode), else encode the next tile — or, with `all_tiles`, every
    /// remaining tile in one batched encode.
    fn image_piece(&mut self, i: usize, all_tiles: bool) -> Result<(), EngineError> {
        let width = self.runtime.vocab().n_embd();
        let capacity = self.runtime.batch_capacity();
        let SlotState::Imaging(work) = &self.scheduler.slots[i].state else { return Ok(()) };
        let pending = work.pending_rows(width);
        let encode_next = work.encoded < work.tiles.len()
            && pending < capacity
            && (pending == 0 || self.speedups.batched_image_prefill);
        if encode_next {
            self.encode_piece(i, all_tiles, width)
        } else {
            self.feed_piece(i, pending, width, capacity)
        }
    }

    /// Encodes slot `i`'s next tile (all remaining tiles with `all_tiles`), hands each tile's features
    /// to the program and queues their rows. Tiles the feature cache holds are not encoded.
    fn encode_piece(&mut self, i: usize, all_tiles: bool, width: usize) -> Result<(), EngineError> {
        let slot = &mut self.scheduler.slots[i];
        let SlotState::Imaging(work) = &mut slot.state else { return Ok(()) };
        let t0 = Instant::now();
        let take = if all_tiles { work.tiles.len() - work.encoded } else { 1 };
        let tiles = &work.tiles[work.encoded..work.encoded + take];
        let keys = work.keys.get(work.encoded..work.encoded + take).unwrap_or(&[]);
        let mut features: Vec<Option<Arc<Vec<f32>>>> = vec![None; take];
        for (f, key) in features.iter_mut().zip(keys) {
            *f = self.image_cache.tile(*key);
        }
        let missing: Vec<usize> = (0..take).filter(|&k| features[k].is_none()).collect();
        if self.image_cache.enabled() {
            let hits = (take - missing.len()) as u64;
            self.metrics.image_cache_hits.fetch_add(hits, Ordering::Relaxed);
            self.metrics.image_cache_misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
            slot.stats.image_tiles_cached += hits as u32;
        }
        if !missing.is_empty() {
            let encoded = if self.speedups.batched_vision && missing.len() > 1 {
                if missing.len() == take {
                    self.runtime.encode_tiles(tiles)?
                } else {
                    let batch: Vec<_> = missing.iter().map(|&k| tiles[k].clone()).collect();
                    self.runtime.encode_tiles(&batch)?
                }
            } else {
                missing.iter().map(|&k| self.runtime.encode_tile(&tiles[k])).collect::<Result<Vec<_>, _>>()?
            };
            let encode = t0.elapsed();
            self.metrics.record_image_encode(encode);
            slot.stats.image_encode += encode;
            for (&k, f) in missing.iter().zip(encoded) {
                let f = Arc::new(f);
                if let Some(key) = keys.get(k) {
                    let evicted = self.image_cache.insert_tile(*key, f.clone());
                    self.metrics.record_image_cache_insert(evicted, self.image_cache.used_bytes());
                }
                features[k] = Some(f);
            }
        }
        slot.stats.image_tiles += take as u32;
        work.encoded += take;
        for f in features.into_iter().flatten() {
            // The program keeps each tile's features for the heads, in tile order.
            slot.program.on_image_features(&f, f.len() / width);
            if work.save_as.is_some() {
                work.features.push(f.clone());
            }
            // Only whole rows are queued: an empty tile would leave `feed_piece` nothing to take (and
            // no way to make progress).
            if f.len() >= width {
                work.pending.push_back(f);
            }
        }
        Ok(())
    }

    /// Decodes one chunk of slot `i`'s encoded rows: up to `capacity` rows, across tile boundaries
    /// (one decode per chunk, not one per tile) unless that speed-up is off.
    fn feed_piece(&mut self, i: usize, pending: usize, width: usize, capacity: usize) -> Result<(), EngineError> {
        let slot = &mut self.scheduler.slots[i];
        let SlotState::Imaging(work) = &mut slot.state else { return Ok(()) };
        if slot.pos + pending as i32 > self.ctx_per_seq {
            return Err(EngineError::ContextFull(format!("{pending} image tokens at position {} of {}", slot.pos, self.ctx_per_seq)));
        }
        let t1 = Instant::now();
        self.runtime.clear_embeddings();
        let mut rows = 0;
        while rows < capacity {
            let Some(front) = work.pending.front() else { break };
            let row = &front[work.front_rows_done * width..(work.front_rows_done + 1) * width];
            self.runtime.push_embedding(row, slot.pos + rows as i32, slot.seq);
            rows += 1;
            work.front_rows_done += 1;
            if work.front_rows_done * width == front.len() {
                work.pending.pop_front();
                work.front_rows_done = 0;
                if !self.speedups.batched_image_prefill {
                    break;
                }
            }
        }
        self.runtime.decode_embeddings()?;
        slot.pos += rows as i32;
        slot.stats.image_tokens += rows as u32;
        slot.stats.prefill += t1.elapsed();
        slot.stats.image_prefill += t1.elapsed();
        Ok(())
    }
}
