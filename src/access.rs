//! Members only (`[access]`): the relay serves the logins on a list, and the
//! list names no one.
//!
//! Each line of the list is a keyed hash (HMAC-SHA-256) of one normalized
//! login, under a secret the operator keeps apart from the configuration
//! (systemd delivers it with `LoadCredential=`). A seized configuration
//! and list therefore name nobody; with the secret as well, a guessed
//! login can be tested against the list, one guess at a time.
//!
//! A line is `mv1:<check>:<tag>`: `check` is 4 bytes derived from the
//! secret alone, the same on every line, so that a list made under another
//! secret is refused at start-up instead of silently turning every member
//! into a stranger; `tag` is the 32-byte hash of the login. Both in hex.
//! Lines starting with `#` and blank lines are ignored.
//!
//! Nothing here logs, and no login is kept: only tags.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ring::hmac;
use zeroize::Zeroizing;

use crate::config::{AccessConfig, SecretSource};
use crate::privacy::{Login, Sensitive, normalized};

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The version mark that starts every line.
const LINE_VERSION: &str = "mv1";
/// What the key check is a hash of.
const CHECK_LABEL: &[u8] = b"mailveil access key check v1";
/// What every login tag starts with, before the login.
const TAG_LABEL: &[u8] = b"mailveil access member v1\0";

/// Why the members list or its secret could not be used. No variant
/// carries a login or the secret.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the access secret is {0} bytes long; at least {MIN_SECRET_BYTES} are needed \
         (make one with: (umask 077; head -c 32 /dev/urandom > /etc/mailveil/access-key))"
    )]
    SecretTooShort(usize),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The systemd credential is not there.
    #[error(
        "the access secret was not delivered: no systemd credential `{name}`{where_}. \
         Under the packaged unit, enable the drop-in that delivers it: \
         install -D -m 644 /usr/share/mailveil/access.conf \
         /etc/systemd/system/mailveil.service.d/access.conf && systemctl daemon-reload \
         (README, \"Members only\"); outside systemd, set `access.secret_file`"
    )]
    NoCredential {
        /// The credential's name.
        name: String,
        /// Where it was looked for.
        where_: String,
    },
    /// A line is not a member line.
    #[error(
        "{path}, line {line}: not a member line (expected mv1:<8 hex>:<64 hex>, as `mailveil access add` prints)"
    )]
    Malformed {
        /// The list.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// A line was made under another secret.
    #[error(
        "{path}, line {line}: made with another access secret than the one delivered; \
         every member would be refused. Deliver the secret the list was made with, \
         or make the list again with `mailveil access add`"
    )]
    OtherSecret {
        /// The list.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// The list names no member.
    #[error(
        "{0} lists no member: every login would be refused. Add lines with `mailveil access add`"
    )]
    Empty(PathBuf),
}

/// The operator's secret, as a key. No `Debug`: it is never printed.
pub struct AccessKey {
    key: hmac::Key,
    check: [u8; 4],
}

impl AccessKey {
    /// A key from the secret's bytes (used as they are, newline included).
    pub fn from_secret(secret: &[u8]) -> Result<Self, AccessError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AccessError::SecretTooShort(secret.len()));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut check = [0; 4];
        check.copy_from_slice(&hmac::sign(&key, CHECK_LABEL).as_ref()[..4]);
        Ok(AccessKey { key, check })
    }

    /// Reads the secret from `path`.
    pub fn read(path: &Path) -> Result<Self, AccessError> {
        let secret = Zeroizing::new(std::fs::read(path).map_err(|source| AccessError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        Self::from_secret(&secret)
    }

    /// The tag of an already normalized login.
    fn tag(&self, normalized_login: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(TAG_LABEL);
        context.update(normalized_login.as_bytes());
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    /// The list line for `login`, normalized as the relay normalizes the
    /// logins clients present (lower case, domain as routing sees it).
    pub fn member_line(&self, login: &str) -> String {
        let login: Login = Sensitive::new(Zeroizing::new(login.trim().to_owned()));
        let tag = self.tag(&normalized(&login));
        format!("{LINE_VERSION}:{}:{}", hex(&self.check), hex(&tag))
    }
}

/// Reads the secret from where `config` says and the list it keys.
pub fn load(config: &AccessConfig) -> Result<Members, AccessError> {
    let key = match &config.secret {
        SecretSource::File(path) => AccessKey::read(path)?,
        SecretSource::Credential(name) => {
            let no_credential = |where_: String| AccessError::NoCredential {
                name: name.clone(),
                where_,
            };
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Err(no_credential(
                    " (CREDENTIALS_DIRECTORY is not set: not started by systemd)".into(),
                ));
            };
            let path = Path::new(&dir).join(name);
            if !path.exists() {
                return Err(no_credential(format!(" in {}", Path::new(&dir).display())));
            }
            AccessKey::read(&path)?
        }
    };
    Members::load(key, &config.list)
}

/// The members: tags only.
pub struct Members {
    key: AccessKey,
    tags: HashSet<[u8; 32]>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Members({})", self.tags.len())
    }
}

impl Members {
    /// Reads the list at `path`, checking every line against `key`.
    pub fn load(key: AccessKey, path: &Path) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(key, &text, path)
    }

    /// Parses list text (`path` only names it in errors).
    pub fn parse(key: AccessKey, text: &str, path: &Path) -> Result<Self, AccessError> {
        let mut tags = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || AccessError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let mut parts = line.split(':');
            let (Some(LINE_VERSION), Some(check), Some(tag), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(malformed());
            };
            let (Some(check), Some(tag)) = (unhex::<4>(check), unhex::<32>(tag)) else {
                return Err(malformed());
            };
            if check != key.check {
                return Err(AccessError::OtherSecret {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            }
            tags.insert(tag);
        }
        if tags.is_empty() {
            return Err(AccessError::Empty(path.to_path_buf()));
        }
        Ok(Members { key, tags })
    }

    /// True when `login` (as the client presented it) is a member.
    pub(crate) fn contains(&self, login: &Login) -> bool {
        self.tags.contains(&self.key.tag(&normalized(login)))
    }

    /// How many members the list holds.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Never true: an empty list is refused.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> AccessKey {
        AccessKey::from_secret(SECRET).expect("long enough")
    }

    fn login(s: &str) -> Login {
        Sensitive::new(Zeroizing::new(s.to_owned()))
    }

    #[test]
    fn a_member_line_admits_its_login_however_its_case_and_domain_are_written() {
        let line = key().member_line("Alice@Example.ORG");
        let members = Members::parse(key(), &format!("# ours\n\n{line}\n"), Path::new("m"))
            .expect("valid list");
        assert_eq!(members.len(), 1);
        assert!(members.contains(&login("alice@example.org")));
        assert!(members.contains(&login("ALICE@example.org.")));
        assert!(!members.contains(&login("bob@example.org")));
        assert!(!members.contains(&login("alice")));
    }

    #[test]
    fn a_line_names_no_login_and_differs_per_secret() {
        let line = key().member_line("alice@example.org");
        assert!(!line.contains("alice") && !line.contains("example"));
        assert_eq!(line.len(), 3 + 1 + 8 + 1 + 64);
        let other = AccessKey::from_secret(b"another secret, sixteen+")
            .expect("long enough")
            .member_line("alice@example.org");
        assert_ne!(line[13..], other[13..]);
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_label_and_login() {
        // Pins the construction, so that lists made by one version are read
        // by the next: HMAC-SHA-256(secret, "mailveil access member v1\0" ||
        // login), computed independently with ring's one-shot API.
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            b"mailveil access member v1\0alice@example.org",
        );
        let line = key().member_line("alice@example.org");
        assert_eq!(&line[13..], hex(expected.as_ref()));
    }

    #[test]
    fn a_list_made_under_another_secret_is_refused_with_its_line() {
        let other = AccessKey::from_secret(b"another secret, sixteen+").expect("long enough");
        let text = format!(
            "{}\n{}\n",
            key().member_line("a@x.org"),
            other.member_line("b@x.org")
        );
        let e = Members::parse(key(), &text, Path::new("/etc/mailveil/members"))
            .expect_err("other secret");
        assert!(matches!(e, AccessError::OtherSecret { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("/etc/mailveil/members, line 2"));
    }

    #[test]
    fn malformed_and_empty_lists_and_short_secrets_are_refused() {
        for bad in [
            "alice@example.org",
            "mv1:00:11",
            "mv2:00000000:00",
            "mv1:zz",
        ] {
            let e = Members::parse(key(), bad, Path::new("m")).expect_err(bad);
            assert!(matches!(e, AccessError::Malformed { line: 1, .. }), "{bad}");
            assert!(!e.to_string().contains("alice"));
        }
        let e = Members::parse(key(), "# nobody yet\n", Path::new("m")).expect_err("empty");
        assert!(matches!(e, AccessError::Empty(_)));
        assert!(matches!(
            AccessKey::from_secret(b"short"),
            Err(AccessError::SecretTooShort(5))
        ));
    }
}
