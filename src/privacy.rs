//! Types that keep identifying values out of logs and out of memory once used.
//!
//! Anything that could identify a person — a client address, a login, an
//! envelope address, a header value, upstream reply text — is wrapped in
//! [`Sensitive`] as soon as it is parsed, so that a stray `{}` or `{:?}` prints
//! `[scrubbed]`, in debug and release builds alike. Bytes of a session —
//! command lines, credentials, messages — live in a [`WipedBuf`], which is
//! wiped when dropped and whenever it moves to a new allocation. Credentials
//! are [`Secret`]: a `WipedBuf` with no `Debug` or `Display` at all.
//! This module must never offer a way to switch scrubbing off.
//! [`process`] hardens the process itself (core dumps, dumpability, locked
//! memory).

pub mod process;
mod wiped;

use std::fmt;

use zeroize::Zeroizing;

pub use wiped::WipedBuf;

/// A value that may identify a person. Formatting it prints `[scrubbed]`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for protocol use. Never pass the result to a log macro.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[scrubbed]")
    }
}

/// A login as the relay holds it: never printed, wiped when dropped.
pub(crate) type Login = Sensitive<Zeroizing<String>>;

/// `login` as tags and isolation keys see it, wiped when dropped: in lower
/// case, its domain normalized as routing normalizes it (no trailing dot,
/// internationalized names in ASCII), so that one account is one tag
/// however its domain is written.
pub(crate) fn normalized(login: &Login) -> Zeroizing<String> {
    let lower = Zeroizing::new(login.expose().to_lowercase());
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    match crate::config::normalize_domain(domain) {
        Some(domain) => {
            let mut out = Zeroizing::new(String::with_capacity(local.len() + 1 + domain.len()));
            out.push_str(local);
            out.push('@');
            out.push_str(&domain);
            out
        }
        None => lower,
    }
}

/// Secret bytes (a password, a token, a SASL response): no `Debug`, no
/// `Display`, wiped when dropped.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct Secret(WipedBuf);

impl Secret {
    /// A secret copied from `bytes` (the caller's copy is its own to wipe).
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        Self(WipedBuf::copy_of(bytes))
    }

    /// The secret bytes, for protocol use.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<WipedBuf> for Secret {
    fn from(bytes: WipedBuf) -> Self {
        Self(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_account_is_one_normalized_login_however_its_domain_is_written() {
        let of = |text: &str| normalized(&Sensitive::new(Zeroizing::new(text.to_string())));
        let canonical = of("alice@xn--bcher-kva.example");
        for written in [
            "Alice@Bücher.Example",
            "alice@bücher.example.",
            "ALICE@XN--BCHER-KVA.EXAMPLE",
        ] {
            assert_eq!(*of(written), *canonical, "{written}");
        }
        assert_eq!(*of("bare-Name"), "bare-name");
        assert_ne!(*of("bob@xn--bcher-kva.example"), *canonical);
    }

    #[test]
    fn sensitive_prints_scrubbed_in_display_and_debug() {
        let login = Sensitive::new("alice@example.test".to_string());
        assert_eq!(format!("{login}"), "[scrubbed]");
        assert_eq!(format!("{login:?}"), "[scrubbed]");
        assert_eq!(login.expose(), "alice@example.test");
    }
}
