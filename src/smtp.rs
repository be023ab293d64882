//! The SMTP submission session: what the client sees, relayed in lock-step
//! to the provider its login routes to.
//!
//! [`session`] decides (a state machine without I/O); the driver here does
//! what it says: reads lines and messages through [`client_io`], runs the
//! login policy ([`crate::login`]) and talks to the provider
//! ([`crate::provider::smtp`]). Nothing is accepted that the provider has
//! not accepted, and nothing is queued. The client's EHLO name and address
//! never leave the session; messages go upstream with their header block
//! sanitized and their body untouched. Every way a session ends is handled
//! in [`serve_peer`], in one place. Nothing here logs.

mod client_io;
mod command;
pub mod data;
mod encryption;
mod envelope;
pub mod message;
mod reply;
mod session;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::admission::Peer;
use crate::config::{Endpoint, Upstream};
use crate::login::{self, Outcome, Provider, Unreachable, Verdict};
use crate::privacy::WipedBuf;
use crate::provider::smtp::{DATA_END_TIMEOUT, UpstreamSmtp};
use crate::provider::{Target, UpstreamError};
use crate::relay::{Face, Relay};
use crate::sasl::{Credentials, Plan};
use crate::stats::Counter;
use crate::stream::ClientStream;
use client_io::{ClientIo, End, Pace};
use data::Progress;
use reply::Reply;
use session::{Awaiting, Context, Incoming, Line, Next, ProviderCaps, Session, Slow};

/// Serves one client connection until it ends. `implicit_tls` starts with a
/// TLS handshake; otherwise the session starts in plain text and offers
/// STARTTLS.
pub async fn serve<S>(relay: &Relay, stream: S, implicit_tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let face = relay.bare_face(crate::config::Protocol::Smtp);
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
    let cx = Context {
        hostname: &face.hostname,
        limits: &relay.config.limits,
        policy: &relay.policy,
        stats: &relay.stats,
    };
    let mut driver = Driver {
        relay,
        face,
        io: ClientIo::new(io, relay.config.limits.command_timeout),
        session: Session::new(cx, tls, started),
        peer,
        draining: relay.draining.subscribe(),
        upstream: None,
    };
    let end = driver.run().await;
    match end {
        End::Slow(why) => {
            relay.stats.count(Counter::Timeout);
            if why != Slow::Write {
                driver.io.queue(&why.reply());
            }
        }
        End::Evicted => driver.io.queue(&reply::evicted()),
        End::ShuttingDown => driver.io.queue(&reply::shutting_down()),
        End::Gone | End::Closed => {}
    }
    if let Some(upstream) = driver.upstream.take() {
        upstream.quit().await;
    }
    driver.io.shutdown().await;
}

/// Carries out what the session core decides.
struct Driver<'r, S> {
    relay: &'r Relay,
    /// The listener's face (its certificate for STARTTLS).
    face: &'r Face,
    io: ClientIo<S>,
    session: Session<'r>,
    peer: Peer,
    draining: watch::Receiver<bool>,
    /// The provider session: present from a successful login until the
    /// provider is lost.
    upstream: Option<UpstreamSmtp>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Driver<'_, S> {
    async fn run(&mut self) -> End {
        self.io.queue(&self.session.greeting());
        loop {
            let max = self.relay.config.limits.max_command_bytes;
            let mut pace = Pace {
                session: &mut self.session,
                peer: Some(&self.peer),
                draining: &mut self.draining,
            };
            let line = match self.io.read_line(max, &mut pace).await {
                Ok(line) => line,
                Err(end) => return end,
            };
            let next = self.session.command(line, &self.peer);
            if let Err(end) = self.execute(next).await {
                return end;
            }
        }
    }

    /// Does what the core says until it wants the next command line.
    async fn execute(&mut self, mut next: Next) -> Result<(), End> {
        loop {
            next = match next {
                Next::Reply(reply) => {
                    self.io.queue(&reply);
                    return Ok(());
                }
                Next::Close(reply) => {
                    // Replies owed for earlier pipelined commands go first.
                    self.settle().await?;
                    self.io.queue(&reply);
                    return Err(End::Closed);
                }
                Next::StartTls => {
                    self.io.queue(&reply::ready_for_tls());
                    let limits = &self.relay.config.limits;
                    self.io
                        .start_tls(&self.face.acceptor, limits.tls_handshake_timeout)
                        .await?;
                    self.session.tls_started();
                    return Ok(());
                }
                Next::LogIn(credentials) => self.log_in(credentials).await?,
                Next::Upstream(command) => {
                    let Some(upstream) = &mut self.upstream else {
                        self.settle().await?;
                        return Ok(());
                    };
                    upstream.queue(&command);
                    drop(command);
                    // The client pipelined (RFC 2920) and so may the relay:
                    // the next command is already here and the provider
                    // takes commands in groups. The replies are read when
                    // a command needs them, or when the client has sent
                    // everything it had and waits.
                    if upstream.supports(smtp_proto::EXT_PIPELINING)
                        && self.io.has_line()
                        && !self.session.owes_too_much()
                    {
                        return Ok(());
                    }
                    self.settle().await?;
                    return Ok(());
                }
                Next::ReceiveData(mut incoming) => {
                    self.io.queue(&reply::start_data());
                    self.receive_data(&mut incoming).await?;
                    self.session.message_received(incoming)
                }
                Next::ReceiveChunk {
                    size,
                    last,
                    mut incoming,
                } => {
                    self.receive_chunk(size, incoming.as_mut()).await?;
                    self.session.chunk_received(incoming, size, last)
                }
                Next::SendMessage(outgoing) => {
                    let Some(upstream) = &mut self.upstream else {
                        drop(outgoing);
                        self.settle().await?;
                        return Ok(());
                    };
                    if upstream.supports(smtp_proto::EXT_CHUNKING) {
                        // Behind any pipelined MAIL and RCPT: all go in one
                        // flight, and the replies are read in order.
                        let written = upstream.write_message(&outgoing.pieces()).await;
                        drop(outgoing);
                        if written.is_err() {
                            self.upstream = None;
                        }
                        self.settle().await?;
                        return Ok(());
                    }
                    let reply = upstream.send_data(&outgoing.pieces()).await.ok();
                    drop(outgoing);
                    self.provider_replied(reply.as_ref().map(Reply::from_upstream))
                }
                Next::Settle(line) => {
                    self.settle().await?;
                    self.session.command(line, &self.peer)
                }
                // Read on while the client's group goes on; once it has
                // sent all it had, it waits for every reply (RFC 2920).
                Next::Held => {
                    if !self.io.has_line() || self.session.owes_too_much() {
                        self.settle().await?;
                    }
                    return Ok(());
                }
            };
        }
    }

    /// Writes the queued provider commands and reads every reply still
    /// owed, in order, queueing each for the client with the relay's own
    /// replies held behind them. A lost provider ends the session.
    async fn settle(&mut self) -> Result<(), End> {
        if let Some(upstream) = &mut self.upstream
            && upstream.flush().await.is_err()
        {
            self.upstream = None;
        }
        loop {
            while let Some(held) = self.session.held_reply() {
                self.io.queue(&held);
            }
            let Some(awaiting) = self.session.awaiting() else {
                // Bytes past the last reply owed answer nothing sent: the
                // provider is out of step, and is let go.
                if self.upstream.as_ref().is_some_and(UpstreamSmtp::has_unread) {
                    self.upstream = None;
                    if let Next::Close(reply) = self.provider_replied(None) {
                        self.io.queue(&reply);
                    }
                    return Err(End::Closed);
                }
                self.session.settled(tokio::time::Instant::now());
                return Ok(());
            };
            let reply = match &mut self.upstream {
                Some(upstream) => {
                    let timeout = match awaiting {
                        Awaiting::Command => upstream.timeout(),
                        Awaiting::Message => DATA_END_TIMEOUT,
                    };
                    upstream.read_reply(timeout).await.ok()
                }
                None => None,
            };
            match self.provider_replied(reply.as_ref().map(Reply::from_upstream)) {
                Next::Reply(reply) => self.io.queue(&reply),
                Next::Close(reply) => {
                    self.io.queue(&reply);
                    return Err(End::Closed);
                }
                // The core answers a provider reply with a reply or a close.
                _ => return Err(End::Closed),
            }
        }
    }

    /// Hands the provider's reply to the core; a provider that is lost is
    /// let go without a QUIT.
    fn provider_replied(&mut self, reply: Option<Reply>) -> Next {
        let next = self.session.provider_replied(reply);
        if let Next::Close(_) = next {
            self.upstream = None;
        }
        next
    }

    /// Reads a DATA message up to its terminating `CRLF.CRLF`.
    async fn receive_data(&mut self, incoming: &mut Incoming) -> Result<(), End> {
        loop {
            match incoming
                .receiver
                .feed(self.io.buffered(), &mut incoming.message)
            {
                Progress::Done { consumed } => {
                    self.io.consume(consumed);
                    return Ok(());
                }
                Progress::NeedMore => {
                    let n = self.io.buffered().len();
                    self.io.consume(n);
                    let mut pace = Pace {
                        session: &mut self.session,
                        peer: Some(&self.peer),
                        draining: &mut self.draining,
                    };
                    self.io.fill(&mut pace).await?;
                }
            }
        }
    }

    /// Reads a BDAT chunk of `size` bytes, into `incoming` when given.
    async fn receive_chunk(
        &mut self,
        size: usize,
        mut incoming: Option<&mut Incoming>,
    ) -> Result<(), End> {
        let mut remaining = size;
        while remaining > 0 {
            if self.io.buffered().is_empty() {
                let mut pace = Pace {
                    session: &mut self.session,
                    peer: Some(&self.peer),
                    draining: &mut self.draining,
                };
                self.io.fill(&mut pace).await?;
            }
            let take = remaining.min(self.io.buffered().len());
            if let Some(incoming) = incoming.as_deref_mut() {
                incoming
                    .receiver
                    .feed_chunk(&self.io.buffered()[..take], &mut incoming.message);
            }
            self.io.consume(take);
            remaining -= take;
        }
        Ok(())
    }

    /// Runs the login policy and renders its outcome.
    async fn log_in(&mut self, credentials: Credentials) -> Result<Next, End> {
        let relay = self.relay;
        let mut provider = SmtpProvider {
            io: &mut self.io,
            session: &mut self.session,
            draining: &mut self.draining,
            ehlo_name: &relay.config.upstream_ehlo_name,
            max_line: relay.config.limits.max_command_bytes,
            client_end: None,
            answer_error_challenge: relay.members.is_some(),
        };
        let deadline = provider.session.preauth_deadline();
        let outcome =
            login::log_in(relay, &mut self.peer, credentials, &mut provider, deadline).await;
        let client_end = provider.client_end.take();
        let reply = match outcome {
            Outcome::Accepted {
                session: upstream,
                reply,
                upstream: index,
            } => {
                self.session.logged_in(ProviderCaps {
                    eight_bit: upstream.supports(smtp_proto::EXT_8BIT_MIME),
                    smtputf8: upstream.supports(smtp_proto::EXT_SMTP_UTF8),
                    encrypted_only: relay.config.upstreams[index].outgoing
                        == crate::config::Outgoing::EncryptedOnly,
                    message_with_envelope: upstream.supports(smtp_proto::EXT_CHUNKING)
                        && relay.config.egress.mode != crate::config::EgressMode::Direct,
                });
                self.upstream = Some(upstream);
                reply
            }
            Outcome::Evicted => return Err(End::Evicted),
            Outcome::TooSlow => return Err(End::Slow(Slow::Preauth)),
            other => login_reply(other),
        };
        if let Some(end) = client_end {
            return Err(end);
        }
        Ok(Next::Reply(reply))
    }
}

/// The client's reply for a login that did not succeed.
fn login_reply(outcome: Outcome<UpstreamSmtp, Reply>) -> Reply {
    match outcome {
        Outcome::Accepted { reply, .. } | Outcome::Refused { reply, .. } => reply,
        Outcome::Locked | Outcome::ProviderBudget => reply::auth_locked(),
        // Members only: one text for every permanent failure.
        Outcome::NoRoute | Outcome::Denied => reply::auth_no_route(),
        Outcome::Unreachable(Unreachable::Tls) => reply::upstream_tls_failed(),
        Outcome::Unreachable(Unreachable::TorNotReady) => reply::tor_not_ready(),
        Outcome::Unreachable(Unreachable::Network)
        | Outcome::Lost
        | Outcome::Abandoned
        | Outcome::Evicted
        | Outcome::TooSlow => reply::auth_upstream_unavailable(),
        Outcome::Unsupported => reply::unknown_mechanism(),
    }
}

/// SMTP's part of a login: connect and greet, then relay the SASL exchange
/// as [`crate::sasl::plan`] presents it. A challenge only the client can
/// answer (XOAUTH2's error challenge) is put to the client.
struct SmtpProvider<'a, 'r, S> {
    io: &'a mut ClientIo<S>,
    session: &'a mut Session<'r>,
    draining: &'a mut watch::Receiver<bool>,
    ehlo_name: &'a str,
    max_line: usize,
    /// Set when the client went away while being asked.
    client_end: Option<End>,
    /// Members only: an error challenge is answered here, not put to the
    /// client, because a stranger (refused before the provider is asked)
    /// would never see one.
    answer_error_challenge: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Provider for SmtpProvider<'_, '_, S> {
    type Session = UpstreamSmtp;
    type Reply = Reply;

    fn endpoints(upstream: &Upstream) -> &[Endpoint] {
        &upstream.smtp
    }

    async fn connect<'t>(
        &mut self,
        target: &Target<'t>,
    ) -> Result<(UpstreamSmtp, &'t Endpoint), UpstreamError> {
        UpstreamSmtp::connect(target, self.ehlo_name).await
    }

    async fn authenticate(
        &mut self,
        upstream: &mut UpstreamSmtp,
        credentials: Credentials,
    ) -> Result<Verdict<Reply>, UpstreamError> {
        let Plan::Authenticate {
            mechanism,
            initial,
            answers,
        } = crate::sasl::plan(&credentials, upstream.offered())
        else {
            return Ok(Verdict::Unsupported);
        };
        drop(credentials);
        let mut command = WipedBuf::with_capacity(256);
        command.extend_from_slices(&[b"AUTH ", mechanism.name().as_bytes()]);
        if let Some(initial) = &initial {
            command.extend_from_slices(&[b" ", initial.expose()]);
        }
        command.extend_from_slice(b"\r\n");
        let mut response = upstream.command(&command).await?;
        let mut answers = answers.into_iter();
        while response.code == 334 {
            // A challenge: answered here when the relay holds the answer
            // (LOGIN), otherwise by the client (e.g. XOAUTH2's error
            // challenge, which expects an empty line).
            let answer = match answers.next() {
                Some(answer) => {
                    let mut line = WipedBuf::copy_of(answer.expose());
                    line.extend_from_slice(b"\r\n");
                    line
                }
                // The empty response (XOAUTH2) or the abort (RFC 7628's
                // 0x01 for OAUTHBEARER) asks for the final verdict.
                None if self.answer_error_challenge => {
                    WipedBuf::copy_of(if mechanism == crate::sasl::Mechanism::OAuthBearer {
                        b"AQ==\r\n"
                    } else {
                        b"\r\n"
                    })
                }
                None => match self.ask_client(&Reply::from_upstream(&response)).await {
                    Some(line) => line,
                    None => return Ok(Verdict::Abandoned),
                },
            };
            response = upstream.command(&answer).await?;
        }
        let reply = Reply::from_upstream(&response);
        Ok(match response.code {
            235 => Verdict::Accepted(reply),
            // The provider is closing: a temporary failure for the client
            // (RFC 4954's 454), whose own connection stays usable.
            421 => Verdict::Lost,
            code => Verdict::Refused {
                reply,
                temporary: code < 500,
            },
        })
    }

    async fn close(&mut self, upstream: UpstreamSmtp) {
        upstream.quit().await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> SmtpProvider<'_, '_, S> {
    /// Puts a provider's challenge to the client and returns its answer
    /// line (`*` for anything but a complete line); `None` when the client
    /// went away.
    async fn ask_client(&mut self, challenge: &Reply) -> Option<WipedBuf> {
        self.io.queue(challenge);
        let mut pace = Pace {
            session: self.session,
            peer: None,
            draining: self.draining,
        };
        match self.io.read_line(self.max_line, &mut pace).await {
            Ok(Line::Complete(line)) => Some(line),
            Ok(_) => Some(WipedBuf::copy_of(b"*\r\n")),
            Err(end) => {
                self.client_end = Some(end);
                None
            }
        }
    }
}
