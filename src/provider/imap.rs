//! The IMAP side of a provider until authentication succeeds: greeting and
//! capabilities, the one generic ID every user shares, then authentication
//! with the client's credentials as [`crate::sasl::plan`] presents them.
//!
//! Response texts from the provider are returned to the session for the
//! client; nothing here logs them.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{ProviderStream, Target, UpstreamError, implicit_tls};
use crate::config::Endpoint;
use crate::egress::BoxedStream;
use crate::imap::framed::{Framed, ReadError};
use crate::imap::syntax::{self, capability_names, literal_at_end};
use crate::privacy::{Secret, WipedBuf};
use crate::sasl::{Credentials, Mechanism, Offered, Plan};

/// The ID parameter list sent to every provider for every user (RFC 2971).
/// Some providers refuse clients that send no ID; this one names no
/// software, version, device or operating system.
pub(crate) const GENERIC_ID: &[u8] = b"(\"name\" \"IMAP client\")";

/// Largest response the relay reads whole before authentication (greeting,
/// CAPABILITY, ID, the authentication reply).
const MAX_SETUP_RESPONSE: usize = 64 * 1024;

/// Most untagged responses accepted before a command's completion.
const MAX_UNTAGGED: usize = 256;

/// A provider connection before or after authentication.
pub(crate) struct UpstreamImap {
    io: Framed<ProviderStream>,
    capabilities: Vec<String>,
    next_tag: u32,
    timeout: Duration,
}

/// How a command completed.
pub(crate) struct Completion {
    /// Untagged responses that came before the tagged one, each a whole line
    /// (with any literals inline).
    pub(crate) untagged: Vec<WipedBuf>,
    /// `OK`, `NO` or `BAD` and everything after it, line ending included.
    pub(crate) status_and_text: WipedBuf,
}

impl Completion {
    /// True for a tagged OK.
    pub(crate) fn is_ok(&self) -> bool {
        starts_with_ci(&self.status_and_text, b"OK")
    }

    /// True for a refusal that says the credentials were not judged
    /// (RFC 5530 `[UNAVAILABLE]`).
    pub(crate) fn is_temporary(&self) -> bool {
        memchr::memmem::find(&self.status_and_text, b"[UNAVAILABLE]").is_some()
    }
}

/// Outcome of authentication.
pub(crate) enum Authenticated {
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
    /// Connects to the first endpoint that can be reached, secures, reads
    /// the greeting and capabilities and sends the generic ID if the
    /// provider takes one. Says which endpoint it is.
    pub(crate) async fn connect<'a>(
        target: &Target<'a>,
    ) -> Result<(Self, &'a Endpoint), UpstreamError> {
        let timeout = target.timeout;
        let (mut stream, endpoint) = target.open().await?;
        let implicit = implicit_tls(endpoint);
        if !implicit {
            stream = starttls(stream, timeout).await?;
        }
        let secure = target.secure(endpoint, stream).await?;
        let mut upstream = UpstreamImap {
            io: Framed::new(secure),
            capabilities: Vec::new(),
            next_tag: 0,
            timeout,
        };
        if implicit {
            let greeting = upstream.read_response().await?;
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
            let mut command = WipedBuf::copy_of(b"ID ");
            command.extend_from_slice(GENERIC_ID);
            // The provider's answer to ID is of no use to anybody here.
            upstream.command(&command).await?;
        }
        Ok((upstream, endpoint))
    }

    /// True when the provider advertised `capability` (upper case).
    pub(crate) fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// What the provider offers to authenticate with. AUTHENTICATE LOGIN is
    /// never used towards an IMAP provider: LOGIN credentials go as PLAIN or
    /// as the LOGIN command.
    fn offered(&self) -> Offered {
        Offered {
            plain: self.has("AUTH=PLAIN"),
            login: false,
            xoauth2: self.has("AUTH=XOAUTH2"),
            oauthbearer: self.has("AUTH=OAUTHBEARER"),
            login_command: !self.has("LOGINDISABLED"),
            fall_back_as_sent: false,
        }
    }

    /// Asks for CAPABILITY and remembers the answer, which is returned as
    /// the provider's list.
    pub(crate) async fn refresh_capabilities(&mut self) -> Result<WipedBuf, UpstreamError> {
        let done = self.command(b"CAPABILITY").await?;
        let mut list = WipedBuf::new();
        for line in &done.untagged {
            if let Some((s, e)) = syntax::capability_span(line)
                && line.starts_with(b"* ")
            {
                list = WipedBuf::copy_of(&line[s..e]);
            }
        }
        if !done.is_ok() || list.is_empty() {
            return Err(UpstreamError::Refused(0));
        }
        self.capabilities = capability_names(&list);
        Ok(list)
    }

    /// Authenticates with the client's credentials, presented the way
    /// [`crate::sasl::plan`] says.
    pub(crate) async fn authenticate(
        &mut self,
        credentials: &Credentials,
    ) -> Result<Authenticated, UpstreamError> {
        let done = match crate::sasl::plan(credentials, self.offered()) {
            Plan::Unsupported => return Ok(Authenticated::Unsupported),
            Plan::Authenticate {
                mechanism,
                initial,
                answers,
            } => self.authenticate_with(mechanism, initial, answers).await?,
            Plan::LoginCommand { user, password } => self.login_command(&user, &password).await?,
        };
        Ok(if done.is_ok() {
            Authenticated::Accepted(done)
        } else {
            Authenticated::Refused(done)
        })
    }

    /// `AUTHENTICATE mech`, with the initial response on the command line
    /// (SASL-IR) or after the first continuation, then the answers to
    /// further challenges.
    async fn authenticate_with(
        &mut self,
        mechanism: Mechanism,
        initial: Option<Secret>,
        answers: Vec<Secret>,
    ) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let mut line = WipedBuf::with_capacity(64);
        line.extend_from_slices(&[
            tag.as_bytes(),
            b" AUTHENTICATE ",
            mechanism.name().as_bytes(),
        ]);
        let mut pending = initial.into_iter().chain(answers);
        if self.has("SASL-IR")
            && let Some(first) = pending.next()
        {
            let response: &[u8] = if first.expose().is_empty() {
                b"="
            } else {
                first.expose()
            };
            line.extend_from_slices(&[b" ", response]);
        }
        line.extend_from_slice(b"\r\n");
        self.write(&line).await?;
        let mut untagged = Vec::new();
        loop {
            let response = self.read_response().await?;
            if response.starts_with(b"+") {
                // A challenge: the next answer if one is left; after that
                // an error challenge (XOAUTH2, OAUTHBEARER), answered with
                // the empty or abort response so that the tagged NO follows.
                let mut reply = match pending.next() {
                    Some(answer) => WipedBuf::copy_of(answer.expose()),
                    None if mechanism == Mechanism::OAuthBearer => WipedBuf::copy_of(b"AQ=="),
                    None => WipedBuf::new(),
                };
                reply.extend_from_slice(b"\r\n");
                self.write(&reply).await?;
                continue;
            }
            if let Some(status) = tagged_status(&response, &tag) {
                return Ok(Completion {
                    untagged,
                    status_and_text: WipedBuf::copy_of(status),
                });
            }
            push_untagged(&mut untagged, response)?;
        }
    }

    /// `LOGIN user password`, as quoted strings, or literals when needed.
    async fn login_command(
        &mut self,
        user: &Secret,
        password: &Secret,
    ) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let literal_plus = self.has("LITERAL+");
        let mut pieces: Vec<WipedBuf> = Vec::new();
        let mut out = WipedBuf::with_capacity(64);
        out.extend_from_slices(&[tag.as_bytes(), b" LOGIN "]);
        for (i, value) in [user.expose(), password.expose()].into_iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            if syntax::is_quotable(value) {
                syntax::write_quoted(value, &mut out);
            } else {
                let marker =
                    syntax::LiteralMarker::render(value.len() as u64, !literal_plus, false);
                out.extend_from_slices(&[marker.as_bytes(), b"\r\n"]);
                pieces.push(out.take());
                out.extend_from_slice(value);
            }
        }
        out.extend_from_slice(b"\r\n");
        pieces.push(out);
        let untagged = Vec::new();
        let count = pieces.len();
        for (i, piece) in pieces.iter().enumerate() {
            self.write(piece).await?;
            if i + 1 < count && !literal_plus {
                let response = self.read_response().await?;
                if let Some(status) = tagged_status(&response, &tag) {
                    return Ok(Completion {
                        untagged,
                        status_and_text: WipedBuf::copy_of(status),
                    });
                }
                if !response.starts_with(b"+") {
                    return Err(UpstreamError::Lost);
                }
            }
        }
        self.finish(&tag, untagged).await
    }

    /// Sends `tag command` and reads up to its tagged completion.
    pub(crate) async fn command(&mut self, command: &[u8]) -> Result<Completion, UpstreamError> {
        let tag = self.tag();
        let mut line = WipedBuf::with_capacity(tag.len() + command.len() + 3);
        line.extend_from_slices(&[tag.as_bytes(), b" ", command, b"\r\n"]);
        self.write(&line).await?;
        self.finish(&tag, Vec::new()).await
    }

    async fn finish(
        &mut self,
        tag: &str,
        mut untagged: Vec<WipedBuf>,
    ) -> Result<Completion, UpstreamError> {
        loop {
            let response = self.read_response().await?;
            if let Some(status) = tagged_status(&response, tag) {
                return Ok(Completion {
                    untagged,
                    status_and_text: WipedBuf::copy_of(status),
                });
            }
            if response.starts_with(b"+") {
                return Err(UpstreamError::Lost);
            }
            push_untagged(&mut untagged, response)?;
        }
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        crate::stream::write_within(self.io.get_mut(), bytes, self.timeout)
            .await
            .map_err(|_| UpstreamError::Lost)
    }

    /// One response with any literals it carries inline, bounded in size.
    async fn read_response(&mut self) -> Result<WipedBuf, UpstreamError> {
        let mut out = WipedBuf::new();
        tokio::time::timeout(self.timeout, read_response(&mut self.io, &mut out))
            .await
            .map_err(|_| UpstreamError::Lost)??;
        Ok(out)
    }

    /// The TLS stream and whatever was read from it and not yet used.
    pub(crate) fn into_parts(self) -> (ProviderStream, WipedBuf) {
        self.io.into_parts()
    }
}

fn push_untagged(untagged: &mut Vec<WipedBuf>, response: WipedBuf) -> Result<(), UpstreamError> {
    if untagged.len() >= MAX_UNTAGGED {
        return Err(UpstreamError::Lost);
    }
    untagged.push(response);
    Ok(())
}

/// Reads one whole response (lines and literals) into `out`, bounded.
async fn read_response<R: AsyncRead + Unpin>(
    io: &mut Framed<R>,
    out: &mut WipedBuf,
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
        let mut greeting = WipedBuf::new();
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
            let mut line = WipedBuf::new();
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
pub(crate) fn tagged_status<'a>(line: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    line.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}
