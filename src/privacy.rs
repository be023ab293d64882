//! Types that keep identifying values out of logs and out of memory once used.
//!
//! Anything that could identify a person — a client address, a login, an
//! envelope address, a header value, upstream reply text — is wrapped in
//! [`Sensitive`] as soon as it is parsed, so that a stray `{}` or `{:?}` prints
//! `[scrubbed]`, in debug and release builds alike. Credentials are [`Secret`]:
//! they have no `Debug` or `Display` at all and are zeroized on drop.
//! This module must never offer a way to switch scrubbing off.
//! [`process`] hardens the process itself (core dumps, dumpability, locked
//! memory).

pub mod process;
mod wiped;

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

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

    /// Unwraps the value, for protocol use.
    pub fn into_inner(self) -> T {
        self.0
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

/// Secret bytes (a password, a token, a SASL response): no `Debug`, no
/// `Display`, zeroized when dropped.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of the bytes; they are wiped when the `Secret` drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes, for protocol use.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Wipes a buffer that held message or credential data, including its spare
/// capacity, before the allocation goes back to the allocator.
pub fn wipe(buffer: &mut Vec<u8>) {
    buffer.zeroize();
}

/// Wipes the filled part of a buffer that only ever grew by appending (a
/// message buffer): its spare capacity never held data, so leaving it
/// untouched keeps a large reservation from being paged in just to be zeroed.
pub fn wipe_appended(buffer: &mut Vec<u8>) {
    buffer.as_mut_slice().zeroize();
    buffer.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_prints_scrubbed_in_display_and_debug() {
        let login = Sensitive::new("alice@example.test".to_string());
        assert_eq!(format!("{login}"), "[scrubbed]");
        assert_eq!(format!("{login:?}"), "[scrubbed]");
        assert_eq!(login.expose(), "alice@example.test");
    }

    #[test]
    fn wipe_appended_zeroes_what_was_written_and_keeps_the_reservation() {
        let mut buffer = Vec::with_capacity(1 << 20);
        buffer.extend_from_slice(b"message");
        let ptr = buffer.as_ptr();
        wipe_appended(&mut buffer);
        assert!(buffer.is_empty());
        assert_eq!(buffer.capacity(), 1 << 20);
        assert_eq!(buffer.as_ptr(), ptr);
    }

    #[test]
    fn wipe_clears_contents() {
        let mut buffer = b"password".to_vec();
        wipe(&mut buffer);
        assert!(buffer.is_empty());
    }
}
