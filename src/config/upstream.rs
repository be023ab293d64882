//! `[[upstream]]` and `[routing]`: the providers, where their SMTP and IMAP
//! endpoints are, how each is reached and which login domains go to which.
//! Host names are only checked and kept `Sensitive`, never resolved here; an
//! `.onion` host is refused unless it is a v3 address reached through Tor.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::egress::mode as egress_mode;
use super::policy::{Outgoing, outgoing as outgoing_policy};
use super::{ConfigError, EgressMode, check_host, invalid};
use zeroize::Zeroizing;

use crate::privacy::Sensitive;

/// One `[[upstream]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    name: String,
    /// One `{ host, port, tls }` table, or a list of them tried in order.
    smtp: Option<toml::Value>,
    /// As `smtp`.
    imap: Option<toml::Value>,
    ca: Option<PathBuf>,
    #[serde(default)]
    domains: Vec<String>,
    egress: Option<String>,
    tls_server_name: Option<String>,
    login: Option<String>,
    pin_sha256: Option<Vec<String>>,
    pin_check_name: Option<bool>,
    outgoing: Option<String>,
}

/// An upstream's `smtp` or `imap` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    host: String,
    port: u16,
    tls: UpstreamTls,
}

/// `[routing]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouting {
    bare_logins: Option<String>,
    /// Removed: it sent the password of any login no upstream claimed to
    /// one provider. Read only to say what replaces it.
    default: Option<String>,
}

/// The `domains` entry that routes every domain no other upstream lists.
pub(crate) const CATCH_ALL: &str = "*";

/// How the relay reaches an upstream with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// TLS from the first byte.
    Implicit,
    /// STARTTLS, required: an upstream that does not offer it is not used.
    Starttls,
}

/// Most endpoints one protocol of an upstream may list: each is tried in
/// turn within one connect budget, so a long list only thins it.
pub(crate) const MAX_ENDPOINTS: usize = 4;

/// How the provider is to see the login the client gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginForm {
    /// As the client gave it, the whole address (the default).
    Address,
    /// Only what comes before the last `@` (`alice@riseup.net` → `alice`),
    /// for providers that expect a bare user name. Routing, lockouts and
    /// isolation still use the whole address.
    LocalPart,
}

/// Certificate pinning for one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// SHA-256 digests of accepted SubjectPublicKeyInfo structures.
    pub spki_sha256: Vec<[u8; 32]>,
    /// Whether the certificate must still carry the endpoint's name.
    pub check_name: bool,
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

impl Endpoint {
    /// The host without the brackets of an IPv6 literal, as a connector
    /// takes it.
    pub(crate) fn bare_host(&self) -> &str {
        super::bare(self.host.expose())
    }

    /// The certificate name without the brackets of an IPv6 literal.
    pub(crate) fn bare_server_name(&self) -> &str {
        super::bare(self.tls_server_name.expose())
    }
}

/// A provider the relay can talk to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name used in routing.
    pub name: String,
    /// Submission endpoints in the order they are tried; empty when the
    /// provider is not used for sending.
    pub smtp: Vec<Endpoint>,
    /// IMAP endpoints in the order they are tried; empty when the provider
    /// is not used for reading.
    pub imap: Vec<Endpoint>,
    /// Extra CA certificates (PEM) trusted for this upstream instead of the
    /// public web PKI roots.
    pub ca: Option<PathBuf>,
    /// How the provider is to see the login.
    pub login: LoginForm,
    /// Pinned public keys, which replace chain validation when set.
    pub pins: Option<Pins>,
    /// Which messages its members may send (`outgoing`, else `[policy]`).
    pub outgoing: Outgoing,
}

/// The validated upstreams and how logins are routed to them.
pub(super) struct Routes {
    /// Upstreams by position.
    pub(super) upstreams: Vec<Upstream>,
    /// Index of the upstream for logins without `@`.
    pub(super) bare_upstream: Option<usize>,
    /// Index of the upstream with `domains = ["*"]`.
    pub(super) catch_all: Option<usize>,
    /// Login domain (normalized) → upstream index.
    pub(super) domain_routes: HashMap<String, usize>,
}

/// True for `.onion` host names.
pub(crate) fn is_onion(host: &str) -> bool {
    host.len() > 6 && host[host.len() - 6..].eq_ignore_ascii_case(".onion")
}

/// Refuses a configuration without any `[[upstream]]`.
pub(super) fn require_some(raw: &[RawUpstream]) -> Result<(), ConfigError> {
    if raw.is_empty() {
        return Err(invalid(
            "upstream",
            "at least one [[upstream]] table is required",
        ));
    }
    Ok(())
}

/// Checks every upstream in order (endpoints reached by `global_mode` unless
/// the upstream names its own), builds the domain routes (normalized: lower
/// case, no trailing dot, IDNA), the catch-all and the upstream for bare
/// logins.
pub(super) fn validate(
    raw: Vec<RawUpstream>,
    routing: Option<RawRouting>,
    global_mode: EgressMode,
    global_outgoing: Outgoing,
) -> Result<Routes, ConfigError> {
    let routing = routing.unwrap_or(RawRouting {
        bare_logins: None,
        default: None,
    });
    if routing.default.is_some() {
        return Err(invalid(
            "routing.default",
            "was removed: it sent the password of any login no upstream claims to one \
             provider. Logins without @ now go to `bare_logins = \"NAME\"`; a login whose \
             domain no upstream lists is refused, unless one upstream has `domains = [\"*\"]`",
        ));
    }
    let mut upstreams: Vec<Upstream> = Vec::with_capacity(raw.len());
    let mut domain_routes = HashMap::new();
    let mut catch_all = None;
    for (i, u) in raw.into_iter().enumerate() {
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
        let smtp = endpoints(&format!("{key}.smtp"), u.smtp, mode, &u.tls_server_name)?;
        let imap = endpoints(&format!("{key}.imap"), u.imap, mode, &u.tls_server_name)?;
        let login = match u.login.as_deref() {
            None | Some("address") => LoginForm::Address,
            Some("localpart") => LoginForm::LocalPart,
            Some(_) => {
                return Err(invalid(
                    format!("{key}.login"),
                    "expected \"address\" (the provider sees alice@example.org) or \
                     \"localpart\" (it sees alice)",
                ));
            }
        };
        if login == LoginForm::LocalPart && u.domains.iter().any(|d| d.trim() == CATCH_ALL) {
            // alice@a.example, alice@b.example … would each have their own
            // lockout allowance while guessing one account at the provider.
            return Err(invalid(
                format!("{key}.login"),
                "\"localpart\" can't go with domains = [\"*\"]: every domain would reach the \
                 same account at the provider, each with its own lockout allowance; list the \
                 provider's domains",
            ));
        }
        let pins = pins(&key, u.pin_sha256, u.pin_check_name, u.ca.is_some())?;
        let outgoing = outgoing_policy(
            &format!("{key}.outgoing"),
            u.outgoing.as_deref(),
            global_outgoing,
        )?;
        for (j, d) in u.domains.iter().enumerate() {
            let d = d.trim();
            if d == CATCH_ALL {
                if catch_all.replace(i).is_some() {
                    return Err(invalid(
                        format!("{key}.domains[{j}]"),
                        "another upstream already has the catch-all \"*\"",
                    ));
                }
                continue;
            }
            // "*.example.org" is not a pattern: only "*" alone is.
            let normalized = (!d.contains(['@', '*']) && !d.contains(char::is_whitespace))
                .then(|| normalize_domain(d))
                .flatten();
            let Some(normalized) = normalized else {
                return Err(invalid(
                    format!("{key}.domains[{j}]"),
                    "expected a bare domain like \"example.org\", or \"*\" for every other domain",
                ));
            };
            if domain_routes
                .insert(normalized.as_str().to_string(), i)
                .is_some()
            {
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
            login,
            pins,
            outgoing,
        });
    }
    let bare_upstream = match routing.bare_logins {
        Some(name) => Some(
            upstreams
                .iter()
                .position(|u| u.name == name)
                .ok_or_else(|| invalid("routing.bare_logins", "names no [[upstream]]"))?,
        ),
        None => None,
    };
    for (i, u) in upstreams.iter().enumerate() {
        let reached = bare_upstream == Some(i)
            || catch_all == Some(i)
            || domain_routes.values().any(|&r| r == i);
        if !reached {
            return Err(invalid(
                format!("upstream[{i}]"),
                format!(
                    "no login reaches \"{}\": give it `domains = [...]` (or [\"*\"] for every \
                     other domain), or name it in `[routing] bare_logins`",
                    u.name
                ),
            ));
        }
    }
    Ok(Routes {
        upstreams,
        bare_upstream,
        catch_all,
        domain_routes,
    })
}

/// A domain as routing, tags and isolation compare it: lower case, without
/// a trailing dot, internationalized names in their ASCII form. `None`
/// when it is not a valid domain name.
pub(crate) fn normalize_domain(domain: &str) -> Option<Zeroizing<String>> {
    // IDNA first: it maps other full stops (U+3002 …) to '.', which may
    // then be the trailing one.
    let mut ascii = Zeroizing::new(idna::domain_to_ascii(domain).ok()?);
    if ascii.ends_with('.') {
        ascii.pop();
    }
    (!ascii.is_empty() && !ascii.ends_with('.')).then_some(ascii)
}

/// An upstream's `smtp` or `imap` value: one table, or a list of one to
/// [`MAX_ENDPOINTS`] tables (keys `smtp[0]`, `smtp[1]` …).
fn endpoints(
    key: &str,
    value: Option<toml::Value>,
    mode: EgressMode,
    tls_server_name: &Option<String>,
) -> Result<Vec<Endpoint>, ConfigError> {
    let table = |key: &str, v: toml::Value| {
        let raw: RawEndpoint = v.try_into().map_err(|e: toml::de::Error| {
            invalid(key.to_string(), e.message().trim_end().to_string())
        })?;
        endpoint(key, raw, mode, tls_server_name)
    };
    match value {
        None => Ok(Vec::new()),
        Some(v @ toml::Value::Table(_)) => Ok(vec![table(key, v)?]),
        Some(toml::Value::Array(list)) if (1..=MAX_ENDPOINTS).contains(&list.len()) => list
            .into_iter()
            .enumerate()
            .map(|(j, v)| table(&format!("{key}[{j}]"), v))
            .collect(),
        Some(toml::Value::Array(_)) => Err(invalid(
            key.to_string(),
            format!("expected 1 to {MAX_ENDPOINTS} endpoints"),
        )),
        Some(_) => Err(invalid(
            key.to_string(),
            "expected { host = \"…\", port = …, tls = \"implicit\" | \"starttls\" }, \
             or a list of them tried in order",
        )),
    }
}

/// `pin_sha256` and `pin_check_name`: each pin the base64 SHA-256 of a
/// SubjectPublicKeyInfo (HPKP's form; curl's `sha256//` prefix accepted).
fn pins(
    key: &str,
    pins: Option<Vec<String>>,
    check_name: Option<bool>,
    has_ca: bool,
) -> Result<Option<Pins>, ConfigError> {
    use base64::Engine as _;
    let Some(pins) = pins else {
        if check_name.is_some() {
            return Err(invalid(
                format!("{key}.pin_check_name"),
                "only applies with `pin_sha256`",
            ));
        }
        return Ok(None);
    };
    if pins.is_empty() {
        return Err(invalid(
            format!("{key}.pin_sha256"),
            "list at least one pin, or leave the key out",
        ));
    }
    if has_ca {
        return Err(invalid(
            format!("{key}.pin_sha256"),
            "a pinned key replaces chain validation, so `ca` would not be used: keep one of the two",
        ));
    }
    let mut spki_sha256 = Vec::with_capacity(pins.len());
    for (j, pin) in pins.iter().enumerate() {
        let text = pin.trim();
        let text = text.strip_prefix("sha256//").unwrap_or(text);
        let digest = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .ok_or_else(|| {
                invalid(
                    format!("{key}.pin_sha256[{j}]"),
                    "expected the base64 SHA-256 of the certificate's public key (44 characters \
                     ending in \"=\"), as `mailveil check --probe` prints it",
                )
            })?;
        spki_sha256.push(digest);
    }
    Ok(Some(Pins {
        spki_sha256,
        check_name: check_name.unwrap_or(true),
    }))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

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
                "bare_logins = \"b\"",
                "bare_logins = \"b\"\n\n[egress]\nmode = \"direct\"\nsocks5 = \"127.0.0.1:9050\"\nisolate = \"session\"",
            );
        let c = Config::parse(&text).expect("valid");
        let a = c.upstreams[0].smtp.first().expect("smtp");
        assert_eq!(
            (a.egress, a.host.expose().as_str()),
            (EgressMode::Socks5, onion.as_str())
        );
        assert_eq!(a.tls_server_name.expose(), "smtp.a.example");
        let b = c.upstreams[1].smtp.first().expect("smtp");
        assert_eq!(b.egress, EgressMode::Direct);
        assert_eq!(c.egress.isolate, crate::config::Isolate::Session);
        assert_eq!(
            c.egress.socks5,
            Some("127.0.0.1:9050".parse().expect("addr"))
        );
    }

    #[test]
    fn bad_port_names_the_key() {
        let text = MINIMAL.replace("port = 587", "port = 0");
        let err = Config::parse(&text).expect_err("port 0").to_string();
        assert!(err.contains("upstream[1].smtp.port"), "{err}");
    }

    #[test]
    fn bare_logins_must_name_an_upstream() {
        let text = MINIMAL.replace("bare_logins = \"b\"", "bare_logins = \"c\"");
        let err = Config::parse(&text).expect_err("bad name").to_string();
        assert!(err.contains("routing.bare_logins"), "{err}");
    }

    #[test]
    fn routing_default_is_refused_with_what_replaces_it() {
        let text = MINIMAL.replace("bare_logins = \"b\"", "default = \"b\"");
        let err = refusal(&text);
        assert!(err.contains("routing.default"), "{err}");
        assert!(
            err.contains("bare_logins") && err.contains("domains = [\"*\"]"),
            "{err}"
        );
    }

    #[test]
    fn domain_routed_twice_is_refused() {
        let text = MINIMAL.replace("domains = [\"*\"]", "domains = [\"A.example.\"]");
        let err = Config::parse(&text).expect_err("dup domain").to_string();
        assert!(err.contains("upstream[1].domains[0]"), "{err}");
    }

    #[test]
    fn without_a_catch_all_an_unlisted_domain_is_refused() {
        let text = MINIMAL.replace("domains = [\"*\"]\n", "");
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.catch_all, None);
        assert_eq!(c.route("bob@elsewhere.example"), None);
        assert_eq!(c.route("alice@a.example"), Some(0));
        assert_eq!(c.route("bare-login"), Some(1));
        // And without bare_logins, a bare name goes nowhere either.
        let text = text
            .replace(
                "[[upstream]]\nname = \"b\"",
                "[[upstream]]\nname = \"b\"\ndomains = [\"b.example\"]",
            )
            .replace("[routing]\nbare_logins = \"b\"\n", "");
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.route("bare-login"), None);
    }

    #[test]
    fn an_upstream_no_login_reaches_is_refused() {
        let text = MINIMAL
            .replace("domains = [\"*\"]\n", "")
            .replace("[routing]\nbare_logins = \"b\"\n", "");
        let err = refusal(&text);
        assert!(
            err.contains("upstream[1]") && err.contains("no login reaches"),
            "{err}"
        );
    }

    #[test]
    fn only_one_upstream_may_catch_all() {
        let text = MINIMAL.replace(
            "domains = [\"a.example\", \"A2.example\"]",
            "domains = [\"*\"]",
        );
        let err = refusal(&text);
        assert!(err.contains("upstream[1].domains[0]"), "{err}");
    }

    #[test]
    fn a_wildcard_inside_a_domain_is_refused() {
        for bad in ["*.a2.example", "a*.example", "a2.example*"] {
            let err = refusal(&MINIMAL.replace("\"A2.example\"", &format!("\"{bad}\"")));
            assert!(
                err.contains("upstream[0].domains[1]") && err.contains("\"*\" for every other"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn domains_are_compared_normalized() {
        let text = MINIMAL.replace("\"A2.example\"", "\"Bücher.example.\"");
        let c = Config::parse(&text).expect("valid");
        for login in [
            "u@bücher.example",
            "u@BÜCHER.example",
            "u@xn--bcher-kva.example",
            "u@bücher.example.",
            "u@A.Example.",
            "u@a.example\u{3002}",
        ] {
            assert_eq!(c.route(login), Some(0), "{login}");
        }
    }

    #[test]
    fn upstream_names_must_be_unique_and_set() {
        assert_eq!(
            refusal(&MINIMAL.replace("name = \"b\"", "name = \"a\"")),
            "`upstream[1].name`: name used twice"
        );
        assert_eq!(
            refusal(&MINIMAL.replace("name = \"a\"", "name = \"\"")),
            "`upstream[0].name`: must not be empty"
        );
    }

    #[test]
    fn onion_hosts_must_be_v3() {
        let text = MINIMAL.replace("smtp.b.example", "abc.onion");
        assert_eq!(
            refusal(&text),
            "`upstream[1].smtp.host`: expected a v3 onion address (56 characters before .onion)"
        );
        assert!(is_onion("x.ONION") && !is_onion(".onion") && !is_onion("onion.example"));
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
        let imap = c.upstreams[0].imap.first().expect("imap endpoint");
        assert_eq!(
            (imap.host.expose().as_str(), imap.port),
            ("imap.a.example", 993)
        );
        assert!(c.upstreams[1].imap.is_empty());
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

    /// MINIMAL with upstream "a"'s `smtp` line replaced by `smtp`, and
    /// `more` added to it.
    fn with_a(smtp: &str, more: &str) -> String {
        MINIMAL.replace(
            "smtp = { host = \"smtp.a.example\", port = 465, tls = \"implicit\" }",
            &format!("{smtp}\n{more}"),
        )
    }

    #[test]
    fn endpoints_may_be_a_list_tried_in_order() {
        let c = Config::parse(&with_a(
            "smtp = [{ host = \"smtp.a.example\", port = 465, tls = \"implicit\" },\n\
             { host = \"smtp.a.example\", port = 587, tls = \"starttls\" }]",
            "",
        ))
        .expect("valid");
        let ports: Vec<_> = c.upstreams[0]
            .smtp
            .iter()
            .map(|e| (e.port, e.tls))
            .collect();
        assert_eq!(
            ports,
            [(465, UpstreamTls::Implicit), (587, UpstreamTls::Starttls)]
        );
        // One table is still one endpoint.
        assert_eq!(
            Config::parse(MINIMAL).expect("valid").upstreams[0]
                .smtp
                .len(),
            1
        );
    }

    #[test]
    fn a_bad_endpoint_in_a_list_is_named_by_position() {
        let two = |second: &str| {
            with_a(
                &format!(
                    "smtp = [{{ host = \"smtp.a.example\", port = 465, tls = \"implicit\" }}, {second}]"
                ),
                "",
            )
        };
        let err = refusal(&two(
            "{ host = \"smtp.a.example\", port = 0, tls = \"starttls\" }",
        ));
        assert_eq!(err, "`upstream[0].smtp[1].port`: must be 1-65535");
        let err = refusal(&two(
            "{ host = \"smtp.a.example\", port = 25, tls = \"plain\" }",
        ));
        assert!(
            err.starts_with("`upstream[0].smtp[1]`: unknown variant `plain`"),
            "{err}"
        );
        let err = refusal(&two("{ host = \"smtp.a.example\", tls = \"implicit\" }"));
        assert!(
            err.starts_with("`upstream[0].smtp[1]`: missing field `port`"),
            "{err}"
        );
        let err = refusal(&with_a("smtp = []", ""));
        assert_eq!(err, "`upstream[0].smtp`: expected 1 to 4 endpoints");
        let five = ["{ host = \"smtp.a.example\", port = 465, tls = \"implicit\" }"; 5].join(", ");
        let err = refusal(&with_a(&format!("smtp = [{five}]"), ""));
        assert_eq!(err, "`upstream[0].smtp`: expected 1 to 4 endpoints");
        let err = refusal(&with_a("smtp = \"smtp.a.example:465\"", ""));
        assert!(
            err.starts_with("`upstream[0].smtp`: expected { host"),
            "{err}"
        );
    }

    #[test]
    fn login_form_is_address_unless_localpart() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.upstreams[0].login, LoginForm::Address);
        let c = Config::parse(&with_a(
            "smtp = { host = \"smtp.a.example\", port = 465, tls = \"implicit\" }",
            "login = \"localpart\"",
        ))
        .expect("valid");
        assert_eq!(c.upstreams[0].login, LoginForm::LocalPart);
        let err = refusal(&with_a(
            "smtp = { host = \"smtp.a.example\", port = 465, tls = \"implicit\" }",
            "login = \"user\"",
        ));
        assert!(
            err.starts_with("`upstream[0].login`: expected \"address\""),
            "{err}"
        );
        let err = refusal(&MINIMAL.replace(
            "domains = [\"*\"]",
            "domains = [\"*\"]\nlogin = \"localpart\"",
        ));
        assert!(
            err.starts_with("`upstream[1].login`: \"localpart\" can't go with"),
            "{err}"
        );
    }

    #[test]
    fn pins_are_base64_sha256_and_replace_the_ca() {
        let smtp = "smtp = { host = \"smtp.a.example\", port = 465, tls = \"implicit\" }";
        let pin = "xSOWx8SDGkVNLr6+drC0FQIvPUZ2zEwhZKzsZ7JJyWw=";
        let c = Config::parse(&with_a(
            smtp,
            &format!("pin_sha256 = [\"{pin}\", \"sha256//{pin}\"]"),
        ))
        .expect("valid");
        let pins = c.upstreams[0].pins.as_ref().expect("pins");
        assert_eq!(pins.spki_sha256.len(), 2);
        assert_eq!(pins.spki_sha256[0], pins.spki_sha256[1]);
        assert_eq!(&pins.spki_sha256[0][..3], &[0xc5, 0x23, 0x96]);
        assert!(pins.check_name);
        let c = Config::parse(&with_a(
            smtp,
            &format!("pin_sha256 = [\"{pin}\"]\npin_check_name = false"),
        ))
        .expect("valid");
        assert!(!c.upstreams[0].pins.as_ref().expect("pins").check_name);
        assert!(
            Config::parse(MINIMAL).expect("valid").upstreams[0]
                .pins
                .is_none()
        );

        for bad in [
            "abc",
            "xSOWx8SDGkVNLr6+drC0FQIvPUZ2zEwhZKzsZ7JJyW==",
            "sha1//AAAA",
        ] {
            let err = refusal(&with_a(
                smtp,
                &format!("pin_sha256 = [\"{pin}\", \"{bad}\"]"),
            ));
            assert!(
                err.starts_with("`upstream[0].pin_sha256[1]`: expected the base64 SHA-256"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            refusal(&with_a(smtp, "pin_sha256 = []")),
            "`upstream[0].pin_sha256`: list at least one pin, or leave the key out"
        );
        let err = refusal(&with_a(
            smtp,
            &format!("pin_sha256 = [\"{pin}\"]\nca = \"/etc/ca.pem\""),
        ));
        assert!(
            err.starts_with("`upstream[0].pin_sha256`: a pinned key replaces"),
            "{err}"
        );
        assert_eq!(
            refusal(&with_a(smtp, "pin_check_name = false")),
            "`upstream[0].pin_check_name`: only applies with `pin_sha256`"
        );
    }

    /// Every preset in config/providers/ is valid appended to a config, says
    /// where its data comes from, and reaches .onion hosts only through Tor.
    #[test]
    fn the_provider_presets_are_valid_and_sourced() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/providers");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/providers") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let name = path.display().to_string();
            if cfg!(not(feature = "tor")) && name.ends_with("-onion.toml") {
                // Without the embedded Tor client, egress "tor" is refused.
                continue;
            }
            let preset = std::fs::read_to_string(&path).expect("read");
            assert!(
                preset.contains("# Sources (checked 20"),
                "{name}: no sources line"
            );
            let base = MINIMAL.replace("domains = [\"*\"]\n", "");
            let c = Config::parse(&format!("{base}\n{preset}"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let added = &c.upstreams[2..];
            assert!(!added.is_empty(), "{name}: no [[upstream]]");
            for u in added {
                for e in u.smtp.iter().chain(&u.imap) {
                    if is_onion(e.host.expose()) {
                        assert_eq!(e.egress, EgressMode::Tor, "{name}: onion without Tor");
                    }
                }
            }
            seen += 1;
        }
        assert!(seen >= 5 || cfg!(not(feature = "tor")), "{seen} presets");
    }
}
