//! `[[listen]]`: the sockets the relay accepts clients on, the protocol each
//! speaks and how it starts TLS. Addresses must be IP literals: nothing here
//! may resolve a name, and no listener may be left without an upstream that
//! speaks its protocol.
//!
//! A listener may show clients a face of its own (`hostname`, `certificate`
//! and `private_key`), so that one relay reachable two ways (a public port
//! and an onion service, say) cannot be linked by what it presents. One may
//! serve both protocols on one port, chosen by the client's ALPN
//! (`protocol = "alpn"`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Upstream, check_name, invalid};
use crate::proxy_protocol::Network;

/// One `[[listen]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    protocol: RawProtocol,
    address: String,
    tls: ListenerTls,
    alpn_default: Option<Protocol>,
    hostname: Option<String>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    #[serde(default)]
    proxy_protocol: bool,
    proxy_from: Option<Vec<String>>,
}

/// `protocol` as written: one of the two, or both by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawProtocol {
    Smtp,
    Imap,
    Alpn,
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP submission.
    Smtp,
    /// IMAP.
    Imap,
}

impl Protocol {
    /// The ALPN protocol ID (RFC 7301 registry: "smtp", "imap").
    pub fn alpn_id(self) -> &'static [u8] {
        match self {
            Protocol::Smtp => b"smtp",
            Protocol::Imap => b"imap",
        }
    }

    /// The protocol an ALPN ID names, if it is one of ours.
    pub fn from_alpn(id: &[u8]) -> Option<Self> {
        match id {
            b"smtp" => Some(Protocol::Smtp),
            b"imap" => Some(Protocol::Imap),
            _ => None,
        }
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// One protocol.
    One(Protocol),
    /// Both, chosen by the client's ALPN; `default` for a client that
    /// sends none (implicit TLS only).
    ByAlpn {
        /// For clients without ALPN.
        default: Protocol,
    },
}

impl Serves {
    /// The protocol a connection gets: the listener's one, or by the
    /// client's ALPN choice (`alpn`), else the default.
    pub fn protocol(self, alpn: Option<Protocol>) -> Protocol {
        match self {
            Serves::One(p) => p,
            Serves::ByAlpn { default } => alpn.unwrap_or(default),
        }
    }
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

/// Where a listener takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// A socket to bind.
    Socket(SocketAddr),
    /// A port of the relay's onion service (`[onion]`).
    Onion(u16),
}

impl ListenAddress {
    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        match self {
            ListenAddress::Socket(a) => a.port(),
            ListenAddress::Onion(p) => *p,
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Socket(a) => write!(f, "{a}"),
            ListenAddress::Onion(p) => write!(f, "onion:{p}"),
        }
    }
}

/// One listening socket, or one port of the onion service.
#[derive(Debug, Clone)]
pub struct Listener {
    /// What it serves.
    pub serves: Serves,
    /// Where it takes connections.
    pub address: ListenAddress,
    /// TLS mode.
    pub tls: ListenerTls,
    /// Its own greeting name; `None`: `server.hostname`.
    pub hostname: Option<String>,
    /// Its own certificate chain and key; `None` with a `hostname` of its
    /// own: an ephemeral self-signed certificate for that name; `None`
    /// otherwise: the `[tls]` one.
    pub certificate: Option<(PathBuf, PathBuf)>,
    /// With `proxy_protocol = true`: the load balancers allowed to send a
    /// PROXY v2 header, which every connection here must start with.
    pub proxy_from: Option<Vec<Network>>,
}

impl Listener {
    /// True when the listener serves `protocol` (alone or by ALPN).
    pub fn speaks(&self, protocol: Protocol) -> bool {
        match self.serves {
            Serves::One(p) => p == protocol,
            Serves::ByAlpn { .. } => true,
        }
    }

    /// True when clients here see a certificate that is not the `[tls]`
    /// one: the listener names its own, or is on the onion service (which
    /// never shows the public relay's name or certificate).
    pub fn has_own_face(&self) -> bool {
        self.hostname.is_some() || self.certificate.is_some() || self.is_onion()
    }

    /// True for a port of the onion service.
    pub fn is_onion(&self) -> bool {
        matches!(self.address, ListenAddress::Onion(_))
    }
}

/// At least one listener, each on an `IP:port` no other uses (port 0, an
/// address picked at bind time, may repeat).
pub(super) fn validate(raw: Vec<RawListener>) -> Result<Vec<Listener>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "listen",
            "at least one [[listen]] table is required",
        ));
    }
    let mut listeners = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let key = format!("listen[{i}]");
        let address = match l.address.strip_prefix("onion:") {
            Some(port) => match port.parse::<u16>() {
                Ok(p) if p != 0 => ListenAddress::Onion(p),
                _ => {
                    return Err(invalid(
                        format!("{key}.address"),
                        "expected onion:PORT with a port from 1 to 65535, e.g. \"onion:993\"",
                    ));
                }
            },
            None => ListenAddress::Socket(l.address.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    format!("{key}.address"),
                    "expected IP:port, e.g. \"127.0.0.1:465\" or \"[::]:587\", or onion:PORT",
                )
            })?),
        };
        if address.port() != 0 && listeners.iter().any(|o: &Listener| o.address == address) {
            return Err(invalid(format!("{key}.address"), "address used twice"));
        }
        if matches!(address, ListenAddress::Onion(_)) && l.proxy_protocol {
            return Err(invalid(
                format!("{key}.proxy_protocol"),
                "not on the onion service: its clients come through Tor, not a load balancer",
            ));
        }
        let serves = match (l.protocol, l.alpn_default) {
            (RawProtocol::Alpn, Some(default)) => Serves::ByAlpn { default },
            (RawProtocol::Alpn, None) => {
                return Err(invalid(
                    format!("{key}.alpn_default"),
                    "required with protocol = \"alpn\": \"imap\" or \"smtp\", for clients that send no ALPN",
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    format!("{key}.alpn_default"),
                    "only for protocol = \"alpn\"",
                ));
            }
            (RawProtocol::Smtp, None) => Serves::One(Protocol::Smtp),
            (RawProtocol::Imap, None) => Serves::One(Protocol::Imap),
        };
        if matches!(serves, Serves::ByAlpn { .. }) && l.tls != ListenerTls::Implicit {
            return Err(invalid(
                format!("{key}.tls"),
                "protocol = \"alpn\" needs tls = \"implicit\": the protocol is chosen in the TLS handshake",
            ));
        }
        if let Some(name) = &l.hostname {
            check_name(&format!("{key}.hostname"), name)?;
        }
        let certificate = match (l.certificate, l.private_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    format!("{key}.private_key"),
                    "required when certificate is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    format!("{key}.certificate"),
                    "required when private_key is set",
                ));
            }
        };
        let proxy_from = match (l.proxy_protocol, l.proxy_from) {
            (true, Some(from)) if !from.is_empty() => Some(
                from.iter()
                    .enumerate()
                    .map(|(j, text)| {
                        Network::parse(text).ok_or_else(|| {
                            invalid(
                                format!("{key}.proxy_from[{j}]"),
                                "expected an IP address or network, e.g. \"10.0.0.5\" or \"10.0.0.0/24\" (not /0: that would trust everyone)",
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            (true, _) => {
                return Err(invalid(
                    format!("{key}.proxy_from"),
                    "required with proxy_protocol = true: the load balancers' addresses",
                ));
            }
            (false, Some(_)) => {
                return Err(invalid(
                    format!("{key}.proxy_from"),
                    "only with proxy_protocol = true",
                ));
            }
            (false, None) => None,
        };
        listeners.push(Listener {
            serves,
            address,
            tls: l.tls,
            hostname: l.hostname,
            certificate,
            proxy_from,
        });
    }
    Ok(listeners)
}

/// Refuses a listener whose protocol no upstream has an endpoint for.
pub(super) fn check_served(
    listeners: &[Listener],
    upstreams: &[Upstream],
) -> Result<(), ConfigError> {
    for (i, l) in listeners.iter().enumerate() {
        for protocol in [Protocol::Smtp, Protocol::Imap] {
            if !l.speaks(protocol) {
                continue;
            }
            let wanted = match protocol {
                Protocol::Smtp => upstreams.iter().any(|u| !u.smtp.is_empty()),
                Protocol::Imap => upstreams.iter().any(|u| !u.imap.is_empty()),
            };
            if !wanted {
                return Err(invalid(
                    format!("listen[{i}].protocol"),
                    match (l.serves, protocol) {
                        (Serves::One(_), _) => "no [[upstream]] has an endpoint for this protocol",
                        (_, Protocol::Smtp) => "no [[upstream]] has an SMTP endpoint",
                        (_, Protocol::Imap) => "no [[upstream]] has an IMAP endpoint",
                    },
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    const SECOND_LISTENER: &str = "[[listen]]\nprotocol = \"smtp\"\naddress = \"ADDR\"\ntls = \"starttls\"\n\n[[upstream]]\nname = \"a\"";

    fn with_second_listener(address: &str) -> String {
        MINIMAL.replacen(
            "[[upstream]]\nname = \"a\"",
            &SECOND_LISTENER.replace("ADDR", address),
            1,
        )
    }

    #[test]
    fn at_least_one_listener_is_required() {
        let text = MINIMAL.replace(
            "[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:1465\"\ntls = \"implicit\"\n",
            "",
        );
        assert_eq!(
            refusal(&text),
            "`listen`: at least one [[listen]] table is required"
        );
    }

    #[test]
    fn listen_address_must_be_an_ip_literal() {
        let text = MINIMAL.replace("127.0.0.1:1465", "localhost:1465");
        assert_eq!(
            refusal(&text),
            "`listen[0].address`: expected IP:port, e.g. \"127.0.0.1:465\" or \"[::]:587\", or onion:PORT"
        );
    }

    fn with_listener_keys(keys: &str) -> String {
        MINIMAL.replacen(
            "tls = \"implicit\"\n",
            &format!("tls = \"implicit\"\n{keys}"),
            1,
        )
    }

    #[test]
    fn alpn_listeners_need_a_default_and_implicit_tls() {
        use crate::config::{Protocol, Serves};
        let text = with_listener_keys("alpn_default = \"smtp\"\n")
            .replacen("protocol = \"smtp\"", "protocol = \"alpn\"", 1)
            .replace("[[upstream]]\nname = \"a\"", "[[upstream]]\nname = \"a\"\nimap = { host = \"127.0.0.1\", port = 993, tls = \"implicit\" }");
        let c = Config::parse(&text).expect("alpn listener");
        assert_eq!(
            c.listeners[0].serves,
            Serves::ByAlpn {
                default: Protocol::Smtp
            }
        );
        assert!(c.listeners[0].speaks(Protocol::Imap) && c.listeners[0].speaks(Protocol::Smtp));
        assert!(
            c.summary()
                .contains("Smtp and Imap by ALPN (without ALPN: Smtp)")
        );
        // Without an IMAP endpoint, the port could not serve what it offers.
        let no_imap = with_listener_keys("alpn_default = \"smtp\"\n").replacen(
            "protocol = \"smtp\"",
            "protocol = \"alpn\"",
            1,
        );
        assert_eq!(
            refusal(&no_imap),
            "`listen[0].protocol`: no [[upstream]] has an IMAP endpoint"
        );
        let no_default = MINIMAL.replacen("protocol = \"smtp\"", "protocol = \"alpn\"", 1);
        assert!(refusal(&no_default).starts_with("`listen[0].alpn_default`: required"));
        let starttls = text.replacen("tls = \"implicit\"", "tls = \"starttls\"", 1);
        assert!(refusal(&starttls).starts_with("`listen[0].tls`: protocol = \"alpn\" needs"));
        let stray = with_listener_keys("alpn_default = \"imap\"\n");
        assert_eq!(
            refusal(&stray),
            "`listen[0].alpn_default`: only for protocol = \"alpn\""
        );
    }

    #[test]
    fn a_listener_face_is_a_checked_name_and_a_pair_of_files() {
        let c = Config::parse(&with_listener_keys("hostname = \"abc.onion\"\n")).expect("name");
        assert_eq!(c.listeners[0].hostname.as_deref(), Some("abc.onion"));
        assert!(c.listeners[0].has_own_face() && c.listeners[0].certificate.is_none());
        assert!(
            c.summary()
                .contains("its own name abc.onion, with an ephemeral self-signed certificate")
        );
        assert!(
            refusal(&with_listener_keys("hostname = \"a\\r\\n250 x\"\n"))
                .starts_with("`listen[0].hostname`: expected a host name")
        );
        let pair = "certificate = \"/c.pem\"\nprivate_key = \"/k.pem\"\n";
        let c = Config::parse(&with_listener_keys(pair)).expect("files");
        assert!(
            c.summary()
                .contains("its own name localhost and certificate /c.pem")
        );
        assert_eq!(
            refusal(&with_listener_keys("certificate = \"/c.pem\"\n")),
            "`listen[0].private_key`: required when certificate is set"
        );
        assert_eq!(
            refusal(&with_listener_keys("private_key = \"/k.pem\"\n")),
            "`listen[0].certificate`: required when private_key is set"
        );
    }

    #[test]
    fn proxy_protocol_needs_the_balancers_and_only_then() {
        let c = Config::parse(&with_listener_keys(
            "proxy_protocol = true\nproxy_from = [\"10.0.0.5\", \"fd00::/8\"]\n",
        ))
        .expect("proxy");
        let from = c.listeners[0].proxy_from.as_ref().expect("from");
        assert!(from[0].contains("10.0.0.5".parse().unwrap()));
        assert!(from[1].contains("fd00::1".parse().unwrap()));
        assert!(
            c.summary()
                .contains("  PROXY protocol v2, from 10.0.0.5/32, fd00::/8\n")
        );
        for keys in [
            "proxy_protocol = true\n",
            "proxy_protocol = true\nproxy_from = []\n",
        ] {
            assert_eq!(
                refusal(&with_listener_keys(keys)),
                "`listen[0].proxy_from`: required with proxy_protocol = true: the load balancers' addresses"
            );
        }
        assert_eq!(
            refusal(&with_listener_keys("proxy_from = [\"10.0.0.5\"]\n")),
            "`listen[0].proxy_from`: only with proxy_protocol = true"
        );
        assert!(
            refusal(&with_listener_keys(
                "proxy_protocol = true\nproxy_from = [\"10.0.0.5\", \"lb.example\"]\n"
            ))
            .starts_with("`listen[0].proxy_from[1]`: expected an IP address or network")
        );
    }

    #[test]
    fn listen_address_used_twice_is_refused_but_port_zero_may_repeat() {
        assert_eq!(
            refusal(&with_second_listener("127.0.0.1:1465")),
            "`listen[1].address`: address used twice"
        );
        let text = with_second_listener("127.0.0.1:0").replace("127.0.0.1:1465", "127.0.0.1:0");
        let c = Config::parse(&text).expect("port 0 twice");
        assert_eq!(c.listeners.len(), 2);
    }
}
