//! Keys: one random key per process, made on first use and never stored,
//! for keyed hashes that mean nothing outside this process.

use std::sync::OnceLock;

/// HMAC-SHA256 of `parts`, concatenated, under [`process_key`], cut to 16
/// bytes: a name for something that means nothing outside this process.
pub fn keyed_hash(parts: &[&[u8]]) -> [u8; 16] {
    let mut ctx = ring::hmac::Context::with_key(process_key());
    for part in parts {
        ctx.update(part);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag.as_ref()[..16]);
    out
}

/// A random HMAC key made once per process and never written anywhere.
pub fn process_key() -> &'static ring::hmac::Key {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        // Generating a key from the system RNG fails only if the OS has no
        // randomness at all, in which case nothing about TLS works either.
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| std::process::abort())
    })
}
