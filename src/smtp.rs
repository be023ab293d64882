//! The SMTP submission session: what the client sees, relayed in lock-step
//! to the provider its login routes to.
//!
//! Before AUTH the relay answers for itself (greeting, EHLO, STARTTLS) with
//! texts that name neither the software nor the upstream. AUTH is passed
//! through to the upstream, whose verdict is the client's. After that every
//! MAIL, RCPT and the final reply to DATA/BDAT is the upstream's reply for the
//! same transaction: nothing is accepted that the provider has not accepted,
//! and nothing is queued. The client's EHLO name and address never leave this
//! session; messages go upstream with their header block sanitized and their
//! body untouched. Nothing here logs.
//!
//! The pieces without I/O live in [`data`] (framing) and [`reply`]; the
//! driver below is generic over the client stream.

pub mod data;
pub mod reply;

use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use crate::admission::{LoginGate, Peer};
use crate::egress::EgressError;
use crate::egress::IsolationKey;
use crate::privacy::{Secret, wipe, wipe_appended};
use crate::provider::UpstreamError;
use crate::provider::smtp::UpstreamSmtp;
use crate::relay::Relay;
use crate::sasl::{self, ClientCredentials, Mechanism};
use crate::stats::Counter;
use crate::stream::ClientStream;
use data::{MessageReceiver, Progress, Refusal};
use reply::Reply;

/// Serves one client connection until it ends. `implicit_tls` starts with a
/// TLS handshake; otherwise the session starts in plain text and offers
/// STARTTLS.
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
        io,
        rbuf: Vec::with_capacity(4096),
        rpos: 0,
        wbuf: Vec::with_capacity(1024),
        tls_active: implicit_tls,
        greeted: false,
        upstream: None,
        tx: None,
        draining: relay.draining.subscribe(),
        peer,
        preauth_deadline,
    };
    let _ = session.run().await;
    session.close().await;
}

/// Which deadline a read ran into.
#[derive(Clone, Copy)]
enum Slow {
    Idle,
    Preauth,
    Transfer,
}

/// The session ends: the client left, timed out, or said QUIT.
#[derive(Debug)]
struct Closed;

/// A mail transaction in progress (MAIL accepted upstream).
struct Transaction {
    /// The SIZE the client declared (0 if none): the message buffer is
    /// allocated once at this size instead of growing by doubling.
    declared_size: usize,
    recipients: usize,
    accepted: usize,
    /// Set once the first BDAT chunk arrives.
    bdat: Option<(MessageReceiver, Vec<u8>)>,
    /// When MAIL was accepted, and bytes read from the client since: the
    /// transfer rate floor is measured over the whole transaction.
    started: tokio::time::Instant,
    received: u64,
}

struct Session<'r, S> {
    relay: &'r Relay,
    io: ClientStream<S>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    tls_active: bool,
    greeted: bool,
    /// The provider session; `Some` exactly when the client has
    /// authenticated (it is kept only after the provider said 235).
    upstream: Option<UpstreamSmtp>,
    tx: Option<Transaction>,
    draining: tokio::sync::watch::Receiver<bool>,
    /// Admission: lockouts, message allowance, eviction.
    peer: Peer,
    /// The client must have logged in by then.
    preauth_deadline: tokio::time::Instant,
}

/// What a command line turned out to be.
enum Line {
    /// A complete CRLF-terminated line.
    Complete(Vec<u8>),
    /// A line ending in a bare LF.
    BareLf,
    /// A line over the limit.
    TooLong,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<'_, S> {
    async fn run(&mut self) -> Result<(), Closed> {
        let greeting = Reply::new(
            220,
            [0, 0, 0],
            format!("{} ESMTP", self.relay.config.hostname),
        );
        self.queue(&greeting);
        loop {
            let line = match self.read_line().await? {
                Line::Complete(line) => line,
                Line::BareLf => {
                    self.queue(&reply::bare_lf_command());
                    continue;
                }
                Line::TooLong => {
                    self.queue(&reply::line_too_long());
                    self.flush().await?;
                    return Err(Closed);
                }
            };
            let mut line = line;
            let result = self.dispatch(&line).await;
            line.zeroize();
            result?;
        }
    }

    async fn dispatch(&mut self, line: &[u8]) -> Result<(), Closed> {
        // smtp-proto 0.2 wraps a BDAT size too large for 64 bits around to
        // a small number; such a chunk is over any limit.
        if bdat_size_token(line).is_some_and(|t| !t.is_empty() && t.len() > 19) {
            return self.refuse_oversized_chunk().await;
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(e) => {
                self.queue(&reply::from_parse_error(&e));
                return Ok(());
            }
        };
        match request {
            Request::Ehlo { .. } => {
                self.reset_transaction().await?;
                self.greeted = true;
                let ehlo = self.ehlo_reply();
                self.queue(&ehlo);
            }
            Request::Helo { .. } | Request::Lhlo { .. } => {
                self.reset_transaction().await?;
                self.greeted = true;
                let helo = Reply::new(250, [0, 0, 0], self.relay.config.hostname.clone());
                self.queue(&helo);
            }
            Request::StartTls => self.start_tls().await?,
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                let mut initial = initial_response.into_owned().into_bytes();
                let result = self.authenticate(mechanism, &initial).await;
                initial.zeroize();
                result?;
            }
            Request::Mail { from } => self.mail_from(from).await?,
            Request::Rcpt { to } => self.rcpt_to(to).await?,
            Request::Data => self.data().await?,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await?,
            Request::Rset => {
                self.reset_transaction().await?;
                self.queue(&reply::ok());
            }
            Request::Noop { .. } => self.queue(&reply::ok()),
            Request::Quit => {
                self.queue(&reply::bye());
                self.flush().await?;
                return Err(Closed);
            }
            Request::Vrfy { .. } => self.queue(&reply::no_vrfy()),
            Request::Expn { .. } => self.queue(&reply::no_expn()),
            Request::Help { .. } => self.queue(&reply::help()),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.queue(&reply::not_implemented())
            }
        }
        Ok(())
    }

    /// The EHLO reply: what the relay itself handles, nothing upstream-specific,
    /// never CLIENTID, no software name.
    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.relay.config.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.relay.config.limits.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if self.tls_active {
            let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        } else {
            lines.push("STARTTLS".into());
        }
        Reply {
            code: 250,
            esc: [0, 0, 0],
            lines,
        }
    }

    async fn start_tls(&mut self) -> Result<(), Closed> {
        if self.tls_active {
            self.queue(&reply::already_tls());
            return Ok(());
        }
        self.queue(&reply::ready_for_tls());
        self.flush().await?;
        // Anything the client pipelined after STARTTLS was sent in plain text
        // and could have been injected by a network attacker: discard it.
        self.rbuf.zeroize();
        self.rpos = 0;
        let ClientStream::Plain(plain) = std::mem::replace(&mut self.io, ClientStream::Gone) else {
            return Err(Closed);
        };
        let tls = tokio::time::timeout(
            self.relay.config.limits.tls_handshake_timeout,
            self.relay.acceptor.accept(plain),
        )
        .await
        .map_err(|_| Closed)?
        .map_err(|_| Closed)?;
        self.io = ClientStream::Tls(Box::new(tls));
        self.tls_active = true;
        // RFC 3207: forget everything learnt before TLS.
        self.greeted = false;
        Ok(())
    }

    async fn authenticate(&mut self, mechanism: u64, initial: &[u8]) -> Result<(), Closed> {
        if !self.tls_active {
            self.queue(&reply::auth_needs_tls());
            return Ok(());
        }
        if self.upstream.is_some() {
            self.queue(&reply::already_authenticated());
            return Ok(());
        }
        if !self.greeted {
            self.queue(&reply::ehlo_first());
            return Ok(());
        }
        if self.tx.is_some() {
            self.queue(&reply::auth_in_transaction());
            return Ok(());
        }
        let Some(mechanism) = Mechanism::from_smtp_proto(mechanism) else {
            self.queue(&reply::unknown_mechanism());
            return Ok(());
        };
        let Some(credentials) = self.collect_credentials(mechanism, initial).await? else {
            return Ok(());
        };
        let _turn = self.peer.auth_turn().await;
        let arrived = tokio::time::Instant::now();
        let failure_at = arrived + self.relay.config.limits.auth_failure_delay;
        let login = credentials.login();
        if self.peer.login_gate(&login) == LoginGate::Locked {
            self.relay.stats.count(Counter::LoginLocked);
            // One reply for every password, no sooner than a refusal; the
            // provider is not asked, so a right guess teaches nothing. Not
            // charged: the lockout must end even while a client (perhaps
            // the victim's own, with the right password) keeps retrying.
            tokio::time::sleep_until(failure_at).await;
            self.queue(&reply::auth_locked());
            return Ok(());
        }
        let config = &self.relay.config;
        let route = config.route(login.expose());
        let Some((index, endpoint)) =
            route.and_then(|i| Some((i, config.upstreams[i].smtp.as_ref()?)))
        else {
            self.relay.stats.count(Counter::LoginNoRoute);
            self.peer.login_failed(&login);
            tokio::time::sleep_until(failure_at).await;
            self.queue(&reply::auth_no_route());
            return Ok(());
        };
        let isolation = IsolationKey::for_session(config.egress.isolate, &login);
        let connected = UpstreamSmtp::connect(
            endpoint,
            self.relay.upstream_tls[index].clone(),
            &self.relay.egress,
            &isolation,
            &config.upstream_ehlo_name,
            config.limits.upstream_timeout,
        )
        .await;
        let mut upstream = match connected {
            Ok(u) => u,
            Err(UpstreamError::Tls | UpstreamError::NoStartTls) => {
                self.relay.stats.count(Counter::ProviderUnreachable);
                self.queue(&reply::upstream_tls_failed());
                return Ok(());
            }
            Err(UpstreamError::Egress(EgressError::TorNotReady)) => {
                self.relay.stats.count(Counter::TorNotReady);
                self.queue(&reply::tor_not_ready());
                return Ok(());
            }
            Err(_) => {
                self.relay.stats.count(Counter::ProviderUnreachable);
                self.queue(&reply::auth_upstream_unavailable());
                return Ok(());
            }
        };
        match self.relay_auth(&mut upstream, credentials).await? {
            Some(verdict) if verdict.code == 421 => {
                // The provider is closing: for the client that is a
                // temporary authentication failure (RFC 4954's 454); its
                // own connection to the relay stays usable.
                self.relay.stats.count(Counter::ProviderLost);
                upstream.quit().await;
                self.peer.login_failed_temporarily();
                self.queue(&reply::auth_upstream_unavailable());
            }
            Some(verdict) => {
                if verdict.code == 235 {
                    self.relay.stats.count(Counter::Login);
                    self.peer.logged_in(&login);
                    self.upstream = Some(upstream);
                } else {
                    self.relay.stats.count(Counter::LoginRefusedByProvider);
                    upstream.quit().await;
                    if verdict.code >= 500 {
                        self.peer.login_failed(&login);
                        tokio::time::sleep_until(failure_at).await;
                    } else {
                        // Temporary (the password was not judged): charged
                        // to the network only, so that guessing cannot go
                        // on for ever against a provider that has slowed
                        // down, as Dovecot does for an address that fails.
                        self.peer.login_failed_temporarily();
                    }
                }
                self.queue(&verdict);
            }
            None => {
                // Lost or silent mid-login (a provider slowing down an
                // address that fails looks like this): the network pays.
                self.relay.stats.count(Counter::ProviderLost);
                self.peer.login_failed_temporarily();
                self.queue(&reply::auth_upstream_unavailable());
            }
        }
        Ok(())
    }

    /// Reads the client's SASL response(s). `None` when the client cancelled
    /// or sent something undecodable (the reply is already queued).
    async fn collect_credentials(
        &mut self,
        mechanism: Mechanism,
        initial: &[u8],
    ) -> Result<Option<ClientCredentials>, Closed> {
        let parsed = match mechanism {
            Mechanism::Login => {
                let user = if initial.is_empty() {
                    match self.prompt("VXNlcm5hbWU6").await? {
                        Some(line) => line,
                        None => return Ok(None),
                    }
                } else {
                    Secret::new(initial.to_vec())
                };
                let Some(password) = self.prompt("UGFzc3dvcmQ6").await? else {
                    return Ok(None);
                };
                sasl::login_credentials(user, password)
            }
            _ => {
                let response = if initial.is_empty() {
                    match self.prompt("").await? {
                        Some(line) => line,
                        None => return Ok(None),
                    }
                } else {
                    Secret::new(initial.to_vec())
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
                self.queue(&reply::auth_malformed());
                Ok(None)
            }
        }
    }

    /// Sends a 334 challenge and reads one response line. `None` (with the
    /// reply queued) when the client cancels with `*`.
    async fn prompt(&mut self, challenge: &str) -> Result<Option<Secret>, Closed> {
        self.queue(&Reply::new(334, [0, 0, 0], challenge));
        let line = match self.read_line().await? {
            Line::Complete(line) => line,
            Line::BareLf => {
                self.queue(&reply::auth_malformed());
                return Ok(None);
            }
            Line::TooLong => {
                self.queue(&reply::line_too_long());
                self.flush().await?;
                return Err(Closed);
            }
        };
        let mut line = line;
        let trimmed = line.trim_ascii().to_vec();
        line.zeroize();
        if trimmed == b"*" {
            self.queue(&reply::auth_cancelled());
            return Ok(None);
        }
        Ok(Some(Secret::new(trimmed)))
    }

    /// Runs the SASL exchange upstream. Returns the upstream's verdict as the
    /// client's reply, or `None` when the upstream broke off.
    async fn relay_auth(
        &mut self,
        upstream: &mut UpstreamSmtp,
        credentials: ClientCredentials,
    ) -> Result<Option<Reply>, Closed> {
        let offered = upstream.auth_mechanisms();
        let has = |m: Mechanism| offered & m.smtp_proto_bit() != 0;
        // The steps to send upstream: the command with its initial response,
        // then the answers to expect 334 challenges for, in order.
        let mut steps: Vec<Secret> = Vec::new();
        match &credentials {
            ClientCredentials::Plain {
                encoded,
                authzid,
                authcid,
                password,
            } => {
                if !has(Mechanism::Plain) && has(Mechanism::Login) && authzid.expose().is_empty() {
                    steps.push(Secret::new(b"AUTH LOGIN\r\n".to_vec()));
                    steps.push(line_of(sasl::encode_b64(authcid.expose()).expose()));
                    steps.push(line_of(sasl::encode_b64(password.expose()).expose()));
                } else {
                    steps.push(command_with(b"AUTH PLAIN ", encoded.expose()));
                }
            }
            ClientCredentials::Login {
                user_encoded,
                password_encoded,
            } => {
                if !has(Mechanism::Login) && has(Mechanism::Plain) {
                    let user = sasl::decode_b64(user_encoded.expose()).unwrap_or_default();
                    let password = sasl::decode_b64(password_encoded.expose()).unwrap_or_default();
                    let mut plain =
                        Vec::with_capacity(2 + user.expose().len() + password.expose().len());
                    plain.push(0);
                    plain.extend_from_slice(user.expose());
                    plain.push(0);
                    plain.extend_from_slice(password.expose());
                    let plain = Secret::new(plain);
                    steps.push(command_with(
                        b"AUTH PLAIN ",
                        sasl::encode_b64(plain.expose()).expose(),
                    ));
                } else {
                    steps.push(Secret::new(b"AUTH LOGIN\r\n".to_vec()));
                    steps.push(line_of(user_encoded.expose()));
                    steps.push(line_of(password_encoded.expose()));
                }
            }
            ClientCredentials::Token { mechanism, encoded } => {
                let mut command = format!("AUTH {} ", mechanism.name()).into_bytes();
                command.extend_from_slice(encoded.expose());
                command.extend_from_slice(b"\r\n");
                steps.push(Secret::new(command));
            }
        }
        drop(credentials);
        let mut steps = steps.into_iter();
        let Some(first) = steps.next() else {
            return Ok(None);
        };
        let mut response = match upstream.command(first.expose()).await {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        loop {
            if response.code != 334 {
                return Ok(Some(Reply::from_upstream(&response)));
            }
            // A challenge: answer it ourselves if we hold the next step
            // (LOGIN), otherwise let the client answer (e.g. XOAUTH2's error
            // challenge, which expects an empty line).
            let answer = match steps.next() {
                Some(step) => step,
                None => {
                    self.queue(&Reply::from_upstream(&response));
                    match self.read_line().await? {
                        Line::Complete(line) => Secret::new(line),
                        _ => Secret::new(b"*\r\n".to_vec()),
                    }
                }
            };
            response = match upstream.command(answer.expose()).await {
                Ok(r) => r,
                Err(_) => return Ok(None),
            };
        }
    }

    async fn mail_from(
        &mut self,
        from: smtp_proto::MailFrom<std::borrow::Cow<'_, str>>,
    ) -> Result<(), Closed> {
        if !self.tls_active {
            self.queue(&reply::tls_required());
            return Ok(());
        }
        if self.upstream.is_none() {
            self.queue(&reply::auth_required());
            return Ok(());
        }
        if self.tx.is_some() {
            self.queue(&reply::nested_mail());
            return Ok(());
        }
        if from.size > self.relay.config.limits.max_message_bytes {
            self.queue(&reply::too_big());
            return Ok(());
        }
        let known =
            smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;
        if from.flags & !known != 0
            || from.env_id.is_some()
            || from.trans_id.is_some()
            || from.mtrk.is_some()
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
        {
            self.queue(&reply::unsupported_parameter());
            return Ok(());
        }
        if !self.peer.take_message() {
            self.relay.stats.count(Counter::MessageRateLimited);
            self.queue(&reply::message_rate());
            return Ok(());
        }
        let Some(upstream) = self.upstream.as_mut() else {
            self.queue(&reply::auth_required());
            return Ok(());
        };
        let mut command = format!("MAIL FROM:<{}>", from.address);
        if from.size > 0 && upstream.supports(smtp_proto::EXT_SIZE) {
            command.push_str(&format!(" SIZE={}", from.size));
        }
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0
            && upstream.supports(smtp_proto::EXT_8BIT_MIME)
        {
            command.push_str(" BODY=8BITMIME");
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            if !upstream.supports(smtp_proto::EXT_SMTP_UTF8) {
                self.queue(&reply::no_smtputf8_upstream());
                return Ok(());
            }
            command.push_str(" SMTPUTF8");
        }
        command.push_str("\r\n");
        let response = self.upstream_command(command.as_bytes()).await?;
        if response.is_positive() {
            self.tx = Some(Transaction {
                declared_size: from.size,
                recipients: 0,
                accepted: 0,
                bdat: None,
                started: tokio::time::Instant::now(),
                received: 0,
            });
        }
        self.queue(&response);
        Ok(())
    }

    async fn rcpt_to(
        &mut self,
        to: smtp_proto::RcptTo<std::borrow::Cow<'_, str>>,
    ) -> Result<(), Closed> {
        let max = self.relay.config.limits.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            self.queue(&reply::need_mail());
            return Ok(());
        };
        if tx.bdat.is_some() {
            self.queue(&reply::mixed_data_bdat());
            return Ok(());
        }
        if tx.recipients >= max {
            self.queue(&reply::too_many_recipients());
            return Ok(());
        }
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            self.queue(&reply::unsupported_parameter());
            return Ok(());
        }
        tx.recipients += 1;
        let command = format!("RCPT TO:<{}>\r\n", to.address);
        let response = self.upstream_command(command.as_bytes()).await?;
        if response.is_positive()
            && let Some(tx) = self.tx.as_mut()
        {
            tx.accepted += 1;
        }
        self.queue(&response);
        Ok(())
    }

    async fn data(&mut self) -> Result<(), Closed> {
        let ready = match &self.tx {
            None => Err(reply::need_mail()),
            Some(tx) if tx.bdat.is_some() => Err(reply::mixed_data_bdat()),
            Some(tx) if tx.accepted == 0 => Err(reply::no_valid_recipients()),
            Some(_) => Ok(()),
        };
        if let Err(refusal) = ready {
            self.queue(&refusal);
            return Ok(());
        }
        self.queue(&reply::start_data());
        self.flush().await?;
        let limits = &self.relay.config.limits;
        let mut receiver = MessageReceiver::data(limits.max_message_bytes, limits.max_line_bytes);
        let declared = self.tx.as_ref().map_or(0, |tx| tx.declared_size);
        let mut message = Vec::with_capacity(declared.min(limits.max_message_bytes));
        loop {
            match receiver.feed(&self.rbuf[self.rpos..], &mut message) {
                Progress::Done { consumed } => {
                    self.rpos += consumed;
                    break;
                }
                Progress::NeedMore => {
                    self.rpos = self.rbuf.len();
                    self.fill().await?;
                }
            }
        }
        self.finish_message(receiver, message).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Result<(), Closed> {
        let limits = &self.relay.config.limits;
        let (max_size, max_line) = (limits.max_message_bytes, limits.max_line_bytes);
        let received = self
            .tx
            .as_ref()
            .and_then(|tx| tx.bdat.as_ref())
            .map_or(0, |(_, message)| message.len());
        if size > max_size.saturating_sub(received) {
            return self.refuse_oversized_chunk().await;
        }
        // The chunk's bytes follow the command whatever we answer: read them.
        let refusal = match &self.tx {
            None => Some(reply::need_mail()),
            Some(tx) if tx.accepted == 0 => Some(reply::no_valid_recipients()),
            Some(_) => None,
        };
        let (mut receiver, mut message) = match self.tx.as_mut() {
            Some(tx) if refusal.is_none() => {
                let declared = tx.declared_size.min(max_size);
                tx.bdat.take().unwrap_or_else(|| {
                    (
                        MessageReceiver::bdat(max_size, max_line),
                        Vec::with_capacity(declared),
                    )
                })
            }
            _ => (MessageReceiver::bdat(0, max_line), Vec::new()),
        };
        let mut remaining = size;
        while remaining > 0 {
            if self.rpos == self.rbuf.len() {
                self.fill().await?;
            }
            let take = remaining.min(self.rbuf.len() - self.rpos);
            let chunk = &self.rbuf[self.rpos..self.rpos + take];
            if refusal.is_none() {
                receiver.feed_chunk(chunk, &mut message);
            }
            self.rpos += take;
            remaining -= take;
        }
        if let Some(refusal) = refusal {
            self.queue(&refusal);
            return Ok(());
        }
        if !last {
            self.queue(&Reply::new(
                250,
                [2, 0, 0],
                format!("{size} octets received"),
            ));
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat = Some((receiver, message));
            }
            return Ok(());
        }
        receiver.finish_chunks(&mut message);
        self.finish_message(receiver, message).await
    }

    /// A BDAT chunk that would take the message over the limit: staying in
    /// step would mean reading all of it (up to 2^64 bytes for a hostile
    /// size), so refuse and end the session.
    async fn refuse_oversized_chunk(&mut self) -> Result<(), Closed> {
        self.relay.stats.count(Counter::MessageRefusedHere);
        if let Some(mut tx) = self.tx.take()
            && let Some((_, mut message)) = tx.bdat.take()
        {
            wipe_appended(&mut message);
        }
        self.queue(&reply::too_big());
        self.flush().await?;
        Err(Closed)
    }

    /// The message is complete on our side: refuse it, or relay it and give
    /// the client the upstream's final reply.
    async fn finish_message(
        &mut self,
        receiver: MessageReceiver,
        mut message: Vec<u8>,
    ) -> Result<(), Closed> {
        let limits = &self.relay.config.limits;
        let outcome = match receiver.refusal() {
            Some(Refusal::BareLineEnding) => Err(reply::bare_line_ending()),
            Some(Refusal::LineTooLong) => Err(reply::message_line_too_long()),
            Some(Refusal::TooLarge) => Err(reply::too_big()),
            None => match crate::sanitize::header_shape(&message) {
                (_, bytes) if bytes > limits.max_header_bytes => Err(reply::header_too_large()),
                (fields, _) if fields > limits.max_header_fields => {
                    Err(reply::too_many_header_fields())
                }
                _ => Ok(()),
            },
        };
        let final_reply = match outcome {
            Err(refusal) => {
                self.relay.stats.count(Counter::MessageRefusedHere);
                // The upstream saw MAIL/RCPT only; end that transaction.
                self.reset_transaction().await?;
                refusal
            }
            Ok(()) => {
                let sanitized =
                    crate::sanitize::strip_identifying_headers(&message, &self.relay.policy);
                let result = match self.upstream.as_mut() {
                    Some(upstream) => {
                        upstream
                            .send_message(&sanitized.header, sanitized.rest)
                            .await
                    }
                    None => Err(UpstreamError::Lost),
                };
                let mut header = sanitized.header;
                wipe(&mut header);
                self.tx = None;
                match result {
                    Ok(response) => {
                        self.relay.stats.count(if response.code / 100 == 2 {
                            Counter::MessageRelayed
                        } else {
                            Counter::MessageRefusedByProvider
                        });
                        Reply::from_upstream(&response)
                    }
                    Err(_) => {
                        wipe_appended(&mut message);
                        return self.upstream_lost().await;
                    }
                }
            }
        };
        wipe_appended(&mut message);
        self.queue(&final_reply);
        Ok(())
    }

    /// Sends a command upstream; on failure tells the client and ends.
    async fn upstream_command(&mut self, command: &[u8]) -> Result<Reply, Closed> {
        let result = match self.upstream.as_mut() {
            Some(upstream) => upstream.command(command).await,
            None => Err(UpstreamError::Lost),
        };
        match result {
            Ok(response) => Ok(Reply::from_upstream(&response)),
            Err(_) => {
                self.upstream_lost().await?;
                Err(Closed)
            }
        }
    }

    async fn upstream_lost(&mut self) -> Result<(), Closed> {
        self.relay.stats.count(Counter::ProviderLost);
        self.upstream = None;
        self.tx = None;
        self.queue(&reply::upstream_lost());
        self.flush().await?;
        Err(Closed)
    }

    /// Ends any transaction, locally and upstream.
    async fn reset_transaction(&mut self) -> Result<(), Closed> {
        if let Some(mut tx) = self.tx.take() {
            if let Some((_, mut message)) = tx.bdat.take() {
                wipe_appended(&mut message);
            }
            let response = self.upstream_command(b"RSET\r\n").await?;
            if !response.is_positive() {
                return self.upstream_lost().await;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ client I/O

    fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.wbuf);
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = self.relay.config.limits.command_timeout;
        let io = &mut self.io;
        let wbuf = &self.wbuf;
        let written = tokio::time::timeout(timeout, async {
            io.write_all(wbuf).await?;
            io.flush().await
        })
        .await;
        self.wbuf.clear();
        match written {
            Ok(result) => result.map_err(|_| Closed),
            Err(_) => {
                // The client does not read its replies: a slow end, counted.
                self.relay.stats.count(Counter::Timeout);
                Err(Closed)
            }
        }
    }

    /// Reads more bytes from the client, flushing pending replies first.
    /// Between transactions, a relay shutting down says 421 and ends the
    /// session instead; inside one, the client may finish.
    async fn fill(&mut self) -> Result<(), Closed> {
        self.flush().await?;
        if self.rpos > 0 {
            self.rbuf[..self.rpos].zeroize();
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.reserve(16 * 1024);
        let limits = &self.relay.config.limits;
        let now = tokio::time::Instant::now();
        // The read must end by the earliest of: the command timeout; the
        // pre-authentication deadline (not logged in yet); the rate floor
        // (in a transaction: a command timeout's grace plus one second per
        // `min_transfer_bytes_per_sec` bytes received so far).
        let mut deadline = now + limits.command_timeout;
        let mut why = Slow::Idle;
        if self.upstream.is_none() && self.preauth_deadline < deadline {
            deadline = self.preauth_deadline;
            why = Slow::Preauth;
        }
        if let Some(tx) = &self.tx {
            let floor = u64::from(limits.min_transfer_bytes_per_sec);
            let allowed = limits.command_timeout
                + std::time::Duration::from_millis(tx.received.saturating_mul(1000) / floor);
            if tx.started + allowed < deadline {
                deadline = tx.started + allowed;
                why = Slow::Transfer;
            }
        }
        let idle = self.tx.is_none() && self.rbuf.is_empty();
        let before = self.rbuf.len();
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.rbuf)) => Some(read),
            _ = Relay::until_draining(&mut self.draining), if idle => None,
            _ = self.peer.evicted() => {
                self.queue(&reply::evicted());
                let _ = self.flush().await;
                return Err(Closed);
            }
        };
        let Some(read) = read else {
            self.queue(&reply::shutting_down());
            let _ = self.flush().await;
            return Err(Closed);
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => Err(Closed),
            Ok(Ok(_)) => {
                if let Some(tx) = &mut self.tx {
                    tx.received += (self.rbuf.len() - before) as u64;
                }
                Ok(())
            }
            Err(_) => {
                self.relay.stats.count(Counter::Timeout);
                self.queue(&match why {
                    Slow::Idle => reply::idle_timeout(),
                    Slow::Preauth => reply::preauth_timeout(),
                    Slow::Transfer => reply::too_slow(),
                });
                let _ = self.flush().await;
                Err(Closed)
            }
        }
    }

    async fn read_line(&mut self) -> Result<Line, Closed> {
        let max = self.relay.config.limits.max_command_bytes;
        loop {
            let pending = &self.rbuf[self.rpos..];
            if let Some(nl) = memchr::memchr(b'\n', pending) {
                let line = pending[..=nl].to_vec();
                self.rpos += nl + 1;
                if line.len() > max {
                    return Ok(Line::TooLong);
                }
                if nl == 0 || line[nl - 1] != b'\r' {
                    return Ok(Line::BareLf);
                }
                return Ok(Line::Complete(line));
            }
            if pending.len() > max {
                return Ok(Line::TooLong);
            }
            self.fill().await?;
        }
    }

    async fn close(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            upstream.quit().await;
        }
        let _ = self.flush().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.io.shutdown()).await;
        wipe(&mut self.rbuf);
        wipe(&mut self.wbuf);
    }
}

/// The size token of a BDAT command line (digits, possibly none), if the
/// line is a BDAT command.
fn bdat_size_token(line: &[u8]) -> Option<&[u8]> {
    let verb = line.get(..5)?;
    if !verb.eq_ignore_ascii_case(b"BDAT ") {
        return None;
    }
    let rest = line[5..].trim_ascii_start();
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn line_of(encoded: &[u8]) -> Secret {
    let mut line = Vec::with_capacity(encoded.len() + 2);
    line.extend_from_slice(encoded);
    line.extend_from_slice(b"\r\n");
    Secret::new(line)
}

fn command_with(prefix: &[u8], encoded: &[u8]) -> Secret {
    let mut line = Vec::with_capacity(prefix.len() + encoded.len() + 2);
    line.extend_from_slice(prefix);
    line.extend_from_slice(encoded);
    line.extend_from_slice(b"\r\n");
    Secret::new(line)
}
