//! Envelope addresses as the relay writes them to the provider.
//!
//! The server-side parser hands over an address with the quotes of its
//! local part taken off: `"me@x> ENVID=abc"@y` arrives as `me@x> ENVID=abc@y`.
//! Written back as it is, that would end the address early and slip a
//! parameter past the relay's own filter. So a local part that is not a
//! dot-atom is quoted again (RFC 5321 §4.1.2), and an address that cannot be
//! written safely at all (a `<` or `>` in it, control characters) is
//! refused.

use crate::privacy::WipedBuf;

/// Writes `address` as it goes between `<` and `>`, or `None` when it
/// cannot be written safely. The empty (null) path stays empty.
pub(crate) fn write(address: &str) -> Option<WipedBuf> {
    if address.is_empty() {
        return Some(WipedBuf::new());
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        // `<postmaster>` and the like: only a plain local part.
        return is_dot_atom(address).then(|| WipedBuf::copy_of(address.as_bytes()));
    };
    // `<` and `>` stay out even quoted: a provider's parser that ignores
    // quotes would end the path there.
    if local.is_empty() || !domain_ok(domain) || local.contains(['<', '>']) {
        return None;
    }
    let mut out = WipedBuf::with_capacity(address.len() + 2);
    if is_dot_atom(local) {
        out.extend_from_slice(local.as_bytes());
    } else {
        out.push(b'"');
        for c in local.chars() {
            // qtextSMTP / quoted-pairSMTP: printable, or UTF-8 (SMTPUTF8);
            // no control characters, ever.
            if c.is_control() {
                return None;
            }
            if c == '"' || c == '\\' {
                out.push(b'\\');
            }
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
        out.push(b'"');
    }
    out.extend_from_slices(&[b"@", domain.as_bytes()]);
    Some(out)
}

/// RFC 5321 `Dot-string` (atext extended with UTF-8 for SMTPUTF8).
fn is_dot_atom(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~".contains(c)
                    || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
            })
    })
}

/// A domain or an address literal, with nothing that could end the path
/// or start a parameter.
fn domain_ok(domain: &str) -> bool {
    !domain.is_empty()
        && domain.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
        && !domain.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(address: &str) -> Option<String> {
        write(address).map(|w| String::from_utf8(w.to_vec()).expect("utf-8"))
    }

    #[test]
    fn plain_addresses_are_written_as_they_are() {
        assert_eq!(
            written("alice@example.test").as_deref(),
            Some("alice@example.test")
        );
        assert_eq!(
            written("a.b+tag@example.test").as_deref(),
            Some("a.b+tag@example.test")
        );
        assert_eq!(
            written("jürgen@exämple.test").as_deref(),
            Some("jürgen@exämple.test")
        );
        assert_eq!(written("u@[192.0.2.1]").as_deref(), Some("u@[192.0.2.1]"));
        assert_eq!(
            written("u@mail_host.corp").as_deref(),
            Some("u@mail_host.corp")
        );
        assert_eq!(written("").as_deref(), Some(""));
        assert_eq!(written("Postmaster").as_deref(), Some("Postmaster"));
    }

    #[test]
    fn a_local_part_that_needs_quotes_gets_them_back() {
        assert_eq!(
            written("u\u{2028}v@example.test").as_deref(),
            Some("\"u\u{2028}v\"@example.test")
        );
        assert_eq!(
            written("a b@example.test").as_deref(),
            Some("\"a b\"@example.test")
        );
        assert_eq!(
            written("q\"uote\\@example.test").as_deref(),
            Some("\"q\\\"uote\\\\\"@example.test")
        );
        assert_eq!(
            written("a..b@example.test").as_deref(),
            Some("\"a..b\"@example.test")
        );
    }

    #[test]
    fn what_cannot_be_written_safely_is_refused() {
        for bad in [
            // What the parser makes of <"me@x> ENVID=abc"@y>: refused, as a
            // parser ignoring quotes would stop at its `>`.
            "me@x> ENVID=abc@y",
            "no at sign",
            "@example.test",
            "a@",
            "a@example.test> NOTIFY=NEVER",
            "a@exa mple.test",
            "a\r\nRSET@example.test",
            "a\u{0}@example.test",
        ] {
            assert_eq!(written(bad), None, "{bad:?}");
        }
    }
}
