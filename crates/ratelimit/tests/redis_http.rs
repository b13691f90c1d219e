//! The HTTP layer with a Redis limiter behind it, against a real `redis-server`: the async
//! limiter checks on the server's runtime, the blocking one on its own, both refuse with 429
//! once a key's quota is spent in Redis, and `RateLimit-Policy` states the quota Redis applies.
#![cfg(all(feature = "redis", feature = "tower"))]

mod redis_support;

use std::convert::Infallible;
use std::time::Duration;

use http::{HeaderName, Request, Response, StatusCode};
use infra_ratelimit::Quota;
use infra_ratelimit::http::{HeaderKey, HeaderStyle, Limiter, RateLimitLayer};
use infra_ratelimit::redis::{AsyncRedisRateLimiter, FailurePolicy, RedisRateLimiter};
use infra_testkit::RedisServer;
use redis_support::{options, runtime};
use tower::{Layer, Service, ServiceExt};

/// Sends requests with `x-api-key: key` through a layer over `limiter` and returns the
/// statuses and the first response's `RateLimit-Policy`.
async fn statuses<L: Limiter<String>>(limiter: L, requests: &[&str]) -> (Vec<StatusCode>, String) {
    let key = HeaderKey::new(HeaderName::from_static("x-api-key"));
    let layer = RateLimitLayer::builder(key, limiter).build();
    let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut statuses = Vec::new();
    let mut policy = String::new();
    for key in requests {
        let request = Request::get("/")
            .header("x-api-key", *key)
            .body(String::new())
            .unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        if policy.is_empty() {
            policy = response.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .to_owned();
        }
        statuses.push(response.status());
    }
    (statuses, policy)
}

#[test]
fn the_http_layer_limits_through_redis_with_either_limiter() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = runtime();
    // Two per minute: two at once, back within a minute.
    let quota = Quota::per_minute(2).unwrap();
    let requests = ["a", "a", "a", "b"];
    let expected = [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::OK,
    ];
    runtime.block_on(async {
        let options = |prefix| options().prefix(prefix);
        let on_runtime =
            AsyncRedisRateLimiter::new(&server.url(), quota, options("async")).unwrap();
        let (got, policy) = statuses(on_runtime, &requests).await;
        assert_eq!(got, expected, "async limiter");
        assert_eq!(policy, r#""default";q=2;w=60"#);

        let own_runtime = RedisRateLimiter::new(&server.url(), quota, options("blocking")).unwrap();
        let (got, policy) = statuses(own_runtime, &requests).await;
        assert_eq!(got, expected, "blocking limiter");
        assert_eq!(policy, r#""default";q=2;w=60"#);
    });
    // Both spent their quota in Redis, where a third limiter finds it spent.
    let checker = RedisRateLimiter::new(&server.url(), quota, options().prefix("async")).unwrap();
    assert!(checker.check("a").unwrap().is_denied());
    assert!(checker.check("b").unwrap().is_allowed());
}

/// A key longer than the Redis limiter accepts (`max_key_len`) is the client's error, as any
/// unusable key is: a `400`, counted with the unusable keys, never a `503` that says the
/// limiter is down.
#[test]
fn a_key_longer_than_redis_accepts_is_the_clients_error() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = runtime();
    runtime.block_on(async {
        let quota = Quota::per_minute(2).unwrap();
        let limiter =
            AsyncRedisRateLimiter::new(&server.url(), quota, options().prefix("long-key")).unwrap();
        let key = HeaderKey::new(HeaderName::from_static("x-api-key"));
        let layer = RateLimitLayer::builder(key, limiter).build();
        let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let request = Request::get("/")
            .header("x-api-key", "k".repeat(2_000))
            .body(String::new())
            .unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("retry-after").is_none());
        assert_eq!(layer.unusable_keys(), 1);
    });
}

/// What a client sees while Redis cannot be reached: under `FailurePolicy::FailClosed` the
/// limiter denies, so the layer answers `429` with `Retry-After: 1`; under
/// `FailurePolicy::Error` it cannot decide, and the layer answers `503`.
#[test]
fn an_unreachable_redis_is_a_429_when_failing_closed_and_a_503_as_an_error() {
    let runtime = runtime();
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("redis://{closed}");
    runtime.block_on(async {
        for (policy, status) in [
            (FailurePolicy::FailClosed, StatusCode::TOO_MANY_REQUESTS),
            (FailurePolicy::Error, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let options = options().policy(policy).timeout(Duration::from_millis(200));
            let limiter =
                AsyncRedisRateLimiter::new(&url, Quota::per_minute(2).unwrap(), options).unwrap();
            let key = HeaderKey::new(HeaderName::from_static("x-api-key"));
            let layer = RateLimitLayer::builder(key, limiter)
                .header_style(HeaderStyle::Both)
                .cost(|request| u32::from(request.uri.path() != "/free"))
                .build();
            let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
            let request = Request::get("/")
                .header("x-api-key", "a")
                .body(String::new())
                .unwrap();
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            assert_eq!(response.status(), status, "{policy:?}");
            let retry_after = response.headers().get("retry-after");
            let expected = (status == StatusCode::TOO_MANY_REQUESTS).then_some("1");
            assert_eq!(
                retry_after.map(|v| v.to_str().unwrap()),
                expected,
                "{policy:?}"
            );
            // The legacy reset says the same wait, never that the quota is back at once.
            let reset = response.headers().get("ratelimit-reset");
            assert_eq!(reset.map(|v| v.to_str().unwrap()), expected, "{policy:?}");
            // A request of cost 0 spends nothing: failing closed serves it; an error is still
            // an error.
            let free = Request::get("/free")
                .header("x-api-key", "a")
                .body(String::new())
                .unwrap();
            let response = service.ready().await.unwrap().call(free).await.unwrap();
            let expected = match policy {
                FailurePolicy::FailClosed => StatusCode::OK,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            assert_eq!(response.status(), expected, "{policy:?}, cost 0");
        }
    });
}
