//! `[limits]`: every resource limit, declared once, as one row of the
//! `limits!` table below: field, type, doc, TOML key, unit, default, bounds.
//!
//! The `limits!` macro turns that table into the raw serde structure (one
//! optional integer per key, unknown keys refused), the public [`Limits`],
//! its validation and, for tests, `LIMITS` to enumerate them. Adding a limit is one
//! row here plus its use. Nothing here may let a value outside its row's
//! bounds through, or say a limit's default, bounds or error text anywhere
//! but in its row.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, bounded, invalid};

/// Default largest message: 35 MiB, like common providers.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 36_700_160;

/// One limit as the configuration file sees it.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitSpec {
    /// The key in `[limits]`, e.g. `tls_handshake_timeout_secs`.
    pub(crate) key: &'static str,
    /// The value when the key is absent.
    pub(crate) default: u64,
    /// The smallest value accepted.
    pub(crate) min: u64,
    /// The largest value accepted.
    pub(crate) max: u64,
    /// What the number counts: `count`, `seconds` or `milliseconds`.
    pub(crate) unit: &'static str,
}

/// True when `min <= value <= max`; for compile-time checks of the table.
const fn within(value: u64, min: u64, max: u64) -> bool {
    min <= value && value <= max
}

/// Generates everything `[limits]` needs from one row per limit:
///
/// ```text
/// /// Doc of the field.
/// field: Type = unit(toml_key), default D, min LO, max HI;
/// ```
///
/// `unit` is `count` (the number as `Type`, `usize` or `u32`; `HI` must fit),
/// `secs` or `millis` (a `Duration`). `D` must lie in `LO..=HI`; both rules
/// are checked at compile time.
macro_rules! limits {
    (@unit_name count) => { "count" };
    (@unit_name secs) => { "seconds" };
    (@unit_name millis) => { "milliseconds" };
    (@convert count, $ty:ty, $v:expr) => { $v as $ty };
    (@convert secs, $ty:ty, $v:expr) => { Duration::from_secs($v) };
    (@convert millis, $ty:ty, $v:expr) => { Duration::from_millis($v) };
    (@back count, $v:expr) => { $v as u64 };
    (@back secs, $v:expr) => { $v.as_secs() };
    (@back millis, $v:expr) => { $v.as_millis() as u64 };
    (@fits count, $ty:ty, $max:expr) => {
        const _: () = {
            let max: u64 = $max;
            assert!(max as u128 <= <$ty>::MAX as u128);
        };
    };
    (@fits $unit:ident, $ty:ty, $max:expr) => {};
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $unit:ident($key:ident),
            default $default:expr, min $min:expr, max $max:expr;
    )*) => {
        /// Resource limits.
        #[derive(Debug, Clone)]
        pub struct Limits {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        /// `[limits]` as written: each key optional.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawLimits {
            $($key: Option<u64>,)*
        }

        /// Every limit, in declaration order (for the tests that hold the
        /// table to the example configuration).
        #[cfg(test)]
        pub(crate) const LIMITS: &[LimitSpec] = &[$(
            LimitSpec {
                key: stringify!($key),
                default: $default,
                min: $min,
                max: $max,
                unit: limits!(@unit_name $unit),
            },
        )*];

        /// Each value, or its default, checked against its bounds in
        /// declaration order.
        pub(crate) fn validate(raw: RawLimits) -> Result<Limits, ConfigError> {
            Ok(Limits {
                $($field: limits!(@convert $unit, $ty, bounded(
                    concat!("limits.", stringify!($key)),
                    raw.$key,
                    $default,
                    $min,
                    $max,
                )?),)*
            })
        }

        #[cfg(test)]
        impl Limits {
            /// Each limit as its key and the number written there.
            fn as_written(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($key), limits!(@back $unit, self.$field)),)*]
            }
        }

        $(
            const _: () = assert!(within($default, $min, $max));
            limits!(@fits $unit, $ty, $max);
        )*
    };
}

limits! {
    /// Largest message accepted (SIZE), in bytes.
    max_message_bytes: usize = count(max_message_bytes),
        default DEFAULT_MAX_MESSAGE_BYTES as u64, min 1024, max 1 << 30;
    /// Most recipients per transaction.
    max_recipients: usize = count(max_recipients), default 100, min 1, max 10_000;
    /// Most client connections at once, over all listeners.
    max_connections: usize = count(max_connections), default 1000, min 1, max 1_000_000;
    /// Longest line inside a message, CRLF included (RFC 5321: 1000).
    max_line_bytes: usize = count(max_line_bytes), default 1000, min 78, max 1 << 20;
    /// Longest command line, CRLF included (room for OAuth tokens).
    max_command_bytes: usize = count(max_command_bytes), default 16_384, min 512, max 1 << 20;
    /// Time allowed for a client TLS handshake.
    tls_handshake_timeout: Duration = secs(tls_handshake_timeout_secs),
        default 30, min 1, max 600;
    /// Time a client may stay silent between commands or inside DATA.
    command_timeout: Duration = secs(command_timeout_secs), default 300, min 1, max 3600;
    /// Time allowed for an upstream connect and for each upstream reply.
    upstream_timeout: Duration = secs(upstream_timeout_secs), default 60, min 1, max 3600;
    /// Longest IMAP command line from a client, CRLF included (literals are
    /// counted separately, against `max_message_bytes`).
    max_imap_line_bytes: usize = count(max_imap_line_bytes),
        default 65_536, min 1024, max 1 << 20;
    /// Time an authenticated IMAP client may stay silent (IDLE included;
    /// RFC 9051 asks for at least 30 minutes).
    imap_idle_timeout: Duration = secs(imap_idle_timeout_secs),
        default 1860, min 60, max 86_400;
    /// On SIGTERM, how long sessions in the middle of something may take to
    /// finish before they are cut off.
    shutdown_grace: Duration = secs(shutdown_grace_secs), default 30, min 0, max 3600;
    /// Most connections open at once from one address prefix (/32, /64).
    max_connections_per_prefix: u32 = count(max_connections_per_prefix),
        default 50, min 1, max 1_000_000;
    /// Most new connections per minute from one prefix (also the burst).
    connections_per_prefix_per_minute: u32 = count(connections_per_prefix_per_minute),
        default 120, min 1, max 1_000_000;
    /// Time a client may take from connecting to logging in.
    preauth_timeout: Duration = secs(preauth_timeout_secs), default 120, min 5, max 3600;
    /// Slowest rate a client may send a message or an IMAP literal at:
    /// each byte buys 1/rate seconds, never more than the command timeout
    /// ahead (a sliding window, not an average).
    min_transfer_bytes_per_sec: u32 = count(min_transfer_bytes_per_sec),
        default 512, min 1, max 1 << 30;
    /// How much more an IPv6 /56 may do than a /64, and a /48 than a /56
    /// (connections, their rate, failed logins): one user may hold many
    /// /64s, so each address counts against all three.
    ipv6_wider_prefix_factor: u32 = count(ipv6_wider_prefix_factor),
        default 4, min 1, max 1024;
    /// Failed logins from one prefix, per `auth_failure_window`, before
    /// the prefix is locked out.
    auth_failures_per_prefix: u32 = count(auth_failures_per_prefix),
        default 20, min 1, max 1_000_000;
    /// Failed logins for one login, per `auth_failure_window`, before the
    /// login is locked out.
    auth_failures_per_login: u32 = count(auth_failures_per_login),
        default 10, min 1, max 1_000_000;
    /// The window failure allowances refill over.
    auth_failure_window: Duration = secs(auth_failure_window_secs),
        default 900, min 1, max 86_400;
    /// How long a lockout lasts.
    auth_lockout: Duration = secs(auth_lockout_secs), default 900, min 1, max 86_400;
    /// Failed logins the relay lets through to one provider per hour, from
    /// all networks together: past it, networks with recent failures are
    /// refused at once (the provider would count them against the relay's
    /// shared address).
    provider_failures_per_hour: u32 = count(provider_failures_per_hour),
        default 30, min 1, max 1_000_000;
    /// How long a network that logged in with a login stays exempt from
    /// that login's lockout (0: no network is).
    login_success_memory: Duration = secs(login_success_memory_secs),
        default 86_400, min 0, max 30 * 86_400;
    /// A failed login is answered no sooner than this after the client's
    /// credentials arrived (locked out or refused by the provider alike).
    auth_failure_delay: Duration = millis(auth_failure_delay_ms), default 2000, min 0, max 60_000;
    /// Messages one account may send per hour (also the burst).
    messages_per_account_per_hour: u32 = count(messages_per_account_per_hour),
        default 200, min 1, max 1_000_000;
    /// Bytes of messages the relay holds at once, all sessions together
    /// (each message counts the memory its buffer holds, as it grows):
    /// past it, a
    /// message is deferred with 452 4.3.1.
    max_buffered_message_bytes: usize = count(max_buffered_message_bytes),
        default 128 << 20, min 1 << 20, max 1 << 40;
    /// Mail transactions one account may have open at once, over all its
    /// sessions.
    max_transactions_per_account: u32 = count(max_transactions_per_account),
        default 3, min 1, max 10_000;
    /// Largest header block of a message (sent or APPENDed), in bytes.
    max_header_bytes: usize = count(max_header_bytes),
        default 256 * 1024, min 1024, max 16 << 20;
    /// Most header fields in a message.
    max_header_fields: usize = count(max_header_fields), default 1000, min 10, max 100_000;
    /// Onion service: most client connections open at once, all onion
    /// clients together (they have no address to count by).
    onion_max_connections: u32 = count(onion_max_connections),
        default 200, min 1, max 1_000_000;
    /// Onion service: most new connections per minute, all onion clients
    /// together (also the burst).
    onion_connections_per_minute: u32 = count(onion_connections_per_minute),
        default 300, min 1, max 1_000_000;
    /// Onion service: most connections open at once on one client circuit;
    /// one more tears the circuit down (arti's
    /// `max_concurrent_streams_per_circuit`).
    onion_connections_per_circuit: u32 = count(onion_connections_per_circuit),
        default 16, min 1, max 65_535;
    /// Onion service: failed logins on one client circuit, per
    /// `auth_failure_window`, before that circuit is locked out (never all
    /// onion clients; logins are locked per login as everywhere).
    onion_auth_failures_per_circuit: u32 = count(onion_auth_failures_per_circuit),
        default 5, min 1, max 1_000_000;
    /// Onion service: introductions per second the introduction points let
    /// through to the relay (Tor's DoS defence at the introduction point).
    onion_introductions_per_second: u32 = count(onion_introductions_per_second),
        default 25, min 1, max 1_000_000;
    /// Onion service: the burst of introductions allowed above that rate.
    onion_introduction_burst: u32 = count(onion_introduction_burst),
        default 200, min 1, max 1_000_000;
}

/// A message counts against `max_buffered_message_bytes` by the memory
/// its buffer holds, in whole units of this size as it grows: fine enough
/// that an ordinary message of a few KiB holds little of the budget,
/// coarse enough that a 35 MiB one touches the shared counter only a few
/// hundred times.
pub(crate) const MESSAGE_ROOM_UNIT: usize = 64 << 10;

/// The limits that depend on each other: the buffer budget must hold at
/// least one message of the largest size (as its buffer holds it).
pub(crate) fn check_together(limits: &Limits) -> Result<(), ConfigError> {
    let one_message = crate::smtp::message::MessageBuf::most_allocated(
        limits.max_message_bytes,
        limits.max_header_bytes + limits.max_line_bytes + 2,
    )
    .div_ceil(MESSAGE_ROOM_UNIT)
        * MESSAGE_ROOM_UNIT;
    if limits.max_buffered_message_bytes < one_message {
        return Err(invalid(
            "limits.max_buffered_message_bytes",
            format!(
                "must hold at least one message of `max_message_bytes` ({one_message} bytes, \
                 as buffered)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, refusal};

    fn with_limits(table: &str) -> String {
        format!("{MINIMAL}\n[limits]\n{table}\n")
    }

    #[test]
    fn every_limit_is_shown_in_the_example_config() {
        let example: toml::Table =
            toml::from_str(include_str!("../../config/mailveil.example.toml"))
                .expect("example parses");
        let shown = example
            .get("limits")
            .and_then(toml::Value::as_table)
            .expect("example has [limits]");
        let missing: Vec<&str> = LIMITS
            .iter()
            .map(|l| l.key)
            .filter(|key| !shown.contains_key(*key))
            .collect();
        assert!(missing.is_empty(), "not in the example: {missing:?}");
    }

    #[test]
    fn absent_limits_take_their_declared_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        let declared: Vec<(&str, u64)> = LIMITS.iter().map(|l| (l.key, l.default)).collect();
        assert_eq!(c.limits.as_written(), declared);
        assert_eq!(c.limits.tls_handshake_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.auth_failure_delay, Duration::from_millis(2000));
        assert_eq!(c.limits.max_header_bytes, 262_144);
    }

    #[test]
    fn each_key_sets_its_own_field_at_both_bounds() {
        let picks: [fn(&LimitSpec) -> u64; 2] = [|l| l.min, |l| l.max];
        for pick in picks {
            let table: String = LIMITS
                .iter()
                .map(|l| format!("{} = {}\n", l.key, pick(l)))
                .collect();
            let c = Config::parse(&with_limits(&table)).expect("bounds are accepted");
            let expected: Vec<(&str, u64)> = LIMITS.iter().map(|l| (l.key, pick(l))).collect();
            assert_eq!(c.limits.as_written(), expected);
        }
    }

    #[test]
    fn values_outside_the_bounds_are_refused_with_key_and_range() {
        for l in LIMITS {
            let expected = format!(
                "`limits.{}`: must be between {} and {}",
                l.key, l.min, l.max
            );
            let over = refusal(&with_limits(&format!("{} = {}", l.key, l.max + 1)));
            assert_eq!(over, expected);
            if l.min > 0 {
                let under = refusal(&with_limits(&format!("{} = {}", l.key, l.min - 1)));
                assert_eq!(under, expected);
            }
        }
    }

    #[test]
    fn counts_beyond_u32_are_refused_by_their_bounds() {
        let err = refusal(&with_limits("max_connections_per_prefix = 5000000000"));
        assert_eq!(
            err,
            "`limits.max_connections_per_prefix`: must be between 1 and 1000000"
        );
    }

    #[test]
    fn the_first_limit_out_of_range_in_declaration_order_is_named() {
        let err = refusal(&with_limits("max_header_fields = 1\nmax_recipients = 0"));
        assert_eq!(err, "`limits.max_recipients`: must be between 1 and 10000");
    }

    #[test]
    fn unknown_limit_is_refused_and_named() {
        let err = refusal(&with_limits("max_foo = 1"));
        assert!(err.contains("unknown field `max_foo`"), "{err}");
    }

    #[test]
    fn units_name_what_the_number_counts() {
        let unit = |key: &str| LIMITS.iter().find(|l| l.key == key).map(|l| l.unit);
        assert_eq!(unit("max_recipients"), Some("count"));
        assert_eq!(unit("command_timeout_secs"), Some("seconds"));
        assert_eq!(unit("auth_failure_delay_ms"), Some("milliseconds"));
        let keys: Vec<&str> = LIMITS.iter().map(|l| l.key).collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key declared twice");
    }

    #[test]
    fn the_buffer_budget_holds_at_least_one_largest_message() {
        let small = "max_buffered_message_bytes = 4194304\nmax_message_bytes = 4194305";
        assert_eq!(
            refusal(&with_limits(small)),
            "`limits.max_buffered_message_bytes`: must hold at least one message of \
             `max_message_bytes` (5242880 bytes, as buffered)"
        );
        let fits = "max_buffered_message_bytes = 4194304\nmax_message_bytes = 4194304";
        assert!(Config::parse(&with_limits(fits)).is_ok());
    }
}
