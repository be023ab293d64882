//! The authenticated IMAP relay (its core, without sockets) between a
//! client sending anything and a scripted provider that frames what it
//! receives as IMAP, invites or refuses each synchronizing literal, and
//! answers every command — with untagged responses of the input's choosing
//! mixed in (with literals, capability lists, BYE).
//!
//! Whatever the client sends, what reaches the provider must stay framed
//! IMAP: every command starts with a tag and a name, never one the relay
//! refuses (COMPRESS, a second login, uploads it cannot see); an ID is only
//! ever the generic one; a synchronizing literal's bytes never follow
//! before the provider invited them. Neither output may grow beyond what
//! came in, plus the relay's own short replies.
//!
//! With the first byte's bit 3 set the provider's extra bytes are raw
//! (garbage, cut lines, literals that never end): the relay and the
//! provider may then disagree on where things are, so only the absence of
//! panics, hangs and amplification is checked.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailveil::imap::relay::{Core, Settings};
use mailveil::imap::syntax::{line_body, literal_at_end, parse_head};
use mailveil::sanitize::Policy;

const REFUSED: &[&[u8]] = &[
    b"COMPRESS",
    b"STARTTLS",
    b"LOGIN",
    b"AUTHENTICATE",
    b"UNAUTHENTICATE",
    b"REPLACE",
    b"URLFETCH",
    b"GENURLAUTH",
    b"RESETKEY",
    b"XAPPLEPUSHSERVICE",
];

/// `MV_FUZZ_TRACE=1` prints every step (to replay a crash by hand).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MV_FUZZ_TRACE").is_some())
}

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(Policy::default)
}

/// The provider's side: frames what the relay sends it.
#[derive(Default)]
struct Provider {
    line: Vec<u8>,
    /// Literal bytes still to come in the current command.
    literal: u64,
    /// A synchronizing literal was announced and not yet answered.
    awaiting: Option<(Vec<u8>, u64)>,
    /// The next line starts a command.
    in_command: bool,
    /// The current command's tag.
    tag: Vec<u8>,
    /// The whole current command, if it is an ID.
    id: Option<Vec<u8>>,
    /// What the provider sends back.
    replies: Vec<u8>,
    /// Refuse the next synchronizing literal instead of inviting it.
    refuse_next: bool,
    /// The relay may have been sent anything: check no framing.
    chaos: bool,
}

impl Provider {
    fn receive(&mut self, mut bytes: &[u8]) {
        if self.chaos {
            return;
        }
        while !bytes.is_empty() {
            assert!(
                self.awaiting.is_none(),
                "the relay sent bytes before the provider answered a synchronizing literal"
            );
            if self.literal > 0 {
                let n = (self.literal as usize).min(bytes.len());
                if let Some(id) = &mut self.id {
                    id.extend_from_slice(&bytes[..n]);
                }
                self.literal -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let Some(i) = bytes.iter().position(|b| *b == b'\n') else {
                self.line.extend_from_slice(bytes);
                return;
            };
            self.line.extend_from_slice(&bytes[..=i]);
            bytes = &bytes[i + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_received(&line);
        }
    }

    fn line_received(&mut self, line: &[u8]) {
        if !self.in_command {
            if line_body(line).eq_ignore_ascii_case(b"DONE") {
                return;
            }
            let head = parse_head(line).expect("the relay forwarded a line that is no command");
            let upper = head.name.to_ascii_uppercase();
            assert!(
                !REFUSED.contains(&upper.as_slice()),
                "the relay forwarded a refused command"
            );
            if upper == b"UID" {
                let sub = head.rest.split(|b| *b == b' ').next().unwrap_or_default();
                assert!(!line_body(sub).eq_ignore_ascii_case(b"REPLACE"));
            }
            self.tag = head.tag.to_vec();
            self.id = (upper == b"ID").then(Vec::new);
            self.in_command = true;
        }
        if let Some(id) = &mut self.id {
            id.extend_from_slice(line);
        }
        match literal_at_end(line) {
            Ok(Some(m)) => {
                self.literal = m.size;
                if m.sync {
                    if self.refuse_next {
                        self.refuse_next = false;
                        self.answer(b"NO [TOOBIG] refused");
                        return;
                    }
                    self.awaiting = Some((self.tag.clone(), m.size));
                }
            }
            _ => self.answer(b"OK done"),
        }
    }

    /// Ends the current command with `status` under its tag.
    fn answer(&mut self, status: &[u8]) {
        if let Some(id) = self.id.take() {
            let mut expected = self.tag.clone();
            expected.extend_from_slice(b" ID (\"name\" \"IMAP client\")\r\n");
            assert_eq!(id, expected, "the client's ID reached the provider");
        }
        self.in_command = false;
        self.literal = 0;
        let tag = std::mem::take(&mut self.tag);
        self.replies.extend_from_slice(&tag);
        self.replies.push(b' ');
        self.replies.extend_from_slice(status);
        self.replies.extend_from_slice(b"\r\n");
    }

    /// The invitation for a literal announced as synchronizing.
    fn invite(&mut self) {
        if self.awaiting.take().is_some() {
            self.replies.extend_from_slice(b"+ go ahead\r\n");
        }
    }
}

/// A well-formed untagged response made from `bytes`: by the second byte a
/// `CAPABILITY` list or a `BYE`; else a `FETCH` carrying the bytes as a
/// literal when the first one is odd, or a text line.
fn untagged(bytes: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = bytes
        .iter()
        .skip(2)
        .map(|b| if matches!(b, b'\r' | b'\n' | b'{' | b'}') { b'.' } else { *b })
        .collect();
    let mut out = b"* ".to_vec();
    match bytes.get(1).map(|b| b % 4) {
        Some(0) => out.extend_from_slice(b"CAPABILITY IMAP4rev1 "),
        Some(1) => out.extend_from_slice(b"BYE "),
        _ if bytes.first().is_some_and(|b| b % 2 == 1) => {
            out.extend_from_slice(format!("1 FETCH (BODY[] {{{}}}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b")\r\n");
            return out;
        }
        _ => {}
    }
    out.extend_from_slice(&text);
    out.extend_from_slice(b"\r\n");
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, mut input)) = input.split_first() else {
        return;
    };
    let settings = Settings {
        policy: policy(),
        max_line: 512,
        max_literal: 4096,
        literal_plus: flags & 1 != 0,
        literal_minus: flags & 2 != 0,
        has_id: flags & 4 != 0,
        max_header_bytes: 1024,
        max_header_fields: 20,
        // Fixed, so that a finding replays: 2026-11-30 10:00:00 UTC.
        clock: || 1_796_032_800,
        deltachat_push: flags & 16 != 0,
    };
    let chaos = flags & 8 != 0;
    let mut core = Core::new(settings);
    let mut provider = Provider {
        chaos,
        ..Provider::default()
    };
    let (mut client_in, mut provider_in) = (0usize, 0usize);
    let mut pending: Vec<u8> = Vec::new();
    // Each step: one op byte, one length byte, then that many bytes.
    while let [op, len, rest @ ..] = input {
        let n = (*len as usize).min(rest.len());
        let (bytes, after) = rest.split_at(n);
        input = after;
        match op % 4 {
            // Client bytes (with what the core did not take yet in front).
            0 | 1 => {
                pending.extend_from_slice(bytes);
                client_in += bytes.len();
                let taken = core.client_input(&pending);
                assert!(taken <= pending.len());
                pending.drain(..taken);
            }
            // Provider bytes of the input's making.
            2 => {
                let response = if chaos { bytes.to_vec() } else { untagged(bytes) };
                provider_in += response.len();
                core.provider_input(&response);
            }
            // The provider answers what it has seen: invites a waiting
            // literal, or (odd lengths) refuses the next one.
            _ => {
                provider.refuse_next = n % 2 == 1;
                provider.invite();
            }
        }
        let to_provider = core.to_provider().to_vec();
        core.to_provider().clear();
        if trace() {
            eprintln!(
                "op {} {:?}\n  -> provider {:?}",
                op % 4,
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&to_provider)
            );
        }
        provider.receive(&to_provider);
        let replies = std::mem::take(&mut provider.replies);
        if trace() {
            eprintln!("  <- provider {:?}", String::from_utf8_lossy(&replies));
        }
        provider_in += replies.len();
        core.provider_input(&replies);
        let to_client = core.to_client().len();
        // The relay's own replies are short; nothing is amplified.
        assert!(to_client <= provider_in + 256 * (client_in + 64));
        if core.ended().is_some() {
            assert_eq!(core.client_input(b"x NOOP\r\n"), 0, "input taken after the end");
            break;
        }
        if to_client > 1 << 16 {
            core.to_client().clear();
        }
    }
});
