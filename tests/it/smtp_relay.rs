//! End-to-end SMTP tests: a real client socket → mailveil → a scripted
//! upstream, all over TCP + TLS on 127.0.0.1.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const SIMPLE: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: hi\r\nDate: Tue, 24 Nov 2026 01:26:36 +0100\r\nMessage-ID: <x1@laptop.lan>\r\nUser-Agent: Mutt/2.2.9\r\nReceived: from laptop.lan (192.168.1.7)\r\n\r\nbody line\r\n.leading dot\r\n";

#[tokio::test]
async fn message_is_relayed_with_identifying_headers_removed_and_body_identical() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, greeting) = Client::implicit(&relay).await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    c.login().await;
    let r = c.send_message(SIMPLE).await;
    assert_eq!(
        r, "250 2.0.0 Ok: queued as ABC123",
        "upstream's own final reply"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");

    let stored = upstream.messages();
    assert_eq!(stored.len(), 1);
    let got = &stored[0];
    assert_eq!(got.from, "<alice@example.test>");
    assert_eq!(got.rcpts, vec!["<bob@example.test>".to_string()]);
    let text = String::from_utf8_lossy(&got.data);
    assert!(!text.contains("User-Agent"), "{text}");
    assert!(!text.contains("Received"), "{text}");
    assert!(
        !text.contains("192.168.1.7") && !text.contains("laptop"),
        "{text}"
    );
    assert!(
        text.contains("Date: Tue, 24 Nov 2026 00:26:00 +0000\r\n"),
        "{text}"
    );
    assert_eq!(body(&got.data), body(SIMPLE));
    // The upstream never saw the client's EHLO name, only the neutral one.
    let lines = upstream.lines();
    assert!(lines.contains(&"EHLO [127.0.0.1]".to_string()), "{lines:?}");
    assert!(
        !upstream
            .record
            .raw
            .lock()
            .expect("lock")
            .windows(14)
            .any(|w| w == b"client.invalid")
    );
}

#[tokio::test]
async fn ehlo_reply_lists_what_the_relay_handles_and_no_fingerprint() {
    let (_upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::plain(&relay).await;
    assert_eq!(
        c.cmd("EHLO client.invalid").await,
        "250-relay.test\n250-PIPELINING\n250-SIZE 1000000\n250-8BITMIME\n250-SMTPUTF8\n250-ENHANCEDSTATUSCODES\n250-CHUNKING\n250 STARTTLS"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("220 2.0.0"));
    c.upgrade().await;
    assert_eq!(
        c.cmd("EHLO client.invalid").await,
        "250-relay.test\n250-PIPELINING\n250-SIZE 1000000\n250-8BITMIME\n250-SMTPUTF8\n250-ENHANCEDSTATUSCODES\n250-CHUNKING\n250 AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER"
    );
}

#[tokio::test]
async fn auth_before_tls_is_refused_and_nothing_reaches_upstream() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::plain(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.auth_plain(USER, PASSWORD).await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn unauthenticated_mail_is_refused() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.test>").await,
        "503 5.5.1 Need MAIL command first"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Need MAIL command first");
    assert_eq!(
        upstream.connections(),
        0,
        "an unauthenticated client must not reach the provider"
    );
}

#[tokio::test]
async fn upstream_535_reaches_client_unchanged() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.auth_plain(USER, "wrong").await,
        "535 5.7.8 Error: authentication failed: UPSTREAM-CANARY-TEXT"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await,
        "530 5.7.0 Authentication required"
    );
    // A later, correct attempt in the same session works.
    c.login().await;
    assert!(upstream.connections() >= 2);
}

#[tokio::test]
async fn auth_plain_without_initial_response_prompts() {
    let (_upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    let r = c.cmd(&B64.encode(format!("\0{USER}\0{PASSWORD}"))).await;
    assert_eq!(r, "235 2.7.0 Authentication successful");
}

#[tokio::test]
async fn auth_login_is_relayed_step_by_step() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&B64.encode(USER)).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&B64.encode(PASSWORD)).await,
        "235 2.7.0 Authentication successful"
    );
    assert!(upstream.lines().iter().any(|l| l == "AUTH LOGIN"));
}

#[tokio::test]
async fn auth_login_is_converted_to_plain_when_upstream_offers_only_plain() {
    let (upstream, relay) = start_pair(UpstreamScript {
        mechanisms: "PLAIN",
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    c.cmd("AUTH LOGIN").await;
    c.cmd(&B64.encode(USER)).await;
    assert_eq!(
        c.cmd(&B64.encode(PASSWORD)).await,
        "235 2.7.0 Authentication successful"
    );
    assert!(
        upstream
            .lines()
            .iter()
            .any(|l| l.starts_with("AUTH PLAIN "))
    );
}

#[tokio::test]
async fn auth_cancelled_with_star() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    c.cmd("AUTH LOGIN").await;
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled");
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn xoauth2_success_and_error_challenge_are_relayed() {
    let (_upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let bad = B64.encode(format!("user={USER}\x01auth=Bearer expired\x01\x01"));
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {bad}")).await,
        "334 eyJzdGF0dXMiOiI0MDEifQ=="
    );
    assert_eq!(
        c.cmd("").await,
        "535 5.7.8 Error: authentication failed: UPSTREAM-CANARY-TEXT"
    );
    let good = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {good}")).await,
        "235 2.7.0 Authentication successful"
    );
}

/// The OAUTHBEARER message the provider got, decoded.
fn oauthbearer_as_sent(upstream: &Upstream) -> String {
    let sent = upstream
        .lines()
        .into_iter()
        .find_map(|l| l.strip_prefix("AUTH OAUTHBEARER ").map(str::to_string))
        .expect("OAUTHBEARER reached the provider");
    String::from_utf8(B64.decode(sent.trim()).expect("b64")).expect("utf-8")
}

#[tokio::test]
async fn oauthbearer_names_the_provider_not_the_relay() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let ir = B64.encode(format!(
        "n,a={USER},\x01host=relay.test\x01port=465\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    assert_eq!(
        c.cmd(&format!("AUTH OAUTHBEARER {ir}")).await,
        "235 2.7.0 Authentication successful"
    );
    let decoded = oauthbearer_as_sent(&upstream);
    // The endpoint's name and port (RFC 7628), not the relay's.
    assert_eq!(
        decoded,
        format!(
            "n,a={USER},\x01host=127.0.0.1\x01port={}\x01auth=Bearer {TOKEN}\x01\x01",
            upstream.addr.port()
        )
    );
}

#[tokio::test]
async fn oauthbearer_names_the_certificate_name_when_one_is_set() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let config = relay_config(&upstream, "implicit", true, "").replace(
        "domains = [\"example.test\"]",
        "domains = [\"example.test\"]\ntls_server_name = \"localhost\"",
    );
    let relay = start_relay_with(&config).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let ir = B64.encode(format!(
        "n,a={USER},\x01host=relay.test\x01port=465\x01auth=Bearer {TOKEN}\x01\x01"
    ));
    assert_eq!(
        c.cmd(&format!("AUTH OAUTHBEARER {ir}")).await,
        "235 2.7.0 Authentication successful"
    );
    let decoded = oauthbearer_as_sent(&upstream);
    assert!(decoded.contains("\x01host=localhost\x01"), "{decoded:?}");
}

#[tokio::test]
async fn oauthbearer_without_an_authorization_identity_is_refused_here() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let ir = B64.encode(format!("n,,\x01auth=Bearer {TOKEN}\x01\x01"));
    assert_eq!(
        c.cmd(&format!("AUTH OAUTHBEARER {ir}")).await,
        "501 5.5.2 OAUTHBEARER needs a= (the authorization identity): set it to your address"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn login_with_no_route_is_refused_without_contacting_any_upstream() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    // No catch-all: a domain no upstream lists has no route.
    let text = relay_config(&upstream, "implicit", true, "")
        + "\n[[upstream]]\nname = \"other\"\nsmtp = { host = \"127.0.0.1\", port = 1, tls = \"implicit\" }\ndomains = [\"other.test\"]\n";
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.auth_plain("mallory@nowhere.test", "pw").await,
        "535 5.7.8 Authentication credentials invalid"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn partial_rcpt_failure_is_reported_per_recipient() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await, "250 2.1.5 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<unknown@example.test>").await,
        "550 5.1.1 <unknown@example.test>: Recipient address rejected: User unknown"
    );
    assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
    c.send(&stuff(SIMPLE)).await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as ABC123");
    assert_eq!(
        upstream.messages()[0].rcpts,
        vec!["<bob@example.test>".to_string()]
    );
}

#[tokio::test]
async fn data_with_no_accepted_recipient_is_refused_locally() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.cmd("MAIL FROM:<alice@example.test>").await;
    c.cmd("RCPT TO:<unknown@example.test>").await;
    assert_eq!(c.cmd("DATA").await, "554 5.5.1 No valid recipients");
    assert!(!upstream.lines().contains(&"DATA".to_string()));
}

#[tokio::test]
async fn upstream_rejection_of_the_message_is_the_clients_final_reply() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let r = c
        .send_message(b"Subject: x\r\n\r\nREJECTME please\r\n")
        .await;
    assert_eq!(r, "554 5.7.1 Message content rejected");
    assert!(upstream.messages().is_empty());
}

#[tokio::test]
async fn every_smuggling_variant_is_refused_and_nothing_reaches_upstream() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    for smuggle in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r",
        b"\n",
    ] {
        assert_eq!(
            c.cmd("MAIL FROM:<alice@example.test>").await,
            "250 2.1.0 Ok"
        );
        assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await, "250 2.1.5 Ok");
        assert_eq!(c.cmd("DATA").await, "354 End data with <CR><LF>.<CR><LF>");
        let mut wire = b"Subject: innocent\r\n\r\nhello".to_vec();
        wire.extend_from_slice(smuggle);
        wire.extend_from_slice(
            b"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: forged\r\n\r\nsmuggled\r\n.\r\n",
        );
        c.send(&wire).await;
        assert_eq!(
            c.reply().await,
            "554 5.6.0 Message refused: bare CR or LF found, only CRLF line endings are allowed",
            "{smuggle:?}"
        );
    }
    // The session is still usable and in sync.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    assert!(upstream.messages().is_empty());
    let raw = upstream.record.raw.lock().expect("lock").clone();
    assert!(
        !raw.windows(8).any(|w| w == b"smuggled"),
        "no smuggled byte may reach upstream"
    );
    assert!(
        !raw.windows(4).any(|w| w == b"DATA"),
        "upstream never got DATA"
    );
}

#[tokio::test]
async fn upstream_dropping_mid_data_gives_a_4xx_and_stores_nothing() {
    let (upstream, relay) = start_pair(UpstreamScript {
        drop_after_data_bytes: Some(2000),
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let r = c.send_message(&undeliverable_message()).await;
    assert!(r.starts_with("421 4.4.2 "), "{r}");
    assert!(upstream.messages().is_empty());
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn pgp_mime_and_smime_signed_bodies_arrive_byte_identical() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let pgp = include_bytes!("../fixtures/messages/pgp-mime-signed.eml");
    let smime = include_bytes!("../fixtures/messages/smime-signed.eml");
    assert!(c.send_message(pgp).await.starts_with("250 "));
    assert!(c.send_message(smime).await.starts_with("250 "));
    let stored = upstream.messages();
    assert_eq!(body(&stored[0].data), body(pgp));
    assert_eq!(body(&stored[1].data), body(smime));
    // The signed part's own headers (inside the body) are untouched.
    assert!(
        body(&stored[0].data)
            .windows(29)
            .any(|w| w == b"Received: this inner header m")
    );
    // Content-Type with its folding is kept byte-exact.
    let head = String::from_utf8_lossy(&stored[0].data);
    assert!(head.contains("Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\";\r\n boundary=\"------------sig0123456789\"\r\n"));
    let head = String::from_utf8_lossy(&stored[1].data);
    assert!(head.contains("Mime-Version: 1.0\r\n"), "{head}");
    assert!(!head.contains("Apple Mail"));
}

#[tokio::test]
async fn eight_bit_and_smtputf8_messages_arrive_intact() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    // 8BITMIME with a raw Latin-1 byte.
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> BODY=8BITMIME").await,
        "250 2.1.0 Ok"
    );
    c.cmd("RCPT TO:<bob@example.test>").await;
    c.cmd("DATA").await;
    let latin1 = b"Subject: caf\xe9\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\r\ncaf\xe9 \xff\xfe\r\n";
    c.send(&stuff(latin1)).await;
    assert!(c.reply().await.starts_with("250 "));
    // SMTPUTF8 with a UTF-8 address and headers.
    let utf8 = include_bytes!("../fixtures/messages/smtputf8.eml");
    assert_eq!(
        c.cmd("MAIL FROM:<jürgen@exämple.test> SMTPUTF8 BODY=8BITMIME")
            .await,
        "250 2.1.0 Ok"
    );
    assert_eq!(c.cmd("RCPT TO:<björn@example.test>").await, "250 2.1.5 Ok");
    c.cmd("DATA").await;
    c.send(&stuff(utf8)).await;
    assert!(c.reply().await.starts_with("250 "));

    let stored = upstream.messages();
    assert_eq!(stored[0].data, latin1.to_vec());
    assert_eq!(body(&stored[1].data), body(utf8));
    assert!(String::from_utf8_lossy(&stored[1].data).contains("Subject: Grüße aus Köln ✉\r\n"));
    let lines = upstream.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "MAIL FROM:<alice@example.test> BODY=8BITMIME"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "MAIL FROM:<jürgen@exämple.test> SMTPUTF8"
                || l == "MAIL FROM:<jürgen@exämple.test> BODY=8BITMIME SMTPUTF8"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn smtputf8_is_refused_when_the_provider_lacks_it() {
    let (upstream, relay) = start_pair(UpstreamScript {
        smtputf8: false,
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.cmd("MAIL FROM:<jürgen@exämple.test> SMTPUTF8").await,
        "553 5.6.7 The provider does not accept SMTPUTF8 messages"
    );
    assert!(!upstream.lines().iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn bdat_chunks_are_relayed_and_the_last_reply_is_upstreams() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.cmd("MAIL FROM:<alice@example.test>").await;
    c.cmd("RCPT TO:<bob@example.test>").await;
    let part1 = b"Subject: chunked\r\nX-Mailer: Foo 1.0\r\n\r\n.starts with dot\r\n";
    let part2 = b"second chunk\r\n";
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes()).await;
    c.send(part1).await;
    assert_eq!(
        c.reply().await,
        format!("250 2.0.0 {} octets received", part1.len())
    );
    c.send(format!("BDAT {} LAST\r\n", part2.len()).as_bytes())
        .await;
    c.send(part2).await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as ABC123");
    let stored = upstream.messages();
    assert_eq!(
        stored[0].data,
        b"Subject: chunked\r\n\r\n.starts with dot\r\nsecond chunk\r\n".to_vec()
    );
}

#[tokio::test]
async fn bdat_message_ending_inside_its_header_still_loses_identifying_fields() {
    // BDAT needs no final CRLF: the last header line is unterminated. A
    // sanitizer that only knew CRLF-terminated fields let it through.
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.cmd("MAIL FROM:<alice@example.test>").await;
    c.cmd("RCPT TO:<bob@example.test>").await;
    let message = b"Subject: no body\r\nUser-Agent: Canary/1.0 (Linux laptop)";
    c.send(format!("BDAT {} LAST\r\n", message.len()).as_bytes())
        .await;
    c.send(message).await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued as ABC123");
    let stored = upstream.messages();
    let text = String::from_utf8_lossy(&stored[0].data);
    assert!(!text.contains("Canary"), "{text}");
    assert!(text.starts_with("Subject: no body\r\n"), "{text}");
}

#[tokio::test]
async fn size_over_the_limit_is_refused_at_mail_and_while_receiving() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> SIZE=2000000").await,
        "552 5.3.4 Message size exceeds limit"
    );
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 1_100_000 {
        big.extend_from_slice(&[b'a'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    assert_eq!(
        c.send_message(&big).await,
        "552 5.3.4 Message size exceeds limit"
    );
    assert!(upstream.messages().is_empty());
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<unknown@example.test>\r\nDATA\r\n").await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert!(c.reply().await.starts_with("550 5.1.1"));
    assert!(c.reply().await.starts_with("354 "));
    let mut data = stuff(SIMPLE);
    data.extend_from_slice(b"QUIT\r\n");
    c.send(&data).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok"));
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    assert_eq!(upstream.messages().len(), 1);
    // The provider offers PIPELINING: MAIL and the RCPTs went in one
    // flight (the last RCPT ends it: DATA waits for the replies).
    assert_eq!(
        upstream.grouped(),
        [
            "MAIL FROM:<alice@example.test>",
            "RCPT TO:<bob@example.test>"
        ]
    );
}

/// A relay for `upstream` (implicit TLS) whose egress is a SOCKS5 proxy,
/// as over Tor; the proxy lives as long as the value returned.
async fn relay_through_socks(upstream: &Upstream) -> (TestRelay, crate::common::socks::SocksProxy) {
    let proxy = crate::common::socks::start_socks("unused.test").await;
    let egress = format!("[egress]\nmode = \"socks5\"\nsocks5 = \"{}\"\n", proxy.addr);
    let relay = start_relay_with(&relay_config(upstream, "implicit", true, &egress)).await;
    (relay, proxy)
}

/// `MAIL`, three `RCPT`s of which the provider refuses one, and the
/// message as `BDAT … LAST`, all in one write, as a pipelining client
/// sends them; then the replies the client gets. Through a SOCKS5 proxy
/// when `proxied` (as over Tor), else with direct egress.
async fn pipeline_bdat(script: UpstreamScript, proxied: bool) -> (Upstream, Vec<String>) {
    let upstream = start_upstream(script).await;
    let (relay, _proxy) = if proxied {
        let (relay, proxy) = relay_through_socks(&upstream).await;
        (relay, Some(proxy))
    } else {
        (
            start_relay_with(&relay_config(&upstream, "implicit", true, "")).await,
            None,
        )
    };
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let message = b"Subject: grouped\r\nX-Mailer: y\r\n\r\nbody\r\n";
    let mut group = b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n\
RCPT TO:<unknown@example.test>\r\nRCPT TO:<carol@example.test>\r\n"
        .to_vec();
    group.extend_from_slice(format!("BDAT {} LAST\r\n", message.len()).as_bytes());
    group.extend_from_slice(message);
    c.send(&group).await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(c.reply().await);
    }
    (upstream, replies)
}

#[tokio::test]
async fn over_a_proxy_a_pipelined_bdat_message_reaches_the_provider_in_one_flight_with_its_envelope()
 {
    let (upstream, replies) = pipeline_bdat(
        UpstreamScript {
            chunking: true,
            ..UpstreamScript::default()
        },
        true,
    )
    .await;
    assert_eq!(replies[0], "250 2.1.0 Ok");
    assert_eq!(replies[1], "250 2.1.5 Ok");
    assert!(replies[2].starts_with("550 5.1.1 "), "{replies:?}");
    assert_eq!(replies[3], "250 2.1.5 Ok");
    assert_eq!(replies[4], "250 2.0.0 Ok: queued as BDAT123");
    // One round trip: nothing waited for a reply before the message.
    assert_eq!(
        upstream.grouped()[..4],
        [
            "MAIL FROM:<alice@example.test>",
            "RCPT TO:<bob@example.test>",
            "RCPT TO:<unknown@example.test>",
            "RCPT TO:<carol@example.test>",
        ]
    );
    let stored = upstream.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].rcpts,
        ["<bob@example.test>", "<carol@example.test>"]
    );
    assert_eq!(stored[0].data, b"Subject: grouped\r\n\r\nbody\r\n");
}

#[tokio::test]
async fn with_direct_egress_the_envelope_goes_in_one_flight_and_the_message_after_its_replies() {
    let (upstream, replies) = pipeline_bdat(
        UpstreamScript {
            chunking: true,
            ..UpstreamScript::default()
        },
        false,
    )
    .await;
    assert_eq!(replies[0], "250 2.1.0 Ok");
    assert!(replies[2].starts_with("550 5.1.1 "), "{replies:?}");
    assert_eq!(replies[4], "250 2.0.0 Ok: queued as BDAT123");
    // MAIL and the RCPTs together; BDAT only once they were answered.
    let grouped = upstream.grouped();
    assert_eq!(
        grouped,
        [
            "MAIL FROM:<alice@example.test>",
            "RCPT TO:<bob@example.test>",
            "RCPT TO:<unknown@example.test>",
            "BDAT 26 LAST",
        ]
    );
    assert_eq!(upstream.messages().len(), 1);
}

#[tokio::test]
async fn without_pipelining_at_the_provider_the_relay_goes_in_lock_step() {
    let (upstream, replies) = pipeline_bdat(
        UpstreamScript {
            chunking: true,
            pipelining: false,
            ..UpstreamScript::default()
        },
        true,
    )
    .await;
    assert!(replies[2].starts_with("550 5.1.1 "), "{replies:?}");
    assert_eq!(replies[4], "250 2.0.0 Ok: queued as BDAT123");
    // Each command waited for its reply (BDAT's own bytes follow it).
    let grouped = upstream.grouped();
    assert!(
        grouped.iter().all(|l| l.starts_with("BDAT ")),
        "{grouped:?}"
    );
    assert_eq!(upstream.messages().len(), 1);
}

#[tokio::test]
async fn a_pipelined_message_whose_recipients_all_fail_gets_the_providers_refusal() {
    let upstream = start_upstream(UpstreamScript {
        chunking: true,
        ..UpstreamScript::default()
    })
    .await;
    let (relay, _proxy) = relay_through_socks(&upstream).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.send(
        b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<unknown@example.test>\r\n\
BDAT 8 LAST\r\n\r\nbody\r\n",
    )
    .await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert!(c.reply().await.starts_with("550 5.1.1 "));
    assert_eq!(c.reply().await, "554 5.5.1 Error: no valid recipients");
    assert!(upstream.messages().is_empty());
    // The session goes on.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::plain(&relay).await;
    c.cmd("EHLO client.invalid").await;
    c.send(b"STARTTLS\r\nNOOP\r\nNOOP\r\n").await;
    assert!(c.reply().await.starts_with("220 2.0.0"));
    c.upgrade().await;
    // The injected NOOPs would answer first if they had been kept.
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    // After STARTTLS the client must EHLO again before AUTH.
    assert_eq!(
        c.auth_plain(USER, PASSWORD).await,
        "503 5.5.1 Send EHLO first"
    );
    c.login().await;
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn bare_lf_command_line_is_refused() {
    let (_upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.send(b"NOOP\n").await;
    assert_eq!(
        c.reply().await,
        "500 5.5.2 Command lines must end with CRLF"
    );
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
}

#[tokio::test]
async fn starttls_upstream_works_and_is_used_before_auth() {
    let (upstream, relay) = start_pair(UpstreamScript {
        implicit_tls: false,
        ..UpstreamScript::default()
    })
    .await;
    let mut c = Client::starttls(&relay).await;
    c.login().await;
    assert!(c.send_message(SIMPLE).await.starts_with("250 "));
    let lines = upstream.lines();
    let starttls = lines
        .iter()
        .position(|l| l == "STARTTLS")
        .expect("STARTTLS sent");
    let auth = lines
        .iter()
        .position(|l| l.starts_with("AUTH "))
        .expect("AUTH sent");
    assert!(starttls < auth, "{lines:?}");
}

#[tokio::test]
async fn upstream_without_starttls_is_never_sent_credentials() {
    let (upstream, relay) = start_pair(UpstreamScript {
        implicit_tls: false,
        offer_starttls: false,
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.auth_plain(USER, PASSWORD).await,
        "454 4.7.0 Temporary authentication failure: secure connection to the provider failed"
    );
    assert!(!upstream.lines().iter().any(|l| l.starts_with("AUTH")));
    let raw = upstream.record.raw.lock().expect("lock").clone();
    assert!(
        !raw.windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes())
    );
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_refused() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    // No `ca`: the upstream's self-signed certificate is not in the web PKI.
    let relay = start_relay_with(&relay_config(&upstream, "implicit", false, "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert!(c.auth_plain(USER, PASSWORD).await.starts_with("454 4.7.0"));
    assert!(
        upstream.lines().is_empty(),
        "nothing may be said over an unverified connection"
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_a_temporary_auth_failure() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = relay_config(&upstream, "implicit", true, "")
        .replace(&format!("port = {}", upstream.addr.port()), "port = 1");
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert!(c.auth_plain(USER, PASSWORD).await.starts_with("454 4.7.0"));
}

#[tokio::test]
async fn unsupported_parameters_are_refused_not_forwarded() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> RET=HDRS").await,
        "555 5.5.4 Unsupported MAIL or RCPT parameter"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test> REQUIRETLS").await,
        "555 5.5.4 Unsupported MAIL or RCPT parameter"
    );
    assert!(!upstream.lines().iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn chunking_upstream_gets_one_bdat_with_the_exact_bytes() {
    let (upstream, relay) = start_pair(UpstreamScript {
        chunking: true,
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let message = b"Subject: x\r\nX-Mailer: y\r\n\r\n.dot line\r\n..two\r\nno final crlf";
    let r = c.send_message(message).await;
    assert_eq!(r, "250 2.0.0 Ok: queued as BDAT123");
    let stored = upstream.messages();
    // Client-side stuffing added the final CRLF; the relay forwards the rest as is.
    assert_eq!(
        stored[0].data,
        b"Subject: x\r\n\r\n.dot line\r\n..two\r\nno final crlf\r\n".to_vec()
    );
    let lines = upstream.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("BDAT ") && l.ends_with(" LAST")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "DATA"), "{lines:?}");
}

#[tokio::test]
async fn chunking_upstream_dropping_mid_bdat_gives_a_4xx_and_stores_nothing() {
    let (upstream, relay) = start_pair(UpstreamScript {
        chunking: true,
        drop_after_data_bytes: Some(1000),
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let r = c.send_message(&undeliverable_message()).await;
    assert!(r.starts_with("421 4.4.2 "), "{r}");
    assert!(upstream.messages().is_empty());
}

/// ~100 KB: long enough that an upstream dropping after 1–2 KB drops mid-message.
fn undeliverable_message() -> Vec<u8> {
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..2000 {
        message.extend_from_slice(
            format!("line {i:05} of a message that will not arrive\r\n").as_bytes(),
        );
    }
    message
}

#[tokio::test]
async fn aggregate_counters_count_logins_and_messages_and_nothing_else() {
    let (_upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert!(c.auth_plain(USER, "wrong").await.starts_with("535 "));
    assert!(c.auth_plain(USER, PASSWORD).await.starts_with("235 "));
    assert!(c.send_message(SIMPLE).await.starts_with("250 "));
    assert!(c.send_message(SIMPLE).await.starts_with("250 "));
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    let (mut c, _) = Client::implicit(&relay).await;
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");

    assert_eq!(
        relay.relay.stats().take_report(),
        "SMTP sessions 2, IMAP sessions 0, logins 1, logins refused by provider 1, \
         logins for no configured provider 0, logins not on the members list 0, provider unreachable 0, \
         Tor not ready 0, provider TLS failed 0, \
         messages relayed 2, messages refused by provider 0, messages refused here 0, of which not encrypted 0, \
         provider connections lost 0, client timeouts 0, connections refused at the cap 0, \
         connections refused by rate 0, connections refused per prefix 0, \
         unauthenticated sessions evicted 0, logins locked out 0, \
         messages over the hourly limit 0, accepts failed 0, messages deferred for room 0, connections without a trusted PROXY header 0, onion connections refused by the onion limits 0"
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_told_421_and_served_once_there_is_room() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = relay_config(&upstream, "implicit", true, "")
        .replace("[limits]\n", "[limits]\nmax_connections = 1\n");
    let relay = start_relay_with(&text).await;
    let (mut first, greeting) = Client::implicit(&relay).await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    // Logged in, the first session cannot be evicted to make room.
    first.login().await;
    // Over the cap: a clear temporary refusal, then the connection closes.
    let (mut second, refusal) = Client::implicit(&relay).await;
    assert_eq!(
        refusal,
        "421 4.7.0 Too many connections to the relay, try again later"
    );
    assert!(second.is_closed().await);
    // The session in progress is unaffected.
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(first.is_closed().await);
    // With room again, a new client is served.
    let mut served = false;
    for _ in 0..50 {
        let (_c, greeting) = Client::implicit(&relay).await;
        if greeting == "220 relay.test ESMTP" {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "no room after the first session ended");
    assert!(
        !relay
            .relay
            .stats()
            .take_report()
            .contains("connections refused at the cap 0"),
        "the refusal is counted"
    );
}

#[tokio::test]
async fn shutdown_says_421_to_idle_sessions_and_lets_a_message_in_progress_finish() {
    let (upstream, mut relay) = start_pair(UpstreamScript::default()).await;
    let (mut idle, _) = Client::implicit(&relay).await;
    idle.login().await;
    let (mut busy, _) = Client::implicit(&relay).await;
    busy.login().await;
    busy.cmd("MAIL FROM:<alice@example.test>").await;
    busy.cmd("RCPT TO:<bob@example.test>").await;
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;

    relay.stop();
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 The relay is shutting down, try again later"
    );
    assert!(idle.is_closed().await);
    // The message being sent is finished and relayed, then the session ends.
    busy.send(b"second half\r\n.\r\n").await;
    assert_eq!(busy.reply().await, "250 2.0.0 Ok: queued as ABC123");
    assert_eq!(
        busy.reply().await,
        "421 4.3.2 The relay is shutting down, try again later"
    );
    assert_eq!(upstream.messages().len(), 1);
    // No new sessions.
    let refused = tokio::net::TcpStream::connect(relay.implicit).await;
    assert!(refused.is_err(), "still accepting after shutdown");
}

#[tokio::test]
async fn client_vanishing_mid_data_leaves_no_copy_and_others_are_served() {
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut gone, _) = Client::implicit(&relay).await;
    gone.login().await;
    gone.cmd("MAIL FROM:<alice@example.test>").await;
    gone.cmd("RCPT TO:<bob@example.test>").await;
    assert!(gone.cmd("DATA").await.starts_with("354"));
    gone.send(b"Subject: never finished\r\n\r\nhalf a body")
        .await;
    drop(gone);
    // Another client, meanwhile and after, is served normally.
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.send_message(SIMPLE).await,
        "250 2.0.0 Ok: queued as ABC123"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stored = upstream.messages();
    assert_eq!(stored.len(), 1, "only the finished message");
    assert!(!String::from_utf8_lossy(&stored[0].data).contains("never finished"));
}

#[tokio::test]
async fn provider_421_at_any_step_reaches_the_client_and_stores_nothing() {
    for step in ["MAIL", "RCPT", "DATA", "END"] {
        let (upstream, relay) = start_pair(UpstreamScript {
            fail_421_at: Some(step),
            ..UpstreamScript::default()
        })
        .await;
        let (mut c, _) = Client::implicit(&relay).await;
        c.login().await;
        let mut reply = c.cmd("MAIL FROM:<alice@example.test>").await;
        if reply.starts_with("250") {
            reply = c.cmd("RCPT TO:<bob@example.test>").await;
        }
        if reply.starts_with("250") {
            reply = c.cmd("DATA").await;
        }
        if reply.starts_with("354") {
            c.send(&stuff(SIMPLE)).await;
            reply = c.reply().await;
        }
        assert!(reply.starts_with("421 4."), "{step}: {reply}");
        assert!(upstream.messages().is_empty(), "{step}: a copy was stored");
        // The relay itself carries on: a new session is greeted.
        let (_c, greeting) = Client::implicit(&relay).await;
        assert_eq!(greeting, "220 relay.test ESMTP", "{step}");
    }
}

#[tokio::test]
async fn provider_silent_past_the_timeout_gives_421_and_stores_nothing() {
    // The provider timeout is 5 s here. (After the end of the message the
    // relay waits 10 minutes, as RFC 5321 4.5.3.2.6 asks; not exercised
    // here.)
    for step in ["MAIL", "RCPT"] {
        let upstream = start_upstream(UpstreamScript {
            stall_at: Some(step),
            ..UpstreamScript::default()
        })
        .await;
        let relay = start_relay_with(&relay_config(&upstream, "implicit", true, "").replace(
            "upstream_timeout_secs = 15\n",
            "upstream_timeout_secs = 5\n",
        ))
        .await;
        let (mut c, _) = Client::implicit(&relay).await;
        c.login().await;
        let started = std::time::Instant::now();
        let mut reply = c.cmd("MAIL FROM:<alice@example.test>").await;
        if reply.starts_with("250") {
            reply = c.cmd("RCPT TO:<bob@example.test>").await;
        }
        assert_eq!(
            reply,
            "421 4.4.2 Connection to the provider lost, message not accepted; try again later",
            "{step}"
        );
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(4),
            "{step}"
        );
        assert!(upstream.messages().is_empty(), "{step}");
        let (_c, greeting) = Client::implicit(&relay).await;
        assert_eq!(greeting, "220 relay.test ESMTP", "{step}");
    }
}

#[tokio::test]
async fn provider_421_at_auth_is_a_temporary_failure_charged_to_the_network_only() {
    let upstream = start_upstream(UpstreamScript {
        fail_421_at: Some("AUTH"),
        ..UpstreamScript::default()
    })
    .await;
    let text = relay_config(&upstream, "implicit", true, "").replace(
        "[limits]\n",
        "[limits]\nauth_failures_per_login = 1\nauth_failures_per_prefix = 2\nauth_failure_delay_ms = 0\n",
    );
    let relay = start_relay_with(&text).await;
    let mut replies = Vec::new();
    for _ in 0..4 {
        let (mut c, _) = Client::implicit(&relay).await;
        c.cmd("EHLO client.invalid").await;
        replies.push(c.auth_plain(USER, PASSWORD).await);
        // The client's own connection stays usable.
        assert!(
            c.cmd("MAIL FROM:<alice@example.test>")
                .await
                .starts_with("530")
        );
    }
    // 421 would tell the client the relay is closing; it is not.
    let unavailable =
        "454 4.7.0 Temporary authentication failure: provider unreachable, try again later";
    assert_eq!(replies[..3], [unavailable, unavailable, unavailable]);
    // Not charged to the login (its allowance is 1), but to the network
    // (allowance 2): the third failure locked it, the fourth login was not
    // sent to the provider.
    assert_eq!(
        replies[3],
        "454 4.7.0 Too many failed logins, try again later"
    );
    let auths = upstream
        .lines()
        .iter()
        .filter(|l| l.starts_with("AUTH"))
        .count();
    assert_eq!(auths, 3);
    assert!(upstream.messages().is_empty());
    let (_c, greeting) = Client::implicit(&relay).await;
    assert_eq!(greeting, "220 relay.test ESMTP");
}

#[tokio::test]
async fn encrypted_only_refuses_a_plain_message_before_the_provider_and_sends_an_encrypted_one() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = relay_config(
        &upstream,
        "implicit",
        true,
        "[policy]\noutgoing = \"encrypted-only\"\n",
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let r = c
        .send_message(b"From: alice@example.test\r\nSubject: plain\r\n\r\nplain words\r\n")
        .await;
    assert!(r.starts_with("550 5.7.1 Not sent: "), "{r}");
    assert!(upstream.messages().is_empty(), "the provider got nothing");
    let r = c
        .send_message(
            b"From: alice@example.test\r\nSubject: sealed\r\nContent-Type: multipart/encrypted;\r\n \
              protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\
              Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n",
        )
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(upstream.messages().len(), 1);
}

#[tokio::test]
async fn a_group_ending_in_a_refusal_of_the_relays_own_is_answered_in_full() {
    // RFC 2920: the client sent all it had and waits. The MAIL queued for
    // the provider must go, and both replies come back, in order.
    let (upstream, relay) = start_pair(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    c.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test> NOTIFY=NEVER\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert!(c.reply().await.starts_with("555 5.5.4 "));
    // And a long run of refusals is answered as it goes, not held.
    let mut group = Vec::new();
    for _ in 0..600 {
        group.extend_from_slice(b"RCPT TO:<bob@example.test> NOTIFY=NEVER\r\n");
    }
    c.send(&group).await;
    for _ in 0..600 {
        assert!(c.reply().await.starts_with("555 5.5.4 "));
    }
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    assert!(
        !upstream.lines().iter().any(|l| l.contains("NOTIFY")),
        "a refused parameter never reaches the provider"
    );
}
