//! `outgoing = "encrypted-only"`: is a message end-to-end encrypted?
//!
//! Read from the client's own header (before any sanitizing) and the start
//! of the body. Encrypted means one of:
//! - OpenPGP/MIME: `multipart/encrypted` with `protocol="application/pgp-encrypted"`
//!   (RFC 3156);
//! - S/MIME enveloped data: `application/pkcs7-mime` (or the older
//!   `application/x-pkcs7-mime`) with `smime-type=enveloped-data` or
//!   `authEnveloped-data` (RFC 8551); signed-only data is not encrypted;
//! - inline PGP: a single text body (no Content-Type, or `text/plain`) whose
//!   first non-blank line is `-----BEGIN PGP MESSAGE-----`.
//!
//! Exempt, so that encryption can start: an Autocrypt Setup Message
//! (`Autocrypt-Setup-Message` header) and Delta Chat's Secure-Join steps (a
//! `Secure-Join` header). This is a guardrail against mistakes, not against
//! a member who wants around it: those headers can be added to anything.

use crate::sanitize::{split_fields, unfold};

/// What the policy makes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// End-to-end encrypted.
    Encrypted,
    /// Not encrypted, but one of the messages that start encryption.
    Exempt,
    /// Neither: refused under `encrypted-only`.
    NotEncrypted,
}

/// Classifies the message whose first bytes are `head` (its whole header
/// must be in it; the relay refuses a header that is not). The header is
/// split as the sanitizer splits it, so that both judge the same fields.
pub(crate) fn classify(head: &[u8]) -> Verdict {
    let (fields, body_at) = split_fields(head);
    let named = |name: &'static [u8]| {
        fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
    };
    let exempt = named(b"autocrypt-setup-message")
        .chain(named(b"secure-join"))
        .next()
        .is_some();
    let mut content_types = named(b"content-type");
    let encrypted = match (content_types.next(), content_types.next()) {
        // Readers differ on which of two counts: not encrypted for sure.
        (Some(_), Some(_)) => false,
        (None, _) => starts_with_pgp_armour(&head[body_at..]),
        (Some(field), None) => {
            let value = unfold(&String::from_utf8_lossy(field.value)).to_ascii_lowercase();
            match media_type(&value) {
                ("multipart/encrypted", params) => {
                    parameter(params, "protocol").as_deref() == Some("application/pgp-encrypted")
                }
                ("application/pkcs7-mime" | "application/x-pkcs7-mime", params) => matches!(
                    parameter(params, "smime-type").as_deref(),
                    Some("enveloped-data" | "authenveloped-data")
                ),
                ("text/plain", _) => starts_with_pgp_armour(&head[body_at..]),
                _ => false,
            }
        }
    };
    if encrypted {
        Verdict::Encrypted
    } else if exempt {
        Verdict::Exempt
    } else {
        Verdict::NotEncrypted
    }
}

/// `type/subtype` and the parameters after it, from a lower-cased value.
fn media_type(value: &str) -> (&str, &str) {
    let (media, params) = value.split_once(';').unwrap_or((value, ""));
    (media.trim(), params)
}

/// The value of parameter `name` (lower-cased, unquoted), if present.
fn parameter(params: &str, name: &str) -> Option<String> {
    let mut rest = params;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(';').trim();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let close = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..close], quoted.get(close + 1..).unwrap_or(""))
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        if key == name {
            return Some(value.to_string());
        }
        rest = next.trim_start().trim_start_matches(';');
    }
    None
}

/// True when the first non-blank line of `body` opens an OpenPGP message.
fn starts_with_pgp_armour(body: &[u8]) -> bool {
    body.split(|b| *b == b'\n')
        .map(|line| line.trim_ascii())
        .find(|line| !line.is_empty())
        .is_some_and(|line| line == b"-----BEGIN PGP MESSAGE-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgp_mime_smime_enveloped_and_inline_pgp_are_encrypted() {
        for message in [
            &b"From: a@b\r\nContent-Type: multipart/encrypted;\r\n\tprotocol=\"application/pgp-encrypted\";\r\n boundary=\"x\"\r\n\r\n--x\r\n"[..],
            b"Content-Type: Multipart/Encrypted; boundary=x; PROTOCOL=application/PGP-encrypted\r\n\r\n",
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\nMIAG",
            b"Content-Type: application/x-pkcs7-mime; name=\"smime.p7m\"; smime-type=\"enveloped-data\"\n\nMIAG",
            b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data\r\n\r\n",
            b"Subject: x\r\n\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEM\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n  -----BEGIN PGP MESSAGE-----\r\n",
        ] {
            assert_eq!(
                classify(message),
                Verdict::Encrypted,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn plain_signed_and_look_alike_messages_are_not() {
        for message in [
            &b"Subject: hello\r\n\r\nhello\r\n"[..],
            b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"\r\n\r\n",
            b"Content-Type: multipart/encrypted; protocol=\"application/other\"\r\n\r\n",
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\n",
            b"Content-Type: application/pkcs7-mime\r\n\r\n",
            // Armour further down, or in a part: not an inline PGP message.
            b"Subject: x\r\n\r\nsee below\r\n-----BEGIN PGP MESSAGE-----\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n",
            b"Subject: x\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n",
            // A header line that only looks like the field.
            b"X-Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\n\r\n",
            // Two Content-Types: which one a reader takes varies.
            b"Content-Type: text/plain\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\n\r\n",
            // A line that is no field ends the header before the field.
            b"Subject: x\r\nnot a field\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"\r\n\r\n",
            b"",
        ] {
            assert_eq!(
                classify(message),
                Verdict::NotEncrypted,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn autocrypt_setup_and_secure_join_are_exempt() {
        assert_eq!(
            classify(
                b"Autocrypt-Setup-Message: v1\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n"
            ),
            Verdict::Exempt
        );
        assert_eq!(
            classify(b"secure-join: vc-request\r\nSubject: Message from alice\r\n\r\nhi\r\n"),
            Verdict::Exempt
        );
    }
}
