//! SASL without I/O: which mechanisms the relay carries, how a client's
//! responses are read into [`Credentials`] (enough to route the login), and
//! how those are turned into what a provider offers: PLAIN ↔ LOGIN, or
//! IMAP's `LOGIN` command. Both protocols use it; neither writes SASL of its
//! own.
//!
//! The relay never judges a password: the provider does. Credentials are
//! [`Secret`]s from the moment they are decoded and the login is
//! [`Sensitive`]; nothing here logs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use zeroize::Zeroizing;

use crate::config::LoginForm;
use crate::privacy::{Login, Secret, Sensitive, WipedBuf};

/// SASL mechanisms the relay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (username and password in two steps).
    Login,
    /// Google/Microsoft XOAUTH2.
    XOAuth2,
    /// RFC 7628.
    OAuthBearer,
}

impl Mechanism {
    /// All mechanisms, in the order they are advertised.
    pub(crate) const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::XOAuth2,
        Mechanism::OAuthBearer,
    ];

    /// The SASL name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism of this name (case-insensitive).
    pub(crate) fn from_name(name: &[u8]) -> Option<Self> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// From smtp-proto's mechanism bit.
    pub(crate) fn from_smtp_proto(bit: u64) -> Option<Self> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.smtp_proto_bit() == bit)
    }

    /// smtp-proto's mechanism bit.
    pub(crate) fn smtp_proto_bit(self) -> u64 {
        match self {
            Mechanism::Plain => smtp_proto::AUTH_PLAIN,
            Mechanism::Login => smtp_proto::AUTH_LOGIN,
            Mechanism::XOAuth2 => smtp_proto::AUTH_XOAUTH2,
            Mechanism::OAuthBearer => smtp_proto::AUTH_OAUTHBEARER,
        }
    }

    /// The base64 challenges a client is sent, in order, when it gave no
    /// initial response (LOGIN asks for the user name, then the password).
    fn challenges(self) -> &'static [&'static [u8]] {
        match self {
            // "Username:", "Password:".
            Mechanism::Login => &[b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"],
            _ => &[b""],
        }
    }
}

/// What a client's SASL exchange said, enough to route and relay it.
pub(crate) enum Credentials {
    /// PLAIN: the base64 response as sent, plus its parts.
    Plain {
        /// The client's base64 text, relayed unchanged.
        encoded: Secret,
        /// Authorization identity (usually empty).
        authzid: Secret,
        /// Authentication identity: the login.
        authcid: Secret,
        /// The password.
        password: Secret,
    },
    /// LOGIN: user name and password, each as the client's base64 text.
    Login {
        /// base64 of the user name.
        user_encoded: Secret,
        /// base64 of the password.
        password_encoded: Secret,
    },
    /// XOAUTH2 or OAUTHBEARER: the base64 response as sent.
    Token {
        /// Which of the two.
        mechanism: Mechanism,
        /// The client's base64 text, relayed unchanged.
        encoded: Secret,
    },
}

/// Why a client's SASL exchange gave no credentials.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// Not valid base64.
    #[error("invalid base64")]
    Base64,
    /// Decoded, but not of the mechanism's form.
    #[error("malformed SASL response")]
    Malformed,
    /// The client answered `*`.
    #[error("cancelled")]
    Cancelled,
    /// OAUTHBEARER without an `a=` authorization identity: the relay would
    /// have no login to route, tag and isolate the session by.
    #[error("OAUTHBEARER without a=")]
    NoAuthzid,
}

/// Decodes one base64 SASL text (surrounding white space ignored; `=` is
/// the empty response).
pub(crate) fn decode_b64(text: &[u8]) -> Result<Secret, SaslError> {
    let trimmed = text.trim_ascii();
    if trimmed == b"=" {
        return Ok(Secret::default());
    }
    let mut out = WipedBuf::zeroed(base64::decoded_len_estimate(trimmed.len()));
    let n = B64
        .decode_slice(trimmed, &mut out)
        .map_err(|_| SaslError::Base64)?;
    out.truncate(n);
    Ok(Secret::from(out))
}

/// Encodes bytes as base64.
pub(crate) fn encode_b64(bytes: &[u8]) -> Secret {
    let mut out = WipedBuf::zeroed(base64::encoded_len(bytes.len(), true).unwrap_or(0));
    let n = B64.encode_slice(bytes, &mut out).unwrap_or(0);
    out.truncate(n);
    Secret::from(out)
}

/// The PLAIN message `authzid NUL user NUL password`, base64-encoded: the
/// one place it is assembled.
pub(crate) fn plain_response(authzid: &[u8], user: &[u8], password: &[u8]) -> Secret {
    let mut message = WipedBuf::with_capacity(authzid.len() + user.len() + password.len() + 2);
    message.extend_from_slices(&[authzid, b"\0", user, b"\0", password]);
    encode_b64(&message)
}

/// Credentials from a user name and a password (IMAP `LOGIN`), as PLAIN.
pub(crate) fn from_user_password(user: &[u8], password: &[u8]) -> Option<Credentials> {
    if user.is_empty() {
        return None;
    }
    Some(Credentials::Plain {
        encoded: plain_response(b"", user, password),
        authzid: Secret::default(),
        authcid: Secret::copy_of(user),
        password: Secret::copy_of(password),
    })
}

/// Parses a PLAIN response (`authzid NUL authcid NUL password`).
pub(crate) fn parse_plain(encoded: &[u8]) -> Result<Credentials, SaslError> {
    let decoded = decode_b64(encoded)?;
    let mut parts = decoded.expose().splitn(3, |b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials::Plain {
        encoded: Secret::copy_of(encoded.trim_ascii()),
        authzid: Secret::copy_of(authzid),
        authcid: Secret::copy_of(authcid),
        password: Secret::copy_of(password),
    })
}

/// SASL LOGIN: the two base64 answers (user name, password), checked to be
/// base64 and kept encoded.
pub(crate) fn parse_login(user: Secret, password: Secret) -> Result<Credentials, SaslError> {
    decode_b64(user.expose())?;
    decode_b64(password.expose())?;
    Ok(Credentials::Login {
        user_encoded: user,
        password_encoded: password,
    })
}

/// Parses an XOAUTH2 or OAUTHBEARER response far enough to find the login.
pub(crate) fn parse_token(mechanism: Mechanism, encoded: &[u8]) -> Result<Credentials, SaslError> {
    let decoded = decode_b64(encoded)?;
    match mechanism {
        Mechanism::XOAuth2 => xoauth2_user(decoded.expose())
            .map(drop)
            .ok_or(SaslError::Malformed)?,
        _ => oauthbearer_user(decoded.expose())
            .ok_or(SaslError::Malformed)?
            .map(drop)
            .ok_or(SaslError::NoAuthzid)?,
    }
    Ok(Credentials::Token {
        mechanism,
        encoded: Secret::copy_of(encoded.trim_ascii()),
    })
}

impl Credentials {
    /// The login the upstream is chosen by.
    pub(crate) fn login(&self) -> Login {
        let user = match self {
            Credentials::Plain { authcid, .. } => authcid.clone(),
            Credentials::Login { user_encoded, .. } => {
                decode_b64(user_encoded.expose()).unwrap_or_default()
            }
            Credentials::Token { mechanism, encoded } => {
                let decoded = decode_b64(encoded.expose()).unwrap_or_default();
                let user = match mechanism {
                    Mechanism::XOAuth2 => xoauth2_user(decoded.expose()),
                    _ => oauthbearer_user(decoded.expose()).flatten(),
                };
                user.unwrap_or_default()
            }
        };
        Sensitive::new(Zeroizing::new(
            String::from_utf8_lossy(user.expose()).into_owned(),
        ))
    }

    /// The credentials as the provider at `host` and `port` is to see them:
    /// an OAUTHBEARER message names the provider it is meant for (RFC 7628
    /// §3.1), not the relay, which would name the relay to every provider
    /// and link its accounts. Other credentials are unchanged.
    pub(crate) fn for_endpoint(self, host: &str, port: u16) -> Credentials {
        let Credentials::Token {
            mechanism: Mechanism::OAuthBearer,
            encoded,
        } = &self
        else {
            return self;
        };
        let Ok(decoded) = decode_b64(encoded.expose()) else {
            return self;
        };
        let port = port.to_string();
        let mut message = WipedBuf::with_capacity(decoded.expose().len() + host.len() + 8);
        for (i, field) in decoded.expose().split(|b| *b == 1).enumerate() {
            if i > 0 {
                message.push(1);
            }
            if field.starts_with(b"host=") {
                message.extend_from_slices(&[b"host=", host.as_bytes()]);
            } else if field.starts_with(b"port=") {
                message.extend_from_slices(&[b"port=", port.as_bytes()]);
            } else {
                message.extend_from_slice(field);
            }
        }
        Credentials::Token {
            mechanism: Mechanism::OAuthBearer,
            encoded: encode_b64(&message),
        }
    }

    /// The credentials with the login as the provider is to see it: with
    /// [`LoginForm::LocalPart`], only what comes before the last `@` of the
    /// login (PLAIN's authcid, and its authzid when that is the same login;
    /// LOGIN's user name; XOAUTH2's `user=`; OAUTHBEARER's `a=`), the
    /// password or token untouched. A login without `@` is left as it is.
    pub(crate) fn presented_as(self, form: LoginForm) -> Credentials {
        if form == LoginForm::Address {
            return self;
        }
        match self {
            Credentials::Plain {
                encoded,
                authzid,
                authcid,
                password,
            } => {
                let Some(local) = local_part(authcid.expose()) else {
                    return Credentials::Plain {
                        encoded,
                        authzid,
                        authcid,
                        password,
                    };
                };
                let local = Secret::copy_of(local);
                let authzid = if authzid.expose().eq_ignore_ascii_case(authcid.expose()) {
                    local.clone()
                } else {
                    authzid
                };
                Credentials::Plain {
                    encoded: plain_response(authzid.expose(), local.expose(), password.expose()),
                    authzid,
                    authcid: local,
                    password,
                }
            }
            Credentials::Login {
                user_encoded,
                password_encoded,
            } => {
                let user = decode_b64(user_encoded.expose()).unwrap_or_default();
                Credentials::Login {
                    user_encoded: match local_part(user.expose()) {
                        Some(local) => encode_b64(local),
                        None => user_encoded,
                    },
                    password_encoded,
                }
            }
            Credentials::Token { mechanism, encoded } => {
                let Ok(decoded) = decode_b64(encoded.expose()) else {
                    return Credentials::Token { mechanism, encoded };
                };
                let mut message = WipedBuf::with_capacity(decoded.expose().len());
                let mut changed = false;
                for (i, field) in decoded.expose().split(|b| *b == 1).enumerate() {
                    if i > 0 {
                        message.push(1);
                    }
                    match mechanism {
                        Mechanism::XOAuth2 => {
                            match field.strip_prefix(b"user=").and_then(local_part) {
                                Some(local) => {
                                    message.extend_from_slices(&[b"user=", local]);
                                    changed = true;
                                }
                                _ => message.extend_from_slice(field),
                            }
                        }
                        _ if i == 0 => changed |= gs2_with_local_part(field, &mut message),
                        _ => message.extend_from_slice(field),
                    }
                }
                Credentials::Token {
                    mechanism,
                    encoded: if changed {
                        encode_b64(&message)
                    } else {
                        encoded
                    },
                }
            }
        }
    }

    /// The mechanism the client chose.
    pub(crate) fn mechanism(&self) -> Mechanism {
        match self {
            Credentials::Plain { .. } => Mechanism::Plain,
            Credentials::Login { .. } => Mechanism::Login,
            Credentials::Token { mechanism, .. } => *mechanism,
        }
    }

    /// The user name and password, when the credentials are a pair without
    /// an authorization identity (what a LOGIN step or command can carry).
    fn user_password(&self) -> Option<(Secret, Secret)> {
        match self {
            Credentials::Plain {
                authzid,
                authcid,
                password,
                ..
            } if authzid.expose().is_empty() => Some((authcid.clone(), password.clone())),
            Credentials::Login {
                user_encoded,
                password_encoded,
            } => Some((
                decode_b64(user_encoded.expose()).ok()?,
                decode_b64(password_encoded.expose()).ok()?,
            )),
            _ => None,
        }
    }

    /// The exchange as the client made it.
    fn as_sent(&self) -> Plan {
        match self {
            Credentials::Plain { encoded, .. } => Plan::Authenticate {
                mechanism: Mechanism::Plain,
                initial: Some(encoded.clone()),
                answers: Vec::new(),
            },
            Credentials::Login {
                user_encoded,
                password_encoded,
            } => Plan::Authenticate {
                mechanism: Mechanism::Login,
                initial: None,
                answers: vec![user_encoded.clone(), password_encoded.clone()],
            },
            Credentials::Token { mechanism, encoded } => Plan::Authenticate {
                mechanism: *mechanism,
                initial: Some(encoded.clone()),
                answers: Vec::new(),
            },
        }
    }
}

/// What a provider offers to authenticate with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offered {
    /// `AUTH PLAIN` / `AUTH=PLAIN`.
    pub(crate) plain: bool,
    /// `AUTH LOGIN`.
    pub(crate) login: bool,
    /// `XOAUTH2`.
    pub(crate) xoauth2: bool,
    /// `OAUTHBEARER`.
    pub(crate) oauthbearer: bool,
    /// IMAP's `LOGIN` command (not `LOGINDISABLED`).
    pub(crate) login_command: bool,
    /// When nothing fits, send the client's exchange as it was and let the
    /// provider answer (SMTP), instead of refusing here (IMAP).
    pub(crate) fall_back_as_sent: bool,
}

impl Offered {
    fn has(&self, mechanism: Mechanism) -> bool {
        match mechanism {
            Mechanism::Plain => self.plain,
            Mechanism::Login => self.login,
            Mechanism::XOAuth2 => self.xoauth2,
            Mechanism::OAuthBearer => self.oauthbearer,
        }
    }
}

/// How to present credentials to a provider.
pub(crate) enum Plan {
    /// A SASL exchange: the mechanism, its initial response (if any), then
    /// the answers to give to the provider's challenges, in order.
    Authenticate {
        /// The mechanism to name.
        mechanism: Mechanism,
        /// The initial response, base64.
        initial: Option<Secret>,
        /// Answers to the provider's challenges, base64, in order.
        answers: Vec<Secret>,
    },
    /// IMAP `LOGIN user password` (decoded).
    LoginCommand {
        /// The user name.
        user: Secret,
        /// The password.
        password: Secret,
    },
    /// Nothing the provider offers can carry these credentials.
    Unsupported,
}

/// How to present `credentials` to a provider that offers `offered`: the
/// client's own mechanism when offered; else PLAIN and LOGIN converted into
/// each other; else IMAP's `LOGIN` command; else as sent or not at all.
pub(crate) fn plan(credentials: &Credentials, offered: Offered) -> Plan {
    if offered.has(credentials.mechanism()) {
        return credentials.as_sent();
    }
    let pair = credentials.user_password();
    if let Some((user, password)) = &pair {
        match credentials.mechanism() {
            Mechanism::Plain if offered.login => {
                return Plan::Authenticate {
                    mechanism: Mechanism::Login,
                    initial: None,
                    answers: vec![encode_b64(user.expose()), encode_b64(password.expose())],
                };
            }
            Mechanism::Login if offered.plain => {
                return Plan::Authenticate {
                    mechanism: Mechanism::Plain,
                    initial: Some(plain_response(b"", user.expose(), password.expose())),
                    answers: Vec::new(),
                };
            }
            _ => {}
        }
    }
    match pair {
        Some((user, password)) if offered.login_command => Plan::LoginCommand { user, password },
        _ if offered.fall_back_as_sent => credentials.as_sent(),
        _ => Plan::Unsupported,
    }
}

/// Collects a client's SASL responses for one mechanism, without I/O: the
/// session sends each challenge this asks for and hands back the answer.
pub(crate) struct Exchange {
    mechanism: Mechanism,
    answers: Vec<Secret>,
}

/// What an [`Exchange`] needs next.
pub(crate) enum Step {
    /// Send this base64 challenge and read the client's answer.
    Challenge(&'static [u8]),
    /// The exchange is over.
    Done(Result<Credentials, SaslError>),
}

impl Exchange {
    /// Starts an exchange; `initial` is the response sent with the command
    /// (SASL-IR), if any.
    pub(crate) fn start(mechanism: Mechanism, initial: Option<Secret>) -> (Exchange, Step) {
        let mut exchange = Exchange {
            mechanism,
            answers: Vec::with_capacity(2),
        };
        let step = match initial {
            Some(answer) => exchange.answer(answer),
            None => exchange.next_step(),
        };
        (exchange, step)
    }

    /// The client's answer to the last challenge (`*` cancels).
    pub(crate) fn answer(&mut self, answer: Secret) -> Step {
        if answer.expose().trim_ascii() == b"*" {
            return Step::Done(Err(SaslError::Cancelled));
        }
        self.answers.push(answer);
        self.next_step()
    }

    fn next_step(&mut self) -> Step {
        let challenges = self.mechanism.challenges();
        if self.answers.len() < challenges.len() {
            return Step::Challenge(challenges[self.answers.len()]);
        }
        let mut answers = std::mem::take(&mut self.answers).into_iter();
        let first = answers.next().unwrap_or_default();
        Step::Done(match self.mechanism {
            Mechanism::Plain => parse_plain(first.expose()),
            Mechanism::Login => parse_login(first, answers.next().unwrap_or_default()),
            token => parse_token(token, first.expose()),
        })
    }
}

/// What comes before the last `@` of a login, when it has one and that part
/// is not empty.
fn local_part(login: &[u8]) -> Option<&[u8]> {
    let at = memchr::memrchr(b'@', login)?;
    (at > 0).then(|| &login[..at])
}

/// Writes OAUTHBEARER's GS2 header (`n,a=<saslname>,`) to `out` with the
/// authorization identity cut to its local part, re-escaped (`,` as `=2C`,
/// `=` as `=3D`). False, and the header written as it was, when there is
/// nothing to cut.
fn gs2_with_local_part(gs2: &[u8], out: &mut WipedBuf) -> bool {
    let Some(value_start) = memchr::memmem::find(gs2, b",a=").map(|n| n + 3) else {
        out.extend_from_slice(gs2);
        return false;
    };
    let value_end =
        memchr::memchr(b',', &gs2[value_start..]).map_or(gs2.len(), |n| value_start + n);
    let login = unescape_saslname(&gs2[value_start..value_end]);
    let Some(local) = local_part(&login) else {
        out.extend_from_slice(gs2);
        return false;
    };
    out.extend_from_slice(&gs2[..value_start]);
    for &b in local {
        match b {
            b',' => out.extend_from_slice(b"=2C"),
            b'=' => out.extend_from_slice(b"=3D"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(&gs2[value_end..]);
    true
}

/// A GS2 saslname decoded: "=2C" is ',' and "=3D" is '='.
fn unescape_saslname(name: &[u8]) -> WipedBuf {
    let mut login = WipedBuf::with_capacity(name.len());
    let mut rest = name;
    while let Some((&first, tail)) = rest.split_first() {
        let (byte, after) = match (first, tail) {
            (b'=', [b'2', b'C', after @ ..]) => (b',', after),
            (b'=', [b'3', b'D', after @ ..]) => (b'=', after),
            _ => (first, tail),
        };
        login.push(byte);
        rest = after;
    }
    login
}

/// `user=<login>\x01auth=Bearer <token>\x01\x01` → the login.
fn xoauth2_user(decoded: &[u8]) -> Option<Secret> {
    let mut user = None;
    let mut has_auth = false;
    for field in decoded.split(|b| *b == 1) {
        if let Some(u) = field.strip_prefix(b"user=") {
            user = Some(Secret::copy_of(u));
        } else if field.starts_with(b"auth=") {
            has_auth = true;
        }
    }
    // An empty user= would leave the relay no login to route, tag and
    // isolate by (every such session would share one): malformed.
    user.filter(|u| has_auth && !u.expose().is_empty())
}

/// `n,a=<authzid>,\x01…auth=Bearer <token>\x01\x01` → `Some(Some(login))`,
/// `Some(None)` when well-formed without `a=`, `None` when malformed.
fn oauthbearer_user(decoded: &[u8]) -> Option<Option<Secret>> {
    let mut fields = decoded.split(|b| *b == 1);
    let gs2 = fields.next()?;
    if !fields.any(|f| f.starts_with(b"auth=")) {
        return None;
    }
    let mut parts = gs2.split(|b| *b == b',');
    let flag = parts.next()?;
    if !matches!(flag, b"n" | b"y") && !flag.starts_with(b"p=") {
        return None;
    }
    let authzid = parts.next()?;
    match authzid.strip_prefix(b"a=") {
        Some(name) => {
            let login = unescape_saslname(name);
            // An empty a= names no one either.
            Some((!login.is_empty()).then(|| Secret::from(login)))
        }
        None if authzid.is_empty() => Some(None),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }

    fn done(step: Step) -> Result<Credentials, SaslError> {
        match step {
            Step::Done(result) => result,
            Step::Challenge(_) => panic!("expected the end of the exchange"),
        }
    }

    #[test]
    fn plain_login_is_the_authcid() {
        let c = parse_plain(b64(b"\0alice@example.test\0secret").as_bytes()).expect("valid");
        assert_eq!(c.login().expose().as_str(), "alice@example.test");
        assert_eq!(c.mechanism(), Mechanism::Plain);
    }

    /// The decoded form of what `credentials` would send as they are.
    fn sent(credentials: &Credentials) -> Vec<Vec<u8>> {
        let Plan::Authenticate {
            initial, answers, ..
        } = credentials.as_sent()
        else {
            panic!("an exchange");
        };
        initial
            .into_iter()
            .chain(answers)
            .map(|s| decode_b64(s.expose()).expect("base64").expose().to_vec())
            .collect()
    }

    #[test]
    fn a_localpart_provider_sees_only_the_local_part_of_every_mechanism() {
        let local = |c: Credentials| sent(&c.presented_as(LoginForm::LocalPart));
        let plain = |text: &[u8]| parse_plain(b64(text).as_bytes()).expect("plain");
        assert_eq!(
            local(plain(b"\0alice@example.test\0pw@x")),
            [b"\0alice\0pw@x".to_vec()]
        );
        // An authzid naming the same login is cut too; another is left.
        assert_eq!(
            local(plain(b"Alice@Example.test\0alice@example.test\0pw")),
            [b"alice\0alice\0pw".to_vec()]
        );
        assert_eq!(
            local(plain(b"admin@example.test\0alice@example.test\0pw")),
            [b"admin@example.test\0alice\0pw".to_vec()]
        );
        // The last @ ends the local part; a bare name is left as it is.
        assert_eq!(
            local(plain(b"\0\"a@b\"@example.test\0pw")),
            [b"\0\"a@b\"\0pw".to_vec()]
        );
        assert_eq!(local(plain(b"\0alice\0pw")), [b"\0alice\0pw".to_vec()]);
        let login = parse_login(
            Secret::copy_of(b64(b"alice@example.test").as_bytes()),
            Secret::copy_of(b64(b"pw").as_bytes()),
        )
        .expect("login");
        assert_eq!(local(login), [b"alice".to_vec(), b"pw".to_vec()]);
        let xoauth2 = parse_token(
            Mechanism::XOAuth2,
            b64(b"user=alice@example.test\x01auth=Bearer tok\x01\x01").as_bytes(),
        )
        .expect("xoauth2");
        assert_eq!(
            local(xoauth2),
            [b"user=alice\x01auth=Bearer tok\x01\x01".to_vec()]
        );
        let bearer = parse_token(
            Mechanism::OAuthBearer,
            b64(b"n,a=a=2Cb=3Dc@example.test,\x01host=h\x01auth=Bearer t\x01\x01").as_bytes(),
        )
        .expect("oauthbearer");
        assert_eq!(
            local(bearer),
            [b"n,a=a=2Cb=3Dc,\x01host=h\x01auth=Bearer t\x01\x01".to_vec()]
        );
        // The login the relay routes, tags and isolates by stays whole.
        let c = plain(b"\0alice@example.test\0pw");
        assert_eq!(c.login().expose().as_str(), "alice@example.test");
        // "address" changes nothing.
        let c = plain(b"\0alice@example.test\0pw").presented_as(LoginForm::Address);
        assert_eq!(sent(&c), [b"\0alice@example.test\0pw".to_vec()]);
    }

    #[test]
    fn plain_without_two_nuls_is_malformed() {
        assert_eq!(
            parse_plain(b64(b"alice\0secret").as_bytes()).err(),
            Some(SaslError::Malformed)
        );
        assert_eq!(parse_plain(b"!!!").err(), Some(SaslError::Base64));
    }

    #[test]
    fn xoauth2_login_is_the_user_field() {
        let enc = b64(b"user=bob@example.test\x01auth=Bearer tok\x01\x01");
        let c = parse_token(Mechanism::XOAuth2, enc.as_bytes()).expect("valid");
        assert_eq!(c.login().expose().as_str(), "bob@example.test");
        // No login, no shared one: an empty or missing user= is refused.
        for bad in [
            &b"user=\x01auth=Bearer tok\x01\x01"[..],
            b"auth=Bearer tok\x01\x01",
        ] {
            assert_eq!(
                parse_token(Mechanism::XOAuth2, b64(bad).as_bytes()).err(),
                Some(SaslError::Malformed)
            );
        }
    }

    #[test]
    fn oauthbearer_login_is_the_gs2_authzid() {
        let enc =
            b64(b"n,a=carol=2Cx=3Dy@example.test,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01");
        let c = parse_token(Mechanism::OAuthBearer, enc.as_bytes()).expect("valid");
        assert_eq!(c.login().expose().as_str(), "carol,x=y@example.test");
        // Without a=, every such user would share one login tag, one
        // circuit and one message allowance: refused.
        let no_authzid = b64(b"n,,\x01auth=Bearer t\x01\x01");
        assert_eq!(
            parse_token(Mechanism::OAuthBearer, no_authzid.as_bytes()).err(),
            Some(SaslError::NoAuthzid)
        );
        let empty_authzid = b64(b"n,a=,\x01auth=Bearer t\x01\x01");
        assert_eq!(
            parse_token(Mechanism::OAuthBearer, empty_authzid.as_bytes()).err(),
            Some(SaslError::NoAuthzid)
        );
        let broken = b64(b"x,,\x01auth=Bearer t\x01\x01");
        assert!(parse_token(Mechanism::OAuthBearer, broken.as_bytes()).is_err());
    }

    #[test]
    fn oauthbearer_names_the_provider_not_the_relay() {
        let enc = b64(b"n,a=carol@example.test,\x01host=relay.collective.example\x01port=465\x01auth=Bearer t\x01\x01");
        let c = parse_token(Mechanism::OAuthBearer, enc.as_bytes()).expect("valid");
        let Credentials::Token { encoded, .. } = c.for_endpoint("smtp.provider.example", 587)
        else {
            panic!("still a token");
        };
        assert_eq!(
            decode_b64(encoded.expose()).expect("b64").expose(),
            b"n,a=carol@example.test,\x01host=smtp.provider.example\x01port=587\x01auth=Bearer t\x01\x01"
        );
        // Without host= and port=, nothing is added; other mechanisms pass.
        let bare = b64(b"n,a=c@example.test,\x01auth=Bearer t\x01\x01");
        let c = parse_token(Mechanism::OAuthBearer, bare.as_bytes()).expect("valid");
        let Credentials::Token { encoded, .. } = c.for_endpoint("h", 1) else {
            panic!("still a token");
        };
        assert_eq!(encoded.expose(), bare.as_bytes());
        let x = b64(b"user=u\x01auth=Bearer t\x01host=relay\x01\x01");
        let c = parse_token(Mechanism::XOAuth2, x.as_bytes()).expect("valid");
        let Credentials::Token { encoded, .. } = c.for_endpoint("h", 1) else {
            panic!("still a token");
        };
        assert_eq!(encoded.expose(), x.as_bytes());
    }

    #[test]
    fn plain_response_is_assembled_once_and_decodes_back() {
        let encoded = plain_response(b"", b"alice", b"pw");
        assert_eq!(encoded.expose(), b64(b"\0alice\0pw").as_bytes());
        assert_eq!(decode_b64(b" = ").expect("empty").expose(), b"");
    }

    #[test]
    fn login_exchange_asks_for_user_then_password() {
        let (mut exchange, step) = Exchange::start(Mechanism::Login, None);
        assert!(matches!(step, Step::Challenge(b"VXNlcm5hbWU6")));
        let step = exchange.answer(Secret::copy_of(b64(b"alice").as_bytes()));
        assert!(matches!(step, Step::Challenge(b"UGFzc3dvcmQ6")));
        let c = done(exchange.answer(Secret::copy_of(b64(b"pw").as_bytes()))).expect("ok");
        assert_eq!(c.login().expose().as_str(), "alice");
        // With the user name as initial response, only the password is asked.
        let (mut exchange, step) = Exchange::start(
            Mechanism::Login,
            Some(Secret::copy_of(b64(b"bob").as_bytes())),
        );
        assert!(matches!(step, Step::Challenge(b"UGFzc3dvcmQ6")));
        assert!(matches!(
            exchange.answer(Secret::copy_of(b"*")),
            Step::Done(Err(SaslError::Cancelled))
        ));
    }

    #[test]
    fn plain_exchange_without_initial_response_asks_once() {
        let (mut exchange, step) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(step, Step::Challenge(b"")));
        let c = done(exchange.answer(Secret::copy_of(b64(b"\0u\0p").as_bytes()))).expect("ok");
        assert_eq!(c.login().expose().as_str(), "u");
        let (_, step) = Exchange::start(Mechanism::Plain, Some(Secret::copy_of(b"%%%")));
        assert_eq!(done(step).err(), Some(SaslError::Base64));
    }

    fn mechanism_of(plan: &Plan) -> Option<(Mechanism, usize)> {
        match plan {
            Plan::Authenticate {
                mechanism, answers, ..
            } => Some((*mechanism, answers.len())),
            _ => None,
        }
    }

    #[test]
    fn smtp_plans_convert_plain_and_login_or_send_as_sent() {
        let plain = parse_plain(b64(b"\0u\0p").as_bytes()).expect("plain");
        let login = parse_login(
            Secret::copy_of(b64(b"u").as_bytes()),
            Secret::copy_of(b64(b"p").as_bytes()),
        )
        .expect("login");
        let smtp = |plain, login| Offered {
            plain,
            login,
            fall_back_as_sent: true,
            ..Offered::default()
        };
        assert_eq!(
            mechanism_of(&plan(&plain, smtp(true, true))),
            Some((Mechanism::Plain, 0))
        );
        assert_eq!(
            mechanism_of(&plan(&plain, smtp(false, true))),
            Some((Mechanism::Login, 2))
        );
        assert_eq!(
            mechanism_of(&plan(&plain, smtp(false, false))),
            Some((Mechanism::Plain, 0))
        );
        assert_eq!(
            mechanism_of(&plan(&login, smtp(true, true))),
            Some((Mechanism::Login, 2))
        );
        assert_eq!(
            mechanism_of(&plan(&login, smtp(true, false))),
            Some((Mechanism::Plain, 0))
        );
        match plan(&login, smtp(true, false)) {
            Plan::Authenticate { initial, .. } => {
                assert_eq!(
                    initial.expect("initial").expose(),
                    b64(b"\0u\0p").as_bytes()
                )
            }
            _ => panic!("PLAIN expected"),
        }
        // An authorization identity cannot travel as LOGIN: sent as it was.
        let authz = parse_plain(b64(b"admin\0u\0p").as_bytes()).expect("plain");
        assert_eq!(
            mechanism_of(&plan(&authz, smtp(false, true))),
            Some((Mechanism::Plain, 0))
        );
    }

    #[test]
    fn imap_plans_use_plain_or_the_login_command_or_nothing() {
        let plain = parse_plain(b64(b"\0u\0p").as_bytes()).expect("plain");
        let authz = parse_plain(b64(b"admin\0u\0p").as_bytes()).expect("plain");
        let token = parse_token(
            Mechanism::XOAuth2,
            b64(b"user=u\x01auth=Bearer t\x01\x01").as_bytes(),
        )
        .expect("token");
        let imap = |plain, login_command| Offered {
            plain,
            login_command,
            ..Offered::default()
        };
        assert_eq!(
            mechanism_of(&plan(&plain, imap(true, true))),
            Some((Mechanism::Plain, 0))
        );
        match plan(&plain, imap(false, true)) {
            Plan::LoginCommand { user, password } => {
                assert_eq!((user.expose(), password.expose()), (&b"u"[..], &b"p"[..]))
            }
            _ => panic!("LOGIN command expected"),
        }
        assert!(matches!(
            plan(&plain, imap(false, false)),
            Plan::Unsupported
        ));
        assert!(matches!(plan(&authz, imap(false, true)), Plan::Unsupported));
        assert!(matches!(plan(&token, imap(true, true)), Plan::Unsupported));
        let with_xoauth2 = Offered {
            xoauth2: true,
            ..imap(true, true)
        };
        assert_eq!(
            mechanism_of(&plan(&token, with_xoauth2)),
            Some((Mechanism::XOAuth2, 0))
        );
    }
}
