//! `[access]`: members only. `list` names the file of keyed hashes
//! (`crate::access`); the secret that keys them comes from a systemd
//! credential (`secret_credential`, by default `mailveil-access-key`) or,
//! outside systemd, from `secret_file`. Neither is read here: the relay
//! reads them when it starts.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The credential name the packaged drop-in delivers the secret under.
pub const DEFAULT_SECRET_CREDENTIAL: &str = "mailveil-access-key";

/// `[access]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    list: Option<PathBuf>,
    secret_credential: Option<String>,
    secret_file: Option<PathBuf>,
}

/// Members only: where the list and its secret are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// The members list.
    pub list: PathBuf,
    /// Where the secret comes from.
    pub secret: SecretSource,
}

/// Where the access secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A systemd credential of this name (`$CREDENTIALS_DIRECTORY/<name>`).
    Credential(String),
    /// A file, read at start-up.
    File(PathBuf),
}

/// Validates `[access]`; `None` when the table is absent.
pub(super) fn validate(raw: Option<RawAccess>) -> Result<Option<AccessConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let list = raw.list.ok_or_else(|| {
        invalid(
            "access.list",
            "missing: the file of member lines (`mailveil access add` prints them)",
        )
    })?;
    let secret = match (raw.secret_credential, raw.secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "access.secret_file",
                "set either `secret_credential` or `secret_file`, not both",
            ));
        }
        (None, Some(file)) => SecretSource::File(file),
        (name, None) => {
            let name = name.unwrap_or_else(|| DEFAULT_SECRET_CREDENTIAL.to_owned());
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && !name.starts_with('.');
            if !ok {
                return Err(invalid(
                    "access.secret_credential",
                    "expected a credential name (letters, digits, '-', '_', '.')",
                ));
            }
            SecretSource::Credential(name)
        }
    };
    Ok(Some(AccessConfig { list, secret }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    #[test]
    fn access_is_off_unless_configured_and_the_credential_is_the_default() {
        assert_eq!(Config::parse(MINIMAL).expect("valid").access, None);
        let c = Config::parse(&format!(
            "{MINIMAL}\n[access]\nlist = \"/etc/mailveil/members\"\n"
        ))
        .expect("valid");
        assert_eq!(
            c.access,
            Some(AccessConfig {
                list: "/etc/mailveil/members".into(),
                secret: SecretSource::Credential(DEFAULT_SECRET_CREDENTIAL.into()),
            })
        );
        let c = Config::parse(&format!(
            "{MINIMAL}\n[access]\nlist = \"m\"\nsecret_file = \"/root/k\"\n"
        ))
        .expect("valid");
        assert_eq!(
            c.access.map(|a| a.secret),
            Some(SecretSource::File("/root/k".into()))
        );
    }

    #[test]
    fn access_without_a_list_or_with_two_secrets_is_refused() {
        assert!(
            refusal(&format!("{MINIMAL}\n[access]\nsecret_file = \"k\"\n"))
                .starts_with("`access.list`: missing")
        );
        assert!(
            refusal(&format!(
                "{MINIMAL}\n[access]\nlist = \"m\"\nsecret_file = \"k\"\nsecret_credential = \"c\"\n"
            ))
            .starts_with("`access.secret_file`: set either")
        );
        assert!(
            refusal(&format!(
                "{MINIMAL}\n[access]\nlist = \"m\"\nsecret_credential = \"../etc/shadow\"\n"
            ))
            .starts_with("`access.secret_credential`:")
        );
    }
}
