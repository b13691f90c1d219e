//! How many requests, per how long, with how large a burst.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// The longest period a quota accepts: 2^60 ns, about 36.5 years.
///
/// Bounding every time span well below `u64::MAX` nanoseconds lets the algorithms add spans to
/// clock readings without overflow checks on the hot path.
pub const MAX_PERIOD: Duration = Duration::from_nanos(1 << 60);

/// The longest burst duration (`burst × period / limit`) a quota accepts: 2^61 ns.
const MAX_BURST_NANOS: u128 = 1 << 61;

/// A rate: `limit` requests per `period`, of which up to `burst` may arrive at once.
///
/// - For GCRA and the token bucket, capacity refills continuously at `limit / period`, and the
///   **burst** is the capacity: how many requests a limiter that has been idle long enough
///   admits back to back. By default the burst equals the limit, so `per_second(10)` admits 10
///   at once and then one every 100 ms. [`Quota::with_burst`] changes it, for example to
///   `per_second(10).with_burst(1)`, which spaces every request 100 ms apart.
/// - For window algorithms (fixed window, sliding windows) the window is `period` and at most
///   `limit` requests are admitted per window; the burst is not used.
///
/// Every constructor validates its numbers and returns an [`Error`] rather than panicking:
///
/// ```
/// use infra_ratelimit::{Error, Quota};
/// use std::time::Duration;
///
/// let quota = Quota::per_second(100)?.with_burst(20)?;
/// assert_eq!((quota.limit(), quota.burst()), (100, 20));
/// assert_eq!(quota.emission_interval(), Duration::from_millis(10));
/// assert_eq!(Quota::per_second(0), Err(Error::ZeroLimit));
/// assert!(Quota::new(2_000_000_000, Duration::from_secs(1)).is_err()); // > 1 per ns
/// // 1 per 2.5 ns: whole nanoseconds would make it 1 per 2 ns, 25 % too fast.
/// assert!(Quota::per_second(400_000_000).is_err());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    burst: u32,
    period_nanos: u64,
    interval_nanos: u64,
}

impl Quota {
    /// `limit` requests per `period`, burst equal to the limit.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroLimit`], [`Error::ZeroPeriod`], [`Error::TooLarge`] for a limit above
    /// `u32::MAX` or a period above [`MAX_PERIOD`], [`Error::RateTooHigh`] for more than one
    /// request per nanosecond, [`Error::InvalidConfig`] for a rate whose interval in whole
    /// nanoseconds is more than 1 % shorter than `period / limit` (it would admit more than
    /// 1 % too many: only rates above 10,000,000 per second can be refused so, since below
    /// that the interval is at least 100 ns).
    pub fn new(limit: u64, period: Duration) -> Result<Self, Error> {
        if limit == 0 {
            return Err(Error::ZeroLimit);
        }
        if period.is_zero() {
            return Err(Error::ZeroPeriod);
        }
        let limit32 = u32::try_from(limit).map_err(|_| Error::TooLarge {
            what: "limit",
            value: u128::from(limit),
            max: u128::from(u32::MAX),
        })?;
        if period > MAX_PERIOD {
            return Err(Error::TooLarge {
                what: "period (ns)",
                value: period.as_nanos(),
                max: MAX_PERIOD.as_nanos(),
            });
        }
        // Cannot fail: the period is at most 2^60 ns.
        let period_nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let interval_nanos = period_nanos / limit;
        if interval_nanos == 0 {
            return Err(Error::RateTooHigh { limit, period });
        }
        // What flooring `period / limit` cuts off, as a share of the exact interval
        // (`lost / limit` of `period / limit`): at most 1 %.
        let lost = u128::from(period_nanos - interval_nanos * limit);
        if lost * 100 > u128::from(period_nanos) {
            return Err(Error::InvalidConfig {
                reason: "this rate is not representable: its interval in whole nanoseconds \
                         is more than 1 % shorter than period / limit (use a limit that \
                         divides the period more evenly, or a longer period)",
            });
        }
        Self {
            limit: limit32,
            burst: limit32,
            period_nanos,
            interval_nanos,
        }
        .checked()
    }

    /// `limit` requests per second.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_second(limit: u64) -> Result<Self, Error> {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_minute(limit: u64) -> Result<Self, Error> {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour.
    ///
    /// # Errors
    ///
    /// As [`Quota::new`].
    pub fn per_hour(limit: u64) -> Result<Self, Error> {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// The same rate with a different burst (capacity). Used by GCRA and the token bucket.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroBurst`]; [`Error::TooLarge`] for a burst above `u32::MAX` or one whose
    /// refill takes longer than 2^61 ns.
    pub fn with_burst(self, burst: u64) -> Result<Self, Error> {
        if burst == 0 {
            return Err(Error::ZeroBurst);
        }
        let burst = u32::try_from(burst).map_err(|_| Error::TooLarge {
            what: "burst",
            value: u128::from(burst),
            max: u128::from(u32::MAX),
        })?;
        Self { burst, ..self }.checked()
    }

    fn checked(self) -> Result<Self, Error> {
        let burst_nanos = u128::from(self.burst) * u128::from(self.interval_nanos);
        if burst_nanos > MAX_BURST_NANOS {
            return Err(Error::TooLarge {
                what: "burst duration (ns)",
                value: burst_nanos,
                max: MAX_BURST_NANOS,
            });
        }
        Ok(self)
    }

    /// Requests per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The most requests admitted at once by GCRA and the token bucket.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The period (and, for window algorithms, the window).
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_nanos)
    }

    /// The period in nanoseconds.
    pub fn period_nanos(&self) -> u64 {
        self.period_nanos
    }

    /// Time to replenish one request: `period / limit`, rounded down to whole nanoseconds.
    ///
    /// The rounding makes the effective rate at most one part in `interval` faster than asked
    /// (3 per second admits 3.000000009 per second), and never more than 1 %: the
    /// constructors refuse rates that whole nanoseconds cannot hold that closely.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// [`Quota::emission_interval`] in nanoseconds.
    pub fn interval_nanos(&self) -> u64 {
        self.interval_nanos
    }

    /// Time for an empty GCRA or token bucket to refill completely: `burst × interval`.
    pub fn burst_duration(&self) -> Duration {
        Duration::from_nanos(self.burst_nanos())
    }

    /// [`Quota::burst_duration`] in nanoseconds; at most 2^61.
    pub fn burst_nanos(&self) -> u64 {
        u64::from(self.burst) * self.interval_nanos
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("limit", &self.limit)
            .field("period", &self.period())
            .field("burst", &self.burst)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_reject_numbers_that_cannot_be_a_rate() {
        assert_eq!(Quota::new(0, Duration::from_secs(1)), Err(Error::ZeroLimit));
        assert_eq!(Quota::new(1, Duration::ZERO), Err(Error::ZeroPeriod));
        assert!(matches!(
            Quota::new(u64::MAX, Duration::from_secs(1)),
            Err(Error::TooLarge { what: "limit", .. })
        ));
        assert!(matches!(
            Quota::new(1, Duration::MAX),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            Quota::new(10, Duration::from_nanos(5)),
            Err(Error::RateTooHigh { .. })
        ));
        let q = Quota::per_second(1).unwrap();
        assert_eq!(q.with_burst(0), Err(Error::ZeroBurst));
        assert!(matches!(
            q.with_burst(u64::MAX),
            Err(Error::TooLarge { .. })
        ));
        // 2^32-1 bursts of one second each is far beyond 2^61 ns.
        assert!(matches!(
            q.with_burst(u64::from(u32::MAX)),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn accessors_describe_the_rate() {
        let q = Quota::per_minute(120).unwrap().with_burst(5).unwrap();
        assert_eq!(q.limit(), 120);
        assert_eq!(q.burst(), 5);
        assert_eq!(q.period(), Duration::from_secs(60));
        assert_eq!(q.emission_interval(), Duration::from_millis(500));
        assert_eq!(q.burst_duration(), Duration::from_millis(2500));
        assert_eq!(
            Quota::per_hour(1).unwrap().interval_nanos(),
            3_600_000_000_000
        );
        assert!(format!("{q:?}").contains("burst: 5"));
    }

    #[test]
    fn rates_whole_nanoseconds_cannot_hold_within_one_percent_are_refused() {
        let second = Duration::from_secs(1);
        // One per nanosecond down to 0.99 per nanosecond: interval 1, at most 1 % short.
        for limit in [1_000_000_000, 990_000_000] {
            assert_eq!(Quota::new(limit, second).unwrap().interval_nanos(), 1);
        }
        // Interval 2 ns holds 500,000,000/s exactly and 495,000,000/s within 1 %.
        for limit in [500_000_000, 495_000_000] {
            assert_eq!(Quota::new(limit, second).unwrap().interval_nanos(), 2);
        }
        for limit in [
            989_999_999,
            900_000_000,
            600_000_000,
            494_999_999,
            400_000_000,
        ] {
            assert!(
                matches!(Quota::new(limit, second), Err(Error::InvalidConfig { .. })),
                "{limit}"
            );
        }
    }

    /// The largest whole number of nanoseconds that `limit` times fits in `period`, found by
    /// bisection; `None` if not even 1 does.
    fn largest_fitting_interval(limit: u64, period: u64) -> Option<u128> {
        let fits = |i: u128| i * u128::from(limit) <= u128::from(period);
        let (mut low, mut high) = (0u128, u128::from(period) + 1);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if fits(mid) { low = mid } else { high = mid }
        }
        (low > 0).then_some(low)
    }

    proptest::proptest! {
        /// Over limits and periods of every size, and near every boundary (limits within a
        /// few thousand of `period / k`): a quota is accepted exactly when the interval it
        /// keeps, the largest whole number of nanoseconds fitting `limit` times in the period,
        /// loses at most 1 % of it (interval × limit at least 99 % of the period).
        #[test]
        fn accepted_rates_are_within_one_percent(
            near in proptest::bool::ANY,
            wide_limit in 1u64..=u64::from(u32::MAX),
            wide_period in 1u64..=(1u64 << 60),
            near_period in 1u64..=(1u64 << 34),
            k in 1u64..=300,
            delta in -3000i64..=3000,
        ) {
            let (limit, period) = if near {
                let around = i64::try_from(near_period / k).unwrap() + delta;
                (u64::try_from(around.max(1)).unwrap().min(u64::from(u32::MAX)), near_period)
            } else {
                (wide_limit, wide_period)
            };
            let within_one_percent = largest_fitting_interval(limit, period)
                .filter(|&i| i * u128::from(limit) * 100 >= u128::from(period) * 99);
            match Quota::new(limit, Duration::from_nanos(period)) {
                Ok(quota) => proptest::prop_assert_eq!(
                    Some(u128::from(quota.interval_nanos())),
                    within_one_percent
                ),
                Err(error) => proptest::prop_assert!(
                    within_one_percent.is_none(),
                    "{} per {} ns refused: {}", limit, period, error
                ),
            }
        }
    }
}
