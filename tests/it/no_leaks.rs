//! Invariant 2: nothing that identifies a person appears in what mailveil
//! logs, at any level. Full SMTP and IMAP sessions run with canary values while every
//! tracing event at TRACE is captured; no canary may appear.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::common::imap::*;
use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CANARIES: &[&str] = &[
    "127.0.0.77",
    "alice@example.test",
    "alice-secret-pw",
    "canary-ehlo.invalid",
    "canary-rcpt@example.test",
    "unknown@example.test",
    "CanarySubject7731",
    "canary-header-value-5512",
    "UPSTREAM-CANARY-TEXT",
    "queued as ABC123",
    "ya29.good-token",
    "canary-mailbox-4417",
    "canary-idclient",
    "canary-garbage-9931",
    "SecretVendor",
    "canary-provider.invalid",
    "canary-domain.test",
    // Second wave (issue 15).
    "canary-relay-host.invalid",
    "canary quoted",
    "canary-msgid-8812",
    "canary-laptop.local",
    "canary-ref-3301",
    "canary-received-host",
    "canary-device-token-6620",
    "canary-bare-login",
    "03-Nov-2026 10:11:09",
    // Third wave (issue 18).
    "canary-tls.test",
    "canary-localpart",
    "canary-lp.test",
    "canary-stranger",
    "canary-wrong-password",
];

#[tokio::test]
async fn trace_logs_carry_no_canary_from_full_sessions() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    tracing::trace!("capture check");

    let (upstream, relay) = start_pair(UpstreamScript::default()).await;

    // A session from a distinctive source address, over STARTTLS.
    let (mut c, _) = Client::plain_from(&relay, "127.0.0.77").await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    c.cmd("STARTTLS").await;
    c.upgrade().await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    // A failed AUTH whose upstream text is a canary, then a good one.
    let bad = B64.encode(format!("\0{USER}\0wrong-{PASSWORD}"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {bad}"))
            .await
            .contains("UPSTREAM-CANARY-TEXT")
    );
    let xoauth = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    assert!(
        c.cmd(&format!("AUTH XOAUTH2 {xoauth}"))
            .await
            .starts_with("235")
    );
    c.cmd("MAIL FROM:<alice@example.test>").await;
    c.cmd("RCPT TO:<canary-rcpt@example.test>").await;
    c.cmd("RCPT TO:<unknown@example.test>").await;
    c.cmd("DATA").await;
    c.send(&stuff(b"Subject: CanarySubject7731\r\nX-Note: canary-header-value-5512\r\nUser-Agent: canary-header-value-5512\r\n\r\nbody\r\n")).await;
    assert!(c.reply().await.contains("ABC123"));
    // A refused (smuggled) message and garbage input.
    c.cmd("MAIL FROM:<alice@example.test>").await;
    c.cmd("RCPT TO:<canary-rcpt@example.test>").await;
    c.cmd("DATA").await;
    c.send(
        b"Subject: CanarySubject7731\r\n\r\nx\n.\nMAIL FROM:<canary-rcpt@example.test>\r\n.\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("554"));
    c.cmd("FROB canary-header-value-5512").await;
    c.cmd("MAIL FROM:<canary-rcpt@example.test> RET=FULL").await;
    c.cmd("QUIT").await;
    assert_eq!(upstream.messages().len(), 1);

    // Second wave: OAUTHBEARER naming the relay, one without a=, a quoted
    // local part, Message-ID and References at a LAN host, an unreadable
    // Date, and a bare login no upstream takes.
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    let no_authzid = B64.encode(format!(
        "n,,\x01host=canary-relay-host.invalid\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    assert!(
        c.cmd(&format!("AUTH OAUTHBEARER {no_authzid}"))
            .await
            .starts_with("501")
    );
    let bearer = B64.encode(format!(
        "n,a={USER},\x01host=canary-relay-host.invalid\x01port=465\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    assert!(
        c.cmd(&format!("AUTH OAUTHBEARER {bearer}"))
            .await
            .starts_with("235")
    );
    c.cmd("MAIL FROM:<\"canary quoted\"@example.test> SIZE=999")
        .await;
    c.cmd("RCPT TO:<canary-rcpt@example.test>").await;
    c.cmd("DATA").await;
    c.send(&stuff(
        b"From: alice@example.test\r\nDate: Mon, 30 Nov 2026 10:11:09 CET\r\n\
          Message-ID: <canary-msgid-8812@canary-laptop.local>\r\n\
          References: <canary-ref-3301@canary-laptop.local>\r\n\r\nbody\r\n",
    ))
    .await;
    assert!(c.reply().await.starts_with("250"));
    c.cmd("QUIT").await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    assert!(
        c.auth_plain("canary-bare-login", PASSWORD)
            .await
            .starts_with("535")
    );

    // A session that the upstream drops mid-DATA.
    let (dropper, relay2) = start_pair(UpstreamScript {
        drop_after_data_bytes: Some(10),
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay2).await;
    c.login().await;
    let r = c
        .send_message(b"Subject: CanarySubject7731\r\n\r\nbody body body body\r\n")
        .await;
    assert!(r.starts_with("421"));
    assert!(dropper.messages().is_empty());
    // IMAP: STARTTLS from the canary address, a refused and a good login,
    // ID, a mailbox name, APPEND, FETCH, garbage, then the provider drops.
    let (_imap_up, imap_relay) = start_imap_pair(ImapScript {
        fetch_body: std::sync::Arc::new(
            b"Subject: CanarySubject7731\r\nX-Note: canary-header-value-5512\r\n\r\nbody\r\n"
                .to_vec(),
        ),
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::plain_from(&imap_relay, "127.0.0.77").await;
    assert!(c.tagged("i1", "STARTTLS").await.starts_with("i1 OK"));
    c.upgrade().await;
    let refused = c
        .tagged("i2", &format!("LOGIN {USER} wrong-{PASSWORD}"))
        .await;
    assert!(refused.contains("UPSTREAM-CANARY-TEXT"), "{refused}");
    c.login().await;
    c.cmd("i3", "ID (\"name\" \"canary-idclient\")").await;
    c.cmd("i4", "SELECT \"canary-mailbox-4417\"").await;
    let message =
        b"Subject: CanarySubject7731\r\nUser-Agent: canary-header-value-5512\r\n\r\nbody\r\n";
    let mut append =
        format!("i5 APPEND canary-mailbox-4417 {{{}+}}\r\n", message.len()).into_bytes();
    append.extend_from_slice(message);
    append.extend_from_slice(b"\r\n");
    c.send(&append).await;
    assert!(
        c.until_tagged("i5")
            .await
            .last()
            .expect("l")
            .starts_with("i5 OK")
    );
    // Second wave: a delivered message (kept byte for byte, with its
    // date-time) and a push token while push is off.
    let delivered = b"Received: from canary-received-host by mx\r\n\
        Date: Tue, 3 Nov 2026 10:11:09 +0100\r\n\r\nbody\r\n";
    let mut append = format!(
        "i8 APPEND canary-mailbox-4417 \"03-Nov-2026 10:11:09 +0100\" {{{}+}}\r\n",
        delivered.len()
    )
    .into_bytes();
    append.extend_from_slice(delivered);
    append.extend_from_slice(b"\r\n");
    c.send(&append).await;
    c.until_tagged("i8").await;
    c.cmd(
        "i9",
        "SETMETADATA \"\" (/private/devicetoken \"canary-device-token-6620\")",
    )
    .await;
    c.cmd("i6", "UID FETCH 1 (BODY.PEEK[])").await;
    c.send(b"canary-garbage-9931\r\n").await;
    c.line().await;
    c.send(b"i7 XDROP\r\n").await;
    assert!(c.line().await.starts_with("* BYE"));

    // A login routed to a provider whose host name is itself telling, reached
    // through a SOCKS5 proxy that is down: the name must not be logged.
    let hidden = format!(
        "{}\n[[upstream]]\nname = \"hidden\"\nsmtp = {{ host = \"canary-provider.invalid\", port = 465, tls = \"implicit\" }}\n\
         domains = [\"canary-domain.test\"]\negress = \"socks5\"\n",
        relay_config(
            &upstream,
            "implicit",
            true,
            "[egress]\nmode = \"direct\"\nsocks5 = \"127.0.0.1:1\"\n"
        )
    );
    let relay3 = start_relay_with(&hidden).await;
    let (mut c, _) = Client::implicit(&relay3).await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    let r = c.auth_plain("alice@canary-domain.test", PASSWORD).await;
    assert!(r.starts_with("454 "), "{r}");

    // Third wave: several endpoints (the first closed), then a certificate
    // nobody trusts; and a bare-name login. (The name a provider's TLS is
    // checked against is not a canary here: rustls logs it at DEBUG, which
    // the relay's own filter never shows.)
    let stranger = start_upstream(UpstreamScript::default()).await;
    let closed = closed_port().await;
    let third = format!(
        "{}\n[[upstream]]\nname = \"tls\"\n\
         smtp = [{{ host = \"127.0.0.1\", port = {closed}, tls = \"implicit\" }}, \
                 {{ host = \"127.0.0.1\", port = {stranger}, tls = \"implicit\" }}]\n\
         ca = \"{ca}\"\ndomains = [\"canary-tls.test\"]\n\
         [[upstream]]\nname = \"bare\"\n\
         smtp = {{ host = \"127.0.0.1\", port = {port}, tls = \"implicit\" }}\n\
         ca = \"{ca}\"\nlogin = \"localpart\"\ndomains = [\"canary-lp.test\"]\n",
        relay_config(&upstream, "implicit", true, ""),
        port = upstream.addr.port(),
        stranger = stranger.addr.port(),
        ca = upstream.ca_path.display(),
    );
    let relay4 = start_relay_with(&third).await;
    let (mut c, _) = Client::implicit(&relay4).await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    let r = c.auth_plain("alice@canary-tls.test", PASSWORD).await;
    assert!(r.starts_with("454 "), "{r}");
    assert_eq!(stranger.connections(), 1);
    let r = c
        .auth_plain("canary-localpart@canary-lp.test", PASSWORD)
        .await;
    assert!(r.starts_with("535 "), "{r}");

    // Fifth relay: members only. A stranger, a member whose canary
    // password the provider refuses (with its canary text), then the
    // member served.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = b"a canary relay's access secret..";
    std::fs::write(dir.path().join("key"), key).expect("write");
    let line = mailveil::access::AccessKey::from_secret(key)
        .expect("key")
        .member_line(USER);
    std::fs::write(dir.path().join("members"), line).expect("write");
    let fifth = format!(
        "{}\n[access]\nlist = \"{}\"\nsecret_file = \"{}\"\n",
        relay_config(&upstream, "implicit", true, ""),
        dir.path().join("members").display(),
        dir.path().join("key").display()
    );
    let relay5 = start_relay_with(&fifth).await;
    let (mut c, _) = Client::implicit(&relay5).await;
    c.cmd("EHLO canary-ehlo.invalid").await;
    let r = c.auth_plain("canary-stranger@example.test", PASSWORD).await;
    assert!(r.starts_with("535 "), "{r}");
    let r = c.auth_plain(USER, "canary-wrong-password").await;
    assert!(r.starts_with("535 "), "{r}");
    assert!(c.auth_plain(USER, PASSWORD).await.starts_with("235 "));

    drop(relay5);
    drop(relay);
    drop(relay2);
    drop(relay3);
    drop(relay4);
    drop(imap_relay);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let logged = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert!(
        logged.contains("capture check"),
        "the capture itself must work"
    );
    assert!(
        logged.contains("listening on"),
        "relay start-up lines are captured: {logged}"
    );
    for canary in CANARIES {
        assert!(
            !logged.contains(canary),
            "canary {canary} leaked into logs:\n{logged}"
        );
    }
}
