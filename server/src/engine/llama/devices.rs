//! The GPUs this build of llama.cpp can offload to, and whether a model's layers go to one.

use std::ffi::{c_char, CStr};

use llama_cpp_sys_2 as sys;

use super::backend::init_backend;

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

/// Whether the model's layers go to a GPU: a GPU build, a GPU present, and layers asked for.
pub fn runs_on_gpu(n_gpu_layers: i32) -> bool {
    offloads_to(&gpu_devices(), n_gpu_layers)
}

/// [`runs_on_gpu`] with the GPU list already enumerated.
pub(super) fn offloads_to(gpus: &[String], n_gpu_layers: i32) -> bool {
    supports_gpu_offload() && !gpus.is_empty() && n_gpu_layers != 0
}
