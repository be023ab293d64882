//! The client's side of the relay core: commands framed line by line and
//! literal by literal, and forwarded as they are — except ID (one generic
//! list for everybody), APPEND ([`super::append`]: the message's header
//! block sanitized, the literal re-sized) and what the relay cannot carry
//! (COMPRESS, a second login, uploads it would not see), which it refuses.
//!
//! A literal the provider cannot take as the client sent it (synchronizing,
//! or non-synchronizing beyond the provider's LITERAL+/LITERAL-) goes on as
//! synchronizing and waits for the provider's `+`; a refusal instead ends
//! the command. Command lines and literals read here are [`WipedBuf`]s.

use super::Ended;
use super::append::Append;
use super::core::{Awaiting, Core, Go, Tag};
use crate::imap::reply::{CONTINUE, tagged, untagged};
use crate::imap::syntax::{
    LiteralMarker, leading_tag, line_body, literal_at_end, parse_head, reply_tag,
};
use crate::privacy::WipedBuf;
use crate::provider::imap::GENERIC_ID;

/// RFC 7888: LITERAL- allows non-synchronizing literals up to this size.
pub(super) const LITERAL_MINUS_MAX: u64 = 4096;
/// Largest ID command (with its literals) read here.
const ID_MAX: usize = 4096;
/// Line buffer capacity kept between commands.
const LINE_KEEP: usize = 1024;

/// Where the client's next bytes go.
pub(super) enum Input {
    /// A line: a new command, or the next line of the current one.
    Line,
    /// The rest of an overlong new command line, dropped.
    SkipLine { tag: Tag },
    /// A literal of `left` bytes.
    Literal { left: u64, sink: Sink },
}

/// Where a literal's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sink {
    /// On to the provider.
    Provider,
    /// Nowhere.
    Discard,
    /// Into the command being gathered here (ID, an APPEND mailbox name or
    /// message header).
    Gather,
}

/// The command being read.
pub(super) enum Command {
    /// Between commands.
    None,
    /// Forwarded as it is, line after line.
    Forward { tag: Tag },
    /// Refused: the rest is read and dropped, then `reply` (if any) sent.
    Drain {
        tag: Tag,
        reply: Option<&'static str>,
    },
    /// ID, gathered here.
    Id { tag: Tag },
    /// APPEND, rewritten.
    Append(Box<Append>),
}

/// The client side's state.
pub(crate) struct Commands {
    pub(super) input: Input,
    pub(super) command: Command,
    /// The line being read.
    pub(super) line: WipedBuf,
    /// What a gathered command or literal holds so far.
    pub(super) gathered: WipedBuf,
    /// Counts literals, to tell one from the next.
    literals: u64,
}

impl Commands {
    pub(super) fn new() -> Self {
        Commands {
            input: Input::Line,
            command: Command::None,
            line: WipedBuf::new(),
            gathered: WipedBuf::new(),
            literals: 0,
        }
    }

    /// The literal being read: its number and size.
    pub(super) fn literal(&self) -> Option<(u64, u64)> {
        match self.input {
            Input::Literal { left, .. } => Some((self.literals, left)),
            _ => None,
        }
    }
}

/// Commands the relay refuses after login, with the answer they get.
fn refused_command(name: &[u8], rest: &[u8], push: bool) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    Some(match upper.as_slice() {
        // A Delta Chat device token names a phone to a push service: not
        // while push is off (its capability is hidden, so a client that
        // sends one anyway is not told it may).
        // A literal, or a quoted string with an escape (`"/private/device\token"`
        // is the same name to the server), could carry the entry name past
        // this look, so while push is off a SETMETADATA with either is
        // refused as well.
        b"SETMETADATA"
            if !push
                && (memchr::memmem::find(&rest.to_ascii_lowercase(), b"/private/devicetoken")
                    .is_some()
                    || rest.contains(&b'\\')
                    || literal_at_end(rest).ok().flatten().is_some()) =>
        {
            tagged::NO_PUSH
        }
        b"COMPRESS" => tagged::NO_COMPRESS,
        b"STARTTLS" | b"LOGIN" | b"AUTHENTICATE" | b"UNAUTHENTICATE" => {
            tagged::ALREADY_AUTHENTICATED
        }
        b"REPLACE" | b"URLFETCH" | b"GENURLAUTH" | b"RESETKEY" | b"XAPPLEPUSHSERVICE" => {
            tagged::NOT_HERE
        }
        b"UID" => {
            let sub = rest.split(|b| *b == b' ').next().unwrap_or_default();
            if line_body(sub).eq_ignore_ascii_case(b"REPLACE") {
                tagged::NOT_HERE
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

impl Core<'_> {
    /// Takes client bytes in the current input state; returns how many.
    pub(super) fn client_step(&mut self, input: &[u8]) -> usize {
        match &mut self.commands.input {
            Input::Line => {
                let room = self.s.max_line - self.commands.line.len();
                let window = &input[..input.len().min(room)];
                match memchr::memchr(b'\n', window) {
                    Some(i) => {
                        self.commands.line.extend_from_slice(&window[..=i]);
                        let mut line = self.commands.line.take();
                        self.complete_line(&line);
                        // Keep a small allocation for the next line.
                        line.clear();
                        line.shrink_to(LINE_KEEP);
                        if self.commands.line.capacity() == 0 {
                            self.commands.line = line;
                        }
                        i + 1
                    }
                    None => {
                        self.commands.line.extend_from_slice(window);
                        if self.commands.line.len() >= self.s.max_line {
                            self.line_too_long();
                        }
                        window.len()
                    }
                }
            }
            Input::SkipLine { tag } => match memchr::memchr(b'\n', input) {
                Some(i) => {
                    let tag = std::mem::take(tag);
                    self.commands.input = Input::Line;
                    self.reply(&tag, tagged::LINE_TOO_LONG);
                    i + 1
                }
                None => input.len(),
            },
            Input::Literal { left, sink } => {
                let (left, sink) = (*left, *sink);
                let cap = match sink {
                    Sink::Gather => self.gather_room(),
                    _ => usize::MAX,
                };
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len())
                    .min(cap);
                let bytes = &input[..take];
                let left = left - take as u64;
                self.commands.input = Input::Literal { left, sink };
                match sink {
                    Sink::Provider => self.to_provider.extend_from_slice(bytes),
                    Sink::Discard => {}
                    Sink::Gather => self.commands.gathered.extend_from_slice(bytes),
                }
                if left == 0 {
                    self.literal_done();
                } else if sink == Sink::Gather {
                    self.gathered_more();
                }
                take
            }
        }
    }

    /// A line over the limit: a new command is answered BAD once the rest
    /// of its line is dropped; inside a command the session cannot stay
    /// in step and ends.
    fn line_too_long(&mut self) {
        let partial = self.commands.line.take();
        if let Command::None = self.commands.command {
            let tag = leading_tag(&partial).unwrap_or(b"*").to_vec();
            self.commands.input = Input::SkipLine { tag };
        } else {
            self.close(untagged::LINE_TOO_LONG, Ended::Closed);
        }
    }

    /// Starts reading a literal of `size` bytes into `sink`.
    pub(super) fn start_literal(&mut self, size: u64, sink: Sink) {
        if size == 0 {
            self.commands.input = Input::Line;
            self.literal_done();
            return;
        }
        self.commands.literals += 1;
        self.commands.input = Input::Literal { left: size, sink };
    }

    /// A literal has been read whole.
    fn literal_done(&mut self) {
        self.commands.input = Input::Line;
        if let Command::Append(_) = self.commands.command {
            self.append_literal_done();
        }
    }

    /// More bytes of a gathered literal arrived.
    fn gathered_more(&mut self) {
        if let Command::Append(_) = self.commands.command {
            self.append_gathered_more();
        }
    }

    fn complete_line(&mut self, line: &[u8]) {
        match std::mem::replace(&mut self.commands.command, Command::None) {
            Command::None => self.new_command(line),
            Command::Forward { tag } => self.forward(line, tag, false),
            Command::Drain { tag, reply } => self.drain(line, tag, reply),
            Command::Id { tag } => self.id(line, tag),
            Command::Append(append) => self.append_line(line, append),
        }
    }

    fn new_command(&mut self, line: &[u8]) {
        if line_body(line).eq_ignore_ascii_case(b"DONE") {
            // The end of IDLE: not a command of its own.
            self.to_provider.extend_from_slice(line);
            return;
        }
        let Ok(head) = parse_head(line) else {
            let tag = reply_tag(line).to_vec();
            self.reply(&tag, tagged::MALFORMED);
            return;
        };
        let tag = head.tag.to_vec();
        if let Some(refusal) = refused_command(head.name, head.rest, self.s.deltachat_push) {
            match literal_at_end(line) {
                Ok(Some(m)) => self.abandon(tag, m, refusal),
                _ => self.reply(&tag, refusal),
            }
            return;
        }
        if head.name.eq_ignore_ascii_case(b"APPEND") {
            return self.append_start(line, tag);
        }
        if head.name.eq_ignore_ascii_case(b"ID") {
            self.commands.gathered.clear();
            return self.id(line, tag);
        }
        self.forward(line, tag, true);
    }

    /// One line of a forwarded command (`first`: its first line), and the
    /// literal it announces. A literal refused here on a later line would
    /// leave the provider inside the command: the session ends instead.
    fn forward(&mut self, line: &[u8], tag: Tag, first: bool) {
        let marker = match literal_at_end(line) {
            Ok(marker) => marker,
            Err(_) if first => return self.too_big(&tag, true),
            Err(_) => return self.close(untagged::LITERAL_TOO_LARGE, Ended::Closed),
        };
        if marker.is_some_and(|m| m.size > self.s.max_literal) && !first {
            return self.close(untagged::LITERAL_TOO_LARGE, Ended::Closed);
        }
        if first {
            match marker {
                Some(m) if m.size > self.s.max_literal => return self.too_big(&tag, m.sync),
                _ => self.sent_command(&tag),
            }
        }
        let Some(m) = marker else {
            self.to_provider.extend_from_slice(line);
            return;
        };
        self.commands.command = Command::Forward { tag: tag.clone() };
        if m.sync || !self.provider_takes_non_sync(m.size) {
            // Either the client waits for the provider's `+`, or the
            // provider cannot take the client's non-synchronizing literal
            // and the relay waits for the `+` on the client's behalf.
            self.to_provider.extend_from_slice(&line[..m.start]);
            self.to_provider
                .extend_from_slice(LiteralMarker::render(m.size, true, m.binary).as_bytes());
            self.to_provider.extend_from_slice(b"\r\n");
            self.await_provider(Awaiting {
                tag,
                swallow: !m.sync,
                go: Go::Literal { size: m.size },
            });
        } else {
            self.to_provider.extend_from_slice(line);
            self.start_literal(m.size, Sink::Provider);
        }
    }

    /// True when the provider takes a non-synchronizing literal this size.
    pub(super) fn provider_takes_non_sync(&self, size: u64) -> bool {
        self.s.literal_plus || (self.s.literal_minus && size <= LITERAL_MINUS_MAX)
    }

    /// The provider invited the literal it was waiting for.
    pub(super) fn provider_invited(&mut self, go: Go) {
        match go {
            Go::Literal { size } => self.start_literal(size, Sink::Provider),
            Go::Held { bytes, then_copy } => {
                self.to_provider.extend_from_slice(&bytes);
                self.start_literal(then_copy, Sink::Provider);
            }
        }
    }

    /// The provider refused the command instead of inviting its literal:
    /// the command is over, and whatever the client still sends for it
    /// is dropped.
    pub(super) fn provider_refused(&mut self, awaiting: Awaiting) {
        let tag = awaiting.tag;
        let pending = match awaiting.go {
            Go::Literal { size } => size,
            Go::Held { then_copy, .. } => then_copy,
        };
        if let Command::Append(_) = self.commands.command {
            self.commands.command = Command::Drain { tag, reply: None };
            return self.start_literal(pending, Sink::Discard);
        }
        if awaiting.swallow {
            self.commands.command = Command::Drain { tag, reply: None };
            self.start_literal(pending, Sink::Discard);
        } else {
            // The client waited for the `+` and got the refusal instead.
            self.commands.command = Command::None;
            self.commands.input = Input::Line;
        }
    }

    /// One line of a refused command being drained.
    fn drain(&mut self, line: &[u8], tag: Tag, reply: Option<&'static str>) {
        let marker = literal_at_end(line).ok().flatten();
        let Some(m) = marker else {
            if let Some(reply) = reply {
                self.reply(&tag, reply);
            }
            return;
        };
        if m.size > self.s.max_literal {
            return self.close(untagged::LITERAL_TOO_LARGE, Ended::Closed);
        }
        if m.sync {
            self.local(CONTINUE.as_bytes());
        }
        self.commands.command = Command::Drain { tag, reply };
        self.start_literal(m.size, Sink::Discard);
    }

    /// Refuses a command whose line ended in literal `m`: a synchronizing
    /// literal is simply never invited; a non-synchronizing one is dropped
    /// with the rest of the command, then `reply` is sent.
    pub(super) fn abandon(&mut self, tag: Tag, m: LiteralMarker, reply: &'static str) {
        if m.sync {
            return self.reply(&tag, reply);
        }
        if m.size > self.s.max_literal {
            return self.close(untagged::LITERAL_TOO_LARGE, Ended::Closed);
        }
        self.commands.command = Command::Drain {
            tag,
            reply: Some(reply),
        };
        self.start_literal(m.size, Sink::Discard);
    }

    /// A literal over the limit: refused before it is sent when the client
    /// waits for an invitation; otherwise the bytes are already on their
    /// way and the connection is closed (RFC 7888 §4).
    pub(super) fn too_big(&mut self, tag: &[u8], sync: bool) {
        if sync {
            return self.reply(tag, tagged::LITERAL_REFUSED);
        }
        self.close(untagged::LITERAL_TOO_LARGE, Ended::Closed);
    }

    /// ID: the client's parameters stay here; the provider gets the generic
    /// list, and its answer goes back to the client.
    fn id(&mut self, line: &[u8], tag: Tag) {
        self.commands.gathered.extend_from_slice(line);
        let too_long = tagged::ID_TOO_LONG;
        let Ok(marker) = literal_at_end(line) else {
            self.commands.gathered.clear();
            return self.reply(&tag, too_long);
        };
        let Some(m) = marker else {
            self.commands.gathered.clear();
            if !self.s.has_id {
                self.local(untagged::ID_NIL.as_bytes());
                return self.reply(&tag, tagged::ID);
            }
            let mut command = WipedBuf::with_capacity(tag.len() + 64);
            command.extend_from_slices(&[&tag, b" ID ", GENERIC_ID, b"\r\n"]);
            self.sent_command(&tag);
            self.to_provider.extend_from_slice(&command);
            return;
        };
        if m.size > ID_MAX as u64 || self.commands.gathered.len() + m.size as usize > ID_MAX {
            self.commands.gathered.clear();
            return self.abandon(tag, m, too_long);
        }
        if m.sync {
            self.local(CONTINUE.as_bytes());
        }
        self.commands.command = Command::Id { tag };
        self.start_literal(m.size, Sink::Gather);
    }
}
