//! The relay core: both directions of an authenticated IMAP session as one
//! state machine without I/O. Bytes from the client and from the provider
//! go in ([`Core::client_input`], [`Core::provider_input`]); bytes for each
//! side come out ([`Core::to_client`], [`Core::to_provider`]); the core says
//! when it waits for the provider, when it takes no client input, and how
//! the session ended. The driver (`super`) only moves bytes and keeps time.
//!
//! The directions meet in three places, all here: a literal the provider
//! must invite before the client's bytes may follow ([`Awaiting`]); the
//! relay's own replies, which go out only between two provider responses
//! (`deferred`); and the end of the session ([`Core::close`]).

use super::commands::Commands;
use super::responses::Responses;
use super::{Ended, Settings};
use crate::imap::reply::untagged;
use crate::privacy::WipedBuf;

/// Commands in flight at the provider, and bytes of their tags, before the
/// relay stops taking more from the client.
const MAX_OUTSTANDING: usize = 1024;
const MAX_OUTSTANDING_BYTES: usize = 64 * 1024;
/// Bytes waiting for the client before the relay stops taking more from
/// it: a client that sends and never reads cannot make them grow.
const CLIENT_BACKLOG: usize = 256 * 1024;

/// A command tag as the client sent it.
pub(super) type Tag = Vec<u8>;

/// A literal sent on to the provider as synchronizing, waiting for its
/// `+` (or for its refusal, a tagged completion of `tag`).
pub(super) struct Awaiting {
    pub(super) tag: Tag,
    /// The relay, not the client, waits for the `+`: it is not shown to the
    /// client (whose literal is already on its way, or was read here).
    pub(super) swallow: bool,
    /// What to do once the provider invites the literal.
    pub(super) go: Go,
}

/// What follows the provider's `+`.
pub(super) enum Go {
    /// Copy the client's literal of `size` bytes.
    Literal { size: u64 },
    /// Send these bytes (read earlier), then copy `then_copy` more bytes of
    /// the client's literal.
    Held { bytes: WipedBuf, then_copy: u64 },
}

/// One authenticated session, both directions.
pub struct Core<'p> {
    pub(super) s: Settings<'p>,
    pub(super) commands: Commands,
    pub(super) responses: Responses,
    /// For the client, ready to write.
    pub(super) to_client: WipedBuf,
    /// For the provider, ready to write.
    pub(super) to_provider: WipedBuf,
    /// The relay's own replies, waiting for the end of the provider's
    /// current response.
    pub(super) deferred: WipedBuf,
    pub(super) awaiting: Option<Awaiting>,
    /// Tags of the commands the provider has and has not completed yet.
    pub(super) outstanding: Vec<Tag>,
    outstanding_bytes: usize,
    /// Counts the literals waited for, to tell one wait from the next.
    awaited: u64,
    /// The relay decided to end the session: once `deferred` is out, it has.
    pub(super) closing: Option<Ended>,
    pub(super) ended: Option<Ended>,
    /// The provider said BYE: its closing the connection is no loss.
    pub(super) bye_seen: bool,
}

impl<'p> Core<'p> {
    /// A core for a session just logged in.
    pub fn new(s: Settings<'p>) -> Self {
        Core {
            s,
            commands: Commands::new(),
            responses: Responses::new(),
            to_client: WipedBuf::new(),
            to_provider: WipedBuf::new(),
            deferred: WipedBuf::new(),
            awaiting: None,
            outstanding: Vec::new(),
            outstanding_bytes: 0,
            awaited: 0,
            closing: None,
            ended: None,
            bye_seen: false,
        }
    }

    /// Feeds bytes from the client; returns how many were taken (fewer
    /// when the core stopped taking client input part way).
    pub fn client_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && self.takes_client() {
            match self.client_step(&input[used..]) {
                0 => break,
                n => used += n,
            }
        }
        used
    }

    /// Feeds bytes from the provider; returns how many were taken.
    pub fn provider_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while used < input.len() && self.ended.is_none() {
            match self.provider_step(&input[used..]) {
                0 => break,
                n => used += n,
            }
        }
        used
    }

    /// True when client bytes are wanted now: not while a literal waits
    /// for the provider's invitation, nor once the session is ending.
    pub(crate) fn takes_client(&self) -> bool {
        self.awaiting.is_none()
            && self.closing.is_none()
            && self.ended.is_none()
            && self.outstanding.len() < MAX_OUTSTANDING
            && self.outstanding_bytes < MAX_OUTSTANDING_BYTES
            && self.to_client.len() + self.deferred.len() < CLIENT_BACKLOG
    }

    /// While a literal waits for the provider's `+`: a number that changes
    /// with each such wait.
    pub(crate) fn awaiting_provider(&self) -> Option<u64> {
        self.awaiting.as_ref().map(|_| self.awaited)
    }

    /// True once the relay has decided to end the session (its goodbye
    /// waits for the end of the provider's current response).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some() && self.ended.is_none()
    }

    /// The provider did not finish its response in time for the relay's
    /// goodbye: it goes out now, and the session ends.
    pub(crate) fn close_now(&mut self) {
        if let Some(why) = self.closing {
            let deferred = self.deferred.take();
            self.to_client.extend_from_slice(&deferred);
            self.ended.get_or_insert(why);
        }
    }

    /// The client literal being read, if any: an id that changes with each
    /// literal, and its size (for the transfer rate floor).
    pub(crate) fn client_literal(&self) -> Option<(u64, u64)> {
        self.commands.literal()
    }

    /// True when every command sent to the provider has its tagged answer.
    pub(crate) fn all_answered(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// True while the output for the client ends inside a provider
    /// response: the response's end has not arrived yet.
    pub(crate) fn mid_response(&self) -> bool {
        !self.responses.output_at_boundary()
    }

    /// Bytes for the client.
    pub fn to_client(&mut self) -> &mut WipedBuf {
        &mut self.to_client
    }

    /// Bytes for the provider.
    pub fn to_provider(&mut self) -> &mut WipedBuf {
        &mut self.to_provider
    }

    /// How the session ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// The client closed its side.
    pub(crate) fn client_closed(&mut self) {
        self.ended.get_or_insert(Ended::Closed);
    }

    /// The provider closed its side, or failed.
    pub(crate) fn provider_closed(&mut self) {
        if self.ended.is_some() {
            return;
        }
        if self.bye_seen {
            self.ended = Some(Ended::Closed);
        } else {
            self.to_client
                .extend_from_slice(untagged::PROVIDER_LOST.as_bytes());
            self.ended = Some(Ended::ProviderLost);
        }
    }

    /// The provider failed to answer in time (a literal's invitation, or
    /// taking what was written to it).
    pub(crate) fn provider_timed_out(&mut self) {
        self.provider_closed();
    }

    /// The client stayed silent past the idle timeout.
    pub(crate) fn client_idle(&mut self) {
        self.close(untagged::IDLE, Ended::IdleTimeout);
    }

    /// The client sent a literal below the transfer rate floor.
    pub(crate) fn client_too_slow(&mut self) {
        self.close(untagged::TOO_SLOW, Ended::TooSlow);
    }

    /// The client stopped reading: nothing more can be said to it.
    pub(crate) fn client_not_reading(&mut self) {
        self.ended.get_or_insert(Ended::SlowClient);
    }

    /// Ends the session after `bye` reaches the client, between two
    /// provider responses.
    pub(super) fn close(&mut self, bye: &str, why: Ended) {
        if self.closing.is_some() || self.ended.is_some() {
            return;
        }
        self.closing = Some(why);
        self.local(bye.as_bytes());
    }

    /// A command tagged `tag` went to the provider.
    pub(super) fn sent_command(&mut self, tag: &[u8]) {
        self.outstanding_bytes += tag.len();
        self.outstanding.push(tag.to_vec());
    }

    /// A literal now waits for the provider's invitation.
    pub(super) fn await_provider(&mut self, awaiting: Awaiting) {
        self.awaited += 1;
        self.awaiting = Some(awaiting);
    }

    /// The provider completed a command tagged `tag` (the oldest one in
    /// flight with that tag). Returns true when that was the command whose
    /// literal is awaited — the last one sent with the tag: the provider
    /// refused the literal.
    pub(super) fn completed(&mut self, tag: &[u8]) -> bool {
        let Some(first) = self.outstanding.iter().position(|t| t == tag) else {
            return false;
        };
        self.outstanding_bytes -= self.outstanding.remove(first).len();
        self.outstanding[first..].iter().all(|t| t != tag)
            && self.awaiting.as_ref().is_some_and(|a| a.tag == tag)
    }

    /// The relay's own reply: now if the provider is between responses,
    /// else once its current response is complete.
    pub(super) fn local(&mut self, bytes: &[u8]) {
        if self.responses.at_boundary() {
            self.to_client.extend_from_slice(bytes);
            if let Some(why) = self.closing {
                self.ended.get_or_insert(why);
            }
        } else {
            self.deferred.extend_from_slice(bytes);
        }
    }

    /// A tagged reply of the relay's own.
    pub(super) fn reply(&mut self, tag: &[u8], text: &str) {
        let mut line = WipedBuf::with_capacity(tag.len() + text.len() + 3);
        crate::imap::reply::write_tagged(&mut line, tag, text);
        self.local(&line);
    }

    /// The provider's current response is complete: the relay's own
    /// replies held for it go out.
    pub(super) fn response_boundary(&mut self) {
        if !self.deferred.is_empty() {
            let deferred = self.deferred.take();
            self.to_client.extend_from_slice(&deferred);
        }
        if let Some(why) = self.closing {
            self.ended.get_or_insert(why);
        }
    }
}
