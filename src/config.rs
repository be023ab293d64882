//! Configuration: TOML read into raw serde structures, then validated into a
//! [`Config`] the rest of the relay can trust.
//!
//! Unknown keys are refused and every validation error names the key it is
//! about. Nothing here logs; error messages carry key names and reasons, never
//! secrets (the config holds none: credentials always come from the client).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::privacy::Sensitive;

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
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------- raw serde

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    listen: Vec<RawListener>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    routing: Option<RawRouting>,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    sanitize: RawSanitize,
    #[serde(default)]
    logging: RawLogging,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    stats_interval_minutes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<String>,
    upstream_ehlo_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    protocol: Protocol,
    address: String,
    tls: ListenerTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    smtp: Option<RawEndpoint>,
    imap: Option<RawEndpoint>,
    ca: Option<PathBuf>,
    #[serde(default)]
    domains: Vec<String>,
    egress: Option<String>,
    tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    host: String,
    port: u16,
    tls: UpstreamTls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    default: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    mode: Option<String>,
    isolate: Option<String>,
    socks5: Option<String>,
    proxied_connect_timeout_secs: Option<u64>,
    #[serde(default)]
    tor: RawTor,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTor {
    runtime_dir: Option<PathBuf>,
    testing_network: Option<RawTestingNetwork>,
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<u64>,
    max_recipients: Option<u32>,
    max_connections: Option<u32>,
    max_line_bytes: Option<u32>,
    max_command_bytes: Option<u32>,
    tls_handshake_timeout_secs: Option<u64>,
    command_timeout_secs: Option<u64>,
    upstream_timeout_secs: Option<u64>,
    max_imap_line_bytes: Option<u32>,
    imap_idle_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    max_connections_per_prefix: Option<u32>,
    connections_per_prefix_per_minute: Option<u32>,
    preauth_timeout_secs: Option<u64>,
    min_transfer_bytes_per_sec: Option<u32>,
    auth_failures_per_prefix: Option<u32>,
    auth_failures_per_login: Option<u32>,
    auth_failure_window_secs: Option<u64>,
    auth_lockout_secs: Option<u64>,
    auth_failure_delay_ms: Option<u64>,
    messages_per_account_per_hour: Option<u32>,
    max_header_bytes: Option<u32>,
    max_header_fields: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSanitize {
    mode: Option<SanitizeMode>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    keep: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
}

// ---------------------------------------------------------------- validated

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP submission.
    Smtp,
    /// IMAP.
    Imap,
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// TLS from the first byte (SMTP 465, IMAP 993).
    Implicit,
    /// Plain text until the client says STARTTLS (SMTP 587, IMAP 143).
    Starttls,
}

/// How the relay reaches an upstream with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// TLS from the first byte.
    Implicit,
    /// STARTTLS, required: an upstream that does not offer it is not used.
    Starttls,
}

/// Header sanitizer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanitizeMode {
    /// Remove a list of known identifying headers, rewrite a few.
    #[default]
    Default,
    /// Keep only an allowlist of headers (plus the default rewrites).
    Strict,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Protocol spoken on it.
    pub protocol: Protocol,
    /// Address to bind.
    pub address: SocketAddr,
    /// TLS mode.
    pub tls: ListenerTls,
}

/// Where an upstream service is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name or IP literal; resolved only by the egress connector.
    /// Sensitive: which provider a session goes to says whose session it is.
    pub host: Sensitive<String>,
    /// TCP port.
    pub port: u16,
    /// TLS mode.
    pub tls: UpstreamTls,
    /// How this endpoint is reached (the global mode or the upstream's own).
    pub egress: EgressMode,
    /// The name the provider's certificate must carry: `tls_server_name` if
    /// set (an onion service presenting its clear-web certificate), else
    /// `host`.
    pub tls_server_name: Sensitive<String>,
}

/// A provider the relay can talk to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name used in routing.
    pub name: String,
    /// Submission endpoint, if the provider is used for sending.
    pub smtp: Option<Endpoint>,
    /// IMAP endpoint, if the provider is used for reading.
    pub imap: Option<Endpoint>,
    /// Extra CA certificates (PEM) trusted for this upstream instead of the
    /// public web PKI roots.
    pub ca: Option<PathBuf>,
    /// Login domains routed here.
    pub domains: Vec<String>,
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
    pub fn uses(&self, upstreams: &[Upstream], mode: EgressMode) -> bool {
        upstreams
            .iter()
            .flat_map(|u| [&u.smtp, &u.imap])
            .flatten()
            .any(|e| e.egress == mode)
    }
}

/// The default egress mode: Tor when this build has it.
pub const DEFAULT_EGRESS: EgressMode = if cfg!(feature = "tor") {
    EgressMode::Tor
} else {
    EgressMode::Direct
};

/// Resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted (SIZE), in bytes.
    pub max_message_bytes: usize,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Most client connections at once, over all listeners.
    pub max_connections: usize,
    /// Longest line inside a message, CRLF included (RFC 5321: 1000).
    pub max_line_bytes: usize,
    /// Longest command line, CRLF included (room for OAuth tokens).
    pub max_command_bytes: usize,
    /// Time allowed for a client TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client may stay silent between commands or inside DATA.
    pub command_timeout: Duration,
    /// Time allowed for an upstream connect and for each upstream reply.
    pub upstream_timeout: Duration,
    /// Longest IMAP command line from a client, CRLF included (literals are
    /// counted separately, against `max_message_bytes`).
    pub max_imap_line_bytes: usize,
    /// Time an authenticated IMAP client may stay silent (IDLE included;
    /// RFC 9051 asks for at least 30 minutes).
    pub imap_idle_timeout: Duration,
    /// On SIGTERM, how long sessions in the middle of something may take to
    /// finish before they are cut off.
    pub shutdown_grace: Duration,
    /// Most connections open at once from one address prefix (/32, /64).
    pub max_connections_per_prefix: u32,
    /// Most new connections per minute from one prefix (also the burst).
    pub connections_per_prefix_per_minute: u32,
    /// Time a client may take from connecting to logging in.
    pub preauth_timeout: Duration,
    /// Slowest average rate a client may send a message at, once the
    /// command timeout's worth of grace is used up.
    pub min_transfer_bytes_per_sec: u32,
    /// Failed logins from one prefix, per `auth_failure_window`, before
    /// the prefix is locked out.
    pub auth_failures_per_prefix: u32,
    /// Failed logins for one login, per `auth_failure_window`, before the
    /// login is locked out.
    pub auth_failures_per_login: u32,
    /// The window failure allowances refill over.
    pub auth_failure_window: Duration,
    /// How long a lockout lasts.
    pub auth_lockout: Duration,
    /// A failed login is answered no sooner than this after the client's
    /// credentials arrived (locked out or refused by the provider alike).
    pub auth_failure_delay: Duration,
    /// Messages one account may send per hour (also the burst).
    pub messages_per_account_per_hour: u32,
    /// Largest header block of a message (sent or APPENDed), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in a message.
    pub max_header_fields: usize,
}

/// Header sanitizer settings.
#[derive(Debug, Clone, Default)]
pub struct SanitizeConfig {
    /// Default or strict.
    pub mode: SanitizeMode,
    /// Extra header names to remove (`X-Foo`, or a prefix with `*`: `X-Foo-*`).
    pub remove: Vec<String>,
    /// Names from the default removal list to keep (e.g. `Organization`).
    pub keep: Vec<String>,
    /// Strict mode only: extra header names to allow.
    pub allow: Vec<String>,
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
    /// Index of the upstream for logins whose domain matches none.
    pub default_upstream: Option<usize>,
    /// Login domain (lower case) → upstream index.
    pub domain_routes: HashMap<String, usize>,
    /// Egress.
    pub egress: EgressConfig,
    /// Limits.
    pub limits: Limits,
    /// Header sanitizer.
    pub sanitize: SanitizeConfig,
    /// How often aggregate counters are logged; `None`: never.
    pub stats_interval: Option<Duration>,
}

/// Default interval of the aggregate counter report.
pub const DEFAULT_STATS_INTERVAL_MINUTES: u64 = 60;
/// Shortest interval allowed: finer counts could follow one person.
pub const MIN_STATS_INTERVAL_MINUTES: u64 = 10;

/// Default largest message: 35 MiB, like common providers.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 36_700_160;

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
        let raw: RawConfig = toml::from_str(text)?;
        validate(raw)
    }

    /// The upstream a login goes to: by the domain after the last `@`, else
    /// the default. `None` when neither matches.
    pub fn route(&self, login: &str) -> Option<usize> {
        login
            .rsplit_once('@')
            .and_then(|(_, domain)| self.domain_routes.get(&domain.to_ascii_lowercase()))
            .copied()
            .or(self.default_upstream)
    }

    /// A summary for `mailveil check`: structure only, no secrets (there are none
    /// in the file) and no key material.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("hostname: {}\n", self.hostname));
        out.push_str(&format!(
            "upstream EHLO name: {}\n",
            self.upstream_ehlo_name
        ));
        for l in &self.listeners {
            out.push_str(&format!(
                "listen: {:?} on {} ({:?} TLS)\n",
                l.protocol, l.address, l.tls
            ));
        }
        match &self.certificate {
            Some(path) => out.push_str(&format!("certificate: {}\n", path.display())),
            None => out.push_str("certificate: ephemeral self-signed, made at start-up\n"),
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let mut domains: Vec<&str> = self
                .domain_routes
                .iter()
                .filter(|(_, idx)| **idx == i)
                .map(|(d, _)| d.as_str())
                .collect();
            domains.sort_unstable();
            let show = |e: &Option<Endpoint>| match e {
                Some(e) => format!(
                    "{}:{} ({:?} TLS{}, via {})",
                    e.host.expose(),
                    e.port,
                    e.tls,
                    if e.tls_server_name == e.host {
                        String::new()
                    } else {
                        format!(", certificate name {}", e.tls_server_name.expose())
                    },
                    e.egress.name()
                ),
                None => "none".to_string(),
            };
            out.push_str(&format!(
                "upstream {}: smtp {}, imap {}, CA: {}, domains: [{}]{}\n",
                u.name,
                show(&u.smtp),
                show(&u.imap),
                u.ca.as_ref()
                    .map_or("public roots".to_string(), |p| p.display().to_string()),
                domains.join(", "),
                if self.default_upstream == Some(i) {
                    ", default"
                } else {
                    ""
                }
            ));
        }
        let e = &self.egress;
        out.push_str(&format!(
            "egress: {} (isolation per {})\n",
            e.mode.name(),
            match e.isolate {
                Isolate::Account => "account",
                Isolate::Session => "session",
            }
        ));
        if let Some(proxy) = e.socks5 {
            out.push_str(&format!("socks5 proxy: {proxy}\n"));
        }
        if let Some(net) = &e.tor_testing_network {
            out.push_str(&format!(
                "tor: PRIVATE TESTING NETWORK ({} authorities, {} fallbacks), local addresses allowed\n",
                net.authorities.len(),
                net.fallbacks.len()
            ));
        }
        out.push_str(&format!(
            "limits: message {} bytes, {} recipients, {} connections\n",
            self.limits.max_message_bytes, self.limits.max_recipients, self.limits.max_connections
        ));
        out.push_str(&format!("sanitize: {:?}\n", self.sanitize.mode));
        match self.stats_interval {
            Some(i) => out.push_str(&format!(
                "logging: aggregate counters every {} min\n",
                i.as_secs() / 60
            )),
            None => out.push_str("logging: no counter report\n"),
        }
        out
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let hostname = raw.server.hostname.unwrap_or_else(|| "localhost".into());
    check_name("server.hostname", &hostname)?;
    let upstream_ehlo_name = raw
        .server
        .upstream_ehlo_name
        .unwrap_or_else(|| "[127.0.0.1]".into());
    check_name("server.upstream_ehlo_name", &upstream_ehlo_name)?;

    if raw.listen.is_empty() {
        return Err(invalid(
            "listen",
            "at least one [[listen]] table is required",
        ));
    }
    let mut listeners = Vec::with_capacity(raw.listen.len());
    for (i, l) in raw.listen.into_iter().enumerate() {
        let key = format!("listen[{i}]");
        let address: SocketAddr = l.address.parse().map_err(|_| {
            invalid(
                format!("{key}.address"),
                "expected IP:port, e.g. \"127.0.0.1:465\" or \"[::]:587\"",
            )
        })?;
        if address.port() != 0 && listeners.iter().any(|o: &Listener| o.address == address) {
            return Err(invalid(format!("{key}.address"), "address used twice"));
        }
        listeners.push(Listener {
            protocol: l.protocol,
            address,
            tls: l.tls,
        });
    }

    match (&raw.tls.certificate, &raw.tls.private_key) {
        (Some(_), None) => {
            return Err(invalid(
                "tls.private_key",
                "required when tls.certificate is set",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls.certificate",
                "required when tls.private_key is set",
            ));
        }
        _ => {}
    }

    if raw.upstream.is_empty() {
        return Err(invalid(
            "upstream",
            "at least one [[upstream]] table is required",
        ));
    }
    let global_mode = match raw.egress.mode.as_deref() {
        Some(m) => egress_mode("egress.mode", m)?,
        None => DEFAULT_EGRESS,
    };
    let mut upstreams: Vec<Upstream> = Vec::with_capacity(raw.upstream.len());
    let mut domain_routes = HashMap::new();
    for (i, u) in raw.upstream.into_iter().enumerate() {
        let key = format!("upstream[{i}]");
        if u.name.is_empty() {
            return Err(invalid(format!("{key}.name"), "must not be empty"));
        }
        if upstreams.iter().any(|o| o.name == u.name) {
            return Err(invalid(format!("{key}.name"), "name used twice"));
        }
        if u.smtp.is_none() && u.imap.is_none() {
            return Err(invalid(
                key.clone(),
                "needs an `smtp` endpoint, an `imap` endpoint or both",
            ));
        }
        let mode = match u.egress.as_deref() {
            Some(m) => egress_mode(&format!("{key}.egress"), m)?,
            None => global_mode,
        };
        if let Some(name) = &u.tls_server_name {
            check_host(&format!("{key}.tls_server_name"), name)?;
        }
        let smtp = u
            .smtp
            .map(|e| endpoint(&format!("{key}.smtp"), e, mode, &u.tls_server_name))
            .transpose()?;
        let imap = u
            .imap
            .map(|e| endpoint(&format!("{key}.imap"), e, mode, &u.tls_server_name))
            .transpose()?;
        for (j, d) in u.domains.iter().enumerate() {
            let d = d.trim().to_ascii_lowercase();
            if d.is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                return Err(invalid(
                    format!("{key}.domains[{j}]"),
                    "expected a bare domain like \"example.org\"",
                ));
            }
            if domain_routes.insert(d, i).is_some() {
                return Err(invalid(
                    format!("{key}.domains[{j}]"),
                    "domain already routed to another upstream",
                ));
            }
        }
        upstreams.push(Upstream {
            name: u.name,
            smtp,
            imap,
            ca: u.ca,
            domains: u.domains,
        });
    }

    let default_upstream = match raw.routing.and_then(|r| r.default) {
        Some(name) => Some(
            upstreams
                .iter()
                .position(|u| u.name == name)
                .ok_or_else(|| invalid("routing.default", "names no [[upstream]]"))?,
        ),
        None if upstreams.len() == 1 => Some(0),
        None => None,
    };

    let egress = egress_config(raw.egress, global_mode, &upstreams)?;

    let l = raw.limits;
    let limits = Limits {
        max_message_bytes: bounded(
            "limits.max_message_bytes",
            l.max_message_bytes,
            DEFAULT_MAX_MESSAGE_BYTES as u64,
            1024,
            1 << 30,
        )? as usize,
        max_recipients: bounded(
            "limits.max_recipients",
            l.max_recipients.map(u64::from),
            100,
            1,
            10_000,
        )? as usize,
        max_connections: bounded(
            "limits.max_connections",
            l.max_connections.map(u64::from),
            1000,
            1,
            1_000_000,
        )? as usize,
        max_line_bytes: bounded(
            "limits.max_line_bytes",
            l.max_line_bytes.map(u64::from),
            1000,
            78,
            1 << 20,
        )? as usize,
        max_command_bytes: bounded(
            "limits.max_command_bytes",
            l.max_command_bytes.map(u64::from),
            16_384,
            512,
            1 << 20,
        )? as usize,
        tls_handshake_timeout: Duration::from_secs(bounded(
            "limits.tls_handshake_timeout_secs",
            l.tls_handshake_timeout_secs,
            30,
            1,
            600,
        )?),
        command_timeout: Duration::from_secs(bounded(
            "limits.command_timeout_secs",
            l.command_timeout_secs,
            300,
            1,
            3600,
        )?),
        upstream_timeout: Duration::from_secs(bounded(
            "limits.upstream_timeout_secs",
            l.upstream_timeout_secs,
            60,
            1,
            3600,
        )?),
        max_imap_line_bytes: bounded(
            "limits.max_imap_line_bytes",
            l.max_imap_line_bytes.map(u64::from),
            65_536,
            1024,
            1 << 20,
        )? as usize,
        imap_idle_timeout: Duration::from_secs(bounded(
            "limits.imap_idle_timeout_secs",
            l.imap_idle_timeout_secs,
            1860,
            60,
            86_400,
        )?),
        shutdown_grace: Duration::from_secs(bounded(
            "limits.shutdown_grace_secs",
            l.shutdown_grace_secs,
            30,
            0,
            3600,
        )?),
        max_connections_per_prefix: bounded(
            "limits.max_connections_per_prefix",
            l.max_connections_per_prefix.map(u64::from),
            50,
            1,
            1_000_000,
        )? as u32,
        connections_per_prefix_per_minute: bounded(
            "limits.connections_per_prefix_per_minute",
            l.connections_per_prefix_per_minute.map(u64::from),
            120,
            1,
            1_000_000,
        )? as u32,
        preauth_timeout: Duration::from_secs(bounded(
            "limits.preauth_timeout_secs",
            l.preauth_timeout_secs,
            120,
            5,
            3600,
        )?),
        min_transfer_bytes_per_sec: bounded(
            "limits.min_transfer_bytes_per_sec",
            l.min_transfer_bytes_per_sec.map(u64::from),
            512,
            1,
            1 << 30,
        )? as u32,
        auth_failures_per_prefix: bounded(
            "limits.auth_failures_per_prefix",
            l.auth_failures_per_prefix.map(u64::from),
            20,
            1,
            1_000_000,
        )? as u32,
        auth_failures_per_login: bounded(
            "limits.auth_failures_per_login",
            l.auth_failures_per_login.map(u64::from),
            10,
            1,
            1_000_000,
        )? as u32,
        auth_failure_window: Duration::from_secs(bounded(
            "limits.auth_failure_window_secs",
            l.auth_failure_window_secs,
            900,
            1,
            86_400,
        )?),
        auth_lockout: Duration::from_secs(bounded(
            "limits.auth_lockout_secs",
            l.auth_lockout_secs,
            900,
            1,
            86_400,
        )?),
        auth_failure_delay: Duration::from_millis(bounded(
            "limits.auth_failure_delay_ms",
            l.auth_failure_delay_ms,
            2000,
            0,
            60_000,
        )?),
        messages_per_account_per_hour: bounded(
            "limits.messages_per_account_per_hour",
            l.messages_per_account_per_hour.map(u64::from),
            200,
            1,
            1_000_000,
        )? as u32,
        max_header_bytes: bounded(
            "limits.max_header_bytes",
            l.max_header_bytes.map(u64::from),
            256 * 1024,
            1024,
            16 << 20,
        )? as usize,
        max_header_fields: bounded(
            "limits.max_header_fields",
            l.max_header_fields.map(u64::from),
            1000,
            10,
            100_000,
        )? as usize,
    };

    for (i, l) in listeners.iter().enumerate() {
        let wanted = match l.protocol {
            Protocol::Smtp => upstreams.iter().any(|u| u.smtp.is_some()),
            Protocol::Imap => upstreams.iter().any(|u| u.imap.is_some()),
        };
        if !wanted {
            return Err(invalid(
                format!("listen[{i}].protocol"),
                "no [[upstream]] has an endpoint for this protocol",
            ));
        }
    }

    let stats_interval = match raw
        .logging
        .stats_interval_minutes
        .unwrap_or(DEFAULT_STATS_INTERVAL_MINUTES)
    {
        0 => None,
        m if m < MIN_STATS_INTERVAL_MINUTES => {
            return Err(invalid(
                "logging.stats_interval_minutes",
                format!(
                    "at least {MIN_STATS_INTERVAL_MINUTES} (counts over shorter intervals can follow one person's sessions), or 0 for no counter report"
                ),
            ));
        }
        m => Some(Duration::from_secs(m.saturating_mul(60))),
    };
    let s = raw.sanitize;
    for (list, key) in [
        (&s.remove, "remove"),
        (&s.keep, "keep"),
        (&s.allow, "allow"),
    ] {
        for (j, name) in list.iter().enumerate() {
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(invalid(
                    format!("sanitize.{key}[{j}]"),
                    "expected a header name, optionally ending in * for a prefix",
                ));
            }
        }
    }
    let mode = s.mode.unwrap_or_default();
    if mode == SanitizeMode::Default && !s.allow.is_empty() {
        return Err(invalid(
            "sanitize.allow",
            "only used with mode = \"strict\"",
        ));
    }

    Ok(Config {
        hostname,
        upstream_ehlo_name,
        listeners,
        certificate: raw.tls.certificate,
        private_key: raw.tls.private_key,
        upstreams,
        default_upstream,
        domain_routes,
        egress,
        limits,
        sanitize: SanitizeConfig {
            mode,
            remove: s.remove,
            keep: s.keep,
            allow: s.allow,
        },
        stats_interval,
    })
}

fn endpoint(
    key: &str,
    e: RawEndpoint,
    mode: EgressMode,
    tls_server_name: &Option<String>,
) -> Result<Endpoint, ConfigError> {
    check_host(&format!("{key}.host"), &e.host)?;
    if e.port == 0 {
        return Err(invalid(format!("{key}.port"), "must be 1-65535"));
    }
    let onion = is_onion(&e.host);
    if onion && mode == EgressMode::Direct {
        return Err(invalid(
            format!("{key}.host"),
            "an .onion address needs egress \"tor\" or \"socks5\" (to a Tor daemon)",
        ));
    }
    if onion && e.host.len() != 62 {
        return Err(invalid(
            format!("{key}.host"),
            "expected a v3 onion address (56 characters before .onion)",
        ));
    }
    Ok(Endpoint {
        tls_server_name: Sensitive::new(tls_server_name.clone().unwrap_or_else(|| e.host.clone())),
        host: Sensitive::new(e.host),
        port: e.port,
        tls: e.tls,
        egress: mode,
    })
}

/// True for `.onion` host names.
pub fn is_onion(host: &str) -> bool {
    host.len() > 6 && host[host.len() - 6..].eq_ignore_ascii_case(".onion")
}

fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
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

fn egress_mode(key: &str, value: &str) -> Result<EgressMode, ConfigError> {
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

fn egress_config(
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
    let tor_testing_network = match raw.tor.testing_network {
        None => None,
        Some(t) if !t.enabled => {
            return Err(invalid(
                "egress.tor.testing_network",
                "replaces the public Tor network with a private one and lets Tor reach local addresses: for test networks only; set enabled = true to use it",
            ));
        }
        Some(t) => {
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
                if f.rsa_identity.len() != 40
                    || !f.rsa_identity.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(invalid(
                        format!("egress.tor.testing_network.fallbacks[{i}].rsa_identity"),
                        "expected 40 hex digits",
                    ));
                }
            }
            Some(TestingNetwork {
                authorities: t.authorities,
                fallbacks: t.fallbacks,
            })
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
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

[routing]
default = "b"
"#;

    #[test]
    fn minimal_config_routes_by_login_domain_with_default() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.route("alice@a.example"), Some(0));
        assert_eq!(c.route("alice@a2.EXAMPLE"), Some(0));
        assert_eq!(c.route("bob@elsewhere.example"), Some(1));
        assert_eq!(c.route("bare-login"), Some(1));
        assert_eq!(c.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.upstream_ehlo_name, "[127.0.0.1]");
    }

    #[test]
    fn egress_defaults_to_tor_with_account_isolation() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.egress.mode, DEFAULT_EGRESS);
        assert_eq!(c.egress.isolate, Isolate::Account);
        // Longer than a direct connect (upstream_timeout, 60 s), shorter
        // than a mail client's patience for a login.
        assert_eq!(c.egress.proxied_connect_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.upstream_timeout, Duration::from_secs(60));
        let smtp = c.upstreams[0].smtp.as_ref().expect("smtp");
        assert_eq!(smtp.egress, DEFAULT_EGRESS);
        assert_eq!(smtp.tls_server_name.expose(), "smtp.a.example");
        if cfg!(feature = "tor") {
            assert_eq!(DEFAULT_EGRESS, EgressMode::Tor);
        }
    }

    #[test]
    fn counter_report_is_hourly_by_default_and_never_finer_than_ten_minutes() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.stats_interval, Some(Duration::from_secs(3600)));
        let off = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 0\n"
        ))
        .expect("valid");
        assert_eq!(off.stats_interval, None);
        let fine = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 9\n"
        ));
        let err = fine.expect_err("too fine").to_string();
        assert!(err.contains("logging.stats_interval_minutes"), "{err}");
        let ten = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 10\n"
        ))
        .expect("valid");
        assert_eq!(ten.stats_interval, Some(Duration::from_secs(600)));
    }

    #[test]
    fn upstream_overrides_egress_and_certificate_name() {
        let onion = "a".repeat(56) + ".onion";
        let text = MINIMAL
            .replace(
                "domains = [\"a.example\", \"A2.example\"]",
                "domains = [\"a.example\"]\negress = \"socks5\"\ntls_server_name = \"smtp.a.example\"",
            )
            .replace("smtp.a.example\", port = 465", &format!("{onion}\", port = 465"))
            .replace(
                "default = \"b\"",
                "default = \"b\"\n\n[egress]\nmode = \"direct\"\nsocks5 = \"127.0.0.1:9050\"\nisolate = \"session\"",
            );
        let c = Config::parse(&text).expect("valid");
        let a = c.upstreams[0].smtp.as_ref().expect("smtp");
        assert_eq!(
            (a.egress, a.host.expose().as_str()),
            (EgressMode::Socks5, onion.as_str())
        );
        assert_eq!(a.tls_server_name.expose(), "smtp.a.example");
        let b = c.upstreams[1].smtp.as_ref().expect("smtp");
        assert_eq!(b.egress, EgressMode::Direct);
        assert_eq!(c.egress.isolate, Isolate::Session);
        assert_eq!(
            c.egress.socks5,
            Some("127.0.0.1:9050".parse().expect("addr"))
        );
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
            id = "0123456789ABCDEF0123456789ABCDEF01234567"
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
    fn unknown_key_is_refused_and_named() {
        let text = MINIMAL.replace("[routing]", "[routing]\nfallback = \"a\"");
        let err = Config::parse(&text).expect_err("unknown key").to_string();
        assert!(err.contains("fallback"), "{err}");
    }

    #[test]
    fn bad_port_names_the_key() {
        let text = MINIMAL.replace("port = 587", "port = 0");
        let err = Config::parse(&text).expect_err("port 0").to_string();
        assert!(err.contains("upstream[1].smtp.port"), "{err}");
    }

    #[test]
    fn routing_default_must_name_an_upstream() {
        let text = MINIMAL.replace("default = \"b\"", "default = \"c\"");
        let err = Config::parse(&text).expect_err("bad default").to_string();
        assert!(err.contains("routing.default"), "{err}");
    }

    #[test]
    fn domain_routed_twice_is_refused() {
        let text = MINIMAL.replace(
            "port = 587, tls = \"starttls\" }",
            "port = 587, tls = \"starttls\" }\ndomains = [\"a.example\"]",
        );
        let err = Config::parse(&text).expect_err("dup domain").to_string();
        assert!(err.contains("upstream[1].domains[0]"), "{err}");
    }

    #[test]
    fn certificate_without_key_is_refused() {
        let text = format!("{MINIMAL}\n[tls]\ncertificate = \"/x.pem\"\n");
        let err = Config::parse(&text).expect_err("no key").to_string();
        assert!(err.contains("tls.private_key"), "{err}");
    }

    #[test]
    fn hostname_cannot_inject_lines() {
        let text = format!("[server]\nhostname = \"a\\r\\n250 x\"\n{MINIMAL}");
        let err = Config::parse(&text).expect_err("crlf").to_string();
        assert!(err.contains("server.hostname"), "{err}");
    }

    #[test]
    fn imap_endpoints_and_listeners() {
        let text = MINIMAL
            .replace(
                "domains = [\"a.example\", \"A2.example\"]",
                "imap = { host = \"imap.a.example\", port = 993, tls = \"implicit\" }\n\
                 domains = [\"a.example\", \"A2.example\"]",
            )
            .replace(
                "[[upstream]]\nname = \"a\"",
                "[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1993\"\ntls = \"implicit\"\n\n\
                 [[upstream]]\nname = \"a\"",
            );
        let c = Config::parse(&text).expect("valid");
        let imap = c.upstreams[0].imap.as_ref().expect("imap endpoint");
        assert_eq!(
            (imap.host.expose().as_str(), imap.port),
            ("imap.a.example", 993)
        );
        assert!(c.upstreams[1].imap.is_none());
        assert_eq!(c.limits.max_imap_line_bytes, 65536);
        assert_eq!(c.limits.imap_idle_timeout, Duration::from_secs(1860));
        // An IMAP listener with no upstream that speaks IMAP is refused.
        let no_imap = text.replace(
            "imap = { host = \"imap.a.example\", port = 993, tls = \"implicit\" }\n",
            "",
        );
        let err = Config::parse(&no_imap)
            .expect_err("imap listener")
            .to_string();
        assert!(err.contains("listen[1]"), "{err}");
        // An upstream with neither endpoint is refused, by name.
        let neither = MINIMAL.replace(
            "smtp = { host = \"smtp.b.example\", port = 587, tls = \"starttls\" }\n",
            "",
        );
        let err = Config::parse(&neither)
            .expect_err("no endpoint")
            .to_string();
        assert!(err.contains("upstream[1]"), "{err}");
        let bad = text.replace("port = 993", "port = 0");
        let err = Config::parse(&bad).expect_err("port 0").to_string();
        assert!(err.contains("upstream[0].imap.port"), "{err}");
        let low = format!("{text}\n[limits]\nimap_idle_timeout_secs = 5\n");
        let err = Config::parse(&low).expect_err("timeout").to_string();
        assert!(err.contains("limits.imap_idle_timeout_secs"), "{err}");
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
