//! A whole SMTP session before TLS — greeting, command framing (line
//! lengths, bare LF, pipelining), parsing and replies — over an in-memory
//! stream. The relay must end the session when the client closes, and every
//! reply must be well-formed SMTP.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let out = mailveil_fuzz::session(false, input);
    assert!(out.starts_with(b"220 fuzz.test ESMTP\r\n"), "no greeting");
    mailveil_fuzz::assert_crlf_lines(&out);
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() >= 5, "short reply line");
        assert!(
            line[..3].iter().all(u8::is_ascii_digit),
            "reply without a code"
        );
        assert!(line[3] == b' ' || line[3] == b'-', "bad separator");
        assert!(line.len() <= 512, "reply line over RFC 5321's 512 bytes");
    }
});
