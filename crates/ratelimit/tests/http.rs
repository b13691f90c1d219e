//! The HTTP layer, driven through tower: the fields it emits (parsed by an independent
//! structured-field parser, never compared with our formatter's output alone), its refusals
//! (the problem+json bodies parsed as JSON), per-route policies, per-request costs, the
//! missing-key policies, and a limiter whose decision arrives later.
#![cfg(all(feature = "tower", not(infra_loom)))]

#[path = "support/structured_fields.rs"]
mod structured_fields;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_ratelimit::http::{
    ClientIp, HeaderKey, HeaderStyle, KeyExtractor, Limiter, MissingKey, NoKey, PolicyName,
    ProblemJson, QuotaPolicy, RateLimitLayer, RejectResponse, Rejection, insert_headers, key_fn,
};
use infra_ratelimit::{Decision, Error, Gcra, KeyedOptions, KeyedRateLimiter, Quota};
use structured_fields::{Bare, parse_list};
use tower::{Layer, Service, ServiceExt};

/// Counts the requests that reach it and answers `200 ok`.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Counting {
    fn calls(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Service<Request<String>> for Counting {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        self.0.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(Response::new("ok".to_owned())))
    }
}

type Keyed = KeyedRateLimiter<String, Gcra, ManualClock>;

fn keyed(clock: &ManualClock, quota: Quota) -> Keyed {
    KeyedRateLimiter::with_clock(quota, clock.clone()).unwrap()
}

fn api_key() -> HeaderKey {
    HeaderKey::new(http::HeaderName::from_static("x-api-key"))
}

fn get(path: &str, key: Option<&str>) -> Request<String> {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.body(String::new()).unwrap()
}

/// Sends `request` through `service` and waits for the response, on the test's runtime.
async fn send<S>(service: &mut S, request: Request<String>) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    service.ready().await.unwrap().call(request).await.unwrap()
}

/// One member of a List field, parsed: its name and its integer parameters.
#[derive(Debug, PartialEq, Eq)]
struct Item {
    name: String,
    params: Vec<(String, i64)>,
}

/// Parses every `name` field in `headers` as a List of String items with Integer
/// parameters.
fn list(headers: &HeaderMap, name: &str) -> Vec<Item> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    parse_list(&lines)
        .unwrap_or_else(|error| panic!("{name}: {lines:?} is not a structured List: {error}"))
        .into_iter()
        .map(|member| {
            let Some(Bare::String(name)) = member.item() else {
                panic!("{name}: a policy must be a String item, got {member:?}");
            };
            let params = member
                .params
                .iter()
                .map(|(key, value)| match value {
                    Bare::Integer(n) => (key.clone(), *n),
                    other => panic!("parameter {key} is {other:?}, not an Integer"),
                })
                .collect();
            Item {
                name: name.clone(),
                params,
            }
        })
        .collect()
}

fn item(name: &str, params: &[(&str, i64)]) -> Item {
    Item {
        name: name.to_owned(),
        params: params.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn problem(response: &Response<String>) -> serde_json::Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    serde_json::from_str(response.body()).expect("the body is JSON")
}

#[tokio::test]
async fn admitted_and_denied_responses_carry_draft_11_fields() {
    let clock = ManualClock::new();
    // 60 per minute, 10 at once: a cell every second, 10 back in 10 s.
    let quota = Quota::per_minute(60).unwrap().with_burst(10).unwrap();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, quota)).build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());

    for sent in 1..=10 {
        let response = send(&mut service, get("/", Some("k"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let policy = list(response.headers(), "ratelimit-policy");
        assert_eq!(policy, [item("default", &[("q", 10), ("w", 10)])]);
        // r: what is left; t: seconds until all 10 are back, one per second spent.
        let limit = list(response.headers(), "ratelimit");
        assert_eq!(limit, [item("default", &[("r", 10 - sent), ("t", sent)])]);
        assert!(response.headers().get("retry-after").is_none());
        assert!(response.headers().get("ratelimit-limit").is_none());
    }

    clock.advance(Duration::from_millis(400));
    let denied = send(&mut service, get("/", Some("k"))).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(inner.calls(), 10);
    // The next cell is 600 ms away: Retry-After 1, and t no earlier than Retry-After.
    assert_eq!(denied.headers()["retry-after"], "1");
    assert_eq!(
        list(denied.headers(), "ratelimit"),
        [item("default", &[("r", 0), ("t", 1)])]
    );
    assert_eq!(
        list(denied.headers(), "ratelimit-policy"),
        [item("default", &[("q", 10), ("w", 10)])]
    );
    let body = problem(&denied);
    assert_eq!(body["status"], 429);
    assert_eq!(body["retry_after"], 1);
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["violated-policies"], serde_json::json!(["default"]));
    assert!(body["title"].is_string() && body["detail"].is_string());

    clock.advance(Duration::from_millis(600));
    assert_eq!(
        send(&mut service, get("/", Some("k"))).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn header_styles_choose_the_fields_and_retry_after_is_always_on_a_429() {
    let quota = Quota::per_second(2).unwrap();
    let mut seen = Vec::new();
    for style in [
        HeaderStyle::Draft11,
        HeaderStyle::Legacy,
        HeaderStyle::Both,
        HeaderStyle::None,
    ] {
        let clock = ManualClock::new();
        let layer = RateLimitLayer::builder(api_key(), keyed(&clock, quota))
            .header_style(style)
            .build();
        let mut service = layer.layer(Counting::default());
        let admitted = send(&mut service, get("/", Some("k"))).await;
        send(&mut service, get("/", Some("k"))).await;
        let denied = send(&mut service, get("/", Some("k"))).await;
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS, "{style:?}");
        assert_eq!(denied.headers()["retry-after"], "1", "{style:?}");
        let names = |response: &Response<String>| {
            let mut names: Vec<&str> = response
                .headers()
                .keys()
                .map(http::HeaderName::as_str)
                .filter(|name| name.starts_with("ratelimit"))
                .collect();
            names.sort_unstable();
            names.join(" ")
        };
        assert_eq!(names(&admitted), names(&denied), "{style:?}");
        seen.push(names(&admitted));
        if matches!(style, HeaderStyle::Legacy | HeaderStyle::Both) {
            assert_eq!(admitted.headers()["ratelimit-limit"], "2");
            assert_eq!(admitted.headers()["ratelimit-remaining"], "1");
            assert_eq!(admitted.headers()["ratelimit-reset"], "1");
            assert_eq!(denied.headers()["ratelimit-remaining"], "0");
        }
    }
    assert_eq!(
        seen,
        [
            "ratelimit ratelimit-policy",
            "ratelimit-limit ratelimit-remaining ratelimit-reset",
            "ratelimit ratelimit-limit ratelimit-policy ratelimit-remaining ratelimit-reset",
            "",
        ]
    );
}

#[tokio::test]
async fn policy_names_are_escaped_strings_or_refused() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(5).unwrap()))
        .default_policy_name(r#"per "key" \ second"#)
        .unwrap()
        .build();
    let response = send(&mut layer.layer(Counting::default()), get("/", Some("k"))).await;
    assert_eq!(
        list(response.headers(), "ratelimit-policy")[0].name,
        r#"per "key" \ second"#
    );
    assert_eq!(
        list(response.headers(), "ratelimit")[0].name,
        r#"per "key" \ second"#
    );

    for bad in ["", "café", "tab\there", "new\nline"] {
        let builder =
            RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(5).unwrap()));
        assert!(
            matches!(
                builder.default_policy_name(bad),
                Err(Error::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
    let builder = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(5).unwrap()));
    assert!(matches!(
        builder.policy("default", keyed(&clock, Quota::per_second(1).unwrap())),
        Err(Error::InvalidConfig { .. })
    ));
    // Renaming the default policy to its own name is no clash; taking another's name is.
    let builder = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(5).unwrap()))
        .default_policy_name("default")
        .unwrap()
        .policy("login", keyed(&clock, Quota::per_second(1).unwrap()))
        .unwrap()
        .default_policy_name("api")
        .unwrap()
        .default_policy_name("api")
        .unwrap();
    assert!(matches!(
        builder.default_policy_name("login"),
        Err(Error::InvalidConfig { .. })
    ));
}

#[tokio::test]
async fn each_route_has_its_own_policy_and_unknown_routes_get_the_default() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(100).unwrap()))
        .policy("login", keyed(&clock, Quota::per_minute(2).unwrap()))
        .unwrap()
        .route(|parts| match parts.uri.path() {
            "/login" => Some("login"),
            "/typo" => Some("no such policy"),
            _ => None,
        })
        .build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());

    for _ in 0..2 {
        let ok = send(&mut service, get("/login", Some("k"))).await;
        assert_eq!(list(ok.headers(), "ratelimit-policy")[0].name, "login");
    }
    let denied = send(&mut service, get("/login", Some("k"))).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["retry-after"], "30");
    assert_eq!(problem(&denied)["violated-policies"][0], "login");

    // The same key is not limited elsewhere, and an unknown name is the default policy.
    for path in ["/", "/typo"] {
        let ok = send(&mut service, get(path, Some("k"))).await;
        assert_eq!(ok.status(), StatusCode::OK, "{path}");
        assert_eq!(
            list(ok.headers(), "ratelimit-policy"),
            [item("default", &[("q", 100), ("w", 1)])]
        );
    }
    assert_eq!(inner.calls(), 4);
    assert_eq!(layer.limiter("login").unwrap().len(), 1);
    assert!(layer.limiter("nope").is_none());
}

#[tokio::test]
async fn requests_cost_what_the_cost_function_says_and_too_costly_ones_are_refused() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(10).unwrap()))
        .cost(|parts| match parts.method {
            Method::POST => 4,
            Method::DELETE => 11,
            Method::HEAD => 0,
            _ => 1,
        })
        .build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());
    let request = |method: Method| {
        Request::builder()
            .method(method)
            .header("x-api-key", "k")
            .body(String::new())
            .unwrap()
    };

    let post = send(&mut service, request(Method::POST)).await;
    assert_eq!(
        list(post.headers(), "ratelimit")[0].params[0],
        ("r".into(), 6)
    );
    let head = send(&mut service, request(Method::HEAD)).await;
    assert_eq!(
        list(head.headers(), "ratelimit")[0].params[0],
        ("r".into(), 6)
    );

    // More than the 10 the policy ever admits at once: refused, clearly, and never panics;
    // as a client error with nothing that says waiting helps, since it never does.
    for _ in 0..3 {
        let delete = send(&mut service, request(Method::DELETE)).await;
        assert_eq!(delete.status(), StatusCode::BAD_REQUEST);
        assert!(delete.headers().get("retry-after").is_none());
        assert!(delete.headers().get("ratelimit").is_none());
        let body = problem(&delete);
        assert_eq!(body["status"], 400);
        assert!(body.get("retry_after").is_none());
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("costs 11") && detail.contains("at most 10"),
            "{detail}"
        );
        assert!(detail.contains("never be admitted"), "{detail}");
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(inner.calls(), 2);
    // Refusing it spent nothing.
    let get = send(&mut service, request(Method::GET)).await;
    assert_eq!(
        list(get.headers(), "ratelimit")[0].params[0],
        ("r".into(), 9)
    );
}

#[tokio::test]
async fn a_custom_rejection_keeps_the_fields() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(1).unwrap()))
        .reject(|rejection: &Rejection<'_>| {
            let mut response = Response::new(format!("slow down ({:?})", rejection.policy()));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        })
        .build();
    let mut service = layer.layer(Counting::default());
    send(&mut service, get("/", Some("k"))).await;
    let denied = send(&mut service, get("/", Some("k"))).await;
    assert_eq!(denied.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(denied.body(), r#"slow down (Some("default"))"#);
    assert_eq!(denied.headers()["retry-after"], "1");
    assert_eq!(
        list(denied.headers(), "ratelimit"),
        [item("default", &[("r", 0), ("t", 1)])]
    );
}

/// A key table of one, taken by ann's request (one of her two per hour), and bob's request
/// after it, answered in `style`: the refusal, and how many keys the limiter then tracks.
async fn shed_by_a_full_key_table(style: HeaderStyle) -> (Response<String>, usize) {
    let limiter = Keyed::with_options(
        Quota::per_hour(2).unwrap(),
        ManualClock::new(),
        KeyedOptions::default().max_keys(1),
    )
    .unwrap();
    let layer = RateLimitLayer::builder(api_key(), limiter)
        .header_style(style)
        .build();
    let mut service = layer.layer(Counting::default());
    assert_eq!(
        send(&mut service, get("/", Some("ann"))).await.status(),
        200
    );
    let shed = send(&mut service, get("/", Some("bob"))).await;
    assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
    (shed, layer.limiter("default").unwrap().len())
}

#[tokio::test]
async fn a_full_key_table_sheds_new_clients_until_a_key_can_have_replenished() {
    let (shed, tracked) = shed_by_a_full_key_table(HeaderStyle::default()).await;
    // Ann's one request of two per hour is back in half an hour: her slot may be free then.
    assert_eq!(shed.headers()["retry-after"], "1800");
    assert_eq!(
        list(shed.headers(), "ratelimit-policy"),
        [item("default", &[("q", 2), ("w", 3600)])]
    );
    assert_eq!(problem(&shed)["status"], 429);
    assert_eq!(tracked, 1);
}

/// The legacy fields of a refusal for a full key table say the same wait as `Retry-After`:
/// nothing left, back in 30 minutes, never "reset now".
#[tokio::test]
async fn a_full_key_table_states_its_wait_in_the_legacy_fields_too() {
    let (shed, _) = shed_by_a_full_key_table(HeaderStyle::Both).await;
    assert_eq!(shed.headers()["retry-after"], "1800");
    assert_eq!(shed.headers()["ratelimit-remaining"], "0");
    assert_eq!(shed.headers()["ratelimit-reset"], "1800");
    assert_eq!(
        list(shed.headers(), "ratelimit"),
        [item("default", &[("r", 0), ("t", 1800)])]
    );
}

#[tokio::test]
async fn clones_of_the_layer_share_one_limit() {
    let clock = ManualClock::new();
    let layer =
        RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(2).unwrap())).build();
    let mut first = layer.layer(Counting::default());
    let mut second = layer.clone().layer(Counting::default());
    assert_eq!(send(&mut first, get("/", Some("k"))).await.status(), 200);
    assert_eq!(send(&mut second, get("/", Some("k"))).await.status(), 200);
    assert_eq!(send(&mut first, get("/", Some("k"))).await.status(), 429);
    assert_eq!(
        send(&mut second, get("/", Some("other"))).await.status(),
        200
    );
    assert!(format!("{layer:?} {first:?}").contains("default"));
}

/// Counts the `WARN` events logged while it is the default subscriber.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Held by each test whose requests log the layer's missing-key warning. tracing registers a
/// callsite when it is first used, and a scoped subscriber that another thread sets meanwhile
/// can miss it (the callsite keeps the interest computed without that subscriber): `keyless`
/// would then count no warning. So these tests take turns.
// A static needs a const constructor, which `infra_common::sync::Mutex` lacks.
#[allow(clippy::disallowed_types)]
static LOGS_MISSING_KEYS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the turn of a test that logs missing keys (see [`LOGS_MISSING_KEYS`]).
fn log_missing_keys_in_turn() -> impl Drop {
    LOGS_MISSING_KEYS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sends four keyless requests and one keyed one through a layer with `missing` and a quota
/// of 2 per second; the statuses, the requests served, the keyless count and the warnings.
fn keyless(missing: MissingKey) -> (Vec<u16>, usize, u64, usize) {
    let _turn = log_missing_keys_in_turn();
    let warnings = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(WarnCounter(Arc::clone(&warnings)));
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_second(2).unwrap()))
        .missing_key(missing)
        .build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let statuses = runtime.block_on(async {
        let mut statuses = Vec::new();
        for key in [None, None, None, None, Some("k")] {
            let response = send(&mut service, get("/", key)).await;
            if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
                let body = problem(&response);
                assert_eq!(body["status"], 500);
                assert!(response.headers().get("retry-after").is_none());
            }
            if missing == MissingKey::Pass && key.is_none() {
                assert!(response.headers().get("ratelimit").is_none());
            }
            statuses.push(response.status().as_u16());
        }
        statuses
    });
    (
        statuses,
        inner.calls(),
        layer.missing_keys(),
        warnings.load(Ordering::Relaxed),
    )
}

#[test]
fn keyless_requests_share_one_limit_by_default_and_are_logged_once() {
    // Shared: the four keyless requests are one client with a quota of 2; the keyed one is
    // unaffected.
    assert_eq!(
        keyless(MissingKey::default()),
        (vec![200, 200, 429, 429, 200], 3, 4, 1)
    );
    assert_eq!(
        keyless(MissingKey::Reject),
        (vec![500, 500, 500, 500, 200], 1, 4, 1)
    );
    assert_eq!(
        keyless(MissingKey::Pass),
        (vec![200, 200, 200, 200, 200], 5, 4, 1)
    );
}

/// A limiter whose decisions arrive later, as a remote one's do: it decides with a local
/// limiter, and its futures stay pending until the test releases them.
struct Remote {
    local: Keyed,
    released: Arc<AtomicUsize>,
}

struct Later {
    decision: Option<Result<Decision, Error>>,
    released: Arc<AtomicUsize>,
}

impl Future for Later {
    type Output = Result<Decision, Error>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.released.load(Ordering::Relaxed) == 0 {
            // The test polls again itself once it has released the decision.
            return Poll::Pending;
        }
        Poll::Ready(self.decision.take().expect("polled once ready"))
    }
}

impl Limiter<String> for Remote {
    type Decide = Later;

    fn decide(&self, key: &String, cost: u32) -> Later {
        Later {
            decision: Some(self.local.check_n(key, cost)),
            released: Arc::clone(&self.released),
        }
    }

    fn policy(&self, key: &String) -> QuotaPolicy {
        QuotaPolicy::of::<Gcra>(&self.local.quota_for(key))
    }
}

#[tokio::test]
async fn a_limiter_that_answers_later_holds_the_request_until_it_does() {
    let clock = ManualClock::new();
    let released = Arc::new(AtomicUsize::new(0));
    let remote = Remote {
        local: keyed(&clock, Quota::per_second(1).unwrap()),
        released: Arc::clone(&released),
    };
    let layer = RateLimitLayer::builder(api_key(), remote).build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());
    let mut cx = Context::from_waker(std::task::Waker::noop());

    let mut admitted = Box::pin(service.ready().await.unwrap().call(get("/", Some("k"))));
    let mut denied = Box::pin(service.ready().await.unwrap().call(get("/", Some("k"))));
    // No decision yet: the inner service has not been called.
    assert!(admitted.as_mut().poll(&mut cx).is_pending());
    assert!(denied.as_mut().poll(&mut cx).is_pending());
    assert_eq!(inner.calls(), 0);

    released.store(1, Ordering::Relaxed);
    let Poll::Ready(Ok(denied)) = denied.as_mut().poll(&mut cx) else {
        panic!("the decision arrived");
    };
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["retry-after"], "1");
    let Poll::Ready(Ok(admitted)) = admitted.as_mut().poll(&mut cx) else {
        panic!("the decision arrived");
    };
    assert_eq!(admitted.status(), StatusCode::OK);
    assert_eq!(inner.calls(), 1);
    assert_eq!(
        list(admitted.headers(), "ratelimit"),
        [item("default", &[("r", 0), ("t", 1)])]
    );
}

/// A limiter that cannot decide, as a Redis one that cannot reach Redis under
/// `FailurePolicy::Error` (under `FailClosed` it denies instead).
struct Down;

impl Limiter<String> for Down {
    type Decide = std::future::Ready<Result<Decision, Error>>;

    fn decide(&self, _: &String, _: u32) -> Self::Decide {
        std::future::ready(Err(Error::Unavailable {
            reason: "connection refused".into(),
        }))
    }

    fn policy(&self, _: &String) -> QuotaPolicy {
        QuotaPolicy::new(10, Duration::from_secs(1))
    }
}

#[tokio::test]
async fn a_limiter_that_cannot_decide_answers_503_without_calling_the_service() {
    let layer = RateLimitLayer::builder(api_key(), Down).build();
    let inner = Counting::default();
    let response = send(&mut layer.layer(inner.clone()), get("/", Some("k"))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_none());
    let body = problem(&response);
    assert_eq!(body["status"], 503);
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(inner.calls(), 0);
}

fn parts(request: Request<()>) -> http::request::Parts {
    request.into_parts().0
}

#[test]
fn client_ip_reads_the_peer_or_the_entry_the_trusted_proxies_wrote() {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert("192.0.2.7:4000".parse::<SocketAddr>().unwrap());
    let peer = parts(request);
    assert_eq!(
        ClientIp::peer().extract(&peer),
        Ok("192.0.2.7".parse().unwrap())
    );
    // Zero trusted proxies: the header is the client's own words, the peer is the client.
    assert_eq!(
        ClientIp::x_forwarded_for(0).extract(&peer),
        Ok("192.0.2.7".parse().unwrap())
    );
    assert_eq!(
        ClientIp::peer().extract(&parts(Request::new(()))),
        Err(NoKey::Missing)
    );
    for extractor in [ClientIp::x_forwarded_for(1), ClientIp::forwarded(1)] {
        assert_eq!(extractor.extract(&peer), Err(NoKey::Missing), "no field");
    }

    // client -> proxy A -> proxy B -> us: A appended the client, B appended A.
    let forwarded = parts(
        Request::get("/")
            .header("x-forwarded-for", "1.1.1.1, 203.0.113.5")
            .header("x-forwarded-for", "10.0.0.2")
            .header(
                "forwarded",
                r#"for=1.1.1.1, for="[2001:db8::5]", for=10.0.0.2"#,
            )
            .body(())
            .unwrap(),
    );
    let ip = |text: &str| Ok(text.parse::<IpAddr>().unwrap());
    assert_eq!(
        ClientIp::x_forwarded_for(2).extract(&forwarded),
        ip("203.0.113.5")
    );
    assert_eq!(
        ClientIp::forwarded(2).extract(&forwarded),
        ip("2001:db8::"),
        "2001:db8::5 by its /64"
    );
    // One proxy too many trusted reaches the forged entry; more than there are: unusable.
    assert_eq!(
        ClientIp::x_forwarded_for(3).extract(&forwarded),
        ip("1.1.1.1")
    );
    assert!(matches!(
        ClientIp::x_forwarded_for(4).extract(&forwarded),
        Err(NoKey::Unusable { .. })
    ));
    assert!(matches!(
        ClientIp::forwarded(4).extract(&forwarded),
        Err(NoKey::Unusable { .. })
    ));
}

#[test]
fn ipv6_clients_can_be_keyed_by_network_and_mapped_ipv4_by_address() {
    let request = |xff: &str| {
        parts(
            Request::get("/")
                .header("x-forwarded-for", xff)
                .body(())
                .unwrap(),
        )
    };
    let by_64 = ClientIp::x_forwarded_for(1);
    let by_address = ClientIp::x_forwarded_for(1).ipv6_prefix(128).unwrap();
    let a = request("2001:db8:aa:bb:1::1");
    let b = request("2001:db8:aa:bb:ffff::2");
    assert_eq!(by_64.extract(&a), by_64.extract(&b));
    assert_eq!(by_64.extract(&a), Ok("2001:db8:aa:bb::".parse().unwrap()));
    assert_ne!(by_address.extract(&a), by_address.extract(&b));
    let c = request("2001:db8:aa:bc::1");
    assert_ne!(by_64.extract(&a), by_64.extract(&c));
    // IPv4 (also mapped into IPv6) is keyed by address, never grouped by the IPv6 prefix.
    let v4 = request("192.0.2.1");
    let mapped = request("::ffff:192.0.2.1");
    let other_mapped = request("::ffff:192.0.2.2");
    assert_eq!(by_64.extract(&v4), Ok("192.0.2.1".parse().unwrap()));
    assert_eq!(by_64.extract(&mapped), by_64.extract(&v4));
    assert_ne!(by_64.extract(&mapped), by_64.extract(&other_mapped));
    // No client has an unspecified address, and 0.0.0.0 is the keyless requests' key.
    for unspecified in ["0.0.0.0", "::", "64:ff9b::0.0.0.0"] {
        assert!(
            matches!(
                by_64.extract(&request(unspecified)),
                Err(NoKey::Unusable { .. })
            ),
            "{unspecified}"
        );
    }
    assert_eq!(by_64.shared_key(), "0.0.0.0".parse::<IpAddr>().unwrap());
    for bits in [0, 129] {
        assert!(matches!(
            ClientIp::peer().ipv6_prefix(bits),
            Err(Error::InvalidConfig { .. })
        ));
    }
}

#[test]
fn header_and_function_keys() {
    let request = |values: &[&str]| {
        let mut builder = Request::get("/");
        for value in values {
            builder = builder.header("x-api-key", *value);
        }
        parts(builder.body(()).unwrap())
    };
    assert_eq!(api_key().extract(&request(&["abc"])).as_deref(), Ok("abc"));
    assert_eq!(api_key().extract(&request(&[])), Err(NoKey::Missing));
    assert!(matches!(
        api_key().extract(&request(&["  "])),
        Err(NoKey::Unusable { .. })
    ));
    // Spaces and tabs inside a value are kept: they are part of the key.
    assert_eq!(
        api_key().extract(&request(&[" a b\t"])).as_deref(),
        Ok("a b")
    );
    assert_eq!(
        api_key().extract(&request(&["a\tb"])).as_deref(),
        Ok("a\tb")
    );
    let non_ascii = http::HeaderValue::from_bytes("día".as_bytes()).unwrap();
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    parts.headers.insert("x-api-key", non_ascii);
    assert!(matches!(
        api_key().extract(&parts),
        Err(NoKey::Unusable { .. })
    ));
    assert!(
        matches!(
            api_key().extract(&request(&["a", "b"])),
            Err(NoKey::Unusable { .. })
        ),
        "ambiguous"
    );
    assert_eq!(api_key().shared_key(), "");

    let tenant = key_fn(|parts| parts.uri.path().strip_prefix("/t/").map(str::to_owned));
    let (parts, _) = Request::get("/t/acme").body(()).unwrap().into_parts();
    assert_eq!(tenant.extract(&parts).as_deref(), Ok("acme"));
    let (other, _) = Request::get("/").body(()).unwrap().into_parts();
    assert_eq!(tenant.extract(&other), Err(NoKey::Missing));
    assert_eq!(tenant.shared_key(), "");
    assert_eq!(tenant.with_shared_key("*".to_owned()).shared_key(), "*");
}

#[cfg(feature = "axum")]
#[test]
fn client_ip_reads_axum_connect_info() {
    let mut request = Request::new(());
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        "[2001:db8::9]:443".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(
        ClientIp::peer().extract(&parts(request)),
        Ok("2001:db8::".parse().unwrap()),
        "2001:db8::9 by its /64"
    );
}

/// Sends a request with `headers` (repeated names become repeated field lines).
async fn send_with<S>(service: &mut S, headers: &[(&str, &str)]) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    let mut request = Request::get("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(service, request.body(String::new()).unwrap()).await
}

/// Asserts the default answer to an unusable key: 400, problem+json, no rate-limit fields.
fn assert_unusable_key(response: &Response<String>) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("retry-after").is_none());
    assert!(response.headers().get("ratelimit").is_none());
    let body = problem(response);
    assert_eq!(body["status"], 400);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("identity is unusable"), "{detail}");
}

/// Behind one proxy keyed by `Forwarded`, a client writes whatever it likes left of the
/// proxy's element: a malformed line of its own, an unclosed quote that would swallow the
/// proxy's element, garbage bytes. None of it changes its key, under every missing-key
/// policy: it stays limited under its own address.
#[tokio::test]
async fn what_a_client_prepends_to_forwarded_never_changes_its_key() {
    let client = "for=203.0.113.5";
    let escapes: [&[(&str, &str)]; 5] = [
        &[("forwarded", "x"), ("forwarded", client)],
        &[("forwarded", r#"for="x, for=203.0.113.5"#)],
        &[("forwarded", r#"for=1.2.3.4;for="\", for=203.0.113.5"#)],
        &[("forwarded", r#"garbage\";;, ,for=203.0.113.5"#)],
        &[(
            "forwarded",
            r#"for="[::1]";by=x, x="a, for=6.6.6.6", for=203.0.113.5"#,
        )],
    ];
    for missing in [MissingKey::Shared, MissingKey::Pass, MissingKey::Reject] {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_clock(
            Quota::per_hour(2).unwrap(),
            clock.clone(),
        )
        .unwrap();
        let layer = RateLimitLayer::builder(ClientIp::forwarded(1), limiter)
            .missing_key(missing)
            .build();
        let inner = Counting::default();
        let mut service = layer.layer(inner.clone());
        for _ in 0..2 {
            let honest = send_with(&mut service, &[("forwarded", client)]).await;
            assert_eq!(honest.status(), StatusCode::OK);
        }
        for escape in escapes {
            let response = send_with(&mut service, escape).await;
            assert_eq!(
                response.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{missing:?} {escape:?}"
            );
        }
        assert_eq!(inner.calls(), 2, "{missing:?}");
        assert_eq!(layer.missing_keys(), 0);
        assert_eq!(layer.unusable_keys(), 0);
        assert_eq!(layer.limiter("default").unwrap().len(), 1);
    }
}

/// A `Forwarded` or `X-Forwarded-For` field that is there but gives no address where the
/// trusted proxy writes is the client's error: 400 under every missing-key policy, never the
/// shared bucket, never a pass, never a 500.
#[tokio::test]
async fn an_unusable_forwarded_identity_is_refused_as_a_client_error() {
    let requests: [(ClientIp, &[(&str, &str)]); 7] = [
        (ClientIp::forwarded(1), &[("forwarded", "for=192.0.2.1, x")]),
        (ClientIp::forwarded(1), &[("forwarded", "for=unknownx")]),
        (ClientIp::forwarded(1), &[("forwarded", "for=_")]),
        (
            ClientIp::forwarded(1),
            &[("forwarded", r#"for="192.0.2.1"#)],
        ),
        (ClientIp::forwarded(2), &[("forwarded", "for=192.0.2.1")]),
        (
            ClientIp::x_forwarded_for(1),
            &[("x-forwarded-for", "1.2.3.4, nope")],
        ),
        (
            ClientIp::x_forwarded_for(1),
            &[("x-forwarded-for", "0.0.0.0")],
        ),
    ];
    for missing in [MissingKey::Shared, MissingKey::Pass, MissingKey::Reject] {
        for (extractor, headers) in requests {
            let clock = ManualClock::new();
            let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_clock(
                Quota::per_hour(100).unwrap(),
                clock.clone(),
            )
            .unwrap();
            let layer = RateLimitLayer::builder(extractor, limiter)
                .missing_key(missing)
                .build();
            let inner = Counting::default();
            let mut service = layer.layer(inner.clone());
            assert_unusable_key(&send_with(&mut service, headers).await);
            assert_unusable_key(&send_with(&mut service, headers).await);
            assert_eq!(inner.calls(), 0, "{missing:?} {headers:?}");
            assert_eq!(layer.limiter("default").unwrap().len(), 0);
            assert_eq!((layer.unusable_keys(), layer.missing_keys()), (2, 0));
        }
    }
}

/// RFC 7239 lets a proxy that does not know the client's address, or hides it, write
/// `unknown` or an obfuscated identifier (and Squid writes `unknown` to `X-Forwarded-For`):
/// from the trusted proxy, that is a request whose client is unknown, under the missing-key
/// policy like one without the field, not the client's error.
#[test]
fn a_trusted_proxy_that_does_not_know_the_client_leaves_the_request_without_a_key() {
    let _turn = log_missing_keys_in_turn();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let requests: [(ClientIp, &[(&str, &str)]); 5] = [
        (ClientIp::forwarded(1), &[("forwarded", "for=unknown")]),
        (
            ClientIp::forwarded(1),
            &[("forwarded", r#"for=192.0.2.1, for="UNKNOWN:443""#)],
        ),
        (
            ClientIp::forwarded(2),
            &[("forwarded", "for=_hidden;proto=https, for=192.0.2.1")],
        ),
        (
            ClientIp::forwarded(1),
            &[("forwarded", r#"for="_abc:_port";by=_proxy"#)],
        ),
        (
            ClientIp::x_forwarded_for(1),
            &[("x-forwarded-for", "192.0.2.1, unknown")],
        ),
    ];
    for (missing, statuses) in [
        (MissingKey::Shared, [200, 200, 429]),
        (MissingKey::Pass, [200, 200, 200]),
        (MissingKey::Reject, [500, 500, 500]),
    ] {
        for (extractor, headers) in requests {
            let clock = ManualClock::new();
            let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_clock(
                Quota::per_hour(2).unwrap(),
                clock.clone(),
            )
            .unwrap();
            let layer = RateLimitLayer::builder(extractor, limiter)
                .missing_key(missing)
                .build();
            let mut service = layer.layer(Counting::default());
            for status in statuses {
                let response = runtime.block_on(send_with(&mut service, headers));
                assert_eq!(response.status(), status, "{missing:?} {headers:?}");
            }
            assert_eq!((layer.unusable_keys(), layer.missing_keys()), (0, 3));
            // Under `Shared` the one key tracked is the shared one, no client's address.
            let tracked = usize::from(missing == MissingKey::Shared);
            assert_eq!(layer.limiter("default").unwrap().len(), tracked);
        }
    }
}

/// An API key sent twice is ambiguous: a client error, not a keyless request that could pass
/// or share another bucket.
#[tokio::test]
async fn a_key_header_sent_twice_is_a_client_error() {
    let clock = ManualClock::new();
    for missing in [MissingKey::Shared, MissingKey::Pass, MissingKey::Reject] {
        let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_hour(1).unwrap()))
            .missing_key(missing)
            .build();
        let inner = Counting::default();
        let mut service = layer.layer(inner.clone());
        assert_eq!(send(&mut service, get("/", Some("k1"))).await.status(), 200);
        assert_eq!(send(&mut service, get("/", Some("k1"))).await.status(), 429);
        for _ in 0..5 {
            let twice = send_with(&mut service, &[("x-api-key", "k1"), ("x-api-key", "k1")]);
            assert_unusable_key(&twice.await);
        }
        assert_eq!(inner.calls(), 1, "{missing:?}");
    }
}

/// The refusal function sees an unusable key as its own case and may answer it its way.
#[tokio::test]
async fn an_unusable_key_reaches_the_rejection_function() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder(api_key(), keyed(&clock, Quota::per_hour(1).unwrap()))
        .reject(|rejection: &Rejection<'_>| {
            let mut response = Response::new(format!("{:?}", rejection.status()));
            if let Rejection::UnusableKey { reason } = rejection {
                *response.body_mut() = (*reason).to_owned();
                *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            }
            response
        })
        .build();
    let mut service = layer.layer(Counting::default());
    let response = send_with(&mut service, &[("x-api-key", "a"), ("x-api-key", "b")]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.body(), "the key header was sent more than once");
}

/// By default IPv6 clients are keyed by their /64: one host cycling through the addresses of
/// its /64 is one client, and cannot fill the key table and lock new clients out.
#[tokio::test]
async fn one_ipv6_64_is_one_client_by_default() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_options(
        Quota::per_hour(10).unwrap(),
        clock.clone(),
        KeyedOptions::default().max_keys(1_000),
    )
    .unwrap();
    let layer = RateLimitLayer::builder(ClientIp::x_forwarded_for(1), limiter).build();
    let mut service = layer.layer(Counting::default());
    let mut admitted = 0;
    for i in 0..1_000u32 {
        let address = format!("2001:db8:1:2::{:x}:{:x}", i >> 16, i & 0xffff);
        if send_with(&mut service, &[("x-forwarded-for", &address)])
            .await
            .status()
            == 200
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(layer.limiter("default").unwrap().len(), 1);
    let newcomer = send_with(&mut service, &[("x-forwarded-for", "198.51.100.77")]).await;
    assert_eq!(newcomer.status(), StatusCode::OK);
}

/// IPv4 clients reaching an IPv6 server through a NAT64 translator on the well-known prefix
/// are keyed by their IPv4 address, whatever the IPv6 prefix length.
#[tokio::test]
async fn nat64_clients_are_keyed_by_their_ipv4_address() {
    for extractor in [
        ClientIp::x_forwarded_for(1),
        ClientIp::x_forwarded_for(1).ipv6_prefix(48).unwrap(),
    ] {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<IpAddr, Gcra, _>::with_clock(
            Quota::per_hour(1).unwrap(),
            clock.clone(),
        )
        .unwrap();
        let layer = RateLimitLayer::builder(extractor, limiter).build();
        let mut service = layer.layer(Counting::default());
        let mut statuses = Vec::new();
        for address in [
            "64:ff9b::192.0.2.1",
            "64:ff9b::203.0.113.9",
            // The same IPv4 clients, translated or not, are the same clients.
            "192.0.2.1",
            "::ffff:203.0.113.9",
        ] {
            let response = send_with(&mut service, &[("x-forwarded-for", address)]).await;
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [200, 200, 429, 429]);
    }
}

/// `t`, `Retry-After` and the problem body's `retry_after` state one number, however long
/// the wait a limiter reports, and it is an integer that JSON readers hold exactly.
#[test]
fn every_field_states_the_same_bounded_wait() {
    for wait in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(999_999_999_999_999),
        Duration::from_secs(1 << 53),
        Duration::from_millis(1_500),
    ] {
        let denied = Decision::denied(10, 0, wait, wait);
        let mut headers = HeaderMap::new();
        let name = PolicyName::new("default").unwrap();
        let policy = QuotaPolicy::new(10, Duration::from_secs(1));
        insert_headers(&mut headers, HeaderStyle::Both, &name, &policy, &denied);
        let t = list(&headers, "ratelimit")[0].params[1].clone();
        assert_eq!(t.0, "t");
        let retry_after: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        let response: Response<String> = ProblemJson.respond(&Rejection::Limited {
            policy: "default",
            decision: denied,
        });
        let body = problem(&response)["retry_after"].as_i64().unwrap();
        assert_eq!((t.1, body), (retry_after, retry_after), "{wait:?}");
        assert!(retry_after < (1 << 53));
        let reset: i64 = headers["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset < (1 << 53));
    }
}

/// A key whose bytes alone exceed the key table's byte cap can never be tracked: the client's
/// error (`400`), not a `429` whose `Retry-After` would have it retry forever. Keys that fit
/// are limited as usual.
#[tokio::test]
async fn a_key_larger_than_the_byte_cap_is_the_clients_error() {
    let limiter = KeyedRateLimiter::<String, Gcra, _>::with_options(
        Quota::per_minute(1).unwrap(),
        ManualClock::new(),
        KeyedOptions::default().max_bytes(1_000),
    )
    .unwrap();
    let layer = RateLimitLayer::builder(api_key(), limiter).build();
    let inner = Counting::default();
    let mut service = layer.layer(inner.clone());
    let long = "k".repeat(2_000);
    let response = send(&mut service, get("/", Some(&long))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(layer.unusable_keys(), 1);
    assert_eq!(
        send(&mut service, get("/", Some("k"))).await.status(),
        StatusCode::OK
    );
    let again = send(&mut service, get("/", Some("k"))).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(inner.calls(), 1);
}
