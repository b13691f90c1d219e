//! The answer every limiter gives, and the HTTP headers that carry it.

use std::time::Duration;

/// Header naming the most the client may send at once (the legacy triple of the IETF
/// `RateLimit` drafts before the current one, which the `http` module also emits as
/// `RateLimit-Policy` and `RateLimit`).
pub const RATELIMIT_LIMIT: &str = "RateLimit-Limit";
/// Header naming how many more requests would be admitted right now.
pub const RATELIMIT_REMAINING: &str = "RateLimit-Remaining";
/// Header naming the seconds until the limiter has fully recovered.
pub const RATELIMIT_RESET: &str = "RateLimit-Reset";
/// Header naming the seconds a denied client should wait before retrying (RFC 9110 §10.2.3).
pub const RETRY_AFTER: &str = "Retry-After";

/// The outcome of one check: allowed or denied, and what the client can do next.
///
/// - `limit`: the most the limiter admits at once (the burst for GCRA and the token bucket,
///   the per-window limit for window algorithms, the concurrency limit for concurrency limiters).
/// - `remaining`: how many single requests would be admitted right after this decision.
/// - `retry_after`: zero when allowed; when denied, the time after which the *same* request
///   (same `n`) would be admitted if nothing else consumed capacity meanwhile. A denial's is
///   never zero (a zero would have a client retry at once, in a loop): exact where the limiter
///   knows when capacity comes back, [`Decision::RETRY_SOON`] where it cannot know (a
///   concurrency limit, whose slots free whenever a holder finishes).
/// - `reset_after`: time until the limiter is back to its idle state (full capacity).
///
/// ```
/// use infra_ratelimit::{Decision, RateLimiter, Quota};
/// use infra_common::ManualClock;
///
/// let limiter = RateLimiter::gcra(Quota::per_second(2)?, ManualClock::new())?;
/// limiter.check();
/// limiter.check();
/// let denied = limiter.check();
/// assert!(denied.is_denied());
/// let headers: Vec<(&str, u64)> = denied.headers().collect();
/// assert_eq!(
///     headers,
///     [("RateLimit-Limit", 2), ("RateLimit-Remaining", 0), ("RateLimit-Reset", 1), ("Retry-After", 1)]
/// );
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a rate-limit decision that is never read limits nothing"]
pub struct Decision {
    allowed: bool,
    limit: u32,
    remaining: u32,
    retry_after: Duration,
    reset_after: Duration,
}

impl Decision {
    /// The `retry_after` of a denial whose limiter cannot know when capacity comes back, only
    /// that it may at any moment: a concurrency limit's slot frees whenever a holder finishes,
    /// and a full keyed limiter's next sample of keys may find one idle. Short, since retrying
    /// may succeed at once, but not zero, so a client that obeys it does not spin.
    pub const RETRY_SOON: Duration = Duration::from_millis(1);

    /// An admitting decision.
    #[inline]
    pub fn allowed(limit: u32, remaining: u32, reset_after: Duration) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            retry_after: Duration::ZERO,
            reset_after,
        }
    }

    /// A denying decision.
    #[inline]
    pub fn denied(
        limit: u32,
        remaining: u32,
        retry_after: Duration,
        reset_after: Duration,
    ) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            retry_after,
            reset_after,
        }
    }

    /// Whether the request was admitted (and its cost consumed).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Whether the request was refused. A refusal consumes nothing.
    #[inline]
    pub fn is_denied(&self) -> bool {
        !self.allowed
    }

    /// The most the limiter admits at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Single requests that would be admitted right after this decision.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Zero when allowed; otherwise how long until this request would be admitted.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// How long until the limiter is back at full capacity.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// `RateLimit-Reset` value: whole seconds until full capacity, rounded up.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }

    /// `Retry-After` value: whole seconds to wait, rounded up so that a client that waits
    /// exactly this long is admitted; `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        (!self.allowed).then(|| ceil_secs(self.retry_after).max(1))
    }

    /// The header names and values to send: the legacy `RateLimit-Limit`, `-Remaining` and
    /// `-Reset` fields, plus `Retry-After` when denied. The current draft's structured
    /// `RateLimit-Policy` and `RateLimit` need a policy name and window: the `http` module
    /// (feature `tower`) writes them.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, u64)> + use<> {
        [
            (RATELIMIT_LIMIT, u64::from(self.limit)),
            (RATELIMIT_REMAINING, u64::from(self.remaining)),
            (RATELIMIT_RESET, self.reset_secs()),
        ]
        .into_iter()
        .chain(self.retry_after_secs().map(|secs| (RETRY_AFTER, secs)))
    }
}

/// Whole seconds, rounded up: what a client may wait without being early.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_decisions_carry_no_retry_after() {
        let d = Decision::allowed(10, 9, Duration::from_millis(100));
        assert!(d.is_allowed() && !d.is_denied());
        assert_eq!(d.retry_after_secs(), None);
        assert_eq!(d.reset_secs(), 1);
        assert_eq!(
            d.headers().collect::<Vec<_>>(),
            [
                (RATELIMIT_LIMIT, 10),
                (RATELIMIT_REMAINING, 9),
                (RATELIMIT_RESET, 1)
            ]
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero_when_denied() {
        let d = Decision::denied(1, 0, Duration::from_millis(1500), Duration::from_secs(3));
        assert_eq!(d.retry_after_secs(), Some(2));
        assert_eq!(d.reset_secs(), 3);
        let d = Decision::denied(1, 0, Duration::ZERO, Duration::ZERO);
        assert_eq!(d.retry_after_secs(), Some(1));
    }
}
