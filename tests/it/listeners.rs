//! What a listener shows and serves: ALPN on every TLS listener (a client
//! offering only other protocols is refused in the handshake), both
//! protocols on one port chosen by ALPN, and a name and certificate of a
//! listener's own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::common::imap::{ImapClient, ImapScript, ImapUpstream, start_imap_upstream};
use crate::common::*;

/// Accepts any certificate and keeps the one it was shown: to see what a
/// listener presents, not to trust it.
#[derive(Debug, Default)]
struct Shown(Mutex<Option<CertificateDer<'static>>>);

impl ServerCertVerifier for Shown {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().expect("lock") = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        mailveil::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client offering `alpn` (none when empty) that accepts any
/// certificate and keeps the one it was shown.
fn showing(alpn: &[&str]) -> (tokio_rustls::TlsConnector, Arc<Shown>) {
    let shown = Arc::new(Shown::default());
    let mut config = rustls::ClientConfig::builder_with_provider(mailveil::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(shown.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    (tokio_rustls::TlsConnector::from(Arc::new(config)), shown)
}

/// A TLS handshake with `addr` offering `alpn` (none when empty). On
/// success: the stream, the protocol the relay chose, the certificate it
/// showed. On failure: the error's text.
async fn handshake(
    addr: SocketAddr,
    alpn: &[&str],
) -> Result<(Box<dyn Stream>, Option<Vec<u8>>, CertificateDer<'static>), String> {
    let (connector, shown) = showing(alpn);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = shown
        .0
        .lock()
        .expect("lock")
        .clone()
        .expect("a certificate");
    Ok((Box::new(tls), chosen, leaf))
}

/// One CA file trusting both scripted providers.
fn both_cas(smtp: &Upstream, imap: &ImapUpstream, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("both-ca.pem");
    let mut pem = std::fs::read_to_string(&smtp.ca_path).expect("smtp ca");
    pem.push_str(&std::fs::read_to_string(&imap.ca_path).expect("imap ca"));
    std::fs::write(&path, pem).expect("write");
    path
}

/// A relay in front of one provider with both protocols; `listeners` are
/// the `[[listen]]` tables.
fn config(smtp: &Upstream, imap: &ImapUpstream, ca: &std::path::Path, listeners: &str) -> String {
    format!(
        r#"
[server]
hostname = "relay.test"
{listeners}
[[upstream]]
name = "up"
smtp = {{ host = "127.0.0.1", port = {smtp}, tls = "implicit" }}
imap = {{ host = "127.0.0.1", port = {imap}, tls = "implicit" }}
ca = "{ca}"
domains = ["example.test"]

[egress]
mode = "direct"
"#,
        smtp = smtp.addr.port(),
        imap = imap.addr.port(),
        ca = ca.display(),
    )
}

const LISTENERS: &str = r#"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "imap"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "alpn"
alpn_default = "imap"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "starttls"
hostname = "hidden.example"
"#;

struct Setup {
    smtp: Upstream,
    imap: ImapUpstream,
    relay: TestRelay,
    addrs: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

async fn setup(listeners: &str) -> Setup {
    let smtp = start_upstream(UpstreamScript::default()).await;
    let imap = start_imap_upstream(ImapScript::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = both_cas(&smtp, &imap, dir.path());
    let relay = start_relay_with(&config(&smtp, &imap, &ca, listeners)).await;
    let addrs = relay.addrs.clone();
    Setup {
        smtp,
        imap,
        relay,
        addrs,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_listener_refuses_clients_offering_only_other_protocols() {
    let s = setup(LISTENERS).await;
    let (smtp, imap) = (s.addrs[0], s.addrs[1]);
    // An HTTP client (a browser sent here by a cross-protocol attack) and
    // the other mail protocol: refused in the handshake.
    for (addr, offered) in [
        (smtp, &["http/1.1"][..]),
        (smtp, &["h2", "http/1.1"][..]),
        (smtp, &["imap"][..]),
        (imap, &["http/1.1"][..]),
        (imap, &["smtp"][..]),
    ] {
        let refused = handshake(addr, offered).await.err().expect("refused");
        assert!(
            refused.contains("NoApplicationProtocol") || refused.contains("no_application"),
            "{offered:?}: {refused}"
        );
    }
    // Its own protocol, among others, is chosen; no ALPN at all is served.
    let (io, chosen, _) = handshake(smtp, &["h2", "smtp"]).await.expect("smtp");
    assert_eq!(chosen.as_deref(), Some(&b"smtp"[..]));
    let (_c, greeting) = Client::over(io, &s.relay.leaf).await;
    assert!(greeting.starts_with("220 relay.test "), "{greeting}");
    let (io, chosen, _) = handshake(imap, &[]).await.expect("no ALPN");
    assert_eq!(chosen, None);
    let (_c, greeting) = ImapClient::over(io, &s.relay.leaf).await;
    assert!(greeting.starts_with("* OK "), "{greeting}");
}

#[tokio::test]
async fn one_port_serves_smtp_and_imap_by_alpn() {
    let s = setup(LISTENERS).await;
    let both = s.addrs[2];
    // SMTP by ALPN: a whole message reaches the provider.
    let (io, chosen, leaf) = handshake(both, &["smtp"]).await.expect("smtp");
    assert_eq!(chosen.as_deref(), Some(&b"smtp"[..]));
    assert_eq!(leaf, s.relay.leaf, "the relay's certificate");
    let (mut c, greeting) = Client::over(io, &s.relay.leaf).await;
    assert!(greeting.starts_with("220 relay.test "), "{greeting}");
    c.login().await;
    let message = b"From: <alice@example.test>\r\nTo: <bob@example.test>\r\nSubject: one port\r\n\r\nover ALPN\r\n";
    let r = c.send_message(message).await;
    assert!(r.starts_with("250 "), "{r}");
    assert_eq!(body(&s.smtp.messages()[0].data), body(message));
    // IMAP by ALPN, and without ALPN (the default here): logged in at the
    // provider.
    for offered in [&["imap"][..], &[][..]] {
        let (io, _, _) = handshake(both, offered).await.expect("imap");
        let (mut c, greeting) = ImapClient::over(io, &s.relay.leaf).await;
        assert!(greeting.starts_with("* OK "), "{offered:?}: {greeting}");
        let done = c.login().await;
        assert!(
            done.last().is_some_and(|l| l.starts_with("L1 OK")),
            "{done:?}"
        );
    }
    assert_eq!(s.imap.logins().len(), 2);
    // Both offered: the default wins; HTTP only: refused.
    let (_, chosen, _) = handshake(both, &["smtp", "imap"]).await.expect("both");
    assert_eq!(chosen.as_deref(), Some(&b"imap"[..]));
    assert!(handshake(both, &["http/1.1"]).await.is_err());
}

/// Plain text to `addr`: the greeting, EHLO's reply, then STARTTLS and
/// the certificate shown in its handshake.
async fn starttls_showing(addr: SocketAddr) -> (String, String, CertificateDer<'static>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut io = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    async fn reply(io: &mut BufReader<TcpStream>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            io.read_line(&mut line).await.expect("read");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }
    let greeting = reply(&mut io).await;
    io.get_mut()
        .write_all(b"EHLO client.invalid\r\n")
        .await
        .expect("write");
    let ehlo = reply(&mut io).await;
    io.get_mut()
        .write_all(b"STARTTLS\r\n")
        .await
        .expect("write");
    assert!(reply(&mut io).await.starts_with("220 "));
    let (connector, shown) = showing(&[]);
    connector
        .connect(
            ServerName::try_from("localhost").expect("name"),
            io.into_inner(),
        )
        .await
        .expect("tls");
    let leaf = shown
        .0
        .lock()
        .expect("lock")
        .clone()
        .expect("a certificate");
    (greeting, ehlo, leaf)
}

fn holds(der: &CertificateDer<'_>, text: &str) -> bool {
    der.windows(text.len()).any(|w| w == text.as_bytes())
}

#[tokio::test]
async fn a_listener_with_a_name_of_its_own_shows_neither_the_shared_name_nor_certificate() {
    let s = setup(LISTENERS).await;
    let (greeting, ehlo, shown) = starttls_showing(s.addrs[3]).await;
    assert!(greeting.starts_with("220 hidden.example "), "{greeting}");
    assert!(ehlo.starts_with("250-hidden.example"), "{ehlo}");
    assert!(!greeting.contains("relay.test") && !ehlo.contains("relay.test"));
    // A certificate made for this listener's name, not the relay's.
    assert_ne!(
        shown, s.relay.leaf,
        "the shared certificate would link the two"
    );
    assert!(holds(&shown, "hidden.example"));
    assert!(!holds(&shown, "relay.test") && !holds(&shown, "localhost"));
    let own = s.relay.relay.own_certificates();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].listener, 3);
    assert!(own[0].files.is_none());
    assert_eq!(own[0].fingerprint, mailveil::tls::fingerprint_of(&shown));
    // The relay's other listeners still show the relay's.
    let (_, _, leaf) = handshake(s.addrs[0], &[]).await.expect("tls");
    assert_eq!(leaf, s.relay.leaf);
}

#[tokio::test]
async fn a_listener_certificate_from_files_is_served_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("own.pem"), dir.path().join("own.key"));
    let make =
        || rcgen::generate_simple_self_signed(vec!["own.example".to_string()]).expect("cert");
    let first = make();
    std::fs::write(&cert, first.cert.pem()).expect("write");
    std::fs::write(&key, first.signing_key.serialize_pem()).expect("write");
    let listeners = format!(
        "{LISTENERS}\n[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n\
         certificate = \"{}\"\nprivate_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let s = setup(&listeners).await;
    let (io, _, leaf) = handshake(s.addrs[4], &["imap"]).await.expect("tls");
    assert_eq!(&leaf, first.cert.der());
    let (_c, greeting) = ImapClient::over(io, &s.relay.leaf).await;
    assert!(greeting.starts_with("* OK "), "{greeting}");
    // SIGHUP's reload, as `main` does it for each listener's own files.
    let second = make();
    std::fs::write(&cert, second.cert.pem()).expect("write");
    std::fs::write(&key, second.signing_key.serialize_pem()).expect("write");
    let own = s
        .relay
        .relay
        .own_certificates()
        .iter()
        .find(|o| o.listener == 4)
        .expect("listener 4");
    let (c, k) = own.files.as_ref().expect("files");
    own.certificate.reload(c, k).expect("reload");
    let (_, _, leaf) = handshake(s.addrs[4], &[]).await.expect("tls");
    assert_eq!(&leaf, second.cert.der());
}

/// A PROXY v2 header for a TCP over IPv4 client at `source`.
fn proxy_header(source: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0x00, 12]);
    h.extend(source);
    h.extend([127, 0, 0, 1, 0xc3, 0x50, 0x01, 0xd1]);
    h
}

/// A TLS client behind a PROXY header saying it is `source`: the greeting,
/// or `None` when the relay closed the connection.
async fn through_balancer(
    addr: SocketAddr,
    header: &[u8],
    leaf: &CertificateDer<'static>,
) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(header).await.expect("header");
    let tls = client_tls(leaf)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .ok()?;
    let (mut c, greeting) = Client::over(Box::new(tls), leaf).await;
    c.is_closed_soon().await;
    (!greeting.contains("<closed>")).then_some(greeting)
}

#[tokio::test]
async fn behind_a_balancer_the_proxy_header_address_is_admitted_and_nothing_else_gets_in() {
    let listeners = r#"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"
proxy_protocol = true
proxy_from = ["127.0.0.1"]

[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"
proxy_protocol = true
proxy_from = ["10.9.8.0/24"]
"#;
    let smtp = start_upstream(UpstreamScript::default()).await;
    let imap = start_imap_upstream(ImapScript::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = both_cas(&smtp, &imap, dir.path());
    let text =
        config(&smtp, &imap, &ca, listeners) + "\n[limits]\nmax_connections_per_prefix = 1\n";
    let relay = start_relay_with(&text).await;
    let (trusted, untrusted) = (relay.addrs[0], relay.addrs[1]);
    let leaf = relay.leaf.clone();

    // A client through the balancer: logged in, a message sent.
    let mut tcp = TcpStream::connect(trusted).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, &proxy_header([192, 0, 2, 7]))
        .await
        .expect("header");
    let tls = client_tls(&leaf)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let (mut first, greeting) = Client::over(Box::new(tls), &leaf).await;
    assert!(greeting.starts_with("220 relay.test "), "{greeting}");
    first.login().await;
    let message =
        b"From: <alice@example.test>\r\nTo: <bob@example.test>\r\n\r\nvia the balancer\r\n";
    assert!(first.send_message(message).await.starts_with("250 "));

    // One connection per prefix: a second from the same client address is
    // refused, one from another address is not, though all come from the
    // balancer's one address.
    let again = through_balancer(trusted, &proxy_header([192, 0, 2, 7]), &leaf).await;
    assert!(
        again.as_deref().is_some_and(|g| g.starts_with("421 4.7.0 Too many open connections from your network")),
        "{again:?}"
    );
    let other = through_balancer(trusted, &proxy_header([198, 51, 100, 9]), &leaf).await;
    assert!(
        other.as_deref().is_some_and(|g| g.starts_with("220 ")),
        "{other:?}"
    );

    // Skipping the balancer (TLS straight away), a version 1 header, and a
    // header from an address not in proxy_from: closed, no session.
    assert_eq!(through_balancer(trusted, b"", &leaf).await, None);
    let v1 = b"PROXY TCP4 192.0.2.8 127.0.0.1 5555 465\r\n";
    assert_eq!(through_balancer(trusted, v1, &leaf).await, None);
    assert_eq!(
        through_balancer(untrusted, &proxy_header([192, 0, 2, 10]), &leaf).await,
        None
    );
    let report = relay.relay.stats().take_report();
    assert!(
        report.contains("connections without a trusted PROXY header 3"),
        "{report}"
    );
    drop(first);
}

/// A relay with an onion listener on a private Tor network whose authority
/// never answers (nothing leaves loopback; the service is never launched):
/// what it shows, and that it will not start without its key.
#[tokio::test]
async fn an_onion_listener_has_a_certificate_of_its_own_for_the_onion_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("onion");
    let address = mailveil::onion::generate(&keys).expect("key");
    let closed = closed_port().await;
    let id = "0123456789ABCDEF0123456789ABCDEF01234567";
    let onion = format!(
        "[[listen]]\nprotocol = \"imap\"\naddress = \"onion:993\"\ntls = \"implicit\"\n\n\
         [onion]\nkey_directory = \"{keys}\"\n\n\
         [egress.tor]\nruntime_dir = \"{runtime}\"\n\
         [egress.tor.testing_network]\nenabled = true\n\
         authorities = [{{ v3ident = \"{id}\", address = \"127.0.0.1:{closed}\" }}]\n\
         fallbacks = [{{ rsa_identity = \"{id}\", ed25519_identity = \"{ed}\", address = \"127.0.0.1:{closed}\" }}]\n",
        keys = keys.display(),
        runtime = dir.path().display(),
        ed = "A".repeat(43),
    );
    let smtp = start_upstream(UpstreamScript::default()).await;
    let imap = start_imap_upstream(ImapScript::default()).await;
    let ca = both_cas(&smtp, &imap, dir.path());
    let text = config(&smtp, &imap, &ca, &format!("{LISTENERS}\n{onion}"));
    let relay = start_relay_with(&text).await;
    assert_eq!(relay.relay.onion_address(), Some(address.as_str()));
    // Its own certificate, made for the onion address: never the relay's.
    let own = relay.relay.own_certificates();
    let onion_own = own
        .iter()
        .find(|o| o.listener == 4)
        .expect("onion listener's own");
    assert!(onion_own.files.is_none());
    assert_ne!(
        onion_own.fingerprint,
        mailveil::tls::fingerprint_of(&relay.leaf)
    );
    assert!(holds(&onion_own.leaf, &address));
    assert!(!holds(&onion_own.leaf, "relay.test") && !holds(&onion_own.leaf, "localhost"));
    // No socket for it: the four socket listeners only.
    assert_eq!(relay.addrs.len(), 4);
    let summary = relay.relay.config().summary();
    assert!(
        summary.contains("listen: Imap on onion:993 (Implicit TLS)"),
        "{summary}"
    );

    // Without its key the relay does not start (arti would make another).
    std::fs::remove_file(keys.join("hs_ed25519_secret_key")).expect("remove");
    let config = mailveil::config::Config::parse(&text).expect("config");
    let identity = mailveil::tls::server_identity(None, None, "localhost").expect("identity");
    let refused = mailveil::relay::Relay::new(config, identity.config)
        .err()
        .expect("no key, no relay")
        .to_string();
    assert!(
        refused.starts_with("onion service key: ") && refused.contains("hs_ed25519_secret_key"),
        "{refused}"
    );
}
