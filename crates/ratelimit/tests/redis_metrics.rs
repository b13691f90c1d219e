//! The Redis limiter's metrics against a real `redis-server`: decisions count the same whether
//! Redis or the local cache decides. Kept out of `src/metrics.rs` because the server comes from
//! infra-testkit, which is not published (the file is in the crate's `exclude`).
#![cfg(all(feature = "metrics", feature = "redis"))]

use std::time::Duration;

use infra_ratelimit::Quota;
use infra_ratelimit::metrics::{
    CLASS_LABEL, DECISIONS_TOTAL, LIMITER_LABEL, OUTCOME_LABEL, REDIS_ERRORS_TOTAL,
};
use infra_ratelimit::redis::{RedisOptions, RedisRateLimiter};
use infra_testkit::RedisServer;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// One counter series: name, labels sorted by key, value.
type Series = (String, Vec<(String, String)>, u64);

/// Every counter series of one snapshot.
fn counters(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let DebugValue::Counter(count) = value else {
                return None;
            };
            (kind == MetricKind::Counter).then(|| {
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (key.name().to_owned(), labels, count)
            })
        })
        .collect()
}

/// The value of the series `name` with exactly `labels`.
fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    wanted.sort();
    series
        .iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map(|&(_, _, count)| count)
}

#[test]
fn redis_decisions_count_whether_redis_or_the_local_cache_decides() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    // Two per ten hours: nothing refills during the test.
    let quota = Quota::new(2, Duration::from_secs(36_000)).unwrap();
    let limiter = metrics::with_local_recorder(&recorder, || {
        RedisRateLimiter::new(&server.url(), quota, RedisOptions::default())
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
    for class in ["timeout", "connection", "server", "other"] {
        let errors = value(
            &series,
            REDIS_ERRORS_TOTAL,
            &[(LIMITER_LABEL, "shared"), (CLASS_LABEL, class)],
        );
        assert_eq!(errors, Some(0), "{class}");
    }
}
