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
use crate::config::{Config, Endpoint, Listener, Protocol, Serves};
use crate::egress::{Egress, EgressSetupError, IsolationKey};
use crate::provider::Target;
use crate::sanitize::Policy;
use crate::stats::Stats;
use crate::tls::{ServerCertificate, TlsError, upstream_client_config};

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
    /// The onion service's key (`[onion]`).
    #[error("onion service key: {0}")]
    OnionKey(String),
}

/// Everything sessions share, built once at start-up.
pub struct Relay {
    /// The validated configuration.
    pub(crate) config: Config,
    /// What each listener's clients see, by listener index.
    pub(crate) faces: Vec<Face>,
    /// What clients of [`crate::smtp::serve`] and [`crate::imap::serve`]
    /// see (no listener): SMTP, IMAP.
    bare_faces: [Face; 2],
    /// The listeners with a certificate of their own.
    own_certificates: Vec<OwnCertificate>,
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
    /// The relay's onion address, read from its key, when it has an onion
    /// service.
    onion_address: Option<String>,
}

impl Relay {
    /// Builds the shared state: loads CA files, compiles the policy, sets up
    /// egress (starting Tor's bootstrap when it is used). Runs inside the
    /// tokio runtime.
    pub fn new(config: Config, server_tls: Arc<rustls::ServerConfig>) -> Result<Self, RelayError> {
        let onion_address = config
            .onion
            .as_ref()
            .map(|o| onion_address(&o.key_directory))
            .transpose()?;
        let mut own_certificates = Vec::new();
        let faces = config
            .listeners
            .iter()
            .enumerate()
            .map(|(index, l)| {
                let hostname = match (&l.hostname, &onion_address) {
                    (Some(name), _) => name.clone(),
                    (None, Some(onion)) if l.is_onion() => onion.clone(),
                    (None, _) => config.hostname.clone(),
                };
                Face::for_listener(index, l, hostname, &server_tls, &mut own_certificates)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bare_faces = [Protocol::Smtp, Protocol::Imap].map(|p| Face {
            hostname: config.hostname.clone(),
            acceptor: with_alpn(&server_tls, Serves::One(p)),
        });
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
            egress: Egress::new(&config.egress, &config.upstreams, config.onion.as_ref())?,
            policy: Policy::new(&config.sanitize),
            faces,
            bare_faces,
            own_certificates,
            onion_address,
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

    /// The face of clients served without a listener.
    pub(crate) fn bare_face(&self, protocol: Protocol) -> &Face {
        match protocol {
            Protocol::Smtp => &self.bare_faces[0],
            Protocol::Imap => &self.bare_faces[1],
        }
    }

    /// The listeners with a certificate of their own: made at start-up
    /// (print the fingerprint) or read from files (reload them on SIGHUP).
    pub fn own_certificates(&self) -> &[OwnCertificate] {
        &self.own_certificates
    }

    /// The relay's onion address (`<56 characters>.onion`), when it has an
    /// onion service.
    pub fn onion_address(&self) -> Option<&str> {
        self.onion_address.as_deref()
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

/// What the clients of one listener see: the name in its greeting, and its
/// TLS (certificate, ALPN).
pub(crate) struct Face {
    /// The name in the SMTP greeting and EHLO reply.
    pub(crate) hostname: String,
    /// The TLS acceptor, with ALPN set to what the listener serves.
    pub(crate) acceptor: TlsAcceptor,
}

/// A listener's own certificate.
pub struct OwnCertificate {
    /// The listener's index in the configuration.
    pub listener: usize,
    /// SHA-256 fingerprint of the leaf.
    pub fingerprint: String,
    /// The leaf certificate at start (tests read its names).
    pub leaf: rustls_pki_types::CertificateDer<'static>,
    /// The files it was read from (absolute), to read again on SIGHUP;
    /// `None`: made at start-up.
    pub files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The certificate in use, replaceable.
    pub certificate: Arc<ServerCertificate>,
}

impl Face {
    /// The face of listener `index`: its own name and certificate if it
    /// has them (an ephemeral certificate for its own name when it names
    /// no files: a name of its own must never come with the shared
    /// certificate, which would link the two), else the relay's.
    fn for_listener(
        index: usize,
        l: &Listener,
        hostname: String,
        server_tls: &Arc<rustls::ServerConfig>,
        own: &mut Vec<OwnCertificate>,
    ) -> Result<Self, RelayError> {
        let tls = if l.has_own_face() {
            let files = l.certificate.as_ref().map(|(c, k)| {
                (
                    std::path::absolute(c).unwrap_or_else(|_| c.clone()),
                    std::path::absolute(k).unwrap_or_else(|_| k.clone()),
                )
            });
            let identity = crate::tls::server_identity(
                files.as_ref().map(|(c, _)| c.as_path()),
                files.as_ref().map(|(_, k)| k.as_path()),
                &hostname,
            )?;
            own.push(OwnCertificate {
                listener: index,
                fingerprint: identity.fingerprint,
                leaf: identity.leaf,
                files,
                certificate: identity.certificate,
            });
            identity.config
        } else {
            server_tls.clone()
        };
        Ok(Face {
            hostname,
            acceptor: with_alpn(&tls, l.serves),
        })
    }
}

/// `tls` offering the ALPN protocol IDs of what a listener serves, its
/// default first (rustls picks the first of these the client offers). A
/// client offering ALPN IDs but none of these is refused in the handshake
/// (`no_application_protocol`): an HTTP client sent here by a
/// cross-protocol attack (ALPACA) gets no mail session. A client sending
/// no ALPN is served.
fn with_alpn(tls: &Arc<rustls::ServerConfig>, serves: Serves) -> TlsAcceptor {
    let mut config = (**tls).clone();
    config.alpn_protocols = match serves {
        Serves::One(p) => vec![p.alpn_id().to_vec()],
        Serves::ByAlpn { default } => {
            let other = match default {
                Protocol::Smtp => Protocol::Imap,
                Protocol::Imap => Protocol::Smtp,
            };
            vec![default.alpn_id().to_vec(), other.alpn_id().to_vec()]
        }
    };
    TlsAcceptor::from(Arc::new(config))
}

/// The onion address of the key in `dir`: read at start, so that a missing
/// or unusable key stops the relay instead of arti making a new one.
#[cfg(feature = "tor")]
fn onion_address(dir: &std::path::Path) -> Result<String, RelayError> {
    crate::onion::address_of(dir).map_err(|e| RelayError::OnionKey(e.to_string()))
}

#[cfg(not(feature = "tor"))]
fn onion_address(_: &std::path::Path) -> Result<String, RelayError> {
    Err(RelayError::OnionKey(
        "an onion service needs mailveil built with the tor feature".into(),
    ))
}
