//! The IMAP relay end to end over real TCP + TLS: a client in front of the
//! relay, the scripted provider of `common::imap` behind it.

use std::sync::Arc;

use crate::common::imap::*;
use crate::common::{PASSWORD, TOKEN, USER, start_relay_with};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// A message as a client would file it in Sent: identifying headers, a
/// Message-ID naming the laptop, a body with lines that look like headers.
/// No Date and no trace field, so it counts as just composed at any time.
const SENT_COPY: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: bob@example.test\r\n\
Subject: filed copy\r\n\
Message-ID: <1234@alice-laptop.fritz.box>\r\n\
User-Agent: Thunderbird/140.0 canary-agent\r\n\
X-Originating-IP: [192.0.2.77]\r\n\
\r\n\
User-Agent: this line is body, not header\r\n\
body line two\r\n";

/// The same message delivered before: it carries a trace field and an old
/// Date, and must reach the provider byte for byte.
const DELIVERED: &[u8] =
    b"Received: from mx.example.net by mail.example.test; Tue, 3 Nov 2026 10:11:09 +0100\r\n\
From: Carol <carol@example.net>\r\n\
To: alice@example.test\r\n\
Subject: delivered\r\n\
Date: Tue, 3 Nov 2026 10:11:09 +0100\r\n\
Message-ID: <CAFoo123@mail.gmail.com>\r\n\
User-Agent: carol-agent\r\n\
\r\n\
delivered body\r\n";

fn body_of(message: &[u8]) -> &[u8] {
    crate::common::body(message)
}

fn assert_sanitized(stored: &[u8]) {
    let text = String::from_utf8_lossy(stored);
    let head = &text[..text.find("\r\n\r\n").expect("header block")];
    for gone in [
        "Thunderbird",
        "canary-agent",
        "192.0.2.77",
        "alice-laptop",
        "X-Originating-IP",
    ] {
        assert!(!head.contains(gone), "{gone} survived in {head}");
    }
    assert!(head.contains("Subject: filed copy"), "{head}");
    assert_eq!(body_of(stored), body_of(SENT_COPY), "body changed");
}

// ------------------------------------------------------------------ before login

#[tokio::test]
async fn greeting_and_pre_login_commands_are_answered_by_the_relay() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, greeting) = ImapClient::implicit(&relay).await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    for leak in ["SecretVendor", "upstream-host", "127.0.0.1", "mailveil"] {
        assert!(!greeting.contains(leak), "greeting reveals {leak}");
    }
    let caps = c.cmd("a1", "CAPABILITY").await;
    assert_eq!(caps.len(), 2, "{caps:?}");
    for cap in [
        "AUTH=PLAIN",
        "AUTH=LOGIN",
        "AUTH=XOAUTH2",
        "AUTH=OAUTHBEARER",
        "SASL-IR",
        "ID",
    ] {
        assert!(
            caps[0].split(' ').any(|c| c == cap),
            "{cap} missing: {caps:?}"
        );
    }
    for absent in ["STARTTLS", "LOGINDISABLED", "SCRAM", "COMPRESS"] {
        assert!(!caps[0].contains(absent), "{absent} offered: {caps:?}");
    }
    assert!(caps[1].starts_with("a1 OK"), "{caps:?}");
    assert!(c.tagged("a2", "NOOP").await.starts_with("a2 OK"));
    let id = c.cmd("a3", "ID (\"name\" \"canary-client\")").await;
    assert_eq!(id[0], "* ID NIL");
    assert!(id[1].starts_with("a3 OK"));
    assert!(c.tagged("a4", "SELECT INBOX").await.starts_with("a4 BAD"));
    let bye = c.cmd("a5", "LOGOUT").await;
    assert!(bye[0].starts_with("* BYE"), "{bye:?}");
    assert!(bye[1].starts_with("a5 OK"), "{bye:?}");
    assert!(c.is_closed().await);
    // Nothing above needed the provider.
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn starttls_listener_disables_login_until_tls() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, greeting) = ImapClient::plain_from(&relay, "127.0.0.1").await;
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    assert!(greeting.contains("LOGINDISABLED"), "{greeting}");
    assert!(!greeting.contains("AUTH="), "{greeting}");
    let refused = c.tagged("a1", &format!("LOGIN {USER} {PASSWORD}")).await;
    assert!(refused.starts_with("a1 NO [PRIVACYREQUIRED]"), "{refused}");
    let refused = c.tagged("a2", "AUTHENTICATE PLAIN").await;
    assert!(refused.starts_with("a2 NO [PRIVACYREQUIRED]"), "{refused}");
    assert_eq!(upstream.connections(), 0, "credentials never left in clear");
    assert!(c.tagged("a3", "STARTTLS").await.starts_with("a3 OK"));
    c.upgrade().await;
    let caps = c.cmd("a4", "CAPABILITY").await;
    assert!(caps[0].contains("AUTH=PLAIN"), "{caps:?}");
    assert!(!caps[0].contains("STARTTLS") && !caps[0].contains("LOGINDISABLED"));
    c.login().await;
    // The relay logs in upstream with AUTHENTICATE PLAIN where offered.
    assert_eq!(upstream.logins(), vec![("PLAIN".into(), USER.into())]);
}

#[tokio::test]
async fn commands_pipelined_behind_starttls_are_discarded() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::plain_from(&relay, "127.0.0.1").await;
    // An attacker on the path appends a command to the plain-text STARTTLS.
    c.send(b"a1 STARTTLS\r\nx1 CAPABILITY\r\n").await;
    assert!(c.line().await.starts_with("a1 OK"));
    c.upgrade().await;
    let lines = c.cmd("a2", "NOOP").await;
    assert_eq!(
        lines.len(),
        1,
        "an injected command was answered: {lines:?}"
    );
    assert!(lines[0].starts_with("a2 OK"));
    drop(upstream);
}

// ------------------------------------------------------------------ authentication

#[tokio::test]
async fn login_success_relays_the_verdict_with_filtered_capabilities() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let lines = c.login().await;
    let ok = lines.last().expect("tagged");
    assert!(ok.starts_with("L1 OK [CAPABILITY IMAP4rev1 "), "{ok}");
    assert!(ok.ends_with("] Logged in"), "{ok}");
    for kept in [
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "CONDSTORE",
        "QRESYNC",
        "SPECIAL-USE",
        "LITERAL+",
    ] {
        assert!(
            ok.split([' ', ']']).any(|c| c == kept),
            "{kept} dropped: {ok}"
        );
    }
    for dropped in ["COMPRESS", "XSECRETVENDOR", "AUTH=", "STARTTLS"] {
        assert!(!ok.contains(dropped), "{dropped} passed: {ok}");
    }
    // An untagged CAPABILITY from the provider is filtered the same way.
    let caps = c.cmd("a2", "CAPABILITY").await;
    assert!(caps[0].starts_with("* CAPABILITY IMAP4rev1"), "{caps:?}");
    assert!(caps[0].contains("IDLE") && !caps[0].contains("COMPRESS"));
    assert!(!caps[0].contains("XSECRETVENDOR"), "{caps:?}");
    assert!(caps[1].starts_with("a2 OK"));
    // The provider was asked with the relay's generic ID before the login.
    let ids = upstream.commands_named("ID");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(
        ids[0].text.ends_with("ID (\"name\" \"IMAP client\")\r\n"),
        "{ids:?}"
    );
}

#[tokio::test]
async fn login_without_capability_code_gets_a_filtered_capability_list() {
    let (_upstream, relay) = start_imap_pair(ImapScript {
        caps_in_login_ok: false,
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let lines = c.login().await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("* CAPABILITY IMAP4rev1"), "{lines:?}");
    assert!(lines[0].contains("IDLE") && !lines[0].contains("COMPRESS"));
    assert_eq!(lines[1], "L1 OK Logged in");
}

#[tokio::test]
async fn login_failure_relays_the_providers_code_and_text() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let refused = c
        .tagged("a1", &format!("LOGIN {USER} wrong-password"))
        .await;
    assert_eq!(
        refused,
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed. UPSTREAM-CANARY-TEXT"
    );
    // Still before login: the relay answers, and a second try works.
    assert!(c.tagged("a2", "NOOP").await.starts_with("a2 OK"));
    c.login().await;
    assert_eq!(upstream.logins().len(), 1);
}

#[tokio::test]
async fn login_passwords_with_quotes_and_literals_reach_the_provider_intact() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    // A literal user name (synchronizing), the password quoted.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.send(format!("a1 LOGIN {{{}}}\r\n", USER.len()).as_bytes())
        .await;
    assert!(c.line().await.starts_with("+ "));
    c.send(format!("{USER} \"{PASSWORD}\"\r\n").as_bytes())
        .await;
    let ok = c.until_tagged("a1").await;
    assert!(ok.last().expect("line").starts_with("a1 OK"), "{ok:?}");
    assert_eq!(upstream.logins(), vec![("PLAIN".into(), USER.into())]);
}

#[tokio::test]
async fn every_sasl_mechanism_passes_through() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let plain = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    let xoauth2 = B64.encode(format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"));
    let bearer = B64.encode(format!("n,a={USER},\x01auth=Bearer {TOKEN}\x01\x01"));

    // PLAIN with SASL-IR.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let ok = c.tagged("a1", &format!("AUTHENTICATE PLAIN {plain}")).await;
    assert!(ok.starts_with("a1 OK"), "{ok}");

    // PLAIN without an initial response: the relay asks for it.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.send(b"a1 AUTHENTICATE PLAIN\r\n").await;
    assert!(c.line().await.starts_with("+"));
    c.send(format!("{plain}\r\n").as_bytes()).await;
    assert!(
        c.until_tagged("a1")
            .await
            .last()
            .expect("l")
            .starts_with("a1 OK")
    );

    // LOGIN: user name and password in two steps.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.send(b"a1 AUTHENTICATE LOGIN\r\n").await;
    assert!(c.line().await.starts_with("+"));
    c.send(format!("{}\r\n", B64.encode(USER)).as_bytes()).await;
    assert!(c.line().await.starts_with("+"));
    c.send(format!("{}\r\n", B64.encode(PASSWORD)).as_bytes())
        .await;
    assert!(
        c.until_tagged("a1")
            .await
            .last()
            .expect("l")
            .starts_with("a1 OK")
    );

    // XOAUTH2 and OAUTHBEARER with initial responses.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let ok = c
        .tagged("a1", &format!("AUTHENTICATE XOAUTH2 {xoauth2}"))
        .await;
    assert!(ok.starts_with("a1 OK"), "{ok}");
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let ok = c
        .tagged("a1", &format!("AUTHENTICATE OAUTHBEARER {bearer}"))
        .await;
    assert!(ok.starts_with("a1 OK"), "{ok}");
    // Without a=, refused here with the reason.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let no_authzid = B64.encode(format!("n,,\x01auth=Bearer {TOKEN}\x01\x01"));
    let no = c
        .tagged("a1", &format!("AUTHENTICATE OAUTHBEARER {no_authzid}"))
        .await;
    assert_eq!(
        no,
        "a1 NO OAUTHBEARER needs a= (the authorization identity): set it to your address"
    );

    // A cancelled exchange never reaches the provider.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.send(b"a1 AUTHENTICATE PLAIN\r\n").await;
    assert!(c.line().await.starts_with("+"));
    c.send(b"*\r\n").await;
    assert!(c.line().await.starts_with("a1 BAD"));
    // An unknown mechanism is refused by the relay.
    let no = c.tagged("a2", "AUTHENTICATE SCRAM-SHA-256-PLUS").await;
    assert!(no.starts_with("a2 NO") || no.starts_with("a2 BAD"), "{no}");

    let mechanisms: Vec<String> = upstream.logins().into_iter().map(|(m, _)| m).collect();
    // The relay re-authenticates with PLAIN whatever password mechanism the
    // client used; tokens keep their own mechanism.
    assert_eq!(
        mechanisms,
        ["PLAIN", "PLAIN", "PLAIN", "XOAUTH2", "OAUTHBEARER"],
        "{mechanisms:?}"
    );
    assert!(upstream.logins().iter().all(|(_, u)| u == USER));
}

#[tokio::test]
async fn logins_routed_to_an_upstream_without_imap_are_refused() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    // A second provider, for another domain, has SMTP only.
    let config = imap_relay_config(&upstream, "").replace(
        "[limits]",
        "[[upstream]]\nname = \"smtp-only\"\nsmtp = { host = \"127.0.0.1\", port = 9, tls = \"implicit\" }\n\
         domains = [\"smtp-only.test\"]\n\n[limits]",
    );
    let relay = start_relay_with(&config).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let no = c
        .tagged("a1", &format!("LOGIN carol@smtp-only.test {PASSWORD}"))
        .await;
    assert!(no.starts_with("a1 NO [AUTHENTICATIONFAILED]"), "{no}");
    assert_eq!(upstream.connections(), 0);
    // The other domain still reaches its provider.
    c.login().await;
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_untrusted_provider_certificate_is_refused() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    // No `ca`: the provider's self-signed certificate is not trusted.
    let config = imap_relay_config(&upstream, "");
    let config = config
        .lines()
        .filter(|l| !l.starts_with("ca = "))
        .collect::<Vec<_>>()
        .join("\n");
    let relay = start_relay_with(&config).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let no = c.tagged("a1", &format!("LOGIN {USER} {PASSWORD}")).await;
    assert!(no.starts_with("a1 NO [UNAVAILABLE]"), "{no}");
    assert!(upstream.commands().is_empty(), "credentials sent anyway");
}

#[tokio::test]
async fn a_starttls_provider_is_reached_over_tls() {
    let (upstream, relay) = start_imap_pair(ImapScript {
        implicit_tls: false,
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let names: Vec<String> = upstream
        .commands()
        .iter()
        .filter_map(|c| c.text.split_whitespace().nth(1).map(str::to_string))
        .collect();
    let starttls = names
        .iter()
        .position(|n| n == "STARTTLS")
        .expect("STARTTLS");
    let login = names
        .iter()
        .position(|n| n == "LOGIN" || n == "AUTHENTICATE");
    assert!(login.is_some_and(|l| l > starttls), "{names:?}");
}

// ------------------------------------------------------------------ after login

#[tokio::test]
async fn compress_is_refused_and_never_reaches_the_provider() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let refused = c.tagged("a2", "COMPRESS DEFLATE").await;
    assert!(
        refused.starts_with("a2 NO") || refused.starts_with("a2 BAD"),
        "{refused}"
    );
    assert!(upstream.commands_named("COMPRESS").is_empty());
    // The session is still in plain IMAP.
    assert!(c.tagged("a3", "NOOP").await.starts_with("a3 OK"));
}

#[tokio::test]
async fn the_clients_id_is_replaced_by_the_generic_one() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let lines = c
        .cmd(
            "a2",
            "ID (\"name\" \"Thunderbird\" \"version\" \"140.0\" \"os\" \"canary-os\")",
        )
        .await;
    assert!(lines[0].starts_with("* ID ("), "{lines:?}");
    assert!(lines[1].starts_with("a2 OK"), "{lines:?}");
    let ids = upstream.commands_named("ID");
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        assert!(
            id.text.ends_with(" ID (\"name\" \"IMAP client\")\r\n"),
            "{id:?}"
        );
        assert!(!id.text.contains("canary") && !id.text.contains("Thunderbird"));
    }
}

#[tokio::test]
async fn id_is_answered_locally_when_the_provider_lacks_it() {
    let (upstream, relay) = start_imap_pair(ImapScript {
        id: false,
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let lines = c.cmd("a2", "ID (\"name\" \"canary-client\")").await;
    assert_eq!(lines[0], "* ID NIL");
    assert!(lines[1].starts_with("a2 OK"));
    assert!(upstream.commands_named("ID").is_empty());
}

/// APPENDs `SENT_COPY` the way a client does, returns the tagged line.
async fn append(c: &mut ImapClient, tag: &str, non_sync: bool) -> String {
    let marker = if non_sync {
        format!("{{{}+}}", SENT_COPY.len())
    } else {
        format!("{{{}}}", SENT_COPY.len())
    };
    c.send(format!("{tag} APPEND Sent (\\Seen) {marker}\r\n").as_bytes())
        .await;
    if !non_sync {
        let go = c.line().await;
        assert!(go.starts_with("+"), "{go}");
    }
    let mut rest = SENT_COPY.to_vec();
    rest.extend_from_slice(b"\r\n");
    c.send(&rest).await;
    c.until_tagged(tag).await.pop().expect("tagged")
}

fn check_appends(upstream: &ImapUpstream, expected: usize) {
    let appends = upstream.commands_named("APPEND");
    assert_eq!(appends.len(), expected, "{appends:?}");
    for a in &appends {
        assert!(a.text.contains("APPEND Sent (\\Seen) {"), "{a:?}");
        assert_eq!(a.literals.len(), 1);
        // The provider read exactly the announced size and found the
        // command's CRLF right after it (else the next command breaks).
        let announced: usize = a.text[a.text.rfind('{').expect("{") + 1..]
            .trim_end_matches(['\r', '\n', '}', '+'])
            .parse()
            .expect("size");
        assert_eq!(announced, a.literals[0].len());
        assert!(announced < SENT_COPY.len(), "nothing was removed");
        assert_sanitized(&a.literals[0]);
    }
    assert!(
        upstream.violations().is_empty(),
        "{:?}",
        upstream.violations()
    );
}

#[tokio::test]
async fn append_is_sanitized_and_resized_for_a_provider_without_literal_plus() {
    let (upstream, relay) = start_imap_pair(ImapScript {
        literal_plus: false,
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let login = c.login().await;
    assert!(!login.last().expect("l").contains("LITERAL+"));
    let ok = append(&mut c, "a2", false).await;
    assert!(ok.starts_with("a2 OK [APPENDUID 7 1]"), "{ok}");
    // A client that sends LITERAL+ anyway is mediated by the relay.
    let ok = append(&mut c, "a3", true).await;
    assert!(ok.starts_with("a3 OK [APPENDUID 7 2]"), "{ok}");
    assert!(c.tagged("a4", "NOOP").await.starts_with("a4 OK"));
    check_appends(&upstream, 2);
    for a in upstream.commands_named("APPEND") {
        assert!(
            !a.text.contains("+}"),
            "LITERAL+ sent to a provider without it"
        );
    }
}

#[tokio::test]
async fn append_is_sanitized_with_literal_plus() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let ok = append(&mut c, "a2", true).await;
    assert!(ok.starts_with("a2 OK"), "{ok}");
    let ok = append(&mut c, "a3", false).await;
    assert!(ok.starts_with("a3 OK"), "{ok}");
    check_appends(&upstream, 2);
}

#[tokio::test]
async fn multiappend_sanitizes_every_message() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let n = SENT_COPY.len();
    let mut command = format!("a2 APPEND Sent (\\Seen) {{{n}+}}\r\n").into_bytes();
    command.extend_from_slice(SENT_COPY);
    command.extend_from_slice(format!(" () {{{n}+}}\r\n").as_bytes());
    command.extend_from_slice(SENT_COPY);
    command.extend_from_slice(b"\r\n");
    c.send(&command).await;
    let ok = c.until_tagged("a2").await.pop().expect("tagged");
    assert!(ok.starts_with("a2 OK [APPENDUID 7 2]"), "{ok}");
    let appends = upstream.commands_named("APPEND");
    assert_eq!(appends.len(), 1);
    assert_eq!(appends[0].literals.len(), 2);
    for literal in &appends[0].literals {
        assert_sanitized(literal);
    }
}

#[tokio::test]
async fn a_delivered_message_is_appended_byte_for_byte_with_its_date_time() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let n = DELIVERED.len();
    let mut command =
        format!("a2 APPEND Archive (\\Seen) \"03-Nov-2026 10:11:09 +0100\" {{{n}+}}\r\n")
            .into_bytes();
    command.extend_from_slice(DELIVERED);
    command.extend_from_slice(b"\r\n");
    c.send(&command).await;
    let ok = c.until_tagged("a2").await.pop().expect("tagged");
    assert!(ok.starts_with("a2 OK"), "{ok}");
    let appends = upstream.commands_named("APPEND");
    assert_eq!(appends.len(), 1);
    assert!(
        appends[0].text.contains(&format!(
            "APPEND Archive (\\Seen) \"03-Nov-2026 10:11:09 +0100\" {{{n}"
        )),
        "{:?}",
        appends[0]
    );
    assert_eq!(appends[0].literals, vec![DELIVERED.to_vec()]);
}

#[tokio::test]
async fn idle_and_done_are_relayed() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let select = c.cmd("a2", "SELECT INBOX").await;
    assert!(select.last().expect("l").starts_with("a2 OK [READ-WRITE]"));
    c.send(b"a3 IDLE\r\n").await;
    assert_eq!(c.line().await, "+ idling");
    assert_eq!(c.line().await, "* 3 EXISTS");
    c.send(b"DONE\r\n").await;
    assert_eq!(c.line().await, "a3 OK Idle completed");
    let texts: Vec<String> = upstream.commands().into_iter().map(|c| c.text).collect();
    assert!(
        texts.ends_with(&["a3 IDLE\r\n".into(), "DONE\r\n".into()]),
        "{texts:?}"
    );
}

/// Stores `body` at a scripted provider, fetches it through the relay and
/// returns the literal the client received, after checking the lines around it.
async fn fetch_through_relay(body: Vec<u8>) -> Vec<u8> {
    let size = body.len();
    let (_upstream, relay) = start_imap_pair(ImapScript {
        fetch_body: Arc::new(body),
        ..ImapScript::default()
    })
    .await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    c.cmd("a2", "SELECT INBOX").await;
    c.send(b"a3 UID FETCH 1 (BODY.PEEK[])\r\n").await;
    assert_eq!(
        c.line().await,
        format!("* 1 FETCH (UID 1 BODY[] {{{size}}}")
    );
    let got = c.bytes(size).await;
    assert_eq!(c.line().await, ")");
    assert_eq!(c.line().await, "a3 OK Fetch completed");
    got
}

#[tokio::test]
async fn a_20_mb_fetch_literal_is_relayed_intact() {
    let size = 20 * 1024 * 1024;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while body.len() < size {
        // Not one repeated line: a misplaced chunk would show.
        body.extend_from_slice(format!("{i:08} {}\r\n", "x".repeat((i % 61) as usize)).as_bytes());
        i += 1;
    }
    body.truncate(size);
    let expected = ring::digest::digest(&ring::digest::SHA256, &body);
    let got = fetch_through_relay(body).await;
    assert_eq!(
        ring::digest::digest(&ring::digest::SHA256, &got).as_ref(),
        expected.as_ref(),
        "literal changed in transit"
    );
}

#[tokio::test]
async fn fetch_literals_around_the_buffering_threshold_are_relayed_intact() {
    // Small literals are buffered with their response, larger ones streamed:
    // both sides of the switch (8 KiB) and an empty literal.
    for size in [0usize, 1, 8191, 8192, 8193, 70_000] {
        let body: Vec<u8> = (0..size).map(|i| b"abcdefghij\r\n"[i % 12]).collect();
        let got = fetch_through_relay(body.clone()).await;
        assert!(got == body, "literal of {size} bytes changed");
    }
}

#[tokio::test]
async fn unknown_extension_commands_are_forwarded_byte_for_byte() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let lines = c.cmd("a2", "XECHO  two  spaces \"and quotes\"").await;
    assert_eq!(lines[0], "* XECHO two spaces \"and quotes\"");
    assert!(lines[1].starts_with("a2 OK"));
    let echo = upstream.commands_named("XECHO");
    assert_eq!(echo[0].text, "a2 XECHO  two  spaces \"and quotes\"\r\n");
}

#[tokio::test]
async fn malformed_input_gets_bad_and_the_session_continues() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    // Before login.
    c.send(b"\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    c.send(b"a1\r\n").await;
    assert!(c.line().await.starts_with("a1 BAD"));
    c.login().await;
    let before = upstream.commands().len();
    // After login: no command name, a tag with forbidden characters, a
    // broken literal marker.
    c.send(b"a2\r\n").await;
    assert!(c.line().await.starts_with("a2 BAD"));
    c.send(b"(bad) NOOP\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    c.send(b"\x00\x01\x02\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    assert_eq!(
        upstream.commands().len(),
        before,
        "malformed input forwarded"
    );
    assert!(c.tagged("a3", "NOOP").await.starts_with("a3 OK"));
}

#[tokio::test]
async fn oversized_lines_and_literals_are_refused_clearly() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    // A command line longer than max_imap_line_bytes (default 64 KiB).
    let mut long = b"a2 SEARCH TEXT ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70_000));
    long.extend_from_slice(b"\r\n");
    c.send(&long).await;
    let reply = c.line().await;
    assert!(reply.starts_with("a2 BAD [TOOBIG]"), "{reply}");
    // A synchronizing literal above max_message_bytes: refused before any
    // byte of it is sent.
    c.send(b"a3 APPEND Sent {40000000}\r\n").await;
    let reply = c.line().await;
    assert!(reply.starts_with("a3 NO [TOOBIG]"), "{reply}");
    assert!(c.tagged("a4", "NOOP").await.starts_with("a4 OK"));
    assert!(upstream.commands_named("APPEND").is_empty());
    assert!(upstream.commands_named("SEARCH").is_empty());
}

#[tokio::test]
async fn upstream_loss_gives_bye_and_a_closed_connection() {
    let (_upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    c.send(b"a2 XDROP\r\n").await;
    let bye = c.line().await;
    assert!(bye.starts_with("* BYE [UNAVAILABLE]"), "{bye}");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn logout_relays_the_providers_bye_without_a_second_one() {
    let (_upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let lines = c.cmd("a2", "LOGOUT").await;
    assert_eq!(lines, ["* BYE Logging out", "a2 OK Logout completed"]);
    assert_eq!(c.line().await, "<closed>");
}

#[tokio::test]
async fn other_refused_commands_keep_the_session_usable() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    for (tag, command) in [
        ("b1", "STARTTLS"),
        ("b2", "LOGIN other@example.test pw"),
        ("b3", "AUTHENTICATE PLAIN"),
        ("b4", "UNAUTHENTICATE"),
        ("b5", "URLFETCH imap://x"),
    ] {
        let reply = c.tagged(tag, command).await;
        assert!(
            reply.starts_with(&format!("{tag} NO")) || reply.starts_with(&format!("{tag} BAD")),
            "{command}: {reply}"
        );
    }
    // A refused command carrying a literal: the literal is drained.
    c.send(b"b6 REPLACE 1 Sent {5+}\r\nhello\r\n").await;
    assert!(c.line().await.starts_with("b6 "));
    assert!(c.tagged("b7", "NOOP").await.starts_with("b7 OK"));
    for name in ["STARTTLS", "UNAUTHENTICATE", "URLFETCH", "REPLACE"] {
        assert!(upstream.commands_named(name).is_empty(), "{name} forwarded");
    }
    assert!(upstream.commands_named("LOGIN").is_empty());
    assert_eq!(upstream.commands_named("AUTHENTICATE").len(), 1);
}

#[tokio::test]
async fn connections_over_the_cap_get_bye_unavailable() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text =
        imap_relay_config(&upstream, "").replace("[limits]\n", "[limits]\nmax_connections = 1\n");
    let relay = start_relay_with(&text).await;
    let (mut first, greeting) = ImapClient::implicit(&relay).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    // Logged in, the first session is not evictable: the next is refused.
    first.login().await;
    let (_second, refusal) = ImapClient::implicit(&relay).await;
    assert_eq!(
        refusal,
        "* BYE [UNAVAILABLE] Too many connections to the relay, try again later"
    );
}

#[tokio::test]
async fn at_the_cap_the_oldest_unauthenticated_session_makes_room() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text =
        imap_relay_config(&upstream, "").replace("[limits]\n", "[limits]\nmax_connections = 2\n");
    let relay = start_relay_with(&text).await;
    let (mut idler, _) = ImapClient::implicit(&relay).await;
    let (mut younger, _) = ImapClient::implicit(&relay).await;
    // A third client arrives at the cap: the oldest that has not logged in
    // is told why it goes, and the newcomer is served and can log in.
    let (mut newcomer, greeting) = ImapClient::implicit(&relay).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert_eq!(
        idler.line().await,
        "* BYE [UNAVAILABLE] The relay is full and this connection has not logged in; try again later"
    );
    newcomer.login().await;
    // The younger one is still there.
    assert!(younger.tagged("n1", "NOOP").await.starts_with("n1 OK"));
    assert!(
        !relay
            .relay
            .stats()
            .take_report()
            .contains("unauthenticated sessions evicted 0")
    );
}

#[tokio::test]
async fn silence_before_login_gets_bye_not_a_silent_close() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = imap_relay_config(&upstream, "")
        .replace("[limits]\n", "[limits]\ncommand_timeout_secs = 1\n");
    let relay = start_relay_with(&text).await;
    // Silent after the greeting.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    assert_eq!(
        c.line().await,
        "* BYE [UNAVAILABLE] Autologout: idle for too long"
    );
    assert!(c.is_closed().await);
    // Silent in the middle of a literal.
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.send(b"a1 LOGIN {5}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(b"al").await;
    assert_eq!(
        c.line().await,
        "* BYE [UNAVAILABLE] Autologout: idle for too long"
    );
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn shutdown_says_bye_to_a_client_that_has_not_logged_in() {
    let (_upstream, mut relay) = start_imap_pair(ImapScript::default()).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    relay.stop();
    assert_eq!(
        c.line().await,
        "* BYE [UNAVAILABLE] The relay is shutting down, try again later"
    );
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn client_vanishing_mid_append_leaves_no_copy_and_others_are_served() {
    let (upstream, relay) = start_imap_pair(ImapScript::default()).await;
    let (mut gone, _) = ImapClient::implicit(&relay).await;
    gone.login().await;
    gone.send(b"a1 APPEND Drafts {1000}\r\n").await;
    assert!(gone.line().await.starts_with("+ "));
    gone.send(b"Subject: never finished\r\n\r\nhalf").await;
    drop(gone);
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let message = b"Subject: finished\r\n\r\nbody\r\n";
    let mut append = format!("a2 APPEND Drafts {{{}+}}\r\n", message.len()).into_bytes();
    append.extend_from_slice(message);
    append.extend_from_slice(b"\r\n");
    c.send(&append).await;
    let done = c.until_tagged("a2").await;
    assert!(done.last().expect("reply").starts_with("a2 OK"), "{done:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let appends = upstream.commands_named("APPEND");
    assert_eq!(appends.len(), 1, "only the finished APPEND: {appends:?}");
    assert_eq!(appends[0].literals[0], message.to_vec());
}
