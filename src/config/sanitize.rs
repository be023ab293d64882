//! `[sanitize]`: which headers the sanitizer removes, keeps or (in strict
//! mode) allows. Only checks that every entry is a header name or a prefix
//! ending in `*`; what the names mean is `crate::sanitize`'s business.

use serde::Deserialize;

use super::{ConfigError, invalid};

/// `[sanitize]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSanitize {
    mode: Option<SanitizeMode>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    keep: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
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

/// Checks every listed name, and that `allow` is used only in strict mode.
pub(super) fn validate(raw: RawSanitize) -> Result<SanitizeConfig, ConfigError> {
    for (list, key) in [
        (&raw.remove, "remove"),
        (&raw.keep, "keep"),
        (&raw.allow, "allow"),
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
    let mode = raw.mode.unwrap_or_default();
    if mode == SanitizeMode::Default && !raw.allow.is_empty() {
        return Err(invalid(
            "sanitize.allow",
            "only used with mode = \"strict\"",
        ));
    }
    Ok(SanitizeConfig {
        mode,
        remove: raw.remove,
        keep: raw.keep,
        allow: raw.allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    fn with_sanitize(table: &str) -> String {
        format!("{MINIMAL}\n[sanitize]\n{table}\n")
    }

    #[test]
    fn header_names_with_colons_or_a_bare_star_are_refused() {
        assert_eq!(
            refusal(&with_sanitize("remove = [\"X-Foo\", \"Bad:Name\"]")),
            "`sanitize.remove[1]`: expected a header name, optionally ending in * for a prefix"
        );
        assert_eq!(
            refusal(&with_sanitize("keep = [\"*\"]")),
            "`sanitize.keep[0]`: expected a header name, optionally ending in * for a prefix"
        );
    }

    #[test]
    fn allow_is_refused_outside_strict_mode() {
        assert_eq!(
            refusal(&with_sanitize("allow = [\"List-Id\"]")),
            "`sanitize.allow`: only used with mode = \"strict\""
        );
        let c = Config::parse(&with_sanitize("mode = \"strict\"\nallow = [\"List-*\"]"))
            .expect("valid");
        assert_eq!(c.sanitize.mode, SanitizeMode::Strict);
        assert_eq!(c.sanitize.allow, ["List-*"]);
    }
}
