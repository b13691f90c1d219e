//! What every algorithm admits under overload, across quota changes, out-of-order clock
//! readings and long idle periods, checked against bounds written from the definitions.
//!
//! The bucket model below is the textbook token bucket in exact rational arithmetic: tokens are
//! counted in units of `1 / period`, so `tokens = min(burst, tokens + limit × elapsed / period)`
//! needs no rounding. It shares nothing with the limiters (no emission interval, no stored
//! constant), so a refill that loses or invents tokens shows up as a difference in counts.
#![cfg(not(infra_loom))]

use std::time::Duration;

use infra_common::{Clock, ManualClock};
use infra_ratelimit::{
    Algorithm, FixedWindow, Gcra, Quota, RateLimiter, SlidingWindowCounter, SlidingWindowLog,
    TokenBucket,
};
use proptest::prelude::*;

/// `tokens × period` of a token bucket of `burst` tokens refilled at `limit` per `period`.
struct ExactBucket {
    limit: u128,
    period: u128,
    burst: u128,
    scaled_tokens: u128,
    last: u128,
}

impl ExactBucket {
    fn full(limit: u64, period: Duration, burst: u64, now: u64) -> Self {
        let period = period.as_nanos();
        Self {
            limit: u128::from(limit),
            period,
            burst: u128::from(burst),
            scaled_tokens: u128::from(burst) * period,
            last: u128::from(now),
        }
    }

    fn refill(&mut self, now: u64) {
        let now = u128::from(now);
        if now > self.last {
            let gained = self.limit * (now - self.last);
            self.scaled_tokens = (self.scaled_tokens + gained).min(self.burst * self.period);
            self.last = now;
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: u64) -> bool {
        self.refill(now);
        if self.scaled_tokens >= self.period {
            self.scaled_tokens -= self.period;
            true
        } else {
            false
        }
    }
}

/// A client that, every `step` ns for `duration` ns, sends requests until one is denied: more
/// than any quota admits. Returns the requests admitted.
fn overload(mut admit: impl FnMut(u64) -> bool, start: u64, step: u64, duration: u64) -> u64 {
    let mut admitted = 0;
    let mut now = start;
    while now <= start + duration {
        while admit(now) {
            admitted += 1;
        }
        now += step;
    }
    admitted
}

fn limiter<A: Algorithm>(quota: Quota) -> (RateLimiter<A, ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::<A, _>::with_clock(quota, clock.clone()).unwrap();
    (limiter, clock)
}

/// Requests `A` admits to the overloading client, starting full.
fn admitted_by<A: Algorithm>(quota: Quota, step: u64, duration: u64) -> u64 {
    let (limiter, clock) = limiter::<A>(quota);
    overload(
        |now| {
            clock.set(Duration::from_nanos(now));
            limiter.check().is_allowed()
        },
        0,
        step,
        duration,
    )
}

fn within_one_percent(got: u64, want: u64) -> bool {
    got.abs_diff(want) * 100 <= want
}

/// The cases from the issue: 100,000 requests a second offered for two seconds.
#[test]
fn buckets_admit_rate_times_time_plus_burst_under_overload() {
    let offered_step = 10_000; // ns: 100,000 requests per second
    let two_seconds = 2_000_000_000;
    for (limit, burst) in [(10_000, 1), (10_000, 5), (100_000, 10), (100, 1)] {
        let quota = Quota::per_second(limit).unwrap().with_burst(burst).unwrap();
        let mut model = ExactBucket::full(limit, Duration::from_secs(1), burst, 0);
        let want = overload(|now| model.take(now), 0, offered_step, two_seconds);
        assert_eq!(want, limit * 2 + burst);
        for (name, got) in [
            (
                "gcra",
                admitted_by::<Gcra>(quota, offered_step, two_seconds),
            ),
            (
                "token bucket",
                admitted_by::<TokenBucket>(quota, offered_step, two_seconds),
            ),
        ] {
            assert!(
                within_one_percent(got, want),
                "{name} {limit}/s burst {burst}: admitted {got}, want {want}"
            );
        }
    }
}

/// Quotas from one per hour to 1,000,000 per second.
fn bucket_quota() -> impl Strategy<Value = (u64, Duration, u64)> {
    (10u32..=42, 0u64..1024, 1u64..=100, 0u64..100, 0u32..=11).prop_map(
        |(interval_bits, interval_jitter, limit, period_jitter, burst_bits)| {
            // An interval between 1 µs (10^6 per second) and 2^42 ns (about 73 minutes),
            // not a power of two, and a period that `limit` need not divide.
            let interval = ((1u64 << interval_bits) + (interval_jitter << interval_bits) / 1024)
                .clamp(1_000, 3_600_000_000_000);
            let period = interval * limit + period_jitter.min(limit - 1);
            let burst = (1u64 << burst_bits) + u64::from(burst_bits) * 3 - 1;
            (limit, Duration::from_nanos(period), burst.max(1))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The bound holds when requests are offered at least 200 times per interval, and against
    /// the model for clients that come back every few intervals. A bucket that is full between
    /// two requests discards what it would have refilled, so slower offers earn less, by
    /// design: the model loses up to one offer step per token, 1/200 of the rate here, which
    /// leaves room for the 1 % comparison (at 100 offers per interval the model's own loss
    /// reached 0.97 % and a GCRA that loses nothing read as 1.007 % off).
    #[test]
    fn buckets_admit_within_one_percent_across_the_whole_range(
        (limit, period, burst) in bucket_quota(),
        offers_per_interval in 200u64..=400,
        intervals_per_offer in 1u64..=3,
        slow_client in any::<bool>(),
    ) {
        let quota = Quota::new(limit, period).unwrap().with_burst(burst).unwrap();
        let interval = u64::try_from(period.as_nanos()).unwrap() / limit;
        let step = if slow_client {
            // Just over whole intervals, so each offer finds the tokens it is owed.
            (interval + 1) * intervals_per_offer
        } else {
            (interval / offers_per_interval).max(1)
        };
        // Long enough for 300 refilled tokens.
        let duration = u64::try_from(period.as_nanos() * 300 / u128::from(limit)).unwrap();
        let mut model = ExactBucket::full(limit, period, burst, 0);
        let want = overload(|now| model.take(now), 0, step, duration);
        if !slow_client {
            let definition = 300 + burst;
            prop_assert!(within_one_percent(want, definition), "model {want}, definition {definition}");
        }
        let gcra = admitted_by::<Gcra>(quota, step, duration);
        prop_assert!(within_one_percent(gcra, want), "gcra admitted {gcra}, want {want}");
        let bucket = admitted_by::<TokenBucket>(quota, step, duration);
        prop_assert!(within_one_percent(bucket, want), "token bucket admitted {bucket}, want {want}");
    }
}

fn drain<A: Algorithm>(limiter: &RateLimiter<A, ManualClock>) {
    while limiter.check().is_allowed() {}
}

/// Raising the rate of a drained token bucket gives nothing away (as GCRA).
#[test]
fn a_quota_raise_on_a_drained_bucket_admits_nothing_at_once() {
    let (bucket, clock) = limiter::<TokenBucket>(Quota::per_second(10).unwrap());
    clock.advance(Duration::from_secs(100));
    drain(&bucket);
    bucket.set_quota(Quota::per_second(100).unwrap()).unwrap();
    assert!(bucket.check().is_denied());
    // And the new rate applies from now: one token every 10 ms.
    clock.advance(Duration::from_millis(10));
    assert!(bucket.check().is_allowed());
    assert!(bucket.check().is_denied());
}

/// Cutting the rate of a drained token bucket keeps it refilling, at the new rate.
#[test]
fn a_quota_cut_on_a_drained_bucket_keeps_refilling() {
    let (bucket, clock) = limiter::<TokenBucket>(Quota::per_second(100).unwrap());
    clock.advance(Duration::from_secs(100));
    drain(&bucket);
    bucket.set_quota(Quota::per_second(10).unwrap()).unwrap();
    assert!(bucket.check().is_denied());
    clock.advance(Duration::from_millis(99));
    assert!(bucket.check().is_denied());
    clock.advance(Duration::from_millis(1));
    assert!(bucket.check().is_allowed());
    assert!(bucket.check().is_denied());
}

/// A token bucket full under one burst is not full under a larger one: it holds what the new
/// rate refilled since it was last empty (for a bucket never used, one burst duration of its
/// first quota before it was made), up to the new burst. GCRA is full under any burst at once.
#[test]
fn a_burst_raise_on_a_full_bucket_refills_from_when_it_was_last_empty() {
    let larger = Quota::per_second(1).unwrap().with_burst(10).unwrap();
    let (bucket, clock) = limiter::<TokenBucket>(Quota::per_second(1).unwrap());
    bucket.set_quota(larger).unwrap();
    assert_eq!(bucket.check_n(0).unwrap().remaining(), 1);
    clock.advance(Duration::from_secs(4));
    assert_eq!(bucket.check_n(0).unwrap().remaining(), 5);
    clock.advance(Duration::from_secs(5));
    assert!(bucket.is_idle());
    let (gcra, _clock) = limiter::<Gcra>(Quota::per_second(1).unwrap());
    gcra.set_quota(larger).unwrap();
    assert_eq!(gcra.check_n(0).unwrap().remaining(), 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A drained bucket switched from quota A to quota B admits, under overload for `D`, at
    /// most `r_B × D` plus what its fraction of a token is worth at the new rate (never the
    /// whole new burst), and at least `r_B × D` less 1 %: it neither gives capacity away nor stops
    /// refilling. GCRA keeps its time to full recovery instead (see its docs), so its lower
    /// bound waits out the part of A's burst duration that exceeds B's.
    #[test]
    fn quota_changes_neither_give_capacity_away_nor_freeze(
        a in bucket_quota(),
        b in bucket_quota(),
        start in 0u64..1 << 50,
    ) {
        let quota_a = Quota::new(a.0, a.1).unwrap().with_burst(a.2).unwrap();
        let quota_b = Quota::new(b.0, b.1).unwrap().with_burst(b.2).unwrap();
        // 100 intervals of B.
        let duration = u64::try_from(b.1.as_nanos() * 100 / u128::from(b.0)).unwrap();
        let step = (quota_b.interval_nanos() / 100).max(1);
        // r_B × D + r_B / r_A (what a fraction of A's token is worth at B's rate) + 1.
        let rate_b = |nanos: u128| nanos * u128::from(b.0) / b.1.as_nanos();
        let worth = u128::from(a.0) * b.1.as_nanos() / (u128::from(b.0) * a.1.as_nanos());
        let most = rate_b(u128::from(duration)) + (1 + worth).min(u128::from(b.2)) + 1;

        let (bucket, clock) = limiter::<TokenBucket>(quota_a);
        clock.advance(Duration::from_nanos(start));
        drain(&bucket);
        bucket.set_quota(quota_b).unwrap();
        let from = clock.now_nanos();
        let got = u128::from(overload(
            |now| {
                clock.set(Duration::from_nanos(now));
                bucket.check().is_allowed()
            },
            from,
            step,
            duration,
        ));
        let least = (rate_b(u128::from(duration)) * 99 / 100).saturating_sub(1);
        prop_assert!(got <= most && got >= least, "token bucket admitted {got}, want {least}..={most}");

        let (gcra, clock) = limiter::<Gcra>(quota_a);
        clock.advance(Duration::from_nanos(start));
        drain(&gcra);
        gcra.set_quota(quota_b).unwrap();
        let from = clock.now_nanos();
        let got = u128::from(overload(
            |now| {
                clock.set(Duration::from_nanos(now));
                gcra.check().is_allowed()
            },
            from,
            step,
            duration,
        ));
        let owed = quota_a.burst_nanos().saturating_sub(quota_b.burst_nanos());
        let least = (rate_b(u128::from(duration.saturating_sub(owed))) * 99 / 100).saturating_sub(2);
        let most = rate_b(u128::from(duration)) + u128::from(b.2) + 1;
        prop_assert!(got <= most && got >= least, "gcra admitted {got}, want {least}..={most}");
    }

    /// A reading older than one already used never adds capacity: after every request, the
    /// running total admitted stays within what a bucket full at time 0 can give by the latest
    /// reading seen so far, `burst + limit × latest / period`. (Not an exact replay: whether
    /// an old reading is admitted may differ between algorithms and changes what is left for
    /// later readings; only the capacity bound holds for all.)
    #[test]
    fn older_readings_add_nothing(
        (limit, period, burst) in bucket_quota(),
        readings in proptest::collection::vec((0u64..1 << 40, 1u32..4), 1..60),
    ) {
        let quota = Quota::new(limit, period).unwrap().with_burst(burst).unwrap();
        // Whole cells a continuously refilled bucket of `burst`, full at 0, has given by `t`.
        let most_by = |t: u64| {
            u128::from(burst) + u128::from(t) * u128::from(limit) / period.as_nanos()
        };
        for (name, admitted) in [
            ("gcra", admitted_each::<Gcra>(quota, &readings)),
            ("token bucket", admitted_each::<TokenBucket>(quota, &readings)),
        ] {
            let (mut total, mut latest) = (0u128, 0u64);
            for (&(now, _), cells) in readings.iter().zip(admitted) {
                latest = latest.max(now);
                total += u128::from(cells);
                prop_assert!(
                    total <= most_by(latest) + 1,
                    "{name} admitted {total} cells by reading {now}, at most {} by {latest}",
                    most_by(latest),
                );
            }
        }
    }
}

/// Cells `A` admits to each `(reading, n)` request, made in this order, readings not sorted.
fn admitted_each<A: Algorithm>(quota: Quota, readings: &[(u64, u32)]) -> Vec<u32> {
    use infra_ratelimit::AlgorithmConfig;
    let config = A::Config::from_quota(&quota).unwrap();
    let state = A::new(&config, 0);
    readings
        .iter()
        .map(|&(now, n)| {
            let allowed = n <= config.capacity() && state.check_n(&config, now, n).is_allowed();
            if allowed { n } else { 0 }
        })
        .collect()
}

/// However long a limiter sits idle (hours, days, 2^32 steps of any internal clock and beyond),
/// it comes back full.
#[test]
fn every_algorithm_is_full_again_after_any_idle_period() {
    fn check<A: Algorithm>(idle: u64) {
        let quota = Quota::per_second(10).unwrap();
        let (limiter, clock) = limiter::<A>(quota);
        clock.advance(Duration::from_secs(5));
        assert!(limiter.check_n(10).unwrap().is_allowed());
        clock.advance(Duration::from_nanos(idle));
        assert!(
            limiter.check_n(10).unwrap().is_allowed(),
            "{} idle {idle} ns",
            A::NAME
        );
    }
    let hour = 3_600_000_000_000;
    for idle in [
        hour,
        24 * hour,
        1 << 32,
        (1 << 32) << 20,
        ((1 << 32) << 20) + (1 << 21),
        ((1 << 32) << 21) + (1 << 22),
        1 << 60,
        (1 << 62) + 12_345,
    ] {
        check::<Gcra>(idle);
        check::<TokenBucket>(idle);
        check::<FixedWindow>(idle);
        check::<SlidingWindowCounter>(idle);
        check::<SlidingWindowLog>(idle);
    }
}

/// Window quotas: `limit` per `period`, from one per hour to 10^6 per second.
fn window_quota() -> impl Strategy<Value = (u64, Duration)> {
    (1u64..=50, 10u32..=42).prop_map(|(limit, period_bits)| {
        let period =
            (limit * (1u64 << period_bits)).clamp(limit * 1_000, 3_600_000_000_000 * limit);
        (limit, Duration::from_nanos(period))
    })
}

/// Admission times (one per admitted cell) of `A` under overload, from `start` for `duration`.
fn admission_times<A: Algorithm>(
    limiter: &RateLimiter<A, ManualClock>,
    clock: &ManualClock,
    start: u64,
    step: u64,
    duration: u64,
) -> Vec<u64> {
    let mut times = Vec::new();
    overload(
        |now| {
            clock.set(Duration::from_nanos(now));
            let admitted = limiter.check().is_allowed();
            if admitted {
                times.push(now);
            }
            admitted
        },
        start,
        step,
        duration,
    );
    times
}

/// The most admissions in any span of `span` ns.
fn most_in_any_span(times: &[u64], span: u64) -> usize {
    let mut first = 0;
    let mut most = 0;
    for (last, &at) in times.iter().enumerate() {
        while times[first] + span <= at {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Under overload for `k` periods: the fixed window admits exactly `limit` in every window
    /// it touches, so up to `2 × limit` in a span of one period straddling a boundary; the
    /// sliding log never more than `limit` in any span of one period; the sliding counter at
    /// most `2 × limit` in any span of one period, and at least `limit − 1` per window.
    #[test]
    fn windows_admit_their_stated_bounds_under_overload(
        (limit, period) in window_quota(),
        start_fraction in 0u64..100,
        periods in 2u64..=6,
    ) {
        let quota = Quota::new(limit, period).unwrap();
        let period = u64::try_from(period.as_nanos()).unwrap();
        let start = period / 100 * start_fraction;
        let step = (period / limit / 50).max(1);
        let duration = period * periods;
        let last_offer = start + duration / step * step;
        let windows_touched = last_offer / period - start / period + 1;

        let (fixed, clock) = limiter::<FixedWindow>(quota);
        let times = admission_times(&fixed, &clock, start, step, duration);
        prop_assert_eq!(times.len() as u64, limit * windows_touched);
        prop_assert!(most_in_any_span(&times, period) as u64 <= 2 * limit);

        let (log, clock) = limiter::<SlidingWindowLog>(quota);
        let times = admission_times(&log, &clock, start, step, duration);
        prop_assert!(most_in_any_span(&times, period) as u64 <= limit);
        prop_assert!(times.len() as u64 >= limit * periods);

        let (counter, clock) = limiter::<SlidingWindowCounter>(quota);
        let times = admission_times(&counter, &clock, start, step, duration);
        prop_assert!(most_in_any_span(&times, period) as u64 <= 2 * limit);
        let admitted = times.len() as u64;
        // Its estimate counts a share of the previous window until the current one ends, so a
        // window after a full one admits at least `limit − 1` (a limit of 1 admits every other
        // window).
        prop_assert!(admitted <= limit * (periods + 2) && admitted >= (limit - 1) * (periods - 1),
            "sliding counter admitted {} over {} periods of {}", admitted, periods, limit);
    }

    /// A window limiter at its limit keeps its count across a quota change: with the same
    /// window it admits only what the new limit leaves, and with any window it is back to
    /// `limit` per window within two windows of the new quota.
    #[test]
    fn window_counts_carry_across_quota_changes(
        (limit_a, period_a) in window_quota(),
        (limit_b, period_b) in window_quota(),
        same_period in any::<bool>(),
    ) {
        let quota_a = Quota::new(limit_a, period_a).unwrap();
        let period_b = if same_period { period_a } else { period_b };
        // The second limit over the first period may not be a whole number of nanoseconds
        // per cell; such a rate is refused (`quota::tests`, imprecise rates).
        let quota_b = Quota::new(limit_b, period_b);
        prop_assume!(quota_b.is_ok());
        let quota_b = quota_b.unwrap();
        let window_b = u64::try_from(period_b.as_nanos()).unwrap();
        fn check<A: Algorithm>(
            quota_a: Quota,
            quota_b: Quota,
            same_period: bool,
            window_b: u64,
        ) -> Result<(), TestCaseError> {
            let (limiter, clock) = limiter::<A>(quota_a);
            drain(&limiter);
            limiter.set_quota(quota_b).unwrap();
            let (limit_a, limit_b) = (u64::from(quota_a.limit()), u64::from(quota_b.limit()));
            let now = clock.now_nanos();
            if same_period {
                let mut at_once = 0;
                while limiter.check().is_allowed() {
                    at_once += 1;
                }
                prop_assert_eq!(at_once, limit_b.saturating_sub(limit_a), "{}", A::NAME);
            }
            // Five new windows later (two for the old count to age out), under overload.
            let step = (window_b / limit_b / 50).max(1);
            let old_window = u64::try_from(quota_a.period().as_nanos()).unwrap();
            let settle = window_b * 2 + old_window;
            clock.set(Duration::from_nanos(now + settle));
            let times = admission_times(&limiter, &clock, now + settle, step, window_b * 3);
            prop_assert!(times.len() as u64 >= limit_b * 2, "{} admitted {} after the change", A::NAME, times.len());
            prop_assert!(most_in_any_span(&times, window_b) as u64 <= 2 * limit_b, "{}", A::NAME);
            Ok(())
        }
        check::<FixedWindow>(quota_a, quota_b, same_period, window_b)?;
        check::<SlidingWindowCounter>(quota_a, quota_b, same_period, window_b)?;
        check::<SlidingWindowLog>(quota_a, quota_b, same_period, window_b)?;
    }
}

/// In every algorithm, a reading older than the one that drained the state (a racing thread's)
/// is denied and leaves the state drained.
#[test]
fn every_algorithm_denies_older_readings_of_a_drained_state() {
    fn check<A: Algorithm>() {
        use infra_ratelimit::AlgorithmConfig;
        let quota = Quota::per_second(10).unwrap();
        let config = A::Config::from_quota(&quota).unwrap();
        let late = 5_500_000_000;
        let state = A::new(&config, 0);
        assert!(state.check_n(&config, late, 10).is_allowed(), "{}", A::NAME);
        for older in [late - 1, late - 50_000_000, late - 600_000_000, 0] {
            assert!(
                state.check_n(&config, older, 1).is_denied(),
                "{} at {older}",
                A::NAME
            );
            assert!(state.check_n(&config, late, 1).is_denied(), "{}", A::NAME);
        }
    }
    check::<Gcra>();
    check::<TokenBucket>();
    check::<FixedWindow>();
    check::<SlidingWindowCounter>();
    check::<SlidingWindowLog>();
}

/// In every algorithm, a denial of a reading older than the one that drained the state still
/// says exactly when to come back: at `older + retry_after` the same request is admitted (and
/// not a nanosecond before), and at `older + reset_after` the state is full again. A wait
/// counted from the state's own last instant instead would send the client back too early.
#[test]
fn a_denial_of_an_older_reading_says_when_to_come_back() {
    fn check<A: Algorithm>() {
        use infra_ratelimit::AlgorithmConfig;
        let quota = Quota::per_second(10).unwrap();
        let config = A::Config::from_quota(&quota).unwrap();
        let late = 5_500_000_000;
        let drained = || {
            let state = A::new(&config, 0);
            assert!(state.check_n(&config, late, 10).is_allowed(), "{}", A::NAME);
            state
        };
        for older in [
            late - 1,
            late - 50_000_000,
            late - 600_000_000,
            late - 3_000_000_000,
        ] {
            let denied = drained().check_n(&config, older, 1);
            assert!(denied.is_denied(), "{} at {older}", A::NAME);
            let retry = u64::try_from(denied.retry_after().as_nanos()).unwrap();
            let reset = u64::try_from(denied.reset_after().as_nanos()).unwrap();
            assert!(
                drained().check_n(&config, older + retry, 1).is_allowed(),
                "{} at {older}: retry after {retry} ns is too early",
                A::NAME
            );
            assert!(
                drained().check_n(&config, older + retry - 1, 1).is_denied(),
                "{} at {older}: retry after {retry} ns is too late",
                A::NAME
            );
            assert!(
                drained().is_idle(&config, older + reset),
                "{} at {older}: reset after {reset} ns is too early",
                A::NAME
            );
        }
    }
    check::<Gcra>();
    check::<TokenBucket>();
    check::<FixedWindow>();
    check::<SlidingWindowCounter>();
    check::<SlidingWindowLog>();
}

/// Every cell a window limiter admitted, at its admission time; the window algorithms'
/// definitions are evaluated on it.
#[derive(Default)]
struct Admissions {
    times: Vec<u64>,
    /// Cells admitted before this time are no longer remembered (see `window_change_run`).
    remembered_from: u64,
}

impl Admissions {
    /// Remembered cells admitted in `[from, to)`.
    fn between(&self, from: u64, to: u64) -> u128 {
        let from = from.max(self.remembered_from);
        self.times.iter().filter(|&&t| t >= from && t < to).count() as u128
    }

    /// The fixed window's count at `now` for windows of `window`: the cells of the window
    /// holding `now`, `[k × window, (k + 1) × window)`.
    fn fixed_count(&self, window: u64, now: u64) -> u128 {
        let start = now - now % window;
        self.between(start, start + window)
    }

    /// The sliding counter's estimate at `now`, scaled by `window`: the previous window's cells
    /// weighted by the part of it the sliding window still covers, plus the current window's.
    fn sliding_estimate(&self, window: u64, now: u64) -> u128 {
        let start = now - now % window;
        let elapsed = u128::from(now - start);
        let w = u128::from(window);
        self.between(start.saturating_sub(window), start) * (w - elapsed)
            + self.between(start, start + window) * w
    }
}

/// Runs requests of `(advance, n)` on a window limiter switched from `before` to `after` after
/// `switch_at` requests, and hands `check` each decision with the admissions so far and the
/// quota in force.
///
/// A window limiter remembers the counts of the windows it held at its last check before the
/// change (the fixed window one, the sliding counter two): from the change on, the admissions
/// only remember cells from the start of the earliest of those windows, `windows_kept` windows
/// of the old length back.
fn window_change_run<A: Algorithm>(
    before: Quota,
    after: Quota,
    switch_at: usize,
    requests: &[(u64, u32)],
    windows_kept: u64,
    mut check: impl FnMut(&Admissions, Quota, u64, u32, bool) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let (limiter, clock) = limiter::<A>(before);
    let mut admissions = Admissions::default();
    let mut quota = before;
    let mut last_check = 0;
    for (i, &(advance, n)) in requests.iter().enumerate() {
        if i == switch_at {
            limiter.set_quota(after).unwrap();
            quota = after;
            let old = before.period_nanos();
            let current = last_check - last_check % old;
            admissions.remembered_from = current.saturating_sub((windows_kept - 1) * old);
        }
        clock.advance(Duration::from_nanos(advance));
        let now = clock.now_nanos();
        if n > quota.limit() {
            continue;
        }
        let admitted = limiter.check_n(n).unwrap().is_allowed();
        last_check = now;
        check(&admissions, quota, now, n, admitted)?;
        if admitted {
            admissions
                .times
                .extend(std::iter::repeat_n(now, n as usize));
        }
    }
    Ok(())
}

/// Window quotas for a change: a base window of 1 to 64 ms, the other one a multiple of it
/// (`nested`) or any length from 1 to 100 ms.
fn window_change() -> impl Strategy<Value = (Quota, Quota, bool)> {
    (
        1u64..=64,
        1u64..=8,
        1u64..=100,
        1u64..6,
        1u64..6,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(base_ms, factor, other_ms, limit_a, limit_b, nested, longer)| {
                let base = base_ms * 1_000_000;
                let other = if nested {
                    base * factor
                } else {
                    other_ms * 1_000_000
                };
                let (a, b) = if longer { (base, other) } else { (other, base) };
                let quota = |limit, nanos| Quota::new(limit, Duration::from_nanos(nanos)).unwrap();
                // Nested: each old window lies within one new window.
                (quota(limit_a, a), quota(limit_b, b), nested && longer)
            },
        )
}

fn requests() -> impl Strategy<Value = Vec<(u64, u32)>> {
    proptest::collection::vec((0u64..30_000_000, 1u32..4), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Across a change of window length, the fixed window never loses a cell it still counts:
    /// it never admits what its definition, applied to the admission times of those cells,
    /// refuses; and when each old window lies within one new window it decides exactly as the
    /// definition does.
    #[test]
    fn fixed_window_counts_carry_exactly_across_window_changes(
        (before, after, nested) in window_change(),
        switch_at in 0usize..40,
        requests in requests(),
    ) {
        window_change_run::<FixedWindow>(before, after, switch_at, &requests, 1, |admissions, quota, now, n, admitted| {
            let count = admissions.fixed_count(quota.period_nanos(), now);
            let fits = count + u128::from(n) <= u128::from(quota.limit());
            if admitted {
                prop_assert!(fits, "admitted {} at {} with {} in the window", n, now, count);
            }
            if nested || quota == before {
                prop_assert_eq!(admitted, fits, "at {} with {} in the window", now, count);
            }
            Ok(())
        })?;
    }

    /// The same for the sliding counter: its estimate is never below the definition's applied
    /// to the admission times of the cells it still counts, and equals it when each old window
    /// lies within one new window.
    #[test]
    fn sliding_counter_counts_carry_exactly_across_window_changes(
        (before, after, nested) in window_change(),
        switch_at in 0usize..40,
        requests in requests(),
    ) {
        window_change_run::<SlidingWindowCounter>(before, after, switch_at, &requests, 2, |admissions, quota, now, n, admitted| {
            let window = quota.period_nanos();
            let w = u128::from(window);
            let room = u128::from(quota.limit()) * w;
            let estimate = admissions.sliding_estimate(window, now);
            let fits = estimate + u128::from(n) * w <= room;
            if admitted {
                prop_assert!(fits, "admitted {} at {}: estimate {} of {}", n, now, estimate, room);
            }
            if nested || quota == before {
                prop_assert_eq!(admitted, fits, "at {}: estimate {} of {}", now, estimate, room);
            }
            Ok(())
        })?;
    }
}

/// One call of the exactness test: the latest reading moves on by `advance` ms, the call reads
/// `behind` ms earlier than it (a racing thread's reading), the quota may change to one of the
/// test's, and `n` cells (at most the capacity) are asked for.
#[derive(Clone, Debug)]
struct Call {
    advance: u64,
    behind: u64,
    quota: Option<usize>,
    n: u32,
}

/// Up to three quotas (`limit` per `millis` ms, burst), and the calls.
fn calls() -> impl Strategy<Value = (Vec<(u64, u64, u64)>, Vec<Call>)> {
    let quotas = proptest::collection::vec((1u64..=8, 1u64..=2_000, 1u64..=8), 1..=3);
    let call = (0u64..3_000, 0u64..4, 0u64..1_500, 0usize..6, 0u32..=8).prop_map(
        |(advance, stale, behind, change, n)| Call {
            advance,
            behind: if stale == 0 { behind } else { 0 },
            quota: (change < 3).then_some(change),
            n,
        },
    );
    (quotas, proptest::collection::vec(call, 1..40))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `retry_after` and `reset_after` are exact in every algorithm, whatever came before
    /// (quota changes, older readings): replaying the same calls, the denied request is
    /// admitted at `now + retry_after` and not a nanosecond before, and the state is full
    /// again at `now + reset_after` and not before; right after any call, exactly `remaining`
    /// single requests are admitted.
    #[test]
    fn retry_and_reset_are_exact(
        (quotas, calls) in calls(),
    ) {
        fn run<A: Algorithm>(quotas: &[(u64, u64, u64)], calls: &[Call]) -> Result<(), TestCaseError> {
            use infra_ratelimit::AlgorithmConfig;
            let configs: Vec<A::Config> = quotas
                .iter()
                .map(|&(limit, millis, burst)| {
                    let quota = Quota::new(limit, Duration::from_millis(millis)).unwrap();
                    A::Config::from_quota(&quota.with_burst(burst).unwrap()).unwrap()
                })
                .collect();
            // The reading and configuration of each call, then a replay up to call `i`.
            let mut plan = Vec::new();
            let (mut latest, mut config) = (3_000_000_000_u64, configs[0]);
            for call in calls {
                latest += call.advance * 1_000_000;
                if let Some(q) = call.quota {
                    config = configs[q % configs.len()];
                }
                let n = call.n.min(config.capacity());
                plan.push((latest - call.behind * 1_000_000, config, n));
            }
            let replay = |upto: usize| {
                let state = A::new(&configs[0], 1_000_000_000);
                for &(now, config, n) in &plan[..upto] {
                    let _ = state.check_n(&config, now, n);
                }
                state
            };
            for (i, &(now, config, n)) in plan.iter().enumerate() {
                // What follows a call sees the state the call left (a window rolled, say).
                let decision = replay(i).check_n(&config, now, n);
                let reset = u64::try_from(decision.reset_after().as_nanos()).unwrap();
                prop_assert!(replay(i + 1).is_idle(&config, now + reset), "{} call {i}: not full after {reset}", A::NAME);
                if reset > 0 {
                    prop_assert!(!replay(i + 1).is_idle(&config, now + reset - 1), "{} call {i}: full before {reset}", A::NAME);
                }
                let after = replay(i + 1);
                let singles = (0..=8).take_while(|_| after.check_n(&config, now, 1).is_allowed()).count();
                prop_assert_eq!(singles, decision.remaining() as usize, "{} call {}: remaining", A::NAME, i);
                if decision.is_denied() {
                    let retry = u64::try_from(decision.retry_after().as_nanos()).unwrap();
                    prop_assert!(replay(i + 1).check_n(&config, now + retry, n).is_allowed(), "{} call {i}: denied after {retry}", A::NAME);
                    prop_assert!(replay(i + 1).check_n(&config, now + retry - 1, n).is_denied(), "{} call {i}: admitted before {retry}", A::NAME);
                }
            }
            Ok(())
        }
        run::<Gcra>(&quotas, &calls)?;
        run::<TokenBucket>(&quotas, &calls)?;
        run::<FixedWindow>(&quotas, &calls)?;
        run::<SlidingWindowCounter>(&quotas, &calls)?;
        run::<SlidingWindowLog>(&quotas, &calls)?;
    }
}

/// One step of the denial test: the clock moves on by `advance` ms, then `n` cells are asked
/// for (at most the capacity).
fn denial_steps() -> impl Strategy<Value = Vec<(u64, u32)>> {
    proptest::collection::vec((0u64..400, 1u32..=6), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// In every algorithm a denial consumes nothing and `check_n(0)` is admitted and consumes
    /// nothing: a limiter that is also sent every denied request again, several times, and a
    /// `check_n(0)` before each request decides every request exactly as a twin sent the
    /// requests alone (same admission, `remaining`, `retry_after` and `reset_after`).
    #[test]
    fn denials_and_zero_cell_checks_consume_nothing(
        (limit, burst) in (1u64..=6, 1u64..=6),
        steps in denial_steps(),
    ) {
        fn run<A: Algorithm>(quota: Quota, steps: &[(u64, u32)]) -> Result<(), TestCaseError> {
            let (alone, alone_clock) = limiter::<A>(quota);
            let (probed, probed_clock) = limiter::<A>(quota);
            for (i, &(advance, n)) in steps.iter().enumerate() {
                alone_clock.advance(Duration::from_millis(advance));
                probed_clock.advance(Duration::from_millis(advance));
                let n = n.min(alone.capacity());
                let zero = probed.check_n(0).unwrap();
                prop_assert!(zero.is_allowed(), "{} step {}: check_n(0) denied", A::NAME, i);
                let want = alone.check_n(n).unwrap();
                let got = probed.check_n(n).unwrap();
                prop_assert_eq!(got, want, "{} step {}", A::NAME, i);
                if got.is_denied() {
                    for _ in 0..3 {
                        prop_assert_eq!(probed.check_n(n).unwrap(), got, "{} step {}: denied again", A::NAME, i);
                    }
                }
            }
            Ok(())
        }
        let quota = Quota::per_second(limit).unwrap().with_burst(burst).unwrap();
        run::<Gcra>(quota, &steps)?;
        run::<TokenBucket>(quota, &steps)?;
        run::<FixedWindow>(quota, &steps)?;
        run::<SlidingWindowCounter>(quota, &steps)?;
        run::<SlidingWindowLog>(quota, &steps)?;
    }
}

/// Quotas of the burst test: `limit` per `period_ms` ms with a burst, every burst duration
/// (`burst × period / limit`) a whole number of milliseconds.
const BURST_CASES: [(u64, u64, u64); 5] = [
    (10, 1_000, 5),
    (10, 1_000, 25),
    (3, 60_000, 1),
    (7, 700, 7),
    (1, 3_600_000, 4),
];

/// GCRA and the token bucket: a drained limiter idle for `burst × period / limit` admits
/// `burst` requests back to back (one nanosecond less, one fewer), then one every
/// `period / limit`.
#[test]
fn a_burst_comes_back_after_its_duration_then_one_per_interval() {
    fn check<A: Algorithm>(limit: u64, period_ms: u64, burst: u64) {
        let quota = Quota::new(limit, Duration::from_millis(period_ms))
            .unwrap()
            .with_burst(burst)
            .unwrap();
        let interval = Duration::from_nanos(period_ms * 1_000_000 / limit);
        let idle = interval * u32::try_from(burst).unwrap();
        let back_to_back = |limiter: &RateLimiter<A, ManualClock>| {
            (0..=burst)
                .take_while(|_| limiter.check().is_allowed())
                .count() as u64
        };
        let case = format!("{} {limit} per {period_ms} ms, burst {burst}", A::NAME);
        let (early, early_clock) = limiter::<A>(quota);
        let (limiter, clock) = limiter::<A>(quota);
        assert_eq!(back_to_back(&early), burst, "{case}: a new limiter");
        assert_eq!(back_to_back(&limiter), burst, "{case}: a new limiter");
        early_clock.advance(idle - Duration::from_nanos(1));
        assert_eq!(back_to_back(&early), burst - 1, "{case}: idle 1 ns short");
        clock.advance(idle);
        assert_eq!(back_to_back(&limiter), burst, "{case}: idle for the burst");
        for round in 0..3 {
            clock.advance(interval - Duration::from_nanos(1));
            assert!(limiter.check().is_denied(), "{case}: round {round}, early");
            clock.advance(Duration::from_nanos(1));
            assert_eq!(back_to_back(&limiter), 1, "{case}: round {round}");
        }
    }
    for (limit, period_ms, burst) in BURST_CASES {
        check::<Gcra>(limit, period_ms, burst);
        check::<TokenBucket>(limit, period_ms, burst);
    }
}

/// The window algorithms admit `limit` per window whatever the burst: a limiter given a
/// burst decides every request of an overload exactly as one without.
#[test]
fn window_algorithms_ignore_the_burst() {
    fn check<A: Algorithm>(limit: u64, period_ms: u64, burst: u64) {
        let plain = Quota::new(limit, Duration::from_millis(period_ms)).unwrap();
        let (without, without_clock) = limiter::<A>(plain);
        let (with, with_clock) = limiter::<A>(plain.with_burst(burst).unwrap());
        let step = Duration::from_nanos(period_ms * 1_000_000 / limit / 3);
        for i in 0..(limit * 3 * 4) {
            without_clock.advance(step);
            with_clock.advance(step);
            for _ in 0..2 {
                assert_eq!(
                    with.check(),
                    without.check(),
                    "{} {limit} per {period_ms} ms, burst {burst}, step {i}",
                    A::NAME
                );
            }
        }
    }
    for (limit, period_ms, burst) in BURST_CASES {
        check::<FixedWindow>(limit, period_ms, burst);
        check::<SlidingWindowCounter>(limit, period_ms, burst);
        check::<SlidingWindowLog>(limit, period_ms, burst);
    }
}

/// The token bucket keeps its instants offset by 2^61 ns in one 64-bit word, so readings past
/// 2^64 − 2^61 ns cannot be stored: past that reading it refills nothing, admits fewer cells
/// than one burst in all, however long the clock runs on, and refuses every request from one
/// fill time past it.
#[test]
fn the_token_bucket_stops_refilling_past_the_readings_it_can_store() {
    let end = u64::MAX - (1 << 61) + 1;
    let fill_time = 1_000_000_000;
    for start in [1, 1_000, 300_000_000, fill_time - 1] {
        let (bucket, clock) = limiter::<TokenBucket>(Quota::per_second(10).unwrap());
        let mut admitted = 0;
        let mut now = end + start;
        while now < end + 3 * fill_time {
            clock.set(Duration::from_nanos(now));
            let decision = bucket.check();
            if decision.is_allowed() {
                admitted += 1;
                assert!(
                    now < end + fill_time,
                    "admitted {} ns past the end",
                    now - end
                );
            } else {
                now += 10_000_000;
            }
        }
        assert!(
            admitted < 10,
            "{admitted} admitted from {start} ns past the end"
        );
    }
}

/// GCRA keeps a state's time to full recovery across quota changes: a drained limiter stays
/// drained under a raised quota (its next cell comes one new interval later), and one that owes
/// more than the new burst duration waits the excess out before its first cell.
#[test]
fn gcra_keeps_a_drained_states_time_to_full_recovery_across_quota_changes() {
    let (raised, clock) = limiter::<Gcra>(Quota::per_second(10).unwrap());
    drain(&raised);
    raised.set_quota(Quota::per_second(100).unwrap()).unwrap();
    assert_eq!(raised.check_n(0).unwrap().remaining(), 0);
    let denied = raised.check();
    assert!(denied.is_denied());
    assert_eq!(denied.retry_after(), Duration::from_millis(10));
    clock.advance(Duration::from_millis(10));
    assert!(raised.check().is_allowed());
    assert!(raised.check().is_denied());

    // A second of debt against a burst duration of 200 ms: 800 ms are waited out, then one
    // interval of 100 ms for the first cell.
    let (cut, clock) = limiter::<Gcra>(Quota::per_second(10).unwrap());
    drain(&cut);
    cut.set_quota(Quota::per_second(10).unwrap().with_burst(2).unwrap())
        .unwrap();
    let denied = cut.check();
    assert_eq!(denied.retry_after(), Duration::from_millis(900));
    clock.advance(Duration::from_millis(900) - Duration::from_nanos(1));
    assert!(cut.check().is_denied());
    clock.advance(Duration::from_nanos(1));
    assert!(cut.check().is_allowed());
    assert!(cut.check().is_denied());
}
