//! `HttpCache` end to end against a scripted origin: revalidation with 304s, Vary, purge by
//! URL and tag, unsafe-method invalidation, the client's own conditionals, Set-Cookie.
#![cfg(feature = "tokio")]

mod http_support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_support::{Reply, TestOrigin, cache, fetch_with, get, response, status};
use infra_common::ManualClock;
use infra_edgecache::http::{CacheStatus, HttpCache, PurgeError, PurgeMode, SetCookiePolicy};

async fn fetch(cache: &HttpCache<TestOrigin>, url: &str) -> (CacheStatus, String) {
    fetch_with(cache, url, &[]).await
}

#[tokio::test]
async fn a_304_freshens_the_stored_response() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "body",
        ))
    });
    let cache = cache(origin, &clock);
    assert_eq!(
        fetch(&cache, "http://a.test/r").await,
        (CacheStatus::Miss, "body".into())
    );
    clock.advance(Duration::from_secs(11));

    cache.origin().set_script(|request| {
        assert_eq!(request.headers()["if-none-match"], "\"v1\"");
        Reply::Response(status(
            304,
            &[
                ("cache-control", "max-age=100"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
            ],
            "",
        ))
    });
    let response = cache.serve(get("http://a.test/r", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Revalidated)
    );
    assert_eq!(response.body(), "body", "the stored body is kept");
    assert_eq!(
        response.headers()["x-version"],
        "2",
        "the 304's fields replace the stored ones"
    );
    assert_eq!(cache.stats().revalidations, 1);

    clock.advance(Duration::from_secs(50));
    assert_eq!(
        fetch(&cache, "http://a.test/r").await,
        (CacheStatus::Hit, "body".into())
    );
    assert_eq!(cache.origin().calls(), 2);
}

/// A response stored with `ETag: "v1"` goes stale; the origin answers its revalidation with a
/// 304 carrying `not_modified`'s fields, which must select no stored response: nothing is
/// freshened, and the request goes to the origin again without conditions for a new 200.
async fn a_304_that_selects_nothing_is_asked_again(
    url: &str,
    not_modified: &'static [(&'static str, &'static str)],
) {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "body",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, url).await;
    clock.advance(Duration::from_secs(11));
    cache.origin().set_script(move |request| {
        if request.headers().contains_key("if-none-match") {
            Reply::Response(status(304, not_modified, ""))
        } else {
            Reply::Response(response(
                &[("cache-control", "max-age=10"), ("etag", "\"v9\"")],
                "new",
            ))
        }
    });
    let response = cache.serve(get(url, &[])).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "new");
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(cache.origin().calls(), 3);
    assert!(!cache.origin().seen()[2].1.contains_key("if-none-match"));
}

#[tokio::test]
async fn a_304_for_another_entity_tag_is_not_merged() {
    // §4.3.4: not taken as validating the stored body; asked again without conditions.
    a_304_that_selects_nothing_is_asked_again("http://a.test/other-tag", &[("etag", "\"v9\"")])
        .await;
}

#[tokio::test]
async fn a_304_without_validators_does_not_freshen_a_response_with_them() {
    // RFC 9111 §4.3.4: a 304 without validators selects a stored response only if that one
    // has none either; a 304 that selects nothing freshens nothing, and the client did not
    // ask a conditional question, so the cache asks again without conditions.
    a_304_that_selects_nothing_is_asked_again(
        "http://a.test/bare-304",
        &[("cache-control", "max-age=10")],
    )
    .await;
}

#[tokio::test]
async fn last_modified_is_sent_as_if_modified_since() {
    let clock = ManualClock::new();
    let modified = "Mon, 01 Jan 2024 00:00:00 GMT";
    let origin = TestOrigin::new(move |_| {
        Reply::Response(response(
            &[("cache-control", "max-age=1"), ("last-modified", modified)],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/lm").await;
    clock.advance(Duration::from_secs(2));
    fetch(&cache, "http://a.test/lm").await;
    let seen = cache.origin().seen();
    assert!(!seen[0].1.contains_key("if-modified-since"));
    assert_eq!(seen[1].1["if-modified-since"], modified);
}

#[tokio::test]
async fn vary_keeps_one_variant_per_selection() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let encoding = request
            .headers()
            .get("accept-encoding")
            .map_or("identity", |v| v.to_str().unwrap())
            .to_owned();
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            &encoding,
        ))
    });
    let cache = cache(origin, &clock);
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(
        fetch_with(&cache, "http://a.test/v", &gzip).await,
        (CacheStatus::Miss, "gzip".into())
    );
    assert_eq!(
        fetch_with(&cache, "http://a.test/v", &br).await,
        (CacheStatus::Miss, "br".into())
    );
    assert_eq!(
        fetch_with(&cache, "http://a.test/v", &gzip).await,
        (CacheStatus::Hit, "gzip".into())
    );
    assert_eq!(
        fetch_with(&cache, "http://a.test/v", &br).await,
        (CacheStatus::Hit, "br".into())
    );
    assert_eq!(
        fetch(&cache, "http://a.test/v").await,
        (CacheStatus::Miss, "identity".into())
    );
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn purge_by_url_hard_and_soft() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600, stale-if-error=600"),
                ("etag", "\"e\""),
            ],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    let uri = Uri::from_static("http://a.test/p");
    fetch(&cache, "http://a.test/p").await;

    assert_eq!(cache.purge_url(&uri, PurgeMode::Soft), Ok(true));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(304, &[("etag", "\"e\"")], "")));
    assert_eq!(
        fetch(&cache, "http://a.test/p").await.0,
        CacheStatus::Revalidated
    );
    assert_eq!(fetch(&cache, "http://a.test/p").await.0, CacheStatus::Hit);

    // A soft-purged response still stands in for a failing origin (stale-if-error).
    assert_eq!(cache.purge_url(&uri, PurgeMode::Soft), Ok(true));
    cache.origin().set_script(|_| Reply::Fail);
    assert_eq!(fetch(&cache, "http://a.test/p").await.0, CacheStatus::Stale);

    assert_eq!(cache.purge_url(&uri, PurgeMode::Hard), Ok(true));
    assert_eq!(cache.purge_url(&uri, PurgeMode::Hard), Ok(false));
    assert!(
        cache.serve(get("http://a.test/p", &[])).await.is_err(),
        "nothing left to stand in"
    );
}

#[tokio::test]
async fn a_purge_by_path_without_a_host_is_not_silently_ignored() {
    // Every stored response is keyed by its host (RFC 9110 §7.2), so a path alone names no
    // stored response: a purge of one must say so rather than do nothing.
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "css")));
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/a.css").await;
    assert_eq!(
        cache.purge_url(&Uri::from_static("/a.css"), PurgeMode::Hard),
        Err(PurgeError::NoHost),
        "a purge of a path alone did nothing"
    );
    assert_eq!(
        fetch(&cache, "http://a.test/a.css").await.0,
        CacheStatus::Hit,
        "a refused purge purges nothing"
    );
    assert_eq!(
        cache.purge_url(&Uri::from_static("https://A.test/a.css"), PurgeMode::Hard),
        Ok(true)
    );
}

#[tokio::test]
async fn a_request_without_a_host_is_not_stored() {
    // RFC 9112 §3.2 and RFC 9113 §8.3.1 require a host in every request; a key without one
    // would mix the paths of every host the origin serves, and no purge by URL could name it.
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "x")));
    let cache = cache(origin, &clock);
    assert_eq!(fetch(&cache, "/no-host").await.0, CacheStatus::Pass);
    assert_eq!(fetch(&cache, "/no-host").await.0, CacheStatus::Pass);
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn purge_by_tag_reaches_tagged_responses_only() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let tags = if request.uri().path() == "/a" {
            "product-1 all"
        } else {
            "product-2 all"
        };
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("surrogate-key", tags)],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/a").await;
    fetch(&cache, "http://a.test/b").await;

    cache.purge_tag("product-1", PurgeMode::Hard);
    assert_eq!(fetch(&cache, "http://a.test/a").await.0, CacheStatus::Miss);
    assert_eq!(fetch(&cache, "http://a.test/b").await.0, CacheStatus::Hit);
    assert_eq!(
        fetch(&cache, "http://a.test/a").await.0,
        CacheStatus::Hit,
        "refetched after the purge"
    );

    cache.purge_tag("all", PurgeMode::Soft);
    assert_eq!(
        fetch(&cache, "http://a.test/a").await.0,
        CacheStatus::Miss,
        "no validators: fetched again"
    );
    assert_eq!(fetch(&cache, "http://a.test/b").await.0, CacheStatus::Miss);
    assert_eq!(cache.origin().calls(), 5);
}

#[tokio::test]
async fn a_tag_purge_reaches_a_fetch_in_progress() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("surrogate-key", "t")],
            "old",
        ))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let pending = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.serve(get("http://a.test/inflight", &[])).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.origin().calls(), 1);
    cache.purge_tag("t", PurgeMode::Hard);
    cache.origin().set_open(true);
    pending.await.unwrap().unwrap();
    assert_eq!(
        fetch(&cache, "http://a.test/inflight").await.0,
        CacheStatus::Miss
    );
}

/// Starts a request for `url` on its own task and returns once the origin has been asked
/// (its gate is expected closed, so the fetch waits there).
async fn start_held_fetch(
    cache: &HttpCache<TestOrigin>,
    url: &'static str,
) -> tokio::task::JoinHandle<Result<http::Response<Bytes>, infra_edgecache::http::Error>> {
    let calls = cache.origin().calls();
    let pending = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.serve(get(url, &[])).await })
    };
    // The runtime is single-threaded: each yield lets the spawned tasks run up to their next
    // await, and the fetch reaches the origin within a few.
    for _ in 0..1_000 {
        if cache.origin().calls() > calls {
            return pending;
        }
        tokio::task::yield_now().await;
    }
    panic!("the fetch never reached the origin");
}

#[tokio::test]
async fn a_hard_url_purge_reaches_a_fetch_in_progress() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "old")));
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let pending = start_held_fetch(&cache, "http://a.test/u").await;
    // The purge lands after the fetch began and before its answer is stored.
    assert_eq!(
        cache.purge_url(&Uri::from_static("http://a.test/u"), PurgeMode::Hard),
        Ok(false)
    );
    cache.origin().set_open(true);
    let answered = pending.await.unwrap().unwrap();
    assert_eq!(
        answered.body(),
        "old",
        "the request that was waiting still gets its answer"
    );

    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "new")));
    assert_eq!(
        fetch(&cache, "http://a.test/u").await,
        (CacheStatus::Miss, "new".into()),
        "the purged answer was not stored"
    );
    assert_eq!(
        fetch(&cache, "http://a.test/u").await,
        (CacheStatus::Hit, "new".into())
    );
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn a_soft_url_purge_reaches_a_fetch_in_progress() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("etag", "\"e\"")],
            "old",
        ))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let pending = start_held_fetch(&cache, "http://a.test/s").await;
    assert_eq!(
        cache.purge_url(&Uri::from_static("http://a.test/s"), PurgeMode::Soft),
        Ok(false)
    );
    cache.origin().set_open(true);
    pending.await.unwrap().unwrap();

    cache.origin().set_script(|request| {
        assert_eq!(request.headers()["if-none-match"], "\"e\"");
        Reply::Response(status(304, &[("etag", "\"e\"")], ""))
    });
    assert_eq!(
        fetch(&cache, "http://a.test/s").await,
        (CacheStatus::Revalidated, "old".into()),
        "stored, but stale: revalidated before reuse"
    );
    assert_eq!(fetch(&cache, "http://a.test/s").await.0, CacheStatus::Hit);
}

#[tokio::test]
async fn a_url_purge_does_not_reach_a_fetch_begun_after_it() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    cache
        .purge_url(&Uri::from_static("http://a.test/later"), PurgeMode::Hard)
        .expect("an absolute URI");
    assert_eq!(
        fetch(&cache, "http://a.test/later").await.0,
        CacheStatus::Miss
    );
    assert_eq!(
        fetch(&cache, "http://a.test/later").await.0,
        CacheStatus::Hit
    );
}

#[tokio::test]
async fn a_successful_unsafe_method_invalidates_the_url() {
    let clock = ManualClock::new();
    let cache = cache_holding_u(&clock).await;
    send_unsafe(&cache, http::Method::POST, "http://a.test/u").await;
    assert_eq!(fetch(&cache, "http://a.test/u").await.0, CacheStatus::Miss);
}

/// A cache whose origin answers everything fresh for ten minutes, holding
/// `http://a.test/u` (a hit).
async fn cache_holding_u(clock: &ManualClock) -> HttpCache<TestOrigin> {
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, clock);
    fetch(&cache, "http://a.test/u").await;
    assert_eq!(fetch(&cache, "http://a.test/u").await.0, CacheStatus::Hit);
    cache
}

#[tokio::test]
async fn an_unsafe_request_whose_target_has_userinfo_invalidates_the_url_without_it() {
    // RFC 9110 §4.2.4: userinfo names no other resource (a target with it is an error, and
    // the origin acts on the URL without it), so the unsafe request changed what is stored
    // for `http://a.test/u` (§4.4).
    let clock = ManualClock::new();
    let cache = cache_holding_u(&clock).await;
    send_unsafe(&cache, http::Method::POST, "http://user:pw@a.test/u").await;
    assert_eq!(fetch(&cache, "http://a.test/u").await.0, CacheStatus::Miss);
}

/// An origin's script: a GET is answered "old" (once the gate opens), any other method at
/// once with status `code` and `fields`.
fn unsafe_method_script(
    code: u16,
    fields: &'static [(&'static str, &'static str)],
) -> impl FnMut(&Request<Bytes>) -> Reply + Send + 'static {
    move |request| {
        if request.method() == http::Method::GET {
            Reply::Response(response(&[("cache-control", "max-age=600")], "old"))
        } else {
            Reply::Ungated(status(code, fields, ""))
        }
    }
}

/// Sends an unsafe `method` request for `url` and checks it passed through.
async fn send_unsafe(cache: &HttpCache<TestOrigin>, method: http::Method, url: &str) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Bytes::from_static(b"change"))
        .unwrap();
    let response = cache.serve(request).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Pass)
    );
}

#[tokio::test]
async fn an_unsafe_methods_invalidation_reaches_a_fetch_in_progress() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(unsafe_method_script(204, &[]));
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let pending = start_held_fetch(&cache, "http://a.test/inv").await;
    // The PUT's answer invalidates the URL after the GET's fetch began, before it is stored.
    send_unsafe(&cache, http::Method::PUT, "http://a.test/inv").await;
    cache.origin().set_open(true);
    assert_eq!(
        pending.await.unwrap().unwrap().body(),
        "old",
        "the request that was waiting still gets its answer"
    );

    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "new")));
    assert_eq!(
        fetch(&cache, "http://a.test/inv").await,
        (CacheStatus::Miss, "new".into()),
        "the answer fetched before the invalidation was not stored"
    );
}

#[tokio::test]
async fn an_unsafe_method_invalidates_location_and_content_location_on_its_host_only() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(unsafe_method_script(
        201,
        &[
            ("location", "/items/7"),
            ("content-location", "http://A.test/items/7?full"),
            ("location", "http://b.test/items/7"),
        ],
    ));
    let cache = cache(origin, &clock);
    let urls = [
        "http://a.test/items",
        "http://a.test/items/7",
        "http://a.test/items/7?full",
        "http://b.test/items/7",
        "http://a.test/items/8",
    ];
    for url in urls {
        fetch(&cache, url).await;
        assert_eq!(fetch(&cache, url).await.0, CacheStatus::Hit, "{url}");
    }
    send_unsafe(&cache, http::Method::POST, "http://a.test/items").await;
    let after: Vec<CacheStatus> = statuses_of(&cache, &urls).await;
    assert_eq!(
        after,
        [
            CacheStatus::Miss, // the target
            CacheStatus::Miss, // Location, an absolute path
            CacheStatus::Miss, // Content-Location, an absolute URI of the same host
            CacheStatus::Hit,  // Location on another host: not this response's to clear
            CacheStatus::Hit,  // not named
        ]
    );
}

#[tokio::test]
async fn an_unsafe_method_answered_with_an_error_invalidates_nothing() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(unsafe_method_script(500, &[("location", "/items/7")]));
    let cache = cache(origin, &clock);
    let urls = ["http://a.test/items", "http://a.test/items/7"];
    for url in urls {
        fetch(&cache, url).await;
    }
    send_unsafe(&cache, http::Method::DELETE, "http://a.test/items").await;
    assert_eq!(
        statuses_of(&cache, &urls).await,
        [CacheStatus::Hit, CacheStatus::Hit]
    );
}

/// The cache status of a GET of each of `urls`, in order.
async fn statuses_of(cache: &HttpCache<TestOrigin>, urls: &[&str]) -> Vec<CacheStatus> {
    let mut statuses = Vec::new();
    for url in urls {
        statuses.push(fetch(cache, url).await.0);
    }
    statuses
}

#[tokio::test]
async fn only_if_cached_answers_504_when_nothing_is_stored() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    let response = cache
        .serve(get(
            "http://a.test/oic",
            &[("cache-control", "only-if-cached")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(cache.origin().calls(), 0);
}

#[tokio::test]
async fn the_clients_own_conditional_request_gets_a_304() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("etag", "\"abc\"")],
            "big body",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/c").await;
    let response = cache
        .serve(get("http://a.test/c", &[("if-none-match", "\"abc\"")]))
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert!(response.body().is_empty());
    // The client's validator was not forwarded: the origin saw an unconditional request.
    assert!(!cache.origin().seen()[0].1.contains_key("if-none-match"));
}

#[tokio::test]
async fn set_cookie_responses_are_not_stored_by_default() {
    let clock = ManualClock::new();
    let script = |_: &Request<Bytes>| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("set-cookie", "session=1"),
            ],
            "x",
        ))
    };
    let cache = cache(TestOrigin::new(script), &clock);
    fetch(&cache, "http://a.test/sc").await;
    assert_eq!(fetch(&cache, "http://a.test/sc").await.0, CacheStatus::Miss);

    let stripping = HttpCache::builder(TestOrigin::new(script), 1 << 20)
        .clock(clock.clone())
        .set_cookie(SetCookiePolicy::StripAndStore)
        .build();
    let first = stripping.serve(get("http://a.test/sc", &[])).await.unwrap();
    assert_eq!(
        first.headers()["set-cookie"],
        "session=1",
        "the fetching client gets its cookie"
    );
    let second = stripping.serve(get("http://a.test/sc", &[])).await.unwrap();
    assert_eq!(
        second.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert!(
        !second.headers().contains_key("set-cookie"),
        "later clients do not"
    );
}

#[tokio::test]
async fn pragma_no_cache_revalidates_without_cache_control() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/pragma").await;
    assert_eq!(
        fetch_with(&cache, "http://a.test/pragma", &[("pragma", "no-cache")])
            .await
            .0,
        CacheStatus::Miss
    );
    assert_eq!(
        fetch_with(
            &cache,
            "http://a.test/pragma",
            &[("pragma", "no-cache"), ("cache-control", "max-stale")]
        )
        .await
        .0,
        CacheStatus::Hit,
        "§5.4: Pragma counts only without Cache-Control"
    );
}

#[tokio::test]
async fn range_requests_and_hostile_cache_control_pass_through() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/pass").await;
    assert_eq!(
        fetch_with(&cache, "http://a.test/pass", &[("range", "bytes=0-1")])
            .await
            .0,
        CacheStatus::Pass
    );
    let many = vec!["x"; 100].join(",");
    assert_eq!(
        fetch_with(&cache, "http://a.test/pass", &[("cache-control", &many)])
            .await
            .0,
        CacheStatus::Pass
    );
    assert_eq!(
        fetch(&cache, "http://a.test/pass").await.0,
        CacheStatus::Hit
    );
}

#[tokio::test]
async fn age_reports_the_time_in_cache() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("age", "5")],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/age").await;
    clock.advance(Duration::from_secs(7));
    let response = cache.serve(get("http://a.test/age", &[])).await.unwrap();
    assert_eq!(response.headers()["age"], "12");
}

#[tokio::test]
async fn a_wall_clock_step_back_does_not_make_a_response_younger() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=10")], "x")));
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/wall").await;
    clock.advance(Duration::from_secs(11));
    clock.set_wall_time(std::time::UNIX_EPOCH + Duration::from_secs(1_000));
    assert_eq!(
        fetch(&cache, "http://a.test/wall").await.0,
        CacheStatus::Miss,
        "stale by the monotonic clock"
    );
}

#[tokio::test]
async fn at_most_eight_variants_are_kept_per_url() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("vary", "x-variant")],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    let variants: Vec<String> = (0..=8).map(|i| i.to_string()).collect();
    for variant in &variants {
        fetch_with(&cache, "http://a.test/many", &[("x-variant", variant)]).await;
    }
    assert_eq!(
        fetch_with(&cache, "http://a.test/many", &[("x-variant", "0")])
            .await
            .0,
        CacheStatus::Miss,
        "the oldest made room"
    );
    assert_eq!(
        fetch_with(&cache, "http://a.test/many", &[("x-variant", "8")])
            .await
            .0,
        CacheStatus::Hit
    );
}

#[tokio::test]
async fn bodies_over_the_object_limit_pass_through_unstored() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(&[("cache-control", "max-age=600")], "0123456789"))
    });
    let cache = HttpCache::builder(origin, 1 << 20)
        .clock(clock.clone())
        .max_object_bytes(9)
        .build();
    assert_eq!(
        fetch(&cache, "http://a.test/big").await,
        (CacheStatus::Miss, "0123456789".into())
    );
    assert_eq!(
        fetch(&cache, "http://a.test/big").await.0,
        CacheStatus::Miss
    );
    assert_eq!(cache.origin().calls(), 2);
}

/// A cache whose origin first answers `first`, then a bare `304` (no `Age`, no `Date`), and
/// the stale response revalidated with it: the stored response was stale when the 304 came.
async fn revalidated_with_a_bare_304(
    clock: &ManualClock,
    url: &str,
    first: &'static [(&'static str, &'static str)],
) -> HttpCache<TestOrigin> {
    let origin = TestOrigin::new(move |_| Reply::Response(response(first, "body")));
    let cache = cache(origin, clock);
    assert_eq!(fetch(&cache, url).await.0, CacheStatus::Miss);
    clock.advance(Duration::from_secs(70));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(304, &[("etag", "\"v1\"")], "")));
    assert_eq!(fetch(&cache, url).await.0, CacheStatus::Revalidated);
    cache
}

#[tokio::test]
async fn a_304_without_age_makes_the_response_as_old_as_the_304() {
    // The stored `Age: 50` was the age of the first response; the 304 is a new message of
    // age zero, so the freshened response is fresh for its whole max-age again (§4.2.3).
    let clock = ManualClock::new();
    let first = &[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("age", "50"),
    ];
    let cache = revalidated_with_a_bare_304(&clock, "http://a.test/aged", first).await;
    clock.advance(Duration::from_secs(30));
    let response = cache.serve(get("http://a.test/aged", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(response.headers()["age"], "30");
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn a_304_without_date_is_dated_when_it_arrived() {
    // The stored `Date` was the first response's; a 304 without one is dated on receipt
    // (RFC 9110 §6.6.1), so the freshened response's apparent age starts at zero.
    let clock = ManualClock::new();
    let first = &[
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
    ];
    let cache = revalidated_with_a_bare_304(&clock, "http://a.test/dated", first).await;
    clock.advance(Duration::from_secs(30));
    let response = cache.serve(get("http://a.test/dated", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(response.headers()["age"], "30");
    assert_eq!(
        response.headers()["date"],
        "Mon, 01 Jan 2024 00:01:10 GMT",
        "the 304's arrival"
    );
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn the_age_sent_never_exceeds_two_to_the_thirty_first() {
    // RFC 9111 §1.2.2: a sender must not generate a delta-seconds greater than 2^31, and an
    // overflowing calculation counts as 2^31.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=1"),
                ("age", "99999999999"),
                ("etag", "\"kept for revalidation\""),
            ],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/ancient").await;
    clock.advance(Duration::from_secs(100));
    let response = cache
        .serve(get(
            "http://a.test/ancient",
            &[("cache-control", "max-stale")],
        ))
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Stale)
    );
    assert_eq!(response.headers()["age"], "2147483648");
}

#[tokio::test]
async fn an_unstored_response_keeps_the_age_it_arrived_with() {
    // Already stale on arrival (Age 100 > max-age 60) and without validators, it is not
    // stored; it still reaches its requester as 100 s old, not as new (§4.2.3, §5.1), or a
    // browser cache behind this one would keep it fresh for another minute.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("age", "100")],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    let response = cache.serve(get("http://a.test/old", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(response.headers()["age"], "100");
    assert_eq!(
        fetch(&cache, "http://a.test/old").await.0,
        CacheStatus::Miss,
        "not stored"
    );
}

#[tokio::test]
async fn a_response_passed_through_without_date_is_dated() {
    // RFC 9110 §6.6.1: a recipient with a clock that caches a response without `Date` or
    // forwards it downstream appends one, the time it arrived. The cache does so for what it
    // fetches, and for what it passes through (another method, a `Range` request) alike; a
    // `Date` the origin sent is kept.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        if request.uri().path() == "/dated" {
            Reply::Response(response(&[("date", "Sun, 31 Dec 2023 00:00:00 GMT")], "x"))
        } else {
            Reply::Response(response(&[], "x"))
        }
    });
    let cache = cache(origin, &clock);
    clock.advance(Duration::from_secs(5));
    let post = Request::post("http://a.test/form")
        .body(Bytes::new())
        .unwrap();
    let range = get("http://a.test/big", &[("range", "bytes=0-1")]);
    for request in [post, range] {
        let response = cache.serve(request).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Pass)
        );
        assert_eq!(response.headers()["date"], "Mon, 01 Jan 2024 00:00:05 GMT");
    }
    let dated = get("http://a.test/dated", &[("range", "bytes=0-1")]);
    let response = cache.serve(dated).await.unwrap();
    assert_eq!(response.headers()["date"], "Sun, 31 Dec 2023 00:00:00 GMT");
}

#[tokio::test]
async fn preconditions_only_the_origin_evaluates_reach_it() {
    // If-Match and If-Unmodified-Since are not the cache's to answer (RFC 9111 §4.3.2), and
    // stripping them would turn the origin's 412 into a 200: such requests pass through.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let headers = request.headers();
        if headers.contains_key("if-match") || headers.contains_key("if-unmodified-since") {
            Reply::Response(status(412, &[], ""))
        } else {
            Reply::Response(response(
                &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
                "x",
            ))
        }
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/doc").await;
    for precondition in [
        ("if-match", "\"v0\""),
        ("if-unmodified-since", "Sun, 31 Dec 2023 00:00:00 GMT"),
    ] {
        for _ in 0..2 {
            let response = cache
                .serve(get("http://a.test/doc", &[precondition]))
                .await
                .unwrap();
            assert_eq!(response.status(), 412, "{precondition:?}");
            assert_eq!(
                response.extensions().get::<CacheStatus>(),
                Some(&CacheStatus::Pass)
            );
        }
    }
}

/// A HEAD of `url` with `headers`.
fn head_with(url: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
    let mut request = get(url, headers);
    *request.method_mut() = http::Method::HEAD;
    request
}

/// A HEAD of `url`.
fn head(url: &str) -> Request<Bytes> {
    head_with(url, &[])
}

/// An origin that answers GET with a body and HEAD with the same fields and none, both
/// cacheable for a minute and kept past it for their entity tag.
fn get_and_head_origin() -> TestOrigin {
    TestOrigin::new(|request| {
        let body = if request.method() == http::Method::HEAD {
            ""
        } else {
            "body"
        };
        Reply::Response(response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("content-length", "4"),
                ("x-method", request.method().as_str()),
            ],
            body,
        ))
    })
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    // RFC 9110 §9.3.2, RFC 9111 §4: a stored GET response answers HEAD, without its body.
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    fetch(&cache, "http://a.test/page").await;
    clock.advance(Duration::from_secs(5));

    let response = cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert!(response.body().is_empty(), "HEAD has no body");
    assert_eq!(response.headers()["x-method"], "GET", "the GET's fields");
    assert_eq!(response.headers()["content-length"], "4");
    assert_eq!(response.headers()["age"], "5");

    clock.advance(Duration::from_secs(60));
    let request = head_with("http://a.test/page", &[("cache-control", "max-stale")]);
    let response = cache.serve(request).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Stale),
        "stale, as the request's max-stale accepts"
    );
    assert!(response.body().is_empty());
    assert_eq!(cache.origin().calls(), 1, "the origin saw the GET only");
}

#[tokio::test]
async fn a_head_miss_asks_the_origin_with_head() {
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    let response = cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert!(response.body().is_empty());
    let seen: Vec<http::Method> = cache.origin().seen().into_iter().map(|(m, _)| m).collect();
    assert_eq!(seen, [http::Method::HEAD]);
    // A stale stored GET does not answer HEAD without the origin either.
    fetch(&cache, "http://a.test/stale").await;
    clock.advance(Duration::from_secs(61));
    let response = cache.serve(head("http://a.test/stale")).await.unwrap();
    assert_eq!(response.headers()["x-method"], "HEAD");
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn head_only_if_cached_is_answered_by_a_get_inside_stale_while_revalidate() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            "body",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/swr").await;
    clock.advance(Duration::from_secs(30));
    let request = head_with("http://a.test/swr", &[("cache-control", "only-if-cached")]);
    let response = cache.serve(request).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "a stored response may answer: no 504"
    );
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Stale)
    );
    assert!(response.body().is_empty());
    assert_eq!(cache.origin().calls(), 1, "nothing asked of the origin");
    // Past the window, nothing stored may answer: 504.
    clock.advance(Duration::from_secs(60));
    let request = head_with("http://a.test/swr", &[("cache-control", "only-if-cached")]);
    assert_eq!(cache.serve(request).await.unwrap().status(), 504);
    assert_eq!(cache.origin().calls(), 1);
    // A GET inside the window is answered too (and refreshes the response behind it).
    fetch(&cache, "http://a.test/swr-get").await;
    clock.advance(Duration::from_secs(30));
    let request = get(
        "http://a.test/swr-get",
        &[("cache-control", "only-if-cached")],
    );
    let response = cache.serve(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Stale)
    );
}

#[tokio::test]
async fn a_head_response_never_answers_a_get() {
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    cache.serve(head("http://a.test/page")).await.unwrap();
    cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(
        fetch(&cache, "http://a.test/page").await,
        (CacheStatus::Miss, "body".into()),
        "the bodiless HEAD response is not the GET's"
    );
    assert_eq!(
        fetch(&cache, "http://a.test/page").await,
        (CacheStatus::Hit, "body".into())
    );
    let response = cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(response.headers()["x-method"], "GET", "now from the GET");
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn private_with_field_names_stores_the_response_without_them() {
    // RFC 9111 §5.2.2.7: only the named fields are the user's; the rest may be stored.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                (
                    "cache-control",
                    "max-age=60, private=\"Set-Cookie, X-User\"",
                ),
                ("set-cookie", "session=alice"),
                ("x-user", "alice"),
                ("x-shared", "yes"),
            ],
            "page",
        ))
    });
    let cache = cache(origin, &clock);
    let first = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(
        first.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(
        first.headers()["set-cookie"],
        "session=alice",
        "its requester's"
    );
    assert_eq!(first.headers()["x-user"], "alice");

    let second = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(
        second.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(second.body(), "page");
    assert_eq!(second.headers()["x-shared"], "yes");
    assert!(!second.headers().contains_key("set-cookie"));
    assert!(!second.headers().contains_key("x-user"));
    assert_eq!(cache.origin().calls(), 1);
}

#[tokio::test]
async fn no_cache_with_field_names_reuses_the_response_without_them() {
    // RFC 9111 §5.2.2.4: the response may be reused without revalidation, but the named
    // fields are sent only after a successful revalidation.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let headers = [
            ("cache-control", "max-age=60, no-cache=\"x-token\""),
            ("etag", "\"v1\""),
            ("x-token", "t1"),
        ];
        if request.headers().contains_key("if-none-match") {
            Reply::Response(status(304, &headers, ""))
        } else {
            Reply::Response(response(&headers, "page"))
        }
    });
    let cache = cache(origin, &clock);
    let fetched = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(fetched.headers()["x-token"], "t1", "just fetched");

    let reused = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(
        reused.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert!(!reused.headers().contains_key("x-token"));
    assert_eq!(reused.headers()["etag"], "\"v1\"");
    assert_eq!(cache.origin().calls(), 1);

    let validated = cache
        .serve(get("http://a.test/p", &[("cache-control", "no-cache")]))
        .await
        .unwrap();
    assert_eq!(
        validated.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Revalidated)
    );
    assert_eq!(validated.headers()["x-token"], "t1", "just validated");
    let reused = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert!(!reused.headers().contains_key("x-token"));
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_on_a_fetch_do_not_get_its_no_cache_fields() {
    // RFC 9111 §5.2.2.4: the named fields go only with a response validated for the request
    // it answers; the requests that waited on another's fetch reuse its response unvalidated.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=60, no-cache=\"x-token\""),
                ("x-token", "t1"),
            ],
            "page",
        ))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let cache = cache.clone();
        requests.spawn(async move { cache.serve(get("http://a.test/p", &[])).await.unwrap() });
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    cache.origin().set_open(true);
    let mut with_token = 0;
    while let Some(response) = requests.join_next().await {
        let response = response.unwrap();
        assert_eq!(response.body(), "page");
        with_token += usize::from(response.headers().contains_key("x-token"));
    }
    assert_eq!(cache.origin().calls(), 1);
    assert_eq!(with_token, 1, "only the request whose fetch it was");
}

#[tokio::test]
async fn a_storable_response_kept_no_time_still_gives_its_requester_the_cookie() {
    // Under StripAndStore the cookie is taken out of a storable response before the cache
    // learns it will keep it for no time (max-age=0, no validators); it must still reach the
    // client whose fetch it answers, and the response is not stored.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=0"), ("set-cookie", "session=1")],
            "x",
        ))
    });
    let cache = HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .set_cookie(SetCookiePolicy::StripAndStore)
        .build();
    for _ in 0..2 {
        let response = cache.serve(get("http://a.test/zero", &[])).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Miss)
        );
        assert_eq!(response.headers()["set-cookie"], "session=1");
    }
    assert_eq!(cache.origin().calls(), 2, "kept for no time");
}

#[tokio::test]
async fn a_head_answer_showing_a_new_representation_makes_the_stored_get_stale() {
    // RFC 9111 §4.3.5: a 200 to a HEAD the cache sent whose validators or Content-Length
    // differ from a stored GET response's makes that response stale.
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    fetch(&cache, "http://a.test/page").await;
    cache.origin().set_script(|request| {
        let body = if request.method() == http::Method::HEAD {
            ""
        } else {
            "new body"
        };
        Reply::Response(response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v2\""),
                ("content-length", "8"),
            ],
            body,
        ))
    });
    let head = head_with("http://a.test/page", &[("cache-control", "no-cache")]);
    let response = cache.serve(head).await.unwrap();
    assert_eq!(response.headers()["etag"], "\"v2\"", "the origin's answer");

    let (status, body) = fetch(&cache, "http://a.test/page").await;
    assert_eq!(body, "new body", "the stored GET was known to be outdated");
    assert_eq!(status, CacheStatus::Miss);
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn a_head_answer_the_cache_may_not_store_drops_the_stored_get() {
    // RFC 9111 §4.3.5: a 200 to a HEAD that matches a stored GET response updates it with the
    // HEAD answer's fields (§3.2). When those say the response may not be stored (`no-store`,
    // `private`, `Vary: *`), the GET updated with them may not be kept either, and the one
    // stored before must not go on being served as if the origin had not spoken, as after a
    // revalidation answered the same way.
    for directive in ["no-store", "private", "max-age=60, vary=*"] {
        let clock = ManualClock::new();
        let cache = cache(get_and_head_origin(), &clock);
        fetch(&cache, "http://a.test/page").await;
        cache.origin().set_script(move |request| {
            let (cache_control, vary) = match directive.split_once(", vary=") {
                Some((cache_control, vary)) => (cache_control, vary),
                None => (directive, ""),
            };
            let mut fields = vec![
                ("cache-control", cache_control),
                ("etag", "\"v1\""),
                ("content-length", "4"),
                ("x-method", request.method().as_str()),
            ];
            if !vary.is_empty() {
                fields.push(("vary", vary));
            }
            let body = if request.method() == http::Method::HEAD {
                ""
            } else {
                "body"
            };
            Reply::Response(response(&fields, body))
        });
        let head = head_with("http://a.test/page", &[("cache-control", "no-cache")]);
        cache.serve(head).await.unwrap();

        let response = cache.serve(get("http://a.test/page", &[])).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Miss),
            "{directive}: the stored GET is not served after the HEAD said it may not be stored"
        );
        assert_eq!(cache.origin().calls(), 3, "{directive}");
    }
}

#[tokio::test]
async fn a_head_answer_for_a_request_that_forbids_storing_keeps_the_stored_get() {
    // Only the response's say: a HEAD whose own `Authorization` keeps its answer out of
    // storage neither updates nor drops the GET stored for everyone.
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    fetch(&cache, "http://a.test/page").await;
    let head = head_with(
        "http://a.test/page",
        &[("cache-control", "no-cache"), ("authorization", "Bearer x")],
    );
    cache.serve(head).await.unwrap();
    let (status, body) = fetch(&cache, "http://a.test/page").await;
    assert_eq!((status, body.as_str()), (CacheStatus::Hit, "body"));
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn a_head_answer_matching_the_stored_get_freshens_it() {
    // RFC 9111 §4.3.5: a 200 to a HEAD whose validators and Content-Length match a stored GET
    // response updates it as a 304 would (§3.2): a stale GET is fresh again, with the HEAD
    // answer's fields.
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    fetch(&cache, "http://a.test/page").await;
    clock.advance(Duration::from_secs(70));
    let response = cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(
        response.headers()["x-method"],
        "HEAD",
        "the GET was stale: asked"
    );

    let response = cache.serve(get("http://a.test/page", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(response.body(), "body");
    assert_eq!(
        response.headers()["x-method"],
        "HEAD",
        "updated from the HEAD"
    );
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn fields_private_names_on_a_304_go_to_its_requester_only() {
    // RFC 9111 §5.2.2.7 across a revalidation: the 304 merged into the stored response brings
    // the named field again; the requester of the revalidation gets it, storage does not.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let user = if request.headers().contains_key("if-none-match") {
            "bob"
        } else {
            "alice"
        };
        let headers = [
            ("cache-control", "max-age=10, private=\"x-user\""),
            ("etag", "\"v1\""),
            ("x-user", user),
        ];
        if user == "bob" {
            Reply::Response(status(304, &headers, ""))
        } else {
            Reply::Response(response(&headers, "page"))
        }
    });
    let cache = cache(origin, &clock);
    cache.serve(get("http://a.test/p", &[])).await.unwrap();
    clock.advance(Duration::from_secs(20));
    let revalidated = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(
        revalidated.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Revalidated)
    );
    assert_eq!(revalidated.headers()["x-user"], "bob");
    let hit = cache.serve(get("http://a.test/p", &[])).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert!(!hit.headers().contains_key("x-user"));
}

#[tokio::test]
async fn pragma_no_cache_forbids_stale_answers_as_no_cache_does() {
    // §5.4: `Pragma: no-cache` without `Cache-Control` is the request's no-cache, which
    // RFC 5861's windows do not override: no stale-while-revalidate, no stale-if-error.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[(
                "cache-control",
                "max-age=10, stale-while-revalidate=60, stale-if-error=60",
            )],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/p").await;
    clock.advance(Duration::from_secs(20));
    let pragma = [("pragma", "no-cache")];
    assert_eq!(
        fetch_with(&cache, "http://a.test/p", &pragma).await.0,
        CacheStatus::Miss,
        "not served stale while revalidating"
    );
    clock.advance(Duration::from_secs(20));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(503, &[], "down")));
    let response = cache.serve(get("http://a.test/p", &pragma)).await.unwrap();
    assert_eq!(response.status(), 503, "not served stale for the error");
    assert_eq!(
        fetch(&cache, "http://a.test/p").await,
        (CacheStatus::Stale, "x".into()),
        "without Pragma the stored response stands in for the error"
    );
}

#[tokio::test]
async fn a_head_200_makes_a_stored_get_error_stale() {
    // RFC 9111 §4.3.5: the URL now answers 200; a stored 404 with no validators to compare
    // is outdated all the same.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(status(404, &[("cache-control", "max-age=60")], "gone"))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/page").await;
    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "back")));
    let head = head_with("http://a.test/page", &[("cache-control", "no-cache")]);
    assert_eq!(cache.serve(head).await.unwrap().status(), 200);
    assert_eq!(
        fetch(&cache, "http://a.test/page").await,
        (CacheStatus::Miss, "back".into())
    );
}

#[tokio::test]
async fn a_host_field_that_is_not_a_host_is_not_cached_under_another_url() {
    // `Host: a.test/admin` with target `/secret` would otherwise be keyed as the URL
    // `a.test/admin/secret`, and the origin's answer for `/secret` served to that URL's
    // requests (RFC 9110 §7.2: `Host` is `uri-host [ ":" port ]`).
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        Reply::Response(response(
            &[("cache-control", "max-age=600")],
            request.uri().path(),
        ))
    });
    let cache = cache(origin, &clock);
    let smuggled = cache
        .serve(get("/secret", &[("host", "a.test/admin")]))
        .await
        .unwrap();
    assert_eq!(
        fetch(&cache, "http://a.test/admin/secret").await,
        (CacheStatus::Miss, "/admin/secret".into())
    );
    assert_eq!(
        smuggled.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Pass)
    );
    let member = smuggled.headers()["cache-status"].to_str().unwrap();
    assert!(member.contains("fwd=bypass"), "{member}");
    assert_eq!(
        fetch_with(&cache, "/admin/secret", &[("host", "a.test")]).await,
        (CacheStatus::Hit, "/admin/secret".into()),
        "a valid Host still names its URL"
    );
}

#[tokio::test]
async fn a_request_with_two_host_fields_is_not_cached() {
    // Which of two `Host` lines an origin reads is its own choice (RFC 9112 §3.2 has it
    // refuse such a request), so no key can be sure to name the URL it answered.
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    let two = || {
        let mut request = get("/two", &[("host", "a.test")]);
        request
            .headers_mut()
            .append("host", "b.test".parse().unwrap());
        request
    };
    for _ in 0..2 {
        let response = cache.serve(two()).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Pass)
        );
    }
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test]
async fn proxy_authentication_fields_are_not_stored() {
    // RFC 9111 §3.1: the fields of the proxy a cache forwards through are never stored.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("proxy-authenticate", "Basic realm=\"upstream\""),
                ("proxy-authentication-info", "nextnonce=\"abc\""),
                ("x-shared", "yes"),
            ],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    let first = cache.serve(get("http://a.test/pa", &[])).await.unwrap();
    assert_eq!(
        first.headers()["proxy-authenticate"],
        "Basic realm=\"upstream\"",
        "its requester's"
    );
    let second = cache.serve(get("http://a.test/pa", &[])).await.unwrap();
    assert_eq!(
        second.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(second.headers()["x-shared"], "yes");
    assert!(!second.headers().contains_key("proxy-authenticate"));
    assert!(!second.headers().contains_key("proxy-authentication-info"));
}

#[tokio::test]
async fn an_entity_tag_holding_commas_is_compared_whole() {
    // RFC 9110 §8.8.3: `etagc` includes the comma, so `"x,*,y"` is one entity tag, not a list
    // holding `*`.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let tag = if request.uri().path() == "/comma" {
            "\"a,b\""
        } else {
            "\"v1\""
        };
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("etag", tag)],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/plain").await;
    let other = cache
        .serve(get(
            "http://a.test/plain",
            &[("if-none-match", "\"x,*,y\"")],
        ))
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another representation's tag");

    fetch(&cache, "http://a.test/comma").await;
    let same = cache
        .serve(get(
            "http://a.test/comma",
            &[("if-none-match", "\"q\", W/\"a,b\"")],
        ))
        .await
        .unwrap();
    assert_eq!(same.status(), 304);
}

#[tokio::test]
async fn a_soft_tag_purge_after_a_hard_one_marks_what_was_fetched_since_stale() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600, stale-if-error=600"),
                ("etag", "\"e\""),
                ("surrogate-key", "product-1"),
            ],
            "x",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/t").await;
    cache.purge_tag("product-1", PurgeMode::Hard);
    assert_eq!(fetch(&cache, "http://a.test/t").await.0, CacheStatus::Miss);

    // Fetched after the hard purge: the soft one only marks it stale, so it still stands in
    // for a failing origin.
    cache.purge_tag("product-1", PurgeMode::Soft);
    cache.origin().set_script(|_| Reply::Fail);
    assert_eq!(fetch(&cache, "http://a.test/t").await.0, CacheStatus::Stale);
}

#[tokio::test]
async fn a_host_field_naming_another_host_than_the_target_is_not_cached() {
    // An origin reached through a client that sends `Host` as it was received routes by it,
    // while the key holds the target's host (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let host = request
            .headers()
            .get("host")
            .map_or("a.test", |host| host.to_str().unwrap());
        Reply::Response(response(&[("cache-control", "max-age=600")], host))
    });
    let cache = cache(origin, &clock);
    let smuggled = cache
        .serve(get("http://a.test/x", &[("host", "b.test")]))
        .await
        .unwrap();
    assert_eq!(
        fetch_with(&cache, "http://a.test/x", &[("host", "a.test")]).await,
        (CacheStatus::Miss, "a.test".into())
    );
    assert_eq!(
        smuggled.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Pass)
    );
    assert_eq!(
        fetch_with(&cache, "http://a.test/x", &[("host", "A.test:80")]).await,
        (CacheStatus::Hit, "a.test".into()),
        "the same host, written otherwise"
    );
}

#[tokio::test]
async fn a_target_with_userinfo_is_not_cached() {
    // RFC 9110 §4.2.4: no sender puts userinfo in a target URI, and a recipient should treat
    // it as an error. Keyed, `http://user@a.test/x` would be an entry of its own that a purge
    // of `http://a.test/x` does not reach, served to whoever names that userinfo again.
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    for _ in 0..2 {
        assert_eq!(
            fetch(&cache, "http://user@a.test/x").await,
            (CacheStatus::Pass, "x".into())
        );
    }
    assert_eq!(cache.origin().calls(), 2);
}

/// A revalidation the origin answers with a representation the cache may not store (here
/// `no-store`, as a 200, a 404 or a 304) replaces the stored one for good: the older one is
/// dropped, so neither a client's `max-stale` nor a later origin failure within its
/// `stale-if-error` brings back what the origin has since replaced or withdrawn (RFC 9111
/// §4.3.3, §4.3.4; §4: a cache uses the most recent response).
#[tokio::test]
async fn a_revalidation_answered_with_an_unstored_response_drops_the_stale_one() {
    for (code, fields, body) in [
        (200, &[("cache-control", "no-store")][..], "v2"),
        (404, &[("cache-control", "no-store")][..], "gone"),
        (
            304,
            &[("cache-control", "no-store"), ("etag", "\"v1\"")][..],
            "",
        ),
    ] {
        let clock = ManualClock::new();
        let origin = TestOrigin::new(|_| {
            Reply::Response(response(
                &[
                    ("cache-control", "max-age=10, stale-if-error=600"),
                    ("etag", "\"v1\""),
                ],
                "v1",
            ))
        });
        let cache = cache(origin, &clock);
        assert_eq!(fetch(&cache, "http://a.test/r").await.0, CacheStatus::Miss);
        clock.advance(Duration::from_secs(11));

        cache
            .origin()
            .set_script(move |_| Reply::Response(status(code, fields, body)));
        let revalidated = cache.serve(get("http://a.test/r", &[])).await.unwrap();
        assert_eq!(
            revalidated.status().as_u16(),
            if code == 304 { 200 } else { code }
        );

        cache.origin().set_script(|_| Reply::Fail);
        let calls = cache.origin().calls();
        let after = cache
            .serve(get("http://a.test/r", &[("cache-control", "max-stale")]))
            .await;
        assert!(
            after.is_err(),
            "after a {code} with no-store the replaced v1 is served: {:?}",
            after.map(http::Response::into_body)
        );
        assert_eq!(cache.origin().calls(), calls + 1, "the origin is asked");
    }
}

/// Dropping a variant the origin has replaced with an unstored answer is the cache's upkeep,
/// not a store of a response: `Stats::updates` counts the variants stored, and the URL's other
/// variant stays stored for its own requests.
#[tokio::test]
async fn dropping_a_superseded_variant_is_not_counted_as_an_update() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let language = request.headers()["accept-language"]
            .to_str()
            .unwrap()
            .to_owned();
        Reply::Response(response(
            &[
                ("cache-control", "max-age=10"),
                ("etag", "\"v1\""),
                ("vary", "accept-language"),
            ],
            &language,
        ))
    });
    let cache = cache(origin, &clock);
    let url = "http://a.test/r";
    for language in ["en", "fr"] {
        assert_eq!(
            fetch_with(&cache, url, &[("accept-language", language)]).await,
            (CacheStatus::Miss, language.into())
        );
    }
    // The URL's entry was inserted with en, then updated with fr.
    let stored = cache.stats();
    assert_eq!((stored.inserts, stored.updates), (1, 1));
    clock.advance(Duration::from_secs(11));

    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "no-store")], "withdrawn")));
    assert_eq!(
        fetch_with(&cache, url, &[("accept-language", "en")]).await,
        (CacheStatus::Miss, "withdrawn".into())
    );
    let after = cache.stats();
    assert_eq!(
        (after.inserts, after.updates, after.revalidations),
        (1, 1, 1),
        "dropping en's variant counted as a store"
    );
    assert_eq!(after.entries, 1, "fr's variant is still stored");
    assert_eq!(
        fetch_with(
            &cache,
            url,
            &[("accept-language", "fr"), ("cache-control", "max-stale")]
        )
        .await,
        (CacheStatus::Stale, "fr".into())
    );
}

#[tokio::test]
async fn a_head_answer_without_validators_does_not_freshen_a_get_that_has_them() {
    // RFC 9111 §4.3.5 selects the stored responses a HEAD answer updates as §4.3.4 does: one
    // without any validator selects only a stored response without one. A stored GET with an
    // entity tag is not shown to be current by a HEAD answer that has none; it stays stale.
    let clock = ManualClock::new();
    let cache = cache(get_and_head_origin(), &clock);
    fetch(&cache, "http://a.test/page").await;
    clock.advance(Duration::from_secs(70));
    cache.origin().set_script(|request| {
        let body = if request.method() == http::Method::HEAD {
            ""
        } else {
            "new body"
        };
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("x-method", "HEAD")],
            body,
        ))
    });
    cache.serve(head("http://a.test/page")).await.unwrap();

    let response = cache.serve(get("http://a.test/page", &[])).await.unwrap();
    assert_eq!(
        response.body(),
        "new body",
        "the GET stored with \"v1\" was freshened by a HEAD answer without validators"
    );
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn a_request_that_forbids_storing_does_not_drop_the_stored_response() {
    // The request's `no-store` (or `Authorization`) keeps its own answer out of storage, not
    // the stored response other clients are served: a client cannot evict it, nor its
    // stand-in for a failing origin.
    for request_field in [("cache-control", "no-store"), ("authorization", "Bearer x")] {
        let clock = ManualClock::new();
        let origin = TestOrigin::new(|_| {
            Reply::Response(response(
                &[
                    ("cache-control", "max-age=10, stale-if-error=600"),
                    ("etag", "\"v1\""),
                ],
                "v1",
            ))
        });
        let cache = cache(origin, &clock);
        fetch(&cache, "http://a.test/r").await;
        clock.advance(Duration::from_secs(11));
        cache
            .origin()
            .set_script(|_| Reply::Response(status(304, &[("etag", "\"v1\"")], "")));
        assert_eq!(
            fetch_with(&cache, "http://a.test/r", &[request_field])
                .await
                .1,
            "v1",
            "validated by a 304"
        );
        cache.origin().set_script(|_| Reply::Fail);
        assert_eq!(
            fetch(&cache, "http://a.test/r").await,
            (CacheStatus::Stale, "v1".into()),
            "after a request with {request_field:?}"
        );
    }
}

#[tokio::test]
async fn only_if_cached_never_reaches_the_origin_through_a_bypass() {
    // RFC 9111 §5.2.1.7: with `only-if-cached` the cache answers from storage or with 504,
    // never by asking the origin; that holds for the requests it does not cache (`Range`,
    // `If-Match`) too.
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=600")], "x")));
    let cache = cache(origin, &clock);
    for field in [("range", "bytes=0-0"), ("if-match", "\"a\"")] {
        let response = cache
            .serve(get(
                "http://a.test/oic",
                &[("cache-control", "only-if-cached"), field],
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 504, "{field:?}");
    }
    assert_eq!(cache.origin().calls(), 0);
}

#[tokio::test]
async fn if_modified_since_is_evaluated_against_the_date_without_last_modified() {
    // RFC 9111 §4.3.2: without `Last-Modified` in the stored response, the cache evaluates a
    // client's `If-Modified-Since` against its `Date` (or when it was received).
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ],
            "body",
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/d").await;
    let since = |date: &'static str| get("http://a.test/d", &[("if-modified-since", date)]);
    let later = cache
        .serve(since("Tue, 02 Jan 2024 00:00:00 GMT"))
        .await
        .unwrap();
    assert_eq!(later.status(), 304);
    let earlier = cache
        .serve(since("Sun, 31 Dec 2023 00:00:00 GMT"))
        .await
        .unwrap();
    assert_eq!(earlier.status(), 200);
}

#[tokio::test]
async fn a_head_answer_does_not_bring_back_a_get_purged_hard_by_tag() {
    // A hard purge removes: the next GET asks the origin afresh. A purge by tag leaves the
    // purged response in the store until it is looked up (the log says it is gone), so a HEAD
    // answer matching its validators (§4.3.5) must not freshen it into a live response again.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let body = if request.method() == http::Method::HEAD {
            ""
        } else {
            "body"
        };
        Reply::Response(response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("content-length", "4"),
                ("surrogate-key", "page"),
            ],
            body,
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/page").await;
    cache.purge_tag("page", PurgeMode::Hard);
    cache.serve(head("http://a.test/page")).await.unwrap();
    assert_eq!(
        cache.origin().calls(),
        2,
        "the HEAD was asked of the origin"
    );

    let response = cache.serve(get("http://a.test/page", &[])).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss),
        "the GET purged hard came back through the HEAD's answer"
    );
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn a_response_purged_hard_by_tag_gives_back_its_bytes_once_looked_up() {
    // A purge by tag cannot find what it purges in the store, so a purged response goes when
    // a lookup meets it, not only once an answer stored in its place replaces it: one that is
    // not replaced (here the origin's new answer is not stored) must not hold its bytes
    // against the budget until it expires.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("surrogate-key", "big")],
            &"x".repeat(4096),
        ))
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/big").await;
    assert!(cache.stats().weighted_size > 4096);
    cache.purge_tag("big", PurgeMode::Hard);
    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "no-store")], "gone")));
    assert_eq!(
        fetch(&cache, "http://a.test/big").await,
        (CacheStatus::Miss, "gone".into())
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.weighted_size),
        (0, 0),
        "the purged response still counts against the budget"
    );
}

#[tokio::test]
async fn a_hard_purge_after_a_stale_response_is_chosen_keeps_its_revalidation_out() {
    // The request chose the stale response to revalidate; a hard purge of its URL lands
    // before the revalidation's fetch has started. The 304 that follows is merged into the
    // purged response and must not store it again.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let headers = [("cache-control", "max-age=10"), ("etag", "\"v1\"")];
        if request.headers().contains_key("if-none-match") {
            Reply::Response(status(304, &headers, ""))
        } else {
            Reply::Response(response(&headers, "v1"))
        }
    });
    let cache = cache(origin, &clock);
    fetch(&cache, "http://a.test/r").await;
    clock.advance(Duration::from_secs(20));

    // The current-thread runtime runs tasks in the order they are queued: the request runs
    // up to its wait on the flight, then the purge, then the fetch the request spawned.
    let revalidation = {
        let cache = cache.clone();
        tokio::spawn(async move { fetch(&cache, "http://a.test/r").await })
    };
    let purge = {
        let cache = cache.clone();
        tokio::spawn(async move {
            assert_eq!(cache.origin().calls(), 1, "the revalidation has not begun");
            assert_eq!(
                cache.stats().revalidations,
                1,
                "the stale response was chosen"
            );
            cache.purge_url(&Uri::from_static("http://a.test/r"), PurgeMode::Hard)
        })
    };
    assert_eq!(purge.await.unwrap(), Ok(true));
    assert_eq!(
        revalidation.await.unwrap(),
        (CacheStatus::Revalidated, "v1".into())
    );
    assert_eq!(
        fetch(&cache, "http://a.test/r").await.0,
        CacheStatus::Miss,
        "the response purged hard was stored again by its revalidation"
    );
}
