//! The authenticated IMAP session, relayed both ways.
//!
//! Two halves run in one task. The client half frames the client's commands
//! (lines and the literals they announce) and forwards them, rewriting only
//! ID (one generic list for everybody) and APPEND (the message's header block
//! goes through the sanitizer and the literal size is fixed up), and refusing
//! what the relay cannot carry (COMPRESS, a second login, message uploads it
//! cannot see). The upstream half frames the provider's responses and streams
//! them to the client, filtering capability lists; literals are copied a
//! buffer at a time, never held whole.
//!
//! The halves meet on a channel: the client half asks the upstream half to
//! watch for the continuation (`+`) that answers a synchronizing literal, and
//! hands it local replies to write between two provider responses. Nothing
//! here logs.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::framed::{Framed, ReadError};
use super::syntax::{
    LiteralMarker, Token, filter_capability_line, leading_tag, line_body, literal_at_end,
    parse_head, reply_tag, token,
};
use crate::privacy::{wipe, wipe_appended};
use crate::provider::imap::GENERIC_ID;
use crate::sanitize::{Policy, strip_identifying_headers};
use zeroize::Zeroizing;

/// Longest response head read before deciding how to relay it.
const HEAD_MAX: usize = 8 * 1024;
/// Longest capability response rewritten (longer ones are dropped).
const CAPABILITY_MAX: usize = 64 * 1024;
/// Largest mailbox name sent as a literal.
const MAILBOX_LITERAL_MAX: u64 = 4096;
/// Output buffered before it is written to the client.
const OUT_FLUSH: usize = 16 * 1024;
/// Literals up to this size from the provider are buffered with the lines
/// around them; larger ones are streamed through.
const SMALL_LITERAL: u64 = 8 * 1024;
/// RFC 7888: LITERAL- allows non-synchronizing literals up to this size.
const LITERAL_MINUS_MAX: u64 = 4096;

/// What both halves need to know.
pub struct Settings<'a> {
    /// The header policy for APPEND.
    pub policy: &'a Policy,
    /// Longest client command line.
    pub max_line: usize,
    /// Largest literal from the client (message size limit).
    pub max_literal: u64,
    /// How long an authenticated client may stay silent.
    pub idle_timeout: Duration,
    /// How long to wait for the provider's continuation.
    pub upstream_timeout: Duration,
    /// The provider takes non-synchronizing literals of any size.
    pub literal_plus: bool,
    /// The provider takes non-synchronizing literals up to 4096 bytes.
    pub literal_minus: bool,
    /// The provider has ID.
    pub has_id: bool,
    /// Largest header block of an APPENDed message.
    pub max_header_bytes: usize,
    /// Most header fields in an APPENDed message.
    pub max_header_fields: usize,
}

/// How a relayed session ended, for the aggregate counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Logout, or either side closed.
    Closed,
    /// The client stayed silent past the idle timeout.
    IdleTimeout,
    /// The provider connection broke without a BYE.
    ProviderLost,
}

/// Relays until either side closes.
pub async fn run<CR, CW, UR, UW>(
    settings: Settings<'_>,
    client_r: Framed<CR>,
    client_w: CW,
    upstream_r: Framed<UR>,
    upstream_w: UW,
) -> Ended
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let (events, events_rx) = mpsc::channel(8);
    let mut client_half = ClientHalf {
        s: &settings,
        client: client_r,
        upstream: upstream_w,
        events,
    };
    let mut upstream_half = UpstreamHalf {
        upstream: upstream_r,
        client: client_w,
        out: Zeroizing::new(Vec::with_capacity(1024)),
        events: events_rx,
        waiter: None,
        bye_seen: false,
    };
    tokio::select! {
        ended = client_half.run() => ended,
        ended = upstream_half.run() => ended,
    }
}

/// A request from the client half to the upstream half.
enum Event {
    /// Bytes for the client, written between two provider responses.
    Reply(Vec<u8>),
    /// Watch for the continuation answering the literal of command `tag`.
    Expect {
        tag: Vec<u8>,
        /// The relay answered the client itself: drop the provider's `+`.
        swallow: bool,
        outcome: oneshot::Sender<Continuation>,
    },
    /// Write these bytes, then end the session.
    Close(Vec<u8>),
}

/// How the provider answered a synchronizing literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continuation {
    /// `+`: send the literal.
    Go,
    /// A tagged completion instead: the command is over.
    Refused,
}

struct Waiter {
    tag: Vec<u8>,
    swallow: bool,
    outcome: oneshot::Sender<Continuation>,
}

/// Why the client half stopped.
#[derive(Debug)]
enum Stop {
    /// The client went away or the session must end.
    Client,
    /// The provider connection failed; the upstream half says BYE.
    Upstream,
    /// The client was idle too long (it has been told).
    IdleTimeout,
    /// The client sent a literal below the rate floor (not yet told).
    TooSlow,
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::TooSlow => Stop::TooSlow,
            _ => Stop::Client,
        }
    }
}

struct ClientHalf<'s, 'p, CR, UW> {
    s: &'s Settings<'p>,
    client: Framed<CR>,
    upstream: UW,
    events: mpsc::Sender<Event>,
}

/// Commands the relay refuses after login, with the reason given.
fn refused_command(name: &[u8], rest: &[u8]) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_slice() {
        b"COMPRESS" => "COMPRESS is not available through this relay",
        b"STARTTLS" | b"LOGIN" | b"AUTHENTICATE" | b"UNAUTHENTICATE" => "Already authenticated",
        b"REPLACE" | b"URLFETCH" | b"GENURLAUTH" | b"RESETKEY" | b"XAPPLEPUSHSERVICE" => {
            "Command not available through this relay"
        }
        b"UID" => {
            let sub = rest.split(|b| *b == b' ').next().unwrap_or_default();
            if line_body(sub).eq_ignore_ascii_case(b"REPLACE") {
                "Command not available through this relay"
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

impl<CR: AsyncRead + Unpin, UW: AsyncWrite + Unpin> ClientHalf<'_, '_, CR, UW> {
    async fn run(&mut self) -> Ended {
        match self.serve().await {
            // Let the upstream half notice the loss and say BYE.
            Err(Stop::Upstream) => std::future::pending().await,
            Err(Stop::IdleTimeout) => Ended::IdleTimeout,
            Err(Stop::TooSlow) => {
                self.close(b"* BYE [UNAVAILABLE] Literal data arriving too slowly\r\n".to_vec())
                    .await;
                Ended::IdleTimeout
            }
            _ => Ended::Closed,
        }
    }

    async fn serve(&mut self) -> Result<(), Stop> {
        loop {
            let mut line = Vec::new();
            let read = tokio::time::timeout(
                self.s.idle_timeout,
                self.client.read_line(self.s.max_line, &mut line),
            )
            .await;
            match read {
                Err(_) => {
                    self.close(b"* BYE [UNAVAILABLE] Autologout: idle for too long\r\n".to_vec())
                        .await;
                    return Err(Stop::IdleTimeout);
                }
                Ok(Err(ReadError::TooLong)) => {
                    let tag = leading_tag(&line).unwrap_or(b"*").to_vec();
                    self.client.skip_line().await?;
                    wipe(&mut line);
                    self.reply(&tag, b"BAD [TOOBIG] Command line too long")
                        .await?;
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(())) => {}
            }
            self.client.relax();
            let result = self.dispatch(&line).await;
            wipe(&mut line);
            result?;
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> Result<(), Stop> {
        if line_body(line).eq_ignore_ascii_case(b"DONE") {
            // The end of IDLE: not a command of its own.
            return self.write_upstream(&[line]).await;
        }
        let head = match parse_head(line) {
            Ok(head) => head,
            Err(_) => {
                let tag = reply_tag(line).to_vec();
                return self.reply(&tag, b"BAD Malformed command").await;
            }
        };
        let tag = head.tag.to_vec();
        if let Some(reason) = refused_command(head.name, head.rest) {
            return self.refuse(line, &tag, reason.as_bytes()).await;
        }
        if head.name.eq_ignore_ascii_case(b"APPEND") {
            return self.append(line, &tag).await;
        }
        if head.name.eq_ignore_ascii_case(b"ID") {
            return self.id(line, &tag).await;
        }
        self.forward(line.to_vec(), &tag).await
    }

    /// Forwards a command, literal by literal.
    async fn forward(&mut self, mut line: Vec<u8>, tag: &[u8]) -> Result<(), Stop> {
        loop {
            let marker = match literal_at_end(&line) {
                Ok(m) => m,
                Err(_) => return self.too_big(tag, true).await,
            };
            let Some(m) = marker else {
                return self.write_upstream(&[&line]).await;
            };
            if m.size > self.s.max_literal {
                return self.too_big(tag, m.sync).await;
            }
            let upstream_takes_it =
                self.s.literal_plus || (self.s.literal_minus && m.size <= LITERAL_MINUS_MAX);
            if m.sync || !upstream_takes_it {
                // Either the client waits for the provider's `+`, or the
                // provider cannot take the client's non-synchronizing literal
                // and the relay waits for the `+` on the client's behalf.
                let swallow = !m.sync;
                let mut sync_line = line[..m.start].to_vec();
                sync_line
                    .extend_from_slice(LiteralMarker::render(m.size, true, m.binary).as_bytes());
                sync_line.extend_from_slice(b"\r\n");
                match self.send_sync(tag, swallow, &sync_line).await? {
                    Continuation::Go => {}
                    Continuation::Refused => {
                        if swallow {
                            self.client.skip_exact(m.size).await?;
                            self.drain_command().await?;
                        }
                        return Ok(());
                    }
                }
            } else {
                self.write_upstream(&[&line]).await?;
            }
            self.client
                .copy_exact(m.size, &mut self.upstream)
                .await
                .map_err(|e| match e {
                    ReadError::Io(_) => Stop::Upstream,
                    other => other.into(),
                })?;
            line.clear();
            self.read_continuation_line(&mut line).await?;
        }
    }

    /// ID: the client's parameters stay here; the provider gets the generic
    /// list, and its answer goes back to the client.
    async fn id(&mut self, line: &[u8], tag: &[u8]) -> Result<(), Stop> {
        let mut whole = line.to_vec();
        let complete = self.consume_command_locally(&mut whole, 4096).await?;
        wipe(&mut whole);
        if !complete {
            return self
                .reply(tag, b"BAD [TOOBIG] ID parameters too long")
                .await;
        }
        if !self.s.has_id {
            return self
                .send_reply(b"* ID NIL\r\n".to_vec(), tag, b"OK ID completed")
                .await;
        }
        let mut command = tag.to_vec();
        command.extend_from_slice(b" ID ");
        command.extend_from_slice(GENERIC_ID);
        command.extend_from_slice(b"\r\n");
        self.write_upstream(&[&command]).await
    }

    /// APPEND (and MULTIAPPEND): mailbox, flags and dates are passed on;
    /// each message's header block is sanitized and its literal re-sized.
    async fn append(&mut self, line: &[u8], tag: &[u8]) -> Result<(), Stop> {
        let head = parse_head(line).map_err(|_| Stop::Client)?;
        let mut pending = tag.to_vec();
        pending.extend_from_slice(b" APPEND ");
        let mut current = head.rest.to_vec();
        let mut pos = 0usize;
        let mut messages = 0usize;
        let mut mailbox_done = false;
        loop {
            let rest = &current[pos..];
            let marker = literal_at_end(rest).ok().flatten().filter(|m| m.start == 0);
            if !mailbox_done {
                mailbox_done = true;
                if let Some(m) = marker {
                    if m.size > MAILBOX_LITERAL_MAX || m.binary {
                        return self.abandon(tag, m, b"BAD Mailbox name too long").await;
                    }
                    if m.sync {
                        self.continue_client().await?;
                    }
                    let mut name = Vec::new();
                    self.client
                        .read_exact_into(m.size as usize, &mut name)
                        .await?;
                    if !self
                        .emit_literal(tag, &mut pending, &name, &[], 0, false)
                        .await?
                    {
                        return self.drain_command().await;
                    }
                    current.clear();
                    pos = 0;
                    self.read_continuation_line(&mut current).await?;
                    continue;
                }
                match token(rest) {
                    Ok(Token::Atom(n) | Token::Quoted(n)) => {
                        pending.extend_from_slice(&rest[..n]);
                        pos += n;
                        continue;
                    }
                    _ => return self.reply(tag, b"BAD Malformed APPEND").await,
                }
            }
            if line_body(rest).is_empty() {
                if messages == 0 {
                    return self.reply(tag, b"BAD APPEND without a message").await;
                }
                pending.extend_from_slice(b"\r\n");
                return self.write_upstream(&[&pending]).await;
            }
            if rest[0] != b' ' {
                return self.reply(tag, b"BAD Malformed APPEND").await;
            }
            pending.push(b' ');
            pos += 1;
            let rest = &current[pos..];
            let marker = literal_at_end(rest).ok().flatten().filter(|m| m.start == 0);
            if let Some(m) = marker {
                messages += 1;
                if !self.append_message(tag, &mut pending, m).await? {
                    return Ok(());
                }
                current.clear();
                pos = 0;
                self.read_continuation_line(&mut current).await?;
                continue;
            }
            match token(rest) {
                Ok(Token::List(n) | Token::Quoted(n)) => {
                    pending.extend_from_slice(&rest[..n]);
                    pos += n;
                }
                _ => {
                    // CATENATE, UTF8 (…) and other extensions: the relay
                    // would not see the message, so it does not pass them.
                    let m = literal_at_end(rest).ok().flatten();
                    return match m {
                        Some(m) => self.abandon(tag, m, b"BAD APPEND form not supported").await,
                        None => self.reply(tag, b"BAD APPEND form not supported").await,
                    };
                }
            }
        }
    }

    /// One message literal of an APPEND. Returns false when the command ended
    /// here (refused by the relay or by the provider).
    async fn append_message(
        &mut self,
        tag: &[u8],
        pending: &mut Vec<u8>,
        m: LiteralMarker,
    ) -> Result<bool, Stop> {
        if m.size > self.s.max_literal {
            self.too_big(tag, m.sync).await?;
            return Ok(false);
        }
        if m.sync {
            self.continue_client().await?;
        }
        // One byte more than allowed: a block that fills it is too large.
        let limit = m.size.min(self.s.max_header_bytes as u64 + 1) as usize;
        let mut head = Vec::with_capacity(limit.min(16 * 1024));
        let mut header_end = None;
        while head.len() < limit {
            let before = head.len();
            let take = (limit - before).min(4096);
            self.client.read_exact_into(take, &mut head).await?;
            if head.starts_with(b"\r\n") {
                header_end = Some(0);
                break;
            }
            let from = before.saturating_sub(3);
            if let Some(i) = memchr::memmem::find(&head[from..], b"\r\n\r\n") {
                header_end = Some(from + i + 2);
                break;
            }
        }
        let remaining = m.size - head.len() as u64;
        let header_part = match header_end {
            Some(end) => Some(&head[..end]),
            None if remaining == 0 => Some(&head[..]),
            None => None,
        };
        let refusal: Option<&[u8]> = match header_part {
            None => Some(b"NO [LIMIT] Message header block too large"),
            Some(h) if h.len() > self.s.max_header_bytes => {
                Some(b"NO [LIMIT] Message header block too large")
            }
            Some(h) if crate::sanitize::header_shape(h).0 > self.s.max_header_fields => {
                Some(b"NO [LIMIT] Too many header fields")
            }
            Some(h) if has_bare_cr_or_lf(h) => Some(b"NO Message header lines must end in CRLF"),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            // The rest of the literal and of the command are read and
            // dropped; the client gets the reason.
            wipe(&mut head);
            self.client.skip_exact(remaining).await?;
            self.drain_command().await?;
            self.reply(tag, refusal).await?;
            return Ok(false);
        }
        let sanitized = strip_identifying_headers(&head, self.s.policy);
        let accepted = self
            .emit_literal(
                tag,
                pending,
                &sanitized.header,
                sanitized.rest,
                remaining,
                m.binary,
            )
            .await;
        drop(sanitized);
        wipe(&mut head);
        if !accepted? {
            self.client.skip_exact(remaining).await?;
            self.drain_command().await?;
            return Ok(false);
        }
        self.client
            .copy_exact(remaining, &mut self.upstream)
            .await
            .map_err(|e| match e {
                ReadError::Io(_) => Stop::Upstream,
                other => other.into(),
            })?;
        Ok(true)
    }

    /// Sends `pending` plus a literal made of `first`, `second` and then
    /// `more` bytes the caller copies after. Uses LITERAL+ when the provider
    /// has it, else waits for its `+` (which the client never sees). Returns
    /// false when the provider refused (its reply has gone to the client).
    async fn emit_literal(
        &mut self,
        tag: &[u8],
        pending: &mut Vec<u8>,
        first: &[u8],
        second: &[u8],
        more: u64,
        binary: bool,
    ) -> Result<bool, Stop> {
        let size = (first.len() + second.len()) as u64 + more;
        let sync = !(self.s.literal_plus || (self.s.literal_minus && size <= LITERAL_MINUS_MAX));
        pending.extend_from_slice(LiteralMarker::render(size, sync, binary).as_bytes());
        pending.extend_from_slice(b"\r\n");
        if sync {
            if self.send_sync(tag, true, pending).await? == Continuation::Refused {
                pending.clear();
                return Ok(false);
            }
            self.write_upstream(&[first, second]).await?;
        } else {
            self.write_upstream(&[pending, first, second]).await?;
        }
        pending.clear();
        Ok(true)
    }

    /// Writes a line ending in a synchronizing literal and waits for the
    /// provider's answer to it.
    async fn send_sync(
        &mut self,
        tag: &[u8],
        swallow: bool,
        line: &[u8],
    ) -> Result<Continuation, Stop> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Expect {
                tag: tag.to_vec(),
                swallow,
                outcome: tx,
            })
            .await
            .map_err(|_| Stop::Upstream)?;
        self.write_upstream(&[line]).await?;
        match tokio::time::timeout(self.s.upstream_timeout, rx).await {
            Ok(Ok(c)) => Ok(c),
            _ => Err(Stop::Upstream),
        }
    }

    /// Reads the rest of a command locally (answering synchronizing literals
    /// itself), up to `max` bytes in all. False when it was too long (the
    /// rest has then been consumed and dropped).
    async fn consume_command_locally(
        &mut self,
        whole: &mut Vec<u8>,
        max: usize,
    ) -> Result<bool, Stop> {
        let mut start = 0;
        loop {
            let Ok(marker) = literal_at_end(&whole[start..]) else {
                return Ok(false);
            };
            let Some(m) = marker else {
                return Ok(true);
            };
            if m.size > max as u64 || whole.len() + m.size as usize > max {
                self.abandon_quietly(m).await?;
                return Ok(false);
            }
            if m.sync {
                self.continue_client().await?;
            }
            self.client.read_exact_into(m.size as usize, whole).await?;
            start = whole.len();
            self.read_continuation_line(whole).await?;
        }
    }

    /// Refuses a command, consuming what the client still sends for it.
    async fn refuse(&mut self, line: &[u8], tag: &[u8], reason: &[u8]) -> Result<(), Stop> {
        let mut text = b"BAD ".to_vec();
        text.extend_from_slice(reason);
        match literal_at_end(line) {
            Ok(Some(m)) => self.abandon(tag, m, &text).await,
            _ => self.reply(tag, &text).await,
        }
    }

    /// Refuses a command whose line ended in literal `m`: a synchronizing
    /// literal is simply never invited; a non-synchronizing one is skipped
    /// with the rest of the command.
    async fn abandon(&mut self, tag: &[u8], m: LiteralMarker, text: &[u8]) -> Result<(), Stop> {
        self.abandon_quietly(m).await?;
        self.reply(tag, text).await
    }

    async fn abandon_quietly(&mut self, m: LiteralMarker) -> Result<(), Stop> {
        if m.sync {
            return Ok(());
        }
        if m.size > self.s.max_literal {
            self.close(b"* BYE [TOOBIG] Literal too large\r\n".to_vec())
                .await;
            return Err(Stop::Client);
        }
        self.client.skip_exact(m.size).await?;
        self.drain_command().await
    }

    /// A literal over the limit: refused before it is sent when the client
    /// waits for an invitation; otherwise the bytes are already on their way
    /// and the connection is closed (RFC 7888 §4).
    async fn too_big(&mut self, tag: &[u8], sync: bool) -> Result<(), Stop> {
        if sync {
            return self.reply(tag, b"NO [TOOBIG] Literal too large").await;
        }
        self.close(b"* BYE [TOOBIG] Literal too large\r\n".to_vec())
            .await;
        Err(Stop::Client)
    }

    /// Consumes the rest of a command that will not be forwarded.
    async fn drain_command(&mut self) -> Result<(), Stop> {
        loop {
            let mut line = Vec::new();
            self.read_continuation_line(&mut line).await?;
            let marker = literal_at_end(&line).ok().flatten();
            wipe(&mut line);
            let Some(m) = marker else {
                return Ok(());
            };
            if m.size > self.s.max_literal {
                self.close(b"* BYE [TOOBIG] Literal too large\r\n".to_vec())
                    .await;
                return Err(Stop::Client);
            }
            if m.sync {
                self.continue_client().await?;
            }
            self.client.skip_exact(m.size).await?;
        }
    }

    /// Reads the next line of a command that spans literals.
    async fn read_continuation_line(&mut self, out: &mut Vec<u8>) -> Result<(), Stop> {
        match self.client.read_line(self.s.max_line, out).await {
            Ok(()) => Ok(()),
            Err(ReadError::TooLong) => {
                self.close(b"* BYE [TOOBIG] Command line too long\r\n".to_vec())
                    .await;
                Err(Stop::Client)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Invites the client to send a literal the relay reads itself.
    async fn continue_client(&mut self) -> Result<(), Stop> {
        self.events
            .send(Event::Reply(b"+ Ready for literal data\r\n".to_vec()))
            .await
            .map_err(|_| Stop::Upstream)
    }

    async fn reply(&mut self, tag: &[u8], text: &[u8]) -> Result<(), Stop> {
        self.send_reply(Vec::new(), tag, text).await
    }

    async fn send_reply(
        &mut self,
        mut bytes: Vec<u8>,
        tag: &[u8],
        text: &[u8],
    ) -> Result<(), Stop> {
        bytes.extend_from_slice(tag);
        bytes.push(b' ');
        bytes.extend_from_slice(text);
        bytes.extend_from_slice(b"\r\n");
        self.events
            .send(Event::Reply(bytes))
            .await
            .map_err(|_| Stop::Upstream)
    }

    async fn close(&mut self, bytes: Vec<u8>) {
        if self.events.send(Event::Close(bytes)).await.is_ok() {
            // The upstream half ends the session once the bytes are out.
            std::future::pending::<()>().await;
        }
    }

    async fn write_upstream(&mut self, parts: &[&[u8]]) -> Result<(), Stop> {
        for part in parts {
            self.upstream
                .write_all(part)
                .await
                .map_err(|_| Stop::Upstream)?;
        }
        self.upstream.flush().await.map_err(|_| Stop::Upstream)
    }
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

struct UpstreamHalf<UR, CW> {
    upstream: Framed<UR>,
    client: CW,
    /// Responses on their way to the client: message data, wiped once written.
    out: Zeroizing<Vec<u8>>,
    events: mpsc::Receiver<Event>,
    waiter: Option<Waiter>,
    bye_seen: bool,
}

/// What woke the upstream half.
enum Wake {
    Event(Option<Event>),
    Upstream(Result<(), ReadError>),
}

impl<UR: AsyncRead + Unpin, CW: AsyncWrite + Unpin> UpstreamHalf<UR, CW> {
    async fn run(&mut self) -> Ended {
        let lost = match self.pump().await {
            Ok(()) => false,
            Err(Lost::Upstream) => true,
            Err(Lost::Client) => return Ended::Closed,
        };
        let ended = if lost && !self.bye_seen {
            self.out.extend_from_slice(
                b"* BYE [UNAVAILABLE] Connection to the mail server was lost\r\n",
            );
            Ended::ProviderLost
        } else {
            Ended::Closed
        };
        let _ = self.flush().await;
        let _ = self.client.shutdown().await;
        ended
    }

    async fn pump(&mut self) -> Result<(), Lost> {
        loop {
            if self.upstream.buffered().is_empty() {
                self.flush().await?;
                self.upstream.relax();
                if self.out.capacity() > OUT_FLUSH * 2 {
                    self.out = Zeroizing::new(Vec::with_capacity(1024));
                }
            }
            let wake = tokio::select! {
                biased;
                event = self.events.recv() => Wake::Event(event),
                filled = self.upstream.fill() => Wake::Upstream(filled),
            };
            match wake {
                Wake::Event(Some(Event::Reply(bytes))) => self.out.extend_from_slice(&bytes),
                Wake::Event(Some(Event::Expect {
                    tag,
                    swallow,
                    outcome,
                })) => {
                    self.waiter = Some(Waiter {
                        tag,
                        swallow,
                        outcome,
                    })
                }
                Wake::Event(Some(Event::Close(bytes))) => {
                    self.out.extend_from_slice(&bytes);
                    return Ok(());
                }
                Wake::Event(None) => return Err(Lost::Client),
                Wake::Upstream(Err(_)) => return Err(Lost::Upstream),
                Wake::Upstream(Ok(())) => self.relay_response().await?,
            }
        }
    }

    /// Relays one response from the provider.
    async fn relay_response(&mut self) -> Result<(), Lost> {
        let mut head = Vec::new();
        let complete = match self.upstream.read_line(HEAD_MAX, &mut head).await {
            Ok(()) => true,
            Err(ReadError::TooLong) => false,
            Err(_) => return Err(Lost::Upstream),
        };
        if head.starts_with(b"+") {
            if let Some(waiter) = self.waiter.take() {
                if !complete {
                    self.upstream
                        .skip_line()
                        .await
                        .map_err(|_| Lost::Upstream)?;
                }
                if !waiter.swallow {
                    self.out.extend_from_slice(&head);
                    if !complete {
                        self.out.extend_from_slice(b"\r\n");
                    }
                }
                self.flush().await?;
                let _ = waiter.outcome.send(Continuation::Go);
                return Ok(());
            }
        } else if let Some(rest) = head.strip_prefix(b"* ") {
            if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"BYE") {
                self.bye_seen = true;
            }
        } else if let Some(tag) = leading_tag(&head)
            && self.waiter.as_ref().is_some_and(|w| w.tag == tag)
            && let Some(waiter) = self.waiter.take()
        {
            let _ = waiter.outcome.send(Continuation::Refused);
        }
        if might_carry_capabilities(&head) {
            let mut whole = head;
            if !complete {
                match self.upstream.read_line(CAPABILITY_MAX, &mut whole).await {
                    Ok(()) => {}
                    Err(ReadError::TooLong) => {
                        self.upstream
                            .skip_line()
                            .await
                            .map_err(|_| Lost::Upstream)?;
                        return Ok(());
                    }
                    Err(_) => return Err(Lost::Upstream),
                }
            }
            if let Some(filtered) = filter_capability_line(&whole) {
                self.out.extend_from_slice(&filtered);
                return Ok(());
            }
            return self.stream_rest(whole, true).await;
        }
        self.stream_rest(head, complete).await
    }

    /// Writes `head`, then the rest of its line if it was cut, then any
    /// literals and the lines after them, until the response ends.
    async fn stream_rest(&mut self, head: Vec<u8>, complete: bool) -> Result<(), Lost> {
        let mut segment = Zeroizing::new(head);
        let mut complete = complete;
        let mut tail = Zeroizing::new(Vec::new());
        loop {
            self.out.extend_from_slice(&segment);
            if !complete {
                keep_tail(&mut tail, &segment);
                if self.out.len() >= OUT_FLUSH {
                    self.flush().await?;
                }
                segment.clear();
                complete = match self.upstream.read_line(HEAD_MAX, &mut segment).await {
                    Ok(()) => true,
                    Err(ReadError::TooLong) => false,
                    Err(_) => return Err(Lost::Upstream),
                };
                continue;
            }
            keep_tail(&mut tail, &segment);
            let marker = literal_at_end(&tail).map_err(|_| Lost::Upstream)?;
            let Some(m) = marker else {
                return Ok(());
            };
            if m.size <= SMALL_LITERAL {
                // A small literal joins the buffered output, so a typical
                // FETCH response leaves in one write and one TLS record.
                let size = usize::try_from(m.size).map_err(|_| Lost::Upstream)?;
                self.upstream
                    .read_exact_into(size, &mut self.out)
                    .await
                    .map_err(|_| Lost::Upstream)?;
                if self.out.len() >= OUT_FLUSH {
                    self.flush().await?;
                }
            } else {
                self.write_out().await?;
                self.upstream
                    .copy_exact(m.size, &mut self.client)
                    .await
                    .map_err(|e| match e {
                        ReadError::Io(_) => Lost::Client,
                        _ => Lost::Upstream,
                    })?;
            }
            tail.clear();
            segment.clear();
            complete = match self.upstream.read_line(HEAD_MAX, &mut segment).await {
                Ok(()) => true,
                Err(ReadError::TooLong) => false,
                Err(_) => return Err(Lost::Upstream),
            };
        }
    }

    async fn write_out(&mut self) -> Result<(), Lost> {
        if !self.out.is_empty() {
            self.client
                .write_all(&self.out)
                .await
                .map_err(|_| Lost::Client)?;
            wipe_appended(&mut self.out);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Lost> {
        self.write_out().await?;
        self.client.flush().await.map_err(|_| Lost::Client)
    }
}

/// Why the upstream half stopped.
enum Lost {
    Upstream,
    Client,
}

/// Keeps the last bytes of a line, enough to find a literal marker.
fn keep_tail(tail: &mut Vec<u8>, segment: &[u8]) {
    tail.extend_from_slice(segment);
    if tail.len() > 64 {
        let cut = tail.len() - 64;
        tail.drain(..cut);
    }
}

/// `* CAPABILITY …` or a status response with a `[CAPABILITY …]` code.
fn might_carry_capabilities(head: &[u8]) -> bool {
    let Some(space) = head.iter().position(|b| *b == b' ') else {
        return false;
    };
    let rest = &head[space + 1..];
    let starts = |p: &[u8]| rest.len() >= p.len() && rest[..p.len()].eq_ignore_ascii_case(p);
    (head.starts_with(b"* ") && starts(b"CAPABILITY"))
        || memchr::memmem::find(&rest[..rest.len().min(16)], b"[").is_some_and(|i| {
            rest[i..].len() >= 11 && rest[i..i + 11].eq_ignore_ascii_case(b"[CAPABILITY")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_ends_in_headers_are_found() {
        assert!(!has_bare_cr_or_lf(b"From: a\r\nTo: b\r\n\r\n"));
        assert!(has_bare_cr_or_lf(b"From: a\nTo: b\r\n"));
        assert!(has_bare_cr_or_lf(b"From: a\rTo: b\r\n"));
    }

    #[test]
    fn capability_carriers_are_recognised() {
        assert!(might_carry_capabilities(b"* CAPABILITY IMAP4rev1\r\n"));
        assert!(might_carry_capabilities(
            b"a1 OK [CAPABILITY IMAP4rev1] x\r\n"
        ));
        assert!(!might_carry_capabilities(b"* 1 FETCH (FLAGS ())\r\n"));
        assert!(!might_carry_capabilities(b"a1 OK [READ-WRITE] x\r\n"));
    }
}
