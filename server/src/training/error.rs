//! The error of the training tools (`heie train`, the checkpoint): a shard, the heads or candle failed,
//! or the run cannot be set up as asked (with the file or setting it concerns).

use super::shards;

/// Why a training run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Shard(#[from] shards::ShardError),
    #[error(transparent)]
    Heads(#[from] heie_heads::HeadsError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Setup(String),
}

/// A result of the training tools.
pub type Result<T> = std::result::Result<T, TrainError>;
