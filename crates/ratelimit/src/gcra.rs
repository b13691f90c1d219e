//! GCRA: the generic cell rate algorithm, lock-free in one atomic word.
//!
//! The virtual-scheduling form of ITU-T I.371 §4.4.2: the state is the *theoretical arrival
//! time* (TAT), the instant at which the limiter would be back at full capacity. With emission
//! interval `T = period / limit` and burst `b`, a request for `n` cells at time `now` is admitted
//! when
//!
//! ```text
//! max(TAT, now) + n·T − now ≤ b·T
//! ```
//!
//! and then `TAT := max(TAT, now) + n·T`. A denied request leaves TAT unchanged: it consumes
//! nothing. A limiter idle for `b·T` admits exactly `b` back-to-back cells, then one every `T`.
//! This is the same rule as a continuously refilled token bucket of capacity `b`, stored as one
//! number, which is why it fits in a single compare-and-swap.

use std::time::Duration;

use infra_common::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::{Algorithm, AlgorithmConfig, CONFIG_WORDS};
use crate::{Decision, Error, Quota};

/// The generic cell rate algorithm: one `AtomicU64` per limited thing, one compare-and-swap
/// per admitted request, no lock. The default algorithm.
///
/// Semantics: capacity is the quota's burst `b`; it refills continuously at one cell per
/// emission interval `T`. `check_n(n)` is admitted when `n` cells are available, and denial
/// consumes nothing. `retry_after` is exact: at `now + retry_after` the same request is
/// admitted if nothing else ran. After [`RateLimiter::set_quota`](crate::RateLimiter::set_quota)
/// the time until full recovery (`reset_after`) is kept, so a client halfway through its burst
/// stays halfway through it when the rate and burst scale together.
#[derive(Debug)]
pub struct Gcra {
    /// The theoretical arrival time, in clock nanoseconds. Zero (or anything ≤ now) is "full".
    tat: AtomicU64,
}

/// GCRA's configuration: the emission interval and the burst tolerance, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraConfig {
    /// `T`, nanoseconds per cell.
    pub interval: u64,
    /// `b·T`, the most debt the limiter tolerates.
    pub tolerance: u64,
    /// `b`.
    pub burst: u32,
}

impl AlgorithmConfig for GcraConfig {
    fn from_quota(quota: &Quota) -> Result<Self, Error> {
        Ok(Self {
            interval: quota.interval_nanos(),
            tolerance: quota.burst_nanos(),
            burst: quota.burst(),
        })
    }

    fn encode(&self) -> [u64; CONFIG_WORDS] {
        [self.interval, self.tolerance, u64::from(self.burst), 0]
    }

    #[inline]
    fn decode(words: [u64; CONFIG_WORDS]) -> Self {
        Self {
            interval: words[0].max(1),
            tolerance: words[1],
            burst: u32::try_from(words[2]).unwrap_or(u32::MAX),
        }
    }

    fn capacity(&self) -> u32 {
        self.burst
    }
}

impl Gcra {
    /// The theoretical arrival time (clock nanoseconds at which the state is full again).
    pub fn theoretical_arrival(&self) -> u64 {
        self.tat.load(Ordering::Relaxed)
    }
}

#[inline]
fn remaining(config: &GcraConfig, debt: u64) -> u32 {
    let cells = config.tolerance.saturating_sub(debt) / config.interval;
    u32::try_from(cells).unwrap_or(u32::MAX)
}

impl Algorithm for Gcra {
    type Config = GcraConfig;
    const NAME: &'static str = "gcra";

    fn new(_config: &GcraConfig, _now: u64) -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    #[inline]
    fn check_n(&self, config: &GcraConfig, now: u64, n: u32) -> Decision {
        // Relaxed is enough: the decision depends on this one word only, and compare-and-swap
        // operations on one location are totally ordered, so every admitted request sees the
        // debt left by every request admitted before it. No other memory is published.
        let mut tat = self.tat.load(Ordering::Relaxed);
        // Beyond u64 only for an `n` far above the burst (which `RateLimiter` refuses first):
        // such a request can never be admitted.
        let cost = u64::from(n).checked_mul(config.interval);
        loop {
            let base = tat.max(now);
            let debt = base - now;
            if n == 0 {
                return Decision::allowed(
                    config.burst,
                    remaining(config, debt),
                    Duration::from_nanos(debt),
                );
            }
            let Some(cost) = cost else {
                return Decision::denied(
                    config.burst,
                    remaining(config, debt),
                    Duration::MAX,
                    Duration::from_nanos(debt),
                );
            };
            let Some(new_tat) = base.checked_add(cost) else {
                // Only at clock readings near 2^64 ns (584 years): refuse rather than wrap.
                return Decision::denied(config.burst, 0, Duration::MAX, Duration::MAX);
            };
            let debt_after = new_tat - now;
            if debt_after > config.tolerance {
                // More cells than the burst are never admitted: no wait would be enough.
                let retry = if cost > config.tolerance {
                    Duration::MAX
                } else {
                    Duration::from_nanos(debt_after - config.tolerance)
                };
                return Decision::denied(
                    config.burst,
                    remaining(config, debt),
                    retry,
                    Duration::from_nanos(debt),
                );
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Decision::allowed(
                        config.burst,
                        remaining(config, debt_after),
                        Duration::from_nanos(debt_after),
                    );
                }
                Err(actual) => tat = actual,
            }
        }
    }

    fn is_idle(&self, _config: &GcraConfig, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::RateLimiter;
    use infra_common::ManualClock;

    #[test]
    fn burst_then_one_per_interval() {
        let clock = ManualClock::new();
        let quota = Quota::per_second(10).unwrap().with_burst(3).unwrap();
        let limiter = RateLimiter::gcra(quota, clock.clone()).unwrap();
        let first = limiter.check();
        assert!(first.is_allowed());
        assert_eq!((first.limit(), first.remaining()), (3, 2));
        assert_eq!(first.reset_after(), Duration::from_millis(100));
        assert!(limiter.check().is_allowed());
        assert!(limiter.check().is_allowed());
        let denied = limiter.check();
        assert!(denied.is_denied());
        assert_eq!(denied.retry_after(), Duration::from_millis(100));
        assert_eq!(denied.reset_after(), Duration::from_millis(300));
        clock.advance(Duration::from_millis(99));
        assert!(limiter.check().is_denied());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check().is_allowed());
        assert!(limiter.check().is_denied());
    }

    #[test]
    fn denial_consumes_nothing_and_n_above_burst_is_an_error() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::gcra(Quota::per_second(4).unwrap(), clock.clone()).unwrap();
        assert!(limiter.check_n(3).unwrap().is_allowed());
        let denied = limiter.check_n(2).unwrap();
        assert!(denied.is_denied());
        assert_eq!(denied.remaining(), 1);
        assert_eq!(denied.retry_after(), Duration::from_millis(250));
        assert!(limiter.check_n(1).unwrap().is_allowed());
        assert_eq!(
            limiter.check_n(5),
            Err(Error::InsufficientCapacity {
                requested: 5,
                capacity: 4
            })
        );
        assert!(limiter.check_n(0).unwrap().is_allowed());
        clock.advance(Duration::from_secs(1));
        assert!(limiter.is_idle());
    }

    #[test]
    fn a_huge_n_is_denied_not_wrapped() {
        // u32::MAX cells of an hour each: 2^73 ns, far past u64.
        let config = GcraConfig::from_quota(&Quota::per_hour(1).unwrap()).unwrap();
        let state = Gcra::new(&config, 0);
        for now in [0, 1 << 40, u64::MAX] {
            let decision = state.check_n(&config, now, u32::MAX);
            assert!(decision.is_denied(), "{decision:?}");
            assert_eq!(decision.retry_after(), Duration::MAX);
        }
        assert!(state.check_n(&config, 0, 1).is_allowed());
    }

    #[test]
    fn n_above_the_burst_is_denied_with_no_time_to_retry() {
        // Three cells of a burst of two: never admitted, however long one waits.
        let config = GcraConfig::from_quota(&Quota::per_second(2).unwrap()).unwrap();
        let state = Gcra::new(&config, 0);
        for now in [0, 1 << 40] {
            let decision = state.check_n(&config, now, 3);
            assert!(decision.is_denied(), "{decision:?}");
            assert_eq!(decision.retry_after(), Duration::MAX);
        }
        assert!(state.check_n(&config, 0, 2).is_allowed());
    }

    #[test]
    fn quota_change_keeps_the_debt() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::gcra(Quota::per_second(10).unwrap(), clock.clone()).unwrap();
        assert!(limiter.check_n(5).unwrap().is_allowed()); // half the burst used: 500 ms debt
        limiter.set_quota(Quota::per_second(20).unwrap()).unwrap();
        assert_eq!(limiter.quota(), Quota::per_second(20).unwrap());
        // 500 ms of debt at 50 ms per cell is 10 of 20 cells: still half used.
        assert_eq!(limiter.check_n(0).unwrap().remaining(), 10);
        assert!(limiter.check_n(10).unwrap().is_allowed());
        assert!(limiter.check().is_denied());
    }
}
