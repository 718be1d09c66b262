//! The engine's error type: everything that can go wrong loading models or running llama.cpp.

/// Errors from the llama.cpp engine. Messages are one line and name the file or stage at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// A model or mmproj file is missing, corrupt, or does not fit the other.
    #[error("{0}")]
    Load(String),
    /// The vision tower failed on an image tile.
    #[error("image encoding failed: {0}")]
    Encode(String),
    /// llama_decode failed.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The sequence needs more KV cells than its share of the context.
    #[error("the request does not fit in the context ({0}); lower --max-tiles or raise --ctx-size")]
    ContextFull(String),
    /// The engine thread has stopped (shutdown or a fatal error).
    #[error("the engine is not running")]
    Stopped,
    /// The engine stopped admitting work (the server is shutting down); queued sequences are refused.
    #[error("the engine is shutting down and takes no new work")]
    ShuttingDown,
    /// The admission queue is full.
    #[error("the queue is full ({0} waiting)")]
    QueueFull(usize),
}
