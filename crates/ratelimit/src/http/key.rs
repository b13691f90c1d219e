//! Who a request counts against: the key extractors, and what happens when there is no key.

use std::fmt;

use http::HeaderName;
use http::request::Parts;

/// Finds the key a request is limited under: a client address, an API key, a user id.
///
/// Extractors read the request's head ([`Parts`]: method, URI, headers, extensions), never its
/// body, so one extractor serves every body type (axum's, hyper's, a test's `()`). Provided:
/// [`ClientIp`](super::ClientIp) (the peer address, or `X-Forwarded-For` / `Forwarded` behind
/// trusted proxies), [`HeaderKey`] (a named header) and [`key_fn`] (your function).
///
/// ```
/// use http::Request;
/// use infra_ratelimit::http::{KeyExtractor, key_fn};
///
/// // The closure's argument is inferred: no type to write, whatever the body type.
/// let tenant = key_fn(|parts| parts.uri.path().split('/').nth(1).map(str::to_owned));
/// let (parts, _body) = Request::get("/acme/orders").body(()).unwrap().into_parts();
/// assert_eq!(tenant.extract(&parts).as_deref(), Ok("acme"));
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key type.
    type Key: Send + 'static;

    /// The request's key; [`NoKey::Missing`] when the request does not carry one (see
    /// [`MissingKey`]), [`NoKey::Unusable`] when it carries one that cannot be used.
    ///
    /// # Errors
    ///
    /// Why the request has no key.
    fn extract(&self, request: &Parts) -> Result<Self::Key, NoKey>;

    /// The key that requests without a key share under [`MissingKey::Shared`]: one that
    /// [`KeyExtractor::extract`] never returns, so no client's own limit is touched.
    fn shared_key(&self) -> Self::Key;
}

/// Why a request has no key.
///
/// The two cases differ in who is at fault. A *missing* identity (no connect info, no
/// header at all, a trusted proxy that does not know the client's address) is the
/// deployment's: the layer applies the [`MissingKey`] policy. An
/// *unusable* one is the client's: the identity is there but malformed, ambiguous (a
/// [`HeaderKey`] header sent twice) or not where the trusted proxies put it. Letting such a
/// request share a bucket, or pass, would let any client leave its own limit by sending a
/// malformed header, so the layer always refuses it
/// ([`Rejection::UnusableKey`](super::Rejection::UnusableKey): `400 Bad Request` by default).
///
/// ```
/// use http::Request;
/// use infra_ratelimit::http::{HeaderKey, KeyExtractor, NoKey};
///
/// let api_key = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
/// let (none, _) = Request::get("/").body(()).unwrap().into_parts();
/// assert_eq!(api_key.extract(&none), Err(NoKey::Missing));
/// let (twice, _) =
///     Request::get("/").header("x-api-key", "a").header("x-api-key", "b").body(()).unwrap().into_parts();
/// assert!(matches!(api_key.extract(&twice), Err(NoKey::Unusable { .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoKey {
    /// The request carries no identity: the [`MissingKey`] policy applies.
    Missing,
    /// The request carries an identity that cannot be used: refused as a client error.
    Unusable {
        /// What is wrong with it, for the response and logs (never the request's bytes).
        reason: &'static str,
    },
}

/// What the layer does with a request whose extractor finds no key.
///
/// A missing key is usually a deployment mistake: the server was not started with connection
/// info (axum's `into_make_service_with_connect_info`), the proxy does not add its header, or
/// a client reached the service around the proxy. The layer counts every such request
/// ([`RateLimitLayer::missing_keys`](super::RateLimitLayer::missing_keys)) and logs the first
/// one at `WARN` through `tracing`, whatever the choice here.
///
/// ```
/// use infra_ratelimit::http::MissingKey;
///
/// assert_eq!(MissingKey::default(), MissingKey::Shared);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MissingKey {
    /// Limit every keyless request under one shared key (the extractor's
    /// [`KeyExtractor::shared_key`]), by the policy the request's route selects. The safe
    /// default: keyless traffic is limited as one client, never unlimited.
    #[default]
    Shared,
    /// Refuse keyless requests without calling the service: `500 Internal Server Error` from
    /// the default rejection, since the server, not the client, failed to identify the caller.
    /// A key the client must send (an API-key header) calls for a `4xx` instead: answer it
    /// from your rejection function ([`Rejection::MissingKey`](super::Rejection::MissingKey)).
    Reject,
    /// Serve keyless requests without limiting them.
    Pass,
}

/// A [`KeyExtractor`] from a function of the request's head; made by [`key_fn`].
#[derive(Clone)]
pub struct KeyFn<F, K> {
    extract: F,
    shared: K,
}

/// An extractor calling `extract`, a closure whose argument type is inferred; `None` is a
/// missing key ([`NoKey::Missing`]). Keyless requests share `K::default()` under [`MissingKey::Shared`] (an empty string, `0`): if that
/// can be a real key, name another with [`KeyFn::with_shared_key`].
///
/// ```
/// use infra_ratelimit::http::{KeyExtractor, key_fn};
///
/// let user = key_fn(|parts| {
///     parts.headers.get("x-user-id")?.to_str().ok()?.parse::<u64>().ok()
/// })
/// .with_shared_key(u64::MAX); // 0 is a real user id here
/// assert_eq!(user.shared_key(), u64::MAX);
/// ```
pub fn key_fn<F, K>(extract: F) -> KeyFn<F, K>
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    K: Default + Send + Sync + 'static,
{
    KeyFn {
        extract,
        shared: K::default(),
    }
}

impl<F, K> KeyFn<F, K> {
    /// Keyless requests share `key` instead of `K::default()`.
    #[must_use]
    pub fn with_shared_key(self, key: K) -> Self {
        Self {
            shared: key,
            ..self
        }
    }
}

impl<F, K> KeyExtractor for KeyFn<F, K>
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    K: Clone + Send + Sync + 'static,
{
    type Key = K;

    fn extract(&self, request: &Parts) -> Result<K, NoKey> {
        (self.extract)(request).ok_or(NoKey::Missing)
    }

    fn shared_key(&self) -> K {
        self.shared.clone()
    }
}

impl<F, K: fmt::Debug> fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// Keys requests by the value of a named header (an API key, a tenant id).
///
/// The value must be printable ASCII, spaces and tabs included, and non-empty once spaces and
/// tabs are trimmed from its ends (`"a b"` is a key of its own). A request without
/// the header has no key ([`NoKey::Missing`]); one with an empty or non-ASCII value, or with
/// the header more than once (which copy would count?), has an unusable one
/// ([`NoKey::Unusable`]), which the layer refuses. Keyless requests share the empty string.
///
/// ```
/// use http::Request;
/// use infra_ratelimit::http::{HeaderKey, KeyExtractor, NoKey};
///
/// let api_key = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
/// let (parts, _) = Request::get("/").header("x-api-key", " k-123 ").body(()).unwrap().into_parts();
/// assert_eq!(api_key.extract(&parts).as_deref(), Ok("k-123"));
/// let (parts, _) = Request::get("/").body(()).unwrap().into_parts();
/// assert_eq!(api_key.extract(&parts), Err(NoKey::Missing));
/// ```
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    type Key = String;

    fn extract(&self, request: &Parts) -> Result<String, NoKey> {
        let mut values = request.headers.get_all(&self.name).iter();
        let value = values.next().ok_or(NoKey::Missing)?;
        if values.next().is_some() {
            return Err(NoKey::Unusable {
                reason: "the key header was sent more than once",
            });
        }
        let unusable = NoKey::Unusable {
            reason: "the key header is empty or not printable ASCII",
        };
        let value = value
            .to_str()
            .map_err(|_| unusable)?
            .trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(unusable);
        }
        Ok(value.to_owned())
    }

    fn shared_key(&self) -> String {
        String::new()
    }
}
