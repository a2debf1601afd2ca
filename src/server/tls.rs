//! TLS and mutual TLS for the gRPC port, with rustls (ring).
//!
//! [`TlsFiles`] names PEM files; [`TlsFiles::load`] reads and checks them
//! before any listener is bound, so a wrong path or a file that holds no
//! certificate stops `serve` at start with a message naming the file, rather
//! than failing every handshake later. With a client CA, every client must
//! present a certificate that chains to it: the handshake of a client
//! without one, or with one from another CA, fails.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        /// Which file: "certificate", "private key" or "client CA".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("TLS {what} {path} is not usable: {reason}")]
    Invalid {
        /// Which file: "certificate", "private key" or "client CA".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files parse but rustls refuses them together (e.g. the key does
    /// not belong to the certificate).
    #[error("TLS certificate {cert} and key {key} cannot be used together: {reason}")]
    Config {
        /// The certificate path.
        cert: PathBuf,
        /// The key path.
        key: PathBuf,
        /// rustls's or tonic's reason.
        reason: String,
    },
}

/// The PEM files of the gRPC server's TLS identity and, for mutual TLS, the
/// CA that client certificates must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The checked contents of [`TlsFiles`], ready for tonic.
#[derive(Clone, Debug)]
pub struct LoadedTls {
    files: TlsFiles,
    config: ServerTlsConfig,
}

impl LoadedTls {
    /// tonic's server TLS configuration.
    pub fn server_config(&self) -> ServerTlsConfig {
        self.config.clone()
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Applies this configuration to a tonic server builder; rustls checks
    /// here that the key matches the certificate.
    pub(crate) fn apply<L>(
        &self,
        builder: tonic::transport::Server<L>,
    ) -> Result<tonic::transport::Server<L>, TlsError> {
        builder
            .tls_config(self.config.clone())
            .map_err(|e| TlsError::Config {
                cert: self.files.cert.clone(),
                key: self.files.key.clone(),
                reason: error_chain(&e),
            })
    }
}

impl TlsFiles {
    /// Reads and checks the files: each must exist, the certificate files
    /// must hold at least one PEM certificate and the key file a PEM private
    /// key.
    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        let cert = read(&self.cert, "certificate")?;
        check_certificates(&cert, &self.cert, "certificate")?;
        let key = read(&self.key, "private key")?;
        if let Err(e) = PrivateKeyDer::from_pem_slice(&key) {
            return Err(TlsError::Invalid {
                what: "private key",
                path: self.key.clone(),
                reason: format!("no PEM private key found ({e})"),
            });
        }
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca_path) = &self.client_ca {
            let ca = read(ca_path, "client CA")?;
            check_certificates(&ca, ca_path, "client CA")?;
            // Required, not optional: a client CA means "only these clients".
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        let loaded = LoadedTls {
            files: self.clone(),
            config,
        };
        // Build once now so a key that does not match its certificate is
        // reported at start, with the paths.
        loaded.apply(tonic::transport::Server::builder())?;
        Ok(loaded)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn check_certificates(pem: &[u8], path: &Path, what: &'static str) -> Result<(), TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| invalid(format!("bad PEM certificate ({e})")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no PEM certificate found".to_owned()));
    }
    Ok(())
}

/// An error and its sources on one line: tonic's top-level transport error
/// says little on its own.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_cert_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &key),
            client_ca: Some(write(dir.path(), "ca.pem", &cert)),
        };
        assert!(files.load().is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = self_signed();
        let files = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: write(dir.path(), "key.pem", &key),
            client_ca: None,
        };
        let message = files.load().unwrap_err().to_string();
        assert!(message.contains("cannot read TLS certificate"), "{message}");
        assert!(message.contains("nope.pem"), "{message}");
    }

    #[test]
    fn a_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &key),
            client_ca: Some(write(dir.path(), "ca.pem", "not a certificate\n")),
        };
        let message = files.load().unwrap_err().to_string();
        assert!(message.contains("client CA"), "{message}");
        assert!(message.contains("no PEM certificate"), "{message}");
    }

    #[test]
    fn a_key_of_another_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &other_key),
            client_ca: None,
        };
        let message = files.load().unwrap_err().to_string();
        assert!(message.contains("cannot be used together"), "{message}");
    }

    #[test]
    fn a_certificate_in_the_key_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed();
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &cert),
            key: write(dir.path(), "key.pem", &cert),
            client_ca: None,
        };
        let message = files.load().unwrap_err().to_string();
        assert!(message.contains("no PEM private key"), "{message}");
    }
}
