//! Hostile input and the reply each gets (issue 6's bad-input table, kept
//! in RELIABILITY.md). Every case: the exact first reply line, and whether
//! the relay then closes; nothing reaches the provider that should not.

use crate::common::imap::*;
use crate::common::*;

/// Sends `bytes` on a fresh authenticated SMTP session (implicit TLS) and
/// returns the first reply line and whether the connection then closed.
async fn smtp_after_login(relay: &TestRelay, bytes: &[u8]) -> (String, bool) {
    let (mut c, _) = Client::implicit(relay).await;
    c.login().await;
    c.send(bytes).await;
    let reply = c.reply().await;
    let closed = c.is_closed_soon().await;
    (reply, closed)
}

/// The same before login, on the plain-text STARTTLS listener.
async fn smtp_before_tls(relay: &TestRelay, bytes: &[u8]) -> (String, bool) {
    let (mut c, _) = Client::plain(relay).await;
    c.send(bytes).await;
    let reply = c.reply().await;
    let closed = c.is_closed_soon().await;
    (reply, closed)
}

async fn imap_before_login(relay: &TestRelay, bytes: &[u8]) -> (String, bool) {
    let (mut c, _) = ImapClient::implicit(relay).await;
    c.send(bytes).await;
    let reply = c.line().await;
    let closed = c.is_closed_soon().await;
    (reply, closed)
}

#[tokio::test]
async fn hostile_smtp_input_gets_a_clear_reply() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let long = format!("EHLO {}\r\n", "a".repeat(20_000));
    // (what, bytes, after login, first reply line, connection closed after)
    let cases: Vec<(&str, Vec<u8>, bool, &str, bool)> = vec![
        (
            "overlong command line",
            long.into_bytes(),
            false,
            "500 5.5.2 Line too long",
            true,
        ),
        (
            "NUL in a command",
            b"NOOP a\0b\r\n".to_vec(),
            false,
            "250 2.0.0 Ok",
            false,
        ),
        (
            "bare LF ending a command",
            b"NOOP\n".to_vec(),
            false,
            "500 5.5.2 Command lines must end with CRLF",
            false,
        ),
        (
            "garbage verb",
            b"\x01\x02\x03\r\n".to_vec(),
            false,
            "500 5.5.1 Command not recognized",
            false,
        ),
        (
            "empty line",
            b"\r\n".to_vec(),
            false,
            "500 5.5.1 Command not recognized",
            false,
        ),
        (
            "MAIL before TLS",
            b"MAIL FROM:<a@example.test>\r\n".to_vec(),
            false,
            "530 5.7.0 Must issue a STARTTLS command first",
            false,
        ),
        // Addresses are the provider's to judge: the client gets its reply
        // (this scripted provider accepts everything).
        (
            "invalid UTF-8 in MAIL FROM",
            b"MAIL FROM:<\xff\xfe@example.test>\r\n".to_vec(),
            true,
            "250 2.1.0 Ok",
            false,
        ),
        (
            "8-bit address without SMTPUTF8",
            "MAIL FROM:<jürgen@example.test>\r\n".as_bytes().to_vec(),
            true,
            "250 2.1.0 Ok",
            false,
        ),
        (
            "BDAT without MAIL",
            b"BDAT 3 LAST\r\nabc".to_vec(),
            true,
            "503 5.5.1 Need MAIL command first",
            false,
        ),
        (
            "BDAT over the size limit",
            b"BDAT 2000000 LAST\r\n".to_vec(),
            true,
            "552 5.3.4 Message size exceeds limit",
            true,
        ),
        (
            "BDAT size beyond 64 bits",
            b"BDAT 99999999999999999999999 LAST\r\n".to_vec(),
            true,
            "552 5.3.4 Message size exceeds limit",
            true,
        ),
    ];
    for (what, bytes, after_login, expect, closes) in &cases {
        let (reply, closed) = if *after_login {
            smtp_after_login(&relay, bytes).await
        } else {
            smtp_before_tls(&relay, bytes).await
        };
        assert_eq!(&reply, expect, "{what}");
        assert_eq!(closed, *closes, "{what}: closed?");
    }
    assert!(upstream.messages().is_empty());
}

#[tokio::test]
async fn hostile_imap_input_gets_a_clear_reply() {
    let (_upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let cases: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        (
            "literal of 2^32 bytes, synchronizing",
            b"a1 LOGIN {4294967296}\r\n".to_vec(),
            "a1 BAD [TOOBIG] Literal too large",
            false,
        ),
        (
            "literal of 2^32 bytes, non-synchronizing",
            b"a1 LOGIN {4294967296+}\r\n".to_vec(),
            "* BYE [TOOBIG] Literal too large",
            true,
        ),
        (
            "literal size beyond 64 bits",
            b"a1 LOGIN {99999999999999999999999}\r\n".to_vec(),
            "* BYE [TOOBIG] Literal too large",
            true,
        ),
        (
            "overlong command line",
            format!("a1 NOOP {}\r\n", "a".repeat(70_000)).into_bytes(),
            "a1 BAD [TOOBIG] Command line too long",
            false,
        ),
        (
            "NUL in a command",
            b"a1 NOOP a\0b\r\n".to_vec(),
            "a1 OK NOOP completed",
            false,
        ),
        (
            "invalid UTF-8 in LOGIN",
            b"a1 LOGIN \xff\xfe x\r\n".to_vec(),
            "a1 BAD Expected LOGIN user password",
            false,
        ),
        (
            "bare LF ending a command",
            b"a1 NOOP\n".to_vec(),
            "a1 OK NOOP completed",
            false,
        ),
        ("no tag", b"\r\n".to_vec(), "* BAD Malformed command", false),
        (
            "literal marker inside a literal",
            b"a1 LOGIN {3}\r\n{1}\r\n".to_vec(),
            "+ Ready for literal data",
            false,
        ),
    ];
    for (what, bytes, expect, closes) in &cases {
        let (reply, closed) = imap_before_login(&relay, bytes).await;
        assert_eq!(&reply, expect, "{what}");
        assert_eq!(closed, *closes, "{what}: closed?");
    }
}

/// Sends `message` (already in wire form: dot-stuffed DATA content with its
/// terminator, or a BDAT command with its chunk) after MAIL and RCPT on a
/// fresh authenticated session; returns the final reply.
async fn smtp_message(relay: &TestRelay, wire: &[u8]) -> String {
    let (mut c, _) = Client::implicit(relay).await;
    c.login().await;
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.test>").await.starts_with("250"));
    c.send(wire).await;
    let mut reply = c.reply().await;
    if reply.starts_with("354") {
        reply = c.reply().await;
    }
    reply
}

#[tokio::test]
async fn hostile_messages_get_a_clear_reply_and_arrive_byte_for_byte() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    // (what, wire bytes, final reply, what the provider stores)
    let cases: Vec<(&str, Vec<u8>, &str, Vec<u8>)> = vec![
        (
            "8-bit and invalid UTF-8 in a header, no SMTPUTF8",
            b"DATA\r\nSubject: caf\xe9 \xff\xfe\r\n\r\nbody\r\n.\r\n".to_vec(),
            "250 2.0.0 Ok: queued as ABC123",
            b"Subject: caf\xe9 \xff\xfe\r\n\r\nbody\r\n".to_vec(),
        ),
        (
            "a header block and no body",
            b"DATA\r\nSubject: only a header\r\n.\r\n".to_vec(),
            "250 2.0.0 Ok: queued as ABC123",
            b"Subject: only a header\r\n".to_vec(),
        ),
        (
            "NUL bytes in a header and in the body",
            b"DATA\r\nSubject: a\0b\r\n\r\nx\0y\r\n.\r\n".to_vec(),
            "250 2.0.0 Ok: queued as ABC123",
            b"Subject: a\0b\r\n\r\nx\0y\r\n".to_vec(),
        ),
        (
            // This provider has no CHUNKING: the message goes by DATA, whose
            // content must end in CRLF (RFC 5321 4.1.1.4), so one is added.
            "BDAT message without a final CRLF",
            b"BDAT 20 LAST\r\nSubject: x\r\n\r\nno end".to_vec(),
            "250 2.0.0 Ok: queued as ABC123",
            b"Subject: x\r\n\r\nno end\r\n".to_vec(),
        ),
        (
            "DATA whose last line has no CRLF before the dot",
            b"DATA\r\nSubject: x\r\n\r\nno end.\r\n.\r\n".to_vec(),
            "250 2.0.0 Ok: queued as ABC123",
            b"Subject: x\r\n\r\nno end.\r\n".to_vec(),
        ),
    ];
    for (what, wire, expect, stored) in &cases {
        let before = upstream.messages().len();
        let reply = smtp_message(&relay, wire).await;
        assert_eq!(&reply, expect, "{what}");
        let messages = upstream.messages();
        assert_eq!(messages.len(), before + 1, "{what}");
        assert_eq!(
            &messages[before].data,
            stored,
            "{what}: {:?}",
            String::from_utf8_lossy(&messages[before].data)
        );
    }
}

#[tokio::test]
async fn oversized_and_overcrowded_header_blocks_are_refused() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = relay_config(&upstream, "implicit", true, "").replace(
        "[limits]\n",
        "[limits]\nmax_header_bytes = 2048\nmax_header_fields = 20\n",
    );
    let relay = start_relay_with(&text).await;
    let long_field = format!("Subject: {}\r\n", "x".repeat(900));
    let big = format!("DATA\r\n{long_field}{long_field}{long_field}\r\nbody\r\n.\r\n");
    assert_eq!(
        smtp_message(&relay, big.as_bytes()).await,
        "552 5.3.4 Message refused: the header is larger than allowed"
    );
    let crowded = format!("DATA\r\n{}\r\nbody\r\n.\r\n", "X-A: 1\r\n".repeat(21));
    assert_eq!(
        smtp_message(&relay, crowded.as_bytes()).await,
        "552 5.3.4 Message refused: too many header fields"
    );
    // At the limits, a message passes.
    let fits = format!("DATA\r\n{}\r\nbody\r\n.\r\n", "X-A: 1\r\n".repeat(20));
    assert!(
        smtp_message(&relay, fits.as_bytes())
            .await
            .starts_with("250 ")
    );
    assert_eq!(upstream.messages().len(), 1);

    let imap_upstream = start_imap_upstream(ImapScript::default()).await;
    let text = imap_relay_config(&imap_upstream, "").replace(
        "[limits]\n",
        "[limits]\nmax_header_bytes = 2048\nmax_header_fields = 20\n",
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    for (tag, message, expect) in [
        (
            "a1",
            format!("{long_field}{long_field}{long_field}\r\nbody\r\n"),
            "a1 NO [LIMIT] Message header block too large",
        ),
        (
            "a2",
            format!("{}\r\nbody\r\n", "X-A: 1\r\n".repeat(21)),
            "a2 NO [LIMIT] Too many header fields",
        ),
    ] {
        let mut append = format!("{tag} APPEND Drafts {{{}+}}\r\n", message.len()).into_bytes();
        append.extend_from_slice(message.as_bytes());
        append.extend_from_slice(b"\r\n");
        c.send(&append).await;
        let lines = c.until_tagged(tag).await;
        assert_eq!(lines.last().map(String::as_str), Some(expect), "{lines:?}");
    }
    assert!(c.tagged("n", "NOOP").await.starts_with("n OK"));
    assert!(imap_upstream.commands_named("APPEND").is_empty());
}
