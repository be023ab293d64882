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
pub(crate) struct MinuteClock;

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
pub(crate) fn minute_stamp(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Installs the global subscriber: stderr, `RUST_LOG` or `info`, minute clock,
/// colours only on a terminal.
///
/// `RUST_LOG` can make mailveil's own messages more verbose — there are no
/// per-connection ones to reveal — but not other crates': whatever it says,
/// the embedded Tor client is held to warnings (its debug output is about
/// circuits and streams, exactly what this relay does not record) and every
/// other library to errors (a TLS library's per-handshake warnings would be
/// one line per connection).
pub fn init() {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_timer(MinuteClock)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            *meta.level() <= most_verbose_for(meta.target())
        }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The most verbose level shown for events from `target`, whatever
/// `RUST_LOG` asks for.
fn most_verbose_for(target: &str) -> tracing::Level {
    if target == "mailveil" || target.starts_with("mailveil::") {
        tracing::Level::TRACE
    } else if target.starts_with("tor_") || target.starts_with("arti") {
        tracing::Level::WARN
    } else {
        tracing::Level::ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_cannot_be_made_verbose() {
        assert_eq!(
            most_verbose_for("mailveil::egress::tor"),
            tracing::Level::TRACE
        );
        assert_eq!(most_verbose_for("mailveil"), tracing::Level::TRACE);
        assert_eq!(most_verbose_for("tor_circmgr::mgr"), tracing::Level::WARN);
        assert_eq!(
            most_verbose_for("arti_client::client"),
            tracing::Level::WARN
        );
        assert_eq!(
            most_verbose_for("rustls::common_state"),
            tracing::Level::ERROR
        );
        assert_eq!(most_verbose_for("mailveilx"), tracing::Level::ERROR);
    }

    #[test]
    fn stamp_is_rounded_to_the_minute() {
        assert_eq!(minute_stamp(1_795_991_196), "2026-11-29T22:26Z");
        assert_eq!(minute_stamp(1_795_991_159), "2026-11-29T22:25Z");
    }
}
