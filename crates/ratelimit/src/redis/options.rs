//! What a Redis limiter can be told: algorithm, clock, failure handling, local caches, batching.

use std::time::Duration;

use crate::Error;

/// Which algorithm the script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RemoteAlgorithm {
    /// GCRA: burst, then one cell per emission interval.
    #[default]
    Gcra,
    /// Sliding-window log: at most `limit` cells in any window of `period`, exactly. The limit
    /// is at most [`RemoteAlgorithm::MAX_LOG_LIMIT`].
    SlidingWindowLog,
}

impl RemoteAlgorithm {
    /// The largest limit the sliding-window log accepts in Redis: 100,000 cells per window.
    ///
    /// The log keeps one sorted-set member per admitted cell, and one check adds all of its
    /// cells in one script, during which Redis serves no other client: an unbounded limit
    /// would let one check of a large `n` stall the server for every process and grow one key
    /// without bound. A larger limit is [`Error::TooLarge`] wherever a quota is given
    /// (building, `set_quota`, a per-key quota), before any round trip
    /// (`log_limits_past_the_cap_are_refused_before_any_round_trip`); GCRA, which keeps one
    /// number per key, takes any limit.
    ///
    /// ```
    /// use infra_ratelimit::Quota;
    /// use infra_ratelimit::redis::RemoteAlgorithm;
    ///
    /// let largest = Quota::per_minute(u64::from(RemoteAlgorithm::MAX_LOG_LIMIT))?;
    /// assert_eq!(largest.limit(), 100_000);
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    pub const MAX_LOG_LIMIT: u32 = 100_000;
}

/// What a check does when Redis cannot be asked: unreachable, no answer in time, a server that
/// says it cannot serve now (`LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`,
/// `NOREPLICAS` from a primary without the replicas it must write with, or `READONLY` from a
/// primary a failover made a replica), or a circuit breaker that is open.
///
/// It never applies to a server that answers with an error about the request itself (out of
/// memory, a key of the wrong type, a script error): those are returned as
/// [`Error::Backend`], whatever the policy, because admitting or denying everyone would hide a
/// fault that will not go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit (the default): the service stays up, unlimited, while Redis is down.
    #[default]
    FailOpen,
    /// Deny, with a `retry_after` of one second; a check of zero cells, which consumes
    /// nothing, is still admitted, with nothing left to spend
    /// (`a_zero_cell_check_is_admitted_while_failing_closed`).
    FailClosed,
    /// Return [`Error::Unavailable`] and let the caller decide.
    Error,
}

/// Whose clock decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TimeSource {
    /// The server's `TIME`, read inside the script (the default): every process sees one clock,
    /// so clients' clock skew never matters. In Redis Cluster each key lives on one master and
    /// is always decided on that master's clock.
    #[default]
    Server,
    /// The limiter's own [`Clock`](infra_common::Clock), its wall time in microseconds since the
    /// Unix epoch, sent with every check. Every process must then keep its wall clock in sync:
    /// a process whose clock runs `d` ahead of the others sees `d` more time elapsed, and so up
    /// to `d / interval` more cells (a clock behind sees fewer). Redis still expires keys on
    /// its own clock, so each key is kept [`RedisOptions::max_clock_skew`] longer than its
    /// state needs. Meant for tests that move time by hand (`ManualClock`), and for fleets that
    /// trust their NTP more than a server that may fail over to a replica with another clock.
    Client,
}

/// Settings of a Redis limiter ([`RedisRateLimiter`](super::RedisRateLimiter) or
/// [`AsyncRedisRateLimiter`](super::AsyncRedisRateLimiter)).
///
/// ```
/// use std::time::Duration;
/// use infra_ratelimit::redis::{FailurePolicy, RedisOptions, RemoteAlgorithm};
///
/// let options = RedisOptions::default()
///     .algorithm(RemoteAlgorithm::SlidingWindowLog)
///     .policy(FailurePolicy::FailClosed)
///     .timeout(Duration::from_millis(50))
///     .circuit_breaker(5, Duration::from_secs(1))
///     .batch(10, Duration::from_millis(100))
///     .prefix("api");
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub(crate) algorithm: RemoteAlgorithm,
    pub(crate) policy: FailurePolicy,
    pub(crate) time_source: TimeSource,
    pub(crate) max_clock_skew: Duration,
    pub(crate) timeout: Duration,
    pub(crate) prefix: String,
    pub(crate) max_key_len: usize,
    pub(crate) deny_cache_capacity: usize,
    pub(crate) deny_cache_max_bytes: usize,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cool_down: Duration,
    pub(crate) batch_cells: u32,
    pub(crate) lease_period: Duration,
    pub(crate) lease_capacity: usize,
    pub(crate) lease_max_bytes: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            algorithm: RemoteAlgorithm::Gcra,
            policy: FailurePolicy::FailOpen,
            time_source: TimeSource::Server,
            max_clock_skew: Duration::from_secs(1),
            timeout: Duration::from_millis(100),
            prefix: "ratelimit".to_owned(),
            max_key_len: 1024,
            deny_cache_capacity: 100_000,
            deny_cache_max_bytes: Self::DEFAULT_LOCAL_MAX_BYTES,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(1),
            batch_cells: 1,
            lease_period: Duration::ZERO,
            lease_capacity: 100_000,
            lease_max_bytes: Self::DEFAULT_LOCAL_MAX_BYTES,
        }
    }
}

impl RedisOptions {
    /// Default cap on the bytes of the local deny cache, and separately of the leases: 16 MiB,
    /// about 12,700 keys of the longest length accepted by default (1,024 bytes).
    pub const DEFAULT_LOCAL_MAX_BYTES: usize = 16 << 20;

    /// The longest [`max_clock_skew`](Self::max_clock_skew) accepted: 100 years (of 365.25
    /// days).
    pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

    /// The longest [`timeout`](Self::timeout) accepted: one minute. Every admitted check leaves
    /// a record of its reply in Redis for two timeouts (so that a resend within the timeout is
    /// not counted twice): this keeps each record at most two minutes. A check that may wait
    /// longer than a minute for a rate limit's answer has no use for it.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

    /// The algorithm (default GCRA).
    #[must_use]
    pub fn algorithm(self, algorithm: RemoteAlgorithm) -> Self {
        Self { algorithm, ..self }
    }

    /// The failure policy (default fail-open).
    #[must_use]
    pub fn policy(self, policy: FailurePolicy) -> Self {
        Self { policy, ..self }
    }

    /// Whose clock decides (default the server's).
    #[must_use]
    pub fn time_source(self, time_source: TimeSource) -> Self {
        Self {
            time_source,
            ..self
        }
    }

    /// With [`TimeSource::Client`], how far clients' clocks may run behind Redis's (default
    /// 1 s): every key lives that much longer than its state needs, since Redis expires it on
    /// its own clock. A client whose clock lags by more than this may find a key it still owes
    /// on gone, and get up to `(lag − skew) / interval` cells early. Unused with server time.
    /// At most [`RedisOptions::MAX_DURATION`].
    #[must_use]
    pub fn max_clock_skew(self, skew: Duration) -> Self {
        Self {
            max_clock_skew: skew,
            ..self
        }
    }

    /// How long one check may take, connecting included, before the failure policy answers
    /// (default 100 ms). At most [`RedisOptions::MAX_TIMEOUT`], one minute.
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The prefix of every Redis key (default `ratelimit`). Give each limit its own: two limits
    /// with one prefix share every key's state. It may not contain `{` or `}` (see the module
    /// docs on cluster keys).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// The longest key accepted, in bytes (default 1024); a longer one is
    /// [`Error::TooLarge`], so a client cannot make the limiter send or cache megabytes.
    #[must_use]
    pub fn max_key_len(self, bytes: usize) -> Self {
        Self {
            max_key_len: bytes,
            ..self
        }
    }

    /// How many over-limit keys the local deny cache remembers (default 100,000; 0 disables it).
    ///
    /// A key is remembered with the quota Redis denied it under, and the cache answers only
    /// checks under that same quota: after [`set_quota`](super::AsyncRedisRateLimiter::set_quota)
    /// or under a per-key quota, Redis decides. When full, a new key examines at most 128
    /// remembered keys, in turn, for one whose denial has ended.
    #[must_use]
    pub fn deny_cache_capacity(self, capacity: usize) -> Self {
        Self {
            deny_cache_capacity: capacity,
            ..self
        }
    }

    /// How many bytes the local deny cache's keys may take (default
    /// [`DEFAULT_LOCAL_MAX_BYTES`](Self::DEFAULT_LOCAL_MAX_BYTES)). A key is charged as a keyed
    /// limiter charges it (see [`KeyedRateLimiter::bytes`](crate::KeyedRateLimiter::bytes):
    /// a long key costs its length), plus its denial and its share of the table. Past the cap, a new key is
    /// remembered only if the 128 remembered keys examined make room.
    #[must_use]
    pub fn deny_cache_max_bytes(self, bytes: usize) -> Self {
        Self {
            deny_cache_max_bytes: bytes,
            ..self
        }
    }

    /// Opens the circuit after `failures` consecutive failures to reach Redis, answering with
    /// the failure policy at once for `cool_down`, then lets one probe through (default 5
    /// failures, 1 s). Each failed probe doubles the cool-down, up to 32 times the one given.
    /// `failures` 0 turns the breaker off: every check then asks Redis and pays its timeout.
    /// On a cluster each master has a breaker of its own: the failures counted are those of
    /// the checks of its keys.
    #[must_use]
    pub fn circuit_breaker(self, failures: u32, cool_down: Duration) -> Self {
        Self {
            breaker_failures: failures,
            breaker_cool_down: cool_down,
            ..self
        }
    }

    /// Local batching (off by default): when a key's lease is empty, a check takes up to
    /// `cells` cells from Redis in its one round trip and the following checks of that key in
    /// this process spend them locally, until they run out or `lease` has passed (unspent cells
    /// are then given up). See the module docs for the bound on over-admission. `cells` 0 or 1
    /// turns it off.
    #[must_use]
    pub fn batch(self, cells: u32, lease: Duration) -> Self {
        Self {
            batch_cells: cells,
            lease_period: lease,
            ..self
        }
    }

    /// How many keys hold a lease at once, at most (default 100,000). Past it, keys without a
    /// lease are checked one round trip each until leases expire.
    #[must_use]
    pub fn lease_capacity(self, capacity: usize) -> Self {
        Self {
            lease_capacity: capacity,
            ..self
        }
    }

    /// How many bytes the keys holding a lease may take (default
    /// [`DEFAULT_LOCAL_MAX_BYTES`](Self::DEFAULT_LOCAL_MAX_BYTES)), charged as for
    /// [`deny_cache_max_bytes`](Self::deny_cache_max_bytes). Past it, keys without a lease are
    /// checked one round trip each until leases expire.
    #[must_use]
    pub fn lease_max_bytes(self, bytes: usize) -> Self {
        Self {
            lease_max_bytes: bytes,
            ..self
        }
    }

    /// Whether batching is on.
    pub(crate) fn batching(&self) -> bool {
        self.batch_cells > 1
    }

    /// Refuses settings that cannot work.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| Err(Error::InvalidConfig { reason });
        if self.timeout.is_zero() {
            return invalid("the Redis timeout must be positive");
        }
        // Both become TTLs of the scripts' writes: a request's record lives twice the timeout,
        // which must not keep records for long, and every state the skew longer than it
        // needs, which Redis refuses past the bound, and with it every admission.
        if self.timeout > Self::MAX_TIMEOUT {
            return invalid("the Redis timeout may be at most RedisOptions::MAX_TIMEOUT (1 min)");
        }
        if self.max_clock_skew > Self::MAX_DURATION {
            return invalid("the clock skew may be at most RedisOptions::MAX_DURATION");
        }
        if self.prefix.contains(['{', '}']) {
            return invalid("a Redis key prefix may not contain `{` or `}`: they choose the slot");
        }
        if self.breaker_failures > 0 && self.breaker_cool_down.is_zero() {
            return invalid("the circuit breaker's cool-down must be positive");
        }
        if self.batching() && self.lease_period.is_zero() {
            return invalid("a batch lease must last a positive time");
        }
        Ok(())
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_nonsense_is_refused() {
        let options = RedisOptions::default();
        assert_eq!(options.algorithm, RemoteAlgorithm::Gcra);
        assert_eq!(options.policy, FailurePolicy::FailOpen);
        assert_eq!(options.time_source, TimeSource::Server);
        assert_eq!(options.timeout, Duration::from_millis(100));
        assert_eq!(options.prefix, "ratelimit");
        assert_eq!(options.max_key_len, 1024);
        assert_eq!(options.max_clock_skew, Duration::from_secs(1));
        assert_eq!(options.deny_cache_capacity, 100_000);
        assert_eq!(
            (options.breaker_failures, options.breaker_cool_down),
            (5, Duration::from_secs(1))
        );
        assert!(!options.batching());
        assert_eq!(options.lease_capacity, 100_000);
        assert_eq!(options.deny_cache_max_bytes, 16 << 20);
        assert_eq!(options.lease_max_bytes, 16 << 20);
        assert_eq!(options.validate(), Ok(()));
        let refused = [
            RedisOptions::default().timeout(Duration::ZERO),
            RedisOptions::default().prefix("a}"),
            RedisOptions::default().circuit_breaker(1, Duration::ZERO),
            RedisOptions::default().batch(2, Duration::ZERO),
            RedisOptions::default().timeout(Duration::MAX),
            RedisOptions::default().timeout(RedisOptions::MAX_TIMEOUT + Duration::from_nanos(1)),
            RedisOptions::default().max_clock_skew(Duration::MAX),
        ];
        for options in refused {
            assert!(
                matches!(options.validate(), Err(Error::InvalidConfig { .. })),
                "{options:?}"
            );
        }
        assert_eq!(
            RedisOptions::default()
                .timeout(RedisOptions::MAX_TIMEOUT)
                .max_clock_skew(RedisOptions::MAX_DURATION)
                .validate(),
            Ok(())
        );
        assert_eq!(
            RedisOptions::default()
                .circuit_breaker(0, Duration::ZERO)
                .validate(),
            Ok(()),
            "a breaker turned off needs no cool-down"
        );
    }
}
