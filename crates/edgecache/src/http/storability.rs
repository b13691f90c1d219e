//! Whether a shared cache may store a response (RFC 9111 §3), and this cache's `Set-Cookie`
//! policy.

use std::fmt;

use http::header::{AUTHORIZATION, EXPIRES, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};

use super::cache_control::CacheControl;
use super::freshness::is_heuristically_cacheable;
use super::keys::VaryKey;

/// What the cache does with a response that sets a cookie.
///
/// RFC 9111 lets a shared cache store such a response, but serving one user's `Set-Cookie` to
/// every other user is a classic leak, so the default is not to store it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetCookiePolicy {
    /// Pass the response through to its requester and store nothing (the default).
    #[default]
    DoNotStore,
    /// Store the response without its `Set-Cookie` fields: the requester whose fetch brought
    /// it gets the cookie, later hits do not.
    StripAndStore,
}

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotStorable {
    /// The method is not GET or HEAD.
    Method,
    /// A status this cache does not store: informational, 206 (no range support), 304, or
    /// one RFC 9110 does not define in a response that says `must-understand` (§5.2.2.3).
    Status,
    /// `no-store` in the request, or in the response without `must-understand` (§3,
    /// §5.2.1.5, §5.2.2.5, §5.2.2.3).
    NoStore,
    /// `private` without field names in the response: a shared cache must not store it
    /// (§5.2.2.7; with field names it stores the response without them).
    Private,
    /// The request carried `Authorization` and the response did not say `public`, `s-maxage`
    /// or `must-revalidate` (§3.5).
    Authorization,
    /// `Set-Cookie` under [`SetCookiePolicy::DoNotStore`], unless the response says
    /// `private="set-cookie"`.
    SetCookie,
    /// `Vary: *` (storable by the RFC, but never reusable, §4.1), or a `Vary` this cache
    /// cannot match: a malformed field name or more than [`MAX_VARY_FIELDS`] of them.
    ///
    /// [`MAX_VARY_FIELDS`]: super::MAX_VARY_FIELDS
    VaryAll,
    /// Neither an explicit lifetime, `public`, nor a status cacheable by default (§3).
    NoFreshnessInformation,
    /// A `Cache-Control` past the parser's limits, or with a quoted-string that never closes:
    /// its unread part might have said `no-store`.
    UnreadableCacheControl,
}

impl fmt::Display for NotStorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotStorable::Method => "the method is not GET or HEAD",
            NotStorable::Status => "the status code is not stored",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::Authorization => {
                "an authorized request without public, s-maxage or must-revalidate"
            }
            NotStorable::SetCookie => "Set-Cookie",
            NotStorable::VaryAll => "Vary: * or an unusable Vary",
            NotStorable::NoFreshnessInformation => {
                "no explicit lifetime, public, or default-cacheable status"
            }
            NotStorable::UnreadableCacheControl => "an unreadable Cache-Control",
        })
    }
}

/// The request half of an exchange, as storability sees it.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
    /// The request's parsed `Cache-Control`.
    pub cache_control: &'a CacheControl,
}

/// The response half of an exchange, as storability sees it.
#[derive(Clone, Copy, Debug)]
pub struct ResponseFacts<'a> {
    /// The response status.
    pub status: StatusCode,
    /// The response's header fields.
    pub headers: &'a HeaderMap,
    /// The response's parsed `Cache-Control`.
    pub cache_control: &'a CacheControl,
}

/// Checks RFC 9111 §3 for a shared cache, plus this cache's own choices (`Set-Cookie`,
/// `Vary: *` or one it cannot match, unreadable `Cache-Control`).
///
/// ```
/// use http::{HeaderMap, Method, StatusCode};
/// use infra_edgecache::http::{
///     storability, CacheControl, NotStorable, RequestFacts, ResponseFacts, SetCookiePolicy,
/// };
///
/// let none = HeaderMap::new();
/// let request = RequestFacts { method: &Method::GET, headers: &none, cache_control: &CacheControl::default() };
/// let mut headers = HeaderMap::new();
/// headers.insert("cache-control", "private, max-age=60".parse()?);
/// let cc = CacheControl::from_headers(&headers);
/// let response = ResponseFacts { status: StatusCode::OK, headers: &headers, cache_control: &cc };
/// assert_eq!(storability(request, response, SetCookiePolicy::default()), Err(NotStorable::Private));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn storability(
    request: RequestFacts<'_>,
    response: ResponseFacts<'_>,
    set_cookie: SetCookiePolicy,
) -> Result<(), NotStorable> {
    let cc = response.cache_control;
    if request.cache_control.unreadable() || cc.unreadable() {
        return Err(NotStorable::UnreadableCacheControl);
    }
    if *request.method != Method::GET && *request.method != Method::HEAD {
        return Err(NotStorable::Method);
    }
    let code = response.status.as_u16();
    if !(200..=599).contains(&code) || code == 206 || code == 304 {
        return Err(NotStorable::Status);
    }
    // §5.2.2.3: `must-understand` limits storing to caches that know the status code's
    // caching rules, and one that does "SHOULD ignore the no-store directive" (which the
    // origin sends for the caches that do not).
    if cc.must_understand() && !is_understood(response.status) {
        return Err(NotStorable::Status);
    }
    if request.cache_control.no_store() || (cc.no_store() && !cc.must_understand()) {
        return Err(NotStorable::NoStore);
    }
    if cc.private() {
        return Err(NotStorable::Private);
    }
    if request.headers.contains_key(AUTHORIZATION)
        && !(cc.public() || cc.s_maxage().is_some() || cc.must_revalidate())
    {
        return Err(NotStorable::Authorization);
    }
    // `private="set-cookie"` (§5.2.2.7) has the cache store the response without its cookies.
    if set_cookie == SetCookiePolicy::DoNotStore
        && response.headers.contains_key(SET_COOKIE)
        && !cc.private_fields().contains(&SET_COOKIE)
    {
        return Err(NotStorable::SetCookie);
    }
    if VaryKey::new(response.headers, request.headers).is_none() {
        return Err(NotStorable::VaryAll);
    }
    let explicit =
        response.headers.contains_key(EXPIRES) || cc.max_age().is_some() || cc.s_maxage().is_some();
    if explicit || cc.public() || is_heuristically_cacheable(response.status) {
        Ok(())
    } else {
        Err(NotStorable::NoFreshnessInformation)
    }
}

/// The final status codes RFC 9110 §15 defines, whose caching rules this cache follows.
fn is_understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}
