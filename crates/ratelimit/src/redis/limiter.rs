//! The async limiter: one check is local answers first (lease, deny cache, open breaker), then
//! one script run under the check's deadline.

use std::fmt;
use std::hash::BuildHasher;
use std::time::{Duration, UNIX_EPOCH};

use infra_common::clock::duration_to_nanos;
use infra_common::hash::RandomState;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex};
use infra_common::{Clock, SystemClock};

use super::breaker::Pass;
use super::connection::{Endpoint, Failure, Transport};
use super::keys::KeyLayout;
use super::local::{DenyCache, Fetch, Leases, Take};
use super::node_breakers::NodeBreakers;
use super::options::{FailurePolicy, RedisOptions, RemoteAlgorithm, TimeSource};
use super::scripts::{Reply, Script, ScriptQuota};
use crate::{Decision, Error, Quota};

/// How long a request's record is kept at least, whatever the timeout: a resend comes right
/// after its connection drops, well within it.
const MIN_RECORD_TTL: Duration = Duration::from_secs(1);

/// A rate limit shared through Redis, for async callers on a tokio runtime.
///
/// Built inside a tokio runtime with IO and time enabled, on whose tasks its connection runs
/// (a runtime without its timers is refused when the limiter is built:
/// `a_runtime_without_timers_is_refused_when_the_limiter_is_built`); no connection is made
/// until the first check. Not `Clone`: share it in an `Arc`.
/// With feature `tower` it is a [`Limiter`](crate::http::Limiter) for the HTTP layer.
///
/// ```no_run
/// use infra_ratelimit::Quota;
/// use infra_ratelimit::redis::{AsyncRedisRateLimiter, RedisOptions};
///
/// # async fn run() -> Result<(), infra_ratelimit::Error> {
/// let limiter = AsyncRedisRateLimiter::new(
///     "redis://127.0.0.1:6379",
///     Quota::per_minute(600)?,
///     RedisOptions::default(),
/// )?;
/// let decision = limiter.check("user:42").await?;
/// println!("allowed: {}, retry after {:?}", decision.is_allowed(), decision.retry_after());
/// # Ok(())
/// # }
/// ```
pub struct AsyncRedisRateLimiter<C: Clock = SystemClock> {
    core: Arc<Core<C>>,
    /// Beside the core, which checks in flight share: renaming needs no access to it.
    #[cfg(feature = "metrics")]
    metrics: Arc<crate::metrics::RedisCounters>,
}

/// What a check reports its outcome to: the metrics with the feature, nothing without.
#[cfg(feature = "metrics")]
type Observer = crate::metrics::RedisCounters;
#[cfg(not(feature = "metrics"))]
type Observer = ();

/// Everything one limiter shares among its checks, including those in flight after their
/// caller moved on (the HTTP layer's futures own a reference).
struct Core<C> {
    transport: Transport,
    script: Script,
    keys: KeyLayout,
    quota: Mutex<Quota>,
    options: RedisOptions,
    deny: DenyCache,
    leases: Option<Leases>,
    breakers: NodeBreakers,
    tokens: Tokens,
    record_ttl_millis: u64,
    counts: Counts,
    clock: C,
}

/// Counters of what a Redis limiter did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Commands sent to Redis: one per check that asks, plus one per `NOSCRIPT` fallback, one
    /// per request sent again after its connection dropped, and on a cluster one per `CLUSTER
    /// SLOTS` that learned which master serves each slot (for the breakers).
    pub round_trips: u64,
    /// Checks denied from the local deny cache without a round trip.
    pub cache_hits: u64,
    /// Checks admitted from a lease (batching) without a round trip.
    pub lease_hits: u64,
    /// Checks that tried Redis and could not reach it: the failure policy answered.
    pub failures: u64,
    /// Checks the failure policy answered at once because the circuit breaker was open.
    pub short_circuits: u64,
    /// Checks that Redis answered with an error about the request ([`Error::Backend`]).
    pub server_errors: u64,
}

#[derive(Default)]
struct Counts {
    round_trips: AtomicU64,
    cache_hits: AtomicU64,
    lease_hits: AtomicU64,
    failures: AtomicU64,
    short_circuits: AtomicU64,
    server_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Whether the current tokio runtime has its time driver, without which every check would
/// panic. Tokio has no query for it: making a timer is the only test, and without the driver
/// that panics, so the panic is caught here, once, when the limiter is built (its message
/// still reaches the panic hook; with `panic = "abort"` the process aborts, as it would have at
/// the first check).
fn runtime_has_timers() -> bool {
    std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
}

/// Request ids, unique across processes: a random 64-bit instance number and a counter.
struct Tokens {
    instance: u64,
    next: AtomicU64,
}

impl Tokens {
    fn new() -> Self {
        Self {
            instance: RandomState::new().hash_one(std::process::id()),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{sequence:x}", self.instance)
    }
}

impl AsyncRedisRateLimiter {
    /// A limiter on the system clock talking to one server at `url` (`redis://host:port/db`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] outside a tokio runtime, on one built without its timers
    /// (`enable_time`), or for invalid options,
    /// [`Error::Unavailable`] for a malformed URL, and [`Error::TooLarge`] for a log limit above
    /// [`RemoteAlgorithm::MAX_LOG_LIMIT`].
    pub fn new(url: &str, quota: Quota, options: RedisOptions) -> Result<Self, Error> {
        Self::with_clock(url, quota, options, SystemClock::new())
    }

    /// A limiter on the system clock talking to a Redis Cluster through some of its nodes'
    /// URLs (the others are discovered).
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::new`].
    pub fn cluster<S: AsRef<str>>(
        nodes: &[S],
        quota: Quota,
        options: RedisOptions,
    ) -> Result<Self, Error> {
        Self::cluster_with_clock(nodes, quota, options, SystemClock::new())
    }
}

impl<C: Clock> AsyncRedisRateLimiter<C> {
    /// A limiter on one server whose local caches, breaker and (with [`TimeSource::Client`])
    /// decisions read `clock`.
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::new`].
    pub fn with_clock(
        url: &str,
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        Self::build(&Endpoint::Single(url), quota, options, clock)
    }

    /// A limiter on a Redis Cluster reading `clock`, as [`AsyncRedisRateLimiter::with_clock`].
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::new`].
    pub fn cluster_with_clock<S: AsRef<str>>(
        nodes: &[S],
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        let nodes = nodes.iter().map(AsRef::as_ref).collect();
        Self::build(&Endpoint::Cluster(nodes), quota, options, clock)
    }

    pub(crate) fn build(
        endpoint: &Endpoint<'_>,
        quota: Quota,
        options: RedisOptions,
        clock: C,
    ) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidConfig {
                reason: "an AsyncRedisRateLimiter is built inside a tokio runtime, which runs \
                         its connection (RedisRateLimiter brings its own)",
            });
        }
        if !runtime_has_timers() {
            return Err(Error::InvalidConfig {
                reason: "an AsyncRedisRateLimiter times its checks out on the tokio runtime's \
                         timers: build the runtime with `enable_time` (or `enable_all`)",
            });
        }
        options.validate()?;
        ScriptQuota::new(options.algorithm, &quota)?;
        let transport =
            Transport::open(endpoint, options.timeout).map_err(|error| Error::Unavailable {
                reason: error.to_string(),
            })?;
        let leases = options.batching().then(|| {
            Leases::new(
                options.batch_cells,
                duration_to_nanos(options.lease_period),
                options.lease_capacity,
                options.lease_max_bytes,
            )
        });
        let record_ttl = options.timeout.saturating_mul(2).max(MIN_RECORD_TTL);
        let breakers = NodeBreakers::new(
            options.breaker_failures,
            duration_to_nanos(options.breaker_cool_down),
            transport.is_cluster(),
        );
        let core = Core {
            transport,
            script: Script::of(options.algorithm),
            keys: KeyLayout::new(&options.prefix),
            quota: Mutex::new(quota),
            deny: DenyCache::new(options.deny_cache_capacity, options.deny_cache_max_bytes),
            leases,
            breakers,
            tokens: Tokens::new(),
            record_ttl_millis: u64::try_from(record_ttl.as_millis()).unwrap_or(u64::MAX),
            counts: Counts::default(),
            options,
            clock,
        };
        Ok(Self {
            core: Arc::new(core),
            #[cfg(feature = "metrics")]
            metrics: Arc::new(crate::metrics::RedisCounters::unnamed()),
        })
    }

    /// Names this limiter in its metrics (the `limiter` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    ///
    /// ```no_run
    /// use infra_ratelimit::Quota;
    /// use infra_ratelimit::redis::{AsyncRedisRateLimiter, RedisOptions};
    ///
    /// # async fn run() -> Result<(), infra_ratelimit::Error> {
    /// let quota = Quota::per_minute(600)?;
    /// let limiter =
    ///     AsyncRedisRateLimiter::new("redis://127.0.0.1:6379", quota, RedisOptions::default())?
    ///         .with_metrics_name("checkout");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = Arc::new(crate::metrics::RedisCounters::new(name.into()));
        self
    }

    /// Where this limiter's checks report.
    fn observer(&self) -> &Observer {
        #[cfg(feature = "metrics")]
        return &self.metrics;
        #[cfg(not(feature = "metrics"))]
        &()
    }

    /// A check of `n` cells for `key` under the default quota that owns what it uses, for
    /// callers that cannot lend the limiter for the check's duration.
    #[cfg(feature = "tower")]
    pub(crate) fn owned_check(
        &self,
        key: String,
        n: u32,
    ) -> impl std::future::Future<Output = Result<Decision, Error>> + Send + 'static
    where
        C: 'static,
    {
        let core = Arc::clone(&self.core);
        #[cfg(feature = "metrics")]
        let metrics = Arc::clone(&self.metrics);
        async move {
            #[cfg(feature = "metrics")]
            let observer = &*metrics;
            #[cfg(not(feature = "metrics"))]
            let observer = &();
            let quota = core.quota();
            core.check_n_with(observer, &key, &quota, n).await
        }
    }

    /// The quota applied to keys checked without their own.
    pub fn quota(&self) -> Quota {
        self.core.quota()
    }

    /// Replaces the default quota. The state in Redis is kept as long as its TTL: GCRA keeps
    /// each key's time until full recovery, whatever the quota; the log keeps its cells while
    /// it lives, which is one window (plus the clock skew, with client time) after its newest
    /// cell, the window of the quota it was admitted under. So after the window grows, a key
    /// whose log is not written to again is forgotten once the old window has passed, and may
    /// then be admitted `limit` more within the new one
    /// (`a_log_outlives_its_last_admission_by_that_admissions_window_only`).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for a log limit above [`RemoteAlgorithm::MAX_LOG_LIMIT`].
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        ScriptQuota::new(self.core.options.algorithm, &quota)?;
        *self.core.quota.lock() = quota;
        Ok(())
    }

    /// What the limiter did so far.
    pub fn stats(&self) -> RedisStats {
        let counts = &self.core.counts;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisStats {
            round_trips: read(&counts.round_trips),
            cache_hits: read(&counts.cache_hits),
            lease_hits: read(&counts.lease_hits),
            failures: read(&counts.failures),
            short_circuits: read(&counts.short_circuits),
            server_errors: read(&counts.server_errors),
        }
    }

    /// The options the limiter was built with.
    #[cfg(feature = "tower")]
    pub(crate) fn options(&self) -> &RedisOptions {
        &self.core.options
    }

    /// Decides on one request for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::check_n_with`].
    pub async fn check(&self, key: &str) -> Result<Decision, Error> {
        self.check_n_with(key, &self.quota(), 1).await
    }

    /// Decides on `n` cells for `key` under the default quota.
    ///
    /// # Errors
    ///
    /// As [`AsyncRedisRateLimiter::check_n_with`].
    pub async fn check_n(&self, key: &str, n: u32) -> Result<Decision, Error> {
        self.check_n_with(key, &self.quota(), n).await
    }

    /// Decides on `n` cells for `key` under `quota` (a per-key quota: the quota travels with
    /// each call, so keys can have their own without any registration).
    ///
    /// Cancel-safe: a check dropped before its answer took nothing locally, and in Redis at
    /// most what its script took if it had already run.
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] when `n` exceeds what the quota admits at once;
    /// [`Error::TooLarge`] for a key longer than [`RedisOptions::max_key_len`];
    /// [`Error::Backend`] when Redis answers with an error about the request (whatever the
    /// policy); [`Error::Unavailable`] when Redis cannot be asked and the policy is
    /// [`FailurePolicy::Error`]; [`Error::TooLarge`] for a log limit above
    /// [`RemoteAlgorithm::MAX_LOG_LIMIT`].
    pub async fn check_n_with(&self, key: &str, quota: &Quota, n: u32) -> Result<Decision, Error> {
        self.core.check_n_with(self.observer(), key, quota, n).await
    }
}

impl<C: Clock> Core<C> {
    fn quota(&self) -> Quota {
        *self.quota.lock()
    }

    /// One check, reporting to `observer`.
    async fn check_n_with(
        &self,
        observer: &Observer,
        key: &str,
        quota: &Quota,
        n: u32,
    ) -> Result<Decision, Error> {
        let limits = ScriptQuota::new(self.options.algorithm, quota)?;
        if key.len() > self.options.max_key_len {
            return Err(Error::TooLarge {
                what: "key (bytes)",
                value: key.len() as u128,
                max: self.options.max_key_len as u128,
            });
        }
        let capacity = limits.capacity;
        if n > capacity {
            return Err(Error::InsufficientCapacity {
                requested: n,
                capacity,
            });
        }
        let now = self.clock.now_nanos();
        let (want, fetch) = match self.leases.as_ref().filter(|_| n > 0) {
            Some(leases) => match leases.take(key, n, now, limits) {
                Take::Spent { left, reset_after } => {
                    bump(&self.counts.lease_hits);
                    return Ok(
                        self.observed(observer, Decision::allowed(capacity, left, reset_after))
                    );
                }
                Take::Fetch(fetch) => (leases.want(n, capacity), Some(fetch)),
                Take::Single => (n, None),
            },
            None => (n, None),
        };
        if n > 0
            && let Some(denied) = self.deny.denied_for(key, limits, now)
            && let Some(retry_after) = self.cached_retry(limits, n, denied.one_cell)
        {
            bump(&self.counts.cache_hits);
            return Ok(self.observed(
                observer,
                Decision::denied(capacity, 0, retry_after, denied.reset_after),
            ));
        }
        let slot = self.transport.is_cluster().then(|| KeyLayout::slot(key));
        let breaker = self.breakers.for_slot(slot);
        let probe = match breaker.pass(now) {
            Pass::Call => None,
            Pass::Probe(probe) => Some(probe),
            Pass::Open => {
                bump(&self.counts.short_circuits);
                #[cfg(feature = "metrics")]
                observer.record_error(crate::metrics::RedisErrorClass::CircuitOpen);
                return self.policy(observer, capacity, n, || {
                    "the circuit breaker is open after repeated failures to reach Redis".to_owned()
                });
            }
        };
        let result = self.ask(key, slot, limits, n, want).await;
        match result {
            Ok(reply) => {
                breaker.succeeded();
                drop(probe);
                // Timed from `now`, read before the script ran, never from the reply's arrival:
                // a slow reply would otherwise stretch a cached denial past the moment Redis
                // admits again, and a lease past its period after the grant.
                Ok(self.observed(observer, self.decide(key, limits, n, &reply, fetch, now)))
            }
            Err(failure) => {
                #[cfg(feature = "metrics")]
                observer.record_error(failure.class());
                if failure.is_unavailability() {
                    bump(&self.counts.failures);
                    breaker.failed(self.clock.now_nanos(), probe);
                    self.breakers.mark_stale();
                    self.policy(observer, capacity, n, || failure.reason())
                } else {
                    bump(&self.counts.server_errors);
                    breaker.succeeded();
                    Err(Error::Backend {
                        reason: failure.reason(),
                    })
                }
            }
        }
    }

    /// Runs the script once, or twice with the same request id when the first attempt's
    /// connection dropped, all within the timeout; on a cluster whose slot map is to be
    /// learned, learns it first from the master of the key's `slot` (if the master cannot
    /// tell, the next check asks again).
    async fn ask(
        &self,
        key: &str,
        slot: Option<u16>,
        limits: ScriptQuota,
        n: u32,
        want: u32,
    ) -> Result<Reply, Failure> {
        let token = self.tokens.next();
        let keys = self.keys.script_keys(self.options.algorithm, key, &token);
        let (now, skew) = match self.options.time_source {
            TimeSource::Server => (String::new(), 0),
            TimeSource::Client => {
                let since_epoch = self.clock.wall_time().duration_since(UNIX_EPOCH);
                let micros = since_epoch.map_or(0, |elapsed| elapsed.as_micros());
                (micros.to_string(), self.options.max_clock_skew.as_millis())
            }
        };
        let args = [
            limits.first.to_string(),
            limits.second.to_string(),
            n.to_string(),
            want.to_string(),
            now,
            self.record_ttl_millis.to_string(),
            skew.to_string(),
            limits.per_micro.to_string(),
        ];
        let attempt = async {
            // A learner dropped without a map (no answer) leaves the map to learn again.
            if let Some(slot) = slot
                && let Some(learner) = self.breakers.learner()
                && let Ok(ranges) = self
                    .transport
                    .slot_ranges(slot, &self.counts.round_trips)
                    .await
            {
                learner.learned(ranges);
            }
            let run = || async {
                self.transport
                    .eval(&self.script, &keys, &args, &self.counts.round_trips)
                    .await
                    .map_err(Failure::of)
            };
            let value = match run().await {
                Err(failure) if failure.is_worth_resending() => run().await,
                other => other,
            }?;
            Reply::parse(&value)
                .filter(|reply| reply.granted <= want && (!reply.allowed || reply.granted >= n))
                .ok_or_else(|| Failure::Malformed(format!("{value:?}")))
        };
        let generation = self.transport.generation();
        let result = tokio::time::timeout(self.options.timeout, attempt)
            .await
            .unwrap_or(Err(Failure::Timeout));
        // Timed out here or in the cluster client (whose own deadline is the same): the
        // connection may be dead without showing it.
        if let Err(Failure::Timeout) = result {
            self.transport.abandon(generation);
        }
        result
    }

    /// Turns a reply into a decision: remembers a key that cannot get a cell for a while, and
    /// puts the cells of a batch beyond this check's `n` into the lease.
    fn decide(
        &self,
        key: &str,
        limits: ScriptQuota,
        n: u32,
        reply: &Reply,
        fetch: Option<Fetch<'_>>,
        now: u64,
    ) -> Decision {
        let micros = Duration::from_micros;
        let capacity = limits.capacity;
        if reply.blocked_micros > 0 {
            let until = now.saturating_add(reply.blocked_micros.saturating_mul(1_000));
            let reset_at = now.saturating_add(reply.reset_micros.saturating_mul(1_000));
            self.deny.remember(key, limits, now, until, reset_at);
        }
        let reset_after = micros(reply.reset_micros);
        if !reply.allowed {
            return Decision::denied(
                capacity,
                reply.remaining,
                micros(reply.retry_micros),
                reset_after,
            );
        }
        let spare = reply.granted.saturating_sub(n);
        if let Some(fetch) = fetch {
            fetch.fill(spare, reset_after, now);
        }
        Decision::allowed(capacity, reply.remaining.saturating_add(spare), reset_after)
    }

    /// When `n` cells are free again, for a key whose first cell is `one_cell` away, as Redis
    /// would say it; `None` when only Redis can say. Under GCRA each further cell comes one
    /// interval after the one before; under the log it comes when a cell of a given age leaves
    /// the window, which the cache does not know.
    fn cached_retry(&self, limits: ScriptQuota, n: u32, one_cell: Duration) -> Option<Duration> {
        match self.options.algorithm {
            _ if n == 1 => Some(one_cell),
            RemoteAlgorithm::Gcra => {
                let further = limits.duration(limits.first).checked_mul(n - 1)?;
                one_cell.checked_add(further)
            }
            RemoteAlgorithm::SlidingWindowLog => None,
        }
    }

    /// The failure policy's answer to a check of `n` cells when Redis cannot be asked.
    fn policy(
        &self,
        observer: &Observer,
        capacity: u32,
        n: u32,
        reason: impl FnOnce() -> String,
    ) -> Result<Decision, Error> {
        match self.options.policy {
            FailurePolicy::FailOpen => Ok(self.observed(
                observer,
                Decision::allowed(capacity, capacity, Duration::ZERO),
            )),
            // Zero cells consume nothing, so refusing them protects nothing (every limiter
            // admits `check_n(0)`); nothing is known to be left to spend.
            FailurePolicy::FailClosed if n == 0 => Ok(self.observed(
                observer,
                Decision::allowed(capacity, 0, Duration::from_secs(1)),
            )),
            // Retried after a second, the check asks Redis afresh: no sooner may the client
            // count on its quota, so the reset says the same second, not zero.
            FailurePolicy::FailClosed => Ok(self.observed(
                observer,
                Decision::denied(capacity, 0, Duration::from_secs(1), Duration::from_secs(1)),
            )),
            FailurePolicy::Error => Err(Error::Unavailable { reason: reason() }),
        }
    }

    /// Reports `decision` to `observer` (with the feature), and returns it.
    #[inline]
    fn observed(&self, observer: &Observer, decision: Decision) -> Decision {
        #[cfg(feature = "metrics")]
        observer.decisions.record(&decision);
        #[cfg(not(feature = "metrics"))]
        let () = *observer;
        decision
    }
}

impl<C: Clock> fmt::Debug for AsyncRedisRateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRedisRateLimiter")
            .field("quota", &self.quota())
            .field("options", &self.core.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
