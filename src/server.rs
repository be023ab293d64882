//! Listening sockets: bind, accept, hand each connection to its protocol
//! session, cap concurrent connections, stop on shutdown.
//!
//! A peer address is read once, at accept, to be hashed into its prefix
//! tag for admission (`crate::admission`), and dropped at once: nothing
//! downstream receives it, and no table holds it. The only log lines
//! are about the relay itself (which sockets it listens on, accept errors by
//! kind).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admission::Refused;
use crate::config::{ListenAddress, Listener, ListenerTls, Protocol, Serves};
use crate::proxy_protocol::Source;

/// A listener and its index in the configuration (its face's index).
pub(crate) type Indexed = Arc<(usize, Listener)>;
use crate::relay::Relay;
use crate::stats::Counter;

/// Bound listeners, ready to serve.
pub struct Server {
    relay: Arc<Relay>,
    /// Each socket listener with its index in the configuration.
    listeners: Vec<(usize, Listener, TcpListener)>,
    /// The onion service's listeners, with their indexes.
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    onion: Vec<Indexed>,
}

impl Server {
    /// Binds every configured listener.
    pub async fn bind(relay: Arc<Relay>) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        let mut onion = Vec::new();
        for (index, l) in relay.config.listeners.iter().enumerate() {
            match l.address {
                ListenAddress::Socket(address) => {
                    let socket = TcpListener::bind(address).await?;
                    listeners.push((index, l.clone(), socket));
                }
                ListenAddress::Onion(_) => onion.push(Arc::new((index, l.clone()))),
            }
        }
        Ok(Server {
            relay,
            listeners,
            onion,
        })
    }

    /// The shared state.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The bound socket addresses, in configuration order (tests bind port
    /// 0); onion listeners have none.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, _, s)| s.local_addr().ok())
            .collect()
    }

    /// Accepts connections until `shutdown` completes. An error when the
    /// relay had to stop by itself: its onion service could not be run as
    /// configured (it stops rather than run without it).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let permits = Arc::new(Semaphore::new(self.relay.config.limits.max_connections));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, listener, socket) in self.listeners {
            if let Ok(addr) = socket.local_addr() {
                let protocol = match listener.serves {
                    Serves::One(Protocol::Smtp) => "SMTP submission",
                    Serves::One(Protocol::Imap) => "IMAP",
                    Serves::ByAlpn { .. } => "IMAP and SMTP submission by ALPN",
                };
                let tls = match listener.tls {
                    ListenerTls::Implicit => "implicit TLS",
                    ListenerTls::Starttls => "STARTTLS",
                };
                tracing::info!("listening on {addr} ({protocol}, {tls})");
            }
            tasks.spawn(accept_loop(
                self.relay.clone(),
                Arc::new((index, listener)),
                socket,
                permits.clone(),
            ));
        }
        let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
        #[cfg(feature = "tor")]
        if !self.onion.is_empty() {
            let served =
                crate::onion::serve(self.relay.clone(), self.onion.clone(), permits.clone());
            tasks.spawn(async move {
                if let Err(e) = served.await {
                    let _ = fatal_tx.send(e);
                }
            });
        }
        #[cfg(not(feature = "tor"))]
        drop(fatal_tx);
        if let Some(interval) = self.relay.config.stats_interval {
            let relay = self.relay.clone();
            tasks.spawn(async move { relay.stats.report_every(interval).await });
        }
        let relay = self.relay.clone();
        tasks.spawn(async move { relay.admission.prune_every(PRUNE_INTERVAL).await });
        tasks.spawn(crate::logging::report_held_back_every(
            std::time::Duration::from_secs(60),
        ));
        let fatal = tokio::select! {
            () = shutdown => None,
            Ok(why) = fatal_rx => Some(why),
        };
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
        fatal.map_or(Ok(()), Err)
    }
}

/// How often admission tables drop keys that no longer limit anything.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a connection arriving at the cap waits for the place of the
/// unauthenticated session evicted for it.
const EVICTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How many over-the-cap connections may be told "too many connections" at
/// once; past that they are closed without a word (a flood must not buy
/// itself TLS handshakes).
const MAX_BUSY_REFUSALS: usize = 64;

async fn accept_loop(
    relay: Arc<Relay>,
    listener: Indexed,
    socket: TcpListener,
    permits: Arc<Semaphore>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_BUSY_REFUSALS));
    // One descriptor held back for the moment the process runs out.
    let mut reserve = reserve_descriptor();
    loop {
        // The address is hashed into a prefix tag here (or, behind a load
        // balancer, the one its PROXY header gives) and goes no further.
        let (stream, ip) = match socket.accept().await {
            Ok((stream, addr)) => (stream, addr.ip()),
            Err(e) => {
                // Counted, not logged: a flood must not write a line per
                // connection.
                relay.stats.count(Counter::AcceptFailed);
                if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
                    // Out of descriptors: make room the way the cap does
                    // (the oldest session not logged in goes), and use the
                    // reserve one to take the waiting connection off the
                    // queue and close it, instead of leaving it to hang.
                    if relay.admission.evict_oldest_preauth() {
                        relay.stats.count(Counter::Evicted);
                    }
                    drop(reserve.take());
                    let next = socket.accept();
                    if let Ok(Ok((stream, _))) =
                        tokio::time::timeout(std::time::Duration::from_millis(10), next).await
                    {
                        drop(stream);
                    }
                    reserve = reserve_descriptor();
                }
                // Don't spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if stream.set_nodelay(true).is_err() {
            continue;
        }
        let Some(trusted) = &listener.1.proxy_from else {
            admit(&relay, &listener, stream, ip, &permits, &refusals);
            continue;
        };
        // Behind a load balancer: only it may connect, and it must say who
        // the client is before anything else.
        if !trusted.iter().any(|n| n.contains(ip)) {
            relay.stats.count(Counter::ProxyRefused);
            continue;
        }
        let (relay, listener, permits, refusals) = (
            relay.clone(),
            listener.clone(),
            permits.clone(),
            refusals.clone(),
        );
        tokio::spawn(async move {
            let mut stream = stream;
            let limit = relay.config.limits.tls_handshake_timeout;
            let header =
                tokio::time::timeout(limit, crate::proxy_protocol::read_header(&mut stream)).await;
            match header {
                Ok(Ok(Source::Client(client))) => {
                    admit(&relay, &listener, stream, client, &permits, &refusals)
                }
                Ok(Ok(Source::Local)) => admit(&relay, &listener, stream, ip, &permits, &refusals),
                _ => relay.stats.count(Counter::ProxyRefused),
            }
        });
    }
}

/// Admits a connection from `ip` (its prefix's limits), takes its place
/// under the global cap and starts its session; or says why not.
fn admit(
    relay: &Arc<Relay>,
    listener: &Indexed,
    stream: tokio::net::TcpStream,
    ip: std::net::IpAddr,
    permits: &Arc<Semaphore>,
    refusals: &Arc<Semaphore>,
) {
    let peer = match relay.admission.admit(ip) {
        Ok(peer) => peer,
        Err(why) => {
            relay.stats.count(match why {
                Refused::Rate => Counter::RefusedRate,
                Refused::Concurrency => Counter::RefusedPrefixBusy,
            });
            // A few refusals a minute per network are explained; past
            // those the connection is closed before any TLS handshake,
            // so a flood costs the relay an accept and a hash each.
            if relay.admission.explain_refusal(ip) {
                refuse(relay, listener, refusals, stream, why.into());
            }
            return;
        }
    };
    let permit = match permits.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) if relay.admission.evict_oldest_preauth() => {
            // At the cap: the oldest session still not logged in was
            // told to go; this one takes its place once it has.
            relay.stats.count(Counter::Evicted);
            let relay = relay.clone();
            let listener = listener.clone();
            let permits = permits.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let waited = tokio::time::timeout(EVICTION_WAIT, permits.acquire_owned()).await;
                match waited {
                    Ok(Ok(permit)) => serve(relay, listener, stream, peer, permit).await,
                    _ => {
                        relay.stats.count(Counter::RefusedBusy);
                        refuse(&relay, &listener, &refusals, stream, Busy::Cap);
                    }
                }
            });
            return;
        }
        Err(_) => {
            relay.stats.count(Counter::RefusedBusy);
            refuse(relay, listener, refusals, stream, Busy::Cap);
            return;
        }
    };
    tokio::spawn(serve(relay.clone(), listener.clone(), stream, peer, permit));
}

/// `EMFILE` and `ENFILE`: out of descriptors, per process and system-wide.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A descriptor to give up when none is left (read-only `/dev/null`; the
/// relay writes no file).
fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Serves one admitted connection (TCP, or a stream of the onion service)
/// on `listener` until it ends, holding its place under the global cap.
pub(crate) async fn serve<S>(
    relay: Arc<Relay>,
    listener: Indexed,
    stream: S,
    peer: crate::admission::Peer,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (index, listener) = &*listener;
    let face = &relay.faces[*index];
    let implicit = listener.tls == ListenerTls::Implicit;
    let started = tokio::time::Instant::now();
    // Boxed, like the session below: the handshake's future is large and
    // is needed only until the session starts; inline, every idle session
    // task would keep room for it.
    let Some(io) = Box::pin(crate::stream::accept_admitted(
        &relay, face, stream, implicit, &peer,
    ))
    .await
    else {
        return;
    };
    let protocol = listener.serves.protocol(io.alpn());
    relay.stats.count(session_counter(protocol));
    // Boxed: a session's future is large, and deeply nested; each lives on
    // the heap once instead of inside every future that holds it.
    match protocol {
        Protocol::Smtp => {
            Box::pin(crate::smtp::serve_client(
                &relay, face, io, implicit, peer, started,
            ))
            .await
        }
        Protocol::Imap => {
            Box::pin(crate::imap::serve_client(
                &relay, face, io, implicit, peer, started,
            ))
            .await
        }
    }
    drop(permit);
}

fn session_counter(protocol: Protocol) -> Counter {
    match protocol {
        Protocol::Smtp => Counter::SmtpSession,
        Protocol::Imap => Counter::ImapSession,
    }
}

/// Why a connection is turned away before its session starts.
#[derive(Debug, Clone, Copy)]
enum Busy {
    /// The relay is at its global connection cap.
    Cap,
    /// Too many new connections from the prefix lately.
    Rate,
    /// Too many open connections from the prefix.
    Prefix,
}

impl From<Refused> for Busy {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Rate => Busy::Rate,
            Refused::Concurrency => Busy::Prefix,
        }
    }
}

/// Says why, in the connection's protocol, unless too many refusals are
/// already in flight (then the connection is just closed).
fn refuse(
    relay: &Arc<Relay>,
    listener: &Indexed,
    refusals: &Arc<Semaphore>,
    stream: tokio::net::TcpStream,
    why: Busy,
) {
    if let Ok(refusal) = refusals.clone().try_acquire_owned() {
        let relay = relay.clone();
        let listener = listener.clone();
        tokio::spawn(async move {
            refuse_busy(&relay, &listener, stream, why).await;
            drop(refusal);
        });
    }
}

/// Tells a client over the connection cap to come back later, in its
/// protocol (after the TLS handshake on implicit-TLS listeners), and closes.
async fn refuse_busy(relay: &Relay, listener: &Indexed, stream: tokio::net::TcpStream, why: Busy) {
    use tokio::io::AsyncWriteExt;
    let (index, listener) = &**listener;
    let implicit = listener.tls == ListenerTls::Implicit;
    let Some(mut io) = crate::stream::accept(relay, &relay.faces[*index], stream, implicit).await
    else {
        return;
    };
    let protocol = listener.serves.protocol(io.alpn());
    let reason = match why {
        Busy::Cap => "Too many connections to the relay",
        Busy::Rate => "Too many new connections from your network",
        Busy::Prefix => "Too many open connections from your network",
    };
    let refusal = match protocol {
        Protocol::Smtp => format!("421 4.7.0 {reason}, try again later\r\n"),
        Protocol::Imap => format!("* BYE [UNAVAILABLE] {reason}, try again later\r\n"),
    };
    let _ = tokio::time::timeout(relay.config.limits.tls_handshake_timeout, async {
        io.write_all(refusal.as_bytes()).await?;
        io.shutdown().await
    })
    .await;
}
