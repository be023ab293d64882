//! TLS configurations, built once at start-up and shared.
//!
//! Server side: TLS 1.2 and 1.3 only, the configured certificate or an
//! ephemeral self-signed one made in memory, and no session cache or tickets
//! (they would let an observer link a client's sessions). Client side (towards
//! upstreams, in [`upstream`]): certificate verification always on, against
//! the web PKI roots, a configured CA or pinned public keys, and no session
//! resumption (it would link connections that egress isolation keeps apart).
//! This module never disables verification.

mod upstream;

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::Resumption;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use upstream::pin_of;
pub(crate) use upstream::{TlsFailure, names_of, upstream_client_config};

/// A TLS set-up problem. Messages name files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate", "private key" or "CA".
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// The process-wide crypto provider: ring, chosen explicitly so that exactly
/// one provider is ever in use.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider, for code that builds
/// its own rustls configurations from the default (the embedded Tor client).
/// Idempotent; our own configurations name [`provider`] explicitly.
pub fn install_process_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The server identity clients see.
pub struct ServerIdentity {
    /// The rustls configuration for client-facing listeners.
    pub config: Arc<ServerConfig>,
    /// SHA-256 fingerprint of the leaf certificate, as colon-separated hex.
    pub fingerprint: String,
    /// True when the certificate was made at start-up.
    pub ephemeral: bool,
    /// The leaf certificate (tests trust it directly).
    pub leaf: CertificateDer<'static>,
    /// The certificate in use, replaceable while the relay runs.
    pub certificate: Arc<ServerCertificate>,
}

/// The certificate new handshakes get. [`ServerCertificate::reload`]
/// replaces it (on SIGHUP); handshakes already done keep theirs, and a
/// reload that fails keeps the current one.
#[derive(Debug)]
pub struct ServerCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl ServerCertificate {
    /// Reads the certificate chain and key again; on success new handshakes
    /// use them and the new leaf's SHA-256 fingerprint is returned. On any
    /// error (unreadable file, no certificate, key not matching) nothing
    /// changes.
    pub fn reload(&self, certificate: &Path, private_key: &Path) -> Result<String, TlsError> {
        let (key, leaf) = load_certified_key(certificate, private_key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(fingerprint(&leaf))
    }
}

/// A chain and its private key from PEM files, checked to belong together.
fn load_certified_key(
    certificate: &Path,
    private_key: &Path,
) -> Result<(CertifiedKey, CertificateDer<'static>), TlsError> {
    let chain = read_certificates(certificate, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsError::File {
        what: "private key",
        path: private_key.display().to_string(),
        reason: e.to_string(),
    })?;
    let leaf = chain[0].clone();
    Ok((CertifiedKey::from_der(chain, key, &provider())?, leaf))
}

/// What `mailveil check` found of the certificate files, without keeping
/// any key material.
#[derive(Debug, PartialEq, Eq)]
pub enum FilesChecked {
    /// The chain was read and the key belongs to it; the leaf's SHA-256.
    Pair(String),
    /// The chain was read (the leaf's SHA-256); the key is not there to
    /// read, because systemd delivers it only to the running service.
    KeyDeliveredAtStart(String),
}

/// Reads the certificate chain and, unless it is a systemd credential
/// (under `/run/credentials/`) that does not exist outside the service,
/// the private key, and checks that they belong together: what the relay
/// would do at start, for `check`.
pub fn check_files(certificate: &Path, private_key: &Path) -> Result<FilesChecked, TlsError> {
    if private_key.starts_with("/run/credentials/") && !private_key.exists() {
        let chain = read_certificates(certificate, "certificate")?;
        return Ok(FilesChecked::KeyDeliveredAtStart(fingerprint(&chain[0])));
    }
    let (_, leaf) = load_certified_key(certificate, private_key)?;
    Ok(FilesChecked::Pair(fingerprint(&leaf)))
}

/// Builds the client-facing TLS configuration from files, or makes an
/// ephemeral self-signed certificate for `hostname` when none is configured.
pub fn server_identity(
    certificate: Option<&Path>,
    private_key: Option<&Path>,
    hostname: &str,
) -> Result<ServerIdentity, TlsError> {
    let (certified, leaf, ephemeral) = match (certificate, private_key) {
        (Some(cert_path), Some(key_path)) => {
            let (certified, leaf) = load_certified_key(cert_path, key_path)?;
            (certified, leaf, false)
        }
        _ => {
            let names = vec![crate::config::bare(hostname).to_string()];
            let made = rcgen::generate_simple_self_signed(names)?;
            let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).map_err(|e| {
                TlsError::File {
                    what: "private key",
                    path: "(generated)".into(),
                    reason: e.to_string(),
                }
            })?;
            let leaf = made.cert.der().clone();
            let certified = CertifiedKey::from_der(vec![leaf.clone()], key, &provider())?;
            (certified, leaf, true)
        }
    };
    let fingerprint = fingerprint(&leaf);
    let certificate = Arc::new(ServerCertificate {
        current: RwLock::new(Arc::new(certified)),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // The provider's suites are listed strongest first; pick from them in
    // that order rather than the client's (testssl.sh rates "no server
    // cipher order" HIGH).
    config.ignore_client_order = true;
    Ok(ServerIdentity {
        config: Arc::new(config),
        fingerprint,
        ephemeral,
        leaf,
        certificate,
    })
}

/// A client configuration trusting exactly `roots`, with resumption off.
pub fn client_config_with_roots(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_sni = true;
    Ok(Arc::new(config))
}

fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// SHA-256 of a DER certificate as `AB:CD:…`, as the relay prints it.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> String {
    fingerprint(cert)
}

/// SHA-256 of a DER certificate as `AB:CD:…`.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_identity_has_a_fingerprint_and_no_session_cache() {
        let id = server_identity(None, None, "relay.example").expect("self-signed");
        assert!(id.ephemeral);
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(id.config.send_tls13_tickets, 0);
        assert!(!id.config.session_storage.can_cache());
        assert!(id.config.ignore_client_order);
    }

    #[test]
    fn missing_certificate_file_names_the_file() {
        let err = server_identity(
            Some(Path::new("/nonexistent/cert.pem")),
            Some(Path::new("/nonexistent/key.pem")),
            "x",
        )
        .err()
        .expect("missing file");
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
