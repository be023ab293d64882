//! The provider side of an IMAP session until authentication succeeds: connect
//! through egress, TLS (implicit, or STARTTLS that must succeed — never plain
//! text), read the greeting and capabilities, send the one generic ID every
//! user shares, then authenticate with the client's credentials.
//!
//! Response texts from the provider are returned to the session for the
//! client; nothing here logs them.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::UpstreamError;
use crate::config::{Endpoint, UpstreamTls};
use crate::egress::{BoxedStream, Egress};
use crate::imap::framed::{Framed, ReadError};
use crate::imap::syntax::{self, capability_names, line_body, literal_at_end};
use crate::privacy::wipe;
use crate::sasl::{ClientCredentials, Mechanism, decode_b64};

/// The ID parameter list sent to every provider for every user (RFC 2971).
/// Some providers refuse clients that send no ID; this one names no
/// software, version, device or operating system.
pub const GENERIC_ID: &[u8] = b"(\"name\" \"IMAP client\")";

/// Largest response the relay reads whole before authentication (greeting,
/// CAPABILITY, ID, the authentication reply).
const MAX_SETUP_RESPONSE: usize = 64 * 1024;

/// The stream to the provider once TLS is up.
pub type UpstreamStream = TlsStream<BoxedStream>;

/// A provider connection before or after authentication.
pub struct UpstreamImap {
    io: Framed<UpstreamStream>,
    capabilities: Vec<String>,
    next_tag: u32,
    timeout: Duration,
}

/// How a command completed.
pub struct Completion {
    /// Untagged responses that came before the tagged one, each a whole line
    /// (with any literals inline).
    pub untagged: Vec<Vec<u8>>,
    /// `OK`, `NO` or `BAD` and everything after it, line ending included.
    pub status_and_text: Vec<u8>,
}

impl Completion {
    /// True for a tagged OK.
    pub fn is_ok(&self) -> bool {
        self.status_and_text.len() >= 2 && self.status_and_text[..2].eq_ignore_ascii_case(b"OK")
    }
}

/// Outcome of authentication.
pub enum AuthOutcome {
    /// The provider said OK: its untagged responses and status line.
    Accepted(Completion),
    /// The provider said NO or BAD: the same, to relay to the client.
    Refused(Completion),
    /// The provider does not offer a way to use these credentials.
    Unsupported,
}

impl From<ReadError> for UpstreamError {
    fn from(_: ReadError) -> Self {
        UpstreamError::Lost
    }
}

impl UpstreamImap {
    /// Connects, secures, reads the greeting and capabilities and sends the
    /// generic ID if the provider takes one.
    pub async fn connect(
        endpoint: &Endpoint,
        tls: Arc<ClientConfig>,
        egress: &Egress,
        isolation: &crate::egress::IsolationKey,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let (stream, server_name) = super::open(endpoint, egress, isolation, timeout).await?;
        let connector = TlsConnector::from(tls);
        let stream = match endpoint.tls {
            UpstreamTls::Implicit => stream,
            UpstreamTls::Starttls => starttls(stream, timeout).await?,
        };
        let secure = tokio::time::timeout(timeout, connector.connect(server_name, stream))
            .await
            .map_err(|_| UpstreamError::Tls)?
            .map_err(|_| UpstreamError::Tls)?;
        let mut upstream = UpstreamImap {
            io: Framed::new(secure),
            capabilities: Vec::new(),
            next_tag: 0,
            timeout,
        };
        if endpoint.tls == UpstreamTls::Implicit {
            let greeting = upstream.read_response_line().await?;
            if !starts_with_ci(&greeting, b"* OK") {
                return Err(UpstreamError::Refused(0));
            }
            if let Some((s, e)) = syntax::capability_span(&greeting) {
                upstream.capabilities = capability_names(&greeting[s..e]);
            }
        }
        if upstream.capabilities.is_empty() {
            upstream.refresh_capabilities().await?;
        }
        if upstream.has("ID") {
            let mut command = b"ID ".to_vec();
            command.extend_from_slice(GENERIC_ID);
            // The provider's answer to ID is of no use to anybody here.
            upstream.command(&command).await?;
        }
        Ok(upstream)
    }

    /// True when the provider advertised `capability` (upper case).
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// The provider's capabilities, upper-cased.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// Asks for CAPABILITY and remembers the answer.
    pub async fn refresh_capabilities(&mut self) -> Result<Vec<u8>, UpstreamError> {
        let done = self.command(b"CAPABILITY").await?;
        let mut list = Vec::new();
        for line in &done.untagged {
            if let Some((s, e)) = syntax::capability_span(line)
                && line.starts_with(b"* ")
            {
                list = line[s..e].to_vec();
            }
        }
        if !done.is_ok() || list.is_empty() {
            return Err(UpstreamError::Refused(0));
        }
        self.capabilities = capability_names(&list);
        Ok(list)
    }

    /// Authenticates with the client's credentials, preferring the client's
    /// own mechanism and converting between PLAIN, LOGIN and the LOGIN
    /// command when the provider only offers another of them.
    pub async fn authenticate(
        &mut self,
        credentials: &ClientCredentials,
    ) -> Result<AuthOutcome, UpstreamError> {
        let done = match credentials {
            ClientCredentials::Token { mechanism, encoded } => {
                if !self.has(&format!("AUTH={}", mechanism.name())) {
                    return Ok(AuthOutcome::Unsupported);
                }
                self.authenticate_with(*mechanism, encoded.expose()).await?
            }
            ClientCredentials::Plain {
                encoded,
                authzid,
                authcid,
                password,
            } => {
                if self.has("AUTH=PLAIN") {
                    self.authenticate_with(Mechanism::Plain, encoded.expose())
                        .await?
                } else if authzid.expose().is_empty() && !self.has("LOGINDISABLED") {
                    self.login_command(authcid.expose(), password.expose())
                        .await?
                } else {
                    return Ok(AuthOutcome::Unsupported);
                }
            }
            ClientCredentials::Login {
                user_encoded,
                password_encoded,
            } => {
                let user = decode_b64(user_encoded.expose()).map_err(|_| UpstreamError::Lost)?;
                let password =
                    decode_b64(password_encoded.expose()).map_err(|_| UpstreamError::Lost)?;
                if self.has("AUTH=PLAIN") {
                    let mut plain =
                        Vec::with_capacity(user.expose().len() + password.expose().len() + 2);
                    plain.push(0);
                    plain.extend_from_slice(user.expose());
                    plain.push(0);
                    plain.extend_from_slice(password.expose());
                    let encoded = crate::sasl::encode_b64(&plain);
                    wipe(&mut plain);
                    self.authenticate_with(Mechanism::Plain, encoded.expose())
                        .await?
                } else if !self.has("LOGINDISABLED") {
                    self.login_command(user.expose(), password.expose()).await?
                } else {
                    return Ok(AuthOutcome::Unsupported);
                }
            }
        };
        if done.is_ok() {
            Ok(AuthOutcome::Accepted(done))
        } else {
            Ok(AuthOutcome::Refused(done))
        }
    }

    /// `AUTHENTICATE mech` with the response as initial response (SASL-IR)
    /// or after the first continuation.
    async fn authenticate_with(
        &mut self,
        mechanism: Mechanism,
        encoded: &[u8],
    ) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let mut line = format!("{tag} AUTHENTICATE {}", mechanism.name()).into_bytes();
        let sasl_ir = self.has("SASL-IR");
        if sasl_ir {
            line.push(b' ');
            line.extend_from_slice(if encoded.is_empty() { b"=" } else { encoded });
        }
        line.extend_from_slice(b"\r\n");
        let written = self.write(&line).await;
        wipe(&mut line);
        written?;
        let mut sent_response = sasl_ir;
        let mut untagged = Vec::new();
        loop {
            let response = self.read_response_line().await?;
            if response.starts_with(b"+") {
                // Before the response was sent: the server asks for it. After:
                // an error challenge (XOAUTH2/OAUTHBEARER), answered with the
                // empty/abort response so that the tagged NO follows.
                let mut reply = if sent_response {
                    match mechanism {
                        Mechanism::OAuthBearer => b"AQ==".to_vec(),
                        _ => Vec::new(),
                    }
                } else {
                    encoded.to_vec()
                };
                sent_response = true;
                reply.extend_from_slice(b"\r\n");
                let written = self.write(&reply).await;
                wipe(&mut reply);
                written?;
                continue;
            }
            if let Some(status) = tagged_status(&response, &tag) {
                return Ok(Completion {
                    untagged,
                    status_and_text: status.to_vec(),
                });
            }
            untagged.push(response);
        }
    }

    /// `LOGIN user password`, as quoted strings, or literals when needed.
    async fn login_command(
        &mut self,
        user: &[u8],
        password: &[u8],
    ) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let mut out = format!("{tag} LOGIN ").into_bytes();
        let literal_plus = self.has("LITERAL+");
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        for (i, value) in [user, password].into_iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            match syntax::quoted(value) {
                Some(mut q) => {
                    out.extend_from_slice(&q);
                    wipe(&mut q);
                }
                None => {
                    out.extend_from_slice(
                        format!(
                            "{{{}{}}}\r\n",
                            value.len(),
                            if literal_plus { "+" } else { "" }
                        )
                        .as_bytes(),
                    );
                    pieces.push(std::mem::take(&mut out));
                    out.extend_from_slice(value);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        pieces.push(out);
        let mut untagged = Vec::new();
        let count = pieces.len();
        for (i, mut piece) in pieces.into_iter().enumerate() {
            let written = self.write(&piece).await;
            wipe(&mut piece);
            written?;
            if i + 1 < count && !literal_plus {
                let response = self.read_response_line().await?;
                if let Some(status) = tagged_status(&response, &tag) {
                    return Ok(Completion {
                        untagged,
                        status_and_text: status.to_vec(),
                    });
                }
                if !response.starts_with(b"+") {
                    untagged.push(response);
                    return Err(UpstreamError::Lost);
                }
            }
        }
        self.finish(&tag, untagged).await
    }

    /// Sends `tag command` and reads up to its tagged completion.
    pub async fn command(&mut self, command: &[u8]) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let mut line = format!("{tag} ").into_bytes();
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        self.write(&line).await?;
        self.finish(&tag, Vec::new()).await
    }

    async fn finish(
        &mut self,
        tag: &str,
        mut untagged: Vec<Vec<u8>>,
    ) -> Result<Completion, UpstreamError> {
        loop {
            let response = self.read_response_line().await?;
            if let Some(status) = tagged_status(&response, tag) {
                return Ok(Completion {
                    untagged,
                    status_and_text: status.to_vec(),
                });
            }
            if response.starts_with(b"+") {
                return Err(UpstreamError::Lost);
            }
            if untagged.len() >= 256 {
                return Err(UpstreamError::Lost);
            }
            untagged.push(response);
        }
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        let io = self.io.get_mut();
        tokio::time::timeout(self.timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .map_err(|_| UpstreamError::Lost)?
        .map_err(|_| UpstreamError::Lost)
    }

    /// One response with any literals it carries inline, bounded in size.
    async fn read_response_line(&mut self) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::new();
        tokio::time::timeout(self.timeout, read_response(&mut self.io, &mut out))
            .await
            .map_err(|_| UpstreamError::Lost)??;
        Ok(out)
    }

    /// The TLS stream and whatever was read from it and not yet used.
    pub fn into_parts(self) -> (UpstreamStream, Vec<u8>) {
        self.io.into_parts()
    }
}

/// Reads one whole response (lines and literals) into `out`, bounded.
async fn read_response<R: AsyncRead + Unpin>(
    io: &mut Framed<R>,
    out: &mut Vec<u8>,
) -> Result<(), UpstreamError> {
    loop {
        let room = MAX_SETUP_RESPONSE.saturating_sub(out.len());
        io.read_line(room, out).await?;
        match literal_at_end(out).map_err(|_| UpstreamError::Lost)? {
            Some(m) if m.size <= (MAX_SETUP_RESPONSE.saturating_sub(out.len())) as u64 => {
                io.read_exact_into(m.size as usize, out).await?;
            }
            Some(_) => return Err(UpstreamError::Lost),
            None => return Ok(()),
        }
    }
}

/// STARTTLS on a plain connection: greeting, `STARTTLS`, tagged OK. Nothing
/// may follow the OK before the handshake (that would be injected plain text).
async fn starttls(stream: BoxedStream, timeout: Duration) -> Result<BoxedStream, UpstreamError> {
    let mut io = Framed::new(stream);
    let exchange = async {
        let mut greeting = Vec::new();
        read_response(&mut io, &mut greeting).await?;
        if !starts_with_ci(&greeting, b"* OK") {
            return Err(UpstreamError::Refused(0));
        }
        let w = io.get_mut();
        w.write_all(b"m0 STARTTLS\r\n")
            .await
            .map_err(|_| UpstreamError::Lost)?;
        w.flush().await.map_err(|_| UpstreamError::Lost)?;
        loop {
            let mut line = Vec::new();
            read_response(&mut io, &mut line).await?;
            if let Some(status) = tagged_status(&line, "m0") {
                if starts_with_ci(status, b"OK") {
                    return Ok(());
                }
                return Err(UpstreamError::NoStartTls);
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Lost)??;
    let (stream, rest) = io.into_parts();
    if !rest.is_empty() {
        return Err(UpstreamError::NoStartTls);
    }
    Ok(stream)
}

/// For a response tagged `tag`, what follows the tag and its space.
pub fn tagged_status<'a>(line: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    line.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The status word of a completion (`OK`, `NO`, `BAD`), upper-cased.
pub fn status_word(status_and_text: &[u8]) -> &[u8] {
    let body = line_body(status_and_text);
    let end = body.iter().position(|b| *b == b' ').unwrap_or(body.len());
    &body[..end]
}
