//! The relay's own IMAP texts, in one catalogue: what it says before login,
//! when a login does not succeed, about the commands it refuses or rewrites
//! after login, and when it ends a session. They name neither the software
//! nor the provider, and never echo client input.

use crate::login::{Outcome, Unreachable};
use crate::privacy::WipedBuf;

/// Capabilities before login over TLS: what the relay itself does. No
/// software name, nothing from any provider.
pub(crate) const CAPABILITIES_TLS: &str =
    "IMAP4rev1 SASL-IR ID AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER";
/// Capabilities before STARTTLS: no way to log in yet.
pub(crate) const CAPABILITIES_PLAIN: &str = "IMAP4rev1 STARTTLS LOGINDISABLED ID";

/// The relay's invitation for a literal it reads itself.
pub(crate) const CONTINUE: &str = "+ Ready for literal data\r\n";

/// Tagged completions (what follows the tag).
pub(crate) mod tagged {
    /// CAPABILITY.
    pub(crate) const CAPABILITY: &str = "OK CAPABILITY completed";
    /// NOOP.
    pub(crate) const NOOP: &str = "OK NOOP completed";
    /// ID, answered here.
    pub(crate) const ID: &str = "OK ID completed";
    /// LOGOUT.
    pub(crate) const LOGOUT: &str = "OK LOGOUT completed";
    /// STARTTLS accepted.
    pub(crate) const BEGIN_TLS: &str = "OK Begin TLS negotiation now";
    /// STARTTLS over TLS.
    pub(crate) const TLS_ACTIVE: &str = "BAD TLS is already active";
    /// A line that is not a command.
    pub(crate) const MALFORMED: &str = "BAD Malformed command";
    /// The provider could not be reached, or went away during the login.
    pub(crate) const UNREACHABLE: &str =
        "NO [UNAVAILABLE] The mail server is unreachable; try again later";
    /// A command the relay does not take before login.
    pub(crate) const NOT_BEFORE_LOGIN: &str = "BAD Command unknown or not allowed before login";
    /// LOGIN/AUTHENTICATE before TLS.
    pub(crate) const TLS_FIRST: &str = "NO [PRIVACYREQUIRED] Use STARTTLS first";
    /// LOGIN without exactly a user name and a password.
    pub(crate) const LOGIN_SYNTAX: &str = "BAD Expected LOGIN user password";
    /// A command line over the limit.
    pub(crate) const LINE_TOO_LONG: &str = "BAD [TOOBIG] Command line too long";
    /// A synchronizing literal over the limit, never invited (before login).
    pub(crate) const LITERAL_TOO_LARGE: &str = "BAD [TOOBIG] Literal too large";
    /// A synchronizing literal over the limit, never invited (after login).
    pub(crate) const LITERAL_REFUSED: &str = "NO [TOOBIG] Literal too large";
    /// COMPRESS would hide the session from the relay.
    pub(crate) const NO_COMPRESS: &str = "BAD COMPRESS is not available through this relay";
    /// A second login, or STARTTLS, after login.
    pub(crate) const ALREADY_AUTHENTICATED: &str = "BAD Already authenticated";
    /// Commands whose data the relay would not see (REPLACE, URLAUTH, …).
    pub(crate) const NOT_HERE: &str = "BAD Command not available through this relay";
    /// A push device token (or a SETMETADATA with a literal, which could
    /// hide one) while Delta Chat push is off.
    pub(crate) const NO_PUSH: &str = "NO [NOPERM] Push notifications are turned off on this relay";
    /// An ID command over the relay's limit.
    pub(crate) const ID_TOO_LONG: &str = "BAD [TOOBIG] ID parameters too long";
    /// APPEND that is not one.
    pub(crate) const APPEND_MALFORMED: &str = "BAD Malformed APPEND";
    /// APPEND whose mailbox name is a literal over 4096 bytes.
    pub(crate) const MAILBOX_TOO_LONG: &str = "BAD Mailbox name too long";
    /// APPEND with no message.
    pub(crate) const APPEND_WITHOUT_MESSAGE: &str = "BAD APPEND without a message";
    /// CATENATE, UTF8 and other APPEND forms the relay would not see.
    pub(crate) const APPEND_FORM: &str = "BAD APPEND form not supported";
    /// An APPENDed message whose header block is over `max_header_bytes`.
    pub(crate) const HEADER_TOO_LARGE: &str = "NO [LIMIT] Message header block too large";
    /// An APPENDed message with more fields than `max_header_fields`.
    pub(crate) const TOO_MANY_FIELDS: &str = "NO [LIMIT] Too many header fields";
    /// An APPENDed message with bare CR or LF in its header block.
    pub(crate) const HEADER_LINE_ENDS: &str = "NO Message header lines must end in CRLF";
    /// AUTHENTICATE with a mechanism the relay does not carry.
    pub(crate) const UNKNOWN_MECHANISM: &str = "NO [CANNOT] Unsupported authentication mechanism";
    /// A SASL response that cannot be decoded.
    pub(crate) const SASL_MALFORMED: &str = "BAD Malformed authentication response";
    /// A SASL response over the limit.
    pub(crate) const SASL_TOO_LONG: &str = "BAD [TOOBIG] Authentication response too long";
    /// The client answered `*`.
    pub(crate) const SASL_CANCELLED: &str = "BAD Authentication cancelled";
    /// OAUTHBEARER without the authorization identity.
    pub(crate) const OAUTHBEARER_WITHOUT_AUTHZID: &str =
        "NO OAUTHBEARER needs a= (the authorization identity): set it to your address";
}

/// Untagged lines, line ending included.
pub(crate) mod untagged {
    /// LOGOUT before login.
    pub(crate) const LOGGING_OUT: &str = "* BYE Logging out\r\n";
    /// ID before login: the relay's own is empty.
    pub(crate) const ID_NIL: &str = "* ID NIL\r\n";
    /// At the connection cap, the oldest unauthenticated session makes room.
    pub(crate) const EVICTED: &str = "* BYE [UNAVAILABLE] The relay is full and this connection has not logged in; try again later\r\n";
    /// The relay is shutting down and the session has not logged in.
    pub(crate) const SHUTTING_DOWN: &str =
        "* BYE [UNAVAILABLE] The relay is shutting down, try again later\r\n";
    /// Not logged in by the pre-authentication deadline.
    pub(crate) const PREAUTH_TIMEOUT: &str = "* BYE [UNAVAILABLE] Took too long to log in\r\n";
    /// Silent for the command timeout before login, or the idle timeout
    /// after.
    pub(crate) const IDLE: &str = "* BYE [UNAVAILABLE] Autologout: idle for too long\r\n";
    /// A literal below the transfer rate floor.
    pub(crate) const TOO_SLOW: &str = "* BYE [UNAVAILABLE] Literal data arriving too slowly\r\n";
    /// The provider connection broke without a BYE of its own.
    pub(crate) const PROVIDER_LOST: &str =
        "* BYE [UNAVAILABLE] Connection to the mail server was lost\r\n";
    /// A line over the limit inside a command: the relay cannot stay in step.
    pub(crate) const LINE_TOO_LONG: &str = "* BYE [TOOBIG] Command line too long\r\n";
    /// A non-synchronizing literal over the limit: already on its way.
    pub(crate) const LITERAL_TOO_LARGE: &str = "* BYE [TOOBIG] Literal too large\r\n";
}

/// The tagged reply to a login that did not reach the provider's verdict,
/// or was refused here; `None` when the provider's own reply is relayed.
pub(crate) fn login_failure<S, R>(outcome: &Outcome<S, R>) -> Option<&'static str> {
    Some(match outcome {
        Outcome::Accepted { .. } | Outcome::Refused { .. } => return None,
        // One reply for every password, temporary so that a client does
        // not ask its user for a new password.
        Outcome::Locked | Outcome::ProviderBudget => {
            "NO [UNAVAILABLE] Too many failed logins, try again later"
        }
        // Dovecot's wording for a wrong password, so that the relay's
        // routing table cannot be probed.
        // Members only: the same text for every permanent failure.
        Outcome::NoRoute | Outcome::Denied => "NO [AUTHENTICATIONFAILED] Authentication failed.",
        Outcome::Unreachable(Unreachable::Tls) => {
            "NO [UNAVAILABLE] The mail server failed TLS verification; try again later"
        }
        Outcome::Unreachable(Unreachable::TorNotReady) => {
            "NO [UNAVAILABLE] The relay's Tor connection is still starting; try again in a minute"
        }
        Outcome::Unreachable(Unreachable::Network)
        | Outcome::Lost
        | Outcome::Abandoned
        | Outcome::Evicted
        | Outcome::TooSlow => tagged::UNREACHABLE,
        Outcome::Unsupported => {
            "NO [CANNOT] Your mail server does not offer this authentication mechanism"
        }
    })
}

/// Appends `tag SP text CRLF`.
pub(crate) fn write_tagged(out: &mut WipedBuf, tag: &[u8], text: &str) {
    out.extend_from_slices(&[tag, b" ", text.as_bytes(), b"\r\n"]);
}
