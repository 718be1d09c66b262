//! A llama context (the KV cache and compute state) and the batches it decodes: token batches and
//! embedding batches (the image rows), never both kinds in one decode.

use std::ptr::NonNull;
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::backend::take_last_error;
use super::model::Model;
use crate::engine::runtime::Token;
use crate::engine::EngineError;

/// Parameters of a llama context.
pub struct ContextParams {
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_seq_max: u32,
    pub threads: i32,
    /// Flash attention: `None` = llama.cpp decides (it turns it on where the backend supports it).
    pub flash_attention: Option<bool>,
    /// One KV stream per sequence (`n_ctx / n_seq_max` cells each): a token attends over its own
    /// sequence's cells only. Off, all sequences share one unified cache and every token's attention
    /// spans every sequence's cells (masked), which grows with the number in flight.
    pub per_sequence_kv: bool,
}

/// A llama context: the KV cache and the compute state. Owned by exactly one thread (not Send).
pub struct Context {
    raw: NonNull<sys::llama_context>,
    memory: sys::llama_memory_t,
    n_vocab: usize,
    n_embd: usize,
    embeddings_on: bool,
    _model: Arc<Model>,
    _not_send: std::marker::PhantomData<*mut ()>,
}

impl Context {
    pub fn new(model: Arc<Model>, p: &ContextParams) -> Result<Context, EngineError> {
        // SAFETY: default params are plain data; the model outlives the context via the Arc we keep.
        let raw = unsafe {
            let mut params = sys::llama_context_default_params();
            params.n_ctx = p.n_ctx;
            params.n_batch = p.n_batch;
            params.n_ubatch = p.n_batch;
            params.n_seq_max = p.n_seq_max;
            params.n_threads = p.threads;
            params.n_threads_batch = p.threads;
            params.kv_unified = !p.per_sequence_kv;
            params.flash_attn_type = match p.flash_attention {
                None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
                Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            };
            params.embeddings = false;
            params.no_perf = true;
            sys::llama_init_from_model(model.raw.as_ptr(), params)
        };
        let raw = NonNull::new(raw)
            .ok_or_else(|| EngineError::Load(format!("could not create a llama context{}", take_last_error())))?;
        // SAFETY: valid context.
        let memory = unsafe { sys::llama_get_memory(raw.as_ptr()) };
        Ok(Context {
            raw,
            memory,
            n_vocab: model.n_vocab(),
            n_embd: model.n_embd(),
            embeddings_on: false,
            _model: model,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Switches hidden-state output. llama.cpp then outputs every token of the batch, so it is turned on
    /// only for the decodes that carry `[MAP]`/`[SCORE]` markers.
    pub fn set_embeddings(&mut self, on: bool) {
        if self.embeddings_on != on {
            // SAFETY: valid context; takes effect on the next decode.
            unsafe { sys::llama_set_embeddings(self.raw.as_ptr(), on) };
            self.embeddings_on = on;
        }
    }

    /// Decodes a batch; returns llama.cpp's status as an error when non-zero.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        // SAFETY: the batch's arrays are valid for n_tokens entries (kept by `Batch`).
        let rc = unsafe { sys::llama_decode(self.raw.as_ptr(), batch.raw) };
        match rc {
            0 => Ok(()),
            1 => Err(EngineError::ContextFull("no free KV cells for the batch".into())),
            rc => Err(EngineError::Decode(format!("llama_decode returned {rc}{}", take_last_error()))),
        }
    }

    /// The logits of batch row `i` (which must have been marked for output).
    pub fn logits(&self, i: usize) -> Option<&[f32]> {
        // SAFETY: llama.cpp returns NULL for rows without output; otherwise n_vocab floats valid until
        // the next decode, which needs `&mut self` and so cannot overlap this borrow.
        unsafe {
            let p = sys::llama_get_logits_ith(self.raw.as_ptr(), i as i32);
            (!p.is_null()).then(|| std::slice::from_raw_parts(p, self.n_vocab))
        }
    }

    /// The final-layer hidden state (after the output norm) of batch row `i`, when embeddings are on.
    pub fn hidden(&self, i: usize) -> Option<&[f32]> {
        if !self.embeddings_on {
            return None;
        }
        // SAFETY: as for `logits`, with n_embd floats.
        unsafe {
            let p = sys::llama_get_embeddings_ith(self.raw.as_ptr(), i as i32);
            (!p.is_null()).then(|| std::slice::from_raw_parts(p, self.n_embd))
        }
    }

    /// A copy, in host memory, of every KV cell sequence `seq` holds (llama.cpp's per-sequence state:
    /// positions and the K/V rows of every layer). Only the sequence's own cells are copied, not its
    /// stream, so a prefix of 60 tokens costs 60 cells whatever the context size. `None`, without
    /// copying, when the copy would be larger than `max_bytes`.
    pub fn save_sequence(&mut self, seq: i32, max_bytes: usize) -> Result<Option<Vec<u8>>, EngineError> {
        // SAFETY: valid context; seq is below n_seq_max (the decode loop's slots). The size call walks
        // the cells without copying; the data call writes at most `size` bytes into the buffer.
        let size = unsafe { sys::llama_state_seq_get_size(self.raw.as_ptr(), seq) };
        if size > max_bytes {
            return Ok(None);
        }
        let mut state = vec![0u8; size];
        let written = unsafe { sys::llama_state_seq_get_data(self.raw.as_ptr(), state.as_mut_ptr(), size, seq) };
        if written == 0 || written > size {
            return Err(EngineError::Decode(format!("could not save the KV cells of a sequence{}", take_last_error())));
        }
        state.truncate(written);
        Ok(Some(state))
    }

    /// Puts cells saved by [`Context::save_sequence`] (of this context) into sequence `seq`, replacing
    /// whatever it held. Unlike llama.cpp's `seq_cp` across KV streams, which copies the whole stream
    /// at the next decode, the cells are written at once, so nothing later overwrites them.
    pub fn restore_sequence(&mut self, seq: i32, state: &[u8]) -> Result<(), EngineError> {
        // SAFETY: valid context; the buffer is readable for its length; llama.cpp catches its own
        // exceptions here and reports failure as 0.
        let read = unsafe { sys::llama_state_seq_set_data(self.raw.as_ptr(), state.as_ptr(), state.len(), seq) };
        if read == 0 {
            self.remove_from(seq, 0);
            return Err(EngineError::Decode(format!("could not restore saved KV cells{}", take_last_error())));
        }
        Ok(())
    }

    /// Removes a sequence's cells at positions `from..` (all of them with `from = 0`).
    pub fn remove_from(&mut self, seq: i32, from: i32) {
        // SAFETY: valid memory handle; out-of-range positions are a no-op in llama.cpp.
        unsafe {
            sys::llama_memory_seq_rm(self.memory, seq, from, -1);
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: we own the context.
        unsafe { sys::llama_free(self.raw.as_ptr()) }
    }
}

/// A llama batch of token ids or of embeddings (never both: llama.cpp takes one kind per decode).
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
    embd_width: usize,
}

impl Batch {
    pub fn tokens(capacity: usize) -> Batch {
        // SAFETY: allocates arrays for `capacity` tokens, one sequence id each.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch { raw, capacity, embd_width: 0 }
    }

    pub fn embeddings(capacity: usize, width: usize) -> Batch {
        // SAFETY: allocates `capacity × width` floats and per-row arrays.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, width as i32, 1) };
        Batch { raw, capacity, embd_width: width }
    }

    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Adds a token; returns its row index. Panics only on a programming error (capacity exceeded).
    pub fn push_token(&mut self, token: Token, pos: i32, seq: i32, output: bool) -> usize {
        assert!(self.embd_width == 0 && self.len() < self.capacity, "token batch misuse");
        let i = self.len();
        // SAFETY: i < capacity, so every array write is in bounds; seq_id[i] has room for one id.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = output as i8;
        }
        self.raw.n_tokens += 1;
        i
    }

    /// Adds one embedding row of the batch's width.
    pub fn push_embedding(&mut self, row: &[f32], pos: i32, seq: i32, output: bool) -> usize {
        assert!(row.len() == self.embd_width && self.len() < self.capacity, "embedding batch misuse");
        let i = self.len();
        // SAFETY: i < capacity and the embd array holds capacity × width floats.
        unsafe {
            std::ptr::copy_nonoverlapping(row.as_ptr(), self.raw.embd.add(i * self.embd_width), self.embd_width);
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = output as i8;
        }
        self.raw.n_tokens += 1;
        i
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init; freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}
