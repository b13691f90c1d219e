//! The blocking limiter for synchronous callers: the async limiter on a runtime of its own.
//!
//! Each `RedisRateLimiter` owns a tokio runtime with one worker thread, which runs the shared
//! connection (reading replies, reconnecting); a check blocks the calling thread on its
//! future with `block_on`, so many threads share one multiplexed connection and their checks
//! are pipelined on it. The runtime is the limiter's own rather than the caller's so that
//! synchronous programs need none, and so that a check never depends on some other runtime
//! being polled. The price is one thread per limiter, and a check may not be called on a
//! thread inside a tokio runtime's context: there, use
//! [`AsyncRedisRateLimiter`](super::AsyncRedisRateLimiter). Tokio offers no way to tell a
//! runtime's worker, which a check would stall, from its blocking pool, where blocking is
//! allowed, so a `spawn_blocking` closure is refused too; it can run the async limiter's check
//! with `Handle::current().block_on`.

use std::fmt;
use std::future::Future;

use infra_common::{Clock, SystemClock};
use tokio::runtime::Runtime;

use super::connection::Endpoint;
use super::limiter::{AsyncRedisRateLimiter, RedisStats};
use super::options::RedisOptions;
use crate::{Decision, Error, Quota};

/// A rate limit shared through Redis by every process that uses the same keys and quota, for
/// synchronous callers.
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
    limiter: AsyncRedisRateLimiter<C>,
    runtime: OwnRuntime,
}

/// The limiter's runtime, shut down without waiting when dropped, so that a limiter dropped
/// in async code does not block there.
struct OwnRuntime(Option<Runtime>);

impl OwnRuntime {
    fn get(&self) -> &Runtime {
        self.0
            .as_ref()
            .expect("the runtime is taken only when the limiter is dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RedisRateLimiter {
    /// A limiter on the system clock talking to one server at `url` (`redis://host:port/db`).
    ///
    /// No connection is made until the first check.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for invalid options, [`Error::Unavailable`] for a malformed
    /// URL or a runtime that cannot start, and [`Error::TooLarge`] for a log limit above
    /// [`RemoteAlgorithm::MAX_LOG_LIMIT`](super::RemoteAlgorithm::MAX_LOG_LIMIT).
    pub fn new(url: &str, quota: Quota, options: RedisOptions) -> Result<Self, Error> {
        Self::with_clock(url, quota, options, SystemClock::new())
    }

    /// A limiter on the system clock talking to a Redis Cluster through some of its nodes'
    /// URLs.
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::new`].
    pub fn cluster<S: AsRef<str>>(
        nodes: &[S],
        quota: Quota,
        options: RedisOptions,
    ) -> Result<Self, Error> {
        Self::cluster_with_clock(nodes, quota, options, SystemClock::new())
    }
}

impl<C: Clock> RedisRateLimiter<C> {
    /// A limiter on one server whose local caches, breaker and (with
    /// [`TimeSource::Client`](super::TimeSource::Client)) decisions read `clock`.
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
        Self::build(&Endpoint::Single(url), quota, options, clock)
    }

    /// A limiter on a Redis Cluster reading `clock`, as [`RedisRateLimiter::with_clock`].
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::new`].
    pub fn cluster_with_clock<S: AsRef<str>>(
        nodes: &[S],
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        let nodes = nodes.iter().map(AsRef::as_ref).collect();
        Self::build(&Endpoint::Cluster(nodes), quota, options, clock)
    }

    fn build(
        endpoint: &Endpoint<'_>,
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("infra-ratelimit-redis")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|error| Error::Unavailable {
                reason: format!("cannot start the Redis limiter's runtime: {error}"),
            })?;
        let limiter = {
            let _inside = runtime.enter();
            AsyncRedisRateLimiter::build(endpoint, quota, options, clock)?
        };
        Ok(Self {
            limiter,
            runtime: OwnRuntime(Some(runtime)),
        })
    }

    /// Names this limiter in its metrics (the `limiter` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    ///
    /// ```no_run
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
    pub fn with_metrics_name(self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            limiter: self.limiter.with_metrics_name(name),
            runtime: self.runtime,
        }
    }

    /// The quota applied to keys checked without their own.
    pub fn quota(&self) -> Quota {
        self.limiter.quota()
    }

    /// Replaces the default quota, keeping the state in Redis for as long as its TTL (see
    /// [`AsyncRedisRateLimiter::set_quota`]).
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::set_quota`].
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        self.limiter.set_quota(quota)
    }

    /// What the limiter did so far.
    pub fn stats(&self) -> RedisStats {
        self.limiter.stats()
    }

    /// Decides on one request for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::check_n_with`].
    pub fn check(&self, key: &str) -> Result<Decision, Error> {
        self.block_on(self.limiter.check(key))
    }

    /// Decides on `n` cells for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// As [`RedisRateLimiter::check_n_with`].
    pub fn check_n(&self, key: &str, n: u32) -> Result<Decision, Error> {
        self.block_on(self.limiter.check_n(key, n))
    }

    /// Decides on `n` cells for `key` under `quota`, as
    /// [`AsyncRedisRateLimiter::check_n_with`], blocking the calling thread.
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::check_n_with`], and [`Error::InvalidConfig`] when called
    /// on a thread inside a tokio runtime's context (async code, where blocking would stall
    /// the runtime, but also a `spawn_blocking` closure: see the module docs).
    pub fn check_n_with(&self, key: &str, quota: &Quota, n: u32) -> Result<Decision, Error> {
        self.block_on(self.limiter.check_n_with(key, quota, n))
    }

    /// The limiter inside, and the runtime its connection runs on.
    #[cfg(feature = "tower")]
    pub(crate) fn parts(&self) -> (&AsyncRedisRateLimiter<C>, &Runtime) {
        (&self.limiter, self.runtime.get())
    }

    fn block_on<T>(&self, check: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidConfig {
                reason: "a blocking RedisRateLimiter check was called inside a tokio \
                         runtime's context (async code or spawn_blocking): use \
                         AsyncRedisRateLimiter there",
            });
        }
        self.runtime.get().block_on(check)
    }
}

impl<C: Clock> fmt::Debug for RedisRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
