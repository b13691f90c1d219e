//! Table-driven checks of storability (RFC 9111 §3) and freshness (RFC 9111 §4.2, §5.2;
//! RFC 5861), one row per rule, each citing its section.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use infra_edgecache::http::{
    CacheControl, Decision, Exchange, Freshness, Heuristic, MAX_VARY_FIELDS, NotStorable,
    RequestFacts, ResponseFacts, SetCookiePolicy, VaryKey, storability,
};

/// 2024-01-01T00:00:00Z, when every row's response arrives.
const T0: u64 = 1_704_067_200;

fn http_date(offset_from_t0: i64) -> String {
    let seconds = T0.checked_add_signed(offset_from_t0).unwrap();
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
}

struct Row {
    section: &'static str,
    method: Method,
    request: Vec<(&'static str, String)>,
    status: u16,
    response: Vec<(&'static str, String)>,
    /// Seconds the response has been stored when the request arrives.
    resident: u64,
    storable: Result<(), NotStorable>,
    decision: Decision,
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn row(
    section: &'static str,
    response: &[(&'static str, &str)],
    resident: u64,
    storable: Result<(), NotStorable>,
    decision: Decision,
) -> Row {
    Row {
        section,
        method: Method::GET,
        request: Vec::new(),
        status: 200,
        response: response
            .iter()
            .map(|(n, v)| (*n, (*v).to_owned()))
            .collect(),
        resident,
        storable,
        decision,
    }
}

fn with_request(mut row: Row, request: &[(&'static str, &str)]) -> Row {
    row.request = request.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
    row
}

fn with_status(mut row: Row, status: u16) -> Row {
    row.status = status;
    row
}

fn with_method(mut row: Row, method: Method) -> Row {
    row.method = method;
    row
}

const FRESH: Decision = Decision::Fresh;
const REVALIDATE: Decision = Decision::Revalidate {
    stale_if_error: false,
};
const REVALIDATE_OR_STALE_ON_ERROR: Decision = Decision::Revalidate {
    stale_if_error: true,
};

/// A `Vary` one field longer than the cache matches.
fn many_vary_fields() -> String {
    (0..=MAX_VARY_FIELDS)
        .map(|i| format!("x-field-{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rows() -> Vec<Row> {
    let cc = "cache-control";
    let mut rows = vec![
        row(
            "9111 §5.2.2.1 max-age: fresh while age < lifetime",
            &[(cc, "max-age=60")],
            59,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2 fresh means lifetime > age: stale at equality",
            &[(cc, "max-age=60")],
            60,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.10 s-maxage overrides max-age in a shared cache",
            &[(cc, "max-age=100, s-maxage=10")],
            50,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.1 max-age overrides Expires",
            &[(cc, "max-age=10"), ("expires", &http_date(1000))],
            20,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §1.2.2 a huge delta-seconds saturates, still fresh",
            &[(cc, "max-age=999999999999999")],
            1_000_000_000,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2.1 an invalid max-age makes the response stale",
            &[(cc, "max-age=ten")],
            0,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.1 disagreeing duplicate max-age: stale",
            &[(cc, "max-age=60, max-age=70")],
            0,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.4 response no-cache: always revalidate",
            &[(cc, "max-age=60, no-cache")],
            0,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.5 response no-store",
            &[(cc, "max-age=60, no-store")],
            0,
            Err(NotStorable::NoStore),
            FRESH,
        ),
        row(
            "9111 §5.2.2.7 private is not stored by a shared cache",
            &[(cc, "private, max-age=60")],
            0,
            Err(NotStorable::Private),
            FRESH,
        ),
        row(
            "9110 §5.6.4 a quoted-string that never closes hides what follows (here private)",
            &[(cc, "max-age=60, x=\"unclosed, private")],
            0,
            Err(NotStorable::UnreadableCacheControl),
            FRESH,
        ),
        row(
            "9111 §3 200 without freshness information: storable (default cacheable), lifetime 0",
            &[],
            0,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.2 must-revalidate forbids stale-if-error",
            &[(cc, "max-age=10, must-revalidate, stale-if-error=100")],
            20,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.8 proxy-revalidate forbids stale serving in a shared cache",
            &[(
                cc,
                "max-age=10, proxy-revalidate, stale-while-revalidate=100",
            )],
            20,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.10 s-maxage implies proxy-revalidate",
            &[(cc, "s-maxage=10, stale-while-revalidate=100")],
            20,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "5861 §3 within stale-while-revalidate",
            &[(cc, "max-age=10, stale-while-revalidate=30")],
            35,
            Ok(()),
            Decision::StaleWhileRevalidate,
        ),
        row(
            "5861 §3 past stale-while-revalidate",
            &[(cc, "max-age=10, stale-while-revalidate=30")],
            41,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "5861 §4 within stale-if-error",
            &[(cc, "max-age=10, stale-if-error=60")],
            50,
            Ok(()),
            REVALIDATE_OR_STALE_ON_ERROR,
        ),
        row(
            "5861 §4 past stale-if-error",
            &[(cc, "max-age=10, stale-if-error=60")],
            71,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.2 heuristic: 10 % of the time since Last-Modified",
            &[
                ("date", &http_date(0)),
                ("last-modified", &http_date(-1000)),
            ],
            99,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2.2 heuristic lifetime ends",
            &[
                ("date", &http_date(0)),
                ("last-modified", &http_date(-1000)),
            ],
            100,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.2 heuristic capped at a day",
            &[("last-modified", &http_date(-100 * 86_400))],
            86_400,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.2 heuristic below the cap",
            &[("last-modified", &http_date(-100 * 86_400))],
            86_399,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2.1 Expires minus Date",
            &[("date", &http_date(0)), ("expires", &http_date(100))],
            99,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2.1 Expires reached",
            &[("date", &http_date(0)), ("expires", &http_date(100))],
            100,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.3 Expires: 0 is already expired",
            &[("expires", "0")],
            0,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.3 Age counts toward the current age",
            &[(cc, "max-age=60"), ("age", "50")],
            9,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §4.2.3 Age plus resident time past the lifetime",
            &[(cc, "max-age=60"), ("age", "50")],
            11,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.3 apparent age from an old Date",
            &[(cc, "max-age=60"), ("date", &http_date(-30))],
            31,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §4.2.3 apparent age from an old Date, still fresh",
            &[(cc, "max-age=60"), ("date", &http_date(-30))],
            29,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §3 Set-Cookie: this cache's policy is not to store",
            &[(cc, "max-age=60"), ("set-cookie", "a=b")],
            0,
            Err(NotStorable::SetCookie),
            FRESH,
        ),
        row(
            "9111 §4.1 Vary: * never matches: not stored",
            &[(cc, "max-age=60"), ("vary", "accept, *")],
            0,
            Err(NotStorable::VaryAll),
            FRESH,
        ),
        row(
            "9111 §4.1 a Vary naming more fields than the cache matches: not stored",
            &[(cc, "max-age=60"), ("vary", &many_vary_fields())],
            0,
            Err(NotStorable::VaryAll),
            FRESH,
        ),
        row(
            "9111 §4.1 a Vary member that is not a field name: not stored",
            &[(cc, "max-age=60"), ("vary", "accept, x(y)")],
            0,
            Err(NotStorable::VaryAll),
            FRESH,
        ),
    ];
    rows.extend([
        with_request(
            row(
                "9111 §5.2.1.5 request no-store",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::NoStore),
                FRESH,
            ),
            &[(cc, "no-store")],
        ),
        with_request(
            row(
                "9111 §3.5 Authorization without public/s-maxage/must-revalidate",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::Authorization),
                FRESH,
            ),
            &[("authorization", "Bearer x")],
        ),
        with_request(
            row(
                "9111 §3.5 Authorization with public",
                &[(cc, "public, max-age=60")],
                0,
                Ok(()),
                FRESH,
            ),
            &[("authorization", "Bearer x")],
        ),
        with_request(
            row(
                "9111 §3.5 Authorization with s-maxage",
                &[(cc, "s-maxage=60")],
                0,
                Ok(()),
                FRESH,
            ),
            &[("authorization", "Bearer x")],
        ),
        with_request(
            row(
                "9111 §3.5 Authorization with must-revalidate",
                &[(cc, "must-revalidate, max-age=60")],
                0,
                Ok(()),
                FRESH,
            ),
            &[("authorization", "Bearer x")],
        ),
        with_request(
            row(
                "9111 §5.2.1.4 request no-cache",
                &[(cc, "max-age=60")],
                0,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "no-cache")],
        ),
        with_request(
            row(
                "9111 §5.2.1.1 request max-age below the age",
                &[(cc, "max-age=60")],
                10,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-age=5")],
        ),
        with_request(
            row(
                "9111 §5.2.1.1 request max-age given twice: the smaller bounds the age",
                &[(cc, "max-age=60")],
                3,
                Ok(()),
                FRESH,
            ),
            &[(cc, "max-age=5, max-age=30")],
        ),
        with_request(
            row(
                "9111 §5.2.1.1 request max-age given twice: past the smaller, revalidated",
                &[(cc, "max-age=60")],
                10,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-age=30, max-age=5")],
        ),
        with_request(
            row(
                "9111 §5.2.1.1 request max-age given twice, once unreadable: that one counts as 0",
                &[(cc, "max-age=60")],
                3,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-age=5, max-age=x")],
        ),
        with_request(
            row(
                "9111 §5.2.1.1 request max-age unreadable, then given: the unreadable one counts as 0",
                &[(cc, "max-age=60")],
                3,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-age=x, max-age=5")],
        ),
        with_request(
            row(
                "9111 §5.2.1.3 min-fresh not met",
                &[(cc, "max-age=60")],
                40,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "min-fresh=30")],
        ),
        with_request(
            row(
                "9111 §5.2.1.3 min-fresh met",
                &[(cc, "max-age=60")],
                20,
                Ok(()),
                FRESH,
            ),
            &[(cc, "min-fresh=30")],
        ),
        with_request(
            row(
                "9111 §5.2.1.2 max-stale=20 covers 15 s stale",
                &[(cc, "max-age=10")],
                25,
                Ok(()),
                Decision::StaleAccepted,
            ),
            &[(cc, "max-stale=20")],
        ),
        with_request(
            row(
                "9111 §5.2.1.2 max-stale=20 does not cover 21 s",
                &[(cc, "max-age=10")],
                31,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-stale=20")],
        ),
        with_request(
            row(
                "9111 §5.2.1.2 max-stale without a value: any staleness",
                &[(cc, "max-age=10")],
                10_000,
                Ok(()),
                Decision::StaleAccepted,
            ),
            &[(cc, "max-stale")],
        ),
        with_request(
            row(
                "9111 §5.2.2.2 must-revalidate overrides max-stale",
                &[(cc, "max-age=10, must-revalidate")],
                20,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "max-stale")],
        ),
        with_request(
            row(
                "5861 §4 stale-if-error in the request",
                &[(cc, "max-age=10")],
                50,
                Ok(()),
                REVALIDATE_OR_STALE_ON_ERROR,
            ),
            &[(cc, "stale-if-error=100")],
        ),
        row(
            "9111 §5.2.2.3 must-understand with a status the cache understands: no-store ignored",
            &[(cc, "must-understand, no-store, max-age=60")],
            0,
            Ok(()),
            FRESH,
        ),
        with_status(
            row(
                "9111 §3 must-understand with a status the cache does not understand: not stored",
                &[(cc, "must-understand, max-age=60")],
                0,
                Err(NotStorable::Status),
                FRESH,
            ),
            299,
        ),
        with_request(
            row(
                "9111 §5.2.2.3 must-understand does not override the request's no-store",
                &[(cc, "must-understand, no-store, max-age=60")],
                0,
                Err(NotStorable::NoStore),
                FRESH,
            ),
            &[(cc, "no-store")],
        ),
        with_status(
            row(
                "9111 §3 206 is not stored (no range support)",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::Status),
                FRESH,
            ),
            206,
        ),
        with_status(
            row(
                "9111 §3 a 304 is not stored (it has no content of its own)",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::Status),
                FRESH,
            ),
            304,
        ),
        with_status(
            row(
                "9111 §3 an informational 1xx is not stored (not a final response)",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::Status),
                FRESH,
            ),
            103,
        ),
        with_status(
            row(
                "9111 §3 a 500 with an explicit lifetime is storable",
                &[(cc, "max-age=10")],
                0,
                Ok(()),
                FRESH,
            ),
            500,
        ),
        with_status(
            row(
                "9111 §3 a 500 without one is not",
                &[],
                0,
                Err(NotStorable::NoFreshnessInformation),
                REVALIDATE,
            ),
            500,
        ),
        with_status(
            row(
                "9111 §4.2.2 no heuristic for a 302",
                &[("last-modified", &http_date(-1000))],
                0,
                Err(NotStorable::NoFreshnessInformation),
                REVALIDATE,
            ),
            302,
        ),
        with_status(
            row(
                "9111 §4.2.2 public makes a 302 heuristically cacheable",
                &[(cc, "public"), ("last-modified", &http_date(-1000))],
                50,
                Ok(()),
                FRESH,
            ),
            302,
        ),
        with_status(
            row(
                "9110 §15.1 404 is cacheable by default",
                &[(cc, "max-age=60")],
                0,
                Ok(()),
                FRESH,
            ),
            404,
        ),
        with_method(
            row(
                "9111 §3 POST is not stored",
                &[(cc, "max-age=60")],
                0,
                Err(NotStorable::Method),
                FRESH,
            ),
            Method::POST,
        ),
    ]);
    rows.extend(qualified_directive_rows());
    rows.extend(request_limits_on_stale_rows());
    rows
}

/// `no-cache` and `private` with field names restrict only those fields (§5.2.2.4,
/// §5.2.2.7); without a readable list they restrict the whole response.
fn qualified_directive_rows() -> Vec<Row> {
    let cc = "cache-control";
    vec![
        row(
            "9111 §5.2.2.4 qualified no-cache: reused without revalidation (the fields withheld)",
            &[(cc, "max-age=60, no-cache=\"x-token\"")],
            10,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §5.2.2.4 an empty no-cache list is the unqualified form",
            &[(cc, "max-age=60, no-cache=\"\"")],
            10,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.4 a no-cache list that is not field names is the unqualified form",
            &[(cc, "max-age=60, no-cache=\"x token\"")],
            10,
            Ok(()),
            REVALIDATE,
        ),
        row(
            "9111 §5.2.2.7 qualified private: stored (without the fields)",
            &[(cc, "max-age=60, private=\"x-user\"")],
            10,
            Ok(()),
            FRESH,
        ),
        row(
            "9111 §5.2.2.7 private=\"set-cookie\" lets a response setting a cookie be stored",
            &[
                (cc, "max-age=60, private=\"Set-Cookie\""),
                ("set-cookie", "a=b"),
            ],
            10,
            Ok(()),
            FRESH,
        ),
        with_request(
            row(
                "9111 §5.2.1.4 a request's no-cache with field names still asks for validation",
                &[(cc, "max-age=60")],
                10,
                Ok(()),
                REVALIDATE,
            ),
            &[(cc, "no-cache=\"x-token\"")],
        ),
        row(
            "9111 §5.2.2.7 unqualified private beside a qualified one wins",
            &[(cc, "private=\"x-user\", max-age=60, private")],
            10,
            Err(NotStorable::Private),
            FRESH,
        ),
    ]
}

/// A response 10 s stale (lifetime 10 s, 20 s old) whose own directives `response` allow it
/// to be served stale, asked for with request directives `request`.
fn ten_seconds_stale(
    section: &'static str,
    response: &str,
    request: &str,
    decision: Decision,
) -> Row {
    with_request(
        row(
            section,
            &[("cache-control", response)],
            20,
            Ok(()),
            decision,
        ),
        &[("cache-control", request)],
    )
}

/// The request's limits on stale responses (RFC 9111 §4.2.4, §5.2.1) against the response's
/// permissions (RFC 5861 §3, §4): the request's explicit directives win.
fn request_limits_on_stale_rows() -> Vec<Row> {
    let swr = "max-age=10, stale-while-revalidate=30";
    let sie = "max-age=10, stale-if-error=60";
    vec![
        ten_seconds_stale(
            "9111 §5.2.1.1 request max-age exceeded: no stale-while-revalidate",
            swr,
            "max-age=15",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.1 request max-age without max-stale: the client wants no stale response",
            swr,
            "max-age=30",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.1 + §5.2.1.2 request max-age with max-stale: stale accepted",
            swr,
            "max-age=30, max-stale",
            Decision::StaleAccepted,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.3 request min-fresh: a stale response is not fresh for any longer",
            swr,
            "min-fresh=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.3 request min-fresh=0 still asks for a fresh response",
            swr,
            "min-fresh=0",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.3 min-fresh is stricter than max-stale in the same request",
            swr,
            "max-stale, min-fresh=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.4 request no-cache: no stale-while-revalidate",
            swr,
            "no-cache",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.2 max-stale=5 bounds staleness below the response's window",
            swr,
            "max-stale=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "9111 §5.2.1.2 max-stale=15 covers it: stale accepted without a refresh",
            swr,
            "max-stale=15",
            Decision::StaleAccepted,
        ),
        ten_seconds_stale(
            "5861 §3 a request stale-if-error does not forbid stale-while-revalidate",
            swr,
            "stale-if-error=100",
            Decision::StaleWhileRevalidate,
        ),
        ten_seconds_stale(
            "5861 §4 request no-cache: no stale response on error either",
            sie,
            "no-cache",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 request max-age exceeded: no stale response on error",
            sie,
            "max-age=15",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 request max-age without max-stale: no stale response on error",
            sie,
            "max-age=30",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 request min-fresh: no stale response on error",
            sie,
            "min-fresh=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 request max-stale=5 bounds the staleness served on error",
            sie,
            "max-stale=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 the request's own stale-if-error overrides its no-cache",
            sie,
            "no-cache, stale-if-error=30",
            REVALIDATE_OR_STALE_ON_ERROR,
        ),
        ten_seconds_stale(
            "5861 §4 the request's stale-if-error=5 is its upper limit, whatever the response allows",
            sie,
            "stale-if-error=5",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 an unreadable request stale-if-error overrides nothing",
            sie,
            "no-cache, stale-if-error=soon",
            REVALIDATE,
        ),
        ten_seconds_stale(
            "5861 §4 a request stale-if-error covering the staleness needs no response window",
            "max-age=10",
            "stale-if-error=15",
            REVALIDATE_OR_STALE_ON_ERROR,
        ),
    ]
}

#[test]
fn storability_and_freshness_follow_the_rfcs() {
    let arrival = UNIX_EPOCH + Duration::from_secs(T0);
    let exchange = Exchange {
        request_time: arrival,
        response_time: arrival,
    };
    let mut failures = Vec::new();
    for row in rows() {
        let request = headers(&row.request);
        let response = headers(&row.response);
        let request_cc = CacheControl::from_headers(&request);
        let response_cc = CacheControl::from_headers(&response);
        let status = StatusCode::from_u16(row.status).unwrap();
        let storable = storability(
            RequestFacts {
                method: &row.method,
                headers: &request,
                cache_control: &request_cc,
            },
            ResponseFacts {
                status,
                headers: &response,
                cache_control: &response_cc,
            },
            SetCookiePolicy::default(),
        );
        if storable != row.storable {
            failures.push(format!(
                "{}: storable {storable:?}, expected {:?}",
                row.section, row.storable
            ));
        }
        if row.storable.is_ok() {
            let freshness = Freshness::of_response(
                status,
                &response,
                &response_cc,
                exchange,
                Heuristic::default(),
            );
            let age = freshness.initial_age() + Duration::from_secs(row.resident);
            let decision = freshness.decide(age, &request_cc);
            if decision != row.decision {
                failures.push(format!(
                    "{}: {decision:?}, expected {:?}",
                    row.section, row.decision
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn set_cookie_can_be_stripped_instead() {
    let response = headers(&[
        ("cache-control", "max-age=60".to_owned()),
        ("set-cookie", "a=b".to_owned()),
    ]);
    let cc = CacheControl::from_headers(&response);
    let none = HeaderMap::new();
    let request = RequestFacts {
        method: &Method::GET,
        headers: &none,
        cache_control: &CacheControl::default(),
    };
    let facts = ResponseFacts {
        status: StatusCode::OK,
        headers: &response,
        cache_control: &cc,
    };
    assert_eq!(
        storability(request, facts, SetCookiePolicy::StripAndStore),
        Ok(())
    );
}

#[test]
fn a_round_trip_counts_toward_the_initial_age() {
    // §4.2.3: corrected_age_value = age_value + response_delay.
    let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
    let exchange = Exchange {
        request_time: sent,
        response_time: sent + Duration::from_secs(3),
    };
    let response = headers(&[
        ("cache-control", "max-age=60".to_owned()),
        ("age", "10".to_owned()),
    ]);
    let cc = CacheControl::from_headers(&response);
    let freshness = Freshness::of_response(
        StatusCode::OK,
        &response,
        &cc,
        exchange,
        Heuristic::default(),
    );
    assert_eq!(freshness.initial_age(), Duration::from_secs(13));
}

/// The initial age of a response with `max-age=60` and the `Age` field lines `age`, arrived
/// at once.
fn initial_age_with(age: &[&str]) -> Duration {
    let arrival = UNIX_EPOCH + Duration::from_secs(T0);
    let exchange = Exchange {
        request_time: arrival,
        response_time: arrival,
    };
    let mut response = headers(&[("cache-control", "max-age=60".to_owned())]);
    for line in age {
        response.append("age", HeaderValue::from_str(line).unwrap());
    }
    let cc = CacheControl::from_headers(&response);
    Freshness::of_response(
        StatusCode::OK,
        &response,
        &cc,
        exchange,
        Heuristic::default(),
    )
    .initial_age()
}

#[test]
fn a_list_in_age_counts_its_first_member() {
    // §5.1: a cache meeting a list-based Age "SHOULD use the first member of the field value,
    // discarding subsequent ones"; a value that is then invalid is ignored.
    assert_eq!(initial_age_with(&["10, 20"]), Duration::from_secs(10));
    assert_eq!(initial_age_with(&[" 30 ,5"]), Duration::from_secs(30));
    assert_eq!(initial_age_with(&["40", "50"]), Duration::from_secs(40));
    assert_eq!(initial_age_with(&["x, 20"]), Duration::ZERO);
}

#[test]
fn empty_members_of_an_age_list_are_not_its_first_member() {
    // RFC 9110 §5.6.1.2: a recipient ignores empty list elements (what a sender that merged
    // field lines carelessly leaves), so the first member is the first one with a value.
    assert_eq!(initial_age_with(&[", 20"]), Duration::from_secs(20));
    assert_eq!(initial_age_with(&[" , ,7, 9"]), Duration::from_secs(7));
    assert_eq!(initial_age_with(&["", "20"]), Duration::from_secs(20));
    assert_eq!(initial_age_with(&[",", ""]), Duration::ZERO);
}

#[test]
fn vary_selects_by_the_named_request_fields() {
    // §4.1: absent matches only absent; whitespace between list members is not significant;
    // names are case-insensitive.
    let response = headers(&[("vary", "Accept-Encoding, accept-language".to_owned())]);
    let first = headers(&[("accept-encoding", "gzip, br".to_owned())]);
    let key = VaryKey::new(&response, &first).unwrap();
    assert!(key.matches(&headers(&[("accept-encoding", "gzip,br".to_owned())])));
    assert!(!key.matches(&headers(&[
        ("accept-encoding", "gzip, br".to_owned()),
        ("accept-language", "en".to_owned())
    ])));
    assert!(!key.matches(&headers(&[("accept-encoding", "br, gzip".to_owned())])));
    let many: Vec<String> = (0..=16).map(|i| format!("x-field-{i}")).collect();
    let too_many = headers(&[("vary", many.join(", "))]);
    assert!(
        VaryKey::new(&too_many, &first).is_none(),
        "more than 16 fields"
    );
    let star = headers(&[("vary", "*".to_owned())]);
    assert!(VaryKey::new(&star, &first).is_none());
}
