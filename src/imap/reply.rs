//! The relay's own IMAP texts after login, in one catalogue: about the
//! commands it refuses or rewrites, and when it ends a session. They name
//! neither the software nor the provider, and never echo client input.

/// The relay's invitation for a literal it reads itself.
pub(crate) const CONTINUE: &str = "+ Ready for literal data\r\n";

/// Tagged completions (what follows the tag).
pub(crate) mod tagged {
    /// ID, answered here.
    pub(crate) const ID: &str = "OK ID completed";
    /// A line that is not a command.
    pub(crate) const MALFORMED: &str = "BAD Malformed command";
    /// A command line over the limit.
    pub(crate) const LINE_TOO_LONG: &str = "BAD [TOOBIG] Command line too long";
    /// A synchronizing literal over the limit, never invited (after login).
    pub(crate) const LITERAL_REFUSED: &str = "NO [TOOBIG] Literal too large";
    /// COMPRESS would hide the session from the relay.
    pub(crate) const NO_COMPRESS: &str = "BAD COMPRESS is not available through this relay";
    /// A second login, or STARTTLS, after login.
    pub(crate) const ALREADY_AUTHENTICATED: &str = "BAD Already authenticated";
    /// Commands whose data the relay would not see (REPLACE, URLAUTH, …).
    pub(crate) const NOT_HERE: &str = "BAD Command not available through this relay";
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
}

/// Untagged lines, line ending included.
pub(crate) mod untagged {
    /// ID answered here: the relay's own is empty.
    pub(crate) const ID_NIL: &str = "* ID NIL\r\n";
    /// Silent past the idle timeout.
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
