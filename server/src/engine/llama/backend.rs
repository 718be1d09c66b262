//! Process-wide llama.cpp state: the one-time backend initialisation, llama.cpp's and mtmd's log routed
//! into `tracing`, the last error line it logged (its loaders return NULL without a reason), and
//! ggml's table of tensor type sizes.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::{Mutex, Once};

use llama_cpp_sys_2 as sys;

use crate::engine::EngineError;

static BACKEND_INIT: Once = Once::new();
/// The most recent error line llama.cpp logged: C loaders return NULL without a reason, and this is
/// the only way to tell a user *why* their file did not load.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Initialises the ggml backends once per process and routes llama.cpp's and mtmd's logs into `tracing`.
pub(super) fn init_backend() {
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

/// `": <last error line>"`, or nothing when llama.cpp logged no error since the last call.
pub(super) fn take_last_error() -> String {
    LAST_ERROR
        .lock()
        .ok()
        .and_then(|mut e| e.take())
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}

pub(super) fn path_cstring(path: &Path) -> Result<CString, EngineError> {
    CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| EngineError::Load(format!("path {} contains a NUL byte", path.display())))
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
