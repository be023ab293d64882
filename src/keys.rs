//! Keys: one random key per process, never stored, and one subkey per
//! purpose derived from it (HKDF-SHA256), so that no output made for one
//! purpose can stand in for another's.
//!
//! The purposes are the admission tables' tags for address prefixes and
//! logins, the Tor and SOCKS5 isolation keys, and replacement Message-IDs.
//! The random root exists only while the subkeys are derived and is wiped
//! right after (ring's intermediate key for the derivation is dropped the
//! way ring drops keys, without a wipe of ours); the subkeys live as long as
//! the process. Nothing here is ever written or logged, and every restart
//! makes new keys.

use std::sync::OnceLock;

use ring::rand::SecureRandom;
use ring::{hkdf, hmac};
use zeroize::Zeroize;

/// What a keyed hash is for; each purpose has its own subkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Admission tables: address prefixes and logins.
    Admission,
    /// Tor circuit and SOCKS5 credential isolation.
    Isolation,
    /// Replacement Message-IDs.
    MessageId,
}

impl Purpose {
    const ALL: [Purpose; 3] = [Purpose::Admission, Purpose::Isolation, Purpose::MessageId];

    /// The HKDF `info` that derives this purpose's subkey.
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Admission => b"mailveil subkey: admission tags",
            Purpose::Isolation => b"mailveil subkey: egress isolation",
            Purpose::MessageId => b"mailveil subkey: message-id",
        }
    }
}

/// The subkeys, in the order of [`Purpose::ALL`], made on first use.
fn subkeys() -> &'static [hmac::Key; 3] {
    static KEYS: OnceLock<[hmac::Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut root = [0u8; 32];
        // The system has no randomness only when nothing about TLS works
        // either: there is nothing sensible left to do.
        ring::rand::SystemRandom::new()
            .fill(&mut root)
            .unwrap_or_else(|_| std::process::abort());
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mailveil process key").extract(&root);
        root.zeroize();
        Purpose::ALL.map(|purpose| {
            prk.expand(&[purpose.info()], hmac::HMAC_SHA256)
                .map(hmac::Key::from)
                .unwrap_or_else(|_| std::process::abort())
        })
    })
}

fn subkey(purpose: Purpose) -> &'static hmac::Key {
    // `Purpose::ALL` lists the purposes in declaration order.
    &subkeys()[purpose as usize]
}

/// HMAC-SHA256 of `parts`, concatenated, under `purpose`'s subkey, cut to
/// 16 bytes: a name for something that means nothing outside this process
/// and nothing to any other purpose.
pub(crate) fn keyed_hash(purpose: Purpose, parts: &[&[u8]]) -> [u8; 16] {
    let mut ctx = hmac::Context::with_key(subkey(purpose));
    for part in parts {
        ctx.update(part);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag.as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purposes_are_listed_in_declaration_order() {
        for (index, purpose) in Purpose::ALL.iter().enumerate() {
            assert_eq!(*purpose as usize, index);
        }
    }

    #[test]
    fn one_input_hashes_differently_for_every_purpose() {
        let input: &[&[u8]] = &[b"alice@example.test"];
        let hashes: Vec<[u8; 16]> = Purpose::ALL.iter().map(|p| keyed_hash(*p, input)).collect();
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_purpose_hashes_the_same_input_alike_within_the_process() {
        let once = keyed_hash(Purpose::Admission, &[b"a", b"b"]);
        assert_eq!(once, keyed_hash(Purpose::Admission, &[b"ab"]));
        assert_ne!(once, keyed_hash(Purpose::Admission, &[b"ac"]));
    }
}
