//! llama.cpp, bound directly through `llama-cpp-sys-2` (with mtmd for the vision tower): the engine's
//! runtime, and the only place in the crate with `unsafe`.
//!
//! The safe `llama-cpp-2` crate hides the raw handles HEIE needs (per-tile image embeddings, toggling
//! hidden-state output, embedding batches), so the C API is bound here. Every type owns its handle and
//! frees it in `Drop`; nothing raw leaves this module. [`LlamaRuntime`] is what the decode loop sees,
//! through [`Runtime`]; [`Model`] is the shared text side, through [`Vocabulary`] and its own methods.
//!
//! Files follow llama.cpp's seams: `backend.rs` (process-wide init, logs, last error), `devices.rs`
//! (GPU listing), `model.rs` (model and vocabulary), `context.rs` (context and batches), `vision.rs`
//! (mtmd), `gguf_file.rs` (the files checked in Rust before llama.cpp opens them), `load.rs` (a pair
//! loaded and described).
//!
//! [`Vocabulary`]: crate::engine::runtime::Vocabulary

mod backend;
mod context;
mod devices;
pub mod gguf_file;
mod load;
mod model;
mod vision;

use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use crate::engine::runtime::TileBitmap;
use crate::engine::runtime::{Runtime, Token};
use crate::engine::{flash_attention_for, EngineConfig, EngineError};
use context::{Batch, Context, ContextParams};
use vision::Vision;

pub use devices::{cpu_build_features, gpu_devices, runs_on_gpu, supports_gpu_offload};
pub use load::{load, Loaded};
pub use model::Model;

// The engine's `Token` is llama.cpp's `llama_token`, so ids cross the boundary without conversion;
// this stops compiling if the bindings ever change the type.
const _: fn(sys::llama_token) -> Token = |t| t;

/// The engine thread's llama.cpp state: the context, the vision tower and the two batches every step
/// reuses. Not `Send` (its parts are not): made and used on the engine thread.
pub struct LlamaRuntime {
    // Declaration order is drop order: the context and the vision tower go before the model they
    // were made from (each also holds the model's Arc, so this is belt and braces).
    ctx: Context,
    vision: Vision,
    batch: Batch,
    embd_batch: Batch,
    model: Arc<Model>,
}

impl LlamaRuntime {
    /// Creates the context and the vision tower for `config`: one sequence per slot, each with
    /// `ctx_per_sequence` cells (cached prefixes and images are kept in host memory, not in the
    /// context, and restored into a slot's own cells).
    pub fn new(model: Arc<Model>, config: &EngineConfig, gpu: bool, tokens_per_tile: usize) -> Result<LlamaRuntime, EngineError> {
        let per_sequence_kv = config.speedups.per_sequence_kv;
        let params = ContextParams {
            n_ctx: config.ctx_per_sequence * config.slots,
            n_batch: config.n_batch,
            n_seq_max: config.slots,
            threads: config.threads,
            flash_attention: flash_attention_for(config.flash_attention, gpu),
            per_sequence_kv,
        };
        let vision_batch_tokens = tokens_per_tile * config.vision_batch_tiles.max(1);
        let ctx = Context::new(model.clone(), &params)?;
        let vision = Vision::load(&config.mmproj, model.clone(), gpu, config.threads, vision_batch_tokens)?;
        let n_batch = config.n_batch as usize;
        Ok(LlamaRuntime {
            ctx,
            vision,
            batch: Batch::tokens(n_batch),
            embd_batch: Batch::embeddings(n_batch, model.n_embd()),
            model,
        })
    }
}

// Every method is a thin forward, marked inline: they run per batch row, and the decode loop is
// monomorphised over this type, so they compile down to the direct calls they replace.
impl Runtime for LlamaRuntime {
    type Vocab = Model;

    #[inline]
    fn vocab(&self) -> &Model {
        &self.model
    }

    #[inline]
    fn batch_capacity(&self) -> usize {
        self.batch.capacity()
    }

    #[inline]
    fn clear_batch(&mut self) {
        self.batch.clear();
    }

    #[inline]
    fn push_token(&mut self, token: Token, pos: i32, seq: i32, output: bool) {
        self.batch.push_token(token, pos, seq, output);
    }

    fn decode_batch(&mut self, hidden_states: bool) -> Result<(), EngineError> {
        // Hidden states only where asked: with them on, llama.cpp outputs every row of the batch.
        self.ctx.set_embeddings(hidden_states);
        self.ctx.decode(&self.batch)
    }

    #[inline]
    fn clear_embeddings(&mut self) {
        self.embd_batch.clear();
    }

    #[inline]
    fn push_embedding(&mut self, row: &[f32], pos: i32, seq: i32) {
        self.embd_batch.push_embedding(row, pos, seq, false);
    }

    fn decode_embeddings(&mut self) -> Result<(), EngineError> {
        self.ctx.set_embeddings(false);
        self.ctx.decode(&self.embd_batch)
    }

    #[inline]
    fn logits(&self, row: usize) -> Option<&[f32]> {
        self.ctx.logits(row)
    }

    #[inline]
    fn hidden(&self, row: usize) -> Option<&[f32]> {
        self.ctx.hidden(row)
    }

    fn save_cells(&mut self, seq: i32, max_bytes: usize) -> Result<Option<Vec<u8>>, EngineError> {
        self.ctx.save_sequence(seq, max_bytes)
    }

    fn restore_cells(&mut self, seq: i32, saved: &[u8]) -> Result<(), EngineError> {
        self.ctx.restore_sequence(seq, saved)
    }

    #[inline]
    fn remove_cells(&mut self, seq: i32, from: i32) {
        self.ctx.remove_from(seq, from);
    }

    fn encode_tile(&mut self, tile: &TileBitmap) -> Result<Vec<f32>, EngineError> {
        self.vision.encode_tile(&tile.rgb, tile.width, tile.height)
    }

    fn encode_tiles(&mut self, tiles: &[TileBitmap]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.vision.encode_tiles(tiles)
    }
}
