//! A tower middleware: per-key limits over HTTP, answering `429 Too Many Requests` with the
//! `RateLimit-*` and `Retry-After` headers.
//!
//! [`RateLimitLayer`] is `Clone` and every clone — and every service it builds — shares one
//! [`KeyedRateLimiter`], so a server that clones its stack per connection still enforces one
//! limit per key. The key comes from a function of the request chosen by the user (client IP,
//! API-key header, user id); a request for which it returns `None` is not limited.
//!
//! - admitted: the inner service's response, with `RateLimit-Limit`, `RateLimit-Remaining` and
//!   `RateLimit-Reset` added;
//! - denied: `429` with those headers and `Retry-After`, without calling the inner service;
//! - a new key when the limiter is full and none of the keys it examined is idle
//!   ([`Error::TooManyKeys`](crate::Error::TooManyKeys)): `429` with the key's quota as
//!   `RateLimit-Limit`, `RateLimit-Remaining: 0` and `Retry-After: 1`, since the limiter sheds
//!   new clients until some tracked keys have replenished.
//!
//! ```
//! use http::{Request, Response};
//! use infra_common::sync::Arc;
//! use infra_ratelimit::tower::RateLimitLayer;
//! use infra_ratelimit::{KeyedRateLimiter, Quota};
//! use tower::Layer;
//!
//! let limiter = Arc::new(KeyedRateLimiter::<String>::new(Quota::per_second(100)?)?);
//! let layer = RateLimitLayer::new(limiter, |request: &Request<()>| {
//!     request
//!         .headers()
//!         .get("x-api-key")
//!         .and_then(|v| v.to_str().ok())
//!         .map(str::to_owned)
//! });
//! # #[derive(Clone)] struct Inner;
//! # impl tower::Service<Request<()>> for Inner {
//! #     type Response = Response<String>; type Error = std::convert::Infallible;
//! #     type Future = std::future::Ready<Result<Response<String>, std::convert::Infallible>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, _: Request<()>) -> Self::Future { std::future::ready(Ok(Response::new(String::new()))) }
//! # }
//! let service = layer.clone().layer(Inner); // clones share the limiter
//! # let _ = service;
//! # Ok::<(), infra_ratelimit::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use infra_common::sync::Arc;
use infra_common::{Clock, SystemClock};

use crate::algorithm::Algorithm;
use crate::{Decision, Gcra, KeyedRateLimiter};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Writes the decision's headers into `headers`.
pub fn insert_headers(decision: &Decision, headers: &mut HeaderMap) {
    headers.insert(LIMIT, HeaderValue::from(decision.limit()));
    headers.insert(REMAINING, HeaderValue::from(decision.remaining()));
    headers.insert(RESET, HeaderValue::from(decision.reset_secs()));
    if let Some(secs) = decision.retry_after_secs() {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The `429 Too Many Requests` response for a denial.
pub fn too_many_requests<B: Default>(decision: &Decision) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    insert_headers(decision, response.headers_mut());
    response
}

/// Builds [`RateLimitService`]s sharing one keyed limiter. Cheap to clone.
pub struct RateLimitLayer<K, E, A: Algorithm = Gcra, C: Clock = SystemClock> {
    limiter: Arc<KeyedRateLimiter<K, A, C>>,
    extract: E,
}

impl<K, E, A: Algorithm, C: Clock> RateLimitLayer<K, E, A, C> {
    /// A layer limiting each request by the key `extract` returns (`None`: not limited).
    pub fn new(limiter: Arc<KeyedRateLimiter<K, A, C>>, extract: E) -> Self {
        Self { limiter, extract }
    }

    /// The shared limiter, for changing quotas at run time.
    pub fn limiter(&self) -> &Arc<KeyedRateLimiter<K, A, C>> {
        &self.limiter
    }
}

impl<K, E: Clone, A: Algorithm, C: Clock> Clone for RateLimitLayer<K, E, A, C> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
            extract: self.extract.clone(),
        }
    }
}

impl<K, E, A: Algorithm, C: Clock> fmt::Debug for RateLimitLayer<K, E, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, E: Clone, A: Algorithm, C: Clock> tower::Layer<S> for RateLimitLayer<K, E, A, C> {
    type Service = RateLimitService<S, K, E, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: Arc::clone(&self.limiter),
            extract: self.extract.clone(),
        }
    }
}

/// The middleware built by [`RateLimitLayer`].
pub struct RateLimitService<S, K, E, A: Algorithm = Gcra, C: Clock = SystemClock> {
    inner: S,
    limiter: Arc<KeyedRateLimiter<K, A, C>>,
    extract: E,
}

impl<S: Clone, K, E: Clone, A: Algorithm, C: Clock> Clone for RateLimitService<S, K, E, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            extract: self.extract.clone(),
        }
    }
}

impl<S, K, E, A: Algorithm, C: Clock> fmt::Debug for RateLimitService<S, K, E, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, E, A, C, B, R> tower::Service<Request<B>> for RateLimitService<S, K, E, A, C>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    K: Hash + Eq + Clone + Send + Sync,
    E: Fn(&Request<B>) -> Option<K>,
    A: Algorithm,
    C: Clock,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(key) = (self.extract)(&request) else {
            return ResponseFuture::Inner {
                future: self.inner.call(request),
                decision: None,
            };
        };
        let decision = match self.limiter.check(&key) {
            Ok(decision) => decision,
            // One cell never exceeds a capacity: the error is the key cap (see the module docs).
            // The headers still state the key's limit: a zero-cell check asks for it without
            // tracking the key.
            Err(_) => Decision::denied(
                self.limiter.check_n(&key, 0).map_or(0, |d| d.limit()),
                0,
                std::time::Duration::from_secs(1),
                std::time::Duration::ZERO,
            ),
        };
        if decision.is_denied() {
            return ResponseFuture::Limited {
                response: Some(too_many_requests(&decision)),
            };
        }
        ResponseFuture::Inner {
            future: self.inner.call(request),
            decision: Some(decision),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`RateLimitService`]: the inner service's, or a 429.
    #[project = ResponseProjection]
    #[allow(missing_docs)]
    pub enum ResponseFuture<F, R> {
        /// Admitted: the inner future, headers added when it completes.
        Inner { #[pin] future: F, decision: Option<Decision> },
        /// Denied: the 429 response, returned on first poll.
        Limited { response: Option<Response<R>> },
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inner { decision, .. } => f
                .debug_struct("Inner")
                .field("decision", decision)
                .finish_non_exhaustive(),
            Self::Limited { .. } => f.debug_struct("Limited").finish_non_exhaustive(),
        }
    }
}

impl<F, R, Err> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, Err>>,
{
    type Output = Result<Response<R>, Err>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseProjection::Inner { future, decision } => {
                let mut response = std::task::ready!(future.poll(cx))?;
                if let Some(decision) = decision {
                    insert_headers(decision, response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
            ResponseProjection::Limited { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("ResponseFuture polled after completion"),
            },
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::Quota;
    use infra_common::ManualClock;
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::{Layer, Service};

    /// Counts the requests that reach it.
    #[derive(Clone, Default)]
    struct Counting(Arc<infra_common::sync::atomic::AtomicUsize>);

    impl Service<Request<()>> for Counting {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0
                .fetch_add(1, infra_common::sync::atomic::Ordering::Relaxed);
            std::future::ready(Ok(Response::new("ok".to_owned())))
        }
    }

    fn request(user: &str) -> Request<()> {
        Request::builder().header("x-user", user).body(()).unwrap()
    }

    #[tokio::test]
    async fn clones_share_one_limit_and_denials_are_429_with_headers() {
        let clock = ManualClock::new();
        let limiter = Arc::new(
            KeyedRateLimiter::<String, Gcra, _>::with_clock(
                Quota::per_second(2).unwrap(),
                clock.clone(),
            )
            .unwrap(),
        );
        let layer = RateLimitLayer::new(limiter, |r: &Request<()>| {
            r.headers().get("x-user")?.to_str().ok().map(str::to_owned)
        });
        let inner = Counting::default();
        let mut first = layer.layer(inner.clone());
        let mut second = layer.clone().layer(inner.clone());

        let ok = first.call(request("ann")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["ratelimit-remaining"], "1");
        assert_eq!(ok.headers()["ratelimit-limit"], "2");
        assert!(
            second
                .call(request("ann"))
                .await
                .unwrap()
                .status()
                .is_success()
        );

        let denied = first.call(request("ann")).await.unwrap();
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(denied.headers()["retry-after"], "1");
        assert_eq!(denied.headers()["ratelimit-remaining"], "0");
        assert_eq!(denied.headers()["ratelimit-reset"], "1");
        assert_eq!(
            inner.0.load(infra_common::sync::atomic::Ordering::Relaxed),
            2
        );

        // Another key, and an unkeyed request, are not affected.
        assert!(
            second
                .call(request("bob"))
                .await
                .unwrap()
                .status()
                .is_success()
        );
        let unkeyed = first.call(Request::new(())).await.unwrap();
        assert!(unkeyed.headers().get("ratelimit-limit").is_none());

        clock.advance(Duration::from_millis(500));
        assert!(
            first
                .call(request("ann"))
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }

    #[tokio::test]
    async fn a_full_key_table_sheds_new_clients_with_429() {
        let options = crate::KeyedOptions::default().max_keys(1);
        let limiter = Arc::new(
            KeyedRateLimiter::<String, Gcra, _>::with_options(
                Quota::per_second(2).unwrap(),
                ManualClock::new(),
                options,
            )
            .unwrap(),
        );
        let layer = RateLimitLayer::new(Arc::clone(&limiter), |r: &Request<()>| {
            r.headers().get("x-user")?.to_str().ok().map(str::to_owned)
        });
        let mut service = layer.layer(Counting::default());
        assert!(
            service
                .call(request("ann"))
                .await
                .unwrap()
                .status()
                .is_success()
        );
        let shed = service.call(request("bob")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(shed.headers()["retry-after"], "1");
        assert_eq!(shed.headers()["ratelimit-limit"], "2");
        assert_eq!(shed.headers()["ratelimit-remaining"], "0");
        assert_eq!(limiter.len(), 1);
        assert!(format!("{layer:?} {service:?}").contains("RateLimit"));
    }
}
