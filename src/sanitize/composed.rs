//! Whether an APPENDed message was just composed by the user's client.
//!
//! Only such a message is cleaned. One that was transported before (it
//! carries a trace or delivery field) or is older than a day (an archive,
//! a backup, a folder copied between accounts) is relayed byte for byte:
//! the user's archive is theirs, and may be evidence.

use super::date::{self, UnixTime};
use super::split_fields;

/// Fields that only a transport adds (lower case).
pub(crate) const TRACE_FIELDS: &[&str] = &[
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "authentication-results",
    "dkim-signature",
    "x-envelope-from",
    "x-envelope-to",
];

/// How far from now a composed message's dates may be. Forward too: a
/// client whose clock runs ahead still composes new mail.
pub(crate) const FRESH_SECS: i64 = 24 * 3600;

/// True when the message whose header block (or its first part) is
/// `header` was just composed: it carries no trace or delivery field, and
/// each of its `Date` fields and its APPEND date-time (`date_time`, quotes
/// included), if any, is readable and within [`FRESH_SECS`] of `now`.
pub(crate) fn is_composed(header: &[u8], date_time: Option<&[u8]>, now: UnixTime) -> bool {
    let fresh = |t: UnixTime| (now - t).abs() <= FRESH_SECS;
    if let Some(dt) = date_time
        && !date::parse_imap(dt).is_some_and(fresh)
    {
        return false;
    }
    let (fields, _) = split_fields(header);
    fields.iter().all(|field| {
        let name = field.name;
        if TRACE_FIELDS
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t.as_bytes()))
        {
            return false;
        }
        if !name.eq_ignore_ascii_case(b"date") {
            return true;
        }
        std::str::from_utf8(field.value)
            .ok()
            .and_then(|text| date::parse_rfc5322(&super::unfold(text)))
            .is_some_and(fresh)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 10:00:00 UTC.
    const NOW: UnixTime = 1_796_032_800;

    fn composed(header: &str, date_time: Option<&str>) -> bool {
        is_composed(header.as_bytes(), date_time.map(str::as_bytes), NOW)
    }

    #[test]
    fn a_fresh_message_without_trace_fields_is_composed() {
        assert!(composed(
            "From: a@example.org\r\nDate: Mon, 30 Nov 2026 10:59:00 +0100\r\n\r\n",
            None
        ));
        assert!(composed(
            "From: a@example.org\r\n\r\n",
            Some("\"30-Nov-2026 09:00:00 +0000\"")
        ));
        // No Date, no date-time: nothing says it is old.
        assert!(composed("From: a@example.org\r\n\r\n", None));
    }

    #[test]
    fn each_trace_field_makes_a_message_delivered() {
        for field in TRACE_FIELDS {
            let header = format!("From: a@example.org\r\n{field}: x\r\n\r\n");
            assert!(!composed(&header, None), "{field}");
            let upper = format!("{}: x\r\n\r\n", field.to_ascii_uppercase());
            assert!(!composed(&upper, None), "{field}");
        }
    }

    #[test]
    fn an_old_or_unreadable_date_makes_a_message_an_archive() {
        assert!(!composed(
            "Date: Sat, 28 Nov 2026 09:59:59 +0000\r\n\r\n",
            None
        ));
        assert!(!composed(
            "Date: Mon, 30 Nov 2026 10:11:09 CET\r\n\r\n",
            None
        ));
        assert!(!composed(
            "From: a@example.org\r\n\r\n",
            Some("\"28-Nov-2026 09:59:59 +0000\"")
        ));
        assert!(!composed(
            "From: a@example.org\r\n\r\n",
            Some("\"garbage\"")
        ));
        // A fresh Date does not make an old date-time fresh, nor the other way.
        assert!(!composed(
            "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n",
            Some("\"01-Jan-2020 00:00:00 +0000\"")
        ));
        assert!(!composed(
            "Date: Wed, 1 Jan 2020 00:00:00 +0000\r\n\r\n",
            Some("\"30-Nov-2026 10:00:00 +0000\"")
        ));
        // Within a day either way.
        assert!(composed(
            "Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n",
            None
        ));
        assert!(composed(
            "Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\n",
            None
        ));
        assert!(!composed(
            "Date: Tue, 1 Dec 2026 10:00:01 +0000\r\n\r\n",
            None
        ));
    }
}
