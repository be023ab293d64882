//! Admission: who may connect, how often, how many at once, and who may try
//! to log in or send again after failing.
//!
//! Every limit is keyed by a tag, never by the thing itself: the client's
//! address prefix (/32 for IPv4, /64 for IPv6) or its login, each passed
//! through HMAC-SHA256 under the admission subkey of [`crate::keys`] with a
//! label per kind, cut to 16 bytes. The tables therefore hold no address and no login, and a tag means
//! nothing outside this process (it changes at every restart).
//!
//! Rates use governor's GCRA limiters. Tables are pruned on a timer
//! ([`Admission::prune_every`]) and capped in size: once a rate table holds
//! [`MAX_KEYS`] tags, unknown keys share one overflow bucket until pruning
//! frees room, so a flood from many prefixes cannot grow memory without end.
//!
//! Lockout: each login the provider refuses is charged to its login tag and
//! to its prefix tag; a temporary failure (the password was not judged) to
//! the prefix only. When either runs out of allowance it is locked for
//! `auth_lockout`. While locked, logins are not sent to the provider at all
//! and all get one temporary refusal, no sooner than a wrong password's,
//! whatever the password: a guesser learns nothing from a correct guess
//! made while locked, and an honest user's client is not led to ask for a
//! new password.
//!
//! Slowloris: sessions that have not logged in are registered oldest first;
//! at the global connection cap the oldest is told to leave to make room
//! (as Dovecot's login processes do), and none may stay unauthenticated
//! past `preauth_timeout`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::config::Limits;
use crate::keys::{Purpose, keyed_hash};
use crate::privacy::{Login, normalized};

/// Most tags a rate table holds before new keys share an overflow bucket.
pub(crate) const MAX_KEYS: usize = 100_000;

/// Logins one prefix may have waiting on a provider's verdict at once;
/// more wait their turn. Failures are charged when the verdict comes, so
/// without this a prefix with many connections could have that many
/// guesses in flight past its allowance.
pub(crate) const AUTH_IN_FLIGHT_PER_PREFIX: usize = 4;

/// A keyed hash standing for an address prefix or a login.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tag([u8; 16]);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tag([scrubbed])")
    }
}

impl Tag {
    fn keyed(label: &[u8], data: &[u8]) -> Tag {
        Tag(keyed_hash(Purpose::Admission, &[label, data]))
    }

    /// The tag of an address's prefix: /32 for IPv4 (IPv4-mapped IPv6
    /// included), /64 for IPv6.
    pub(crate) fn for_prefix(ip: IpAddr) -> Tag {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Tag::keyed(b"mailveil prefix v4\0", &v4.octets()),
            IpAddr::V6(v6) => Tag::keyed(b"mailveil prefix v6\0", &v6.octets()[..8]),
        }
    }

    /// The tag of a login (case-insensitive).
    pub(crate) fn for_login(login: &Login) -> Tag {
        Tag::keyed(b"mailveil login\0", normalized(login).as_bytes())
    }

    /// The tag every overflowing key shares.
    const OVERFLOW: Tag = Tag([0; 16]);
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too many new connections from the prefix lately.
    Rate,
    /// Too many connections from the prefix open at once.
    Concurrency,
}

/// Admission limits, from `[limits]`.
#[derive(Debug, Clone)]
pub(crate) struct AdmissionLimits {
    /// Connections open at once per prefix.
    pub(crate) per_prefix: u32,
    /// New connections per prefix per minute (also the burst).
    pub(crate) rate_per_minute: u32,
    /// Failed logins per prefix within `auth_window` before lockout.
    pub(crate) auth_failures_per_prefix: u32,
    /// Failed logins per login within `auth_window` before lockout.
    pub(crate) auth_failures_per_login: u32,
    /// The window the failure allowances refill over.
    pub(crate) auth_window: Duration,
    /// How long a prefix or login stays locked.
    pub(crate) auth_lockout: Duration,
    /// Messages per account per hour (also the burst).
    pub(crate) messages_per_hour: u32,
}

impl AdmissionLimits {
    /// The admission part of the configured limits.
    pub(crate) fn from_limits(l: &Limits) -> Self {
        AdmissionLimits {
            per_prefix: l.max_connections_per_prefix,
            rate_per_minute: l.connections_per_prefix_per_minute,
            auth_failures_per_prefix: l.auth_failures_per_prefix,
            auth_failures_per_login: l.auth_failures_per_login,
            auth_window: l.auth_failure_window,
            auth_lockout: l.auth_lockout,
            messages_per_hour: l.messages_per_account_per_hour,
        }
    }
}

fn quota(n: u32, per: Duration) -> Quota {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per / n.get())
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

/// One rate table with its size cap.
struct Rate {
    limiter: DefaultKeyedRateLimiter<Tag>,
}

impl Rate {
    fn new(n: u32, per: Duration) -> Self {
        Rate {
            limiter: RateLimiter::keyed(quota(n, per)),
        }
    }

    /// Takes one unit for `tag`; false when its allowance is spent.
    fn take(&self, tag: &Tag) -> bool {
        let key = if self.limiter.len() >= MAX_KEYS {
            &Tag::OVERFLOW
        } else {
            tag
        };
        self.limiter.check_key(key).is_ok()
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Shared admission state, one per relay.
pub(crate) struct Admission {
    limits: AdmissionLimits,
    connect_rate: Rate,
    open: Mutex<HashMap<Tag, u32>>,
    fail_prefix: Rate,
    fail_login: Rate,
    locked: Mutex<HashMap<Tag, Instant>>,
    messages: Rate,
    preauth: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next_session: AtomicU64,
    auth_turns: Mutex<HashMap<Tag, Arc<tokio::sync::Semaphore>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain counters, still
    // usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    /// Empty tables for these limits.
    pub(crate) fn new(limits: AdmissionLimits) -> Self {
        Admission {
            connect_rate: Rate::new(limits.rate_per_minute, Duration::from_secs(60)),
            open: Mutex::new(HashMap::new()),
            fail_prefix: Rate::new(limits.auth_failures_per_prefix, limits.auth_window),
            fail_login: Rate::new(limits.auth_failures_per_login, limits.auth_window),
            locked: Mutex::new(HashMap::new()),
            messages: Rate::new(limits.messages_per_hour, Duration::from_secs(3600)),
            preauth: Mutex::new(BTreeMap::new()),
            next_session: AtomicU64::new(0),
            auth_turns: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Admits a new connection from `ip` (whose address is hashed here and
    /// not kept), or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Peer, Refused> {
        let prefix = Tag::for_prefix(ip);
        {
            let mut open = lock(&self.open);
            let count = open.get(&prefix).copied().unwrap_or(0);
            if count >= self.limits.per_prefix {
                return Err(Refused::Concurrency);
            }
            if !self.connect_rate.take(&prefix) {
                return Err(Refused::Rate);
            }
            open.insert(prefix, count + 1);
        }
        Ok(self.register(prefix, true))
    }

    fn register(self: &Arc<Self>, prefix: Tag, counted: bool) -> Peer {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        lock(&self.preauth).insert(id, evicted.clone());
        Peer {
            admission: self.clone(),
            prefix,
            counted,
            preauth: Some(id),
            evicted,
            account: None,
        }
    }

    /// A peer with no address (sessions served over something other than
    /// a TCP listener: fuzzing, tests). Its prefix tag is random.
    pub(crate) fn anonymous(self: &Arc<Self>) -> Peer {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .unwrap_or_else(|_| std::process::abort());
        self.register(Tag(bytes), false)
    }

    /// Tells the oldest session that has not logged in to leave. False when
    /// there is none.
    pub(crate) fn evict_oldest_preauth(&self) -> bool {
        let oldest = lock(&self.preauth).pop_first();
        match oldest {
            Some((_, notify)) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Sessions open from `ip`'s prefix.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> u32 {
        lock(&self.open)
            .get(&Tag::for_prefix(ip))
            .copied()
            .unwrap_or(0)
    }

    fn is_locked(&self, tags: &[Tag]) -> bool {
        let now = Instant::now();
        let locked = lock(&self.locked);
        tags.iter()
            .any(|t| locked.get(t).is_some_and(|until| *until > now))
    }

    fn charge_prefix(&self, prefix: Tag) {
        if !self.fail_prefix.take(&prefix) {
            self.lock_out(&[prefix]);
        }
    }

    fn charge_failure(&self, prefix: Tag, login: Tag) {
        let mut lock_now = Vec::with_capacity(2);
        if !self.fail_prefix.take(&prefix) {
            lock_now.push(prefix);
        }
        if !self.fail_login.take(&login) {
            lock_now.push(login);
        }
        self.lock_out(&lock_now);
    }

    fn lock_out(&self, lock_now: &[Tag]) {
        if lock_now.is_empty() {
            return;
        }
        let until = Instant::now() + self.limits.auth_lockout;
        let mut locked = lock(&self.locked);
        if locked.len() >= MAX_KEYS {
            let now = Instant::now();
            locked.retain(|_, t| *t > now);
            if locked.len() >= MAX_KEYS {
                // Still full of live locks: drop the one ending soonest.
                if let Some(k) = locked.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    locked.remove(&k);
                }
            }
        }
        for tag in lock_now {
            locked.insert(*tag, until);
        }
    }

    /// Drops what no longer limits anything: rate state back at full
    /// allowance, expired locks.
    pub(crate) fn prune(&self) {
        for rate in [
            &self.connect_rate,
            &self.fail_prefix,
            &self.fail_login,
            &self.messages,
        ] {
            rate.prune();
        }
        let now = Instant::now();
        let mut locked = lock(&self.locked);
        locked.retain(|_, until| *until > now);
        locked.shrink_to_fit();
    }

    /// Prunes every `interval`, forever.
    pub(crate) async fn prune_every(&self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.prune();
        }
    }
}

/// An admitted connection. Dropping it frees its place in its prefix's
/// count and in the list of sessions not yet logged in.
pub(crate) struct Peer {
    admission: Arc<Admission>,
    prefix: Tag,
    counted: bool,
    preauth: Option<u64>,
    evicted: Arc<Notify>,
    account: Option<Tag>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peer([scrubbed])")
    }
}

/// Whether a login may go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginGate {
    /// Go ahead.
    Open,
    /// Locked: answer as for a wrong password, without asking the provider.
    Locked,
}

/// A prefix's turn to have a login checked by a provider; see
/// [`AUTH_IN_FLIGHT_PER_PREFIX`].
pub(crate) struct AuthTurn {
    admission: Arc<Admission>,
    prefix: Tag,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for AuthTurn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut turns = lock(&self.admission.auth_turns);
        // Clones are made under this lock: a count of one is the table's
        // own, and nobody is waiting.
        if turns
            .get(&self.prefix)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            turns.remove(&self.prefix);
        }
    }
}

impl Peer {
    /// Waits until this prefix has fewer than [`AUTH_IN_FLIGHT_PER_PREFIX`]
    /// logins in progress; hold the turn until the attempt is charged.
    pub(crate) async fn auth_turn(&self) -> AuthTurn {
        let semaphore = lock(&self.admission.auth_turns)
            .entry(self.prefix)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(AUTH_IN_FLIGHT_PER_PREFIX)))
            .clone();
        // The semaphore is never closed.
        let permit = semaphore.acquire_owned().await.ok();
        AuthTurn {
            admission: self.admission.clone(),
            prefix: self.prefix,
            permit,
        }
    }

    /// Whether a login attempt for `login` may proceed.
    pub(crate) fn login_gate(&self, login: &Login) -> LoginGate {
        if self
            .admission
            .is_locked(&[self.prefix, Tag::for_login(login)])
        {
            LoginGate::Locked
        } else {
            LoginGate::Open
        }
    }

    /// The provider refused `login`'s credentials.
    pub(crate) fn login_failed(&self, login: &Login) {
        self.admission
            .charge_failure(self.prefix, Tag::for_login(login));
    }

    /// The provider failed a login temporarily (its password was not
    /// judged): charged to the prefix only.
    pub(crate) fn login_failed_temporarily(&self) {
        self.admission.charge_prefix(self.prefix);
    }

    /// The provider accepted `login`: the session is no longer a
    /// candidate for eviction, and its messages count against the account.
    pub(crate) fn logged_in(&mut self, login: &Login) {
        self.leave_preauth();
        self.account = Some(Tag::for_login(login));
    }

    /// Takes one message from the account's hourly allowance; false when
    /// it is spent.
    pub(crate) fn take_message(&self) -> bool {
        match &self.account {
            Some(tag) => self.admission.messages.take(tag),
            None => false,
        }
    }

    /// Resolves when the relay needs this unauthenticated session's place.
    pub(crate) async fn evicted(&self) {
        if self.preauth.is_some() {
            self.evicted.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    fn leave_preauth(&mut self) {
        if let Some(id) = self.preauth.take() {
            lock(&self.admission.preauth).remove(&id);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.leave_preauth();
        if self.counted {
            let mut open = lock(&self.admission.open);
            if let Some(count) = open.get_mut(&self.prefix) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.prefix);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            per_prefix: 3,
            rate_per_minute: 5,
            auth_failures_per_prefix: 4,
            auth_failures_per_login: 2,
            auth_window: Duration::from_secs(600),
            auth_lockout: Duration::from_secs(600),
            messages_per_hour: 2,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn login(s: &str) -> Login {
        crate::privacy::Sensitive::new(zeroize::Zeroizing::new(s.to_string()))
    }

    #[test]
    fn prefixes_are_slash_32_and_slash_64() {
        assert_eq!(
            Tag::for_prefix(ip("10.0.0.1")),
            Tag::for_prefix(ip("::ffff:10.0.0.1"))
        );
        assert_ne!(
            Tag::for_prefix(ip("10.0.0.1")),
            Tag::for_prefix(ip("10.0.0.2"))
        );
        assert_eq!(
            Tag::for_prefix(ip("2001:db8:1:2::1")),
            Tag::for_prefix(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Tag::for_prefix(ip("2001:db8:1:2::1")),
            Tag::for_prefix(ip("2001:db8:1:3::1"))
        );
        // Labels keep the kinds apart.
        assert_ne!(Tag::keyed(b"a\0", b"x"), Tag::keyed(b"b\0", b"x"));
        assert_eq!(Tag::for_login(&login("A@x")), Tag::for_login(&login("a@X")));
    }

    #[test]
    fn concurrency_per_prefix_and_release_on_drop() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            rate_per_minute: 100,
            ..limits()
        }));
        let peers: Vec<_> = (0..3).map(|_| a.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.1")).unwrap_err(), Refused::Concurrency);
        // Another prefix is unaffected.
        let other = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.open_from(ip("10.0.0.1")), 3);
        drop(peers);
        assert_eq!(a.open_from(ip("10.0.0.1")), 0);
        assert!(lock(&a.open).len() == 1, "entries at zero are removed");
        drop(other);
        assert!(lock(&a.open).is_empty());
        a.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn connection_rate_per_prefix() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            per_prefix: 100,
            ..limits()
        }));
        for _ in 0..5 {
            drop(a.admit(ip("192.0.2.7")).unwrap());
        }
        assert_eq!(a.admit(ip("192.0.2.7")).unwrap_err(), Refused::Rate);
        drop(a.admit(ip("192.0.2.8")).unwrap());
    }

    #[test]
    fn lockout_by_prefix_and_by_login() {
        let a = Arc::new(Admission::new(limits()));
        let p = a.admit(ip("10.1.0.1")).unwrap();
        // Login allowance is 2: the third failure for one login locks it.
        for _ in 0..3 {
            assert_eq!(p.login_gate(&login("victim@x")), LoginGate::Open);
            p.login_failed(&login("victim@x"));
        }
        assert_eq!(p.login_gate(&login("victim@x")), LoginGate::Locked);
        // Locked from every prefix, case-insensitively.
        let q = a.admit(ip("10.2.0.1")).unwrap();
        assert_eq!(q.login_gate(&login("VICTIM@x")), LoginGate::Locked);
        assert_eq!(q.login_gate(&login("other@x")), LoginGate::Open);
        // Prefix allowance is 4: stuffing many logins from one prefix
        // locks the prefix for every login.
        let s = a.admit(ip("10.3.0.1")).unwrap();
        for i in 0..5 {
            s.login_failed(&login(&format!("user{i}@x")));
        }
        assert_eq!(s.login_gate(&login("fresh@x")), LoginGate::Locked);
        assert_eq!(q.login_gate(&login("fresh@x")), LoginGate::Open);
        // Temporary failures count against the prefix, not the login.
        let t = a.admit(ip("10.4.0.1")).unwrap();
        for _ in 0..5 {
            assert_eq!(t.login_gate(&login("patient@x")), LoginGate::Open);
            t.login_failed_temporarily();
        }
        assert_eq!(t.login_gate(&login("patient@x")), LoginGate::Locked);
        assert_eq!(q.login_gate(&login("patient@x")), LoginGate::Open);
    }

    #[test]
    fn lockout_ends() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            auth_lockout: Duration::from_millis(100),
            auth_failures_per_login: 1,
            ..limits()
        }));
        let p = a.admit(ip("10.1.0.1")).unwrap();
        p.login_failed(&login("u@x"));
        p.login_failed(&login("u@x"));
        assert_eq!(p.login_gate(&login("u@x")), LoginGate::Locked);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(p.login_gate(&login("u@x")), LoginGate::Open);
        a.prune();
        assert!(lock(&a.locked).is_empty(), "expired locks are pruned");
    }

    #[test]
    fn messages_per_account() {
        let a = Arc::new(Admission::new(limits()));
        let mut p = a.admit(ip("10.1.0.1")).unwrap();
        assert!(!p.take_message(), "no account before login");
        p.logged_in(&login("u@x"));
        assert!(p.take_message());
        assert!(p.take_message());
        assert!(!p.take_message());
        // The allowance is the account's, across sessions.
        let mut q = a.admit(ip("10.9.0.1")).unwrap();
        q.logged_in(&login("U@x"));
        assert!(!q.take_message());
        let mut r = a.admit(ip("10.9.0.1")).unwrap();
        r.logged_in(&login("other@x"));
        assert!(r.take_message());
    }

    #[test]
    fn eviction_takes_the_oldest_unauthenticated() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            per_prefix: 100,
            rate_per_minute: 100,
            ..limits()
        }));
        let mut first = a.admit(ip("10.0.0.1")).unwrap();
        let second = a.admit(ip("10.0.0.2")).unwrap();
        let third = a.admit(ip("10.0.0.3")).unwrap();
        first.logged_in(&login("u@x"));
        assert!(a.evict_oldest_preauth());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let quick = Duration::from_millis(50);
            assert!(tokio::time::timeout(quick, second.evicted()).await.is_ok());
            assert!(tokio::time::timeout(quick, third.evicted()).await.is_err());
            assert!(tokio::time::timeout(quick, first.evicted()).await.is_err());
        });
        drop(third);
        assert!(
            !a.evict_oldest_preauth(),
            "nobody else is waiting to log in"
        );
    }

    #[test]
    fn logins_in_flight_per_prefix_are_capped_and_the_table_empties() {
        let a = Arc::new(Admission::new(limits()));
        let p = a.admit(ip("10.0.0.1")).unwrap();
        let q = a.admit(ip("10.0.0.2")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut turns = Vec::new();
            for _ in 0..AUTH_IN_FLIGHT_PER_PREFIX {
                turns.push(p.auth_turn().await);
            }
            let quick = Duration::from_millis(50);
            assert!(tokio::time::timeout(quick, p.auth_turn()).await.is_err());
            // Another prefix is not held up.
            let other = tokio::time::timeout(quick, q.auth_turn()).await;
            assert!(other.is_ok());
            drop(other);
            turns.pop();
            assert!(tokio::time::timeout(quick, p.auth_turn()).await.is_ok());
            drop(turns);
        });
        assert!(lock(&a.auth_turns).is_empty());
    }

    #[test]
    fn pruning_empties_idle_tables_and_size_is_capped() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            rate_per_minute: 60_000,
            per_prefix: 10,
            ..limits()
        }));
        for i in 0..1000u32 {
            drop(a.admit(IpAddr::from(i.to_be_bytes())).unwrap());
        }
        assert_eq!(a.connect_rate.limiter.len(), 1000);
        // 60,000 a minute: a millisecond refills one, so all are back at
        // full allowance well within this sleep.
        std::thread::sleep(Duration::from_millis(20));
        a.prune();
        assert_eq!(a.connect_rate.limiter.len(), 0);

        let r = Rate::new(1, Duration::from_secs(3600));
        for i in 0..(MAX_KEYS as u32 + 10) {
            let _ = r.take(&Tag::keyed(b"t\0", &i.to_be_bytes()));
        }
        assert_eq!(
            r.limiter.len(),
            MAX_KEYS + 1,
            "new keys share the overflow tag"
        );
        assert!(
            !r.take(&Tag::keyed(b"t\0", b"new")),
            "overflow bucket is spent"
        );
    }
}
