//! `[[listen]]`: the sockets the relay accepts clients on, the protocol each
//! speaks and how it starts TLS. Addresses must be IP literals: nothing here
//! may resolve a name, and no listener may be left without an upstream that
//! speaks its protocol.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, Upstream, invalid};

/// One `[[listen]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    protocol: Protocol,
    address: String,
    tls: ListenerTls,
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

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// TLS from the first byte (SMTP 465, IMAP 993).
    Implicit,
    /// Plain text until the client says STARTTLS (SMTP 587, IMAP 143).
    Starttls,
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
    Ok(listeners)
}

/// Refuses a listener whose protocol no upstream has an endpoint for.
pub(super) fn check_served(
    listeners: &[Listener],
    upstreams: &[Upstream],
) -> Result<(), ConfigError> {
    for (i, l) in listeners.iter().enumerate() {
        let wanted = match l.protocol {
            Protocol::Smtp => upstreams.iter().any(|u| !u.smtp.is_empty()),
            Protocol::Imap => upstreams.iter().any(|u| !u.imap.is_empty()),
        };
        if !wanted {
            return Err(invalid(
                format!("listen[{i}].protocol"),
                "no [[upstream]] has an endpoint for this protocol",
            ));
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
            "`listen[0].address`: expected IP:port, e.g. \"127.0.0.1:465\" or \"[::]:587\""
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
