//! A sequence judged before, taken from the image cache (`image_cache.rs`) instead of computed.
//!
//! A sequence that holds the shared prefix and takes an image starts a *chain*: a key for everything
//! it holds (prefix, tiles, then each piece of forced text) that grows with each step up to its first
//! generation. Along the chain, nothing is computed that a cached state may make unnecessary:
//!
//! - the image: when the cache holds the sequence as it stood at the end of this image, the
//!   sequence takes that state (*deferred*: restored only when its cells are needed) and its tiles'
//!   features, else the image is computed and the sequence is saved at its end;
//! - forced text after it (the instruction, the client's prompt, the answer's opening): kept aside
//!   (*unfed*) and only extended into the key;
//! - at the first generation: when the cache holds the sequence as it stood there, it is restored and
//!   the first token is sampled from the saved logits — nothing was computed since the prefix; else
//!   the deferred state is restored, the unfed text fed in one go, and the sequence saved there for
//!   next time.
//!
//! Any other step (text whose hidden states or logits the program wants, another image) first
//! *settles* the sequence: restores what was deferred and feeds what was kept aside, then takes the
//! step. The outputs are those of computing every step (tested): the cells and logits restored are
//! exactly those the same steps left before.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::image_work::ImageWork;
use super::sequence::SlotState;
use super::DecodeLoop;
use crate::engine::image_cache::{CachedState, StateKey, TileKey};
use crate::engine::program::{SequenceEnd, Step};
use crate::engine::runtime::{Runtime, TileBitmap, Token, Vocabulary};

/// What a slot carries while it is on a chain.
#[derive(Default)]
pub(super) struct Chain {
    /// The key of everything the sequence holds, counting what is deferred and unfed.
    pub key: Option<StateKey>,
    /// A cached state the sequence takes instead of what it computed so far, not yet restored.
    pub deferred: Option<Arc<CachedState>>,
    /// Forced text taken from the program but not yet fed.
    pub unfed: Vec<Token>,
}

impl Chain {
    fn pending(&self) -> bool {
        self.deferred.is_some() || !self.unfed.is_empty()
    }
}

impl<R: Runtime> DecodeLoop<R> {
    /// Slot `i` takes an image: from the cache when the same image followed the same prefix before
    /// (`prefix`: the prefix the sequence holds and nothing else), else as image work.
    pub(super) fn start_image(&mut self, i: usize, tiles: Vec<TileBitmap>, prefix: Option<Vec<Token>>) {
        let cache = &mut self.image_cache;
        let keys: Vec<TileKey> = if cache.enabled() { tiles.iter().map(|t| cache.tile_key(t)).collect() } else { Vec::new() };
        let slot = &mut self.scheduler.slots[i];
        let key = prefix.filter(|p| cache.enabled() && slot.pos == p.len() as i32).map(|p| cache.image_key(&p, &keys));
        slot.chain.key = key;
        let Some(key) = key else {
            slot.state = SlotState::Imaging(ImageWork::new(tiles, keys, None));
            return;
        };
        let Some(state) = cache.state(key) else {
            self.metrics.image_cache_image_misses.fetch_add(1, Ordering::Relaxed);
            slot.state = SlotState::Imaging(ImageWork::new(tiles, keys, Some(key)));
            return;
        };
        let width = self.runtime.vocab().n_embd();
        for f in &state.features {
            slot.program.on_image_features(f, f.len() / width);
        }
        let n_tiles = tiles.len() as u32;
        slot.pos = state.positions;
        slot.stats.image_tiles += n_tiles;
        slot.stats.image_tiles_cached += n_tiles;
        slot.stats.image_tokens += state.image_tokens;
        slot.chain.deferred = Some(state);
        self.metrics.image_cache_image_hits.fetch_add(1, Ordering::Relaxed);
        self.metrics.image_cache_hits.fetch_add(u64::from(n_tiles), Ordering::Relaxed);
    }

    /// Forced text on a chain: kept aside and added to the key instead of fed, when the program wants
    /// nothing from it (`plain`: no hidden states, no logits). False when it must be fed now.
    pub(super) fn defer_text(&mut self, i: usize, tokens: &[Token], plain: bool) -> bool {
        let slot = &mut self.scheduler.slots[i];
        let Some(key) = slot.chain.key else { return false };
        if !plain {
            // Fed as it is, so the chain's key no longer describes the sequence: the chain ends.
            slot.chain.key = None;
            return false;
        }
        slot.chain.key = Some(self.image_cache.text_key(key, tokens));
        slot.chain.unfed.extend_from_slice(tokens);
        slot.pos += tokens.len() as i32;
        true
    }

    /// Whether slot `i` must settle before its next step.
    pub(super) fn unsettled(&self, i: usize) -> bool {
        self.scheduler.slots[i].chain.pending()
    }

    /// Restores what slot `i` deferred and feeds what it kept aside; `step` is taken once that is
    /// done. The chain ends here unless `step` is its first generation.
    pub(super) fn settle(&mut self, i: usize, step: Step) {
        let slot = &mut self.scheduler.slots[i];
        if !matches!(step, Step::Generate { .. }) {
            slot.chain.key = None;
        }
        let unfed = std::mem::take(&mut slot.chain.unfed);
        // The cells hold what the deferred state holds (or what was computed); unfed text goes after.
        let held_pos = slot.pos - unfed.len() as i32;
        if let Some(state) = slot.chain.deferred.take() {
            if let Err(e) = self.runtime.restore_cells(slot.seq, &state.cells) {
                // The restore has already dropped the cells the sequence held: it cannot go on.
                slot.end = Some(SequenceEnd::Failed(e));
                return;
            }
        }
        slot.pos = held_pos;
        slot.held = Some(step);
        if !unfed.is_empty() {
            slot.state = SlotState::Feeding { tokens: unfed, capture: Vec::new(), logits: false, done: 0, publish: false };
        }
    }

    /// Slot `i` reaches its first generation on a chain: takes the cached state there when there is
    /// one, saves the sequence there when it computed everything; false when it must settle first.
    pub(super) fn reach_generation(&mut self, i: usize) -> bool {
        let slot = &mut self.scheduler.slots[i];
        let Some(chain_key) = slot.chain.key else { return true };
        // Its own key even where no text follows the image, so it never replaces the image's entry.
        let key = self.image_cache.text_key(chain_key, &[]);
        if slot.chain.pending() {
            let Some(state) = self.image_cache.state(key).filter(|s| s.logits.is_some()) else { return false };
            if let Err(e) = self.runtime.restore_cells(slot.seq, &state.cells) {
                slot.end = Some(SequenceEnd::Failed(e));
                return true;
            }
            slot.stats.cached_prompt_tokens += slot.chain.unfed.len() as u32;
            slot.chain = Default::default();
            slot.pos = state.positions;
            slot.pending_logits = state.logits.clone();
            self.metrics.image_cache_prompt_hits.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        slot.chain.key = None;
        if let Some(logits) = slot.pending_logits.clone() {
            self.save_state(i, key, Vec::new(), 0, Some(logits));
        }
        true
    }

    /// Saves slot `i`'s sequence as `key`: at the end of its image (with the tiles' features and the
    /// image's token count), or where it first generates (with the logits it samples from).
    pub(super) fn save_state(
        &mut self,
        i: usize,
        key: StateKey,
        features: Vec<Arc<Vec<f32>>>,
        image_tokens: u32,
        logits: Option<Vec<f32>>,
    ) {
        let slot = &self.scheduler.slots[i];
        let other_bytes: usize = features.iter().map(|f| std::mem::size_of_val(f.as_slice())).sum::<usize>()
            + logits.as_deref().map_or(0, std::mem::size_of_val);
        let cells = match self.runtime.save_cells(slot.seq, self.image_cache.room_for(other_bytes)) {
            Ok(Some(cells)) => cells,
            // Larger than the whole budget: not kept, and not copied.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a sequence's cells could not be saved; it is not cached");
                return;
            }
        };
        let state = CachedState { cells, positions: slot.pos, features, image_tokens, logits };
        let evicted = self.image_cache.insert_state(key, state);
        self.metrics.record_image_cache_insert(evicted, self.image_cache.used_bytes());
    }
}
