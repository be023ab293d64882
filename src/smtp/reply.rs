//! SMTP replies: the relay's own fixed replies, and rendering of upstream
//! replies for the client.
//!
//! The relay's own texts are generic and name no software, host or user.
//! Upstream replies are passed on with their code, enhanced code and text
//! (the client is the account holder), with control characters removed so a
//! provider's text cannot inject extra reply lines.

use smtp_proto::Response;

use crate::privacy::WipedBuf;

/// A reply to write to the client. Its `Debug` shows the codes only: the
/// text may be the provider's, which can name the user.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Three-digit code.
    pub(crate) code: u16,
    /// Enhanced status code, `[0, 0, 0]` when absent.
    pub(crate) esc: [u8; 3],
    /// Text lines (at least one).
    pub(crate) lines: Vec<String>,
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A provider's text may name the user or echo an address.
        self.lines.iter_mut().for_each(zeroize::Zeroize::zeroize);
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.esc;
        write!(f, "Reply({} {a}.{b}.{c} [scrubbed])", self.code)
    }
}

impl Reply {
    /// A one-line reply.
    pub(crate) fn new(code: u16, esc: [u8; 3], text: impl Into<String>) -> Self {
        Reply {
            code,
            esc,
            lines: vec![text.into()],
        }
    }

    /// The client-facing form of an upstream reply.
    pub(crate) fn from_upstream(response: &Response<String>) -> Self {
        let lines: Vec<String> = response
            .message
            .split('\n')
            .map(|l| {
                // Sized once: a provider's text may echo an address.
                let mut line = String::with_capacity(l.len());
                line.extend(l.chars().filter(|c| !c.is_control()));
                line
            })
            .collect();
        Reply {
            code: response.code,
            esc: response.esc,
            lines: if lines.is_empty() {
                vec![String::new()]
            } else {
                lines
            },
        }
    }

    /// True for 2xx.
    pub(crate) fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Appends the wire form (one or more CRLF-terminated lines) to `out`.
    pub(crate) fn write_to(&self, out: &mut WipedBuf) {
        let has_esc = self.esc != [0, 0, 0];
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}", self.code).as_bytes());
            if has_esc {
                let [a, b, c] = self.esc;
                out.extend_from_slice(format!("{a}.{b}.{c} ").as_bytes());
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

macro_rules! fixed {
    ($($(#[$doc:meta])* $name:ident = $code:literal, [$a:literal, $b:literal, $c:literal], $text:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name() -> Reply {
                Reply::new($code, [$a, $b, $c], $text)
            }
        )*
    };
}

fixed! {
    /// NOOP, RSET.
    ok = 250, [2, 0, 0], "Ok";
    /// QUIT.
    bye = 221, [2, 0, 0], "Bye";
    /// STARTTLS accepted.
    ready_for_tls = 220, [2, 0, 0], "Ready to start TLS";
    /// DATA accepted locally; the final reply will be upstream's.
    start_data = 354, [0, 0, 0], "End data with <CR><LF>.<CR><LF>";
    /// A line that did not end in CRLF.
    bare_lf_command = 500, [5, 5, 2], "Command lines must end with CRLF";
    /// Command line over the limit.
    line_too_long = 500, [5, 5, 2], "Line too long";
    /// Unknown verb.
    unknown_command = 500, [5, 5, 1], "Command not recognized";
    /// Known verb the relay does not offer.
    not_implemented = 502, [5, 5, 1], "Command not implemented";
    /// EXPN.
    no_expn = 502, [5, 5, 1], "EXPN not available";
    /// VRFY.
    no_vrfy = 252, [2, 5, 0], "Cannot VRFY user, but will accept message and attempt delivery";
    /// HELP.
    help = 214, [2, 0, 0], "See RFC 5321";
    /// STARTTLS while already in TLS.
    already_tls = 503, [5, 5, 1], "TLS already active";
    /// A command that needs EHLO first.
    ehlo_first = 503, [5, 5, 1], "Send EHLO first";
    /// MAIL/AUTH before TLS.
    tls_required = 530, [5, 7, 0], "Must issue a STARTTLS command first";
    /// AUTH before TLS (RFC 4954).
    auth_needs_tls = 538, [5, 7, 11], "Encryption required for requested authentication mechanism";
    /// MAIL before AUTH.
    auth_required = 530, [5, 7, 0], "Authentication required";
    /// Second AUTH.
    already_authenticated = 503, [5, 5, 1], "Already authenticated";
    /// Mechanism not offered.
    unknown_mechanism = 504, [5, 5, 4], "Unrecognized authentication mechanism";
    /// Client cancelled with `*`.
    auth_cancelled = 501, [5, 7, 0], "Authentication cancelled";
    /// SASL response not decodable.
    auth_malformed = 501, [5, 5, 2], "Cannot decode authentication response";
    /// OAUTHBEARER without the authorization identity.
    auth_oauthbearer_without_authzid = 501, [5, 5, 2], "OAUTHBEARER needs a= (the authorization identity): set it to your address";
    /// No upstream serves this login. Same text as a wrong password would get
    /// from most providers, so the relay's routing table is not probed.
    auth_no_route = 535, [5, 7, 8], "Authentication credentials invalid";
    /// Upstream unreachable during AUTH.
    auth_upstream_unavailable = 454, [4, 7, 0], "Temporary authentication failure: provider unreachable, try again later";
    /// Second MAIL.
    nested_mail = 503, [5, 5, 1], "Sender already specified";
    /// RCPT/DATA/BDAT without MAIL.
    need_mail = 503, [5, 5, 1], "Need MAIL command first";
    /// DATA/BDAT with no accepted recipient.
    no_valid_recipients = 554, [5, 5, 1], "No valid recipients";
    /// DATA after BDAT or BDAT after DATA in one transaction.
    mixed_data_bdat = 503, [5, 5, 1], "Cannot mix DATA and BDAT";
    /// Recipient limit.
    too_many_recipients = 452, [4, 5, 3], "Too many recipients";
    /// SIZE announced or reached over the limit.
    too_big = 552, [5, 3, 4], "Message size exceeds limit";
    /// Parameters the relay does not offer (DSN, REQUIRETLS, BINARYMIME, …).
    unsupported_parameter = 555, [5, 5, 4], "Unsupported MAIL or RCPT parameter";
    /// A sender address the relay cannot write to the provider safely.
    bad_sender = 553, [5, 1, 7], "Sender address cannot be passed on as written";
    /// A recipient address the relay cannot write to the provider safely.
    bad_recipient = 553, [5, 1, 3], "Recipient address cannot be passed on as written";
    /// SMTPUTF8 requested but the provider does not offer it.
    no_smtputf8_upstream = 553, [5, 6, 7], "The provider does not accept SMTPUTF8 messages";
    /// Bare CR/LF in a message (smuggling defence).
    bare_line_ending = 554, [5, 6, 0], "Message refused: bare CR or LF found, only CRLF line endings are allowed";
    /// Header block over `max_header_bytes`.
    header_too_large = 552, [5, 3, 4], "Message refused: the header is larger than allowed";
    /// More header fields than `max_header_fields`.
    too_many_header_fields = 552, [5, 3, 4], "Message refused: too many header fields";
    /// `outgoing = "encrypted-only"` and the message is not encrypted.
    not_encrypted = 550, [5, 7, 1], "Not sent: this relay only sends end-to-end encrypted mail (OpenPGP or S/MIME) and this message is not encrypted. Turn on encryption for it in your mail program and send it again";
    /// Line inside a message over the limit.
    message_line_too_long = 554, [5, 6, 0], "Message refused: a line is longer than allowed";
    /// Upstream lost or timed out; the client keeps its message.
    upstream_lost = 421, [4, 4, 2], "Connection to the provider lost, message not accepted; try again later";
    /// The relay is shutting down (SIGTERM) and the session is idle.
    shutting_down = 421, [4, 3, 2], "The relay is shutting down, try again later";
    /// Client silent too long.
    idle_timeout = 421, [4, 4, 2], "Idle timeout, closing connection";
    /// Client still not logged in past the pre-authentication deadline.
    preauth_timeout = 421, [4, 4, 2], "Took too long to log in, closing connection";
    /// Client sending its message below the transfer rate floor.
    too_slow = 421, [4, 4, 2], "Message data arriving too slowly, closing connection";
    /// At the connection cap, the oldest unauthenticated session makes room.
    evicted = 421, [4, 7, 0], "The relay is full and this connection has not logged in; try again later";
    /// The account's hourly message allowance is spent.
    message_rate = 451, [4, 7, 1], "Too many messages from this account this hour, try again later";
    /// The relay holds `max_buffered_message_bytes` of messages already.
    no_room = 452, [4, 3, 1], "The relay is holding all the mail it can right now; try again later";
    /// The account has `max_transactions_per_account` messages in progress.
    too_many_transactions = 452, [4, 3, 1], "Too many messages in progress for this account; try again later";
    /// Login or prefix locked out after repeated failures: the same reply
    /// whatever the password, and temporary, so that a mail client does not
    /// ask its user for a new password.
    auth_locked = 454, [4, 7, 0], "Too many failed logins, try again later";
    /// The embedded Tor client has not finished bootstrapping (AUTH time,
    /// so 454 as RFC 4954 asks, with a network enhanced code).
    tor_not_ready = 454, [4, 4, 1], "Temporary failure: the relay's Tor connection is still starting, try again in a minute";
    /// The provider refused TLS or offered no STARTTLS.
    upstream_tls_failed = 454, [4, 7, 0], "Temporary authentication failure: secure connection to the provider failed";
}

/// Syntax errors from smtp-proto, mapped to generic replies that never echo
/// client input.
pub(crate) fn from_parse_error(err: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match err {
        E::UnknownCommand => unknown_command(),
        E::InvalidSenderAddress => Reply::new(501, [5, 1, 7], "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, [5, 1, 3], "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, [5, 5, 4], format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, [5, 5, 4], format!("Invalid parameter {param}"))
        }
        E::UnsupportedParameter { .. } => unsupported_parameter(),
        E::ResponseTooLong => line_too_long(),
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => {
            Reply::new(501, [5, 5, 4], "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_codes_but_not_the_providers_text() {
        let r = Reply::new(535, [5, 7, 8], "alice@example.test: bad password");
        assert_eq!(format!("{r:?}"), "Reply(535 5.7.8 [scrubbed])");
    }

    fn wire(reply: &Reply) -> String {
        let mut out = WipedBuf::new();
        reply.write_to(&mut out);
        String::from_utf8(out.to_vec()).expect("ascii")
    }

    #[test]
    fn upstream_multiline_reply_keeps_code_and_esc_on_every_line() {
        let r = Response {
            code: 535,
            esc: [5, 7, 8],
            message: "first\nsecond\r\x1b[31m".to_string(),
        };
        assert_eq!(
            wire(&Reply::from_upstream(&r)),
            "535-5.7.8 first\r\n535 5.7.8 second[31m\r\n"
        );
    }

    #[test]
    fn reply_without_enhanced_code_has_none() {
        assert_eq!(
            wire(&start_data()),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }
}
