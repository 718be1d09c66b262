//! API keys: who may call the service.
//!
//! `--api-key KEY` (repeatable) and `--api-key-file FILE` (one key per line; blank lines and `#`
//! comments ignored; re-read by [`ApiKeys::reload`], which `heie serve` calls on SIGHUP) make every
//! call carry `authorization: Bearer KEY`. Only SHA-256 digests of the keys are kept, and a presented
//! key is compared with every one of them in constant time (no early exit, the same work whatever
//! the key's length or which key matches), so neither the timing nor a memory dump or a `Debug`
//! print gives a key away. The check is transport-neutral — [`ApiKeys::check`] takes the raw
//! `authorization` header value — so the gRPC interceptor (`grpc/auth.rs`) and the HTTP gate share it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use subtle::ConstantTimeEq as _;

use super::ServingError;

type Digest = [u8; 32];

/// One configured API key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// Why a key (or a key file) cannot be used. Messages never contain a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("an API key must be 1 to 4096 visible ASCII characters (no spaces); {0}")]
    Malformed(String),
    #[error("cannot read the API key file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("the API key file {0} has no keys (one key per line; blank lines and # comments are ignored)")]
    Empty(String),
}

impl ApiKey {
    fn digest(&self) -> Digest {
        digest(self.0.as_bytes())
    }
}

impl FromStr for ApiKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<ApiKey, KeyError> {
        // A header value the client can send verbatim: visible ASCII, no spaces (`Bearer` takes one token).
        if s.is_empty() || s.len() > 4096 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Malformed(format!("got {} bytes", s.len())));
        }
        Ok(ApiKey(s.to_string()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

fn digest(bytes: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

struct Inner {
    /// From `--api-key`: fixed for the life of the process.
    fixed: Vec<Digest>,
    /// `--api-key-file`, and the digests last read from it.
    file: Option<PathBuf>,
    from_file: RwLock<Vec<Digest>>,
}

/// The keys that may call the service; cheap to clone (clones share the set, so a reload is seen
/// by every holder). With no keys configured, every call is allowed.
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.len())
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

impl Default for ApiKeys {
    fn default() -> ApiKeys {
        ApiKeys::none()
    }
}

impl ApiKeys {
    /// No keys: the service is open.
    pub fn none() -> ApiKeys {
        ApiKeys { inner: Arc::new(Inner { fixed: Vec::new(), file: None, from_file: RwLock::new(Vec::new()) }) }
    }

    /// `keys` plus the keys of `file` (read now; an unreadable or empty file is an error).
    pub fn new(keys: &[ApiKey], file: Option<&Path>) -> Result<ApiKeys, KeyError> {
        let from_file = match file {
            Some(path) => read_key_file(path)?,
            None => Vec::new(),
        };
        Ok(ApiKeys {
            inner: Arc::new(Inner {
                fixed: keys.iter().map(ApiKey::digest).collect(),
                file: file.map(Path::to_path_buf),
                from_file: RwLock::new(from_file),
            }),
        })
    }

    /// Whether calls need a key at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.file.is_some() || !self.inner.fixed.is_empty()
    }

    /// How many keys are accepted now.
    pub fn len(&self) -> usize {
        self.inner.fixed.len() + self.file_keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key file, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    /// Re-reads the key file and swaps its keys in at once; on any error the keys in use stay
    /// (a half-written file never locks everyone out). Returns how many keys the file holds.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let Some(path) = &self.inner.file else { return Ok(0) };
        let keys = read_key_file(path)?;
        let n = keys.len();
        *self.inner.from_file.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(n)
    }

    /// Checks an `authorization` header value (`Bearer KEY`; the scheme is case-insensitive).
    /// `Ok` when no keys are configured.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ServingError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(value) = authorization else {
            return Err(ServingError::Unauthenticated("this server needs an API key: send `authorization: Bearer <key>`".into()));
        };
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| ServingError::Unauthenticated("the authorization value must be `Bearer <key>`".into()))?;
        let presented = digest(token.as_bytes());
        let file_keys = self.file_keys();
        // Every key is compared, whichever matches: the time taken says nothing about the keys.
        let matched = self
            .inner
            .fixed
            .iter()
            .chain(file_keys.iter())
            .fold(subtle::Choice::from(0), |found, key| found | key.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(ServingError::Unauthenticated("the API key is not valid".into()))
        }
    }

    fn file_keys(&self) -> std::sync::RwLockReadGuard<'_, Vec<Digest>> {
        self.inner.from_file.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads one key per line; blank lines and lines starting with `#` are skipped.
fn read_key_file(path: &Path) -> Result<Vec<Digest>, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyError::Unreadable { path: shown.clone(), reason: e.to_string() })?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key: ApiKey =
            line.parse().map_err(|_| KeyError::Malformed(format!("{shown} line {} is not one ({} bytes)", n + 1, line.len())))?;
        keys.push(key.digest());
    }
    if keys.is_empty() {
        return Err(KeyError::Empty(shown));
    }
    warn_if_others_can_read(path);
    Ok(keys)
}

#[cfg(unix)]
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %path.display(), "the API key file is readable by every user; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::Code;

    fn key(s: &str) -> ApiKey {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_configured_bearer_key_passes_and_no_keys_means_open() {
        assert!(ApiKeys::none().check(None).is_ok());
        let keys = ApiKeys::new(&[key("alpha-123"), key("beta-456")], None).unwrap();
        assert!(keys.is_enabled());
        assert_eq!(keys.check(Some("Bearer alpha-123")), Ok(()));
        assert_eq!(keys.check(Some("bearer beta-456")), Ok(()), "the scheme is case-insensitive");
        for bad in [None, Some(""), Some("alpha-123"), Some("Basic alpha-123"), Some("Bearer alpha-12"), Some("Bearer alpha-1234")] {
            let e = keys.check(bad).unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{bad:?}");
            assert!(!e.to_string().contains("alpha"), "the message never shows a key: {e}");
        }
    }

    #[test]
    fn keys_are_redacted_and_validated() {
        let k = key("s3cr3t");
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        let keys = ApiKeys::new(&[k], None).unwrap();
        assert!(!format!("{keys:?}").contains("s3cr3t"));
        assert!("".parse::<ApiKey>().is_err());
        assert!("two words".parse::<ApiKey>().is_err());
        assert!("tab\there".parse::<ApiKey>().is_err());
    }

    #[test]
    fn the_file_skips_comments_reloads_and_keeps_its_keys_when_a_reload_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# team A\nfirst-key\n\n  second-key  \n").unwrap();
        let keys = ApiKeys::new(&[key("cli-key")], Some(&path)).unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys.check(Some("Bearer second-key")).is_ok());
        assert!(keys.check(Some("Bearer # team A")).is_err());

        std::fs::write(&path, "third-key\n").unwrap();
        assert_eq!(keys.clone().reload(), Ok(1), "a clone reloads the shared set");
        assert!(keys.check(Some("Bearer first-key")).is_err());
        assert!(keys.check(Some("Bearer third-key")).is_ok());
        assert!(keys.check(Some("Bearer cli-key")).is_ok(), "flag keys survive reloads");

        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(keys.reload(), Err(KeyError::Empty(_))));
        std::fs::write(&path, "ok-key\nbad key with spaces\n").unwrap();
        let e = keys.reload().unwrap_err();
        assert!(e.to_string().contains("line 2") && !e.to_string().contains("bad key"), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(keys.reload(), Err(KeyError::Unreadable { .. })));
        assert!(keys.check(Some("Bearer third-key")).is_ok(), "failed reloads keep the keys in use");
        assert!(ApiKeys::new(&[], Some(&path)).is_err(), "a missing file fails at start-up");
    }
}
