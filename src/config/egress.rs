//! `[egress]`: how bytes leave for upstreams (direct, an external SOCKS5
//! proxy, the embedded Tor client), which connections may share a circuit,
//! where Tor keeps its state, and a private Tor network for tests. Must never
//! accept a proxy given by name (that would need a local DNS lookup) or a
//! testing network that is not explicitly enabled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Upstream, bounded, invalid};

/// `[egress]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    mode: Option<String>,
    isolate: Option<String>,
    socks5: Option<String>,
    proxied_connect_timeout_secs: Option<u64>,
    #[serde(default)]
    tor: RawTor,
}

/// `[egress.tor]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTor {
    runtime_dir: Option<PathBuf>,
    testing_network: Option<RawTestingNetwork>,
}

/// `[egress.tor.testing_network]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestingNetwork {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    authorities: Vec<TestingAuthority>,
    #[serde(default)]
    fallbacks: Vec<TestingFallback>,
}

/// How the relay reaches upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMode {
    /// Plain TCP (with TLS on top) from the relay's own address.
    Direct,
    /// Through an external SOCKS5 proxy (e.g. a Tor daemon's SocksPort).
    Socks5,
    /// Through the embedded Tor client.
    Tor,
}

impl EgressMode {
    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            EgressMode::Direct => "direct",
            EgressMode::Socks5 => "socks5",
            EgressMode::Tor => "tor",
        }
    }
}

/// Which connections may share a Tor circuit (or SOCKS credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolate {
    /// All connections of one account, none of two accounts.
    Account,
    /// Every client session on its own.
    Session,
}

/// A directory authority of a private Tor network (testing only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingAuthority {
    /// The authority's v3 identity (40 hex digits).
    pub v3ident: String,
    /// Its directory address (IP:port).
    pub address: SocketAddr,
}

/// A fallback directory of a private Tor network (testing only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingFallback {
    /// RSA identity fingerprint (40 hex digits).
    pub rsa_identity: String,
    /// Ed25519 identity (base64, no padding).
    pub ed25519_identity: String,
    /// OR port address (IP:port).
    pub address: SocketAddr,
}

/// A private Tor network to use instead of the public one: for tests only.
/// It also lets Tor connect to local addresses.
#[derive(Debug, Clone)]
pub struct TestingNetwork {
    /// Its authorities.
    pub authorities: Vec<TestingAuthority>,
    /// Its fallback directories.
    pub fallbacks: Vec<TestingFallback>,
}

/// Egress settings.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// The mode for upstreams that do not set their own.
    pub mode: EgressMode,
    /// Circuit (or proxy credential) isolation.
    pub isolate: Isolate,
    /// The SOCKS5 proxy, when any upstream uses `socks5`.
    pub socks5: Option<SocketAddr>,
    /// Where the embedded Tor client gets a private directory for its state
    /// and cache; `None` picks `$RUNTIME_DIRECTORY`, `$XDG_RUNTIME_DIR`, then
    /// the system temporary directory.
    pub tor_runtime_dir: Option<PathBuf>,
    /// A private Tor network (testing only).
    pub tor_testing_network: Option<TestingNetwork>,
    /// Time allowed to open a connection through Tor or the SOCKS5 proxy
    /// (a circuit takes longer than a TCP handshake); at least
    /// `limits.upstream_timeout`.
    pub proxied_connect_timeout: Duration,
}

impl EgressConfig {
    /// True when some endpoint uses the embedded Tor client.
    pub(crate) fn uses(&self, upstreams: &[Upstream], mode: EgressMode) -> bool {
        upstreams
            .iter()
            .flat_map(|u| u.smtp.iter().chain(&u.imap))
            .any(|e| e.egress == mode)
    }
}

/// The default egress mode: Tor when this build has it.
pub const DEFAULT_EGRESS: EgressMode = if cfg!(feature = "tor") {
    EgressMode::Tor
} else {
    EgressMode::Direct
};

/// An egress mode by its name in the file (`egress.mode` or an upstream's
/// `egress`); `tor` only when this build has the embedded client.
pub(super) fn mode(key: &str, value: &str) -> Result<EgressMode, ConfigError> {
    match value {
        "direct" => Ok(EgressMode::Direct),
        "socks5" => Ok(EgressMode::Socks5),
        "tor" if cfg!(feature = "tor") => Ok(EgressMode::Tor),
        "tor" => Err(invalid(
            key,
            "this build has no embedded Tor (built without the `tor` feature); use \"socks5\" with a Tor daemon",
        )),
        _ => Err(invalid(key, "expected direct, socks5 or tor")),
    }
}

/// `egress.mode`, or [`DEFAULT_EGRESS`] when unset.
pub(super) fn global_mode(raw: &RawEgress) -> Result<EgressMode, ConfigError> {
    match raw.mode.as_deref() {
        Some(m) => mode("egress.mode", m),
        None => Ok(DEFAULT_EGRESS),
    }
}

/// The rest of `[egress]`, given the global mode already read and the
/// upstreams (a SOCKS5 proxy is required when one of them uses it).
pub(super) fn validate(
    raw: RawEgress,
    mode: EgressMode,
    upstreams: &[Upstream],
) -> Result<EgressConfig, ConfigError> {
    let isolate = match raw.isolate.as_deref().unwrap_or("account") {
        "account" => Isolate::Account,
        "session" => Isolate::Session,
        _ => return Err(invalid("egress.isolate", "expected account or session")),
    };
    let socks5 = raw
        .socks5
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "egress.socks5",
                    "expected the proxy's IP:port, e.g. \"127.0.0.1:9050\" (a name would need a local DNS lookup)",
                )
            })
        })
        .transpose()?;
    let tor_testing_network = testing_network(raw.tor.testing_network)?;
    let config = EgressConfig {
        mode,
        isolate,
        socks5,
        tor_runtime_dir: raw.tor.runtime_dir,
        tor_testing_network,
        proxied_connect_timeout: Duration::from_secs(bounded(
            "egress.proxied_connect_timeout_secs",
            raw.proxied_connect_timeout_secs,
            90,
            1,
            3600,
        )?),
    };
    if config.uses(upstreams, EgressMode::Socks5) && config.socks5.is_none() {
        return Err(invalid(
            "egress.socks5",
            "required when an upstream uses egress \"socks5\"",
        ));
    }
    Ok(config)
}

/// A testing network only when `enabled = true`, with at least one
/// authority and one fallback, identities in hex.
fn testing_network(raw: Option<RawTestingNetwork>) -> Result<Option<TestingNetwork>, ConfigError> {
    let t = match raw {
        None => return Ok(None),
        Some(t) if !t.enabled => {
            return Err(invalid(
                "egress.tor.testing_network",
                "replaces the public Tor network with a private one and lets Tor reach local addresses: for test networks only; set enabled = true to use it",
            ));
        }
        Some(t) => t,
    };
    if t.authorities.is_empty() || t.fallbacks.is_empty() {
        return Err(invalid(
            "egress.tor.testing_network",
            "needs at least one authority and one fallback",
        ));
    }
    for (i, a) in t.authorities.iter().enumerate() {
        if a.v3ident.len() != 40 || !a.v3ident.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                format!("egress.tor.testing_network.authorities[{i}].v3ident"),
                "expected 40 hex digits",
            ));
        }
    }
    for (i, f) in t.fallbacks.iter().enumerate() {
        if f.rsa_identity.len() != 40 || !f.rsa_identity.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                format!("egress.tor.testing_network.fallbacks[{i}].rsa_identity"),
                "expected 40 hex digits",
            ));
        }
    }
    Ok(Some(TestingNetwork {
        authorities: t.authorities,
        fallbacks: t.fallbacks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    const ID: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

    #[test]
    fn egress_defaults_to_tor_with_account_isolation() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.egress.mode, DEFAULT_EGRESS);
        assert_eq!(c.egress.isolate, Isolate::Account);
        // Longer than a direct connect (upstream_timeout, 60 s), shorter
        // than a mail client's patience for a login.
        assert_eq!(c.egress.proxied_connect_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.upstream_timeout, Duration::from_secs(60));
        let smtp = c.upstreams[0].smtp.first().expect("smtp");
        assert_eq!(smtp.egress, DEFAULT_EGRESS);
        assert_eq!(smtp.tls_server_name.expose(), "smtp.a.example");
        if cfg!(feature = "tor") {
            assert_eq!(DEFAULT_EGRESS, EgressMode::Tor);
        }
    }

    #[test]
    fn egress_mistakes_are_refused_with_reasons() {
        let with_egress = |table: &str| format!("{MINIMAL}\n[egress]\n{table}\n");
        let cases = [
            (
                with_egress("mode = \"socks5\""),
                "egress.socks5",
                "required",
            ),
            (
                with_egress("mode = \"socks5\"\nsocks5 = \"localhost:9050\""),
                "egress.socks5",
                "IP:port",
            ),
            (
                with_egress("mode = \"carrier-pigeon\""),
                "egress.mode",
                "expected",
            ),
            (
                with_egress("isolate = \"never\""),
                "egress.isolate",
                "expected",
            ),
            (
                MINIMAL.replace("smtp.b.example", &("b".repeat(56) + ".onion"))
                    + "\n[egress]\nmode = \"direct\"\n",
                "upstream[1].smtp.host",
                ".onion",
            ),
            (
                with_egress(
                    "[egress.tor.testing_network]\nauthorities = [{ v3ident = \"00\", address = \"127.0.0.1:7000\" }]",
                ),
                "egress.tor.testing_network",
                "enabled = true",
            ),
        ];
        for (text, key, reason) in cases {
            let err = Config::parse(&text).expect_err(key).to_string();
            assert!(err.contains(key) && err.contains(reason), "{key}: {err}");
        }
    }

    #[test]
    fn testing_network_is_accepted_when_enabled() {
        let text = format!(
            "{MINIMAL}\n[egress]\nmode = \"tor\"\n[egress.tor.testing_network]\nenabled = true\nauthorities = [{{ v3ident = \"{id}\", address = \"127.0.0.1:7000\" }}]\nfallbacks = [{{ rsa_identity = \"{id}\", ed25519_identity = \"AAAA\", address = \"127.0.0.1:5000\" }}]\n",
            id = ID
        );
        match Config::parse(&text) {
            Ok(c) => {
                assert!(c.summary().contains("PRIVATE TESTING NETWORK"));
                let net = c.egress.tor_testing_network.expect("testing network");
                assert_eq!(net.authorities.len(), 1);
            }
            // A build without the embedded client refuses the mode itself.
            Err(e) => assert!(!cfg!(feature = "tor") && e.to_string().contains("egress.mode")),
        }
    }

    #[test]
    fn testing_network_identities_must_be_hex() {
        let text = format!(
            "{MINIMAL}\n[egress]\nmode = \"direct\"\n[egress.tor.testing_network]\nenabled = true\nauthorities = [{{ v3ident = \"{ID}\", address = \"127.0.0.1:7000\" }}]\nfallbacks = [{{ rsa_identity = \"{bad}\", ed25519_identity = \"AAAA\", address = \"127.0.0.1:5000\" }}]\n",
            bad = ID.replace('0', "g")
        );
        assert_eq!(
            refusal(&text),
            "`egress.tor.testing_network.fallbacks[0].rsa_identity`: expected 40 hex digits"
        );
    }

    #[test]
    fn proxied_connect_timeout_is_bounded() {
        let text = format!("{MINIMAL}\n[egress]\nproxied_connect_timeout_secs = 0\n");
        assert_eq!(
            refusal(&text),
            "`egress.proxied_connect_timeout_secs`: must be between 1 and 3600"
        );
    }
}
