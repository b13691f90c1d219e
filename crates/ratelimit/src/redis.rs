//! Limits shared by many processes through Redis: GCRA and the sliding-window log, one round
//! trip per check, decided on the server's clock.
//!
//! Each check is one `EVALSHA` of a small Lua script that reads the server's `TIME`, decides,
//! and updates the key atomically (Redis runs a script without interleaving), so every process
//! sees one state and one clock; clients' clocks never matter. If the server answers `NOSCRIPT`
//! (after a restart or `SCRIPT FLUSH`), the same check is sent once as `EVAL`, which also loads
//! the script for the next calls. Keys expire by themselves once idle.
//!
//! - **GCRA** ([`RemoteAlgorithm::Gcra`]): one string per key holding the theoretical arrival
//!   time, in microseconds; same semantics as [`Gcra`](crate::Gcra).
//! - **Sliding-window log** ([`RemoteAlgorithm::SlidingWindowLog`]): one sorted set per key with
//!   one member per admitted cell in the window (at most `limit`), plus a sequence counter;
//!   exact, as [`SlidingWindowLog`](crate::SlidingWindowLog).
//!
//! Keys are `{prefix}:{key}` with the key in a hash tag, so both keys of one limit live on one
//! cluster slot.
//!
//! **Local cache of keys over the limit.** When Redis says a key cannot get even one cell until
//! some time, the limiter remembers that (on its local monotonic clock) and denies that key
//! without a round trip until then. It only ever denies requests Redis would also deny, as
//! long as a key is always checked under the same quota (a key checked under a larger quota
//! than the one that filled the cache may be denied until the cached time passes).
//!
//! **When Redis is unreachable** (connection refused, reset, or no answer within the timeout),
//! the [`FailurePolicy`] decides. The default is [`FailurePolicy::FailOpen`]: admit, because a
//! rate limiter exists to protect a service, and an outage of the limiter's store should not
//! become an outage of the service. Choose [`FailurePolicy::FailClosed`] where an unlimited
//! burst is worse than refusing traffic (expensive or abusable endpoints), or
//! [`FailurePolicy::Error`] to decide per call. Connections are re-established on the next
//! check, so the limiter recovers by itself when Redis is back.

use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::redis::{Connections, Script};
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use infra_common::{Clock, SystemClock};
use redis::RedisError;

use crate::store::Shards;
use crate::{Decision, Error, Quota};

const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local debt = tat - now
local after = debt + n * interval
if after > tolerance then
  return {0, math.max(0, math.floor((tolerance - debt) / interval)), after - tolerance, debt,
          math.max(0, debt + interval - tolerance)}
end
if n > 0 then
  redis.call('SET', KEYS[1], now + after, 'PX', math.floor(after / 1000) + 1)
end
return {1, math.max(0, math.floor((tolerance - after) / interval)), 0, after,
        math.max(0, after + interval - tolerance)}
";

const LOG_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local function expiry(rank)
  local entry = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.max(0, tonumber(entry[2]) + window - now)
end
if count + n > limit then
  local one = 0
  if count >= limit then one = expiry(count - limit) end
  return {0, math.max(0, limit - count), expiry(count + n - limit - 1), expiry(-1), one}
end
if n > 0 then
  local last = redis.call('INCRBY', KEYS[2], n)
  for i = last - n + 1, last do
    redis.call('ZADD', KEYS[1], now, i)
  end
  local ttl = math.floor(window / 1000) + 1
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  count = count + n
end
local one = 0
if count >= limit then one = expiry(count - limit) end
return {1, limit - count, 0, expiry(-1), one}
";

/// Which algorithm the script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RemoteAlgorithm {
    /// GCRA: burst, then one cell per emission interval.
    #[default]
    Gcra,
    /// Sliding-window log: at most `limit` cells in any window of `period`, exactly.
    SlidingWindowLog,
}

/// What a check does when Redis cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit (the default): the service stays up, unlimited, while Redis is down.
    #[default]
    FailOpen,
    /// Deny, with a `retry_after` of one second.
    FailClosed,
    /// Return [`Error::Unavailable`] and let the caller decide.
    Error,
}

/// Settings of a [`RedisRateLimiter`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    algorithm: RemoteAlgorithm,
    policy: FailurePolicy,
    timeout: Duration,
    prefix: String,
    max_idle_connections: usize,
    deny_cache_capacity: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            algorithm: RemoteAlgorithm::Gcra,
            policy: FailurePolicy::FailOpen,
            timeout: Duration::from_millis(100),
            prefix: "ratelimit".to_owned(),
            max_idle_connections: 16,
            deny_cache_capacity: 100_000,
        }
    }
}

impl RedisOptions {
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

    /// How long to wait for connecting, sending and answering (default 100 ms).
    #[must_use]
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The prefix of every Redis key (default `ratelimit`).
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..self
        }
    }

    /// Connections kept open between checks (default 16).
    #[must_use]
    pub fn max_idle_connections(self, connections: usize) -> Self {
        Self {
            max_idle_connections: connections,
            ..self
        }
    }

    /// How many over-limit keys the local cache remembers (default 100,000; 0 disables it).
    #[must_use]
    pub fn deny_cache_capacity(self, capacity: usize) -> Self {
        Self {
            deny_cache_capacity: capacity,
            ..self
        }
    }
}

/// Counters of what a [`RedisRateLimiter`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Commands sent to Redis (one per check, plus one per `NOSCRIPT` fallback or reconnect
    /// retry).
    pub round_trips: u64,
    /// Checks denied from the local cache without a round trip.
    pub cache_hits: u64,
    /// Checks decided by the failure policy.
    pub failures: u64,
}

/// A rate limit shared through Redis by every process that uses the same keys and quota.
///
/// ```no_run
/// use infra_ratelimit::Quota;
/// use infra_ratelimit::redis::{FailurePolicy, RedisOptions, RedisRateLimiter};
///
/// let limiter = RedisRateLimiter::new(
///     "redis://127.0.0.1:6379",
///     Quota::per_minute(600)?,
///     RedisOptions::default().policy(FailurePolicy::FailClosed),
/// )?;
/// let decision = limiter.check("user:42")?;
/// println!("allowed: {}, retry after {:?}", decision.is_allowed(), decision.retry_after());
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub struct RedisRateLimiter<C: Clock = SystemClock> {
    connections: Connections,
    script: Script,
    quota: Mutex<Quota>,
    options: RedisOptions,
    /// Key → local clock reading until which one cell is certainly denied.
    denied_until: Shards<String, u64>,
    denied_len: AtomicUsize,
    cache_hits: AtomicU64,
    failures: AtomicU64,
    clock: C,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::RedisCounters,
}

/// Arguments of one script call, in the script's units (microseconds).
#[derive(Clone, Copy)]
struct ScriptArgs {
    first: u64,
    second: u64,
    capacity: u32,
}

fn script_args(algorithm: RemoteAlgorithm, quota: &Quota) -> Result<ScriptArgs, Error> {
    let micros = |nanos: u64| nanos / 1_000;
    match algorithm {
        RemoteAlgorithm::Gcra => {
            let interval = micros(quota.interval_nanos());
            if interval == 0 {
                return Err(Error::RateTooHigh {
                    limit: u64::from(quota.limit()),
                    period: quota.period(),
                });
            }
            Ok(ScriptArgs {
                first: interval,
                second: interval * u64::from(quota.burst()),
                capacity: quota.burst(),
            })
        }
        RemoteAlgorithm::SlidingWindowLog => {
            let window = micros(quota.period_nanos());
            if window == 0 {
                return Err(Error::ZeroPeriod);
            }
            Ok(ScriptArgs {
                first: window,
                second: u64::from(quota.limit()),
                capacity: quota.limit(),
            })
        }
    }
}

fn unavailable(error: &RedisError) -> Error {
    Error::Unavailable {
        reason: error.to_string(),
    }
}

impl RedisRateLimiter {
    /// A limiter on the system clock talking to `url` (`redis://host:port/db`).
    ///
    /// No connection is made until the first check.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] for a malformed URL; quota errors when the quota is finer than
    /// a microsecond (the script's unit).
    pub fn new(url: &str, quota: Quota, options: RedisOptions) -> Result<Self, Error> {
        Self::with_clock(url, quota, options, SystemClock::new())
    }
}

impl<C: Clock> RedisRateLimiter<C> {
    /// A limiter whose local deny cache uses `clock` (decisions always use the server's).
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::new`].
    pub fn with_clock(
        url: &str,
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        script_args(options.algorithm, &quota)?;
        let connections = Connections::open(url, options.timeout, options.max_idle_connections)
            .map_err(|e| unavailable(&e))?;
        let source = match options.algorithm {
            RemoteAlgorithm::Gcra => GCRA_SCRIPT,
            RemoteAlgorithm::SlidingWindowLog => LOG_SCRIPT,
        };
        Ok(Self {
            connections,
            // Sent again after a dead pooled connection: in the usual case (a restarted server
            // closed it while idle) the first send never arrived; if it did, the request is
            // counted twice, which errs toward denying, never toward admitting too much.
            script: Script::new(source, true),
            quota: Mutex::new(quota),
            options,
            denied_until: Shards::new(),
            denied_len: AtomicUsize::new(0),
            cache_hits: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            clock,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::RedisCounters::unnamed(),
        })
    }

    /// Names this limiter in its metrics (the `limiter` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    ///
    /// ```
    /// use infra_ratelimit::Quota;
    /// use infra_ratelimit::redis::{RedisOptions, RedisRateLimiter};
    ///
    /// let quota = Quota::per_minute(600)?;
    /// let limiter = RedisRateLimiter::new("redis://127.0.0.1:6379", quota, RedisOptions::default())?
    ///     .with_metrics_name("checkout");
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::RedisCounters::new(name.into());
        self
    }

    /// Reports `decision` to the metrics (with the feature), and returns it.
    #[inline]
    fn observed(&self, decision: Decision) -> Decision {
        #[cfg(feature = "metrics")]
        self.metrics.decisions.record(&decision);
        decision
    }

    /// The quota applied to keys checked without their own.
    pub fn quota(&self) -> Quota {
        *self.quota.lock()
    }

    /// Replaces the default quota. The state in Redis is kept (GCRA keeps each key's time
    /// until full recovery, the log keeps its entries).
    ///
    /// # Errors
    ///
    /// When the quota cannot be expressed in microseconds.
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        script_args(self.options.algorithm, &quota)?;
        *self.quota.lock() = quota;
        Ok(())
    }

    /// What the limiter did so far.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            round_trips: self.script.commands_sent(),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Decides on one request for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// Only with [`FailurePolicy::Error`], when Redis cannot be asked.
    pub fn check(&self, key: &str) -> Result<Decision, Error> {
        self.check_n_with(key, &self.quota(), 1)
    }

    /// Decides on `n` cells for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] when `n` exceeds the capacity; [`Error::Unavailable`]
    /// with [`FailurePolicy::Error`].
    pub fn check_n(&self, key: &str, n: u32) -> Result<Decision, Error> {
        self.check_n_with(key, &self.quota(), n)
    }

    /// Decides on `n` cells for `key` under `quota` (a per-key quota: the quota travels with
    /// each call, so keys can have their own without any registration).
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::check_n`], and quota errors for a quota finer than a microsecond.
    pub fn check_n_with(&self, key: &str, quota: &Quota, n: u32) -> Result<Decision, Error> {
        let args = script_args(self.options.algorithm, quota)?;
        if n > args.capacity {
            return Err(Error::InsufficientCapacity {
                requested: n,
                capacity: args.capacity,
            });
        }
        if n > 0
            && let Some(decision) = self.cached_denial(key, args.capacity)
        {
            return Ok(self.observed(decision));
        }
        match self.run_script(key, args, n) {
            Ok(reply) => Ok(self.observed(self.decide(key, args.capacity, &reply))),
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                self.metrics.record_error(&error);
                match self.options.policy {
                    FailurePolicy::FailOpen => Ok(self.observed(Decision::allowed(
                        args.capacity,
                        args.capacity,
                        Duration::ZERO,
                    ))),
                    FailurePolicy::FailClosed => Ok(self.observed(Decision::denied(
                        args.capacity,
                        0,
                        Duration::from_secs(1),
                        Duration::ZERO,
                    ))),
                    FailurePolicy::Error => Err(unavailable(&error)),
                }
            }
        }
    }

    fn cached_denial(&self, key: &str, capacity: u32) -> Option<Decision> {
        let until = self.denied_until.with(key, |until| *until)?;
        let now = self.clock.now_nanos();
        if now >= until {
            return None;
        }
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_nanos(until - now);
        Some(Decision::denied(capacity, 0, wait, wait))
    }

    /// Turns the script's reply `[allowed, remaining, retry µs, reset µs, one-cell retry µs]`
    /// into a decision, remembering keys that cannot get a cell for a while.
    fn decide(&self, key: &str, capacity: u32, reply: &[i64]) -> Decision {
        let field = |i: usize| reply.get(i).copied().unwrap_or(0).max(0).unsigned_abs();
        let micros = |i: usize| Duration::from_micros(field(i));
        let remaining = u32::try_from(field(1)).unwrap_or(u32::MAX);
        let blocked_for = micros(4);
        if !blocked_for.is_zero() && self.options.deny_cache_capacity > 0 {
            self.remember_denial(key, blocked_for);
        }
        if field(0) == 1 {
            Decision::allowed(capacity, remaining, micros(3))
        } else {
            Decision::denied(capacity, remaining, micros(2), micros(3))
        }
    }

    fn remember_denial(&self, key: &str, blocked_for: Duration) {
        let now = self.clock.now_nanos();
        if self.denied_len.load(Ordering::Relaxed) >= self.options.deny_cache_capacity {
            let removed = self.denied_until.retain(|_, until| *until > now);
            self.denied_len.fetch_sub(removed, Ordering::Relaxed);
            if self.denied_len.load(Ordering::Relaxed) >= self.options.deny_cache_capacity {
                return;
            }
        }
        let until = now.saturating_add(duration_to_nanos(blocked_for));
        if self.denied_until.insert(key.to_owned(), until).is_none() {
            self.denied_len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One check of `n` cells: one round trip, two after a `NOSCRIPT`.
    fn run_script(&self, key: &str, args: ScriptArgs, n: u32) -> Result<Vec<i64>, RedisError> {
        let prefix = &self.options.prefix;
        let state_key = format!("{prefix}:{{{key}}}");
        let script_args = (args.first, args.second, n);
        match self.options.algorithm {
            RemoteAlgorithm::Gcra => {
                self.connections
                    .script(&self.script, &[&state_key], script_args)
            }
            RemoteAlgorithm::SlidingWindowLog => self.connections.script(
                &self.script,
                &[state_key.clone(), format!("{state_key}:seq")],
                script_args,
            ),
        }
    }
}

impl<C: Clock> fmt::Debug for RedisRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("quota", &self.quota())
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
