//! A content-addressed cache of what an image cost, so an image judged again costs almost nothing.
//! Users judge the same image more than once — a ComfyUI graph re-run after a widget change, the
//! template that reranks then filters, a resumed `heie-score` — and llama-server's own prompt cache
//! makes a repeat nearly free, so ours must too. Two kinds of entry share one byte budget
//! (`--image-cache-mb`) and one least-recently-used order:
//!
//! - **Sequences**: the KV cells of a sequence that holds the shared prompt prefix followed by a whole
//!   image (saved from llama.cpp into host memory), with each tile's features for the heads; and the
//!   same sequence further on, after each piece of forced text that follows the image up to the first
//!   generated token (the instruction, the client's prompt, the answer's opening), with the logits
//!   its last token left. A hit skips the vision tower, the image's prefill and that text: judged
//!   again with the same prompt, an image's first token is sampled straight from the saved logits.
//!   Keyed by the prefix's tokens, every tile's key in order, and each piece of text since, so a
//!   different prompt or tiling is a different entry.
//! - **Tiles**: one tile's features (the vision tower's output). A hit skips the tile's encode; used
//!   where the image entry misses (another prompt, an image evicted while its tiles were not).
//!
//! Keys are two independently keyed 64-bit SipHashes: the keys are random per process, so nobody can
//! craft two tiles that collide, and 128 bits make an accidental collision between the few hundred
//! entries a cache holds vanishingly unlikely. Values are exactly what was computed, so a hit gives
//! what the work would have (greedy outputs are identical; tested). An image entry's bytes count its
//! features even when tile entries share them: the budget is an upper bound on what the cache holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use super::runtime::{TileBitmap, Token};

/// A tile's identity: its size and pixels.
pub type TileKey = (u64, u64);
/// What a sequence holds: the prefix, the image's tiles and the text since, hashed together.
pub type StateKey = (u64, u64);

/// A sequence as it stood at the end of its image, or of a piece of text after it: what a hit restores.
pub struct CachedState {
    /// The sequence's KV cells, as the runtime saved them.
    pub cells: Vec<u8>,
    /// The sequence's length.
    pub positions: i32,
    /// Each tile's features, in tile order (the heads read them); at the end of the image only.
    pub features: Vec<Arc<Vec<f32>>>,
    /// Embedding rows the image put into the sequence; at the end of the image only.
    pub image_tokens: u32,
    /// The logits after the last token of a piece of text (where the next generation samples from).
    pub logits: Option<Vec<f32>>,
}

impl CachedState {
    pub fn bytes(&self) -> usize {
        let logits = self.logits.as_deref().map_or(0, std::mem::size_of_val);
        self.cells.len() + self.features.iter().map(|f| feature_bytes(f)).sum::<usize>() + logits
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Tile(TileKey),
    State(StateKey),
}

enum Value {
    Tile(Arc<Vec<f32>>),
    State(Arc<CachedState>),
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Tile(f) => feature_bytes(f),
            Value::State(state) => state.bytes(),
        }
    }
}

fn feature_bytes(features: &[f32]) -> usize {
    std::mem::size_of_val(features)
}

struct Entry {
    value: Value,
    last_used: u64,
}

/// What an insert did to the rest of the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub tiles: u64,
    pub states: u64,
}

pub struct ImageCache {
    budget_bytes: usize,
    used_bytes: usize,
    entries: HashMap<Key, Entry>,
    clock: u64,
    hashers: (RandomState, RandomState),
}

impl ImageCache {
    /// A cache holding at most `budget_bytes`; 0 turns it off.
    pub fn new(budget_bytes: usize) -> ImageCache {
        ImageCache {
            budget_bytes,
            used_bytes: 0,
            entries: HashMap::new(),
            clock: 0,
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    fn digest(&self, write: impl Fn(&mut dyn Hasher)) -> (u64, u64) {
        let one = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            write(&mut hasher);
            hasher.finish()
        };
        (one(&self.hashers.0), one(&self.hashers.1))
    }

    /// The key of a tile: its size and pixels. Computed once per tile and reused for both kinds of
    /// entry (hashing a tile reads every pixel).
    pub fn tile_key(&self, tile: &TileBitmap) -> TileKey {
        self.digest(|h| {
            h.write_u32(tile.width);
            h.write_u32(tile.height);
            h.write(&tile.rgb);
        })
    }

    /// The key of a sequence holding `prefix` and then an image of these tiles.
    pub fn image_key(&self, prefix: &[Token], tiles: &[TileKey]) -> StateKey {
        self.digest(|h| {
            h.write_usize(prefix.len());
            for t in prefix {
                h.write_i32(*t);
            }
            h.write_usize(tiles.len());
            for (a, b) in tiles {
                h.write_u64(*a);
                h.write_u64(*b);
            }
        })
    }

    /// The key of the sequence `key` describes with `text` appended.
    pub fn text_key(&self, key: StateKey, text: &[Token]) -> StateKey {
        self.digest(|h| {
            h.write_u64(key.0);
            h.write_u64(key.1);
            h.write_usize(text.len());
            for t in text {
                h.write_i32(*t);
            }
        })
    }

    fn get(&mut self, key: Key) -> Option<&Value> {
        if !self.enabled() {
            return None;
        }
        self.clock += 1;
        let entry = self.entries.get_mut(&key)?;
        entry.last_used = self.clock;
        Some(&entry.value)
    }

    /// The features of a tile encoded before, marking it as just used.
    pub fn tile(&mut self, key: TileKey) -> Option<Arc<Vec<f32>>> {
        match self.get(Key::Tile(key))? {
            Value::Tile(f) => Some(f.clone()),
            Value::State(_) => None,
        }
    }

    /// A sequence saved as `key` before, marking it as just used.
    pub fn state(&mut self, key: StateKey) -> Option<Arc<CachedState>> {
        match self.get(Key::State(key))? {
            Value::State(state) => Some(state.clone()),
            Value::Tile(_) => None,
        }
    }

    /// Whether a value of this many bytes would be kept.
    pub fn would_keep(&self, bytes: usize) -> bool {
        self.enabled() && bytes <= self.budget_bytes
    }

    /// The most bytes of KV cells a state whose other parts (features, logits) take `other_bytes` may
    /// have and still be kept (the runtime does not copy cells that would not be).
    pub fn room_for(&self, other_bytes: usize) -> usize {
        if self.enabled() {
            self.budget_bytes.saturating_sub(other_bytes)
        } else {
            0
        }
    }

    pub fn insert_tile(&mut self, key: TileKey, features: Arc<Vec<f32>>) -> Evicted {
        self.insert(Key::Tile(key), Value::Tile(features))
    }

    pub fn insert_state(&mut self, key: StateKey, state: CachedState) -> Evicted {
        self.insert(Key::State(key), Value::State(Arc::new(state)))
    }

    /// Keeps a value, evicting the least recently used entries to stay in budget. A value larger than
    /// the whole budget is not kept.
    fn insert(&mut self, key: Key, value: Value) -> Evicted {
        let size = value.bytes();
        let mut evicted = Evicted::default();
        if !self.would_keep(size) {
            return evicted;
        }
        self.clock += 1;
        if let Some(old) = self.entries.insert(key, Entry { value, last_used: self.clock }) {
            self.used_bytes -= old.value.bytes();
        }
        self.used_bytes += size;
        while self.used_bytes > self.budget_bytes {
            // A linear scan: a cache holds tens to hundreds of entries, and this runs once per encode
            // or saved image.
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) else { break };
            let gone = self.entries.remove(&oldest).expect("the key was just found");
            self.used_bytes -= gone.value.bytes();
            match oldest {
                Key::Tile(_) => evicted.tiles += 1,
                Key::State(_) => evicted.states += 1,
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(seed: u8) -> TileBitmap {
        TileBitmap { rgb: vec![seed; 4 * 4 * 3], width: 4, height: 4 }
    }

    fn features(n: usize, value: f32) -> Arc<Vec<f32>> {
        Arc::new(vec![value; n])
    }

    fn image(cell_bytes: usize, tile_features: &[Arc<Vec<f32>>]) -> CachedState {
        CachedState { cells: vec![7; cell_bytes], positions: 10, features: tile_features.to_vec(), image_tokens: 8, logits: None }
    }

    #[test]
    fn the_same_pixels_hit_and_other_pixels_or_sizes_miss() {
        let mut cache = ImageCache::new(1 << 20);
        let one = cache.tile_key(&tile(1));
        cache.insert_tile(one, features(8, 1.0));
        assert_eq!(cache.tile(cache.tile_key(&tile(1))).as_deref(), Some(&vec![1.0; 8]));
        assert!(cache.tile(cache.tile_key(&tile(2))).is_none());
        let reshaped = TileBitmap { rgb: vec![1; 4 * 4 * 3], width: 8, height: 2 };
        assert!(cache.tile(cache.tile_key(&reshaped)).is_none(), "same bytes at another size are another tile");
    }

    #[test]
    fn an_image_is_the_same_only_after_the_same_prefix_with_the_same_tiles_in_order() {
        let mut cache = ImageCache::new(1 << 20);
        let (a, b) = (cache.tile_key(&tile(1)), cache.tile_key(&tile(2)));
        let key = cache.image_key(&[1, 2, 3], &[a, b]);
        cache.insert_state(key, image(100, &[features(8, 1.0)]));
        assert_eq!(cache.state(cache.image_key(&[1, 2, 3], &[a, b])).map(|i| i.positions), Some(10));
        assert!(cache.state(cache.image_key(&[1, 2, 4], &[a, b])).is_none(), "another prompt");
        assert!(cache.state(cache.image_key(&[1, 2, 3], &[b, a])).is_none(), "tiles in another order");
        assert!(cache.state(cache.image_key(&[1, 2, 3], &[a])).is_none(), "another tiling");
        assert!(cache.tile(a).is_none(), "an image entry is not a tile entry");
        let text = cache.text_key(key, &[5, 6]);
        assert!(text != key && text != cache.text_key(key, &[5]) && text == cache.text_key(key, &[5, 6]));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_of_either_kind_first() {
        // Room for 96 bytes: two tiles of 8 floats (32 bytes each) and an image of 32.
        let mut cache = ImageCache::new(96);
        let (t1, t2, t3) = (cache.tile_key(&tile(1)), cache.tile_key(&tile(2)), cache.tile_key(&tile(3)));
        let i1 = cache.image_key(&[1], &[t1]);
        assert_eq!(cache.insert_tile(t1, features(8, 1.0)), Evicted::default());
        assert_eq!(cache.insert_state(i1, image(32, &[])), Evicted::default());
        assert_eq!(cache.insert_tile(t2, features(8, 2.0)), Evicted::default());
        assert!(cache.tile(t1).is_some()); // the image is now the least recently used
        assert_eq!(cache.insert_tile(t3, features(8, 3.0)), Evicted { tiles: 0, states: 1 });
        assert!(cache.state(i1).is_none());
        assert_eq!(cache.insert_state(i1, image(32, &[])), Evicted { tiles: 1, states: 0 });
        assert!(cache.tile(t2).is_none(), "2 was the least recently used");
        assert_eq!(cache.used_bytes(), 96);
    }

    #[test]
    fn a_state_counts_its_cells_features_and_logits() {
        let mut cache = ImageCache::new(1 << 10);
        let key = cache.image_key(&[1], &[]);
        cache.insert_state(key, image(100, &[features(8, 1.0), features(4, 2.0)]));
        assert_eq!(cache.used_bytes(), 100 + 32 + 16);
        let text = cache.text_key(key, &[1]);
        cache.insert_state(text, CachedState { logits: Some(vec![0.0; 10]), ..image(50, &[]) });
        assert_eq!(cache.used_bytes(), 148 + 50 + 40);
    }

    #[test]
    fn a_zero_budget_keeps_nothing_and_oversized_values_are_not_kept() {
        let mut off = ImageCache::new(0);
        let t1 = off.tile_key(&tile(1));
        off.insert_tile(t1, features(8, 1.0));
        assert!(off.tile(t1).is_none());
        let mut small = ImageCache::new(16);
        assert!(!small.would_keep(32));
        assert_eq!(small.room_for(12), 4);
        assert_eq!(off.room_for(0), 0);
        assert_eq!(small.insert_tile(t1, features(8, 1.0)), Evicted::default());
        assert!(small.tile(t1).is_none());
        assert_eq!(small.used_bytes(), 0);
    }

    #[test]
    fn inserting_again_replaces_without_counting_twice() {
        let mut cache = ImageCache::new(1 << 10);
        let t1 = cache.tile_key(&tile(1));
        cache.insert_tile(t1, features(8, 1.0));
        cache.insert_tile(t1, features(8, 1.0));
        assert_eq!(cache.used_bytes(), 32);
    }
}
