//! Arbitrary numbers fed to every constructor: zero, huge and overflowing values give errors,
//! never panics or overflows, and whatever is accepted behaves within its stated bounds even at
//! extreme clock readings.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use arbitrary::Arbitrary;
use infra_common::{Clock, ManualClock};
use infra_ratelimit::{
    AdaptiveConcurrencyLimiter, AdaptivePermit, AimdConfig, Algorithm, ConcurrencyLimiter, Error,
    FixedWindow, Gcra, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter, SlidingWindowCounter,
    SlidingWindowLog, TokenBucket, VegasConfig,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    limit: u64,
    period_nanos: u64,
    period_secs: u64,
    burst: u64,
    use_secs: bool,
    advance: u64,
    n: u32,
    new_limit: u64,
    aimd: (u32, u32, u32, u64, u32),
}

fn exercise<A: Algorithm>(quota: Quota, input: &Input) {
    let clock = ManualClock::new();
    let Ok(limiter) = RateLimiter::<A, _>::with_clock(quota, clock.clone()) else {
        return;
    };
    let capacity = limiter.capacity();
    assert!(capacity >= 1);
    for advance in [0, input.advance, u64::MAX] {
        clock.advance(Duration::from_nanos(advance));
        match limiter.check_n(input.n) {
            Ok(decision) => {
                assert!(input.n <= capacity);
                assert!(decision.remaining() <= capacity, "{decision:?}");
                assert_eq!(decision.limit(), capacity);
                let _ = decision.headers().count();
            }
            Err(Error::InsufficientCapacity {
                requested,
                capacity: c,
            }) => {
                assert!(requested > c && c == capacity);
            }
            Err(other) => panic!("unexpected error {other}"),
        }
        let _ = limiter.check();
    }
    if let Ok(new_quota) = Quota::new(input.new_limit, quota.period()) {
        let _ = limiter.set_quota(new_quota);
        let _ = limiter.check_n(input.n);
    }
    let keyed = KeyedRateLimiter::<u8, A, _>::with_options(
        quota,
        clock.clone(),
        KeyedOptions::default().max_keys(2),
    );
    if let Ok(keyed) = keyed {
        for key in 0..4 {
            let _ = keyed.check_n(&key, input.n);
        }
        assert!(keyed.len() <= 2);
        let _ = keyed.sweep();
    }
    assert!(clock.now_nanos() == u64::MAX);
}

fuzz_target!(|input: Input| {
    let period = if input.use_secs {
        Duration::from_secs(input.period_secs)
    } else {
        Duration::from_nanos(input.period_nanos)
    };
    let quota = Quota::new(input.limit, period).and_then(|q| q.with_burst(input.burst));
    if let Ok(quota) = quota {
        assert!(quota.limit() >= 1 && quota.burst() >= 1);
        assert!(quota.interval_nanos() >= 1);
        assert!(quota.burst_nanos() <= 1 << 61);
        assert_eq!(u64::from(quota.limit()), input.limit);
        exercise::<Gcra>(quota, &input);
        exercise::<TokenBucket>(quota, &input);
        exercise::<FixedWindow>(quota, &input);
        exercise::<SlidingWindowCounter>(quota, &input);
        exercise::<SlidingWindowLog>(quota, &input);
    } else if input.limit > 0 && !period.is_zero() && input.burst > 0 {
        // Rejections of non-zero numbers say why.
        let error = quota.unwrap_err();
        // InvalidConfig: a rate whose whole-nanosecond interval is more than 1 % off.
        assert!(
            matches!(
                error,
                Error::TooLarge { .. } | Error::RateTooHigh { .. } | Error::InvalidConfig { .. }
            ),
            "{error}"
        );
    }

    let (initial, min, max, threshold, backoff) = input.aimd;
    if let Ok(config) = AimdConfig::new(initial, min, max, Duration::from_nanos(threshold))
        .and_then(|c| c.with_backoff_percent(backoff))
    {
        let clock = ManualClock::new();
        let limiter = AdaptiveConcurrencyLimiter::new(config, clock.clone());
        for _ in 0..4 {
            if let Ok(permit) = limiter.try_acquire() {
                clock.advance(Duration::from_nanos(input.advance));
                permit.success();
            }
            if let Ok(permit) = limiter.try_acquire() {
                permit.overloaded();
            }
        }
        assert!((min..=max).contains(&limiter.limit()));
    }
    if let Ok(config) = VegasConfig::new(initial, min, max)
        .and_then(|c| c.with_thresholds(threshold as u32, backoff))
        .and_then(|c| c.with_backoff_percent(backoff))
    {
        let clock = ManualClock::new();
        let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
        for step in 0..6u64 {
            if let Ok(permit) = limiter.try_acquire() {
                clock.advance(Duration::from_nanos(
                    input.advance.rotate_left(step as u32 * 7),
                ));
                permit.success();
            }
        }
        limiter.try_acquire().map(AdaptivePermit::overloaded).ok();
        assert!((min..=max).contains(&limiter.limit()));
    }
    if let Ok(limiter) = ConcurrencyLimiter::new(input.n) {
        let permits: Vec<_> = (0..8).map_while(|_| limiter.try_acquire().ok()).collect();
        assert_eq!(permits.len(), input.n.min(8) as usize);
    }
});
