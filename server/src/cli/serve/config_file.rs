//! `heie serve --config FILE`: a TOML file whose keys are spelled like the flags (`max-queue = 8`); flags
//! and environment variables override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::serving::ApiKey;

/// The config file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) addr: Option<SocketAddr>,
    pub(super) parallel: Option<u32>,
    pub(super) max_queue: Option<u32>,
    pub(super) max_batch: Option<u32>,
    pub(super) max_message_bytes: Option<usize>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) http: Option<SocketAddr>,
    pub(super) shutdown_grace: Option<f64>,
    pub(super) max_tokens: Option<u32>,
    pub(super) stall_timeout: Option<f64>,
    pub(super) image_workers: Option<u32>,
    pub(super) drain_delay: Option<f64>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) tls_client_ca: Option<PathBuf>,
    pub(super) api_key: Option<KeyList>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) http2_keepalive_interval: Option<f64>,
    pub(super) http2_keepalive_timeout: Option<f64>,
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) body_timeout: Option<f64>,
    pub(super) max_body_bytes_in_flight: Option<usize>,
    pub(super) header_timeout: Option<f64>,
    pub(super) keep_alive_timeout: Option<f64>,
    pub(super) max_connections: Option<usize>,
    pub(super) allowed_hosts: Option<StringList>,
    pub(super) cors_origin: Option<StringList>,
    pub(super) calibration: Option<PathBuf>,
    pub(super) model: Option<PathBuf>,
    pub(super) mmproj: Option<PathBuf>,
    pub(super) heads: Option<PathBuf>,
    pub(super) n_gpu_layers: Option<i32>,
    pub(super) threads: Option<i32>,
    pub(super) ctx_size: Option<u32>,
    pub(super) max_tiles: Option<u32>,
    pub(super) max_pixels: Option<u64>,
    pub(super) batch_size: Option<u32>,
}

/// `api-key = "k"` or `api-key = ["k1", "k2"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum KeyList {
    One(String),
    Many(Vec<String>),
}

/// `allowed-hosts = "judge.lan"` or `allowed-hosts = ["judge.lan", "judge"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            StringList::One(s) => vec![s],
            StringList::Many(v) => v,
        }
    }
}

impl KeyList {
    pub(super) fn parse(self) -> anyhow::Result<Vec<ApiKey>> {
        let keys = match self {
            KeyList::One(k) => vec![k],
            KeyList::Many(ks) => ks,
        };
        keys.iter().enumerate().map(|(i, k)| k.parse().with_context(|| format!("api-key #{} in the config file", i + 1))).collect()
    }
}

pub(super) fn read_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}
