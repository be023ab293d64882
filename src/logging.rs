//! Logging set-up: what the relay says about itself, and nothing else.
//!
//! Timestamps are rounded down to the minute so that log lines cannot be
//! lined up with a provider's per-second records. Sessions do not log at
//! all; values that could identify a person are `Sensitive` and print as
//! `[scrubbed]` even if a future log line names one by mistake.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::sanitize::date::civil_from_days;

/// UTC time rounded down to the minute: `2026-11-23T22:26Z`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinuteClock;

impl FormatTime for MinuteClock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        write!(w, "{}", minute_stamp(secs))
    }
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MMZ`.
pub fn minute_stamp(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Installs the global subscriber: stderr, `RUST_LOG` or `info`, minute clock.
/// The embedded Tor client's own events are kept to warnings and errors
/// whatever `RUST_LOG` says: its debug output is about circuits and streams,
/// which is exactly what this relay does not record.
pub fn init() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_timer(MinuteClock)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !is_tor_target(meta.target()) || *meta.level() <= tracing::Level::WARN
        }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Events from arti and its `tor-*` crates.
fn is_tor_target(target: &str) -> bool {
    target.starts_with("tor_") || target.starts_with("arti")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tor_crates_are_recognised() {
        assert!(is_tor_target("tor_circmgr::mgr"));
        assert!(is_tor_target("arti_client::client"));
        assert!(!is_tor_target("mailveil::egress::tor"));
    }

    #[test]
    fn stamp_is_rounded_to_the_minute() {
        assert_eq!(minute_stamp(1_795_991_196), "2026-11-29T22:26Z");
        assert_eq!(minute_stamp(1_795_991_159), "2026-11-29T22:25Z");
    }
}
