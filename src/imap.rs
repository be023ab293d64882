//! The IMAP session: before login the relay speaks for itself; after
//! login the session is the provider's, relayed with targeted rewriting.
//!
//! Before authentication the relay answers greeting, CAPABILITY, NOOP,
//! LOGOUT, ID and STARTTLS itself, with the texts of [`reply`], which name
//! neither the software nor the provider. LOGIN and AUTHENTICATE (PLAIN,
//! LOGIN, XOAUTH2, OAUTHBEARER, with SASL-IR) go through the login policy
//! ([`crate::login`]) to the provider the login routes to, whose verdict is
//! the client's. After that [`relay`] carries the session both ways. Every
//! read and write has a deadline. Credentials live only in this session's
//! memory, in wiped buffers. Nothing here logs.

pub(crate) mod framed;
pub mod relay;
pub(crate) mod reply;
pub mod syntax;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::admission::Peer;
use crate::config::{Endpoint, Upstream};
use crate::login::{self, Outcome, Provider, Verdict};
use crate::privacy::{Secret, WipedBuf};
use crate::provider::imap::{Authenticated, Completion, UpstreamImap};
use crate::provider::{ProviderStream, Target, UpstreamError};
use crate::relay::{Face, Relay};
use crate::sasl::{self, Credentials, Exchange, Mechanism, SaslError, Step};
use crate::stats::Counter;
use crate::stream::{ClientStream, WriteFailed, write_within};
use framed::{Framed, ReadError};
use reply::{tagged, untagged, write_tagged};
use syntax::{
    astrings, filter_capability_line, leading_tag, line_body, literal_at_end, parse_head, reply_tag,
};

/// Serves one client connection until it ends.
pub async fn serve<S>(relay: &Relay, stream: S, implicit_tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let face = relay.bare_face(crate::config::Protocol::Imap);
    let started = tokio::time::Instant::now();
    if let Some(io) = crate::stream::accept(relay, face, stream, implicit_tls).await {
        let peer = relay.admission.anonymous();
        serve_client(relay, face, io, implicit_tls, peer, started).await;
    }
}

/// Serves an admitted connection on a listener showing `face`, once it is
/// open (and, when `tls`, its TLS handshake done); its limits are its
/// prefix's, and `started` is when it was accepted.
pub(crate) async fn serve_client<S>(
    relay: &Relay,
    face: &Face,
    io: ClientStream<S>,
    tls: bool,
    peer: Peer,
    started: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Two boxes, one after the other: all the login needed (its state is
    // most of a session's size) is freed before the relay starts, instead
    // of staying for as long as the session lasts (hours in IDLE).
    let Some(logged_in) = Box::pin(log_in(relay, face, io, tls, peer, started)).await else {
        return;
    };
    // Every part is moved out before the relay's await and `logged_in` is
    // not named after it, so none of it stays in this future while the
    // session lasts (a use after the await would keep all of it).
    let peer = logged_in.peer;
    let ended = Box::pin(relay::run(
        logged_in.settings,
        logged_in.timeouts,
        logged_in.client,
        logged_in.client_buffered,
        logged_in.provider,
        logged_in.provider_buffered,
    ))
    .await;
    if let Some(counter) = ended.counter() {
        relay.stats.count(counter);
    }
    drop(peer);
}

/// What a login hands the relay: both streams with what was read from
/// each and not yet used, the session's settings, and its admission.
struct LoggedIn<'r, S> {
    settings: relay::Settings<'r>,
    timeouts: relay::Timeouts,
    client: ClientStream<S>,
    client_buffered: WipedBuf,
    provider: ProviderStream,
    provider_buffered: WipedBuf,
    peer: Peer,
}

/// The session up to a successful login, with its verdict written to the
/// client; `None` when the session ended before.
async fn log_in<'r, S>(
    relay: &'r Relay,
    face: &'r Face,
    io: ClientStream<S>,
    tls: bool,
    peer: Peer,
    started: tokio::time::Instant,
) -> Option<LoggedIn<'r, S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let preauth_deadline = started + relay.config.limits.preauth_timeout;
    let mut session = Session {
        relay,
        face,
        io: Framed::new(io),
        out: WipedBuf::with_capacity(512),
        tls_active: tls,
        draining: relay.draining.subscribe(),
        peer,
        preauth_deadline,
    };
    // Boxed: the login's futures are large, and a boxed one is freed once
    // the login is over.
    let upstream = match Box::pin(session.before_login()).await {
        Ok(upstream) => upstream,
        Err(closed) => {
            if closed != Closed::Done {
                relay.stats.count(Counter::Timeout);
            }
            if closed != Closed::Slow {
                let _ = session.flush().await;
                let _ = tokio::time::timeout(
                    relay.config.limits.command_timeout,
                    session.io.get_mut().shutdown(),
                )
                .await;
            }
            return None;
        }
    };
    // The login verdict (and any capability list) goes out before relaying.
    match session.flush().await {
        Ok(()) => {}
        Err(closed) => {
            if closed == Closed::Slow {
                relay.stats.count(Counter::Timeout);
            }
            return None;
        }
    }
    let limits = &relay.config.limits;
    let settings = relay::Settings {
        policy: &relay.policy,
        max_line: limits.max_imap_line_bytes,
        max_literal: limits.max_message_bytes as u64,
        literal_plus: upstream.has("LITERAL+"),
        literal_minus: upstream.has("LITERAL-"),
        has_id: upstream.has("ID"),
        max_header_bytes: limits.max_header_bytes,
        max_header_fields: limits.max_header_fields,
        clock: crate::sanitize::date::now,
        deltachat_push: relay.config.deltachat_push,
    };
    let timeouts = relay::Timeouts {
        idle: limits.imap_idle_timeout,
        client_write: limits.command_timeout,
        provider: limits.upstream_timeout,
        literal_grace: limits.command_timeout,
        literal_bytes_per_sec: limits.min_transfer_bytes_per_sec,
    };
    let Session { io, peer, .. } = session;
    let (client, client_buffered) = io.into_parts();
    let (provider, provider_buffered) = upstream.into_parts();
    Some(LoggedIn {
        settings,
        timeouts,
        client,
        client_buffered,
        provider,
        provider_buffered,
        peer,
    })
}

/// The session ends before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The client left, logged out, or was told why it must go.
    Done,
    /// A deadline passed and the client was told (counted).
    TimedOut,
    /// The client stopped reading what the relay wrote (counted).
    Slow,
}

impl From<ReadError> for Closed {
    fn from(_: ReadError) -> Self {
        Closed::Done
    }
}

struct Session<'r, S> {
    relay: &'r Relay,
    /// The listener's face (its certificate for STARTTLS).
    face: &'r Face,
    io: Framed<ClientStream<S>>,
    out: WipedBuf,
    tls_active: bool,
    draining: tokio::sync::watch::Receiver<bool>,
    /// Admission: lockouts, eviction. Held until the session ends.
    peer: Peer,
    /// The client must have logged in by then.
    preauth_deadline: tokio::time::Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<'_, S> {
    fn capabilities(&self) -> &'static str {
        if self.tls_active {
            reply::CAPABILITIES_TLS
        } else {
            reply::CAPABILITIES_PLAIN
        }
    }

    /// Runs the session until a login succeeds upstream (the provider
    /// connection is returned) or the session ends.
    async fn before_login(&mut self) -> Result<UpstreamImap, Closed> {
        let greeting = format!(
            "* OK [CAPABILITY {}] IMAP server ready\r\n",
            self.capabilities()
        );
        self.out.extend_from_slice(greeting.as_bytes());
        loop {
            self.flush().await?;
            let Some(command) = self.read_command().await? else {
                continue;
            };
            let Ok(head) = parse_head(&command) else {
                let tag = reply_tag(&command).to_vec();
                self.tagged(&tag, tagged::MALFORMED);
                continue;
            };
            let tag = head.tag.to_vec();
            let name = head.name.to_ascii_uppercase();
            match name.as_slice() {
                b"CAPABILITY" => {
                    let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                    self.out.extend_from_slice(line.as_bytes());
                    self.tagged(&tag, tagged::CAPABILITY);
                }
                b"NOOP" => self.tagged(&tag, tagged::NOOP),
                b"ID" => {
                    // The client's ID stays here; the relay's is empty.
                    self.out.extend_from_slice(untagged::ID_NIL.as_bytes());
                    self.tagged(&tag, tagged::ID);
                }
                b"LOGOUT" => {
                    self.out.extend_from_slice(untagged::LOGGING_OUT.as_bytes());
                    self.tagged(&tag, tagged::LOGOUT);
                    return Err(Closed::Done);
                }
                b"STARTTLS" => self.start_tls(&tag).await?,
                b"LOGIN" | b"AUTHENTICATE" if !self.tls_active => {
                    self.tagged(&tag, tagged::TLS_FIRST);
                }
                b"LOGIN" => {
                    let Some(credentials) = login_credentials(head.rest) else {
                        self.tagged(&tag, tagged::LOGIN_SYNTAX);
                        continue;
                    };
                    if let Some(upstream) = self.log_in(&tag, credentials).await? {
                        return Ok(upstream);
                    }
                }
                b"AUTHENTICATE" => {
                    let Some(credentials) = self.collect_sasl(&tag, head.rest).await? else {
                        continue;
                    };
                    if let Some(upstream) = self.log_in(&tag, credentials).await? {
                        return Ok(upstream);
                    }
                }
                _ => self.tagged(&tag, tagged::NOT_BEFORE_LOGIN),
            }
        }
    }

    /// Reads one command with its literals (inviting synchronizing ones),
    /// bounded by the command line limit. `None` when it was refused.
    async fn read_command(&mut self) -> Result<Option<WipedBuf>, Closed> {
        let max = self.relay.config.limits.max_imap_line_bytes;
        let mut command = WipedBuf::new();
        let mut segment_start = 0;
        loop {
            let room = max.saturating_sub(command.len()).max(1);
            // Between commands, a relay shutting down says BYE instead.
            let idle = command.is_empty() && self.io.buffered().is_empty();
            let deadline = self.read_deadline();
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.io.read_line(room, &mut command)) => read,
                _ = Relay::until_draining(&mut self.draining), if idle => {
                    return Err(self.say_bye(untagged::SHUTTING_DOWN).await);
                }
                _ = self.peer.evicted() => return Err(self.say_bye(untagged::EVICTED).await),
            };
            let Ok(read) = read else {
                return Err(self.timed_out().await);
            };
            match read {
                Ok(()) => {}
                Err(ReadError::TooLong) => {
                    let tag = leading_tag(&command).unwrap_or(b"*").to_vec();
                    self.io.skip_line().await?;
                    self.tagged(&tag, tagged::LINE_TOO_LONG);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let marker = literal_at_end(&command[segment_start..]);
            let m = match marker {
                Ok(None) => return Ok(Some(command)),
                Ok(Some(m)) if (m.size as usize).saturating_add(command.len()) <= max => m,
                _ => {
                    let tag = leading_tag(&command).unwrap_or(b"*").to_vec();
                    if matches!(marker, Ok(Some(m)) if m.sync) {
                        // Never invited: the client drops the command.
                        self.tagged(&tag, tagged::LITERAL_TOO_LARGE);
                        return Ok(None);
                    }
                    return Err(self.say_bye(untagged::LITERAL_TOO_LARGE).await);
                }
            };
            if m.sync {
                self.out.extend_from_slice(reply::CONTINUE.as_bytes());
                self.flush().await?;
            }
            let Ok(read) = tokio::time::timeout_at(
                self.read_deadline(),
                self.io.read_exact_into(m.size as usize, &mut command),
            )
            .await
            else {
                return Err(self.timed_out().await);
            };
            read?;
            segment_start = command.len();
        }
    }

    async fn start_tls(&mut self, tag: &[u8]) -> Result<(), Closed> {
        if self.tls_active {
            self.tagged(tag, tagged::TLS_ACTIVE);
            return Ok(());
        }
        self.tagged(tag, tagged::BEGIN_TLS);
        self.flush().await?;
        // Whatever the client pipelined after STARTTLS came in plain text and
        // may have been injected by the network: it is dropped.
        self.io.discard_buffered();
        let plain = std::mem::replace(&mut self.io, Framed::new(ClientStream::Gone));
        let (ClientStream::Plain(plain), _) = plain.into_parts() else {
            return Err(Closed::Done);
        };
        let tls = tokio::time::timeout(
            self.relay.config.limits.tls_handshake_timeout,
            self.face.acceptor.accept(plain),
        )
        .await
        .map_err(|_| Closed::Done)?
        .map_err(|_| Closed::Done)?;
        self.io = Framed::new(ClientStream::Tls(Box::new(tls)));
        self.tls_active = true;
        Ok(())
    }

    /// AUTHENTICATE: reads the SASL exchange from the client. `None` when
    /// it ended here (the reply is queued).
    async fn collect_sasl(
        &mut self,
        tag: &[u8],
        rest: &[u8],
    ) -> Result<Option<Credentials>, Closed> {
        let rest = line_body(rest);
        let mut parts = rest.splitn(2, |b| *b == b' ');
        let name = parts.next().unwrap_or_default();
        let initial = parts.next().map(Secret::copy_of);
        let Some(mechanism) = Mechanism::from_name(name) else {
            self.tagged(tag, tagged::UNKNOWN_MECHANISM);
            return Ok(None);
        };
        let (mut exchange, mut step) = Exchange::start(mechanism, initial);
        loop {
            match step {
                Step::Done(Ok(credentials)) => return Ok(Some(credentials)),
                Step::Done(Err(SaslError::Cancelled)) => {
                    self.tagged(tag, tagged::SASL_CANCELLED);
                    return Ok(None);
                }
                Step::Done(Err(SaslError::NoAuthzid)) => {
                    self.tagged(tag, tagged::OAUTHBEARER_WITHOUT_AUTHZID);
                    return Ok(None);
                }
                Step::Done(Err(_)) => {
                    self.tagged(tag, tagged::SASL_MALFORMED);
                    return Ok(None);
                }
                Step::Challenge(challenge) => {
                    let Some(answer) = self.sasl_answer(tag, challenge).await? else {
                        return Ok(None);
                    };
                    step = exchange.answer(answer);
                }
            }
        }
    }

    /// Sends a continuation with `challenge` and reads the client's answer;
    /// `None` when it was too long (the reply is queued).
    async fn sasl_answer(
        &mut self,
        tag: &[u8],
        challenge: &[u8],
    ) -> Result<Option<Secret>, Closed> {
        self.out.extend_from_slices(&[b"+ ", challenge, b"\r\n"]);
        self.flush().await?;
        let mut line = WipedBuf::new();
        let max = self.relay.config.limits.max_imap_line_bytes;
        let Ok(read) =
            tokio::time::timeout_at(self.read_deadline(), self.io.read_line(max, &mut line)).await
        else {
            return Err(self.timed_out().await);
        };
        match read {
            Ok(()) => Ok(Some(Secret::copy_of(line_body(&line)))),
            Err(ReadError::TooLong) => {
                self.io.skip_line().await?;
                self.tagged(tag, tagged::SASL_TOO_LONG);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the login policy and gives the client its verdict. Returns the
    /// provider connection when the provider said OK.
    async fn log_in(
        &mut self,
        tag: &[u8],
        credentials: Credentials,
    ) -> Result<Option<UpstreamImap>, Closed> {
        let outcome = login::log_in(
            self.relay,
            &mut self.peer,
            credentials,
            &mut ImapProvider,
            self.preauth_deadline,
        )
        .await;
        match outcome {
            Outcome::Evicted => return Err(self.say_bye(untagged::EVICTED).await),
            Outcome::TooSlow => return Err(self.timed_out().await),
            _ => {}
        }
        if let Some(text) = reply::login_failure(&outcome) {
            self.tagged(tag, text);
            return Ok(None);
        }
        match outcome {
            Outcome::Accepted { session, reply, .. } => {
                if reply.capabilities.is_err() {
                    // Logged in, but the provider went away when asked
                    // what the client may use now.
                    self.relay.stats.count(Counter::ProviderLost);
                    self.tagged(tag, tagged::UNREACHABLE);
                    return Ok(None);
                }
                self.relay_verdict(tag, reply);
                Ok(Some(session))
            }
            Outcome::Refused { reply, .. } => {
                self.relay_verdict(tag, reply);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// The provider's verdict under the client's tag, capability lists
    /// filtered.
    fn relay_verdict(&mut self, tag: &[u8], verdict: ImapVerdict) {
        for line in &verdict.completion.untagged {
            self.relay_line(line);
        }
        if let Ok(Some(list)) = verdict.capabilities {
            self.out.extend_from_slice(b"* CAPABILITY ");
            self.out.extend_from_slice(&syntax::filter_capabilities(
                &list,
                self.relay.config.deltachat_push,
            ));
            self.out.extend_from_slice(b"\r\n");
        }
        let mut line =
            WipedBuf::with_capacity(tag.len() + verdict.completion.status_and_text.len() + 1);
        line.extend_from_slices(&[tag, b" ", &verdict.completion.status_and_text]);
        self.relay_line(&line);
    }

    fn relay_line(&mut self, line: &[u8]) {
        match filter_capability_line(line, self.relay.config.deltachat_push) {
            Some(filtered) => self.out.extend_from_slice(&filtered),
            None => self.out.extend_from_slice(line),
        }
    }

    /// The client stayed silent (or sent a literal too slowly) past the
    /// command timeout, or past the pre-authentication deadline: say so.
    async fn timed_out(&mut self) -> Closed {
        let bye = if tokio::time::Instant::now() >= self.preauth_deadline {
            untagged::PREAUTH_TIMEOUT
        } else {
            untagged::IDLE
        };
        match self.say_bye(bye).await {
            Closed::Slow => Closed::Slow,
            _ => Closed::TimedOut,
        }
    }

    /// Writes `bye` (and anything queued); the session then ends.
    async fn say_bye(&mut self, bye: &str) -> Closed {
        self.out.extend_from_slice(bye.as_bytes());
        match self.flush().await {
            Err(Closed::Slow) => Closed::Slow,
            _ => Closed::Done,
        }
    }

    /// When the next read from a client that has not logged in must end:
    /// the command timeout, or the pre-authentication deadline if sooner.
    fn read_deadline(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::now() + self.relay.config.limits.command_timeout;
        idle.min(self.preauth_deadline)
    }

    fn tagged(&mut self, tag: &[u8], text: &str) {
        write_tagged(&mut self.out, tag, text);
    }

    /// Writes what is queued, within the command timeout.
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.relay.config.limits.command_timeout;
        let written = write_within(self.io.get_mut(), &self.out, timeout).await;
        self.out.clear();
        match written {
            Ok(()) => Ok(()),
            Err(WriteFailed::Broken) => Err(Closed::Done),
            Err(WriteFailed::Stalled) => Err(Closed::Slow),
        }
    }
}

/// `LOGIN user password` as credentials (PLAIN, the form every provider
/// path takes).
fn login_credentials(args: &[u8]) -> Option<Credentials> {
    let values = astrings(args).ok()?;
    match values.as_slice() {
        [user, password] => sasl::from_user_password(user, password),
        _ => None,
    }
}

/// The provider's verdict on a login, as the client will see it.
pub(crate) struct ImapVerdict {
    completion: Completion,
    /// The provider's capability list, asked for when the verdict carried
    /// none (filtered before the client sees it); `Err` when the provider
    /// went away instead of answering.
    capabilities: Result<Option<WipedBuf>, UpstreamError>,
}

/// IMAP's part of a login: connect, greet, send the generic ID, then
/// authenticate as [`crate::sasl::plan`] presents the credentials.
struct ImapProvider;

impl Provider for ImapProvider {
    type Session = UpstreamImap;
    type Reply = ImapVerdict;

    fn endpoints(upstream: &Upstream) -> &[Endpoint] {
        &upstream.imap
    }

    async fn connect<'t>(
        &mut self,
        target: &Target<'t>,
    ) -> Result<(UpstreamImap, &'t Endpoint), UpstreamError> {
        UpstreamImap::connect(target).await
    }

    async fn authenticate(
        &mut self,
        upstream: &mut UpstreamImap,
        credentials: Credentials,
    ) -> Result<Verdict<ImapVerdict>, UpstreamError> {
        let authenticated = upstream.authenticate(&credentials).await?;
        drop(credentials);
        Ok(match authenticated {
            Authenticated::Accepted(completion) => {
                // Tell the client what it may use now, filtered, if the
                // verdict itself does not.
                let mut probe = WipedBuf::copy_of(b"m ");
                probe.extend_from_slice(&completion.status_and_text);
                let capabilities = match filter_capability_line(&probe, false) {
                    Some(_) => Ok(None),
                    None => upstream.refresh_capabilities().await.map(Some),
                };
                Verdict::Accepted(ImapVerdict {
                    completion,
                    capabilities,
                })
            }
            Authenticated::Refused(completion) => Verdict::Refused {
                temporary: completion.is_temporary(),
                reply: ImapVerdict {
                    completion,
                    capabilities: Ok(None),
                },
            },
            Authenticated::Unsupported => Verdict::Unsupported,
        })
    }

    async fn close(&mut self, _upstream: UpstreamImap) {}
}
