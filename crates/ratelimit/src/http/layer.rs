//! The tower layer: per-key limits over HTTP, with per-route policies, per-request costs and
//! a configurable refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::request::Parts;
use http::{HeaderMap, Request, Response};
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicU64, Ordering};

use super::fields::insert_headers;
use super::{
    HeaderStyle, KeyExtractor, Limiter, MissingKey, NoKey, PolicyName, ProblemJson, QuotaPolicy,
    RejectResponse, Rejection,
};
use crate::{Decision, Error};

/// Picks a request's policy by name; `None` or an unknown name: the default policy.
type RouteFn = dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync;
/// What a request costs, in cells of its policy's quota.
type CostFn = dyn Fn(&Parts) -> u32 + Send + Sync;

/// A named quota policy and the limiter that enforces it.
struct Policy<L> {
    name: PolicyName,
    limiter: L,
}

/// Everything a layer's clones and services share.
struct Shared<X, L, J> {
    key: X,
    /// The default policy first.
    policies: Vec<Policy<L>>,
    route: Option<Box<RouteFn>>,
    cost: Option<Box<CostFn>>,
    missing: MissingKey,
    style: HeaderStyle,
    reject: J,
    missing_keys: AtomicU64,
    unusable_keys: AtomicU64,
}

/// Builds [`RateLimitService`]s that limit each request by its key. Cheap to clone: clones and
/// the services they build share the same limiters, so a server that clones its stack per
/// connection still enforces one limit per key.
///
/// Made by [`RateLimitLayer::builder`] with a [`KeyExtractor`] and the default policy's
/// [`Limiter`]; see the [module documentation](super) for the whole picture.
///
/// ```
/// use http::{Method, Request, Response};
/// use infra_common::ManualClock;
/// use infra_ratelimit::http::{HeaderKey, RateLimitLayer};
/// use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
/// use std::convert::Infallible;
/// use tower::{Layer, Service, ServiceExt};
///
/// let clock = ManualClock::new();
/// let limiter = |quota| KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, clock.clone());
/// let layer = RateLimitLayer::builder(
///     HeaderKey::new(http::HeaderName::from_static("x-api-key")),
///     limiter(Quota::per_second(10)?)?,
/// )
/// .policy("search", limiter(Quota::per_minute(30)?)?)?
/// .route(|parts| parts.uri.path().starts_with("/search").then_some("search"))
/// .cost(|parts| if parts.method == Method::POST { 5 } else { 1 })
/// .build();
///
/// let mut service = layer.layer(tower::service_fn(|_: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(String::from("ok")))
/// }));
/// let request = Request::get("/search?q=rust").header("x-api-key", "k1").body(String::new())?;
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let response = runtime.block_on(async { service.ready().await?.call(request).await })?;
/// assert_eq!(response.headers()["ratelimit"], r#""search";r=29;t=2"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimitLayer<X, L, J = ProblemJson> {
    shared: Arc<Shared<X, L, J>>,
}

impl<X: KeyExtractor, L: Limiter<X::Key>> RateLimitLayer<X, L> {
    /// Starts a layer keyed by `key` whose default policy, named `default`, is enforced by
    /// `limiter`.
    pub fn builder(key: X, limiter: L) -> RateLimitLayerBuilder<X, L> {
        RateLimitLayerBuilder {
            key,
            policies: vec![Policy {
                name: PolicyName::default_policy(),
                limiter,
            }],
            route: None,
            cost: None,
            missing: MissingKey::default(),
            style: HeaderStyle::default(),
            reject: ProblemJson,
        }
    }
}

impl<X, L, J> RateLimitLayer<X, L, J> {
    /// The limiter of the policy named `name`, to change its quotas at run time.
    pub fn limiter(&self, name: &str) -> Option<&L> {
        self.shared
            .policies
            .iter()
            .find(|policy| policy.name.as_str() == name)
            .map(|policy| &policy.limiter)
    }

    /// How many requests had no key so far, across every clone and service of this layer.
    /// Nonzero usually means a deployment mistake (see [`MissingKey`]).
    pub fn missing_keys(&self) -> u64 {
        self.shared.missing_keys.load(Ordering::Relaxed)
    }

    /// How many requests were refused for an identity that cannot be used (a malformed
    /// `Forwarded` element where the trusted proxy writes, a key header sent twice, ...), across
    /// every clone and service of this layer. Each is answered `400`; many of them usually mean
    /// a proxy that writes another format than the extractor reads, or a client probing.
    pub fn unusable_keys(&self) -> u64 {
        self.shared.unusable_keys.load(Ordering::Relaxed)
    }
}

impl<X, L, J> Clone for RateLimitLayer<X, L, J> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<X, L, J> fmt::Debug for RateLimitLayer<X, L, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt("RateLimitLayer", f)
    }
}

impl<S, X, L, J> tower::Layer<S> for RateLimitLayer<X, L, J> {
    type Service = RateLimitService<S, X, L, J>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Configures a [`RateLimitLayer`]; made by [`RateLimitLayer::builder`].
pub struct RateLimitLayerBuilder<X, L, J = ProblemJson> {
    key: X,
    policies: Vec<Policy<L>>,
    route: Option<Box<RouteFn>>,
    cost: Option<Box<CostFn>>,
    missing: MissingKey,
    style: HeaderStyle,
    reject: J,
}

impl<X, L, J> RateLimitLayerBuilder<X, L, J> {
    /// `name` as a policy name no policy but the one at `renamed` (if any) has.
    fn named(&self, name: &str, renamed: Option<usize>) -> Result<PolicyName, Error> {
        let name = PolicyName::new(name)?;
        let mut policies = self.policies.iter().enumerate();
        if policies.any(|(at, policy)| Some(at) != renamed && policy.name == name) {
            return Err(Error::InvalidConfig {
                reason: "two rate-limit policies have the same name",
            });
        }
        Ok(name)
    }

    /// Renames the default policy (`default`), as the rate-limit fields name it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a name [`PolicyName::new`] refuses, or one already used.
    pub fn default_policy_name(mut self, name: &str) -> Result<Self, Error> {
        self.policies[0].name = self.named(name, Some(0))?;
        Ok(self)
    }

    /// Adds a policy named `name`, enforced by `limiter`, for the requests [`route`] names it
    /// for. Each policy keeps its own state per key: a client limited on one route is not
    /// limited on another.
    ///
    /// [`route`]: RateLimitLayerBuilder::route
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a name [`PolicyName::new`] refuses, or one already used.
    pub fn policy(mut self, name: &str, limiter: L) -> Result<Self, Error> {
        let name = self.named(name, None)?;
        self.policies.push(Policy { name, limiter });
        Ok(self)
    }

    /// Chooses each request's policy by name; `None`, or a name no policy has, selects the
    /// default policy.
    #[must_use]
    pub fn route<F>(mut self, route: F) -> Self
    where
        F: Fn(&Parts) -> Option<&str> + Send + Sync + 'static,
    {
        self.route = Some(Box::new(route));
        self
    }

    /// What each request costs in cells of its policy's quota (default: 1). A request that
    /// costs more than its policy ever admits at once is refused
    /// ([`Rejection::CostTooHigh`]); one that costs 0 is always admitted and spends nothing.
    #[must_use]
    pub fn cost<F>(mut self, cost: F) -> Self
    where
        F: Fn(&Parts) -> u32 + Send + Sync + 'static,
    {
        self.cost = Some(Box::new(cost));
        self
    }

    /// What to do with requests without a key (default: [`MissingKey::Shared`]).
    #[must_use]
    pub fn missing_key(mut self, missing: MissingKey) -> Self {
        self.missing = missing;
        self
    }

    /// Which rate-limit fields responses carry (default: [`HeaderStyle::Draft11`]).
    #[must_use]
    pub fn header_style(mut self, style: HeaderStyle) -> Self {
        self.style = style;
        self
    }

    /// Answers refused requests with `reject`'s response instead of [`ProblemJson`]'s. The
    /// layer adds the rate-limit fields and `Retry-After` to it.
    pub fn reject<F, B>(self, reject: F) -> RateLimitLayerBuilder<X, L, F>
    where
        F: Fn(&Rejection<'_>) -> Response<B> + Send + Sync + 'static,
    {
        RateLimitLayerBuilder {
            key: self.key,
            policies: self.policies,
            route: self.route,
            cost: self.cost,
            missing: self.missing,
            style: self.style,
            reject,
        }
    }

    /// The layer.
    pub fn build(self) -> RateLimitLayer<X, L, J> {
        RateLimitLayer {
            shared: Arc::new(Shared {
                key: self.key,
                policies: self.policies,
                route: self.route,
                cost: self.cost,
                missing: self.missing,
                style: self.style,
                reject: self.reject,
                missing_keys: AtomicU64::new(0),
                unusable_keys: AtomicU64::new(0),
            }),
        }
    }
}

impl<X, L, J> fmt::Debug for RateLimitLayerBuilder<X, L, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("policies", &names(&self.policies))
            .field("missing_key", &self.missing)
            .field("header_style", &self.style)
            .finish_non_exhaustive()
    }
}

fn names<L>(policies: &[Policy<L>]) -> Vec<&str> {
    policies.iter().map(|policy| policy.name.as_str()).collect()
}

/// What a request was checked under, to settle on its response.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    policy: usize,
    quota: QuotaPolicy,
    cost: u32,
}

/// The fields to add to an admitted request's response.
struct Stamp<X, L, J> {
    shared: Arc<Shared<X, L, J>>,
    ticket: Ticket,
    decision: Decision,
}

impl<X, L, J> Stamp<X, L, J> {
    fn apply(&self, headers: &mut HeaderMap) {
        self.shared
            .insert_fields(headers, &self.ticket, &self.decision);
    }
}

/// Where a decided request goes.
enum Settled<X, L, J, R> {
    /// To the inner service, its response stamped.
    Forward(Stamp<X, L, J>),
    /// Back to the client.
    Answer(R),
}

impl<X, L, J> Shared<X, L, J> {
    fn fmt(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("policies", &names(&self.policies))
            .field("missing_key", &self.missing)
            .field("header_style", &self.style)
            .field("missing_keys", &self.missing_keys.load(Ordering::Relaxed))
            .field("unusable_keys", &self.unusable_keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }

    fn insert_fields(&self, headers: &mut HeaderMap, ticket: &Ticket, decision: &Decision) {
        let name = &self.policies[ticket.policy].name;
        insert_headers(headers, self.style, name, &ticket.quota, decision);
    }

    /// The policy `request` is checked under: the one `route` names, else the default.
    fn select(&self, request: &Parts) -> usize {
        self.route
            .as_ref()
            .and_then(|route| route(request))
            .and_then(|name| {
                self.policies
                    .iter()
                    .position(|policy| policy.name.as_str() == name)
            })
            .unwrap_or(0)
    }

    /// Counts a request without a key; the first one is logged.
    fn note_missing_key(&self) {
        if self.missing_keys.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                policy = ?self.missing,
                "a rate-limited request had no key: the extractor found no client identity \
                 (for a client IP: is the server started with connect info, is the trusted \
                 proxy count right, does the proxy know the client's address?); further \
                 keyless requests are counted, not logged"
            );
        }
    }

    /// Counts a request refused for an unusable identity; the first one is logged.
    fn note_unusable_key(&self, reason: &'static str) {
        if self.unusable_keys.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                reason,
                "a rate-limited request carried a client identity that cannot be used and was \
                 refused with 400; further ones are counted, not logged"
            );
        }
    }

    fn refuse<B>(&self, rejection: &Rejection<'_>, ticket: Option<&Ticket>) -> Response<B>
    where
        J: RejectResponse<B>,
    {
        let mut response = self.reject.respond(rejection);
        if let (Some(ticket), Some(decision)) = (ticket, rejection.decision()) {
            self.insert_fields(response.headers_mut(), ticket, decision);
        }
        response
    }
}

/// Decides what a request's decision (or error) means for its response.
fn settle<X, L, J, B>(
    shared: &Arc<Shared<X, L, J>>,
    ticket: Ticket,
    result: Result<Decision, Error>,
) -> Settled<X, L, J, Response<B>>
where
    J: RejectResponse<B>,
{
    let policy = shared.policies[ticket.policy].name.as_str();
    let quota = ticket.quota;
    let rejection = match result {
        Ok(decision) if decision.is_allowed() => {
            return Settled::Forward(Stamp {
                shared: Arc::clone(shared),
                ticket,
                decision,
            });
        }
        Ok(decision) => Rejection::Limited { policy, decision },
        Err(Error::InsufficientCapacity { capacity, .. }) => Rejection::CostTooHigh {
            policy,
            cost: ticket.cost,
            capacity,
        },
        // A key admitted after `retry_after` starts full, so that is also when its quota is
        // back: a zero reset would tell a legacy client to come back at once.
        Err(Error::TooManyKeys { retry_after, .. }) => Rejection::KeyTableFull {
            policy,
            decision: Decision::denied(quota.quota(), 0, retry_after, retry_after),
        },
        Err(Error::TooLarge { .. }) => {
            // The client chose the key's size (a long header), so the key is unusable: the
            // limiter is up, and saying otherwise would page whoever watches the 5xx.
            let reason = "the key is larger than the limiter accepts";
            shared.note_unusable_key(reason);
            return Settled::Answer(shared.refuse(&Rejection::UnusableKey { reason }, None));
        }
        Err(error) => {
            return Settled::Answer(shared.refuse(
                &Rejection::Unavailable {
                    policy,
                    error: &error,
                },
                None,
            ));
        }
    };
    Settled::Answer(shared.refuse(&rejection, Some(&ticket)))
}

/// The middleware built by [`RateLimitLayer`].
pub struct RateLimitService<S, X, L, J = ProblemJson> {
    inner: S,
    shared: Arc<Shared<X, L, J>>,
}

impl<S: Clone, X, L, J> Clone for RateLimitService<S, X, L, J> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, X, L, J> fmt::Debug for RateLimitService<S, X, L, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt("RateLimitService", f)
    }
}

impl<S, X, L, J, ReqB, ResB> tower::Service<Request<ReqB>> for RateLimitService<S, X, L, J>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    X: KeyExtractor,
    L: Limiter<X::Key>,
    J: RejectResponse<ResB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, X, L, J>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let (parts, body) = request.into_parts();
        let key = match shared.key.extract(&parts) {
            Ok(key) => key,
            Err(NoKey::Unusable { reason }) => {
                shared.note_unusable_key(reason);
                return ResponseFuture::answered(
                    shared.refuse(&Rejection::UnusableKey { reason }, None),
                );
            }
            Err(NoKey::Missing) => {
                shared.note_missing_key();
                match shared.missing {
                    MissingKey::Pass => {
                        let request = Request::from_parts(parts, body);
                        return ResponseFuture::calling(self.inner.call(request), None);
                    }
                    MissingKey::Reject => {
                        return ResponseFuture::answered(
                            shared.refuse(&Rejection::MissingKey, None),
                        );
                    }
                    MissingKey::Shared => shared.key.shared_key(),
                }
            }
        };
        let policy = shared.select(&parts);
        let cost = shared.cost.as_ref().map_or(1, |cost| cost(&parts));
        let limiter = &shared.policies[policy].limiter;
        let ticket = Ticket {
            policy,
            quota: limiter.policy(&key),
            cost,
        };
        let mut decide = limiter.decide(&key, cost);
        let request = Request::from_parts(parts, body);
        // A limiter that decides in memory has answered already; only a pending decision
        // needs the inner service kept for later, and the ready one (see `poll_ready`) stays
        // where it is.
        match Pin::new(&mut decide).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => match settle(shared, ticket, result) {
                Settled::Forward(stamp) => {
                    ResponseFuture::calling(self.inner.call(request), Some(stamp))
                }
                Settled::Answer(response) => ResponseFuture::answered(response),
            },
            Poll::Pending => {
                // The tower idiom for calling later: keep the service that was made ready,
                // leave a clone in its place.
                let fresh = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture {
                    state: State::Deciding {
                        decide,
                        pending: Some(Pending {
                            inner,
                            request,
                            shared: Arc::clone(shared),
                            ticket,
                        }),
                    },
                }
            }
        }
    }
}

/// A request waiting for its decision, and what it needs afterwards.
struct Pending<S, R, X, L, J> {
    inner: S,
    request: R,
    shared: Arc<Shared<X, L, J>>,
    ticket: Ticket,
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<D, P, F, T, R> {
        Deciding { decide: D, pending: Option<P> },
        Calling { #[pin] future: F, stamp: Option<T> },
        Answered { response: Option<R> },
    }
}

pin_project_lite::pin_project! {
    /// The response of a [`RateLimitService`]: the inner service's, with the rate-limit
    /// fields added, or the refusal.
    pub struct ResponseFuture<S, ReqB, X, L, J>
    where
        S: tower::Service<Request<ReqB>>,
        X: KeyExtractor,
        L: Limiter<X::Key>,
    {
        #[pin]
        state: State<
            L::Decide,
            Pending<S, Request<ReqB>, X, L, J>,
            S::Future,
            Stamp<X, L, J>,
            S::Response,
        >,
    }
}

impl<S, ReqB, X, L, J> ResponseFuture<S, ReqB, X, L, J>
where
    S: tower::Service<Request<ReqB>>,
    X: KeyExtractor,
    L: Limiter<X::Key>,
{
    fn calling(future: S::Future, stamp: Option<Stamp<X, L, J>>) -> Self {
        Self {
            state: State::Calling { future, stamp },
        }
    }

    fn answered(response: S::Response) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqB, X, L, J> fmt::Debug for ResponseFuture<S, ReqB, X, L, J>
where
    S: tower::Service<Request<ReqB>>,
    X: KeyExtractor,
    L: Limiter<X::Key>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Deciding { .. } => "deciding",
            State::Calling { .. } => "calling",
            State::Answered { .. } => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqB, ResB, X, L, J> Future for ResponseFuture<S, ReqB, X, L, J>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    X: KeyExtractor,
    L: Limiter<X::Key>,
    J: RejectResponse<ResB>,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProjection::Deciding { decide, pending } => {
                    let result = std::task::ready!(Pin::new(decide).poll(cx));
                    let Some(Pending {
                        mut inner,
                        request,
                        shared,
                        ticket,
                    }) = pending.take()
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match settle(&shared, ticket, result) {
                        Settled::Forward(stamp) => state.set(State::Calling {
                            future: inner.call(request),
                            stamp: Some(stamp),
                        }),
                        Settled::Answer(response) => return Poll::Ready(Ok(response)),
                    }
                }
                StateProjection::Calling { future, stamp } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some(stamp) = stamp.take() {
                        stamp.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProjection::Answered { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        None => panic!("ResponseFuture polled after completion"),
                    };
                }
            }
        }
    }
}
