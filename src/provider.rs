//! The provider side of a session, shared by both protocols: a connection
//! opened through [`Egress`] to the first of the upstream's endpoints that
//! can be reached, and secured with TLS — implicit, or STARTTLS that must be
//! offered and must succeed, never plain text — with the certificate checked
//! against the endpoint's name or the upstream's pins. [`smtp`] and [`imap`]
//! speak each protocol over it.
//!
//! The next endpoint is tried only when a connection could not be made
//! (refused, unreachable, timed out). Once one is made, whatever happens on
//! it — a certificate that fails, no STARTTLS, a refusal — is the answer:
//! trying another endpoint then could turn an attack on the first into a
//! downgrade. All attempts share one connect budget.
//!
//! Reply texts from the provider stay inside values handed back to the
//! session, for the client; errors here carry no text, host or address, and
//! nothing here logs.

pub(crate) mod imap;
pub(crate) mod smtp;

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Endpoint, UpstreamTls};
use crate::egress::{BoxedStream, Egress, EgressError, IsolationKey};
use crate::tls::TlsFailure;

/// Why the upstream could not be used. No reply text, host or address inside.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// Egress failed.
    #[error("egress: {0}")]
    Egress(#[from] EgressError),
    /// The TLS handshake failed (certificate, protocol, name, pin).
    #[error("TLS handshake with upstream failed: {}", .0.describe())]
    Tls(TlsFailure),
    /// STARTTLS was required but not offered or refused.
    #[error("upstream offered no usable STARTTLS")]
    NoStartTls,
    /// The greeting or EHLO was not positive.
    #[error("upstream refused the session (code {0})")]
    Refused(u16),
    /// The connection broke, timed out or spoke garbage.
    #[error("upstream connection lost")]
    Lost,
}

/// A provider connection once TLS is up.
pub(crate) type ProviderStream = TlsStream<BoxedStream>;

/// Where and how to reach one provider for one session.
pub(crate) struct Target<'a> {
    /// Its endpoints for the protocol, tried in order; at least one.
    pub(crate) endpoints: &'a [Endpoint],
    /// Its TLS client configuration (its CA or the public roots).
    pub(crate) tls: Arc<ClientConfig>,
    /// The way out.
    pub(crate) egress: &'a Egress,
    /// Whose connection this is, for circuit isolation.
    pub(crate) isolation: &'a IsolationKey,
    /// Time allowed for the connection, the handshake and each reply.
    pub(crate) timeout: Duration,
}

impl<'a> Target<'a> {
    /// Opens a connection through egress to the first endpoint that can be
    /// reached, and says which one it is. For a STARTTLS endpoint the
    /// protocol runs its plain-text exchange (greeting, STARTTLS) on it
    /// before [`Target::secure`].
    ///
    /// The attempts share one budget (`upstream_timeout`, or through Tor or
    /// a proxy `proxied_connect_timeout` if longer): each gets an equal
    /// share of what is left, so a first endpoint whose packets are dropped
    /// leaves time for the next.
    pub(crate) async fn open(&self) -> Result<(BoxedStream, &'a Endpoint), UpstreamError> {
        let Some(first) = self.endpoints.first() else {
            return Err(UpstreamError::Egress(EgressError::Unavailable));
        };
        let budget = self.egress.connect_budget(first.egress, self.timeout);
        let deadline = tokio::time::Instant::now() + budget;
        let mut last = EgressError::Timeout;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / u32::try_from(self.endpoints.len() - i).unwrap_or(1);
            match self.egress.connect(endpoint, self.isolation, share).await {
                Ok(stream) => return Ok((stream, endpoint)),
                Err(e) if e.may_try_next() => last = e,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }

    /// The TLS handshake with `endpoint`, checking the certificate against
    /// its name (`tls_server_name`, or its host) or the upstream's pins.
    pub(crate) async fn secure(
        &self,
        endpoint: &Endpoint,
        stream: BoxedStream,
    ) -> Result<ProviderStream, UpstreamError> {
        let name = ServerName::try_from(endpoint.bare_server_name().to_string())
            .map_err(|_| UpstreamError::Tls(TlsFailure::Handshake))?;
        let connector = TlsConnector::from(self.tls.clone());
        tokio::time::timeout(self.timeout, connector.connect(name, stream))
            .await
            .map_err(|_| UpstreamError::Tls(TlsFailure::Handshake))?
            .map_err(|e| UpstreamError::Tls(TlsFailure::of(&e)))
    }
}

/// True when `endpoint` speaks TLS from the first byte.
pub(crate) fn implicit_tls(endpoint: &Endpoint) -> bool {
    endpoint.tls == UpstreamTls::Implicit
}
