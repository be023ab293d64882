//! [`Relay`]: everything sessions share, built once at start-up — the
//! validated configuration, TLS configurations, egress, the header policy,
//! counters, admission tables and the shutdown signal.
//!
//! It holds no per-session state and nothing about any user: sessions keep
//! their own, and admission keeps only keyed tags.

use std::sync::Arc;

use rustls::ClientConfig;
use tokio_rustls::TlsAcceptor;

use crate::access::{AccessError, Members};
use crate::admission::{Admission, AdmissionLimits};
use crate::config::{Config, Endpoint};
use crate::egress::{Egress, EgressSetupError, IsolationKey};
use crate::provider::Target;
use crate::sanitize::Policy;
use crate::stats::Stats;
use crate::tls::{TlsError, upstream_client_config};

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An upstream CA file or TLS setting.
    #[error("upstream TLS: {0}")]
    Tls(#[from] TlsError),
    /// Egress (the embedded Tor client).
    #[error("{0}")]
    Egress(#[from] EgressSetupError),
    /// The members list or its secret (`[access]`).
    #[error("members only: {0}")]
    Access(#[from] AccessError),
}

/// Everything sessions share, built once at start-up.
pub struct Relay {
    /// The validated configuration.
    pub(crate) config: Config,
    /// Client-facing TLS.
    pub(crate) acceptor: TlsAcceptor,
    /// Upstream TLS configurations, by upstream index.
    upstream_tls: Vec<Arc<ClientConfig>>,
    /// The way out.
    pub(crate) egress: Egress,
    /// The compiled header policy.
    pub(crate) policy: Policy,
    /// Aggregate counters.
    pub(crate) stats: Stats,
    /// Set to true on shutdown: idle sessions say goodbye and end, busy
    /// ones finish what they are doing.
    pub(crate) draining: tokio::sync::watch::Sender<bool>,
    /// Per-prefix and per-account limits, lockouts, eviction.
    pub(crate) admission: Arc<Admission>,
    /// The members, when the relay serves members only.
    pub(crate) members: Option<Members>,
}

impl Relay {
    /// Builds the shared state: loads CA files, compiles the policy, sets up
    /// egress (starting Tor's bootstrap when it is used). Runs inside the
    /// tokio runtime.
    pub fn new(config: Config, server_tls: Arc<rustls::ServerConfig>) -> Result<Self, RelayError> {
        let upstream_tls = config
            .upstreams
            .iter()
            .map(|u| upstream_client_config(u, false).map(|(tls, _)| tls))
            .collect::<Result<Vec<_>, _>>()?;
        let members = config
            .access
            .as_ref()
            .map(crate::access::load)
            .transpose()?;
        Ok(Relay {
            members,
            egress: Egress::new(&config.egress, &config.upstreams)?,
            policy: Policy::new(&config.sanitize),
            acceptor: TlsAcceptor::from(server_tls),
            upstream_tls,
            stats: Stats::default(),
            draining: tokio::sync::watch::channel(false).0,
            admission: Arc::new(Admission::new(AdmissionLimits::from_limits(&config.limits))),
            config,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many members the list holds, when the relay serves members only.
    pub fn members(&self) -> Option<usize> {
        self.members.as_ref().map(Members::len)
    }

    /// The aggregate counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The embedded Tor client's runtime directory, when Tor is in use:
    /// the one place where files are written while the relay runs.
    pub fn tor_runtime_dir(&self) -> Option<&std::path::Path> {
        self.egress.tor_runtime_dir()
    }

    /// How to reach `endpoints` of upstream `index` for a session isolated
    /// by `isolation`.
    pub(crate) fn target<'a>(
        &'a self,
        index: usize,
        endpoints: &'a [Endpoint],
        isolation: &'a IsolationKey,
    ) -> Target<'a> {
        Target {
            endpoints,
            tls: self.upstream_tls[index].clone(),
            egress: &self.egress,
            isolation,
            timeout: self.config.limits.upstream_timeout,
        }
    }

    /// Resolves once the relay is shutting down.
    pub(crate) async fn until_draining(rx: &mut tokio::sync::watch::Receiver<bool>) {
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
