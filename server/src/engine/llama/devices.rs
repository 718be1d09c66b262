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

/// The SIMD extensions this build of llama.cpp's CPU backend was compiled for, e.g. "AVX2 FMA F16C
/// BMI2" for the portable x86-64 build or "AVX512 AVX512_VNNI …" for `cargo build-native` on a CPU
/// that has them: what a throughput figure was measured with (compile-time flags, not what the CPU
/// could do).
pub fn cpu_build_features() -> String {
    init_backend();
    let flags: [(&str, unsafe extern "C" fn() -> i32); 14] = [
        ("AVX", sys::ggml_cpu_has_avx),
        ("AVX2", sys::ggml_cpu_has_avx2),
        ("AVX_VNNI", sys::ggml_cpu_has_avx_vnni),
        ("FMA", sys::ggml_cpu_has_fma),
        ("F16C", sys::ggml_cpu_has_f16c),
        ("BMI2", sys::ggml_cpu_has_bmi2),
        ("AVX512", sys::ggml_cpu_has_avx512),
        ("AVX512_VBMI", sys::ggml_cpu_has_avx512_vbmi),
        ("AVX512_VNNI", sys::ggml_cpu_has_avx512_vnni),
        ("AVX512_BF16", sys::ggml_cpu_has_avx512_bf16),
        ("AMX_INT8", sys::ggml_cpu_has_amx_int8),
        ("NEON", sys::ggml_cpu_has_neon),
        ("DOTPROD", sys::ggml_cpu_has_dotprod),
        ("SVE", sys::ggml_cpu_has_sve),
    ];
    // SAFETY: each is a constant query of how ggml-cpu was compiled, with no arguments.
    let on: Vec<&str> = flags.iter().filter(|(_, has)| unsafe { has() } != 0).map(|(name, _)| *name).collect();
    if on.is_empty() {
        "no SIMD extensions".to_string()
    } else {
        on.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both x86-64 builds put AVX2 in: the portable one (ggml's default for a non-native build) and
    /// `cargo build-native` on any CPU CI runs on; the bench's label must say so.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x86_64_build_reports_its_simd() {
        let features = cpu_build_features();
        assert!(features.split(' ').any(|f| f == "AVX2"), "{features}");
        assert!(!features.contains("NEON"), "{features}");
    }
}
