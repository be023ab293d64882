//! Egress: how the relay opens a byte stream to a provider.
//!
//! Every connection to an upstream goes through [`Egress::connect`], which
//! takes a host name (or IP literal), a port and an [`IsolationKey`]. Only the
//! `direct` mode exists today, and it is the only mode allowed to resolve a
//! name locally; the proxied modes that come next (SOCKS5, embedded Tor) must
//! hand the name to the proxy instead and must never fall back to `direct`.
//! TLS is layered on top by `upstream`, never here.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::auth::IsolationKey;
use crate::config::EgressMode;

/// A bidirectional byte stream to an upstream, whatever carries it.
pub trait EgressStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> EgressStream for T {}

/// A boxed [`EgressStream`].
pub type BoxedStream = Box<dyn EgressStream>;

/// Why an upstream could not be reached. No host names or addresses inside:
/// which provider a user talks to is itself identifying.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The connection attempt failed (refused, unreachable, name not found).
    #[error("connection failed: {0}")]
    Connect(std::io::ErrorKind),
    /// The connection attempt took longer than allowed.
    #[error("connection timed out")]
    Timeout,
}

/// The configured way out.
#[derive(Debug, Clone)]
pub enum Egress {
    /// TCP from the relay's own address.
    Direct,
}

impl Egress {
    /// The connector for a configured mode.
    pub fn from_mode(mode: EgressMode) -> Self {
        match mode {
            EgressMode::Direct => Egress::Direct,
        }
    }

    /// Opens a stream to `host:port` for the account behind `isolation`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        isolation: &IsolationKey,
        timeout: Duration,
    ) -> Result<BoxedStream, EgressError> {
        match self {
            Egress::Direct => connect_direct(host, port, isolation, timeout).await,
        }
    }
}

/// Direct TCP. Isolation has nothing to separate here: every account leaves
/// from the relay's own address, which is what `direct` means.
async fn connect_direct(
    host: &str,
    port: u16,
    _isolation: &IsolationKey,
    timeout: Duration,
) -> Result<BoxedStream, EgressError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| EgressError::Timeout)?
        .map_err(|e| EgressError::Connect(e.kind()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| EgressError::Connect(e.kind()))?;
    Ok(Box::new(stream))
}
