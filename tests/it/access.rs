//! Members only, end to end: a login not on the list is refused before any
//! provider is contacted, and with `[access]` every permanent failure gets
//! the relay's one text after the same minimum delay, so that the reply
//! cannot tell a member from a stranger.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mailveil::access::AccessKey;
use mailveil::config::Config;
use mailveil::relay::Relay;

use crate::common::imap::*;
use crate::common::*;

const SECRET: &[u8] = b"collective's access secret, 32 b";
const DELAY: Duration = Duration::from_millis(300);
const SMTP_DENIED: &str = "535 5.7.8 Authentication credentials invalid";
const IMAP_DENIED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";

/// A secret file and a list naming `members`, in a directory the caller
/// keeps; the `[access]` table for them.
fn members_table(members: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("access-key");
    std::fs::write(&secret, SECRET).expect("write secret");
    let key = AccessKey::from_secret(SECRET).expect("key");
    let lines: String = members
        .iter()
        .map(|m| format!("{}\n", key.member_line(m)))
        .collect();
    let list = dir.path().join("members");
    std::fs::write(&list, lines).expect("write list");
    let table = format!(
        "[access]\nlist = \"{}\"\nsecret_file = \"{}\"\n",
        list.display(),
        secret.display()
    );
    (dir, table)
}

fn members_only(text: String, table: &str) -> String {
    format!(
        "{}\n{table}",
        text.replace(
            "[limits]\n",
            &format!("[limits]\nauth_failure_delay_ms = {}\n", DELAY.as_millis())
        )
    )
}

async fn smtp_members_relay(script: UpstreamScript) -> (Upstream, TestRelay, tempfile::TempDir) {
    let upstream = start_upstream(script).await;
    let (dir, table) = members_table(&[USER]);
    let text = members_only(relay_config(&upstream, "implicit", true, ""), &table);
    let relay = start_relay_with(&text).await;
    (upstream, relay, dir)
}

/// The reply to `line` and how long it took.
async fn timed(c: &mut Client, line: &str) -> (String, Duration) {
    let started = Instant::now();
    let reply = c.cmd(line).await;
    (reply, started.elapsed())
}

fn plain(login: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        B64.encode(format!("\0{login}\0{password}"))
    )
}

#[tokio::test]
async fn smtp_stranger_and_refused_member_get_one_text_and_only_members_reach_the_provider() {
    let (upstream, relay, _dir) = smtp_members_relay(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;

    // A stranger with the right password for the provider's only account
    // in another case would still be a stranger: here a new name.
    let (stranger, took) = timed(&mut c, &plain("mallory@example.test", PASSWORD)).await;
    assert_eq!(stranger, SMTP_DENIED);
    assert!(took >= DELAY, "stranger answered after {took:?}");
    assert_eq!(upstream.connections(), 0, "a stranger reached the provider");

    // A member whose password the provider refuses: the same text, not the
    // provider's.
    let (member, took) = timed(&mut c, &plain(USER, "wrong")).await;
    assert_eq!(member, SMTP_DENIED);
    assert!(took >= DELAY, "member answered after {took:?}");
    assert_eq!(upstream.connections(), 1);

    assert_eq!(
        c.cmd(&plain(USER, PASSWORD)).await,
        "235 2.7.0 Authentication successful"
    );
}

#[tokio::test]
async fn smtp_members_only_answers_the_oauth_error_challenge_itself() {
    // A stranger is refused before any provider could send a challenge; a
    // member's expired token must look the same.
    let (upstream, relay, _dir) = smtp_members_relay(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    for (login, mechanism) in [
        (USER, "XOAUTH2"),
        ("mallory@example.test", "XOAUTH2"),
        (USER, "OAUTHBEARER"),
    ] {
        let token = match mechanism {
            "XOAUTH2" => format!("user={login}\x01auth=Bearer expired\x01\x01"),
            _ => format!("n,a={login},\x01auth=Bearer expired\x01\x01"),
        };
        let (reply, took) = timed(&mut c, &format!("AUTH {mechanism} {}", B64.encode(token))).await;
        assert_eq!(reply, SMTP_DENIED, "{mechanism}");
        assert!(took >= DELAY);
    }
    // The provider's challenges were answered here: the empty response,
    // then OAUTHBEARER's abort (base64 of 0x01).
    let raw = String::from_utf8_lossy(&upstream.record.raw.lock().expect("lock")).into_owned();
    assert_eq!(raw.matches("\r\n\r\n").count(), 1, "{raw:?}");
    assert_eq!(raw.matches("\r\nAQ==\r\n").count(), 1, "{raw:?}");
}

#[tokio::test]
async fn imap_members_only_answers_a_missing_mechanism_like_a_wrong_password() {
    // Without [access], a member is told the provider lacks the mechanism
    // (NO [CANNOT]); a stranger, refused before any provider is asked,
    // could not be: with [access] both get the one text, as late.
    let upstream = start_imap_upstream(ImapScript {
        auth_caps: " AUTH=PLAIN",
        ..ImapScript::default()
    })
    .await;
    let (_dir, table) = members_table(&[USER]);
    let relay = start_relay_with(&members_only(imap_relay_config(&upstream, ""), &table)).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    for (i, login) in [USER, "mallory@example.test"].into_iter().enumerate() {
        let token = B64.encode(format!("user={login}\x01auth=Bearer {TOKEN}\x01\x01"));
        let started = Instant::now();
        let reply = c
            .tagged(&format!("X{i}"), &format!("AUTHENTICATE XOAUTH2 {token}"))
            .await;
        assert_eq!(reply, format!("X{i} {IMAP_DENIED}"), "{login}");
        assert!(started.elapsed() >= DELAY);
    }
}

#[tokio::test]
async fn imap_stranger_and_refused_member_get_one_text_and_only_members_reach_the_provider() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let (_dir, table) = members_table(&[USER]);
    let relay = start_relay_with(&members_only(imap_relay_config(&upstream, ""), &table)).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;

    let started = Instant::now();
    let stranger = c
        .tagged("A1", &format!("LOGIN mallory@example.test \"{PASSWORD}\""))
        .await;
    assert_eq!(stranger, format!("A1 {IMAP_DENIED}"));
    assert!(started.elapsed() >= DELAY);
    assert_eq!(upstream.connections(), 0, "a stranger reached the provider");

    let started = Instant::now();
    let member = c.cmd("A2", &format!("LOGIN {USER} \"wrong\"")).await;
    assert_eq!(
        member,
        [format!("A2 {IMAP_DENIED}")],
        "nothing of the provider's"
    );
    assert!(started.elapsed() >= DELAY);
    assert_eq!(upstream.connections(), 1);

    let plain = B64.encode(format!("\0mallory@example.test\0{PASSWORD}"));
    assert_eq!(
        c.tagged("A3", &format!("AUTHENTICATE PLAIN {plain}")).await,
        format!("A3 {IMAP_DENIED}")
    );
    assert!(
        c.login()
            .await
            .last()
            .is_some_and(|l| l.starts_with("L1 OK"))
    );
}

/// Why a relay with the `[access]` table `table` does not start.
async fn start_refusal(table: &str) -> String {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = members_only(relay_config(&upstream, "implicit", true, ""), table);
    let config = Config::parse(&text).expect("valid");
    let identity = mailveil::tls::server_identity(None, None, "localhost").expect("identity");
    match Relay::new(config, identity.config) {
        Ok(_) => panic!("the relay started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_relay_with_a_list_made_under_another_secret_does_not_start() {
    let (dir, table) = members_table(&[USER]);
    std::fs::write(
        dir.path().join("access-key"),
        b"a different secret, 32 bytes....",
    )
    .expect("write");
    let text = start_refusal(&table).await;
    assert!(
        text.contains("members, line 1: made with another access secret"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_credential_names_the_drop_in() {
    let (dir, _) = members_table(&[USER]);
    // The systemd credential the packaged drop-in would deliver; the test
    // runs outside systemd, so there is none.
    let table = format!(
        "[access]\nlist = \"{}\"\nsecret_credential = \"test-absent-credential\"\n",
        dir.path().join("members").display()
    );
    let text = start_refusal(&table).await;
    assert!(
        text.contains("no systemd credential `test-absent-credential`"),
        "{text}"
    );
    assert!(text.contains("/usr/share/mailveil/access.conf"), "{text}");
}

#[tokio::test]
async fn members_only_hides_a_temporary_refusals_words() {
    // A temporary refusal only a member can get: its words ("password
    // transition needed", "too many attempts") are not passed on.
    let (upstream, relay, _dir) = smtp_members_relay(UpstreamScript {
        auth_failure: "454 4.7.0 UPSTREAM-CANARY-TEXT try later",
        ..UpstreamScript::default()
    })
    .await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.cmd(&plain(USER, "wrong")).await,
        "454 4.7.0 Temporary authentication failure: provider unreachable, try again later"
    );
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn strangers_spend_the_providers_failure_budget_as_members_do() {
    // Two failures spend this provider's hourly budget: strangers' count
    // as members' would, so that the budget cannot tell them apart. Then
    // even a member with the right password, from this network (which
    // failed lately), is answered at once without the provider.
    let upstream = start_upstream(UpstreamScript::default()).await;
    let (_dir, table) = members_table(&[USER]);
    let text = members_only(relay_config(&upstream, "implicit", true, ""), &table).replace(
        "[limits]\n",
        "[limits]\nprovider_failures_per_hour = 2\nauth_failures_per_prefix = 100\n",
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    for stranger in ["mallory@example.test", "trudy@example.test"] {
        assert_eq!(c.cmd(&plain(stranger, PASSWORD)).await, SMTP_DENIED);
    }
    assert_eq!(
        c.cmd(&plain(USER, PASSWORD)).await,
        "454 4.7.0 Too many failed logins, try again later"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn while_tor_starts_a_stranger_is_told_what_a_member_with_the_same_route_would_be() {
    // One upstream through the embedded Tor client, on a private network
    // whose authority (a closed loopback port) never answers: Tor stays
    // "starting". A stranger routed there is told to wait, as a member
    // would be; a stranger routed directly is refused, as a member with a
    // wrong password would be.
    let upstream = start_upstream(UpstreamScript::default()).await;
    let (dir, table) = members_table(&[USER]);
    let closed = closed_port().await;
    let id = "0123456789ABCDEF0123456789ABCDEF01234567";
    let text = format!(
        "{}\n[[upstream]]\nname = \"viator\"\n\
         smtp = {{ host = \"127.0.0.1\", port = {port}, tls = \"implicit\" }}\n\
         ca = \"{ca}\"\negress = \"tor\"\ndomains = [\"tor.test\"]\n\
         [egress.tor]\nruntime_dir = \"{runtime}\"\n\
         [egress.tor.testing_network]\nenabled = true\n\
         authorities = [{{ v3ident = \"{id}\", address = \"127.0.0.1:{closed}\" }}]\n\
         fallbacks = [{{ rsa_identity = \"{id}\", ed25519_identity = \"{ed}\", address = \"127.0.0.1:{closed}\" }}]\n",
        members_only(relay_config(&upstream, "implicit", true, ""), &table),
        port = upstream.addr.port(),
        ca = upstream.ca_path.display(),
        runtime = dir.path().display(),
        ed = "A".repeat(43),
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    assert_eq!(
        c.cmd(&plain("mallory@tor.test", PASSWORD)).await,
        "454 4.4.1 Temporary failure: the relay's Tor connection is still starting, try again in a minute"
    );
    assert_eq!(
        c.cmd(&plain("mallory@example.test", PASSWORD)).await,
        SMTP_DENIED
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn smtp_auth_login_asks_a_stranger_the_same_two_questions_as_a_member() {
    // AUTH LOGIN's prompts come from the relay, before any membership or
    // provider: a stranger and a refused member see the same exchange.
    let (_upstream, relay, _dir) = smtp_members_relay(UpstreamScript::default()).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    for (login, password) in [("mallory@example.test", PASSWORD), (USER, "wrong")] {
        assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
        assert_eq!(c.cmd(&B64.encode(login)).await, "334 UGFzc3dvcmQ6");
        let (reply, took) = timed(&mut c, &B64.encode(password)).await;
        assert_eq!(reply, SMTP_DENIED, "{login}");
        assert!(took >= DELAY);
    }
}
