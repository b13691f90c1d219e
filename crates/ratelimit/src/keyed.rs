//! Keyed limiting: one limiter state per user, IP address or API key, in bounded memory.
//!
//! Memory is bounded twice: by a count of keys and by an estimate of their bytes. Beside the map,
//! the limiter keeps a min-heap of every tracked key by the earliest time its state can be fully
//! replenished (*due*): a lower bound, since a key only becomes due later by being used. When a
//! new key does not fit, the check takes the due keys off the top of the heap, at most
//! [`KeyedOptions::RECLAIM_SAMPLE`] of them: a key that has replenished is forgotten (a new key
//! starts in the same state, so no decision under the quota in force changes), any other goes
//! back with its due time brought up to date. The key that can have replenished earliest is
//! examined first (with due times up to date, the one closest to full), an active key is never
//! forgotten (an abuser cannot reset its own limit by flooding the map), and a key an abuser
//! drained is reclaimable the moment it has replenished.
//!
//! A key enters the heap due at once, so its first examination sees it after whatever burst
//! created it, and every check that tracks a new key also examines up to
//! [`SWEEP_PER_INSERT`] due keys: the sweep is spread over insertions, and the heap's top stays
//! close to the truth. No request thread ever makes a pass over all keys.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_common::{Clock, SystemClock};

use crate::algorithm::{Algorithm, AlgorithmConfig, ConfigCell};
use crate::store::Shards;
use crate::{Decision, Error, Gcra, Quota};

/// Due keys examined by each check that tracks a new key while the limiter has room.
const SWEEP_PER_INSERT: usize = 2;

/// Bytes charged per tracked key besides its key and state: the eviction heap's record of it
/// (due time, hash and charge, 24 bytes) and the hash table's control byte and spare capacity
/// (8 bytes, rounded up).
const ENTRY_OVERHEAD: usize = 32;

/// Bytes charged per per-key quota besides its key and the quota: the table's control byte and
/// spare capacity, rounded up.
const OVERRIDE_OVERHEAD: usize = 8;

/// How much memory a keyed limiter may use: a cap on tracked keys, on their estimated bytes, and
/// on per-key quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedOptions {
    max_keys: usize,
    max_bytes: usize,
    max_overrides: usize,
}

impl KeyedOptions {
    /// Default cap on tracked keys: 1,000,000.
    pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
    /// Default cap on the estimated bytes of tracked keys and per-key quotas: 256 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
    /// Default cap on per-key quotas: 100,000.
    pub const DEFAULT_MAX_OVERRIDES: usize = 100_000;
    /// The most tracked keys one check on a new key examines when the limiter is full.
    ///
    /// Bounds the work a request thread does for eviction. The keys examined are those due
    /// earliest (closest to fully replenished); each one found active is given its up-to-date
    /// due time, so the next check looks further.
    pub const RECLAIM_SAMPLE: usize = 32;

    /// Tracks at most `max_keys` keys (at least 1).
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            ..self
        }
    }

    /// Charges tracked keys and per-key quotas at most `max_bytes` bytes in total (see
    /// [`KeyedRateLimiter::bytes`] for what a key costs).
    ///
    /// Per-key quotas may take at most half of it ([`KeyedOptions::max_override_bytes`]): the
    /// other half ([`KeyedOptions::max_key_bytes`]) is always left for keys, so quotas can
    /// never hold the bytes every new key would need.
    #[must_use]
    pub fn max_bytes(self, max_bytes: usize) -> Self {
        Self { max_bytes, ..self }
    }

    /// The most bytes per-key quotas may be charged: half of
    /// [`max_bytes`](KeyedOptions::max_bytes), rounded down.
    #[must_use]
    pub fn max_override_bytes(self) -> usize {
        self.max_bytes / 2
    }

    /// The bytes always left for tracked keys, whatever per-key quotas hold:
    /// [`max_bytes`](KeyedOptions::max_bytes) less
    /// [`max_override_bytes`](KeyedOptions::max_override_bytes). A key charged more than this
    /// is [`Error::TooLarge`]: it could never be sure to fit.
    #[must_use]
    pub fn max_key_bytes(self) -> usize {
        self.max_bytes - self.max_override_bytes()
    }

    /// Keeps at most `max_overrides` per-key quotas.
    #[must_use]
    pub fn max_overrides(self, max_overrides: usize) -> Self {
        Self {
            max_overrides,
            ..self
        }
    }
}

impl Default for KeyedOptions {
    fn default() -> Self {
        Self {
            max_keys: Self::DEFAULT_MAX_KEYS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_overrides: Self::DEFAULT_MAX_OVERRIDES,
        }
    }
}

/// A per-key quota set at run time, with its derived configuration and what it was charged.
#[derive(Clone, Copy, Debug)]
struct Override<A: Algorithm> {
    quota: Quota,
    config: A::Config,
    bytes: usize,
}

/// The eviction heap's record of a tracked key: the earliest clock reading at which its state
/// can be fully replenished, where the map files it, and what it was charged. Ordered by `due`
/// first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tracked {
    due: u64,
    hash: u64,
    bytes: usize,
}

/// What a key costs in the map: its slot in the entry plus the bytes its `Hash` writes.
///
/// The bytes hashed are the key's content whatever form it is checked in: a `String` key
/// checked as `&str` or as `&String` (as the HTTP layer does) writes its text either way, where
/// the size of the borrowed form would see only the `String`'s 24-byte handle. An inline key
/// such as `u64` is counted twice, erring high.
pub(crate) fn key_bytes<K, Q: Hash + ?Sized>(key: &Q) -> usize {
    let mut counter = ByteCounter(0);
    key.hash(&mut counter);
    size_of::<K>().saturating_add(counter.0)
}

/// Refuses a configuration under which no key could ever be tracked: what any key is charged
/// before the bytes its `Hash` writes (its state, a log's entries included) is over the bytes
/// left for keys ([`KeyedOptions::max_key_bytes`]). Every check of a new key would otherwise be
/// [`Error::TooLarge`], which reads as the key's fault (the HTTP layer's `400`) when the quota
/// is.
fn state_fits<K, A: Algorithm>(options: &KeyedOptions, config: &A::Config) -> Result<(), Error> {
    let bytes = size_of::<K>().saturating_add(state_charge::<A>(config));
    if bytes > options.max_key_bytes() {
        return Err(Error::TooLarge {
            what: "state of one key under the quota (bytes)",
            value: bytes as u128,
            max: options.max_key_bytes() as u128,
        });
    }
    Ok(())
}

/// What a tracked key is charged besides its key: its state, the most heap memory that state
/// may hold under `config`, and the map's and eviction heap's share.
fn state_charge<A: Algorithm>(config: &A::Config) -> usize {
    size_of::<A>()
        .saturating_add(A::heap_bytes(config))
        .saturating_add(ENTRY_OVERHEAD)
}

/// A `Hasher` that only counts the bytes written to it.
struct ByteCounter(usize);

impl Hasher for ByteCounter {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// One [`Algorithm`] state per key, in a sharded concurrent map, with per-key quotas and a hard
/// cap on memory.
///
/// - **Quotas.** Every key uses the default quota unless [`KeyedRateLimiter::set_key_quota`]
///   gave it its own. Both can change at run time ([`KeyedRateLimiter::set_quota`]); states are
///   kept, not reset.
/// - **Bounded memory.** At most `max_keys` keys and `max_bytes` estimated bytes are tracked
///   (see [`KeyedOptions`] and [`KeyedRateLimiter::bytes`]). A key whose state has fully
///   replenished is *idle*: forgetting it changes no decision under the quota in force, since a
///   new key starts in the same state (a later quota change may tell them apart: a kept state
///   keeps what it held, such as a count a longer window takes in). When a new key does not
///   fit, the check examines at most [`KeyedOptions::RECLAIM_SAMPLE`] tracked keys, those that
///   can have replenished earliest first, and forgets the idle ones among them. If none of them was idle, the new key gets
///   [`Error::TooManyKeys`] rather than the state of an active key being forgotten (that would
///   let a client reset its own limit by flooding the map); known keys are unaffected. Per-key
///   quotas take at most half of `max_bytes`, so such a refusal always ends once enough
///   tracked keys replenish. Checks
///   that track a new key also forget a few idle keys on the way, and
///   [`KeyedRateLimiter::sweep`] forgets every idle key at once.
/// - **Quota changes and eviction.** A key's place in the eviction order is a lower bound on
///   when it replenishes under the quota it was last examined with; after a quota change makes
///   keys replenish sooner, they are found idle when that bound comes due, not earlier.
/// - **Hashing.** The map uses infra-common's randomly keyed [`RandomState`](infra_common::RandomState),
///   so clients cannot choose keys that collide.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = KeyedRateLimiter::<String, Gcra, _>::with_clock(Quota::per_second(2)?, clock.clone())?;
/// limiter.set_key_quota("premium", Quota::per_second(100)?)?;
/// assert!(limiter.check("alice")?.is_allowed());
/// assert!(limiter.check("alice")?.is_allowed());
/// assert!(limiter.check("alice")?.is_denied());
/// assert!(limiter.check_n("premium", 50)?.is_allowed());
/// assert_eq!(limiter.len(), 2);
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(limiter.sweep(), 2); // both fully refilled: forgotten
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub struct KeyedRateLimiter<K, A: Algorithm = Gcra, C: Clock = SystemClock> {
    states: Shards<K, A>,
    tracked: AtomicUsize,
    /// Estimated bytes of tracked keys and overrides, charged against `max_bytes`.
    bytes: AtomicUsize,
    /// The overrides' part of `bytes`, charged against `max_override_bytes`.
    override_bytes: AtomicUsize,
    /// Every tracked key once, earliest due first. A key enters it after its insertion into
    /// `states` and leaves it only when it is forgotten, so the two agree except for a key in
    /// between.
    due: Mutex<BinaryHeap<Reverse<Tracked>>>,
    overrides: Shards<K, Override<A>>,
    override_count: AtomicUsize,
    default: ConfigCell<A>,
    options: KeyedOptions,
    clock: C,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::KeyedCounters,
}

impl<K: Hash + Eq + Clone + Send + Sync> KeyedRateLimiter<K> {
    /// A GCRA keyed limiter on the system clock with default options.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn new(quota: Quota) -> Result<Self, Error> {
        Self::with_options(quota, SystemClock::new(), KeyedOptions::default())
    }
}

impl<K, A, C> KeyedRateLimiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + Sync,
    A: Algorithm,
    C: Clock,
{
    /// A keyed limiter on `clock` with default options.
    ///
    /// # Errors
    ///
    /// As [`KeyedRateLimiter::with_options`].
    pub fn with_clock(quota: Quota, clock: C) -> Result<Self, Error> {
        Self::with_options(quota, clock, KeyedOptions::default())
    }

    /// A keyed limiter on `clock` with `options`.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota; [`Error::TooLarge`] when one key's
    /// state under it is larger than [`KeyedOptions::max_key_bytes`] (a sliding-window log's
    /// entries), so that no key could be sure to be tracked.
    pub fn with_options(quota: Quota, clock: C, options: KeyedOptions) -> Result<Self, Error> {
        state_fits::<K, A>(&options, &A::Config::from_quota(&quota)?)?;
        Ok(Self {
            states: Shards::new(),
            tracked: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            override_bytes: AtomicUsize::new(0),
            due: Mutex::new(BinaryHeap::new()),
            overrides: Shards::new(),
            override_count: AtomicUsize::new(0),
            default: ConfigCell::new(&quota)?,
            options,
            clock,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::KeyedCounters::unnamed(),
        })
    }

    /// Names this limiter in its metrics (the `limiter` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    /// Keys never appear in metrics.
    ///
    /// ```
    /// use infra_ratelimit::{KeyedRateLimiter, Quota};
    ///
    /// let limiter = KeyedRateLimiter::<String>::new(Quota::per_second(5)?)?
    ///     .with_metrics_name("login");
    /// assert!(limiter.check("alice")?.is_allowed());
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::KeyedCounters::new(name.into());
        self
    }

    #[inline]
    fn config_for<Q>(&self, key: &Q) -> A::Config
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The override map is only consulted when it holds something: a limiter without
        // per-key quotas pays one relaxed load for the feature.
        if self.override_count.load(Ordering::Relaxed) > 0
            && let Some(config) = self.overrides.with(key, |o| o.config)
        {
            return config;
        }
        self.default.config()
    }

    /// The most cells one call for `key` can be granted, under its quota.
    #[cfg(feature = "tokio")]
    pub(crate) fn capacity_for<Q>(&self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.config_for(key).capacity()
    }

    /// Decides on one request for `key`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyKeys`] when `key` is new and does not fit (see the type's docs);
    /// [`Error::TooLarge`] when `key` is new and its charge alone exceeds
    /// [`KeyedOptions::max_key_bytes`], so it could never be sure to fit.
    #[inline]
    pub fn check<Q>(&self, key: &Q) -> Result<Decision, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        self.check_n(key, 1)
    }

    /// Decides on `n` cells for `key`: all admitted, or none.
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] when `n` exceeds the key's capacity;
    /// [`Error::TooManyKeys`] and [`Error::TooLarge`] as for [`KeyedRateLimiter::check`].
    #[inline]
    pub fn check_n<Q>(&self, key: &Q, n: u32) -> Result<Decision, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        self.decide(key, n).map(|(_, decision)| decision)
    }

    /// Decides on one request for `key`, returning a denial as an error: `limiter.try_check(key)?`
    /// ends the caller's function when the request is denied (or the key cannot be tracked).
    ///
    /// ```
    /// use infra_ratelimit::{Error, KeyedRateLimiter, Quota};
    ///
    /// fn handle(limiter: &KeyedRateLimiter<String>, user: &str) -> Result<(), Error> {
    ///     limiter.try_check(user)?;
    ///     // ... serve the request ...
    ///     Ok(())
    /// }
    ///
    /// let limiter = KeyedRateLimiter::new(Quota::per_minute(1)?)?;
    /// handle(&limiter, "alice")?;
    /// handle(&limiter, "bob")?;
    /// match handle(&limiter, "alice") {
    ///     Err(Error::RateLimited(denied)) => assert!(denied.retry_after().as_secs() > 50),
    ///     other => panic!("alice is over her limit: {other:?}"),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::RateLimited`] with the [`NotUntil`](crate::NotUntil) when the request is
    /// denied; [`Error::TooManyKeys`] as for [`KeyedRateLimiter::check`].
    #[inline]
    pub fn try_check<Q>(&self, key: &Q) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        let (now, decision) = self.decide(key, 1)?;
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(Error::RateLimited(crate::NotUntil::new(decision, now)))
        }
    }

    /// Decides on `n` cells for `key` and counts the decision; returns the clock reading it was
    /// made at with it.
    #[inline]
    fn decide<Q>(&self, key: &Q, n: u32) -> Result<(u64, Decision), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        let config = self.config_for(key);
        Error::within_capacity(n, config.capacity())?;
        // The clock is read while the key's entry is being fetched (see `Shards::with_meanwhile`).
        let (now, found) = self.states.with_meanwhile(
            key,
            || self.clock.now_nanos(),
            |state, &now| state.check_n(&config, now, n),
        );
        if let Some(decision) = found {
            #[cfg(feature = "metrics")]
            self.metrics.decisions.record(&decision);
            return Ok((now, decision));
        }
        if n == 0 {
            // A new key is at full capacity; asking costs nothing, so it is not tracked.
            let decision = A::new(&config, now).check_n(&config, now, 0);
            #[cfg(feature = "metrics")]
            self.metrics.decisions.record(&decision);
            return Ok((now, decision));
        }
        let bytes = key_bytes::<K, Q>(key).saturating_add(state_charge::<A>(&config));
        let max_key_bytes = self.options.max_key_bytes();
        if bytes > max_key_bytes {
            // Forgetting every key might not make room while per-key quotas hold their share:
            // a denial with a time to retry would have an obedient client retry forever.
            return Err(Error::TooLarge {
                what: "key with its state (bytes)",
                value: bytes as u128,
                max: max_key_bytes as u128,
            });
        }
        // Reserve room before taking the shard lock: reclaiming takes shard locks itself.
        let had_room = self.reserve(bytes);
        if !had_room {
            self.reclaim(now, KeyedOptions::RECLAIM_SAMPLE);
            if !self.reserve(bytes) {
                #[cfg(feature = "metrics")]
                self.metrics.too_many_keys.increment(1);
                return Err(Error::TooManyKeys {
                    max_keys: self.options.max_keys,
                    retry_after: self.next_due_in(now),
                });
            }
        }
        let hash = self.states.hash_of(key);
        let (decision, inserted) = self.states.with_or_insert(
            key.to_owned(),
            || A::new(&config, now),
            |state, inserted| (state.check_n(&config, now, n), inserted),
        );
        if inserted {
            if had_room {
                // The incremental sweep, done before this key joins the heap so that its own
                // record (due now) is not among the keys examined.
                self.reclaim(now, SWEEP_PER_INSERT);
            }
            self.due.lock().push(Reverse(Tracked {
                due: now,
                hash,
                bytes,
            }));
        } else {
            // Another thread inserted the key first; its reservation counts, ours goes back.
            self.release(bytes);
        }
        #[cfg(feature = "metrics")]
        self.metrics.decisions.record(&decision);
        Ok((now, decision))
    }

    /// Takes one key slot and `bytes` bytes, or nothing.
    fn reserve(&self, bytes: usize) -> bool {
        let max_keys = self.options.max_keys;
        if self
            .tracked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tracked| {
                (tracked < max_keys).then_some(tracked + 1)
            })
            .is_err()
        {
            return false;
        }
        if self.charge(bytes) {
            return true;
        }
        self.tracked.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Adds `bytes` to the charged bytes if they stay within `max_bytes`.
    fn charge(&self, bytes: usize) -> bool {
        let max_bytes = self.options.max_bytes;
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= max_bytes)
            })
            .is_ok()
    }

    /// How long until the tracked key due soonest can have replenished: the earliest a new key
    /// may find room. Per-key quotas never hold the bytes a key needs, so a refusal always ends
    /// when tracked keys replenish; the heap is empty at a refusal only while racing checks
    /// hold the room for keys they are inserting or examining, and then this is one second.
    ///
    /// Never zero. Keys already due that the bounded sample did not reach may be idle, and the
    /// next check examines them: that is [`Decision::RETRY_SOON`], not a retry at once.
    fn next_due_in(&self, now: u64) -> Duration {
        self.due
            .lock()
            .peek()
            .map_or(Duration::from_secs(1), |Reverse(soonest)| {
                match soonest.due.checked_sub(now).filter(|&wait| wait > 0) {
                    Some(wait) => Duration::from_nanos(wait),
                    None => Decision::RETRY_SOON,
                }
            })
    }

    fn release(&self, bytes: usize) {
        self.tracked.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Examines at most `budget` keys that are due at `now`, earliest first: forgets the idle
    /// ones and puts the others back with their due time brought up to date. Returns how many it
    /// forgot.
    fn reclaim(&self, now: u64, budget: usize) -> usize {
        let mut forgotten = 0;
        for _ in 0..budget {
            // The heap's lock is never held while a shard lock is taken, so checks that insert
            // (shard, then heap) and reclaiming (heap, then shard) cannot deadlock.
            let entry = {
                let mut due = self.due.lock();
                match due.peek() {
                    Some(Reverse(top)) if top.due <= now => due.pop().map(|Reverse(e)| e),
                    _ => None,
                }
            };
            let Some(entry) = entry else {
                break;
            };
            // Decided under the shard's exclusive lock: a check that consumes from the key
            // either comes first (the key is no longer idle and stays) or finds it gone and
            // starts it afresh, which is the same state.
            let outcome = self.states.evict_hashed(entry.hash, |key, state| {
                let config = self.config_for(key);
                if state.is_idle(&config, now) {
                    return None;
                }
                // At least one nanosecond later, so a pass over due keys always ends.
                let full_in = duration_to_nanos(state.check_n(&config, now, 0).reset_after());
                Some(now.saturating_add(full_in.max(1)))
            });
            match outcome {
                Some(Some(due)) => self.due.lock().push(Reverse(Tracked { due, ..entry })),
                Some(None) => {
                    forgotten += 1;
                    self.release(entry.bytes);
                }
                // Only after a 64-bit hash collision, when the other key's record already took
                // this key: this record's room comes back all the same.
                None => self.release(entry.bytes),
            }
        }
        forgotten
    }

    /// Forgets every idle key (one whose state has fully recovered) and returns how many.
    ///
    /// Examines every key that may be idle (see the type's docs on quota changes), each under
    /// its shard's lock; checks proceed meanwhile. New keys reclaim idle ones by themselves, a few at a
    /// time, so calling this is only needed to give memory back at once.
    pub fn sweep(&self) -> usize {
        let tracked = self.due.lock().len();
        self.reclaim(self.clock.now_nanos(), tracked)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.options.max_keys
    }

    /// The estimated bytes of tracked keys and per-key quotas, charged against
    /// [`KeyedOptions::max_bytes`].
    ///
    /// A tracked key is charged, when first tracked, `size_of::<K>()` plus the bytes its `Hash`
    /// writes (a string's bytes and one more, whether checked as `&str` or `&String`), the
    /// algorithm's state and the most heap memory that state may
    /// hold under the key's quota ([`Algorithm::heap_bytes`]: a sliding-window log's entries),
    /// plus 32 bytes for the map and the eviction heap. A per-key quota is charged its key the
    /// same way, its stored quota and 8 bytes; per-key quotas together are charged at most
    /// [`KeyedOptions::max_override_bytes`], half of the cap.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_ratelimit::{Gcra, KeyedOptions, KeyedRateLimiter, Quota};
    ///
    /// let options = KeyedOptions::default().max_bytes(200);
    /// let limiter =
    ///     KeyedRateLimiter::<String, Gcra, _>::with_options(Quota::per_second(2)?, ManualClock::new(), options)?;
    /// assert!(limiter.check("a short key")?.is_allowed());
    /// assert!(limiter.bytes() > 32 + 11);
    /// let long_key = "k".repeat(1_000);
    /// assert!(limiter.check(long_key.as_str()).is_err()); // does not fit in 200 bytes
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The default quota.
    pub fn quota(&self) -> Quota {
        self.default.quota()
    }

    /// Replaces the default quota for every key without its own; states are kept.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota, or one key's state under it would be
    /// larger than [`KeyedOptions::max_key_bytes`] ([`Error::TooLarge`]); the old one stays in
    /// force.
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        state_fits::<K, A>(&self.options, &A::Config::from_quota(&quota)?)?;
        self.default.store(&quota)
    }

    /// Gives `key` its own quota (replacing any earlier one); its state is kept.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota, or one key's state under it would be
    /// larger than [`KeyedOptions::max_key_bytes`] ([`Error::TooLarge`]);
    /// [`Error::TooManyOverrides`] when `key` has no quota of its own yet and
    /// [`KeyedOptions::max_overrides`] quotas are already set, or this one's bytes do not fit
    /// under [`KeyedOptions::max_override_bytes`] (half of [`KeyedOptions::max_bytes`], so that
    /// keys always keep the other half) or, with the tracked keys', under
    /// [`KeyedOptions::max_bytes`].
    pub fn set_key_quota<Q>(&self, key: &Q, quota: Quota) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        let config = A::Config::from_quota(&quota)?;
        state_fits::<K, A>(&self.options, &config)?;
        let bytes = key_bytes::<K, Q>(key)
            .saturating_add(size_of::<Override<A>>())
            .saturating_add(OVERRIDE_OVERHEAD);
        let entry = Override {
            quota,
            config,
            bytes,
        };
        if self.overrides.with(key, |_| ()).is_some() {
            // Replacing a quota adds no entry. Should the old one be cleared meanwhile, this
            // becomes an insertion past the caps by one entry per racing caller, never more.
            match self.overrides.insert(key.to_owned(), entry) {
                Some(replaced) => self.uncharge_override(replaced.bytes),
                None => {
                    self.override_count.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.override_bytes.fetch_add(bytes, Ordering::Relaxed);
            return Ok(());
        }
        let max_overrides = self.options.max_overrides;
        let refused = Error::TooManyOverrides { max_overrides };
        self.override_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                (count < max_overrides).then_some(count + 1)
            })
            .map_err(|_| refused.clone())?;
        if !self.charge_override(bytes) {
            self.override_count.fetch_sub(1, Ordering::Relaxed);
            return Err(refused);
        }
        if let Some(replaced) = self.overrides.insert(key.to_owned(), entry) {
            // The key had a quota already: one entry, charged once.
            self.override_count.fetch_sub(1, Ordering::Relaxed);
            self.uncharge_override(replaced.bytes);
        }
        Ok(())
    }

    /// Charges a per-key quota's `bytes` if they stay within both the overrides' share and the
    /// whole byte cap, or charges nothing.
    fn charge_override(&self, bytes: usize) -> bool {
        let max_override_bytes = self.options.max_override_bytes();
        if self
            .override_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= max_override_bytes)
            })
            .is_err()
        {
            return false;
        }
        if self.charge(bytes) {
            return true;
        }
        self.override_bytes.fetch_sub(bytes, Ordering::Relaxed);
        false
    }

    /// Gives back what a per-key quota was charged.
    fn uncharge_override(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.override_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Returns `key` to the default quota.
    pub fn clear_key_quota<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(removed) = self.overrides.remove(key) {
            self.override_count.fetch_sub(1, Ordering::Relaxed);
            self.uncharge_override(removed.bytes);
        }
    }

    /// The quota that applies to `key`.
    pub fn quota_for<Q>(&self, key: &Q) -> Quota
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.overrides
            .with(key, |o| o.quota)
            .unwrap_or_else(|| self.default.quota())
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<K, A: Algorithm, C: Clock> fmt::Debug for KeyedRateLimiter<K, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("algorithm", &A::NAME)
            .field("quota", &self.default.quota())
            .field("tracked", &self.tracked.load(Ordering::Relaxed))
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .field("overrides", &self.override_count.load(Ordering::Relaxed))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{FixedWindow, SlidingWindowLog, TokenBucket};
    use infra_common::ManualClock;
    use std::time::Duration;

    fn limiter(
        per_second: u64,
        max_keys: usize,
    ) -> (ManualClock, KeyedRateLimiter<u64, Gcra, ManualClock>) {
        let clock = ManualClock::new();
        let options = KeyedOptions::default().max_keys(max_keys);
        let limiter = KeyedRateLimiter::with_options(
            Quota::per_second(per_second).unwrap(),
            clock.clone(),
            options,
        )
        .unwrap();
        (clock, limiter)
    }

    #[test]
    fn keys_are_limited_independently() {
        let (_clock, limiter) = limiter(1, 100);
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&1).unwrap().is_denied());
        assert!(limiter.check(&2).unwrap().is_allowed());
        assert_eq!(limiter.len(), 2);
        assert!(limiter.check_n(&3, 0).unwrap().is_allowed());
        assert_eq!(limiter.len(), 2, "asking about a new key does not track it");
        assert!(matches!(
            limiter.check_n(&3, 2),
            Err(Error::InsufficientCapacity { .. })
        ));
    }

    #[test]
    fn a_full_limiter_reclaims_idle_keys_at_once_and_never_active_ones() {
        let (clock, limiter) = limiter(1, 2);
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&2).unwrap().is_allowed());
        // Both keys are full again a second after their one request: the earliest a slot frees.
        let full = |retry_after| {
            Err(Error::TooManyKeys {
                max_keys: 2,
                retry_after,
            })
        };
        assert_eq!(limiter.check(&3), full(Duration::from_secs(1)));
        // Known keys keep working at the cap, and the refusal forgot neither.
        assert!(limiter.check(&1).unwrap().is_denied());
        assert!(limiter.check(&2).unwrap().is_denied());
        clock.advance(Duration::from_millis(999));
        assert_eq!(limiter.check(&3), full(Duration::from_millis(1)));
        // Both replenished: the next new keys take their places at once, one after the other.
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check(&3).unwrap().is_allowed());
        assert!(limiter.check(&4).unwrap().is_allowed());
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.check(&5), full(Duration::from_secs(1)));
        // A key that comes back after being forgotten starts full, as it would have been.
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&1).unwrap().is_allowed());
    }

    /// Keys used again after their last examination are still filed as due then: when more of
    /// them are due than one check examines, the ones it did not reach may be idle or not, and
    /// the refusal must not tell the client to retry at once.
    #[test]
    fn a_refusal_with_due_keys_left_unexamined_says_retry_soon() {
        let (clock, limiter) = limiter(1, 100);
        for key in 0..100 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        clock.advance(Duration::from_secs(1));
        for key in 0..100 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        assert_eq!(
            limiter.check(&1_000),
            Err(Error::TooManyKeys {
                max_keys: 100,
                retry_after: Decision::RETRY_SOON,
            })
        );
        // The refusal was honest: keys not yet examined were active, and once they replenish
        // the next new key finds room.
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&1_000).unwrap().is_allowed());
    }

    /// Under the quota in force a forgotten key decides as the state it replaced; a later
    /// quota can tell them apart. Here a window lengthened from a second to a minute takes in
    /// the cell admitted at 0 s: a state that kept it refuses, the forgotten key starts afresh.
    #[test]
    fn a_forgotten_key_starts_afresh_under_a_later_quota() {
        let clock = ManualClock::new();
        let second = Quota::per_second(1).unwrap();
        let keyed =
            KeyedRateLimiter::<u64, FixedWindow, _>::with_clock(second, clock.clone()).unwrap();
        let kept = crate::RateLimiter::<FixedWindow, _>::with_clock(second, clock.clone()).unwrap();
        assert!(keyed.check(&1).unwrap().is_allowed());
        assert!(kept.check().is_allowed());
        clock.advance(Duration::from_secs(1));
        assert_eq!(keyed.sweep(), 1);
        let minute = Quota::per_minute(1).unwrap();
        keyed.set_quota(minute).unwrap();
        kept.set_quota(minute).unwrap();
        assert!(kept.check().is_denied());
        assert!(keyed.check(&1).unwrap().is_allowed());
    }

    #[test]
    fn tracking_new_keys_forgets_replenished_ones_on_the_way() {
        let (clock, limiter) = limiter(1, 100);
        for key in 0..10 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&3).unwrap().is_denied());
        clock.advance(Duration::from_millis(500));
        // Far from the cap, each new key still examines two keys that may have replenished
        // (new keys among them, whose first look comes after their first check).
        for key in 100..120 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        assert_eq!(limiter.len(), 20, "the ten replenished keys are forgotten");
        // Key 3 was used again (the denial consumed nothing, so it replenished too); the keys
        // forgotten decide as new ones.
        for key in 0..10 {
            assert!(limiter.check(&key).unwrap().is_allowed(), "key {key}");
        }
    }

    /// GCRA that counts how often a keyed limiter asks whether a state is idle.
    #[derive(Debug)]
    struct Counted(Gcra);

    // A static needs a const constructor, which the loom-switchable atomic lacks; only this
    // test's single thread touches it.
    #[allow(clippy::disallowed_types)]
    static IDLE_QUESTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    impl Algorithm for Counted {
        type Config = crate::GcraConfig;
        const NAME: &'static str = "counted";

        fn new(config: &Self::Config, now: u64) -> Self {
            Self(Gcra::new(config, now))
        }

        fn check_n(&self, config: &Self::Config, now: u64, n: u32) -> Decision {
            self.0.check_n(config, now, n)
        }

        fn is_idle(&self, config: &Self::Config, now: u64) -> bool {
            IDLE_QUESTIONS.fetch_add(1, Ordering::Relaxed);
            self.0.is_idle(config, now)
        }
    }

    #[test]
    fn a_new_key_at_the_cap_examines_a_bounded_sample() {
        let clock = ManualClock::new();
        let max_keys = 2_000;
        let limiter = KeyedRateLimiter::<u64, Counted, _>::with_options(
            Quota::per_hour(100).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_keys(max_keys),
        )
        .unwrap();
        for key in 0..max_keys as u64 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        // Every key is active: each new key is refused after a bounded look, never a full pass.
        for attempt in 0..100 {
            let before = IDLE_QUESTIONS.load(Ordering::Relaxed);
            let refused = limiter.check(&(1_000_000 + attempt));
            let asked = IDLE_QUESTIONS.load(Ordering::Relaxed) - before;
            assert!(matches!(refused, Err(Error::TooManyKeys { .. })));
            assert!(asked <= 32, "asked about {asked} keys");
        }
        // Once keys replenish, each new key finds one at once.
        clock.advance(Duration::from_secs(36));
        for attempt in 0..100 {
            let before = IDLE_QUESTIONS.load(Ordering::Relaxed);
            assert!(limiter.check(&(2_000_000 + attempt)).unwrap().is_allowed());
            assert!(IDLE_QUESTIONS.load(Ordering::Relaxed) - before <= 32);
        }
        assert!(limiter.len() <= max_keys);
    }

    #[test]
    fn the_byte_cap_counts_key_lengths_overrides_and_logs() {
        let clock = ManualClock::new();
        // A `str` hashes its bytes and one terminating byte.
        let hashed = |key: &str| key.len() + 1;
        let per_key = |key: &str| size_of::<String>() + hashed(key) + size_of::<Gcra>() + 32;
        // Room for alice and bob, each within the half that per-key quotas never take.
        let options = KeyedOptions::default().max_bytes(2 * per_key("alice"));
        let limiter = KeyedRateLimiter::<String, Gcra, _>::with_options(
            Quota::per_second(1).unwrap(),
            clock.clone(),
            options,
        )
        .unwrap();
        assert!(limiter.check("alice").unwrap().is_allowed());
        assert_eq!(limiter.bytes(), per_key("alice"));
        // One byte over the half that per-key quotas never take: it could not be sure to fit,
        // so it is refused as too large whatever room is free now.
        assert_eq!(
            limiter.check("alice!"),
            Err(Error::TooLarge {
                what: "key with its state (bytes)",
                value: per_key("alice!") as u128,
                max: per_key("alice") as u128,
            })
        );
        // A key of any length is charged its length: this one never fits, which waiting would
        // not change.
        let long = "x".repeat(10_000);
        assert!(matches!(
            limiter.check(long.as_str()),
            Err(Error::TooLarge { .. })
        ));
        assert!(limiter.check("bob").unwrap().is_allowed());
        assert_eq!(limiter.bytes(), per_key("alice") + per_key("bob"));
        assert!(limiter.check("eve").is_err(), "the bytes are used up");
        // Forgetting a key gives its bytes back.
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 2);
        assert_eq!(limiter.bytes(), 0);

        // A per-key quota is charged too, within half of the cap, and refused when it does
        // not fit there.
        let override_bytes =
            size_of::<String>() + hashed("alice") + size_of::<Override<Gcra>>() + 8;
        let limiter = KeyedRateLimiter::<String, Gcra, _>::with_options(
            Quota::per_second(1).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_bytes(2 * override_bytes),
        )
        .unwrap();
        limiter
            .set_key_quota("alice", Quota::per_second(5).unwrap())
            .unwrap();
        let with_override = limiter.bytes();
        assert_eq!(with_override, override_bytes);
        let refused = Err(Error::TooManyOverrides {
            max_overrides: KeyedOptions::DEFAULT_MAX_OVERRIDES,
        });
        assert_eq!(
            limiter.set_key_quota("carol", Quota::per_second(5).unwrap()),
            refused,
            "the quotas' half is used"
        );
        assert_eq!(
            limiter.set_key_quota(long.as_str(), Quota::per_second(5).unwrap()),
            refused
        );
        assert!(
            limiter.check("bob").unwrap().is_allowed(),
            "keys keep theirs"
        );
        assert_eq!(limiter.bytes(), with_override + per_key("bob"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 1);
        // Replacing a key's quota charges it once.
        limiter
            .set_key_quota("alice", Quota::per_second(6).unwrap())
            .unwrap();
        assert_eq!(limiter.bytes(), with_override);
        limiter.clear_key_quota("alice");
        assert_eq!(limiter.bytes(), 0);

        // A sliding-window log is charged for the entries its limit allows.
        let log = KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_options(
            Quota::per_second(1_000).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_bytes(40_000),
        )
        .unwrap();
        assert!(log.check(&1).unwrap().is_allowed());
        assert!(log.bytes() >= 1_024 * 16, "{}", log.bytes());
        assert!(log.check(&2).unwrap().is_allowed());
        assert!(matches!(log.check(&3), Err(Error::TooManyKeys { .. })));
    }

    /// A quota under which no key could ever be tracked (a sliding log whose entries alone
    /// are over the byte cap) is refused when it is given, not answered `TooLarge` for every
    /// key: that would read as every client's key being too large.
    #[test]
    fn a_quota_whose_state_alone_is_over_the_byte_cap_is_refused() {
        let clock = ManualClock::new();
        let options = KeyedOptions::default().max_bytes(10_000);
        let big = Quota::per_second(1_000).unwrap();
        let small = Quota::per_second(10).unwrap();
        let too_large = |result: Result<_, Error>| matches!(result, Err(Error::TooLarge { .. }));
        assert!(too_large(
            KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_options(big, clock.clone(), options)
                .map(drop)
        ));
        let log = KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_options(small, clock, options)
            .unwrap();
        assert!(too_large(log.set_quota(big)));
        assert!(too_large(log.set_key_quota(&1, big)));
        assert_eq!(log.quota(), small);
        assert_eq!(log.quota_for(&1), small);
        assert!(log.check(&1).unwrap().is_allowed());
    }

    /// The HTTP layer checks a `String` key through `&String`, not `&str`: the key's bytes
    /// must be charged whichever form it is checked or given a quota in.
    #[test]
    fn a_long_key_is_charged_its_bytes_when_checked_as_an_owned_string() {
        let long = "x".repeat(100_000);
        let limiter = KeyedRateLimiter::<String, Gcra, _>::with_options(
            Quota::per_second(1).unwrap(),
            ManualClock::new(),
            KeyedOptions::default().max_bytes(10_000),
        )
        .unwrap();
        assert!(matches!(limiter.check(&long), Err(Error::TooLarge { .. })));
        assert_eq!(
            limiter.set_key_quota(&long, Quota::per_second(5).unwrap()),
            Err(Error::TooManyOverrides {
                max_overrides: KeyedOptions::DEFAULT_MAX_OVERRIDES
            })
        );
        let short = "a short key".to_owned();
        assert!(limiter.check(&short).unwrap().is_allowed());
        assert!(limiter.bytes() > short.len() + 32);
    }

    #[test]
    fn per_key_quotas_are_capped() {
        let (_clock, limiter) = limiter(1, 100);
        let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
            limiter.quota(),
            ManualClock::new(),
            KeyedOptions::default().max_overrides(2),
        )
        .unwrap();
        let quota = Quota::per_second(9).unwrap();
        limiter.set_key_quota(&1, quota).unwrap();
        limiter.set_key_quota(&2, quota).unwrap();
        limiter.set_key_quota(&2, quota).unwrap();
        assert_eq!(
            limiter.set_key_quota(&3, quota),
            Err(Error::TooManyOverrides { max_overrides: 2 })
        );
        limiter.clear_key_quota(&1);
        limiter.set_key_quota(&3, quota).unwrap();
        assert_eq!(limiter.quota_for(&3), quota);
        assert_eq!(limiter.quota_for(&1), Quota::per_second(1).unwrap());
    }

    /// However many per-key quotas are set, they take at most half of the byte cap: new keys
    /// keep room, and once the table is full of active keys, a refusal names the time the
    /// first of them replenishes and ends then.
    #[test]
    fn per_key_quotas_leave_half_the_bytes_to_keys() {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
            Quota::per_hour(1).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_bytes(10_000),
        )
        .unwrap();
        let premium = Quota::per_hour(100).unwrap();
        let mut overrides = 0;
        while limiter.set_key_quota(&overrides, premium).is_ok() {
            overrides += 1;
        }
        assert!(overrides > 0);
        assert!(limiter.check(&1_000_000).unwrap().is_allowed());
        // A `u64` key with GCRA is charged 56 bytes: its key twice, its state and 32.
        let per_key: usize = 56;
        assert!(limiter.bytes() - per_key <= 5_000, "{}", limiter.bytes());
        let mut key = 1_000_001;
        while let Ok(decision) = limiter.check(&key) {
            assert!(decision.is_allowed());
            key += 1;
        }
        assert!(
            key - 1_000_000 >= (5_000 / per_key) as u64,
            "{} keys fit",
            key - 1_000_000
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            limiter.check(&key),
            Err(Error::TooManyKeys {
                max_keys: KeyedOptions::DEFAULT_MAX_KEYS,
                retry_after: Duration::from_secs(3_540),
            })
        );
        clock.advance(Duration::from_secs(3_540));
        assert!(limiter.check(&key).unwrap().is_allowed());
        // Clearing a quota gives its bytes back to the next one.
        limiter.clear_key_quota(&0);
        limiter.set_key_quota(&overrides, premium).unwrap();
    }

    #[test]
    fn sweeping_keeps_keys_that_are_not_idle() {
        let (clock, limiter) = limiter(2, 100);
        let _ = limiter.check(&1).unwrap();
        let _ = limiter.check(&2).unwrap();
        clock.advance(Duration::from_millis(300));
        let _ = limiter.check(&2).unwrap();
        // Key 1 refilled at 500 ms; key 2 only at 800 ms.
        clock.advance(Duration::from_millis(300));
        assert_eq!(limiter.sweep(), 1);
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.check_n(&2, 0).unwrap().remaining(), 1);
    }

    #[test]
    fn per_key_quotas_and_runtime_changes_keep_state() {
        let (_clock, limiter) = limiter(2, 100);
        limiter
            .set_key_quota(&7, Quota::per_second(5).unwrap())
            .unwrap();
        assert_eq!(limiter.quota_for(&7), Quota::per_second(5).unwrap());
        assert!(limiter.check_n(&7, 5).unwrap().is_allowed());
        assert!(limiter.check(&1).unwrap().is_allowed());
        limiter.set_quota(Quota::per_second(4).unwrap()).unwrap();
        // Key 1 used half of 2 (500 ms of debt); under 4/s that is 2 of 4 cells.
        assert_eq!(limiter.check_n(&1, 0).unwrap().remaining(), 2);
        limiter.clear_key_quota(&7);
        assert_eq!(limiter.quota_for(&7), Quota::per_second(4).unwrap());
        assert!(
            limiter.check(&7).unwrap().is_denied(),
            "state survived the change"
        );
    }

    #[test]
    fn string_keys_are_checked_by_str() {
        let limiter = KeyedRateLimiter::<String, TokenBucket, _>::with_clock(
            Quota::per_second(1).unwrap(),
            ManualClock::new(),
        )
        .unwrap();
        assert!(limiter.check("a").unwrap().is_allowed());
        assert!(limiter.check("a").unwrap().is_denied());
        let log = KeyedRateLimiter::<String, SlidingWindowLog, _>::with_clock(
            Quota::per_second(1).unwrap(),
            ManualClock::new(),
        )
        .unwrap();
        assert!(log.check("a").unwrap().is_allowed());
        assert!(format!("{log:?}").contains("sliding_window_log"));
    }
}
