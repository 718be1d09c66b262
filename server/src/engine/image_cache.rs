//! A content-addressed cache of tile features: a tile the vision tower has already encoded (the same
//! pixels at the same size) is not encoded again. Users judge the same image more than once — a
//! ComfyUI graph re-run after a widget change, the template that reranks then filters, a resumed
//! `heie-score` — and the vision tower is a large share of an image's cost.
//!
//! Keys are two independently keyed 64-bit SipHashes of the tile's size and pixels: the keys are
//! random per process, so nobody can craft two tiles that collide, and 128 bits make an accidental
//! collision between the few hundred tiles a cache holds vanishingly unlikely. Features are what
//! the tower returned, so a hit gives exactly what an encode would (greedy outputs are identical;
//! tested). Memory is bounded by a byte budget; the least recently used tiles go first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use super::runtime::TileBitmap;

type TileKey = (u64, u64);

struct Entry {
    features: Arc<Vec<f32>>,
    last_used: u64,
}

pub struct TileFeatureCache {
    budget_bytes: usize,
    used_bytes: usize,
    entries: HashMap<TileKey, Entry>,
    clock: u64,
    hashers: (RandomState, RandomState),
}

impl TileFeatureCache {
    /// A cache holding at most `budget_bytes` of features; 0 turns it off.
    pub fn new(budget_bytes: usize) -> TileFeatureCache {
        TileFeatureCache {
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

    fn key(&self, tile: &TileBitmap) -> TileKey {
        let digest = |state: &RandomState| {
            let mut hasher = state.build_hasher();
            hasher.write_u32(tile.width);
            hasher.write_u32(tile.height);
            hasher.write(&tile.rgb);
            hasher.finish()
        };
        (digest(&self.hashers.0), digest(&self.hashers.1))
    }

    /// The features of a tile encoded before, marking it as just used.
    pub fn get(&mut self, tile: &TileBitmap) -> Option<Arc<Vec<f32>>> {
        if !self.enabled() {
            return None;
        }
        let key = self.key(tile);
        self.clock += 1;
        let entry = self.entries.get_mut(&key)?;
        entry.last_used = self.clock;
        Some(entry.features.clone())
    }

    /// Keeps a tile's features, evicting the least recently used tiles to stay in budget; returns how
    /// many were evicted. Features larger than the whole budget are not kept.
    pub fn insert(&mut self, tile: &TileBitmap, features: Arc<Vec<f32>>) -> u64 {
        let size = features.len() * std::mem::size_of::<f32>();
        if !self.enabled() || size > self.budget_bytes {
            return 0;
        }
        let key = self.key(tile);
        self.clock += 1;
        if let Some(old) = self.entries.insert(key, Entry { features, last_used: self.clock }) {
            self.used_bytes -= old.features.len() * std::mem::size_of::<f32>();
        }
        self.used_bytes += size;
        let mut evicted = 0;
        while self.used_bytes > self.budget_bytes {
            // A linear scan: a cache holds tens to hundreds of tiles, and this runs once per encode.
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) else { break };
            let gone = self.entries.remove(&oldest).expect("the key was just found");
            self.used_bytes -= gone.features.len() * std::mem::size_of::<f32>();
            evicted += 1;
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

    #[test]
    fn the_same_pixels_hit_and_other_pixels_or_sizes_miss() {
        let mut cache = TileFeatureCache::new(1 << 20);
        cache.insert(&tile(1), features(8, 1.0));
        assert_eq!(cache.get(&tile(1)).as_deref(), Some(&vec![1.0; 8]));
        assert!(cache.get(&tile(2)).is_none());
        let reshaped = TileBitmap { rgb: vec![1; 4 * 4 * 3], width: 8, height: 2 };
        assert!(cache.get(&reshaped).is_none(), "same bytes at another size are another tile");
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_first() {
        // Room for two tiles of 8 floats (32 bytes each).
        let mut cache = TileFeatureCache::new(64);
        assert_eq!(cache.insert(&tile(1), features(8, 1.0)), 0);
        assert_eq!(cache.insert(&tile(2), features(8, 2.0)), 0);
        assert!(cache.get(&tile(1)).is_some()); // 1 is now more recent than 2
        assert_eq!(cache.insert(&tile(3), features(8, 3.0)), 1);
        assert!(cache.get(&tile(2)).is_none(), "2 was the least recently used");
        assert!(cache.get(&tile(1)).is_some() && cache.get(&tile(3)).is_some());
        assert_eq!(cache.used_bytes(), 64);
    }

    #[test]
    fn a_zero_budget_keeps_nothing_and_oversized_features_are_not_kept() {
        let mut off = TileFeatureCache::new(0);
        off.insert(&tile(1), features(8, 1.0));
        assert!(off.get(&tile(1)).is_none());
        let mut small = TileFeatureCache::new(16);
        assert_eq!(small.insert(&tile(1), features(8, 1.0)), 0);
        assert!(small.get(&tile(1)).is_none());
        assert_eq!(small.used_bytes(), 0);
    }

    #[test]
    fn inserting_a_tile_again_replaces_it_without_counting_it_twice() {
        let mut cache = TileFeatureCache::new(1 << 10);
        cache.insert(&tile(1), features(8, 1.0));
        cache.insert(&tile(1), features(8, 1.0));
        assert_eq!(cache.used_bytes(), 32);
    }
}
