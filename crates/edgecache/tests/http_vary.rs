//! `HttpCache`'s variants under `Vary`: one set of nominated fields per URL, whatever the
//! order or spelling of the names, and the latest response's set wins.
#![cfg(feature = "tokio")]

mod http_support;

use std::time::Duration;

use http_support::{Reply, TestOrigin, cache, fetch_with, response};
use infra_common::ManualClock;
use infra_edgecache::http::{CacheStatus, MAX_VARIANTS};

#[tokio::test]
async fn a_reordered_vary_replaces_its_variant_instead_of_adding_one() {
    // RFC 9110 §12.5.5 and §5.1: `Vary` nominates a set of case-insensitive field names, so
    // `X-A, X-B` and ` x-b ,X-A, x-a` nominate the same request fields (RFC 9111 §4.1), and a
    // response under either replaces the other for the same selection. Were they two
    // variants, the stale copy would hold one of the URL's slots and push out a live one.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let selection = request.headers()["x-a"].to_str().unwrap().to_owned();
        let max_age = if selection == "short" {
            "max-age=10"
        } else {
            "max-age=600"
        };
        Reply::Response(response(
            &[("cache-control", max_age), ("vary", "X-A, X-B")],
            &selection,
        ))
    });
    let cache = cache(origin, &clock);
    let url = "http://a.test/reordered";
    fetch_with(&cache, url, &[("x-a", "first")]).await;
    fetch_with(&cache, url, &[("x-a", "short")]).await;
    let others: Vec<String> = (0..MAX_VARIANTS - 3).map(|i| i.to_string()).collect();
    for other in &others {
        fetch_with(&cache, url, &[("x-a", other)]).await;
    }
    // The short-lived variant goes stale and comes back under the same names, reordered.
    clock.advance(Duration::from_secs(11));
    cache.origin().set_script(|request| {
        let selection = request.headers()["x-a"].to_str().unwrap().to_owned();
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("vary", " x-b ,X-A, x-a")],
            &selection,
        ))
    });
    assert_eq!(
        fetch_with(&cache, url, &[("x-a", "short")]).await.0,
        CacheStatus::Miss
    );
    // One selection more fills the URL's slots exactly.
    fetch_with(&cache, url, &[("x-a", "last")]).await;
    assert_eq!(
        fetch_with(&cache, url, &[("x-a", "first")]).await,
        (CacheStatus::Hit, "first".into()),
        "the oldest variant was pushed out by a duplicate"
    );
}

#[tokio::test]
async fn a_response_without_vary_does_not_outlive_the_origin_starting_to_vary() {
    // RFC 9111 §4.1: a stored response is selected only if the fields its `Vary` nominates
    // match. Once the origin answers the URL with `Vary: Accept-Encoding`, a response stored
    // before without `Vary` claims to suit every request, which the origin no longer says:
    // the latest response's `Vary` decides, and responses stored under another go.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(&[("cache-control", "max-age=600")], "plain"))
    });
    let cache = cache(origin, &clock);
    let url = "http://a.test/starts-varying";
    assert_eq!(
        fetch_with(&cache, url, &[]).await,
        (CacheStatus::Miss, "plain".into())
    );
    cache.origin().set_script(|request| {
        let encoding = request.headers()["accept-encoding"]
            .to_str()
            .unwrap()
            .to_owned();
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Encoding"),
            ],
            &encoding,
        ))
    });
    // A client's `no-cache` brings the new, varied response while the old one is fresh.
    assert_eq!(
        fetch_with(
            &cache,
            url,
            &[("accept-encoding", "gzip"), ("cache-control", "no-cache")]
        )
        .await,
        (CacheStatus::Miss, "gzip".into())
    );
    assert_eq!(
        fetch_with(&cache, url, &[("accept-encoding", "br")]).await,
        (CacheStatus::Miss, "br".into()),
        "the response stored before the origin varied answered another selection"
    );
    assert_eq!(
        fetch_with(&cache, url, &[("accept-encoding", "gzip")]).await,
        (CacheStatus::Hit, "gzip".into())
    );
}
