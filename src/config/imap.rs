//! `[imap]`: IMAP features the operator chooses.

use serde::Deserialize;

/// `[imap]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImap {
    #[serde(default)]
    deltachat_push: bool,
}

/// Whether Delta Chat push passes (`XDELTAPUSH` and device-token
/// registration); off unless set.
pub(super) fn deltachat_push(raw: &RawImap) -> bool {
    raw.deltachat_push
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::MINIMAL;

    #[test]
    fn delta_chat_push_is_off_unless_turned_on() {
        assert!(!Config::parse(MINIMAL).expect("valid").deltachat_push);
        let on =
            Config::parse(&format!("{MINIMAL}\n[imap]\ndeltachat_push = true\n")).expect("valid");
        assert!(on.deltachat_push);
    }
}
