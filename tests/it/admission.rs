//! Admission end to end: per-prefix connection rate and concurrency,
//! lockout after failed logins (answering a right password like a wrong
//! one, without asking the provider), messages per account per hour, the
//! pre-authentication deadline and the transfer rate floor. Clients bind
//! distinct 127.0.0.x source addresses to stand for distinct prefixes.

use std::time::{Duration, Instant};

use crate::common::imap::*;
use crate::common::*;

fn with_limits(text: String, limits: &str) -> String {
    text.replace("[limits]\n", &format!("[limits]\n{limits}\n"))
}

async fn smtp_relay(limits: &str) -> (Upstream, TestRelay) {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = with_limits(relay_config(&upstream, "implicit", true, ""), limits);
    let relay = start_relay_with(&text).await;
    (upstream, relay)
}

/// EHLO, STARTTLS and EHLO again from `source`.
async fn smtp_from(relay: &TestRelay, source: &str) -> Client {
    let (mut c, greeting) = Client::plain_from(relay, source).await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    c.cmd("EHLO client.invalid").await;
    assert!(c.cmd("STARTTLS").await.starts_with("220 "));
    c.upgrade().await;
    c.cmd("EHLO client.invalid").await;
    c
}

fn upstream_auths(upstream: &Upstream) -> usize {
    upstream
        .lines()
        .iter()
        .filter(|l| l.starts_with("AUTH"))
        .count()
}

/// The MAIL commands the provider received.
fn mails_at(upstream: &Upstream) -> usize {
    upstream
        .lines()
        .iter()
        .filter(|l| l.starts_with("MAIL FROM"))
        .count()
}

/// MAIL, RCPT and DATA, each accepted.
async fn begin_data(c: &mut Client) {
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.test>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
}

/// Sends `chunk` every `every_ms` up to `rounds` times, until the relay
/// says something (its reply when it gives up on the client).
async fn trickle_until_cut(
    c: &mut Client,
    chunk: &[u8],
    every_ms: u64,
    rounds: usize,
) -> Option<String> {
    for _ in 0..rounds {
        c.send(chunk).await;
        let wait = Duration::from_millis(every_ms);
        if let Ok(reply) = tokio::time::timeout(wait, c.reply()).await {
            return Some(reply);
        }
    }
    None
}

/// The same inside an IMAP literal: the relay's first line when it cuts.
async fn trickle_literal_until_cut(
    c: &mut ImapClient,
    chunk: &[u8],
    every_ms: u64,
    rounds: usize,
) -> Option<String> {
    for _ in 0..rounds {
        c.send(chunk).await;
        let wait = Duration::from_millis(every_ms);
        if let Ok(line) = tokio::time::timeout(wait, c.line()).await {
            return Some(line);
        }
    }
    None
}

#[tokio::test]
async fn smtp_lockout_answers_every_password_alike_without_asking_the_provider() {
    let (upstream, relay) = smtp_relay(
        "auth_failures_per_login = 2\nauth_failures_per_prefix = 100\nauth_failure_delay_ms = 300",
    )
    .await;
    let mut c = smtp_from(&relay, "127.0.0.11").await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = c.auth_plain(USER, "wrong").await;
        assert!(r.starts_with("535 5.7.8"), "{r}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "failure delay"
        );
    }
    let asked = upstream_auths(&upstream);
    assert_eq!(asked, 3, "the provider judged the first three");
    // Locked now, from any prefix: wrong and right passwords get the same
    // temporary refusal, no sooner than a wrong password's, and the
    // provider is not asked.
    let mut other = smtp_from(&relay, "127.0.0.12").await;
    let started = Instant::now();
    let wrong = other.auth_plain(USER, "wrong again").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let right = other.auth_plain(USER, PASSWORD).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(wrong, right);
    assert_eq!(right, "454 4.7.0 Too many failed logins, try again later");
    assert_eq!(
        upstream_auths(&upstream),
        asked,
        "locked logins never reach the provider"
    );
    // The session is still usable: MAIL needs a login, as before.
    assert!(
        other
            .cmd("MAIL FROM:<a@example.test>")
            .await
            .starts_with("530 ")
    );
    assert!(
        !relay
            .relay
            .stats()
            .take_report()
            .contains("logins locked out 0,")
    );
}

#[tokio::test]
async fn smtp_stuffing_from_one_prefix_leaves_another_prefix_alone() {
    let (upstream, relay) = smtp_relay(
        "auth_failures_per_prefix = 5\nauth_failures_per_login = 100\nauth_failure_delay_ms = 0",
    )
    .await;
    let mut attacker = smtp_from(&relay, "127.0.0.21").await;
    for i in 0..20 {
        let r = attacker
            .auth_plain(&format!("user{i}@example.test"), "guess")
            .await;
        let expected = if i < 6 { "535 " } else { "454 4.7.0 Too many" };
        assert!(r.starts_with(expected), "{i}: {r}");
    }
    // Only the allowance plus the one that tripped the lock went upstream.
    assert_eq!(upstream_auths(&upstream), 6);
    // The attacker's prefix is locked even for the real account.
    assert_eq!(
        attacker.auth_plain(USER, PASSWORD).await,
        "454 4.7.0 Too many failed logins, try again later"
    );
    // An honest user elsewhere logs in and sends.
    let mut honest = smtp_from(&relay, "127.0.0.22").await;
    assert!(honest.auth_plain(USER, PASSWORD).await.starts_with("235 "));
    let r = honest
        .send_message(b"Subject: still works\r\n\r\nhello\r\n")
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(upstream.messages().len(), 1);
}

#[tokio::test]
async fn past_a_few_explained_refusals_a_network_is_closed_without_a_word() {
    use tokio::io::AsyncReadExt;
    let (_upstream, relay) =
        smtp_relay("connections_per_prefix_per_minute = 1\nmax_connections_per_prefix = 100").await;
    let (_kept, greeting) = Client::plain_from(&relay, "127.0.0.35").await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    let mut told = 0;
    let mut silent = 0;
    for _ in 0..16 {
        let mut s = connect_from(relay.starttls, "127.0.0.35").await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        match String::from_utf8_lossy(&got).as_ref() {
            "421 4.7.0 Too many new connections from your network, try again later\r\n" => {
                told += 1
            }
            "" => silent += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    // Ten a minute are told why; the rest are closed before any reply (on
    // an implicit-TLS port: before any handshake).
    assert_eq!((told, silent), (10, 6));
}

#[tokio::test]
async fn connection_rate_and_concurrency_per_prefix() {
    let (_upstream, relay) =
        smtp_relay("connections_per_prefix_per_minute = 3\nmax_connections_per_prefix = 100").await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        let (c, greeting) = Client::plain_from(&relay, "127.0.0.31").await;
        assert_eq!(greeting, "220 relay.test ESMTP");
        kept.push(c);
    }
    let (mut c, refusal) = Client::plain_from(&relay, "127.0.0.31").await;
    assert_eq!(
        refusal,
        "421 4.7.0 Too many new connections from your network, try again later"
    );
    assert!(c.is_closed().await);
    let (_c, greeting) = Client::plain_from(&relay, "127.0.0.32").await;
    assert_eq!(greeting, "220 relay.test ESMTP", "another prefix is served");

    let (_upstream, relay) =
        smtp_relay("connections_per_prefix_per_minute = 1000\nmax_connections_per_prefix = 2")
            .await;
    let (first, _) = Client::plain_from(&relay, "127.0.0.33").await;
    let (_second, _) = Client::plain_from(&relay, "127.0.0.33").await;
    let (_, refusal) = Client::plain_from(&relay, "127.0.0.33").await;
    assert_eq!(
        refusal,
        "421 4.7.0 Too many open connections from your network, try again later"
    );
    let (_, greeting) = Client::plain_from(&relay, "127.0.0.34").await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    // A place freed is a place again.
    drop(first);
    let mut served = false;
    for _ in 0..50 {
        let (_c, greeting) = Client::plain_from(&relay, "127.0.0.33").await;
        if greeting == "220 relay.test ESMTP" {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    let report = relay.relay.stats().take_report();
    assert!(
        !report.contains("connections refused per prefix 0,"),
        "{report}"
    );
}

#[tokio::test]
async fn messages_per_account_per_hour() {
    let (upstream, relay) = smtp_relay("messages_per_account_per_hour = 2").await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    for _ in 0..2 {
        let r = c.send_message(b"Subject: x\r\n\r\nbody\r\n").await;
        assert!(r.starts_with("250 "), "{r}");
    }
    // The allowance is the account's, not the session's.
    let (mut d, _) = Client::implicit(&relay).await;
    d.login().await;
    assert_eq!(
        d.cmd("MAIL FROM:<alice@example.test>").await,
        "451 4.7.1 Too many messages from this account this hour, try again later"
    );
    assert_eq!(upstream.messages().len(), 2);
    // Refused before the provider heard of it.
    assert_eq!(mails_at(&upstream), 2);
}

#[tokio::test]
async fn no_login_within_the_preauth_deadline_gets_421() {
    let (_upstream, relay) =
        smtp_relay("preauth_timeout_secs = 5\ncommand_timeout_secs = 60").await;
    let (mut c, _) = Client::implicit(&relay).await;
    let started = Instant::now();
    // Busy but never logging in: NOOPs keep the command timeout at bay.
    let reply = loop {
        let r = c.cmd("NOOP").await;
        if !r.starts_with("250") {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never cut off");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        reply,
        "421 4.4.2 Took too long to log in, closing connection"
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn a_message_trickled_below_the_rate_floor_is_cut_and_never_stored() {
    let (upstream, relay) =
        smtp_relay("command_timeout_secs = 1\nmin_transfer_bytes_per_sec = 1000").await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    begin_data(&mut c).await;
    // 20 bytes every 400 ms, each gap under the command timeout, the
    // average far under the floor.
    let started = Instant::now();
    let cut = trickle_until_cut(&mut c, b"X-Slow: trickling..\r\n", 400, 40).await;
    assert_eq!(
        cut.as_deref(),
        Some("421 4.4.2 Message data arriving too slowly, closing connection"),
        "after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(upstream.messages().is_empty());
    // Others are served.
    let (mut d, _) = Client::implicit(&relay).await;
    d.login().await;
    assert!(
        d.send_message(b"Subject: ok\r\n\r\nbody\r\n")
            .await
            .starts_with("250 ")
    );
}

#[tokio::test]
async fn a_steady_slow_message_above_the_floor_gets_through() {
    let (upstream, relay) =
        smtp_relay("command_timeout_secs = 1\nmin_transfer_bytes_per_sec = 100").await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<bob@example.test>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: slow\r\n\r\n").await;
    // About 200 bytes a second for 3 seconds: above the floor, and longer
    // than the command timeout in total.
    for _ in 0..15 {
        c.send(b"slow but steady line, 40 bytes long..\r\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.send(b".\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(upstream.messages().len(), 1);
}

async fn imap_from(relay: &TestRelay, source: &str) -> ImapClient {
    let (mut c, greeting) = ImapClient::plain_from(relay, source).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(c.tagged("s", "STARTTLS").await.starts_with("s OK"));
    c.upgrade().await;
    c
}

#[tokio::test]
async fn imap_lockout_answers_every_password_alike_without_asking_the_provider() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(
        imap_relay_config(&upstream, ""),
        "auth_failures_per_prefix = 3\nauth_failures_per_login = 100\nauth_failure_delay_ms = 200",
    );
    let relay = start_relay_with(&text).await;
    let mut c = imap_from(&relay, "127.0.0.41").await;
    for i in 0..4 {
        let r = c
            .tagged(
                &format!("a{i}"),
                &format!("LOGIN user{i}@example.test wrong"),
            )
            .await;
        assert!(r.contains("NO [AUTHENTICATIONFAILED]"), "{r}");
    }
    let asked =
        || upstream.commands_named("LOGIN").len() + upstream.commands_named("AUTHENTICATE").len();
    assert_eq!(asked(), 4);
    let started = Instant::now();
    let wrong = c.tagged("w", "LOGIN alice@example.test wrong").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    let right = c.tagged("w", &format!("LOGIN {USER} \"{PASSWORD}\"")).await;
    assert_eq!(wrong, right);
    assert_eq!(
        right,
        "w NO [UNAVAILABLE] Too many failed logins, try again later"
    );
    assert_eq!(asked(), 4, "locked logins never reach the provider");
    // Another prefix logs in.
    let mut honest = imap_from(&relay, "127.0.0.42").await;
    honest.login().await;
}

#[tokio::test]
async fn imap_preauth_deadline_and_prefix_refusal() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(
        imap_relay_config(&upstream, ""),
        "preauth_timeout_secs = 5\nmax_connections_per_prefix = 1",
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = ImapClient::plain_from(&relay, "127.0.0.51").await;
    let (_, refusal) = ImapClient::plain_from(&relay, "127.0.0.51").await;
    assert_eq!(
        refusal,
        "* BYE [UNAVAILABLE] Too many open connections from your network, try again later"
    );
    let started = Instant::now();
    let last = loop {
        let lines = c.cmd("n", "NOOP").await;
        if !lines.last().is_some_and(|l| l.starts_with("n OK")) {
            break lines.first().cloned().unwrap_or_default();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never cut off");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(last, "* BYE [UNAVAILABLE] Took too long to log in");
}

/// An IMAP relay with a floor of 1000 bytes a second and a command
/// timeout of `timeout_secs`, and a client logged in through it.
async fn imap_logged_in_with_floor(timeout_secs: u32) -> (ImapUpstream, TestRelay, ImapClient) {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(
        imap_relay_config(&upstream, ""),
        &format!("command_timeout_secs = {timeout_secs}\nmin_transfer_bytes_per_sec = 1000"),
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    (upstream, relay, c)
}

#[tokio::test]
async fn an_imap_literal_trickled_below_the_rate_floor_is_cut_and_never_stored() {
    let (upstream, relay, mut c) = imap_logged_in_with_floor(1).await;
    // 1000 bytes may take 1 s of grace plus 1 s; 10 bytes every 200 ms
    // would take 20 s.
    c.send(b"a1 APPEND Drafts {1000}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    let started = Instant::now();
    let cut = trickle_literal_until_cut(&mut c, b"X-Slow: 1\r\n", 200, 50).await;
    assert_eq!(
        cut.as_deref(),
        Some("* BYE [UNAVAILABLE] Literal data arriving too slowly"),
        "after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = relay.relay.stats().take_report();
    assert!(report.contains("client timeouts 1,"), "counted: {report}");
    assert!(
        upstream
            .commands_named("APPEND")
            .iter()
            .all(|a| a.literals.iter().all(|l| l.len() < 1000)),
        "no whole message reached the provider"
    );
    // Others are served.
    let (mut d, _) = ImapClient::implicit(&relay).await;
    d.login().await;
}

#[tokio::test]
async fn a_connection_stuck_before_its_tls_handshake_is_evicted_for_a_newcomer() {
    let (upstream, relay) = smtp_relay("max_connections = 1").await;
    // Connects to the implicit-TLS port and never says hello.
    let mut stuck = tokio::net::TcpStream::connect(relay.implicit)
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (mut c, greeting) = Client::implicit(&relay).await;
    assert_eq!(greeting, "220 relay.test ESMTP");
    assert!(started.elapsed() < Duration::from_secs(3));
    c.login().await;
    assert!(
        c.send_message(b"Subject: in\r\n\r\nbody\r\n")
            .await
            .starts_with("250 ")
    );
    assert_eq!(upstream.messages().len(), 1);
    // The stuck one was closed (no TLS yet, so nothing could be said).
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read(&mut stuck, &mut buf),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test]
async fn a_lockout_ends_even_while_a_client_keeps_retrying() {
    let (upstream, relay) = smtp_relay(
        "auth_failures_per_login = 1\nauth_failures_per_prefix = 100\nauth_lockout_secs = 2\n\
         auth_failure_window_secs = 1\nauth_failure_delay_ms = 0",
    )
    .await;
    let mut c = smtp_from(&relay, "127.0.0.61").await;
    for _ in 0..2 {
        assert!(c.auth_plain(USER, "wrong").await.starts_with("535 "));
    }
    // Locked; the victim's own client retries with the right password
    // every 200 ms. Each retry is refused without being charged, so the
    // lockout ends on time and the right password then works.
    let started = Instant::now();
    let mut in_after = None;
    while started.elapsed() < Duration::from_secs(6) {
        let r = c.auth_plain(USER, PASSWORD).await;
        if r.starts_with("235 ") {
            in_after = Some(started.elapsed());
            break;
        }
        assert_eq!(r, "454 4.7.0 Too many failed logins, try again later");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let in_after = in_after.expect("still locked after 6 s of retries");
    assert!(in_after >= Duration::from_millis(1500), "{in_after:?}");
    assert_eq!(
        upstream
            .lines()
            .iter()
            .filter(|l| l.starts_with("AUTH"))
            .count(),
        3,
        "two refusals and the final login reached the provider"
    );
}

#[tokio::test]
async fn a_login_waiting_for_its_networks_turn_ends_at_the_preauth_deadline() {
    // The provider never answers AUTH: four logins from one network hold
    // the network's turns (for the upstream timeout, 60 s); a fifth waits.
    let upstream = start_upstream(UpstreamScript {
        stall_at: Some("AUTH"),
        ..UpstreamScript::default()
    })
    .await;
    let text = with_limits(
        relay_config(&upstream, "implicit", true, ""),
        "preauth_timeout_secs = 5\ncommand_timeout_secs = 60",
    )
    .replace(
        "upstream_timeout_secs = 15\n",
        "upstream_timeout_secs = 60\n",
    );
    let relay = start_relay_with(&text).await;
    let ir = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("\0{USER}\0{PASSWORD}"),
    );
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut c = smtp_from(&relay, "127.0.0.31").await;
        c.send(format!("AUTH PLAIN {ir}\r\n").as_bytes()).await;
        holders.push(c);
    }
    // Let the four take their turns before the fifth asks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waiting = smtp_from(&relay, "127.0.0.31").await;
    let started = Instant::now();
    let reply = waiting.auth_plain(USER, PASSWORD).await;
    // It is told it took too long when its deadline (5 s after it
    // connected) passes, not when a turn frees up 60 s later.
    assert_eq!(
        reply,
        "421 4.4.2 Took too long to log in, closing connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(waiting.is_closed().await);
    // The provider saw four logins: the fifth never reached it.
    assert_eq!(upstream_auths(&upstream), 4);
    drop(holders);
}

#[tokio::test]
async fn an_imap_literal_s_fast_burst_buys_no_later_trickle() {
    let (_upstream, _relay, mut c) = imap_logged_in_with_floor(2).await;
    // A 600 kB literal, 500 kB of it at once: counted from its start,
    // that would allow 2 s + 600 s.
    c.send(b"a1 APPEND Drafts {600000}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(b"Subject: big\r\n\r\n").await;
    let line = format!("{}\r\n", "x".repeat(98));
    c.send(line.repeat(500_000 / line.len()).as_bytes()).await;
    // Then one byte every 1.5 s, each gap under the command timeout.
    let started = Instant::now();
    let cut = trickle_literal_until_cut(&mut c, b"X", 1500, 20).await;
    assert_eq!(
        cut.as_deref(),
        Some("* BYE [UNAVAILABLE] Literal data arriving too slowly"),
        "after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_fast_burst_buys_no_later_trickle_the_floor_is_a_sliding_window() {
    let (upstream, relay) =
        smtp_relay("command_timeout_secs = 2\nmin_transfer_bytes_per_sec = 1000").await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    begin_data(&mut c).await;
    // 500 kB at once: on an average since MAIL that would buy 500 s.
    let line = format!("X-Fill: {}\r\n", "x".repeat(90));
    c.send(line.repeat(500_000 / line.len()).as_bytes()).await;
    // Then one byte every 1.5 s, each gap under the command timeout.
    let started = Instant::now();
    let cut = trickle_until_cut(&mut c, b"X", 1500, 20).await;
    assert_eq!(
        cut.as_deref(),
        Some("421 4.4.2 Message data arriving too slowly, closing connection"),
        "after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(upstream.messages().is_empty());
}

/// MAIL, RCPT and DATA, then `bytes` of a message without its end.
async fn start_message(c: &mut Client, bytes: usize) {
    begin_data(c).await;
    let line = format!("X-Fill: {}\r\n", "x".repeat(90));
    c.send(b"Subject: big\r\n\r\n").await;
    c.send(line.repeat(bytes / line.len()).as_bytes()).await;
}

#[tokio::test]
async fn messages_held_at_once_share_one_budget_and_the_excess_gets_452() {
    let (upstream, relay) =
        smtp_relay("max_buffered_message_bytes = 2097152\nmax_transactions_per_account = 10").await;
    // Two messages of 900 kB in progress, each in a buffer grown to 1 MiB,
    // hold the two MiB.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut c, _) = Client::implicit(&relay).await;
        c.login().await;
        start_message(&mut c, 900_000).await;
        held.push(c);
    }
    let (mut late, _) = Client::implicit(&relay).await;
    late.login().await;
    // A declared size that can't fit is deferred at MAIL (once the relay
    // has read what the others sent).
    let mut reply = String::new();
    for _ in 0..50 {
        reply = late.cmd("MAIL FROM:<alice@example.test> SIZE=1000").await;
        if !reply.starts_with("250") {
            break;
        }
        assert!(late.cmd("RSET").await.starts_with("250"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reply,
        "452 4.3.1 The relay is holding all the mail it can right now; try again later"
    );
    // Undeclared, it is deferred at its end, and the provider never gets it.
    let r = late.send_message(b"Subject: late\r\n\r\nbody\r\n").await;
    assert_eq!(
        r,
        "452 4.3.1 The relay is holding all the mail it can right now; try again later"
    );
    assert!(upstream.messages().is_empty());
    // A message that ends gives its room back.
    let first = &mut held[0];
    first.send(b"\r\n.\r\n").await;
    assert!(first.reply().await.starts_with("250 "));
    let r = late.send_message(b"Subject: late\r\n\r\nbody\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(upstream.messages().len(), 2);
}

#[tokio::test]
async fn an_account_has_at_most_its_transactions_open_over_all_its_sessions() {
    let (upstream, relay) = smtp_relay("max_transactions_per_account = 1").await;
    let (mut one, _) = Client::implicit(&relay).await;
    one.login().await;
    let mut two = smtp_from(&relay, "127.0.0.9").await;
    two.login().await;
    assert!(
        one.cmd("MAIL FROM:<alice@example.test>")
            .await
            .starts_with("250")
    );
    assert_eq!(
        two.cmd("MAIL FROM:<alice@example.test>").await,
        "452 4.3.1 Too many messages in progress for this account; try again later"
    );
    assert!(one.cmd("RSET").await.starts_with("250"));
    let r = two.send_message(b"Subject: x\r\n\r\nbody\r\n").await;
    assert!(r.starts_with("250 "), "{r}");
    // Refused before the provider heard of it.
    assert_eq!(mails_at(&upstream), 2);
}

#[tokio::test]
async fn an_imap_login_waiting_for_its_networks_turn_ends_at_the_preauth_deadline() {
    // A provider that accepts connections and never speaks: four logins
    // from one network hold its turns (for the upstream timeout, 60 s).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            kept.push(s);
        }
    });
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(
        imap_relay_config(&upstream, ""),
        "preauth_timeout_secs = 5\ncommand_timeout_secs = 60",
    )
    .replace(
        &format!("port = {}", upstream.addr.port()),
        &format!("port = {silent_port}"),
    )
    .replace(
        "upstream_timeout_secs = 15\n",
        "upstream_timeout_secs = 60\n",
    );
    let relay = start_relay_with(&text).await;
    let mut holders = Vec::new();
    for i in 0..4 {
        let mut c = imap_from(&relay, "127.0.0.32").await;
        c.send(format!("h{i} LOGIN {USER} \"{PASSWORD}\"\r\n").as_bytes())
            .await;
        holders.push(c);
    }
    // Let the four take their turns before the fifth asks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waiting = imap_from(&relay, "127.0.0.32").await;
    let started = Instant::now();
    waiting
        .send(format!("w LOGIN {USER} \"{PASSWORD}\"\r\n").as_bytes())
        .await;
    // Told it took too long when its deadline (5 s after it connected)
    // passes, not when a turn frees up 60 s later.
    assert_eq!(
        waiting.line().await,
        "* BYE [UNAVAILABLE] Took too long to log in"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(waiting.is_closed().await);
    drop(holders);
    held.abort();
}
