//! The SMTP side of a provider: greeted with one fixed neutral EHLO name
//! with mail-send's `SmtpClient` over a stream built by
//! [`Target::connect`], then driven by the session: commands are queued
//! and written together ([`UpstreamSmtp::flush`]), and the replies read
//! back one by one in order ([`UpstreamSmtp::read_reply`]), which is
//! RFC 2920 pipelining when the session queues several before reading.
//! Messages go out as one `BDAT … LAST` when the provider offers CHUNKING,
//! else as dot-stuffed DATA, staged through a [`WipedBuf`] so that no copy
//! of the message is left in a write buffer. Replies are read through a
//! wiped buffer that keeps what arrived past one reply for the next.

use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EhloResponse, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{ProviderStream, Target, UpstreamError, implicit_tls};
use crate::config::Endpoint;
use crate::privacy::WipedBuf;
use crate::sasl::Offered;
use crate::smtp::data::stuffed_pieces;

/// Time allowed for the reply to the final dot (RFC 5321 §4.5.3.2.6: 10 min).
pub(crate) const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest write staged at once while sending a message.
const STAGE: usize = 64 * 1024;

/// How much room a read of the provider's replies makes.
const REPLY_ROOM: usize = 4096;

/// Longest reply accepted (all lines of a multi-line reply together).
const MAX_REPLY: usize = 64 * 1024;

impl From<mail_send::Error> for UpstreamError {
    fn from(_: mail_send::Error) -> Self {
        UpstreamError::Lost
    }
}

/// An open, TLS-protected, greeted SMTP connection to a provider.
pub(crate) struct UpstreamSmtp {
    client: SmtpClient<ProviderStream>,
    capabilities: EhloResponse<String>,
    /// Commands queued and not yet written.
    queued: WipedBuf,
    /// Reply bytes read and not yet parsed.
    replies: WipedBuf,
}

impl UpstreamSmtp {
    /// Connects to the first endpoint that can be reached, secures and
    /// greets the provider. Says which endpoint it is.
    pub(crate) async fn connect<'a>(
        target: &Target<'a>,
        ehlo_name: &str,
    ) -> Result<(Self, &'a Endpoint), UpstreamError> {
        let timeout = target.timeout;
        let (mut stream, endpoint) = target.open().await?;
        let implicit = implicit_tls(endpoint);
        if !implicit {
            let mut plain = SmtpClient { stream, timeout };
            expect_greeting(&mut plain, timeout).await?;
            let ehlo = plain.ehlo(ehlo_name).await?;
            if !ehlo.has_capability(smtp_proto::EXT_START_TLS) {
                return Err(UpstreamError::NoStartTls);
            }
            if plain.cmd(b"STARTTLS\r\n").await?.code != 220 {
                return Err(UpstreamError::NoStartTls);
            }
            stream = plain.stream;
        }
        let stream = target.secure(endpoint, stream).await?;
        let mut client = SmtpClient { stream, timeout };
        if implicit {
            expect_greeting(&mut client, timeout).await?;
        }
        let capabilities = client.ehlo(ehlo_name).await?;
        Ok((
            UpstreamSmtp {
                client,
                capabilities,
                queued: WipedBuf::new(),
                replies: WipedBuf::new(),
            },
            endpoint,
        ))
    }

    /// True when the provider advertised an extension (`smtp_proto::EXT_*`).
    pub(crate) fn supports(&self, extension: u32) -> bool {
        self.capabilities.has_capability(extension)
    }

    /// What the provider offers to authenticate with.
    pub(crate) fn offered(&self) -> Offered {
        let bits = self.capabilities.auth_mechanisms;
        Offered {
            plain: bits & smtp_proto::AUTH_PLAIN != 0,
            login: bits & smtp_proto::AUTH_LOGIN != 0,
            xoauth2: bits & smtp_proto::AUTH_XOAUTH2 != 0,
            oauthbearer: bits & smtp_proto::AUTH_OAUTHBEARER != 0,
            login_command: false,
            fall_back_as_sent: true,
        }
    }

    /// How long a command's reply may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.client.timeout
    }

    /// Sends one command line (CRLF included) and returns the reply.
    pub(crate) async fn command(&mut self, line: &[u8]) -> Result<Response<String>, UpstreamError> {
        self.queue(line);
        self.flush().await?;
        self.read_reply(self.client.timeout).await
    }

    /// True when reply bytes were read past the replies asked for.
    pub(crate) fn has_unread(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Queues a command line (CRLF included) to be written with the next
    /// [`flush`](Self::flush) or message.
    pub(crate) fn queue(&mut self, line: &[u8]) {
        self.queued.extend_from_slice(line);
    }

    /// Writes the queued commands.
    pub(crate) async fn flush(&mut self) -> Result<(), UpstreamError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(self.client.timeout, async {
            self.client.stream.write_all(&self.queued).await?;
            self.client.stream.flush().await
        })
        .await;
        self.queued.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            _ => Err(UpstreamError::Lost),
        }
    }

    /// Reads the provider's next reply, within `timeout`. Bytes past it
    /// (the replies to later pipelined commands) are kept for the next.
    pub(crate) async fn read_reply(
        &mut self,
        timeout: Duration,
    ) -> Result<Response<String>, UpstreamError> {
        tokio::time::timeout(timeout, async {
            let mut parser = ResponseReceiver::default();
            let mut seen = 0;
            loop {
                if !self.replies.is_empty() {
                    let mut bytes = self.replies.iter();
                    let parsed = parser.parse(&mut bytes);
                    let consumed = self.replies.len() - bytes.len();
                    self.replies.consume(consumed);
                    seen += consumed;
                    match parsed {
                        Ok(reply) => return Ok(reply),
                        Err(smtp_proto::Error::NeedsMoreData { .. }) if seen <= MAX_REPLY => {}
                        Err(_) => return Err(UpstreamError::Lost),
                    }
                }
                match self
                    .replies
                    .read_from(&mut self.client.stream, REPLY_ROOM)
                    .await
                {
                    Ok(0) | Err(_) => return Err(UpstreamError::Lost),
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| UpstreamError::Lost)?
    }

    /// Without CHUNKING: sends the message, given as consecutive pieces, as
    /// DATA, the provider's 354, the dot-stuffed message, and returns the
    /// final reply (any other answer to DATA is the final reply). With
    /// CHUNKING the driver uses [`write_message`](Self::write_message) and
    /// reads the replies itself. A failure before the end leaves the
    /// provider with nothing: the connection is dropped unterminated.
    pub(crate) async fn send_data(
        &mut self,
        pieces: &[&[u8]],
    ) -> Result<Response<String>, UpstreamError> {
        let reply = self.command(b"DATA\r\n").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        // Dot-stuffing cuts the pieces at line starts (nearly every byte
        // goes through the stage), adds a byte per stuffed line and the
        // end mark 5: the stage may grow past the hint, never past STAGE.
        let size = pieces.iter().map(|p| p.len()).sum::<usize>() + 5;
        self.write_pieces(&mut stuffed_pieces(pieces), size).await?;
        self.read_reply(DATA_END_TIMEOUT).await
    }

    /// With CHUNKING: writes the queued commands, then the message as one
    /// `BDAT n LAST` (bytes as they are), without waiting for any reply.
    pub(crate) async fn write_message(&mut self, pieces: &[&[u8]]) -> Result<(), UpstreamError> {
        debug_assert!(self.supports(smtp_proto::EXT_CHUNKING));
        let size: usize = pieces.iter().map(|p| p.len()).sum();
        let command = format!("BDAT {size} LAST\r\n");
        let queued = std::mem::take(&mut self.queued);
        let mut all = [&queued[..], command.as_bytes()]
            .into_iter()
            .chain(pieces.iter().copied());
        let staged = queued.len() + command.len() + staged_bytes(pieces);
        self.write_pieces(&mut all, staged).await
    }

    /// Writes `pieces` (about `size` bytes) in staged writes, within
    /// [`DATA_END_TIMEOUT`].
    async fn write_pieces(
        &mut self,
        pieces: &mut (dyn Iterator<Item = &[u8]> + Send),
        size: usize,
    ) -> Result<(), UpstreamError> {
        match tokio::time::timeout(
            DATA_END_TIMEOUT,
            write_staged(&mut self.client.stream, pieces, size),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(UpstreamError::Lost),
        }
    }

    /// Says QUIT and closes, ignoring the outcome.
    pub(crate) async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = self.client.stream.write_all(b"QUIT\r\n").await;
            let _ = self.client.stream.flush().await;
            let _ = self.client.stream.shutdown().await;
        })
        .await;
    }
}

/// Writes `pieces` in order, gathering small ones into writes of up to
/// [`STAGE`] bytes (one TLS record each rather than one per piece); the
/// staging buffer is wiped. Large pieces are written directly. `size` is
/// about how many bytes the pieces hold: a small message gets a stage of
/// its size, not [`STAGE`] (every byte of a stage is wiped when it goes).
pub(crate) async fn write_staged<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: &mut (dyn Iterator<Item = &[u8]> + Send),
    size: usize,
) -> std::io::Result<()> {
    let mut stage = WipedBuf::new();
    for piece in pieces {
        if stage.len() + piece.len() > STAGE && !stage.is_empty() {
            writer.write_all(&stage).await?;
            stage.clear();
        }
        if piece.len() >= STAGE {
            writer.write_all(piece).await?;
        } else {
            let room = stage_room(stage.capacity(), stage.len(), piece.len(), size);
            if room > stage.capacity() {
                stage.reserve_exact(room - stage.len());
            }
            stage.extend_from_slice(piece);
        }
    }
    if !stage.is_empty() {
        writer.write_all(&stage).await?;
    }
    writer.flush().await
}

/// How many bytes of `pieces`, written as they are (BDAT), go through the
/// stage: pieces of [`STAGE`] or more are written directly (a hint for
/// [`write_staged`]).
fn staged_bytes(pieces: &[&[u8]]) -> usize {
    pieces.iter().map(|p| p.len()).filter(|&n| n < STAGE).sum()
}

/// The stage's capacity for `len` staged bytes plus a `piece` (their sum
/// at most [`STAGE`]): `capacity` if they fit; at first the message's
/// `size`; past that (dot-stuffing adds bytes) doubled, never past
/// [`STAGE`].
fn stage_room(capacity: usize, len: usize, piece: usize, size: usize) -> usize {
    let needed = len + piece;
    if needed <= capacity {
        capacity
    } else if capacity == 0 {
        size.clamp(needed, STAGE.max(needed))
    } else {
        (2 * capacity).clamp(needed, STAGE.max(needed))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_is_the_messages_size_and_grows_by_doubling_up_to_its_cap() {
        assert_eq!(stage_room(0, 0, 20, 4_100), 4_100, "the message's size");
        assert_eq!(stage_room(0, 0, 20, 1 << 20), STAGE, "never past STAGE");
        assert_eq!(stage_room(0, 0, 20, 5), 20, "at least the piece");
        assert_eq!(stage_room(4_100, 4_000, 50, 4_100), 4_100, "fits");
        assert_eq!(
            stage_room(4_100, 4_090, 20, 4_100),
            8_200,
            "stuffing: doubled"
        );
        assert_eq!(stage_room(40_000, 39_990, 20, 40_000), STAGE, "capped");
        for (capacity, len, piece) in [(0, 0, STAGE - 1), (100, 100, STAGE - 100), (STAGE, 10, 5)] {
            let room = stage_room(capacity, len, piece, 64);
            assert!(room >= len + piece && room <= STAGE.max(capacity));
        }
    }

    #[test]
    fn only_pieces_that_are_staged_count_towards_the_stage() {
        let big = vec![b'x'; STAGE];
        assert_eq!(staged_bytes(&[b"Subject: hi\r\n\r\n", &big, b"bye"]), 18);
    }

    #[tokio::test]
    async fn a_stage_that_outgrows_its_hint_keeps_every_byte_in_order() {
        let lines: Vec<Vec<u8>> = (0..2_000)
            .map(|i| format!("line {i}\r\n").into_bytes())
            .collect();
        let mut pieces = lines.iter().map(Vec::as_slice);
        let mut out = Vec::new();
        write_staged(&mut out, &mut pieces, 1).await.expect("write");
        assert_eq!(out, lines.concat());
    }

    #[tokio::test]
    async fn staged_writes_keep_every_byte_in_order() {
        let big = vec![b'x'; STAGE + 10];
        let pieces: [&[u8]; 5] = [b"BDAT 9 LAST\r\n", b"head", &big, b"tail", b"."];
        let mut out = Vec::new();
        write_staged(&mut out, &mut pieces.into_iter(), 64)
            .await
            .expect("write");
        assert_eq!(out, pieces.concat());
    }
}
