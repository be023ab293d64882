//! The client side of a connection as one stream type, before and after a
//! STARTTLS upgrade, so that SMTP and IMAP sessions drive a single type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection, before or after STARTTLS.
pub(crate) enum ClientStream<S> {
    /// Before TLS (STARTTLS listeners only).
    Plain(S),
    /// After the TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Taken apart for a STARTTLS upgrade that did not complete.
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl<S> ClientStream<S> {
    /// The protocol the client chose by ALPN in the TLS handshake, if any.
    pub(crate) fn alpn(&self) -> Option<crate::config::Protocol> {
        match self {
            ClientStream::Tls(tls) => tls
                .get_ref()
                .1
                .alpn_protocol()
                .and_then(crate::config::Protocol::from_alpn),
            _ => None,
        }
    }
}

/// Why a write to the client did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFailed {
    /// The connection failed.
    Broken,
    /// The client did not take the bytes within the deadline.
    Stalled,
}

/// Writes `bytes` to the client and flushes, within `timeout`: the one way
/// a session writes to its client outside the relay driver.
pub(crate) async fn write_within<S: AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
    timeout: std::time::Duration,
) -> Result<(), WriteFailed> {
    use tokio::io::AsyncWriteExt;
    let written = tokio::time::timeout(timeout, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Broken),
        Err(_) => Err(WriteFailed::Stalled),
    }
}

/// The client stream for a new connection: after a TLS handshake bounded by
/// the handshake timeout on implicit-TLS listeners, plain otherwise. `None`
/// when the handshake failed or timed out.
pub(crate) async fn accept<S>(
    relay: &crate::relay::Relay,
    face: &crate::relay::Face,
    stream: S,
    implicit_tls: bool,
) -> Option<ClientStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !implicit_tls {
        return Some(ClientStream::Plain(stream));
    }
    match tokio::time::timeout(
        relay.config.limits.tls_handshake_timeout,
        face.acceptor.accept(stream),
    )
    .await
    {
        Ok(Ok(tls)) => Some(ClientStream::Tls(Box::new(tls))),
        _ => None,
    }
}

/// [`accept`] for an admitted session: gives up (`None`) if the relay
/// evicts the session while its TLS handshake is still going on.
pub(crate) async fn accept_admitted<S>(
    relay: &crate::relay::Relay,
    face: &crate::relay::Face,
    stream: S,
    implicit_tls: bool,
    peer: &crate::admission::Peer,
) -> Option<ClientStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        io = accept(relay, face, stream, implicit_tls) => io,
        _ = peer.evicted() => None,
    }
}
