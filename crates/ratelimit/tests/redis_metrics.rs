//! The Redis limiter's metrics against a real `redis-server`: decisions count the same whether
//! Redis or the local cache decides. Kept out of `src/metrics.rs` because the server comes from
//! infra-testkit, which is not published (the file is in the crate's `exclude`).
#![cfg(all(feature = "metrics", feature = "redis"))]

mod redis_support;

use std::time::Duration;

use infra_ratelimit::metrics::{
    CLASS_LABEL, DECISIONS_TOTAL, LIMITER_LABEL, OUTCOME_LABEL, REDIS_ERRORS_TOTAL,
};
use infra_ratelimit::redis::RedisRateLimiter;
use infra_ratelimit::{Error, Quota};
use infra_testkit::RedisServer;
use infra_testkit::metrics::{counters, value};
use metrics_util::debugging::DebuggingRecorder;
use redis_support::options;

#[test]
fn redis_decisions_count_whether_redis_or_the_local_cache_decides() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    // Two per ten hours: nothing refills during the test.
    let quota = Quota::new(2, Duration::from_secs(36_000)).unwrap();
    let limiter = metrics::with_local_recorder(&recorder, || {
        RedisRateLimiter::new(&server.url(), quota, options())
            .unwrap()
            .with_metrics_name("shared")
    });
    assert!(limiter.check("k").unwrap().is_allowed());
    // Redis's answer says the key is now full: the local cache denies the next two.
    assert!(limiter.check("k").unwrap().is_allowed());
    assert!(limiter.check("k").unwrap().is_denied());
    assert!(limiter.check("k").unwrap().is_denied());
    assert!(limiter.check("other").unwrap().is_allowed());
    assert_eq!(limiter.stats().cache_hits, 2);
    let series = counters(&recorder.snapshotter());
    let decisions = |outcome| {
        value(
            &series,
            DECISIONS_TOTAL,
            &[(LIMITER_LABEL, "shared"), (OUTCOME_LABEL, outcome)],
        )
    };
    assert_eq!(decisions("admitted"), Some(3));
    assert_eq!(decisions("denied"), Some(2));
    for class in ["timeout", "connection", "server", "other", "circuit_open"] {
        let errors = value(
            &series,
            REDIS_ERRORS_TOTAL,
            &[(LIMITER_LABEL, "shared"), (CLASS_LABEL, class)],
        );
        assert_eq!(errors, Some(0), "{class}");
    }
}

#[test]
fn an_error_reply_counts_as_a_server_error_and_not_as_a_decision() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let limiter = metrics::with_local_recorder(&recorder, || {
        RedisRateLimiter::new(&server.url(), Quota::per_second(10).unwrap(), options())
            .unwrap()
            .with_metrics_name("typed")
    });
    // A list where the limiter keeps a string: WRONGTYPE.
    assert_eq!(
        server.command(&["RPUSH", "ratelimit:{k}", "x"]).unwrap(),
        ":1"
    );
    assert!(matches!(limiter.check("k"), Err(Error::Backend { .. })));
    assert!(limiter.check("other").unwrap().is_allowed());
    let series = counters(&recorder.snapshotter());
    let count = |name, labels: &[(&str, &str)]| value(&series, name, labels);
    let typed = (LIMITER_LABEL, "typed");
    assert_eq!(
        count(REDIS_ERRORS_TOTAL, &[typed, (CLASS_LABEL, "server")]),
        Some(1)
    );
    assert_eq!(
        count(DECISIONS_TOTAL, &[typed, (OUTCOME_LABEL, "admitted")]),
        Some(1)
    );
    assert_eq!(
        count(DECISIONS_TOTAL, &[typed, (OUTCOME_LABEL, "denied")]),
        Some(0)
    );
}
