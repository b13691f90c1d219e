//! Keyed limiting: one limiter state per user, IP address or API key, in bounded memory.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use infra_common::{Clock, SystemClock};

use crate::algorithm::{Algorithm, AlgorithmConfig, ConfigCell};
use crate::store::Shards;
use crate::{Decision, Error, Gcra, Quota};

/// How many keys a keyed limiter tracks and how often it may scan for idle ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedOptions {
    max_keys: usize,
    sweep_interval: Duration,
}

impl KeyedOptions {
    /// Default cap on tracked keys: 1,000,000.
    pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
    /// Default least time between two automatic sweeps: one second.
    pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

    /// Tracks at most `max_keys` keys (at least 1).
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            ..self
        }
    }

    /// Sweeps for idle keys automatically at most once per `interval`, and only when the cap is
    /// reached. [`KeyedRateLimiter::sweep`] can always be called directly.
    #[must_use]
    pub fn sweep_interval(self, interval: Duration) -> Self {
        Self {
            sweep_interval: interval,
            ..self
        }
    }
}

impl Default for KeyedOptions {
    fn default() -> Self {
        Self {
            max_keys: Self::DEFAULT_MAX_KEYS,
            sweep_interval: Self::DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// A per-key quota set at run time, with its derived configuration.
#[derive(Clone, Copy, Debug)]
struct Override<A: Algorithm> {
    quota: Quota,
    config: A::Config,
}

/// One [`Algorithm`] state per key, in a sharded concurrent map, with per-key quotas and a hard
/// cap on memory.
///
/// - **Quotas.** Every key uses the default quota unless [`KeyedRateLimiter::set_key_quota`]
///   gave it its own. Both can change at run time ([`KeyedRateLimiter::set_quota`]); states are
///   kept, not reset.
/// - **Bounded memory.** At most `max_keys` keys are tracked (default one million). A key whose
///   state has fully recovered is *idle*: forgetting it changes no decision, since a new key
///   starts in the same state. [`KeyedRateLimiter::sweep`] drops idle keys; when the cap is
///   reached the limiter sweeps by itself (at most once per sweep interval). If the cap is
///   reached and no key is idle, a check on a **new** key returns [`Error::TooManyKeys`] rather
///   than forgetting the state of an active one — evicting active keys would let a client
///   reset its own limit by flooding the map with fresh keys. Known keys are unaffected.
/// - **Hashing.** The map uses infra-common's randomly keyed [`RandomState`](infra_common::RandomState),
///   so clients cannot choose keys that collide.
///
/// Memory: with GCRA each tracked key costs its key, one 8-byte state and the map's per-entry
/// overhead (see the crate README for measured figures).
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = KeyedRateLimiter::<String, Gcra, _>::with_clock(Quota::per_second(2)?, clock.clone())?;
/// limiter.set_key_quota("premium".to_string(), Quota::per_second(100)?)?;
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
    overrides: Shards<K, Override<A>>,
    override_count: AtomicUsize,
    default: ConfigCell<A>,
    options: KeyedOptions,
    /// Clock reading of the last automatic sweep, plus one (zero: never swept).
    last_sweep: AtomicU64,
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
    /// When the algorithm cannot represent the quota.
    pub fn with_clock(quota: Quota, clock: C) -> Result<Self, Error> {
        Self::with_options(quota, clock, KeyedOptions::default())
    }

    /// A keyed limiter on `clock` with `options`.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn with_options(quota: Quota, clock: C, options: KeyedOptions) -> Result<Self, Error> {
        Ok(Self {
            states: Shards::new(),
            tracked: AtomicUsize::new(0),
            overrides: Shards::new(),
            override_count: AtomicUsize::new(0),
            default: ConfigCell::new(&quota)?,
            options,
            last_sweep: AtomicU64::new(0),
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

    /// Decides on one request for `key`.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyKeys`] when `key` is new, the cap is reached and no key is idle.
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
    /// [`Error::TooManyKeys`] as for [`KeyedRateLimiter::check`].
    #[inline]
    pub fn check_n<Q>(&self, key: &Q, n: u32) -> Result<Decision, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        let config = self.config_for(key);
        let capacity = config.capacity();
        if n > capacity {
            return Err(Error::InsufficientCapacity {
                requested: n,
                capacity,
            });
        }
        // The clock is read while the key's entry is being fetched (see `Shards::with_meanwhile`).
        let (now, found) = self.states.with_meanwhile(
            key,
            || self.clock.now_nanos(),
            |state, &now| state.check_n(&config, now, n),
        );
        if let Some(decision) = found {
            #[cfg(feature = "metrics")]
            self.metrics.decisions.record(&decision);
            return Ok(decision);
        }
        if n == 0 {
            // A new key is at full capacity; asking costs nothing, so it is not tracked.
            let decision = A::new(&config, now).check_n(&config, now, 0);
            #[cfg(feature = "metrics")]
            self.metrics.decisions.record(&decision);
            return Ok(decision);
        }
        // Reserve a slot before taking the shard lock: the reservation may sweep, and a sweep
        // locks every shard.
        self.reserve_slot(now)?;
        let (decision, inserted) = self.states.with_or_insert(
            key.to_owned(),
            || A::new(&config, now),
            |state, inserted| (state.check_n(&config, now, n), inserted),
        );
        if !inserted {
            // Another thread inserted the key first; its slot counts, ours goes back.
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        self.metrics.decisions.record(&decision);
        Ok(decision)
    }

    fn reserve_slot(&self, now: u64) -> Result<(), Error> {
        let max_keys = self.options.max_keys;
        let mut swept = false;
        loop {
            let reserved =
                self.tracked
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tracked| {
                        (tracked < max_keys).then_some(tracked + 1)
                    });
            if reserved.is_ok() {
                return Ok(());
            }
            if swept || !self.claim_sweep(now) {
                #[cfg(feature = "metrics")]
                self.metrics.too_many_keys.increment(1);
                return Err(Error::TooManyKeys { max_keys });
            }
            self.sweep_at(now);
            swept = true;
        }
    }

    /// Whether this thread may run the automatic sweep now (at most one per interval).
    fn claim_sweep(&self, now: u64) -> bool {
        let interval = duration_to_nanos(self.options.sweep_interval);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if last != 0 && now.saturating_add(1) < last.saturating_add(interval) {
            return false;
        }
        self.last_sweep
            .compare_exchange(
                last,
                now.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Forgets every idle key (one whose state has fully recovered) and returns how many.
    ///
    /// Takes each shard's lock in turn; checks on other shards proceed meanwhile. Call it
    /// periodically to keep memory proportional to the active keys; it also runs by itself when
    /// the key cap is reached.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.clock.now_nanos())
    }

    fn sweep_at(&self, now: u64) -> usize {
        let has_overrides = self.override_count.load(Ordering::Relaxed) > 0;
        let default = self.default.config();
        let removed = self.states.retain(|key, state| {
            let config = if has_overrides {
                self.overrides.with(key, |o| o.config).unwrap_or(default)
            } else {
                default
            };
            !state.is_idle(&config, now)
        });
        self.tracked.fetch_sub(removed, Ordering::Relaxed);
        removed
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

    /// The default quota.
    pub fn quota(&self) -> Quota {
        self.default.quota()
    }

    /// Replaces the default quota for every key without its own; states are kept.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota; the old one stays in force.
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        self.default.store(&quota)
    }

    /// Gives `key` its own quota (replacing any earlier one); its state is kept.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn set_key_quota(&self, key: K, quota: Quota) -> Result<(), Error> {
        let config = A::Config::from_quota(&quota)?;
        if self
            .overrides
            .insert(key, Override { quota, config })
            .is_none()
        {
            self.override_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Returns `key` to the default quota.
    pub fn clear_key_quota<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.overrides.remove(key).is_some() {
            self.override_count.fetch_sub(1, Ordering::Relaxed);
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
            .field("overrides", &self.override_count.load(Ordering::Relaxed))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{SlidingWindowLog, TokenBucket};
    use infra_common::ManualClock;

    fn limiter(
        per_second: u64,
        max_keys: usize,
    ) -> (ManualClock, KeyedRateLimiter<u64, Gcra, ManualClock>) {
        let clock = ManualClock::new();
        let options = KeyedOptions::default()
            .max_keys(max_keys)
            .sweep_interval(Duration::from_secs(10));
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
    fn the_cap_refuses_new_keys_until_old_ones_are_idle() {
        let (clock, limiter) = limiter(1, 2);
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&2).unwrap().is_allowed());
        assert_eq!(limiter.check(&3), Err(Error::TooManyKeys { max_keys: 2 }));
        // Known keys keep working at the cap.
        assert!(limiter.check(&1).unwrap().is_denied());
        // The refused check above already used the automatic sweep (it found nothing idle);
        // the next one is allowed a sweep interval later, when both keys are idle.
        clock.advance(Duration::from_secs(9));
        assert_eq!(limiter.check(&3), Err(Error::TooManyKeys { max_keys: 2 }));
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(&3).unwrap().is_allowed());
        assert_eq!(limiter.len(), 1);
        // The sweep interval throttles the next automatic sweep.
        assert!(limiter.check(&4).unwrap().is_allowed());
        assert_eq!(limiter.check(&5), Err(Error::TooManyKeys { max_keys: 2 }));
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
            .set_key_quota(7, Quota::per_second(5).unwrap())
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
