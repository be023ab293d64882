//! A scripted IMAP provider over TCP + TLS that records what reaches it, the
//! relay configured in front of it, and a byte-level IMAP client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{
    PASSWORD, Stream, TOKEN, TestRelay, USER, connect_from, connect_tls, start_relay_with,
};

/// How the scripted provider behaves.
#[derive(Clone)]
pub struct ImapScript {
    pub implicit_tls: bool,
    /// Advertise (and accept) LITERAL+ non-synchronizing literals.
    pub literal_plus: bool,
    /// Advertise ID.
    pub id: bool,
    /// The tagged answer to a failed login (after the tag).
    pub auth_failure: &'static str,
    /// Put a CAPABILITY response code in the tagged OK of a login.
    pub caps_in_login_ok: bool,
    /// The message `FETCH … BODY[]` returns.
    pub fetch_body: Arc<Vec<u8>>,
    /// The one login it accepts (with the test password).
    pub user: &'static str,
    /// The SASL mechanisms it advertises after TLS.
    pub auth_caps: &'static str,
}

impl Default for ImapScript {
    fn default() -> Self {
        ImapScript {
            implicit_tls: true,
            literal_plus: true,
            id: true,
            auth_failure: "NO [AUTHENTICATIONFAILED] Authentication failed. UPSTREAM-CANARY-TEXT",
            caps_in_login_ok: true,
            fetch_body: Arc::new(b"Subject: stored\r\n\r\nstored body\r\n".to_vec()),
            user: USER,
            auth_caps: " AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER",
        }
    }
}

/// One command as the provider read it: its lines (literal markers
/// included) and the literals' bytes, in order.
#[derive(Debug, Clone, Default)]
pub struct ImapCommand {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

#[derive(Default)]
pub struct ImapRecord {
    pub connections: AtomicUsize,
    pub commands: Mutex<Vec<ImapCommand>>,
    /// Mechanism (or LOGIN) and login of every successful authentication.
    pub logins: Mutex<Vec<(String, String)>>,
    /// Protocol errors the relay made (e.g. LITERAL+ to a provider without it).
    pub violations: Mutex<Vec<String>>,
}

pub struct ImapUpstream {
    pub addr: SocketAddr,
    pub ca_path: std::path::PathBuf,
    pub record: Arc<ImapRecord>,
    pub script: ImapScript,
    _dir: tempfile::TempDir,
}

impl ImapUpstream {
    pub fn commands(&self) -> Vec<ImapCommand> {
        self.record.commands.lock().expect("lock").clone()
    }
    /// Commands whose name (second word) is `name`, case-insensitively.
    pub fn commands_named(&self, name: &str) -> Vec<ImapCommand> {
        self.commands()
            .into_iter()
            .filter(|c| {
                c.text
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .collect()
    }
    pub fn logins(&self) -> Vec<(String, String)> {
        self.record.logins.lock().expect("lock").clone()
    }
    pub fn violations(&self) -> Vec<String> {
        self.record.violations.lock().expect("lock").clone()
    }
    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }
}

pub async fn start_imap_upstream(script: ImapScript) -> ImapUpstream {
    start_imap_upstream_as(script, super::Identity::Leaf).await
}

/// A scripted IMAP upstream whose certificate is made as `identity` says.
pub async fn start_imap_upstream_as(script: ImapScript, identity: super::Identity) -> ImapUpstream {
    let (dir, ca_path, acceptor) = super::upstream_identity_as(identity);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let record = Arc::new(ImapRecord::default());
    let (rec, s) = (record.clone(), script.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            rec.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, rec, script) = (acceptor.clone(), rec.clone(), s.clone());
            tokio::spawn(async move {
                let io: Box<dyn Stream> = if script.implicit_tls {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => Box::new(tls),
                        Err(_) => return,
                    }
                } else {
                    Box::new(tcp)
                };
                let mut session = Provider {
                    io: BufReader::new(io),
                    script,
                    rec,
                    tls: false,
                    acceptor,
                    appended: 0,
                };
                session.tls = session.script.implicit_tls;
                let _ = session.run().await;
            });
        }
    });
    ImapUpstream {
        addr,
        ca_path,
        record,
        script,
        _dir: dir,
    }
}

struct Provider {
    io: BufReader<Box<dyn Stream>>,
    script: ImapScript,
    rec: Arc<ImapRecord>,
    tls: bool,
    acceptor: tokio_rustls::TlsAcceptor,
    appended: usize,
}

/// `{n}` / `{n+}` at the end of a line: size and whether it synchronizes.
fn literal_marker(line: &[u8]) -> Option<(usize, bool)> {
    let body = line.strip_suffix(b"\r\n")?;
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let inner = std::str::from_utf8(&body[open + 1..]).ok()?;
    match inner.strip_suffix('+') {
        Some(n) => Some((n.parse().ok()?, false)),
        None => Some((inner.parse().ok()?, true)),
    }
}

impl Provider {
    fn pre_caps(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR");
        if self.script.id {
            caps.push_str(" ID");
        }
        if self.script.literal_plus {
            caps.push_str(" LITERAL+");
        }
        if self.tls {
            caps.push_str(self.script.auth_caps);
        } else {
            caps.push_str(" STARTTLS LOGINDISABLED");
        }
        caps
    }

    fn post_caps(&self) -> String {
        let mut caps = String::from(
            "IMAP4rev1 IDLE MOVE UIDPLUS CONDSTORE QRESYNC SPECIAL-USE MULTIAPPEND \
             COMPRESS=DEFLATE XSECRETVENDOR-CAP",
        );
        if self.script.id {
            caps.push_str(" ID");
        }
        if self.script.literal_plus {
            caps.push_str(" LITERAL+");
        }
        caps
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await
    }

    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if self.io.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    /// One command with its literals, inviting synchronizing ones.
    async fn read_command(&mut self) -> std::io::Result<ImapCommand> {
        let mut command = ImapCommand::default();
        loop {
            let line = self.read_line().await?;
            command.text.push_str(&String::from_utf8_lossy(&line));
            let Some((size, sync)) = literal_marker(&line) else {
                break;
            };
            if sync {
                self.write(b"+ Ready for literal data\r\n").await?;
            } else if !self.script.literal_plus {
                self.rec.violations.lock().expect("lock").push(format!(
                    "non-synchronizing literal without LITERAL+: {line:?}"
                ));
            }
            let mut literal = vec![0u8; size];
            self.io.read_exact(&mut literal).await?;
            command.literals.push(literal);
        }
        self.rec
            .commands
            .lock()
            .expect("lock")
            .push(command.clone());
        Ok(command)
    }

    async fn run(&mut self) -> std::io::Result<()> {
        let greeting = format!(
            "* OK [CAPABILITY {}] SecretVendor IMAP at upstream-host.invalid ready\r\n",
            self.pre_caps()
        );
        self.write(greeting.as_bytes()).await?;
        let mut authed = false;
        loop {
            let command = self.read_command().await?;
            let mut words = command.text.split_whitespace();
            let tag = words.next().unwrap_or("*").to_string();
            let name = words.next().unwrap_or("").to_ascii_uppercase();
            let ok = |text: &str| format!("{tag} OK {text}\r\n");
            let reply = match name.as_str() {
                "CAPABILITY" => {
                    let caps = if authed {
                        self.post_caps()
                    } else {
                        self.pre_caps()
                    };
                    format!("* CAPABILITY {caps}\r\n{}", ok("Capability completed"))
                }
                "NOOP" => ok("NOOP completed"),
                "STARTTLS" if !self.tls => {
                    self.write(ok("Begin TLS negotiation now").as_bytes())
                        .await?;
                    let placeholder: Box<dyn Stream> = Box::new(tokio::io::duplex(1).0);
                    let inner =
                        std::mem::replace(&mut self.io, BufReader::new(placeholder)).into_inner();
                    let tls = self.acceptor.accept(inner).await?;
                    self.io = BufReader::new(Box::new(tls));
                    self.tls = true;
                    continue;
                }
                "ID" => format!(
                    "* ID (\"name\" \"SecretVendor\" \"support-url\" \"https://upstream-host.invalid\")\r\n{}",
                    ok("ID completed")
                ),
                "LOGIN" if !authed => {
                    let args = astrings(&command);
                    let (user, pass) = (
                        args.first().cloned().unwrap_or_default(),
                        args.get(1).cloned().unwrap_or_default(),
                    );
                    self.verdict(&tag, "LOGIN", &user, pass == PASSWORD, &mut authed)
                }
                "AUTHENTICATE" if !authed => {
                    let mech = words.next().unwrap_or("").to_ascii_uppercase();
                    let ir = words.next().map(str::to_string);
                    self.authenticate(&tag, &mech, ir, &mut authed).await?
                }
                "SELECT" | "EXAMINE" if authed => format!(
                    "* 2 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n{tag} OK [READ-WRITE] Select completed\r\n"
                ),
                "FETCH" | "UID" if authed && command.text.contains("[]") => {
                    let body = self.script.fetch_body.clone();
                    let head = format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", body.len());
                    self.io.get_mut().write_all(head.as_bytes()).await?;
                    for chunk in body.chunks(64 * 1024) {
                        self.io.get_mut().write_all(chunk).await?;
                    }
                    format!(")\r\n{}", ok("Fetch completed"))
                }
                "IDLE" if authed => {
                    self.write(b"+ idling\r\n").await?;
                    self.write(b"* 3 EXISTS\r\n").await?;
                    let done = self.read_line().await?;
                    self.rec.commands.lock().expect("lock").push(ImapCommand {
                        text: String::from_utf8_lossy(&done).into(),
                        literals: Vec::new(),
                    });
                    if done.eq_ignore_ascii_case(b"DONE\r\n") {
                        ok("Idle completed")
                    } else {
                        format!("{tag} BAD Expected DONE\r\n")
                    }
                }
                "APPEND" if authed => {
                    self.appended += command.literals.len();
                    format!(
                        "{tag} OK [APPENDUID 7 {}] Append completed\r\n",
                        self.appended
                    )
                }
                "COMPRESS" => ok("DEFLATE active"),
                "XDROP" => return Ok(()),
                "XECHO" => {
                    let rest: Vec<&str> = words.collect();
                    format!("* XECHO {}\r\n{}", rest.join(" "), ok("XECHO completed"))
                }
                "LOGOUT" => {
                    self.write(
                        format!("* BYE Logging out\r\n{}", ok("Logout completed")).as_bytes(),
                    )
                    .await?;
                    return Ok(());
                }
                _ => format!("{tag} BAD Error in IMAP command\r\n"),
            };
            self.write(reply.as_bytes()).await?;
        }
    }

    fn verdict(
        &mut self,
        tag: &str,
        how: &str,
        user: &str,
        good: bool,
        authed: &mut bool,
    ) -> String {
        if good && user == self.script.user {
            *authed = true;
            self.rec
                .logins
                .lock()
                .expect("lock")
                .push((how.to_string(), user.to_string()));
            if self.script.caps_in_login_ok {
                format!("{tag} OK [CAPABILITY {}] Logged in\r\n", self.post_caps())
            } else {
                format!("{tag} OK Logged in\r\n")
            }
        } else {
            format!("{tag} {}\r\n", self.script.auth_failure)
        }
    }

    async fn authenticate(
        &mut self,
        tag: &str,
        mech: &str,
        ir: Option<String>,
        authed: &mut bool,
    ) -> std::io::Result<String> {
        let mut response = match ir {
            Some(ir) => ir,
            None => {
                let prompt: &[u8] = if mech == "LOGIN" {
                    b"+ VXNlcm5hbWU6\r\n"
                } else {
                    b"+ \r\n"
                };
                self.write(prompt).await?;
                String::from_utf8_lossy(&self.read_line().await?)
                    .trim_end()
                    .to_string()
            }
        };
        if response == "*" {
            return Ok(format!("{tag} BAD Authentication aborted\r\n"));
        }
        let decode = |s: &str| {
            if s == "=" {
                Vec::new()
            } else {
                B64.decode(s.trim()).unwrap_or_default()
            }
        };
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).to_string();
        let bearer = |payload: &str, user_prefix: &str| -> (String, String) {
            let mut user = String::new();
            let mut token = String::new();
            for part in payload.split(['\x01', ',']) {
                if let Some(u) = part.strip_prefix(user_prefix) {
                    user = u.to_string();
                }
                if let Some(t) = part.strip_prefix("auth=Bearer ") {
                    token = t.to_string();
                }
            }
            (user, token)
        };
        Ok(match mech {
            "PLAIN" => {
                let plain = decode(&response);
                let parts: Vec<&[u8]> = plain.split(|b| *b == 0).collect();
                let user = parts.get(1).map(|u| text(u.to_vec())).unwrap_or_default();
                let good = parts.get(2).is_some_and(|p| *p == PASSWORD.as_bytes());
                self.verdict(tag, "PLAIN", &user, good, authed)
            }
            "LOGIN" => {
                let user = text(decode(&response));
                self.write(b"+ UGFzc3dvcmQ6\r\n").await?;
                response = String::from_utf8_lossy(&self.read_line().await?)
                    .trim_end()
                    .to_string();
                let good = decode(&response) == PASSWORD.as_bytes();
                self.verdict(tag, "AUTH-LOGIN", &user, good, authed)
            }
            "XOAUTH2" => {
                let (user, token) = bearer(&text(decode(&response)), "user=");
                self.verdict(tag, "XOAUTH2", &user, token == TOKEN, authed)
            }
            "OAUTHBEARER" => {
                let (user, token) = bearer(&text(decode(&response)), "a=");
                self.verdict(tag, "OAUTHBEARER", &user, token == TOKEN, authed)
            }
            _ => format!("{tag} NO Unsupported mechanism\r\n"),
        })
    }
}

/// The LOGIN arguments: atoms, quoted strings and literals.
fn astrings(command: &ImapCommand) -> Vec<String> {
    let text = command.text.as_bytes();
    // Skip "tag LOGIN ".
    let mut i = 0;
    for _ in 0..2 {
        while i < text.len() && text[i] != b' ' {
            i += 1;
        }
        i += 1;
    }
    let mut literals = command.literals.iter();
    let mut out = Vec::new();
    while i < text.len() {
        match text[i] {
            b' ' | b'\r' | b'\n' => i += 1,
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        i += 1;
                    }
                    s.push(text[i]);
                    i += 1;
                }
                i += 1;
                out.push(String::from_utf8_lossy(&s).into());
            }
            b'{' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                i += 1;
                let lit = literals.next().cloned().unwrap_or_default();
                out.push(String::from_utf8_lossy(&lit).into());
            }
            _ => {
                let start = i;
                while i < text.len() && !matches!(text[i], b' ' | b'\r' | b'\n') {
                    i += 1;
                }
                out.push(String::from_utf8_lossy(&text[start..i]).into());
            }
        }
    }
    out
}

// ------------------------------------------------------------------ relay

/// Relay config with IMAP listeners (implicit first, then STARTTLS) in
/// front of `upstream`; `extra` is appended.
pub fn imap_relay_config(upstream: &ImapUpstream, extra: &str) -> String {
    let tls = if upstream.script.implicit_tls {
        "implicit"
    } else {
        "starttls"
    };
    format!(
        r#"
[server]
hostname = "relay.test"

[[listen]]
protocol = "imap"
address = "127.0.0.1:0"
tls = "implicit"

[[listen]]
protocol = "imap"
address = "127.0.0.1:0"
tls = "starttls"

[[upstream]]
name = "up"
imap = {{ host = "127.0.0.1", port = {port}, tls = "{tls}" }}
ca = "{ca}"
domains = ["example.test"]

[limits]
max_message_bytes = 30000000
upstream_timeout_secs = 15
{egress}{extra}
"#,
        port = upstream.addr.port(),
        ca = upstream.ca_path.display(),
        egress = super::default_egress(extra),
    )
}

pub async fn start_imap_pair(script: ImapScript) -> (ImapUpstream, TestRelay) {
    let upstream = start_imap_upstream(script).await;
    let relay = start_relay_with(&imap_relay_config(&upstream, "")).await;
    (upstream, relay)
}

// ------------------------------------------------------------------ client

/// A byte-level IMAP client.
pub struct ImapClient {
    io: BufReader<Box<dyn Stream>>,
    leaf: rustls_pki_types::CertificateDer<'static>,
}

impl ImapClient {
    /// A client over a connection already open; returns it and the
    /// greeting line.
    pub async fn over(
        io: Box<dyn Stream>,
        leaf: &rustls_pki_types::CertificateDer<'static>,
    ) -> (ImapClient, String) {
        let mut c = ImapClient {
            io: BufReader::new(io),
            leaf: leaf.clone(),
        };
        let greeting = c.line().await;
        (c, greeting)
    }

    /// Implicit TLS; returns the client and the greeting line.
    pub async fn implicit(relay: &TestRelay) -> (ImapClient, String) {
        let mut c = ImapClient {
            io: BufReader::new(connect_tls(relay.implicit, &relay.leaf).await),
            leaf: relay.leaf.clone(),
        };
        let greeting = c.line().await;
        (c, greeting)
    }

    /// The STARTTLS listener, in plain text, from `source`.
    pub async fn plain_from(relay: &TestRelay, source: &str) -> (ImapClient, String) {
        let mut c = ImapClient {
            io: BufReader::new(connect_from(relay.starttls, source).await),
            leaf: relay.leaf.clone(),
        };
        let greeting = c.line().await;
        (c, greeting)
    }

    pub async fn upgrade(&mut self) {
        super::upgrade(&mut self.io, &self.leaf).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// One response line without CRLF, or `<closed>`.
    pub async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.io.read_until(b'\n', &mut line),
        )
        .await
        .expect("response timed out")
        .expect("read");
        if n == 0 {
            return "<closed>".into();
        }
        assert!(line.ends_with(b"\r\n"), "line without CRLF: {line:?}");
        String::from_utf8_lossy(&line[..line.len() - 2]).into()
    }

    /// Exactly `n` bytes (a literal in a response).
    pub async fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.io.read_exact(&mut buf),
        )
        .await
        .expect("literal timed out")
        .expect("read literal");
        buf
    }

    /// Lines up to and including the one tagged `tag` (literals read as
    /// `<N bytes>` placeholders appended to their line).
    pub async fn until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = self.line().await;
            if let Some((size, _)) = literal_marker(format!("{line}\r\n").as_bytes()) {
                let _ = self.bytes(size).await;
                line.push_str(&format!("<{size} bytes>"));
            }
            let done = line.starts_with(&format!("{tag} ")) || line == "<closed>";
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Sends `tag rest` and returns every line up to the tagged one.
    pub async fn cmd(&mut self, tag: &str, rest: &str) -> Vec<String> {
        self.send(format!("{tag} {rest}\r\n").as_bytes()).await;
        self.until_tagged(tag).await
    }

    /// The tagged line alone.
    pub async fn tagged(&mut self, tag: &str, rest: &str) -> String {
        self.cmd(tag, rest).await.pop().expect("a line")
    }

    pub async fn login(&mut self) -> Vec<String> {
        let lines = self
            .cmd("L1", &format!("LOGIN {USER} \"{PASSWORD}\""))
            .await;
        assert!(
            lines.last().is_some_and(|l| l.starts_with("L1 OK")),
            "{lines:?}"
        );
        lines
    }

    /// True once the relay has closed the connection.
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
}
