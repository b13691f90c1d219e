//! [`HttpCache`]: the store, RFC 9111 / RFC 5861 semantics, coalescing and purge, on tokio.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AGE, AUTHORIZATION, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, LOCATION, PRAGMA,
    PROXY_AUTHENTICATE, RANGE, SET_COOKIE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::{Clock, SystemClock};

use super::cache_control::{CacheControl, DELTA_SECONDS_CAP};
use super::cache_status_field::{DEFAULT_CACHE_NAME, Forward, Member, cache_name};
use super::coalescing::{Flight, Flights, Joined, Leader, Outcome};
use super::error::{Error, PurgeError};
use super::freshness::{Decision, Exchange, Freshness, Heuristic};
use super::keys::{PrimaryKey, VaryKey, host_is_keyable};
use super::origin::Origin;
use super::purge::{PurgeLog, PurgeMode, Purged, parse_tags};
#[cfg(feature = "redis")]
use super::recency::predates_other_vary_names;
use super::revalidation::{
    client_not_modified, conditional_headers, merge_not_modified, validates, without_hop_by_hop,
};
use super::storability::{NotStorable, RequestFacts, ResponseFacts, SetCookiePolicy, storability};
use crate::{Cache, Stats};

/// `Proxy-Authentication-Info` (RFC 9110 §11.7.3), which `http` has no constant for.
const PROXY_AUTHENTICATION_INFO: HeaderName = HeaderName::from_static("proxy-authentication-info");

/// The most variants (different `Vary` selections) kept for one primary key; a new one
/// replaces the oldest.
pub const MAX_VARIANTS: usize = 8;

/// How a response was produced, in its extensions (`response.extensions().get::<CacheStatus>()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from storage, fresh.
    Hit,
    /// Served from storage, stale (`max-stale`, `stale-while-revalidate` or `stale-if-error`).
    Stale,
    /// Validated with the origin (a 304) and served from storage.
    Revalidated,
    /// Fetched from the origin (by this request or one it waited for).
    Miss,
    /// Sent to the origin without the cache taking part (other methods, `Range`, `If-Match`,
    /// `If-Unmodified-Since`, unreadable `Cache-Control`, a `Host` that is not the target's one
    /// host, a target with userinfo, no host at all).
    Pass,
    /// Not stored here, but found fresh in the shared tier (feature `redis`), so the origin
    /// was not asked; now stored here too.
    SharedHit,
}

/// One stored response with what the cache needs to reuse it.
#[derive(Debug)]
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    vary: VaryKey,
    freshness: Freshness,
    /// The monotonic reading when it was stored: its resident time counts from here.
    stored_at: u64,
    /// The purge generation when its fetch began.
    generation: u64,
    tags: Vec<Box<str>>,
    /// Set by a soft purge of its URL, or by an answer to a HEAD that shows the origin now
    /// has another representation (§4.3.5).
    marked_stale: AtomicBool,
    /// Whether other requests may be given it (it was storable).
    shareable: bool,
    /// Whether requests waiting on its fetch may be given it even unstored: nothing in it or
    /// its request made it its requester's alone (`private`, `no-store`, `Authorization`,
    /// `Set-Cookie`, proxy authentication fields, an unreadable `Cache-Control` or `Vary`);
    /// only its lifetime kept it out.
    impersonal: bool,
    /// Whether it is a stored response freshened by a 304.
    revalidated: bool,
    /// Whether it was read from the shared tier rather than fetched.
    from_shared: bool,
    /// The fields its `no-cache="..."` names (§5.2.2.4): sent only to the request it was
    /// fetched or validated for, withheld from the requests that waited on that fetch and
    /// whenever it is reused from storage.
    withheld: Box<[HeaderName]>,
}

impl Stored {
    /// The status the origin answered the fetch that made this response with (RFC 9211
    /// §2.3): 304 for a revalidation. (A copy from the shared tier is reported as a hit,
    /// without one.)
    fn forward_status(&self) -> StatusCode {
        if self.revalidated {
            StatusCode::NOT_MODIFIED
        } else {
            self.status
        }
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        self.body.len()
            + headers
            + self.vary.weight()
            + self.tags.iter().map(|t| t.len()).sum::<usize>()
            + 128
    }

    fn has_validators(&self) -> bool {
        !conditional_headers(&self.headers).is_empty()
    }
}

/// The variants stored under one primary key.
#[derive(Debug, Default)]
struct Variants {
    list: Vec<Arc<Stored>>,
}

/// What a flight ends with: the response (stored or not), or why there is none.
type FetchResult = Result<Fetch, Error>;

/// A flight's response, and the fields stripped from its stored form as its requester's
/// alone (`Set-Cookie`, the fields `private="..."` names), which only the request that caused
/// the fetch receives.
#[derive(Clone, Debug)]
struct Fetch {
    stored: Arc<Stored>,
    personal: Vec<(HeaderName, HeaderValue)>,
    /// Whether the response is in this cache's store now: a storable one is not when a hard
    /// purge of its URL reached the cache during its fetch.
    kept: bool,
    /// Whether only its request kept it out of storage (`no-store`, `Authorization`): the
    /// requests that waited on the fetch, which may not be given it, could store it.
    kept_out_by_request: bool,
}

/// A flight's key: the primary key, and for a revalidation the variant's secondary key, so
/// revalidations of different variants do not wait on each other.
type FlightKey = (PrimaryKey, Option<VaryKey>);

/// Tunes an [`HttpCache`]; start with [`HttpCache::builder`].
#[derive(Debug)]
pub struct HttpCacheBuilder<O> {
    origin: O,
    max_bytes: u64,
    shards: Option<usize>,
    config: Config,
    clock: Option<Box<dyn ClockSource>>,
    /// The cache's identifier in `Cache-Status`, serialized; `None` leaves the field out.
    cache_status_name: Option<Box<str>>,
    #[cfg(feature = "redis")]
    shared: Option<super::shared::SharedTier>,
    #[cfg(feature = "metrics")]
    metrics_name: std::borrow::Cow<'static, str>,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    fetch_timeout: Duration,
    heuristic: Heuristic,
    set_cookie: SetCookiePolicy,
    max_object_bytes: usize,
    keep_validated: Duration,
}

/// A clock the builder can hand to both the store and the HTTP layer.
trait ClockSource: fmt::Debug + Send + Sync {
    fn boxed(&self) -> Box<dyn Clock>;
}

impl<C: Clock + Clone + 'static> ClockSource for C {
    fn boxed(&self) -> Box<dyn Clock> {
        Box::new(self.clone())
    }
}

impl<O: Origin> HttpCacheBuilder<O> {
    /// The longest the origin may take to answer before the fetch fails with
    /// [`Error::Timeout`] and its waiters are released (default 10 s). When a revalidation's
    /// 304 names another representation and the cache asks again unconditionally, both
    /// requests share this time, and so does the shared tier's read before them (feature
    /// `redis`).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }

    /// Heuristic freshness for responses without an explicit lifetime (default: 10 % of the
    /// time since `Last-Modified`, at most a day).
    pub fn heuristic(mut self, heuristic: Heuristic) -> Self {
        self.config.heuristic = heuristic;
        self
    }

    /// What to do with responses that set cookies (default: do not store them).
    pub fn set_cookie(mut self, policy: SetCookiePolicy) -> Self {
        self.config.set_cookie = policy;
        self
    }

    /// The largest response body stored (default 8 MiB); larger ones pass through.
    pub fn max_object_bytes(mut self, bytes: usize) -> Self {
        self.config.max_object_bytes = bytes;
        self
    }

    /// How long a response with validators is kept past its last usable moment, so it can be
    /// revalidated with a 304 instead of fetched again (default one hour).
    pub fn keep_for_revalidation(mut self, keep: Duration) -> Self {
        self.config.keep_validated = keep;
        self
    }

    /// The name this cache gives itself in the `Cache-Status` field (RFC 9211) it writes on
    /// every response it produces (default `edgecache`). Written as an sf-token when it is
    /// one, else as an sf-string.
    ///
    /// # Panics
    ///
    /// If `name` has a character outside printable ASCII, which the field cannot carry.
    pub fn cache_status_name(mut self, name: &str) -> Self {
        let name = cache_name(name).expect("a Cache-Status name is printable ASCII");
        self.cache_status_name = Some(name);
        self
    }

    /// Leaves the `Cache-Status` field out of responses (it is on by default: it tells
    /// clients and the operators debugging them whether and why a response came from
    /// storage, and how fresh it is; turn it off where that must not be disclosed).
    pub fn without_cache_status(mut self) -> Self {
        self.cache_status_name = None;
        self
    }

    /// The number of store shards (default: the store's).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The clock for freshness and the store's expiry (default [`SystemClock`]). Its wall
    /// reading stands for "now" in `Date` and `Expires` arithmetic; its monotonic reading
    /// measures how long a response has been stored.
    pub fn clock(mut self, clock: impl Clock + Clone + 'static) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Puts `tier` behind this cache (feature `redis`): a miss here is looked up in Redis
    /// before the origin, what is stored here is written there too, and purges are broadcast
    /// to, and received from, every cache sharing the tier. Redis failures never fail a
    /// request: the cache serves as if there were no shared tier, and counts them
    /// ([`HttpCache::shared_stats`]).
    #[cfg(feature = "redis")]
    pub fn shared_tier(mut self, tier: super::shared::SharedTier) -> Self {
        self.shared = Some(tier);
        self
    }

    /// The name the cache's metrics carry in their `cache` label (feature `metrics`; default
    /// `default`). Install the recorder before [`build`](Self::build): the counters are
    /// registered there.
    #[cfg(feature = "metrics")]
    pub fn metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics_name = name.into();
        self
    }

    /// Builds the cache.
    pub fn build(self) -> HttpCache<O> {
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::HttpMetrics::new(self.metrics_name);
        let source = self.clock.unwrap_or_else(|| Box::new(SystemClock::new()));
        let mut store = Cache::builder(self.max_bytes)
            .weigher(|key: &PrimaryKey, variants: &Arc<Variants>| {
                let bytes = key.as_str().len()
                    + variants
                        .list
                        .iter()
                        .map(|stored| stored.weight())
                        .sum::<usize>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .clock(BoxedClock(source.boxed()));
        if let Some(shards) = self.shards {
            store = store.shards(shards);
        }
        let store = Arc::new(store.build());
        let purges = Arc::new(PurgeLog::default());
        #[cfg(feature = "redis")]
        let shared = self.shared.map(|tier| {
            let (store, purges) = (Arc::clone(&store), Arc::clone(&purges));
            let (marked, soft_purged) = (Arc::clone(&store), Arc::clone(&purges));
            let clock = source.boxed();
            // A record holds the body and the fields; a megabyte more than the largest body
            // covers any fields a stored response can have.
            let max_record_bytes = self.config.max_object_bytes.saturating_add(1 << 20);
            super::shared::Shared::start(
                tier,
                max_record_bytes,
                source.boxed(),
                #[cfg(feature = "metrics")]
                metrics.shared.clone(),
                move |target, mode| match target {
                    super::shared::Target::Url(uri) => {
                        let key = PrimaryKey::new(&Method::GET, uri, &HeaderMap::new());
                        purge_stored_url(&store, &purges, &key, mode, clock.now_nanos());
                    }
                    super::shared::Target::Tag(tag) => {
                        purges.purge(tag, mode, clock.now_nanos());
                    }
                },
                move || {
                    soft_purged.purge_everything_soft();
                    mark_everything_stale(&marked);
                },
            )
        });
        HttpCache {
            inner: Arc::new(Inner {
                origin: self.origin,
                store,
                flights: Flights::new(),
                purges,
                clock: source.boxed(),
                config: self.config,
                cache_status_name: self.cache_status_name,
                #[cfg(feature = "redis")]
                shared,
                #[cfg(feature = "metrics")]
                metrics,
            }),
        }
    }
}

/// A boxed clock the store can own.
#[derive(Debug)]
struct BoxedClock(Box<dyn Clock>);

impl Clock for BoxedClock {
    fn now_nanos(&self) -> u64 {
        self.0.now_nanos()
    }

    fn wall_time(&self) -> SystemTime {
        self.0.wall_time()
    }
}

/// An HTTP cache in front of an [`Origin`]: RFC 9111 for a shared cache, RFC 5861's
/// `stale-while-revalidate` and `stale-if-error`, request coalescing and purge by URL or tag.
///
/// Cheap to clone (clones share the cache). [`HttpCache::serve`] must run inside a tokio
/// runtime: fetches and background revalidations run on tasks of their own.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use infra_edgecache::http::{CacheStatus, HttpCache, Origin, OriginError};
///
/// struct Hello;
/// impl Origin for Hello {
///     async fn fetch(&self, _: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
///         Ok(Response::builder()
///             .header("cache-control", "max-age=60")
///             .body(Bytes::from_static(b"hello"))
///             .unwrap())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let cache = HttpCache::builder(Hello, 64 << 20).build();
/// let request = || Request::get("http://example.com/").body(Bytes::new()).unwrap();
/// let first = cache.serve(request()).await?;
/// assert_eq!(first.extensions().get::<CacheStatus>(), Some(&CacheStatus::Miss));
/// let second = cache.serve(request()).await?;
/// assert_eq!(second.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
/// assert_eq!(second.body(), "hello");
/// # Ok::<(), infra_edgecache::http::Error>(())
/// # }).unwrap();
/// ```
pub struct HttpCache<O> {
    inner: Arc<Inner<O>>,
}

struct Inner<O> {
    origin: O,
    store: Arc<Cache<PrimaryKey, Arc<Variants>>>,
    flights: Flights<FlightKey, FetchResult>,
    purges: Arc<PurgeLog>,
    clock: Box<dyn Clock>,
    config: Config,
    /// The cache's identifier in `Cache-Status`, serialized; `None` leaves the field out.
    cache_status_name: Option<Box<str>>,
    /// The shared tier; dropping it stops its subscriber.
    #[cfg(feature = "redis")]
    shared: Option<super::shared::Shared>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::HttpMetrics,
}

impl<O> Clone for HttpCache<O> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<O> fmt::Debug for HttpCache<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("store", &self.inner.store)
            .field("flights", &self.inner.flights)
            .finish_non_exhaustive()
    }
}

/// A stored response chosen for a request, and what may be done with it.
struct Candidate {
    stored: Arc<Stored>,
    decision: Decision,
    /// Why the request goes forward if the decision sends it there (RFC 9211 §2.2).
    forward: Forward,
}

impl<O: Origin> HttpCache<O> {
    /// Starts configuring a cache of at most `max_bytes` in front of `origin`.
    pub fn builder(origin: O, max_bytes: u64) -> HttpCacheBuilder<O> {
        HttpCacheBuilder {
            origin,
            max_bytes,
            shards: None,
            config: Config {
                fetch_timeout: Duration::from_secs(10),
                heuristic: Heuristic::default(),
                set_cookie: SetCookiePolicy::default(),
                max_object_bytes: 8 << 20,
                keep_validated: Duration::from_secs(60 * 60),
            },
            clock: None,
            cache_status_name: Some(DEFAULT_CACHE_NAME.into()),
            #[cfg(feature = "redis")]
            shared: None,
            #[cfg(feature = "metrics")]
            metrics_name: std::borrow::Cow::Borrowed(crate::metrics::DEFAULT_NAME),
        }
    }

    /// The store's counters, with the HTTP layer's (stale served, revalidations, coalesced
    /// waits).
    pub fn stats(&self) -> Stats {
        self.inner.store.stats()
    }

    /// What the shared tier has counted, if the cache has one (feature `redis`).
    #[cfg(feature = "redis")]
    pub fn shared_stats(&self) -> Option<super::shared::SharedStats> {
        self.inner.shared.as_ref().map(super::shared::Shared::stats)
    }

    /// The origin, for its owner's use.
    pub fn origin(&self) -> &O {
        &self.inner.origin
    }

    /// Answers `request`: from storage where RFC 9111 allows, else from the origin.
    ///
    /// GET and HEAD are cached, each under its own key; a HEAD is answered from the stored
    /// GET response when that may be served without the origin. Other methods go to the origin; a successful unsafe one
    /// (POST, PUT, DELETE, PATCH...) invalidates the stored responses for its URL (§4.4).
    /// Requests with `Range` pass through: this cache does not store partial content. So do
    /// requests with `If-Match` or `If-Unmodified-Since`, which only the origin may evaluate,
    /// and requests whose `Host` is not one `host[:port]` (RFC 9110 §7.2) or names another
    /// host than an absolute target, or whose target carries userinfo (an error, RFC 9110
    /// §4.2.4), which no key could be sure to name the URL of, and requests that name no host
    /// at all (origin form without `Host`), whose key would be
    /// their path alone, shared by every host.
    ///
    /// Every response it produces, but the 504 it makes up for `only-if-cached`, carries a
    /// `Cache-Status` field (RFC 9211) unless
    /// [`HttpCacheBuilder::without_cache_status`] turned it off: the members the origin's
    /// response had (caches closer to the origin), then this cache's.
    ///
    /// # Errors
    ///
    /// [`Error`] when the origin fails or times out and no stored response may stand in.
    pub async fn serve(&self, request: Request<Bytes>) -> Result<Response<Bytes>, Error> {
        let mut response = self.answer(request, true).await?;
        let member = response.extensions_mut().remove::<Member>();
        if let (Some(member), Some(name)) = (member, &self.inner.cache_status_name) {
            member.append_to(response.headers_mut(), name);
        }
        Ok(response)
    }

    /// [`serve`](Self::serve)'s answer, with its `Cache-Status` member in its extensions.
    /// `first` for the request's first round through the cache: a request that waited on a
    /// fetch whose stored response is another variant than its own goes through once more
    /// (uncounted), to coalesce behind one fetch of its variant.
    async fn answer(&self, request: Request<Bytes>, first: bool) -> Result<Response<Bytes>, Error> {
        let inner = &self.inner;
        let (parts, body) = request.into_parts();
        let key = PrimaryKey::new(&parts.method, &parts.uri, &parts.headers);
        let request_cc = request_directives(&parts.headers);

        if parts.method != Method::GET && parts.method != Method::HEAD {
            let unsafe_method = !matches!(parts.method, Method::OPTIONS | Method::TRACE);
            let response = inner
                .pass(
                    Request::from_parts(parts, body),
                    Member::forward(Forward::Method),
                )
                .await?;
            if unsafe_method
                && (response.status().is_success() || response.status().is_redirection())
            {
                inner.invalidate(&key, response.headers());
            }
            return Ok(response);
        }
        if parts.headers.contains_key(RANGE)
            || has_origin_preconditions(&parts.headers)
            || request_cc.unreadable()
            || !key.names_a_host()
            || !host_is_keyable(&parts.uri, &parts.headers)
        {
            // §5.2.1.7: a request the cache does not answer from storage still must not reach
            // the origin when the client says `only-if-cached`.
            if request_cc.only_if_cached() && !request_cc.unreadable() {
                return Ok(gateway_timeout());
            }
            return inner
                .pass(
                    Request::from_parts(parts, body),
                    Member::forward(Forward::Bypass),
                )
                .await;
        }

        // Why a HEAD could not be answered from the URL's stored GET, if one is stored.
        let mut get_unused = None;
        if parts.method == Method::HEAD {
            match inner.head_from_get(&key, &parts.headers, &request_cc) {
                Ok(response) => return Ok(response),
                Err(reason) => get_unused = reason,
            }
        }
        let looked_up = inner.lookup(&key, &parts.headers, &request_cc, first);
        let forward = match &looked_up {
            Ok(candidate) => candidate.forward,
            // Nothing under the HEAD's own key: the stored GET's reason, if there is one, says
            // more than a miss (a stale GET is `fwd=stale`, not `uri-miss`).
            Err(reason) => get_unused.unwrap_or(*reason),
        };
        let candidate = looked_up.ok();
        if let Some(candidate) = &candidate {
            match candidate.decision {
                Decision::Fresh => {
                    return Ok(respond(
                        &candidate.stored,
                        &parts.headers,
                        inner.age(&candidate.stored),
                        (CacheStatus::Hit, Member::hit()),
                    ));
                }
                Decision::StaleAccepted => {
                    inner.stale_served();
                    return Ok(respond(
                        &candidate.stored,
                        &parts.headers,
                        inner.age(&candidate.stored),
                        (CacheStatus::Stale, Member::hit()),
                    ));
                }
                Decision::StaleWhileRevalidate => {
                    // RFC 5861 §3: serve stale now; one background refresh per variant.
                    let flight_key = (
                        key.clone(),
                        Some(candidate.stored.vary.for_request(&parts.headers)),
                    );
                    if let Joined::Leader(leader) = inner.flights.join(&flight_key) {
                        inner.revalidation();
                        let origin_request = Request::from_parts(parts.clone(), body.clone());
                        tokio::spawn(Inner::fetch(
                            Arc::clone(&self.inner),
                            leader,
                            key.clone(),
                            origin_request,
                            Some(Arc::clone(&candidate.stored)),
                        ));
                    }
                    inner.stale_served();
                    return Ok(respond(
                        &candidate.stored,
                        &parts.headers,
                        inner.age(&candidate.stored),
                        (CacheStatus::Stale, Member::hit()),
                    ));
                }
                Decision::Revalidate { .. } => {}
            }
        }
        if request_cc.only_if_cached() {
            // §5.2.1.7: nothing usable without the origin.
            return Ok(gateway_timeout());
        }

        let stale = candidate.as_ref().map(|c| Arc::clone(&c.stored));
        let flight_key = (
            key.clone(),
            stale.as_ref().map(|s| s.vary.for_request(&parts.headers)),
        );
        let (flight, initiator) = match inner.flights.join(&flight_key) {
            Joined::Leader(leader) => {
                // Re-check: a flight that ended between the lookup and the join stored its
                // response already.
                if let Ok(found) = inner.lookup(&key, &parts.headers, &request_cc, false)
                    && found.decision == Decision::Fresh
                {
                    leader.complete(Ok(Fetch {
                        stored: Arc::clone(&found.stored),
                        personal: Vec::new(),
                        kept: true,
                        kept_out_by_request: false,
                    }));
                    return Ok(respond(
                        &found.stored,
                        &parts.headers,
                        inner.age(&found.stored),
                        (CacheStatus::Hit, Member::hit()),
                    ));
                }
                if stale.is_some() {
                    inner.revalidation();
                }
                let flight = leader.flight();
                let origin_request = Request::from_parts(parts.clone(), body.clone());
                tokio::spawn(Inner::fetch(
                    Arc::clone(&self.inner),
                    leader,
                    key.clone(),
                    origin_request,
                    stale.clone(),
                ));
                (flight, true)
            }
            Joined::Follower(flight) => {
                // A request that waited once and goes through the cache again to wait on a
                // fetch of its own variant is still one request that waited.
                if first {
                    inner.coalesced_wait();
                }
                (flight, false)
            }
        };

        let timeout = inner.config.fetch_timeout;
        let outcome = match tokio::time::timeout(timeout, Flight::wait(flight)).await {
            Ok(Outcome::Done(result)) => result,
            Ok(Outcome::Abandoned) => Err(Error::FetchAbandoned),
            Err(_) => Err(Error::Timeout(timeout)),
        };
        let stale_if_error = candidate.as_ref().is_some_and(|c| {
            matches!(
                c.decision,
                Decision::Revalidate {
                    stale_if_error: true
                }
            )
        });
        let forwarded = if initiator {
            Member::forward(forward)
        } else {
            Member::forward(forward).collapsed(true)
        };
        // A fetched response this request gets as a plain miss, not as one stored for it.
        let fetched_miss = |fetched: &Stored, forwarded: Member| {
            respond(
                fetched,
                &parts.headers,
                inner.age(fetched),
                (
                    CacheStatus::Miss,
                    forwarded.forward_status(Some(fetched.forward_status())),
                ),
            )
        };
        match outcome {
            Ok(Fetch {
                stored: fetched, ..
            }) if stale_if_error && is_error_status(fetched.status) => {
                inner.stale_served();
                let member = forwarded
                    .forward_status(Some(fetched.status))
                    .stale_if_error();
                let stale = candidate.map(|c| c.stored).unwrap_or(fetched);
                Ok(respond(
                    &stale,
                    &parts.headers,
                    inner.age(&stale),
                    (CacheStatus::Stale, member),
                ))
            }
            Ok(Fetch {
                stored: fetched,
                personal,
                kept,
                ..
            }) if fetched.shareable && fetched.vary.matches(&parts.headers) => {
                let status = if fetched.revalidated {
                    CacheStatus::Revalidated
                } else if fetched.from_shared {
                    CacheStatus::SharedHit
                } else {
                    CacheStatus::Miss
                };
                let member = if fetched.from_shared {
                    // The shared tier is this cache's second level, not a hop towards the
                    // origin, which was not asked: a hit (RFC 9211 §2.1).
                    Member::hit().read_from_shared_tier()
                } else {
                    forwarded
                        .forward_status(Some(fetched.forward_status()))
                        .stored(kept)
                };
                let mut response = respond(
                    &fetched,
                    &parts.headers,
                    inner.age(&fetched),
                    (status, member),
                );
                if initiator {
                    give_personal_fields(&mut response, personal);
                } else {
                    withhold_no_cache_fields(response.headers_mut(), &fetched);
                }
                Ok(response)
            }
            Ok(Fetch {
                stored: fetched,
                personal,
                ..
            }) if initiator => {
                let mut response = fetched_miss(&fetched, forwarded);
                give_personal_fields(&mut response, personal);
                Ok(response)
            }
            // An error answer goes to the waiters too: asking a failing origin once per waiter
            // would pile onto it. Not one meant for its requester alone, nor for other values
            // of its `Vary` fields.
            Ok(Fetch {
                stored: fetched, ..
            }) if is_error_status(fetched.status)
                && fetched.impersonal
                && fetched.vary.matches(&parts.headers) =>
            {
                let mut response = fetched_miss(&fetched, forwarded);
                withhold_no_cache_fields(response.headers_mut(), &fetched);
                Ok(response)
            }
            // A variant stored for other values of its `Vary` fields, or a response only its
            // requester's `no-store` or `Authorization` kept out of storage: the waiters join
            // (or lead) a fetch of their own, stored for them all, rather than each asking the
            // origin outside the cache. (Not a waiter whose own request has those fields: a
            // fetch it shared would not be stored either, and waiting on one costs it a round.)
            Ok(Fetch {
                stored: fetched,
                kept_out_by_request,
                ..
            }) if first
                && !initiator
                && (fetched.shareable
                    || (kept_out_by_request
                        && !request_cc.no_store()
                        && !parts.headers.contains_key(AUTHORIZATION))) =>
            {
                Box::pin(self.answer(Request::from_parts(parts, body), false)).await
            }
            // Another request's response that this one may not reuse: fetch for itself.
            Ok(_) => {
                let member = Member::forward(forward).collapsed(false);
                inner.pass(Request::from_parts(parts, body), member).await
            }
            Err(error) => match candidate {
                Some(c) if stale_if_error => {
                    inner.stale_served();
                    Ok(respond(
                        &c.stored,
                        &parts.headers,
                        inner.age(&c.stored),
                        (CacheStatus::Stale, forwarded.stale_if_error()),
                    ))
                }
                _ => Err(error),
            },
        }
    }

    /// Purges the stored responses for `uri` (GET and HEAD, every variant). Returns whether
    /// anything was stored for it.
    ///
    /// `uri` must be absolute, with the host the requests named (`http://example.com/path`):
    /// every stored response is keyed by its host (a request in origin form by its `Host`,
    /// and a request naming no host is not stored), so a path alone names nothing. The scheme
    /// is not part of the key: `http://` and `https://` purge the same responses.
    ///
    /// With a shared tier (feature `redis`) the URL's record is also deleted from Redis and the
    /// purge published to the other caches; that part runs on tokio's blocking pool when
    /// called inside a runtime, and before returning otherwise.
    ///
    /// # Errors
    ///
    /// [`PurgeError::NoHost`] if `uri` names no host (`/a.css`); nothing is purged.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http::{Request, Response, Uri};
    /// # use infra_edgecache::http::{HttpCache, Origin, OriginError, PurgeError, PurgeMode};
    /// # struct Assets;
    /// # impl Origin for Assets {
    /// #     async fn fetch(&self, _: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
    /// #         Ok(Response::builder().header("cache-control", "max-age=60").body(Bytes::new()).unwrap())
    /// #     }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let cache = HttpCache::builder(Assets, 64 << 20).build();
    /// cache.serve(Request::get("http://example.com/a.css").body(Bytes::new()).unwrap()).await?;
    /// assert_eq!(cache.purge_url(&Uri::from_static("/a.css"), PurgeMode::Hard), Err(PurgeError::NoHost));
    /// assert_eq!(cache.purge_url(&Uri::from_static("http://example.com/a.css"), PurgeMode::Hard), Ok(true));
    /// # Ok::<(), infra_edgecache::http::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn purge_url(&self, uri: &http::Uri, mode: PurgeMode) -> Result<bool, PurgeError> {
        let key = PrimaryKey::new(&Method::GET, uri, &HeaderMap::new());
        if !key.names_a_host() {
            return Err(PurgeError::NoHost);
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.inner.shared {
            shared.publish(&super::shared::Target::Url(uri.clone()), mode);
        }
        let now = self.inner.clock.now_nanos();
        Ok(purge_stored_url(
            &self.inner.store,
            &self.inner.purges,
            &key,
            mode,
            now,
        ))
    }

    /// Purges every response stored with `tag` in its `Surrogate-Key` field, fetched before
    /// this call (including fetches still in progress).
    ///
    /// With a shared tier (feature `redis`) the records written with `tag` are also deleted
    /// from Redis and the purge published to the other caches, as for
    /// [`HttpCache::purge_url`].
    pub fn purge_tag(&self, tag: &str, mode: PurgeMode) {
        self.inner
            .purges
            .purge(tag, mode, self.inner.clock.now_nanos());
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.inner.shared {
            shared.publish(&super::shared::Target::Tag(tag.into()), mode);
        }
    }
}

/// Purges the responses stored in `store` for the target of `key` (GET and HEAD, whatever
/// `key`'s method), and logs the purge in `purges`, at monotonic reading `now`, so that
/// fetches for it in progress do not store their answers unpurged; whether any were stored.
fn purge_stored_url(
    store: &Cache<PrimaryKey, Arc<Variants>>,
    purges: &PurgeLog,
    key: &PrimaryKey,
    mode: PurgeMode,
    now: u64,
) -> bool {
    purges.purge_url(key.target(), mode, now, || {
        let mut found = false;
        for method in [Method::GET, Method::HEAD] {
            let key = key.with_method(&method);
            match mode {
                PurgeMode::Hard => found |= store.remove(&key).is_some(),
                PurgeMode::Soft => {
                    if let Some(variants) = store.peek(&key) {
                        found = true;
                        for stored in &variants.list {
                            stored.marked_stale.store(true, Ordering::Release);
                        }
                    }
                }
            }
        }
        found
    })
}

/// Marks every response `store` holds stale, as a soft purge of each would: the purges of
/// the shared tier's subscriber that were lost while it had no subscription may have covered
/// any of them, so each is validated with the origin (not read back from the shared tier,
/// where it may have been written again after a purge) before its next use. What is still
/// being fetched is reached through the purge log instead
/// ([`PurgeLog::purge_everything_soft`]).
#[cfg(feature = "redis")]
fn mark_everything_stale(store: &Cache<PrimaryKey, Arc<Variants>>) {
    store.retain(|_, variants| {
        for stored in &variants.list {
            stored.marked_stale.store(true, Ordering::Release);
        }
        true
    });
}

impl<O: Origin> Inner<O> {
    /// §4.4: after a successful unsafe request for `key`, invalidates what is stored for its
    /// target and for the `Location` and `Content-Location` URIs of `response_headers` on the
    /// same host. A hard purge by URL, through the purge log, so a GET fetch begun before
    /// does not store its answer afterwards; with a shared tier, published as one too, so the
    /// record in Redis, which this cache would otherwise read back, goes with it.
    fn invalidate(&self, key: &PrimaryKey, response_headers: &HeaderMap) {
        let mut targets = vec![key.clone()];
        for value in [LOCATION, CONTENT_LOCATION]
            .iter()
            .flat_map(|name| response_headers.get_all(name))
        {
            if let Some(other) = key.same_host_reference(value.as_bytes())
                && !targets.contains(&other)
            {
                targets.push(other);
            }
        }
        for target in &targets {
            #[cfg(feature = "redis")]
            if let Some(shared) = &self.shared
                // A target without a host (a request in origin form without `Host`) has no
                // URI to publish; it is purged here only.
                && let Ok(uri) = http::Uri::try_from(format!("http://{}", target.target()))
            {
                shared.publish(&super::shared::Target::Url(uri), PurgeMode::Hard);
            }
            let now = self.clock.now_nanos();
            purge_stored_url(&self.store, &self.purges, target, PurgeMode::Hard, now);
        }
    }

    /// Counts a stale response served.
    fn stale_served(&self) {
        self.store.record_stale_served();
        #[cfg(feature = "metrics")]
        self.metrics.stale_served();
    }

    /// Counts a revalidation sent to the origin.
    fn revalidation(&self) {
        self.store.record_revalidation();
        #[cfg(feature = "metrics")]
        self.metrics.revalidation();
    }

    /// Counts a request that waited for another's fetch.
    fn coalesced_wait(&self) {
        self.store.record_coalesced_wait();
        #[cfg(feature = "metrics")]
        self.metrics.coalesced_wait();
    }

    /// The resident age of a stored response now (§4.2.3: corrected initial age plus resident
    /// time, from the monotonic clock).
    fn age(&self, stored: &Stored) -> Duration {
        stored
            .freshness
            .initial_age()
            .saturating_add(self.clock.elapsed_since(stored.stored_at))
    }

    /// The stored response this request selects, if any survives the purges, else why there
    /// is none (nothing stored for the URL, or only other variants). `counted` lookups count
    /// as the store's hits and misses and inform its policy; a re-check does not count twice.
    fn lookup(
        &self,
        key: &PrimaryKey,
        headers: &HeaderMap,
        request_cc: &CacheControl,
        counted: bool,
    ) -> Result<Candidate, Forward> {
        let variants = if counted {
            let found = self.store.get(key);
            #[cfg(feature = "metrics")]
            self.metrics.lookup(found.is_some());
            found
        } else {
            self.store.peek(key)
        };
        let stored = variants
            .ok_or(Forward::UriMiss)?
            .list
            .iter()
            .rev()
            .find(|stored| stored.vary.matches(headers))
            .cloned()
            .ok_or(Forward::VaryMiss)?;
        let purged = match self.purges.check(stored.generation, &stored.tags) {
            Purged::Hard => {
                // A purge by tag cannot find what it removes in the store: it goes when a
                // lookup meets it, so its bytes do not count against the budget until it
                // expires.
                self.drop_superseded(key, &stored, self.purges.generation());
                return Err(Forward::UriMiss);
            }
            Purged::Soft => true,
            Purged::No => stored.marked_stale.load(Ordering::Acquire),
        };
        let age = self.age(&stored);
        let decision = match stored.freshness.decide(age, request_cc) {
            // A soft purge makes the response stale: it must be revalidated, and may stand in
            // only for an origin error.
            Decision::Fresh | Decision::StaleAccepted | Decision::StaleWhileRevalidate
                if purged =>
            {
                Decision::Revalidate {
                    stale_if_error: stored.freshness.allows_stale_if_error(age, request_cc),
                }
            }
            decision => decision,
        };
        // Forwarded for the request's sake only if, without its directives, the stored
        // response would have been served (RFC 9211 §2.2 `request`); else it needed validating.
        let usable_unasked =
            stored.freshness.decide(age, &CacheControl::default()) == Decision::Fresh;
        let forward = if usable_unasked && !purged {
            Forward::Request
        } else {
            Forward::Stale
        };
        Ok(Candidate {
            stored,
            decision,
            forward,
        })
    }

    /// The answer to a HEAD from the stored GET response of its URL, when that response may
    /// be served without the origin (RFC 9110 §9.3.2, RFC 9111 §4: the GET's fields, no
    /// body). A GET response only within `stale-while-revalidate` is not used: its refresh
    /// would have to be a GET, so HEAD takes its own path (its own key, asked as HEAD), which
    /// never stores its bodiless answer as the GET's.
    ///
    /// # Errors
    ///
    /// Why the stored GET response that the request selects may not answer it (`Forward`'s
    /// `stale` or `request`), or `None` if it selects none.
    fn head_from_get(
        &self,
        head_key: &PrimaryKey,
        headers: &HeaderMap,
        request_cc: &CacheControl,
    ) -> Result<Response<Bytes>, Option<Forward>> {
        let get_key = head_key.with_method(&Method::GET);
        let found = self
            .lookup(&get_key, headers, request_cc, false)
            .map_err(|_| None)?;
        let status = match found.decision {
            Decision::Fresh => CacheStatus::Hit,
            Decision::StaleAccepted => CacheStatus::Stale,
            // RFC 9111 §5.2.1.7 asks for a stored response consistent with the request's other
            // constraints, and RFC 5861 §3 lets one inside its stale-while-revalidate window be
            // served stale: a 504 would refuse what a GET of the same URL gets. A HEAD starts
            // no refresh of the GET (it cannot ask the origin for a body); the next GET does.
            Decision::StaleWhileRevalidate if request_cc.only_if_cached() => CacheStatus::Stale,
            _ => return Err(Some(found.forward)),
        };
        self.count_hit(&get_key);
        if status == CacheStatus::Stale {
            self.stale_served();
        }
        let age = self.age(&found.stored);
        let mut response = respond(&found.stored, headers, age, (status, Member::hit()));
        *response.body_mut() = Bytes::new();
        Ok(response)
    }

    /// Counts a hit on `key` found by an uncounted lookup, and tells the store's policy.
    fn count_hit(&self, key: &PrimaryKey) {
        #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
        let found = self.store.get(key).is_some();
        #[cfg(feature = "metrics")]
        self.metrics.lookup(found);
    }

    /// Sends a request to the origin outside the cache; `member` says why.
    async fn pass(
        &self,
        request: Request<Bytes>,
        member: Member,
    ) -> Result<Response<Bytes>, Error> {
        let timeout = self.config.fetch_timeout;
        let mut response = match tokio::time::timeout(timeout, self.origin.fetch(request)).await {
            Ok(result) => result?,
            Err(_) => return Err(Error::Timeout(timeout)),
        };
        date_if_undated(response.headers_mut(), self.clock.wall_time());
        response.extensions_mut().insert(CacheStatus::Pass);
        let member = member.forward_status(Some(response.status()));
        response.extensions_mut().insert(member);
        Ok(response)
    }

    /// The leader's fetch: asks the origin (conditionally when revalidating), stores what it
    /// may, and completes the flight.
    async fn fetch(
        this: Arc<Self>,
        leader: Leader<FlightKey, FetchResult>,
        key: PrimaryKey,
        request: Request<Bytes>,
        stale: Option<Arc<Stored>>,
    ) {
        let generation = this.purges.generation();
        let (mut parts, body) = request.into_parts();
        let client_headers = parts.headers.clone();
        // The client's own conditions are answered from what the cache holds; the origin gets
        // the cache's validators instead.
        for name in [IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_RANGE] {
            parts.headers.remove(name);
        }
        let unconditional = Request::from_parts(parts.clone(), body.clone());
        // The stored response this fetch revalidates, whatever the origin's answer.
        let revalidated = stale.clone();
        let mut stale = stale;
        if let Some(stale) = &stale {
            for (name, value) in &conditional_headers(&stale.headers) {
                parts.headers.insert(name, value.clone());
            }
        }
        let method = parts.method.clone();
        // One timeout for the whole fetch, the shared tier's read and the unconditional
        // request below included: the fetch, and the flight its waiters joined, end within it.
        // Measured from the start rather than as a deadline, which a timeout past the clock's
        // range (`Duration::MAX`, no timeout) could not be.
        let timeout = this.config.fetch_timeout;
        let started = tokio::time::Instant::now();
        // A response marked stale (a soft purge, a HEAD answer showing it outdated) may have
        // a copy in the shared tier that does not know it: only the origin can replace it.
        #[cfg(feature = "redis")]
        let marked_stale = stale
            .as_ref()
            .is_some_and(|old| old.marked_stale.load(Ordering::Acquire));
        // The read also takes the shared tier's purge epoch, which the write of this fetch's
        // answer hands back, so Redis refuses it if a purge came in between.
        #[cfg(feature = "redis")]
        let read = match &this.shared {
            Some(shared) => Some(shared.read(&key, !marked_stale).await),
            None => None,
        };
        #[cfg(feature = "redis")]
        let shared_epoch = read.as_ref().and_then(|read| read.epoch);
        #[cfg(feature = "redis")]
        if let Some((record, kept)) = read.and_then(|read| read.record)
            && let Some(found) =
                this.use_shared_record(&key, &client_headers, generation, record, kept)
        {
            leader.complete(Ok(Fetch {
                stored: found,
                personal: Vec::new(),
                kept: true,
                kept_out_by_request: false,
            }));
            return;
        }
        // The origin's answer begins now: purges that reached this cache during the shared
        // tier's read came before it.
        #[cfg(feature = "redis")]
        let generation = this.purges.generation();
        let mut request_time = this.clock.wall_time();
        let left = timeout.saturating_sub(started.elapsed());
        let mut answer =
            tokio::time::timeout(left, this.origin.fetch(Request::from_parts(parts, body))).await;
        // §4.3.4: a 304 that names another representation updates nothing, and the client did
        // not ask a conditional question: ask again, unconditionally.
        if let (Ok(Ok(response)), Some(old)) = (&answer, &stale)
            && response.status() == StatusCode::NOT_MODIFIED
            && !validates(&old.headers, response.headers())
        {
            stale = None;
            request_time = this.clock.wall_time();
            let left = timeout.saturating_sub(started.elapsed());
            answer = tokio::time::timeout(left, this.origin.fetch(unconditional)).await;
        }
        let result = match answer {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(error)) => Err(Error::Origin(error)),
            Ok(Ok(response)) => {
                let exchange = Exchange {
                    request_time,
                    response_time: this.clock.wall_time(),
                };
                let request_cc = request_directives(&client_headers);
                let stale_covers_errors = stale.as_ref().is_some_and(|old| {
                    old.freshness
                        .allows_stale_if_error(this.age(old), &request_cc)
                });
                let context = FetchContext {
                    key: &key,
                    method: &method,
                    request_cc,
                    request_headers: &client_headers,
                    exchange,
                    generation,
                    stale_covers_errors,
                    #[cfg(feature = "redis")]
                    shared_epoch,
                };
                Ok(this.absorb(&context, response, stale.as_ref()))
            }
        };
        if let (Some(old), Ok(answer)) = (&revalidated, &result)
            && request_may_store(&client_headers, &request_directives(&client_headers))
            && !answer.kept
            && !is_error_status(answer.stored.status)
        {
            this.drop_superseded(&key, old, generation);
        }
        leader.complete(result);
    }

    /// Turns an origin response into a stored (or pass-through) response, storing it when
    /// allowed; a 304 that validates the stale response freshens it (§4.3.4).
    fn absorb(
        &self,
        context: &FetchContext<'_>,
        response: Response<Bytes>,
        stale: Option<&Arc<Stored>>,
    ) -> Fetch {
        let (mut parts, body) = response.into_parts();
        date_if_undated(&mut parts.headers, context.exchange.response_time);
        if *context.method == Method::HEAD && parts.status == StatusCode::OK {
            self.update_gets_from_head(context, &parts.headers);
        }
        if parts.status == StatusCode::NOT_MODIFIED
            && let Some(stale) = stale
            && validates(&stale.headers, &parts.headers)
        {
            let mut headers = stale.headers.clone();
            merge_not_modified(&mut headers, &parts.headers);
            let merged = Fetched {
                status: stale.status,
                headers,
                body: stale.body.clone(),
                revalidated: true,
                merged_into: Some(Arc::clone(stale)),
            };
            return self.keep(context, merged);
        }
        let fetched = Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
            revalidated: false,
            merged_into: None,
        };
        self.keep(context, fetched)
    }

    /// §4.3.5: a 200 to a HEAD says what a GET of its URL would bring now. Each stored GET
    /// response the request could have selected is updated with the HEAD answer's fields, as
    /// a 304 would update it (§3.2), when it is a 200 too and their `ETag`, `Last-Modified`
    /// and `Content-Length` agree; otherwise it is marked stale, so it is validated before it
    /// is used again. An update the cache may not store (the HEAD answer says `no-store`,
    /// `private`, `Vary: *`...) drops the stored GET, as a revalidation answered so would,
    /// unless only the HEAD request's own `no-store` or `Authorization` kept it out.
    fn update_gets_from_head(&self, context: &FetchContext<'_>, head_headers: &HeaderMap) {
        let get_key = context.key.with_method(&Method::GET);
        let Some(variants) = self.store.peek(&get_key) else {
            return;
        };
        let get_context = FetchContext {
            key: &get_key,
            method: &Method::GET,
            request_cc: context.request_cc.clone(),
            stale_covers_errors: false,
            ..*context
        };
        for stored in &variants.list {
            // A tag purge leaves what it removes in the store until a lookup reclaims it; its
            // update would carry the HEAD's newer generation and bring it back unpurged.
            if !stored.vary.matches(context.request_headers)
                || self.purges.check(stored.generation, &stored.tags) == Purged::Hard
            {
                continue;
            }
            // A stored error or redirect the HEAD's 200 contradicts is outdated whatever its
            // fields.
            if stored.status == StatusCode::OK && same_representation(&stored.headers, head_headers)
            {
                let mut headers = stored.headers.clone();
                merge_not_modified(&mut headers, head_headers);
                let updated = Fetched {
                    status: stored.status,
                    headers,
                    body: stored.body.clone(),
                    revalidated: true,
                    merged_into: Some(Arc::clone(stored)),
                };
                let kept = self.keep(&get_context, updated).kept;
                if !kept && request_may_store(context.request_headers, &context.request_cc) {
                    self.drop_superseded(&get_key, stored, context.generation);
                    #[cfg(feature = "redis")]
                    self.refuse_older_shared_records(&get_key);
                }
            } else {
                stored.marked_stale.store(true, Ordering::Release);
            }
        }
    }

    /// Has a read of the shared tier refuse the records of `key`'s URL generated until now: a
    /// GET dropped while fresh still has its copy in Redis, fresh too, which the next miss
    /// would read back in its place. Recorded as a soft purge of the URL
    /// here only: nothing stored is removed or marked by it, and a fetch of the URL already
    /// under way stores its answer marked stale, to be validated before its use.
    #[cfg(feature = "redis")]
    fn refuse_older_shared_records(&self, key: &PrimaryKey) {
        if self.shared.is_some() {
            let now = self.clock.now_nanos();
            self.purges
                .purge_url(key.target(), PurgeMode::Soft, now, || ());
        }
    }

    /// Builds the stored form of a response and stores it if RFC 9111 and this cache's
    /// policy allow.
    fn keep(&self, context: &FetchContext<'_>, fetched: Fetched) -> Fetch {
        let mut headers = without_hop_by_hop(&fetched.headers);
        let response_cc = CacheControl::from_headers(&headers);
        let allowed = storability(
            RequestFacts {
                method: context.method,
                headers: context.request_headers,
                cache_control: &context.request_cc,
            },
            ResponseFacts {
                status: fetched.status,
                headers: &headers,
                cache_control: &response_cc,
            },
            self.config.set_cookie,
        );
        let vary = VaryKey::new(&headers, context.request_headers);
        let tags = parse_tags(
            headers
                .get_all("surrogate-key")
                .iter()
                .map(HeaderValue::as_bytes),
        );
        let freshness = Freshness::of_response(
            fetched.status,
            &headers,
            &response_cc,
            context.exchange,
            self.config.heuristic,
        );
        // Everything but RFC 9111's rules, which `allowed` holds.
        let fits = !(context.stale_covers_errors && is_error_status(fetched.status))
            && vary.is_some()
            && tags.is_some()
            && fetched.body.len() <= self.config.max_object_bytes;
        let storable = allowed.is_ok() && fits;
        // `Set-Cookie` is stored only under `SetCookiePolicy::StripAndStore` or
        // `private="set-cookie"`, and then without its values, as are the fields `private`
        // names (§5.2.2.7) and those of the proxy the origin was reached through, which are
        // never stored (§3.1).
        let personal_names: Vec<HeaderName> =
            [SET_COOKIE, PROXY_AUTHENTICATE, PROXY_AUTHENTICATION_INFO]
                .into_iter()
                .chain(response_cc.private_fields().iter().cloned())
                .collect();
        let personal = if storable {
            take_fields(&mut headers, &personal_names)
        } else {
            Vec::new()
        };
        let impersonal = matches!(allowed, Ok(()) | Err(NotStorable::NoFreshnessInformation))
            && vary.is_some()
            && !personal_names.iter().any(|name| headers.contains_key(name));
        let withheld = response_cc.no_cache_fields().into();
        let mut stored = Stored {
            status: fetched.status,
            headers,
            body: fetched.body,
            vary: vary.unwrap_or_default(),
            freshness,
            stored_at: self.clock.now_nanos(),
            generation: context.generation,
            tags: tags.unwrap_or_default(),
            marked_stale: AtomicBool::new(false),
            shareable: false,
            impersonal,
            revalidated: fetched.revalidated,
            from_shared: false,
            withheld,
        };
        let ttl = self.keep_for(&stored);
        if !storable || ttl.is_zero() {
            // Asked again as a request without `no-store` or `Authorization` would be.
            let kept_out_by_request = allowed.is_err()
                && fits
                && !ttl.is_zero()
                && storability(
                    RequestFacts {
                        method: context.method,
                        headers: &HeaderMap::new(),
                        cache_control: &CacheControl::default(),
                    },
                    ResponseFacts {
                        status: stored.status,
                        headers: &stored.headers,
                        cache_control: &response_cc,
                    },
                    self.config.set_cookie,
                )
                .is_ok();
            return Fetch {
                stored: Arc::new(stored),
                personal,
                kept: false,
                kept_out_by_request,
            };
        }
        stored.shareable = true;
        let stored = Arc::new(stored);
        let (purged, admitted) =
            self.store_variant(context.key, &stored, ttl, fetched.merged_into.as_ref());
        // What a purge by URL reached during the fetch is not shared either.
        if purged == Purged::No {
            #[cfg(feature = "redis")]
            self.write_shared(context.key, &stored, context.shared_epoch);
        }
        Fetch {
            stored,
            personal,
            kept: purged != Purged::Hard && admitted,
            kept_out_by_request: false,
        }
    }

    /// Stores `stored` as the variant of `key` it selects, replacing the same variant and
    /// keeping the others stored under the same `Vary` names, newest last, for as long as the
    /// longest-lived needs (those stored under other names go: see
    /// [`insert_variant`](Self::insert_variant)); unless a purge
    /// of its URL reached the cache after its fetch began: a hard one stores nothing, a soft
    /// one stores it marked stale. A stored response freshened into `stored` (`merged_into`)
    /// that has left the store, or that a purge by tag removed, counts as purged hard, whenever
    /// that happened: the purge came after the request chose it, and perhaps before its fetch
    /// began. Returns what such purges did, and whether the store took the entry (it refuses
    /// one heavier than a shard's share).
    fn store_variant(
        &self,
        key: &PrimaryKey,
        stored: &Arc<Stored>,
        ttl: Duration,
        merged_into: Option<&Arc<Stored>>,
    ) -> (Purged, bool) {
        let (purged, evicted) = self
            .purges
            .store_url(key.target(), stored.generation, |purged| {
                let purged = if merged_into.is_some_and(|old| self.no_longer_stored(key, old)) {
                    Purged::Hard
                } else {
                    purged
                };
                (purged, self.insert_unless_purged(key, stored, ttl, purged))
            });
        self.count_stored(stored, evicted);
        (purged, evicted.is_some_and(|(held, _)| held))
    }

    /// Whether `old`, stored for `key`, is gone: removed from the store (a hard purge of its
    /// URL, an eviction, a newer answer in its place) or purged hard by one of its tags.
    fn no_longer_stored(&self, key: &PrimaryKey, old: &Arc<Stored>) -> bool {
        self.purges.check(old.generation, &old.tags) == Purged::Hard
            || !self
                .store
                .peek(key)
                .is_some_and(|variants| variants.list.iter().any(|stored| Arc::ptr_eq(stored, old)))
    }

    /// [`store_variant`](Self::store_variant)'s work under the URL log's lock, given what the
    /// purges of its URL did to `stored`'s fetch: nothing for a hard purge, else
    /// [`insert_variant`](Self::insert_variant)'s result.
    fn insert_unless_purged(
        &self,
        key: &PrimaryKey,
        stored: &Arc<Stored>,
        ttl: Duration,
        purged: Purged,
    ) -> Option<(bool, u64)> {
        match purged {
            Purged::Hard => None,
            Purged::Soft => {
                stored.marked_stale.store(true, Ordering::Release);
                Some(self.insert_variant(key, stored, ttl))
            }
            Purged::No => Some(self.insert_variant(key, stored, ttl)),
        }
    }

    /// Counts in the metrics a response [`insert_unless_purged`](Self::insert_unless_purged)
    /// stored, and the entries the policy evicted (the response itself, if it was turned
    /// away at once, is an eviction and not a response stored).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn count_stored(&self, stored: &Stored, evicted: Option<(bool, u64)>) {
        #[cfg(feature = "metrics")]
        match evicted {
            Some((true, evicted)) => self.metrics.stored(stored.weight(), evicted),
            Some((false, evicted)) => self.metrics.evicted(evicted),
            None => {}
        }
    }

    /// [`store_variant`](Self::store_variant)'s insert: whether the store holds the entry
    /// afterwards (not if it refused it, or its policy let it go at once), and the number of
    /// entries the policy evicted.
    ///
    /// One set of `Vary` names per URL, the latest stored: a response stored under other
    /// names (none, when the origin has just started to vary) says it suits requests the
    /// origin's latest answer says it may not, and would be selected for them (RFC 9111
    /// §4.1); it is dropped, which also frees its bytes at once.
    fn insert_variant(&self, key: &PrimaryKey, stored: &Arc<Stored>, ttl: Duration) -> (bool, u64) {
        let mut list: Vec<Arc<Stored>> = self
            .store
            .peek(key)
            .map(|variants| {
                variants
                    .list
                    .iter()
                    .filter(|other| {
                        other.vary.names_the_same_fields(&stored.vary) && other.vary != stored.vary
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if list.len() >= MAX_VARIANTS {
            list.remove(0);
        }
        list.push(Arc::clone(stored));
        let ttl = list
            .iter()
            .map(|variant| self.keep_for(variant))
            .max()
            .unwrap_or(ttl);
        self.store
            .insert_with_ttl_evicting(key.clone(), Arc::new(Variants { list }), ttl)
    }

    /// Removes `old` from the variants stored for `key`: the origin answered its revalidation
    /// with a representation this cache did not store (`no-store`, `private`, too large...),
    /// so `old` is outdated and must not come back through `max-stale` or `stale-if-error`
    /// (RFC 9111 §4.3.3, §4.3.4); or a purge by tag removed it, which left it in the store.
    /// Under the URL log's lock, as every store of a variant is.
    fn drop_superseded(&self, key: &PrimaryKey, old: &Arc<Stored>, generation: u64) {
        self.purges.store_url(key.target(), generation, |_| {
            let Some(variants) = self.store.peek(key) else {
                return;
            };
            if !variants.list.iter().any(|stored| Arc::ptr_eq(stored, old)) {
                return;
            }
            let list: Vec<Arc<Stored>> = variants
                .list
                .iter()
                .filter(|stored| !Arc::ptr_eq(stored, old))
                .cloned()
                .collect();
            let ttl = list.iter().map(|variant| self.keep_for(variant)).max();
            match ttl {
                Some(ttl) if !ttl.is_zero() => {
                    // Upkeep, not a store of a response: not counted as an update (nor an
                    // access), so `Stats::updates` counts the responses stored.
                    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
                    let evicted =
                        self.store
                            .replace_uncounted(key, Arc::new(Variants { list }), ttl);
                    #[cfg(feature = "metrics")]
                    if let Some(evicted) = evicted {
                        self.metrics.evicted(evicted);
                    }
                }
                _ => {
                    self.store.remove(key);
                }
            }
        });
    }

    /// The shared tier's record of `key`, kept there for `kept`, if it is for this request's
    /// variant, not purged here, fresh enough for the request, and no older than the
    /// responses stored here under other `Vary` names: stored here and returned.
    #[cfg(feature = "redis")]
    fn use_shared_record(
        &self,
        key: &PrimaryKey,
        request_headers: &HeaderMap,
        generation: u64,
        record: super::record::Record,
        kept: Duration,
    ) -> Option<Arc<Stored>> {
        use super::shared::Event;

        let shared = self.shared.as_ref()?;
        let freshness = record
            .freshness
            .with_initial_age(record.freshness.initial_age().saturating_add(kept));
        let directives = request_directives(request_headers);
        let age = u64::try_from(freshness.initial_age().as_nanos()).unwrap_or(u64::MAX);
        let generated = self.clock.now_nanos().saturating_sub(age);
        let usable = record.vary.matches(request_headers)
            && self.purges.check(generation, &record.tags) == Purged::No
            && !self
                .purges
                .predates_purge(key.target(), &record.tags, generated)
            && freshness.decide(freshness.initial_age(), &directives) == Decision::Fresh;
        if !usable {
            shared.count(Event::Miss);
            return None;
        }
        let withheld = CacheControl::from_headers(&record.headers)
            .no_cache_fields()
            .into();
        let stored = Arc::new(Stored {
            status: record.status,
            headers: record.headers,
            body: record.body,
            vary: record.vary,
            freshness,
            stored_at: self.clock.now_nanos(),
            generation,
            tags: record.tags,
            marked_stale: AtomicBool::new(false),
            shareable: true,
            impersonal: true,
            revalidated: false,
            from_shared: true,
            withheld,
        });
        // A `no-store` request's response is served, not kept (RFC 9111 §5.2.1.5).
        let ttl = if directives.no_store() {
            Duration::ZERO
        } else {
            self.keep_for(&stored)
        };
        // Under the URL log's lock, as every store of a variant is: a response stored here
        // meanwhile under other `Vary` names is seen before this record could replace it.
        let stored_here = self.purges.store_url(key.target(), generation, |purged| {
            // RFC 9111 §4.1 uses the most recent of the responses that could answer a
            // request, by `Date`. A newer one stored here under other `Vary` names shows
            // the origin now selects on other fields than this record says it suits (why
            // `insert_variant` drops older responses under other names), so the record
            // could answer a selection the origin tells apart: it is a miss, the origin
            // settles which response applies (as §4.1 allows), and the URL's newer
            // variants stay.
            let newer_names = self.store.peek(key).is_some_and(|variants| {
                predates_other_vary_names(
                    &stored.vary,
                    &stored.headers,
                    variants
                        .list
                        .iter()
                        .map(|other| (&other.vary, &other.headers)),
                )
            });
            if newer_names {
                return None;
            }
            let evicted = if ttl.is_zero() {
                None
            } else {
                self.insert_unless_purged(key, &stored, ttl, purged)
            };
            Some((purged, evicted))
        });
        let Some((purged, evicted)) = stored_here else {
            shared.count(Event::Miss);
            return None;
        };
        self.count_stored(&stored, evicted);
        if !ttl.is_zero() && purged != Purged::No {
            // A purge of its URL reached this cache after the read began: the record predates
            // it.
            shared.count(Event::Miss);
            return None;
        }
        shared.count(Event::Hit);
        Some(stored)
    }

    /// Writes a response just stored here to the shared tier, unless a purge has already
    /// reached it, or (Redis judges) reached the shared tier after the fetch read its purge
    /// `epoch`; a fetch that could not read it counts every purge Redis still remembers as
    /// later. Kept there only while it is fresh, not as long as [`Inner::keep_for`] keeps it
    /// here: an edge reads a record only to serve it fresh, never stale or to revalidate it.
    #[cfg(feature = "redis")]
    fn write_shared(&self, key: &PrimaryKey, stored: &Stored, epoch: Option<u64>) {
        let Some(shared) = &self.shared else {
            return;
        };
        let ttl = stored.freshness.lifetime().saturating_sub(self.age(stored));
        if self.purges.check(stored.generation, &stored.tags) != Purged::No {
            return;
        }
        let record = super::record::Record {
            status: stored.status,
            headers: stored.headers.clone(),
            body: stored.body.clone(),
            vary: stored.vary.clone(),
            tags: stored.tags.clone(),
            freshness: stored.freshness.with_initial_age(self.age(stored)),
            expires_in: ttl,
        };
        shared.write(key, &record, epoch.unwrap_or(0));
    }

    /// How much longer a stored response is worth keeping: until its last stale window ends,
    /// plus [`HttpCacheBuilder::keep_for_revalidation`] if it has validators.
    fn keep_for(&self, stored: &Stored) -> Duration {
        let extra = if stored.has_validators() {
            self.config.keep_validated
        } else {
            Duration::ZERO
        };
        stored
            .freshness
            .stale_horizon()
            .saturating_add(extra)
            .saturating_sub(self.clock.elapsed_since(stored.stored_at))
    }
}

/// The request side of one fetch, for storing its response.
struct FetchContext<'a> {
    key: &'a PrimaryKey,
    method: &'a Method,
    request_headers: &'a HeaderMap,
    request_cc: CacheControl,
    exchange: Exchange,
    /// The purge generation when the origin was asked.
    generation: u64,
    /// The shared tier's purge epoch when the fetch began (feature `redis`), if it could be
    /// read: its answer is written there only if no purge of its URL or tags came since.
    #[cfg(feature = "redis")]
    shared_epoch: Option<u64>,
    /// Whether the stored response being revalidated may stand in for an origin error
    /// (RFC 5861 §4): an error answer then does not replace it, whatever its lifetime, or the
    /// next request would be served the error from storage inside the window.
    stale_covers_errors: bool,
}

/// A response as the origin gave it, or a stored one freshened by a 304.
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    revalidated: bool,
    /// For a stored response freshened (by a 304, or a HEAD answer), that stored response:
    /// the freshened one is stored only if it is still there, not purged.
    merged_into: Option<Arc<Stored>>,
}

/// Gives a response without `Date` the time it arrived (RFC 9110 §6.6.1: a recipient caching
/// or forwarding it appends one). A 304 merged into a stored response then replaces the
/// stored `Date`, which dated the earlier exchange and would make the freshened response old.
fn date_if_undated(headers: &mut HeaderMap, arrived: SystemTime) {
    if !headers.contains_key(DATE)
        && let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(arrived))
    {
        headers.insert(DATE, date);
    }
}

/// Whether a stored response and a HEAD answer describe the same representation (§4.3.5):
/// every validator and `Content-Length` the HEAD answer has, the stored response has alike;
/// and a HEAD answer without validators matches only a stored response without them, as
/// §4.3.4 selects (it shows nothing about a representation that has some).
fn same_representation(stored: &HeaderMap, head: &HeaderMap) -> bool {
    let validators = [ETAG, LAST_MODIFIED];
    let head_has_validators = validators.iter().any(|name| head.contains_key(name));
    let stored_has_validators = validators.iter().any(|name| stored.contains_key(name));
    (head_has_validators || !stored_has_validators)
        && [ETAG, LAST_MODIFIED, CONTENT_LENGTH].iter().all(|name| {
            head.get(name)
                .is_none_or(|value| stored.get(name) == Some(value))
        })
}

/// Whether a request lets its answer decide what becomes of a stored response the answer does
/// not replace in storage. Only the response's own say counts: a request with `no-store` or
/// `Authorization` would have any client able to evict what others are served (and its
/// stand-in for errors).
fn request_may_store(headers: &HeaderMap, directives: &CacheControl) -> bool {
    !headers.contains_key(AUTHORIZATION) && !directives.no_store()
}

/// Whether the request carries `If-Match` or `If-Unmodified-Since`: preconditions on the
/// origin's current state, which a cache must not evaluate (RFC 9111 §4.3.2) nor drop, or the
/// origin's 412 would become a 200.
fn has_origin_preconditions(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_MATCH) || headers.contains_key(IF_UNMODIFIED_SINCE)
}

/// RFC 5861 §4: the statuses `stale-if-error` covers.
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The request's directives; `Pragma: no-cache` counts as `no-cache` when the request has
/// no `Cache-Control` (§5.4).
fn request_directives(headers: &HeaderMap) -> CacheControl {
    if headers.contains_key(http::header::CACHE_CONTROL) {
        return CacheControl::from_headers(headers);
    }
    let pragma_no_cache = headers.get_all(PRAGMA).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|member| member.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
    });
    if pragma_no_cache {
        CacheControl::parse(b"no-cache")
    } else {
        CacheControl::default()
    }
}

/// A response from a stored one, with its current `Age` (§5.1), or a 304 when the client's
/// own conditions hold.
fn respond(
    stored: &Stored,
    request_headers: &HeaderMap,
    age: Duration,
    (status, member): (CacheStatus, Member),
) -> Response<Bytes> {
    let mut headers = stored.headers.clone();
    if matches!(
        status,
        CacheStatus::Hit | CacheStatus::Stale | CacheStatus::SharedHit
    ) {
        withhold_no_cache_fields(&mut headers, stored);
    }
    if age > Duration::ZERO || headers.contains_key(AGE) {
        // §1.2.2: no delta-seconds beyond 2^31 is sent.
        let seconds = age.as_secs().min(u64::from(DELTA_SECONDS_CAP));
        headers.insert(AGE, HeaderValue::from(seconds));
    }
    let not_modified =
        stored.status == StatusCode::OK && client_not_modified(request_headers, &stored.headers);
    let mut response = Response::new(if not_modified {
        Bytes::new()
    } else {
        stored.body.clone()
    });
    *response.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        stored.status
    };
    *response.headers_mut() = headers;
    response.extensions_mut().insert(status);
    response
        .extensions_mut()
        .insert(member.at_age(&stored.freshness, age));
    response
}

/// Removes from `headers` the fields the stored response's `no-cache="..."` names, for a
/// response reused without being validated for the request it answers (§5.2.2.4): one served
/// from storage, or one fetched for another request that this one waited on.
fn withhold_no_cache_fields(headers: &mut HeaderMap, stored: &Stored) {
    for name in &stored.withheld {
        headers.remove(name);
    }
}

/// Removes the fields `names` from `headers`; the removed fields, in order.
fn take_fields(headers: &mut HeaderMap, names: &[HeaderName]) -> Vec<(HeaderName, HeaderValue)> {
    let mut taken = Vec::new();
    for name in names {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            let (name, values) = entry.remove_entry_mult();
            taken.extend(values.map(|value| (name.clone(), value)));
        }
    }
    taken
}

/// Gives the requester whose fetch brought a response the fields kept out of its stored form.
fn give_personal_fields(response: &mut Response<Bytes>, personal: Vec<(HeaderName, HeaderValue)>) {
    for (name, value) in personal {
        response.headers_mut().append(name, value);
    }
}

/// §5.2.1.7's answer to `only-if-cached` with nothing usable stored. It carries no
/// `Cache-Status` member: RFC 9211 §2 keeps those off responses an intermediary generates
/// without a stored response.
fn gateway_timeout() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    response.extensions_mut().insert(CacheStatus::Pass);
    response
}
