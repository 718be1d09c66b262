//! Fitting and scoring the heads: `heie extract` (features into shards), `heie train`, `heie evaluate`.

pub mod shards;
