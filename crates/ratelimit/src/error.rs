//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use crate::NotUntil;

/// Everything that can go wrong when building or asking a limiter, and a denial when it is
/// asked for as an error ([`Error::RateLimited`]).
///
/// Quota errors come from constructors fed numbers that cannot describe a rate (zero, too large,
/// or too fine to represent in nanoseconds); they never panic. [`Error::InsufficientCapacity`] is
/// what `check_n(n)` returns when `n` is more than the limiter could ever admit at once: such a
/// request would otherwise be denied forever, so it is an error rather than a denial.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The quota admits zero requests per period. Use a positive limit.
    ZeroLimit,
    /// The quota's period is zero. Use a positive duration.
    ZeroPeriod,
    /// The quota's burst is zero: nothing could ever be admitted. Use a burst of at least 1.
    ZeroBurst,
    /// A number is larger than the limiter can represent (`what` names it).
    TooLarge {
        /// Which number: `"limit"`, `"burst"`, `"period"`, `"burst duration"`, ...
        what: &'static str,
        /// The value given, widened.
        value: u128,
        /// The largest value accepted.
        max: u128,
    },
    /// More than one request per nanosecond: the emission interval rounds down to zero.
    /// Use a longer period or a smaller limit.
    RateTooHigh {
        /// Requests per period given.
        limit: u64,
        /// The period given.
        period: Duration,
    },
    /// The rate is too slow for the algorithm's time resolution (a token bucket refilling less
    /// than one token in many years). Use a larger limit or a shorter period.
    RateTooLow,
    /// A configuration value of a limiter other than its quota is out of range.
    InvalidConfig {
        /// What is wrong, in words.
        reason: &'static str,
    },
    /// `check_n(n)` asked for more than the limiter can ever admit at once.
    ///
    /// Split the request, or raise the burst: a GCRA or token bucket admits at most its burst
    /// at once, a window limiter at most its limit per window.
    InsufficientCapacity {
        /// Cells asked for.
        requested: u32,
        /// The most the limiter admits at once.
        capacity: u32,
    },
    /// A keyed limiter is full (its key cap or its byte cap) and none of the keys its eviction
    /// hand examined was idle, so a new key cannot be tracked without forgetting another key's
    /// state. Retry after `retry_after`, or raise the caps.
    TooManyKeys {
        /// The configured key cap.
        max_keys: usize,
        /// When to try again. [`Decision::RETRY_SOON`](crate::Decision::RETRY_SOON) when the
        /// hand's walk did not go round every tracked key (keys it did not reach may have
        /// replenished already, and the retry examines the next keys at the hand) or found idle
        /// keys but not the room (racing checks took it, or they freed too few bytes for this
        /// key). After a walk over every key, the soonest time
        /// one of them can have replenished, when its slot may be reclaimed: a hint, not a
        /// promise (that key may be used meanwhile); one second if that walk found no key (the
        /// map empty while racing checks hold the room for keys they are inserting). Never zero.
        /// The wait always ends: per-key quotas take at most half of the byte cap, and a key
        /// that alone exceeds the other half
        /// ([`KeyedOptions::max_key_bytes`](crate::KeyedOptions::max_key_bytes)) is
        /// [`Error::TooLarge`] instead, since it could never be sure to fit.
        retry_after: Duration,
    },
    /// A keyed limiter already keeps its maximum of per-key quotas, or the new one's bytes do
    /// not fit under the half of its byte cap that per-key quotas may take
    /// ([`KeyedOptions::max_override_bytes`](crate::KeyedOptions::max_override_bytes)), or,
    /// with the tracked keys', under the whole cap. Clear unused per-key quotas, or raise the
    /// caps.
    TooManyOverrides {
        /// The configured cap on per-key quotas.
        max_overrides: usize,
    },
    /// A remote backend (Redis) could not be asked and the fail-closed policy applies, or an
    /// operation that has no policy failed.
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// A keyed limiter's waiters already wait for their maximum of distinct keys
    /// ([`AsyncKeyedRateLimiter::with_max_waiting_keys`](crate::AsyncKeyedRateLimiter::with_max_waiting_keys)),
    /// or their keys' lines already take their maximum of bytes
    /// ([`AsyncKeyedRateLimiter::with_max_waiting_bytes`](crate::AsyncKeyedRateLimiter::with_max_waiting_bytes)),
    /// and this caller would have had to wait for one more key. Retry later, or raise the caps.
    TooManyWaitingKeys {
        /// The configured cap on keys with waiters.
        max_waiting_keys: usize,
        /// The configured cap on the bytes of their lines.
        max_waiting_bytes: usize,
    },
    /// A waiting limiter's line is full ([`AsyncRateLimiter::with_max_waiters`](crate::AsyncRateLimiter::with_max_waiters),
    /// [`AsyncKeyedRateLimiter::with_max_waiters`](crate::AsyncKeyedRateLimiter::with_max_waiters)),
    /// and this caller would have had to wait. Retry later, or raise the cap.
    TooManyWaiters {
        /// The configured cap on waiting callers.
        max_waiters: usize,
    },
    /// The request was denied: the error of the `?`-friendly checks
    /// ([`KeyedRateLimiter::try_check`](crate::KeyedRateLimiter::try_check); a [`NotUntil`]
    /// from [`RateLimiter::try_check`](crate::RateLimiter::try_check) converts into it). Retry
    /// after [`NotUntil::retry_after`].
    RateLimited(NotUntil),
    /// A remote backend (Redis) answered with an error about the request itself: out of
    /// memory, a key holding another type, a script error, a missing permission. Unlike
    /// [`Error::Unavailable`] the failure policy does not apply: the server is up, and admitting
    /// or denying everyone would hide a fault that does not pass by itself. Fix the cause
    /// (the reason names it).
    Backend {
        /// The server's error.
        reason: String,
    },
}

impl Error {
    /// `Ok` when `requested` cells can ever be admitted at once under `capacity`, else
    /// [`Error::InsufficientCapacity`]: such a request would be denied, or wait, forever.
    #[inline]
    pub(crate) fn within_capacity(requested: u32, capacity: u32) -> Result<(), Self> {
        if requested > capacity {
            return Err(Self::InsufficientCapacity {
                requested,
                capacity,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroLimit => f.write_str("quota limit is zero: use a positive limit"),
            Self::ZeroPeriod => f.write_str("quota period is zero: use a positive duration"),
            Self::ZeroBurst => f.write_str("quota burst is zero: use a burst of at least 1"),
            Self::TooLarge { what, value, max } => {
                write!(f, "{what} {value} is too large (at most {max})")
            }
            Self::RateTooHigh { limit, period } => write!(
                f,
                "{limit} per {period:?} is more than one per nanosecond: use a longer period"
            ),
            Self::RateTooLow => f.write_str("rate is too slow to represent: use a shorter period"),
            Self::InvalidConfig { reason } => write!(f, "invalid limiter configuration: {reason}"),
            Self::InsufficientCapacity {
                requested,
                capacity,
            } => write!(
                f,
                "{requested} cells requested but at most {capacity} can ever be admitted at once"
            ),
            Self::TooManyKeys {
                max_keys,
                retry_after,
            } => write!(
                f,
                "the limiter is full (at most {max_keys} keys, or its byte cap) and no key it \
                 examined is idle: new keys are refused until some are: retry in \
                 {retry_after:?}"
            ),
            Self::TooManyOverrides { max_overrides } => write!(
                f,
                "the limiter keeps at most {max_overrides} per-key quotas within its byte cap: \
                 clear some first"
            ),
            Self::Unavailable { reason } => write!(f, "rate-limit backend unavailable: {reason}"),
            Self::TooManyWaitingKeys {
                max_waiting_keys,
                max_waiting_bytes,
            } => write!(
                f,
                "callers already wait for the most keys the limiter lets wait (at most \
                 {max_waiting_keys} keys within {max_waiting_bytes} bytes): retry later"
            ),
            Self::TooManyWaiters { max_waiters } => write!(
                f,
                "{max_waiters} callers already wait, the most the limiter lets wait: retry later"
            ),
            Self::RateLimited(denial) => fmt::Display::fmt(denial, f),
            Self::Backend { reason } => write!(f, "rate-limit backend refused the check: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<NotUntil> for Error {
    fn from(denial: NotUntil) -> Self {
        Self::RateLimited(denial)
    }
}
