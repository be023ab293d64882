//! `mailveil check --probe`: reach every configured upstream the way the
//! relay would (same egress, same TLS checks, same greeting) and say how it
//! went. Prints to stdout for the operator; logs nothing.

use std::time::Instant;

use crate::config::{Config, Endpoint};
use crate::egress::{Egress, IsolationKey};
use crate::provider::imap::UpstreamImap;
use crate::provider::smtp::UpstreamSmtp;
use crate::provider::{Target, UpstreamError};
use crate::tls::{TlsFailure, names_of, pin_of, upstream_client_config};

/// How long to wait for the embedded Tor client to bootstrap.
#[cfg(feature = "tor")]
pub(crate) const BOOTSTRAP_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// What a probe found, and the egress it used. Drop it only after the
/// runtime has shut down: the embedded Tor client writes its state into
/// its runtime directory as its tasks end, and dropping the egress removes
/// that directory (before, arti logs an error about the missing state).
pub struct Probed {
    /// True when every endpoint answered.
    pub all_ok: anyhow::Result<bool>,
    _egress: Egress,
}

/// Probes every endpoint.
pub async fn run(config: &Config) -> anyhow::Result<Probed> {
    let egress = Egress::new(&config.egress, &config.upstreams, None)?;
    let all_ok = probe_all(config, &egress).await;
    Ok(Probed {
        all_ok,
        _egress: egress,
    })
}

async fn probe_all(config: &Config, egress: &Egress) -> anyhow::Result<bool> {
    #[cfg(feature = "tor")]
    if let Some(tor) = egress.tor() {
        let started = Instant::now();
        crate::outln!(
            "probe: Tor bootstrapping (up to {} s) ...",
            BOOTSTRAP_WAIT.as_secs()
        );
        if !tor.wait_ready(BOOTSTRAP_WAIT).await {
            crate::outln!(
                "probe: Tor did not bootstrap in {:.1} s: no upstream can be reached",
                started.elapsed().as_secs_f64()
            );
            return Ok(false);
        }
        crate::outln!(
            "probe: Tor bootstrapped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut all_ok = true;
    for u in &config.upstreams {
        for (protocol, endpoints) in [("smtp", &u.smtp), ("imap", &u.imap)] {
            for (j, endpoint) in endpoints.iter().enumerate() {
                // A verifier of its own, to show the certificate it saw.
                let (tls, verifier) = upstream_client_config(u, true)?;
                let t = Instant::now();
                let outcome = probe_one(protocol, endpoint, tls, egress, config).await;
                let secs = t.elapsed().as_secs_f64();
                let place = format!(
                    "{} {protocol}{} {}:{} via {}",
                    u.name,
                    if endpoints.len() > 1 {
                        format!("[{j}]")
                    } else {
                        String::new()
                    },
                    endpoint.host.expose(),
                    endpoint.port,
                    endpoint.egress.name()
                );
                match &outcome {
                    Ok(()) => crate::outln!("probe: {place}: ok in {secs:.1} s"),
                    Err(e) => {
                        all_ok = false;
                        crate::outln!("probe: {place}: FAILED after {secs:.1} s: {e}");
                    }
                }
                let Some(shown) = verifier.seen() else {
                    continue;
                };
                if let Some(pin) = pin_of(&shown) {
                    crate::outln!("probe:   certificate key pin_sha256 = \"{pin}\"");
                }
                if let Err(UpstreamError::Tls(TlsFailure::NameMismatch)) = outcome {
                    crate::outln!(
                        "probe:   the certificate names [{}], not {}",
                        names_of(&shown).join(", "),
                        endpoint.tls_server_name.expose()
                    );
                }
                let pin = pin_of(&shown).unwrap_or_default();
                match outcome {
                    Err(UpstreamError::Tls(TlsFailure::CaAsLeaf)) => crate::outln!(
                        "probe:   if this is the provider's own certificate (check the pin with \
                         them, out of band), pin it: pin_sha256 = [\"{pin}\"]"
                    ),
                    Err(UpstreamError::Tls(TlsFailure::UnknownIssuer)) => crate::outln!(
                        "probe:   if the provider signs with its own CA, give its CA certificate \
                         as `ca`; pinning this key (pin_sha256 = [\"{pin}\"]) works too, but \
                         fails when the key changes (certbot makes a new key at every renewal \
                         unless told to reuse it)"
                    ),
                    _ => {}
                }
            }
        }
    }
    Ok(all_ok)
}

async fn probe_one(
    protocol: &str,
    endpoint: &Endpoint,
    tls: std::sync::Arc<rustls::ClientConfig>,
    egress: &Egress,
    config: &Config,
) -> Result<(), UpstreamError> {
    // A key of its own: the probe shares no circuit with anybody.
    let isolation = IsolationKey::random();
    let target = Target {
        endpoints: std::slice::from_ref(endpoint),
        tls,
        egress,
        isolation: &isolation,
        timeout: config.limits.upstream_timeout,
    };
    if protocol == "smtp" {
        UpstreamSmtp::connect(&target, &config.upstream_ehlo_name)
            .await?
            .0
            .quit()
            .await;
    } else {
        UpstreamImap::connect(&target).await?;
    }
    Ok(())
}
