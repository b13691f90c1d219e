//! A token bucket with exact, continuous refill, in one atomic word.

use std::time::Duration;

use infra_common::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::{Algorithm, AlgorithmConfig, CONFIG_WORDS};
use crate::{Decision, Error, Quota};

/// Added to every stored instant so that "empty since" instants up to one burst duration
/// before the clock's zero are representable: at least the longest burst duration a quota
/// accepts (2^61 ns).
const BIAS: u128 = 1 << 61;

/// A token bucket: `burst` tokens of capacity, refilled continuously at `limit` per `period`.
///
/// Semantics: the bucket holds `tokens = min(burst, (now − empty_since) / interval)`, where
/// `empty_since` is the instant at which it last held no token; refill is exact to the
/// nanosecond, so no token is lost between checks however often or rarely they come.
/// `check_n(n)` takes `n` tokens if that many are available (moving `empty_since` forward by
/// `n` intervals), otherwise it is denied and takes nothing. Fractions of a token carry over:
/// a quota of one token every 3 s has a third of a token after one second.
///
/// After [`RateLimiter::set_quota`](crate::RateLimiter::set_quota) the bucket keeps
/// `empty_since`: it holds what the new rate refills in the time since it was last empty, up
/// to the new burst. A drained bucket stays drained and its next token comes one new interval
/// after it drained; a full one stays full unless the new quota takes longer to fill it (a
/// larger burst or a lower rate), and then holds what the new rate refilled since it was last
/// empty (a bucket never used was last empty one fill time of its first quota before it was
/// made); it never stops refilling (compare [`Gcra`](crate::Gcra), which keeps the time until
/// full recovery instead, so a recovered state is full under any quota).
///
/// The state is one `AtomicU64` (`empty_since` in clock nanoseconds, offset so that it never
/// goes below zero), updated with one compare-and-swap, with no tick counter to wrap: a bucket
/// idle for any length of time reads as full. Admission is the same rule as GCRA's for an
/// unchanged quota; the two differ only in what they keep across a quota change.
#[derive(Debug)]
pub struct TokenBucket {
    /// `empty_since + BIAS`, in clock nanoseconds.
    empty_since: AtomicU64,
}

/// The token bucket's configuration: the refill interval and the capacity, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// Nanoseconds per token.
    pub interval: u64,
    /// `burst × interval`: time for an empty bucket to fill.
    pub fill_time: u64,
    /// Capacity in tokens.
    pub burst: u32,
}

impl AlgorithmConfig for TokenBucketConfig {
    fn from_quota(quota: &Quota) -> Result<Self, Error> {
        Ok(Self {
            interval: quota.interval_nanos(),
            fill_time: quota.burst_nanos(),
            burst: quota.burst(),
        })
    }

    fn encode(&self) -> [u64; CONFIG_WORDS] {
        [self.interval, self.fill_time, u64::from(self.burst), 0]
    }

    #[inline]
    fn decode(words: [u64; CONFIG_WORDS]) -> Self {
        Self {
            interval: words[0].max(1),
            fill_time: words[1],
            burst: u32::try_from(words[2]).unwrap_or(u32::MAX),
        }
    }

    fn capacity(&self) -> u32 {
        self.burst
    }
}

fn nanos(value: u128) -> Duration {
    Duration::from_nanos(u64::try_from(value).unwrap_or(u64::MAX))
}

impl TokenBucket {
    /// Nanoseconds of refill held at `now` (at most the fill time): `now − empty_since`.
    #[inline]
    fn held(config: &TokenBucketConfig, stored: u64, now: u64) -> u128 {
        // An older reading than the one that stored `empty_since` holds less, never more.
        (u128::from(now) + BIAS)
            .saturating_sub(u128::from(stored))
            .min(u128::from(config.fill_time))
    }

    /// Nanoseconds by which `now` is older than `empty_since` (a racing thread's reading, or
    /// a clock stepped back): the bucket holds nothing until then, so every wait told at `now`
    /// is that much longer.
    #[inline]
    fn behind(stored: u64, now: u64) -> u128 {
        u128::from(stored).saturating_sub(u128::from(now) + BIAS)
    }
}

impl Algorithm for TokenBucket {
    type Config = TokenBucketConfig;
    const NAME: &'static str = "token_bucket";

    fn new(config: &TokenBucketConfig, now: u64) -> Self {
        let empty_since = u128::from(now) + BIAS - u128::from(config.fill_time);
        Self {
            empty_since: AtomicU64::new(u64::try_from(empty_since).unwrap_or(u64::MAX)),
        }
    }

    #[inline]
    fn check_n(&self, config: &TokenBucketConfig, now: u64, n: u32) -> Decision {
        let interval = u128::from(config.interval);
        let fill_time = u128::from(config.fill_time);
        let tokens = |held: u128| u32::try_from(held / interval).unwrap_or(u32::MAX);
        let cost = u128::from(n) * interval;
        // Relaxed: the decision depends on this word only (see `Gcra::check_n`).
        let mut stored = self.empty_since.load(Ordering::Relaxed);
        loop {
            let held = Self::held(config, stored, now);
            if n == 0 {
                let full_in = fill_time - held + Self::behind(stored, now);
                return Decision::allowed(config.burst, tokens(held), nanos(full_in));
            }
            let next = (u128::from(now) + BIAS + cost).checked_sub(held);
            let next = next.and_then(|next| u64::try_from(next).ok());
            let (true, Some(next)) = (cost <= held, next) else {
                let behind = Self::behind(stored, now);
                let retry = if cost > fill_time || next.is_none() {
                    Duration::MAX
                } else {
                    nanos(cost - held + behind)
                };
                return Decision::denied(
                    config.burst,
                    tokens(held),
                    retry,
                    nanos(fill_time - held + behind),
                );
            };
            match self.empty_since.compare_exchange_weak(
                stored,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let left = held - cost;
                    return Decision::allowed(config.burst, tokens(left), nanos(fill_time - left));
                }
                Err(actual) => stored = actual,
            }
        }
    }

    fn is_idle(&self, config: &TokenBucketConfig, now: u64) -> bool {
        Self::held(config, self.empty_since.load(Ordering::Relaxed), now)
            >= u128::from(config.fill_time)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::RateLimiter;
    use infra_common::ManualClock;

    #[test]
    fn config_is_the_interval_and_the_fill_time() {
        let quota = Quota::per_second(4).unwrap().with_burst(3).unwrap();
        let c = TokenBucketConfig::from_quota(&quota).unwrap();
        assert_eq!(
            (c.interval, c.fill_time, c.burst),
            (250_000_000, 750_000_000, 3)
        );
        assert_eq!(TokenBucketConfig::decode(c.encode()), c);
        let slow = Quota::new(1, crate::quota::MAX_PERIOD).unwrap();
        assert!(TokenBucketConfig::from_quota(&slow).is_ok());
    }

    #[test]
    fn fractional_tokens_accrue_between_whole_tokens() {
        let clock = ManualClock::new();
        let quota = Quota::new(1, Duration::from_secs(3)).unwrap();
        let bucket = RateLimiter::<TokenBucket, _>::with_clock(quota, clock.clone()).unwrap();
        assert!(bucket.check().is_allowed());
        let denied = bucket.check();
        assert!(denied.is_denied());
        let wait = denied.retry_after();
        assert!(wait > Duration::from_millis(2900) && wait <= Duration::from_millis(3100));
        clock.advance(wait - Duration::from_nanos(1));
        assert!(bucket.check().is_denied());
        clock.advance(Duration::from_nanos(1));
        assert!(bucket.check().is_allowed());
    }

    #[test]
    fn burst_is_configurable_and_denials_take_nothing() {
        let clock = ManualClock::new();
        let quota = Quota::per_second(100).unwrap().with_burst(10).unwrap();
        let bucket = RateLimiter::<TokenBucket, _>::with_clock(quota, clock.clone()).unwrap();
        assert!(bucket.check_n(8).unwrap().is_allowed());
        assert!(bucket.check_n(3).unwrap().is_denied());
        assert_eq!(bucket.check_n(2).unwrap().remaining(), 0);
        assert!(matches!(
            bucket.check_n(11),
            Err(Error::InsufficientCapacity { .. })
        ));
        clock.advance(Duration::from_millis(200));
        assert!(bucket.is_idle());
    }

    #[test]
    fn a_stale_reading_adds_nothing_and_clock_readings_near_the_end_never_overflow() {
        let config = TokenBucketConfig::from_quota(&Quota::per_second(10).unwrap()).unwrap();
        let bucket = TokenBucket::new(&config, 1_000_000_000);
        assert!(bucket.check_n(&config, 1_000_000_000, 10).is_allowed());
        // A racing thread's reading from before the last update refills nothing.
        assert!(bucket.check_n(&config, 500_000_000, 1).is_denied());
        assert!(bucket.check_n(&config, 1_000_000_000, 1).is_denied());
        assert!(bucket.check_n(&config, 1_100_000_000, 1).is_allowed());
        // n above the burst, and readings where the next instant no longer fits, are denials.
        assert_eq!(
            bucket.check_n(&config, 9_000_000_000, 11).retry_after(),
            Duration::MAX
        );
        let end = TokenBucket::new(&config, u64::MAX);
        let last = end.check_n(&config, u64::MAX, 1);
        assert!(last.is_denied() && last.remaining() == 10, "{last:?}");
    }
}
