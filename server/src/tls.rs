//! TLS for the gRPC port (rustls with the `ring` provider, through tonic) and the `--http` port: `--tls-cert` and
//! `--tls-key` serve TLS; `--tls-client-ca` additionally requires every client to present a
//! certificate signed by that CA (mutual TLS). Files are read and checked at start-up, so a wrong
//! path or a file of the wrong kind is one clear line before anything listens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a connection may take to finish its TLS handshake before it is dropped (a client that
/// connects and never speaks must not hold a socket for ever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new connection to the HTTPS port may stay silent before it is closed (the gRPC port
/// has tonic's one handshake timeout). 3 s covers a ClientHello over any working link: a client
/// sends it as soon as its TCP handshake completes.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Handshakes in progress at once from one address on the HTTPS port. A browser opens at most six connections to a
/// host; a proxy or NAT in front of many users may need more, and 16 still leaves 240 of the total
/// to everyone else.
pub const MAX_HANDSHAKES_PER_PEER: usize = 16;
/// Handshakes in progress at once from all addresses (each holds a socket and rustls' buffers,
/// some tens of KB).
pub const MAX_HANDSHAKES: usize = 256;

/// The PEM files of the server's TLS setup.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {reason}")]
    File { flag: &'static str, path: String, reason: String },
}

fn read_pem(flag: &'static str, path: &Path, marker: &str, kind: &str) -> Result<Vec<u8>, TlsError> {
    let error = |reason: String| TlsError::File { flag, path: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") || !text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(marker)) {
        return Err(error(format!("not a PEM {kind} (no -----BEGIN …{marker}----- block)")));
    }
    Ok(bytes)
}

impl TlsFiles {
    /// Reads and checks the files and builds tonic's server TLS configuration.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_pem("--tls-cert", &self.cert, "CERTIFICATE", "certificate")?;
        let key = read_pem("--tls-key", &self.key, "PRIVATE KEY", "private key")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            let ca = read_pem("--tls-client-ca", ca, "CERTIFICATE", "CA certificate")?;
            // Required, not optional: a client without a certificate signed by this CA is refused
            // during the handshake.
            config = config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(false);
        }
        Ok(config)
    }

    /// The same files as a rustls configuration, for the HTTPS port of `--http` (HTTP/1.1). The
    /// same rules as gRPC: this certificate, and a client certificate from `--tls-client-ca` when set.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let fail = |flag: &'static str, path: &Path, reason: String| TlsError::File { flag, path: path.display().to_string(), reason };
        let cert = read_pem("--tls-cert", &self.cert, "CERTIFICATE", "certificate")?;
        let key = read_pem("--tls-key", &self.key, "PRIVATE KEY", "private key")?;
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("--tls-cert", &self.cert, format!("cannot parse it: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| fail("--tls-key", &self.key, format!("cannot parse it: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("--tls-cert", &self.cert, e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca_path) => {
                let ca = read_pem("--tls-client-ca", ca_path, "CERTIFICATE", "CA certificate")?;
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&ca) {
                    let c = c.map_err(|e| fail("--tls-client-ca", ca_path, format!("cannot parse it: {e}")))?;
                    roots.add(c).map_err(|e| fail("--tls-client-ca", ca_path, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| fail("--tls-client-ca", ca_path, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| fail("--tls-key", &self.key, format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match &self.client_ca {
            Some(ca) => format!("TLS ({}), client certificates required (CA {})", self.cert.display(), ca.display()),
            None => format!("TLS ({})", self.cert.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_wrong_kind_of_files_name_the_flag_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        std::fs::write(&key, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let files = TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: None };
        let e = files.server_config().unwrap_err().to_string();
        assert!(e.starts_with("--tls-key ") && e.contains("not a PEM private key"), "{e}");
        let files = TlsFiles { cert: dir.path().join("nope.pem"), key, client_ca: None };
        let e = files.server_config().unwrap_err().to_string();
        assert!(e.starts_with("--tls-cert ") && e.contains("nope.pem") && e.contains("cannot read"), "{e}");
    }
}
