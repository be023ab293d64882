//! Properties of the header sanitizer over generated messages: the body is
//! never changed, sanitizing twice is the same as once, and the result is
//! still a message (CRLF-terminated header fields, then the untouched rest).

use mailveil::config::Config;
use mailveil::sanitize::{Policy, strip_identifying_headers};
use proptest::prelude::*;

fn policy(mode: &str) -> Policy {
    let config = Config::parse(&format!(
        "[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\
         [[upstream]]\nname = \"up\"\nsmtp = {{ host = \"127.0.0.1\", port = 1, tls = \"implicit\" }}\n\
         domains = [\"*\"]\n[egress]\nmode = \"direct\"\n[sanitize]\nmode = \"{mode}\"\n"
    ))
    .expect("config");
    Policy::new(&config.sanitize)
}

/// Field names the sanitizer treats specially, plus ordinary and odd ones.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("From".to_string()),
        Just("Date".to_string()),
        Just("Message-ID".to_string()),
        Just("MIME-Version".to_string()),
        Just("User-Agent".to_string()),
        Just("X-Mailer".to_string()),
        Just("Received".to_string()),
        Just("X-Originating-IP".to_string()),
        Just("Subject".to_string()),
        Just("Autocrypt".to_string()),
        Just("References".to_string()),
        Just("In-Reply-To".to_string()),
        Just("X-Claws-End-Special-Headers".to_string()),
        Just("S".to_string()),
        Just("RMID".to_string()),
        "[A-Za-z][A-Za-z0-9-]{0,20}",
    ]
}

/// A value: plausible text, dates, ids and addresses, sometimes folded,
/// sometimes raw bytes.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,60}".prop_map(String::into_bytes),
        Just(b" Tue, 24 Nov 2026 01:26:36 +0100".to_vec()),
        Just(b" 24 Nov 2026 01:26 -0800 (PST)".to_vec()),
        Just(b" <abc.123@laptop.lan>".to_vec()),
        Just(b" <20261129093011.GB77@laptop.lan> <bob1@example.net>".to_vec()),
        Just(b" <6f1c2a9e-3b1d-4c55-9a0e-1f2e3d4c5b6a@example.test>".to_vec()),
        Just(b" <20261130101147.4f3a2b1c.alice@example.test>".to_vec()),
        Just(b" Alice <alice@example.test>".to_vec()),
        Just(b" alice@example.test (Alice)".to_vec()),
        Just(b" \"x <a@b.c>\" <alice@laptop.lan>".to_vec()),
        Just(b" 1.0 (Mac OS X Mail 16.0)".to_vec()),
        ("[ -~]{0,30}", "[ -~]{0,30}").prop_map(|(a, b)| format!("{a}\r\n\t{b}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((field_name(), field_value()), 0..12),
        prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(Vec::new()),
            Just(b"\n".to_vec())
        ],
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(fields, separator, body)| {
            let mut m = Vec::new();
            for (name, value) in fields {
                m.extend_from_slice(name.as_bytes());
                m.push(b':');
                m.extend_from_slice(&value);
                m.extend_from_slice(b"\r\n");
            }
            m.extend_from_slice(&separator);
            m.extend_from_slice(&body);
            m
        })
}

/// Independent check that `header` is a run of header fields: every line
/// starts a field (a name of printable ASCII, then a colon) or continues one
/// (space or tab), ends in LF (CRLF from SMTP; an IMAP APPEND may have bare
/// LFs, kept as they were) unless it is the message's last, and no bare CR
/// is left anywhere.
fn is_field_block(header: &[u8], rest_is_empty: bool) -> bool {
    let bare_cr = header
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && header.get(i + 1) != Some(&b'\n'));
    let lines: Vec<&[u8]> = header.split_inclusive(|&b| b == b'\n').collect();
    !bare_cr
        && lines.iter().enumerate().all(|(i, line)| {
            if !(line.ends_with(b"\n") || i + 1 == lines.len() && rest_is_empty) {
                return false;
            }
            if matches!(line.first(), Some(b' ' | b'\t')) {
                return i > 0;
            }
            match line.iter().position(|&b| b == b':') {
                Some(colon) => colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b)),
                None => false,
            }
        })
}

/// 2026-11-30 10:00:00 UTC.
const NOW: i64 = 1_796_032_800;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn body_bytes_never_change(m in message(), strict in any::<bool>()) {
        let p = policy(if strict { "strict" } else { "default" });
        let s = strip_identifying_headers(&m, &p, NOW);
        prop_assert!(m.ends_with(s.rest));
    }

    #[test]
    fn sanitizing_twice_is_sanitizing_once(m in message(), strict in any::<bool>()) {
        let p = policy(if strict { "strict" } else { "default" });
        let once = strip_identifying_headers(&m, &p, NOW).whole().to_vec();
        let twice = strip_identifying_headers(&once, &p, NOW).whole().to_vec();
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn output_is_still_a_message(m in message(), strict in any::<bool>()) {
        let p = policy(if strict { "strict" } else { "default" });
        let s = strip_identifying_headers(&m, &p, NOW);
        prop_assert!(
            is_field_block(&s.header, s.rest.is_empty()),
            "{:?}",
            String::from_utf8_lossy(&s.header)
        );
        // What follows the fields is what followed them in the input: a
        // blank line and the body, or whatever the input had there.
        let out = s.whole().to_vec();
        let again = strip_identifying_headers(&out, &p, NOW);
        prop_assert_eq!(again.rest, s.rest);
    }
}
