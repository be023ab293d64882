//! The pieces of IMAP wire syntax the relay needs, without I/O: command tags
//! and names, literal announcements at the end of a line, astrings for
//! LOGIN, and the capability allowlist applied to everything the provider
//! advertises.
//!
//! The relay does not parse IMAP in full. It frames commands and responses
//! (lines and the literals they announce) so that it always knows where one
//! ends, and rewrites only what it must: capabilities, ID and APPEND.

use crate::privacy::WipedBuf;

/// Input that is not IMAP the relay can frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// No valid tag, or no command name after it.
    #[error("malformed command")]
    Malformed,
    /// A literal size with more digits than any limit could allow.
    #[error("literal size out of range")]
    LiteralSize,
}

/// A literal announced at the end of a line: `{n}`, `{n+}`, `~{n}`, `~{n+}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralMarker {
    /// Where the marker starts in the line (the `{` or the `~`).
    pub start: usize,
    /// Announced size in bytes.
    pub size: u64,
    /// Synchronizing (`{n}`): the sender waits for a `+` continuation.
    pub sync: bool,
    /// A `literal8` (`~{n}`, RFC 3516 BINARY).
    pub binary: bool,
}

impl LiteralMarker {
    /// The marker as it would be written with another size and form.
    pub(crate) fn render(size: u64, sync: bool, binary: bool) -> String {
        format!(
            "{}{{{size}{}}}",
            if binary { "~" } else { "" },
            if sync { "" } else { "+" }
        )
    }
}

/// The line without its line ending (CRLF, or a lone LF).
pub fn line_body(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Finds a literal announcement ending the line (before its line ending).
pub fn literal_at_end(line: &[u8]) -> Result<Option<LiteralMarker>, SyntaxError> {
    let body = line_body(line);
    let Some(inner) = body.strip_suffix(b"}") else {
        return Ok(None);
    };
    let Some(open) = inner.iter().rposition(|b| *b == b'{') else {
        return Ok(None);
    };
    let mut digits = &inner[open + 1..];
    let sync = match digits.strip_suffix(b"+") {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Ok(None);
    }
    if digits.len() > 19 {
        return Err(SyntaxError::LiteralSize);
    }
    let size = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let binary = open > 0 && inner[open - 1] == b'~';
    Ok(Some(LiteralMarker {
        start: if binary { open - 1 } else { open },
        size,
        sync,
        binary,
    }))
}

/// A command's tag, its name, and what follows the name. Its `Debug` shows
/// sizes only: the arguments may be a password or a mailbox name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CommandHead<'a> {
    /// The tag, as sent.
    pub tag: &'a [u8],
    /// The command name, as sent (compare case-insensitively).
    pub name: &'a [u8],
    /// Everything after the name and one space, line ending included.
    pub rest: &'a [u8],
}

impl std::fmt::Debug for CommandHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CommandHead {{ tag: {} bytes, name: {} bytes, rest: {} bytes }}",
            self.tag.len(),
            self.name.len(),
            self.rest.len()
        )
    }
}

/// RFC 9051 ATOM-CHAR.
fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// RFC 9051 tag characters: ASTRING-CHAR except `+`.
fn is_tag_char(b: u8) -> bool {
    (is_atom_char(b) || b == b']') && b != b'+'
}

/// The tag at the start of a line, if the line starts with a valid one.
pub(crate) fn leading_tag(line: &[u8]) -> Option<&[u8]> {
    let end = line.iter().position(|b| !is_tag_char(*b))?;
    (end > 0 && line[end] == b' ').then(|| &line[..end])
}

/// The tag to answer a malformed command with: its leading tag, a line that
/// is nothing but a tag, or `*`.
pub(crate) fn reply_tag(line: &[u8]) -> &[u8] {
    if let Some(tag) = leading_tag(line) {
        return tag;
    }
    let body = line_body(line);
    if !body.is_empty() && body.iter().all(|b| is_tag_char(*b)) {
        body
    } else {
        b"*"
    }
}

/// Splits `tag SP name [SP rest]`.
pub fn parse_head(line: &[u8]) -> Result<CommandHead<'_>, SyntaxError> {
    let body_len = line_body(line).len();
    let tag = leading_tag(line).ok_or(SyntaxError::Malformed)?;
    let after = &line[tag.len() + 1..];
    let name_len = after
        .iter()
        .take(body_len - tag.len() - 1)
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.' || *b == b'_'))
        .unwrap_or(body_len - tag.len() - 1);
    if name_len == 0 {
        return Err(SyntaxError::Malformed);
    }
    let name = &after[..name_len];
    let rest = &after[name_len..];
    let rest = match rest.first() {
        Some(b' ') => &rest[1..],
        Some(b'\r' | b'\n') | None => rest,
        Some(_) => return Err(SyntaxError::Malformed),
    };
    Ok(CommandHead { tag, name, rest })
}

/// Reads SP-separated astrings (atom, quoted string or literal) from a
/// command's arguments in wire form: literals appear as `{n}` CRLF followed
/// by their `n` bytes, exactly as the client sent them.
pub fn astrings(mut args: &[u8]) -> Result<Vec<WipedBuf>, SyntaxError> {
    let mut out = Vec::new();
    loop {
        args = line_body_prefix(args);
        if args.is_empty() {
            return Ok(out);
        }
        if !out.is_empty() {
            args = args.strip_prefix(b" ").ok_or(SyntaxError::Malformed)?;
        }
        let (value, used) = astring(args)?;
        out.push(value);
        args = &args[used..];
    }
}

/// Strips a final line ending only when it is the last thing left.
fn line_body_prefix(args: &[u8]) -> &[u8] {
    match args {
        b"\r\n" | b"\n" => &[],
        _ => args,
    }
}

/// The length of the atom (`]` allowed, as in `BODY[]`) starting `s`.
fn atom_len(s: &[u8]) -> Result<usize, SyntaxError> {
    match s
        .iter()
        .position(|b| !(is_atom_char(*b) || *b == b']'))
        .unwrap_or(s.len())
    {
        0 => Err(SyntaxError::Malformed),
        len => Ok(len),
    }
}

/// One astring at the start of `s`: its value and how many bytes it used.
fn astring(s: &[u8]) -> Result<(WipedBuf, usize), SyntaxError> {
    match s.first() {
        Some(b'"') => {
            let mut value = WipedBuf::with_capacity(s.len());
            let mut i = 1;
            while i < s.len() {
                match s[i] {
                    b'\\' if i + 1 < s.len() && matches!(s[i + 1], b'\\' | b'"') => {
                        value.push(s[i + 1]);
                        i += 2;
                    }
                    b'"' => return Ok((value, i + 1)),
                    b'\r' | b'\n' | b'\\' | 0 => return Err(SyntaxError::Malformed),
                    b => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            Err(SyntaxError::Malformed)
        }
        Some(b'{') => {
            let close = s
                .iter()
                .position(|b| *b == b'}')
                .ok_or(SyntaxError::Malformed)?;
            let digits = s[1..close].strip_suffix(b"+").unwrap_or(&s[1..close]);
            if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(SyntaxError::Malformed);
            }
            let n: usize = digits
                .iter()
                .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0'));
            let after = &s[close + 1..];
            let skip = if after.starts_with(b"\r\n") {
                2
            } else if after.starts_with(b"\n") {
                1
            } else {
                return Err(SyntaxError::Malformed);
            };
            let start = close + 1 + skip;
            let value = s.get(start..start + n).ok_or(SyntaxError::Malformed)?;
            Ok((WipedBuf::copy_of(value), start + n))
        }
        Some(_) => {
            let len = atom_len(s)?;
            Ok((WipedBuf::copy_of(&s[..len]), len))
        }
        None => Err(SyntaxError::Malformed),
    }
}

/// True when `value` can be an IMAP quoted string (no CR, LF, NUL or
/// 8-bit bytes: those need a literal).
pub(crate) fn is_quotable(value: &[u8]) -> bool {
    !value
        .iter()
        .any(|b| matches!(b, b'\r' | b'\n' | 0) || *b >= 0x80)
}

/// Appends `value` (see [`is_quotable`]) as a quoted string.
pub(crate) fn write_quoted(value: &[u8], out: &mut WipedBuf) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    for b in value {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out.push(b'"');
}

/// One token of command arguments after the mailbox in APPEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// An atom; its length.
    Atom(usize),
    /// A quoted string, quotes included; its length.
    Quoted(usize),
    /// A parenthesized list without nested literals; its length.
    List(usize),
}

/// The token at the start of `s` (not a literal: callers check for those with
/// [`literal_at_end`] first).
pub fn token(s: &[u8]) -> Result<Token, SyntaxError> {
    match s.first() {
        Some(b'"') => {
            let mut i = 1;
            while i < s.len() {
                match s[i] {
                    b'\\' => i += 2,
                    b'"' => return Ok(Token::Quoted(i + 1)),
                    b'\r' | b'\n' => break,
                    _ => i += 1,
                }
            }
            Err(SyntaxError::Malformed)
        }
        Some(b'(') => {
            let mut depth = 0usize;
            for (i, b) in s.iter().enumerate() {
                match b {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(Token::List(i + 1));
                        }
                    }
                    b'\r' | b'\n' | b'{' | b'"' => break,
                    _ => {}
                }
            }
            Err(SyntaxError::Malformed)
        }
        Some(_) => atom_len(s).map(Token::Atom),
        None => Err(SyntaxError::Malformed),
    }
}

impl Token {
    /// Bytes the token takes.
    pub fn len(self) -> usize {
        match self {
            Token::Atom(n) | Token::Quoted(n) | Token::List(n) => n,
        }
    }

    /// Never true: tokens have at least one byte.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Capabilities the relay passes from the provider to the client: what it can
/// carry faithfully. Everything else is dropped, notably `COMPRESS=*` (it
/// would hide commands from the relay), `STARTTLS`/`LOGINDISABLED`/`AUTH=*`
/// (the relay handles those itself), referrals (they would send the client
/// to the provider directly), `REPLACE`/`CATENATE`/`URLAUTH`/`UTF8=*`
/// (message data the APPEND sanitizer would not see), `UNAUTHENTICATE`
/// (the session is bound to one account), Apple push registration (a
/// device token) and Delta Chat's `XDELTAPUSH` unless the operator turns it
/// on (see [`DELTACHAT_PUSH`]).
const ALLOWED_CAPABILITIES: &[&str] = &[
    "IMAP4REV1",
    "IMAP4REV2",
    "LITERAL+",
    "LITERAL-",
    "ID",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "CONDSTORE",
    "QRESYNC",
    "ENABLE",
    "UNSELECT",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "LIST-MYRIGHTS",
    "ESEARCH",
    "ESORT",
    "SEARCHRES",
    "SORT",
    "WITHIN",
    "BINARY",
    "MULTIAPPEND",
    "NOTIFY",
    "METADATA",
    "METADATA-SERVER",
    "QUOTA",
    "QUOTASET",
    "ACL",
    "OBJECTID",
    "SAVEDATE",
    "PREVIEW",
    "FILTERS",
    "INPROGRESS",
    "UIDONLY",
    "APPENDLIMIT",
    "XLIST",
    "X-GM-EXT-1",
    // chatmail servers: changes how Delta Chat deletes; static, no user data.
    "XCHATMAIL",
];

/// Delta Chat's push capability: a client that sees it registers a device
/// token (`SETMETADATA … /private/devicetoken`), which names a phone to a
/// push service. Passed only with `[imap] deltachat_push = true`.
pub(crate) const DELTACHAT_PUSH: &str = "XDELTAPUSH";

/// Capability prefixes the relay passes (`THREAD=REFERENCES`, …).
const ALLOWED_CAPABILITY_PREFIXES: &[&str] = &[
    "THREAD=",
    "SORT=",
    "I18NLEVEL=",
    "CONTEXT=",
    "QUOTA=",
    "RIGHTS=",
    "STATUS=",
    "SEARCH=",
    "APPENDLIMIT=",
    "SNIPPET=",
    "PREVIEW=",
    "MESSAGELIMIT=",
    "SAVELIMIT=",
];

/// True when the relay passes this capability to clients; `push`: Delta
/// Chat push is turned on.
pub(crate) fn capability_allowed(capability: &[u8], push: bool) -> bool {
    let upper = capability.to_ascii_uppercase();
    let Ok(upper) = std::str::from_utf8(&upper) else {
        return false;
    };
    ALLOWED_CAPABILITIES.contains(&upper)
        || (push && upper == DELTACHAT_PUSH)
        || ALLOWED_CAPABILITY_PREFIXES
            .iter()
            .any(|p| upper.len() > p.len() && upper.starts_with(p))
}

/// Filters a space-separated capability list through the allowlist.
pub(crate) fn filter_capabilities(list: &[u8], push: bool) -> Vec<u8> {
    let kept: Vec<&[u8]> = list
        .split(|b| *b == b' ')
        .filter(|c| !c.is_empty() && capability_allowed(c, push))
        .collect();
    kept.join(&b' ')
}

/// Where a capability list sits in a response line, if it carries one:
/// `* CAPABILITY …` or a `[CAPABILITY …]` response code after `OK`,
/// `NO`, `BAD`, `PREAUTH` or `BYE`. Returns the byte range of the list.
pub(crate) fn capability_span(line: &[u8]) -> Option<(usize, usize)> {
    let body = line_body(line);
    let after_tag = body.iter().position(|b| *b == b' ')? + 1;
    let rest = &body[after_tag..];
    let upper_prefix =
        |s: &[u8], p: &[u8]| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    if body.starts_with(b"* ") && upper_prefix(rest, b"CAPABILITY") {
        let start = after_tag + b"CAPABILITY".len();
        return match body.get(start) {
            None => Some((start, start)),
            Some(b' ') => Some((start + 1, body.len())),
            Some(_) => None,
        };
    }
    let status_len = [&b"OK "[..], b"NO ", b"BAD ", b"PREAUTH ", b"BYE "]
        .iter()
        .find(|s| upper_prefix(rest, s))?
        .len();
    let code = &rest[status_len..];
    if !upper_prefix(code, b"[CAPABILITY ") {
        return None;
    }
    let start = after_tag + status_len + b"[CAPABILITY ".len();
    let end = start + body[start..].iter().position(|b| *b == b']')?;
    Some((start, end))
}

/// The line with any capability list it carries filtered; `None` when it
/// carries none.
pub fn filter_capability_line(line: &[u8], push: bool) -> Option<Vec<u8>> {
    let (start, end) = capability_span(line)?;
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..start]);
    let filtered = filter_capabilities(&line[start..end], push);
    if filtered.is_empty() && line[..start].ends_with(b" ") && start == end {
        out.pop();
    }
    out.extend_from_slice(&filtered);
    out.extend_from_slice(&line[end..]);
    Some(out)
}

/// The capability names in a list, upper-cased (for the relay's own checks).
pub(crate) fn capability_names(list: &[u8]) -> Vec<String> {
    list.split(|b| *b == b' ')
        .filter(|c| !c.is_empty())
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reply_tag_finds_a_tag_even_without_a_command() {
        assert_eq!(reply_tag(b"a1 NOOP\r\n"), b"a1");
        assert_eq!(reply_tag(b"a1\r\n"), b"a1");
        assert_eq!(reply_tag(b"\r\n"), b"*");
        assert_eq!(reply_tag(b"(bad) NOOP\r\n"), b"*");
    }

    use super::*;

    #[test]
    fn debug_of_a_command_shows_no_argument() {
        let head = parse_head(b"a1 LOGIN alice hunter2\r\n").expect("parse");
        let shown = format!("{head:?}");
        assert!(
            !shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn literal_markers_are_found_only_at_the_end_of_a_line() {
        let m = literal_at_end(b"a APPEND Sent (\\Seen) {310}\r\n")
            .expect("ok")
            .expect("marker");
        assert_eq!((m.start, m.size, m.sync, m.binary), (22, 310, true, false));
        let m = literal_at_end(b"a APPEND Sent ~{7+}\r\n")
            .expect("ok")
            .expect("marker");
        assert_eq!((m.start, m.size, m.sync, m.binary), (14, 7, false, true));
        assert_eq!(literal_at_end(b"a LOGIN \"{5}\"\r\n"), Ok(None));
        assert_eq!(literal_at_end(b"a NOOP {}\r\n"), Ok(None));
        assert_eq!(literal_at_end(b"a X {12a}\r\n"), Ok(None));
        let huge = literal_at_end(b"a X {4294967296}\r\n")
            .expect("ok")
            .expect("m");
        assert_eq!(huge.size, 4_294_967_296);
        assert_eq!(
            literal_at_end(b"a X {99999999999999999999999}\r\n"),
            Err(SyntaxError::LiteralSize)
        );
    }

    #[test]
    fn heads_split_tag_name_and_rest() {
        let h = parse_head(b"A001 login alice \"pw\"\r\n").expect("head");
        assert_eq!(h.tag, b"A001");
        assert_eq!(h.name, b"login");
        assert_eq!(h.rest, b"alice \"pw\"\r\n");
        let h = parse_head(b"x NOOP\r\n").expect("head");
        assert_eq!((h.name, h.rest), (&b"NOOP"[..], &b"\r\n"[..]));
        assert_eq!(parse_head(b"+ NOOP\r\n"), Err(SyntaxError::Malformed));
        assert_eq!(parse_head(b"NOOP\r\n"), Err(SyntaxError::Malformed));
        assert_eq!(parse_head(b"a \r\n"), Err(SyntaxError::Malformed));
        assert_eq!(parse_head(b"a (x)\r\n"), Err(SyntaxError::Malformed));
        assert_eq!(parse_head(b"\x00\x01\r\n"), Err(SyntaxError::Malformed));
    }

    #[test]
    fn astrings_read_atoms_quoted_strings_and_literals() {
        let args = b"alice@example.test \"p\\\"w\\\\d\" {3}\r\nx y\r\n";
        let v = astrings(args).expect("astrings");
        let v: Vec<&[u8]> = v.iter().map(|x| &x[..]).collect();
        assert_eq!(v, [&b"alice@example.test"[..], b"p\"w\\d", b"x y"]);
        assert!(astrings(b"\"unterminated\r\n").is_err());
        assert!(astrings(b"{9}\r\nshort\r\n").is_err());
    }

    #[test]
    fn quoted_escapes_and_refuses_what_needs_a_literal() {
        let mut out = WipedBuf::new();
        write_quoted(b"a\"b\\c", &mut out);
        assert_eq!(&out[..], b"\"a\\\"b\\\\c\"");
        assert!(is_quotable(b"a\"b"));
        assert!(!is_quotable(b"caf\xc3\xa9"));
        assert!(!is_quotable(b"a\r\nb"));
    }

    #[test]
    fn compress_and_relay_breaking_capabilities_are_filtered_out() {
        let list = b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY \
THREAD=REFERENCES LITERAL+ COMPRESS=DEFLATE AUTH=PLAIN AUTH=SCRAM-SHA-256-PLUS STARTTLS \
UTF8=ACCEPT CATENATE URLAUTH REPLACE UNAUTHENTICATE XAPPLEPUSHSERVICE MOVE X-UNKNOWN";
        assert_eq!(
            filter_capabilities(list, false),
            b"IMAP4rev1 ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES LITERAL+ MOVE".to_vec()
        );
    }

    #[test]
    fn capability_responses_and_codes_are_rewritten() {
        assert_eq!(
            filter_capability_line(b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n", false),
            Some(b"* CAPABILITY IMAP4rev1 IDLE\r\n".to_vec())
        );
        assert_eq!(
            filter_capability_line(
                b"a1 OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE MOVE] Logged in\r\n",
                false
            ),
            Some(b"a1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n".to_vec())
        );
        assert_eq!(
            filter_capability_line(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n", false),
            Some(b"* OK [CAPABILITY IMAP4rev1] ready\r\n".to_vec())
        );
        assert_eq!(filter_capability_line(b"* 3 EXISTS\r\n", false), None);
        assert_eq!(
            filter_capability_line(b"a OK [READ-WRITE] done\r\n", false),
            None
        );
        assert_eq!(
            filter_capability_line(b"* 1 FETCH (BODY[] {3}\r\n", false),
            None,
            "a FETCH is never a capability response"
        );
    }

    #[test]
    fn delta_chat_capabilities_pass_as_configured() {
        let line = b"* CAPABILITY IMAP4rev1 XCHATMAIL XDELTAPUSH METADATA\r\n";
        assert_eq!(
            filter_capability_line(line, false),
            Some(b"* CAPABILITY IMAP4rev1 XCHATMAIL METADATA\r\n".to_vec())
        );
        assert_eq!(filter_capability_line(line, true), Some(line.to_vec()));
    }
}
