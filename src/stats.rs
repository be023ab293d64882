//! Aggregate counters — the only thing the relay says about its traffic.
//!
//! Sessions, logins, messages and refusals are counted, never attributed:
//! a counter holds a number and nothing else, no key, no time of its own.
//! Every `interval` the counts since the last report are logged as one line
//! and reset. The interval is coarse (at least ten minutes, an hour by
//! default) so that a line cannot follow one person's session; operators
//! of a relay with a single user may switch the report off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What is counted. The order is the order of the report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// An SMTP connection was accepted.
    SmtpSession,
    /// An IMAP connection was accepted.
    ImapSession,
    /// The provider accepted a login.
    Login,
    /// The provider refused a login (wrong password, …).
    LoginRefusedByProvider,
    /// No upstream serves the login's domain.
    LoginNoRoute,
    /// Members only: the login is not on the list.
    LoginNotMember,
    /// The provider could not be reached (network, proxy, Tor).
    ProviderUnreachable,
    /// The embedded Tor client was still bootstrapping.
    TorNotReady,
    /// The provider's TLS failed: its certificate (expired, wrong name,
    /// unknown issuer, no pin matching), no STARTTLS, or the handshake.
    ProviderTlsFailed,
    /// The provider accepted a message (its 2xx reached the client).
    MessageRelayed,
    /// The provider refused a message (its 4xx/5xx reached the client).
    MessageRefusedByProvider,
    /// The relay refused a message (size, bare line endings, long lines,
    /// not encrypted where it must be).
    MessageRefusedHere,
    /// Of those, refused as not encrypted (`outgoing = "encrypted-only"`).
    MessageNotEncrypted,
    /// The provider connection was lost during a session.
    ProviderLost,
    /// A client was disconnected for being idle or too slow.
    Timeout,
    /// A connection was refused because the relay was at its connection cap.
    RefusedBusy,
    /// A connection was refused: too many new ones from its prefix lately.
    RefusedRate,
    /// A connection was refused: too many open from its prefix.
    RefusedPrefixBusy,
    /// A session that had not logged in was closed to make room at the cap.
    Evicted,
    /// A login was answered as failed without asking the provider: its
    /// login or its prefix was locked out after too many failures.
    LoginLocked,
    /// A message was refused: its account's hourly allowance was spent.
    MessageRateLimited,
    /// Accepting a connection failed (out of descriptors, or the like).
    AcceptFailed,
    /// A message was deferred: the relay-wide message budget or the
    /// account's open transactions were at their limit.
    MessageNoRoom,
    /// A connection to a PROXY-protocol listener was closed: not from a
    /// `proxy_from` address, or without a usable header.
    ProxyRefused,
    /// An onion service connection or rendezvous was refused: the onion
    /// clients' shared limits were reached.
    OnionRefused,
}

const ALL: [Counter; 25] = [
    Counter::SmtpSession,
    Counter::ImapSession,
    Counter::Login,
    Counter::LoginRefusedByProvider,
    Counter::LoginNoRoute,
    Counter::LoginNotMember,
    Counter::ProviderUnreachable,
    Counter::TorNotReady,
    Counter::ProviderTlsFailed,
    Counter::MessageRelayed,
    Counter::MessageRefusedByProvider,
    Counter::MessageRefusedHere,
    Counter::MessageNotEncrypted,
    Counter::ProviderLost,
    Counter::Timeout,
    Counter::RefusedBusy,
    Counter::RefusedRate,
    Counter::RefusedPrefixBusy,
    Counter::Evicted,
    Counter::LoginLocked,
    Counter::MessageRateLimited,
    Counter::AcceptFailed,
    Counter::MessageNoRoom,
    Counter::ProxyRefused,
    Counter::OnionRefused,
];

impl Counter {
    fn label(self) -> &'static str {
        match self {
            Counter::SmtpSession => "SMTP sessions",
            Counter::ImapSession => "IMAP sessions",
            Counter::Login => "logins",
            Counter::LoginRefusedByProvider => "logins refused by provider",
            Counter::LoginNoRoute => "logins for no configured provider",
            Counter::LoginNotMember => "logins not on the members list",
            Counter::ProviderUnreachable => "provider unreachable",
            Counter::TorNotReady => "Tor not ready",
            Counter::ProviderTlsFailed => "provider TLS failed",
            Counter::MessageRelayed => "messages relayed",
            Counter::MessageRefusedByProvider => "messages refused by provider",
            Counter::MessageRefusedHere => "messages refused here",
            Counter::MessageNotEncrypted => "of which not encrypted",
            Counter::ProviderLost => "provider connections lost",
            Counter::Timeout => "client timeouts",
            Counter::RefusedBusy => "connections refused at the cap",
            Counter::RefusedRate => "connections refused by rate",
            Counter::RefusedPrefixBusy => "connections refused per prefix",
            Counter::Evicted => "unauthenticated sessions evicted",
            Counter::LoginLocked => "logins locked out",
            Counter::MessageRateLimited => "messages over the hourly limit",
            Counter::AcceptFailed => "accepts failed",
            Counter::MessageNoRoom => "messages deferred for room",
            Counter::ProxyRefused => "connections without a trusted PROXY header",
            Counter::OnionRefused => "onion connections refused by the onion limits",
        }
    }
}

/// The counters, shared by every session.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; ALL.len()],
}

impl Stats {
    /// Adds one to `counter`.
    pub(crate) fn count(&self, counter: Counter) {
        self.counts[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, reset to zero, as one report line.
    pub fn take_report(&self) -> String {
        ALL.iter()
            .map(|&c| {
                let n = self.counts[c as usize].swap(0, Ordering::Relaxed);
                format!("{} {n}", c.label())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Logs a report every `interval` until the task is dropped.
    pub(crate) async fn report_every(&self, interval: Duration) {
        let minutes = interval.as_secs() / 60;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticks.tick().await;
            tracing::info!("last {minutes} min: {}", self.take_report());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_counter_and_resets() {
        let stats = Stats::default();
        stats.count(Counter::SmtpSession);
        stats.count(Counter::SmtpSession);
        stats.count(Counter::Timeout);
        assert_eq!(
            stats.take_report(),
            "SMTP sessions 2, IMAP sessions 0, logins 0, logins refused by provider 0, \
             logins for no configured provider 0, logins not on the members list 0, provider unreachable 0, \
             Tor not ready 0, provider TLS failed 0, \
             messages relayed 0, messages refused by provider 0, messages refused here 0, of which not encrypted 0, \
             provider connections lost 0, client timeouts 1, connections refused at the cap 0, \
             connections refused by rate 0, connections refused per prefix 0, \
             unauthenticated sessions evicted 0, logins locked out 0, \
             messages over the hourly limit 0, accepts failed 0, messages deferred for room 0, connections without a trusted PROXY header 0, onion connections refused by the onion limits 0"
        );
        assert!(stats.take_report().starts_with("SMTP sessions 0,"));
    }

    #[test]
    fn counter_indices_match_the_report_order() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
