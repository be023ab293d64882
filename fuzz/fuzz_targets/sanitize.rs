//! The header sanitizer on any bytes, in default and strict mode: the body
//! (everything after the header block) is never changed, no bare CR is left
//! in the header block (some parsers read it as a line end), and sanitizing
//! again changes nothing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailveil::config::Config;
use mailveil::sanitize::{Policy, strip_identifying_headers};

fn policies() -> &'static [Policy; 2] {
    static P: OnceLock<[Policy; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let base = r#"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "starttls"
[[upstream]]
name = "up"
smtp = { host = "127.0.0.1", port = 1, tls = "implicit" }
domains = ["*"]
[egress]
mode = "direct"
"#;
        let default = Config::parse(base).expect("config");
        let strict =
            Config::parse(&format!("{base}[sanitize]\nmode = \"strict\"\n")).expect("config");
        [
            Policy::new(&default.sanitize),
            Policy::new(&strict.sanitize),
        ]
    })
}

/// Fixed, so that a finding replays: 2026-11-30 10:00:00 UTC.
const NOW: i64 = 1_796_032_800;

fuzz_target!(|message: &[u8]| {
    for policy in policies() {
        let once = strip_identifying_headers(message, policy, NOW);
        // The rest is a suffix of the input: the body is byte for byte.
        assert!(message.ends_with(once.rest), "body changed");
        let h = &once.header;
        for (i, &b) in h.iter().enumerate() {
            assert!(
                b != b'\r' || h.get(i + 1) == Some(&b'\n'),
                "bare CR kept in the header"
            );
        }
        let first = once.whole().to_vec();
        let twice = strip_identifying_headers(&first, policy, NOW);
        assert_eq!(twice.whole().to_vec(), first, "sanitizing is not idempotent");
    }
});
