//! `mailveil check` output: what a validated [`Config`] will do, one line per
//! item. Structure only: no key material, nothing read from the files it
//! names, and the output stays stable (operators and scripts read it).

use super::{Config, Endpoint, Isolate};

impl Config {
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
            let serves = match l.serves {
                super::Serves::One(p) => format!("{p:?}"),
                super::Serves::ByAlpn { default } => {
                    format!("Smtp and Imap by ALPN (without ALPN: {default:?})")
                }
            };
            out.push_str(&format!(
                "listen: {serves} on {} ({:?} TLS)\n",
                l.address, l.tls
            ));
            match (&l.hostname, &l.certificate) {
                (_, Some((cert, _))) => out.push_str(&format!(
                    "  its own name {} and certificate {}\n",
                    l.hostname.as_deref().unwrap_or(&self.hostname),
                    cert.display()
                )),
                (Some(name), None) => out.push_str(&format!(
                    "  its own name {name}, with an ephemeral self-signed certificate\n"
                )),
                (None, None) if l.is_onion() => out.push_str(
                    "  on the onion service: greets with the onion address, with a certificate made at start-up for it\n",
                ),
                (None, None) => {}
            }
            if let Some(from) = &l.proxy_from {
                let from: Vec<String> = from.iter().map(ToString::to_string).collect();
                out.push_str(&format!("  PROXY protocol v2, from {}\n", from.join(", ")));
            }
        }
        if let Some(onion) = &self.onion {
            out.push_str(&format!(
                "onion service: key from {}, vanguards {:?}\n",
                onion.key_directory.display(),
                onion.vanguards
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
            if self.catch_all == Some(i) {
                domains.insert(0, super::upstream::CATCH_ALL);
            }
            let show_one = |e: &Endpoint| {
                format!(
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
                )
            };
            let show = |list: &[Endpoint]| match list {
                [] => "none".to_string(),
                _ => list
                    .iter()
                    .map(show_one)
                    .collect::<Vec<_>>()
                    .join(", then "),
            };
            let trust = match (&u.pins, &u.ca) {
                (Some(p), _) => format!(
                    "pinned key ({} pin{}{})",
                    p.spki_sha256.len(),
                    if p.spki_sha256.len() == 1 { "" } else { "s" },
                    if p.check_name {
                        ""
                    } else {
                        ", name not checked"
                    }
                ),
                (None, Some(path)) => path.display().to_string(),
                (None, None) => "public roots".to_string(),
            };
            out.push_str(&format!(
                "upstream {}: smtp {}, imap {}, CA: {}, domains: [{}]{}{}{}\n",
                u.name,
                show(&u.smtp),
                show(&u.imap),
                trust,
                domains.join(", "),
                if u.login == super::LoginForm::LocalPart {
                    ", login: local part"
                } else {
                    ""
                },
                if u.outgoing == super::Outgoing::EncryptedOnly {
                    ", outgoing: encrypted only"
                } else {
                    ""
                },
                if self.bare_upstream == Some(i) {
                    ", logins without @"
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
        if let Some(access) = &self.access {
            out.push_str(&format!(
                "access: members only, list {}, secret from {}\n",
                access.list.display(),
                match &access.secret {
                    super::SecretSource::Credential(name) => format!("systemd credential {name}"),
                    super::SecretSource::File(path) => path.display().to_string(),
                }
            ));
        }
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

#[cfg(test)]
mod tests {
    use crate::config::tests::MINIMAL;
    use crate::config::{Config, DEFAULT_EGRESS};

    #[test]
    fn summary_of_minimal_config_shows_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        let via = DEFAULT_EGRESS.name();
        assert_eq!(
            c.summary(),
            format!(
                "hostname: localhost\n\
                 upstream EHLO name: [127.0.0.1]\n\
                 listen: Smtp on 127.0.0.1:1465 (Implicit TLS)\n\
                 certificate: ephemeral self-signed, made at start-up\n\
                 upstream a: smtp smtp.a.example:465 (Implicit TLS, via {via}), imap none, CA: public roots, domains: [a.example, a2.example]\n\
                 upstream b: smtp smtp.b.example:587 (Starttls TLS, via {via}), imap none, CA: public roots, domains: [*], logins without @\n\
                 egress: {via} (isolation per account)\n\
                 limits: message 36700160 bytes, 100 recipients, 1000 connections\n\
                 sanitize: Default\n\
                 logging: aggregate counters every 60 min\n"
            )
        );
    }

    #[test]
    fn summary_shows_every_optional_line() {
        let onion = "a".repeat(56) + ".onion";
        let id = "0123456789ABCDEF0123456789ABCDEF01234567";
        let text = format!(
            r#"
[server]
hostname = "relay.example"
upstream_ehlo_name = "[10.0.0.1]"

[[listen]]
protocol = "smtp"
address = "[::1]:1465"
tls = "starttls"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1993"
tls = "implicit"

[tls]
certificate = "/etc/mailveil/cert.pem"
private_key = "/etc/mailveil/key.pem"

[[upstream]]
name = "hidden"
smtp = {{ host = "{onion}", port = 465, tls = "implicit" }}
imap = {{ host = "{onion}", port = 993, tls = "implicit" }}
tls_server_name = "mail.hidden.example"
ca = "/etc/mailveil/ca.pem"
domains = ["Z.example", "y.example"]

[[upstream]]
name = "plain"
imap = {{ host = "imap.plain.example", port = 143, tls = "starttls" }}
egress = "direct"
domains = ["*"]

[routing]
bare_logins = "plain"

[egress]
mode = "socks5"
isolate = "session"
socks5 = "127.0.0.1:9050"

[egress.tor.testing_network]
enabled = true
authorities = [{{ v3ident = "{id}", address = "127.0.0.1:7000" }}]
fallbacks = [{{ rsa_identity = "{id}", ed25519_identity = "AAAA", address = "127.0.0.1:5000" }}]

[limits]
max_message_bytes = 1024
max_recipients = 7
max_connections = 3

[sanitize]
mode = "strict"

[access]
list = "/etc/mailveil/members"

[logging]
stats_interval_minutes = 0
"#
        );
        let c = Config::parse(&text).expect("valid");
        assert_eq!(
            c.summary(),
            format!(
                "hostname: relay.example\n\
                 upstream EHLO name: [10.0.0.1]\n\
                 listen: Smtp on [::1]:1465 (Starttls TLS)\n\
                 listen: Imap on 127.0.0.1:1993 (Implicit TLS)\n\
                 certificate: /etc/mailveil/cert.pem\n\
                 upstream hidden: smtp {onion}:465 (Implicit TLS, certificate name mail.hidden.example, via socks5), \
                 imap {onion}:993 (Implicit TLS, certificate name mail.hidden.example, via socks5), \
                 CA: /etc/mailveil/ca.pem, domains: [y.example, z.example]\n\
                 upstream plain: smtp none, imap imap.plain.example:143 (Starttls TLS, via direct), CA: public roots, domains: [*], logins without @\n\
                 egress: socks5 (isolation per session)\n\
                 socks5 proxy: 127.0.0.1:9050\n\
                 tor: PRIVATE TESTING NETWORK (1 authorities, 1 fallbacks), local addresses allowed\n\
                 limits: message 1024 bytes, 7 recipients, 3 connections\n\
                 sanitize: Strict\n\
                 access: members only, list /etc/mailveil/members, secret from systemd credential mailveil-access-key\n\
                 logging: no counter report\n"
            )
        );
    }
}
