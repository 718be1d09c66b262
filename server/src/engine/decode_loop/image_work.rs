//! Image work: a sequence's tiles through the vision tower, then their embedding rows decoded into the
//! sequence. Done in pieces — one tile's encode, or one `n_batch` chunk of rows — between the decode
//! steps of the other sequences, so a new image never stalls running streams for longer than one
//! piece. Which image moves on, and whether it may go all the way, is the scheduler's call.
//!
//! An image that follows the shared prefix is looked up in the image cache first: judged before, the
//! sequence takes the saved cells and goes on from the end of the image; judged for the first time,
//! its cells are saved once its last row is in.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::sequence::SlotState;
use super::DecodeLoop;
use crate::engine::image_cache::{CachedImage, ImageKey, TileKey};
use crate::engine::program::SequenceEnd;
use crate::engine::runtime::{Runtime, TileBitmap, Token, Vocabulary};
use crate::engine::EngineError;

/// An image's tiles on their way into the context.
pub(super) struct ImageWork {
    tiles: Vec<TileBitmap>,
    /// Each tile's cache key (empty when the cache is off).
    keys: Vec<TileKey>,
    /// Where the finished sequence is saved in the image cache (`None`: not saved), and every tile's
    /// features gathered for that entry.
    save_as: Option<ImageKey>,
    features: Vec<Arc<Vec<f32>>>,
    /// Tiles encoded so far.
    encoded: usize,
    /// Encoded tiles whose rows are not all decoded yet, oldest first, and how many rows of the front
    /// one are.
    pending: VecDeque<Arc<Vec<f32>>>,
    front_rows_done: usize,
}

impl ImageWork {
    pub fn new(tiles: Vec<TileBitmap>, keys: Vec<TileKey>, save_as: Option<ImageKey>) -> ImageWork {
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
    /// Slot `i` takes an image: from the image cache when the same image followed the same prefix
    /// before (`prefix`: the prefix the sequence holds and nothing else), else as image work.
    pub(super) fn start_image(&mut self, i: usize, tiles: Vec<TileBitmap>, prefix: Option<Vec<Token>>) {
        let cache = &mut self.image_cache;
        let keys: Vec<TileKey> = if cache.enabled() { tiles.iter().map(|t| cache.tile_key(t)).collect() } else { Vec::new() };
        let image_key = prefix
            .filter(|p| cache.enabled() && self.scheduler.slots[i].pos == p.len() as i32)
            .map(|p| cache.image_key(&p, &keys));
        if let Some(key) = image_key {
            if self.take_cached_image(i, key, tiles.len()) {
                return;
            }
        }
        self.scheduler.slots[i].state = SlotState::Imaging(ImageWork::new(tiles, keys, image_key));
    }

    /// Restores slot `i`'s sequence as it stood after image `key`, if the cache holds it; true when
    /// the image needs no more work (taken, or the restore failed the sequence).
    fn take_cached_image(&mut self, i: usize, key: ImageKey, n_tiles: usize) -> bool {
        let Some(image) = self.image_cache.image(key) else {
            self.metrics.image_cache_image_misses.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let width = self.runtime.vocab().n_embd();
        let slot = &mut self.scheduler.slots[i];
        if let Err(e) = self.runtime.restore_cells(slot.seq, &image.cells) {
            // The restore has already dropped the prefix's cells, so the sequence cannot go on.
            slot.end = Some(SequenceEnd::Failed(e));
            return true;
        }
        slot.pos = image.positions;
        for f in &image.features {
            slot.program.on_image_features(f, f.len() / width);
        }
        slot.stats.image_tiles += n_tiles as u32;
        slot.stats.image_tiles_cached += n_tiles as u32;
        slot.stats.image_tokens += image.image_tokens;
        self.metrics.image_cache_image_hits.fetch_add(1, Ordering::Relaxed);
        self.metrics.image_cache_hits.fetch_add(n_tiles as u64, Ordering::Relaxed);
        true
    }

    /// Saves slot `i`'s sequence, which has just taken in its whole image, as image `key`.
    fn save_image(&mut self, i: usize, key: ImageKey, features: Vec<Arc<Vec<f32>>>) {
        let slot = &self.scheduler.slots[i];
        if slot.stats.image_tokens == 0 {
            return;
        }
        let feature_bytes: usize = features.iter().map(|f| std::mem::size_of_val(f.as_slice())).sum();
        let room = self.image_cache.room_for(feature_bytes);
        let cells = match self.runtime.save_cells(slot.seq, room) {
            Ok(Some(cells)) => cells,
            // Larger than the whole budget: not kept, and not copied.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "an image's cells could not be saved; it is not cached");
                return;
            }
        };
        let image = CachedImage { cells, positions: slot.pos, features, image_tokens: slot.stats.image_tokens };
        let evicted = self.image_cache.insert_image(key, image);
        self.metrics.image_cache_evictions.fetch_add(evicted.tiles, Ordering::Relaxed);
        self.metrics.image_cache_image_evictions.fetch_add(evicted.images, Ordering::Relaxed);
        self.metrics.image_cache_bytes.store(self.image_cache.used_bytes() as u64, Ordering::Relaxed);
    }

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
                    self.save_image(i, key, features);
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
                    self.metrics.image_cache_evictions.fetch_add(evicted.tiles, Ordering::Relaxed);
                    self.metrics.image_cache_image_evictions.fetch_add(evicted.images, Ordering::Relaxed);
                }
                features[k] = Some(f);
            }
            self.metrics.image_cache_bytes.store(self.image_cache.used_bytes() as u64, Ordering::Relaxed);
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
