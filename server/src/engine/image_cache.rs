//! A content-addressed cache of what an image cost, so an image judged again costs almost nothing.
//! Users judge the same image more than once — a ComfyUI graph re-run after a widget change, the
//! template that reranks then filters, a resumed `heie-score` — and llama-server's own prompt cache
//! makes a repeat nearly free, so ours must too. Two kinds of entry share one byte budget
//! (`--image-cache-mb`) and one least-recently-used order:
//!
//! - **Images**: the KV cells of a sequence that holds the shared prompt prefix followed by a whole
//!   image (saved from llama.cpp into host memory), with each tile's features for the heads. A hit
//!   skips both the vision tower and the image's prefill: the sequence goes on from the end of the
//!   image. Keyed by the prefix's tokens and every tile's key, in order, so a different prompt or
//!   tiling is a different image.
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
/// An image's identity in a sequence: the prefix before it and its tiles.
pub type ImageKey = (u64, u64);

/// A sequence as it stood at the end of an image: what a hit restores.
pub struct CachedImage {
    /// The sequence's KV cells (prefix and image), as the runtime saved them.
    pub cells: Vec<u8>,
    /// The sequence's length after the image.
    pub positions: i32,
    /// Each tile's features, in tile order (the heads read them).
    pub features: Vec<Arc<Vec<f32>>>,
    /// Embedding rows the image put into the sequence.
    pub image_tokens: u32,
}

impl CachedImage {
    pub fn bytes(&self) -> usize {
        self.cells.len() + self.features.iter().map(|f| feature_bytes(f)).sum::<usize>()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Tile(TileKey),
    Image(ImageKey),
}

enum Value {
    Tile(Arc<Vec<f32>>),
    Image(Arc<CachedImage>),
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Tile(f) => feature_bytes(f),
            Value::Image(image) => image.bytes(),
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
    pub images: u64,
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

    /// The key of an image that follows `prefix` at the start of a sequence.
    pub fn image_key(&self, prefix: &[Token], tiles: &[TileKey]) -> ImageKey {
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
            Value::Image(_) => None,
        }
    }

    /// A sequence saved at the end of this image before, marking it as just used.
    pub fn image(&mut self, key: ImageKey) -> Option<Arc<CachedImage>> {
        match self.get(Key::Image(key))? {
            Value::Image(image) => Some(image.clone()),
            Value::Tile(_) => None,
        }
    }

    /// Whether an image of this many bytes would be kept (callers skip saving one that would not).
    pub fn would_keep(&self, bytes: usize) -> bool {
        self.enabled() && bytes <= self.budget_bytes
    }

    /// The most bytes of KV cells an image whose tiles' features take `feature_bytes` may have and
    /// still be kept (the runtime does not copy cells that would not be).
    pub fn room_for(&self, feature_bytes: usize) -> usize {
        if self.enabled() {
            self.budget_bytes.saturating_sub(feature_bytes)
        } else {
            0
        }
    }

    pub fn insert_tile(&mut self, key: TileKey, features: Arc<Vec<f32>>) -> Evicted {
        self.insert(Key::Tile(key), Value::Tile(features))
    }

    pub fn insert_image(&mut self, key: ImageKey, image: CachedImage) -> Evicted {
        self.insert(Key::Image(key), Value::Image(Arc::new(image)))
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
                Key::Image(_) => evicted.images += 1,
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

    fn image(cell_bytes: usize, tile_features: &[Arc<Vec<f32>>]) -> CachedImage {
        CachedImage { cells: vec![7; cell_bytes], positions: 10, features: tile_features.to_vec(), image_tokens: 8 }
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
        cache.insert_image(key, image(100, &[features(8, 1.0)]));
        assert_eq!(cache.image(cache.image_key(&[1, 2, 3], &[a, b])).map(|i| i.positions), Some(10));
        assert!(cache.image(cache.image_key(&[1, 2, 4], &[a, b])).is_none(), "another prompt");
        assert!(cache.image(cache.image_key(&[1, 2, 3], &[b, a])).is_none(), "tiles in another order");
        assert!(cache.image(cache.image_key(&[1, 2, 3], &[a])).is_none(), "another tiling");
        assert!(cache.tile(a).is_none(), "an image entry is not a tile entry");
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_of_either_kind_first() {
        // Room for 96 bytes: two tiles of 8 floats (32 bytes each) and an image of 32.
        let mut cache = ImageCache::new(96);
        let (t1, t2, t3) = (cache.tile_key(&tile(1)), cache.tile_key(&tile(2)), cache.tile_key(&tile(3)));
        let i1 = cache.image_key(&[1], &[t1]);
        assert_eq!(cache.insert_tile(t1, features(8, 1.0)), Evicted::default());
        assert_eq!(cache.insert_image(i1, image(32, &[])), Evicted::default());
        assert_eq!(cache.insert_tile(t2, features(8, 2.0)), Evicted::default());
        assert!(cache.tile(t1).is_some()); // the image is now the least recently used
        assert_eq!(cache.insert_tile(t3, features(8, 3.0)), Evicted { tiles: 0, images: 1 });
        assert!(cache.image(i1).is_none());
        assert_eq!(cache.insert_image(i1, image(32, &[])), Evicted { tiles: 1, images: 0 });
        assert!(cache.tile(t2).is_none(), "2 was the least recently used");
        assert_eq!(cache.used_bytes(), 96);
    }

    #[test]
    fn an_image_counts_its_cells_and_its_features() {
        let mut cache = ImageCache::new(1 << 10);
        let key = cache.image_key(&[1], &[]);
        cache.insert_image(key, image(100, &[features(8, 1.0), features(4, 2.0)]));
        assert_eq!(cache.used_bytes(), 100 + 32 + 16);
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
