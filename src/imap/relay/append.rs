//! APPEND (and MULTIAPPEND) through the relay core: the mailbox and flags
//! are passed on as they are; each message's header block is gathered (up
//! to `max_header_bytes`) and the body follows byte for byte as it arrives.
//! A message the user just composed (a Sent copy, a draft) is checked and
//! sanitized, sent with the literal re-sized, and its date-time argument
//! rewritten to UTC to the minute. Any other message (delivered mail, an
//! archive, a folder copied between accounts) is relayed byte for byte,
//! date-time included: see [`crate::sanitize::composed`]. Forms the relay
//! would not see the message of (CATENATE, UTF8) are refused.

use super::commands::{Command, Input, Sink};
use super::core::{Awaiting, Core, Go, Tag};
use crate::imap::reply::{CONTINUE, tagged};
use crate::imap::syntax::{LiteralMarker, Token, line_body, literal_at_end, parse_head, token};
use crate::privacy::WipedBuf;
use crate::sanitize::composed::is_composed;
use crate::sanitize::date;
use crate::sanitize::{header_shape, strip_identifying_headers};

/// Largest mailbox name taken as a literal.
const MAILBOX_LITERAL_MAX: u64 = 4096;

/// An APPEND being read.
pub(crate) struct Append {
    tag: Tag,
    /// What goes to the provider before the next literal.
    pending: WipedBuf,
    mailbox_done: bool,
    messages: usize,
    /// Part of the command has gone to the provider: a refusal now would
    /// leave the provider inside it.
    started: bool,
    /// Where the next message's date-time argument is in `pending`.
    date_time: Option<std::ops::Range<usize>>,
    reading: Reading,
}

/// What a literal gathered here is.
enum Reading {
    /// No literal: the command's lines are being parsed.
    Args,
    /// The mailbox name.
    Mailbox,
    /// A message's first bytes, up to its header block's end or `limit`.
    Header { binary: bool, limit: usize },
}

impl Core<'_> {
    /// The first line of an APPEND.
    pub(super) fn append_start(&mut self, line: &[u8], tag: Tag) {
        let Ok(head) = parse_head(line) else {
            return self.reply(&tag, tagged::APPEND_MALFORMED);
        };
        let args_at = line.len() - head.rest.len();
        let mut pending = WipedBuf::with_capacity(line.len() + 16);
        pending.extend_from_slices(&[&tag, b" APPEND "]);
        let append = Append {
            tag,
            pending,
            mailbox_done: false,
            messages: 0,
            started: false,
            date_time: None,
            reading: Reading::Args,
        };
        self.append_args(&line[args_at..], Box::new(append));
    }

    /// A line of an APPEND after a literal.
    pub(super) fn append_line(&mut self, line: &[u8], append: Box<Append>) {
        self.append_args(line, append);
    }

    /// Parses what follows in `line`: the mailbox, then flags, dates and
    /// message literals, until the line ends or announces a literal.
    fn append_args(&mut self, line: &[u8], mut append: Box<Append>) {
        let mut pos = 0;
        loop {
            let rest = &line[pos..];
            let marker = literal_at_end(rest).ok().flatten().filter(|m| m.start == 0);
            if !append.mailbox_done {
                append.mailbox_done = true;
                if let Some(m) = marker {
                    if m.size > MAILBOX_LITERAL_MAX || m.binary {
                        return self.abandon(append.tag, m, tagged::MAILBOX_TOO_LONG);
                    }
                    return self.gather(append, Reading::Mailbox, m);
                }
                match token(rest) {
                    Ok(Token::Atom(n) | Token::Quoted(n)) => {
                        append.pending.extend_from_slice(&rest[..n]);
                        pos += n;
                        continue;
                    }
                    _ => return self.reply(&append.tag, tagged::APPEND_MALFORMED),
                }
            }
            if line_body(rest).is_empty() {
                if append.messages == 0 {
                    return self.reply(&append.tag, tagged::APPEND_WITHOUT_MESSAGE);
                }
                append.pending.extend_from_slice(b"\r\n");
                self.to_provider.extend_from_slice(&append.pending);
                return;
            }
            if rest[0] != b' ' {
                return self.refuse_append(&append, tagged::APPEND_MALFORMED);
            }
            append.pending.push(b' ');
            pos += 1;
            let rest = &line[pos..];
            if let Some(m) = literal_at_end(rest).ok().flatten().filter(|m| m.start == 0) {
                append.messages += 1;
                if m.size > self.s.max_literal && append.started {
                    return self.refuse_append(&append, tagged::LITERAL_REFUSED);
                }
                if m.size > self.s.max_literal {
                    return self.too_big(&append.tag, m.sync);
                }
                let limit = m.size.min(self.s.max_header_bytes as u64 + 1) as usize;
                let binary = m.binary;
                return self.gather(append, Reading::Header { binary, limit }, m);
            }
            match token(rest) {
                Ok(Token::List(n)) => {
                    append.pending.extend_from_slice(&rest[..n]);
                    pos += n;
                }
                Ok(Token::Quoted(n)) => {
                    let at = append.pending.len();
                    append.pending.extend_from_slice(&rest[..n]);
                    append.date_time = Some(at..at + n);
                    pos += n;
                }
                _ => {
                    // CATENATE, UTF8 (…) and other extensions: the relay
                    // would not see the message, so it does not pass them.
                    let form = tagged::APPEND_FORM;
                    if append.started {
                        return self.refuse_append(&append, form);
                    }
                    return match literal_at_end(rest).ok().flatten() {
                        Some(m) => self.abandon(append.tag, m, form),
                        None => self.reply(&append.tag, form),
                    };
                }
            }
        }
    }

    /// Refuses an APPEND. Once part of it has gone to the provider, which
    /// now waits for the rest, the relay cannot stay in step: the session
    /// ends, with the reason.
    fn refuse_append(&mut self, append: &Append, text: &'static str) {
        if !append.started {
            return self.reply(&append.tag, text);
        }
        // The reason without its status word: `* BYE [TOOBIG] …`.
        let reason = text.split_once(' ').map_or(text, |(_, reason)| reason);
        let bye = format!("* BYE {reason}\r\n");
        self.close(&bye, super::Ended::Closed);
    }

    /// Reads literal `m` here, as `reading`.
    fn gather(&mut self, mut append: Box<Append>, reading: Reading, m: LiteralMarker) {
        if m.sync {
            self.local(CONTINUE.as_bytes());
        }
        append.reading = reading;
        self.commands.gathered.clear();
        self.commands.command = Command::Append(append);
        self.start_literal(m.size, Sink::Gather);
    }

    /// How many more bytes of the current literal are gathered here.
    pub(super) fn gather_room(&self) -> usize {
        match &self.commands.command {
            Command::Append(append) => match append.reading {
                Reading::Header { limit, .. } => limit.saturating_sub(self.commands.gathered.len()),
                _ => usize::MAX,
            },
            _ => usize::MAX,
        }
    }

    /// More of a gathered literal arrived (not all of it).
    pub(super) fn append_gathered_more(&mut self) {
        let Command::Append(append) = &self.commands.command else {
            return;
        };
        if let Reading::Header { limit, .. } = append.reading
            && (header_end(&self.commands.gathered).is_some()
                || self.commands.gathered.len() >= limit)
        {
            self.finish_header();
        }
    }

    /// A literal of this APPEND has been read whole.
    pub(super) fn append_literal_done(&mut self) {
        let Command::Append(append) = &mut self.commands.command else {
            return;
        };
        match append.reading {
            Reading::Args => {}
            Reading::Header { .. } => self.finish_header(),
            Reading::Mailbox => {
                append.reading = Reading::Args;
                let name = self.commands.gathered.take();
                self.emit_literal(&name, b"", 0, false);
            }
        }
    }

    /// The header block is gathered (or the limit reached): refuse the
    /// message, or send its sanitized header and let the body follow.
    fn finish_header(&mut self) {
        let left = match self.commands.input {
            Input::Literal { left, .. } => left,
            _ => 0,
        };
        let Command::Append(append) = &mut self.commands.command else {
            return;
        };
        let Reading::Header { binary, .. } = append.reading else {
            return;
        };
        append.reading = Reading::Args;
        let head = self.commands.gathered.take();
        let date_time = append.date_time.take();
        let now = (self.s.clock)();
        let header = match header_end(&head) {
            Some(end) => Some(&head[..end]),
            None if left == 0 => Some(&head[..]),
            None => None,
        };
        let seen = header.unwrap_or(&head);
        let date_arg = date_time.clone().map(|range| &append.pending[range]);
        if !is_composed(seen, date_arg, now) {
            // Not the user's new message: every byte as it came.
            return self.emit_literal(&head, b"", left, binary);
        }
        let refusal: Option<&'static str> = match header {
            None => Some(tagged::HEADER_TOO_LARGE),
            Some(h) if h.len() > self.s.max_header_bytes => Some(tagged::HEADER_TOO_LARGE),
            Some(h) if header_shape(h).0 > self.s.max_header_fields => {
                Some(tagged::TOO_MANY_FIELDS)
            }
            Some(h) if has_bare_cr_or_lf(h) => Some(tagged::HEADER_LINE_ENDS),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            if append.started {
                // An earlier message of this MULTIAPPEND went out already.
                let append = std::mem::replace(&mut self.commands.command, Command::None);
                if let Command::Append(append) = append {
                    self.refuse_append(&append, refusal);
                }
                return;
            }
            // The rest of the literal and of the command are read and
            // dropped; then the client gets the reason.
            let tag = std::mem::take(&mut append.tag);
            self.commands.command = Command::Drain {
                tag,
                reply: Some(refusal),
            };
            return self.start_literal(left, Sink::Discard);
        }
        if let Some(range) = date_time {
            // Read above: the date-time is fresh, so it parses.
            let utc =
                date::parse_imap(&append.pending[range.clone()]).map(date::format_imap_utc_minute);
            if let Some(utc) = utc {
                let mut pending = WipedBuf::with_capacity(append.pending.len() + 4);
                pending.extend_from_slices(&[
                    &append.pending[..range.start],
                    &utc,
                    &append.pending[range.end..],
                ]);
                append.pending = pending;
            }
        }
        let sanitized = strip_identifying_headers(&head, self.s.policy, now);
        let mut first = sanitized.header;
        first.extend_from_slice(sanitized.rest);
        self.emit_literal(&first, b"", left, binary);
    }

    /// Sends the pending part of the command and a literal made of `first`,
    /// `second` and `more` bytes still to come from the client: at once
    /// with LITERAL+ (or LITERAL- when small enough), else after the
    /// provider's `+`, which the client never sees.
    fn emit_literal(&mut self, first: &[u8], second: &[u8], more: u64, binary: bool) {
        let Command::Append(append) = &mut self.commands.command else {
            return;
        };
        let size = (first.len() + second.len()) as u64 + more;
        let sync = !(self.s.literal_plus
            || (self.s.literal_minus && size <= super::commands::LITERAL_MINUS_MAX));
        append
            .pending
            .extend_from_slice(LiteralMarker::render(size, sync, binary).as_bytes());
        append.pending.extend_from_slice(b"\r\n");
        let pending = append.pending.take();
        let first_send = !append.started;
        append.started = true;
        let tag = append.tag.clone();
        if first_send {
            self.sent_command(&tag);
        }
        self.to_provider.extend_from_slice(&pending);
        if sync {
            let mut held = WipedBuf::with_capacity(first.len() + second.len());
            held.extend_from_slices(&[first, second]);
            self.commands.input = Input::Line;
            self.await_provider(Awaiting {
                tag,
                swallow: true,
                go: Go::Held {
                    bytes: held,
                    then_copy: more,
                },
            });
        } else {
            self.to_provider.extend_from_slices(&[first, second]);
            self.start_literal(more, Sink::Provider);
        }
    }
}

/// Where a message's header fields end (the blank line's own CRLF not
/// included), if the blank line has arrived.
fn header_end(head: &[u8]) -> Option<usize> {
    if head.starts_with(b"\r\n") {
        return Some(0);
    }
    memchr::memmem::find(head, b"\r\n\r\n").map(|i| i + 2)
}

/// A CR not followed by LF, or an LF not preceded by CR.
fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
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
    fn the_header_ends_at_the_first_blank_line() {
        assert_eq!(header_end(b"\r\nbody"), Some(0));
        assert_eq!(header_end(b"A: 1\r\n\r\nbody"), Some(6));
        assert_eq!(header_end(b"A: 1\r\nB: 2\r\n"), None);
    }
}
