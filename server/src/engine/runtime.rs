//! What the engine needs from a model runtime, as two traits: [`Vocabulary`], the read-only text side
//! that callers' threads tokenise with, and [`Runtime`], the engine thread's side: one context (its KV
//! cache and compute state), its batch buffers and the vision tower.
//!
//! The decode loop is written against these traits only. llama.cpp is the one implementation
//! (`llama/`); another runtime would be one more module implementing both.
//!
//! Dispatch is static: the decode loop is generic over its runtime and the engine names the concrete
//! type once (`engine::ActiveRuntime`). Every method here runs per token or per batch row, and a
//! `dyn Runtime` would put an indirect call (and no inlining of the small batch writes) on that path;
//! one runtime per build needs no run-time choice.

use super::EngineError;

/// One tile image, already cut and resized by the pipeline (off the engine thread): what a sequence
/// hands the engine and the runtime's vision tower encodes.
#[derive(Debug, Clone)]
pub struct TileBitmap {
    pub rgb: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// A vocabulary id. The same integer type as llama.cpp's `llama_token` (checked where llama.cpp is
/// bound), so ids pass through without conversion.
pub type Token = i32;

/// The text model's read-only side. Shared across threads: requests tokenise their prompts on their
/// own threads while the engine thread detokenises what it samples.
pub trait Vocabulary: Send + Sync + 'static {
    /// The model's hidden width: the size of every hidden state and image embedding row.
    fn n_embd(&self) -> usize;
    /// Tokenises text; `parse_special` lets control tokens such as `<|im_start|>` be written as text.
    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<Token>;
    /// The bytes a token stands for (possibly part of a multi-byte character).
    fn token_bytes(&self, token: Token) -> Vec<u8>;
    /// Whether a token ends generation (`<|im_end|>`, `<|endoftext|>`, ...).
    fn is_eog(&self, token: Token) -> bool;
}

/// The engine thread's runtime. Not `Send`: created on the engine thread and used only there.
///
/// Decoding works on one token batch and one embedding batch that the runtime owns and reuses, so a
/// step allocates nothing: the caller clears a batch, pushes rows, decodes, then reads the rows' outputs
/// until the next decode. Sequence ids are below the number of slots.
pub trait Runtime {
    type Vocab: Vocabulary;

    /// The text model this runtime runs.
    fn vocab(&self) -> &Self::Vocab;
    /// Rows one decode takes at most (token batch and embedding batch alike).
    fn batch_capacity(&self) -> usize;

    /// Empties the token batch.
    fn clear_batch(&mut self);
    /// Appends token `token` of sequence `seq` at position `pos`; `output` asks for its logits (and
    /// hidden state, on a decode with hidden states).
    fn push_token(&mut self, token: Token, pos: i32, seq: i32, output: bool);
    /// Decodes the token batch. `hidden_states` also outputs each row's final hidden state, which makes
    /// the runtime output every row of the batch, so callers ask for it only when they capture one.
    fn decode_batch(&mut self, hidden_states: bool) -> Result<(), EngineError>;

    /// Empties the embedding batch.
    fn clear_embeddings(&mut self);
    /// Appends one embedding row (the model's width) of sequence `seq` at position `pos`, no output.
    fn push_embedding(&mut self, row: &[f32], pos: i32, seq: i32);
    /// Decodes the embedding batch (without hidden-state output).
    fn decode_embeddings(&mut self) -> Result<(), EngineError>;

    /// The logits of row `row` of the last decode, if it was marked for output.
    fn logits(&self, row: usize) -> Option<&[f32]>;
    /// The final hidden state (after the output norm) of row `row` of the last decode, if that decode
    /// had hidden states on.
    fn hidden(&self, row: usize) -> Option<&[f32]>;

    /// A copy of every KV cell sequence `seq` holds, to give another sequence later with
    /// [`Runtime::restore_cells`] instead of computing them again (the shared prefix, a cached image);
    /// `None`, without copying, when the copy would be larger than `max_bytes`.
    fn save_cells(&mut self, seq: i32, max_bytes: usize) -> Result<Option<Vec<u8>>, EngineError>;
    /// Replaces sequence `seq`'s cells with ones saved by [`Runtime::save_cells`]; on failure the
    /// sequence holds no cells.
    fn restore_cells(&mut self, seq: i32, saved: &[u8]) -> Result<(), EngineError>;
    /// Removes sequence `seq`'s cells at positions `from..` (all of them with `from = 0`).
    fn remove_cells(&mut self, seq: i32, from: i32);

    /// One tile through the vision tower: its post-projector embeddings, `n_tokens × n_embd` row-major.
    fn encode_tile(&mut self, tile: &TileBitmap) -> Result<Vec<f32>, EngineError>;
    /// Several tiles through the vision tower together; each tile's embeddings, in order, exactly as
    /// [`Runtime::encode_tile`] gives them.
    fn encode_tiles(&mut self, tiles: &[TileBitmap]) -> Result<Vec<Vec<f32>>, EngineError>;
}
