//! The default model pair, fetched through the Hugging Face cache so `heie eval img.png` works on a
//! fresh machine with internet. Tests never come here (they always pass --model).

use std::io::IsTerminal as _;
use std::path::PathBuf;

use hf_hub::{Cache, Repo};

use super::download_progress::PlainDownloadLines;

pub const DEFAULT_REPO: &str = "ggml-org/InternVL3-2B-Instruct-GGUF";
pub const DEFAULT_MODEL_FILE: &str = "InternVL3-2B-Instruct-Q8_0.gguf";
pub const DEFAULT_MMPROJ_FILE: &str = "mmproj-InternVL3-2B-Instruct-Q8_0.gguf";

/// Returns local paths of the default model and mmproj, downloading them into the HF cache if needed.
/// The download's progress is a bar on a terminal, else plain lines a host can read from the log
/// (`download_progress`).
pub fn resolve() -> anyhow::Result<(PathBuf, PathBuf)> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot open the Hugging Face cache: {e}"))?;
    let repo = Repo::model(DEFAULT_REPO.to_string());
    let cached = Cache::from_env().repo(repo.clone());
    let remote = api.repo(repo);
    let fetch = |file: &str| {
        if let Some(path) = cached.get(file) {
            return Ok(path);
        }
        let downloaded = if std::io::stderr().is_terminal() {
            remote.download_with_progress(file, indicatif::ProgressBar::new(0))
        } else {
            remote.download_with_progress(file, PlainDownloadLines::to_stderr())
        };
        downloaded.map_err(|e| {
            anyhow::anyhow!(
                "no --model given and {DEFAULT_REPO}/{file} could not be fetched ({e}); pass --model and --mmproj"
            )
        })
    };
    Ok((fetch(DEFAULT_MODEL_FILE)?, fetch(DEFAULT_MMPROJ_FILE)?))
}
