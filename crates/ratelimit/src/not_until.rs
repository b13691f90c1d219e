//! A denial as an error value, so a check can end a function with `?`.

use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;

use crate::Decision;

/// A denied request, as the error of [`RateLimiter::try_check`](crate::RateLimiter::try_check)
/// (and, inside [`Error::RateLimited`](crate::Error::RateLimited), of
/// [`KeyedRateLimiter::try_check`](crate::KeyedRateLimiter::try_check)): when the request
/// could be admitted, and the full [`Decision`] for the response headers.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{NotUntil, Quota, RateLimiter};
/// use std::time::Duration;
///
/// fn serve(limiter: &RateLimiter<infra_ratelimit::Gcra, ManualClock>) -> Result<&'static str, NotUntil> {
///     limiter.try_check()?;
///     Ok("served")
/// }
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::gcra(Quota::per_second(2)?, clock.clone())?;
/// assert_eq!(serve(&limiter), Ok("served"));
/// assert_eq!(serve(&limiter), Ok("served"));
/// let denied = serve(&limiter).unwrap_err();
/// assert_eq!(denied.retry_after(), Duration::from_millis(500));
/// assert_eq!(denied.earliest_possible(), 500_000_000); // on the limiter's clock
/// clock.advance(Duration::from_millis(200));
/// assert_eq!(denied.wait_time_from(clock.now_nanos()), Duration::from_millis(300));
/// assert_eq!(denied.to_string(), "rate limited: retry after 500ms");
/// # use infra_common::Clock;
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotUntil {
    decision: Decision,
    /// The clock reading the decision was made at.
    checked_at: u64,
}

impl NotUntil {
    /// A denial made at clock reading `checked_at`.
    pub(crate) fn new(decision: Decision, checked_at: u64) -> Self {
        debug_assert!(decision.is_denied());
        Self {
            decision,
            checked_at,
        }
    }

    /// How long after the check the same request would be admitted, if nothing else consumed
    /// capacity meanwhile.
    pub fn retry_after(&self) -> Duration {
        self.decision.retry_after()
    }

    /// The earliest reading of the limiter's clock (nanoseconds) at which the same request
    /// would be admitted, if nothing else consumed capacity meanwhile.
    pub fn earliest_possible(&self) -> u64 {
        self.checked_at
            .saturating_add(duration_to_nanos(self.retry_after()))
    }

    /// How long from clock reading `now` until [`NotUntil::earliest_possible`]; zero once it
    /// has passed.
    pub fn wait_time_from(&self, now: u64) -> Duration {
        Duration::from_nanos(self.earliest_possible().saturating_sub(now))
    }

    /// The denying decision, with what the response headers need.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

impl fmt::Display for NotUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited: retry after {:?}", self.retry_after())
    }
}

impl std::error::Error for NotUntil {}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Error, Gcra, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter};
    use infra_common::{Clock, ManualClock};

    #[test]
    fn denials_become_the_crate_error_and_carry_when_to_come_back() {
        fn direct(limiter: &RateLimiter<Gcra, ManualClock>) -> Result<(), Error> {
            limiter.try_check()?;
            Ok(())
        }
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(7));
        let limiter = RateLimiter::gcra(Quota::per_second(1).unwrap(), clock.clone()).unwrap();
        assert_eq!(direct(&limiter), Ok(()));
        let Err(Error::RateLimited(denied)) = direct(&limiter) else {
            panic!("the second request in a second is denied");
        };
        assert_eq!(denied.earliest_possible(), 8_000_000_000);
        assert_eq!(Error::RateLimited(denied).to_string(), denied.to_string());

        let hour = Duration::from_secs(3_600);
        let keyed = KeyedRateLimiter::<u64, Gcra, _>::with_options(
            Quota::per_hour(1).unwrap(),
            clock.clone(),
            KeyedOptions::default().max_keys(1),
        )
        .unwrap();
        assert_eq!(keyed.try_check(&1), Ok(()));
        let Err(Error::RateLimited(denied)) = keyed.try_check(&1) else {
            panic!("key 1 used its hour");
        };
        assert_eq!(denied.retry_after(), hour);
        assert_eq!(denied.wait_time_from(clock.now_nanos()), hour);
        assert_eq!(denied.decision().remaining(), 0);
        // A key the limiter cannot track is its own error, not a denial.
        assert!(matches!(
            keyed.try_check(&2),
            Err(Error::TooManyKeys { max_keys: 1, .. })
        ));
    }

    #[test]
    fn the_earliest_time_saturates_instead_of_overflowing() {
        let forever = Decision::denied(1, 0, Duration::MAX, Duration::MAX);
        let denial = NotUntil::new(forever, 5);
        assert_eq!(denial.earliest_possible(), u64::MAX);
        assert_eq!(denial.wait_time_from(u64::MAX), Duration::ZERO);
        assert_eq!(denial.decision(), &forever);
    }
}
