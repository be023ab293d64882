//! The SMTP side of a provider: a connection opened through [`Egress`],
//! wrapped in TLS (implicit, or STARTTLS that must be offered and must
//! succeed — never plaintext), greeted with one fixed neutral EHLO name, and
//! then driven one command at a time with mail-send's `SmtpClient` over that
//! stream. Reply texts stay inside [`smtp_proto::Response`] values handed
//! back to the session; nothing here logs them.

use std::sync::Arc;
use std::time::Duration;

use mail_send::SmtpClient;
use rustls::ClientConfig;
use smtp_proto::{EhloResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{UpstreamError, open};
use crate::config::{Endpoint, UpstreamTls};
use crate::egress::{BoxedStream, Egress, IsolationKey};
use crate::smtp::data::write_stuffed;

/// Time allowed for the reply to the final dot (RFC 5321 §4.5.3.2.6: 10 min).
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

impl From<mail_send::Error> for UpstreamError {
    fn from(_: mail_send::Error) -> Self {
        UpstreamError::Lost
    }
}

/// An open, TLS-protected, greeted SMTP connection to a provider.
pub struct UpstreamSmtp {
    client: SmtpClient<TlsStream<BoxedStream>>,
    capabilities: EhloResponse<String>,
}

impl UpstreamSmtp {
    /// Connects, secures and greets the upstream.
    pub async fn connect(
        endpoint: &Endpoint,
        tls: Arc<ClientConfig>,
        egress: &Egress,
        isolation: &IsolationKey,
        ehlo_name: &str,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let (stream, server_name) = open(endpoint, egress, isolation, timeout).await?;
        let connector = TlsConnector::from(tls);
        let secure = match endpoint.tls {
            UpstreamTls::Implicit => {
                tokio::time::timeout(timeout, connector.connect(server_name, stream))
                    .await
                    .map_err(|_| UpstreamError::Tls)?
                    .map_err(|_| UpstreamError::Tls)?
            }
            UpstreamTls::Starttls => {
                let mut plain = SmtpClient { stream, timeout };
                expect_greeting(&mut plain, timeout).await?;
                let ehlo = plain.ehlo(ehlo_name).await?;
                if !ehlo.has_capability(smtp_proto::EXT_START_TLS) {
                    return Err(UpstreamError::NoStartTls);
                }
                let reply = plain.cmd(b"STARTTLS\r\n").await?;
                if reply.code != 220 {
                    return Err(UpstreamError::NoStartTls);
                }
                tokio::time::timeout(timeout, connector.connect(server_name, plain.stream))
                    .await
                    .map_err(|_| UpstreamError::Tls)?
                    .map_err(|_| UpstreamError::Tls)?
            }
        };
        let mut client = SmtpClient {
            stream: secure,
            timeout,
        };
        if endpoint.tls == UpstreamTls::Implicit {
            expect_greeting(&mut client, timeout).await?;
        }
        let capabilities = client.ehlo(ehlo_name).await?;
        Ok(UpstreamSmtp {
            client,
            capabilities,
        })
    }

    /// True when the upstream advertised an extension (`smtp_proto::EXT_*`).
    pub fn supports(&self, extension: u32) -> bool {
        self.capabilities.has_capability(extension)
    }

    /// The SASL mechanisms the upstream advertised (`smtp_proto::AUTH_*` bits).
    pub fn auth_mechanisms(&self) -> u64 {
        self.capabilities.auth_mechanisms
    }

    /// Sends one command line (CRLF included) and returns the reply.
    pub async fn command(&mut self, line: &[u8]) -> Result<Response<String>, UpstreamError> {
        Ok(self.client.cmd(line).await?)
    }

    /// Sends the message (header block, then the rest) and returns the
    /// upstream's final reply. With CHUNKING it goes as one `BDAT n LAST`
    /// (one round trip, bytes as they are); otherwise as DATA, dot-stuffed,
    /// after the upstream's 354 (any other answer to DATA is the final reply).
    /// A failure before the end leaves the upstream with nothing: the
    /// connection is dropped with the chunk short or without a terminator.
    pub async fn send_message(
        &mut self,
        header: &[u8],
        rest: &[u8],
    ) -> Result<Response<String>, UpstreamError> {
        if self.supports(smtp_proto::EXT_CHUNKING) {
            return self.send_message_bdat(header, rest).await;
        }
        let reply = self.client.cmd(b"DATA\r\n").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        tokio::time::timeout(DATA_END_TIMEOUT, async {
            write_stuffed(&mut self.client.stream, &[header, rest])
                .await
                .map_err(|_| UpstreamError::Lost)?;
            Ok::<_, UpstreamError>(self.client.read().await?)
        })
        .await
        .map_err(|_| UpstreamError::Lost)?
    }

    async fn send_message_bdat(
        &mut self,
        header: &[u8],
        rest: &[u8],
    ) -> Result<Response<String>, UpstreamError> {
        let command = format!("BDAT {} LAST\r\n", header.len() + rest.len());
        tokio::time::timeout(DATA_END_TIMEOUT, async {
            let mut buffered =
                tokio::io::BufWriter::with_capacity(64 * 1024, &mut self.client.stream);
            for piece in [command.as_bytes(), header, rest] {
                buffered
                    .write_all(piece)
                    .await
                    .map_err(|_| UpstreamError::Lost)?;
            }
            buffered.flush().await.map_err(|_| UpstreamError::Lost)?;
            Ok::<_, UpstreamError>(self.client.read().await?)
        })
        .await
        .map_err(|_| UpstreamError::Lost)?
    }

    /// Says QUIT and closes, ignoring the outcome.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.client.stream.write_all(b"QUIT\r\n").await;
            let _ = self.client.stream.flush().await;
            let _ = self.client.stream.shutdown().await;
        })
        .await;
    }
}

async fn expect_greeting<S>(
    client: &mut SmtpClient<S>,
    timeout: Duration,
) -> Result<(), UpstreamError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let greeting = tokio::time::timeout(timeout, client.read())
        .await
        .map_err(|_| UpstreamError::Lost)??;
    if greeting.code != 220 {
        return Err(UpstreamError::Refused(greeting.code));
    }
    Ok(())
}
