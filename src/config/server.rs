//! `[server]`: the names the relay says on the wire, to clients (greeting,
//! EHLO reply) and to every upstream (EHLO). Must never accept a name that
//! could carry a second line into a greeting, and never default to anything
//! taken from the machine.

use serde::Deserialize;

use super::{ConfigError, check_name};

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    hostname: Option<String>,
    upstream_ehlo_name: Option<String>,
}

/// The validated names.
pub(super) struct Server {
    /// Name in the greeting and EHLO reply to clients.
    pub(super) hostname: String,
    /// Name in EHLO to every upstream, for every user.
    pub(super) upstream_ehlo_name: String,
}

/// Fills in the defaults and checks both names.
pub(super) fn validate(raw: RawServer) -> Result<Server, ConfigError> {
    let hostname = raw.hostname.unwrap_or_else(|| "localhost".into());
    check_name("server.hostname", &hostname)?;
    let upstream_ehlo_name = raw
        .upstream_ehlo_name
        .unwrap_or_else(|| "[127.0.0.1]".into());
    check_name("server.upstream_ehlo_name", &upstream_ehlo_name)?;
    Ok(Server {
        hostname,
        upstream_ehlo_name,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    #[test]
    fn hostname_cannot_inject_lines() {
        let text = format!("[server]\nhostname = \"a\\r\\n250 x\"\n{MINIMAL}");
        let err = Config::parse(&text).expect_err("crlf").to_string();
        assert!(err.contains("server.hostname"), "{err}");
    }

    #[test]
    fn names_default_to_localhost_and_a_loopback_literal() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(
            (c.hostname.as_str(), c.upstream_ehlo_name.as_str()),
            ("localhost", "[127.0.0.1]")
        );
    }

    #[test]
    fn upstream_ehlo_name_cannot_be_empty() {
        let err = refusal(&format!("[server]\nupstream_ehlo_name = \"\"\n{MINIMAL}"));
        assert_eq!(
            err,
            "`server.upstream_ehlo_name`: expected a host name or an address literal like [127.0.0.1]"
        );
    }
}
