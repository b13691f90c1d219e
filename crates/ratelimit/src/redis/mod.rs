//! Limits shared by many processes through Redis or Redis Cluster: GCRA and the sliding-window
//! log, one round trip per check, on one multiplexed connection.
//!
//! - [`AsyncRedisRateLimiter`]: `check(key).await` on a tokio runtime.
//! - [`RedisRateLimiter`]: the same limiter for synchronous callers, on a one-thread runtime of
//!   its own (see its docs for why).
//! - With feature `tower`, both are a [`Limiter`](crate::http::Limiter) for the HTTP layer,
//!   keyed by the key's `Display` text, deciding without blocking the server's threads.
//!
//! Each check is one `EVALSHA` of a small Lua script that decides and updates the key
//! atomically (Redis runs a script without interleaving), so every process sees one state. If
//! the server answers `NOSCRIPT` (after a restart, `SCRIPT FLUSH`, or on a cluster node that
//! never ran it), the same check is sent once as `EVAL`, which also loads the script. Both
//! scripts are written for Redis 6 and 7, using only commands both have (see [`GCRA_SCRIPT`]
//! for their arguments and what they use); the tests run them on Redis 7.0.
//!
//! - **GCRA** ([`RemoteAlgorithm::Gcra`]): one string per key holding the theoretical arrival
//!   time, in microseconds and nanoseconds; the semantics of [`Gcra`](crate::Gcra), with the
//!   emission interval rounded **up** to whole nanoseconds, so Redis never admits faster than
//!   the quota and slower by at most a nanosecond per interval (999,999 per second runs at one
//!   per 1,001 ns); a quota whose burst spans 2^53 ns (about 104 days) or more runs in
//!   microseconds, its interval then being at least 2 ms.
//! - **Sliding-window log** ([`RemoteAlgorithm::SlidingWindowLog`]): one sorted set per key with
//!   one member per admitted cell in the window (at most `limit`, all of one check added by one
//!   `ZADD` per 1,000 cells), plus a counter naming them; exact, as
//!   [`SlidingWindowLog`](crate::SlidingWindowLog), with the window rounded up to microseconds.
//!
//! **Which clock.** By default the server's: the script reads `TIME`, so every process sees one
//! clock and clients' skew never matters; with Redis Cluster each key is always decided on the
//! clock of the master that holds it, and a failover moves it to the new master's clock (a
//! replica's clock that lags by `d` makes its keys owe `d` more for a while; one that leads
//! gives up to `d / interval` cells early). [`TimeSource::Client`] sends the limiter's clock
//! (wall time, microseconds) instead: decisions are then exactly those of the local algorithm
//! fed the same readings (`tests/redis.rs` checks this over long sequences with refills), at
//! the price of trusting every client's clock, as long as Redis keeps the state: a log lives
//! one window of its last admission, so after a longer window is set it may be forgotten
//! while the local log would still count it (see [`AsyncRedisRateLimiter::set_quota`]).
//!
//! **Memory in Redis stays bounded.** Every write sets a TTL no longer than the state it
//! describes: a GCRA key expires when it is full again (at most the burst window, `burst ×
//! interval`), a log and its counter one window after their newest cell, a request's record
//! (below) after two timeouts, at least one second and at most two minutes (the timeout is at
//! most [`RedisOptions::MAX_TIMEOUT`], one minute).
//!
//! **Cluster keys.** A user key's Redis keys all carry the same hash tag, so every script
//! touches one slot, whatever bytes the key holds (empty, starting with `}`, full of braces):
//! `<prefix>:{<tag>}` for the state, `…:seq` for the log's counter, `…:req:<token>` for records,
//! where the tag is the key with `%`, `{` and `}` percent-escaped (the empty key's tag is `%`).
//! The prefix may not contain a brace. Give each limit its own prefix: limits sharing one share
//! every key's state. While a slot migrates between masters, a check whose keys are split
//! between them gets `TRYAGAIN`, which the cluster client retries until the check's timeout.
//!
//! **Failures.** Three kinds, three answers:
//! - Redis cannot be asked (connection refused or lost, no answer within the timeout, a server
//!   that says `LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN` or `TRYAGAIN`, `NOREPLICAS`
//!   because it may write only with replicas it lost, or `READONLY` because a failover made it
//!   a replica): the [`FailurePolicy`] decides, and the circuit breaker counts a failure
//!   (`a_server_busy_with_a_long_script_gets_the_failure_policy`,
//!   `a_primary_without_its_replicas_gets_the_failure_policy`, and every code:
//!   `error_replies_are_sorted_as_the_docs_say`).
//!   After `READONLY` the pooled connection is dropped, so the next check connects again
//!   through the same URL and reaches the new primary when the URL names a proxy, a DNS name or
//!   an address that moved with the failover; one naming the demoted server itself keeps
//!   getting `READONLY` (the policy's answer) until it is primary again.
//!   A connection on which a check timed out is dropped too (for a cluster, the client with
//!   its connections to every master): a peer that died without a reset, or a partition,
//!   shows only silence, and the next check connects afresh rather than waiting on the dead
//!   connection until TCP gives up
//!   (`a_connection_that_stops_answering_is_replaced_after_a_timeout`,
//!   `a_node_connection_that_stops_answering_is_replaced_after_a_timeout`). The default is
//!   [`FailurePolicy::FailOpen`]: admit, because a rate limiter exists to protect a service,
//!   and an outage of the limiter's store should not become an outage of the service. Choose
//!   [`FailurePolicy::FailClosed`] where an unlimited burst is worse than refusing traffic (a
//!   check of zero cells is still admitted: it spends nothing), or [`FailurePolicy::Error`] to
//!   decide per call.
//! - Redis answers with an error about the request (`OOM`, `WRONGTYPE`, a script error,
//!   `NOPERM`): [`Error::Backend`](crate::Error::Backend), whatever the policy, never a silent
//!   admission: the server is up, and the fault will not pass by itself.
//! - Redis keeps failing: a circuit breaker ([`RedisOptions::circuit_breaker`], on by default:
//!   5 failures, 1 s) stops asking after that many consecutive failures and lets the policy
//!   answer at once, then lets one probe through after the cool-down, doubling it after each
//!   failed probe (up to 32 times). Probes are the reconnect back-off: the connection makes one
//!   attempt each time it is asked, and the breaker decides how often. All on the limiter's
//!   [`Clock`](infra_common::Clock). On a cluster every master has a breaker of its own, so a
//!   dead master's keys get the policy's answer at once while the others' keys are decided as
//!   usual: a check finds its master through its key's slot and a slot map the limiter learns
//!   with `CLUSTER SLOTS` from the master it is sent to, at the first check and again after a
//!   check failed to reach its master (until it is known, one breaker stands for the
//!   cluster). A cluster client waits for every master when it connects, so each connection
//!   attempt gets a quarter of the timeout: after a silent master made a check time out and
//!   the client was replaced, the live masters' checks are still answered in time
//!   (`a_dead_masters_breaker_opens_while_the_live_masters_keys_are_decided`).
//!
//! **Retries never count twice.** Every check carries a request id; an admitted check leaves
//! its reply in Redis under that id for a few seconds. When a check's connection drops before
//! its reply arrives, the check is sent again once with the same id (after reconnecting, within
//! its timeout): if the first one ran, the script finds its record and returns the first
//! decision without taking cells again.
//!
//! **Local deny cache.** When Redis says a key cannot get even one cell until some time, the
//! limiter remembers that (on its monotonic clock) and denies that key without a round trip
//! until then, stating what Redis would: when all the request's cells are free (GCRA's come
//! one interval apart; the log's several cells come as older ones leave, which only Redis
//! knows, so the log's checks of several cells still ask it) and when the key is full again
//! (`a_cached_denial_states_what_redis_would`). It only ever denies requests Redis would also deny, as long as a key is always
//! checked under the same quota (a key checked under a larger quota than the one that filled
//! the cache may be denied until the cached time passes). The cache and the leases below are
//! capped by a count of keys and by their bytes ([`RedisOptions::deny_cache_max_bytes`],
//! [`RedisOptions::lease_max_bytes`]), a key charged its length as a keyed limiter charges it.
//!
//! **Batching** ([`RedisOptions::batch`], off by default): leases of allowance, as Envoy's and
//! Stripe's limiters take them. When a process has no cells of a key's lease left, its check
//! takes up to `B` cells in its one round trip (as many as are free, at least what the check
//! needs) and the next checks of that key in this process spend them without asking, until
//! they run out or the lease period `L` passes, when unspent cells are given up (they stay
//! spent in Redis: batching can only waste allowance, never create it). At most one batch per
//! key is being taken by a process at a time; checks arriving meanwhile ask for their own
//! cells only. A lease is spent only by checks under the quota its cells were granted under: a
//! check under another (a per-key quota, or the default after `set_quota`) gives up what is
//! left and asks Redis (`a_lease_is_spent_only_under_the_quota_it_was_taken_under`). The bound:
//! a process holds at most `B − 1` unspent cells of a key at any moment (in its lease, or
//! coming back with its one batch in flight), so in **any** interval the fleet admits at most
//! what the exact limit admits plus `(B − 1)` per process, and a cell is
//! spent at most `L` after Redis granted it. Batching trades that slack, and cells wasted when
//! a lease expires, for round trips: `tests/redis.rs` measures them with `INFO commandstats`.
//! With batching, the `remaining` of a check that asked Redis counts what Redis still had free
//! plus what went into the lease; that of a check answered from the lease counts the lease
//! only.
//!
//! ```no_run
//! use std::time::Duration;
//! use infra_ratelimit::Quota;
//! use infra_ratelimit::redis::{RedisOptions, RedisRateLimiter};
//!
//! let limiter = RedisRateLimiter::cluster(
//!     &["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"],
//!     Quota::per_second(1_000)?,
//!     RedisOptions::default().batch(20, Duration::from_millis(50)),
//! )?;
//! assert!(limiter.check("tenant:7")?.is_allowed());
//! # Ok::<(), infra_ratelimit::Error>(())
//! ```

mod blocking;
mod breaker;
mod connection;
#[cfg(feature = "tower")]
mod http;
mod keys;
mod limiter;
mod local;
mod node_breakers;
mod options;
mod scripts;

pub use blocking::RedisRateLimiter;
pub use limiter::{AsyncRedisRateLimiter, RedisStats};
pub use options::{FailurePolicy, RedisOptions, RemoteAlgorithm, TimeSource};
pub use scripts::{GCRA_SCRIPT, SLIDING_WINDOW_LOG_SCRIPT};
