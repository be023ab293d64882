//! Message framing: DATA dot-unstuffing on receipt, BDAT chunk checking, and
//! dot-stuffing towards the upstream — the one place where both directions of
//! the transparency procedure (RFC 5321 §4.5.2) live.
//!
//! Only CRLF line endings are accepted. A bare CR or a bare LF anywhere in a
//! message poisons it (SMTP smuggling: `\n.\n`, `\n.\r\n`, `\r.\r`,
//! `\r\n.\r`, …): the receiver keeps reading to the real `CRLF.CRLF`, stores
//! nothing more, and the session refuses the message. No I/O here.

use super::message::MessageBuf;

/// Why a received message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
    /// A line longer than the limit (CRLF included).
    LineTooLong,
    /// More bytes than the SIZE limit.
    TooLarge,
    /// The relay holds its budget of message bytes already.
    NoRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line; the last byte was not CR.
    Mid,
    /// The last byte was CR.
    Cr,
    /// DATA only: a `.` at the start of a line was read and held back.
    Dot,
    /// DATA only: `.` then CR at the start of a line.
    DotCr,
}

/// Receives a message body (DATA or BDAT), checking line endings, line length
/// and size as bytes arrive, and appending the unstuffed content to a buffer.
#[derive(Debug)]
pub struct MessageReceiver {
    dot_framed: bool,
    state: State,
    line_len: usize,
    max_line: usize,
    max_size: usize,
    refusal: Option<Refusal>,
}

/// Result of feeding bytes to a DATA receiver.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the terminator has not been seen yet.
    NeedMore,
    /// The terminating `CRLF.CRLF` ends `consumed` bytes into the input;
    /// bytes after it belong to the next command.
    Done {
        /// How many input bytes belonged to the message and terminator.
        consumed: usize,
    },
}

impl MessageReceiver {
    /// A receiver for `DATA` (dot-framed, unstuffs).
    pub fn data(max_size: usize, max_line: usize) -> Self {
        Self::new(true, max_size, max_line)
    }

    /// A receiver for a sequence of `BDAT` chunks (length-framed, verbatim).
    pub fn bdat(max_size: usize, max_line: usize) -> Self {
        Self::new(false, max_size, max_line)
    }

    fn new(dot_framed: bool, max_size: usize, max_line: usize) -> Self {
        MessageReceiver {
            dot_framed,
            state: State::LineStart,
            line_len: 0,
            max_line,
            max_size,
            refusal: None,
        }
    }

    /// Why the message will be refused, if it will.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal
    }

    fn refuse(&mut self, why: Refusal, out: &mut MessageBuf) {
        if self.refusal.is_none() {
            self.refusal = Some(why);
            out.clear();
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut MessageBuf) {
        if self.refusal.is_some() {
            return;
        }
        if out.len() + bytes.len() > self.max_size {
            self.refuse(Refusal::TooLarge, out);
            return;
        }
        if !out.has_room_for(bytes.len()) {
            self.refuse(Refusal::NoRoom, out);
            return;
        }
        out.extend_from_slice(bytes);
    }

    fn count_line_bytes(&mut self, n: usize, out: &mut MessageBuf) {
        self.line_len += n;
        if self.line_len > self.max_line {
            self.refuse(Refusal::LineTooLong, out);
        }
    }

    /// Feeds DATA bytes. Appends unstuffed content to `out` (nothing once the
    /// message is refused) and reports where the terminator ended.
    pub fn feed(&mut self, input: &[u8], out: &mut MessageBuf) -> Progress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart if self.dot_framed && b == b'.' => {
                    self.count_line_bytes(1, out);
                    self.state = State::Dot;
                    i += 1;
                }
                State::LineStart | State::Mid => {
                    // Copy the run of ordinary bytes up to the next CR or LF.
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    if run > 0 {
                        self.count_line_bytes(run, out);
                        self.emit(&input[i..i + run], out);
                        self.state = State::Mid;
                        i += run;
                        continue;
                    }
                    self.count_line_bytes(1, out);
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        // Bare LF: refuse. Only CRLF starts a new line, so
                        // only CRLF.CRLF can end the message.
                        self.refuse(Refusal::BareLineEnding, out);
                        self.state = State::Mid;
                    }
                    i += 1;
                }
                State::Cr => {
                    if b == b'\n' {
                        self.count_line_bytes(1, out);
                        self.emit(b"\r\n", out);
                        self.line_len = 0;
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        // Bare CR: refuse, then read on as if inside a line.
                        self.refuse(Refusal::BareLineEnding, out);
                        self.state = State::Mid;
                    }
                }
                State::Dot => match b {
                    b'\r' => {
                        self.count_line_bytes(1, out);
                        self.state = State::DotCr;
                        i += 1;
                    }
                    b'\n' => {
                        self.refuse(Refusal::BareLineEnding, out);
                        self.state = State::Mid;
                        i += 1;
                    }
                    _ => {
                        // The held-back dot was stuffing: drop it, go on.
                        self.state = State::Mid;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        return Progress::Done { consumed: i + 1 };
                    }
                    self.refuse(Refusal::BareLineEnding, out);
                    self.state = State::Mid;
                }
            }
        }
        Progress::NeedMore
    }

    /// Feeds one BDAT chunk's bytes (all of them belong to the message).
    pub fn feed_chunk(&mut self, chunk: &[u8], out: &mut MessageBuf) {
        debug_assert!(!self.dot_framed);
        let progress = self.feed(chunk, out);
        debug_assert_eq!(progress, Progress::NeedMore);
    }

    /// Ends a BDAT message: a trailing CR with no LF is a bare CR.
    pub fn finish_chunks(&mut self, out: &mut MessageBuf) {
        if self.state == State::Cr {
            self.refuse(Refusal::BareLineEnding, out);
        }
    }
}

/// The pieces to write, in order, to send `parts` (one message, split
/// anywhere) dot-stuffed and terminated: content slices borrowed from `parts`
/// and the few bytes the transparency procedure adds. Made as they are
/// written, one line at a time: a message of millions of short lines is
/// never described by a list as long as itself.
pub fn stuffed_pieces<'a, 'p>(parts: &'p [&'a [u8]]) -> Stuffed<'a, 'p> {
    Stuffed {
        parts,
        part: 0,
        start: 0,
        at_line_start: true,
        dot_written: false,
        last: None,
        ending: 0,
    }
}

/// The iterator of [`stuffed_pieces`].
#[derive(Debug)]
pub struct Stuffed<'a, 'p> {
    parts: &'p [&'a [u8]],
    part: usize,
    start: usize,
    at_line_start: bool,
    dot_written: bool,
    last: Option<u8>,
    ending: u8,
}

impl<'a> Iterator for Stuffed<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while let Some(&p) = self.parts.get(self.part) {
            if self.start >= p.len() {
                self.part += 1;
                self.start = 0;
                continue;
            }
            if self.at_line_start && p[self.start] == b'.' && !self.dot_written {
                self.dot_written = true;
                return Some(&b"."[..]);
            }
            self.dot_written = false;
            let end = match memchr::memchr(b'\n', &p[self.start..]) {
                Some(nl) => self.start + nl + 1,
                None => p.len(),
            };
            self.at_line_start = p[end - 1] == b'\n';
            self.last = Some(p[end - 1]);
            let piece = &p[self.start..end];
            self.start = end;
            return Some(piece);
        }
        // A message that does not end in CRLF (possible with BDAT) gets
        // one, so the terminator stands on a line of its own.
        loop {
            self.ending = self.ending.saturating_add(1);
            match self.ending {
                1 if self.last.is_some_and(|b| b != b'\n') => return Some(&b"\r\n"[..]),
                1 => continue,
                2 => return Some(&b".\r\n"[..]),
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> MessageBuf {
        MessageBuf::new(0, 1024)
    }

    fn receive(wire: &[u8]) -> (Vec<u8>, Option<Refusal>, Progress) {
        let mut r = MessageReceiver::data(1 << 20, 1000);
        let mut out = buffer();
        let p = r.feed(wire, &mut out);
        (out.whole().to_vec(), r.refusal(), p)
    }

    fn stuff(parts: &[&[u8]]) -> Vec<u8> {
        stuffed_pieces(parts).collect::<Vec<_>>().concat()
    }

    #[test]
    fn data_is_unstuffed_and_terminated_at_crlf_dot_crlf() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
        let (out, refusal, p) = receive(wire);
        assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(refusal, None);
        assert_eq!(
            p,
            Progress::Done {
                consumed: wire.len() - 6
            }
        );
    }

    #[test]
    fn empty_message_ends_at_first_dot_line() {
        let (out, refusal, p) = receive(b".\r\n");
        assert!(out.is_empty());
        assert_eq!(refusal, None);
        assert_eq!(p, Progress::Done { consumed: 3 });
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let wire = b"a\r\nb\r\n.\r\n";
        for split in 0..wire.len() {
            let mut r = MessageReceiver::data(1 << 20, 1000);
            let mut out = buffer();
            assert_eq!(
                r.feed(&wire[..split], &mut out),
                Progress::NeedMore,
                "split {split}"
            );
            assert_eq!(
                r.feed(&wire[split..], &mut out),
                Progress::Done {
                    consumed: wire.len() - split
                },
                "split {split}"
            );
            assert_eq!(&out.whole()[..], b"a\r\nb\r\n", "split {split}");
        }
    }

    #[test]
    fn every_smuggling_variant_is_refused_and_read_to_the_real_end() {
        for smuggle in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r.\r\n",
            b"bare\rcr",
            b"bare\nlf",
        ] {
            let mut wire = b"Subject: x\r\n\r\nhello".to_vec();
            wire.extend_from_slice(smuggle);
            wire.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nforged\r\n.\r\n");
            let (out, refusal, p) = receive(&wire);
            assert_eq!(refusal, Some(Refusal::BareLineEnding), "{smuggle:?}");
            assert!(out.is_empty(), "{smuggle:?}: refused data must not be kept");
            assert_eq!(
                p,
                Progress::Done {
                    consumed: wire.len()
                },
                "{smuggle:?}"
            );
        }
    }

    #[test]
    fn size_limit_is_enforced_while_receiving() {
        let mut r = MessageReceiver::data(10, 1000);
        let mut out = buffer();
        assert_eq!(
            r.feed(b"0123456789abc\r\n.\r\n", &mut out),
            Progress::Done { consumed: 18 }
        );
        assert_eq!(r.refusal(), Some(Refusal::TooLarge));
        assert!(out.is_empty());
    }

    #[test]
    fn line_length_limit_counts_crlf() {
        let mut r = MessageReceiver::data(1 << 20, 10);
        let mut out = buffer();
        r.feed(b"12345678\r\n.\r\n", &mut out);
        assert_eq!(r.refusal(), None);
        let mut r = MessageReceiver::data(1 << 20, 10);
        r.feed(b"123456789\r\n.\r\n", &mut out);
        assert_eq!(r.refusal(), Some(Refusal::LineTooLong));
    }

    #[test]
    fn bdat_chunks_are_verbatim_but_checked_across_boundaries() {
        let mut r = MessageReceiver::bdat(1 << 20, 1000);
        let mut out = buffer();
        r.feed_chunk(b".dot stays\r", &mut out);
        r.feed_chunk(b"\nend\r\n", &mut out);
        r.finish_chunks(&mut out);
        assert_eq!(r.refusal(), None);
        assert_eq!(&out.whole()[..], b".dot stays\r\nend\r\n");

        let mut r = MessageReceiver::bdat(1 << 20, 1000);
        r.feed_chunk(b"ends in cr\r", &mut out);
        r.finish_chunks(&mut out);
        assert_eq!(r.refusal(), Some(Refusal::BareLineEnding));
    }

    #[test]
    fn stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(
            stuff(&[b"a\r\n.b\r\n", b".\r\n"]),
            b"a\r\n..b\r\n..\r\n.\r\n"
        );
        assert_eq!(stuff(&[b".x\r\n"]), b"..x\r\n.\r\n");
        assert_eq!(stuff(&[]), b".\r\n");
        assert_eq!(stuff(&[b"no final crlf"]), b"no final crlf\r\n.\r\n");
        // A part boundary in the middle of a line does not start a new line.
        assert_eq!(stuff(&[b"a", b".b\r\n"]), b"a.b\r\n.\r\n");
    }

    #[test]
    fn unstuff_then_stuff_round_trips_the_wire_form() {
        let wire = b"From: a@example.test\r\n\r\n..\r\n...x\r\n.. \r\nend\r\n.\r\n";
        let (content, refusal, _) = receive(wire);
        assert_eq!(refusal, None);
        assert_eq!(stuff(&[&content]), wire.to_vec());
    }
}
