//! Fitting and scoring the heads: `heie extract` (features into shards), `heie train`, `heie evaluate`.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod evaluate;
pub mod extract;
pub mod shards;
pub mod train;
