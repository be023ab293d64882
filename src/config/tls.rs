//! `[tls]`: where the relay's own certificate chain and private key are.
//! Only checks that they come as a pair; never opens the files (`crate::tls`
//! does, at start-up and on reload) and never holds key material.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
}

/// The certificate and key files, both set or neither.
pub(super) struct CertificateFiles {
    /// Certificate chain file; `None`: an ephemeral self-signed one.
    pub(super) certificate: Option<PathBuf>,
    /// Private key file.
    pub(super) private_key: Option<PathBuf>,
}

/// Refuses a certificate without its key and a key without its certificate.
pub(super) fn validate(raw: RawTls) -> Result<CertificateFiles, ConfigError> {
    match (&raw.certificate, &raw.private_key) {
        (Some(_), None) => {
            return Err(invalid(
                "tls.private_key",
                "required when tls.certificate is set",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls.certificate",
                "required when tls.private_key is set",
            ));
        }
        _ => {}
    }
    Ok(CertificateFiles {
        certificate: raw.certificate,
        private_key: raw.private_key,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    #[test]
    fn certificate_without_key_is_refused() {
        let text = format!("{MINIMAL}\n[tls]\ncertificate = \"/x.pem\"\n");
        let err = Config::parse(&text).expect_err("no key").to_string();
        assert!(err.contains("tls.private_key"), "{err}");
    }

    #[test]
    fn key_without_certificate_is_refused() {
        let err = refusal(&format!("{MINIMAL}\n[tls]\nprivate_key = \"/k.pem\"\n"));
        assert_eq!(
            err,
            "`tls.certificate`: required when tls.private_key is set"
        );
    }

    #[test]
    fn certificate_and_key_pass_through_unread() {
        let text =
            format!("{MINIMAL}\n[tls]\ncertificate = \"/no/c.pem\"\nprivate_key = \"/no/k.pem\"\n");
        let c = Config::parse(&text).expect("files are not opened here");
        assert_eq!(c.certificate.as_deref(), Some(Path::new("/no/c.pem")));
        assert_eq!(c.private_key.as_deref(), Some(Path::new("/no/k.pem")));
    }
}
