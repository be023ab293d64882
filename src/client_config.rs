//! `mailveil client-config`: a member's client settings, written once.
//!
//! Three forms of the relay's public settings (host, ports, TLS modes, and
//! the CA of a private certificate): an Apple `.mobileconfig`, a Delta Chat
//! `dclogin:` URI (with a terminal QR code), and the README's tables filled
//! in. Only the `dclogin:` form holds a password, because Delta Chat needs
//! one in it: it is built in a wiped buffer and printed, never stored.
//!
//! The relay never serves any of this over the network: autoconfiguration
//! lookups reveal, to whoever watches DNS or the web server, who is setting
//! up an account where (which is why TorBirdy turned Thunderbird's off).
//! Nothing here logs.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::config::{Config, Listener, ListenerTls, Protocol, Serves};

/// How a client reaches one of the relay's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The port.
    pub port: u16,
    /// TLS from the first byte (`true`) or after STARTTLS.
    pub implicit_tls: bool,
}

/// The relay's public settings, as a member's client needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// The host name clients connect to (the one in the certificate).
    pub host: String,
    /// IMAP.
    pub imap: Service,
    /// SMTP submission.
    pub smtp: Service,
    /// The private CA that issued the relay's certificate, DER, if any.
    pub ca: Option<CertificateDer<'static>>,
}

/// Why settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// Neither a configuration nor `--host` was given.
    #[error("give --config (on the relay) or --host (anywhere)")]
    NoHost,
    /// No listener, and no port flag, for a protocol.
    #[error("the configuration has no {0} listener: give --{1}-port")]
    NoListener(&'static str, &'static str),
    /// The CA file.
    #[error("--ca {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The QR code could not hold the text.
    #[error("the dclogin URI is too long for a QR code")]
    TooLongForQr,
}

impl RelaySettings {
    /// The listeners' settings from a relay configuration, implicit TLS
    /// preferred (clients and networks handle it better than STARTTLS);
    /// each of `host`, `imap_port`, `smtp_port` overrides what the
    /// configuration says (and stands in for it when there is none).
    pub fn new(
        config: Option<&Config>,
        host: Option<String>,
        imap_port: Option<u16>,
        smtp_port: Option<u16>,
    ) -> Result<Self, ClientConfigError> {
        let host = host
            .or_else(|| config.map(|c| c.hostname.clone()))
            .ok_or(ClientConfigError::NoHost)?;
        // A listener a client of `protocol` can use at `host`: one that
        // serves it without ALPN (most clients send none), on the onion
        // service for a .onion host and only then, and not behind a load
        // balancer (its port is the balancer's, not the relay's).
        let onion_host = host.to_ascii_lowercase().ends_with(".onion");
        let fits = move |l: &Listener, protocol: Protocol| {
            let serves = match l.serves {
                Serves::One(p) => p == protocol,
                Serves::ByAlpn { default } => default == protocol,
            };
            serves && l.is_onion() == onion_host && l.proxy_from.is_none()
        };
        let from_config = |protocol: Protocol| {
            let listeners = config.map(|c| c.listeners.as_slice()).unwrap_or_default();
            let of =
                |tls: ListenerTls| listeners.iter().find(|l| fits(l, protocol) && l.tls == tls);
            of(ListenerTls::Implicit)
                .or_else(|| of(ListenerTls::Starttls))
                .map(|l| Service {
                    port: l.address.port(),
                    implicit_tls: l.tls == ListenerTls::Implicit,
                })
        };
        // A port given by flag: TLS as the configuration's listener on that
        // port has it; without one, implicit TLS on any port but the
        // protocol's STARTTLS port (143, 587).
        let pick = |protocol: Protocol,
                    flag: Option<u16>,
                    starttls_port: u16,
                    names: (&'static str, &'static str)| match flag {
            Some(port) => {
                let listener = config.and_then(|c| {
                    c.listeners
                        .iter()
                        .find(|l| fits(l, protocol) && l.address.port() == port)
                });
                Ok(Service {
                    port,
                    implicit_tls: match listener {
                        Some(l) => l.tls == ListenerTls::Implicit,
                        None => port != starttls_port,
                    },
                })
            }
            None => from_config(protocol).ok_or(ClientConfigError::NoListener(names.0, names.1)),
        };
        Ok(RelaySettings {
            host,
            imap: pick(Protocol::Imap, imap_port, 143, ("IMAP", "imap"))?,
            smtp: pick(Protocol::Smtp, smtp_port, 587, ("SMTP", "smtp"))?,
            ca: None,
        })
    }

    /// Adds the private CA from a PEM file holding that one certificate.
    /// A file of several (the relay's chain) is refused: its first would
    /// be the relay's own certificate, not the CA.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self, ClientConfigError> {
        use rustls_pki_types::pem::PemObject as _;
        let refused = |reason: String| ClientConfigError::Ca {
            path: path.display().to_string(),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| refused(format!("cannot read ({e})")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refused(format!("not a PEM certificate ({e})")))?;
        let [ca] = <[CertificateDer<'static>; 1]>::try_from(certificates).map_err(|all| {
            refused(format!(
                "holds {} certificates; give the CA's own certificate alone, not the relay's chain",
                all.len()
            ))
        })?;
        self.ca = Some(ca);
        Ok(self)
    }

    /// The README's client tables, filled in.
    pub fn text(&self) -> String {
        let security = |s: Service| {
            if s.implicit_tls {
                "SSL/TLS"
            } else {
                "STARTTLS"
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "Mail client settings for the relay {}", self.host);
        let _ = writeln!(out);
        let _ = writeln!(out, "| field | incoming (IMAP) | outgoing (SMTP) |");
        let _ = writeln!(out, "|---|---|---|");
        let _ = writeln!(out, "| Server | {} | {} |", self.host, self.host);
        let _ = writeln!(out, "| Port | {} | {} |", self.imap.port, self.smtp.port);
        let _ = writeln!(
            out,
            "| Connection security | {} | {} |",
            security(self.imap),
            security(self.smtp)
        );
        let _ = writeln!(
            out,
            "| Authentication | Normal password (or OAuth2, if your provider uses it) | the same |"
        );
        let _ = writeln!(
            out,
            "| Username | your login at your provider, e.g. you@example.org | the same |"
        );
        let _ = writeln!(
            out,
            "| Password | your password at your provider | the same |"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Choose \"configure manually\": an automatic lookup would find your provider's \
             servers, not the relay."
        );
        if let Some(ca) = &self.ca {
            let _ = writeln!(
                out,
                "The relay's certificate is issued by a private CA, SHA-256 fingerprint\n{}\n\
                 Import that CA into your client, or accept the relay's certificate once after \
                 comparing fingerprints with your relay's operator.",
                crate::tls::fingerprint(ca)
            );
        }
        out
    }

    /// An Apple configuration profile: an IMAP account through the relay,
    /// and the private CA as a root payload when there is one. No address,
    /// user name or password: iOS and macOS ask for them at installation.
    /// `uuid` makes each payload's UUID.
    pub fn mobileconfig(&self, mut uuid: impl FnMut() -> String) -> String {
        let host = &self.host;
        let id = format!("org.mailveil.relay.{host}");
        let mut payloads = String::new();
        let mail_uuid = uuid();
        let _ = write!(
            payloads,
            "\t\t<dict>\n\
             {}{}{}{}{}\
             {}{}{}{}{}{}\
             {}{}{}{}{}{}\
             \t\t</dict>\n",
            entry("PayloadType", &string("com.apple.mail.managed")),
            entry("PayloadVersion", "<integer>1</integer>"),
            entry("PayloadIdentifier", &string(&format!("{id}.mail"))),
            entry("PayloadUUID", &string(&mail_uuid)),
            entry(
                "PayloadDisplayName",
                &string(&format!("Mail through {host}"))
            ),
            entry("EmailAccountType", &string("EmailTypeIMAP")),
            entry(
                "EmailAccountDescription",
                &string(&format!("{host} (mailveil)"))
            ),
            entry("IncomingMailServerHostName", &string(host)),
            entry(
                "IncomingMailServerPortNumber",
                &format!("<integer>{}</integer>", self.imap.port)
            ),
            entry("IncomingMailServerUseSSL", "<true/>"),
            entry(
                "IncomingMailServerAuthentication",
                &string("EmailAuthPassword")
            ),
            entry("OutgoingMailServerHostName", &string(host)),
            entry(
                "OutgoingMailServerPortNumber",
                &format!("<integer>{}</integer>", self.smtp.port)
            ),
            entry("OutgoingMailServerUseSSL", "<true/>"),
            entry(
                "OutgoingMailServerAuthentication",
                &string("EmailAuthPassword")
            ),
            entry("OutgoingPasswordSameAsIncomingPassword", "<true/>"),
            entry("PreventMove", "<false/>"),
        );
        if let Some(ca) = &self.ca {
            let _ = write!(
                payloads,
                "\t\t<dict>\n{}{}{}{}{}{}{}\t\t</dict>\n",
                entry("PayloadType", &string("com.apple.security.root")),
                entry("PayloadVersion", "<integer>1</integer>"),
                entry("PayloadIdentifier", &string(&format!("{id}.ca"))),
                entry("PayloadUUID", &string(&uuid())),
                entry(
                    "PayloadDisplayName",
                    &string(&format!("Certificate authority of {host}"))
                ),
                entry("PayloadCertificateFileName", &string("relay-ca.cer")),
                entry(
                    "PayloadContent",
                    &format!("<data>{}</data>", B64.encode(ca.as_ref()))
                ),
            );
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
             \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\">\n<dict>\n\
             \t<key>PayloadContent</key>\n\t<array>\n{payloads}\t</array>\n\
             {}{}{}{}{}{}\
             </dict>\n</plist>\n",
            top_entry("PayloadType", &string("Configuration")),
            top_entry("PayloadVersion", "<integer>1</integer>"),
            top_entry("PayloadIdentifier", &string(&id)),
            top_entry("PayloadUUID", &string(&uuid())),
            top_entry(
                "PayloadDisplayName",
                &string(&format!("Mail through {host}"))
            ),
            top_entry("PayloadRemovalDisallowed", "<false/>"),
        )
    }

    /// A Delta Chat `dclogin:` URI for `address` and `password`, every
    /// server setting spelled out; certificate checks strict unless
    /// `accept_invalid_certificates`.
    pub fn dclogin(
        &self,
        address: &str,
        password: &str,
        accept_invalid_certificates: bool,
    ) -> Zeroizing<String> {
        let security = |s: Service| if s.implicit_tls { "ssl" } else { "starttls" };
        let mut uri = Zeroizing::new(String::with_capacity(256));
        uri.push_str("dclogin:");
        percent_encode(&mut uri, address, b"@+");
        uri.push_str("?p=");
        percent_encode(&mut uri, password, b"");
        uri.push_str("&v=1&ih=");
        percent_encode(&mut uri, &self.host, b"");
        let _ = write!(uri, "&ip={}&is={}&sh=", self.imap.port, security(self.imap));
        percent_encode(&mut uri, &self.host, b"");
        let _ = write!(
            uri,
            "&sp={}&ss={}&ic={}",
            self.smtp.port,
            security(self.smtp),
            // Delta Chat's numbers: 1 strict, 2 accept invalid
            // certificates (3 is an alias of 2 kept for compatibility).
            if accept_invalid_certificates { 2 } else { 1 }
        );
        uri
    }
}

fn entry(key: &str, value: &str) -> String {
    format!("\t\t\t<key>{key}</key>\n\t\t\t{value}\n")
}

fn top_entry(key: &str, value: &str) -> String {
    format!("\t<key>{key}</key>\n\t{value}\n")
}

/// A plist `<string>`, XML-escaped.
fn string(value: &str) -> String {
    let mut out = String::from("<string>");
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out.push_str("</string>");
    out
}

/// Appends `value` with every byte but RFC 3986's unreserved ones (and
/// `keep`) percent-encoded.
fn percent_encode(out: &mut String, value: &str, keep: &[u8]) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// A random (version 4) UUID, in upper case as Apple's tools write them.
pub fn random_uuid() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    // The system's random source does not fail on Linux once booted; a
    // zero UUID would still be a valid, if unlucky, identifier.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `text` as a QR code for a terminal: two rows of modules per line in
/// half blocks, black on white whatever the terminal's colours, with the
/// four-module quiet zone scanners need.
pub fn terminal_qr(text: &str) -> Result<String, ClientConfigError> {
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium)
        .map_err(|_| ClientConfigError::TooLongForQr)?;
    Ok(render_half_blocks(qr.size(), |x, y| qr.get_module(x, y)))
}

/// Renders a `size`×`size` matrix (`dark(x, y)`, out of range is light).
fn render_half_blocks(size: i32, dark: impl Fn(i32, i32) -> bool) -> String {
    const QUIET: i32 = 4;
    let mut out = String::new();
    let mut y = -QUIET;
    while y < size + QUIET {
        out.push_str("\x1b[30;47m");
        for x in -QUIET..size + QUIET {
            let top = dark(x, y);
            let bottom = y + 1 < size + QUIET && dark(x, y + 1);
            out.push(match (top, bottom) {
                (false, false) => ' ',
                (true, false) => '▀',
                (false, true) => '▄',
                (true, true) => '█',
            });
        }
        out.push_str("\x1b[0m\n");
        y += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RelaySettings {
        RelaySettings {
            host: "relay.example.org".into(),
            imap: Service {
                port: 993,
                implicit_tls: true,
            },
            smtp: Service {
                port: 587,
                implicit_tls: false,
            },
            ca: None,
        }
    }

    #[test]
    fn dclogin_spells_out_every_server_setting_and_encodes_the_password() {
        let uri = settings().dclogin("alice+dc@example.org", "p&ss=w/rd ü", false);
        assert_eq!(
            uri.as_str(),
            "dclogin:alice+dc@example.org?p=p%26ss%3Dw%2Frd%20%C3%BC&v=1&ih=relay.example.org\
             &ip=993&is=ssl&sh=relay.example.org&sp=587&ss=starttls&ic=1"
        );
        assert!(settings().dclogin("a@b.org", "x", true).ends_with("&ic=2"));
    }

    #[test]
    fn only_listeners_a_client_can_use_at_that_host_are_picked() {
        // First in the file: port 443 by ALPN (IMAP without ALPN), a
        // listener behind a load balancer, then the onion's ports.
        let config = Config::parse(
            r#"
[server]
hostname = "relay.example.org"
[[listen]]
protocol = "alpn"
alpn_default = "imap"
address = "0.0.0.0:443"
tls = "implicit"
[[listen]]
protocol = "smtp"
address = "10.0.0.11:1465"
tls = "implicit"
proxy_protocol = true
proxy_from = ["10.0.0.5"]
[[listen]]
protocol = "smtp"
address = "onion:465"
tls = "implicit"
[[listen]]
protocol = "imap"
address = "onion:993"
tls = "implicit"
[[listen]]
protocol = "smtp"
address = "0.0.0.0:465"
tls = "implicit"
[onion]
key_directory = "/k"
[[upstream]]
name = "p"
smtp = { host = "smtp.p.example", port = 465, tls = "implicit" }
imap = { host = "imap.p.example", port = 993, tls = "implicit" }
domains = ["p.example"]
[egress]
mode = "direct"
"#,
        )
        .expect("valid");
        let public = RelaySettings::new(Some(&config), None, None, None).expect("public");
        assert_eq!((public.imap.port, public.smtp.port), (443, 465));
        let onion = "a".repeat(56) + ".onion";
        let hidden = RelaySettings::new(Some(&config), Some(onion), None, None).expect("onion");
        assert_eq!((hidden.imap.port, hidden.smtp.port), (993, 465));
        assert!(hidden.imap.implicit_tls && hidden.smtp.implicit_tls);
    }

    #[test]
    fn ports_come_from_the_listeners_implicit_first_and_flags_win() {
        let config = Config::parse(
            r#"
[server]
hostname = "relay.example.org"
[[listen]]
protocol = "imap"
address = "0.0.0.0:143"
tls = "starttls"
[[listen]]
protocol = "imap"
address = "0.0.0.0:993"
tls = "implicit"
[[listen]]
protocol = "smtp"
address = "0.0.0.0:587"
tls = "starttls"
[[listen]]
protocol = "smtp"
address = "0.0.0.0:2525"
tls = "starttls"
[[upstream]]
name = "p"
smtp = { host = "smtp.p.example", port = 465, tls = "implicit" }
imap = { host = "imap.p.example", port = 993, tls = "implicit" }
domains = ["p.example"]
[egress]
mode = "direct"
"#,
        )
        .expect("valid");
        let s = RelaySettings::new(Some(&config), None, None, None).expect("settings");
        assert_eq!(s.host, "relay.example.org");
        assert_eq!(
            (s.imap, s.smtp),
            (
                Service {
                    port: 993,
                    implicit_tls: true
                },
                Service {
                    port: 587,
                    implicit_tls: false
                }
            )
        );
        let s = RelaySettings::new(Some(&config), Some("other.example".into()), Some(143), None)
            .expect("settings");
        assert_eq!(s.host, "other.example");
        assert!(!s.imap.implicit_tls);
        // A flag's port takes the TLS mode of the configuration's listener.
        let s = RelaySettings::new(Some(&config), None, None, Some(2525)).expect("settings");
        assert!(!s.smtp.implicit_tls);
        let s =
            RelaySettings::new(None, Some("h".into()), Some(993), Some(2525)).expect("settings");
        assert!(s.smtp.implicit_tls);
        assert!(matches!(
            RelaySettings::new(None, Some("h".into()), Some(993), None),
            Err(ClientConfigError::NoListener("SMTP", "smtp"))
        ));
        assert!(matches!(
            RelaySettings::new(None, None, Some(993), Some(465)),
            Err(ClientConfigError::NoHost)
        ));
    }

    #[test]
    fn the_profile_escapes_names_and_holds_no_address_or_password() {
        let mut s = settings();
        s.host = "a<b&c".into();
        let profile = s.mobileconfig(|| "U".into());
        assert!(profile.contains("<string>a&lt;b&amp;c</string>"));
        for absent in [
            "<key>EmailAddress<",
            "Username<",
            "<key>IncomingPassword<",
            "<key>OutgoingPassword<",
            "com.apple.security.root",
        ] {
            assert!(!profile.contains(absent), "{absent}");
        }
    }

    #[test]
    fn random_uuids_are_version_4_and_differ() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89AB".contains(&a[19..20]));
    }

    #[test]
    fn the_terminal_qr_reads_back_as_the_codes_modules() {
        let text = "dclogin:a@b.org?p=x&v=1";
        let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).expect("qr");
        let drawn = terminal_qr(text).expect("fits");
        let rows: Vec<Vec<char>> = drawn
            .lines()
            .map(|l| {
                l.trim_start_matches("\x1b[30;47m")
                    .trim_end_matches("\x1b[0m")
                    .chars()
                    .collect()
            })
            .collect();
        let side = qr.size() + 8;
        assert_eq!(rows.len() as i32, (side + 1) / 2);
        for y in 0..side {
            for x in 0..side {
                let c = rows[(y / 2) as usize][x as usize];
                let dark = if y % 2 == 0 {
                    matches!(c, '▀' | '█')
                } else {
                    matches!(c, '▄' | '█')
                };
                assert_eq!(dark, qr.get_module(x - 4, y - 4), "({x}, {y})");
            }
        }
    }
}
