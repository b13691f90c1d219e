//! Cache keys (RFC 9111 §2, §4.1): a primary key of method and target URI, and a secondary
//! key of the request fields a response's `Vary` names.

use std::fmt;

use http::header::{HOST, VARY};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, Method, Uri};

/// The most field names a `Vary` may list for the response to be stored.
pub const MAX_VARY_FIELDS: usize = 16;

/// The primary cache key: the request method and the target URI without its scheme, the host
/// lower-cased (it is case-insensitive, RFC 3986 §6.2.2.1) and without a default port (`:80`,
/// `:443`, RFC 9110 §4.2.3) and without userinfo, and the path and query kept as they are. A request in origin form (no authority in the URI) takes its host from `Host`.
///
/// The scheme is not part of the key, since a request in origin form does not carry it: a
/// cache that fronts both `http` and `https` for one host must tell them apart itself (for
/// instance by putting the scheme in the host it passes), or an `http` answer, such as a
/// redirect to `https`, would be served to `https` requests.
///
/// ```
/// use http::{HeaderMap, Method, Uri};
/// use infra_edgecache::http::PrimaryKey;
///
/// let a = PrimaryKey::new(&Method::GET, &Uri::from_static("http://Example.COM/a?b"), &HeaderMap::new());
/// let mut headers = HeaderMap::new();
/// headers.insert("host", "example.com".parse()?);
/// let b = PrimaryKey::new(&Method::GET, &Uri::from_static("/a?b"), &headers);
/// assert_eq!(a, b);
/// assert_eq!(a.as_str(), "GET example.com/a?b");
/// let https = PrimaryKey::new(&Method::GET, &Uri::from_static("https://example.com/a?b"), &HeaderMap::new());
/// assert_eq!(https, a, "the scheme is not in the key");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrimaryKey(Box<str>);

impl PrimaryKey {
    /// The key of a request.
    pub fn new(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        let host = match uri.authority() {
            Some(authority) => normalised_host(without_userinfo(authority), uri.scheme_str()),
            None => headers
                .get(HOST)
                .and_then(|value| value.to_str().ok())
                .map(|host| normalised_host(host, None))
                .unwrap_or_default(),
        };
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // The scheme is left out on purpose: one cache normally fronts one scheme, and a
        // request in origin form does not carry it. Users who front both put it in the host.
        Self(format!("{method} {host}{path}").into_boxed_str())
    }

    /// The key as text: `METHOD host/path?query`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(feature = "tokio")]
    /// The same target under another method (a purge clears GET and HEAD alike).
    pub(crate) fn with_method(&self, method: &Method) -> Self {
        Self(format!("{method} {}", self.target()).into_boxed_str())
    }

    #[cfg(feature = "tokio")]
    /// Whether the key holds a host. One made from a request that named none (a target in
    /// origin form without `Host`, which RFC 9112 §3.2 has servers refuse), or an empty one,
    /// holds its path alone: shared by the paths of every host behind the cache, and named by
    /// no purge by URL. The cache does not store under such a key.
    pub(crate) fn names_a_host(&self) -> bool {
        // A method has no space, so the target starts after the first one. A byte loop over
        // the few bytes of a method: `str::split_once` costs about 100 instructions more, on
        // every request.
        let bytes = self.0.as_bytes();
        let target = bytes
            .iter()
            .position(|&byte| byte == b' ')
            .map(|space| space + 1);
        target.and_then(|start| bytes.get(start)) != Some(&b'/')
    }

    #[cfg(feature = "tokio")]
    /// The key without its method (`host/path?query`): what a purge by URL names.
    pub(crate) fn target(&self) -> &str {
        self.0.split_once(' ').map_or("", |(_, target)| target)
    }

    #[cfg(feature = "tokio")]
    /// The key, under this key's method, of the URI a `Location` or `Content-Location` value
    /// names, if it has this key's host (§4.4 invalidates only those: another host's entries
    /// are not this response's to clear). Understood: an absolute URI (`http://host/path`)
    /// and an absolute path (`/path`); any other reference, or a value that is not a URI,
    /// names nothing.
    pub(crate) fn same_host_reference(&self, value: &[u8]) -> Option<Self> {
        let target = self.target();
        let host = target.find('/').map_or(target, |slash| &target[..slash]);
        let method = self.0.split_once(' ').map_or("", |(method, _)| method);
        let path = if value.starts_with(b"/") && !value.starts_with(b"//") {
            Uri::try_from(value)
                .ok()?
                .path_and_query()?
                .as_str()
                .to_owned()
        } else {
            let uri = Uri::try_from(value).ok()?;
            uri.scheme()?;
            if normalised_host(without_userinfo(uri.authority()?), uri.scheme_str()) != host {
                return None;
            }
            uri.path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned()
        };
        Some(Self(format!("{method} {host}{path}").into_boxed_str()))
    }
}

/// Whether the request names its host so that its key names only its own URL: a target
/// without userinfo (RFC 9110 §4.2.4), at most one `Host` field, which is
/// `uri-host [ ":" port ]` (RFC 9110 §7.2) and, beside a target in absolute form, names the
/// target's host (RFC 9112 §3.2.2, RFC 9113 §8.3.1). A `Host` holding
/// `/` or `?` would splice a path into the key (`Host: a.test/admin` with target `/x` would be
/// keyed as `a.test/admin/x`); and an origin may route by a `Host` the key does not hold, or
/// by either of two. (A request naming no host at all is refused by the caller, from its key:
/// [`PrimaryKey::names_a_host`].)
#[cfg(feature = "tokio")]
pub(crate) fn host_is_keyable(uri: &Uri, headers: &HeaderMap) -> bool {
    // RFC 9110 §4.2.4: userinfo in a target is an error; keyed, it would make an entry of its
    // own that no purge of the URL names.
    if uri
        .authority()
        .is_some_and(|target| target.as_str().contains('@'))
    {
        return false;
    }
    let mut lines = headers.get_all(HOST).iter();
    let host = match (lines.next(), lines.next()) {
        (None, _) => return true,
        (Some(host), None) => host,
        (Some(_), Some(_)) => return false,
    };
    let Ok(host) = http::uri::Authority::try_from(host.as_bytes()) else {
        return false;
    };
    if host.as_str().contains('@') {
        return false;
    }
    uri.authority().is_none_or(|target| {
        normalised_host(target.as_str(), uri.scheme_str())
            == normalised_host(host.as_str(), uri.scheme_str())
    })
}

/// `authority`'s `host[:port]`: userinfo names no other resource (RFC 9110 §4.2.4 makes it an
/// error in a target, which the origin serves as the URL without it), so an unsafe request
/// with it invalidates, and a purge with it purges, the URL without it.
fn without_userinfo(authority: &Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}

/// `authority` lower-cased, without an empty port or the default port of `scheme` (RFC 9110
/// §4.2.3 makes those the origin without a port). Without a scheme (a `Host` field) either
/// default goes: the key, having no scheme, could not tell which one a port stood for.
fn normalised_host(authority: &str, scheme: Option<&str>) -> String {
    let lower = authority.to_ascii_lowercase();
    let is_default = |port: &str| match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => port == "80",
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => port == "443",
        Some(_) => false,
        None => port == "80" || port == "443",
    };
    match lower.rsplit_once(':') {
        Some((host, port)) if port.is_empty() || is_default(port) => host.to_owned(),
        _ => lower,
    }
}

impl fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secondary key: the request's normalised values of the fields a response's `Vary`
/// names (§4.1). A stored response matches a later request when every named field normalises
/// to the same value (absent matches only absent).
///
/// `Vary` nominates a set of field names (RFC 9110 §12.5.5), and names are case-insensitive
/// (§5.1): the key holds each name once, sorted, so `Vary: A, B`, `Vary: b, a` and
/// `Vary: a, B, a` make the same key and a response under one replaces a response under
/// another for the same request.
///
/// Normalisation combines the field lines with commas and drops whitespace around list
/// members, which §4.1 allows; values are otherwise compared byte for byte.
///
/// ```
/// use http::HeaderMap;
/// use infra_edgecache::http::VaryKey;
///
/// let mut response = HeaderMap::new();
/// response.insert("vary", "Accept-Encoding".parse()?);
/// let mut first = HeaderMap::new();
/// first.insert("accept-encoding", "gzip,  br".parse()?);
/// let key = VaryKey::new(&response, &first).expect("a usable Vary");
///
/// let mut second = HeaderMap::new();
/// second.append("accept-encoding", "gzip".parse()?);
/// second.append("accept-encoding", " br".parse()?);
/// assert!(key.matches(&second));
/// assert!(!key.matches(&HeaderMap::new()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct VaryKey {
    fields: Vec<(HeaderName, Option<Vec<u8>>)>,
}

impl VaryKey {
    /// The secondary key of `request` under `response`'s `Vary`; `None` for `Vary: *`, a
    /// malformed field name, or more than [`MAX_VARY_FIELDS`] names.
    pub fn new(response: &HeaderMap, request: &HeaderMap) -> Option<Self> {
        let mut fields: Vec<(HeaderName, Option<Vec<u8>>)> = Vec::new();
        for line in response.get_all(VARY) {
            for member in line.as_bytes().split(|&b| b == b',') {
                let member = member.trim_ascii();
                if member.is_empty() {
                    continue;
                }
                if member == b"*" {
                    return None;
                }
                let name = HeaderName::from_bytes(member).ok()?;
                if fields.iter().any(|(known, _)| *known == name) {
                    continue;
                }
                if fields.len() == MAX_VARY_FIELDS {
                    return None;
                }
                let value = normalised(request, &name);
                fields.push((name, value));
            }
        }
        fields.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        Some(Self { fields })
    }

    /// Whether `request` selects the response this key was made for.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.fields
            .iter()
            .all(|(name, value)| normalised(request, name) == *value)
    }

    /// Whether the response varies on nothing.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether `other` was made under a `Vary` nominating the same fields, whatever values
    /// they had.
    #[cfg(feature = "tokio")]
    pub(crate) fn names_the_same_fields(&self, other: &Self) -> bool {
        self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|((mine, _), (theirs, _))| mine == theirs)
    }

    /// The named fields and the values they had, sorted by name, for encoding the key.
    pub(crate) fn fields(&self) -> &[(HeaderName, Option<Vec<u8>>)] {
        &self.fields
    }

    /// A key of these fields, in any order (a record written before keys were sorted lists
    /// them as its `Vary` did); `None` past [`MAX_VARY_FIELDS`] or with a name twice.
    pub(crate) fn from_fields(mut fields: Vec<(HeaderName, Option<Vec<u8>>)>) -> Option<Self> {
        fields.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        let repeated = fields.windows(2).any(|pair| pair[0].0 == pair[1].0);
        (fields.len() <= MAX_VARY_FIELDS && !repeated).then_some(Self { fields })
    }

    #[cfg(feature = "tokio")]
    /// The bytes the key occupies, for weighing a stored response.
    pub(crate) fn weight(&self) -> usize {
        self.fields
            .iter()
            .map(|(name, value)| name.as_str().len() + value.as_ref().map_or(0, Vec::len))
            .sum()
    }

    #[cfg(feature = "tokio")]
    /// The same fields, with the values `request` has for them.
    pub(crate) fn for_request(&self, request: &HeaderMap) -> Self {
        Self {
            fields: self
                .fields
                .iter()
                .map(|(name, _)| (name.clone(), normalised(request, name)))
                .collect(),
        }
    }
}

/// The field's lines combined with commas, without whitespace around members; `None` if the
/// field is absent.
fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = Vec::new();
    let mut first = true;
    for line in lines {
        for member in line.as_bytes().split(|&b| b == b',') {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(member.trim_ascii());
        }
    }
    Some(out)
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;

    /// The key of a GET of `uri`, with a `Host` field when `host` is given.
    fn get_key(uri: &'static str, host: Option<&'static str>) -> PrimaryKey {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(HOST, host.parse().unwrap());
        }
        PrimaryKey::new(&Method::GET, &Uri::from_static(uri), &headers)
    }

    #[test]
    fn a_default_port_is_the_same_host_as_none() {
        // RFC 9110 §4.2.3: an empty or default port is normalised away, so a purge of
        // `http://a.test/x` reaches what a request with `Host: a.test:80` stored.
        let plain = get_key("http://a.test/x", None);
        for same in [
            get_key("http://A.test:80/x", None),
            get_key("https://a.test:443/x", None),
            get_key("http://a.test:/x", None),
            get_key("/x", Some("a.test:80")),
            get_key("/x", Some("a.test:443")),
        ] {
            assert_eq!(same, plain);
        }
        assert_ne!(get_key("http://a.test:8080/x", None), plain);
        assert_ne!(
            get_key("http://a.test:443/x", None),
            plain,
            "not http's default"
        );
        assert_ne!(get_key("/x", Some("a.test:8443")), plain);
        assert_eq!(
            plain
                .same_host_reference(b"http://a.test:80/y")
                .map(|key| key.as_str().to_owned())
                .as_deref(),
            Some("GET a.test/y")
        );
    }

    #[test]
    fn the_order_case_and_repetition_of_vary_names_select_the_same_variant() {
        // RFC 9110 §12.5.5: `Vary` nominates a set of request fields, and field names are
        // case-insensitive (§5.1); RFC 9111 §4.1 matches a stored response on the fields
        // nominated, so neither their order, their case, the whitespace around them nor a
        // name listed twice makes another secondary key.
        let mut request = HeaderMap::new();
        request.insert("accept-encoding", "gzip".parse().unwrap());
        request.insert("accept-language", "fr".parse().unwrap());
        let key = |lines: &[&'static str]| {
            let mut response = HeaderMap::new();
            for line in lines {
                response.append(VARY, line.parse().unwrap());
            }
            VaryKey::new(&response, &request).expect("a usable Vary")
        };
        let plain = key(&["Accept-Encoding, Accept-Language"]);
        for same in [
            key(&["Accept-Language, Accept-Encoding"]),
            key(&["accept-language ,ACCEPT-ENCODING"]),
            key(&["Accept-Language", " accept-encoding, Accept-Language "]),
        ] {
            assert_eq!(same, plain);
        }
        assert_ne!(key(&["Accept-Encoding"]), plain);
    }

    #[test]
    fn a_key_without_a_host_says_so() {
        assert!(get_key("http://a.test/x", None).names_a_host());
        assert!(get_key("/x", Some("a.test")).names_a_host());
        assert!(get_key("http://a.test", None).names_a_host());
        for hostless in [
            get_key("/x", None),
            get_key("/x", Some("")),
            get_key("/x", Some(":80")),
        ] {
            assert!(!hostless.names_a_host(), "{hostless}");
        }
    }

    #[test]
    fn only_absolute_uris_and_paths_on_the_same_host_are_references() {
        let key = PrimaryKey::new(
            &Method::POST,
            &Uri::from_static("http://a.test:8080/items?x"),
            &HeaderMap::new(),
        );
        let named = |value: &str| {
            key.same_host_reference(value.as_bytes())
                .map(|key| key.as_str().to_owned())
        };
        assert_eq!(
            named("/items/7").as_deref(),
            Some("POST a.test:8080/items/7")
        );
        assert_eq!(
            named("https://A.TEST:8080/items/7?v").as_deref(),
            Some("POST a.test:8080/items/7?v")
        );
        assert_eq!(
            named("http://a.test:8080").as_deref(),
            Some("POST a.test:8080/")
        );
        for other in [
            "http://a.test/items/7",      // another port: another origin
            "http://b.test:8080/items/7", // another host
            "//a.test:8080/items/7",      // a network-path reference
            "items/7",                    // a relative path
            "",
            "/items/\u{7f}",
            "not a uri at all",
        ] {
            assert_eq!(named(other), None, "{other:?}");
        }
    }
}
