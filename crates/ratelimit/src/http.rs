//! Rate limiting over HTTP (feature `tower`): a tower layer that limits each request by its
//! key and tells the client where it stands, in the IETF `RateLimit` fields.
//!
//! - [`RateLimitLayer`]: `Clone`, every clone and service sharing the same limiters. Built
//!   from a [`KeyExtractor`] and a [`Limiter`] for the default policy, plus optional
//!   per-route policies (each its own limiter, chosen by a function of the request), a
//!   per-request cost, a [`MissingKey`] policy, a [`HeaderStyle`] and a rejection function.
//! - Admitted: the inner service's response, with `RateLimit-Policy` and `RateLimit`
//!   (draft-ietf-httpapi-ratelimit-headers-11, structured fields) or the legacy
//!   `RateLimit-Limit` / `-Remaining` / `-Reset`, or both, or none ([`HeaderStyle`]).
//! - Refused ([`Rejection`]): `429 Too Many Requests` with `Retry-After` and an
//!   `application/problem+json` body ([`ProblemJson`]) by default, without calling the inner
//!   service (a `400` without `Retry-After` when waiting cannot help: a cost above the
//!   policy's capacity, an unusable key); or your function's response, to which the layer
//!   adds the same fields.
//! - Keys: [`ClientIp`] (the connection's peer, or `X-Forwarded-For` / `Forwarded` behind a
//!   known number of trusted proxies, IPv6 optionally by network), [`HeaderKey`], [`key_fn`].
//!   A request without a key is limited under one shared key by default, never let through
//!   silently ([`MissingKey`]); the first is logged. One whose key is there but unusable (a
//!   malformed or repeated identity header: [`NoKey::Unusable`]) is refused with a `400`,
//!   whatever that policy, so no client can leave its own limit by spoiling its identity.
//! - [`Limiter`]: the one trait the layer asks, implemented for
//!   [`KeyedRateLimiter`](crate::KeyedRateLimiter) and [`RateLimiter`](crate::RateLimiter);
//!   its future lets a remote limiter answer without blocking the server's threads.
//!
//! ```
//! use http::{Request, Response};
//! use infra_common::ManualClock;
//! use infra_ratelimit::http::{ClientIp, RateLimitLayer};
//! use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
//! use std::convert::Infallible;
//! use std::net::IpAddr;
//! use tower::{Layer, Service, ServiceExt};
//!
//! // Behind one proxy, which appends the client's address to X-Forwarded-For.
//! let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_clock(Quota::per_second(1)?, ManualClock::new())?;
//! let layer = RateLimitLayer::builder(ClientIp::x_forwarded_for(1), limiter).build();
//! let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! }));
//! let request = || Request::get("/").header("x-forwarded-for", "192.0.2.7").body(String::new());
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let admitted = service.ready().await?.call(request()?).await?;
//!     assert_eq!(admitted.headers()["ratelimit-policy"], r#""default";q=1;w=1"#);
//!     assert_eq!(admitted.headers()["ratelimit"], r#""default";r=0;t=1"#);
//!     let refused = service.ready().await?.call(request()?).await?;
//!     assert_eq!(refused.status(), 429);
//!     assert_eq!(refused.headers()["retry-after"], "1");
//!     assert_eq!(refused.headers()["content-type"], "application/problem+json");
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client_ip;
mod fields;
mod forwarded;
mod key;
mod layer;
mod limiter;
mod reject;

pub use client_ip::ClientIp;
pub use fields::{HeaderStyle, PolicyName, RATELIMIT, RATELIMIT_POLICY, insert_headers};
pub use key::{HeaderKey, KeyExtractor, KeyFn, MissingKey, NoKey, key_fn};
pub use layer::{RateLimitLayer, RateLimitLayerBuilder, RateLimitService, ResponseFuture};
pub use limiter::{Limiter, QuotaPolicy};
pub use reject::{ProblemJson, RejectResponse, Rejection};
