//! The `Cache-Status` field (RFC 9211) `HttpCache` writes: one case per parameter, each
//! response's field parsed and its last member (this cache's, the one closest to the client)
//! checked.
#![cfg(feature = "tokio")]

mod http_support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_support::{Reply, TestOrigin, get, response, status};
use infra_common::ManualClock;
use infra_edgecache::http::{HttpCache, HttpCacheBuilder};
use tokio::task::JoinSet;

/// One list member: the cache's name and its parameters, with their values as written.
#[derive(Debug, PartialEq, Eq)]
struct Member {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// The members of every `Cache-Status` line, in order (the tests' members hold no quoted
/// commas or semicolons).
fn members(response: &Response<Bytes>) -> Vec<Member> {
    response
        .headers()
        .get_all("cache-status")
        .iter()
        .flat_map(|line| line.to_str().unwrap().split(','))
        .map(|member| {
            let mut parts = member.split(';').map(str::trim);
            let name = parts.next().unwrap().to_owned();
            let params = parts
                .map(|param| match param.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                    None => (param.to_owned(), None),
                })
                .collect();
            Member { name, params }
        })
        .collect()
}

/// This cache's member, written `edgecache; a; b=1` in the test.
fn expected(written: &str) -> Member {
    let line = http::HeaderValue::from_str(written).unwrap();
    let mut response = Response::new(Bytes::new());
    response.headers_mut().insert("cache-status", line);
    members(&response).remove(0)
}

/// The last member of the response's field, which must be this cache's (RFC 9211 §2: the
/// last member is the cache closest to the client).
fn ours(response: &Response<Bytes>) -> Member {
    members(response).pop().expect("a Cache-Status field")
}

fn builder(origin: TestOrigin, clock: &ManualClock) -> HttpCacheBuilder<TestOrigin> {
    HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(5))
}

fn cache(origin: TestOrigin, clock: &ManualClock) -> HttpCache<TestOrigin> {
    builder(origin, clock).build()
}

fn cacheable(cache_control: &'static str) -> TestOrigin {
    TestOrigin::new(move |_| {
        Reply::Response(response(
            &[("cache-control", cache_control), ("etag", "\"v1\"")],
            "body",
        ))
    })
}

async fn serve(cache: &HttpCache<TestOrigin>, request: Request<Bytes>) -> Response<Bytes> {
    cache.serve(request).await.unwrap()
}

#[tokio::test]
async fn a_miss_is_forwarded_stored_and_then_a_hit_with_its_ttl() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=60"), &clock);
    let miss = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&miss),
        expected("edgecache; fwd=uri-miss; fwd-status=200; ttl=60; stored")
    );
    clock.advance(Duration::from_secs(5));
    let hit = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(ours(&hit), expected("edgecache; hit; ttl=55"));
}

#[tokio::test]
async fn a_response_not_stored_says_so_and_has_no_ttl() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("private, max-age=60"), &clock);
    let response = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=uri-miss; fwd-status=200")
    );
}

/// A response heavier than a shard's share of the byte budget is refused by the store: not
/// said `stored`, and no `ttl`, though it was storable.
#[tokio::test]
async fn a_response_the_store_refuses_is_not_said_stored() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        let body = "x".repeat(256 << 10);
        Reply::Response(response(&[("cache-control", "max-age=60")], &body))
    });
    let cache = HttpCache::builder(origin, 64 << 10)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(5))
        .build();
    let response = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=uri-miss; fwd-status=200")
    );
    serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(cache.origin().calls(), 2, "nothing was stored");
}

/// A response the store takes in and its admission policy lets go at once (it loses the duel
/// against a more popular entry it would displace) is not stored either.
#[tokio::test]
async fn a_response_the_policy_turns_away_is_not_said_stored() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let bytes = if request.uri().path() == "/popular" {
            8 << 10
        } else {
            10 << 10
        };
        Reply::Response(response(
            &[("cache-control", "max-age=60")],
            &"x".repeat(bytes),
        ))
    });
    let cache = HttpCache::builder(origin, 16 << 10)
        .shards(1)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(5))
        .build();
    // A popular response fills the main space: asked for three times, a count of three.
    for _ in 0..3 {
        serve(&cache, get("http://a.test/popular", &[])).await;
    }
    assert_eq!(cache.origin().calls(), 1);
    // A newcomer, asked for once, needs room only the popular entry's eviction would make.
    let response = serve(&cache, get("http://a.test/newcomer", &[])).await;
    let stored = cache.origin().calls() == 2
        && serve(&cache, get("http://a.test/newcomer", &[]))
            .await
            .status()
            == 200
        && cache.origin().calls() == 2;
    assert!(!stored, "the policy kept the newcomer out");
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=uri-miss; fwd-status=200")
    );
}

#[tokio::test]
async fn another_variant_is_a_vary_miss() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            "body",
        ))
    });
    let cache = cache(origin, &clock);
    serve(&cache, get("http://a.test/", &[("accept-language", "en")])).await;
    let other = serve(&cache, get("http://a.test/", &[("accept-language", "ja")])).await;
    assert_eq!(
        ours(&other),
        expected("edgecache; fwd=vary-miss; fwd-status=200; ttl=60; stored")
    );
}

#[tokio::test]
async fn a_stale_response_is_revalidated_as_fwd_stale() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=10"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    clock.advance(Duration::from_secs(20));
    cache.origin().set_script(|_| {
        Reply::Response(status(
            304,
            &[("cache-control", "max-age=100"), ("etag", "\"v1\"")],
            "",
        ))
    });
    let revalidated = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&revalidated),
        expected("edgecache; fwd=stale; fwd-status=304; ttl=100; stored")
    );
}

/// A HEAD whose URL's stored GET is stale goes to the origin (as a HEAD) because of that
/// staleness: `fwd=stale`, not a miss.
#[tokio::test]
async fn a_head_sent_on_for_a_stale_stored_get_is_fwd_stale() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=10"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    clock.advance(Duration::from_secs(20));
    let head = Request::head("http://a.test/").body(Bytes::new()).unwrap();
    let forwarded = serve(&cache, head).await;
    assert_eq!(cache.origin().calls(), 2, "the HEAD went to the origin");
    assert_eq!(
        ours(&forwarded),
        expected("edgecache; fwd=stale; fwd-status=200; ttl=10; stored")
    );
}

#[tokio::test]
async fn the_clients_no_cache_is_fwd_request() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=60"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    cache
        .origin()
        .set_script(|_| Reply::Response(status(304, &[("etag", "\"v1\"")], "")));
    let response = serve(
        &cache,
        get("http://a.test/", &[("cache-control", "no-cache")]),
    )
    .await;
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=request; fwd-status=304; ttl=60; stored")
    );
}

#[tokio::test]
async fn a_no_cache_response_is_revalidated_as_fwd_stale() {
    // Validation the response asked for (`no-cache`), not the request.
    let clock = ManualClock::new();
    let cache = cache(cacheable("no-cache, max-age=60"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    cache
        .origin()
        .set_script(|_| Reply::Response(status(304, &[("etag", "\"v1\"")], "")));
    let response = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=stale; fwd-status=304; ttl=60; stored")
    );
}

#[tokio::test]
async fn stale_while_revalidate_is_a_hit_with_a_negative_ttl() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=10, stale-while-revalidate=60"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    clock.advance(Duration::from_secs(15));
    let stale = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(ours(&stale), expected("edgecache; hit; ttl=-5"));
}

#[tokio::test]
async fn stale_if_error_names_the_error_status_and_the_detail() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=10, stale-if-error=60"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    clock.advance(Duration::from_secs(30));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(503, &[], "down")));
    let response = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(response.body(), "body");
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=stale; fwd-status=503; ttl=-20; detail=stale-if-error")
    );
    cache.origin().set_script(|_| Reply::Fail);
    let response = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=stale; ttl=-20; detail=stale-if-error"),
        "no status from an origin that did not answer"
    );
}

/// Three requests for one URL that the origin answers only once all three wait: this cache's
/// member of each response, and the cache.
async fn three_at_once(cache_control: &'static str) -> (HttpCache<TestOrigin>, Vec<Member>) {
    let clock = ManualClock::new();
    let origin = cacheable(cache_control);
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = JoinSet::new();
    for _ in 0..3 {
        let cache = cache.clone();
        tasks.spawn(async move { cache.serve(get("http://a.test/", &[])).await.unwrap() });
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    cache.origin().set_open(true);
    let mut members = Vec::new();
    while let Some(response) = tasks.join_next().await {
        members.push(ours(&response.unwrap()));
    }
    (cache, members)
}

#[tokio::test(start_paused = true)]
async fn waiters_on_another_requests_fetch_are_collapsed() {
    let (cache, members) = three_at_once("max-age=60").await;
    let mut collapsed = 0;
    for member in members {
        if member == expected("edgecache; fwd=uri-miss; fwd-status=200; ttl=60; stored; collapsed")
        {
            collapsed += 1;
        } else {
            assert_eq!(
                member,
                expected("edgecache; fwd=uri-miss; fwd-status=200; ttl=60; stored")
            );
        }
    }
    assert_eq!(collapsed, 2, "all but the one that fetched");
    assert_eq!(cache.origin().calls(), 1);
}

#[tokio::test]
async fn requests_the_cache_does_not_handle_say_why() {
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=60"), &clock);
    let post = Request::post("http://a.test/").body(Bytes::new()).unwrap();
    assert_eq!(
        ours(&serve(&cache, post).await),
        expected("edgecache; fwd=method; fwd-status=200")
    );
    let range = get("http://a.test/", &[("range", "bytes=0-1")]);
    assert_eq!(
        ours(&serve(&cache, range).await),
        expected("edgecache; fwd=bypass; fwd-status=200")
    );
    let only_if_cached = get(
        "http://a.test/other",
        &[("cache-control", "only-if-cached")],
    );
    let response = serve(&cache, only_if_cached).await;
    assert_eq!(response.status(), 504);
    assert!(
        members(&response).is_empty(),
        "RFC 9211 §2: no member on a response the cache made up without a stored one"
    );
}

#[tokio::test]
async fn ours_follows_the_members_of_the_caches_behind() {
    // RFC 9211 §2: the first member is the cache closest to the origin, the last the one
    // closest to the client; this cache appends its member after those already there.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        let mut answer = response(&[("cache-control", "max-age=60")], "body");
        let headers = answer.headers_mut();
        headers.append(
            "cache-status",
            "origin-cache; fwd=uri-miss".parse().unwrap(),
        );
        headers.append("cache-status", "shield; hit".parse().unwrap());
        Reply::Response(answer)
    });
    let cache = cache(origin, &clock);
    let behind = [
        expected("origin-cache; fwd=uri-miss"),
        expected("shield; hit"),
    ];
    let miss = serve(&cache, get("http://a.test/", &[])).await;
    let hit = serve(&cache, get("http://a.test/", &[])).await;
    for (response, last) in [
        (
            miss,
            "edgecache; fwd=uri-miss; fwd-status=200; ttl=60; stored",
        ),
        (hit, "edgecache; hit; ttl=60"),
    ] {
        let mut all = members(&response);
        assert_eq!(all.pop(), Some(expected(last)));
        assert_eq!(
            all, behind,
            "the stored response keeps the members it came with, first"
        );
    }
}

#[tokio::test]
async fn the_name_is_configurable_and_the_field_can_be_left_out() {
    let clock = ManualClock::new();
    let named = builder(cacheable("max-age=60"), &clock)
        .cache_status_name("Edge Tokyo")
        .build();
    let response = serve(&named, get("http://a.test/", &[])).await;
    assert_eq!(ours(&response).name, "\"Edge Tokyo\"", "an sf-string");

    let silent = builder(cacheable("max-age=60"), &clock)
        .without_cache_status()
        .build();
    for _ in 0..2 {
        let response = serve(&silent, get("http://a.test/", &[])).await;
        assert!(members(&response).is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_that_could_not_use_the_fetch_say_collapsed_false() {
    // RFC 9211 §2.6: `collapsed=?0` for a request the cache tried to collapse but had to send
    // on its own (here: the response it waited for was its requester's alone).
    let (cache, members) = three_at_once("private, max-age=60").await;
    let refused = expected("edgecache; fwd=uri-miss; fwd-status=200; collapsed=?0");
    assert_eq!(members.iter().filter(|m| **m == refused).count(), 2);
    assert!(members.contains(&expected("edgecache; fwd=uri-miss; fwd-status=200")));
    assert_eq!(cache.origin().calls(), 3);
}

#[tokio::test]
async fn a_304_to_a_conditional_client_carries_the_member_of_its_stored_response() {
    // RFC 9211 §2: a 304 made from a stored response is based on it, so it has a member.
    let clock = ManualClock::new();
    let cache = cache(cacheable("max-age=60"), &clock);
    serve(&cache, get("http://a.test/", &[])).await;
    let conditional = || get("http://a.test/", &[("if-none-match", "\"v1\"")]);
    let hit = serve(&cache, conditional()).await;
    assert_eq!(hit.status(), 304);
    assert_eq!(ours(&hit), expected("edgecache; hit; ttl=60"));

    clock.advance(Duration::from_secs(70));
    cache.origin().set_script(|_| {
        Reply::Response(status(
            304,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
            "",
        ))
    });
    let revalidated = serve(&cache, conditional()).await;
    assert_eq!(revalidated.status(), 304);
    assert_eq!(
        ours(&revalidated),
        expected("edgecache; fwd=stale; fwd-status=304; ttl=60; stored")
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_a_purge_kept_out_of_storage_is_not_said_stored() {
    // RFC 9211 §2.5: `stored` says the cache stored the response. A hard purge of the URL
    // while its fetch was under way keeps the answer out of storage.
    let clock = ManualClock::new();
    let origin = cacheable("max-age=60");
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let pending = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.serve(get("http://a.test/", &[])).await.unwrap() })
    };
    while cache.origin().calls() == 0 {
        tokio::task::yield_now().await;
    }
    let uri: http::Uri = "http://a.test/".parse().unwrap();
    cache
        .purge_url(&uri, infra_edgecache::http::PurgeMode::Hard)
        .expect("an absolute URI");
    cache.origin().set_open(true);
    let response = pending.await.unwrap();
    assert_eq!(
        ours(&response),
        expected("edgecache; fwd=uri-miss; fwd-status=200")
    );
    let next = serve(&cache, get("http://a.test/", &[])).await;
    assert_eq!(ours(&next).params[0].0, "fwd", "it was indeed not stored");
}

#[test]
#[should_panic(expected = "printable ASCII")]
fn a_name_the_field_cannot_carry_is_refused_when_the_cache_is_configured() {
    let clock = ManualClock::new();
    let _ = builder(cacheable("max-age=60"), &clock).cache_status_name("caché");
}
