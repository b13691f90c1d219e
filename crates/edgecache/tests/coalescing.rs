//! Request coalescing through `HttpCache`: one origin fetch per key, waiters released on
//! failure or timeout, stale-if-error and stale-while-revalidate under concurrency. Time is
//! tokio's paused clock (timeouts) and a `ManualClock` (freshness); nothing sleeps for real.
#![cfg(feature = "tokio")]

mod http_support;

use std::time::Duration;

use http_support::{Reply, TestOrigin, get, response, status};
use infra_common::ManualClock;
use infra_edgecache::http::{CacheStatus, Error, HttpCache};
use tokio::task::JoinSet;

fn cache(origin: TestOrigin, clock: &ManualClock) -> HttpCache<TestOrigin> {
    HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(5))
        .build()
}

fn cache_status(response: &http::Response<bytes::Bytes>) -> CacheStatus {
    *response.extensions().get::<CacheStatus>().unwrap()
}

/// Lets every spawned task run until it waits on something the test controls.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn spawn_many(
    cache: &HttpCache<TestOrigin>,
    url: &'static str,
    count: usize,
) -> JoinSet<Result<http::Response<bytes::Bytes>, Error>> {
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let cache = cache.clone();
        tasks.spawn(async move { cache.serve(get(url, &[])).await });
    }
    tasks
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_misses_make_one_origin_call() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "v1")));
    origin.set_open(false);
    let cache = cache(origin, &clock);

    let mut tasks = spawn_many(&cache, "http://example.com/cold", 100);
    settle().await;
    assert_eq!(cache.origin().calls(), 1, "one fetch while all 100 wait");
    cache.origin().set_open(true);

    let mut statuses = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let response = result.unwrap().unwrap();
        assert_eq!(response.body(), "v1");
        statuses.push(cache_status(&response));
    }
    assert_eq!(statuses.len(), 100);
    assert!(statuses.iter().all(|s| *s == CacheStatus::Miss));
    assert_eq!(cache.origin().calls(), 1);
    assert_eq!(cache.stats().coalesced_waits, 99);

    let after = cache
        .serve(get("http://example.com/cold", &[]))
        .await
        .unwrap();
    assert_eq!(cache_status(&after), CacheStatus::Hit);
    assert_eq!(cache.origin().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_releases_waiters_with_stale_if_error() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10, stale-if-error=600")],
            "old",
        ))
    });
    let cache = cache(origin, &clock);
    cache
        .serve(get("http://example.com/sie", &[]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));

    cache.origin().set_script(|_| Reply::Fail);
    cache.origin().set_open(false);
    let mut tasks = spawn_many(&cache, "http://example.com/sie", 50);
    settle().await;
    assert_eq!(
        cache.origin().calls(),
        2,
        "one revalidation for 50 requests"
    );
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        let response = result.unwrap().unwrap();
        assert_eq!(response.body(), "old");
        assert_eq!(cache_status(&response), CacheStatus::Stale);
        assert_eq!(response.headers()["age"], "20");
    }
    assert_eq!(cache.origin().calls(), 2);
    assert_eq!(cache.stats().stale_served, 50);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_without_stale_content_releases_waiters_with_the_error() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| Reply::Fail);
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = spawn_many(&cache, "http://example.com/down", 30);
    settle().await;
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        assert!(matches!(result.unwrap(), Err(Error::Origin(_))));
    }
    assert_eq!(cache.origin().calls(), 1);

    // The failed flight is gone: the next request tries the origin again.
    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "up")));
    let response = cache
        .serve(get("http://example.com/down", &[]))
        .await
        .unwrap();
    assert_eq!(response.body(), "up");
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_origin_releases_waiters_at_the_timeout() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| Reply::Hang);
    let cache = cache(origin, &clock);
    let started = tokio::time::Instant::now();
    let mut tasks = spawn_many(&cache, "http://example.com/hang", 20);
    while let Some(result) = tasks.join_next().await {
        assert_eq!(
            result.unwrap().unwrap_err(),
            Error::Timeout(Duration::from_secs(5))
        );
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "released at the timeout, not later"
    );
    assert_eq!(cache.origin().calls(), 1);

    cache
        .origin()
        .set_script(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "back")));
    let response = cache
        .serve(get("http://example.com/hang", &[]))
        .await
        .unwrap();
    assert_eq!(response.body(), "back");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_revalidation_serves_stale_at_the_timeout() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=1, stale-if-error=60")],
            "kept",
        ))
    });
    let cache = cache(origin, &clock);
    cache
        .serve(get("http://example.com/slow", &[]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    cache.origin().set_script(|_| Reply::Hang);
    let mut tasks = spawn_many(&cache, "http://example.com/slow", 10);
    while let Some(result) = tasks.join_next().await {
        let response = result.unwrap().unwrap();
        assert_eq!(
            (response.body().as_ref(), cache_status(&response)),
            (&b"kept"[..], CacheStatus::Stale)
        );
    }
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_revalidation_asked_again_unconditionally_ends_within_one_fetch_timeout() {
    let url = "http://example.com/retagged";
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=1, stale-if-error=60"),
                ("etag", "\"a\""),
            ],
            "kept",
        ))
    });
    let cache = cache(origin, &clock);
    cache.serve(get(url, &[])).await.unwrap();
    clock.advance(Duration::from_secs(2));
    // The 304 names another representation, so the cache asks again without a condition;
    // each answer takes 3 s of the 5 s the fetch is given.
    cache.origin().set_script(|request| {
        if request.headers().contains_key(http::header::IF_NONE_MATCH) {
            Reply::Delayed(
                Duration::from_secs(3),
                status(304, &[("etag", "\"b\"")], ""),
            )
        } else {
            Reply::Delayed(
                Duration::from_secs(3),
                response(&[("cache-control", "max-age=60")], "late"),
            )
        }
    });
    let started = tokio::time::Instant::now();
    let served = cache.serve(get(url, &[])).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        (served.body().as_ref(), cache_status(&served)),
        (&b"kept"[..], CacheStatus::Stale)
    );
    // Long after the second answer would have come.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(cache.origin().calls(), 3);
    cache
        .origin()
        .set_script(|_| Reply::Ungated(response(&[("cache-control", "max-age=60")], "next")));
    let served = cache.serve(get(url, &[])).await.unwrap();
    assert_eq!(
        served.body(),
        "next",
        "the fetch ended at its timeout: the late answer was not stored"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fetch_timeout_too_long_to_reach_waits_for_the_origin() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "v1")));
    let cache = HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .fetch_timeout(Duration::MAX)
        .build();
    let served = cache.serve(get("http://example.com/patient", &[])).await;
    assert_eq!(
        served.map(http::Response::into_body).ok(),
        Some(bytes::Bytes::from("v1")),
        "a timeout past the clock's range is no timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_error_counts_as_an_error_for_stale_if_error() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=1, stale-if-error=60")],
            "good",
        ))
    });
    let cache = cache(origin, &clock);
    cache
        .serve(get("http://example.com/5xx", &[]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(503, &[], "busy")));
    let response = cache
        .serve(get("http://example.com/5xx", &[]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "good");
    // Past the stale-if-error window the error goes through.
    clock.advance(Duration::from_secs(60));
    let response = cache
        .serve(get("http://example.com/5xx", &[]))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            "v1",
        ))
    });
    let cache = cache(origin, &clock);
    cache
        .serve(get("http://example.com/swr", &[]))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(20));

    cache.origin().set_script(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            "v2",
        ))
    });
    cache.origin().set_open(false);
    let mut tasks = spawn_many(&cache, "http://example.com/swr", 25);
    while let Some(result) = tasks.join_next().await {
        let response = result.unwrap().unwrap();
        assert_eq!(
            (response.body().as_ref(), cache_status(&response)),
            (&b"v1"[..], CacheStatus::Stale)
        );
    }
    settle().await;
    assert_eq!(cache.origin().calls(), 2, "exactly one background refresh");
    cache.origin().set_open(true);
    settle().await;
    let response = cache
        .serve(get("http://example.com/swr", &[]))
        .await
        .unwrap();
    assert_eq!(
        (response.body().as_ref(), cache_status(&response)),
        (&b"v2"[..], CacheStatus::Hit)
    );
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_releases_waiters_as_abandoned() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| Reply::Panic);
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = spawn_many(&cache, "http://example.com/panic", 10);
    settle().await;
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap_err(), Error::FetchAbandoned);
    }
    assert_eq!(cache.origin().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_whose_vary_differs_fetch_for_themselves() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let language = request
            .headers()
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap())
            .to_owned();
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            &language,
        ))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = JoinSet::new();
    for language in ["en", "en", "fr"] {
        let cache = cache.clone();
        tasks.spawn(async move {
            let response = cache
                .serve(get(
                    "http://example.com/lang",
                    &[("accept-language", language)],
                ))
                .await
                .unwrap();
            (language, response.into_body())
        });
    }
    settle().await;
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        let (language, body) = result.unwrap();
        assert_eq!(body, language, "every request gets its own language");
    }
    // One coalesced fetch (answered in whichever language the leader asked for) plus one
    // fetch by the waiter it did not fit.
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_share_an_uncacheable_server_error() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| Reply::Response(status(503, &[], "overloaded")));
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = spawn_many(&cache, "http://example.com/overloaded", 40);
    settle().await;
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().status(), 503);
    }
    assert_eq!(
        cache.origin().calls(),
        1,
        "a failing origin is asked once, not once per waiter"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_are_not_given_another_users_server_error() {
    // An authorized request's answer, or one marked private, is its requester's alone
    // (RFC 9111 §3.5, §5.2.2.7), error or not: a waiter asks the origin for its own.
    for fields in [&[][..], &[("cache-control", "private")][..]] {
        let clock = ManualClock::new();
        let origin = TestOrigin::new(move |request| {
            let user = request
                .headers()
                .get("authorization")
                .map_or("anonymous", |v| v.to_str().unwrap())
                .to_owned();
            Reply::Response(status(503, fields, &format!("quota exceeded for {user}")))
        });
        origin.set_open(false);
        let cache = cache(origin, &clock);
        let url = "http://example.com/account";
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.serve(get(url, &[("authorization", "alice")])).await })
        };
        settle().await;
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.serve(get(url, &[])).await })
        };
        settle().await;
        cache.origin().set_open(true);
        let leader = leader.await.unwrap().unwrap();
        let waiter = waiter.await.unwrap().unwrap();
        assert_eq!(leader.body(), "quota exceeded for alice");
        assert_eq!(waiter.body(), "quota exceeded for anonymous", "{fields:?}");
        assert_eq!(cache.origin().calls(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_not_given_a_server_error_for_another_variant() {
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let language = request.headers()["accept-language"].to_str().unwrap();
        let body = format!("overloaded ({language})");
        Reply::Response(status(503, &[("vary", "accept-language")], &body))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = JoinSet::new();
    for language in ["en", "fr"] {
        let cache = cache.clone();
        tasks.spawn(async move {
            let request = get("http://example.com/busy", &[("accept-language", language)]);
            (language, cache.serve(request).await.unwrap().into_body())
        });
        settle().await;
    }
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        let (language, body) = result.unwrap();
        assert_eq!(body, format!("overloaded ({language})"));
    }
    assert_eq!(cache.origin().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cacheable_server_error_does_not_displace_a_response_standing_in_for_errors() {
    // A 503 that says max-age=30 arrives while the stored response may stand in for errors:
    // storing it would have the next request served the 503 from storage, inside the
    // stale-if-error window the first request was served the good response in.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=1, stale-if-error=600")],
            "good",
        ))
    });
    let cache = cache(origin, &clock);
    let url = "http://example.com/cacheable-5xx";
    cache.serve(get(url, &[])).await.unwrap();
    clock.advance(Duration::from_secs(2));
    cache
        .origin()
        .set_script(|_| Reply::Response(status(503, &[("cache-control", "max-age=30")], "busy")));
    for attempt in 0..2 {
        let response = cache.serve(get(url, &[])).await.unwrap();
        assert_eq!(response.body(), "good", "attempt {attempt}");
        assert_eq!(cache_status(&response), CacheStatus::Stale);
    }
    assert_eq!(
        cache.origin().calls(),
        3,
        "each stale answer retried the origin"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_does_not_cancel_the_fetch_others_wait_for() {
    let clock = ManualClock::new();
    let origin =
        TestOrigin::new(|_| Reply::Response(response(&[("cache-control", "max-age=60")], "v1")));
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let url = "http://example.com/cancelled";
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.serve(get(url, &[])).await })
    };
    settle().await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.serve(get(url, &[])).await })
    };
    settle().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    cache.origin().set_open(true);
    let response = waiter.await.unwrap().unwrap();
    assert_eq!(response.body(), "v1");
    assert_eq!(cache_status(&response), CacheStatus::Miss);
    assert_eq!(cache.origin().calls(), 1);
    assert_eq!(
        fetch_status(&cache, url).await,
        CacheStatus::Hit,
        "the fetch stored its answer"
    );
}

async fn fetch_status(cache: &HttpCache<TestOrigin>, url: &str) -> CacheStatus {
    cache_status(&cache.serve(get(url, &[])).await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn waiters_for_another_variant_share_one_fetch_of_theirs_and_store_it() {
    // A cold stampede on a URL that varies: the waiters whose `Vary` fields the first answer
    // does not match coalesce again, behind one fetch of their own variant, which is stored,
    // rather than each asking the origin outside the cache.
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let encoding = request.headers()["accept-encoding"].to_str().unwrap();
        Reply::Response(response(
            &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
            encoding,
        ))
    });
    origin.set_open(false);
    let cache = cache(origin, &clock);
    let mut tasks = JoinSet::new();
    for encoding in ["gzip", "br", "br", "br", "br", "br"] {
        let cache = cache.clone();
        tasks.spawn(async move {
            let request = get("http://example.com/v", &[("accept-encoding", encoding)]);
            (encoding, cache.serve(request).await.unwrap().into_body())
        });
        settle().await;
    }
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        let (encoding, body) = result.unwrap();
        assert_eq!(body, encoding);
    }
    assert_eq!(cache.origin().calls(), 2, "one fetch per variant");
    let again = cache
        .serve(get("http://example.com/v", &[("accept-encoding", "br")]))
        .await
        .unwrap();
    assert_eq!(cache_status(&again), CacheStatus::Hit);
}

#[tokio::test(start_paused = true)]
async fn waiters_whose_own_request_forbids_storing_do_not_wait_a_second_round() {
    // Every request carries `Authorization` (an API behind a login), and the origin's answer
    // is otherwise storable: none of them can store what it fetches. The waiters on the first
    // fetch may not be given its answer; each asks the origin at once, rather than waiting on a
    // second fetch of one of theirs that would not be stored either.
    let clock = ManualClock::new();
    let mut first_call = true;
    let origin = TestOrigin::new(move |_| {
        let answer = response(&[("cache-control", "max-age=60")], "v1");
        if std::mem::take(&mut first_call) {
            Reply::Delayed(Duration::from_secs(1), answer)
        } else {
            Reply::Response(answer)
        }
    });
    let cache = cache(origin, &clock);
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let cache = cache.clone();
        tasks.spawn(async move {
            cache
                .serve(get(
                    "http://example.com/account",
                    &[("authorization", "Bearer x")],
                ))
                .await
        });
        settle().await;
    }
    assert_eq!(cache.origin().calls(), 1, "one fetch while the others wait");
    // The first answer arrives; every later one is held.
    cache.origin().set_open(false);
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        cache.origin().calls(),
        4,
        "each waiter asked the origin once the first answer came"
    );
    cache.origin().set_open(true);
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().body(), "v1");
    }
    assert_eq!(cache.origin().calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_own_request_forbids_storing_does_not_scatter_its_waiters() {
    // The first request for a cold URL says `no-store` (or carries `Authorization`): its answer
    // is not stored, and the waiters may not be given it. The waiters then share one fetch of
    // their own, stored for all, rather than each asking the origin: one client's request
    // field must not turn a collapsed miss into a stampede.
    for (name, value) in [("cache-control", "no-store"), ("authorization", "Bearer x")] {
        let clock = ManualClock::new();
        let origin = TestOrigin::new(|_| {
            Reply::Response(response(&[("cache-control", "max-age=60")], "v1"))
        });
        origin.set_open(false);
        let cache = cache(origin, &clock);
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .serve(get("http://example.com/hot", &[(name, value)]))
                    .await
            })
        };
        settle().await;
        let mut tasks = spawn_many(&cache, "http://example.com/hot", 20);
        settle().await;
        assert_eq!(
            cache.origin().calls(),
            1,
            "{name}: one fetch while all wait"
        );
        cache.origin().set_open(true);

        assert_eq!(leader.await.unwrap().unwrap().body(), "v1");
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap().unwrap().body(), "v1");
        }
        assert_eq!(
            cache.origin().calls(),
            2,
            "{name}: the waiters asked the origin one by one"
        );
        let after = cache
            .serve(get("http://example.com/hot", &[]))
            .await
            .unwrap();
        assert_eq!(cache_status(&after), CacheStatus::Hit, "{name}");
        // Each waiter is one request that waited, whether it waited once or twice.
        assert_eq!(cache.stats().coalesced_waits, 20, "{name}");
    }
}
