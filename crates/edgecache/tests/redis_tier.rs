//! The shared tier against a real `redis-server`: two caches ("edges") share one Redis; what
//! one stores the other reads without asking its origin (as old as Redis says it is), a purge
//! on one reaches the other's store, and a broken or oversized record or an unreachable Redis
//! only costs an origin fetch.
#![cfg(all(feature = "redis", not(infra_loom)))]

mod http_support;

use std::future::Future;
use std::time::{Duration, Instant};

use http::Uri;
use http_support::{Reply, TestOrigin, fetch_with, get, response, status};
use infra_common::ManualClock;
use infra_edgecache::http::{CacheStatus, HttpCache, PurgeMode, SharedStats, SharedTier};
use infra_testkit::{FaultProxy, RedisServer};

const URL: &str = "http://shop.example/p/42";
const RECORD_KEY: &str = "edgecache:r:GET shop.example/p/42";
const CHANNEL: &str = "edgecache:purge";
/// How long a poll waits for another process or thread before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

fn origin(body: &'static str) -> TestOrigin {
    TestOrigin::new(move |_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("surrogate-key", "product-42 catalogue"),
                ("vary", "accept-language"),
            ],
            body,
        ))
    })
}

fn edge(url: &str, body: &'static str, clock: &ManualClock) -> HttpCache<TestOrigin> {
    let tier = SharedTier::open(url, Duration::from_secs(2)).unwrap();
    HttpCache::builder(origin(body), 16 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build()
}

async fn serve(cache: &HttpCache<TestOrigin>, language: &str) -> (CacheStatus, String) {
    let response = cache
        .serve(get(URL, &[("accept-language", language)]))
        .await
        .unwrap();
    let status = *response.extensions().get::<CacheStatus>().unwrap();
    (status, String::from_utf8(response.body().to_vec()).unwrap())
}

/// Waits, without a fixed sleep, until `done` holds; fails the test after [`DEADLINE`].
async fn poll<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts serving the URL (`en`) from `cache`, whose origin's gate the caller closed, and
/// waits until the fetch has asked the origin: the request, still waiting there.
async fn fetch_held_at_origin(
    cache: &HttpCache<TestOrigin>,
) -> tokio::task::JoinHandle<(CacheStatus, String)> {
    let pending = {
        let cache = cache.clone();
        tokio::spawn(async move { serve(&cache, "en").await })
    };
    poll("the origin to be asked", || {
        let asked = cache.origin().calls() == 1;
        async move { asked }
    })
    .await;
    pending
}

fn stats(cache: &HttpCache<TestOrigin>) -> SharedStats {
    cache.shared_stats().unwrap()
}

/// Waits until `cache`'s shared-tier counters satisfy `done`; fails the test after [`DEADLINE`].
async fn poll_stats(
    what: &str,
    cache: &HttpCache<TestOrigin>,
    done: impl Fn(&SharedStats) -> bool,
) {
    poll(what, || {
        let reached = done(&stats(cache));
        async move { reached }
    })
    .await;
}

/// Two edges on `server`, once `a` has fetched its `en` answer and written it to Redis.
async fn edges_after_a_stored(
    server: &RedisServer,
    clock: &ManualClock,
) -> (HttpCache<TestOrigin>, HttpCache<TestOrigin>) {
    let a = edge(&server.url(), "from a", clock);
    let b = edge(&server.url(), "from b", clock);
    assert_eq!(serve(&a, "en").await, (CacheStatus::Miss, "from a".into()));
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    (a, b)
}

fn exists(server: &RedisServer, key: &str) -> bool {
    server.command(&["EXISTS", key]).unwrap() == ":1"
}

/// The bytes of the shared tier's record of `URL`, as an edge wrote them.
fn stored_record(server: &RedisServer) -> Vec<u8> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    redis::cmd("GET")
        .arg(RECORD_KEY)
        .query(&mut connection)
        .unwrap()
}

/// Writes `record` back as the shared tier's record of `URL`, to expire in `ttl`: an edge's
/// write that lands late.
fn store_record(server: &RedisServer, record: &[u8], ttl: Duration) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let () = redis::cmd("SET")
        .arg(RECORD_KEY)
        .arg(record)
        .arg("PX")
        .arg(u64::try_from(ttl.as_millis()).unwrap())
        .query(&mut connection)
        .unwrap();
}

/// Two edges sharing one Redis, both subscribed to its purges: `a` connected directly, `b`
/// through a proxy that can cut it off.
struct TwoEdges {
    server: RedisServer,
    proxy: FaultProxy,
    clock: ManualClock,
    a: HttpCache<TestOrigin>,
    b: HttpCache<TestOrigin>,
}

/// [`TwoEdges`] on a fresh redis-server, or `None` (the test skips) where there is none.
async fn two_edges_b_behind_a_proxy() -> Option<TwoEdges> {
    let server = RedisServer::start()?;
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    let b = edge(&format!("redis://{}", proxy.addr()), "from b", &clock);
    subscribed(&server, 2).await;
    Some(TwoEdges {
        server,
        proxy,
        clock,
        a,
        b,
    })
}

/// Waits until `edges` subscribers listen on the purge channel.
async fn subscribed(server: &RedisServer, edges: i64) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    poll("the subscribers", || {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(CHANNEL)
            .query(&mut connection)
            .unwrap();
        async move { count == edges }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_reads_what_another_stored_without_asking_its_origin() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let (_a, b) = edges_after_a_stored(&server, &clock).await;
    assert!(exists(&server, RECORD_KEY));

    assert_eq!(
        serve(&b, "en").await,
        (CacheStatus::SharedHit, "from a".into())
    );
    assert_eq!(b.origin().calls(), 0);
    // Now in b's own store.
    assert_eq!(serve(&b, "en").await, (CacheStatus::Hit, "from a".into()));
    let b_stats = stats(&b);
    assert_eq!(
        (b_stats.hits, b_stats.misses, b_stats.read_errors),
        (1, 0, 0)
    );
    // What b read from Redis, b does not write back.
    assert_eq!(b_stats.writes, 0);

    // Another variant is not in Redis: b asks its origin.
    assert_eq!(serve(&b, "fr").await, (CacheStatus::Miss, "from b".into()));
    assert_eq!(b.origin().calls(), 1);
    assert_eq!(stats(&b).misses, 1);
}

/// The record another edge stored is served as this cache's hit (the origin is not asked:
/// RFC 9211 §2.1), from the shared tier (`detail`), without the fields its `no-cache="..."`
/// names, which go only to a request the response was fetched or validated for, nor those
/// its `private="..."` names, which are never stored, in Redis either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_read_from_redis_is_a_hit_without_its_private_or_no_cache_fields() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let with_token = || {
        TestOrigin::new(|_| {
            Reply::Response(response(
                &[
                    (
                        "cache-control",
                        "max-age=600, no-cache=\"x-token\", private=\"x-user\"",
                    ),
                    ("x-token", "t1"),
                    ("x-user", "alice"),
                ],
                "page",
            ))
        })
    };
    let edge = |origin| {
        let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
        HttpCache::builder(origin, 16 << 20)
            .clock(clock.clone())
            .shared_tier(tier)
            .build()
    };
    let (a, b) = (edge(with_token()), edge(with_token()));
    let fetched = a.serve(get(URL, &[])).await.unwrap();
    assert_eq!(fetched.headers()["x-token"], "t1", "a's own fetch");
    assert_eq!(fetched.headers()["x-user"], "alice");
    poll_stats("a's write", &a, |s| s.writes == 1).await;

    let read = b.serve(get(URL, &[])).await.unwrap();
    assert_eq!(
        read.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::SharedHit)
    );
    assert_eq!(b.origin().calls(), 0);
    assert!(!read.headers().contains_key("x-token"));
    assert!(!read.headers().contains_key("x-user"));
    let member = read.headers()["cache-status"].to_str().unwrap();
    let ttl = member
        .strip_prefix("edgecache; hit; ttl=")
        .and_then(|rest| rest.strip_suffix("; detail=shared-tier"))
        .unwrap_or_else(|| panic!("a hit from the shared tier: {member}"));
    assert!(
        (590..=600).contains(&ttl.parse::<i64>().unwrap()),
        "{member}"
    );

    let again = b.serve(get(URL, &[])).await.unwrap();
    assert_eq!(
        again.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert!(!again.headers().contains_key("x-token"));
}

/// RFC 9111 §4.3.5: a HEAD answer showing a new representation makes the stored GET stale;
/// the copy of that GET in Redis must not then be read back in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_a_head_showed_outdated_is_not_read_back_from_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let version = |tag: &'static str, body: &'static str| {
        move |request: &http::Request<bytes::Bytes>| {
            let body = if request.method() == http::Method::HEAD {
                ""
            } else {
                body
            };
            Reply::Response(response(
                &[("cache-control", "max-age=600"), ("etag", tag)],
                body,
            ))
        }
    };
    let origin = TestOrigin::new(version("\"v1\"", "old"));
    let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
    let cache = HttpCache::builder(origin, 16 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build();
    cache.serve(get(URL, &[])).await.unwrap();
    poll_stats("the write", &cache, |s| s.writes == 1).await;
    cache.origin().set_script(version("\"v2\"", "new"));
    let mut head = get(URL, &[("cache-control", "no-cache")]);
    *head.method_mut() = http::Method::HEAD;
    cache.serve(head).await.unwrap();

    let response = cache.serve(get(URL, &[])).await.unwrap();
    assert_eq!(response.body(), "new");
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
}

/// RFC 9111 §4.3.5: a HEAD answer for the stored GET's representation whose fields say it may
/// not be stored (here `no-store`) drops that GET; its copy in Redis, fresh as it was, must
/// not then be read back in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_a_head_answer_dropped_is_not_read_back_from_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|_: &http::Request<bytes::Bytes>| {
        Reply::Response(response(
            &[("cache-control", "max-age=600"), ("etag", "\"v1\"")],
            "old",
        ))
    });
    let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
    let cache = HttpCache::builder(origin, 16 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build();
    cache.serve(get(URL, &[])).await.unwrap();
    poll_stats("the write", &cache, |s| s.writes == 1).await;
    cache
        .origin()
        .set_script(|request: &http::Request<bytes::Bytes>| {
            let body = if request.method() == http::Method::HEAD {
                ""
            } else {
                "new"
            };
            Reply::Response(response(
                &[("cache-control", "no-store"), ("etag", "\"v1\"")],
                body,
            ))
        });
    let mut head = get(URL, &[("cache-control", "no-cache")]);
    *head.method_mut() = http::Method::HEAD;
    cache.serve(head).await.unwrap();

    let response = cache.serve(get(URL, &[])).await.unwrap();
    assert_eq!(
        response.body(),
        "new",
        "{:?}",
        response.extensions().get::<CacheStatus>()
    );
    assert_eq!(cache.origin().calls(), 3);
}

/// RFC 9111 §5.2.1.5: a cache stores no part of a response to a `no-store` request. A record
/// read from Redis for one is served but not kept in the edge's own store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_read_for_a_no_store_request_is_served_but_not_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let (_a, b) = edges_after_a_stored(&server, &clock).await;

    let response = b
        .serve(get(
            URL,
            &[("accept-language", "en"), ("cache-control", "no-store")],
        ))
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::SharedHit)
    );
    // Not in b's store: the next request reads Redis again.
    assert_eq!(
        serve(&b, "en").await,
        (CacheStatus::SharedHit, "from a".into())
    );
    assert_eq!(b.origin().calls(), 0);
    assert_eq!(stats(&b).hits, 2);
}

/// RFC 9111 §4.1: of a URL's responses the most recent, by `Date`, decides which request
/// fields select among them. A record written from an answer older than this edge's latest
/// one under other `Vary` names (here another edge's write, queued before the origin started
/// to vary, landing after this edge's) is a miss: it neither replaces the newer variants nor
/// answers a selection their `Vary` tells apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_older_than_the_urls_vary_names_does_not_replace_its_variants() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let edge_of = |origin| {
        let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
        HttpCache::builder(origin, 16 << 20)
            .clock(clock.clone())
            .shared_tier(tier)
            .build()
    };
    let a = edge_of(TestOrigin::new(|_| {
        Reply::Response(response(&[("cache-control", "max-age=600")], "plain"))
    }));
    let b = edge_of(TestOrigin::new(|request| {
        let encoding = request.headers()["accept-encoding"]
            .to_str()
            .unwrap()
            .to_owned();
        Reply::Response(response(
            &[
                ("cache-control", "max-age=600"),
                ("vary", "accept-encoding"),
            ],
            &encoding,
        ))
    }));
    assert_eq!(
        fetch_with(&a, URL, &[]).await,
        (CacheStatus::Miss, "plain".into())
    );
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    let record = stored_record(&server);

    // Ten seconds on, the origin varies; a client's `no-cache` brings b its newer answer.
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        fetch_with(
            &b,
            URL,
            &[("accept-encoding", "gzip"), ("cache-control", "no-cache")]
        )
        .await,
        (CacheStatus::Miss, "gzip".into())
    );
    poll_stats("b's write", &b, |s| s.writes == 1).await;
    // a's older record lands after b's write, as fresh as when it was written.
    store_record(&server, &record, Duration::from_secs(600));

    assert_eq!(
        fetch_with(&b, URL, &[("accept-encoding", "br")]).await,
        (CacheStatus::Miss, "br".into()),
        "the older record answered a selection the newer Vary tells apart"
    );
    assert_eq!(
        fetch_with(&b, URL, &[("accept-encoding", "gzip")]).await,
        (CacheStatus::Hit, "gzip".into()),
        "the newer variant was kept"
    );
    assert_eq!(b.origin().calls(), 2);
    let b_stats = stats(&b);
    assert_eq!((b_stats.hits, b_stats.misses), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_edge_reaches_the_other_edges_store_and_redis() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    let b = edge(&server.url(), "from b", &clock);
    subscribed(&server, 2).await;

    serve(&a, "en").await;
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    assert_eq!(serve(&b, "en").await.0, CacheStatus::SharedHit);
    assert_eq!(serve(&b, "en").await.0, CacheStatus::Hit);

    // A hard purge by tag on a: gone from Redis, then from b's store.
    a.purge_tag("catalogue", PurgeMode::Hard);
    poll_stats("b to apply the purge", &b, |s| s.purges_applied == 1).await;
    // b may see the message before a's call returns and counts it.
    poll_stats("a to count its purge", &a, |s| s.purges_published == 1).await;
    assert!(!exists(&server, RECORD_KEY));
    assert!(!exists(&server, "edgecache:t:catalogue"));
    // a does not apply its own message a second time.
    assert_eq!(stats(&a).purges_applied, 0);
    // b's new fetch comes after the purge on the edges' clock too: a copy generated before
    // the purge is never read back (`a_record_written_before_a_purge_is_not_read_back_after_it`).
    clock.advance(Duration::from_secs(1));
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    assert_eq!(b.origin().calls(), 1);

    // b's fetch is in Redis again, and a (whose copy its own purge removed) reads it there.
    poll_stats("b's write", &b, |s| s.writes == 1).await;
    assert_eq!(
        serve(&a, "en").await,
        (CacheStatus::SharedHit, "from b".into())
    );
    assert_eq!(serve(&a, "en").await.0, CacheStatus::Hit);
    // A soft purge by URL on b marks a's copy stale: a asks its origin again.
    b.purge_url(&Uri::from_static(URL), PurgeMode::Soft)
        .expect("an absolute URI");
    poll_stats("a to apply the purge", &a, |s| s.purges_applied == 1).await;
    assert!(!exists(&server, RECORD_KEY));
    let calls = a.origin().calls();
    assert_eq!(serve(&a, "en").await.0, CacheStatus::Miss);
    assert_eq!(a.origin().calls(), calls + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_method_on_one_edge_purges_its_url_in_redis_and_on_the_others() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    let b = edge(&server.url(), "from b", &clock);
    subscribed(&server, 2).await;

    serve(&a, "en").await;
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    assert_eq!(serve(&b, "en").await.0, CacheStatus::SharedHit);
    assert_eq!(serve(&b, "en").await.0, CacheStatus::Hit);

    let post = http::Request::post(URL)
        .body(bytes::Bytes::from_static(b"change"))
        .unwrap();
    assert_eq!(a.serve(post).await.unwrap().status(), 200);
    poll_stats("b to apply the invalidation", &b, |s| s.purges_applied == 1).await;
    poll_stats("a to count its purge", &a, |s| s.purges_published == 1).await;
    assert!(!exists(&server, RECORD_KEY));
    // Neither edge is given the old answer again, from its store or from Redis: b asks its
    // origin (after the invalidation on the edges' clock too), and a reads b's new answer.
    clock.advance(Duration::from_secs(1));
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    poll_stats("b's write", &b, |s| s.writes == 1).await;
    assert_eq!(
        serve(&a, "en").await,
        (CacheStatus::SharedHit, "from b".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_purge_from_another_edge_reaches_a_fetch_in_progress() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let a = edge(&server.url(), "old", &clock);
    let b = edge(&server.url(), "unused", &clock);
    subscribed(&server, 2).await;

    // a's fetch misses Redis and waits at its origin's closed gate...
    a.origin().set_open(false);
    let pending = fetch_held_at_origin(&a).await;
    // ...while b's purge of the URL reaches a.
    b.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("a to apply the purge", &a, |s| s.purges_applied == 1).await;
    a.origin().set_open(true);
    assert_eq!(pending.await.unwrap(), (CacheStatus::Miss, "old".into()));

    // The answer that predates the purge was neither kept by a nor shared through Redis.
    assert_eq!(serve(&a, "en").await, (CacheStatus::Miss, "old".into()));
    assert_eq!(a.origin().calls(), 2);
    poll_stats("a's write of the second answer", &a, |s| s.writes == 1).await;
    assert_eq!(serve(&a, "en").await.0, CacheStatus::Hit);
    assert_eq!(stats(&a).writes, 1, "the first answer was never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_is_a_counted_miss() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let cache = edge(&server.url(), "fresh", &clock);
    assert_eq!(
        server
            .command(&["SET", RECORD_KEY, "EC\x01garbage"])
            .unwrap(),
        "+OK"
    );
    assert_eq!(
        serve(&cache, "en").await,
        (CacheStatus::Miss, "fresh".into())
    );
    let stats = stats(&cache);
    assert_eq!((stats.invalid_records, stats.hits), (1, 0));
    assert_eq!(cache.origin().calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_size_limit_is_not_read() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
    let cache = HttpCache::builder(origin("fresh"), 16 << 20)
        .clock(ManualClock::new())
        .max_object_bytes(16)
        .shared_tier(tier)
        .build();
    // The limit is the largest body plus 1 MiB for the rest of the record.
    let oversized = "x".repeat((1 << 20) + 17);
    assert_eq!(
        server.command(&["SET", RECORD_KEY, &oversized]).unwrap(),
        "+OK"
    );
    assert_eq!(
        serve(&cache, "en").await,
        (CacheStatus::Miss, "fresh".into())
    );
    assert_eq!(stats(&cache).invalid_records, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_a_record_spent_in_redis_counts_in_its_age() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let (_a, b) = edges_after_a_stored(&server, &clock).await;
    // Written to be kept 600 s (its max-age); Redis says 5 s are left, so it has been kept
    // 595 s, whatever the edges' clocks say.
    assert_eq!(
        server.command(&["PEXPIRE", RECORD_KEY, "5000"]).unwrap(),
        ":1"
    );
    let response = b
        .serve(get(URL, &[("accept-language", "en")]))
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::SharedHit)
    );
    let age = |response: &http::Response<bytes::Bytes>| -> u64 {
        response.headers()["age"].to_str().unwrap().parse().unwrap()
    };
    // 595 s, and a little more if this machine took over a second between the two commands.
    let first = age(&response);
    assert!((595..600).contains(&first), "{first}");
    // Served from b's store from now on, ageing on b's clock.
    clock.advance(Duration::from_secs(3));
    let response = b
        .serve(get(URL, &[("accept-language", "en")]))
        .await
        .unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(age(&response), first + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_costs_only_origin_fetches() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    server.stop();
    let clock = ManualClock::new();
    let cache = edge(&url, "fresh", &clock);
    assert_eq!(
        serve(&cache, "en").await,
        (CacheStatus::Miss, "fresh".into())
    );
    assert_eq!(
        serve(&cache, "en").await,
        (CacheStatus::Hit, "fresh".into())
    );
    assert_eq!(stats(&cache).read_errors, 1);
    poll_stats("the failed write", &cache, |s| s.write_errors == 1).await;
    // The purge still applies here.
    assert_eq!(
        cache.purge_url(&Uri::from_static(URL), PurgeMode::Hard),
        Ok(true)
    );
    poll_stats("the failed publish", &cache, |s| s.purge_errors == 1).await;
    assert_eq!(serve(&cache, "en").await.0, CacheStatus::Miss);
    assert_eq!(cache.origin().calls(), 2);
}

/// A Redis that accepts connections and never answers: every call waits for the timeout.
fn silent_redis() -> (String, infra_common::sync::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    let holder = infra_common::sync::thread::spawn(move || {
        // Holds every connection open, unanswered, until the test process ends.
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => return,
            }
        }
    });
    (url, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_redis_that_hangs_are_bounded_not_queued() {
    // No redis-server needed: the point is a Redis that hangs.
    let (url, _holder) = silent_redis();
    let clock = ManualClock::new();
    let tier = SharedTier::open(&url, Duration::from_secs(6)).unwrap();
    let cache = HttpCache::builder(origin("fresh"), 64 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build();
    let cache = infra_common::sync::Arc::new(cache);
    let misses: u64 = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..misses {
        let cache = infra_common::sync::Arc::clone(&cache);
        tasks.spawn(async move {
            let url = format!("http://shop.example/p/{index}");
            let response = cache.serve(get(&url, &[])).await.unwrap();
            *response.extensions().get::<CacheStatus>().unwrap()
        });
    }
    let served = tasks.join_all().await;
    assert!(served.iter().all(|status| *status == CacheStatus::Miss));
    // Every read failed: past the cap at once, the others after the tier's timeout, not the
    // fetch timeout (the requests would have failed).
    let stats = stats(&cache);
    assert_eq!(stats.read_errors, misses);
    // Each miss wants a write. At most 64 wait on the hung Redis; the others are dropped and
    // counted at once rather than queued (each holding its body). The first 64 writes hold
    // their places for at least the timeout, by when at most 64 more misses could have
    // finished: so at least `misses - 128` are dropped, however slow the machine.
    assert!(
        stats.write_errors >= misses - 2 * 64,
        "only {} writes dropped of {misses}",
        stats.write_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_redis_that_hangs_counts_against_the_fetch_timeout() {
    let (url, _holder) = silent_redis();
    let clock = ManualClock::new();
    let tier = SharedTier::open(&url, Duration::from_millis(300)).unwrap();
    // The read waits 300 ms for the tier's timeout, the origin answers 400 ms after it is
    // asked: together past the 500 ms the fetch is given.
    let origin = TestOrigin::new(|_| {
        Reply::Delayed(
            Duration::from_millis(400),
            response(&[("cache-control", "max-age=600")], "late"),
        )
    });
    let cache = HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .fetch_timeout(Duration::from_millis(500))
        .build();
    assert!(cache.serve(get(URL, &[])).await.is_err());
    // Long after the origin's answer would have come.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        cache.stats().inserts,
        0,
        "the fetch ended at its timeout: the late answer was not stored"
    );
}

/// Cuts b's connections to Redis and keeps it from reconnecting until the proxy heals;
/// returns once Redis counts only a's subscription.
async fn cut_b_off(proxy: &FaultProxy, server: &RedisServer) {
    proxy.refuse_new(true);
    proxy.cut_connections();
    subscribed(server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_an_edge_again_once_it_has_reconnected_to_redis() {
    let Some(TwoEdges {
        server,
        proxy,
        clock: _clock,
        a,
        b,
    }) = two_edges_b_behind_a_proxy().await
    else {
        return;
    };

    // b loses Redis, and cannot reconnect for now.
    cut_b_off(&proxy, &server).await;
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    assert_eq!(serve(&b, "en").await.0, CacheStatus::Hit);

    // Redis is reachable again: b subscribes again on its own, and a's purge reaches it.
    proxy.heal();
    subscribed(&server, 2).await;
    a.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("b to apply the purge", &b, |s| s.purges_applied == 1).await;
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    assert_eq!(b.origin().calls(), 2);
}

/// Edge `a` purges the URL while `b`, which stores it, is cut off from Redis behind `proxy`:
/// `b` still serves its copy. Once the proxy heals and `b` subscribes, `b` validates that copy
/// with the origin before serving it again.
async fn missed_purge_is_made_up_by_revalidation(
    server: &RedisServer,
    proxy: &FaultProxy,
    a: &HttpCache<TestOrigin>,
    b: &HttpCache<TestOrigin>,
) {
    a.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("a to publish", a, |s| s.purges_published == 1).await;
    assert_eq!(serve(b, "en").await.0, CacheStatus::Hit);
    proxy.heal();
    subscribed(server, 2).await;
    poll("b's copy to be revalidated", || {
        let b = b.clone();
        async move { serve(&b, "en").await.0 != CacheStatus::Hit }
    })
    .await;
    assert_eq!(b.origin().calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_subscribes_again_revalidates_what_it_stored_before() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    let build_b = || edge(&format!("redis://{}", proxy.addr()), "from b", &clock);
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let b = metrics::with_local_recorder(&recorder, build_b);
    #[cfg(not(feature = "metrics"))]
    let b = build_b();
    subscribed(&server, 2).await;
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    poll_stats("b's write", &b, |s| s.writes == 1).await;

    // b loses Redis; a's purge, published meanwhile, never reaches it. Once subscribed
    // again, b cannot tell which purges it missed: what it stored before is validated with
    // the origin before its next use.
    cut_b_off(&proxy, &server).await;
    missed_purge_is_made_up_by_revalidation(&server, &proxy, &a, &b).await;
    assert_eq!(stats(&b).purges_applied, 0);
    assert_eq!(stats(&b).resubscriptions, 1);
    #[cfg(feature = "metrics")]
    {
        use infra_edgecache::metrics::{CACHE_LABEL, PURGE_RESUBSCRIPTIONS_TOTAL};
        let series = infra_testkit::metrics::counters(&recorder.snapshotter());
        let counted = infra_testkit::metrics::value(
            &series,
            PURGE_RESUBSCRIPTIONS_TOTAL,
            &[(CACHE_LABEL, "default")],
        );
        assert_eq!(counted, Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_in_progress_across_a_resubscription_stores_its_answer_stale() {
    let Some(TwoEdges {
        server,
        proxy,
        clock: _clock,
        a,
        b,
    }) = two_edges_b_behind_a_proxy().await
    else {
        return;
    };

    // b's fetch has read Redis and waits at its origin's closed gate...
    b.origin().set_open(false);
    let pending = fetch_held_at_origin(&b).await;
    // ...while b loses its subscription, and a's purge, published meanwhile, never reaches it.
    cut_b_off(&proxy, &server).await;
    a.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("a to publish", &a, |s| s.purges_published == 1).await;
    proxy.heal();
    poll_stats("b to subscribe again", &b, |s| s.resubscriptions == 1).await;

    // The answer, which may predate the purge b missed, is served to the request that asked
    // for it, but is validated with the origin before its next use, as what b stored before
    // the resubscription is.
    b.origin().set_open(true);
    assert_eq!(pending.await.unwrap(), (CacheStatus::Miss, "from b".into()));
    assert_ne!(serve(&b, "en").await.0, CacheStatus::Hit);
    assert_eq!(b.origin().calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_a_response_from_before_a_purge_that_lands_after_it_is_refused() {
    // a's read and write reach Redis a second late each way (as over a slow link, or a write
    // waiting for a blocking thread); b's purge of the URL lands after a's fetch began and
    // before its write, and before a has heard of it. An edge started after the purge has no
    // record of it: only Redis can tell that the write is of a fetch from before the purge.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let tier = SharedTier::open(&format!("redis://{}", proxy.addr()), Duration::from_secs(8));
    let a = HttpCache::builder(origin("from a"), 16 << 20)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(30))
        .shared_tier(tier.unwrap())
        .build();
    let b = edge(&server.url(), "from b", &clock);
    // An earlier purge of something else: the epoch a's fetch reads is not the first.
    b.purge_tag("elsewhere", PurgeMode::Hard);
    poll_stats("b's first purge", &b, |s| s.purges_published == 1).await;

    proxy.set_latency(Duration::from_secs(1));
    assert_eq!(serve(&a, "en").await, (CacheStatus::Miss, "from a".into()));
    assert_eq!(stats(&a).read_errors, 0, "a's fetch read the epoch");
    b.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("b's purge", &b, |s| s.purges_published == 2).await;
    poll_stats("a's write to end", &a, |s| {
        s.writes + s.writes_refused + s.write_errors == 1
    })
    .await;
    assert_eq!(stats(&a).writes_refused, 1, "{:?}", stats(&a));

    let c = edge(&server.url(), "from c", &clock);
    assert_eq!(
        serve(&c, "en").await,
        (CacheStatus::Miss, "from c".into()),
        "a response the purge removed was read from Redis"
    );
    // A fetch that began after the purge is written.
    poll_stats("c's write", &c, |s| s.writes == 1).await;
    assert_eq!(stats(&c).writes_refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_could_not_read_the_epoch_counts_every_purge_mark_as_later() {
    let Some(TwoEdges {
        server: _server,
        proxy,
        clock: _clock,
        a,
        b,
    }) = two_edges_b_behind_a_proxy().await
    else {
        return;
    };
    // A purge of the URL that comes before anything b fetches: Redis holds its mark.
    a.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
        .expect("an absolute URI");
    poll_stats("b to apply the purge", &b, |s| s.purges_applied == 1).await;

    // b's fetch cannot read Redis (so neither the epoch), and Redis is back for its write.
    b.origin().set_open(false);
    proxy.refuse_new(true);
    proxy.cut_connections();
    let pending = fetch_held_at_origin(&b).await;
    assert_eq!(stats(&b).read_errors, 1);
    proxy.heal();
    b.origin().set_open(true);
    assert_eq!(pending.await.unwrap(), (CacheStatus::Miss, "from b".into()));
    poll_stats("b's write to end", &b, |s| {
        s.writes + s.writes_refused + s.write_errors == 1
    })
    .await;
    assert_eq!(stats(&b).writes_refused, 1, "{:?}", stats(&b));

    // A fetch that read the epoch is judged by it: the same mark, older, refuses nothing.
    assert_eq!(serve(&a, "de").await, (CacheStatus::Miss, "from a".into()));
    poll_stats("a's write", &a, |s| s.writes == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_falls_silent_is_replaced() {
    let Some(TwoEdges {
        server: _server,
        proxy,
        clock: _clock,
        a,
        b,
    }) = two_edges_b_behind_a_proxy().await
    else {
        return;
    };
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    assert_eq!(serve(&b, "en").await.0, CacheStatus::Hit);
    // A quiet subscription that answers its keepalive is kept (the subscriber's two seconds
    // are real time: Redis and the proxy do not run on the test's clock).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stats(&b).resubscriptions,
        0,
        "a live subscription was replaced"
    );
    assert_eq!(serve(&b, "en").await.0, CacheStatus::Hit);

    // b's subscription falls silent without closing: what Redis sends on it from now on is
    // held for a minute, a purge first. Neither end sees the connection end, and Redis still
    // counts b as subscribed.
    proxy.stall_open_connections(Duration::from_secs(60));
    a.purge_tag("elsewhere", PurgeMode::Hard);
    poll_stats("a to publish", &a, |s| s.purges_published == 1).await;
    // Time for the proxy to take the message off the socket (a real one, in real time).
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.heal();

    // New connections go through at once. b must notice that its subscription is dead and
    // subscribe again, well within the minute, for a's purges to reach it.
    let start = Instant::now();
    while stats(&b).purges_applied == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "no purge reached b: its silent subscription was kept"
        );
        a.purge_url(&Uri::from_static(URL), PurgeMode::Hard)
            .expect("an absolute URI");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_purge_during_the_shared_read_keeps_a_revalidated_response_out() {
    // A stale response is being revalidated; the shared tier's read comes first. A hard purge
    // of the URL lands while that read waits: the stored response it selected is gone, and a
    // 304 merged into it must not store it again, as it would not without a shared tier
    // (`a_hard_url_purge_reaches_a_fetch_in_progress`).
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let origin = TestOrigin::new(|request| {
        let headers = [("cache-control", "max-age=10"), ("etag", "\"v1\"")];
        if request.headers().contains_key("if-none-match") {
            Reply::Response(status(304, &headers, ""))
        } else {
            Reply::Response(response(&headers, "v1"))
        }
    });
    let tier = SharedTier::open(&server.url(), Duration::from_secs(1)).unwrap();
    let cache = HttpCache::builder(origin, 16 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build();
    assert_eq!(fetch_with(&cache, URL, &[]).await.0, CacheStatus::Miss);
    poll_stats("the write", &cache, |s| s.writes == 1).await;
    clock.advance(Duration::from_secs(20));

    // Redis holds every command for three seconds: the revalidation's read waits out the
    // tier's timeout of one.
    assert_eq!(server.command(&["CLIENT", "PAUSE", "3000"]).unwrap(), "+OK");
    let revalidation = {
        let cache = cache.clone();
        tokio::spawn(async move { fetch_with(&cache, URL, &[]).await })
    };
    poll("the revalidation to begin", || {
        let begun = cache.stats().revalidations == 1;
        async move { begun }
    })
    .await;
    // Well inside the read's second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cache
            .purge_url(&Uri::from_static(URL), PurgeMode::Hard)
            .unwrap()
    );
    assert_eq!(cache.origin().calls(), 1, "the read is still waiting");

    let (answered, body) = revalidation.await.unwrap();
    assert_eq!((answered, body.as_str()), (CacheStatus::Revalidated, "v1"));
    let (after, _) = fetch_with(&cache, URL, &[]).await;
    assert_eq!(
        after,
        CacheStatus::Miss,
        "the response purged hard was stored again by its revalidation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tags_set_in_redis_drops_records_that_have_expired() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
    // Kept one second: Redis expires the records on its own clock.
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[("cache-control", "max-age=1"), ("surrogate-key", "short")],
            "brief",
        ))
    });
    let cache = HttpCache::builder(origin, 16 << 20)
        .clock(clock.clone())
        .shared_tier(tier)
        .build();
    let first = "edgecache:r:GET shop.example/brief/1";
    cache
        .serve(get("http://shop.example/brief/1", &[]))
        .await
        .unwrap();
    poll_stats(
        "the first record to be written, then to expire",
        &cache,
        |s| s.writes == 1 && !exists(&server, first),
    )
    .await;
    cache
        .serve(get("http://shop.example/brief/2", &[]))
        .await
        .unwrap();
    poll_stats("the second write", &cache, |s| s.writes == 2).await;
    // Only the live record is left in the tag's set: a tag written to forever stays small.
    assert_eq!(
        server.command(&["ZCARD", "edgecache:t:short"]).unwrap(),
        ":1"
    );
    // And a purge by the tag still deletes what it holds.
    cache.purge_tag("short", PurgeMode::Hard);
    poll_stats("the purge", &cache, |s| s.purges_published == 1).await;
    assert!(!exists(&server, "edgecache:r:GET shop.example/brief/2"));
    assert!(!exists(&server, "edgecache:t:short"));
}

/// The shared tier's metrics count what its stats count, under each cache's name.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_tier_metrics_match_its_stats() {
    use infra_edgecache::metrics::{
        CACHE_LABEL, OUTCOME_LABEL, PURGE_MESSAGES_TOTAL, SHARED_READS_TOTAL, SHARED_WRITES_TOTAL,
    };
    use infra_testkit::metrics::{counters, value};
    use metrics_util::debugging::DebuggingRecorder;

    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let clock = ManualClock::new();
    let named = |name: &'static str, body: &'static str| {
        let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
        metrics::with_local_recorder(&recorder, || {
            HttpCache::builder(origin(body), 16 << 20)
                .clock(clock.clone())
                .shared_tier(tier)
                .metrics_name(name)
                .build()
        })
    };
    let a = named("a", "from a");
    let b = named("b", "from b");
    subscribed(&server, 2).await;

    // a: a read that misses, a write. b: a read that hits, then a miss for another variant
    // and its write.
    serve(&a, "en").await;
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    assert_eq!(serve(&b, "en").await.0, CacheStatus::SharedHit);
    assert_eq!(serve(&b, "fr").await.0, CacheStatus::Miss);
    // Redis holds one record per URL: b's variant replaced a's.
    poll_stats("b's write", &b, |s| s.writes == 1).await;
    // A purge from a, applied by b.
    a.purge_tag("catalogue", PurgeMode::Hard);
    poll_stats("the purge to be counted on both edges", &a, |s| {
        s.purges_published == 1 && stats(&b).purges_applied == 1
    })
    .await;

    let series = counters(&recorder.snapshotter());
    let count = |name: &str, cache: &str, outcome: &str| {
        value(
            &series,
            name,
            &[(CACHE_LABEL, cache), (OUTCOME_LABEL, outcome)],
        )
    };
    for (cache, edge) in [("a", &a), ("b", &b)] {
        let stats = stats(edge);
        let expected = [
            (SHARED_READS_TOTAL, "hit", stats.hits),
            (SHARED_READS_TOTAL, "miss", stats.misses),
            (SHARED_READS_TOTAL, "error", stats.read_errors),
            (SHARED_READS_TOTAL, "invalid", stats.invalid_records),
            (SHARED_WRITES_TOTAL, "written", stats.writes),
            (SHARED_WRITES_TOTAL, "error", stats.write_errors),
            (SHARED_WRITES_TOTAL, "refused", stats.writes_refused),
            (PURGE_MESSAGES_TOTAL, "published", stats.purges_published),
            (PURGE_MESSAGES_TOTAL, "error", stats.purge_errors),
            (PURGE_MESSAGES_TOTAL, "applied", stats.purges_applied),
            (PURGE_MESSAGES_TOTAL, "invalid", stats.invalid_messages),
        ];
        for (name, outcome, stat) in expected {
            assert_eq!(
                count(name, cache, outcome),
                Some(stat),
                "{name} {outcome} on {cache}"
            );
        }
    }
    let (a, b) = (stats(&a), stats(&b));
    assert_eq!(
        (
            a.hits,
            a.misses,
            a.writes,
            a.purges_published,
            a.purges_applied
        ),
        (0, 1, 1, 1, 0)
    );
    assert_eq!(
        (
            b.hits,
            b.misses,
            b.writes,
            b.purges_published,
            b.purges_applied
        ),
        (1, 1, 1, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_before_a_purge_is_not_read_back_after_it() {
    // A write that lands in Redis after a purge's delete (an edge whose fetch began before the
    // purge and that had not yet heard of it, or the purging edge's own delete still queued)
    // holds what the purge removed.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    serve(&a, "en").await;
    poll_stats("a's write", &a, |s| s.writes == 1).await;
    let record = stored_record(&server);

    clock.advance(Duration::from_secs(5));
    a.purge_tag("catalogue", PurgeMode::Hard);
    poll_stats("a's purge", &a, |s| s.purges_published == 1).await;
    assert!(!exists(&server, RECORD_KEY));
    // Written again, as kept 5 s of the 600 s it was written for: 5 s old, so from before the
    // purge.
    store_record(&server, &record, Duration::from_secs(595));

    assert_eq!(serve(&a, "en").await, (CacheStatus::Miss, "from a".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_to_a_redis_that_hangs_are_bounded_not_queued() {
    // No redis-server needed: the point is a Redis that hangs. Purges come as fast as
    // clients send unsafe requests (each one a purge of its URL), so a hung Redis must not
    // gather them without bound, each holding a blocking thread.
    let (url, _holder) = silent_redis();
    let tier = SharedTier::open(&url, Duration::from_secs(6)).unwrap();
    let cache = HttpCache::builder(origin("fresh"), 64 << 20)
        .clock(ManualClock::new())
        .shared_tier(tier)
        .build();
    let purges: u64 = 200;
    for index in 0..purges {
        cache.purge_tag(&format!("t{index}"), PurgeMode::Hard);
    }
    // The first 64 wait on Redis for its timeout; the others are dropped and counted at once.
    let stats = stats(&cache);
    assert_eq!(
        stats.purge_errors,
        purges - 64,
        "purges queued on a hung Redis: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_in_redis_lasts_only_while_it_is_fresh() {
    // An edge reads a record only to serve it fresh: past that, neither a stale window nor a
    // validator allowance (which let an edge's own store serve a response stale or revalidate
    // it) has any use for the record, which would only take Redis's memory.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tier = SharedTier::open(&server.url(), Duration::from_secs(2)).unwrap();
    let origin = TestOrigin::new(|_| {
        Reply::Response(response(
            &[
                ("cache-control", "max-age=60, stale-while-revalidate=30"),
                ("etag", "\"v1\""),
            ],
            "tagged",
        ))
    });
    let cache = HttpCache::builder(origin, 16 << 20)
        .clock(ManualClock::new())
        .shared_tier(tier)
        .build();
    cache.serve(get(URL, &[])).await.unwrap();
    poll_stats("the write", &cache, |s| s.writes == 1).await;
    let left: u64 = server.command(&["PTTL", RECORD_KEY]).unwrap()[1..]
        .parse()
        .unwrap();
    assert!(
        (55_000..=60_000).contains(&left),
        "kept {left} ms, past its 60 s lifetime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_first_subscription_came_late_revalidates_what_it_stored_before() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    subscribed(&server, 1).await;
    // b starts while Redis is out of its reach, and stores the URL on its own.
    proxy.refuse_new(true);
    let b = edge(&format!("redis://{}", proxy.addr()), "from b", &clock);
    assert_eq!(serve(&b, "en").await, (CacheStatus::Miss, "from b".into()));
    // a's purge, published before b has ever subscribed, never reaches it. Its first
    // subscription, after failed attempts, cannot tell which purges b missed either: what it
    // stored before is validated with the origin before its next use.
    missed_purge_is_made_up_by_revalidation(&server, &proxy, &a, &b).await;
    assert_eq!(stats(&b).resubscriptions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_under_a_tag_key_leaves_no_record_a_purge_of_the_tag_misses() {
    // Something else wrote a string where the tag's sorted set belongs: the records written
    // with the tag cannot be listed there, so none is written, and a purge of the tag still
    // deletes what it can and reaches the other edges.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let tag_key = "edgecache:t:product-42";
    assert_eq!(server.command(&["SET", tag_key, "foreign"]).unwrap(), "+OK");
    let clock = ManualClock::new();
    let a = edge(&server.url(), "from a", &clock);
    assert_eq!(serve(&a, "en").await, (CacheStatus::Miss, "from a".into()));
    poll_stats("a's write to end", &a, |s| {
        s.writes + s.writes_refused + s.write_errors == 1
    })
    .await;
    assert_eq!(stats(&a).write_errors, 1, "{:?}", stats(&a));
    assert!(
        !exists(&server, RECORD_KEY),
        "a record was written that no purge of its tag lists"
    );

    a.purge_tag("product-42", PurgeMode::Hard);
    poll_stats("a's purge to end", &a, |s| {
        s.purges_published + s.purge_errors == 1
    })
    .await;
    assert_eq!(stats(&a).purges_published, 1, "{:?}", stats(&a));
    assert!(!exists(&server, tag_key));
}

#[test]
fn the_time_a_write_waits_for_a_blocking_thread_counts_in_the_records_age() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // One blocking thread, which the test keeps busy while a's write waits for it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = ManualClock::new();
        let a = edge(&server.url(), "from a", &clock);
        let b = edge(&server.url(), "from b", &clock);
        // a's fetch has read Redis and waits at its origin's closed gate...
        a.origin().set_open(false);
        let pending = fetch_held_at_origin(&a).await;
        // ...when the blocking thread is taken: its answer's write waits 10 s for it.
        let (release, busy) = tokio::sync::oneshot::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || busy.blocking_recv());
        a.origin().set_open(true);
        assert_eq!(pending.await.unwrap(), (CacheStatus::Miss, "from a".into()));
        clock.advance(Duration::from_secs(10));
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        poll_stats("a's write", &a, |s| s.writes == 1).await;

        let response = b
            .serve(get(URL, &[("accept-language", "en")]))
            .await
            .unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::SharedHit)
        );
        let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
        // 10 s, and a little more if this machine took over a second between write and read.
        assert!((10..12).contains(&age), "read back {age} s old");
    });
}
