//! The vision tower (InternViT + MLP projector) through mtmd: one tile-sized bitmap per image chunk,
//! so mtmd does no tiling of its own and each tile's embeddings can be read back on their own.

use std::ffi::CStr;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::backend::{path_cstring, take_last_error};
use super::model::Model;
use crate::engine::runtime::TileBitmap;
use crate::engine::EngineError;

/// The multimodal projector (InternViT + MLP) through mtmd.
pub struct Vision {
    raw: NonNull<sys::mtmd_context>,
    n_embd: usize,
    _model: Arc<Model>,
    _not_send: std::marker::PhantomData<*mut ()>,
}

impl Vision {
    /// `batch_tokens`: most output tokens one batched vision encode may produce (several tiles).
    pub fn load(
        path: &Path,
        model: Arc<Model>,
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
    pub fn encode_tiles(&mut self, tiles: &[TileBitmap]) -> Result<Vec<Vec<f32>>, EngineError> {
        let chunks = tiles.iter().map(|t| self.tile_chunk(&t.rgb, t.width, t.height)).collect::<Result<Vec<_>, _>>()?;
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
