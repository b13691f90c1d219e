//! The `metrics` feature: a known sequence of requests gives exact counts under the cache's
//! name, the same as its `Stats`, and no series per URL.
#![cfg(feature = "metrics")]

mod http_support;

use std::time::Duration;

use http_support::{Reply, TestOrigin, get, response};
use infra_common::ManualClock;
use infra_edgecache::http::{CacheStatus, HttpCache};
use infra_edgecache::metrics::{
    CACHE_LABEL, COALESCED_WAITS_TOTAL, DEFAULT_NAME, EVICTIONS_TOTAL, LOOKUPS_TOTAL,
    OUTCOME_LABEL, REVALIDATIONS_TOTAL, STALE_SERVED_TOTAL, STORED_BYTES_TOTAL,
};
use infra_testkit::metrics::{counters, value};
use metrics_util::debugging::DebuggingRecorder;

fn origin() -> TestOrigin {
    TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10, stale-if-error=100")],
            &"x".repeat(1000),
        ))
    })
}

async fn status(cache: &HttpCache<TestOrigin>, url: &str, headers: &[(&str, &str)]) -> CacheStatus {
    let response = cache.serve(get(url, headers)).await.unwrap();
    *response.extensions().get::<CacheStatus>().unwrap()
}

#[tokio::test]
async fn a_known_sequence_gives_exact_counts_under_the_cache_name() {
    let recorder = DebuggingRecorder::new();
    let clock = ManualClock::new();
    // One shard of 4 KiB: three 1 KB responses fit, the fourth makes the policy evict.
    let cache = metrics::with_local_recorder(&recorder, || {
        HttpCache::builder(origin(), 4096)
            .shards(1)
            .clock(clock.clone())
            .metrics_name("edge")
            .build()
    });
    let a = "http://shop.example/a";
    assert_eq!(status(&cache, a, &[]).await, CacheStatus::Miss);
    assert_eq!(status(&cache, a, &[]).await, CacheStatus::Hit);
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        status(&cache, a, &[("cache-control", "max-stale")]).await,
        CacheStatus::Stale
    );
    // Stale without max-stale: revalidated (no validators, so a full fetch).
    assert_eq!(status(&cache, a, &[]).await, CacheStatus::Miss);

    // Two concurrent requests for a cold URL: one waits for the other's fetch.
    cache.origin().set_open(false);
    let b = "http://shop.example/b";
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { status(&cache, b, &[]).await }
    });
    let second = tokio::spawn({
        let cache = cache.clone();
        async move { status(&cache, b, &[]).await }
    });
    while cache.stats().coalesced_waits == 0 {
        tokio::task::yield_now().await;
    }
    cache.origin().set_open(true);
    assert_eq!(first.await.unwrap(), CacheStatus::Miss);
    assert_eq!(second.await.unwrap(), CacheStatus::Miss);
    for path in ["c", "d", "e"] {
        status(&cache, &format!("http://shop.example/{path}"), &[]).await;
    }

    let stats = cache.stats();
    assert!(stats.evictions > 0);
    let series = counters(&recorder.snapshotter());
    let edge = |name| value(&series, name, &[(CACHE_LABEL, "edge")]);
    let lookups = |outcome| {
        value(
            &series,
            LOOKUPS_TOTAL,
            &[(CACHE_LABEL, "edge"), (OUTCOME_LABEL, outcome)],
        )
    };
    // a: miss, hit, hit (stale), hit (revalidated); b twice and c, d, e once: misses.
    assert_eq!(lookups("hit"), Some(3));
    assert_eq!(lookups("miss"), Some(6));
    assert_eq!((stats.hits, stats.misses), (3, 6));
    assert_eq!(edge(STALE_SERVED_TOTAL), Some(1));
    assert_eq!(edge(REVALIDATIONS_TOTAL), Some(1));
    assert_eq!(edge(COALESCED_WAITS_TOTAL), Some(1));
    assert_eq!(edge(EVICTIONS_TOTAL), Some(stats.evictions));
    // Six responses stored (a twice, b, c, d, e), each over the 1,000 bytes of its body.
    let stored = edge(STORED_BYTES_TOTAL).unwrap();
    assert!((6_000..6 * 1_400).contains(&stored), "{stored}");

    // Every series is under the cache's name; none names a URL.
    assert!(series.iter().all(|(_, labels, _)| {
        labels
            .iter()
            .any(|(key, value)| key == CACHE_LABEL && value == "edge")
            && labels.iter().all(|(_, value)| !value.contains("shop"))
    }));
    let expected = if cfg!(feature = "redis") { 19 } else { 7 };
    assert_eq!(series.len(), expected);
}

#[tokio::test]
async fn an_unnamed_cache_reports_under_default_and_one_built_earlier_reports_nothing() {
    let recorder = DebuggingRecorder::new();
    let clock = ManualClock::new();
    let unnamed = metrics::with_local_recorder(&recorder, || {
        HttpCache::builder(origin(), 1 << 20)
            .clock(clock.clone())
            .build()
    });
    let earlier = HttpCache::builder(origin(), 1 << 20)
        .clock(clock.clone())
        .build();
    status(&unnamed, "http://shop.example/a", &[]).await;
    status(&earlier, "http://shop.example/a", &[]).await;
    let series = counters(&recorder.snapshotter());
    assert_eq!(
        value(
            &series,
            LOOKUPS_TOTAL,
            &[(CACHE_LABEL, DEFAULT_NAME), (OUTCOME_LABEL, "miss")]
        ),
        Some(1)
    );
}

#[tokio::test]
async fn a_head_answered_from_a_stored_get_counts_as_one_hit() {
    let recorder = DebuggingRecorder::new();
    let clock = ManualClock::new();
    let cache = metrics::with_local_recorder(&recorder, || {
        HttpCache::builder(origin(), 1 << 20)
            .clock(clock.clone())
            .metrics_name("edge")
            .build()
    });
    let url = "http://shop.example/a";
    let head = |headers: &[(&str, &str)]| {
        let mut request = get(url, headers);
        *request.method_mut() = http::Method::HEAD;
        request
    };
    let head_status = |response: http::Response<bytes::Bytes>| {
        *response.extensions().get::<CacheStatus>().unwrap()
    };
    assert_eq!(status(&cache, url, &[]).await, CacheStatus::Miss);
    let fresh = cache.serve(head(&[])).await.unwrap();
    assert_eq!(head_status(fresh), CacheStatus::Hit);
    clock.advance(Duration::from_secs(20));
    let accepted = cache
        .serve(head(&[("cache-control", "max-stale")]))
        .await
        .unwrap();
    assert_eq!(head_status(accepted), CacheStatus::Stale);
    // Stale without max-stale: the HEAD goes to the origin under its own key.
    let forwarded = cache.serve(head(&[])).await.unwrap();
    assert_eq!(head_status(forwarded), CacheStatus::Miss);

    let series = counters(&recorder.snapshotter());
    let lookups = |outcome| {
        value(
            &series,
            LOOKUPS_TOTAL,
            &[(CACHE_LABEL, "edge"), (OUTCOME_LABEL, outcome)],
        )
    };
    // The GET's miss, the two HEADs served from it, the HEAD key's miss.
    assert_eq!((lookups("hit"), lookups("miss")), (Some(2), Some(2)));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stale_served), (2, 2, 1));
    assert_eq!(
        value(&series, STALE_SERVED_TOTAL, &[(CACHE_LABEL, "edge")]),
        Some(1)
    );
}
