//! How sessions end when a client goes quiet or stops reading: every write
//! has a deadline, before and after login, and every such end is counted
//! as a client timeout. (A literal sent too slowly after login: in
//! admission.rs, with the rate floor.)

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::imap::*;
use crate::common::*;

fn with_limits(text: String, limits: &str) -> String {
    text.replace("[limits]\n", &format!("[limits]\n{limits}\n"))
}

/// The "client timeouts" count of the relay's report (which it resets).
fn client_timeouts(relay: &TestRelay) -> u64 {
    let report = relay.relay.stats().take_report();
    report
        .split(", ")
        .find_map(|part| part.strip_prefix("client timeouts "))
        .and_then(|n| n.parse().ok())
        .expect("a client timeout count")
}

/// Waits up to `limit` for the relay to count `n` client timeouts.
async fn counted(relay: &TestRelay, n: u64, limit: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + limit;
    let mut total = 0;
    while tokio::time::Instant::now() < deadline {
        total += client_timeouts(relay);
        if total >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    total
}

/// Floods `stream` with `command` lines from another task, never reading.
fn flood(mut stream: tokio::net::TcpStream, command: &'static [u8]) {
    tokio::spawn(async move {
        let batch = command.repeat(1000);
        for _ in 0..2000 {
            if stream.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
}

#[tokio::test]
async fn an_idle_imap_session_after_login_is_logged_out_and_counted() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(
        imap_relay_config(&upstream, ""),
        "imap_idle_timeout_secs = 60",
    );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    client_timeouts(&relay);
    // The client's reads give up after 10 s: wait most of the minute first.
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(
        c.line().await,
        "* BYE [UNAVAILABLE] Autologout: idle for too long"
    );
    assert!(c.is_closed_soon().await);
    assert_eq!(counted(&relay, 1, Duration::from_secs(2)).await, 1);
}

#[tokio::test]
async fn an_imap_client_that_stops_reading_after_login_is_cut_and_counted() {
    // 20 MB to FETCH, and the client never reads it: the relay's writes
    // stall, and after the command timeout the session ends.
    let upstream = start_imap_upstream(ImapScript {
        fetch_body: Arc::new(vec![b'x'; 20 << 20]),
        ..ImapScript::default()
    })
    .await;
    let text = with_limits(imap_relay_config(&upstream, ""), "command_timeout_secs = 1");
    let relay = start_relay_with(&text).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    client_timeouts(&relay);
    c.send(b"a2 UID FETCH 1 (BODY.PEEK[])\r\n").await;
    assert_eq!(counted(&relay, 1, Duration::from_secs(20)).await, 1);
}

#[tokio::test]
async fn an_imap_client_that_never_reads_before_login_is_cut_and_counted() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let text = with_limits(imap_relay_config(&upstream, ""), "command_timeout_secs = 1");
    let relay = start_relay_with(&text).await;
    client_timeouts(&relay);
    // The STARTTLS port answers CAPABILITY in plain text; replies pile up.
    let stream = tokio::net::TcpStream::connect(relay.starttls)
        .await
        .expect("connect");
    flood(stream, b"a CAPABILITY\r\n");
    assert_eq!(counted(&relay, 1, Duration::from_secs(20)).await, 1);
}

#[tokio::test]
async fn an_smtp_client_that_never_reads_is_cut_and_counted() {
    let upstream = start_upstream(UpstreamScript::default()).await;
    let text = with_limits(
        relay_config(&upstream, "implicit", true, ""),
        "command_timeout_secs = 1",
    );
    let relay = start_relay_with(&text).await;
    client_timeouts(&relay);
    let mut stream = tokio::net::TcpStream::connect(relay.starttls)
        .await
        .expect("connect");
    let mut greeting = [0u8; 5];
    stream.read_exact(&mut greeting).await.expect("greeting");
    flood(stream, b"NOOP\r\n");
    assert_eq!(counted(&relay, 1, Duration::from_secs(20)).await, 1);
}
