//! Egress through SOCKS5: names go to the proxy unresolved, accounts get
//! distinct credentials, and a proxy that is down means a temporary error and
//! no direct connection, ever.

use std::net::SocketAddr;

use crate::common::imap::{ImapClient, ImapScript, imap_relay_config, start_imap_upstream};
use crate::common::socks::start_socks;
use crate::common::*;

const PROVIDER: &str = "mail.provider.test";
const MESSAGE: &[u8] =
    b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: via proxy\r\n\r\nbody\r\n";

/// The relay config for `upstream`, reached as `host` through the proxy.
fn socks_config(upstream: &Upstream, host: &str, proxy: SocketAddr, isolate: &str) -> String {
    let extra =
        format!("[egress]\nmode = \"socks5\"\nsocks5 = \"{proxy}\"\nisolate = \"{isolate}\"\n");
    relay_config(upstream, "implicit", true, &extra)
        .replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""))
        // The test certificate names localhost: the name checked in TLS is
        // not the name the proxy is asked for, as with an onion service.
        .replace(
            "domains = [",
            "tls_server_name = \"localhost\"\ndomains = [",
        )
}

async fn implicit_upstream() -> Upstream {
    start_upstream(UpstreamScript {
        implicit_tls: true,
        ..UpstreamScript::default()
    })
    .await
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

#[tokio::test]
async fn socks5_gets_the_provider_name_unresolved_and_one_identity_per_account() {
    let upstream = implicit_upstream().await;
    let proxy = start_socks(PROVIDER).await;
    let relay = start_relay_with(&socks_config(&upstream, PROVIDER, proxy.addr, "account")).await;

    // Alice twice (and a message through), then Bob.
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    assert_eq!(
        c.send_message(MESSAGE).await,
        "250 2.0.0 Ok: queued as ABC123"
    );
    let (mut c2, _) = Client::implicit(&relay).await;
    c2.login().await;
    let (mut c3, _) = Client::implicit(&relay).await;
    c3.cmd("EHLO client.invalid").await;
    let r = c3.auth_plain("bob@example.test", "bob-pw").await;
    assert!(r.starts_with("535 "), "the provider's verdict: {r}");

    let requests = proxy.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(r.atyp, 3, "sent as a domain name, not resolved: {r:?}");
        assert_eq!(r.host, PROVIDER);
        assert_eq!(r.port, upstream.addr.port());
    }
    let creds: Vec<_> = requests
        .iter()
        .map(|r| r.credentials.clone().expect("username/password used"))
        .collect();
    assert_eq!(creds[0], creds[1], "one account, one identity");
    assert_ne!(creds[0], creds[2], "two accounts, two identities");
    for (user, pass) in &creds {
        assert!(
            !user.contains("alice") && !user.contains("bob") && !pass.contains("pw"),
            "credentials carry no login: {user} {pass}"
        );
    }
    assert_eq!(
        upstream.connections(),
        3,
        "every connection came through the proxy"
    );
    assert_eq!(upstream.messages().len(), 1);
}

#[tokio::test]
async fn socks5_with_session_isolation_gives_each_session_its_own_identity() {
    let upstream = implicit_upstream().await;
    let proxy = start_socks(PROVIDER).await;
    let relay = start_relay_with(&socks_config(&upstream, PROVIDER, proxy.addr, "session")).await;
    for _ in 0..2 {
        let (mut c, _) = Client::implicit(&relay).await;
        c.login().await;
    }
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(requests[0].credentials, requests[1].credentials);
}

#[tokio::test]
async fn socks5_sends_an_ip_literal_as_an_address() {
    let upstream = implicit_upstream().await;
    let proxy = start_socks(PROVIDER).await;
    let config = socks_config(&upstream, "127.0.0.1", proxy.addr, "account");
    let relay = start_relay_with(&config).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].atyp, requests[0].host.as_str()),
        (1, "127.0.0.1")
    );
}

#[tokio::test]
async fn smtp_with_the_proxy_down_gets_a_temporary_error_and_no_direct_connection() {
    let upstream = implicit_upstream().await;
    let dead = closed_port().await;
    // The provider is an IP literal here: a direct connection would succeed.
    let relay = start_relay_with(&socks_config(&upstream, "127.0.0.1", dead, "account")).await;
    for _ in 0..3 {
        let (mut c, _) = Client::implicit(&relay).await;
        c.cmd("EHLO client.invalid").await;
        let r = c.auth_plain(USER, PASSWORD).await;
        assert!(r.starts_with("454 4."), "temporary: {r}");
    }
    assert_eq!(
        upstream.connections(),
        0,
        "no fallback to a direct connection"
    );
}

#[tokio::test]
async fn socks5_carries_imap_and_fails_closed_when_the_proxy_is_down() {
    let upstream = start_imap_upstream(ImapScript::default()).await;
    let proxy = start_socks(PROVIDER).await;
    let config = |host: &str, proxy: SocketAddr| {
        imap_relay_config(
            &upstream,
            &format!("[egress]\nmode = \"socks5\"\nsocks5 = \"{proxy}\"\n"),
        )
        .replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""))
        .replace(
            "domains = [",
            "tls_server_name = \"localhost\"\ndomains = [",
        )
    };

    let relay = start_relay_with(&config(PROVIDER, proxy.addr)).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    c.login().await;
    let lines = c.cmd("a2", "SELECT INBOX").await;
    assert!(
        lines.last().is_some_and(|l| l.starts_with("a2 OK")),
        "{lines:?}"
    );
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].atyp, requests[0].host.as_str()), (3, PROVIDER));
    assert_eq!(upstream.connections(), 1);

    // An IP literal, so that a direct connection would succeed.
    let relay = start_relay_with(&config("127.0.0.1", closed_port().await)).await;
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let r = c
        .tagged("a1", &format!("LOGIN {USER} \"{PASSWORD}\""))
        .await;
    assert!(r.starts_with("a1 NO [UNAVAILABLE]"), "{r}");
    assert_eq!(upstream.connections(), 1, "no direct connection");
}

#[tokio::test]
async fn check_probe_reaches_the_upstream_through_the_proxy_and_reports_a_dead_one() {
    let upstream = implicit_upstream().await;
    let proxy = start_socks(PROVIDER).await;
    let (ok, out) = probe(&socks_config(&upstream, PROVIDER, proxy.addr, "account")).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("egress: socks5 (isolation per account)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "probe: up smtp {PROVIDER}:{} via socks5: ok in",
            upstream.addr.port()
        )),
        "{out}"
    );
    assert_eq!(proxy.requests().len(), 1);
    assert_eq!(upstream.connections(), 1);

    let (ok, out) = probe(&socks_config(
        &upstream,
        "127.0.0.1",
        closed_port().await,
        "account",
    ))
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("via socks5: FAILED after"), "{out}");
    assert_eq!(upstream.connections(), 1, "no direct connection");
}

#[tokio::test]
async fn a_proxied_connection_gets_the_longer_proxied_connect_timeout() {
    let upstream = implicit_upstream().await;
    // A proxy that accepts and then says nothing, like a Tor circuit that
    // takes its time.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            kept.push(s);
        }
    });
    let text = socks_config(&upstream, "127.0.0.1", proxy, "account")
        .replace("upstream_timeout_secs = 15", "upstream_timeout_secs = 1")
        .replace("[egress]\n", "[egress]\nproxied_connect_timeout_secs = 3\n");
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let started = std::time::Instant::now();
    let r = c.auth_plain(USER, PASSWORD).await;
    let waited = started.elapsed();
    assert!(r.starts_with("454 4."), "temporary: {r}");
    assert!(
        waited >= std::time::Duration::from_millis(2900)
            && waited < std::time::Duration::from_secs(6),
        "waited {waited:?}: the proxied timeout (3 s), not the upstream one (1 s)"
    );
    assert_eq!(upstream.connections(), 0);
    held.abort();
}
