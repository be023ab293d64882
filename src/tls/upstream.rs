//! How the relay checks a provider's certificate: the chain against the
//! public roots or the upstream's `ca` (webpki), or, when the upstream lists
//! `pin_sha256`, the certificate's public key against the pins, which then
//! replace chain validation. A pinned certificate must still be within its
//! validity dates and, unless `pin_check_name = false`, carry the
//! endpoint's name; it may be a CA certificate (what `openssl req -x509`
//! makes), since no chain is built from it.
//!
//! A failure is classified ([`TlsFailure`]) without naming any host, so
//! that sessions can count it and `mailveil check --probe` can say why.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore};

use super::{TlsError, provider, read_certificates};
use crate::config::{Pins, Upstream};

/// Why a provider's TLS handshake failed, as far as the relay can tell;
/// names no host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// The certificate's validity has ended.
    Expired,
    /// The certificate's validity has not begun.
    NotYetValid,
    /// The certificate does not carry the endpoint's name.
    NameMismatch,
    /// No trusted CA signed the certificate.
    UnknownIssuer,
    /// The server presented a CA certificate as its own.
    CaAsLeaf,
    /// Pins are set and none matches the certificate's key.
    PinMismatch,
    /// Anything else: protocol, signature, an unreadable certificate.
    Handshake,
}

impl TlsFailure {
    /// Classifies the error a TLS handshake ended with.
    pub(crate) fn of(error: &std::io::Error) -> Self {
        let Some(rustls::Error::InvalidCertificate(e)) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return TlsFailure::Handshake;
        };
        match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Other(OtherError(inner)) => {
                if inner.downcast_ref::<PinMismatch>().is_some() {
                    TlsFailure::PinMismatch
                } else if matches!(
                    inner.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) {
                    TlsFailure::CaAsLeaf
                } else {
                    TlsFailure::Handshake
                }
            }
            _ => TlsFailure::Handshake,
        }
    }

    /// What an operator reads in `mailveil check --probe`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            TlsFailure::Expired => "the certificate has expired",
            TlsFailure::NotYetValid => "the certificate is not valid yet",
            TlsFailure::NameMismatch => "name mismatch: the certificate does not carry this name",
            TlsFailure::UnknownIssuer => {
                "unknown issuer: no trusted CA signed the certificate (public roots, or the \
                 upstream's `ca`)"
            }
            TlsFailure::CaAsLeaf => {
                "a CA certificate used as the server's own (what `openssl req -x509` makes): it \
                 cannot be trusted through `ca`; pin its key instead"
            }
            TlsFailure::PinMismatch => "no pin in `pin_sha256` matches the certificate's key",
            TlsFailure::Handshake => "the TLS handshake failed",
        }
    }
}

/// The marker error of a certificate whose key matches no pin.
#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no pinned key matches")
    }
}

impl std::error::Error for PinMismatch {}

/// The pin of a certificate: base64 of the SHA-256 of its
/// SubjectPublicKeyInfo, the form `pin_sha256` takes (HPKP, curl's
/// `--pinnedpubkey sha256//…`). `None` when the certificate can't be read.
pub fn pin_of(certificate: &CertificateDer<'_>) -> Option<String> {
    use base64::Engine as _;
    let digest = spki_sha256(certificate)?;
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

fn spki_sha256(certificate: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    let spki = parsed.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    digest.as_ref().try_into().ok()
}

/// The names a certificate carries (its DNS subjectAltNames), for the probe.
pub(crate) fn names_of(certificate: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(certificate)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

/// How one upstream's certificates are checked.
#[derive(Debug)]
enum Check {
    /// A chain to these roots.
    Chain(Arc<WebPkiServerVerifier>),
    /// A pinned key.
    Pinned(Pins),
}

/// The certificate verifier for one upstream. For the probe it also keeps
/// the last certificate shown, so that its pin can be printed even when the
/// handshake fails.
#[derive(Debug)]
pub(crate) struct UpstreamVerifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Option<Mutex<Option<CertificateDer<'static>>>>,
}

impl UpstreamVerifier {
    /// The last end-entity certificate shown (probe only).
    pub(crate) fn seen(&self) -> Option<CertificateDer<'static>> {
        self.seen
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn verify_pinned(
        &self,
        pins: &Pins,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let digest = spki_sha256(end_entity).ok_or(CertificateError::BadEncoding)?;
        if !pins.spki_sha256.contains(&digest) {
            return Err(CertificateError::Other(OtherError(Arc::new(PinMismatch))).into());
        }
        let (not_before, not_after) =
            validity(end_entity.as_ref()).ok_or(CertificateError::BadEncoding)?;
        if now.as_secs() < not_before {
            return Err(CertificateError::NotValidYet.into());
        }
        if now.as_secs() > not_after {
            return Err(CertificateError::Expired.into());
        }
        if pins.check_name {
            let parsed = webpki::EndEntityCert::try_from(end_entity)
                .map_err(|_| CertificateError::BadEncoding)?;
            parsed
                .verify_is_valid_for_subject_name(server_name)
                .map_err(|_| CertificateError::NotValidForName)?;
        }
        Ok(())
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(seen) = &self.seen {
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(end_entity.clone().into_owned());
        }
        match &self.check {
            Check::Chain(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Check::Pinned(pins) => self
                .verify_pinned(pins, end_entity, server_name, now)
                .map(|()| ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS client configuration for one upstream, and its verifier. With
/// `record`, the verifier keeps the last certificate shown (the probe).
/// TLS 1.2 and 1.3, no resumption (it would link connections that egress
/// isolation keeps apart).
pub(crate) fn upstream_client_config(
    upstream: &Upstream,
    record: bool,
) -> Result<(Arc<ClientConfig>, Arc<UpstreamVerifier>), TlsError> {
    let provider = provider();
    let check = match &upstream.pins {
        Some(pins) => Check::Pinned(pins.clone()),
        None => {
            let mut roots = RootCertStore::empty();
            match &upstream.ca {
                Some(path) => {
                    for cert in read_certificates(path, "CA")? {
                        roots.add(cert).map_err(|e| TlsError::File {
                            what: "CA",
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            Check::Chain(webpki)
        }
    };
    let verifier = Arc::new(UpstreamVerifier {
        check,
        algorithms: provider.signature_verification_algorithms,
        seen: record.then(|| Mutex::new(None)),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_sni = true;
    Ok((Arc::new(config), verifier))
}

/// A certificate's validity as Unix seconds (notBefore, notAfter), read
/// from its DER: Certificate → TBSCertificate → [version] serial signature
/// issuer validity.
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (tag, certificate, _) = tlv(der)?;
    let (tbs_tag, tbs, _) = (tag == 0x30).then(|| tlv(certificate))??;
    if tbs_tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (first, _, after) = tlv(rest)?;
    if first == 0xA0 {
        rest = after;
    }
    // serialNumber, signature, issuer.
    for expected in [0x02, 0x30, 0x30] {
        let (tag, _, after) = tlv(rest)?;
        if tag != expected {
            return None;
        }
        rest = after;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (before_tag, before, after) = tlv(validity)?;
    let (after_tag, not_after, _) = tlv(after)?;
    Some((time(before_tag, before)?, time(after_tag, not_after)?))
}

/// One DER element: (tag, contents, what follows). Single-byte tags and
/// lengths of up to four bytes, which is all a certificate's outer
/// structure uses.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, value: &[u8]) -> Option<u64> {
    let (year, rest) = match (tag, value.len()) {
        (0x17, 13) => {
            let yy = digits(&value[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &value[2..])
        }
        (0x18, 15) => (digits(&value[..4])?, &value[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = crate::sanitize::date::days_from_civil(year, month, day);
    // Before 1970 (a notBefore far in the past) is simply "long ago".
    Some(u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).unwrap_or(0))
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(ca: bool, names: &[&str], years: (i32, i32)) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn pinned_verifier(cert: &CertificateDer<'_>, check_name: bool) -> UpstreamVerifier {
        UpstreamVerifier {
            check: Check::Pinned(Pins {
                spki_sha256: vec![spki_sha256(cert).expect("spki")],
                check_name,
            }),
            algorithms: provider().signature_verification_algorithms,
            seen: Some(Mutex::new(None)),
        }
    }

    fn verdict(
        verifier: &UpstreamVerifier,
        cert: &CertificateDer<'_>,
        name: &str,
        year: i32,
    ) -> Result<(), TlsFailure> {
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(crate::sanitize::date::days_from_civil(i64::from(year), 6, 1) * 86_400)
                .expect("after 1970"),
        ));
        let name = ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(cert, &[], &name, &[], now)
            .map(drop)
            .map_err(|e| TlsFailure::of(&std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    #[test]
    fn a_pinned_ca_certificate_is_accepted_within_its_dates_and_name() {
        let cert = certificate(true, &["mail.self.test"], (2025, 2030));
        let v = pinned_verifier(&cert, true);
        assert_eq!(verdict(&v, &cert, "mail.self.test", 2027), Ok(()));
        assert_eq!(v.seen().as_ref(), Some(&cert));
        assert_eq!(
            verdict(&v, &cert, "mail.self.test", 2031),
            Err(TlsFailure::Expired)
        );
        assert_eq!(
            verdict(&v, &cert, "mail.self.test", 2024),
            Err(TlsFailure::NotYetValid)
        );
        assert_eq!(
            verdict(&v, &cert, "other.test", 2027),
            Err(TlsFailure::NameMismatch)
        );
        let unnamed = pinned_verifier(&cert, false);
        assert_eq!(verdict(&unnamed, &cert, "other.test", 2027), Ok(()));
        // Dates are checked even when the name is not.
        assert_eq!(
            verdict(&unnamed, &cert, "other.test", 2031),
            Err(TlsFailure::Expired)
        );
    }

    #[test]
    fn any_listed_pin_opens_so_keys_can_change_without_an_outage() {
        let old = certificate(true, &["mail.self.test"], (2025, 2030));
        let new = certificate(true, &["mail.self.test"], (2025, 2030));
        let v = UpstreamVerifier {
            check: Check::Pinned(Pins {
                spki_sha256: vec![
                    spki_sha256(&old).expect("spki"),
                    spki_sha256(&new).expect("spki"),
                ],
                check_name: true,
            }),
            algorithms: provider().signature_verification_algorithms,
            seen: None,
        };
        assert_eq!(verdict(&v, &old, "mail.self.test", 2027), Ok(()));
        assert_eq!(verdict(&v, &new, "mail.self.test", 2027), Ok(()));
        let stranger = certificate(true, &["mail.self.test"], (2025, 2030));
        assert_eq!(
            verdict(&v, &stranger, "mail.self.test", 2027),
            Err(TlsFailure::PinMismatch)
        );
    }

    #[test]
    fn another_key_fails_the_pin_whatever_its_name() {
        let pinned = certificate(true, &["mail.self.test"], (2025, 2030));
        let other = certificate(true, &["mail.self.test"], (2025, 2030));
        let v = pinned_verifier(&pinned, true);
        assert_eq!(
            verdict(&v, &other, "mail.self.test", 2027),
            Err(TlsFailure::PinMismatch)
        );
        assert_eq!(v.seen().as_ref(), Some(&other));
    }

    #[test]
    fn chain_validation_names_a_ca_used_as_a_leaf() {
        let cert = certificate(true, &["mail.self.test"], (2025, 2030));
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).expect("root");
        let v = UpstreamVerifier {
            check: Check::Chain(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .expect("verifier"),
            ),
            algorithms: provider().signature_verification_algorithms,
            seen: None,
        };
        assert_eq!(
            verdict(&v, &cert, "mail.self.test", 2027),
            Err(TlsFailure::CaAsLeaf)
        );
        let stranger = certificate(false, &["stranger.test"], (2025, 2030));
        assert_eq!(
            verdict(&v, &stranger, "stranger.test", 2027),
            Err(TlsFailure::UnknownIssuer)
        );
        assert_eq!(v.seen(), None);
    }

    #[test]
    fn validity_reads_both_time_forms() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050.
        let cert = certificate(false, &["a.test"], (1999, 2051));
        let (before, after) = validity(cert.as_ref()).expect("validity");
        assert_eq!(before, 915_148_800);
        assert_eq!(after, 2_556_144_000);
        let old = certificate(false, &["a.test"], (1960, 2051));
        assert_eq!(validity(old.as_ref()), Some((0, 2_556_144_000)));
        assert_eq!(validity(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(validity(&cert.as_ref()[..40]), None);
    }

    /// Made with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256
    /// -nodes -subj /CN=mail.self.test -addext subjectAltName=DNS:mail.self.test`:
    /// CA:TRUE, as that recipe makes it.
    const OPENSSL_SELF_SIGNED: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBojCCAUigAwIBAgIULWh194jmFy2bp8Nu9p6vq7oAx74wCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwObWFpbC5zZWxmLnRlc3QwHhcNMjYxMjAxMDg1NTA4WhcNMzYx\n\
MTI4MDg1NTA4WjAZMRcwFQYDVQQDDA5tYWlsLnNlbGYudGVzdDBZMBMGByqGSM49\n\
AgEGCCqGSM49AwEHA0IABDtdoHtAX+dKdjxtzDoJwLeprPpN7jfmLOi7LQK083PR\n\
Q4jgSWEgmUsMSvqJOmqn8/p+XiOHtAyRN0yQD0fdQYajbjBsMB0GA1UdDgQWBBQv\n\
IWDvUaVJ+enNtEZ0RGA1+TsAYjAfBgNVHSMEGDAWgBQvIWDvUaVJ+enNtEZ0RGA1\n\
+TsAYjAPBgNVHRMBAf8EBTADAQH/MBkGA1UdEQQSMBCCDm1haWwuc2VsZi50ZXN0\n\
MAoGCCqGSM49BAMCA0gAMEUCIC8Z8VlbY3kwPwvcD4A5Mh69GuSYUbmXvpw1lnA8\n\
XvVgAiEA92mdVrmE/d3HqjvbRmgiAqDhrhEOL4AvnQ3Vnym0HUI=\n\
-----END CERTIFICATE-----\n";

    #[test]
    fn the_pin_and_dates_agree_with_openssl() {
        use rustls::pki_types::pem::PemObject as _;
        let cert = CertificateDer::from_pem_slice(OPENSSL_SELF_SIGNED.as_bytes()).expect("pem");
        // openssl x509 -pubkey -noout | openssl pkey -pubin -outform der |
        //   openssl dgst -sha256 -binary | base64
        assert_eq!(
            pin_of(&cert).as_deref(),
            Some("xSOWx8SDGkVNLr6+drC0FQIvPUZ2zEwhZKzsZ7JJyWw=")
        );
        // openssl x509 -noout -dates: Dec 1 08:55:08 2026 GMT, Nov 28 08:55:08 2036 GMT.
        assert_eq!(
            validity(cert.as_ref()),
            Some((1_796_115_308, 2_111_475_308))
        );
        assert_eq!(names_of(&cert), ["mail.self.test"]);
    }
}
