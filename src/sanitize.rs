//! The header sanitizer: pure functions that take a message and return its
//! top-level header block with identifying fields removed or rewritten.
//!
//! Only the top-level header block is touched; the body (everything from the
//! blank line on) is returned as a borrowed slice of the input, so it cannot
//! change by a single byte: PGP/MIME, S/MIME and DKIM-over-body keep working.
//! Header fields that are kept are copied byte-exact, folding included. This
//! module does no I/O and keeps no state; replacement Message-IDs are
//! derived under the Message-ID subkey of [`crate::keys`].

pub(crate) mod composed;
pub(crate) mod date;
mod message_id;

use crate::config::{SanitizeConfig, SanitizeMode};
use zeroize::Zeroizing;

use self::date::UnixTime;
use crate::privacy::WipedBuf;

/// Header names removed by default (lower case; a trailing `*` is a prefix).
pub(crate) const DEFAULT_REMOVE: &[&str] = &[
    // Trace fields and relayed client addresses.
    "received",
    "x-originating-ip",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "x-sender-ip",
    "x-client-ip",
    "x-remote-addr",
    "x-originating-email",
    "x-originating-client",
    "x-clientproxiedby",
    // Client software and device.
    "user-agent",
    "x-mailer",
    "x-mimeole",
    "x-newsreader",
    "x-operating-system",
    "x-pgp-agent",
    "x-enigmail-*",
    "x-antivirus*",
    "x-virus-scanned",
    // Outlook and Exchange clients.
    "x-ms-has-attach",
    "x-ms-tnef-correlator",
    "x-ms-exchange-*",
    "x-ms-office365-*",
    "x-ms-publictraffictype",
    "x-ms-traffictypediagnostic",
    "x-ms-oob-*",
    "x-ms-reactions",
    "x-microsoft-*",
    "x-forefront-*",
    "x-ld-processed",
    "x-originatororg",
    "thread-index",
    "thread-topic",
    "accept-language",
    "msip_labels",
    "x-msmail-priority",
    "x-unsent",
    // Thunderbird and other Mozilla clients.
    "x-mozilla-*",
    "x-identity-key",
    "x-account-key",
    // Apple Mail / iOS Mail.
    "x-apple-*",
    "x-universally-unique-identifier",
    "x-uniform-type-identifier",
    // mutt, K-9, Evolution, Claws.
    "fcc",
    "x-mutt-*",
    "x-k9mail-identity",
    "x-evolution-*",
    "x-claws-*",
    "x-sylpheed-*",
    // Webmail: Roundcube names the login, its draft's folder, and (with its
    // plugins) the browser and the server; SOGo the client's address.
    "x-sender",
    "x-draft-info",
    "x-remote-browser",
    "x-roundcube-server",
    "x-forward",
    // Read-receipt requests in the older forms some programs add beside
    // Disposition-Notification-To (kept: the user asked for a receipt).
    "x-confirm-reading-to",
    "return-receipt-to",
    // Locale and affiliation.
    "content-language",
    "organization",
    "x-face",
    "face",
];

/// Fields that close a Claws Mail (or Sylpheed) draft's block of "special
/// headers" (`S:` account, `SCF:` Sent folder, `RMID:` the message answered,
/// …), which it writes above the real header when it saves a draft.
const SPECIAL_HEADERS_END: &[&str] = &[
    "x-claws-end-special-headers",
    "x-sylpheed-end-special-headers",
];

/// The names Claws writes in that block (its `compose.c` strips the same
/// list when it redirects a message), besides `X-Claws-*`/`X-Sylpheed-*`.
const SPECIAL_HEADER_NAMES: &[&str] = &[
    "af", "nf", "ps", "srh", "sfn", "dsr", "mid", "cfg", "pt", "s", "rq", "ssv", "nsv", "ssh", "r",
    "maid", "naid", "rmid", "fmid", "scf", "rrcpt", "ng",
];

/// The number of leading fields that form a Claws special-header block:
/// the block must start the header and hold only Claws' names up to its
/// closing field, so a stray closing field further down (a forwarded or
/// bounced message's) removes nothing else.
fn special_block_len(fields: &[Field<'_>], policy: &Policy) -> usize {
    for (i, field) in fields.iter().enumerate() {
        let lower = String::from_utf8_lossy(field.name).to_ascii_lowercase();
        if SPECIAL_HEADERS_END.contains(&lower.as_str()) {
            return if policy.keeps(&lower) { 0 } else { i + 1 };
        }
        let claws = SPECIAL_HEADER_NAMES.contains(&lower.as_str())
            || lower.starts_with("x-claws-")
            || lower.starts_with("x-sylpheed-");
        if !claws {
            return 0;
        }
    }
    0
}

/// Header names kept in strict mode (lower case).
pub(crate) const STRICT_ALLOW: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-description",
    "autocrypt",
    // Marks an Autocrypt Setup Message (a key backup between one's own
    // devices), which clients recognise by it.
    "autocrypt-setup-message",
    "openpgp",
    // Delta Chat's protocol headers, which it sends outside the encryption
    // (Chat-Version marks a chat message; Secure-Join* set up verified
    // contacts and groups); they name the protocol, not the device.
    "chat-*",
    "secure-join*",
    "auto-submitted",
];

/// A compiled sanitizer policy.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: SanitizeMode,
    /// The operator's own removals (lower case; `prefix*` allowed).
    remove: Vec<String>,
    /// Names taken off [`DEFAULT_REMOVE`].
    keep: Vec<String>,
    /// Strict mode's allowlist, the operator's additions included.
    allow: Vec<String>,
}

impl Policy {
    /// Compiles the configured policy.
    pub fn new(config: &SanitizeConfig) -> Self {
        let lower = |list: &[String]| -> Vec<String> {
            list.iter().map(|k| k.to_ascii_lowercase()).collect()
        };
        let mut allow: Vec<String> = STRICT_ALLOW.iter().map(|s| s.to_string()).collect();
        allow.extend(lower(&config.allow));
        Policy {
            mode: config.mode,
            remove: lower(&config.remove),
            keep: lower(&config.keep),
            allow,
        }
    }

    /// The configured `remove` first; then the default list, except what
    /// `keep` names (a name or a `prefix*`, so `keep = ["X-Mozilla-Draft-Info"]`
    /// still works now that the default list says `x-mozilla-*`); then, in
    /// strict mode, the allowlist.
    fn keeps(&self, lower_name: &str) -> bool {
        let matches = |list: &[String]| list.iter().any(|p| pattern_matches(p, lower_name));
        let by_default = DEFAULT_REMOVE
            .iter()
            .any(|p| pattern_matches(p, lower_name));
        if matches(&self.remove) || (by_default && !matches(&self.keep)) {
            return false;
        }
        match self.mode {
            SanitizeMode::Default => true,
            SanitizeMode::Strict => self.allow.iter().any(|p| pattern_matches(p, lower_name)),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&SanitizeConfig::default())
    }
}

fn pattern_matches(pattern: &str, lower_name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => lower_name.starts_with(prefix),
        None => pattern == lower_name,
    }
}

/// A sanitized message: a new header block and the untouched rest. Its
/// `Debug` shows sizes only.
#[derive(Clone, PartialEq, Eq)]
pub struct Sanitized<'a> {
    /// The rewritten header fields, each ending in CRLF.
    pub header: WipedBuf,
    /// Everything after the header fields — the blank line and the body —
    /// exactly as received.
    pub rest: &'a [u8],
}

impl std::fmt::Debug for Sanitized<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sanitized {{ header: {} bytes, rest: {} bytes }}",
            self.header.len(),
            self.rest.len()
        )
    }
}

impl Sanitized<'_> {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.header.len() + self.rest.len()
    }

    /// True when the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in one buffer (for tests and fuzzing).
    pub fn whole(&self) -> WipedBuf {
        let mut out = WipedBuf::with_capacity(self.len());
        out.extend_from_slices(&[&self.header, self.rest]);
        out
    }
}

/// One header field as it appears in the message.
pub(crate) struct Field<'a> {
    /// The field name as written.
    pub(crate) name: &'a [u8],
    /// Everything after the colon up to, not including, the final line end.
    pub(crate) value: &'a [u8],
    /// The whole field, folding and final line end (if any) included.
    raw: &'a [u8],
    /// It holds a bare CR, which some parsers read as a line end: what
    /// follows it could be a field this parser never saw.
    bare_cr: bool,
}

/// Splits a message into its top-level header fields and the offset where the
/// rest (blank line and body) begins. The header block ends at the first line
/// that is not a header field or a continuation line; a message that does not
/// start with a header field has no header block at all.
///
/// Lines end at LF, with or without CR before it, and the last line may have
/// no line end: lenient parsers downstream read header blocks that way, so
/// this one must too, or a field after a bare LF (or in an unterminated last
/// line) would pass unseen. SMTP refuses bare line endings before this runs;
/// an IMAP APPEND can still carry them.
pub(crate) fn split_fields(message: &[u8]) -> (Vec<Field<'_>>, usize) {
    let line_end = |from: usize| {
        memchr::memchr(b'\n', &message[from..]).map_or(message.len(), |i| from + i + 1)
    };
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let first_end = line_end(pos);
        let line = strip_line_end(&message[pos..first_end]);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            break;
        };
        let name = line[..colon].trim_ascii_end();
        if name.is_empty() || !name.iter().all(|b| (33..=126).contains(b)) {
            break;
        }
        // Extend over continuation lines.
        let mut end = first_end;
        while end < message.len() && matches!(message[end], b' ' | b'\t') {
            end = line_end(end);
        }
        let raw = &message[pos..end];
        fields.push(Field {
            name,
            value: strip_line_end(&message[pos + colon + 1..end]),
            raw,
            bare_cr: raw
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\r' && raw.get(i + 1) != Some(&b'\n')),
        });
        pos = end;
    }
    (fields, pos)
}

/// The header block as the sanitizer sees it: how many fields, and how many
/// bytes they take (continuation lines included).
pub(crate) fn header_shape(message: &[u8]) -> (usize, usize) {
    let (fields, end) = split_fields(message);
    (fields.len(), end)
}

/// `line` without its final CRLF or LF.
fn strip_line_end(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
}

/// Removes and rewrites identifying header fields according to `policy`;
/// `now` stands in for a `Date` that cannot be read.
pub fn strip_identifying_headers<'a>(
    message: &'a [u8],
    policy: &Policy,
    now: UnixTime,
) -> Sanitized<'a> {
    let (fields, rest_start) = split_fields(message);
    // A Claws draft's special headers name its account and folders: when
    // the block's closing field goes, everything above it goes too.
    let fields = &fields[special_block_len(&fields, policy)..];
    // The From field that will be in the output, so that sanitizing the
    // output again picks the same one (idempotence).
    let sender_domain = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"from") && !f.bare_cr)
        .filter(|_| policy.keeps("from"))
        .and_then(|f| address_domain(f.value));
    let sender_domain = sender_domain.as_ref().map(|d| d.as_str());
    // The Message-ID that will be in the output decides, as above.
    let id = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"message-id") && !f.bare_cr)
        .filter(|_| policy.keeps("message-id"))
        .and_then(|f| std::str::from_utf8(f.value).ok())
        .map(|text| message_id::rewrite(&unfold(text), sender_domain));
    // That decision serves its own field in the loop below (once).
    let (mut first_id, own_host) = match id {
        Some(d) => (Some(d.value), d.own_host),
        None => (None, None),
    };
    let own_host = own_host.as_deref().map(String::as_str);
    let mut header = WipedBuf::with_capacity(rest_start);
    for field in fields {
        let lower = String::from_utf8_lossy(field.name).to_ascii_lowercase();
        if !policy.keeps(&lower) || field.bare_cr {
            continue;
        }
        let (separator, rewritten) = match lower.as_str() {
            "date" => (&b": "[..], rewrite_date(field.value, now)),
            "message-id" => (
                &b": "[..],
                first_id.take().unwrap_or_else(|| {
                    std::str::from_utf8(field.value)
                        .ok()
                        .and_then(|text| message_id::rewrite(&unfold(text), sender_domain).value)
                }),
            ),
            "references" | "in-reply-to" => (
                &b":"[..],
                own_host.and_then(|host| message_id::map_own_ids(field.value, host, sender_domain)),
            ),
            "mime-version" => (&b": "[..], rewrite_mime_version(field.value)),
            _ => (&b""[..], None),
        };
        match rewritten {
            Some(value) => header.extend_from_slices(&[field.name, separator, &value, b"\r\n"]),
            None => header.extend_from_slice(field.raw),
        }
    }
    Sanitized {
        header,
        rest: &message[rest_start..],
    }
}

/// `Date:` → the same instant in UTC, rounded down to the minute; a date
/// that cannot be read → `now`'s minute.
fn rewrite_date(value: &[u8], now: UnixTime) -> Option<WipedBuf> {
    let time = std::str::from_utf8(value)
        .ok()
        .and_then(|text| date::parse_rfc5322(&unfold(text)))
        .unwrap_or(now);
    let utc = date::format_utc(date::minute_of(time));
    (utc[..] != *value.trim_ascii()).then_some(utc)
}

/// `MIME-Version: 1.0 (Mac OS X Mail 16.0 \(3774\))` → `1.0`.
fn rewrite_mime_version(value: &[u8]) -> Option<WipedBuf> {
    let paren = value.iter().position(|b| *b == b'(')?;
    let mut version = WipedBuf::with_capacity(paren);
    for b in &value[..paren] {
        if !b.is_ascii_whitespace() {
            version.push(*b);
        }
    }
    (!version.is_empty() && std::str::from_utf8(value).is_ok()).then_some(version)
}

/// The domain (lower case) of the first address in an address-list field
/// value.
fn address_domain(value: &[u8]) -> Option<Zeroizing<String>> {
    // Lossy: an 8-bit display name must not hide the address after it.
    let lossy = Zeroizing::new(String::from_utf8_lossy(value).into_owned());
    let text = without_quotes_and_comments(&unfold(&lossy));
    let addr = match text.find('<') {
        Some(open) => {
            let after = &text[open + 1..];
            &after[..after.find('>')?]
        }
        None => text.split(',').next()?.trim(),
    };
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = domain.trim();
    let ok = !domain.is_empty()
        && domain.chars().all(|c| {
            c.is_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
        });
    let mut lower = Zeroizing::new(String::with_capacity(domain.len()));
    lower.push_str(domain);
    lower.make_ascii_lowercase();
    ok.then_some(lower)
}

/// `text` with its quoted strings and comments (RFC 5322) blanked out, so
/// that a display name or a comment cannot pass for the address:
/// `"x <a@b.c>" <real@d.org>` and `real@d.org (Real)` both leave `real@d.org`.
fn without_quotes_and_comments(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    let (mut quoted, mut depth, mut escaped) = (false, 0usize, false);
    for c in text.chars() {
        let inside = quoted || depth > 0;
        if escaped {
            escaped = false;
        } else if inside && c == '\\' {
            escaped = true;
        } else if quoted {
            quoted = c != '"';
        } else if c == '(' {
            depth += 1;
        } else if c == ')' && depth > 0 {
            depth -= 1;
        } else if c == '"' && depth == 0 {
            quoted = true;
        }
        let blank = inside || quoted || depth > 0;
        out.push(if blank { ' ' } else { c });
    }
    out
}

/// `text` without its folding line ends, in a string sized once and wiped
/// when dropped.
pub(crate) fn unfold(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.extend(text.chars().filter(|c| *c != '\r' && *c != '\n'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 10:00:00 UTC.
    const NOW: UnixTime = 1_796_032_800;

    #[test]
    fn a_dropped_from_field_does_not_decide_the_message_id() {
        // Found by fuzzing: the first From (bare CR, dropped) had no domain,
        // so the Message-ID was kept; sanitized again, the second From
        // decided and the Message-ID changed.
        let p = Policy::new(&SanitizeConfig::default());
        let m = b"From:\r0\nMessage-ID:<@>\nFrom:<@n>";
        let once = strip_identifying_headers(m, &p, NOW).whole().to_vec();
        let twice = strip_identifying_headers(&once, &p, NOW).whole().to_vec();
        assert_eq!(twice, once);
    }

    #[test]
    fn fields_after_a_bare_lf_or_in_an_unterminated_last_line_are_seen() {
        // Lenient parsers downstream read these as separate fields; so must
        // the sanitizer, or they pass it unseen.
        let p = Policy::new(&SanitizeConfig::default());
        let bare_lf = b"Subject: a\nUser-Agent: Canary/1.0\r\n\r\nbody\r\n";
        let s = strip_identifying_headers(bare_lf, &p, NOW);
        assert_eq!(s.whole().to_vec(), b"Subject: a\n\r\nbody\r\n".to_vec());
        let lf_only = b"Subject: a\nUser-Agent: Canary/1.0\n\nbody\n";
        let s = strip_identifying_headers(lf_only, &p, NOW);
        assert_eq!(s.whole().to_vec(), b"Subject: a\n\nbody\n".to_vec());
        let unterminated = b"Subject: a\r\nUser-Agent: Canary/1.0";
        let s = strip_identifying_headers(unterminated, &p, NOW);
        assert_eq!(s.whole().to_vec(), b"Subject: a\r\n".to_vec());
    }

    #[test]
    fn a_field_with_a_bare_cr_is_dropped() {
        let p = Policy::new(&SanitizeConfig::default());
        let m = b"Subject: a\rUser-Agent: Canary/1.0\r\nTo: b@example.test\r\n\r\nbody";
        let s = strip_identifying_headers(m, &p, NOW);
        assert_eq!(
            s.whole().to_vec(),
            b"To: b@example.test\r\n\r\nbody".to_vec()
        );
    }

    #[test]
    fn an_8_bit_display_name_does_not_keep_the_message_id_host() {
        let p = Policy::new(&SanitizeConfig::default());
        let m = b"From: Jos\xe9 <jose@example.org>\r\nMessage-ID: <1@laptop.local>\r\n\r\nbody";
        let out = strip_identifying_headers(m, &p, NOW).whole().to_vec();
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("laptop.local"), "{text}");
        assert!(text.contains("@example.org>"), "{text}");
    }

    #[test]
    fn debug_of_a_sanitized_message_shows_sizes_only() {
        let s = Sanitized {
            header: WipedBuf::copy_of(b"Subject: secret plans\r\n"),
            rest: b"\r\nbody",
        };
        assert_eq!(
            format!("{s:?}"),
            "Sanitized { header: 23 bytes, rest: 6 bytes }"
        );
    }

    fn sanitize(message: &[u8]) -> Vec<u8> {
        strip_identifying_headers(message, &Policy::default(), NOW)
            .whole()
            .to_vec()
    }

    fn header_names(message: &[u8]) -> Vec<String> {
        split_fields(message)
            .0
            .iter()
            .map(|f| String::from_utf8_lossy(f.name).to_ascii_lowercase())
            .collect()
    }

    fn body_of(message: &[u8]) -> &[u8] {
        &message[split_fields(message).1..]
    }

    /// Each sample: (client, message, headers that must be gone).
    const SAMPLES: &[(&str, &[u8], &[&str])] = &[
        (
            "thunderbird",
            include_bytes!("../tests/fixtures/headers/thunderbird.eml"),
            &[
                "user-agent",
                "content-language",
                "x-mozilla-draft-info",
                "x-identity-key",
                "x-account-key",
                "organization",
            ],
        ),
        (
            "apple-mail",
            include_bytes!("../tests/fixtures/headers/apple-mail.eml"),
            &[
                "x-mailer",
                "x-apple-base-url",
                "x-universally-unique-identifier",
                "x-apple-mail-remote-attachments",
            ],
        ),
        (
            "ios-mail",
            include_bytes!("../tests/fixtures/headers/ios-mail.eml"),
            &["x-mailer"],
        ),
        (
            "outlook",
            include_bytes!("../tests/fixtures/headers/outlook.eml"),
            &[
                "thread-topic",
                "thread-index",
                "accept-language",
                "x-ms-has-attach",
                "x-ms-tnef-correlator",
                "x-ms-exchange-organization-authas",
                "x-originating-ip",
                "x-mimeole",
                "msip_labels",
                "content-language",
            ],
        ),
        (
            "k9",
            include_bytes!("../tests/fixtures/headers/k9.eml"),
            &["user-agent", "x-k9mail-identity"],
        ),
        (
            "mutt",
            include_bytes!("../tests/fixtures/headers/mutt.eml"),
            &["user-agent", "x-operating-system", "fcc", "x-mutt-fcc"],
        ),
        // The samples below were assembled from each program's source or
        // published samples (fields and formats; the values are made up):
        // tests/fixtures/headers/SOURCES.md says where each came from.
        (
            "evolution",
            include_bytes!("../tests/fixtures/headers/evolution.eml"),
            &[
                "user-agent",
                "organization",
                "x-evolution-identity",
                "x-evolution-fcc",
                "x-evolution-transport",
                "x-evolution-source-folder",
                "x-evolution-source-message",
                "x-evolution-source-flags",
            ],
        ),
        (
            "claws-mail",
            include_bytes!("../tests/fixtures/headers/claws-mail.eml"),
            &[
                "x-claws-account-id",
                "s",
                "scf",
                "rrcpt",
                "rmid",
                "x-claws-privacy-system",
                "x-claws-end-special-headers",
                "x-mailer",
                "organization",
            ],
        ),
        (
            "roundcube",
            include_bytes!("../tests/fixtures/headers/roundcube.eml"),
            &[
                "received",
                "user-agent",
                "x-sender",
                "organization",
                "return-receipt-to",
                "x-draft-info",
                "x-remote-browser",
                "x-originating-ip",
                "x-roundcube-server",
            ],
        ),
        (
            "sogo",
            include_bytes!("../tests/fixtures/headers/sogo.eml"),
            &["x-forward", "user-agent"],
        ),
        (
            "thunderbird-android",
            include_bytes!("../tests/fixtures/headers/thunderbird-android.eml"),
            &[
                "user-agent",
                "x-confirm-reading-to",
                "return-receipt-to",
                "x-k9mail-identity",
            ],
        ),
        (
            "outlook-mac",
            include_bytes!("../tests/fixtures/headers/outlook-mac.eml"),
            &[
                "thread-topic",
                "thread-index",
                "accept-language",
                "content-language",
                "x-ms-has-attach",
                "x-ms-tnef-correlator",
                "x-ms-reactions",
                "user-agent",
                "x-originating-ip",
                "x-ld-processed",
                "x-ms-exchange-messagesentrepresentingtype",
            ],
        ),
    ];

    #[test]
    fn real_client_samples_lose_identifying_headers_and_keep_bodies() {
        let policy = Policy::default();
        for (client, message, gone) in SAMPLES {
            let out = strip_identifying_headers(message, &policy, NOW)
                .whole()
                .to_vec();
            let names = header_names(&out);
            for g in *gone {
                assert!(
                    header_names(message).contains(&g.to_string()),
                    "{client}: sample should contain {g}"
                );
                assert!(!names.contains(&g.to_string()), "{client}: {g} survived");
            }
            assert!(!names.contains(&"received".to_string()), "{client}");
            for kept in [
                "from",
                "to",
                "subject",
                "date",
                "message-id",
                "mime-version",
                "content-type",
            ] {
                assert!(names.contains(&kept.to_string()), "{client}: lost {kept}");
            }
            assert_eq!(body_of(&out), body_of(message), "{client}: body changed");
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("+0000\r\n"), "{client}: Date not in UTC");
            for leak in [
                ".local",
                "192.168.",
                "10.0.",
                "fe80",
                "iPhone",
                "Thunderbird",
                "Outlook",
                "K-9",
                "Mutt",
                "Mac OS",
                "Evolution",
                "fc39",
                "Claws",
                "GTK",
                "#imap/",
                "Roundcube",
                "Firefox",
                "SOGo",
                "192.0.2.",
                "198.51.100.",
                "for Android",
                "MacOutlook",
                "folder://",
            ] {
                let header_text =
                    String::from_utf8_lossy(&out[..out.len() - body_of(&out).len()]).to_string();
                assert!(
                    !header_text.contains(leak),
                    "{client}: {leak} left in headers:\n{header_text}"
                );
            }
        }
    }

    #[test]
    fn date_is_rewritten_to_utc_rounded_down_to_the_minute() {
        let out =
            sanitize(b"From: a@example.test\r\nDate: Tue, 24 Nov 2026 01:26:36 +0100\r\n\r\nx\r\n");
        assert_eq!(
            out,
            b"From: a@example.test\r\nDate: Tue, 24 Nov 2026 00:26:00 +0000\r\n\r\nx\r\n"
        );
    }

    #[test]
    fn an_unreadable_date_becomes_the_relays_current_minute() {
        let out = sanitize(b"Date: Mon, 30 Nov 2026 11:11:09 CET\r\n\r\nx\r\n");
        assert_eq!(out, b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n");
    }

    #[test]
    fn program_headers_are_removed() {
        let out = sanitize(
            b"X-MSMail-Priority: Normal\r\nX-Unsent: 1\r\nX-Mozilla-Anything: 1\r\nX-Forward: 192.0.2.7\r\nSubject: s\r\n\r\nx",
        );
        assert_eq!(out, b"Subject: s\r\n\r\nx".to_vec());
    }

    #[test]
    fn the_sender_domain_is_the_addresss_not_a_display_names_or_a_comments() {
        let domain = |v: &[u8]| address_domain(v).map(|d| d.to_string());
        assert_eq!(domain(b"alice@Example.org"), Some("example.org".into()));
        assert_eq!(
            domain(b"Alice <alice@example.org>"),
            Some("example.org".into())
        );
        assert_eq!(
            domain(b"alice@example.org (Alice)"),
            Some("example.org".into())
        );
        assert_eq!(domain(b"\"x <a@b.c>\" <real@d.org>"), Some("d.org".into()));
        assert_eq!(
            domain(b"\"a \\\" (b) <c@e.f>\" (x <y@z.w>) <real@d.org>"),
            Some("d.org".into())
        );
        assert_eq!(domain(b"(only a comment)"), None);
        // So an opaque id at the sender's domain stays, comment or not.
        let msg = b"From: alice@example.org (Alice)\r\nMessage-ID: <6f1c2a9e-3b1d-4c55-9a0e-1f2e3d4c5b6a@example.org>\r\n\r\nx";
        assert_eq!(sanitize(msg), msg.to_vec());
    }

    #[test]
    fn a_claws_drafts_special_headers_go_with_their_closing_field() {
        let draft = b"X-Claws-Account-Id:1\r\nS:alice@example.test\r\nSCF:#imap/alice@example.test/Sent\r\nRMID:#imap/alice/INBOX\t7\t<a@example.net>\r\nX-Claws-End-Special-Headers: 1\r\nSubject: s\r\nS: kept, after the block\r\n\r\nx";
        assert_eq!(
            sanitize(draft),
            b"Subject: s\r\nS: kept, after the block\r\n\r\nx".to_vec()
        );
        let sylpheed =
            b"S:alice@example.test\r\nX-Sylpheed-End-Special-Headers: 1\r\nSubject: s\r\n\r\nx";
        assert_eq!(sanitize(sylpheed), b"Subject: s\r\n\r\nx".to_vec());
        // Without the closing field, a short name is just a header.
        let plain = b"S: x\r\nSubject: s\r\n\r\nx";
        assert_eq!(sanitize(plain), plain.to_vec());
        // A closing field that does not end a leading block of Claws'
        // names (a forwarded or bounced message's) removes nothing else.
        let stray = b"From: a@example.test\r\nSubject: s\r\nX-Claws-End-Special-Headers: 1\r\nTo: b@example.test\r\n\r\nx";
        assert_eq!(
            sanitize(stray),
            b"From: a@example.test\r\nSubject: s\r\nTo: b@example.test\r\n\r\nx".to_vec()
        );
        let late =
            b"S:a@example.test\r\nFrom: a@example.test\r\nX-Claws-End-Special-Headers: 1\r\n\r\nx";
        assert_eq!(
            sanitize(late),
            b"S:a@example.test\r\nFrom: a@example.test\r\n\r\nx".to_vec()
        );
        // An operator who keeps Claws' fields (so that Claws can resume its
        // drafts) keeps the whole block.
        let config = SanitizeConfig {
            keep: vec!["x-claws-*".into()],
            ..SanitizeConfig::default()
        };
        let kept = strip_identifying_headers(draft, &Policy::new(&config), NOW)
            .whole()
            .to_vec();
        assert_eq!(kept, draft.to_vec());
    }

    #[test]
    fn the_users_earlier_ids_at_the_same_host_are_mapped_and_others_kept() {
        let msg = b"From: alice@example.org\r\nMessage-ID: <20261130.GA1@alices-macbook.local>\r\nIn-Reply-To: <20261129093011.GB77@alices-macbook.local>\r\nReferences: <bob1@example.net>\r\n <20261129093011.GB77@alices-macbook.local>\r\n\r\nx";
        let out = String::from_utf8(sanitize(msg)).expect("ascii");
        assert!(!out.contains("alices-macbook"), "{out}");
        assert!(
            out.contains("References: <bob1@example.net>\r\n <"),
            "{out}"
        );
        // The earlier message went out under the id its own Message-ID
        // was mapped to: the reply's references name that one.
        let earlier = sanitize(
            b"From: alice@example.org\r\nMessage-ID: <20261129093011.GB77@alices-macbook.local>\r\n\r\nx",
        );
        let earlier = String::from_utf8(earlier).expect("ascii");
        let mapped = earlier
            .split("Message-ID: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .expect("id");
        assert!(out.contains(&format!("In-Reply-To: {mapped}\r\n")), "{out}");
        assert!(out.contains(&format!(" {mapped}\r\n\r\n")), "{out}");
        // An opaque id at the sender's domain maps nothing.
        let kept = b"From: alice@example.org\r\nMessage-ID: <4b3e2f10-9c1d-4e8a-b7f2-0a1b2c3d4e5f@example.org>\r\nIn-Reply-To: <1@alices-macbook.local>\r\n\r\nx";
        assert_eq!(sanitize(kept), kept.to_vec());
    }

    #[test]
    fn message_id_with_host_name_is_replaced_at_sender_domain() {
        let msg = b"From: Alice <alice@example.test>\r\nMessage-ID: <20261123.GA1@laptop.fritz.box>\r\n\r\nx\r\n";
        let out = String::from_utf8(sanitize(msg)).expect("ascii");
        let id_line = out
            .lines()
            .find(|l| l.starts_with("Message-ID:"))
            .expect("id kept");
        assert!(id_line.ends_with("@example.test>"), "{id_line}");
        assert!(!out.contains("laptop"), "{out}");
        // Deterministic within a process: the SMTP copy and the Sent copy agree.
        assert_eq!(sanitize(msg), sanitize(msg));
    }

    #[test]
    fn message_id_at_sender_domain_is_kept_byte_exact() {
        let msg = b"From: alice@Example.test\r\nMessage-ID:  <Gh5_kQ2-zXw9LmPa@example.test>\r\n\r\nx\r\n";
        assert_eq!(sanitize(msg), msg.to_vec());
    }

    #[test]
    fn mime_version_comment_is_trimmed() {
        let out =
            sanitize(b"MIME-Version: 1.0 (Mac OS X Mail 16.0 \\(3774.600.62\\))\r\n\r\nx\r\n");
        assert_eq!(out, b"MIME-Version: 1.0\r\n\r\nx\r\n");
    }

    #[test]
    fn folded_received_is_removed_whole_and_kept_fields_stay_byte_exact() {
        let msg = b"Received: from laptop (unknown [192.0.2.7])\r\n\tby mx; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n\tcontinued\r\nAutocrypt: addr=a@example.test; keydata=\r\n abc\r\n\r\nbody\r\n";
        assert_eq!(
            sanitize(msg),
            b"Subject: =?UTF-8?Q?caf=C3=A9?=\r\n\tcontinued\r\nAutocrypt: addr=a@example.test; keydata=\r\n abc\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn only_the_top_level_header_block_is_touched() {
        let msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nUser-Agent: inner\r\nReceived: inner\r\n\r\npart\r\n--b--\r\n";
        assert_eq!(sanitize(msg), msg.to_vec());
    }

    #[test]
    fn message_without_headers_is_left_alone() {
        let msg = b"just a body line\r\nUser-Agent: not a header here\r\n";
        assert_eq!(sanitize(msg), msg.to_vec());
        assert_eq!(sanitize(b""), b"".to_vec());
    }

    #[test]
    fn strict_mode_keeps_only_the_allowlist_plus_configured_names() {
        let config = SanitizeConfig {
            mode: SanitizeMode::Strict,
            allow: vec!["List-Id".into()],
            ..SanitizeConfig::default()
        };
        let msg = b"From: a@example.test\r\nX-Custom: 1\r\nList-Id: x\r\nSubject: s\r\nX-Priority: 3\r\n\r\nb\r\n";
        let out = strip_identifying_headers(msg, &Policy::new(&config), NOW)
            .whole()
            .to_vec();
        assert_eq!(
            out,
            b"From: a@example.test\r\nList-Id: x\r\nSubject: s\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn configured_removals_and_keeps_apply() {
        let config = SanitizeConfig {
            remove: vec!["X-Internal-*".into()],
            keep: vec!["Organization".into()],
            ..SanitizeConfig::default()
        };
        let msg = b"Organization: Collective\r\nX-Internal-Ticket: 7\r\nSubject: s\r\n\r\nb\r\n";
        let out = strip_identifying_headers(msg, &Policy::new(&config), NOW)
            .whole()
            .to_vec();
        assert_eq!(out, b"Organization: Collective\r\nSubject: s\r\n\r\nb\r\n");
        // keep names one field under a prefix entry of the default list
        // (x-mozilla-*), and the rest of that prefix still goes.
        let config = SanitizeConfig {
            keep: vec!["X-Mozilla-Draft-Info".into()],
            ..SanitizeConfig::default()
        };
        let msg = b"X-Mozilla-Draft-Info: internal/draft; vcard=0\r\nX-Mozilla-Status: 0001\r\nSubject: s\r\n\r\nb";
        let out = strip_identifying_headers(msg, &Policy::new(&config), NOW)
            .whole()
            .to_vec();
        assert_eq!(
            out,
            b"X-Mozilla-Draft-Info: internal/draft; vcard=0\r\nSubject: s\r\n\r\nb".to_vec()
        );
    }
}
