//! `[logging]`: how often the aggregate counters are logged. Must never allow
//! an interval short enough for the counts to follow one person's sessions.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Default interval of the aggregate counter report.
pub const DEFAULT_STATS_INTERVAL_MINUTES: u64 = 60;
/// Shortest interval allowed: finer counts could follow one person.
pub const MIN_STATS_INTERVAL_MINUTES: u64 = 10;

/// `[logging]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    stats_interval_minutes: Option<u64>,
}

/// The counter report interval; `None` when turned off with 0.
pub(super) fn validate(raw: RawLogging) -> Result<Option<Duration>, ConfigError> {
    match raw
        .stats_interval_minutes
        .unwrap_or(DEFAULT_STATS_INTERVAL_MINUTES)
    {
        0 => Ok(None),
        m if m < MIN_STATS_INTERVAL_MINUTES => Err(invalid(
            "logging.stats_interval_minutes",
            format!(
                "at least {MIN_STATS_INTERVAL_MINUTES} (counts over shorter intervals can follow one person's sessions), or 0 for no counter report"
            ),
        )),
        m => Ok(Some(Duration::from_secs(m.saturating_mul(60)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::MINIMAL;

    #[test]
    fn counter_report_is_hourly_by_default_and_never_finer_than_ten_minutes() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.stats_interval, Some(Duration::from_secs(3600)));
        let off = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 0\n"
        ))
        .expect("valid");
        assert_eq!(off.stats_interval, None);
        let fine = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 9\n"
        ));
        let err = fine.expect_err("too fine").to_string();
        assert!(err.contains("logging.stats_interval_minutes"), "{err}");
        let ten = Config::parse(&format!(
            "{MINIMAL}\n[logging]\nstats_interval_minutes = 10\n"
        ))
        .expect("valid");
        assert_eq!(ten.stats_interval, Some(Duration::from_secs(600)));
    }
}
