//! The only module with `unsafe`: a small safe wrapper over `llama-cpp-sys-2` (llama.cpp + mtmd).
//!
//! The safe `llama-cpp-2` crate hides the raw handles HEIE needs (per-tile image embeddings, toggling
//! hidden-state output, embedding batches), so we bind the C API directly. Every type here owns its
//! handle and frees it in `Drop`; nothing raw escapes this module.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Mutex, Once};

use llama_cpp_sys_2 as sys;

use super::EngineError;

pub type Token = sys::llama_token;

static BACKEND_INIT: Once = Once::new();
/// The most recent error line llama.cpp logged: C loaders return NULL without a reason, and this is
/// the only way to tell a user *why* their file did not load.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Initialises the ggml backends once per process and routes llama.cpp's and mtmd's logs into `tracing`.
pub fn init_backend() {
    BACKEND_INIT.call_once(|| {
        // SAFETY: called once per process before any other llama.cpp call; the callback is a plain
        // `extern "C"` function with no user data, valid for the program's lifetime.
        unsafe {
            sys::llama_log_set(Some(log_to_tracing), std::ptr::null_mut());
            sys::mtmd_log_set(Some(log_to_tracing), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

extern "C" fn log_to_tracing(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let message = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let message = message.trim_end();
    if message.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => {
            if let Ok(mut last) = LAST_ERROR.lock() {
                *last = Some(message.to_string());
            }
            // Shown through the error it causes (see `take_last_error`), so one line reaches the user.
            tracing::info!(target: "llama.cpp", "{message}");
        }
        // With the unified KV cache llama.cpp compares the whole cache (every slot's cells) with the
        // model's training context; each sequence is capped at its own `--ctx-size`, so this is noise.
        sys::GGML_LOG_LEVEL_WARN if message.contains("possible training context overflow") => {
            tracing::debug!(target: "llama.cpp", "{message}")
        }
        sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{message}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama.cpp", "{message}"),
        _ => tracing::trace!(target: "llama.cpp", "{message}"),
    }
}

fn take_last_error() -> String {
    LAST_ERROR
        .lock()
        .ok()
        .and_then(|mut e| e.take())
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

fn path_cstring(path: &Path) -> Result<CString, EngineError> {
    CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| EngineError::Load(format!("path {} contains a NUL byte", path.display())))
}

/// Calls a llama.cpp function that writes into a buffer and returns the count written, or minus the
/// size it needs; retries once with that size.
fn fill_sized<T: Copy + Default>(initial: usize, mut call: impl FnMut(&mut [T]) -> i32) -> Vec<T> {
    let mut buf = vec![T::default(); initial];
    for _ in 0..2 {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return buf;
        }
        buf.resize((-n) as usize, T::default());
    }
    Vec::new()
}

/// A loaded text model. Read-only after loading, so it is shared across threads for tokenising.
pub struct Model {
    raw: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
}

// SAFETY: a llama_model and its vocabulary are immutable after loading; llama.cpp's own server
// tokenises from several threads against one model. Mutable state lives in `Context`, which is not Send.
unsafe impl Send for Model {}
// SAFETY: see above; all methods take `&self` and only read.
unsafe impl Sync for Model {}

impl Model {
    pub fn load(path: &Path, n_gpu_layers: i32) -> Result<Model, EngineError> {
        init_backend();
        let c_path = path_cstring(path)?;
        // SAFETY: default params are plain data; the path is a valid NUL-terminated string.
        let raw = unsafe {
            let mut params = sys::llama_model_default_params();
            params.n_gpu_layers = n_gpu_layers;
            sys::llama_model_load_from_file(c_path.as_ptr(), params)
        };
        let raw = NonNull::new(raw).ok_or_else(|| {
            EngineError::Load(format!("{} is not a loadable GGUF model{}", path.display(), take_last_error()))
        })?;
        // SAFETY: `raw` is a valid model; the vocab pointer lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(raw.as_ptr()) };
        let vocab = NonNull::new(vocab as *mut sys::llama_vocab)
            .ok_or_else(|| EngineError::Load(format!("{} has no vocabulary", path.display())))?;
        Ok(Model { raw, vocab })
    }

    pub fn n_embd(&self) -> usize {
        // SAFETY: valid model handle.
        unsafe { sys::llama_model_n_embd(self.raw.as_ptr()) as usize }
    }

    pub fn n_vocab(&self) -> usize {
        // SAFETY: valid vocab handle.
        unsafe { sys::llama_vocab_n_tokens(self.vocab.as_ptr()) as usize }
    }

    pub fn n_layers(&self) -> usize {
        // SAFETY: valid model handle.
        unsafe { sys::llama_model_n_layer(self.raw.as_ptr()) as usize }
    }

    /// A metadata string such as `general.name`, if present.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 512];
        // SAFETY: buf is writable for buf.len() bytes; llama.cpp writes a NUL-terminated string.
        let n = unsafe {
            sys::llama_model_meta_val_str(self.raw.as_ptr(), key.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len())
        };
        if n < 0 {
            return None;
        }
        buf.truncate((n as usize).min(buf.len() - 1));
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Tokenises text; `parse_special` lets control tokens like `<|im_start|>` be written as text.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Vec<Token> {
        fill_sized(text.len() + 8, |out: &mut [Token]| {
            // SAFETY: `text` is valid for its length; `out` is writable for its length.
            unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr() as *const c_char,
                    text.len() as i32,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    false,
                    parse_special,
                )
            }
        })
    }

    /// The bytes a token stands for (may be part of a multi-byte character); specials rendered as text.
    pub fn token_bytes(&self, token: Token) -> Vec<u8> {
        fill_sized(64, |out: &mut [u8]| {
            // SAFETY: `out` is writable for its length.
            unsafe {
                sys::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    out.as_mut_ptr() as *mut c_char,
                    out.len() as i32,
                    0,
                    true,
                )
            }
        })
    }

    /// End-of-generation tokens (`<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: valid vocab handle; out-of-range ids are handled by llama.cpp's bounds check.
        unsafe { sys::llama_vocab_is_eog(self.vocab.as_ptr(), token) }
    }

    /// Whether a token is special (control or user-defined): text that spells it is matched even with
    /// special-token parsing off when it is user-defined, so client text must be checked for it.
    pub fn is_special(&self, token: Token) -> bool {
        if token < 0 || token as usize >= self.n_vocab() {
            return false;
        }
        // SAFETY: valid vocab handle; the id was checked to be in range.
        let attr = unsafe { sys::llama_vocab_get_attr(self.vocab.as_ptr(), token) };
        (attr as u32) & (sys::LLAMA_TOKEN_ATTR_CONTROL | sys::LLAMA_TOKEN_ATTR_USER_DEFINED) != 0
    }

    /// The id of a text that the vocabulary holds as one special (control or user-defined) token.
    pub fn special_token(&self, text: &str) -> Option<Token> {
        match self.tokenize(text, true).as_slice() {
            [single] => {
                // SAFETY: `single` came from this vocabulary.
                let attr = unsafe { sys::llama_vocab_get_attr(self.vocab.as_ptr(), *single) };
                let special = sys::LLAMA_TOKEN_ATTR_CONTROL | sys::LLAMA_TOKEN_ATTR_USER_DEFINED;
                ((attr as u32) & special != 0).then_some(*single)
            }
            _ => None,
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: we own the handle; contexts borrowing it are dropped first (they hold an Arc<Model>).
        unsafe { sys::llama_model_free(self.raw.as_ptr()) }
    }
}

/// Returns whether this build of llama.cpp can offload to a GPU.
pub fn supports_gpu_offload() -> bool {
    init_backend();
    // SAFETY: pure query.
    unsafe { sys::llama_supports_gpu_offload() }
}

/// The GPUs llama.cpp can offload to, as "NAME (description)", e.g. "CUDA0 (NVIDIA H100 80GB HBM3)".
pub fn gpu_devices() -> Vec<String> {
    init_backend();
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: ggml returns static NUL-terminated strings for registered devices.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: plain queries of the backend registry; indices are below the count.
    unsafe {
        (0..sys::ggml_backend_dev_count())
            .map(|i| sys::ggml_backend_dev_get(i))
            .filter(|&d| !d.is_null() && sys::ggml_backend_dev_type(d) == sys::GGML_BACKEND_DEVICE_TYPE_GPU)
            .map(|d| format!("{} ({})", text(sys::ggml_backend_dev_name(d)), text(sys::ggml_backend_dev_description(d))))
            .collect()
    }
}

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
    _model: std::sync::Arc<Model>,
    _not_send: std::marker::PhantomData<*mut ()>,
}

impl Context {
    pub fn new(model: std::sync::Arc<Model>, p: &ContextParams) -> Result<Context, EngineError> {
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
    pub fn embeddings_on(&self) -> bool {
        self.embeddings_on
    }

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

    /// Gives sequence `dst` all of `src`'s cells, without recomputing them. The caller makes sure `src`
    /// holds exactly the cells to share (the prefix) and `dst` none. With the unified cache the cells
    /// gain a second owner; with per-sequence streams llama.cpp copies `src`'s whole stream into
    /// `dst`'s at the next decode (it copies only whole streams: a position range would abort).
    pub fn share_prefix(&mut self, src: i32, dst: i32) {
        // SAFETY: valid memory handle; both ids are below n_seq_max (the decode loop's slots and the
        // prefix sequence), and -1/-1 is the whole-sequence form every KV layout accepts.
        unsafe { sys::llama_memory_seq_cp(self.memory, src, dst, -1, -1) }
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

/// The multimodal projector (InternViT + MLP) through mtmd.
pub struct Vision {
    raw: NonNull<sys::mtmd_context>,
    n_embd: usize,
    _model: std::sync::Arc<Model>,
    _not_send: std::marker::PhantomData<*mut ()>,
}

impl Vision {
    /// `batch_tokens`: most output tokens one batched vision encode may produce (several tiles).
    pub fn load(
        path: &Path,
        model: std::sync::Arc<Model>,
        use_gpu: bool,
        threads: i32,
        batch_tokens: usize,
    ) -> Result<Vision, EngineError> {
        let c_path = path_cstring(path)?;
        // SAFETY: default params are plain data; the text model outlives this context via the Arc.
        let raw = unsafe {
            let mut params = sys::mtmd_context_params_default();
            params.use_gpu = use_gpu;
            params.n_threads = threads;
            params.print_timings = false;
            params.warmup = false;
            params.batch_max_tokens = batch_tokens.min(i32::MAX as usize) as i32;
            sys::mtmd_init_from_file(c_path.as_ptr(), model.raw.as_ptr(), params)
        };
        let raw = NonNull::new(raw).ok_or_else(|| {
            EngineError::Load(format!("{} is not a usable mmproj for this model{}", path.display(), take_last_error()))
        })?;
        // SAFETY: valid context.
        if !unsafe { sys::mtmd_support_vision(raw.as_ptr()) } {
            // SAFETY: we own `raw` and free it before returning the error.
            unsafe { sys::mtmd_free(raw.as_ptr()) };
            return Err(EngineError::Load(format!("{} has no vision encoder", path.display())));
        }
        let n_embd = model.n_embd();
        Ok(Vision { raw, n_embd, _model: model, _not_send: std::marker::PhantomData })
    }

    /// Turns one RGB bitmap that is exactly one tile (so mtmd does no tiling of its own) into an image
    /// chunk ready to encode. The chunk lives as long as the returned [`TileChunk`].
    fn tile_chunk(&self, rgb: &[u8], width: u32, height: u32) -> Result<TileChunk, EngineError> {
        if rgb.len() != (width as usize) * (height as usize) * 3 {
            return Err(EngineError::Encode(format!("tile buffer holds {} bytes, not {width}×{height}×3", rgb.len())));
        }
        // SAFETY: rgb holds width×height×3 bytes; mtmd copies it into the bitmap.
        let bitmap = unsafe { sys::mtmd_bitmap_init(width, height, rgb.as_ptr()) };
        let bitmap = OwnedBitmap(NonNull::new(bitmap).ok_or_else(|| EngineError::Encode("bitmap allocation failed".into()))?);
        // SAFETY: allocation of an empty chunk list.
        let chunks = OwnedChunks(NonNull::new(unsafe { sys::mtmd_input_chunks_init() })
            .ok_or_else(|| EngineError::Encode("chunk allocation failed".into()))?);
        // SAFETY: the default marker is a static NUL-terminated string.
        let marker = unsafe { CStr::from_ptr(sys::mtmd_default_marker()) };
        let text = sys::mtmd_input_text {
            text: marker.as_ptr(),
            text_len: marker.to_bytes().len(),
            add_special: false,
            parse_special: true,
        };
        let bitmaps = [bitmap.0.as_ptr() as *const sys::mtmd_bitmap];
        // SAFETY: all pointers are valid for the call; chunks receives the output.
        let rc = unsafe { sys::mtmd_tokenize(self.raw.as_ptr(), chunks.0.as_ptr(), &text, bitmaps.as_ptr() as *mut _, 1) };
        if rc != 0 {
            return Err(EngineError::Encode(format!("mtmd_tokenize returned {rc}{}", take_last_error())));
        }
        // SAFETY: chunks is valid; indices are below its size.
        let image = unsafe {
            (0..sys::mtmd_input_chunks_size(chunks.0.as_ptr()))
                .map(|i| sys::mtmd_input_chunks_get(chunks.0.as_ptr(), i))
                .find(|&c| sys::mtmd_input_chunk_get_type(c) == sys::MTMD_INPUT_CHUNK_TYPE_IMAGE)
        }
        .ok_or_else(|| EngineError::Encode("mtmd produced no image chunk".into()))?;
        // SAFETY: the chunk belongs to `chunks`, alive here.
        let n_tokens = unsafe { sys::mtmd_input_chunk_get_n_tokens(image) };
        Ok(TileChunk { _chunks: chunks, image, n_tokens })
    }

    /// Encodes one tile and returns its post-projector embeddings, `n_tokens × n_embd` row-major.
    pub fn encode_tile(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, EngineError> {
        let tile = self.tile_chunk(rgb, width, height)?;
        // SAFETY: the chunk is alive (owned by `tile`).
        let rc = unsafe { sys::mtmd_encode_chunk(self.raw.as_ptr(), tile.image) };
        if rc != 0 {
            return Err(EngineError::Encode(format!("mtmd_encode_chunk returned {rc}{}", take_last_error())));
        }
        // SAFETY: after a successful encode the output holds n_tokens × n_embd floats until the next encode.
        let out = unsafe { sys::mtmd_get_output_embd(self.raw.as_ptr()) };
        if out.is_null() {
            return Err(EngineError::Encode("mtmd returned no embeddings".into()));
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts(out, tile.n_tokens * self.n_embd) }.to_vec())
    }

    /// Encodes several tiles through the vision tower together (one graph per group of up to the
    /// context's batch limit), which keeps a GPU busy where one tile at a time would not. Returns each
    /// tile's embeddings in order, exactly as [`Vision::encode_tile`] would.
    pub fn encode_tiles(&mut self, tiles: &[(&[u8], u32, u32)]) -> Result<Vec<Vec<f32>>, EngineError> {
        let chunks = tiles.iter().map(|&(rgb, w, h)| self.tile_chunk(rgb, w, h)).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(chunks.len());
        let mut next = 0;
        while next < chunks.len() {
            let batch = OwnedVisionBatch::new(self.raw)?;
            let mut end = next;
            while end < chunks.len() {
                // SAFETY: batch and chunk are alive; the batch does not own the chunk.
                match unsafe { sys::mtmd_batch_add_chunk(batch.0.as_ptr(), chunks[end].image) } {
                    0 => end += 1,
                    // Full (or tiles that cannot share a graph): encode what we have, start a new batch.
                    2 | 3 if end > next => break,
                    rc => return Err(EngineError::Encode(format!("mtmd_batch_add_chunk returned {rc}{}", take_last_error()))),
                }
            }
            // SAFETY: the batch holds `end - next` live chunks.
            let rc = unsafe { sys::mtmd_batch_encode(batch.0.as_ptr()) };
            if rc != 0 {
                return Err(EngineError::Encode(format!("mtmd_batch_encode returned {rc}{}", take_last_error())));
            }
            for tile in &chunks[next..end] {
                // SAFETY: the chunk was encoded in this batch; the pointer is valid until the batch is freed.
                let p = unsafe { sys::mtmd_batch_get_output_embd(batch.0.as_ptr(), tile.image) };
                if p.is_null() {
                    return Err(EngineError::Encode("mtmd returned no embeddings for a batched tile".into()));
                }
                // SAFETY: n_tokens × n_embd floats at p (mtmd's documented layout), copied before the batch drops.
                out.push(unsafe { std::slice::from_raw_parts(p, tile.n_tokens * self.n_embd) }.to_vec());
            }
            next = end;
        }
        Ok(out)
    }
}

/// One tile's image chunk and the list that owns it.
struct TileChunk {
    _chunks: OwnedChunks,
    image: *const sys::mtmd_input_chunk,
    n_tokens: usize,
}

/// An mtmd encoding batch (it borrows its chunks, it does not own them).
struct OwnedVisionBatch(NonNull<sys::mtmd_batch>);
impl OwnedVisionBatch {
    fn new(ctx: NonNull<sys::mtmd_context>) -> Result<Self, EngineError> {
        // SAFETY: valid mtmd context.
        let raw = unsafe { sys::mtmd_batch_init(ctx.as_ptr()) };
        NonNull::new(raw).map(Self).ok_or_else(|| EngineError::Encode("mtmd batch allocation failed".into()))
    }
}
impl Drop for OwnedVisionBatch {
    fn drop(&mut self) {
        // SAFETY: allocated by mtmd_batch_init, freed once.
        unsafe { sys::mtmd_batch_free(self.0.as_ptr()) }
    }
}

impl Drop for Vision {
    fn drop(&mut self) {
        // SAFETY: we own the mtmd context.
        unsafe { sys::mtmd_free(self.raw.as_ptr()) }
    }
}

struct OwnedBitmap(NonNull<sys::mtmd_bitmap>);
impl Drop for OwnedBitmap {
    fn drop(&mut self) {
        // SAFETY: allocated by mtmd_bitmap_init, freed once.
        unsafe { sys::mtmd_bitmap_free(self.0.as_ptr()) }
    }
}

struct OwnedChunks(NonNull<sys::mtmd_input_chunks>);
impl Drop for OwnedChunks {
    fn drop(&mut self) {
        // SAFETY: allocated by mtmd_input_chunks_init, freed once (it frees its chunks).
        unsafe { sys::mtmd_input_chunks_free(self.0.as_ptr()) }
    }
}

/// `(elements per block, bytes per block)` of a ggml tensor type, from the linked ggml's own table;
/// `None` for ids out of range or retired (block size 0), which no loadable file may use.
pub fn ggml_type_layout(ggml_type: u32) -> Option<(u64, u64)> {
    if ggml_type >= sys::GGML_TYPE_COUNT as u32 {
        return None;
    }
    // SAFETY: the id is below GGML_TYPE_COUNT, so both lookups index ggml's type table in bounds.
    let (block, size) = unsafe { (sys::ggml_blck_size(ggml_type as _), sys::ggml_type_size(ggml_type as _)) };
    (block > 0 && size > 0).then_some((block as u64, size as u64))
}
