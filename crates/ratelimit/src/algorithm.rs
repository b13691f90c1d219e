//! The one trait every rate-limiting algorithm implements, and the direct (unkeyed) limiter.

use std::fmt;

use infra_common::sync::atomic::{AtomicU64, Ordering, fence};
use infra_common::sync::{Mutex, spin_loop};
use infra_common::{Clock, SystemClock};

use crate::{Decision, Error, Gcra, NotUntil, Quota};

/// How many 64-bit words an algorithm's configuration may take when stored for lock-free
/// reading (see [`AlgorithmConfig::encode`]).
pub const CONFIG_WORDS: usize = 4;

/// An algorithm's configuration: everything derived once from a [`Quota`] that its decisions
/// need, packable into [`CONFIG_WORDS`] words so limiters can publish a new one to concurrent
/// readers without a lock.
///
/// Implemented by [`GcraConfig`](crate::GcraConfig),
/// [`TokenBucketConfig`](crate::TokenBucketConfig) and [`WindowConfig`](crate::WindowConfig)
/// (shared by the three window algorithms).
///
/// ```
/// use infra_ratelimit::{AlgorithmConfig, GcraConfig, Quota};
///
/// let config = GcraConfig::from_quota(&Quota::per_second(10)?.with_burst(4)?)?;
/// assert_eq!(config.capacity(), 4);
/// assert_eq!(GcraConfig::decode(config.encode()), config);
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub trait AlgorithmConfig: Copy + Send + Sync + fmt::Debug + PartialEq {
    /// Derives the configuration from a quota.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota (for example [`Error::RateTooLow`]).
    fn from_quota(quota: &Quota) -> Result<Self, Error>;

    /// Packs the configuration into words. `decode(encode(c)) == c`.
    fn encode(&self) -> [u64; CONFIG_WORDS];

    /// Unpacks what [`AlgorithmConfig::encode`] produced.
    fn decode(words: [u64; CONFIG_WORDS]) -> Self;

    /// The most cells one call can ever be granted; `check_n` callers must not ask for more.
    fn capacity(&self) -> u32;
}

/// A rate-limiting algorithm: the state of one limited thing (a whole service, or one key of a
/// keyed limiter) and the rule that decides on it.
///
/// The state holds no clock and no quota, only what must change per request, so a keyed
/// limiter pays for it once per key. The configuration, derived once from a [`Quota`], is
/// passed to every call; the limiters keep it where it can be replaced at run time
/// ([`RateLimiter::set_quota`]) without touching any state.
///
/// Implemented by [`Gcra`] (the default), [`TokenBucket`](crate::TokenBucket),
/// [`FixedWindow`](crate::FixedWindow), [`SlidingWindowCounter`](crate::SlidingWindowCounter)
/// and [`SlidingWindowLog`](crate::SlidingWindowLog). Every implementation follows the same
/// contract:
///
/// - a denied request consumes nothing;
/// - `n = 0` is always allowed and consumes nothing;
/// - time readings may arrive slightly out of order from racing threads; a reading older than
///   the state's never adds capacity;
/// - a state for which [`Algorithm::is_idle`] holds under a configuration decides exactly like
///   a new one under it, so it can be forgotten (a later configuration may tell them apart).
pub trait Algorithm: Send + Sync + fmt::Debug + Sized {
    /// Everything derived from a quota that the decision needs.
    type Config: AlgorithmConfig;

    /// A short name, for logs and tables.
    const NAME: &'static str;

    /// A state at full capacity, as of `now` (nanoseconds of the limiter's clock).
    fn new(config: &Self::Config, now: u64) -> Self;

    /// Decides on `n` cells at time `now`, consuming them if admitted.
    ///
    /// `n` must not exceed [`AlgorithmConfig::capacity`]; a larger `n` is denied, never a panic.
    fn check_n(&self, config: &Self::Config, now: u64, n: u32) -> Decision;

    /// Whether this state is indistinguishable from a new one at `now` under `config`: every
    /// later decision under `config` would be the same if it were dropped and recreated.
    fn is_idle(&self, config: &Self::Config, now: u64) -> bool;

    /// The most heap memory, in bytes, one state may hold under `config` (beyond
    /// `size_of::<Self>()`); keyed limiters charge it against their byte cap. Zero unless the
    /// state allocates.
    fn heap_bytes(config: &Self::Config) -> usize {
        let _ = config;
        0
    }

    /// [`Algorithm::heap_bytes`] under the configuration this state was created with
    /// ([`Algorithm::new`]), or under a later one it was charged for
    /// ([`Algorithm::check_n_charged`]), whatever the configuration is now: a keyed limiter
    /// charged that much for the state, and gives exactly that back when it forgets the key,
    /// so a quota changed in between leaves no bytes behind. A state whose `heap_bytes`
    /// depends on the configuration remembers what it needs for this (the sliding-window log
    /// keeps the largest limit it was charged for); zero by default, as `heap_bytes` is.
    fn charged_heap_bytes(&self) -> usize {
        0
    }

    /// [`Algorithm::check_n`] for a state a keyed limiter charges against its byte cap. A state
    /// that may hold more heap memory under `config` than it was charged
    /// ([`Algorithm::charged_heap_bytes`], after a quota was raised) first asks `charge` for the
    /// difference, and from then on is charged that much more; refused, it decides as under the
    /// configuration it was charged for, so that it never holds more than its charge. The
    /// default, for states whose heap memory does not depend on the configuration, is
    /// `check_n`.
    fn check_n_charged(
        &self,
        config: &Self::Config,
        now: u64,
        n: u32,
        charge: impl FnOnce(usize) -> bool,
    ) -> Decision {
        let _ = charge;
        self.check_n(config, now, n)
    }
}

/// An algorithm configuration (and the quota it came from) that many threads read on every
/// check and an owner may replace at any time.
///
/// A sequence lock over atomic words: readers take no lock and write nothing, so the hot path
/// stays contention-free; a writer bumps the sequence to odd, writes, and bumps it to even, and a
/// reader that saw the sequence change retries. All words are atomics, so a torn read is never
/// undefined behaviour, only discarded.
pub(crate) struct ConfigCell<A: Algorithm> {
    sequence: AtomicU64,
    words: [AtomicU64; CONFIG_WORDS + 2],
    writer: Mutex<()>,
    _algorithm: std::marker::PhantomData<fn() -> A>,
}

impl<A: Algorithm> ConfigCell<A> {
    pub(crate) fn new(quota: &Quota) -> Result<Self, Error> {
        let config = A::Config::from_quota(quota)?;
        let words = Self::pack(quota, &config);
        Ok(Self {
            sequence: AtomicU64::new(0),
            words: words.map(AtomicU64::new),
            writer: Mutex::new(()),
            _algorithm: std::marker::PhantomData,
        })
    }

    fn pack(quota: &Quota, config: &A::Config) -> [u64; CONFIG_WORDS + 2] {
        let mut words = [0; CONFIG_WORDS + 2];
        words[..CONFIG_WORDS].copy_from_slice(&config.encode());
        words[CONFIG_WORDS] = (u64::from(quota.limit()) << 32) | u64::from(quota.burst());
        words[CONFIG_WORDS + 1] = quota.period_nanos();
        words
    }

    /// Reads `N` consecutive words from `offset`, consistently.
    #[inline]
    fn read<const N: usize>(&self, offset: usize) -> [u64; N] {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before & 1 == 0 {
                let words = std::array::from_fn(|i| self.words[offset + i].load(Ordering::Relaxed));
                // Orders the word loads before the second sequence load (the reader side of
                // the writer's release fence).
                fence(Ordering::Acquire);
                if self.sequence.load(Ordering::Relaxed) == before {
                    return words;
                }
            }
            spin_loop();
        }
    }

    #[inline]
    pub(crate) fn config(&self) -> A::Config {
        A::Config::decode(self.read::<CONFIG_WORDS>(0))
    }

    pub(crate) fn quota(&self) -> Quota {
        let [rates, period] = self.read::<2>(CONFIG_WORDS);
        let limit = rates >> 32;
        let burst = rates & u64::from(u32::MAX);
        let period = std::time::Duration::from_nanos(period);
        // The words were packed from a valid quota, so rebuilding it cannot fail.
        Quota::new(limit, period)
            .and_then(|q| q.with_burst(burst))
            .unwrap_or_else(|_| unreachable!("a stored quota is valid"))
    }

    pub(crate) fn store(&self, quota: &Quota) -> Result<(), Error> {
        let config = A::Config::from_quota(quota)?;
        let words = Self::pack(quota, &config);
        let _writer = self.writer.lock();
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        // Orders the odd sequence before the word stores, so a reader that sees any new word
        // also sees the odd (or a later) sequence and retries.
        fence(Ordering::Release);
        for (slot, word) in self.words.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.sequence.store(sequence + 2, Ordering::Release);
        Ok(())
    }
}

impl<A: Algorithm> fmt::Debug for ConfigCell<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigCell")
            .field("quota", &self.quota())
            .field("config", &self.config())
            .finish()
    }
}

/// One limiter for one thing (a whole service, one upstream): an [`Algorithm`]'s state, its
/// configuration and a clock.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{Quota, RateLimiter, TokenBucket};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::gcra(Quota::per_second(5)?, clock.clone())?;
/// assert_eq!((0..10).filter(|_| limiter.check().is_allowed()).count(), 5);
/// clock.advance(Duration::from_millis(200));
/// assert!(limiter.check().is_allowed()); // one cell refilled every 200 ms
///
/// // Any algorithm, same API:
/// let bucket = RateLimiter::<TokenBucket, _>::with_clock(Quota::per_second(5)?, clock)?;
/// assert!(bucket.check_n(5)?.is_allowed());
/// assert!(bucket.check_n(6).is_err()); // more than the burst: an error, not a denial
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub struct RateLimiter<A: Algorithm = Gcra, C: Clock = SystemClock> {
    state: OwnLines<A>,
    config: ConfigCell<A>,
    clock: C,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::DecisionCounters,
}

/// Keeps a value on cache lines of its own (two 64-byte lines: some CPUs fetch lines in
/// adjacent pairs).
///
/// A direct limiter's state is written by every admitted check while its configuration is read
/// by every check: sharing a line, each write on one core would evict the configuration from
/// the others' caches.
#[derive(Debug)]
#[repr(align(128))]
struct OwnLines<T>(T);

impl<T> std::ops::Deref for OwnLines<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl RateLimiter {
    /// A GCRA limiter on the system clock.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn new(quota: Quota) -> Result<Self, Error> {
        Self::with_clock(quota, SystemClock::new())
    }
}

impl<C: Clock> RateLimiter<Gcra, C> {
    /// A GCRA limiter on `clock`.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn gcra(quota: Quota, clock: C) -> Result<Self, Error> {
        Self::with_clock(quota, clock)
    }
}

impl<A: Algorithm, C: Clock> RateLimiter<A, C> {
    /// A limiter running algorithm `A` on `clock`, at full capacity.
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the quota.
    pub fn with_clock(quota: Quota, clock: C) -> Result<Self, Error> {
        let config = ConfigCell::new(&quota)?;
        let state = OwnLines(A::new(&config.config(), clock.now_nanos()));
        Ok(Self {
            state,
            config,
            clock,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::DecisionCounters::unnamed(),
        })
    }

    /// Names this limiter in its metrics (the `limiter` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    ///
    /// ```
    /// use infra_ratelimit::{Quota, RateLimiter};
    ///
    /// let limiter = RateLimiter::new(Quota::per_second(100)?)?.with_metrics_name("search");
    /// assert!(limiter.check().is_allowed());
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::DecisionCounters::new(name.into());
        self
    }

    /// Decides on one request.
    #[inline]
    #[must_use = "a rate-limit decision that is never read limits nothing"]
    pub fn check(&self) -> Decision {
        self.decide_one().1
    }

    /// Decides on one request, returning a denial as an error: `limiter.try_check()?` ends the
    /// caller's function when the request is denied.
    ///
    /// ```
    /// use infra_ratelimit::{NotUntil, Quota, RateLimiter};
    ///
    /// fn handle(limiter: &RateLimiter) -> Result<(), NotUntil> {
    ///     limiter.try_check()?;
    ///     // ... serve the request ...
    ///     Ok(())
    /// }
    ///
    /// let limiter = RateLimiter::new(Quota::per_minute(1)?)?;
    /// assert!(handle(&limiter).is_ok());
    /// let denied = handle(&limiter).unwrap_err();
    /// assert!(denied.retry_after().as_secs() > 50); // a request per minute
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`NotUntil`] when the request is denied: when it could be admitted, and the decision.
    #[inline]
    pub fn try_check(&self) -> Result<(), NotUntil> {
        let (now, decision) = self.decide_one();
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(NotUntil::new(decision, now))
        }
    }

    /// Decides on one cell, which every configuration admits at once (no capacity check).
    ///
    /// The clock is read before the configuration: the reading is a call, and words loaded
    /// before it would have to be kept in callee-saved registers across it (saved and restored
    /// on every check).
    #[inline]
    fn decide_one(&self) -> (u64, Decision) {
        let now = self.clock.now_nanos();
        (now, self.decide(&self.config.config(), now, 1))
    }

    /// Decides on `n` cells under `config` at clock reading `now`, and counts the decision.
    #[inline]
    fn decide(&self, config: &A::Config, now: u64, n: u32) -> Decision {
        let decision = self.state.check_n(config, now, n);
        #[cfg(feature = "metrics")]
        self.metrics.record(&decision);
        decision
    }

    /// Decides on `n` cells at once: all admitted, or none.
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] when `n` exceeds [`RateLimiter::capacity`]: such a
    /// request could never be admitted.
    #[inline]
    pub fn check_n(&self, n: u32) -> Result<Decision, Error> {
        let config = self.config.config();
        Error::within_capacity(n, config.capacity())?;
        Ok(self.decide(&config, self.clock.now_nanos(), n))
    }

    /// The most cells one call can be granted.
    pub fn capacity(&self) -> u32 {
        self.config.config().capacity()
    }

    /// The current quota.
    pub fn quota(&self) -> Quota {
        self.config.quota()
    }

    /// Replaces the quota without resetting the state: what was consumed stays consumed
    /// (see each algorithm for how its state reads under the new quota).
    ///
    /// # Errors
    ///
    /// When the algorithm cannot represent the new quota; the old one stays in force.
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        self.config.store(&quota)
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Whether the limiter is at full capacity (as if new).
    pub fn is_idle(&self) -> bool {
        self.state
            .is_idle(&self.config.config(), self.clock.now_nanos())
    }
}

impl<A: Algorithm, C: Clock> fmt::Debug for RateLimiter<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("algorithm", &A::NAME)
            .field("quota", &self.config.quota())
            .field("state", &self.state.0)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{FixedWindow, SlidingWindowCounter, SlidingWindowLog, TokenBucket};
    use std::mem::size_of;

    /// The per-key state sizes the README's table promises.
    #[test]
    fn state_sizes_are_as_documented() {
        assert_eq!(size_of::<Gcra>(), 8);
        assert_eq!(size_of::<TokenBucket>(), 8);
        assert_eq!(size_of::<FixedWindow>(), 32);
        assert_eq!(size_of::<SlidingWindowCounter>(), 40);
        assert_eq!(size_of::<SlidingWindowLog>(), 48);
    }

    #[test]
    fn configs_survive_encoding() {
        let quota = Quota::per_minute(90).unwrap().with_burst(7).unwrap();
        let cell = ConfigCell::<crate::TokenBucket>::new(&quota).unwrap();
        assert_eq!(cell.quota(), quota);
        assert_eq!(
            cell.config(),
            crate::TokenBucketConfig::from_quota(&quota).unwrap()
        );
        let other = Quota::per_second(3).unwrap();
        cell.store(&other).unwrap();
        assert_eq!(cell.quota(), other);
        assert!(format!("{cell:?}").contains("ConfigCell"));
    }
}
