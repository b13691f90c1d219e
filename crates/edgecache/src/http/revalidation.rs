//! Conditional revalidation (RFC 9111 §4.3): the validators sent to the origin, and a `304 Not
//! Modified` merged into the stored response (§3.2, §4.3.4).

use http::header::{
    AGE, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, DATE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::freshness::header_date;

/// Fields a cache never stores (§3.1): the hop-by-hop ones of RFC 9110 §7.6.1.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
];

/// Fields a 304 does not overwrite (§3.2): `Content-Length`, and those describing the stored
/// body's encoding, which the 304 did not carry.
const KEPT_ON_UPDATE: [HeaderName; 4] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_RANGE,
    TRANSFER_ENCODING,
];

/// The conditional fields that revalidate a stored response with header fields `stored`:
/// `If-None-Match` with its entity tag and `If-Modified-Since` with its `Last-Modified`
/// (§4.3.1). Empty when it has neither validator.
///
/// ```
/// use http::HeaderMap;
/// use infra_edgecache::http::conditional_headers;
///
/// let mut stored = HeaderMap::new();
/// stored.insert("etag", "\"v1\"".parse()?);
/// let conditions = conditional_headers(&stored);
/// assert_eq!(conditions.get("if-none-match").unwrap(), "\"v1\"");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn conditional_headers(stored: &HeaderMap) -> HeaderMap {
    let mut conditions = HeaderMap::new();
    if let Some(etag) = stored.get(ETAG) {
        conditions.insert(IF_NONE_MATCH, etag.clone());
    }
    if header_date(stored, &LAST_MODIFIED).is_some()
        && let Some(modified) = stored.get(LAST_MODIFIED)
    {
        conditions.insert(IF_MODIFIED_SINCE, modified.clone());
    }
    conditions
}

/// Whether a `304` with header fields `not_modified` is about the stored response with header
/// fields `stored` (§4.3.4): its entity tag, if it has one, matches the stored one (a strong
/// tag identifies the representation by strong comparison, a weak one by weak comparison);
/// otherwise its `Last-Modified`, if it has one, is equal; and a 304 with neither is about a
/// stored response only if that one has neither either (it names no representation, so it
/// cannot confirm one that has validators; RFC 9110 §15.4.5 has the origin send the `ETag`
/// a 200 would carry).
///
/// ```
/// use http::HeaderMap;
/// use infra_edgecache::http::validates;
///
/// let mut stored = HeaderMap::new();
/// stored.insert("etag", "\"v1\"".parse()?);
/// let mut same = HeaderMap::new();
/// same.insert("etag", "\"v1\"".parse()?);
/// assert!(validates(&stored, &same));
/// assert!(!validates(&stored, &HeaderMap::new()), "a bare 304 names no representation");
/// assert!(validates(&HeaderMap::new(), &HeaderMap::new()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validates(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if let Some(new_tag) = not_modified.get(ETAG) {
        let new_tag = new_tag.as_bytes();
        return stored.get(ETAG).is_some_and(|old_tag| {
            let old_tag = old_tag.as_bytes();
            if is_weak(new_tag) {
                weak_eq(old_tag, new_tag)
            } else {
                !is_weak(old_tag) && weak_eq(old_tag, new_tag)
            }
        });
    }
    match not_modified.get(LAST_MODIFIED) {
        Some(new) => stored.get(LAST_MODIFIED) == Some(new),
        None => !stored.contains_key(ETAG) && !stored.contains_key(LAST_MODIFIED),
    }
}

/// Updates the stored header fields with those of a `304` (§3.2): each field the 304 carries
/// replaces the stored one, except hop-by-hop fields and those describing the stored body.
/// The stored `Age` goes whether or not the 304 has one: it was the age of the earlier
/// message, and counting it again would make the freshened response old on arrival
/// (§4.2.3 computes the age of the 304's exchange).
pub fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    stored.remove(AGE);
    let updated = without_hop_by_hop(not_modified);
    for name in updated.keys() {
        if KEPT_ON_UPDATE.contains(name) {
            continue;
        }
        let values: Vec<HeaderValue> = updated.get_all(name).iter().cloned().collect();
        stored.remove(name);
        for value in values {
            stored.append(name.clone(), value);
        }
    }
}

/// The header fields a cache stores (§3.1): without the hop-by-hop fields and those the
/// `Connection` field names.
pub fn without_hop_by_hop(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<Vec<u8>> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(|member| member.trim_ascii().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || named.iter().any(|member| member == lower.as_bytes()) {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

/// Whether a client's own conditional request is satisfied by a stored response, so the cache
/// answers `304` (RFC 9110 §13.1.2, §13.1.3, evaluated as §13.2.2 orders them): an
/// `If-None-Match` listing `*` or the response's entity tag (weak comparison); without
/// `If-None-Match`, an `If-Modified-Since` no earlier than the response's `Last-Modified`, or
/// its `Date` when it has no `Last-Modified` (RFC 9111 §4.3.2).
pub fn client_not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(IF_NONE_MATCH) {
        let Some(tag) = stored.get(ETAG) else {
            return request
                .get_all(IF_NONE_MATCH)
                .iter()
                .any(|line| line.as_bytes().trim_ascii() == b"*");
        };
        return request
            .get_all(IF_NONE_MATCH)
            .iter()
            .flat_map(|line| list_members(line.as_bytes()))
            .any(|member| {
                let member = member.trim_ascii();
                member == b"*" || weak_eq(member, tag.as_bytes())
            });
    }
    // The request's field first: most requests have none, and then no stored date is parsed.
    let Some(since) = header_date(request, &IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = if stored.contains_key(LAST_MODIFIED) {
        header_date(stored, &LAST_MODIFIED)
    } else {
        header_date(stored, &DATE)
    };
    modified.is_some_and(|modified| modified <= since)
}

/// The members of an entity-tag list, split at the commas outside quotes: `etagc` includes
/// the comma (RFC 9110 §8.8.3), so `"a,b"` is one tag.
fn list_members(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    line.split(move |&byte| {
        if byte == b'"' {
            quoted = !quoted;
        }
        byte == b',' && !quoted
    })
}

/// Whether an entity tag is weak (`W/` before its opaque tag).
fn is_weak(tag: &[u8]) -> bool {
    tag.trim_ascii().starts_with(b"W/")
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2): equal opaque tags, whether or not
/// either is weak.
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    fn opaque(tag: &[u8]) -> &[u8] {
        let tag = tag.trim_ascii();
        tag.strip_prefix(b"W/").unwrap_or(tag)
    }
    opaque(a) == opaque(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_304_updates_fields_but_not_the_body_description() {
        let mut stored = headers(&[
            ("etag", "\"a\""),
            ("content-length", "10"),
            ("cache-control", "max-age=1"),
            ("x-old", "kept"),
            ("age", "50"),
        ]);
        let not_modified = headers(&[
            ("etag", "W/\"a\""),
            ("content-length", "0"),
            ("cache-control", "max-age=100"),
            ("connection", "x-hop"),
            ("x-hop", "dropped"),
        ]);
        assert!(validates(&stored, &not_modified));
        merge_not_modified(&mut stored, &not_modified);
        assert_eq!(stored["content-length"], "10");
        assert_eq!(stored["cache-control"], "max-age=100");
        assert_eq!(stored["x-old"], "kept");
        assert!(!stored.contains_key("age"), "the earlier message's age");
        assert!(!stored.contains_key("x-hop") && !stored.contains_key("connection"));
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_not_stored() {
        let kept = without_hop_by_hop(&headers(&[
            ("connection", "X-Hop, close"),
            ("x-hop", "dropped"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ]));
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept["x-end-to-end"], "kept");
    }

    /// §4.3.4: a strong validator in the 304 identifies the stored responses with the same
    /// strong validator; a weak one, those it matches weakly.
    #[test]
    fn a_strong_tag_in_a_304_validates_only_the_same_strong_tag() {
        let strong = headers(&[("etag", "\"a\"")]);
        let weak = headers(&[("etag", "W/\"a\"")]);
        assert!(validates(&strong, &headers(&[("etag", "\"a\"")])));
        assert!(!validates(&weak, &headers(&[("etag", "\"a\"")])));
        assert!(validates(&weak, &headers(&[("etag", "W/\"a\"")])));
        assert!(validates(&strong, &headers(&[("etag", "W/\"a\"")])));
    }

    #[test]
    fn a_304_for_another_representation_does_not_validate() {
        let stored = headers(&[("etag", "\"a\"")]);
        assert!(!validates(&stored, &headers(&[("etag", "\"b\"")])));
        let stored = headers(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        assert!(!validates(
            &stored,
            &headers(&[("last-modified", "Tue, 02 Jan 2024 00:00:00 GMT")])
        ));
    }

    /// RFC 9111 §4.3.4 selects the stored responses a 304 updates by its strong validators,
    /// else its weak ones, else, when it has none, only a stored response that has none
    /// either: a bare 304 says nothing about a representation that has validators.
    #[test]
    fn a_304_without_validators_validates_only_a_response_without_them() {
        let bare = headers(&[("cache-control", "max-age=100")]);
        assert!(validates(
            &headers(&[("cache-control", "max-age=1")]),
            &bare
        ));
        assert!(!validates(&headers(&[("etag", "\"a\"")]), &bare));
        assert!(!validates(
            &headers(&[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]),
            &bare
        ));
    }

    #[test]
    fn client_conditionals() {
        let stored = headers(&[
            ("etag", "\"a\""),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        assert!(client_not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"a\"")]),
            &stored
        ));
        assert!(!client_not_modified(
            &headers(&[("if-none-match", "\"x\"")]),
            &stored
        ));
        assert!(client_not_modified(
            &headers(&[("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")]),
            &stored
        ));
        assert!(!client_not_modified(
            &headers(&[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")]),
            &stored
        ));
    }
}
