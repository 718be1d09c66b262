//! The llama.cpp text model and its vocabulary: loading, metadata, tokenising and detokenising.

use std::ffi::{c_char, CString};
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::backend::{init_backend, path_cstring, take_last_error};
use crate::engine::runtime::{Token, Vocabulary};
use crate::engine::EngineError;

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
    /// Read by the context and the vision tower, which are created from it.
    pub(super) raw: NonNull<sys::llama_model>,
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

// The inherent methods above are the ones callers use; the trait exposes the same calls to the
// runtime-neutral decode loop (inherent methods win name lookup, so these do not recurse).
impl Vocabulary for Model {
    #[inline]
    fn n_embd(&self) -> usize {
        Model::n_embd(self)
    }
    #[inline]
    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<Token> {
        Model::tokenize(self, text, parse_special)
    }
    #[inline]
    fn token_bytes(&self, token: Token) -> Vec<u8> {
        Model::token_bytes(self, token)
    }
    #[inline]
    fn is_eog(&self, token: Token) -> bool {
        Model::is_eog(self, token)
    }
}
