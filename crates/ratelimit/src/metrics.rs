//! What the limiters decide, reported through the [`metrics`] facade (feature `metrics`), so
//! any exporter (Prometheus, StatsD, OpenTelemetry) can serve it.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`DECISIONS_TOTAL`] | counter | `limiter`, `outcome` | every decision a limiter returns: `outcome` is `admitted` or `denied`, or `too_many_keys` when a keyed limiter refuses a new key |
//! | [`REDIS_ERRORS_TOTAL`] | counter | `limiter`, `class` | Redis checks that got no decision from Redis: `class` is `timeout`, `connection` (both answered by the failure policy), `circuit_open` (answered by the policy without asking, the breaker being open), `server` (an error reply: `LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`, `NOREPLICAS` and `READONLY` go to the policy, any other is returned as `Error::Backend`) or `other` (a reply of an unexpected shape, returned as `Error::Backend`) |
//!
//! `limiter` is the name given with `with_metrics_name` on [`RateLimiter`](crate::RateLimiter),
//! [`KeyedRateLimiter`](crate::KeyedRateLimiter) or `RedisRateLimiter` (default
//! [`DEFAULT_LIMITER_NAME`]). Keys never become labels: a metric series per user would grow
//! without bound. `check_n(0)`, which consumes nothing, is counted as `admitted` like any
//! other admitted decision. An `AsyncRateLimiter` (feature `tokio`) counts every check its
//! waiters make: a request that waits adds denied decisions before its admitted one.
//!
//! Each limiter registers its counters once, when it is built or renamed, and keeps the
//! handles: a check then costs one increment through the recorder, with no name lookup. The
//! recorder must therefore be installed **before** the limiter is built; a limiter built
//! earlier keeps reporting to nothing. A limiter is registered under the default name when
//! built, so a renamed one leaves that series at zero. Without the feature none of this is
//! compiled: no field, no call, no branch.
//!
//! ```
//! use infra_common::ManualClock;
//! use infra_ratelimit::{Quota, RateLimiter};
//!
//! // Install the exporter's recorder first, then build the limiter.
//! let limiter = RateLimiter::gcra(Quota::per_second(10)?, ManualClock::new())?
//!     .with_metrics_name("api");
//! assert!(limiter.check().is_allowed()); // infra_ratelimit_decisions_total{limiter="api",outcome="admitted"}
//! # Ok::<(), infra_ratelimit::Error>(())
//! ```

use std::borrow::Cow;

use metrics::{Counter, SharedString, Unit, counter, describe_counter};

use crate::Decision;

/// Counter of decisions, labelled `limiter` and `outcome`.
pub const DECISIONS_TOTAL: &str = "infra_ratelimit_decisions_total";
/// Counter of Redis checks that got no decision from Redis, labelled `limiter` and `class`.
pub const REDIS_ERRORS_TOTAL: &str = "infra_ratelimit_redis_errors_total";
/// The label naming the limiter.
pub const LIMITER_LABEL: &str = "limiter";
/// The label naming a decision's outcome.
pub const OUTCOME_LABEL: &str = "outcome";
/// The label naming a Redis error's class.
pub const CLASS_LABEL: &str = "class";
/// The `limiter` label of a limiter that was given no name.
pub const DEFAULT_LIMITER_NAME: &str = "default";

fn describe() {
    describe_counter!(
        DECISIONS_TOTAL,
        Unit::Count,
        "Rate-limit decisions by limiter and outcome (admitted, denied, too_many_keys)."
    );
    describe_counter!(
        REDIS_ERRORS_TOTAL,
        Unit::Count,
        "Redis checks that got no decision from Redis, by limiter and class (timeout, connection, circuit_open, server, other)."
    );
}

fn label(name: Cow<'static, str>) -> SharedString {
    SharedString::from(name)
}

/// The handles one limiter increments: admitted and denied.
#[derive(Debug)]
pub(crate) struct DecisionCounters {
    admitted: Counter,
    denied: Counter,
}

impl DecisionCounters {
    pub(crate) fn new(limiter: Cow<'static, str>) -> Self {
        describe();
        let limiter = label(limiter);
        Self {
            admitted: counter!(DECISIONS_TOTAL, LIMITER_LABEL => limiter.clone(), OUTCOME_LABEL => "admitted"),
            denied: counter!(DECISIONS_TOTAL, LIMITER_LABEL => limiter, OUTCOME_LABEL => "denied"),
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_LIMITER_NAME))
    }

    #[inline]
    pub(crate) fn record(&self, decision: &Decision) {
        if decision.is_allowed() {
            self.admitted.increment(1);
        } else {
            self.denied.increment(1);
        }
    }
}

/// A keyed limiter's handles: its decisions, and refusals of new keys at the cap.
#[derive(Debug)]
pub(crate) struct KeyedCounters {
    pub(crate) decisions: DecisionCounters,
    pub(crate) too_many_keys: Counter,
}

impl KeyedCounters {
    pub(crate) fn new(limiter: Cow<'static, str>) -> Self {
        let too_many_keys = counter!(
            DECISIONS_TOTAL,
            LIMITER_LABEL => label(limiter.clone()),
            OUTCOME_LABEL => "too_many_keys"
        );
        Self {
            decisions: DecisionCounters::new(limiter),
            too_many_keys,
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_LIMITER_NAME))
    }
}

/// A Redis limiter's handles: its decisions, and its failures by class.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct RedisCounters {
    pub(crate) decisions: DecisionCounters,
    timeout: Counter,
    connection: Counter,
    server: Counter,
    other: Counter,
    circuit_open: Counter,
}

#[cfg(feature = "redis")]
impl RedisCounters {
    pub(crate) fn new(limiter: Cow<'static, str>) -> Self {
        let error = |class: &'static str| counter!(REDIS_ERRORS_TOTAL, LIMITER_LABEL => label(limiter.clone()), CLASS_LABEL => class);
        Self {
            timeout: error("timeout"),
            connection: error("connection"),
            server: error("server"),
            other: error("other"),
            circuit_open: error("circuit_open"),
            decisions: DecisionCounters::new(limiter),
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_LIMITER_NAME))
    }

    /// Counts one check of `class`.
    pub(crate) fn record_error(&self, class: RedisErrorClass) {
        let counter = match class {
            RedisErrorClass::Timeout => &self.timeout,
            RedisErrorClass::Connection => &self.connection,
            RedisErrorClass::Server => &self.server,
            RedisErrorClass::Other => &self.other,
            RedisErrorClass::CircuitOpen => &self.circuit_open,
        };
        counter.increment(1);
    }
}

/// Why a Redis check got no decision from Redis: the `class` label.
#[cfg(feature = "redis")]
#[derive(Clone, Copy, Debug)]
pub(crate) enum RedisErrorClass {
    /// `timeout`: no answer in time.
    Timeout,
    /// `connection`: no usable connection.
    Connection,
    /// `server`: an error reply.
    Server,
    /// `other`: a reply of an unexpected shape.
    Other,
    /// `circuit_open`: not asked, the circuit breaker being open.
    CircuitOpen,
}

#[cfg(all(test, not(infra_loom)))]
mod tests {

    use infra_common::ManualClock;
    use infra_testkit::metrics::{Series, counters, value};
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::{Error, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter};

    fn decisions(series: &[Series], limiter: &str, outcome: &str) -> Option<u64> {
        value(
            series,
            DECISIONS_TOTAL,
            &[(LIMITER_LABEL, limiter), (OUTCOME_LABEL, outcome)],
        )
    }

    #[test]
    fn direct_limiter_counts_admitted_and_denied_under_its_name() {
        let recorder = DebuggingRecorder::new();
        let limiter = metrics::with_local_recorder(&recorder, || {
            RateLimiter::gcra(Quota::per_second(3).unwrap(), ManualClock::new())
                .unwrap()
                .with_metrics_name("api")
        });
        let allowed = (0..5).filter(|_| limiter.check().is_allowed()).count();
        assert_eq!(allowed, 3);
        // An error is not a decision.
        assert!(limiter.check_n(4).is_err());
        let series = counters(&recorder.snapshotter());
        assert_eq!(decisions(&series, "api", "admitted"), Some(3));
        assert_eq!(decisions(&series, "api", "denied"), Some(2));
        // The series registered under the default name at construction stay at zero.
        assert_eq!(
            decisions(&series, DEFAULT_LIMITER_NAME, "admitted"),
            Some(0)
        );
        assert_eq!(decisions(&series, DEFAULT_LIMITER_NAME, "denied"), Some(0));
        assert_eq!(series.len(), 4);
    }

    #[test]
    fn unnamed_limiters_report_under_the_default_name() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            let limiter =
                RateLimiter::gcra(Quota::per_second(1).unwrap(), ManualClock::new()).unwrap();
            assert!(limiter.check().is_allowed());
            assert!(limiter.check_n(1).unwrap().is_denied());
        });
        let series = counters(&recorder.snapshotter());
        assert_eq!(
            decisions(&series, DEFAULT_LIMITER_NAME, "admitted"),
            Some(1)
        );
        assert_eq!(decisions(&series, DEFAULT_LIMITER_NAME, "denied"), Some(1));
    }

    #[test]
    fn keyed_limiter_counts_decisions_and_refused_keys_but_never_keys() {
        let recorder = DebuggingRecorder::new();
        let clock = ManualClock::new();
        let limiter = metrics::with_local_recorder(&recorder, || {
            KeyedRateLimiter::<u64, crate::Gcra, _>::with_options(
                Quota::per_second(2).unwrap(),
                clock.clone(),
                KeyedOptions::default().max_keys(2),
            )
            .unwrap()
            .with_metrics_name("login")
        });
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&1).unwrap().is_denied());
        assert!(limiter.check(&2).unwrap().is_allowed());
        assert!(matches!(
            limiter.check(&3),
            Err(Error::TooManyKeys { max_keys: 2, .. })
        ));
        let series = counters(&recorder.snapshotter());
        assert_eq!(decisions(&series, "login", "admitted"), Some(3));
        assert_eq!(decisions(&series, "login", "denied"), Some(1));
        assert_eq!(decisions(&series, "login", "too_many_keys"), Some(1));
        // Three series for one limiter, whatever keys it saw.
        let named = series
            .iter()
            .filter(|(_, labels, _)| labels.iter().any(|(_, v)| v == "login"))
            .count();
        assert_eq!(named, 3);
    }

    #[test]
    fn a_limiter_built_before_the_recorder_reports_nothing_to_it() {
        let recorder = DebuggingRecorder::new();
        let limiter = RateLimiter::gcra(Quota::per_second(5).unwrap(), ManualClock::new())
            .unwrap()
            .with_metrics_name("early");
        metrics::with_local_recorder(&recorder, || {
            assert!(limiter.check().is_allowed());
        });
        assert!(counters(&recorder.snapshotter()).is_empty());
    }

    #[test]
    fn renaming_moves_later_decisions_to_the_new_series() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            let limiter = RateLimiter::gcra(Quota::per_second(5).unwrap(), ManualClock::new())
                .unwrap()
                .with_metrics_name("first");
            assert!(limiter.check().is_allowed());
            let limiter = limiter.with_metrics_name("second");
            assert!(limiter.check().is_allowed());
            assert!(limiter.check().is_allowed());
        });
        let series = counters(&recorder.snapshotter());
        assert_eq!(decisions(&series, "first", "admitted"), Some(1));
        assert_eq!(decisions(&series, "second", "admitted"), Some(2));
    }

    #[test]
    fn every_metric_is_described_as_a_count() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || drop(KeyedCounters::unnamed()));
        let described = recorder.snapshotter().snapshot().into_vec();
        assert_eq!(described.len(), 3);
        for (_, unit, description, _) in described {
            assert_eq!(unit, Some(Unit::Count));
            assert!(description.is_some_and(|d| !d.is_empty()));
        }
    }

    /// A Redis URL on a loopback port nobody listens on: connecting is refused at once.
    #[cfg(feature = "redis")]
    fn refused_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("redis://127.0.0.1:{port}")
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_failures_are_counted_by_class_and_policy_decisions_as_decisions() {
        use crate::redis::{FailurePolicy, RedisOptions, RedisRateLimiter};

        let recorder = DebuggingRecorder::new();
        let url = refused_url();
        let quota = Quota::per_second(10).unwrap();
        let (open, closed, error) = metrics::with_local_recorder(&recorder, || {
            let build = |policy, name| {
                // A refused connection fails at once; the long timeout keeps a loaded machine
                // from turning it into a timeout, which is counted under another class.
                let options = RedisOptions::default()
                    .policy(policy)
                    .timeout(std::time::Duration::from_secs(5));
                RedisRateLimiter::new(&url, quota, options)
                    .unwrap()
                    .with_metrics_name(name)
            };
            (
                build(FailurePolicy::FailOpen, "open"),
                build(FailurePolicy::FailClosed, "closed"),
                build(FailurePolicy::Error, "error"),
            )
        });
        assert!(open.check("k").unwrap().is_allowed());
        assert!(open.check("k").unwrap().is_allowed());
        assert!(closed.check("k").unwrap().is_denied());
        assert!(error.check("k").is_err());
        let series = counters(&recorder.snapshotter());
        let errors = |limiter, class| {
            value(
                &series,
                REDIS_ERRORS_TOTAL,
                &[(LIMITER_LABEL, limiter), (CLASS_LABEL, class)],
            )
        };
        assert_eq!(errors("open", "connection"), Some(2));
        assert_eq!(errors("closed", "connection"), Some(1));
        assert_eq!(errors("error", "connection"), Some(1));
        assert_eq!(errors("open", "timeout"), Some(0));
        assert_eq!(decisions(&series, "open", "admitted"), Some(2));
        assert_eq!(decisions(&series, "closed", "denied"), Some(1));
        // With the error policy the caller gets an error, not a decision.
        assert_eq!(decisions(&series, "error", "admitted"), Some(0));
        assert_eq!(decisions(&series, "error", "denied"), Some(0));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn checks_answered_by_an_open_breaker_count_as_circuit_open() {
        use crate::redis::{RedisOptions, RedisRateLimiter};

        let recorder = DebuggingRecorder::new();
        let limiter = metrics::with_local_recorder(&recorder, || {
            RedisRateLimiter::with_clock(
                &refused_url(),
                Quota::per_second(10).unwrap(),
                RedisOptions::default().circuit_breaker(2, std::time::Duration::from_secs(1)),
                ManualClock::new(),
            )
            .unwrap()
            .with_metrics_name("tripped")
        });
        for _ in 0..5 {
            assert!(limiter.check("k").unwrap().is_allowed());
        }
        let series = counters(&recorder.snapshotter());
        let errors = |class| {
            value(
                &series,
                REDIS_ERRORS_TOTAL,
                &[(LIMITER_LABEL, "tripped"), (CLASS_LABEL, class)],
            )
        };
        assert_eq!(errors("connection"), Some(2));
        assert_eq!(errors("circuit_open"), Some(3));
        assert_eq!(decisions(&series, "tripped", "admitted"), Some(5));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn an_async_waiter_counts_each_attempt() {
        use crate::{AsyncRateLimiter, TokioClock};

        let recorder = DebuggingRecorder::new();
        let limiter = metrics::with_local_recorder(&recorder, || {
            let quota = Quota::per_second(1).unwrap();
            AsyncRateLimiter::new(
                RateLimiter::gcra(quota, TokioClock::new())
                    .unwrap()
                    .with_metrics_name("async"),
            )
        });
        assert!(limiter.until_ready().await.unwrap().is_allowed()); // admitted at once
        // Denied on arrival and again at the head of the queue, admitted one second later.
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let series = counters(&recorder.snapshotter());
        assert_eq!(decisions(&series, "async", "admitted"), Some(2));
        assert_eq!(decisions(&series, "async", "denied"), Some(2));
    }
}
