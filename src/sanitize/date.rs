//! RFC 5322 date parsing and UTC formatting, for the `Date:` rewrite.
//!
//! Accepts the current syntax and the common obsolete forms (two-digit years,
//! named zones, no seconds, trailing comments). Pure arithmetic, no time zone
//! database.

use std::io::Write as _;

use zeroize::Zeroizing;

use crate::privacy::WipedBuf;

/// Seconds since the Unix epoch, UTC.
pub(crate) type UnixTime = i64;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Parses an RFC 5322 `date-time` (the value of a `Date:` field).
pub(crate) fn parse_rfc5322(value: &str) -> Option<UnixTime> {
    let without_comments = strip_comments(value);
    let mut tokens = without_comments
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .peekable();
    // Optional day of week.
    if tokens
        .peek()
        .is_some_and(|t| t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
    {
        tokens.next();
    }
    let day: i64 = tokens.next()?.parse().ok()?;
    let month_name = tokens.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as i64
        + 1;
    let year_text = tokens.next()?;
    let mut year: i64 = year_text.parse().ok()?;
    if year_text.len() <= 2 {
        year += if year < 50 { 2000 } else { 1900 };
    } else if year_text.len() == 3 {
        year += 1900;
    }
    let time = tokens.next()?;
    let mut hms = time.split(':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let second: i64 = match hms.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if hms.next().is_some() {
        return None;
    }
    let offset = zone_offset_seconds(tokens.next().unwrap_or("-0000"))?;
    unix_time([year, month, day, hour, minute, second], offset)
}

/// `[year, month, day, hour, minute, second]` at `offset` seconds east of
/// UTC, as seconds since the epoch; `None` when a field is out of range.
/// A leap second counts as the second before it. Years run from 1900 to
/// 9999: beyond that the day count would overflow; and no field may be
/// negative (both found by fuzzing).
fn unix_time([year, month, day, hour, minute, second]: [i64; 6], offset: i64) -> Option<UnixTime> {
    if !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
        || !(1900..=9999).contains(&year)
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset)
}

/// `time` broken down in UTC: the month's name, `[year, day, hour, minute,
/// second]` and the weekday's name.
fn civil_utc(time: UnixTime) -> (&'static str, [i64; 5], &'static str) {
    let days = time.div_euclid(86_400);
    let secs = time.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    (
        MONTHS[(month - 1) as usize],
        [year, day, secs / 3600, secs % 3600 / 60, secs % 60],
        WEEKDAYS[days.rem_euclid(7) as usize],
    )
}

/// Formats as `Tue, 24 Nov 2026 00:26:36 +0000`.
pub(crate) fn format_utc(time: UnixTime) -> WipedBuf {
    let (month, [year, day, hour, minute, second], weekday) = civil_utc(time);
    let mut out = WipedBuf::with_capacity(32);
    // Writing to memory cannot fail.
    let _ = write!(
        out,
        "{weekday}, {day} {month} {year:04} {hour:02}:{minute:02}:{second:02} +0000"
    );
    out
}

/// The current time, in whole seconds.
pub(crate) fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as UnixTime)
}

/// `time` rounded down to its minute.
pub(crate) fn minute_of(time: UnixTime) -> UnixTime {
    time - time.rem_euclid(60)
}

/// Parses an IMAP `date-time` (RFC 3501), quotes included:
/// `"30-Nov-2026 10:11:12 +0100"` (the day may be one digit after a space).
pub(crate) fn parse_imap(quoted: &[u8]) -> Option<UnixTime> {
    let text = std::str::from_utf8(quoted).ok()?;
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let (date, rest) = inner.trim_start().split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let mut dmy = date.split('-');
    let day: i64 = dmy.next()?.parse().ok()?;
    let month_name = dmy.next()?;
    let year_text = dmy.next()?;
    if dmy.next().is_some() || year_text.len() != 4 || zone.len() != 5 {
        return None;
    }
    let year: i64 = year_text.parse().ok()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as i64
        + 1;
    let mut hms = time.split(':');
    let mut field = || -> Option<i64> {
        let part = hms.next()?;
        (part.len() == 2).then_some(())?;
        part.parse().ok()
    };
    let (hour, minute, second) = (field()?, field()?, field()?);
    if hms.next().is_some() {
        return None;
    }
    let offset = zone_offset_seconds(zone).filter(|_| zone.starts_with(['+', '-']))?;
    unix_time([year, month, day, hour, minute, second], offset)
}

/// Formats as an IMAP `date-time` in UTC, to the minute, quotes included:
/// `"30-Nov-2026 09:11:00 +0000"`.
pub(crate) fn format_imap_utc_minute(time: UnixTime) -> WipedBuf {
    let (month, [year, day, hour, minute, _], _) = civil_utc(minute_of(time));
    let mut out = WipedBuf::with_capacity(28);
    // Writing to memory cannot fail.
    let _ = write!(
        out,
        "\"{day:02}-{month}-{year:04} {hour:02}:{minute:02}:00 +0000\""
    );
    out
}

fn zone_offset_seconds(zone: &str) -> Option<i64> {
    if let Some(sign) = zone.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits = &zone[1..];
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i64 = digits[..2].parse().ok()?;
        let minutes: i64 = digits[2..].parse().ok()?;
        if minutes > 59 {
            return None;
        }
        let magnitude = hours * 3600 + minutes * 60;
        return Some(if sign == '-' { -magnitude } else { magnitude });
    }
    let hours = match zone.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" => 0,
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        // RFC 5322 §4.3: other military zones are to be taken as -0000.
        z if z.len() == 1 && z.chars().all(|c| c.is_ascii_alphabetic()) => 0,
        _ => return None,
    };
    Some(hours * 3600)
}

fn strip_comments(value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len()));
    let mut depth = 0usize;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if depth > 0 => escaped = true,
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(value: &str) -> String {
        String::from_utf8(format_utc(parse_rfc5322(value).expect(value)).to_vec()).expect("ascii")
    }

    #[test]
    fn imap_date_times_parse_and_format_in_utc_to_the_minute() {
        let t = parse_imap(b"\"30-Nov-2026 10:11:12 +0100\"").expect("parses");
        assert_eq!(
            format_imap_utc_minute(t).to_vec(),
            b"\"30-Nov-2026 09:11:00 +0000\"".to_vec()
        );
        let one_digit = parse_imap(b"\" 1-Dec-2026 00:00:59 -0030\"").expect("parses");
        assert_eq!(
            format_imap_utc_minute(one_digit).to_vec(),
            b"\"01-Dec-2026 00:30:00 +0000\"".to_vec()
        );
        for bad in [
            &b"30-Nov-2026 10:11:12 +0100"[..],
            b"\"30-Nov-26 10:11:12 +0100\"",
            b"\"30-Nov-2026 10:11 +0100\"",
            b"\"30-Nov-2026 10:11:12 CET\"",
            b"\"30-Foo-2026 10:11:12 +0100\"",
        ] {
            assert_eq!(parse_imap(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        assert_eq!(
            utc("Tue, 24 Nov 2026 01:26:36 +0100"),
            "Tue, 24 Nov 2026 00:26:36 +0000"
        );
        assert_eq!(
            utc("Mon, 23 Nov 2026 19:26:36 -0500"),
            "Tue, 24 Nov 2026 00:26:36 +0000"
        );
        assert_eq!(
            utc("Sat, 1 Jan 2000 05:29:00 +0530"),
            "Fri, 31 Dec 1999 23:59:00 +0000"
        );
    }

    #[test]
    fn obsolete_forms_parse() {
        assert_eq!(
            utc("24 Nov 26 00:26 GMT"),
            "Tue, 24 Nov 2026 00:26:00 +0000"
        );
        assert_eq!(
            utc("Mon, 23 Nov 2026 16:26:36 PST"),
            "Tue, 24 Nov 2026 00:26:36 +0000"
        );
        assert_eq!(
            utc("Tue, 24 Nov 2026 01:26:36 +0100 (CET)"),
            "Tue, 24 Nov 2026 00:26:36 +0000"
        );
    }

    #[test]
    fn garbage_does_not_parse() {
        for bad in [
            "",
            "yesterday",
            "Tue, 24 Foo 2026 00:00:00 +0000",
            "24 Nov 2026 25:00:00 +0000",
            "24 Nov 2026 10:00:00 +01",
            // Found by fuzzing: the day count overflowed.
            "4 Nov 66666666666664052 01:26:36",
            "4 Nov 10000 01:26:36 +0000",
            // Also found by fuzzing: a negative second was taken.
            "24 Nov 206 01:26:-60444 +0000",
            "24 Nov 2026 -1:26:00 +0000",
        ] {
            assert_eq!(parse_rfc5322(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-200_000..200_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
