//! The default model pair, fetched through the Hugging Face cache so `heie eval img.png` works on a
//! fresh machine with internet. Tests never come here (they always pass --model).

use std::path::PathBuf;

pub const DEFAULT_REPO: &str = "ggml-org/InternVL3-2B-Instruct-GGUF";
pub const DEFAULT_MODEL_FILE: &str = "InternVL3-2B-Instruct-Q8_0.gguf";
pub const DEFAULT_MMPROJ_FILE: &str = "mmproj-InternVL3-2B-Instruct-Q8_0.gguf";

/// Returns local paths of the default model and mmproj, downloading them into the HF cache if needed.
pub fn resolve() -> anyhow::Result<(PathBuf, PathBuf)> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot open the Hugging Face cache: {e}"))?;
    let repo = api.model(DEFAULT_REPO.to_string());
    let fetch = |file: &str| {
        repo.get(file).map_err(|e| {
            anyhow::anyhow!(
                "no --model given and {DEFAULT_REPO}/{file} could not be fetched ({e}); pass --model and --mmproj"
            )
        })
    };
    Ok((fetch(DEFAULT_MODEL_FILE)?, fetch(DEFAULT_MMPROJ_FILE)?))
}
