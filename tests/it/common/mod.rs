//! Test peers over real TCP + TLS on 127.0.0.1:0: a scripted upstream SMTP
//! server that records what reaches it, a relay started in-process, and a
//! byte-level SMTP client.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use mailveil::config::Config;
use mailveil::relay::Relay;
use mailveil::server::Server;

pub mod imap;
pub mod socks;

pub const USER: &str = "alice@example.test";
pub const PASSWORD: &str = "alice-secret-pw";
pub const TOKEN: &str = "ya29.good-token";

/// How the scripted upstream behaves.
#[derive(Clone)]
pub struct UpstreamScript {
    pub implicit_tls: bool,
    pub offer_starttls: bool,
    pub mechanisms: &'static str,
    pub auth_failure: &'static str,
    /// Close the connection after this many DATA bytes, storing nothing.
    pub drop_after_data_bytes: Option<usize>,
    pub smtputf8: bool,
    /// Advertise CHUNKING (the relay then sends BDAT).
    pub chunking: bool,
    /// Advertise PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// Answer 421 and hang up at this step: a command prefix ("MAIL",
    /// "RCPT", "DATA") or "END" (after the whole message, storing nothing).
    pub fail_421_at: Option<&'static str>,
    /// Stop answering (but keep the connection) at this step, like
    /// `fail_421_at`.
    pub stall_at: Option<&'static str>,
}

impl Default for UpstreamScript {
    fn default() -> Self {
        UpstreamScript {
            implicit_tls: true,
            offer_starttls: true,
            mechanisms: "PLAIN LOGIN XOAUTH2 OAUTHBEARER",
            auth_failure: "535 5.7.8 Error: authentication failed: UPSTREAM-CANARY-TEXT",
            drop_after_data_bytes: None,
            smtputf8: true,
            chunking: false,
            pipelining: true,
            fail_421_at: None,
            stall_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub from: String,
    pub rcpts: Vec<String>,
    /// Unstuffed message bytes as the upstream received them.
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct Record {
    pub connections: AtomicUsize,
    pub lines: Mutex<Vec<String>>,
    pub messages: Mutex<Vec<Stored>>,
    /// Every raw byte the upstream read after TLS, per connection, joined.
    pub raw: Mutex<Vec<u8>>,
    /// The command lines that arrived with more already behind them in
    /// the same read: sent in one flight with what followed (pipelined).
    pub grouped: Mutex<Vec<String>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub ca_path: std::path::PathBuf,
    pub record: Arc<Record>,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub fn messages(&self) -> Vec<Stored> {
        self.record.messages.lock().expect("lock").clone()
    }
    pub fn lines(&self) -> Vec<String> {
        self.record.lines.lock().expect("lock").clone()
    }
    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }
    pub fn grouped(&self) -> Vec<String> {
        self.record.grouped.lock().expect("lock").clone()
    }
}

fn self_signed(names: Vec<String>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let made = rcgen::generate_simple_self_signed(names).expect("cert");
    let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).expect("key");
    (made.cert.der().clone(), key)
}

/// A self-signed certificate with CA:TRUE, as `openssl req -x509` makes it.
fn self_signed_ca(names: Vec<String>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key_pair = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key_pair).expect("cert");
    let key = PrivateKeyDer::try_from(key_pair.serialize_der()).expect("key");
    (cert.der().clone(), key)
}

/// How a test upstream's certificate is made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Self-signed, no basicConstraints (usable as a `ca`).
    Leaf,
    /// Self-signed with CA:TRUE (usable only pinned).
    CaTrue,
}

/// A fresh self-signed identity for a test upstream: the directory holding
/// its CA file (kept alive by the caller), the CA path and an acceptor.
pub fn upstream_identity() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tokio_rustls::TlsAcceptor,
) {
    upstream_identity_as(Identity::Leaf)
}

/// As [`upstream_identity`], with the certificate made as `identity` says.
pub fn upstream_identity_as(
    identity: Identity,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tokio_rustls::TlsAcceptor,
) {
    let names = vec!["127.0.0.1".into(), "localhost".into()];
    let (cert, key) = match identity {
        Identity::Leaf => self_signed(names),
        Identity::CaTrue => self_signed_ca(names),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("upstream-ca.pem");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        B64.encode(cert.as_ref())
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::File::create(&ca_path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .expect("write CA");
    let config = rustls::ServerConfig::builder_with_provider(mailveil::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    (
        dir,
        ca_path,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

pub async fn start_upstream(script: UpstreamScript) -> Upstream {
    start_upstream_as(script, Identity::Leaf).await
}

/// A scripted SMTP upstream whose certificate is made as `identity` says.
pub async fn start_upstream_as(script: UpstreamScript, identity: Identity) -> Upstream {
    let (dir, ca_path, acceptor) = upstream_identity_as(identity);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let record = Arc::new(Record::default());
    let rec = record.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            rec.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, rec, script) = (acceptor.clone(), rec.clone(), script.clone());
            tokio::spawn(async move {
                if script.implicit_tls {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ =
                            upstream_session(&mut BufReader::new(tls), &script, &rec, true, true)
                                .await;
                    }
                } else {
                    let mut plain = BufReader::new(tcp);
                    if let Ok(true) = upstream_session(&mut plain, &script, &rec, false, true).await
                        && let Ok(tls) = acceptor.accept(plain.into_inner()).await
                    {
                        let _ =
                            upstream_session(&mut BufReader::new(tls), &script, &rec, true, false)
                                .await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        ca_path,
        record,
        _dir: dir,
    }
}

async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    rec: &Record,
) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    rec.raw.lock().expect("lock").extend_from_slice(&buf);
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Runs a session; `Ok(true)` means STARTTLS was accepted and TLS should start.
async fn upstream_session<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    script: &UpstreamScript,
    rec: &Record,
    tls: bool,
    greet: bool,
) -> std::io::Result<bool> {
    if greet {
        s.write_all(b"220 upstream.test ESMTP\r\n").await?;
    }
    let mut authed = false;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut bdat: Vec<u8> = Vec::new();
    loop {
        let line = read_line(s, rec).await?;
        rec.lines.lock().expect("lock").push(line.clone());
        if !s.buffer().is_empty() {
            rec.grouped.lock().expect("lock").push(line.clone());
        }
        let upper = line.to_ascii_uppercase();
        if let Some(step) = script.stall_at
            && step != "END"
            && upper.starts_with(step)
        {
            std::future::pending::<()>().await;
        }
        if let Some(step) = script.fail_421_at
            && step != "END"
            && upper.starts_with(step)
        {
            s.write_all(b"421 4.3.2 Provider going away\r\n").await?;
            s.flush().await?;
            return Ok(false);
        }
        let reply: String = if upper.starts_with("EHLO ") {
            let mut r = String::from(
                "250-upstream.test\r\n250-SIZE 100000000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n",
            );
            if script.pipelining {
                r.push_str("250-PIPELINING\r\n");
            }
            if script.smtputf8 {
                r.push_str("250-SMTPUTF8\r\n");
            }
            if script.chunking {
                r.push_str("250-CHUNKING\r\n");
            }
            if !tls && script.offer_starttls {
                r.push_str("250-STARTTLS\r\n");
            }
            r.push_str(&format!("250 AUTH {}\r\n", script.mechanisms));
            r
        } else if upper == "STARTTLS" && !tls && script.offer_starttls {
            s.write_all(b"220 2.0.0 Ready\r\n").await?;
            s.flush().await?;
            return Ok(true);
        } else if upper.starts_with("AUTH ") {
            if !tls {
                "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
            } else {
                let mut parts = line.splitn(3, ' ');
                let _ = parts.next();
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                let ir = parts.next().map(str::to_string);
                let ok = match mech.as_str() {
                    "PLAIN" => {
                        let ir = match ir {
                            Some(ir) => ir,
                            None => {
                                s.write_all(b"334 \r\n").await?;
                                read_line(s, rec).await?
                            }
                        };
                        let decoded = B64.decode(ir.trim()).unwrap_or_default();
                        decoded == format!("\0{USER}\0{PASSWORD}").into_bytes()
                    }
                    "LOGIN" => {
                        s.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        let u = read_line(s, rec).await?;
                        s.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let p = read_line(s, rec).await?;
                        B64.decode(u.trim()).unwrap_or_default() == USER.as_bytes()
                            && B64.decode(p.trim()).unwrap_or_default() == PASSWORD.as_bytes()
                    }
                    "XOAUTH2" | "OAUTHBEARER" => {
                        let decoded = String::from_utf8(
                            B64.decode(ir.unwrap_or_default().trim())
                                .unwrap_or_default(),
                        )
                        .unwrap_or_default();
                        let good = decoded.contains(&format!("auth=Bearer {TOKEN}\x01"));
                        if !good {
                            // RFC 7628 / XOAUTH2 error flow: a 334 with a JSON
                            // status, answered by an empty line.
                            s.write_all(b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n").await?;
                            let _ = read_line(s, rec).await?;
                        }
                        good
                    }
                    _ => {
                        s.write_all(b"504 5.5.4 Unrecognized authentication type\r\n")
                            .await?;
                        continue;
                    }
                };
                authed = ok;
                if ok {
                    "235 2.7.0 Authentication successful\r\n".into()
                } else {
                    format!("{}\r\n", script.auth_failure)
                }
            }
        } else if upper.starts_with("MAIL FROM:") {
            if !authed {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                from = Some(line[10..].to_string());
                rcpts.clear();
                "250 2.1.0 Ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_none() {
                "503 5.5.1 Error: need MAIL command\r\n".into()
            } else if upper.contains("UNKNOWN") {
                "550 5.1.1 <unknown@example.test>: Recipient address rejected: User unknown\r\n"
                    .into()
            } else {
                rcpts.push(line[8..].to_string());
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 Error: no valid recipients\r\n".into()
            } else {
                s.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                s.flush().await?;
                let mut data = Vec::new();
                let mut received = 0usize;
                loop {
                    let mut line = Vec::new();
                    let n = s.read_until(b'\n', &mut line).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    rec.raw.lock().expect("lock").extend_from_slice(&line);
                    received += n;
                    if let Some(limit) = script.drop_after_data_bytes
                        && received >= limit
                    {
                        return Ok(false);
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    if line.starts_with(b".") {
                        data.extend_from_slice(&line[1..]);
                    } else {
                        data.extend_from_slice(&line);
                    }
                }
                if script.stall_at == Some("END") {
                    std::future::pending::<()>().await;
                }
                if script.fail_421_at == Some("END") {
                    s.write_all(b"421 4.3.2 Provider going away\r\n").await?;
                    s.flush().await?;
                    return Ok(false);
                }
                let rejected = data.windows(8).any(|w| w == b"REJECTME");
                if rejected {
                    "554 5.7.1 Message content rejected\r\n".into()
                } else {
                    rec.messages.lock().expect("lock").push(Stored {
                        from: from.take().unwrap_or_default(),
                        rcpts: std::mem::take(&mut rcpts),
                        data,
                    });
                    "250 2.0.0 Ok: queued as ABC123\r\n".into()
                }
            }
        } else if upper.starts_with("BDAT ") && script.chunking {
            let mut words = upper.split_whitespace().skip(1);
            let size: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let last = words.next() == Some("LAST");
            let mut chunk = vec![0u8; size];
            let mut got = 0;
            while got < size {
                let n = s.read(&mut chunk[got..]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n;
                if let Some(limit) = script.drop_after_data_bytes
                    && got >= limit
                {
                    return Ok(false);
                }
            }
            rec.raw.lock().expect("lock").extend_from_slice(&chunk);
            bdat.extend_from_slice(&chunk);
            if !last {
                format!("250 2.0.0 {size} bytes received\r\n")
            } else if rcpts.is_empty() {
                "554 5.5.1 Error: no valid recipients\r\n".into()
            } else {
                rec.messages.lock().expect("lock").push(Stored {
                    from: from.take().unwrap_or_default(),
                    rcpts: std::mem::take(&mut rcpts),
                    data: std::mem::take(&mut bdat),
                });
                "250 2.0.0 Ok: queued as BDAT123\r\n".into()
            }
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            s.write_all(b"221 2.0.0 Bye\r\n").await?;
            s.flush().await?;
            return Ok(false);
        } else {
            "502 5.5.2 Error: command not recognized\r\n".into()
        };
        s.write_all(reply.as_bytes()).await?;
        s.flush().await?;
    }
}

/// The relay under test, with its listeners' addresses.
pub struct TestRelay {
    pub implicit: SocketAddr,
    pub starttls: SocketAddr,
    /// Every listener's address, in configuration order.
    pub addrs: Vec<SocketAddr>,
    pub leaf: CertificateDer<'static>,
    pub relay: Arc<Relay>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestRelay {
    /// Starts the relay's shutdown, as SIGTERM does in `main`.
    #[allow(dead_code)]
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Config text pointing at `upstream`; `extra` is appended (more tables).
pub fn relay_config(upstream: &Upstream, smtp_tls: &str, with_ca: bool, extra: &str) -> String {
    let ca = if with_ca {
        format!("ca = \"{}\"\n", upstream.ca_path.display())
    } else {
        String::new()
    };
    format!(
        r#"
[server]
hostname = "relay.test"

[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "smtp"
address = "127.0.0.1:0"
tls = "starttls"

[[upstream]]
name = "up"
smtp = {{ host = "127.0.0.1", port = {port}, tls = "{smtp_tls}" }}
{ca}domains = ["example.test"]

[limits]
max_message_bytes = 1000000
upstream_timeout_secs = 15
{egress}{extra}
"#,
        port = upstream.addr.port(),
        egress = default_egress(extra),
    )
}

/// Tests reach their in-process upstreams directly unless `extra` says
/// otherwise (the default, Tor, would go to the public network).
pub fn default_egress(extra: &str) -> &'static str {
    if extra.contains("[egress]") {
        ""
    } else {
        "[egress]\nmode = \"direct\"\n"
    }
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

pub async fn start_relay_with(config_text: &str) -> TestRelay {
    let config = Config::parse(config_text).expect("test config");
    let identity = mailveil::tls::server_identity(None, None, "localhost").expect("identity");
    let relay = Arc::new(Relay::new(config, identity.config).expect("relay"));
    let server = Server::bind(relay.clone()).await.expect("bind");
    let addrs = server.local_addrs();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    TestRelay {
        implicit: addrs[0],
        starttls: addrs.get(1).copied().unwrap_or(addrs[0]),
        addrs,
        leaf: identity.leaf,
        relay,
        shutdown: Some(tx),
    }
}

/// Runs `mailveil check --probe` on the config `text`; (success, stdout).
pub async fn probe(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mailveil.toml");
    std::fs::write(&path, text).expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailveil"))
        .args(["check", "--probe", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub async fn start_relay(upstream: &Upstream) -> TestRelay {
    let tls = if upstream_is_implicit(upstream) {
        "implicit"
    } else {
        "starttls"
    };
    start_relay_with(&relay_config(upstream, tls, true, "")).await
}

fn upstream_is_implicit(upstream: &Upstream) -> bool {
    IMPLICIT.lock().expect("lock").contains(&upstream.addr)
}

static IMPLICIT: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());

pub async fn start_pair(script: UpstreamScript) -> (Upstream, TestRelay) {
    let implicit = script.implicit_tls;
    let upstream = start_upstream(script).await;
    if implicit {
        IMPLICIT.lock().expect("lock").push(upstream.addr);
    }
    let relay = start_relay(&upstream).await;
    (upstream, relay)
}

// ------------------------------------------------------------------ client

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A byte-level SMTP client.
pub struct Client {
    io: BufReader<Box<dyn Stream>>,
    leaf: CertificateDer<'static>,
}

/// A TLS connection to the relay at `addr`, trusting its `leaf`.
pub async fn connect_tls(addr: SocketAddr, leaf: &CertificateDer<'static>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = client_tls(leaf)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    Box::new(tls)
}

/// A plain TCP connection to `addr` from the local address `source`.
pub async fn connect_from(addr: SocketAddr, source: &str) -> Box<dyn Stream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("addr"))
        .expect("bind source");
    Box::new(socket.connect(addr).await.expect("connect"))
}

/// Upgrades a plain client connection to TLS in place (after STARTTLS).
pub async fn upgrade(io: &mut BufReader<Box<dyn Stream>>, leaf: &CertificateDer<'static>) {
    let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
    let inner = std::mem::replace(io, BufReader::new(placeholder)).into_inner();
    let tls = client_tls(leaf)
        .connect(ServerName::try_from("localhost").expect("name"), inner)
        .await
        .expect("tls upgrade");
    *io = BufReader::new(Box::new(tls));
}

pub fn client_tls(leaf: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(leaf.clone()).expect("trust leaf");
    let config = mailveil::tls::client_config_with_roots(roots).expect("client config");
    tokio_rustls::TlsConnector::from(config)
}

impl Client {
    /// A client over a connection already open (and reads the greeting);
    /// `leaf` is trusted for a STARTTLS upgrade.
    pub async fn over(io: Box<dyn Stream>, leaf: &CertificateDer<'static>) -> (Client, String) {
        let mut c = Client {
            io: BufReader::new(io),
            leaf: leaf.clone(),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Connects to the implicit-TLS listener and reads the greeting.
    pub async fn implicit(relay: &TestRelay) -> (Client, String) {
        let mut c = Client {
            io: BufReader::new(connect_tls(relay.implicit, &relay.leaf).await),
            leaf: relay.leaf.clone(),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Connects to the STARTTLS listener in plain text and reads the greeting.
    pub async fn plain(relay: &TestRelay) -> (Client, String) {
        Self::plain_from(relay, "127.0.0.1").await
    }

    /// Like `plain`, binding the client socket to `source` first.
    pub async fn plain_from(relay: &TestRelay, source: &str) -> (Client, String) {
        let mut c = Client {
            io: BufReader::new(connect_from(relay.starttls, source).await),
            leaf: relay.leaf.clone(),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// EHLO, STARTTLS, handshake, EHLO again.
    pub async fn starttls(relay: &TestRelay) -> Client {
        let (mut c, _) = Self::plain(relay).await;
        c.cmd("EHLO client.invalid").await;
        assert!(c.cmd("STARTTLS").await.starts_with("220 "));
        c.upgrade().await;
        c
    }

    pub async fn upgrade(&mut self) {
        upgrade(&mut self.io, &self.leaf).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// Reads one (possibly multi-line) reply; returns its lines joined with LF.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.io.read_line(&mut line),
            )
            .await
            .expect("reply timed out")
            .expect("read");
            if n == 0 {
                return format!("{all}<closed>");
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n");
            all.push_str(line);
            if line.as_bytes().get(3) == Some(&b'-') {
                all.push('\n');
            } else {
                return all;
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// True once the server has closed the connection.
    /// True when the relay closes the connection within 300 ms (without
    /// sending more); false when it stays open or sends something.
    #[allow(dead_code)]
    pub async fn is_closed_soon(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_millis(300),
                self.io.read(&mut buf)
            )
            .await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub async fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), self.io.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// AUTH PLAIN as `login` with `password`; returns the reply.
    pub async fn auth_plain(&mut self, login: &str, password: &str) -> String {
        let ir = B64.encode(format!("\0{login}\0{password}"));
        self.cmd(&format!("AUTH PLAIN {ir}")).await
    }

    pub async fn login(&mut self) {
        self.cmd("EHLO client.invalid").await;
        let r = self.auth_plain(USER, PASSWORD).await;
        assert!(r.starts_with("235 "), "{r}");
    }

    /// MAIL, RCPT, DATA and the message (dot-stuffed here); final reply.
    pub async fn send_message(&mut self, message: &[u8]) -> String {
        let r = self.cmd("MAIL FROM:<alice@example.test>").await;
        assert!(r.starts_with("250 "), "{r}");
        let r = self.cmd("RCPT TO:<bob@example.test>").await;
        assert!(r.starts_with("250 "), "{r}");
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354 "), "{r}");
        self.send(&stuff(message)).await;
        self.reply().await
    }
}

/// Client-side dot-stuffing, written independently of the relay's.
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The part of a message after its header block (from the blank line on).
pub fn body(message: &[u8]) -> &[u8] {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    &message[at..]
}
