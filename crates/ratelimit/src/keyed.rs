//! Keyed limiting: one limiter state per user, IP address or API key, in bounded memory.
//!
//! Memory is bounded twice: by a count of keys and by an estimate of their bytes. A tracked key
//! costs its map entry and nothing else: forgetting keys needs no record of them beside the map.
//! A CLOCK hand walks the map's shards in place (`Shards::walk` in `store.rs`). When a new key does not
//! fit, the check examines the next [`KeyedOptions::RECLAIM_SAMPLE`] keys at the hand, each
//! under its shard's exclusive lock: a key that has replenished (*idle*) is forgotten (a new key
//! starts in the same state, so no decision under the quota in force changes), any other stays
//! where it is and the hand moves past it. An active key is never forgotten (an abuser cannot
//! reset its own limit by flooding the map), and a key an abuser drained is reclaimable the
//! moment it has replenished, once the hand comes round to it.
//!
//! Every check that tracks a new key also examines up to [`SWEEP_PER_INSERT`] keys at the hand:
//! the sweep is spread over insertions, so the hand keeps turning and idle keys are forgotten
//! before the limiter is full. No request thread ever makes a pass over all keys;
//! [`KeyedRateLimiter::sweep`] does, when its owner calls it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::size_of;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_common::{Clock, SystemClock};

use crate::algorithm::{Algorithm, AlgorithmConfig, ConfigCell};
use crate::store::{ENTRIES_PER_LOCK, Position, SLOTS_PER_ENTRY, Shards};
use crate::{Decision, Error, Gcra, Quota};

/// Keys at the hand examined by each check that tracks a new key while the limiter has room.
const SWEEP_PER_INSERT: usize = 2;

/// Bytes charged per entry of a table of `(K, A)` (a tracked key and its state, or a per-key
/// quota) besides the entry itself: its share of the hash table, at the most the table can
/// hold per entry.
///
/// A slot holds the key and state side by side (padding included) and has one control byte. A
/// table only grows (to twice its buckets), and only when its free slots run out with more
/// than 7/16 of them full: removals leave marks that take free slots, and below 7/16 full the
/// table is rehashed in place instead. So a table never has more than 32/7 slots per key it
/// has held at its fullest, and charging that keeps `max_bytes` a bound on the memory the
/// table holds. It is a bound, not the typical cost: a table that keys were only added to has
/// 8/7 to 16/7 slots per key (measured over a million `u64` keys, a tracked key holds 36
/// bytes where it is charged 86).
pub(crate) fn entry_overhead<K, A>() -> usize {
    let slot = size_of::<(K, A)>() + 1;
    (slot * 32)
        .div_ceil(7)
        .saturating_sub(size_of::<K>() + size_of::<A>())
}

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
    /// Bounds the work a request thread does for eviction. The keys examined are the next ones
    /// at the limiter's CLOCK hand, in the map's own order (not those closest to replenishing):
    /// the hand moves past those found active, so the next check looks further on.
    ///
    /// A new key is refused at first only when none of the keys examined is idle. With a
    /// share `p` of the tracked keys idle, spread through the map, that happens to about
    /// `(1 − p)^128` of the new keys that find the limiter full: 1 in 96 at 3.5 % idle, 1 in
    /// 710 at 5 %, 1 in 720,000 at 10 %. A refused key's retry, or the next new key, examines
    /// the next 128 keys; within one turn of the hand (about `max_keys / 128` walks) any idle
    /// key is found that stayed put (a table growing or rehashed meanwhile may move a key past
    /// the hand). In `tests/eviction.rs`, a flood that keeps 917 of the 950
    /// tracked keys active refuses at most 1 % of the new keys that find the limiter full (in
    /// ten runs, none to four of about 1,240; a sample of 32 refused 16 to 18 %, of 64, 2 to
    /// 3 %).
    ///
    /// The cost is that of examining 128 keys, a sequential walk over the table: about 12,000
    /// instructions for a check that finds the limiter full of active GCRA keys (3,300 with a
    /// sample of 32), paid only by checks of new keys that find the limiter full. One shard
    /// lock is held for at most 64 of the keys, as [`KeyedRateLimiter::sweep`] holds it; checks
    /// of keys in other shards do not wait at all. Since each walk forgets every idle key it
    /// examines, a larger sample also leaves room for the next new keys, so fewer checks walk:
    /// over the flood above, the keys examined in all are about the same for 32, 64 and 128.
    pub const RECLAIM_SAMPLE: usize = 128;

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
    let bytes = size_of::<K>().saturating_add(state_charge::<K, A>(A::heap_bytes(config)));
    if bytes > options.max_key_bytes() {
        return Err(Error::TooLarge {
            what: "state of one key under the quota (bytes)",
            value: bytes as u128,
            max: options.max_key_bytes() as u128,
        });
    }
    Ok(())
}

/// What a tracked key is charged besides its key: its state, `heap_bytes` (the most heap
/// memory the state may hold under the quota it was created with) and its share of the table.
fn state_charge<K, A: Algorithm>(heap_bytes: usize) -> usize {
    size_of::<A>()
        .saturating_add(heap_bytes)
        .saturating_add(entry_overhead::<K, A>())
}

/// What a tracked key was charged, recomputed from what its entry holds: the key's bytes as
/// [`key_bytes`] counts them (the same for the key as for any form it is checked in, which
/// `Borrow` requires to hash alike) and the state's charge ([`Algorithm::charged_heap_bytes`]:
/// as of its creation, or of a raised quota it was charged more for since).
fn tracked_charge<K: Hash, A: Algorithm>(key: &K, state: &A) -> usize {
    key_bytes::<K, K>(key).saturating_add(state_charge::<K, A>(state.charged_heap_bytes()))
}

/// What one walk of the hand found: keys forgotten and what they were charged, the soonest
/// any key it kept can have replenished, and whether it examined every key.
#[derive(Clone, Copy, Debug, Default)]
struct Reclaimed {
    forgotten: usize,
    released: usize,
    soonest_full: Option<u64>,
    full_turn: bool,
}

/// Room given back when dropped: that of the keys a walk took out of the map (after they are
/// out, so the map never holds more than the cap), or a new key's reservation that did not
/// become an entry. Dropped while a user's `Hash` panics too (midway through a walk, the keys
/// before it already erased; or while the new key is hashed), so a panic cannot shrink the cap.
struct GiveBack<'a> {
    tracked: &'a AtomicUsize,
    bytes: &'a AtomicUsize,
    found: Reclaimed,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        self.tracked
            .fetch_sub(self.found.forgotten, Ordering::Relaxed);
        self.bytes.fetch_sub(self.found.released, Ordering::Relaxed);
    }
}

impl Reclaimed {
    /// The `retry_after` of a new key refused after this walk. Never zero.
    ///
    /// [`Decision::RETRY_SOON`] unless the walk went round every tracked key and forgot none:
    /// keys it did not reach may have replenished already, and the next check examines them
    /// (a wait for the keys this walk happened to examine would keep an obedient client out
    /// for nothing); a walk that forgot idle keys saw racing checks take their room, or freed
    /// too few bytes for this key, and the next walk goes on from there. After a full turn,
    /// the soonest any key can have replenished (a hint, not a promise: that key may be used
    /// meanwhile), and one second when the turn found no key at all, which happens only while
    /// racing checks hold the room for keys they are inserting.
    fn wait_for_room(&self) -> Duration {
        if self.forgotten > 0 || !self.full_turn {
            return Decision::RETRY_SOON;
        }
        match self.soonest_full {
            Some(wait) if wait > 0 => Duration::from_nanos(wait),
            Some(_) => Decision::RETRY_SOON,
            None => Duration::from_secs(1),
        }
    }
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
///   fit, the check examines at most [`KeyedOptions::RECLAIM_SAMPLE`] tracked keys, the next
///   ones at a CLOCK hand that walks the map in its own order, and forgets the idle ones among
///   them. If none of them was idle, the new key gets [`Error::TooManyKeys`] rather than the
///   state of an active key being forgotten (that would let a client reset its own limit by
///   flooding the map), asking for a retry soon unless the check went round every tracked
///   key (the retry examines the next ones); known keys are unaffected. Per-key quotas take at most half of
///   `max_bytes`, so such a refusal always ends once enough tracked keys replenish and the
///   hand reaches them: each refused check moves it on. Checks that track a new key also
///   forget a few idle keys at the hand on the way, and [`KeyedRateLimiter::sweep`] forgets
///   every idle key at once.
/// - **Quota changes and eviction.** Whether a key is idle is decided when the hand reaches
///   it, under the quota in force then; nothing is remembered from earlier examinations, so
///   a quota under which keys replenish sooner frees their room as soon as they have
///   (`a_quota_that_replenishes_sooner_frees_room_at_once`).
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
            |state, &now| state.check_n_charged(&config, now, n, |extra| self.charge(extra)),
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
        let bytes =
            key_bytes::<K, Q>(key).saturating_add(state_charge::<K, A>(A::heap_bytes(&config)));
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
            let reclaimed = self.reclaim(now, KeyedOptions::RECLAIM_SAMPLE);
            if !self.reserve(bytes) {
                #[cfg(feature = "metrics")]
                self.metrics.too_many_keys.increment(1);
                return Err(Error::TooManyKeys {
                    max_keys: self.options.max_keys,
                    retry_after: reclaimed.wait_for_room(),
                });
            }
        }
        // Given back unless the key becomes an entry: another thread inserted it first (its
        // reservation counts), or the key panicked while being copied or hashed.
        let reservation = self.given_back_on_drop(Reclaimed {
            forgotten: 1,
            released: bytes,
            ..Reclaimed::default()
        });
        let (decision, inserted) = self.states.with_or_insert(
            key.to_owned(),
            || A::new(&config, now),
            |key, state, inserted| {
                if inserted {
                    std::mem::forget(reservation);
                    // Forgetting the key gives back what its entry says it was charged; the
                    // algorithm's and the key's `Hash` contracts make that the reservation,
                    // and any difference is settled here rather than left to drift.
                    self.settle(bytes, tracked_charge(key, state));
                } else {
                    drop(reservation);
                }
                (
                    state.check_n_charged(&config, now, n, |extra| self.charge(extra)),
                    inserted,
                )
            },
        );
        if inserted && had_room {
            // The incremental sweep: keeps the hand turning while there is room.
            self.reclaim(now, SWEEP_PER_INSERT);
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

    /// Turns a reservation of `reserved` bytes for a new key into a charge of `charged`.
    fn settle(&self, reserved: usize, charged: usize) {
        if charged > reserved {
            self.bytes.fetch_add(charged - reserved, Ordering::Relaxed);
        } else if reserved > charged {
            self.bytes.fetch_sub(reserved - charged, Ordering::Relaxed);
        }
    }

    /// Examines up to `budget` keys at the hand (see `Shards::walk`) and forgets the idle ones.
    fn reclaim(&self, now: u64, budget: usize) -> Reclaimed {
        let mut walk = self.given_back_on_drop(Reclaimed::default());
        let full_turn = self
            .states
            .walk(budget, |key, state| {
                self.keep(key, state, now, &mut walk.found)
            })
            .full_turn;
        walk.found.full_turn = full_turn;
        walk.found
    }

    /// The key slots and bytes of `found`'s forgotten keys, given back when the guard drops.
    fn given_back_on_drop(&self, found: Reclaimed) -> GiveBack<'_> {
        GiveBack {
            tracked: &self.tracked,
            bytes: &self.bytes,
            found,
        }
    }

    /// Whether to keep `key`, decided under its shard's exclusive lock: a check that consumes
    /// from the key either comes first (the key is no longer idle and stays) or finds it gone
    /// and starts it afresh, which is the same state. An idle key is counted in `found` as
    /// forgotten; for any other, `found` learns when it can have replenished.
    fn keep(&self, key: &K, state: &A, now: u64, found: &mut Reclaimed) -> bool {
        let config = self.config_for(key);
        if state.is_idle(&config, now) {
            // Charged first: a panic in the key's `Hash` leaves it in the map, uncounted.
            let charge = tracked_charge(key, state);
            found.forgotten += 1;
            found.released += charge;
            return false;
        }
        let full_in = duration_to_nanos(state.check_n(&config, now, 0).reset_after());
        found.soonest_full = Some(found.soonest_full.map_or(full_in, |s| s.min(full_in)));
        true
    }

    /// Forgets every idle key (one whose state has fully recovered) and returns how many.
    ///
    /// Makes one full turn over the map, from its start to its end, examining each key once
    /// (a key moved by a table growing meanwhile may be examined twice or not at all), a
    /// few dozen keys per shard lock; checks proceed meanwhile. It does not move the hand. New
    /// keys reclaim idle ones by themselves, a few at a time, so calling this is only needed
    /// to give memory back at once.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_nanos();
        let mut forgotten = 0;
        let mut position = Position::START;
        loop {
            let mut walk = self.given_back_on_drop(Reclaimed::default());
            let scanned = self.states.scan(
                position,
                ENTRIES_PER_LOCK,
                ENTRIES_PER_LOCK * SLOTS_PER_ENTRY,
                None,
                |key, state| self.keep(key, state, now, &mut walk.found),
            );
            forgotten += walk.found.forgotten;
            drop(walk);
            if scanned.wrapped {
                return forgotten;
            }
            position = scanned.next;
        }
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
    /// plus its share of the hash table at the most the table can hold per key (86 bytes in
    /// all for a `u64` key with GCRA). A sliding-window log under a limit raised since is
    /// charged the larger log's bytes at its next check, or else keeps to the limit it was
    /// charged for ([`Algorithm::check_n_charged`]). Forgetting the key gives back exactly what
    /// it was charged, whatever quotas were set since. A per-key quota is charged its key the same way, its stored
    /// quota and its share of its own hash table, at the most that table can hold per quota
    /// (306 bytes in all for a `u64` key with GCRA); per-key quotas together are charged at
    /// most [`KeyedOptions::max_override_bytes`], half of the cap. So `max_bytes` bounds the
    /// memory both tables hold, not only an estimate of it.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_ratelimit::{Gcra, KeyedOptions, KeyedRateLimiter, Quota};
    ///
    /// let options = KeyedOptions::default().max_bytes(400);
    /// let limiter =
    ///     KeyedRateLimiter::<String, Gcra, _>::with_options(Quota::per_second(2)?, ManualClock::new(), options)?;
    /// assert!(limiter.check("a short key")?.is_allowed());
    /// assert!(limiter.bytes() > 11);
    /// let long_key = "k".repeat(1_000);
    /// assert!(limiter.check(long_key.as_str()).is_err()); // does not fit in 400 bytes
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
        // Per-key quotas have a table of their own, bounded the same way as the keys'.
        let bytes = key_bytes::<K, Q>(key)
            .saturating_add(size_of::<Override<A>>())
            .saturating_add(entry_overhead::<K, Override<A>>());
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

    /// A refusal names the soonest time a key it examined can have replenished: here the keys
    /// were used 1 ms apart, so the answer is one of their times, and no earlier than the
    /// first of them.
    #[test]
    fn a_refusal_names_when_an_examined_key_replenishes() {
        let (clock, limiter) = limiter(1, 100);
        for key in 0..100 {
            assert!(limiter.check(&key).unwrap().is_allowed());
            clock.advance(Duration::from_millis(1));
        }
        // Key `k` was used at `k` ms and is full a second later; it is 100 ms now.
        let Err(Error::TooManyKeys { retry_after, .. }) = limiter.check(&1_000) else {
            panic!("every key is active");
        };
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(1_000)).contains(&retry_after)
                && retry_after.subsec_nanos() % 1_000_000 == 0,
            "{retry_after:?}"
        );
        // The refusal ends: once the keys replenish, a new key finds room.
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&1_000).unwrap().is_allowed());
    }

    /// A walk over part of the keys cannot know when the others replenish (some may have
    /// already): its refusal asks for a retry soon, which the next walk, further on, answers.
    #[test]
    fn a_refusal_after_a_walk_over_part_of_the_keys_says_retry_soon() {
        let max_keys = 4 * KeyedOptions::RECLAIM_SAMPLE;
        let (clock, limiter) = limiter(1, max_keys);
        for key in 0..max_keys as u64 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        clock.advance(Duration::from_millis(100));
        let refused = limiter.check(&1_000_000);
        assert_eq!(
            refused,
            Err(Error::TooManyKeys {
                max_keys,
                retry_after: Decision::RETRY_SOON,
            })
        );
        // The message promises no idle key at that time, only when to look again.
        let message = refused.unwrap_err().to_string();
        assert!(
            message.ends_with("new keys are refused until some are: retry in 1ms"),
            "{message}"
        );
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

    /// Whether a key is idle is decided under the quota in force when the hand reaches it:
    /// after a change that makes keys replenish sooner (a token bucket refills at the new
    /// rate), a full limiter reclaims them as soon as they have replenished under it.
    #[test]
    fn a_quota_that_replenishes_sooner_frees_room_at_once() {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<u64, TokenBucket, _>::with_options(
            Quota::per_hour(1).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_keys(2),
        )
        .unwrap();
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&2).unwrap().is_allowed());
        assert!(matches!(limiter.check(&3), Err(Error::TooManyKeys { .. })));
        limiter.set_quota(Quota::per_second(1).unwrap()).unwrap();
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&3).unwrap().is_allowed());
        assert_eq!(
            limiter.len(),
            1,
            "both old keys were replenished and forgotten"
        );
    }

    #[test]
    fn tracking_new_keys_forgets_replenished_ones_on_the_way() {
        let (clock, limiter) = limiter(1, 10_000);
        for key in 0..10 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&3).unwrap().is_denied());
        clock.advance(Duration::from_millis(500));
        // Far from the cap, each new key still examines two keys at the hand: the hand keeps
        // turning, and the ten replenished keys are forgotten within a few turns.
        let mut key = 100;
        while limiter.len() > (key - 100) as usize {
            assert!(limiter.check(&key).unwrap().is_allowed());
            key += 1;
            assert!(key < 1_000, "{} keys still tracked", limiter.len());
        }
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
            assert!(
                asked <= KeyedOptions::RECLAIM_SAMPLE,
                "asked about {asked} keys"
            );
        }
        // Once keys replenish, each new key finds one at once.
        clock.advance(Duration::from_secs(36));
        for attempt in 0..100 {
            let before = IDLE_QUESTIONS.load(Ordering::Relaxed);
            assert!(limiter.check(&(2_000_000 + attempt)).unwrap().is_allowed());
            let asked = IDLE_QUESTIONS.load(Ordering::Relaxed) - before;
            assert!(asked <= KeyedOptions::RECLAIM_SAMPLE);
        }
        assert!(limiter.len() <= max_keys);
    }

    #[test]
    fn the_byte_cap_counts_key_lengths_overrides_and_logs() {
        let clock = ManualClock::new();
        // A `str` hashes its bytes and one terminating byte.
        let hashed = |key: &str| key.len() + 1;
        let per_key = |key: &str| {
            size_of::<String>() + hashed(key) + size_of::<Gcra>() + entry_overhead::<String, Gcra>()
        };
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
        let override_bytes = size_of::<String>()
            + hashed("alice")
            + size_of::<Override<Gcra>>()
            + entry_overhead::<String, Override<Gcra>>();
        // Each half has room for bob, and for one quota but not two.
        assert!(per_key("bob") <= override_bytes);
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
        assert!(limiter.bytes() > short.len() + entry_overhead::<String, Gcra>());
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
        // A `u64` key with GCRA is charged 86 bytes: its key twice, its state and 62.
        let per_key: usize = 86;
        assert_eq!(entry_overhead::<u64, Gcra>(), 62);
        // A per-key quota for it, 306: its key twice, the quota (56) and 234.
        let per_quota = 16 + size_of::<Override<Gcra>>() + entry_overhead::<u64, Override<Gcra>>();
        assert_eq!((size_of::<Override<Gcra>>(), per_quota), (56, 306));
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

    /// A key whose `Hash` panics at a chosen call, counted from when it is armed.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Touchy(u64);

    infra_common::sync::thread::thread_local! {
        static HASHES_UNTIL_PANIC: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }

    impl Hash for Touchy {
        fn hash<H: Hasher>(&self, state: &mut H) {
            HASHES_UNTIL_PANIC.with(|left| {
                if let Some(n) = left.get() {
                    assert!(n > 0, "Touchy's Hash panics as armed");
                    left.set(Some(n - 1));
                }
            });
            self.0.hash(state);
        }
    }

    /// Ten checks per second for up to 100 keys whose `Hash` can be made to panic.
    fn touchy_limiter() -> (ManualClock, KeyedRateLimiter<Touchy, Gcra, ManualClock>) {
        let clock = ManualClock::new();
        let options = KeyedOptions::default().max_keys(100);
        let quota = Quota::per_second(10).unwrap();
        let limiter = KeyedRateLimiter::with_options(quota, clock.clone(), options).unwrap();
        (clock, limiter)
    }

    /// A user's `Hash` that panics midway through a sweep (the keys before it already out of
    /// the map) must not leak their room: the cap would shrink for good, one panic at a time.
    #[test]
    fn a_panicking_hash_mid_sweep_gives_back_the_keys_already_forgotten() {
        let (clock, limiter) = touchy_limiter();
        for key in 0..50 {
            assert!(limiter.check(&Touchy(key)).unwrap().is_allowed());
        }
        clock.advance(Duration::from_secs(1));
        // Every key is idle now; the sweep forgets two, and the third key's `Hash` panics
        // while it is charged.
        HASHES_UNTIL_PANIC.with(|left| left.set(Some(2)));
        let swept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| limiter.sweep()));
        HASHES_UNTIL_PANIC.with(|left| left.set(None));
        assert!(swept.is_err());
        assert_eq!(limiter.sweep(), 48, "the rest are forgotten afterwards");
        assert_eq!(limiter.len(), 0, "every key's slot came back");
        assert_eq!(limiter.bytes(), 0, "every key's bytes came back");
    }

    /// Nor may a new key's reservation leak when its `Hash` panics while the key is
    /// inserted, at whichever of its hashes the panic comes.
    #[test]
    fn a_new_key_whose_hash_panics_gives_back_its_reservation() {
        let (clock, limiter) = touchy_limiter();
        let mut panicked = 0;
        for arm in 0..8 {
            HASHES_UNTIL_PANIC.with(|left| left.set(Some(arm)));
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                limiter.check(&Touchy(arm as u64))
            }));
            HASHES_UNTIL_PANIC.with(|left| left.set(None));
            panicked += usize::from(checked.is_err());
        }
        assert!(panicked >= 3, "the panic came at {panicked} of the hashes");
        clock.advance(Duration::from_secs(1));
        let forgotten = limiter.sweep();
        assert_eq!(
            (limiter.len(), limiter.bytes()),
            (0, 0),
            "{forgotten} keys were tracked; the others' room must have come back"
        );
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

    /// A tracked `u64` key costs its map entry and nothing else: 16 bytes, as governor's.
    #[test]
    fn a_u64_key_with_gcra_is_a_sixteen_byte_entry() {
        assert_eq!(size_of::<(u64, dashmap::SharedValue<Gcra>)>(), 16);
    }

    /// The README's "state per key" column: what each algorithm keeps for one key (a
    /// sliding-window log's cells are on the heap, beside it).
    #[test]
    fn each_algorithms_state_per_key_is_the_size_the_readme_gives() {
        assert_eq!(size_of::<Gcra>(), 8);
        assert_eq!(size_of::<TokenBucket>(), 8);
        assert_eq!(size_of::<FixedWindow>(), 32);
        assert_eq!(size_of::<crate::SlidingWindowCounter>(), 40);
        assert_eq!(size_of::<SlidingWindowLog>(), 48);
    }

    /// One sweep is a full turn over the map: every idle key is forgotten, every active one
    /// kept, and the bytes follow.
    #[test]
    fn a_sweep_forgets_every_idle_key_and_keeps_the_others() {
        let (clock, limiter) = limiter(1, 100_000);
        for key in 0..5_000 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        clock.advance(Duration::from_secs(1));
        for key in (0..5_000).step_by(3) {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        let per_key = limiter.bytes() / 5_000;
        assert_eq!(limiter.sweep(), 3_333);
        assert_eq!(limiter.len(), 1_667);
        assert_eq!(limiter.bytes(), 1_667 * per_key);
        for key in (0..5_000).step_by(3) {
            assert!(
                limiter.check(&key).unwrap().is_denied(),
                "key {key} kept its state"
            );
        }
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 1_667);
        assert_eq!((limiter.len(), limiter.bytes()), (0, 0));
    }

    /// The hand passes an active key again and again while new keys take the places of idle
    /// ones; the key is examined every time and forgotten never: its decisions stay those of
    /// a limiter of its own.
    #[test]
    fn an_active_key_is_never_forgotten_by_any_number_of_reclaims() {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
            Quota::per_second(10).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_keys(20),
        )
        .unwrap();
        let hourly = Quota::per_hour(100).unwrap();
        limiter.set_key_quota(&0, hourly).unwrap();
        let alone = crate::RateLimiter::gcra(hourly, clock.clone()).unwrap();
        let mut admitted_new = 0;
        for i in 1..=20_000 {
            clock.advance(Duration::from_millis(10));
            // A new key every 10 ms, idle 100 ms after its one request: the limiter is full,
            // and each new key needs an idle one reclaimed.
            if limiter.check(&i).is_ok() {
                admitted_new += 1;
            }
            if i % 100 == 0 {
                let (got, want) = (limiter.check(&0).unwrap(), alone.check());
                assert_eq!(
                    (got.is_allowed(), got.remaining()),
                    (want.is_allowed(), want.remaining()),
                    "after {i} new keys"
                );
            }
        }
        assert!(limiter.len() <= 20);
        assert!(admitted_new > 19_000, "{admitted_new} new keys found room");
    }

    /// What a key is charged when tracked comes back exactly when it is forgotten, for every
    /// algorithm, after the default quota and per-key quotas changed in between (a sliding
    /// log's charge depends on the quota it was created under, and grows with a raised one it
    /// is checked under).
    fn charges_come_back_exactly<A: Algorithm>() {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<u64, A, _>::with_clock(
            Quota::per_second(10).unwrap(),
            clock.clone(),
        )
        .unwrap();
        for key in (0..40).step_by(4) {
            limiter
                .set_key_quota(&key, Quota::per_second(100).unwrap())
                .unwrap();
        }
        for key in 0..40 {
            assert!(limiter.check(&key).unwrap().is_allowed(), "{}", A::NAME);
        }
        limiter
            .set_quota(Quota::per_second(1_000).unwrap())
            .unwrap();
        for key in 0..40 {
            match key % 4 {
                0 => limiter.clear_key_quota(&key),
                1 => limiter
                    .set_key_quota(&key, Quota::per_second(3).unwrap())
                    .unwrap(),
                _ => {}
            }
        }
        // Checked under the quotas now in force: a log charged for a smaller limit is charged
        // for the larger one now, and gives that back.
        for key in 0..40 {
            assert!(limiter.check(&key).unwrap().is_allowed(), "{}", A::NAME);
        }
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(limiter.sweep(), 40, "{}", A::NAME);
        let overrides = limiter.override_bytes.load(Ordering::Relaxed);
        assert!(overrides > 0);
        assert_eq!(limiter.bytes(), overrides, "{}", A::NAME);
        for key in 0..40 {
            limiter.clear_key_quota(&key);
        }
        assert_eq!(limiter.bytes(), 0, "{}", A::NAME);
    }

    /// A log tracked under a small limit grows to a raised one only once it is charged for
    /// it: while the byte cap has no room for that, it keeps to the limit it was charged for,
    /// so the cap still bounds what the logs hold.
    #[test]
    fn a_log_refused_the_bytes_for_a_raised_limit_keeps_the_limit_it_was_charged_for() {
        let clock = ManualClock::new();
        let small = Quota::per_second(4).unwrap();
        let large = Quota::per_second(1_000).unwrap();
        let grown = SlidingWindowLog::heap_bytes(
            &crate::fixed_window::WindowConfig::from_quota(&large).unwrap(),
        ) - SlidingWindowLog::heap_bytes(
            &crate::fixed_window::WindowConfig::from_quota(&small).unwrap(),
        );
        let per_key = key_bytes::<u64, u64>(&0)
            + state_charge::<u64, SlidingWindowLog>(SlidingWindowLog::heap_bytes(
                &crate::fixed_window::WindowConfig::from_quota(&small).unwrap(),
            ));
        // Room for three keys and for two of them to grow, not three.
        let max_bytes = 3 * per_key + 2 * grown + grown / 2;
        let limiter = KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_options(
            small,
            clock.clone(),
            KeyedOptions::default().max_bytes(max_bytes),
        )
        .unwrap();
        for key in 0..3 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
        assert_eq!(limiter.bytes(), 3 * per_key);
        limiter.set_quota(large).unwrap();
        for key in 0..2 {
            for cell in 1..1_000 {
                clock.advance(Duration::from_micros(1));
                let decision = limiter.check(&key).unwrap();
                assert!(decision.is_allowed(), "key {key}, cell {cell}");
                assert_eq!(decision.limit(), 1_000);
            }
            assert!(limiter.check(&key).unwrap().is_denied());
        }
        assert_eq!(limiter.bytes(), 3 * per_key + 2 * grown);
        // No room to grow the third: it admits what it was charged for, and says so.
        for _ in 1..4 {
            clock.advance(Duration::from_micros(1));
            assert!(limiter.check(&2).unwrap().is_allowed());
        }
        let refused = limiter.check(&2).unwrap();
        assert!(refused.is_denied());
        assert_eq!((refused.limit(), refused.remaining()), (4, 0));
        // More cells than it was charged for: admitted once there is room, not never.
        let more = limiter.check_n(&2, 10).unwrap();
        assert!(more.is_denied());
        assert_eq!(more.retry_after(), Decision::RETRY_SOON);
        assert_eq!(limiter.bytes(), 3 * per_key + 2 * grown);
        // Once the grown logs are forgotten there is room, and the third grows too.
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 3);
        assert_eq!(limiter.bytes(), 0);
        assert!(limiter.check(&0).unwrap().is_allowed());
        for _ in 0..10 {
            clock.advance(Duration::from_micros(1));
            assert!(limiter.check(&2).unwrap().is_allowed());
        }
        // Both new under the large quota, so charged for it.
        assert_eq!(limiter.bytes(), 2 * (per_key + grown));
    }

    #[test]
    fn forgetting_a_key_gives_back_exactly_its_charge_whatever_quotas_changed() {
        charges_come_back_exactly::<Gcra>();
        charges_come_back_exactly::<TokenBucket>();
        charges_come_back_exactly::<FixedWindow>();
        charges_come_back_exactly::<crate::SlidingWindowCounter>();
        charges_come_back_exactly::<SlidingWindowLog>();
    }

    /// One step of the model test: time passes, a key is checked, or the owner sweeps.
    #[derive(Clone, Debug)]
    enum Step {
        Wait(u64),
        Check(u64),
        Sweep,
    }

    // proptest's `prop_oneof!` expands to `std::sync::Arc`; this test-only strategy is not loom code.
    #[allow(clippy::disallowed_types)]
    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            2 => (0u64..1_500).prop_map(Step::Wait),
            6 => (0u64..12).prop_map(Step::Check),
            1 => Just(Step::Sweep),
        ]
    }

    proptest::proptest! {
        /// Against a reference that never forgets (a limiter per key ever admitted), with room
        /// for half the keys: every decision is the reference's, a refusal comes only at the
        /// cap, a sweep leaves exactly the keys the reference finds active, and the bytes are
        /// always the tracked keys' charges.
        #[test]
        fn the_tracked_keys_behave_as_an_unbounded_limiter(
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let quota = Quota::per_second(2).unwrap();
            let max_keys = 6;
            let clock = ManualClock::new();
            let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
                quota,
                clock.clone(),
                KeyedOptions::default().max_keys(max_keys),
            )
            .unwrap();
            let per_key = key_bytes::<u64, u64>(&0) + state_charge::<u64, Gcra>(0);
            let mut reference = std::collections::HashMap::new();
            for step in steps {
                match step {
                    Step::Wait(millis) => clock.advance(Duration::from_millis(millis)),
                    Step::Check(key) => match limiter.check(&key) {
                        Ok(got) => {
                            let want = reference
                                .entry(key)
                                .or_insert_with(|| {
                                    crate::RateLimiter::gcra(quota, clock.clone()).unwrap()
                                })
                                .check();
                            proptest::prop_assert_eq!(
                                (got.is_allowed(), got.remaining()),
                                (want.is_allowed(), want.remaining())
                            );
                        }
                        Err(Error::TooManyKeys { .. }) => {
                            proptest::prop_assert_eq!(limiter.len(), max_keys);
                        }
                        Err(other) => proptest::prop_assert!(false, "{other}"),
                    },
                    Step::Sweep => {
                        limiter.sweep();
                        let active = reference.values().filter(|r| !r.is_idle()).count();
                        proptest::prop_assert_eq!(limiter.len(), active);
                    }
                }
                proptest::prop_assert!(limiter.len() <= max_keys);
                proptest::prop_assert_eq!(limiter.bytes(), limiter.len() * per_key);
            }
        }
    }

    /// One step of the log's quota test: time passes, a key is checked for some cells, the
    /// default quota becomes one of a few limits, or the owner sweeps.
    #[derive(Clone, Debug)]
    enum LogStep {
        Wait(u64),
        Check(u64, u32),
        Quota(u32),
        Sweep,
    }

    // As `step`: proptest's `prop_oneof!` expands to `std::sync::Arc`.
    #[allow(clippy::disallowed_types)]
    fn log_step() -> impl proptest::strategy::Strategy<Value = LogStep> {
        use proptest::prelude::*;
        prop_oneof![
            2 => (0u64..400).prop_map(LogStep::Wait),
            8 => (0u64..4, 1u32..=4).prop_map(|(key, n)| LogStep::Check(key, n)),
            1 => prop::sample::select(vec![2u32, 8, 64, 300]).prop_map(LogStep::Quota),
            1 => Just(LogStep::Sweep),
        ]
    }

    proptest::proptest! {
        /// Whatever quotas come and go between checks, under a cap with room for only some
        /// logs to grow: the bytes are always the tracked keys' charges, within `max_bytes`,
        /// and no log holds more entries than the limit it is charged for.
        #[test]
        fn logs_stay_within_their_charge_across_quota_changes(
            steps in proptest::collection::vec(log_step(), 0..150),
        ) {
            let clock = ManualClock::new();
            let max_bytes = 20_000;
            let limiter = KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_options(
                Quota::per_second(2).unwrap(),
                clock.clone(),
                KeyedOptions::default().max_bytes(max_bytes),
            )
            .unwrap();
            for step in steps {
                match step {
                    LogStep::Wait(millis) => clock.advance(Duration::from_millis(millis)),
                    LogStep::Check(key, n) => {
                        clock.advance(Duration::from_micros(1));
                        match limiter.check_n(&key, n) {
                            Ok(_) | Err(Error::TooManyKeys { .. }) => {}
                            Err(Error::InsufficientCapacity { requested, capacity }) => {
                                proptest::prop_assert!(requested > capacity);
                            }
                            Err(other) => proptest::prop_assert!(false, "{other}"),
                        }
                    }
                    LogStep::Quota(limit) => {
                        limiter.set_quota(Quota::per_second(limit.into()).unwrap()).unwrap();
                    }
                    LogStep::Sweep => {
                        limiter.sweep();
                    }
                }
                let (mut charged, mut tracked, mut worst) = (0, 0, None);
                let scanned = limiter.states.scan(Position::START, usize::MAX, usize::MAX, None, |key, state| {
                    charged += tracked_charge(key, state);
                    tracked += 1;
                    // Entries of 16 bytes in a buffer of a power of two of them, at least 4.
                    let held = state.entries().max(4).next_power_of_two() * 16;
                    if held > state.charged_heap_bytes() {
                        worst = Some((*key, held, state.charged_heap_bytes()));
                    }
                    true
                });
                proptest::prop_assert!(scanned.wrapped);
                proptest::prop_assert_eq!(worst, None);
                proptest::prop_assert_eq!(tracked, limiter.len());
                proptest::prop_assert_eq!(limiter.bytes(), charged);
                proptest::prop_assert!(charged <= max_bytes);
            }
        }
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
