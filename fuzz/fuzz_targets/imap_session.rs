//! A whole IMAP session before login — command framing with synchronizing
//! and non-synchronizing literals of any announced size, line limits,
//! parsing and responses — over an in-memory stream. The relay must end the
//! session when the client closes and answer in well-formed lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let out = mailveil_fuzz::session(true, input);
    assert!(out.starts_with(b"* OK"), "no greeting");
    mailveil_fuzz::assert_crlf_lines(&out);
    // Pure functions on the same bytes, line by line.
    for line in input.split_inclusive(|&b| b == b'\n') {
        let _ = mailveil::imap::syntax::literal_at_end(line);
        if let Ok(head) = mailveil::imap::syntax::parse_head(line) {
            let _ = mailveil::imap::syntax::astrings(head.rest);
            let _ = mailveil::imap::syntax::token(head.rest);
        }
        if let Some(filtered) = mailveil::imap::syntax::filter_capability_line(line, false) {
            assert!(filtered.len() <= line.len() + 2);
        }
    }
});
