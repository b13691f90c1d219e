//! The edge as an axum `Router`: every request is answered through the cache, except the
//! purge endpoint, which needs the purge token.
//!
//! Layer order, outermost first:
//!
//! 1. whatever the host adds with `Router::layer` around the whole router (tracing, request
//!    ids, a concurrency limit) sees every request, hits included;
//! 2. the router sends `POST /_cache/purge/tag/{tag}` through [`require_purge_token`] (a
//!    `route_layer`, so only that route pays for it) to [`purge_tag`];
//! 3. every other request goes to the fallback, [`through_cache`], which keys it under the
//!    edge's public host, not the client's `Host`, and answers through the `HttpCache`.
//!
//! Anything that changes a response per client (sessions, per-user authorisation) must not sit
//! between the cache and the client unless the cache knows about it: the cache is shared, and
//! RFC 9111's rules (no storing of `Authorization` requests unless the response allows it,
//! `Vary`, `private`) are what keep one client's response from another.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use infra_common::Clock;
use infra_edgecache::http::{
    CacheStatus, Error, HttpCache, MAX_TAG_BYTES, PurgeMode, without_hop_by_hop,
};

use crate::origin::HyperOrigin;

/// The largest request body the edge reads (they only matter for requests passed to the
/// origin); a larger one is answered 413.
pub(crate) const MAX_REQUEST_BODY: usize = 1 << 20;

/// How long the origin may take before the client gets a 504 (or a stored response, where
/// `stale-if-error` allows).
pub(crate) const ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The response field that says how the cache produced a response.
pub(crate) const X_CACHE: &str = "x-cache";

/// What the handlers share: the cache, the one host it serves, and the purge token.
#[derive(Clone)]
pub(crate) struct Edge {
    cache: HttpCache<HyperOrigin>,
    public_host: String,
    purge_token: Option<String>,
}

impl Edge {
    /// An edge answering for `public_host` (the host clients use, which keys the cache) through
    /// `cache`. Without a `purge_token` the purge endpoint answers 404 to everyone.
    pub(crate) fn new(
        cache: HttpCache<HyperOrigin>,
        public_host: &str,
        purge_token: Option<&str>,
    ) -> Self {
        Self {
            cache,
            public_host: public_host.to_ascii_lowercase(),
            purge_token: purge_token
                .filter(|token| !token.is_empty())
                .map(Into::into),
        }
    }

    /// The router: the purge endpoint behind its token, everything else through the cache.
    pub(crate) fn router(self) -> Router {
        Router::new()
            .route("/_cache/purge/tag/{tag}", post(purge_tag))
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                require_purge_token,
            ))
            .fallback(through_cache)
            .with_state(self)
    }
}

/// A cache of `max_bytes` in front of `origin` on `clock`, with the example's defaults: the
/// origin timeout above, and the crate's own (8 MiB largest stored body, `Set-Cookie`
/// responses not stored, heuristic freshness at most a day).
pub(crate) fn cache(
    origin: HyperOrigin,
    max_bytes: u64,
    clock: impl Clock + Clone + 'static,
) -> HttpCache<HyperOrigin> {
    HttpCache::builder(origin, max_bytes)
        .fetch_timeout(ORIGIN_TIMEOUT)
        .clock(clock)
        .build()
}

/// Answers `request` through the cache, with `Age` (set by the cache) and `X-Cache`.
async fn through_cache(State(edge): State<Edge>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_REQUEST_BODY).await else {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body unreadable or over 1 MiB\n",
        );
    };
    // The cache keys requests by host and path. Keying by the client's `Host` would let any
    // client store responses under hosts of its choosing, so the edge uses its own.
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = format!("http://{}{path}", edge.public_host).parse() else {
        return plain(StatusCode::BAD_REQUEST, "unusable request target\n");
    };
    parts.uri = uri;
    parts.headers.remove(HOST);
    match edge
        .cache
        .serve(axum::http::Request::from_parts(parts, body))
        .await
    {
        Ok(response) => {
            let status = response.extensions().get::<CacheStatus>().copied();
            let (mut parts, body) = response.into_parts();
            // A passed-through response still carries the origin connection's fields.
            parts.headers = without_hop_by_hop(&parts.headers);
            if let Some(status) = status {
                parts
                    .headers
                    .insert(X_CACHE, HeaderValue::from_static(x_cache(status)));
            }
            Response::from_parts(parts, Body::from(body))
        }
        // The error's text names the origin's failure: it stays on this side.
        Err(Error::Timeout(_)) => plain(StatusCode::GATEWAY_TIMEOUT, "origin timed out\n"),
        Err(_) => plain(StatusCode::BAD_GATEWAY, "origin unavailable\n"),
    }
}

/// `X-Cache`'s value for each way the cache produces a response.
fn x_cache(status: CacheStatus) -> &'static str {
    match status {
        CacheStatus::Hit => "HIT",
        CacheStatus::Stale => "STALE",
        CacheStatus::Revalidated => "REVALIDATED",
        CacheStatus::Miss => "MISS",
        CacheStatus::SharedHit => "SHARED-HIT",
        _ => "PASS",
    }
}

/// Lets a request through only with `Authorization: Bearer <purge token>`. A purge endpoint
/// open to the world lets anyone empty the cache and send all traffic to the origin.
async fn require_purge_token(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let Some(token) = &edge.purge_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(presented) if same_secret(presented, token.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer")],
            "purge token required\n",
        )
            .into_response(),
    }
}

/// Whether two secrets are equal, taking the same time wherever they first differ (a
/// comparison that stops early tells an attacker how much of a guess was right).
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Hard-purges every stored response tagged `tag` (its `Surrogate-Key` field).
async fn purge_tag(State(edge): State<Edge>, Path(tag): Path<String>) -> StatusCode {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES || tag.contains(char::is_whitespace) {
        return StatusCode::BAD_REQUEST;
    }
    edge.cache.purge_tag(&tag, PurgeMode::Hard);
    StatusCode::NO_CONTENT
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}
