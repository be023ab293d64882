//! SASL: which mechanisms the relay passes through, and how the login is
//! read from a client's SASL response (to pick the upstream).
//!
//! The relay never decides whether a password is right: the upstream does.
//! This module only parses enough of the client's response to know *where*
//! to send it. Logins are returned as [`Sensitive`]; responses as [`Secret`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::privacy::{Secret, Sensitive};

/// SASL mechanisms the relay carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
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
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::XOAuth2,
        Mechanism::OAuthBearer,
    ];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// From smtp-proto's mechanism bit.
    pub fn from_smtp_proto(bit: u64) -> Option<Self> {
        match bit {
            smtp_proto::AUTH_PLAIN => Some(Mechanism::Plain),
            smtp_proto::AUTH_LOGIN => Some(Mechanism::Login),
            smtp_proto::AUTH_XOAUTH2 => Some(Mechanism::XOAuth2),
            smtp_proto::AUTH_OAUTHBEARER => Some(Mechanism::OAuthBearer),
            _ => None,
        }
    }

    /// smtp-proto's mechanism bit.
    pub fn smtp_proto_bit(self) -> u64 {
        match self {
            Mechanism::Plain => smtp_proto::AUTH_PLAIN,
            Mechanism::Login => smtp_proto::AUTH_LOGIN,
            Mechanism::XOAuth2 => smtp_proto::AUTH_XOAUTH2,
            Mechanism::OAuthBearer => smtp_proto::AUTH_OAUTHBEARER,
        }
    }
}

/// What a client's SASL response says, enough to route and relay it.
pub enum ClientCredentials {
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

/// A SASL response that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslError {
    /// Not valid base64.
    #[error("invalid base64")]
    Base64,
    /// Decoded, but not of the mechanism's form.
    #[error("malformed SASL response")]
    Malformed,
}

/// Decodes one base64 SASL line (surrounding white space ignored).
pub fn decode_b64(text: &[u8]) -> Result<Secret, SaslError> {
    let trimmed = text.trim_ascii();
    if trimmed == b"=" {
        return Ok(Secret::default());
    }
    B64.decode(trimmed)
        .map(Secret::new)
        .map_err(|_| SaslError::Base64)
}

/// Encodes bytes as base64 (for re-encoding a PLAIN response as LOGIN steps).
pub fn encode_b64(bytes: &[u8]) -> Secret {
    Secret::new(B64.encode(bytes).into_bytes())
}

/// SASL LOGIN: the two base64 answers (user name, password), checked to
/// be base64 and kept encoded.
pub fn login_credentials(user: Secret, password: Secret) -> Result<ClientCredentials, SaslError> {
    if decode_b64(user.expose()).is_err() || decode_b64(password.expose()).is_err() {
        return Err(SaslError::Base64);
    }
    Ok(ClientCredentials::Login {
        user_encoded: user,
        password_encoded: password,
    })
}

/// Parses a PLAIN response (`authzid NUL authcid NUL password`).
pub fn parse_plain(encoded: &[u8]) -> Result<ClientCredentials, SaslError> {
    let decoded = decode_b64(encoded)?;
    let mut parts = decoded.expose().splitn(3, |b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(ClientCredentials::Plain {
        encoded: Secret::new(encoded.trim_ascii().to_vec()),
        authzid: Secret::new(authzid.to_vec()),
        authcid: Secret::new(authcid.to_vec()),
        password: Secret::new(password.to_vec()),
    })
}

/// Parses an XOAUTH2 or OAUTHBEARER response far enough to find the login.
pub fn parse_token(mechanism: Mechanism, encoded: &[u8]) -> Result<ClientCredentials, SaslError> {
    let decoded = decode_b64(encoded)?;
    let valid = match mechanism {
        Mechanism::XOAuth2 => xoauth2_user(decoded.expose()).is_some(),
        _ => oauthbearer_user(decoded.expose()).is_some(),
    };
    if !valid {
        return Err(SaslError::Malformed);
    }
    Ok(ClientCredentials::Token {
        mechanism,
        encoded: Secret::new(encoded.trim_ascii().to_vec()),
    })
}

impl ClientCredentials {
    /// The login the upstream is chosen by. For OAUTHBEARER without an `a=`
    /// authorization identity, the login is empty and routing uses the default.
    pub fn login(&self) -> Sensitive<String> {
        let bytes: Vec<u8> = match self {
            ClientCredentials::Plain { authcid, .. } => authcid.expose().to_vec(),
            ClientCredentials::Login { user_encoded, .. } => decode_b64(user_encoded.expose())
                .map(|s| s.expose().to_vec())
                .unwrap_or_default(),
            ClientCredentials::Token { mechanism, encoded } => {
                let decoded = decode_b64(encoded.expose()).unwrap_or_default();
                let user = match mechanism {
                    Mechanism::XOAuth2 => xoauth2_user(decoded.expose()),
                    _ => oauthbearer_user(decoded.expose()).flatten(),
                };
                user.unwrap_or_default()
            }
        };
        Sensitive::new(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The mechanism the client chose.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            ClientCredentials::Plain { .. } => Mechanism::Plain,
            ClientCredentials::Login { .. } => Mechanism::Login,
            ClientCredentials::Token { mechanism, .. } => *mechanism,
        }
    }
}

/// `user=<login>\x01auth=Bearer <token>\x01\x01` → the login.
fn xoauth2_user(decoded: &[u8]) -> Option<Vec<u8>> {
    let mut user = None;
    let mut has_auth = false;
    for field in decoded.split(|b| *b == 1) {
        if let Some(u) = field.strip_prefix(b"user=") {
            user = Some(u.to_vec());
        } else if field.starts_with(b"auth=") {
            has_auth = true;
        }
    }
    user.filter(|_| has_auth)
}

/// `n,a=<authzid>,\x01…auth=Bearer <token>\x01\x01` → `Some(Some(login))`,
/// `Some(None)` when well-formed without `a=`, `None` when malformed.
fn oauthbearer_user(decoded: &[u8]) -> Option<Option<Vec<u8>>> {
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
            // saslname: "=2C" is ',' and "=3D" is '='.
            let text = String::from_utf8_lossy(name)
                .replace("=2C", ",")
                .replace("=3D", "=");
            Some(Some(text.into_bytes()))
        }
        None if authzid.is_empty() => Some(None),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_login_is_the_authcid() {
        let enc = B64.encode(b"\0alice@example.test\0secret");
        let c = parse_plain(enc.as_bytes()).expect("valid");
        assert_eq!(c.login().expose(), "alice@example.test");
        assert_eq!(c.mechanism(), Mechanism::Plain);
    }

    #[test]
    fn plain_without_two_nuls_is_malformed() {
        let enc = B64.encode(b"alice\0secret");
        assert_eq!(
            parse_plain(enc.as_bytes()).err(),
            Some(SaslError::Malformed)
        );
        assert_eq!(parse_plain(b"!!!").err(), Some(SaslError::Base64));
    }

    #[test]
    fn xoauth2_login_is_the_user_field() {
        let enc = B64.encode(b"user=bob@example.test\x01auth=Bearer tok\x01\x01");
        let c = parse_token(Mechanism::XOAuth2, enc.as_bytes()).expect("valid");
        assert_eq!(c.login().expose(), "bob@example.test");
    }

    #[test]
    fn oauthbearer_login_is_the_gs2_authzid() {
        let enc =
            B64.encode(b"n,a=carol=2Cx@example.test,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01");
        let c = parse_token(Mechanism::OAuthBearer, enc.as_bytes()).expect("valid");
        assert_eq!(c.login().expose(), "carol,x@example.test");
        let no_authzid = B64.encode(b"n,,\x01auth=Bearer t\x01\x01");
        let c = parse_token(Mechanism::OAuthBearer, no_authzid.as_bytes()).expect("valid");
        assert_eq!(c.login().expose(), "");
        let broken = B64.encode(b"x,,\x01auth=Bearer t\x01\x01");
        assert!(parse_token(Mechanism::OAuthBearer, broken.as_bytes()).is_err());
    }
}
