//! The SMTP submission session without I/O: one [`Mode`] value says where
//! the session is, and every client command line, provider reply and
//! received message is turned into the [`Next`] thing for the driver to do.
//!
//! The driver (`super`) reads lines and messages, talks to the provider and
//! writes replies; this core decides. It never sees a socket, so it is
//! tested by feeding it lines and provider replies. Before AUTH the relay
//! answers for itself, with texts that name neither the software nor the
//! provider; after it, MAIL, RCPT and the final reply to DATA/BDAT are the
//! provider's replies for the same transaction. Nothing here logs.

use std::collections::VecDeque;

use smtp_proto::Request;
use tokio::time::{Duration, Instant};

pub(crate) use super::command::Line;
use super::command::{bdat_size_token, parse};
use super::data::MessageReceiver;
use super::message::MessageBuf;
use super::reply::{self, Reply};
use crate::admission::{MessageRoom, Peer};
use crate::config::Limits;
use crate::privacy::{Secret, WipedBuf};
use crate::sanitize::Policy;
use crate::sasl::{Credentials, Exchange, Mechanism, SaslError, Step};
use crate::stats::Stats;

/// What the session core needs from the relay.
#[derive(Clone, Copy)]
pub(crate) struct Context<'r> {
    /// The name in the greeting and EHLO reply.
    pub(crate) hostname: &'r str,
    /// The configured limits.
    pub(crate) limits: &'r Limits,
    /// The header policy.
    pub(crate) policy: &'r Policy,
    /// Aggregate counters.
    pub(crate) stats: &'r Stats,
}

/// What the provider offers for the transaction commands.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProviderCaps {
    /// 8BITMIME.
    pub(crate) eight_bit: bool,
    /// SMTPUTF8.
    pub(crate) smtputf8: bool,
    /// The upstream's `outgoing = "encrypted-only"`.
    pub(crate) encrypted_only: bool,
    /// The message may follow MAIL and RCPT before their replies: the
    /// provider offers CHUNKING (the message goes as `BDAT n LAST`), and
    /// the egress is Tor or SOCKS5, where a round trip costs more than the
    /// provider's delayed-ACK stall this can cause (Postfix flushes its
    /// MAIL/RCPT replies mid-chunk, then its final reply waits for their
    /// ACK: ~40 ms). The driver pipelines only when the provider also
    /// offers PIPELINING.
    pub(crate) message_with_envelope: bool,
}

/// A message being received: the framing state and the bytes so far.
pub(crate) struct Incoming {
    /// Framing and limits.
    pub(crate) receiver: MessageReceiver,
    /// The content.
    pub(crate) message: MessageBuf,
}

/// A checked message on its way to the provider: the sanitized header
/// block, then the message from where its own header ended.
pub(crate) struct Outgoing {
    header: WipedBuf,
    message: MessageBuf,
    rest_from: usize,
}

impl Outgoing {
    /// The bytes to send, in order.
    pub(crate) fn pieces(&self) -> Vec<&[u8]> {
        let mut pieces = Vec::with_capacity(2 + self.message.len() / super::message::SEGMENT);
        pieces.push(&self.header[..]);
        pieces.push(&self.message.head()[self.rest_from..]);
        pieces.extend(self.message.tail());
        pieces
    }
}

/// What the driver must do next.
pub(crate) enum Next {
    /// Write this reply; read the next command.
    Reply(Reply),
    /// Write this reply and end the session.
    Close(Reply),
    /// Say 220, drop anything pipelined, run the TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// Run the login policy with these credentials, then call
    /// [`Session::logged_in`] if the provider accepted.
    LogIn(Credentials),
    /// Send this command line to the provider; give its reply to
    /// [`Session::provider_replied`].
    Upstream(WipedBuf),
    /// Say 354 and receive a DATA message into this; then call
    /// [`Session::message_received`].
    ReceiveData(Incoming),
    /// Read a BDAT chunk of `size` bytes, into `incoming` when given (else
    /// the bytes are read and dropped); then call [`Session::chunk_received`].
    ReceiveChunk {
        /// Bytes that follow the command.
        size: usize,
        /// The last chunk of the message.
        last: bool,
        /// Where the bytes go, unless the chunk is refused.
        incoming: Option<Incoming>,
    },
    /// Send this message to the provider; give its reply to
    /// [`Session::provider_replied`].
    SendMessage(Outgoing),
    /// This line cannot be handled before the provider has answered what
    /// was sent: read those replies (see [`Session::awaiting`]), then give
    /// the line to [`Session::command`] again.
    Settle(Line),
    /// The reply is held behind the provider's replies still to come and
    /// will be given by [`Session::held_reply`] in its turn; read on.
    Held,
}

/// Replies the session may owe before the driver must read the provider's
/// (the provider takes at most `max_recipients` RCPTs per transaction; the
/// rest are the relay's own refusals).
const MAX_OWED: usize = 256;

/// What the provider's next reply answers, for how long to wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    /// A command (the provider's command timeout).
    Command,
    /// A message (RFC 5321's 10 minutes).
    Message,
}

/// Which deadline a read from the client runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slow {
    /// Silent between commands for the command timeout.
    Idle,
    /// Not logged in by the pre-authentication deadline.
    Preauth,
    /// A message arriving below the transfer rate floor.
    Transfer,
    /// Not reading the relay's replies.
    Write,
}

impl Slow {
    /// The reply that ends a session for being slow.
    pub(crate) fn reply(self) -> Reply {
        match self {
            Slow::Idle | Slow::Write => reply::idle_timeout(),
            Slow::Preauth => reply::preauth_timeout(),
            Slow::Transfer => reply::too_slow(),
        }
    }
}

/// Where the session is.
enum Mode {
    /// Before TLS (STARTTLS listeners only).
    Plain { greeted: bool },
    /// TLS is up; not logged in.
    Secure { greeted: bool },
    /// Reading the client's SASL responses (TLS up, greeted).
    Sasl(Exchange),
    /// Logged in; no transaction.
    Ready,
    /// MAIL sent to the provider (opened then, so that RCPT and BDAT may
    /// follow before its reply); closed again if the provider refuses it.
    Transaction(Transaction),
}

/// A mail transaction in progress.
struct Transaction {
    /// The SIZE the client declared (0 if none).
    declared_size: usize,
    recipients: usize,
    accepted: usize,
    /// Set once the first BDAT chunk arrived.
    bdat: Option<Incoming>,
    /// Until when the client may stay silent: the transfer rate floor as
    /// a bucket of time. Each byte read adds `1 / min_transfer_bytes_per_sec`
    /// seconds, but the bucket never holds more than the command timeout's
    /// worth from now, so a fast burst buys no later silence.
    credit_until: Instant,
    /// The transaction's place among its account's, and its message's
    /// share of the relay's budget, until the message takes it.
    room: Option<MessageRoom>,
}

/// What one of the provider's replies still to come answers, or a reply
/// of the relay's own waiting for its turn behind them.
enum Pending {
    Mail,
    Rcpt,
    /// RSET ending a transaction, then this reply to the client.
    Reset {
        then: Reply,
    },
    Message,
    /// The relay's own reply to a command that came after ones still
    /// unanswered: it goes to the client in its turn.
    Local(Reply),
}

/// One client's submission session.
pub(crate) struct Session<'r> {
    cx: Context<'r>,
    mode: Mode,
    /// In command order: the provider's replies still to come, and the
    /// relay's own replies that go after them. Never begins with a
    /// [`Pending::Local`] once [`Session::held_reply`] has been asked.
    pending: VecDeque<Pending>,
    /// A refusal for the BDAT chunk being read.
    chunk_refusal: Option<Reply>,
    provider: ProviderCaps,
    preauth_deadline: Instant,
}

impl<'r> Session<'r> {
    /// A new session; `tls` when the connection started with TLS.
    pub(crate) fn new(cx: Context<'r>, tls: bool, started: Instant) -> Self {
        Session {
            preauth_deadline: started + cx.limits.preauth_timeout,
            cx,
            mode: if tls {
                Mode::Secure { greeted: false }
            } else {
                Mode::Plain { greeted: false }
            },
            pending: VecDeque::new(),
            chunk_refusal: None,
            provider: ProviderCaps::default(),
        }
    }

    /// The greeting.
    pub(crate) fn greeting(&self) -> Reply {
        Reply::new(220, [0, 0, 0], format!("{} ESMTP", self.cx.hostname))
    }

    /// When the client must have logged in by.
    pub(crate) fn preauth_deadline(&self) -> Instant {
        self.preauth_deadline
    }

    /// True once the provider accepted a login.
    pub(crate) fn is_logged_in(&self) -> bool {
        matches!(self.mode, Mode::Ready | Mode::Transaction(_))
    }

    /// True inside a mail transaction.
    pub(crate) fn in_transaction(&self) -> bool {
        matches!(self.mode, Mode::Transaction(_))
    }

    /// When the next read from the client must end, and which limit that
    /// is: the command timeout; the pre-authentication deadline before
    /// login; the rate floor inside a transaction (see
    /// [`Transaction::credit_until`]).
    pub(crate) fn read_deadline(&self, now: Instant) -> (Instant, Slow) {
        let limits = self.cx.limits;
        let mut deadline = (now + limits.command_timeout, Slow::Idle);
        if !self.is_logged_in() && self.preauth_deadline < deadline.0 {
            deadline = (self.preauth_deadline, Slow::Preauth);
        }
        if let Mode::Transaction(tx) = &self.mode
            && tx.credit_until < deadline.0
        {
            deadline = (tx.credit_until, Slow::Transfer);
        }
        deadline
    }

    /// `n` bytes arrived from the client.
    pub(crate) fn received(&mut self, n: usize) {
        let limits = self.cx.limits;
        if let Mode::Transaction(tx) = &mut self.mode {
            let now = Instant::now();
            let floor = u64::from(limits.min_transfer_bytes_per_sec.max(1));
            let bought = Duration::from_millis((n as u64).saturating_mul(1000) / floor);
            tx.credit_until = (tx.credit_until.max(now) + bought).min(now + limits.command_timeout);
        }
    }

    /// TLS is up after STARTTLS: everything learnt before is forgotten
    /// (RFC 3207).
    pub(crate) fn tls_started(&mut self) {
        self.mode = Mode::Secure { greeted: false };
    }

    /// The provider accepted the login.
    pub(crate) fn logged_in(&mut self, provider: ProviderCaps) {
        self.provider = provider;
        self.mode = Mode::Ready;
    }

    /// Handles one line from the client.
    pub(crate) fn command(&mut self, line: Line, peer: &Peer) -> Next {
        if !self.pending.is_empty() && !self.may_follow_unanswered(&line) {
            return Next::Settle(line);
        }
        if let Mode::Sasl(_) = self.mode {
            return self.sasl_answer(line);
        }
        let next = match line {
            Line::Complete(line) => self.dispatch(&line, peer),
            Line::BareLf => Next::Reply(reply::bare_lf_command()),
            Line::TooLong => Next::Close(reply::line_too_long()),
        };
        self.in_turn(next)
    }

    /// True for the commands that may be handled while the provider has
    /// yet to answer earlier ones (RFC 2920): RCPT, and `BDAT … LAST` when
    /// the provider takes the message as BDAT too. Their outcome does not
    /// depend on those answers here: the provider, which gets them in the
    /// same order, answers them knowing its own. Anything else waits.
    fn may_follow_unanswered(&self, line: &Line) -> bool {
        let Line::Complete(text) = line else {
            return false;
        };
        if bdat_size_token(text).is_some_and(|t| t.len() > 19) {
            return false;
        }
        let Ok(request) = parse(text) else {
            return false;
        };
        match &request.0 {
            Request::Rcpt { .. } => matches!(self.mode, Mode::Transaction(_)),
            Request::Bdat { is_last: true, .. } => {
                self.provider.message_with_envelope
                    && matches!(&self.mode, Mode::Transaction(tx) if tx.bdat.is_none())
            }
            _ => false,
        }
    }

    /// A reply of the relay's own waits behind the provider's replies
    /// still to come.
    fn in_turn(&mut self, next: Next) -> Next {
        match next {
            Next::Reply(reply) if !self.pending.is_empty() => {
                self.pending.push_back(Pending::Local(reply));
                Next::Held
            }
            next => next,
        }
    }

    /// What the provider's next reply will answer; `None` when nothing is
    /// awaited. Held replies that are due come first from
    /// [`Session::held_reply`]. With a message in the flight, every reply
    /// before its own gets the message's time too: a provider may hold its
    /// MAIL and RCPT replies until it has checked the message.
    pub(crate) fn awaiting(&self) -> Option<Awaiting> {
        match self.pending.front()? {
            Pending::Local(_) => None,
            _ if self.pending.iter().any(|p| matches!(p, Pending::Message)) => {
                Some(Awaiting::Message)
            }
            _ => Some(Awaiting::Command),
        }
    }

    /// True when so many replies are owed that the driver must read them
    /// before it reads on: a client that keeps sending commands the relay
    /// refuses cannot make it hold replies without end.
    pub(crate) fn owes_too_much(&self) -> bool {
        self.pending.len() >= MAX_OWED
    }

    /// Every reply owed was given: the client's silence is measured from
    /// now, not from MAIL (the provider's time is not the client's).
    pub(crate) fn settled(&mut self, now: Instant) {
        if let Mode::Transaction(tx) = &mut self.mode {
            tx.credit_until = tx.credit_until.max(now + self.cx.limits.command_timeout);
        }
    }

    /// The relay's own reply whose turn has come.
    pub(crate) fn held_reply(&mut self) -> Option<Reply> {
        match self.pending.front()? {
            Pending::Local(_) => match self.pending.pop_front() {
                Some(Pending::Local(reply)) => Some(reply),
                _ => None,
            },
            _ => None,
        }
    }

    fn dispatch(&mut self, line: &[u8], peer: &Peer) -> Next {
        // smtp-proto 0.2 wraps a BDAT size too large for 64 bits around to
        // a small number; such a chunk is over any limit.
        if bdat_size_token(line).is_some_and(|t| t.len() > 19) {
            return self.refuse_oversized_chunk();
        }
        let request = match parse(line) {
            Ok(request) => request,
            Err(e) => return Next::Reply(reply::from_parse_error(&e)),
        };
        match &request.0 {
            Request::Ehlo { .. } => self.greet(true),
            Request::Helo { .. } | Request::Lhlo { .. } => self.greet(false),
            Request::StartTls => match self.mode {
                Mode::Plain { .. } => Next::StartTls,
                _ => Next::Reply(reply::already_tls()),
            },
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(*mechanism, initial_response),
            Request::Mail { from } => self.mail(from, peer),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(*chunk_size, *is_last),
            Request::Rset => self.reset_then(reply::ok()),
            Request::Noop { .. } => Next::Reply(reply::ok()),
            Request::Quit => Next::Close(reply::bye()),
            Request::Vrfy { .. } => Next::Reply(reply::no_vrfy()),
            Request::Expn { .. } => Next::Reply(reply::no_expn()),
            Request::Help { .. } => Next::Reply(reply::help()),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                Next::Reply(reply::not_implemented())
            }
        }
    }

    /// EHLO, HELO, LHLO: the end of any transaction, then the greeting.
    fn greet(&mut self, extended: bool) -> Next {
        if let Mode::Plain { greeted } | Mode::Secure { greeted } = &mut self.mode {
            *greeted = true;
        }
        let answer = if extended {
            self.ehlo_reply()
        } else {
            Reply::new(250, [0, 0, 0], self.cx.hostname.to_string())
        };
        self.reset_then(answer)
    }

    /// The EHLO reply: what the relay itself handles, nothing
    /// provider-specific, never CLIENTID, no software name.
    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.cx.hostname.to_string(),
            "PIPELINING".into(),
            format!("SIZE {}", self.cx.limits.max_message_bytes),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if let Mode::Plain { .. } = self.mode {
            lines.push("STARTTLS".into());
        } else {
            let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        }
        Reply {
            code: 250,
            esc: [0, 0, 0],
            lines,
        }
    }

    fn auth(&mut self, mechanism: u64, initial: &str) -> Next {
        match self.mode {
            Mode::Plain { .. } => return Next::Reply(reply::auth_needs_tls()),
            Mode::Ready | Mode::Transaction(_) => {
                return Next::Reply(reply::already_authenticated());
            }
            Mode::Secure { greeted: false } => return Next::Reply(reply::ehlo_first()),
            Mode::Secure { greeted: true } | Mode::Sasl(_) => {}
        }
        let Some(mechanism) = Mechanism::from_smtp_proto(mechanism) else {
            return Next::Reply(reply::unknown_mechanism());
        };
        let initial = (!initial.is_empty()).then(|| Secret::copy_of(initial.as_bytes()));
        let (exchange, step) = Exchange::start(mechanism, initial);
        self.mode = Mode::Sasl(exchange);
        self.sasl_step(step)
    }

    /// A line read while a SASL exchange is going on is an answer.
    fn sasl_answer(&mut self, line: Line) -> Next {
        let step = match line {
            Line::Complete(line) => match &mut self.mode {
                Mode::Sasl(exchange) => exchange.answer(Secret::copy_of(line.trim_ascii())),
                _ => Step::Done(Err(SaslError::Malformed)),
            },
            Line::BareLf => Step::Done(Err(SaslError::Malformed)),
            Line::TooLong => return Next::Close(reply::line_too_long()),
        };
        self.sasl_step(step)
    }

    fn sasl_step(&mut self, step: Step) -> Next {
        match step {
            Step::Challenge(challenge) => Next::Reply(Reply::new(
                334,
                [0, 0, 0],
                String::from_utf8_lossy(challenge).into_owned(),
            )),
            Step::Done(done) => {
                self.mode = Mode::Secure { greeted: true };
                match done {
                    Ok(credentials) => Next::LogIn(credentials),
                    Err(SaslError::Cancelled) => Next::Reply(reply::auth_cancelled()),
                    Err(SaslError::NoAuthzid) => {
                        Next::Reply(reply::auth_oauthbearer_without_authzid())
                    }
                    Err(_) => Next::Reply(reply::auth_malformed()),
                }
            }
        }
    }
}

mod transaction;

#[cfg(test)]
mod tests;
