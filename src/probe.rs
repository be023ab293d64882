//! `mailveil check --probe`: reach every configured upstream the way the
//! relay would (same egress, same TLS checks, same greeting) and say how it
//! went. Prints to stdout for the operator; logs nothing.

use std::time::Instant;

use crate::config::{Config, Endpoint};
use crate::egress::{Egress, IsolationKey};
use crate::provider::imap::UpstreamImap;
use crate::provider::smtp::UpstreamSmtp;
use crate::provider::{Target, UpstreamError};
use crate::tls::upstream_client_config;

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
    let egress = Egress::new(&config.egress, &config.upstreams)?;
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
        println!(
            "probe: Tor bootstrapping (up to {} s) ...",
            BOOTSTRAP_WAIT.as_secs()
        );
        if !tor.wait_ready(BOOTSTRAP_WAIT).await {
            println!(
                "probe: Tor did not bootstrap in {:.1} s: no upstream can be reached",
                started.elapsed().as_secs_f64()
            );
            return Ok(false);
        }
        println!(
            "probe: Tor bootstrapped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut all_ok = true;
    for u in &config.upstreams {
        let tls = upstream_client_config(u.ca.as_deref())?;
        for (protocol, endpoint) in [("smtp", &u.smtp), ("imap", &u.imap)] {
            let Some(endpoint) = endpoint else { continue };
            let t = Instant::now();
            let outcome = probe_one(protocol, endpoint, tls.clone(), egress, config).await;
            let secs = t.elapsed().as_secs_f64();
            match outcome {
                Ok(()) => println!(
                    "probe: {} {protocol} {}:{} via {}: ok in {secs:.1} s",
                    u.name,
                    endpoint.host.expose(),
                    endpoint.port,
                    endpoint.egress.name()
                ),
                Err(e) => {
                    all_ok = false;
                    println!(
                        "probe: {} {protocol} {}:{} via {}: FAILED after {secs:.1} s: {e}",
                        u.name,
                        endpoint.host.expose(),
                        endpoint.port,
                        endpoint.egress.name()
                    );
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
        endpoint,
        tls,
        egress,
        isolation: &isolation,
        timeout: config.limits.upstream_timeout,
    };
    if protocol == "smtp" {
        UpstreamSmtp::connect(&target, &config.upstream_ehlo_name)
            .await?
            .quit()
            .await;
    } else {
        UpstreamImap::connect(&target).await?;
    }
    Ok(())
}
