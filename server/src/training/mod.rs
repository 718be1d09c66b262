//! Fitting and scoring the heads: `heie extract` (features into shards), `heie train`, `heie evaluate`.

pub mod evaluate;
pub mod checkpoint;
pub mod extract;
pub mod shards;
pub mod train;
