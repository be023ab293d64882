//! `[policy]`: what members may send. `outgoing = "encrypted-only"` refuses
//! a message that is not end-to-end encrypted (see `smtp::encryption`); an
//! `[[upstream]]` may set its own `outgoing`.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// `[policy]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    outgoing: Option<String>,
}

/// Which messages a member may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outgoing {
    /// Any message (the default).
    #[default]
    Any,
    /// Only end-to-end encrypted ones (OpenPGP or S/MIME), and the few
    /// that start encryption (Autocrypt Setup, Secure-Join).
    EncryptedOnly,
}

/// The relay-wide `[policy] outgoing`.
pub(super) fn global(raw: &RawPolicy) -> Result<Outgoing, ConfigError> {
    outgoing("policy.outgoing", raw.outgoing.as_deref(), Outgoing::Any)
}

/// An `outgoing` value at `key`, or `default` when unset.
pub(super) fn outgoing(
    key: &str,
    value: Option<&str>,
    default: Outgoing,
) -> Result<Outgoing, ConfigError> {
    match value {
        None => Ok(default),
        Some("any") => Ok(Outgoing::Any),
        Some("encrypted-only") => Ok(Outgoing::EncryptedOnly),
        Some(_) => Err(invalid(key, "expected \"any\" or \"encrypted-only\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    #[test]
    fn outgoing_is_any_unless_set_and_an_upstream_may_differ() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert!(c.upstreams.iter().all(|u| u.outgoing == Outgoing::Any));
        let c = Config::parse(&format!(
            "{MINIMAL}\n[policy]\noutgoing = \"encrypted-only\"\n"
        ))
        .expect("valid");
        assert!(
            c.upstreams
                .iter()
                .all(|u| u.outgoing == Outgoing::EncryptedOnly)
        );
        let text = MINIMAL.replace("domains = [\"*\"]", "domains = [\"*\"]\noutgoing = \"any\"");
        let c = Config::parse(&format!(
            "{text}\n[policy]\noutgoing = \"encrypted-only\"\n"
        ))
        .expect("valid");
        assert_eq!(
            (c.upstreams[0].outgoing, c.upstreams[1].outgoing),
            (Outgoing::EncryptedOnly, Outgoing::Any)
        );
        assert_eq!(
            refusal(&format!("{MINIMAL}\n[policy]\noutgoing = \"pgp\"\n")),
            "`policy.outgoing`: expected \"any\" or \"encrypted-only\""
        );
        assert_eq!(
            refusal(&MINIMAL.replace(
                "domains = [\"*\"]",
                "domains = [\"*\"]\noutgoing = \"plain\""
            )),
            "`upstream[1].outgoing`: expected \"any\" or \"encrypted-only\""
        );
    }
}
