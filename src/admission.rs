//! Admission: who may connect, how often, how many at once, and who may try
//! to log in or send again after failing.
//!
//! Every limit is keyed by a tag, never by the thing itself: the client's
//! address prefix (/32 for IPv4; /64, /56 and /48 for IPv6, see
//! [`Prefixes`]) or its login, each passed
//! through HMAC-SHA256 under the admission subkey of [`crate::keys`] with a
//! label per kind, cut to 16 bytes. The tables therefore hold no address and no login, and a tag means
//! nothing outside this process (it changes at every restart).
//!
//! Rates use governor's GCRA limiters. Tables are pruned on a timer
//! ([`Admission::prune_every`]), and when full (a lock, a success or a
//! failure also as soon as it is looked up expired), and capped in size:
//! once a
//! rate table holds [`MAX_KEYS`] tags that are not back at full allowance,
//! new keys share one overflow bucket until pruning frees room, while the
//! keys it holds keep their own; so a flood from many prefixes can neither
//! grow memory without end nor put the prefixes already known (an honest
//! user's among them) into the overflow bucket.
//!
//! Lockout: each login the provider refuses is charged to its login tag and
//! to its prefix tag; a temporary failure (the password was not judged) to
//! the prefix only. When either runs out of allowance it is locked for
//! `auth_lockout`. A login's lock does not apply to a network that logged
//! in with that login within `login_success_memory` (kept as a tag of the
//! pair, like every other key here): guessing a known login from elsewhere
//! cannot lock its owner out of their own network. While locked, logins are not sent to the provider at all
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
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

/// Logins for one login that may wait on a provider's verdict at once,
/// from all networks together (a network that logged in with it lately is
/// not held to this): without it, N networks could have N × 4 guesses at
/// one login in flight before the first verdicts lock it. Four, so that a
/// mail program opening several connections at once (Thunderbird: up to
/// five) from a new network barely waits.
pub(crate) const AUTH_IN_FLIGHT_PER_LOGIN: usize = 4;

/// Refused connections per widest prefix and minute that get a TLS
/// handshake and a reply; the rest are closed without one.
pub(crate) const REFUSALS_TOLD_PER_MINUTE: u32 = 10;

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
    #[cfg(test)]
    pub(crate) fn for_prefix(ip: IpAddr) -> Tag {
        Prefixes::of(ip).narrowest()
    }

    /// The tag of a login (case-insensitive).
    pub(crate) fn for_login(login: &Login) -> Tag {
        Tag::keyed(b"mailveil login\0", normalized(login).as_bytes())
    }

    /// The tag of a login used from a prefix: the pair, not either alone.
    fn for_login_on(login: &Login, prefix: Tag) -> Tag {
        Tag(keyed_hash(
            Purpose::Admission,
            &[
                b"mailveil login on prefix\0",
                normalized(login).as_bytes(),
                &prefix.0,
            ],
        ))
    }

    /// The tag every overflowing key shares.
    const OVERFLOW: Tag = Tag([0; 16]);

    /// The one key of the onion clients' shared rate.
    const ONION: Tag = Tag([0xff; 16]);

    /// A fresh random tag: an onion client circuit's.
    pub(crate) fn random() -> Tag {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .unwrap_or_else(|_| std::process::abort());
        Tag(bytes)
    }
}

/// The prefixes an address is counted under, narrowest first: its /32
/// for IPv4; its /64, /56 and /48 for IPv6, where one user may hold
/// thousands of /64s. Level `n` is allowed `factor^n` times what a
/// narrowest prefix is (`ipv6_wider_prefix_factor`), and an address is
/// refused when any of its levels is spent: the worst of the three.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefixes {
    tags: [Tag; 3],
    levels: usize,
    /// An onion client's circuit, not a network.
    circuit: bool,
}

impl Prefixes {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Prefixes {
                tags: [Tag::keyed(b"mailveil prefix v4\0", &v4.octets()); 3],
                levels: 1,
                circuit: false,
            },
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Prefixes {
                    tags: [
                        Tag::keyed(b"mailveil prefix v6\0", &o[..8]),
                        Tag::keyed(b"mailveil prefix v6/56\0", &o[..7]),
                        Tag::keyed(b"mailveil prefix v6/48\0", &o[..6]),
                    ],
                    levels: 3,
                    circuit: false,
                }
            }
        }
    }

    /// One level only (for peers without an address).
    fn single(tag: Tag) -> Self {
        Prefixes {
            tags: [tag; 3],
            levels: 1,
            circuit: false,
        }
    }

    /// An onion client's circuit, standing where a network would.
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    fn circuit(tag: Tag) -> Self {
        Prefixes {
            circuit: true,
            ..Prefixes::single(tag)
        }
    }

    /// The /32 or the /64.
    pub(crate) fn narrowest(&self) -> Tag {
        self.tags[0]
    }

    /// The /32 or the /48.
    pub(crate) fn widest(&self) -> Tag {
        self.tags[self.levels - 1]
    }

    /// (level, tag), widest first.
    fn widest_first(&self) -> impl Iterator<Item = (usize, &Tag)> {
        self.tags[..self.levels].iter().enumerate().rev()
    }

    fn all(&self) -> &[Tag] {
        &self.tags[..self.levels]
    }
}

/// Levels of [`Prefixes`].
const LEVELS: usize = 3;

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
    /// How long a network that logged in with a login is exempt from that
    /// login's lock (zero: never).
    pub(crate) success_memory: Duration,
    /// Failed logins let through to one provider per hour.
    pub(crate) provider_failures_per_hour: u32,
    /// Bytes of messages held at once, relay-wide.
    pub(crate) buffered_bytes: usize,
    /// Open mail transactions per account.
    pub(crate) transactions_per_account: u32,
    /// How much more an IPv6 /56 is allowed than a /64, and a /48 than a
    /// /56.
    wider_factor: u32,
    /// Onion clients' connections open at once, all together.
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    pub(crate) onion_open: u32,
    /// Onion clients' new connections per minute, all together.
    pub(crate) onion_rate_per_minute: u32,
    /// Failed logins per onion client circuit within `auth_window` before
    /// that circuit is locked.
    pub(crate) onion_auth_failures_per_circuit: u32,
}

impl AdmissionLimits {
    /// `n` scaled for prefix level `level`.
    fn at_level(&self, n: u32, level: usize) -> u32 {
        (0..level).fold(n, |n, _| n.saturating_mul(self.wider_factor))
    }

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
            success_memory: l.login_success_memory,
            provider_failures_per_hour: l.provider_failures_per_hour,
            buffered_bytes: l.max_buffered_message_bytes,
            transactions_per_account: l.max_transactions_per_account,
            wider_factor: l.ipv6_wider_prefix_factor,
            onion_open: l.onion_max_connections,
            onion_rate_per_minute: l.onion_connections_per_minute,
            onion_auth_failures_per_circuit: l.onion_auth_failures_per_circuit,
        }
    }
}

fn quota(n: u32, per: Duration) -> Quota {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per / n.get())
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

/// governor's keyed state, shared so that [`Rate`] can tell a key it
/// already holds from a new one.
struct SharedStore(Arc<HashMapStateStore<Tag>>);

impl StateStore for SharedStore {
    type Key = Tag;

    fn measure_and_replace<T, F, E>(&self, key: &Tag, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<Tag> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

/// One rate table with its size cap. A key it already holds keeps its own
/// allowance whatever the table's size; a new key, when the table is full
/// even after dropping the keys back at full allowance, shares one
/// overflow bucket with the other newcomers until pruning frees room.
struct Rate {
    limiter: RateLimiter<Tag, SharedStore, DefaultClock>,
    keys: Arc<HashMapStateStore<Tag>>,
    /// When the table was last pruned because it was full.
    pruned_full: Mutex<Option<Instant>>,
}

impl Rate {
    fn new(n: u32, per: Duration) -> Self {
        let keys = Arc::new(HashMapStateStore::default());
        Rate {
            limiter: RateLimiter::new(
                quota(n, per),
                SharedStore(keys.clone()),
                DefaultClock::default(),
            ),
            keys,
            pruned_full: Mutex::new(None),
        }
    }

    /// Takes one unit for `tag`; false when its allowance is spent.
    fn take(&self, tag: &Tag) -> bool {
        let key = if self.has_room_for(tag) {
            tag
        } else {
            &Tag::OVERFLOW
        };
        self.limiter.check_key(key).is_ok()
    }

    /// True when `tag` has a key in the table (it connected lately).
    fn knows(&self, tag: &Tag) -> bool {
        self.keys.lock().contains_key(tag)
    }

    fn has_room_for(&self, tag: &Tag) -> bool {
        // One lock at a time: the table's lock is not reentrant.
        let known = self.keys.lock().contains_key(tag);
        if known || self.limiter.len() < MAX_KEYS {
            return true;
        }
        // Full: drop the keys back at full allowance (at most once a
        // second, since that walks the whole table), then look again.
        let now = Instant::now();
        let mut last = lock(&self.pruned_full);
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            self.limiter.retain_recent();
        }
        self.limiter.len() < MAX_KEYS
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Shared admission state, one per relay.
pub(crate) struct Admission {
    limits: AdmissionLimits,
    /// Per prefix level (see [`Prefixes`]).
    connect_rate: [Rate; LEVELS],
    open: Mutex<HashMap<Tag, u32>>,
    /// Per prefix level.
    fail_prefix: [Rate; LEVELS],
    /// Per onion client circuit.
    fail_circuit: Rate,
    /// Onion clients' connections open now, and their rate (one key).
    onion_open: AtomicUsize,
    onion_rate: Rate,
    /// Refusals explained (with a TLS handshake and a reply) per widest
    /// prefix; past it, refused connections are just closed.
    told: Rate,
    fail_login: Rate,
    locked: Mutex<HashMap<Tag, Instant>>,
    /// (login, prefix) tags of recent successful logins, until when they
    /// exempt that prefix from that login's lock.
    succeeded: Mutex<HashMap<Tag, Instant>>,
    /// Prefixes with a failed login lately, until when that counts.
    failed_lately: Mutex<HashMap<Tag, Instant>>,
    /// Per upstream (by index): the hour's window start and the failed
    /// logins it let through to that provider.
    provider_failures: Mutex<HashMap<usize, (Instant, u32)>>,
    messages: Rate,
    preauth: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next_session: AtomicU64,
    auth_turns: Mutex<HashMap<Tag, Arc<tokio::sync::Semaphore>>>,
    /// Message bytes granted to transactions, relay-wide.
    buffered: AtomicUsize,
    /// Open transactions per account.
    transactions: Mutex<HashMap<Tag, u32>>,
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
            connect_rate: std::array::from_fn(|level| {
                Rate::new(
                    limits.at_level(limits.rate_per_minute, level),
                    Duration::from_secs(60),
                )
            }),
            open: Mutex::new(HashMap::new()),
            fail_prefix: std::array::from_fn(|level| {
                Rate::new(
                    limits.at_level(limits.auth_failures_per_prefix, level),
                    limits.auth_window,
                )
            }),
            fail_circuit: Rate::new(limits.onion_auth_failures_per_circuit, limits.auth_window),
            onion_open: AtomicUsize::new(0),
            onion_rate: Rate::new(limits.onion_rate_per_minute, Duration::from_secs(60)),
            told: Rate::new(REFUSALS_TOLD_PER_MINUTE, Duration::from_secs(60)),
            fail_login: Rate::new(limits.auth_failures_per_login, limits.auth_window),
            locked: Mutex::new(HashMap::new()),
            succeeded: Mutex::new(HashMap::new()),
            failed_lately: Mutex::new(HashMap::new()),
            provider_failures: Mutex::new(HashMap::new()),
            messages: Rate::new(limits.messages_per_hour, Duration::from_secs(3600)),
            preauth: Mutex::new(BTreeMap::new()),
            next_session: AtomicU64::new(0),
            auth_turns: Mutex::new(HashMap::new()),
            buffered: AtomicUsize::new(0),
            transactions: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Admits a new connection from `ip` (whose address is hashed here and
    /// not kept), or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Peer, Refused> {
        let prefixes = Prefixes::of(ip);
        {
            let mut open = lock(&self.open);
            // Widest first: a flood from one /48 is stopped there before
            // its /64s make keys in the narrower tables.
            for (level, tag) in prefixes.widest_first() {
                let count = open.get(tag).copied().unwrap_or(0);
                if count >= self.limits.at_level(self.limits.per_prefix, level) {
                    return Err(Refused::Concurrency);
                }
            }
            // Rates: a network already known at its narrowest level is
            // checked narrowest first, so that one /64 past its own rate
            // is refused without spending its /56's and /48's allowances
            // (which its neighbours share). A network not seen lately is
            // checked widest first, so that a flood of new /64s from one
            // /48 is stopped there before it makes a key per /64.
            let known = self.connect_rate[0].knows(&prefixes.narrowest());
            let order: [usize; LEVELS] = if known { [0, 1, 2] } else { [2, 1, 0] };
            for level in order.into_iter().filter(|&l| l < prefixes.levels) {
                if !self.connect_rate[level].take(&prefixes.tags[level]) {
                    return Err(Refused::Rate);
                }
            }
            for tag in prefixes.all() {
                *open.entry(*tag).or_insert(0) += 1;
            }
        }
        Ok(self.register(prefixes, true))
    }

    /// Whether a connection from `ip` that was just refused should be
    /// told why (a TLS handshake and a reply), or closed at once: each
    /// widest prefix is told [`REFUSALS_TOLD_PER_MINUTE`] times a minute.
    pub(crate) fn explain_refusal(&self, ip: IpAddr) -> bool {
        self.told.take(&Prefixes::of(ip).widest())
    }

    fn register(self: &Arc<Self>, prefixes: Prefixes, counted: bool) -> Peer {
        let prefix = prefixes.narrowest();
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        lock(&self.preauth).insert(id, evicted.clone());
        Peer {
            admission: self.clone(),
            prefix,
            prefixes,
            counted,
            preauth: Some(id),
            evicted,
            account: None,
            onion: false,
        }
    }

    /// A peer with no address (sessions served over something other than
    /// a TCP listener: fuzzing, tests). Its prefix tag is random.
    pub(crate) fn anonymous(self: &Arc<Self>) -> Peer {
        self.register(Prefixes::single(Tag::random()), false)
    }

    /// Admits a connection from an onion client on circuit `circuit` (a
    /// tag made for that rendezvous circuit when it was accepted): within
    /// the circuit's own connection rate (a network's) and the onion
    /// clients' shared connection count and rate. Its failed logins are
    /// charged to the circuit (and, as everywhere, the login); past the
    /// provider budget, a failure on any circuit holds back new onion
    /// logins as one network's would.
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    pub(crate) fn admit_onion(self: &Arc<Self>, circuit: Tag) -> Result<Peer, Refused> {
        let open = self.onion_open.fetch_add(1, Ordering::AcqRel);
        if open >= self.limits.onion_open as usize {
            self.onion_open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Concurrency);
        }
        // Each circuit has a network's rate of its own, then all onion
        // clients share theirs: one circuit cannot spend it alone.
        if !self.connect_rate[0].take(&circuit) || !self.onion_rate.take(&Tag::ONION) {
            self.onion_open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Rate);
        }
        let mut peer = self.register(Prefixes::circuit(circuit), false);
        peer.onion = true;
        Ok(peer)
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
        let mut locked = lock(&self.locked);
        tags.iter().any(|t| still_until(&mut locked, t))
    }

    /// Charges a failure to every level of `prefixes`; those spent are
    /// added to `lock_now`.
    fn charge_levels(&self, prefixes: &Prefixes, lock_now: &mut Vec<Tag>) {
        // Every level: past the provider budget, a /48 that failed lately
        // is held back whichever of its /64s asks next.
        for tag in prefixes.all() {
            self.note_failure(*tag);
        }
        if prefixes.circuit {
            // Onion clients together have failed lately: past the provider
            // budget, a fresh circuit must not be a fresh start.
            self.note_failure(Tag::ONION);
            if !self.fail_circuit.take(&prefixes.narrowest()) {
                lock_now.push(prefixes.narrowest());
            }
            return;
        }
        for (level, tag) in prefixes.widest_first() {
            if !self.fail_prefix[level].take(tag) {
                lock_now.push(*tag);
            }
        }
    }

    fn charge_prefix(&self, prefixes: &Prefixes) {
        let mut lock_now = Vec::with_capacity(LEVELS);
        self.charge_levels(prefixes, &mut lock_now);
        self.lock_out(&lock_now);
    }

    fn note_failure(&self, prefix: Tag) {
        let until = Instant::now() + self.limits.auth_window;
        insert_until(&mut lock(&self.failed_lately), prefix, until);
    }

    fn failed_lately(&self, prefix: Tag) -> bool {
        still_until(&mut lock(&self.failed_lately), &prefix)
    }

    /// The failed logins let through to `upstream` in the current hour.
    fn provider_failures(&self, upstream: usize) -> u32 {
        let now = Instant::now();
        match lock(&self.provider_failures).get(&upstream) {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(3600) => *n,
            _ => 0,
        }
    }

    fn count_provider_failure(&self, upstream: usize) {
        let now = Instant::now();
        let mut table = lock(&self.provider_failures);
        let entry = table.entry(upstream).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(3600) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    fn charge_failure(&self, prefixes: &Prefixes, login: Tag) {
        let mut lock_now = Vec::with_capacity(LEVELS + 1);
        self.charge_levels(prefixes, &mut lock_now);
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
        for tag in lock_now {
            insert_until(&mut locked, *tag, until);
        }
    }

    /// Whether `pair` (a login on a prefix) logged in recently.
    fn succeeded_lately(&self, pair: Tag) -> bool {
        still_until(&mut lock(&self.succeeded), &pair)
    }

    fn remember_success(&self, pair: Tag) {
        if self.limits.success_memory.is_zero() {
            return;
        }
        let until = Instant::now() + self.limits.success_memory;
        insert_until(&mut lock(&self.succeeded), pair, until);
    }

    /// Drops what no longer limits anything: rate state back at full
    /// allowance, expired locks.
    pub(crate) fn prune(&self) {
        for rate in self.connect_rate.iter().chain(&self.fail_prefix).chain([
            &self.fail_login,
            &self.messages,
            &self.told,
            &self.fail_circuit,
            &self.onion_rate,
        ]) {
            rate.prune();
        }
        let now = Instant::now();
        for table in [&self.locked, &self.succeeded, &self.failed_lately] {
            let mut table = lock(table);
            table.retain(|_, until| *until > now);
            table.shrink_to_fit();
        }
        lock(&self.auth_turns).retain(|_, s| Arc::strong_count(s) > 1);
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

/// Whether `tag`'s deadline in `table` is still ahead; an expired one is
/// removed on sight (besides the timer's sweep), so a lock, a success or a
/// failure is forgotten when it ends, not up to a minute later.
fn still_until(table: &mut HashMap<Tag, Instant>, tag: &Tag) -> bool {
    match table.get(tag) {
        Some(until) if *until > Instant::now() => true,
        Some(_) => {
            table.remove(tag);
            false
        }
        None => false,
    }
}

/// Entries a full deadline table drops at once, so that it is walked once
/// per this many new keys rather than on every one.
const EVICT_BATCH: usize = MAX_KEYS / 100;

/// Sets `tag`'s deadline in a table of deadlines capped at [`MAX_KEYS`]:
/// when it is full, expired entries go first, then the [`EVICT_BATCH`]
/// ending soonest (a few more on equal deadlines).
fn insert_until(table: &mut HashMap<Tag, Instant>, tag: Tag, until: Instant) {
    if table.len() >= MAX_KEYS && !table.contains_key(&tag) {
        let now = Instant::now();
        table.retain(|_, t| *t > now);
        if table.len() >= MAX_KEYS {
            let mut ends: Vec<Instant> = table.values().copied().collect();
            let nth = EVICT_BATCH.min(ends.len() - 1);
            let (_, cut, _) = ends.select_nth_unstable(nth);
            let cut = *cut;
            table.retain(|_, t| *t > cut);
        }
    }
    table.insert(tag, until);
}

/// An admitted connection. Dropping it frees its place in its prefix's
/// count and in the list of sessions not yet logged in.
pub(crate) struct Peer {
    admission: Arc<Admission>,
    /// The narrowest of `prefixes`: the network a success is remembered
    /// for, and whose logins in flight are capped.
    prefix: Tag,
    prefixes: Prefixes,
    counted: bool,
    preauth: Option<u64>,
    evicted: Arc<Notify>,
    account: Option<Tag>,
    /// Counted among the onion clients' open connections.
    onion: bool,
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

/// A login's turn to be checked by a provider: a place among its
/// network's [`AUTH_IN_FLIGHT_PER_PREFIX`] and, unless that network logged
/// in with it lately, among its login's [`AUTH_IN_FLIGHT_PER_LOGIN`]. Hold
/// it until the attempt is charged.
pub(crate) struct AuthTurn {
    _places: Vec<Place>,
}

/// One place in one table of turns.
struct Place {
    admission: Arc<Admission>,
    tag: Tag,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Place {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut turns = lock(&self.admission.auth_turns);
        // Clones are made under this lock: a count of one is the table's
        // own, and nobody is waiting. (A wait given up half-way may leave
        // its entry: pruning takes those.)
        if turns
            .get(&self.tag)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            turns.remove(&self.tag);
        }
    }
}

/// Waits for a place among `size` for `tag`.
async fn place(admission: &Arc<Admission>, tag: Tag, size: usize) -> Place {
    let semaphore = lock(&admission.auth_turns)
        .entry(tag)
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(size)))
        .clone();
    let mut place = Place {
        admission: admission.clone(),
        tag,
        permit: None,
    };
    // The semaphore is never closed.
    place.permit = semaphore.acquire_owned().await.ok();
    place
}

impl Peer {
    /// Waits for `login`'s turn to be checked by a provider; see
    /// [`AuthTurn`].
    pub(crate) async fn auth_turn(&self, login: &Login) -> AuthTurn {
        let mut places = vec![place(&self.admission, self.prefix, AUTH_IN_FLIGHT_PER_PREFIX).await];
        let pair = Tag::for_login_on(login, self.prefix);
        if !self.admission.succeeded_lately(pair) {
            let tag = Tag::for_login(login);
            places.push(place(&self.admission, tag, AUTH_IN_FLIGHT_PER_LOGIN).await);
        }
        AuthTurn { _places: places }
    }

    /// Whether a login attempt for `login` may proceed: not while this
    /// prefix is locked, nor while the login is, unless this prefix logged
    /// in with it lately.
    pub(crate) fn login_gate(&self, login: &Login) -> LoginGate {
        let login_locked = self.admission.is_locked(&[Tag::for_login(login)])
            && !self
                .admission
                .succeeded_lately(Tag::for_login_on(login, self.prefix));
        if login_locked || self.admission.is_locked(self.prefixes.all()) {
            LoginGate::Locked
        } else {
            LoginGate::Open
        }
    }

    /// The provider refused `login`'s credentials.
    pub(crate) fn login_failed(&self, login: &Login) {
        self.admission
            .charge_failure(&self.prefixes, Tag::for_login(login));
    }

    /// Whether a login for `login` may go to the provider of `upstream`
    /// as far as the relay-wide failure budget goes: yes while the hour's
    /// budget lasts; past it, only from a network with no failure lately,
    /// or one that logged in with this login lately.
    pub(crate) fn provider_gate(&self, login: &Login, upstream: usize) -> LoginGate {
        let a = &self.admission;
        let spent = a.provider_failures(upstream) >= a.limits.provider_failures_per_hour;
        let failed_lately = self.prefixes.all().iter().any(|t| a.failed_lately(*t))
            || (self.onion && a.failed_lately(Tag::ONION));
        if spent && failed_lately && !a.succeeded_lately(Tag::for_login_on(login, self.prefix)) {
            LoginGate::Locked
        } else {
            LoginGate::Open
        }
    }

    /// The provider of `upstream` refused a login's credentials: one from
    /// its hourly budget.
    pub(crate) fn provider_refused(&self, upstream: usize) {
        self.admission.count_provider_failure(upstream);
    }

    /// The provider failed a login temporarily (its password was not
    /// judged): charged to the prefix only.
    pub(crate) fn login_failed_temporarily(&self) {
        self.admission.charge_prefix(&self.prefixes);
    }

    /// The provider accepted `login`: the session is no longer a
    /// candidate for eviction, and its messages count against the account.
    pub(crate) fn logged_in(&mut self, login: &Login) {
        self.leave_preauth();
        self.account = Some(Tag::for_login(login));
        self.admission
            .remember_success(Tag::for_login_on(login, self.prefix));
    }

    /// Takes one message from the account's hourly allowance; false when
    /// it is spent.
    pub(crate) fn take_message(&self) -> bool {
        match &self.account {
            Some(tag) => self.admission.messages.take(tag),
            None => false,
        }
    }

    /// Opens a mail transaction for this session's account, expecting a
    /// message of `declared` bytes (0: not said): refused while the account
    /// has its most transactions open, or when the relay could not hold a
    /// message that size now. The transaction's message is held within
    /// the [`MessageRoom`] returned.
    pub(crate) fn open_transaction(&self, declared: usize) -> Result<MessageRoom, NoRoom> {
        let Some(account) = self.account else {
            return Err(NoRoom::Transactions);
        };
        let a = &self.admission;
        if declared
            > a.limits
                .buffered_bytes
                .saturating_sub(a.buffered.load(Ordering::Relaxed))
        {
            return Err(NoRoom::Memory);
        }
        {
            let mut open = lock(&a.transactions);
            let count = open.entry(account).or_insert(0);
            if *count >= a.limits.transactions_per_account {
                return Err(NoRoom::Transactions);
            }
            *count += 1;
        }
        Ok(MessageRoom {
            admission: a.clone(),
            account,
            held: 0,
        })
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

/// Why a transaction could not open, or its message could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The relay holds `max_buffered_message_bytes` of messages already.
    Memory,
    /// The account has `max_transactions_per_account` open already.
    Transactions,
}

/// Granularity of the relay-wide message budget.
pub(crate) use crate::config::MESSAGE_ROOM_UNIT as ROOM_UNIT;

/// One open transaction of an account, and the share of the relay-wide
/// message budget its message holds (in whole [`ROOM_UNIT`]s). Dropping
/// it gives both back.
pub(crate) struct MessageRoom {
    admission: Arc<Admission>,
    account: Tag,
    held: usize,
}

impl std::fmt::Debug for MessageRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageRoom({} bytes)", self.held)
    }
}

impl MessageRoom {
    /// Makes room for a message of `len` bytes in all; false when the
    /// relay-wide budget can't cover it (what is held stays held).
    pub(crate) fn cover(&mut self, len: usize) -> bool {
        let wanted = len.div_ceil(ROOM_UNIT).saturating_mul(ROOM_UNIT);
        if wanted <= self.held {
            return true;
        }
        let more = wanted - self.held;
        let limit = self.admission.limits.buffered_bytes;
        let taken = self
            .admission
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&total| total <= limit)
            })
            .is_ok();
        if taken {
            self.held = wanted;
        }
        taken
    }

    /// Gives back what the message held (the transaction stays open).
    pub(crate) fn release(&mut self) {
        self.admission
            .buffered
            .fetch_sub(self.held, Ordering::AcqRel);
        self.held = 0;
    }
}

impl Drop for MessageRoom {
    fn drop(&mut self) {
        self.release();
        let mut open = lock(&self.admission.transactions);
        if let Some(count) = open.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.account);
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.leave_preauth();
        if self.onion {
            self.admission.onion_open.fetch_sub(1, Ordering::AcqRel);
        }
        if self.counted {
            let mut open = lock(&self.admission.open);
            for tag in self.prefixes.all() {
                if let Some(count) = open.get_mut(tag) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        open.remove(tag);
                    }
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
            onion_open: 3,
            onion_rate_per_minute: 5,
            onion_auth_failures_per_circuit: 2,
            per_prefix: 3,
            rate_per_minute: 5,
            auth_failures_per_prefix: 4,
            auth_failures_per_login: 2,
            auth_window: Duration::from_secs(600),
            auth_lockout: Duration::from_secs(600),
            messages_per_hour: 2,
            success_memory: Duration::from_secs(600),
            provider_failures_per_hour: 1000,
            buffered_bytes: 3 * ROOM_UNIT,
            transactions_per_account: 2,
            wider_factor: 4,
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
    fn onion_clients_share_a_count_and_a_rate_and_each_circuit_locks_alone() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            auth_failures_per_login: 100,
            ..limits()
        }));
        let (one, two) = (Tag::random(), Tag::random());
        // Three open at once, whatever the circuit; released on drop.
        let open: Vec<_> = [one, one, two]
            .iter()
            .map(|c| a.admit_onion(*c).unwrap())
            .collect();
        assert_eq!(
            a.admit_onion(Tag::random()).unwrap_err(),
            Refused::Concurrency
        );
        drop(open);
        // Five a minute, all onion clients together (three taken above).
        drop(a.admit_onion(two).unwrap());
        drop(a.admit_onion(two).unwrap());
        assert_eq!(a.admit_onion(Tag::random()).unwrap_err(), Refused::Rate);
        // The onion clients' rate is their own: a network is unaffected.
        drop(a.admit(ip("10.9.0.1")).unwrap());

        // Failed logins: the circuit's allowance (2) runs out, and only
        // that circuit is locked, never every onion client.
        let b = Arc::new(Admission::new(AdmissionLimits {
            auth_failures_per_login: 100,
            rate_per_minute: 100,
            onion_rate_per_minute: 100,
            ..limits()
        }));
        let guesser = b.admit_onion(one).unwrap();
        for i in 0..3 {
            guesser.login_failed(&login(&format!("user{i}@x")));
        }
        assert_eq!(guesser.login_gate(&login("fresh@x")), LoginGate::Locked);
        let same_circuit = b.admit_onion(one).unwrap();
        assert_eq!(
            same_circuit.login_gate(&login("fresh@x")),
            LoginGate::Locked
        );
        let other_circuit = b.admit_onion(two).unwrap();
        assert_eq!(other_circuit.login_gate(&login("fresh@x")), LoginGate::Open);
        assert_eq!(
            b.admit(ip("10.9.0.1"))
                .unwrap()
                .login_gate(&login("fresh@x")),
            LoginGate::Open
        );

        // One circuit cannot spend the onion clients' rate alone: it has a
        // network's (5 a minute here).
        let c = Arc::new(Admission::new(AdmissionLimits {
            onion_rate_per_minute: 100,
            ..limits()
        }));
        let busy = Tag::random();
        for _ in 0..5 {
            drop(c.admit_onion(busy).unwrap());
        }
        assert_eq!(c.admit_onion(busy).unwrap_err(), Refused::Rate);
        drop(c.admit_onion(Tag::random()).unwrap());

        // Past the provider budget, a failure on one circuit holds back a
        // fresh circuit too (a guesser cannot start over with a new one),
        // unless the login succeeded on that circuit lately.
        let d = Arc::new(Admission::new(AdmissionLimits {
            provider_failures_per_hour: 1,
            auth_failures_per_login: 100,
            onion_rate_per_minute: 100,
            ..limits()
        }));
        let mut member = d.admit_onion(Tag::random()).unwrap();
        member.logged_in(&login("member@x"));
        let guesser = d.admit_onion(Tag::random()).unwrap();
        guesser.login_failed(&login("member@x"));
        guesser.provider_refused(0);
        let fresh = d.admit_onion(Tag::random()).unwrap();
        assert_eq!(fresh.provider_gate(&login("other@x"), 0), LoginGate::Locked);
        assert_eq!(member.provider_gate(&login("member@x"), 0), LoginGate::Open);
        assert_eq!(
            d.admit(ip("10.9.0.1"))
                .unwrap()
                .provider_gate(&login("other@x"), 0),
            LoginGate::Open
        );
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
    fn a_network_that_logged_in_lately_is_exempt_from_its_logins_lock() {
        let a = Arc::new(Admission::new(limits()));
        // The owner logs in from home.
        let mut home = a.admit(ip("10.7.0.1")).unwrap();
        home.logged_in(&login("owner@x"));
        // Someone guesses the owner's password from elsewhere until the
        // login is locked.
        let guesser = a.admit(ip("10.8.0.1")).unwrap();
        for _ in 0..3 {
            guesser.login_failed(&login("owner@x"));
        }
        assert_eq!(guesser.login_gate(&login("owner@x")), LoginGate::Locked);
        // Any other network is locked out of that login; home is not
        // (case-insensitively, from any address in its prefix).
        let cafe = a.admit(ip("10.9.0.1")).unwrap();
        assert_eq!(cafe.login_gate(&login("owner@x")), LoginGate::Locked);
        let home2 = a.admit(ip("10.7.0.1")).unwrap();
        assert_eq!(home2.login_gate(&login("OWNER@x")), LoginGate::Open);
        // The exemption is for that login only, and never lifts a lock on
        // the network itself.
        assert_eq!(home2.login_gate(&login("other@x")), LoginGate::Open);
        for i in 0..5 {
            home2.login_failed(&login(&format!("user{i}@x")));
        }
        assert_eq!(home2.login_gate(&login("owner@x")), LoginGate::Locked);
        // Turned off, a success exempts nobody.
        let off = Arc::new(Admission::new(AdmissionLimits {
            success_memory: Duration::ZERO,
            ..limits()
        }));
        let mut home = off.admit(ip("10.7.0.1")).unwrap();
        home.logged_in(&login("owner@x"));
        for _ in 0..3 {
            home.login_failed(&login("owner@x"));
        }
        let home2 = off.admit(ip("10.7.0.1")).unwrap();
        assert_eq!(home2.login_gate(&login("owner@x")), LoginGate::Locked);
        assert!(lock(&off.succeeded).is_empty());
    }

    #[test]
    fn past_the_providers_budget_only_networks_without_recent_failures_go() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            provider_failures_per_hour: 3,
            auth_failures_per_prefix: 100,
            auth_failures_per_login: 100,
            ..limits()
        }));
        let mut home = a.admit(ip("10.7.0.1")).unwrap();
        home.logged_in(&login("owner@x"));
        let stuffer = a.admit(ip("10.8.0.1")).unwrap();
        for i in 0..3 {
            let user = login(&format!("user{i}@x"));
            assert_eq!(stuffer.provider_gate(&user, 0), LoginGate::Open);
            stuffer.login_failed(&user);
            stuffer.provider_refused(0);
        }
        // Spent for provider 0: the network that just failed is refused at
        // once; another provider's budget is its own.
        assert_eq!(
            stuffer.provider_gate(&login("user9@x"), 0),
            LoginGate::Locked
        );
        assert_eq!(stuffer.provider_gate(&login("user9@x"), 1), LoginGate::Open);
        // A network with no failure lately still goes, and so does one
        // that failed but logged in with this login lately.
        let fresh = a.admit(ip("10.9.0.1")).unwrap();
        assert_eq!(fresh.provider_gate(&login("user9@x"), 0), LoginGate::Open);
        home.login_failed(&login("owner@x"));
        assert_eq!(home.provider_gate(&login("owner@x"), 0), LoginGate::Open);
        assert_eq!(home.provider_gate(&login("other@x"), 0), LoginGate::Locked);
    }

    #[test]
    fn past_the_providers_budget_a_fresh_64_of_a_48_that_failed_is_held_back() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            provider_failures_per_hour: 2,
            auth_failures_per_prefix: 100,
            auth_failures_per_login: 100,
            ..limits()
        }));
        for i in 0..2u8 {
            let stuffer = a.admit(v6(1, 0, i)).unwrap();
            let user = login(&format!("user{i}@x"));
            stuffer.login_failed(&user);
            stuffer.provider_refused(0);
        }
        // Spent: a /64 of that /48 never seen before is held back too...
        let rotated = a.admit(v6(1, 7, 7)).unwrap();
        assert_eq!(
            rotated.provider_gate(&login("user9@x"), 0),
            LoginGate::Locked
        );
        // ...while another /48 goes.
        let elsewhere = a.admit(v6(2, 0, 0)).unwrap();
        assert_eq!(
            elsewhere.provider_gate(&login("user9@x"), 0),
            LoginGate::Open
        );
    }

    #[test]
    fn a_64_past_its_own_rate_does_not_spend_its_48s() {
        // rate_per_minute 5 for a /64, 80 for its /48 (factor 4 twice).
        let a = Arc::new(Admission::new(AdmissionLimits {
            per_prefix: 1000,
            ..limits()
        }));
        let mut admitted = Vec::new();
        for _ in 0..5 {
            admitted.push(a.admit(v6(1, 0, 0)).unwrap());
        }
        for _ in 0..200 {
            assert_eq!(a.admit(v6(1, 0, 0)).unwrap_err(), Refused::Rate);
        }
        // The hammering spent only its own /64: 12 other /64s of the
        // same /48 still get in (3 more /56s of 4 /64s: 60 connections;
        // 20 a /56).
        for n56 in 1..4u8 {
            for n64 in 0..4u8 {
                for _ in 0..5 {
                    admitted.push(a.admit(v6(1, n56, n64)).expect("a neighbour"));
                }
            }
        }
    }

    #[test]
    fn a_full_deadline_table_makes_room_for_many_at_once_soonest_first() {
        let now = Instant::now();
        let mut table = HashMap::new();
        for i in 0..MAX_KEYS as u64 {
            let tag = Tag::keyed(b"test\0", &i.to_le_bytes());
            table.insert(tag, now + Duration::from_secs(100 + i));
        }
        let newcomer = Tag::keyed(b"test\0", b"new");
        insert_until(&mut table, newcomer, now + Duration::from_secs(50));
        assert_eq!(table.len(), MAX_KEYS - EVICT_BATCH);
        assert!(table.contains_key(&newcomer));
        // The soonest-ending went; the latest stayed.
        let kept = |i: u64| table.contains_key(&Tag::keyed(b"test\0", &i.to_le_bytes()));
        assert!(!kept(0) && !kept(EVICT_BATCH as u64));
        assert!(kept(EVICT_BATCH as u64 + 1) && kept(MAX_KEYS as u64 - 1));
        // The next newcomers find room without another walk.
        for i in 0..EVICT_BATCH as u64 {
            insert_until(&mut table, Tag::keyed(b"more\0", &i.to_le_bytes()), now);
        }
        assert_eq!(table.len(), MAX_KEYS);
    }

    #[test]
    fn success_memory_ends() {
        let a = Arc::new(Admission::new(AdmissionLimits {
            success_memory: Duration::from_millis(100),
            ..limits()
        }));
        let mut home = a.admit(ip("10.7.0.1")).unwrap();
        home.logged_in(&login("owner@x"));
        let guesser = a.admit(ip("10.8.0.1")).unwrap();
        for _ in 0..3 {
            guesser.login_failed(&login("owner@x"));
        }
        let pair = Tag::for_login_on(&login("owner@x"), Tag::for_prefix(ip("10.7.0.1")));
        assert!(a.succeeded_lately(pair));
        std::thread::sleep(Duration::from_millis(150));
        assert!(!a.succeeded_lately(pair));
        assert!(
            lock(&a.succeeded).is_empty(),
            "forgotten when seen expired, before the timer's sweep"
        );
        assert_eq!(home.login_gate(&login("owner@x")), LoginGate::Locked);
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
        assert!(
            lock(&a.locked).is_empty(),
            "an expired lock is dropped when seen, before the timer's sweep"
        );
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
            for i in 0..AUTH_IN_FLIGHT_PER_PREFIX {
                turns.push(p.auth_turn(&login(&format!("u{i}@x"))).await);
            }
            let quick = Duration::from_millis(50);
            let fresh = login("fresh@x");
            assert!(
                tokio::time::timeout(quick, p.auth_turn(&fresh))
                    .await
                    .is_err()
            );
            // Another prefix is not held up.
            let other = tokio::time::timeout(quick, q.auth_turn(&fresh)).await;
            assert!(other.is_ok());
            drop(other);
            turns.pop();
            assert!(
                tokio::time::timeout(quick, p.auth_turn(&fresh))
                    .await
                    .is_ok()
            );
            drop(turns);
        });
        assert!(lock(&a.auth_turns).is_empty());
    }

    #[test]
    fn logins_in_flight_per_login_are_capped_across_networks_but_not_for_its_owner() {
        let a = Arc::new(Admission::new(limits()));
        let mut home = a.admit(ip("10.7.0.1")).unwrap();
        home.logged_in(&login("owner@x"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let quick = Duration::from_millis(50);
        rt.block_on(async {
            // Guesses at one login from many networks: four in flight at
            // most, whatever the number of networks.
            let guessers: Vec<_> = (0..=AUTH_IN_FLIGHT_PER_LOGIN)
                .map(|i| a.admit(ip(&format!("10.8.0.{i}"))).unwrap())
                .collect();
            let mut turns = Vec::new();
            for g in &guessers[..AUTH_IN_FLIGHT_PER_LOGIN] {
                turns.push(g.auth_turn(&login("owner@x")).await);
            }
            let upper = login("OWNER@x");
            let next = guessers[AUTH_IN_FLIGHT_PER_LOGIN].auth_turn(&upper);
            let next = tokio::time::timeout(quick, next);
            assert!(next.await.is_err(), "one guess too many went in flight");
            // The owner's network is not queued behind them.
            let own = tokio::time::timeout(quick, home.auth_turn(&login("owner@x"))).await;
            assert!(own.is_ok());
            // A given-up wait leaves nothing behind once pruned.
            drop(own);
            drop(turns);
        });
        a.prune();
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
        assert_eq!(a.connect_rate[0].limiter.len(), 1000);
        // 60,000 a minute: a millisecond refills one, so all are back at
        // full allowance well within this sleep.
        std::thread::sleep(Duration::from_millis(20));
        a.prune();
        assert_eq!(a.connect_rate[0].limiter.len(), 0);

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

    #[test]
    fn a_full_table_keeps_the_keys_it_holds_apart_from_the_overflow() {
        // One allowance of 2 per hour. An honest key uses one unit; then a
        // flood of new keys fills the table and spends the overflow bucket.
        let r = Rate::new(2, Duration::from_secs(3600));
        let honest = Tag::keyed(b"t\0", b"honest");
        assert!(r.take(&honest));
        for i in 0..(MAX_KEYS as u32 + 10) {
            let _ = r.take(&Tag::keyed(b"t\0", &i.to_be_bytes()));
        }
        assert!(!r.take(&Tag::keyed(b"t\0", b"late")), "overflow spent");
        // The honest key still has its own second unit, and only that.
        assert!(r.take(&honest), "a held key fell into the overflow bucket");
        assert!(!r.take(&honest));
    }

    #[test]
    fn a_full_table_makes_room_from_keys_back_at_full_allowance() {
        // 60,000 a minute: every key is back at full allowance within
        // milliseconds, so a full table frees room for a newcomer at once.
        let r = Rate::new(60_000, Duration::from_secs(60));
        for i in 0..MAX_KEYS as u32 {
            assert!(r.take(&Tag::keyed(b"t\0", &i.to_be_bytes())));
        }
        std::thread::sleep(Duration::from_millis(20));
        let newcomer = Tag::keyed(b"t\0", b"newcomer");
        assert!(r.take(&newcomer));
        assert!(r.keys.lock().contains_key(&newcomer), "it got its own key");
        assert!(r.limiter.len() < MAX_KEYS);
    }

    #[test]
    fn transactions_per_account_and_the_message_budget_are_shared_and_given_back() {
        let a = Arc::new(Admission::new(limits()));
        let mut one = a.admit(ip("192.0.2.1")).unwrap();
        let mut two = a.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(
            one.open_transaction(0).unwrap_err(),
            NoRoom::Transactions,
            "no account before login"
        );
        one.logged_in(&login("alice@example.org"));
        two.logged_in(&login("alice@example.org"));
        let mut first = one.open_transaction(0).unwrap();
        let mut second = two.open_transaction(0).unwrap();
        assert_eq!(
            one.open_transaction(0).unwrap_err(),
            NoRoom::Transactions,
            "the account's cap holds across networks"
        );
        // The budget counts whole units, from all transactions together.
        assert!(first.cover(1));
        assert!(first.cover(ROOM_UNIT));
        assert!(second.cover(2 * ROOM_UNIT));
        assert!(!first.cover(ROOM_UNIT + 1), "the fourth unit is over");
        assert!(first.cover(ROOM_UNIT), "what is held stays held");
        drop(second);
        assert!(first.cover(3 * ROOM_UNIT), "given back on drop");
        let mut other = a.admit(ip("203.0.113.1")).unwrap();
        other.logged_in(&login("bob@example.org"));
        assert_eq!(
            other.open_transaction(1).unwrap_err(),
            NoRoom::Memory,
            "a declared size beyond what is left"
        );
        first.release();
        assert!(other.open_transaction(3 * ROOM_UNIT).is_ok());
        drop(first);
        assert!(
            lock(&a.transactions)
                .get(&Tag::for_login(&login("alice@example.org")))
                .is_none()
        );
        assert_eq!(a.buffered.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ordinary_messages_hold_little_of_the_default_budget() {
        // 500 messages of 4 KiB in progress at once, from 500 accounts,
        // fit the default 128 MiB: each holds one 64 KiB unit, not a MiB.
        let a = Arc::new(Admission::new(AdmissionLimits {
            per_prefix: 1000,
            rate_per_minute: 1000,
            buffered_bytes: 128 << 20,
            ..limits()
        }));
        let mut open = Vec::new();
        for n in 0..500u32 {
            let mut peer = a
                .admit(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
                .unwrap();
            peer.logged_in(&login(&format!("user{n}@example.org")));
            let mut room = peer.open_transaction(0).unwrap();
            assert!(room.cover(4096), "message {n} found no room");
            open.push((peer, room));
        }
        assert_eq!(a.buffered.load(Ordering::Relaxed), 500 * (64 << 10));
        drop(open);
        assert_eq!(a.buffered.load(Ordering::Relaxed), 0);
    }

    /// An address in 2001:db8:`n48`::/48, in its /56 number `n56`, /64
    /// number `n64`.
    fn v6(n48: u16, n56: u8, n64: u8) -> IpAddr {
        let seg3 = (u16::from(n56) << 8) | u16::from(n64);
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, n48, seg3, 0, 0, 0, 1,
        ))
    }

    #[test]
    fn ipv6_prefixes_are_the_64_56_and_48() {
        let a = Prefixes::of(v6(1, 2, 3));
        let same64 = Prefixes::of(ip("2001:db8:1:203:ffff::9"));
        let other64 = Prefixes::of(v6(1, 2, 4));
        let other56 = Prefixes::of(v6(1, 3, 3));
        let other48 = Prefixes::of(v6(2, 2, 3));
        assert_eq!(a.all(), same64.all());
        assert_eq!((a.tags[1], a.tags[2]), (other64.tags[1], other64.tags[2]));
        assert_ne!(a.tags[0], other64.tags[0]);
        assert_eq!(a.tags[2], other56.tags[2]);
        assert_ne!(a.tags[1], other56.tags[1]);
        assert_ne!(a.tags[2], other48.tags[2]);
        assert_eq!(Prefixes::of(ip("10.0.0.1")).all().len(), 1);
        assert_eq!(a.widest(), a.tags[2]);
    }

    #[test]
    fn one_ipv6_48_is_capped_whatever_its_64s_but_not_another_48() {
        // per_prefix 3 and rate 5 a minute per /64; factor 4: a /56 gets
        // 12 and 20, a /48 48 and 80.
        let a = Arc::new(Admission::new(limits()));
        let mut held = Vec::new();
        for n in 0..48u8 {
            held.push(a.admit(v6(1, n, n)).expect("within the /48's 48"));
        }
        assert_eq!(a.admit(v6(1, 200, 1)).unwrap_err(), Refused::Concurrency);
        assert!(a.admit(v6(2, 0, 0)).is_ok(), "another /48 is its own");
        assert!(a.admit(ip("192.0.2.1")).is_ok());
        // A /56 on its own: 12 at once.
        let b = Arc::new(Admission::new(limits()));
        let mut in56 = Vec::new();
        for n in 0..12u8 {
            in56.push(b.admit(v6(5, 7, n)).expect("within the /56's 12"));
        }
        assert_eq!(b.admit(v6(5, 7, 99)).unwrap_err(), Refused::Concurrency);
        assert!(b.admit(v6(5, 8, 99)).is_ok(), "the next /56 of the /48");
        // Rate: the /48 had 80, 48 are spent; 32 more, then refused, and
        // the refused ones leave no key in the /64 table.
        drop(held);
        for n in 0..32u8 {
            assert!(a.admit(v6(1, 100 + n, 0)).is_ok());
        }
        // (Few enough to run well inside the 0.75 s in which the /48
        // earns its next unit, even on a loaded machine.)
        let keys_before = a.connect_rate[0].limiter.len();
        for n in 0..=255u8 {
            for m in 0..2u8 {
                assert_eq!(a.admit(v6(1, n, m)).unwrap_err(), Refused::Rate);
            }
        }
        assert_eq!(a.connect_rate[0].limiter.len(), keys_before);
    }

    #[test]
    fn failures_from_many_64s_lock_their_48_and_only_it() {
        // 4 failures per /64; a /56 16, a /48 64: the 65th locks.
        let a = Arc::new(Admission::new(limits()));
        let someone = login("someone@x");
        for n in 0..65u8 {
            let p = a.admit(v6(3, n, 0)).unwrap();
            assert_eq!(p.login_gate(&someone), LoginGate::Open, "failure {n}");
            p.login_failed_temporarily();
        }
        let fresh = a.admit(v6(3, 250, 250)).unwrap();
        assert_eq!(fresh.login_gate(&someone), LoginGate::Locked);
        let elsewhere = a.admit(v6(4, 0, 0)).unwrap();
        assert_eq!(elsewhere.login_gate(&someone), LoginGate::Open);
    }

    #[test]
    fn refusals_are_explained_a_few_times_a_minute_per_network() {
        let a = Admission::new(limits());
        for _ in 0..REFUSALS_TOLD_PER_MINUTE {
            assert!(a.explain_refusal(v6(1, 1, 1)));
        }
        assert!(!a.explain_refusal(v6(1, 9, 9)), "the same /48");
        assert!(a.explain_refusal(v6(2, 1, 1)));
        assert!(a.explain_refusal(ip("192.0.2.7")));
    }
}
