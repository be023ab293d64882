//! `[onion]`: the relay's own onion service (ingress), run by the embedded
//! Tor client. Its ports are the `[[listen]]` tables with
//! `address = "onion:PORT"`. The service key is read, never written: a
//! directory holding `hs_ed25519_secret_key` as C tor writes it in a
//! `HiddenServiceDir` (or `mailveil onion-key` makes it), so the address
//! stays the same across restarts and nothing is written at run time
//! outside Tor's runtime directory.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Listener, invalid};

/// `[onion]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnion {
    key_directory: PathBuf,
    vanguards: Option<Vanguards>,
}

/// Which vanguards the service's circuits use (arti's vanguard modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vanguards {
    /// Full vanguards: a fixed second and third hop set, as for onion
    /// services that must resist guard discovery (the default).
    Full,
    /// Vanguards-lite: a fixed second hop set only (arti's default for
    /// clients).
    Lite,
}

/// The onion service.
#[derive(Debug, Clone)]
pub struct OnionConfig {
    /// The directory with `hs_ed25519_secret_key`.
    pub key_directory: PathBuf,
    /// Vanguards for its circuits.
    pub vanguards: Vanguards,
}

/// `[onion]` and the onion listeners come together: a service without a
/// port, or a port without the service, is refused.
pub(super) fn validate(
    raw: Option<RawOnion>,
    listeners: &[Listener],
) -> Result<Option<OnionConfig>, ConfigError> {
    let onion_port = listeners.iter().position(Listener::is_onion);
    match (raw, onion_port) {
        (None, None) => Ok(None),
        (None, Some(i)) => Err(invalid(
            format!("listen[{i}].address"),
            "an onion:PORT listener needs an [onion] table with key_directory",
        )),
        (Some(_), None) => Err(invalid(
            "onion",
            "no [[listen]] has address = \"onion:PORT\": the service would serve nothing",
        )),
        (Some(raw), Some(_)) => {
            if raw.key_directory.as_os_str().is_empty() {
                return Err(invalid("onion.key_directory", "must name a directory"));
            }
            Ok(Some(OnionConfig {
                key_directory: raw.key_directory,
                vanguards: raw.vanguards.unwrap_or(Vanguards::Full),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, refusal};
    use crate::config::{Config, ListenAddress, Vanguards};

    const ONION_LISTENER: &str =
        "[[listen]]\nprotocol = \"smtp\"\naddress = \"onion:465\"\ntls = \"implicit\"\n\n";

    fn with_onion(table: &str) -> String {
        format!("{ONION_LISTENER}{MINIMAL}\n{table}")
    }

    #[test]
    fn an_onion_port_and_the_onion_table_come_together() {
        let c = Config::parse(&with_onion("[onion]\nkey_directory = \"/k\"\n")).expect("onion");
        assert_eq!(c.listeners[0].address, ListenAddress::Onion(465));
        assert!(c.listeners[0].is_onion() && c.listeners[0].has_own_face());
        let onion = c.onion.as_ref().expect("onion");
        assert_eq!(onion.vanguards, Vanguards::Full);
        assert!(
            c.summary()
                .contains("listen: Smtp on onion:465 (Implicit TLS)")
        );
        assert!(
            c.summary()
                .contains("onion service: key from /k, vanguards Full")
        );
        let lite = Config::parse(&with_onion(
            "[onion]\nkey_directory = \"/k\"\nvanguards = \"lite\"\n",
        ))
        .expect("lite");
        assert_eq!(lite.onion.expect("onion").vanguards, Vanguards::Lite);
        assert_eq!(
            refusal(&with_onion("")),
            "`listen[0].address`: an onion:PORT listener needs an [onion] table with key_directory"
        );
        assert_eq!(
            refusal(&format!("{MINIMAL}\n[onion]\nkey_directory = \"/k\"\n")),
            "`onion`: no [[listen]] has address = \"onion:PORT\": the service would serve nothing"
        );
        assert!(refusal(&with_onion("[onion]\n")).contains("key_directory"));
        for bad in ["onion:0", "onion:x", "onion:70000"] {
            let text = with_onion("[onion]\nkey_directory = \"/k\"\n").replace("onion:465", bad);
            assert!(refusal(&text).starts_with("`listen[0].address`: expected onion:PORT"));
        }
    }

    #[test]
    fn an_onion_only_relay_has_no_socket_and_no_load_balancer() {
        let only = with_onion("[onion]\nkey_directory = \"/k\"\n").replace(
            "[[listen]]\nprotocol = \"smtp\"\naddress = \"127.0.0.1:1465\"\ntls = \"implicit\"\n",
            "",
        );
        let c = Config::parse(&only).expect("onion only");
        assert!(c.listeners.iter().all(|l| l.is_onion()));
        let proxied = with_onion("[onion]\nkey_directory = \"/k\"\n").replacen(
            "address = \"onion:465\"\n",
            "address = \"onion:465\"\nproxy_protocol = true\nproxy_from = [\"127.0.0.1\"]\n",
            1,
        );
        assert!(
            refusal(&proxied).starts_with("`listen[0].proxy_protocol`: not on the onion service")
        );
    }
}
