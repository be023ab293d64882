//! Listening sockets: bind, accept, hand each connection to its protocol
//! session, cap concurrent connections, stop on shutdown.
//!
//! Peer addresses are never read here beyond what `accept` returns, and they
//! are dropped at once: nothing downstream receives them. The only log lines
//! are about the relay itself (which sockets it listens on, accept errors by
//! kind).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Listener, ListenerTls, Protocol};
use crate::egress::{Egress, EgressSetupError};
use crate::sanitize::Policy;
use crate::stats::{Counter, Stats};
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
}

/// Everything sessions share, built once at start-up.
pub struct Relay {
    /// The validated configuration.
    pub config: Config,
    /// Client-facing TLS.
    pub acceptor: TlsAcceptor,
    /// Upstream TLS configurations, by upstream index.
    pub upstream_tls: Vec<Arc<ClientConfig>>,
    /// The way out.
    pub egress: Egress,
    /// The compiled header policy.
    pub policy: Policy,
    /// Aggregate counters.
    pub stats: Stats,
    /// Set to true on shutdown: idle sessions say goodbye and end, busy
    /// ones finish what they are doing.
    pub draining: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// Resolves once the relay is shutting down.
    pub async fn until_draining(rx: &mut tokio::sync::watch::Receiver<bool>) {
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Relay {
    /// Builds the shared state: loads CA files, compiles the policy, sets up
    /// egress (starting Tor's bootstrap when it is used). Runs inside the
    /// tokio runtime.
    pub fn new(config: Config, server_tls: Arc<rustls::ServerConfig>) -> Result<Self, RelayError> {
        let upstream_tls = config
            .upstreams
            .iter()
            .map(|u| upstream_client_config(u.ca.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Relay {
            egress: Egress::new(&config.egress, &config.upstreams)?,
            policy: Policy::new(&config.sanitize),
            acceptor: TlsAcceptor::from(server_tls),
            upstream_tls,
            config,
            stats: Stats::default(),
            draining: tokio::sync::watch::channel(false).0,
        })
    }
}

/// Bound listeners, ready to serve.
pub struct Server {
    relay: Arc<Relay>,
    listeners: Vec<(Listener, TcpListener)>,
}

impl Server {
    /// Binds every configured listener.
    pub async fn bind(relay: Arc<Relay>) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for l in &relay.config.listeners {
            let socket = TcpListener::bind(l.address).await?;
            listeners.push((l.clone(), socket));
        }
        Ok(Server { relay, listeners })
    }

    /// The shared state.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The bound addresses, in configuration order (tests bind port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, s)| s.local_addr().ok())
            .collect()
    }

    /// Accepts connections until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(self.relay.config.limits.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, socket) in self.listeners {
            if let Ok(addr) = socket.local_addr() {
                let protocol = match listener.protocol {
                    Protocol::Smtp => "SMTP submission",
                    Protocol::Imap => "IMAP",
                };
                let tls = match listener.tls {
                    ListenerTls::Implicit => "implicit TLS",
                    ListenerTls::Starttls => "STARTTLS",
                };
                tracing::info!("listening on {addr} ({protocol}, {tls})");
            }
            tasks.spawn(accept_loop(
                self.relay.clone(),
                listener,
                socket,
                permits.clone(),
            ));
        }
        if let Some(interval) = self.relay.config.stats_interval {
            let relay = self.relay.clone();
            tasks.spawn(async move { relay.stats.report_every(interval).await });
        }
        shutdown.await;
        // Counts since the last report are dropped, not logged: a partial
        // interval could be short enough to follow one person.
        tasks.abort_all();
        // Stop accepting (above), tell idle sessions to go, and give busy
        // ones the grace period to finish their message or command.
        self.relay.draining.send_replace(true);
        let max = self.relay.config.limits.max_connections;
        let grace = self.relay.config.limits.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        if permits.available_permits() < max {
            tracing::info!(
                "shutting down: {} sessions to finish, up to {} s",
                max - permits.available_permits(),
                grace.as_secs()
            );
        }
        while permits.available_permits() < max && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// How many over-the-cap connections may be told "too many connections" at
/// once; past that they are closed without a word (a flood must not buy
/// itself TLS handshakes).
const MAX_BUSY_REFUSALS: usize = 64;

async fn accept_loop(
    relay: Arc<Relay>,
    listener: Listener,
    socket: TcpListener,
    permits: Arc<Semaphore>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_BUSY_REFUSALS));
    loop {
        let stream = match socket.accept().await {
            // The peer address is dropped here, unread.
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("accept failed: {:?}", e.kind());
                // Out of file descriptors and the like: don't spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if stream.set_nodelay(true).is_err() {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            relay.stats.count(Counter::RefusedBusy);
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                let relay = relay.clone();
                let listener = listener.clone();
                tokio::spawn(async move {
                    refuse_busy(&relay, &listener, stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let relay = relay.clone();
        relay.stats.count(match listener.protocol {
            Protocol::Smtp => Counter::SmtpSession,
            Protocol::Imap => Counter::ImapSession,
        });
        tokio::spawn(async move {
            match listener.protocol {
                Protocol::Smtp => {
                    crate::smtp::serve(&relay, stream, listener.tls == ListenerTls::Implicit).await
                }
                Protocol::Imap => {
                    crate::imap::serve(&relay, stream, listener.tls == ListenerTls::Implicit).await
                }
            }
            drop(permit);
        });
    }
}

/// Tells a client over the connection cap to come back later, in its
/// protocol (after the TLS handshake on implicit-TLS listeners), and closes.
async fn refuse_busy(relay: &Relay, listener: &Listener, stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let implicit = listener.tls == ListenerTls::Implicit;
    let Some(mut io) = crate::stream::accept(relay, stream, implicit).await else {
        return;
    };
    let refusal: &[u8] = match listener.protocol {
        Protocol::Smtp => b"421 4.7.0 Too many connections to the relay, try again later\r\n",
        Protocol::Imap => {
            b"* BYE [UNAVAILABLE] Too many connections to the relay, try again later\r\n"
        }
    };
    let _ = tokio::time::timeout(relay.config.limits.tls_handshake_timeout, async {
        io.write_all(refusal).await?;
        io.shutdown().await
    })
    .await;
}
