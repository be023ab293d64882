//! Message-ID and the ids that refer to the user's earlier messages
//! (`References`, `In-Reply-To`).
//!
//! A Message-ID is kept only when it is opaque and sits at the sender's
//! domain or at `localhost` (Delta Chat). Any other id is replaced by one
//! derived from it under the Message-ID subkey, at the sender's domain:
//! derived rather than random, so the copy submitted over SMTP and the Sent
//! copy appended over IMAP keep one id, and replies to it thread. When the
//! id was replaced because of its host (a LAN name such as
//! `alices-macbook.local`), the ids at that same host in `References` and
//! `In-Reply-To` are the user's own earlier messages, which went out under
//! their mapped ids: they are mapped the same way. Ids at other hosts are
//! other people's and stay as they are.

use zeroize::Zeroizing;

use crate::keys::{Purpose, keyed_hash};
use crate::privacy::WipedBuf;

/// Where replacement ids go when the message names no sender domain.
const NO_DOMAIN: &str = "localhost";

/// What the Message-ID rewrite decided.
pub(crate) struct Decision {
    /// The new field value, when the id is replaced.
    pub(crate) value: Option<WipedBuf>,
    /// The host (lower case) whose ids are the user's own: set when the id
    /// was replaced because of its host.
    pub(crate) own_host: Option<Zeroizing<String>>,
}

/// Decides about the value of a `Message-ID` field.
pub(crate) fn rewrite(id: &str, sender_domain: Option<&str>) -> Decision {
    let keep = Decision {
        value: None,
        own_host: None,
    };
    let domain = sender_domain.unwrap_or(NO_DOMAIN);
    let Some((left, right)) = split_id(id.trim()) else {
        // Not one `<left@right>` alone (a comment after it, no brackets,
        // no @): whatever it names is replaced, derived from all of it.
        let value = id.trim();
        return Decision {
            value: (!value.is_empty()).then(|| replacement(value, "", domain)),
            own_host: None,
        };
    };
    let at_home = right.eq_ignore_ascii_case(domain) || right.eq_ignore_ascii_case("localhost");
    if at_home && is_opaque(left) {
        return keep;
    }
    Decision {
        value: Some(replacement(left, right, domain)),
        own_host: (!at_home).then(|| Zeroizing::new(right.to_ascii_lowercase())),
    }
}

/// Maps, in the value of a `References` or `In-Reply-To` field, each id at
/// `own_host` as [`rewrite`] maps a Message-ID there. Everything else in
/// the value (other ids, folding, comments) stays byte for byte. `None`
/// when nothing changes.
pub(crate) fn map_own_ids(
    value: &[u8],
    own_host: &str,
    sender_domain: Option<&str>,
) -> Option<WipedBuf> {
    let domain = sender_domain.unwrap_or(NO_DOMAIN);
    let mut out = WipedBuf::with_capacity(value.len() + 64);
    let mut changed = false;
    let mut pos = 0;
    while let Some(open) = memchr::memchr(b'<', &value[pos..]).map(|i| pos + i) {
        let Some(close) = memchr::memchr(b'>', &value[open..]).map(|i| open + i) else {
            break;
        };
        out.extend_from_slice(&value[pos..open]);
        let mapped = std::str::from_utf8(&value[open..=close])
            .ok()
            .and_then(split_id)
            .filter(|(_, right)| right.eq_ignore_ascii_case(own_host))
            .map(|(left, right)| replacement(left, right, domain));
        match mapped {
            Some(id) => {
                out.extend_from_slice(&id);
                changed = true;
            }
            None => out.extend_from_slice(&value[open..=close]),
        }
        pos = close + 1;
    }
    out.extend_from_slice(&value[pos..]);
    changed.then_some(out)
}

/// `<left@right>` → (`left`, `right`).
fn split_id(id: &str) -> Option<(&str, &str)> {
    let inner = id.strip_prefix('<')?.strip_suffix('>')?;
    let (left, right) = inner.rsplit_once('@')?;
    (!left.is_empty() && !right.is_empty()).then_some((left, right))
}

/// The relay's id for `<left@right>`, at `domain`. Host names are not
/// case-sensitive: `right` is hashed in lower case.
fn replacement(left: &str, right: &str, domain: &str) -> WipedBuf {
    let host = Zeroizing::new(right.to_ascii_lowercase());
    let tag = keyed_hash(
        Purpose::MessageId,
        &[left.as_bytes(), b"@", host.as_bytes()],
    );
    let mut out = WipedBuf::with_capacity(2 * tag.len() + domain.len() + 3);
    out.push(b'<');
    for b in tag {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
    out.extend_from_slices(&[b"@", domain.as_bytes(), b">"]);
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";
/// Length of the relay's own local parts: hex of a 16-byte tag.
const RELAY_FORM_LEN: usize = 32;

/// An id's local part that says nothing about who made it or when: a UUID,
/// the relay's own form, or at least 16 characters of one of hex, base32 or
/// base64url (padding allowed) without a run of 8 or more digits (a
/// timestamp).
pub(crate) fn is_opaque(left: &str) -> bool {
    if is_uuid(left) || is_relay_form(left) {
        return true;
    }
    let body = left.trim_end_matches('=');
    let alphabet_ok = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut run = 0usize;
    let mut longest = 0usize;
    for b in body.bytes() {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    body.len() >= 16 && alphabet_ok && longest < 8
}

fn is_relay_form(left: &str) -> bool {
    left.len() == RELAY_FORM_LEN
        && left
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(left: &str) -> bool {
    let groups: Vec<&str> = left.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(id: &str, domain: &str) -> bool {
        rewrite(id, Some(domain)).value.is_some()
    }

    #[test]
    fn opaque_ids_at_home_are_kept() {
        for id in [
            // Thunderbird, Apple Mail: a UUID at the sender's domain.
            "<4b3e2f10-9c1d-4e8a-b7f2-0a1b2c3d4e5f@example.org>",
            "<0F3A1B2C-4D5E-6F70-8192-A3B4C5D6E7F8@example.org>",
            // Delta Chat: at localhost.
            "<4b3e2f10-9c1d-4e8a-b7f2-0a1b2c3d4e5f@localhost>",
            // base64url, base32, hex of 16 or more.
            "<Gh5_kQ2-zXw9LmPa@example.org>",
            "<MFRGGZDFMZTWQ2LK@example.org>",
            "<3f2a9c0b1d4e5f67@example.org>",
            "<YWJjZGVmZ2hpamtsbW5v==@example.org>",
        ] {
            assert!(!rewritten(id, "example.org"), "{id}");
        }
    }

    #[test]
    fn ids_with_a_host_or_a_timestamp_or_a_short_part_are_replaced() {
        for id in [
            "<CAFoo123@mail.gmail.com>",
            "<20261129093011.GB77@alices-macbook.local>",
            // At the sender's domain, but with a timestamp in it (Claws).
            "<20261130101147.4f3a2b1c.alice@example.org>",
            "<a1b2c3d420261130101147@example.org>",
            // Too short to be opaque.
            "<abc123@example.org>",
            // A UUID, but at a host.
            "<4b3e2f10-9c1d-4e8a-b7f2-0a1b2c3d4e5f@laptop.lan>",
        ] {
            assert!(rewritten(id, "example.org"), "{id}");
        }
    }

    #[test]
    fn an_id_the_relay_cannot_take_apart_is_replaced() {
        for id in [
            "<20261130.GA1@alices-macbook.local> (x)",
            "20261130.GA1@alices-macbook.local",
            "<no-at-sign>",
        ] {
            let value = rewrite(id, Some("example.org")).value.expect(id);
            let text = std::str::from_utf8(&value).expect("ascii");
            assert!(
                text.ends_with("@example.org>") && !text.contains("alices"),
                "{id} -> {text}"
            );
            assert!(rewrite(text, Some("example.org")).value.is_none(), "{text}");
        }
    }

    #[test]
    fn the_relay_form_is_kept_so_sanitizing_twice_changes_nothing() {
        let first = rewrite("<1@laptop.local>", Some("example.org"));
        let value = first.value.expect("replaced");
        let text = std::str::from_utf8(&value).expect("ascii");
        assert!(text.ends_with("@example.org>"), "{text}");
        assert!(rewrite(text, Some("example.org")).value.is_none());
        assert_eq!(
            first.own_host.as_deref().map(String::as_str),
            Some("laptop.local")
        );
    }

    #[test]
    fn a_timestamped_id_at_the_sender_domain_maps_no_host() {
        let d = rewrite(
            "<20261130101147.4f3a2b1c.alice@example.org>",
            Some("example.org"),
        );
        assert!(d.value.is_some());
        assert_eq!(d.own_host, None);
    }

    #[test]
    fn own_ids_in_references_map_like_the_message_id_and_others_stay() {
        let earlier = "<20261129093011.GB77@alices-macbook.local>";
        let mapped_alone = rewrite(earlier, Some("example.org"))
            .value
            .expect("replaced");
        let value = b" <x1@other.example>\r\n <20261129093011.GB77@Alices-MacBook.local> (mine)";
        let out = map_own_ids(value, "alices-macbook.local", Some("example.org")).expect("changed");
        let mut expected = b" <x1@other.example>\r\n ".to_vec();
        expected.extend_from_slice(&mapped_alone);
        expected.extend_from_slice(b" (mine)");
        // Host names are not case-sensitive.
        assert_eq!(out.to_vec(), expected);
        assert!(
            map_own_ids(
                b" <x1@other.example>",
                "alices-macbook.local",
                Some("example.org")
            )
            .is_none()
        );
    }
}
