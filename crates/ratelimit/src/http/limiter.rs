//! The one trait the HTTP layer asks for decisions, so any limiter can stand behind it: the
//! local [`KeyedRateLimiter`] and [`RateLimiter`] here, a Redis-backed one, or your own.

use std::future::{Future, Ready, ready};
use std::hash::Hash;
use std::time::Duration;

use infra_common::Clock;
use infra_common::sync::Arc;

use crate::{Algorithm, AlgorithmConfig, Decision, Error, KeyedRateLimiter, Quota, RateLimiter};

/// A limiter that the HTTP layer asks about each request.
///
/// Two questions: may `key` spend `cost` cells now ([`Limiter::decide`]), and what quota
/// does `key` live under, as the `RateLimit-Policy` field states it ([`Limiter::policy`]).
///
/// `decide` returns a future so that a limiter that asks a server (Redis) does not block the
/// thread serving requests; a limiter that decides in memory returns
/// [`std::future::Ready`]. The layer polls the future once where it is; only when the answer
/// is not there yet does it keep the future, and a clone of the inner service, for later.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::http::Limiter;
/// use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
///
/// let limiter =
///     KeyedRateLimiter::<String, Gcra, _>::with_clock(Quota::per_minute(60)?, ManualClock::new())?;
/// let key = "alice".to_owned();
/// // A local limiter's future is already resolved.
/// let decision = limiter.decide(&key, 1).into_inner()?;
/// assert_eq!(decision.remaining(), 59);
/// let policy = limiter.policy(&key);
/// assert_eq!((policy.quota(), policy.window_secs()), (60, 60));
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub trait Limiter<K>: Send + Sync + 'static {
    /// The future [`Limiter::decide`] returns. `Unpin`, so the layer can poll it in place and
    /// move it if it is still pending: box a future that is not (`Box::pin`).
    type Decide: Future<Output = Result<Decision, Error>> + Unpin + Send + 'static;

    /// Decides on a request of `cost` cells for `key`, consuming them if admitted.
    ///
    /// Errors the layer answers for: [`Error::InsufficientCapacity`] (the cost exceeds what the
    /// key may ever spend at once), [`Error::TooManyKeys`] (a new key that does not fit),
    /// [`Error::TooLarge`] (a key larger than the limiter accepts: a Redis limiter's
    /// `max_key_len`, a keyed limiter's byte cap; an unusable key, the client's error); any
    /// other error is answered as the limiter being unavailable.
    fn decide(&self, key: &K, cost: u32) -> Self::Decide;

    /// The quota `key` is limited by, as `RateLimit-Policy` advertises it.
    fn policy(&self, key: &K) -> QuotaPolicy;
}

/// A quota as the `RateLimit-Policy` field advertises it: `quota` units (`q`) that a client
/// may spend at once, and the `window` (`w`) in which a spent quota comes back entirely.
///
/// Draft 11 of the IETF `RateLimit` fields defines a quota as the capacity a client may
/// consume within a time window, and leaves the algorithm open. For every algorithm here,
/// [`QuotaPolicy::of`] takes the capacity (the burst of GCRA and the token bucket, the limit of
/// the window algorithms) and the time that capacity takes to come back once spent, as the
/// algorithm itself computes it: `burst × period / limit` for GCRA and the token bucket, the
/// period for the fixed window and the sliding log, two periods for the sliding counter (whose
/// previous window still counts). So a client may take either of the draft's strategies and be
/// admitted: spend `q` at once and wait `w`, or spread `q` evenly over `w`. The reading "limit
/// over period" would advertise more than GCRA admits at once when the burst is below the
/// limit; with the default burst (equal to the limit) both readings give the same numbers.
///
/// ```
/// use infra_ratelimit::http::QuotaPolicy;
/// use infra_ratelimit::{FixedWindow, Gcra, Quota};
/// use std::time::Duration;
///
/// // 100 per minute, at most 10 at once: 10 come back in 6 s.
/// let quota = Quota::per_minute(100)?.with_burst(10)?;
/// let gcra = QuotaPolicy::of::<Gcra>(&quota);
/// assert_eq!((gcra.quota(), gcra.window()), (10, Duration::from_secs(6)));
/// // A fixed window ignores the burst: 100 per minute.
/// let window = QuotaPolicy::of::<FixedWindow>(&quota);
/// assert_eq!((window.quota(), window.window_secs()), (100, 60));
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuotaPolicy {
    quota: u32,
    window: Duration,
}

impl QuotaPolicy {
    /// A policy of `quota` units that come back within `window` once spent.
    pub fn new(quota: u32, window: Duration) -> Self {
        Self { quota, window }
    }

    /// How algorithm `A` applies `quota`: its capacity, and how long that capacity takes to
    /// come back after being spent at once (see the type's documentation).
    ///
    /// A quota that `A` cannot represent (a limiter holding it could not have been built) is
    /// advertised as it reads: `limit` per `period`.
    pub fn of<A: Algorithm>(quota: &Quota) -> Self {
        let Ok(config) = A::Config::from_quota(quota) else {
            return Self::new(quota.limit(), quota.period());
        };
        let capacity = config.capacity();
        // Spending the whole capacity of a new state and reading when it is full again asks
        // the algorithm its own refill time, windows and rounding included.
        let spent = A::new(&config, 0).check_n(&config, 0, capacity);
        Self::new(capacity, spent.reset_after())
    }

    /// The units a client may spend at once (`q`).
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// The time a spent quota takes to come back entirely.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The `w` parameter: the window in whole seconds, rounded up, and at least 1 (the draft
    /// allows no zero or fractional window). Rounding up only ever advertises a slower rate.
    pub fn window_secs(&self) -> u64 {
        crate::decision::ceil_secs(self.window).max(1)
    }
}

impl<K, A, C> Limiter<K> for KeyedRateLimiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    A: Algorithm + 'static,
    C: Clock + 'static,
{
    type Decide = Ready<Result<Decision, Error>>;

    fn decide(&self, key: &K, cost: u32) -> Self::Decide {
        ready(self.check_n(key, cost))
    }

    fn policy(&self, key: &K) -> QuotaPolicy {
        QuotaPolicy::of::<A>(&self.quota_for(key))
    }
}

/// One limit for every key: a global limit behind the layer.
impl<K, A, C> Limiter<K> for RateLimiter<A, C>
where
    A: Algorithm + 'static,
    C: Clock + 'static,
{
    type Decide = Ready<Result<Decision, Error>>;

    fn decide(&self, _key: &K, cost: u32) -> Self::Decide {
        ready(self.check_n(cost))
    }

    fn policy(&self, _key: &K) -> QuotaPolicy {
        QuotaPolicy::of::<A>(&self.quota())
    }
}

/// A limiter shared with the rest of the service (to change quotas at run time).
impl<K, L: Limiter<K>> Limiter<K> for Arc<L> {
    type Decide = L::Decide;

    fn decide(&self, key: &K, cost: u32) -> Self::Decide {
        (**self).decide(key, cost)
    }

    fn policy(&self, key: &K) -> QuotaPolicy {
        (**self).policy(key)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{FixedWindow, Gcra, SlidingWindowCounter, SlidingWindowLog, TokenBucket};

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn every_algorithm_advertises_its_capacity_and_refill_time() {
        // 100 per minute, 10 at once: one cell every 600 ms.
        let quota = Quota::per_minute(100).unwrap().with_burst(10).unwrap();
        assert_eq!(
            QuotaPolicy::of::<Gcra>(&quota),
            QuotaPolicy::new(10, secs(6))
        );
        assert_eq!(
            QuotaPolicy::of::<TokenBucket>(&quota),
            QuotaPolicy::new(10, secs(6))
        );
        assert_eq!(
            QuotaPolicy::of::<FixedWindow>(&quota),
            QuotaPolicy::new(100, secs(60))
        );
        assert_eq!(
            QuotaPolicy::of::<SlidingWindowLog>(&quota),
            QuotaPolicy::new(100, secs(60))
        );
        assert_eq!(
            QuotaPolicy::of::<SlidingWindowCounter>(&quota),
            QuotaPolicy::new(100, secs(120))
        );
    }

    #[test]
    fn windows_round_up_to_whole_seconds_and_never_zero() {
        // 1000 per second, 10 at once: refilled in 10 ms, advertised as 1 s.
        let fast = Quota::per_second(1000).unwrap().with_burst(10).unwrap();
        let policy = QuotaPolicy::of::<Gcra>(&fast);
        assert_eq!(policy.window(), Duration::from_millis(10));
        assert_eq!(policy.window_secs(), 1);
        // 7 per hour: 3599.999999995 s, advertised as 3600.
        let slow = QuotaPolicy::of::<Gcra>(&Quota::per_hour(7).unwrap());
        assert!(slow.window() < secs(3600));
        assert_eq!(slow.window_secs(), 3600);
    }

    #[test]
    fn local_limiters_decide_at_once_and_report_per_key_quotas() {
        let clock = infra_common::ManualClock::new();
        let keyed =
            KeyedRateLimiter::<u32, Gcra, _>::with_clock(Quota::per_second(2).unwrap(), clock)
                .unwrap();
        keyed
            .set_key_quota(&7, Quota::per_second(50).unwrap())
            .unwrap();
        assert!(keyed.decide(&1, 2).into_inner().unwrap().is_allowed());
        assert!(keyed.decide(&1, 1).into_inner().unwrap().is_denied());
        assert_eq!(
            keyed.decide(&1, 3).into_inner(),
            Err(Error::InsufficientCapacity {
                requested: 3,
                capacity: 2
            })
        );
        assert_eq!(keyed.policy(&1), QuotaPolicy::new(2, secs(1)));
        assert_eq!(keyed.policy(&7), QuotaPolicy::new(50, secs(1)));

        let global = Arc::new(
            RateLimiter::gcra(
                Quota::per_second(1).unwrap(),
                infra_common::ManualClock::new(),
            )
            .unwrap(),
        );
        assert!(
            Limiter::<&str>::decide(&global, &"a", 1)
                .into_inner()
                .unwrap()
                .is_allowed()
        );
        assert!(
            Limiter::<&str>::decide(&global, &"b", 1)
                .into_inner()
                .unwrap()
                .is_denied()
        );
        assert_eq!(
            Limiter::<&str>::policy(&global, &"b"),
            QuotaPolicy::new(1, secs(1))
        );
    }
}
