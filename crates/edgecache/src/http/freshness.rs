//! Freshness (RFC 9111 §4.2) and the RFC 5861 stale extensions, as a shared cache sees them.
//!
//! A response's [`Freshness`] is computed once, when it arrives: its freshness lifetime
//! (§4.2.1), its corrected initial age (§4.2.3) and what it allows once stale. Each later
//! request asks [`Freshness::decide`] with the current age (initial age plus the time the
//! response has spent in this cache, read from a monotonic clock so a wall-clock step cannot
//! make it younger) and the request's own directives.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::cache_control::{CacheControl, Delta, MaxStale};

/// Heuristic freshness for responses without an explicit lifetime (§4.2.2).
///
/// The lifetime is `percent` % of the time since `Last-Modified` (measured at the response's
/// `Date`), capped at `max`. Only heuristically cacheable status codes (RFC 9110 §15.1) and
/// responses marked `public` get one; the rest have lifetime zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heuristic {
    /// The share of the time since the last modification, in percent (the RFC's example: 10).
    pub percent: u32,
    /// The longest heuristic lifetime.
    pub max: Duration,
}

impl Default for Heuristic {
    /// 10 % of the time since the last modification, at most one day.
    fn default() -> Self {
        Self {
            percent: 10,
            max: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// When the exchange that brought a response happened, on the wall clock (§4.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// When the request was sent.
    pub request_time: SystemTime,
    /// When the response arrived.
    pub response_time: SystemTime,
}

/// What the cache may do with a stored response for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Fresh enough for this request: serve it.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it: serve it without contacting the origin.
    StaleAccepted,
    /// Stale within `stale-while-revalidate` (RFC 5861 §3): serve it and refresh it in the
    /// background.
    StaleWhileRevalidate,
    /// The origin must be asked (conditionally, where the response has validators).
    Revalidate {
        /// Whether the stored response may be served if the origin fails (RFC 5861 §4).
        stale_if_error: bool,
    },
}

/// The freshness facts of one stored response.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use infra_edgecache::http::{CacheControl, Decision, Exchange, Freshness, Heuristic};
/// use std::time::{Duration, SystemTime};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("cache-control", "max-age=60, stale-while-revalidate=30".parse()?);
/// let now = SystemTime::now();
/// let exchange = Exchange { request_time: now, response_time: now };
/// let freshness = Freshness::of_response(
///     StatusCode::OK, &headers, &CacheControl::from_headers(&headers), exchange, Heuristic::default(),
/// );
/// assert_eq!(freshness.lifetime(), Duration::from_secs(60));
/// let plain = CacheControl::default();
/// assert_eq!(freshness.decide(Duration::from_secs(59), &plain), Decision::Fresh);
/// assert_eq!(freshness.decide(Duration::from_secs(80), &plain), Decision::StaleWhileRevalidate);
/// assert_eq!(
///     freshness.decide(Duration::from_secs(91), &plain),
///     Decision::Revalidate { stale_if_error: false },
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    lifetime: Duration,
    initial_age: Duration,
    /// `no-cache`: never served without validation (§5.2.2.4).
    no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale (§5.2.2.2,
    /// §5.2.2.8, and §5.2.2.10, where `s-maxage` implies `proxy-revalidate`).
    revalidate_when_stale: bool,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
}

impl Freshness {
    /// Computes the freshness of a response received in `exchange`.
    pub fn of_response(
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        exchange: Exchange,
        heuristic: Heuristic,
    ) -> Self {
        let date = header_date(headers, &DATE);
        Self {
            lifetime: lifetime(status, headers, cc, date, exchange, heuristic),
            initial_age: corrected_initial_age(headers, date, exchange),
            no_cache: cc.no_cache(),
            revalidate_when_stale: cc.must_revalidate()
                || cc.proxy_revalidate()
                || cc.s_maxage().is_some(),
            stale_while_revalidate: cc.stale_while_revalidate().map(delta),
            stale_if_error: cc.stale_if_error().map(delta),
        }
    }

    /// The facts as stored, for the shared tier's encoding: lifetime, initial age, `no-cache`,
    /// never-serve-stale, `stale-while-revalidate`, `stale-if-error`.
    pub(crate) fn parts(&self) -> FreshnessParts {
        FreshnessParts {
            lifetime: self.lifetime,
            initial_age: self.initial_age,
            no_cache: self.no_cache,
            revalidate_when_stale: self.revalidate_when_stale,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
        }
    }

    /// The freshness [`Freshness::parts`] described.
    pub(crate) fn from_parts(parts: FreshnessParts) -> Self {
        Self {
            lifetime: parts.lifetime,
            initial_age: parts.initial_age,
            no_cache: parts.no_cache,
            revalidate_when_stale: parts.revalidate_when_stale,
            stale_while_revalidate: parts.stale_while_revalidate,
            stale_if_error: parts.stale_if_error,
        }
    }

    /// The same facts for a copy of the response that is `age` old on arrival (a copy taken
    /// from the shared tier).
    #[cfg(feature = "redis")]
    pub(crate) fn with_initial_age(self, age: Duration) -> Self {
        Self {
            initial_age: age,
            ..self
        }
    }

    /// The freshness lifetime (§4.2.1).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The corrected initial age (§4.2.3): the response's age when it arrived.
    pub fn initial_age(&self) -> Duration {
        self.initial_age
    }

    /// Whether a response of age `age` is fresh (§4.2: lifetime greater than age).
    pub fn is_fresh(&self, age: Duration) -> bool {
        self.lifetime > age
    }

    /// How long the cache should keep the response: its lifetime plus the longest stale
    /// window it grants, beyond its initial age. Past this only a revalidation could use it,
    /// so the caller adds its own allowance for keeping validators.
    pub fn stale_horizon(&self) -> Duration {
        let window = if !self.servable_stale() {
            Duration::ZERO
        } else {
            self.stale_while_revalidate
                .unwrap_or_default()
                .max(self.stale_if_error.unwrap_or_default())
        };
        self.lifetime
            .saturating_add(window)
            .saturating_sub(self.initial_age)
    }

    /// Whether the response may stand in for an origin error at age `age` (RFC 5861 §4).
    ///
    /// Never when the response forbids serving it stale (`no-cache`, `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`: RFC 9111 §4.2.4). A readable `stale-if-error` in the
    /// request is the client's explicit consent to a stale answer on error and its upper
    /// limit on that answer's staleness (RFC 5861 §4, scoped to its request): it alone
    /// decides, over the request's other limits and the response's window. Otherwise the
    /// response's window applies, within the request's limits on stale responses (see
    /// [`Freshness::decide`]: `no-cache`, `min-fresh`, `max-age` without `max-stale`, a
    /// `max-stale` bound), since RFC 5861 §4 lets a cache serve stale on error only where
    /// nothing in the request or response forbids it.
    pub fn allows_stale_if_error(&self, age: Duration, request: &CacheControl) -> bool {
        if !self.servable_stale() {
            return false;
        }
        let staleness = age.saturating_sub(self.lifetime);
        if let Some(Delta::Seconds(limit)) = request.stale_if_error() {
            return staleness <= Duration::from_secs(limit.into());
        }
        self.stale_if_error.is_some_and(|window| {
            staleness <= window && request_staleness(age, request).accepts(staleness)
        })
    }

    /// What to do with this response, at current age `age`, for a request with directives
    /// `request` (§4.2, §5.2.1, RFC 5861).
    ///
    /// A fresh response is served unless the response says `no-cache` (§5.2.2.4) or the
    /// request says `no-cache` (§5.2.1.4), is older than the request's `max-age` (§5.2.1.1)
    /// or has less left than its `min-fresh` (§5.2.1.3).
    ///
    /// A stale response is served without contacting the origin only where both sides allow
    /// it (§4.2.4: never when an explicit directive forbids it):
    ///
    /// - the response must not forbid it (`no-cache`, `must-revalidate`, `proxy-revalidate`,
    ///   `s-maxage`: §5.2.2.2, §5.2.2.4, §5.2.2.8, §5.2.2.10);
    /// - the request must not forbid it: `no-cache` (§5.2.1.4), any `min-fresh` (§5.2.1.3: a
    ///   stale response stays fresh for no time at all; stricter than a `max-stale` beside
    ///   it), or `max-age` without `max-stale` (§5.2.1.1: "unless the max-stale request
    ///   directive is also present, the client does not wish to receive a stale response");
    /// - a request `max-stale` covering the staleness serves it as
    ///   [`Decision::StaleAccepted`] (§5.2.1.2); one that does not cover it bounds what the
    ///   client accepts, so the response's `stale-while-revalidate` does not stretch it;
    /// - with none of these, the response's `stale-while-revalidate` window decides
    ///   (RFC 5861 §3).
    ///
    /// Everything else is [`Decision::Revalidate`], carrying
    /// [`Freshness::allows_stale_if_error`].
    pub fn decide(&self, age: Duration, request: &CacheControl) -> Decision {
        let revalidate = Decision::Revalidate {
            stale_if_error: self.allows_stale_if_error(age, request),
        };

        if self.no_cache || request_no_cache(request) {
            return revalidate;
        }
        // §5.2.1.1: the client will not accept a response older than its max-age.
        if request
            .request_max_age()
            .is_some_and(|max| age > delta(max))
        {
            return revalidate;
        }
        if self.is_fresh(age) {
            // §5.2.1.3: the client wants it to stay fresh for at least min-fresh more.
            let remaining = self.lifetime - age;
            if request
                .min_fresh()
                .is_some_and(|min| remaining < delta(min))
            {
                return revalidate;
            }
            return Decision::Fresh;
        }
        if !self.servable_stale() {
            return revalidate;
        }
        let staleness = age - self.lifetime;
        let limits = request_staleness(age, request);
        match limits {
            RequestStaleness::Accepted(_) if limits.accepts(staleness) => Decision::StaleAccepted,
            RequestStaleness::Unstated
                if self
                    .stale_while_revalidate
                    .is_some_and(|window| staleness <= window) =>
            {
                Decision::StaleWhileRevalidate
            }
            _ => revalidate,
        }
    }

    /// Whether the response's own directives let it be served stale at all (§4.2.4).
    fn servable_stale(&self) -> bool {
        !self.no_cache && !self.revalidate_when_stale
    }
}

/// What a request's directives say about stale responses (RFC 9111 §5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestStaleness {
    /// `no-cache`, `min-fresh`, `max-age` without `max-stale`, or a `max-age` the response's
    /// age exceeds: no stale response.
    Forbidden,
    /// `max-stale`: stale by at most this much (any, without a value).
    Accepted(Option<Duration>),
    /// Nothing about staleness: the response's RFC 5861 windows decide.
    Unstated,
}

impl RequestStaleness {
    /// Whether the request takes a response stale by `staleness`, as far as it is concerned.
    fn accepts(self, staleness: Duration) -> bool {
        match self {
            Self::Forbidden => false,
            Self::Accepted(limit) => limit.is_none_or(|limit| staleness <= limit),
            Self::Unstated => true,
        }
    }
}

/// A request's `no-cache` (§5.2.1.4), which takes no field names: a request naming some
/// still asks for validation.
fn request_no_cache(request: &CacheControl) -> bool {
    request.no_cache() || !request.no_cache_fields().is_empty()
}

/// The request's limits on a stale response of age `age` (§5.2.1.1 to §5.2.1.4).
fn request_staleness(age: Duration, request: &CacheControl) -> RequestStaleness {
    let max_age = request.request_max_age();
    if request_no_cache(request)
        || request.min_fresh().is_some()
        || max_age.is_some_and(|max| age > delta(max))
    {
        return RequestStaleness::Forbidden;
    }
    match request.max_stale() {
        Some(MaxStale::Any) => RequestStaleness::Accepted(None),
        Some(MaxStale::Seconds(limit)) => {
            RequestStaleness::Accepted(Some(Duration::from_secs(limit.into())))
        }
        None if max_age.is_some() => RequestStaleness::Forbidden,
        None => RequestStaleness::Unstated,
    }
}

/// The fields of a [`Freshness`], for encoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FreshnessParts {
    pub(crate) lifetime: Duration,
    pub(crate) initial_age: Duration,
    pub(crate) no_cache: bool,
    pub(crate) revalidate_when_stale: bool,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

fn delta(value: Delta) -> Duration {
    Duration::from_secs(value.seconds_or_zero())
}

/// The first field line of `name` parsed as an HTTP-date; `None` when absent or invalid.
pub(crate) fn header_date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

/// The freshness lifetime for a shared cache (§4.2.1): `s-maxage`, else `max-age`, else
/// `Expires` minus `Date`, else a heuristic (§4.2.2), else zero.
fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    cc: &CacheControl,
    date: Option<SystemTime>,
    exchange: Exchange,
    heuristic: Heuristic,
) -> Duration {
    if let Some(value) = cc.s_maxage().or(cc.max_age()) {
        return delta(value);
    }
    // Without a valid Date, the time the response arrived stands in for it (§4.2.1 computes
    // Expires minus Date; RFC 9110 §6.6.1 has a recipient supply a missing Date).
    let date = date.unwrap_or(exchange.response_time);
    if headers.contains_key(EXPIRES) {
        // §5.3: an invalid date, such as "0", means already expired.
        return header_date(headers, &EXPIRES)
            .and_then(|expires| expires.duration_since(date).ok())
            .unwrap_or_default();
    }
    let heuristically_cacheable = is_heuristically_cacheable(status) || cc.public();
    match header_date(headers, &LAST_MODIFIED) {
        Some(modified) if heuristically_cacheable => {
            let since = date.duration_since(modified).unwrap_or_default();
            (since / 100)
                .saturating_mul(heuristic.percent)
                .min(heuristic.max)
        }
        _ => Duration::ZERO,
    }
}

/// The corrected initial age (§4.2.3).
fn corrected_initial_age(
    headers: &HeaderMap,
    date: Option<SystemTime>,
    exchange: Exchange,
) -> Duration {
    let apparent_age = date
        .and_then(|date| exchange.response_time.duration_since(date).ok())
        .unwrap_or_default();
    let response_delay = exchange
        .response_time
        .duration_since(exchange.request_time)
        .unwrap_or_default();
    // §5.1: Age is delta-seconds; an unreadable one is ignored, and of a list only the first
    // member counts (a cache "SHOULD use the first member ..., discarding subsequent ones").
    let age_value = first_member(headers.get_all(AGE).iter()).map_or(Duration::ZERO, |text| {
        Duration::from_secs(parse_age(text).seconds_or_zero())
    });
    let corrected_age_value = age_value.saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// The first member of a list field's lines, without the whitespace around it: empty
/// members are skipped, as RFC 9110 §5.6.1.2 has a recipient ignore them. `None` if there is
/// none, or the line holding it is not text.
fn first_member<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> Option<&'a str> {
    lines
        .flat_map(|line| line.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .find(|member| !member.is_empty())
        .and_then(|member| std::str::from_utf8(member).ok())
}

fn parse_age(text: &str) -> Delta {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Delta::Invalid;
    }
    let seconds = text.bytes().fold(0u32, |value, digit| {
        value
            .saturating_mul(10)
            .saturating_add(u32::from(digit - b'0'))
            .min(1 << 31)
    });
    Delta::Seconds(seconds)
}

/// RFC 9110 §15.1: status codes cacheable by default.
pub(crate) fn is_heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}
