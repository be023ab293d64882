//! Configuration: TOML read into raw serde structures, then validated into a
//! [`Config`] the rest of the relay can trust.
//!
//! Each table has its own module holding its raw serde structure, its
//! validated type and its check: `server`, `listen`, `tls`, `upstream` (with
//! `[routing]`), `egress`, `limits`, `sanitize`, `logging`, `policy`, `access`; `summary` renders
//! `mailveil check`. This file ties them together, in a fixed order, so the
//! first problem reported is always the same one. Unknown keys are refused and
//! every validation error names the key it is about. Nothing here logs; error
//! messages carry key names and reasons, never secrets (the config holds none:
//! credentials always come from the client).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod access;
mod egress;
mod imap;
mod limits;
mod listen;
mod logging;
mod onion;
mod policy;
mod sanitize;
mod server;
mod summary;
mod template;
mod tls;
mod upstream;

pub use access::{AccessConfig, DEFAULT_SECRET_CREDENTIAL, SecretSource};
pub use egress::{
    DEFAULT_EGRESS, EgressConfig, EgressMode, Isolate, TestingAuthority, TestingFallback,
    TestingNetwork,
};
pub(crate) use limits::MESSAGE_ROOM_UNIT;
pub use limits::{DEFAULT_MAX_MESSAGE_BYTES, Limits};
pub use listen::{ListenAddress, Listener, ListenerTls, Protocol, Serves};
pub use logging::{DEFAULT_STATS_INTERVAL_MINUTES, MIN_STATS_INTERVAL_MINUTES};
pub use onion::{OnionConfig, Vanguards};
pub use policy::Outgoing;
pub use sanitize::{SanitizeConfig, SanitizeMode};
pub(crate) use upstream::normalize_domain;
pub use upstream::{Endpoint, LoginForm, Pins, Upstream, UpstreamTls};

/// A configuration problem, naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error(transparent)]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent with others.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// The key, as a path (`upstream[0].smtp.port`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Values of the deployment template were left as they came.
    #[error("{}", unfilled_message(.0))]
    Unfilled(Vec<(String, String)>),
}

fn unfilled_message(left: &[(String, String)]) -> String {
    let mut text = format!(
        "{} setting{} of the template still to fill in (each value that begins with \"{}\"):",
        left.len(),
        if left.len() == 1 { "" } else { "s" },
        template::MARK
    );
    for (key, hint) in left {
        text.push_str(&format!("\n  `{key}`: {hint}"));
    }
    text
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole file as written: one field per table, each table's own raw
/// structure refusing keys it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    #[serde(default)]
    listen: Vec<listen::RawListener>,
    #[serde(default)]
    tls: tls::RawTls,
    #[serde(default)]
    upstream: Vec<upstream::RawUpstream>,
    routing: Option<upstream::RawRouting>,
    #[serde(default)]
    egress: egress::RawEgress,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    sanitize: sanitize::RawSanitize,
    #[serde(default)]
    logging: logging::RawLogging,
    #[serde(default)]
    imap: imap::RawImap,
    #[serde(default)]
    policy: policy::RawPolicy,
    access: Option<access::RawAccess>,
    onion: Option<onion::RawOnion>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name the relay gives itself in its SMTP greeting and EHLO reply.
    pub hostname: String,
    /// Name the relay uses in EHLO towards every upstream, for every user.
    pub upstream_ehlo_name: String,
    /// Listening sockets.
    pub listeners: Vec<Listener>,
    /// Certificate chain file; `None` makes an ephemeral self-signed one.
    pub certificate: Option<PathBuf>,
    /// Private key file, set exactly when `certificate` is.
    pub private_key: Option<PathBuf>,
    /// Upstreams by position; routing refers to them by index.
    pub upstreams: Vec<Upstream>,
    /// Index of the upstream for logins without `@` (`[routing] bare_logins`).
    pub bare_upstream: Option<usize>,
    /// Index of the upstream for logins whose domain no upstream lists
    /// (`domains = ["*"]`).
    pub catch_all: Option<usize>,
    /// Login domain (normalized) → upstream index.
    pub domain_routes: HashMap<String, usize>,
    /// Delta Chat push passes (`[imap] deltachat_push`).
    pub deltachat_push: bool,
    /// Egress.
    pub egress: EgressConfig,
    /// Limits.
    pub limits: Limits,
    /// Header sanitizer.
    pub sanitize: SanitizeConfig,
    /// How often aggregate counters are logged; `None`: never.
    pub stats_interval: Option<Duration>,
    /// Members only (`[access]`); `None`: anyone the providers accept.
    pub access: Option<AccessConfig>,
    /// The relay's own onion service (`[onion]`), when it has one.
    pub onion: Option<OnionConfig>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let left = template::unfilled(text);
        if !left.is_empty() {
            return Err(ConfigError::Unfilled(left));
        }
        let raw: RawConfig = toml::from_str(text)?;
        validate(raw)
    }

    /// The upstream a login goes to: by the domain after the last `@`
    /// (normalized), else the catch-all; a login without `@` to
    /// `bare_logins`. `None` when none applies: the login is refused.
    pub fn route(&self, login: &str) -> Option<usize> {
        match login.rsplit_once('@') {
            Some((_, domain)) => upstream::normalize_domain(domain)
                .and_then(|d| self.domain_routes.get(d.as_str()).copied())
                .or(self.catch_all),
            None => self.bare_upstream,
        }
    }
}

/// Checks the tables one after another. The order decides which problem is
/// reported when there are several, so it is kept as it has always been.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let server = server::validate(raw.server)?;
    let listeners = listen::validate(raw.listen)?;
    let tls = tls::validate(raw.tls)?;
    // `[[upstream]]` must exist before `egress.mode` is read; endpoints then
    // take that mode unless their upstream sets its own.
    upstream::require_some(&raw.upstream)?;
    let global_mode = egress::global_mode(&raw.egress)?;
    let outgoing = policy::global(&raw.policy)?;
    let routes = upstream::validate(raw.upstream, raw.routing, global_mode, outgoing)?;
    let egress = egress::validate(raw.egress, global_mode, &routes.upstreams)?;
    let limits = limits::validate(raw.limits)?;
    limits::check_together(&limits)?;
    listen::check_served(&listeners, &routes.upstreams)?;
    let stats_interval = logging::validate(raw.logging)?;
    let sanitize = sanitize::validate(raw.sanitize)?;
    let access = access::validate(raw.access)?;
    let onion = onion::validate(raw.onion, &listeners)?;

    Ok(Config {
        hostname: server.hostname,
        upstream_ehlo_name: server.upstream_ehlo_name,
        listeners,
        certificate: tls.certificate,
        private_key: tls.private_key,
        upstreams: routes.upstreams,
        bare_upstream: routes.bare_upstream,
        catch_all: routes.catch_all,
        domain_routes: routes.domain_routes,
        deltachat_push: imap::deltachat_push(&raw.imap),
        egress,
        limits,
        sanitize,
        stats_interval,
        access,
        onion,
    })
}

/// `value`, or `default` when unset, if it lies in `min..=max`.
fn bounded(
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(key, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

/// A name used on the wire in greetings and EHLO: a domain-ish token or an
/// address literal, nothing that could inject a second line.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            "expected a host name or an address literal like [127.0.0.1]",
        ))
    }
}

/// A host to connect to (or a certificate name): a DNS name or an IP
/// address, bracketed or not.
/// `host` without the brackets of an IPv6 literal: the one place they are
/// trimmed.
pub(crate) fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    let bare = bare(host);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && (bare.parse::<std::net::IpAddr>().is_ok()
            || bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !ok {
        return Err(invalid(key, "expected a host name or IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SMTP upstreams, one routed by domain, the other for every other
    /// domain and for logins without `@`: the
    /// base most section tests edit.
    pub(super) const MINIMAL: &str = r#"
[[listen]]
protocol = "smtp"
address = "127.0.0.1:1465"
tls = "implicit"

[[upstream]]
name = "a"
smtp = { host = "smtp.a.example", port = 465, tls = "implicit" }
domains = ["a.example", "A2.example"]

[[upstream]]
name = "b"
smtp = { host = "smtp.b.example", port = 587, tls = "starttls" }
domains = ["*"]

[routing]
bare_logins = "b"
"#;

    /// What `Config::parse` says when it refuses `text`.
    pub(super) fn refusal(text: &str) -> String {
        Config::parse(text).expect_err("refused").to_string()
    }

    #[test]
    fn minimal_config_routes_by_login_domain_then_catch_all() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.route("alice@a.example"), Some(0));
        assert_eq!(c.route("alice@a2.EXAMPLE"), Some(0));
        assert_eq!(c.route("bob@elsewhere.example"), Some(1));
        assert_eq!(c.route("bare-login"), Some(1));
        assert_eq!(c.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.upstream_ehlo_name, "[127.0.0.1]");
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let text = MINIMAL.replace("[routing]", "[routing]\nfallback = \"a\"");
        let err = Config::parse(&text).expect_err("unknown key").to_string();
        assert!(err.contains("fallback"), "{err}");
    }

    #[test]
    fn unknown_table_is_refused_and_named() {
        let err = refusal(&format!("{MINIMAL}\n[extra]\nx = 1\n"));
        assert!(err.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn first_problem_in_table_order_is_the_one_reported() {
        // No upstream and a bad egress mode: the missing upstream is named.
        let text = "[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:1465\"\n\
                    tls = \"implicit\"\n[egress]\nmode = \"bogus\"\n";
        assert_eq!(
            refusal(text),
            "`upstream`: at least one [[upstream]] table is required"
        );
        // A limit out of range and an IMAP listener nothing serves: the
        // limit is named.
        let text = format!(
            "{MINIMAL}\n[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1993\"\n\
             tls = \"implicit\"\n[limits]\nmax_recipients = 0\n"
        );
        assert_eq!(
            refusal(&text),
            "`limits.max_recipients`: must be between 1 and 10000"
        );
        // A bad stats interval and a bad sanitize list: logging comes first.
        let text = format!(
            "{MINIMAL}\n[sanitize]\nallow = [\"X\"]\n[logging]\nstats_interval_minutes = 1\n"
        );
        assert!(
            refusal(&text).starts_with("`logging.stats_interval_minutes`"),
            "{text}"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/mailveil.example.toml");
        if cfg!(feature = "tor") {
            Config::parse(text).expect("example config must validate");
        } else {
            // Built without Tor, the example's default egress is refused, and
            // says why.
            let err = Config::parse(text).expect_err("tor without the feature");
            assert!(err.to_string().contains("egress"), "{err}");
        }
    }
}
