//! The provider side of a session, shared by both protocols: a connection
//! opened through [`Egress`] with the certificate name the provider must
//! present, and [`UpstreamError`]. [`smtp`] and [`imap`] speak each protocol
//! over it. Reply texts stay inside values handed back to the session;
//! nothing here logs them.

pub mod imap;
pub mod smtp;

use std::time::Duration;

use rustls_pki_types::ServerName;

use crate::config::Endpoint;
use crate::egress::{BoxedStream, Egress, EgressError, IsolationKey};

/// Why the upstream could not be used. No reply text, host or address inside.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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

/// Connects to `endpoint` through the egress and names the certificate the
/// provider must present (`tls_server_name`: its host name, or its IP address).
pub(crate) async fn open(
    endpoint: &Endpoint,
    egress: &Egress,
    isolation: &IsolationKey,
    timeout: Duration,
) -> Result<(BoxedStream, ServerName<'static>), UpstreamError> {
    let name = ServerName::try_from(
        endpoint
            .tls_server_name
            .expose()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|_| UpstreamError::Tls)?;
    let stream = egress.connect(endpoint, isolation, timeout).await?;
    Ok((stream, name))
}
