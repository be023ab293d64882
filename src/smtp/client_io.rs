//! The client side of an SMTP session: command lines and message bytes in,
//! replies out, each bounded by a deadline — the one place where SMTP
//! client I/O waits. Reads end at the session's deadline (idle, not logged
//! in yet, or a message below the rate floor), at eviction, or, between
//! transactions, at shutdown; writes end at the command timeout. Every way
//! a read or write can end is an [`End`] the driver answers in one place.
//!
//! Buffers are [`WipedBuf`]s: what a client sent or was sent is wiped when
//! it is consumed, and when the session ends.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::reply::Reply;
use super::session::{Line, Session, Slow};
use crate::admission::Peer;
use crate::privacy::WipedBuf;
use crate::relay::Relay;
use crate::stream::{ClientStream, WriteFailed, write_within};

/// How much room a read makes in the buffer.
const READ_ROOM: usize = 16 * 1024;

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The client left, or the connection failed.
    Gone,
    /// The client said QUIT, or the session refused to go on; its last
    /// reply is already queued.
    Closed,
    /// A deadline passed.
    Slow(Slow),
    /// The relay needed this unauthenticated session's place.
    Evicted,
    /// The relay is shutting down and the session was between transactions.
    ShuttingDown,
}

/// What a read waits on besides the client: the session's deadlines and
/// byte count, eviction (before login) and shutdown.
pub(crate) struct Pace<'a, 'r> {
    /// The session whose deadlines apply.
    pub(crate) session: &'a mut Session<'r>,
    /// Eviction, when the session may be evicted.
    pub(crate) peer: Option<&'a Peer>,
    /// Shutdown.
    pub(crate) draining: &'a mut watch::Receiver<bool>,
}

/// The client connection with its buffers.
pub(crate) struct ClientIo<S> {
    io: ClientStream<S>,
    rbuf: WipedBuf,
    wbuf: WipedBuf,
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// Wraps a client connection; writes may take `write_timeout` each.
    pub(crate) fn new(io: ClientStream<S>, write_timeout: Duration) -> Self {
        ClientIo {
            io,
            rbuf: WipedBuf::with_capacity(4096),
            wbuf: WipedBuf::with_capacity(1024),
            write_timeout,
        }
    }

    /// Queues a reply.
    pub(crate) fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf);
    }

    /// Writes the queued replies.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let written = write_within(&mut self.io, &self.wbuf, self.write_timeout).await;
        self.wbuf.clear();
        match written {
            Ok(()) => Ok(()),
            Err(WriteFailed::Broken) => Err(End::Gone),
            Err(WriteFailed::Stalled) => Err(End::Slow(Slow::Write)),
        }
    }

    /// Bytes read and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.rbuf
    }

    /// True when a whole command line is already buffered: the client
    /// pipelined it behind the one being handled.
    pub(crate) fn has_line(&self) -> bool {
        memchr::memchr(b'\n', &self.rbuf).is_some()
    }

    /// Consumes (and wipes) `n` buffered bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.rbuf.consume(n);
    }

    /// Writes pending replies, then reads more from the client.
    pub(crate) async fn fill(&mut self, pace: &mut Pace<'_, '_>) -> Result<(), End> {
        self.flush().await?;
        let (deadline, why) = pace.session.read_deadline(tokio::time::Instant::now());
        let may_drain = !pace.session.in_transaction() && self.rbuf.is_empty();
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, self.rbuf.read_from(&mut self.io, READ_ROOM)) => read,
            _ = Relay::until_draining(pace.draining), if may_drain => return Err(End::ShuttingDown),
            _ = evicted(pace.peer) => return Err(End::Evicted),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => Err(End::Gone),
            Ok(Ok(n)) => {
                pace.session.received(n);
                Ok(())
            }
            Err(_) => Err(End::Slow(why)),
        }
    }

    /// Reads one command line of at most `max` bytes.
    pub(crate) async fn read_line(
        &mut self,
        max: usize,
        pace: &mut Pace<'_, '_>,
    ) -> Result<Line, End> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.rbuf) {
                let len = nl + 1;
                let line = if len > max {
                    Line::TooLong
                } else if nl == 0 || self.rbuf[nl - 1] != b'\r' {
                    Line::BareLf
                } else {
                    Line::Complete(WipedBuf::copy_of(&self.rbuf[..len]))
                };
                self.rbuf.consume(len);
                return Ok(line);
            }
            if self.rbuf.len() > max {
                return Ok(Line::TooLong);
            }
            self.fill(pace).await?;
        }
    }

    /// Switches to TLS after STARTTLS. Anything the client pipelined
    /// behind it came in plain text and may have been injected by the
    /// network: it is dropped.
    pub(crate) async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> Result<(), End> {
        self.flush().await?;
        self.rbuf.clear();
        let ClientStream::Plain(plain) = std::mem::replace(&mut self.io, ClientStream::Gone) else {
            return Err(End::Gone);
        };
        match tokio::time::timeout(timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.io = ClientStream::Tls(Box::new(tls));
                Ok(())
            }
            _ => Err(End::Gone),
        }
    }

    /// Writes what is queued and closes the connection.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.io.shutdown()).await;
    }
}

/// Resolves when `peer` is evicted; never without a peer.
async fn evicted(peer: Option<&Peer>) {
    match peer {
        Some(peer) => peer.evicted().await,
        None => std::future::pending().await,
    }
}
