//! Egress: how the relay opens a byte stream to a provider.
//!
//! Every connection to an upstream goes through [`Egress::connect`], which
//! takes the endpoint (host name or IP literal, port, and the mode configured
//! for it) and an [`IsolationKey`]. Three modes:
//!
//! - `direct`: TCP from the relay's own address. The only mode that resolves a
//!   name locally.
//! - `socks5`: an external proxy (a Tor daemon's SocksPort, say). The host
//!   name goes to the proxy as a name (RFC 1928 ATYP 3), never resolved here;
//!   each isolation key becomes distinct username/password credentials, which
//!   Tor's `IsolateSOCKSAuth` (on by default) turns into distinct circuits.
//! - `tor`: the embedded Tor client ([`tor`]), with one isolation group per key.
//!
//! A proxied mode that is down gives an error; nothing here ever falls back to
//! another mode. TLS is layered on top by `upstream`, never here.

#[cfg(feature = "tor")]
pub(crate) mod tor;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{EgressConfig, EgressMode, Endpoint, Isolate, Upstream};
use crate::keys::{Purpose, keyed_hash};
use crate::privacy::{Login, normalized};

/// Identifies an account to the egress layer without naming it: a keyed
/// hash of the login under the isolation subkey. Equal for one account's
/// sessions within a process, unrelated across accounts and restarts.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct IsolationKey([u8; 16]);

impl std::fmt::Debug for IsolationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IsolationKey([scrubbed])")
    }
}

impl IsolationKey {
    /// The key for a login (case-insensitive).
    pub(crate) fn for_login(login: &Login) -> Self {
        IsolationKey(keyed_hash(
            Purpose::Isolation,
            &[normalized(login).as_bytes()],
        ))
    }

    /// The key for a new client session: per account, or a fresh random
    /// one when every session is to be kept apart.
    pub(crate) fn for_session(isolate: Isolate, login: &Login) -> Self {
        match isolate {
            Isolate::Account => Self::for_login(login),
            Isolate::Session => Self::random(),
        }
    }

    /// A key shared with nothing else.
    pub(crate) fn random() -> Self {
        let mut out = [0u8; 16];
        // As for the process key: no randomness means no TLS either.
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
            .unwrap_or_else(|_| std::process::abort());
        IsolationKey(out)
    }

    /// The raw 16 bytes (for proxies that take isolation as credentials).
    pub(crate) fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A bidirectional byte stream to an upstream, whatever carries it.
pub(crate) trait EgressStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> EgressStream for T {}

/// A boxed [`EgressStream`].
pub(crate) type BoxedStream = Box<dyn EgressStream>;

/// Why an upstream could not be reached. No host names or addresses inside:
/// which provider a user talks to is itself identifying.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EgressError {
    /// The connection attempt failed (refused, unreachable, name not found).
    #[error("connection failed: {0}")]
    Connect(std::io::ErrorKind),
    /// The connection attempt took longer than allowed.
    #[error("connection timed out")]
    Timeout,
    /// The SOCKS5 proxy could not be reached or refused the request.
    #[error("SOCKS5 proxy: {0}")]
    Proxy(&'static str),
    /// The proxy or Tor could not reach the provider's endpoint (refused,
    /// unreachable, no exit for that port, timed out): another endpoint
    /// may do better.
    #[error("{0}")]
    TargetUnreachable(&'static str),
    /// The embedded Tor client has not finished bootstrapping.
    #[error("Tor is not ready yet")]
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    TorNotReady,
    /// The embedded Tor client could not open the stream.
    #[error("Tor: {0}")]
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    Tor(&'static str),
    /// The endpoint's mode has no connector (a configuration the checks
    /// should have refused).
    #[error("egress mode not available")]
    Unavailable,
}

impl EgressError {
    /// True when the connection could not be made to this endpoint — refused,
    /// unreachable, timed out — so that the upstream's next endpoint may be
    /// tried. Not when the way out itself failed (the proxy, Tor not ready):
    /// the next endpoint would go the same way.
    pub(crate) fn may_try_next(&self) -> bool {
        matches!(
            self,
            EgressError::Connect(_) | EgressError::Timeout | EgressError::TargetUnreachable(_)
        )
    }
}

/// Why egress could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum EgressSetupError {
    /// The embedded Tor client could not be created.
    #[error("embedded Tor: {0}")]
    Tor(String),
}

/// The configured ways out.
pub(crate) struct Egress {
    socks5: Option<SocketAddr>,
    proxied_connect_timeout: Duration,
    #[cfg(feature = "tor")]
    tor: Option<tor::TorEgress>,
}

impl Egress {
    /// The embedded Tor client's runtime directory, when Tor is in use: the
    /// one place where files are written while the relay runs.
    pub(crate) fn tor_runtime_dir(&self) -> Option<&std::path::Path> {
        #[cfg(feature = "tor")]
        if let Some(tor) = &self.tor {
            return Some(tor.runtime_dir());
        }
        None
    }
}

impl Egress {
    /// Sets up the connectors the configuration uses. With Tor, this creates
    /// the client and starts bootstrapping in the background; it must run
    /// inside the tokio runtime.
    /// The embedded Tor client also runs for the relay's own onion
    /// service (`onion`), even when no upstream is reached through Tor.
    pub(crate) fn new(
        config: &EgressConfig,
        upstreams: &[Upstream],
        onion: Option<&crate::config::OnionConfig>,
    ) -> Result<Self, EgressSetupError> {
        #[cfg(feature = "tor")]
        let tor = if config.uses(upstreams, EgressMode::Tor) || onion.is_some() {
            Some(tor::TorEgress::start(config, onion)?)
        } else {
            None
        };
        #[cfg(not(feature = "tor"))]
        if onion.is_some() {
            return Err(EgressSetupError::Tor(
                "an onion service needs mailveil built with the tor feature".into(),
            ));
        }
        #[cfg(not(feature = "tor"))]
        let _ = upstreams;
        Ok(Egress {
            socks5: config.socks5,
            proxied_connect_timeout: config.proxied_connect_timeout,
            #[cfg(feature = "tor")]
            tor,
        })
    }

    /// True while the embedded Tor client runs and is still bootstrapping
    /// (a session through it would be told to try again).
    pub(crate) fn tor_starting(&self) -> bool {
        #[cfg(feature = "tor")]
        if let Some(tor) = &self.tor {
            return !tor.is_ready();
        }
        false
    }

    /// The embedded Tor client, when one runs.
    #[cfg(feature = "tor")]
    pub(crate) fn tor(&self) -> Option<&tor::TorEgress> {
        self.tor.as_ref()
    }

    /// Time allowed to open connections in `mode`, for all of an upstream's
    /// endpoints together: `timeout`, or through Tor or a proxy the longer
    /// of `timeout` and `egress.proxied_connect_timeout_secs`.
    pub(crate) fn connect_budget(&self, mode: EgressMode, timeout: Duration) -> Duration {
        match mode {
            EgressMode::Direct => timeout,
            EgressMode::Socks5 | EgressMode::Tor => timeout.max(self.proxied_connect_timeout),
        }
    }

    /// Opens a stream to `endpoint` for the account (or session) behind
    /// `isolation`, the way its configuration says, within `timeout`.
    pub(crate) async fn connect(
        &self,
        endpoint: &Endpoint,
        isolation: &IsolationKey,
        timeout: Duration,
    ) -> Result<BoxedStream, EgressError> {
        let host = endpoint.bare_host();
        match endpoint.egress {
            EgressMode::Direct => connect_direct(host, endpoint.port, timeout).await,
            EgressMode::Socks5 => {
                let proxy = self.socks5.ok_or(EgressError::Unavailable)?;
                connect_socks5(proxy, host, endpoint.port, isolation, timeout).await
            }
            #[cfg(feature = "tor")]
            EgressMode::Tor => match &self.tor {
                Some(tor) => tor.connect(host, endpoint.port, isolation, timeout).await,
                None => Err(EgressError::Unavailable),
            },
            #[cfg(not(feature = "tor"))]
            EgressMode::Tor => Err(EgressError::Unavailable),
        }
    }
}

/// Direct TCP. Isolation has nothing to separate here: every account leaves
/// from the relay's own address, which is what `direct` means.
async fn connect_direct(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<BoxedStream, EgressError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| EgressError::Timeout)?
        .map_err(|e| EgressError::Connect(e.kind()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| EgressError::Connect(e.kind()))?;
    Ok(Box::new(stream))
}

/// The SOCKS5 username and password for an isolation key: the key in hex,
/// so that two accounts never share credentials (nor, behind Tor, circuits).
pub(crate) fn socks5_credentials(isolation: &IsolationKey) -> (String, String) {
    let hex: String = isolation
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex.clone(), hex)
}

/// Through a SOCKS5 proxy. The proxy is an IP address (checked in the
/// configuration); the target host goes to it unresolved.
async fn connect_socks5(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    isolation: &IsolationKey,
    timeout: Duration,
) -> Result<BoxedStream, EgressError> {
    use tokio_socks::TargetAddr;
    use tokio_socks::tcp::Socks5Stream;

    // An IP literal is sent as an address; anything else as a name. Never a
    // lookup here: tokio-socks only resolves the *proxy* address, which is
    // already an IP.
    let target: TargetAddr<'_> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
        Err(_) => TargetAddr::Domain(host.into(), port),
    };
    let (user, pass) = socks5_credentials(isolation);
    let connect = async {
        let tcp = TcpStream::connect(proxy)
            .await
            .map_err(|_| EgressError::Proxy("proxy unreachable"))?;
        tcp.set_nodelay(true)
            .map_err(|e| EgressError::Connect(e.kind()))?;
        Socks5Stream::connect_with_password_and_socket(tcp, target, &user, &pass)
            .await
            .map_err(|e| socks5_error(&e))
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| EgressError::Timeout)??;
    Ok(Box::new(stream))
}

/// A SOCKS failure, with a fixed description (the library's messages are
/// fixed too, but this keeps anything dynamic out of errors by
/// construction).
///
/// Any reply to the CONNECT request is about this endpoint: a Tor daemon
/// answers "general failure" when no exit allows the port, "not allowed by
/// ruleset" for an exit policy, and its extended codes (which the library
/// reports as unknown) for onion services. Another endpoint, through the
/// same proxy, may do better. The proxy unreachable, broken or refusing our
/// credentials is not about the endpoint.
fn socks5_error(e: &tokio_socks::Error) -> EgressError {
    use tokio_socks::Error as E;
    let unreachable = EgressError::TargetUnreachable;
    match e {
        E::HostUnreachable | E::NetworkUnreachable => {
            unreachable("the proxy could not reach the provider")
        }
        E::ConnectionRefused => unreachable("the provider refused the connection"),
        E::TtlExpired => unreachable("the proxy timed out reaching the provider"),
        E::GeneralSocksServerFailure => {
            unreachable("the proxy failed to connect (no exit for this port?)")
        }
        E::ConnectionNotAllowedByRuleset => unreachable("the proxy's rules refused the connection"),
        E::UnknownAuthMethod | E::UnknownError => unreachable("the proxy refused the request"),
        E::NoAcceptableAuthMethods | E::PasswordAuthFailure(_) | E::AuthorizationRequired => {
            EgressError::Proxy("the proxy refused the credentials")
        }
        E::Io(_) | E::ProxyServerUnreachable => {
            EgressError::Proxy("connection to the proxy failed")
        }
        _ => EgressError::Proxy("the proxy does not speak SOCKS5 as expected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_about_the_endpoint_lets_the_next_be_tried_and_the_proxy_failing_does_not() {
        use tokio_socks::Error as E;
        for (e, next) in [
            (E::HostUnreachable, true),
            (E::NetworkUnreachable, true),
            (E::ConnectionRefused, true),
            (E::TtlExpired, true),
            // Tor's answer when no exit allows the port.
            (E::GeneralSocksServerFailure, true),
            (E::ConnectionNotAllowedByRuleset, true),
            // Tor's extended codes (onion services), unknown to the library.
            (E::UnknownAuthMethod, true),
            (E::Io(std::io::ErrorKind::ConnectionRefused.into()), false),
            (E::ProxyServerUnreachable, false),
            (E::PasswordAuthFailure(1), false),
            (E::NoAcceptableAuthMethods, false),
            (E::InvalidResponseVersion, false),
        ] {
            assert_eq!(socks5_error(&e).may_try_next(), next, "{e:?}");
        }
        assert!(EgressError::Connect(std::io::ErrorKind::ConnectionRefused).may_try_next());
        assert!(EgressError::Timeout.may_try_next());
        for e in [
            EgressError::TorNotReady,
            EgressError::Tor("stream failed"),
            EgressError::Unavailable,
        ] {
            assert!(!e.may_try_next(), "{e:?}");
        }
    }

    #[test]
    fn isolation_key_is_per_account_and_case_insensitive() {
        let login =
            |s: &str| crate::privacy::Sensitive::new(zeroize::Zeroizing::new(s.to_string()));
        let a1 = IsolationKey::for_login(&login("Alice@Example.test"));
        let a2 = IsolationKey::for_login(&login("alice@example.test"));
        let b = IsolationKey::for_login(&login("bob@example.test"));
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_eq!(format!("{a1:?}"), "IsolationKey([scrubbed])");
    }
}
