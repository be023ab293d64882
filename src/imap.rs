//! The IMAP session: what the client sees before login is the relay's own,
//! after login it is the provider's, relayed with targeted rewriting.
//!
//! Before authentication the relay answers greeting, CAPABILITY, NOOP,
//! LOGOUT, ID and STARTTLS itself, with texts that name neither the software
//! nor the upstream. LOGIN and AUTHENTICATE (PLAIN, LOGIN, XOAUTH2,
//! OAUTHBEARER, with SASL-IR) are passed through to the upstream the login
//! routes to, whose verdict is the client's. After that [`relay`] carries the
//! session both ways. Credentials live only in this session's memory and are
//! wiped after use. Nothing here logs.

pub mod framed;
pub mod relay;
pub(crate) mod reply;
pub mod syntax;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::admission::{LoginGate, Peer};
use crate::egress::EgressError;
use crate::egress::IsolationKey;
use crate::privacy::{Secret, wipe};
use crate::provider::UpstreamError;
use crate::provider::imap::{AuthOutcome, UpstreamImap};
use crate::relay::Relay;
use crate::sasl::{self, ClientCredentials, Mechanism};
use crate::stats::Counter;
use crate::stream::ClientStream;
use framed::{Framed, ReadError};
use syntax::{
    astrings, filter_capability_line, leading_tag, line_body, literal_at_end, parse_head, reply_tag,
};

/// Capabilities before login over TLS: what the relay itself does. No
/// software name, nothing from any provider.
const CAPABILITIES_TLS: &str =
    "IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER";
/// A login with no route: Dovecot's wording for a wrong password, so that
/// the relay's routing table cannot be probed.
const AUTH_FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";

/// A login while its login or network is locked out: one reply for every
/// password, temporary so that a client does not ask for a new password.
const AUTH_LOCKED: &str = "NO [UNAVAILABLE] Too many failed logins, try again later";

/// Capabilities before STARTTLS: no way to log in yet.
const CAPABILITIES_PLAIN: &str = "IMAP4rev1 STARTTLS LOGINDISABLED ID";

/// Serves one client connection until it ends.
pub async fn serve<S>(relay: &Relay, stream: S, implicit_tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_peer(relay, stream, implicit_tls, relay.admission.anonymous()).await
}

/// [`serve`] for an admitted connection: its limits are its prefix's.
pub async fn serve_peer<S>(relay: &Relay, stream: S, implicit_tls: bool, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let preauth_deadline = tokio::time::Instant::now() + relay.config.limits.preauth_timeout;
    let Some(io) = crate::stream::accept_admitted(relay, stream, implicit_tls, &peer).await else {
        return;
    };
    let mut session = Session {
        relay,
        io: Framed::new(io),
        out: Vec::with_capacity(512),
        tls_active: implicit_tls,
        draining: relay.draining.subscribe(),
        peer,
        preauth_deadline,
        stalled: false,
    };
    let upstream = match session.before_login().await {
        Ok(Some(upstream)) => upstream,
        Ok(None) | Err(Closed) => {
            if !session.stalled {
                let _ = session.flush().await;
                let _ = tokio::time::timeout(
                    relay.config.limits.command_timeout,
                    session.io.get_mut().shutdown(),
                )
                .await;
            }
            return;
        }
    };
    // The login verdict (and any capability list) goes out before relaying.
    if session.flush().await.is_err() {
        return;
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
    };
    let timeouts = relay::Timeouts {
        idle: limits.imap_idle_timeout,
        client_write: limits.command_timeout,
        provider: limits.upstream_timeout,
        literal_grace: limits.command_timeout,
        literal_bytes_per_sec: limits.min_transfer_bytes_per_sec,
    };
    let _peer = session.peer;
    let (client, client_buffered) = session.io.into_parts();
    let (provider, provider_buffered) = upstream.into_parts();
    let ended = relay::run(
        settings,
        timeouts,
        client,
        crate::privacy::WipedBuf::copy_of(&client_buffered),
        provider,
        crate::privacy::WipedBuf::copy_of(&provider_buffered),
    )
    .await;
    if let Some(counter) = ended.counter() {
        relay.stats.count(counter);
    }
}

/// The session ends: the client left, timed out or logged out.
#[derive(Debug)]
struct Closed;

impl From<ReadError> for Closed {
    fn from(_: ReadError) -> Self {
        Closed
    }
}

struct Session<'r, S> {
    relay: &'r Relay,
    io: Framed<ClientStream<S>>,
    out: Vec<u8>,
    tls_active: bool,
    draining: tokio::sync::watch::Receiver<bool>,
    /// Admission: lockouts, eviction. Held until the session ends.
    peer: Peer,
    /// The client must have logged in by then.
    preauth_deadline: tokio::time::Instant,
    /// The client stopped reading what the relay wrote (counted once).
    stalled: bool,
}

/// A command read whole, literals inline, with a fixed tag.
struct Command {
    bytes: Vec<u8>,
}

impl Drop for Command {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<'_, S> {
    fn capabilities(&self) -> &'static str {
        if self.tls_active {
            CAPABILITIES_TLS
        } else {
            CAPABILITIES_PLAIN
        }
    }

    /// Runs the session until a login succeeds upstream (the provider
    /// connection is returned) or the client leaves.
    async fn before_login(&mut self) -> Result<Option<UpstreamImap>, Closed> {
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
            let head = match parse_head(&command.bytes) {
                Ok(head) => head,
                Err(_) => {
                    let tag = reply_tag(&command.bytes).to_vec();
                    self.tagged(&tag, "BAD Malformed command");
                    continue;
                }
            };
            let tag = head.tag.to_vec();
            let name = head.name.to_ascii_uppercase();
            let rest = head.rest.to_vec();
            match name.as_slice() {
                b"CAPABILITY" => {
                    let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                    self.out.extend_from_slice(line.as_bytes());
                    self.tagged(&tag, "OK CAPABILITY completed");
                }
                b"NOOP" => self.tagged(&tag, "OK NOOP completed"),
                b"ID" => {
                    // The client's ID stays here; the relay's is empty.
                    self.out.extend_from_slice(b"* ID NIL\r\n");
                    self.tagged(&tag, "OK ID completed");
                }
                b"LOGOUT" => {
                    self.out.extend_from_slice(b"* BYE Logging out\r\n");
                    self.tagged(&tag, "OK LOGOUT completed");
                    self.flush().await?;
                    return Ok(None);
                }
                b"STARTTLS" => self.start_tls(&tag).await?,
                b"LOGIN" | b"AUTHENTICATE" if !self.tls_active => {
                    self.tagged(&tag, "NO [PRIVACYREQUIRED] Use STARTTLS first");
                }
                b"LOGIN" => {
                    let credentials = match login_credentials(&rest) {
                        Some(c) => c,
                        None => {
                            self.tagged(&tag, "BAD Expected LOGIN user password");
                            continue;
                        }
                    };
                    if let Some(upstream) = self.log_in(&tag, credentials).await? {
                        return Ok(Some(upstream));
                    }
                }
                b"AUTHENTICATE" => {
                    let Some(credentials) = self.collect_sasl(&tag, &rest).await? else {
                        continue;
                    };
                    if let Some(upstream) = self.log_in(&tag, credentials).await? {
                        return Ok(Some(upstream));
                    }
                }
                _ => self.tagged(&tag, "BAD Command unknown or not allowed before login"),
            }
        }
    }

    /// Reads one command with its literals (inviting synchronizing ones),
    /// bounded by the command line limit. `None` when it was refused.
    async fn read_command(&mut self) -> Result<Option<Command>, Closed> {
        let max = self.relay.config.limits.max_imap_line_bytes;
        let mut command = Command { bytes: Vec::new() };
        let mut segment_start = 0;
        loop {
            let room = max.saturating_sub(command.bytes.len()).max(1);
            // Between commands, a relay shutting down says BYE instead.
            let idle = command.bytes.is_empty() && self.io.buffered().is_empty();
            let deadline = self.read_deadline();
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.io.read_line(room, &mut command.bytes)) => Some(read),
                _ = Relay::until_draining(&mut self.draining), if idle => None,
                _ = self.peer.evicted() => {
                        self.out.extend_from_slice(
                        b"* BYE [UNAVAILABLE] The relay is full and this connection has not logged in; try again later\r\n",
                    );
                    let _ = self.flush().await;
                    return Err(Closed);
                }
            };
            let Some(read) = read else {
                self.out.extend_from_slice(
                    b"* BYE [UNAVAILABLE] The relay is shutting down, try again later\r\n",
                );
                let _ = self.flush().await;
                return Err(Closed);
            };
            let Ok(read) = read else {
                return Err(self.timed_out().await);
            };
            match read {
                Ok(()) => {}
                Err(ReadError::TooLong) => {
                    let tag = leading_tag(&command.bytes).unwrap_or(b"*").to_vec();
                    self.io.skip_line().await?;
                    self.tagged(&tag, "BAD [TOOBIG] Command line too long");
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let marker = literal_at_end(&command.bytes[segment_start..]);
            let m = match marker {
                Ok(None) => return Ok(Some(command)),
                Ok(Some(m)) if (m.size as usize).saturating_add(command.bytes.len()) <= max => m,
                _ => {
                    let tag = leading_tag(&command.bytes).unwrap_or(b"*").to_vec();
                    if matches!(marker, Ok(Some(m)) if m.sync) {
                        // Never invited: the client drops the command.
                        self.tagged(&tag, "BAD [TOOBIG] Literal too large");
                        return Ok(None);
                    }
                    self.out
                        .extend_from_slice(b"* BYE [TOOBIG] Literal too large\r\n");
                    self.flush().await?;
                    return Err(Closed);
                }
            };
            if m.sync {
                self.out.extend_from_slice(b"+ Ready for literal data\r\n");
                self.flush().await?;
            }
            let Ok(read) = tokio::time::timeout_at(
                self.read_deadline(),
                self.io.read_exact_into(m.size as usize, &mut command.bytes),
            )
            .await
            else {
                return Err(self.timed_out().await);
            };
            read?;
            segment_start = command.bytes.len();
        }
    }

    async fn start_tls(&mut self, tag: &[u8]) -> Result<(), Closed> {
        if self.tls_active {
            self.tagged(tag, "BAD TLS is already active");
            return Ok(());
        }
        self.tagged(tag, "OK Begin TLS negotiation now");
        self.flush().await?;
        // Whatever the client pipelined after STARTTLS came in plain text and
        // may have been injected by the network: it is dropped.
        self.io.discard_buffered();
        let plain = std::mem::replace(&mut self.io, Framed::new(ClientStream::Gone));
        let (ClientStream::Plain(plain), _) = plain.into_parts() else {
            return Err(Closed);
        };
        let tls = tokio::time::timeout(
            self.relay.config.limits.tls_handshake_timeout,
            self.relay.acceptor.accept(plain),
        )
        .await
        .map_err(|_| Closed)?
        .map_err(|_| Closed)?;
        self.io = Framed::new(ClientStream::Tls(Box::new(tls)));
        self.tls_active = true;
        Ok(())
    }

    /// AUTHENTICATE: reads the SASL exchange from the client into
    /// credentials the upstream can be given. `None` when it failed here.
    async fn collect_sasl(
        &mut self,
        tag: &[u8],
        rest: &[u8],
    ) -> Result<Option<ClientCredentials>, Closed> {
        let rest = line_body(rest);
        let mut parts = rest.splitn(2, |b| *b == b' ');
        let name = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(|s| Secret::new(s.to_vec()));
        let Some(mechanism) = Mechanism::ALL
            .into_iter()
            .find(|m| m.name().as_bytes() == name.as_slice())
        else {
            self.tagged(tag, "NO [CANNOT] Unsupported authentication mechanism");
            return Ok(None);
        };
        let parsed = match mechanism {
            Mechanism::Login => {
                let user = match initial {
                    Some(user) => user,
                    None => match self.sasl_step(tag, b"VXNlcm5hbWU6").await? {
                        Some(user) => user,
                        None => return Ok(None),
                    },
                };
                let Some(password) = self.sasl_step(tag, b"UGFzc3dvcmQ6").await? else {
                    return Ok(None);
                };
                sasl::login_credentials(user, password)
            }
            _ => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.sasl_step(tag, b"").await? {
                        Some(r) => r,
                        None => return Ok(None),
                    },
                };
                match mechanism {
                    Mechanism::Plain => sasl::parse_plain(response.expose()),
                    _ => sasl::parse_token(mechanism, response.expose()),
                }
            }
        };
        match parsed {
            Ok(c) => Ok(Some(c)),
            Err(_) => {
                self.tagged(tag, "BAD Malformed authentication response");
                Ok(None)
            }
        }
    }

    /// Sends a continuation with `challenge` and reads the client's answer.
    async fn sasl_step(&mut self, tag: &[u8], challenge: &[u8]) -> Result<Option<Secret>, Closed> {
        self.out.extend_from_slice(b"+ ");
        self.out.extend_from_slice(challenge);
        self.out.extend_from_slice(b"\r\n");
        self.flush().await?;
        let mut line = Vec::new();
        let max = self.relay.config.limits.max_imap_line_bytes;
        let Ok(read) =
            tokio::time::timeout_at(self.read_deadline(), self.io.read_line(max, &mut line)).await
        else {
            wipe(&mut line);
            return Err(self.timed_out().await);
        };
        match read {
            Ok(()) => {}
            Err(ReadError::TooLong) => {
                wipe(&mut line);
                self.io.skip_line().await?;
                self.tagged(tag, "BAD [TOOBIG] Authentication response too long");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let response = Secret::new(line_body(&line).to_vec());
        wipe(&mut line);
        if response.expose() == b"*" {
            self.tagged(tag, "BAD Authentication cancelled");
            return Ok(None);
        }
        Ok(Some(response))
    }

    /// Routes the login, connects and authenticates upstream, and gives the
    /// client the provider's verdict. Returns the provider connection when
    /// it said OK.
    async fn log_in(
        &mut self,
        tag: &[u8],
        credentials: ClientCredentials,
    ) -> Result<Option<UpstreamImap>, Closed> {
        let _turn = self.peer.auth_turn().await;
        let failure_at = tokio::time::Instant::now() + self.relay.config.limits.auth_failure_delay;
        let login = credentials.login();
        if self.peer.login_gate(&login) == LoginGate::Locked {
            self.relay.stats.count(Counter::LoginLocked);
            // One reply for every password, no sooner than a refusal; the
            // provider is not asked, so a right guess teaches nothing. Not
            // charged: the lockout must end even while a client (perhaps
            // the victim's own, with the right password) keeps retrying.
            tokio::time::sleep_until(failure_at).await;
            self.tagged(tag, AUTH_LOCKED);
            return Ok(None);
        }
        let config = &self.relay.config;
        let route = config.route(login.expose());
        let Some((index, endpoint)) =
            route.and_then(|i| Some((i, config.upstreams[i].imap.as_ref()?)))
        else {
            self.relay.stats.count(Counter::LoginNoRoute);
            self.peer.login_failed(&login);
            tokio::time::sleep_until(failure_at).await;
            self.tagged(tag, AUTH_FAILED);
            return Ok(None);
        };
        let isolation = IsolationKey::for_session(config.egress.isolate, &login);
        let connected = UpstreamImap::connect(
            endpoint,
            self.relay.upstream_tls[index].clone(),
            &self.relay.egress,
            &isolation,
            config.limits.upstream_timeout,
        )
        .await;
        let mut upstream = match connected {
            Ok(u) => u,
            Err(UpstreamError::Tls | UpstreamError::NoStartTls) => {
                self.relay.stats.count(Counter::ProviderUnreachable);
                self.tagged(
                    tag,
                    "NO [UNAVAILABLE] The mail server failed TLS verification; try again later",
                );
                return Ok(None);
            }
            Err(UpstreamError::Egress(EgressError::TorNotReady)) => {
                self.relay.stats.count(Counter::TorNotReady);
                self.tagged(
                    tag,
                    "NO [UNAVAILABLE] The relay's Tor connection is still starting; try again in a minute",
                );
                return Ok(None);
            }
            Err(_) => {
                self.relay.stats.count(Counter::ProviderUnreachable);
                self.tagged(
                    tag,
                    "NO [UNAVAILABLE] The mail server is unreachable; try again later",
                );
                return Ok(None);
            }
        };
        let outcome = upstream.authenticate(&credentials).await;
        drop(credentials);
        match outcome {
            Ok(AuthOutcome::Accepted(done)) => {
                self.relay.stats.count(Counter::Login);
                self.peer.logged_in(&login);
                self.relay_untagged(&done.untagged);
                if filter_capability_line(&prefixed(tag, &done.status_and_text)).is_none() {
                    // Tell the client what it may use now, filtered.
                    match upstream.refresh_capabilities().await {
                        Ok(list) => {
                            let mut line = b"* CAPABILITY ".to_vec();
                            line.extend_from_slice(&syntax::filter_capabilities(&list));
                            line.extend_from_slice(b"\r\n");
                            self.out.extend_from_slice(&line);
                        }
                        Err(_) => {
                            self.relay.stats.count(Counter::ProviderLost);
                            self.tagged(
                                tag,
                                "NO [UNAVAILABLE] The mail server is unreachable; try again later",
                            );
                            return Ok(None);
                        }
                    }
                }
                self.relay_tagged(tag, &done.status_and_text);
                Ok(Some(upstream))
            }
            Ok(AuthOutcome::Refused(done)) => {
                self.relay.stats.count(Counter::LoginRefusedByProvider);
                if memchr::memmem::find(&done.status_and_text, b"[UNAVAILABLE]").is_some() {
                    // Temporary: the network is charged, not the login.
                    self.peer.login_failed_temporarily();
                } else {
                    self.peer.login_failed(&login);
                    tokio::time::sleep_until(failure_at).await;
                }
                self.relay_untagged(&done.untagged);
                self.relay_tagged(tag, &done.status_and_text);
                Ok(None)
            }
            Ok(AuthOutcome::Unsupported) => {
                self.tagged(
                    tag,
                    "NO [CANNOT] Your mail server does not offer this authentication mechanism",
                );
                Ok(None)
            }
            Err(_) => {
                // Lost or silent mid-login: the network pays, as for a
                // temporary refusal.
                self.peer.login_failed_temporarily();
                self.relay.stats.count(Counter::ProviderLost);
                self.tagged(
                    tag,
                    "NO [UNAVAILABLE] The mail server is unreachable; try again later",
                );
                Ok(None)
            }
        }
    }

    /// Provider responses from before the login completed, capability lists
    /// filtered.
    /// The client stayed silent (or sent a literal too slowly) past the
    /// command timeout before logging in: say so, then end the session.
    async fn timed_out(&mut self) -> Closed {
        if tokio::time::Instant::now() >= self.preauth_deadline {
            self.out
                .extend_from_slice(b"* BYE [UNAVAILABLE] Took too long to log in\r\n");
        } else {
            self.out
                .extend_from_slice(b"* BYE [UNAVAILABLE] Autologout: idle for too long\r\n");
        }
        let _ = self.flush().await;
        // A client that does not read the goodbye either was counted there.
        if !self.stalled {
            self.relay.stats.count(Counter::Timeout);
        }
        Closed
    }

    /// When the next read from a client that has not logged in must end:
    /// the command timeout, or the pre-authentication deadline if sooner.
    fn read_deadline(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::now() + self.relay.config.limits.command_timeout;
        idle.min(self.preauth_deadline)
    }

    fn relay_untagged(&mut self, lines: &[Vec<u8>]) {
        for line in lines {
            match filter_capability_line(line) {
                Some(filtered) => self.out.extend_from_slice(&filtered),
                None => self.out.extend_from_slice(line),
            }
        }
    }

    /// The provider's tagged verdict under the client's tag.
    fn relay_tagged(&mut self, tag: &[u8], status_and_text: &[u8]) {
        let line = prefixed(tag, status_and_text);
        match filter_capability_line(&line) {
            Some(filtered) => self.out.extend_from_slice(&filtered),
            None => self.out.extend_from_slice(&line),
        }
    }

    fn tagged(&mut self, tag: &[u8], text: &str) {
        self.out.extend_from_slice(tag);
        self.out.push(b' ');
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let io = self.io.get_mut();
        let out = &self.out;
        let written = tokio::time::timeout(self.relay.config.limits.command_timeout, async {
            io.write_all(out).await?;
            io.flush().await
        })
        .await;
        self.out.clear();
        match written {
            Ok(result) => result.map_err(|_| Closed),
            Err(_) => {
                // The client does not read what it is sent: counted once.
                if !self.stalled {
                    self.stalled = true;
                    self.relay.stats.count(Counter::Timeout);
                }
                Err(Closed)
            }
        }
    }
}

fn prefixed(tag: &[u8], status_and_text: &[u8]) -> Vec<u8> {
    let mut line = tag.to_vec();
    line.push(b' ');
    line.extend_from_slice(status_and_text);
    line
}

/// `LOGIN user password` as PLAIN credentials (the form every upstream path
/// takes).
fn login_credentials(args: &[u8]) -> Option<ClientCredentials> {
    let mut values = astrings(args).ok()?;
    if values.len() != 2 || values[0].is_empty() {
        for v in &mut values {
            wipe(v);
        }
        return None;
    }
    let mut password = values.pop()?;
    let mut user = values.pop()?;
    let mut plain = Vec::with_capacity(user.len() + password.len() + 2);
    plain.push(0);
    plain.extend_from_slice(&user);
    plain.push(0);
    plain.extend_from_slice(&password);
    let encoded = sasl::encode_b64(&plain);
    wipe(&mut plain);
    let credentials = ClientCredentials::Plain {
        encoded,
        authzid: Secret::default(),
        authcid: Secret::new(std::mem::take(&mut user)),
        password: Secret::new(std::mem::take(&mut password)),
    };
    Some(credentials)
}
