//! Logging set-up: what the relay says about itself, and nothing else.
//!
//! Timestamps are rounded down to the minute so that log lines cannot be
//! lined up with a provider's per-second records. Sessions do not log at
//! all; values that could identify a person are `Sensitive` and print as
//! `[scrubbed]` even if a future log line names one by mistake.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let layer = layer(
        std::io::stderr,
        std::io::stderr().is_terminal(),
        &LIBRARY_LINES,
    )
    .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The formatting layer with the per-target levels and the library line
/// budget.
fn layer<S, W>(
    writer: W,
    ansi: bool,
    budget: &'static LineBudget,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    tracing_subscriber::fmt::layer()
        .with_timer(MinuteClock)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .with_filter(
            // Dynamic, so that it is asked at every event (a plain
            // `filter_fn` is asked once per call site and cached).
            tracing_subscriber::filter::DynFilterFn::new(|meta, _| {
                *meta.level() <= most_verbose_for(meta.target())
                    && (!meta.is_event() || is_own(meta.target()) || budget.allow(now_minute()))
            })
            .with_callsite_filter(|meta| {
                if *meta.level() <= most_verbose_for(meta.target()) {
                    tracing::subscriber::Interest::sometimes()
                } else {
                    tracing::subscriber::Interest::never()
                }
            }),
        )
}

/// Lines from libraries (the Tor client's warnings, any other library's
/// errors) shown per minute, all together: under attack a library may
/// warn once per connection or per request, and that must not become a
/// line per connection. The rest are counted, and the count is logged once
/// a minute ([`report_held_back_every`]).
pub const LIBRARY_LINES_PER_MINUTE: u64 = 20;

static LIBRARY_LINES: LineBudget = LineBudget::new(LIBRARY_LINES_PER_MINUTE);

/// A budget of lines per minute, and the lines held back past it.
pub(crate) struct LineBudget {
    per_minute: u64,
    /// The minute (since the epoch) and the lines shown in it, packed:
    /// minute << 20 | count.
    window: AtomicU64,
    held_back: AtomicU64,
}

const COUNT_BITS: u32 = 20;

impl LineBudget {
    pub(crate) const fn new(per_minute: u64) -> Self {
        LineBudget {
            per_minute,
            window: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// Whether one more line may be shown in `minute`.
    pub(crate) fn allow(&self, minute: u64) -> bool {
        let taken = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (m, n) = (w >> COUNT_BITS, w & ((1 << COUNT_BITS) - 1));
                if m != minute {
                    Some(minute << COUNT_BITS | 1)
                } else if n < self.per_minute {
                    Some(w + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if !taken {
            self.held_back.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The lines held back since the last call.
    pub(crate) fn take_held_back(&self) -> u64 {
        self.held_back.swap(0, Ordering::Relaxed)
    }
}

fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

/// Logs, every `interval`, how many library lines were held back, if any.
pub(crate) async fn report_held_back_every(interval: std::time::Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let n = LIBRARY_LINES.take_held_back();
        if n > 0 {
            tracing::warn!(
                "{n} log lines from libraries (the Tor client, TLS) held back in the last {} s",
                interval.as_secs()
            );
        }
    }
}

fn is_own(target: &str) -> bool {
    target == "mailveil" || target.starts_with("mailveil::")
}

/// The most verbose level shown for events from `target`, whatever
/// `RUST_LOG` asks for.
fn most_verbose_for(target: &str) -> tracing::Level {
    if is_own(target) {
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
    fn a_library_warning_per_connection_becomes_a_count_not_lines() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::prelude::*;
        static BUDGET: LineBudget = LineBudget::new(LIBRARY_LINES_PER_MINUTE);
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber =
            tracing_subscriber::registry().with(layer(move || out.clone(), false, &BUDGET));
        let minute = now_minute();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                tracing::warn!(target: "tor_proto::stream", "a stream failed");
                tracing::info!(target: "tor_proto::stream", "never shown: below warnings");
                tracing::warn!(target: "rustls::conn", "never shown: below errors");
            }
            for _ in 0..30 {
                tracing::info!(target: "mailveil::server", "own line");
            }
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        assert_eq!(count("never shown"), 0);
        assert_eq!(
            count("own line"),
            30,
            "the relay's own lines are not capped"
        );
        if now_minute() == minute {
            assert_eq!(count("a stream failed") as u64, LIBRARY_LINES_PER_MINUTE);
            assert_eq!(BUDGET.take_held_back(), 100 - LIBRARY_LINES_PER_MINUTE);
        }
    }

    #[test]
    fn library_lines_are_capped_per_minute_and_the_rest_counted() {
        let budget = LineBudget::new(3);
        assert!((0..3).all(|_| budget.allow(100)));
        assert!(!budget.allow(100));
        assert!(!budget.allow(100));
        assert_eq!(budget.take_held_back(), 2);
        assert_eq!(budget.take_held_back(), 0);
        assert!(budget.allow(101), "a new minute, a new budget");
        assert!(budget.allow(29_000_000), "minutes of this century fit");
    }

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
