//! The `ratelimit_axum` example's service: a small API limited per client IP address.
//!
//! - Every route: 120 requests a minute per client, at most 20 at once (`default`).
//! - `POST /login`: 5 a minute per client (`login`), kept apart from the rest, so guessing
//!   passwords is slow whatever else the client does.
//! - `GET /search` costs 5 of the default quota; everything else costs 1.
//! - The client is the address the trusted proxies recorded in `X-Forwarded-For` (the entry
//!   `trusted_proxies` from the right), or with no proxy the connection's peer, which axum
//!   provides when served with `into_make_service_with_connect_info`.
//! - A request whose client cannot be told (no connection info, no `X-Forwarded-For` field,
//!   `unknown` where the proxy writes) is limited with every other such request as one
//!   client, never let through; one whose
//!   field has no address where the proxy writes (too few entries) is refused with a `400`.
//!
//! `main.rs` serves it; `tests/ratelimit_axum.rs` drives it over loopback.

use std::net::IpAddr;

use axum::Router;
use axum::http::Method;
use axum::routing::{get, post};
use infra_common::Clock;
use infra_ratelimit::http::{ClientIp, RateLimitLayer};
use infra_ratelimit::{Error, Gcra, KeyedRateLimiter, Quota};

/// The router, limited per client IP on `clock`, behind `trusted_proxies` proxies.
pub(crate) fn app<C: Clock + Clone + 'static>(
    clock: C,
    trusted_proxies: usize,
) -> Result<Router, Error> {
    let limiter =
        |quota: Quota| KeyedRateLimiter::<IpAddr, Gcra, C>::with_clock(quota, clock.clone());
    // IPv6 clients by their /64: one subscriber's network is one client.
    let client_ip = ClientIp::x_forwarded_for(trusted_proxies).ipv6_prefix(64)?;
    let layer =
        RateLimitLayer::builder(client_ip, limiter(Quota::per_minute(120)?.with_burst(20)?)?)
            .policy("login", limiter(Quota::per_minute(5)?)?)?
            .route(|request| (request.uri.path() == "/login").then_some("login"))
            .cost(|request| match (&request.method, request.uri.path()) {
                (&Method::GET, "/search") => 5,
                _ => 1,
            })
            .build();
    Ok(Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/search", get(|| async { "results\n" }))
        .route("/login", post(|| async { "welcome\n" }))
        .layer(layer))
}
