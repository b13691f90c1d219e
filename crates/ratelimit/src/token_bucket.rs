//! A token bucket with fractional tokens, in one atomic word.

use std::time::Duration;

use infra_common::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::{Algorithm, AlgorithmConfig, CONFIG_WORDS};
use crate::{Decision, Error, Quota};

/// The finest refill step: 2^20 ns (about 1.05 ms).
const MIN_TICK_SHIFT: u32 = 20;
/// The coarsest refill step: 2^52 ns (about 52 days), for quotas of a few requests per decade.
const MAX_TICK_SHIFT: u32 = 52;
/// Refill per step aimed for, in token units: enough that rounding it down changes the rate by
/// less than 0.1 %.
const PRECISE_UNITS_PER_TICK: u128 = 1024;
/// At most this many fractional bits per token.
const MAX_FRACTION_BITS: u32 = 16;
/// A time reading this many steps behind the state's is a racing thread's older reading, not
/// a wrapped counter (see [`TokenBucket`]).
const STALE_TICKS: i64 = 1 << 20;

/// A token bucket: `burst` tokens of capacity, refilled at `limit` per `period` in small
/// discrete steps, with fractional tokens.
///
/// Semantics: a full bucket holds `burst` tokens; `check_n(n)` takes `n` tokens if that many are
/// available, otherwise it is denied and takes nothing. Tokens are kept with up to 16 fractional
/// bits, so a slow quota (one token every 3 s) accrues a third of a token per second rather than
/// nothing until the whole token is due. Refill happens at the boundaries of fixed time steps
/// (*ticks*) of 2^k ns, k ≥ 20 (≈ 1 ms), chosen per quota so that each tick adds at least 1024
/// token units when possible; the per-tick amount is rounded down once, so the long-run rate is
/// at most 0.1 % below the quota for all but extremely slow quotas.
///
/// The state is one `AtomicU64`: 32 bits of token units and the 32 low bits of the last refill
/// tick, updated with one compare-and-swap. Because the tick is stored modulo 2^32, a bucket left
/// untouched for about 2^32 ticks (52 days at the finest tick) may read as less refilled than it
/// is at its next check — a conservative error; a keyed limiter forgets such idle keys long
/// before. Prefer [`Gcra`](crate::Gcra) (the same admission rule, exact in time, no wrap) unless
/// you want the token-bucket mental model or the ticked refill.
#[derive(Debug)]
pub struct TokenBucket {
    /// `tokens << 32 | last_tick`.
    word: AtomicU64,
}

/// The token bucket's configuration, derived from a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// A tick is `1 << tick_shift` nanoseconds.
    pub tick_shift: u32,
    /// A token is `1 << fraction_bits` units.
    pub fraction_bits: u32,
    /// Units added per tick.
    pub units_per_tick: u64,
    /// Capacity in units: `burst << fraction_bits`.
    pub capacity_units: u64,
    /// Capacity in tokens.
    pub burst: u32,
}

impl TokenBucketConfig {
    /// The tick index of a clock reading (not reduced modulo 2^32).
    pub fn tick(&self, now: u64) -> u64 {
        now >> self.tick_shift
    }

    /// Time from `now` until `units` more units have accrued.
    pub fn time_to_accrue(&self, units: u64, now: u64) -> Duration {
        if units == 0 {
            return Duration::ZERO;
        }
        let ticks = units.div_ceil(self.units_per_tick);
        let into_tick = now & ((1u64 << self.tick_shift) - 1);
        let nanos = (u128::from(ticks) << self.tick_shift) - u128::from(into_tick);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl AlgorithmConfig for TokenBucketConfig {
    fn from_quota(quota: &Quota) -> Result<Self, Error> {
        let burst = quota.burst();
        let fraction_bits = burst.leading_zeros().min(MAX_FRACTION_BITS);
        let capacity_units = u64::from(burst) << fraction_bits;
        let units_per_nano_num = u128::from(quota.limit()) << fraction_bits;
        let period = u128::from(quota.period_nanos());
        let mut chosen = None;
        for shift in MIN_TICK_SHIFT..=MAX_TICK_SHIFT {
            let per_tick = (units_per_nano_num << shift) / period;
            if per_tick >= 1 {
                chosen = Some((shift, per_tick));
            }
            if per_tick >= PRECISE_UNITS_PER_TICK {
                break;
            }
        }
        let (tick_shift, per_tick) = chosen.ok_or(Error::RateTooLow)?;
        Ok(Self {
            tick_shift,
            fraction_bits,
            units_per_tick: u64::try_from(per_tick).unwrap_or(u64::MAX),
            capacity_units,
            burst,
        })
    }

    fn encode(&self) -> [u64; CONFIG_WORDS] {
        [
            u64::from(self.tick_shift) | (u64::from(self.fraction_bits) << 32),
            self.units_per_tick,
            self.capacity_units,
            u64::from(self.burst),
        ]
    }

    #[inline]
    fn decode(words: [u64; CONFIG_WORDS]) -> Self {
        let low = words[0] & u64::from(u32::MAX);
        Self {
            tick_shift: u32::try_from(low).unwrap_or(MIN_TICK_SHIFT),
            fraction_bits: u32::try_from(words[0] >> 32).unwrap_or(0),
            units_per_tick: words[1].max(1),
            capacity_units: words[2],
            burst: u32::try_from(words[3]).unwrap_or(u32::MAX),
        }
    }

    fn capacity(&self) -> u32 {
        self.burst
    }
}

fn pack(units: u64, tick: u32) -> u64 {
    (units << 32) | u64::from(tick)
}

fn unpack(word: u64) -> (u64, u32) {
    // Truncation intended: the low half is the tick.
    #[allow(clippy::cast_possible_truncation)]
    (word >> 32, word as u32)
}

impl TokenBucket {
    /// The tokens held as of the last update, in units (`1 << fraction_bits` per token).
    pub fn stored_units(&self) -> u64 {
        unpack(self.word.load(Ordering::Relaxed)).0
    }

    /// Units available at tick `now_tick`, and the tick to record with them.
    #[inline]
    fn refill(config: &TokenBucketConfig, word: u64, now: u64) -> (u64, u32) {
        let (units, last) = unpack(word);
        // Truncation intended: ticks are compared modulo 2^32.
        #[allow(clippy::cast_possible_truncation)]
        let now_tick = config.tick(now) as u32;
        let behind = i64::from(now_tick.wrapping_sub(last).cast_signed());
        if behind >= 0 {
            let added = behind.unsigned_abs().saturating_mul(config.units_per_tick);
            (
                units.saturating_add(added).min(config.capacity_units),
                now_tick,
            )
        } else if behind > -STALE_TICKS {
            // Another thread already refilled with a later reading than ours.
            (units, last)
        } else {
            // The tick counter wrapped: at least 2^31 ticks passed, far more than a full refill.
            (config.capacity_units, now_tick)
        }
    }
}

impl Algorithm for TokenBucket {
    type Config = TokenBucketConfig;
    const NAME: &'static str = "token_bucket";

    fn new(config: &TokenBucketConfig, now: u64) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let tick = config.tick(now) as u32;
        Self {
            word: AtomicU64::new(pack(config.capacity_units, tick)),
        }
    }

    #[inline]
    fn check_n(&self, config: &TokenBucketConfig, now: u64, n: u32) -> Decision {
        let to_tokens = |units: u64| u32::try_from(units >> config.fraction_bits).unwrap_or(0);
        let need = u64::from(n) << config.fraction_bits;
        // Relaxed: the decision depends on this word only (see `Gcra::check_n`).
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let (available, tick) = Self::refill(config, word, now);
            let missing_after = |units: u64| config.capacity_units.saturating_sub(units);
            if n == 0 {
                return Decision::allowed(
                    config.burst,
                    to_tokens(available),
                    config.time_to_accrue(missing_after(available), now),
                );
            }
            if available < need {
                return Decision::denied(
                    config.burst,
                    to_tokens(available),
                    if need > config.capacity_units {
                        Duration::MAX
                    } else {
                        config.time_to_accrue(need - available, now)
                    },
                    config.time_to_accrue(missing_after(available), now),
                );
            }
            let left = available - need;
            match self.word.compare_exchange_weak(
                word,
                pack(left, tick),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Decision::allowed(
                        config.burst,
                        to_tokens(left),
                        config.time_to_accrue(missing_after(left), now),
                    );
                }
                Err(actual) => word = actual,
            }
        }
    }

    fn is_idle(&self, config: &TokenBucketConfig, now: u64) -> bool {
        Self::refill(config, self.word.load(Ordering::Relaxed), now).0 >= config.capacity_units
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::RateLimiter;
    use infra_common::ManualClock;

    #[test]
    fn config_picks_a_precise_tick() {
        let c = TokenBucketConfig::from_quota(&Quota::per_second(1).unwrap()).unwrap();
        assert_eq!(c.fraction_bits, 16);
        assert!(c.units_per_tick >= 1024, "{c:?}");
        let fast = TokenBucketConfig::from_quota(&Quota::per_second(1_000_000).unwrap()).unwrap();
        assert_eq!(fast.tick_shift, MIN_TICK_SHIFT);
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
    fn a_stale_reading_adds_nothing_and_a_wrapped_one_refills() {
        let config = TokenBucketConfig::from_quota(&Quota::per_second(10).unwrap()).unwrap();
        let tick = 1u64 << config.tick_shift;
        let bucket = TokenBucket::new(&config, 100 * tick);
        assert!(bucket.check_n(&config, 100 * tick, 10).is_allowed());
        // A racing thread's reading from before the last update refills nothing.
        assert!(bucket.check_n(&config, 50 * tick, 1).is_denied());
        // 2^32 + a few ticks later the counter wrapped; the bucket reads as full.
        let later = (100 + (1u64 << 31) + 5) * tick;
        assert!(bucket.check_n(&config, later, 10).is_allowed());
    }
}
