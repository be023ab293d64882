//! Several endpoints per protocol, bare-name logins and pinned keys
//! (issue 18), against scripted providers over real TCP and TLS.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::common::imap::{ImapClient, ImapScript, ImapUpstream, start_imap_upstream_as};
use crate::common::socks::start_socks_stalling;
use crate::common::{
    Client, Identity, PASSWORD, TOKEN, USER, Upstream, UpstreamScript, closed_port, probe,
    start_relay_with, start_upstream_as,
};

/// `{ host = "127.0.0.1", port = P, tls = "implicit" }`.
fn at(port: u16) -> String {
    format!("{{ host = \"127.0.0.1\", port = {port}, tls = \"implicit\" }}")
}

/// A relay whose one upstream has `endpoints` for `protocol`, trusted as
/// `trust` says (a `ca = …` or `pin_sha256 = …` line, or more).
fn config(protocol: &str, endpoints: &str, trust: &str, extra: &str) -> String {
    format!(
        r#"
[server]
hostname = "relay.test"

[[listen]]
protocol = "{protocol}"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "{protocol}"
address = "127.0.0.1:0"
tls = "starttls"

[[upstream]]
name = "up"
{protocol} = [{endpoints}]
{trust}
domains = ["example.test"]

[limits]
upstream_timeout_secs = 15
{egress}{extra}
"#,
        egress = crate::common::default_egress(extra),
    )
}

fn ca_line(path: &std::path::Path) -> String {
    format!("ca = \"{}\"", path.display())
}

fn certificate(path: &std::path::Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("certificate")
}

fn pin_line(path: &std::path::Path) -> String {
    format!(
        "pin_sha256 = [\"{}\"]",
        mailveil::tls::pin_of(&certificate(path)).expect("pin")
    )
}

async fn smtp_upstream(identity: Identity) -> Upstream {
    start_upstream_as(UpstreamScript::default(), identity).await
}

async fn imap_upstream(identity: Identity) -> ImapUpstream {
    start_imap_upstream_as(ImapScript::default(), identity).await
}

/// A provider that knows its users by bare name.
async fn bare_name_imap_upstream() -> ImapUpstream {
    let script = ImapScript {
        user: "alice",
        ..ImapScript::default()
    };
    start_imap_upstream_as(script, Identity::Leaf).await
}

/// Logs in over IMAP as `login`; the tagged reply.
async fn imap_login(relay: &crate::common::TestRelay, login: &str) -> String {
    let (mut c, _) = ImapClient::implicit(relay).await;
    c.tagged("L1", &format!("LOGIN {login} \"{PASSWORD}\""))
        .await
}

#[tokio::test]
async fn a_closed_first_endpoint_falls_through_to_the_next() {
    let up = smtp_upstream(Identity::Leaf).await;
    let endpoints = format!("{}, {}", at(closed_port().await), at(up.addr.port()));
    let relay = start_relay_with(&config("smtp", &endpoints, &ca_line(&up.ca_path), "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let r = c
        .send_message(b"From: alice@example.test\r\nSubject: x\r\n\r\nbody\r\n")
        .await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(up.messages().len(), 1);

    let up = imap_upstream(Identity::Leaf).await;
    let endpoints = format!("{}, {}", at(closed_port().await), at(up.addr.port()));
    let relay = start_relay_with(&config("imap", &endpoints, &ca_line(&up.ca_path), "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 OK"), "{r}");
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_failed_certificate_is_the_answer_and_the_next_endpoint_is_never_tried() {
    // The first endpoint's certificate is signed by nobody the relay
    // trusts (the upstream's `ca` is the second one's).
    let stranger = smtp_upstream(Identity::Leaf).await;
    let good = smtp_upstream(Identity::Leaf).await;
    let endpoints = format!("{}, {}", at(stranger.addr.port()), at(good.addr.port()));
    let relay = start_relay_with(&config("smtp", &endpoints, &ca_line(&good.ca_path), "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let r = c.auth_plain(USER, PASSWORD).await;
    assert!(r.starts_with("454 4."), "temporary: {r}");
    assert!(!r.contains("127.0.0.1"), "no host named: {r}");
    assert_eq!(stranger.connections(), 1);
    assert_eq!(good.connections(), 0, "a TLS failure must not fall through");
    let report = relay.relay.stats().take_report();
    assert!(report.contains("provider TLS failed 1,"), "{report}");
    assert!(report.contains("provider unreachable 0,"), "{report}");

    let stranger = imap_upstream(Identity::Leaf).await;
    let good = imap_upstream(Identity::Leaf).await;
    let endpoints = format!("{}, {}", at(stranger.addr.port()), at(good.addr.port()));
    let relay = start_relay_with(&config("imap", &endpoints, &ca_line(&good.ca_path), "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
    assert_eq!(good.connections(), 0, "a TLS failure must not fall through");
}

/// A login through a SOCKS5 proxy that never answers for `blocked.test`,
/// as when a port is blocked by dropping packets, to an upstream with
/// `endpoints` and a connect budget of `budget_secs`: the reply, how long it
/// took and the hosts the proxy was asked for.
async fn login_past_a_dropping_path(
    endpoints: &str,
    trust: &str,
    budget_secs: u64,
) -> (String, Duration, Vec<String>) {
    let proxy = start_socks_stalling("unused.test", Some("blocked.test")).await;
    let egress = format!(
        "[egress]\nmode = \"socks5\"\nsocks5 = \"{}\"\nproxied_connect_timeout_secs = {budget_secs}\n",
        proxy.addr
    );
    let text = config("smtp", endpoints, trust, &egress)
        .replace("upstream_timeout_secs = 15", "upstream_timeout_secs = 1")
        .replace(
            "domains = [",
            "tls_server_name = \"localhost\"\ndomains = [",
        );
    let relay = start_relay_with(&text).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let started = Instant::now();
    let r = c.auth_plain(USER, PASSWORD).await;
    let waited = started.elapsed();
    let hosts = proxy.requests().into_iter().map(|r| r.host).collect();
    (r, waited, hosts)
}

const BLOCKED: &str = "{ host = \"blocked.test\", port = 465, tls = \"implicit\" }";

#[tokio::test]
async fn a_dropped_first_endpoint_leaves_the_next_its_share_of_the_budget() {
    // Budget 4 s for two endpoints: the first may take 2 s, then the second
    // is served.
    let up = smtp_upstream(Identity::Leaf).await;
    let endpoints = format!("{BLOCKED}, {}", at(up.addr.port()));
    let (r, waited, hosts) = login_past_a_dropping_path(&endpoints, &ca_line(&up.ca_path), 4).await;
    assert!(r.starts_with("235 "), "served by the second endpoint: {r}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_millis(3900),
        "waited {waited:?}: half the 4 s budget on the first endpoint"
    );
    assert_eq!(hosts, ["blocked.test", "127.0.0.1"]);
}

#[tokio::test]
async fn an_endpoint_the_proxy_cannot_reach_falls_through_to_the_next() {
    // The proxy answers "host unreachable" (a Tor daemon says "general
    // failure" when no exit allows the port; both are about the endpoint).
    let up = smtp_upstream(Identity::Leaf).await;
    let endpoints = format!(
        "{{ host = \"nowhere.test\", port = 465, tls = \"implicit\" }}, {}",
        at(up.addr.port())
    );
    let (r, waited, hosts) = login_past_a_dropping_path(&endpoints, &ca_line(&up.ca_path), 4).await;
    assert!(r.starts_with("235 "), "served by the second endpoint: {r}");
    assert!(
        waited < Duration::from_secs(2),
        "at once, not after a timeout: {waited:?}"
    );
    assert_eq!(hosts, ["nowhere.test", "127.0.0.1"]);
}

#[tokio::test]
async fn every_endpoint_dropped_answers_within_the_one_budget() {
    let (r, waited, hosts) = login_past_a_dropping_path(&[BLOCKED; 3].join(", "), "", 3).await;
    assert!(r.starts_with("454 4."), "temporary: {r}");
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_millis(4500),
        "waited {waited:?}: one 3 s budget for all three, not 3 s each"
    );
    assert_eq!(hosts.len(), 3);
}

#[tokio::test]
async fn a_self_signed_ca_certificate_is_refused_as_a_ca_and_served_pinned() {
    let up = imap_upstream(Identity::CaTrue).await;
    let endpoint = at(up.addr.port());
    // As `ca`, the usual openssl recipe's certificate cannot be used.
    let relay = start_relay_with(&config("imap", &endpoint, &ca_line(&up.ca_path), "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
    // Pinned, it is.
    let relay = start_relay_with(&config("imap", &endpoint, &pin_line(&up.ca_path), "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 OK"), "{r}");
    assert_eq!(up.logins().len(), 1);
    // Another key's pin: refused, and the provider never sees a login.
    let other = imap_upstream(Identity::CaTrue).await;
    let relay = start_relay_with(&config("imap", &endpoint, &pin_line(&other.ca_path), "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
    assert_eq!(up.logins().len(), 1);
    // The name is still checked, unless told not to.
    let renamed = format!(
        "{}\ntls_server_name = \"mail.elsewhere.test\"",
        pin_line(&up.ca_path)
    );
    let relay = start_relay_with(&config("imap", &endpoint, &renamed, "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
    let unnamed = format!("{renamed}\npin_check_name = false");
    let relay = start_relay_with(&config("imap", &endpoint, &unnamed, "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 OK"), "{r}");
    assert_eq!(up.logins().len(), 2);

    // SMTP the same way.
    let up = smtp_upstream(Identity::CaTrue).await;
    let endpoint = at(up.addr.port());
    let relay = start_relay_with(&config("smtp", &endpoint, &pin_line(&up.ca_path), "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.login().await;
    let relay = start_relay_with(&config("smtp", &endpoint, &ca_line(&up.ca_path), "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    let r = c.auth_plain(USER, PASSWORD).await;
    assert!(r.starts_with("454 4."), "{r}");
}

#[tokio::test]
async fn a_localpart_provider_sees_the_bare_name_and_the_relay_routes_by_address() {
    let up = bare_name_imap_upstream().await;
    let trust = format!("{}\nlogin = \"localpart\"", ca_line(&up.ca_path));
    let relay = start_relay_with(&config("imap", &at(up.addr.port()), &trust, "")).await;
    let r = imap_login(&relay, USER).await;
    assert!(r.starts_with("L1 OK"), "{r}");
    let (mut c, _) = ImapClient::implicit(&relay).await;
    let plain = B64.encode(format!("\0{USER}\0{PASSWORD}"));
    let r = c.tagged("A1", &format!("AUTHENTICATE PLAIN {plain}")).await;
    assert!(r.starts_with("A1 OK"), "{r}");
    for (mechanism, message) in [
        (
            "XOAUTH2",
            format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01"),
        ),
        (
            "OAUTHBEARER",
            format!("n,a={USER},\x01host=relay.test\x01port=993\x01auth=Bearer {TOKEN}\x01\x01"),
        ),
    ] {
        let (mut c, _) = ImapClient::implicit(&relay).await;
        let ir = B64.encode(message);
        let r = c
            .tagged("A1", &format!("AUTHENTICATE {mechanism} {ir}"))
            .await;
        assert!(r.starts_with("A1 OK"), "{mechanism}: {r}");
    }
    let expected: Vec<(String, String)> = ["PLAIN", "PLAIN", "XOAUTH2", "OAUTHBEARER"]
        .iter()
        .map(|how| (how.to_string(), "alice".to_string()))
        .collect();
    assert_eq!(up.logins(), expected);
    // Routing still needs the whole address: a bare name has no route here.
    let r = imap_login(&relay, "alice").await;
    assert!(r.starts_with("L1 NO"), "{r}");
    assert_eq!(up.connections(), 4);

    let up = smtp_upstream(Identity::Leaf).await;
    let trust = format!("{}\nlogin = \"localpart\"", ca_line(&up.ca_path));
    let relay = start_relay_with(&config("smtp", &at(up.addr.port()), &trust, "")).await;
    let (mut c, _) = Client::implicit(&relay).await;
    c.cmd("EHLO client.invalid").await;
    // The scripted provider knows only the whole address, so it refuses:
    // what matters is what it was shown.
    let r = c.auth_plain(USER, PASSWORD).await;
    assert!(r.starts_with("535 "), "{r}");
    let shown: Vec<_> = up
        .lines()
        .into_iter()
        .filter_map(|l| l.strip_prefix("AUTH PLAIN ").map(str::to_string))
        .map(|ir| B64.decode(ir.trim()).expect("base64"))
        .collect();
    assert_eq!(shown, [format!("\0alice\0{PASSWORD}").into_bytes()]);
}

#[tokio::test]
async fn probe_prints_each_endpoints_pin_and_why_it_failed() {
    let ca = smtp_upstream(Identity::CaTrue).await;
    let good = smtp_upstream(Identity::Leaf).await;
    let closed = closed_port().await;
    let pin = mailveil::tls::pin_of(&certificate(&ca.ca_path)).expect("pin");
    let text = format!(
        "{}\n[[upstream]]\nname = \"pinned\"\nsmtp = {}\n{}\ndomains = [\"pinned.test\"]\n\
         [[upstream]]\nname = \"renamed\"\nsmtp = {1}\n{2}\ntls_server_name = \"mail.elsewhere.test\"\n\
         domains = [\"renamed.test\"]\n",
        config(
            "smtp",
            &format!(
                "{}, {}, {}",
                at(ca.addr.port()),
                at(good.addr.port()),
                at(closed)
            ),
            &ca_line(&good.ca_path),
            "",
        ),
        at(ca.addr.port()),
        pin_line(&ca.ca_path),
    );
    let (ok, out) = probe(&text).await;
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at_line = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {out}"))
    };
    let first = at_line(&format!("up smtp[0] 127.0.0.1:{}", ca.addr.port()));
    assert!(
        lines[first].contains("FAILED") && lines[first].contains("a CA certificate used as"),
        "{out}"
    );
    assert_eq!(
        lines[first + 1],
        format!("probe:   certificate key pin_sha256 = \"{pin}\"")
    );
    assert!(
        lines[first + 2].contains(&format!("pin it: pin_sha256 = [\"{pin}\"]")),
        "{out}"
    );
    let second = at_line(&format!("up smtp[1] 127.0.0.1:{}", good.addr.port()));
    assert!(lines[second].contains(": ok in"), "{out}");
    assert!(
        lines[second + 1].starts_with("probe:   certificate key pin_sha256 = \""),
        "{out}"
    );
    let third = at_line(&format!("up smtp[2] 127.0.0.1:{closed}"));
    assert!(lines[third].contains("FAILED"), "{out}");
    let pinned = at_line(&format!("pinned smtp 127.0.0.1:{}", ca.addr.port()));
    assert!(lines[pinned].contains(": ok in"), "{out}");
    let renamed = at_line(&format!("renamed smtp 127.0.0.1:{}", ca.addr.port()));
    assert!(
        lines[renamed].contains("FAILED") && lines[renamed].contains("name mismatch"),
        "{out}"
    );
    assert_eq!(
        lines[renamed + 2],
        "probe:   the certificate names [localhost], not mail.elsewhere.test"
    );
}
