//! The provider's side of the relay core: responses framed line by line and
//! literal by literal and passed to the client as they come, capability
//! lists filtered through the allowlist. Literals are never held whole:
//! their bytes go out as they arrive.
//!
//! Here too the provider's answer to a literal the relay made
//! synchronizing is recognised: its `+` (shown to the client only when the
//! client is the one waiting) or a tagged completion of that command.

use super::core::Core;
use crate::imap::syntax::{filter_capability_line, leading_tag, literal_at_end};
use crate::privacy::WipedBuf;

/// Longest response head read before deciding how to relay it.
const HEAD_MAX: usize = 8 * 1024;
/// Longest capability response rewritten (longer ones are dropped).
const CAPABILITY_MAX: usize = 64 * 1024;
/// Bytes kept from the end of a streamed line, to find a literal marker.
const TAIL: usize = 64;

/// Where the provider's next bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first line of a response.
    Head,
    /// A line after a literal, in the same response.
    Next,
    /// A capability line longer than a head, gathered whole to be filtered.
    Capability,
    /// The rest of a long line, passed on as it comes.
    Stream,
    /// The rest of a line, dropped.
    Skip,
    /// A literal of `left` bytes, passed on.
    Literal { left: u64 },
}

/// The provider side's state.
pub(crate) struct Responses {
    state: State,
    /// The line being read.
    line: WipedBuf,
    /// The last bytes of a streamed line.
    tail: WipedBuf,
}

impl Responses {
    pub(super) fn new() -> Self {
        Responses {
            state: State::Head,
            line: WipedBuf::new(),
            tail: WipedBuf::new(),
        }
    }

    /// True between two responses: the relay may speak.
    pub(super) fn at_boundary(&self) -> bool {
        self.state == State::Head && self.line.is_empty()
    }

    /// True when what has been passed to the client so far ends between
    /// two responses. The start of a next response may be gathering: it is
    /// not output until its line is complete.
    pub(super) fn output_at_boundary(&self) -> bool {
        self.state == State::Head
    }
}

impl Core<'_> {
    /// Takes provider bytes in the current state; returns how many.
    pub(super) fn provider_step(&mut self, input: &[u8]) -> usize {
        match self.responses.state {
            State::Head | State::Next => self.read_line(input, HEAD_MAX),
            State::Capability => self.read_line(input, CAPABILITY_MAX),
            State::Stream => match memchr::memchr(b'\n', input) {
                Some(i) => {
                    self.to_client.extend_from_slice(&input[..=i]);
                    keep_tail(&mut self.responses.tail, &input[..=i]);
                    let tail = self.responses.tail.take();
                    self.line_ended(&tail);
                    i + 1
                }
                None => {
                    self.to_client.extend_from_slice(input);
                    keep_tail(&mut self.responses.tail, input);
                    input.len()
                }
            },
            State::Skip => match memchr::memchr(b'\n', input) {
                Some(i) => {
                    self.end_of_response();
                    i + 1
                }
                None => input.len(),
            },
            State::Literal { left } => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                self.to_client.extend_from_slice(&input[..take]);
                let left = left - take as u64;
                self.responses.state = if left == 0 {
                    State::Next
                } else {
                    State::Literal { left }
                };
                take
            }
        }
    }

    /// Gathers a line of at most `max` bytes; decides once it is complete
    /// or at the limit.
    fn read_line(&mut self, input: &[u8], max: usize) -> usize {
        let room = max - self.responses.line.len();
        let window = &input[..input.len().min(room)];
        match memchr::memchr(b'\n', window) {
            Some(i) => {
                self.responses.line.extend_from_slice(&window[..=i]);
                self.line_read(true);
                i + 1
            }
            None => {
                self.responses.line.extend_from_slice(window);
                if self.responses.line.len() >= max {
                    self.line_read(false);
                }
                window.len()
            }
        }
    }

    /// A line has been read: whole (`complete`), or up to its limit.
    fn line_read(&mut self, complete: bool) {
        let line = self.responses.line.take();
        match self.responses.state {
            State::Head => self.first_line(line, complete),
            State::Capability if complete => {
                match filter_capability_line(&line, self.s.deltachat_push) {
                    Some(filtered) => {
                        self.to_client.extend_from_slice(&filtered);
                        self.end_of_response();
                    }
                    None => self.pass_line(&line, true),
                }
            }
            // Too long to filter: dropped whole.
            State::Capability => self.responses.state = State::Skip,
            _ => self.pass_line(&line, complete),
        }
    }

    /// The first line of a response.
    fn first_line(&mut self, mut line: WipedBuf, complete: bool) {
        if line.starts_with(b"+")
            && let Some(awaiting) = self.awaiting.take()
        {
            if !awaiting.swallow {
                self.to_client.extend_from_slice(&line);
                if !complete {
                    self.to_client.extend_from_slice(b"\r\n");
                }
            }
            self.responses.state = if complete { State::Head } else { State::Skip };
            self.provider_invited(awaiting.go);
            if complete {
                self.end_of_response();
            }
            return;
        }
        if let Some(rest) = line.strip_prefix(b"* ") {
            if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"BYE") {
                self.bye_seen = true;
            }
        } else if let Some(tag) = leading_tag(&line)
            && self.completed(tag)
            && let Some(awaiting) = self.awaiting.take()
        {
            // A completion of the command whose literal was awaited:
            // refused instead of invited.
            self.provider_refused(awaiting);
        }
        if might_carry_capabilities(&line) {
            if !complete {
                self.responses.state = State::Capability;
                line.reserve(HEAD_MAX);
                self.responses.line = line;
                return;
            }
            if let Some(filtered) = filter_capability_line(&line, self.s.deltachat_push) {
                self.to_client.extend_from_slice(&filtered);
                return self.end_of_response();
            }
        }
        self.pass_line(&line, complete);
    }

    /// Passes a line on; a cut one continues as a stream.
    fn pass_line(&mut self, line: &[u8], complete: bool) {
        self.to_client.extend_from_slice(line);
        if complete {
            self.line_ended(&line[line.len().saturating_sub(TAIL)..]);
        } else {
            self.responses.tail.clear();
            keep_tail(&mut self.responses.tail, line);
            self.responses.state = State::Stream;
        }
    }

    /// A line of a response has ended with `tail`: a literal follows, or
    /// the response is over.
    fn line_ended(&mut self, tail: &[u8]) {
        match literal_at_end(tail) {
            Ok(Some(m)) if m.size > 0 => self.responses.state = State::Literal { left: m.size },
            Ok(Some(_)) => self.responses.state = State::Next,
            Ok(None) => self.end_of_response(),
            // A literal no one could send: the provider is not speaking
            // IMAP the relay can frame.
            Err(_) => self.provider_closed(),
        }
    }

    fn end_of_response(&mut self) {
        self.responses.state = State::Head;
        self.response_boundary();
    }
}

/// Keeps the last [`TAIL`] bytes of a line.
fn keep_tail(tail: &mut WipedBuf, segment: &[u8]) {
    tail.extend_from_slice(&segment[segment.len().saturating_sub(TAIL)..]);
    if tail.len() > TAIL {
        tail.consume(tail.len() - TAIL);
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
    fn capability_carriers_are_recognised() {
        assert!(might_carry_capabilities(b"* CAPABILITY IMAP4rev1\r\n"));
        assert!(might_carry_capabilities(
            b"a1 OK [CAPABILITY IMAP4rev1] x\r\n"
        ));
        assert!(!might_carry_capabilities(b"* 1 FETCH (FLAGS ())\r\n"));
        assert!(!might_carry_capabilities(b"a1 OK [READ-WRITE] x\r\n"));
    }
}
