//! The provider side of a session, shared by both protocols: a connection
//! opened through [`Egress`] and secured with TLS — implicit, or STARTTLS
//! that must be offered and must succeed, never plain text — with the
//! certificate checked against the endpoint's name. [`smtp`] and [`imap`]
//! speak each protocol over it.
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

/// Why the upstream could not be used. No reply text, host or address inside.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// Egress failed.
    #[error("egress: {0}")]
    Egress(#[from] EgressError),
    /// The TLS handshake failed (certificate, protocol, name).
    #[error("TLS handshake with upstream failed")]
    Tls,
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

/// Where and how to reach one provider endpoint for one session.
pub(crate) struct Target<'a> {
    /// The endpoint.
    pub(crate) endpoint: &'a Endpoint,
    /// Its TLS client configuration (its CA or the public roots).
    pub(crate) tls: Arc<ClientConfig>,
    /// The way out.
    pub(crate) egress: &'a Egress,
    /// Whose connection this is, for circuit isolation.
    pub(crate) isolation: &'a IsolationKey,
    /// Time allowed for the connection, the handshake and each reply.
    pub(crate) timeout: Duration,
}

impl Target<'_> {
    /// Opens the connection through egress. For a STARTTLS endpoint the
    /// protocol runs its plain-text exchange (greeting, STARTTLS) on it
    /// before [`Target::secure`].
    pub(crate) async fn open(&self) -> Result<BoxedStream, UpstreamError> {
        Ok(self
            .egress
            .connect(self.endpoint, self.isolation, self.timeout)
            .await?)
    }

    /// True when the endpoint speaks TLS from the first byte.
    pub(crate) fn implicit_tls(&self) -> bool {
        self.endpoint.tls == UpstreamTls::Implicit
    }

    /// The TLS handshake, checking the certificate against the endpoint's
    /// name (`tls_server_name`, or its host).
    pub(crate) async fn secure(
        &self,
        stream: BoxedStream,
    ) -> Result<ProviderStream, UpstreamError> {
        let name = ServerName::try_from(self.endpoint.bare_server_name().to_string())
            .map_err(|_| UpstreamError::Tls)?;
        let connector = TlsConnector::from(self.tls.clone());
        tokio::time::timeout(self.timeout, connector.connect(name, stream))
            .await
            .map_err(|_| UpstreamError::Tls)?
            .map_err(|_| UpstreamError::Tls)
    }
}
