//! Where propagated fields are read from and written to: [`Extractor`] and [`Injector`].
//!
//! Header names are case-insensitive; a `HashMap` carrier must hold them in lowercase (the
//! propagators ask for lowercase names). Implementations are provided for `HashMap<String,
//! String>` (one value per name), for slices and vectors of `(name, value)` pairs (which can
//! hold repeated headers), and, with the `http` feature, for `http::HeaderMap`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Reads fields from an incoming carrier (request headers, message metadata).
///
/// The methods take callbacks rather than returning iterators so the trait stays usable as
/// `&dyn Extractor` without boxing: extraction allocates nothing.
pub trait Extractor {
    /// The first value of the field `name` (case-insensitive), if present.
    fn get(&self, name: &str) -> Option<&str>;

    /// Calls `each` with every value of the field `name`, in the order received. Repeated
    /// headers matter: `tracestate` and `baggage` combine them, `traceparent` rejects them.
    fn get_all(&self, name: &str, each: &mut dyn FnMut(&str)) {
        if let Some(value) = self.get(name) {
            each(value);
        }
    }

    /// The first value of the field `name` as bytes, if present. Like
    /// [`Extractor::get_all_bytes`], for formats whose grammar is ASCII. The default calls
    /// [`Extractor::get`].
    ///
    /// ```
    /// use infra_trace_ctx::Extractor;
    ///
    /// let carrier = vec![("b3", "0"), ("B3", "1")];
    /// assert_eq!(carrier.get_bytes("b3"), Some(&b"0"[..]));
    /// ```
    fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(str::as_bytes)
    }

    /// Calls `each` with every value of the field `name` as bytes, in the order received.
    ///
    /// The propagators read formats whose grammar is ASCII this way, so a carrier that holds
    /// bytes (such as `http::HeaderMap`) can hand its values over without checking they are
    /// UTF-8 first: the format's grammar rejects any other byte anyway. The default calls
    /// [`Extractor::get_all`].
    ///
    /// ```
    /// use infra_trace_ctx::Extractor;
    ///
    /// let carrier = vec![("tracestate", "a=1"), ("TraceState", "b=2")];
    /// let mut values = Vec::new();
    /// carrier.get_all_bytes("tracestate", &mut |value| values.push(value.to_vec()));
    /// assert_eq!(values, [b"a=1".to_vec(), b"b=2".to_vec()]);
    /// ```
    fn get_all_bytes(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        self.get_all(name, &mut |value| each(value.as_bytes()));
    }

    /// Calls `each` with the name of every field present (for prefixed fields such as
    /// Jaeger's `uberctx-*`).
    fn names(&self, each: &mut dyn FnMut(&str));

    /// Calls `each` with the name of every field present and its first value as bytes (as
    /// [`Extractor::get_bytes`] gives it), for a format that looks for several fields at
    /// once: one walk instead of a lookup per field. The default pairs
    /// [`Extractor::names`] with [`Extractor::get_bytes`]; a carrier that can walk its
    /// fields with their values overrides it.
    ///
    /// ```
    /// use infra_trace_ctx::Extractor;
    ///
    /// let carrier = vec![("uber-trace-id", "1:2:0:1"), ("uberctx-tenant", "acme")];
    /// let mut seen = Vec::new();
    /// carrier.fields(&mut |name, value| seen.push((name.to_owned(), value.to_vec())));
    /// assert_eq!(seen.len(), 2);
    /// assert_eq!(seen[1], ("uberctx-tenant".to_owned(), b"acme".to_vec()));
    /// ```
    fn fields(&self, each: &mut dyn FnMut(&str, &[u8])) {
        self.names(&mut |name| {
            if let Some(value) = self.get_bytes(name) {
                each(name, value);
            }
        });
    }
}

/// `value` without the spaces and tabs around it (HTTP's optional whitespace).
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    // Most values have none: two byte comparisons instead of a scan from each end.
    if !matches!(value, [b' ' | b'\t', ..] | [.., b' ' | b'\t']) {
        return value;
    }
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |last| last + 1);
    &value[start..end]
}

/// Writes fields into an outgoing carrier.
///
/// A carrier may be reused from one request to the next, so a propagator removes the fields
/// it owns but does not write this time (an empty `tracestate`, `baggage` or `uberctx-*`
/// set): nothing of one request reaches the next.
pub trait Injector {
    /// Sets the field `name` (lowercase) to `value`, replacing any previous value.
    fn set(&mut self, name: &str, value: &str);

    /// [`Injector::set`] with a value built for this field, which a carrier that stores owned
    /// strings or buffers keeps instead of copying (a `HeaderMap` takes the string's buffer
    /// as the header value's). The default calls [`Injector::set`].
    ///
    /// ```
    /// use infra_trace_ctx::Injector;
    ///
    /// let mut carrier: Vec<(String, String)> = vec![("baggage".into(), "old=1".into())];
    /// carrier.set_owned("baggage", String::from("new=2"));
    /// assert_eq!(carrier, [("baggage".to_owned(), "new=2".to_owned())]);
    /// ```
    fn set_owned(&mut self, name: &str, value: String) {
        self.set(name, &value);
    }

    /// [`Injector::set`] with a value known to hold only visible ASCII and spaces, which a
    /// carrier that checks its values (a `HeaderMap`) may store without checking again. The
    /// propagators write every value this way. The default calls [`Injector::set`] or
    /// [`Injector::set_owned`].
    ///
    /// ```
    /// use infra_trace_ctx::{FieldValue, Injector};
    ///
    /// let mut carrier: Vec<(String, String)> = Vec::new();
    /// let value = FieldValue::new("rojo=00f067aa0ba902b7").expect("visible ASCII");
    /// carrier.set_value("tracestate", value);
    /// assert_eq!(carrier[0].1, "rojo=00f067aa0ba902b7");
    /// ```
    fn set_value(&mut self, name: &str, value: FieldValue<'_>) {
        match value.0 {
            Cow::Borrowed(value) => self.set(name, value),
            Cow::Owned(value) => self.set_owned(name, value),
        }
    }

    /// Removes the field `name` (case-insensitive where the carrier is), if present.
    fn remove(&mut self, name: &str);

    /// Removes every field for whose name `remove` returns `true` (for prefixed fields such
    /// as Jaeger's `uberctx-*`).
    fn remove_where(&mut self, remove: &mut dyn FnMut(&str) -> bool);

    /// Removes every field whose name begins with `prefix` (given in lowercase, as every name
    /// this trait takes; matched in any case where the carrier's names have cases) and for
    /// whose whole name `remove` returns `true`. A
    /// carrier that can turn away the other names without a call overrides it; the default
    /// calls [`Injector::remove_where`].
    ///
    /// ```
    /// use infra_trace_ctx::Injector;
    ///
    /// let mut carrier: Vec<(String, String)> = vec![
    ///     ("UberCtx-a".into(), "1".into()),
    ///     ("uberctx-b".into(), "2".into()),
    ///     ("host".into(), "x".into()),
    /// ];
    /// carrier.remove_prefixed("uberctx-", &mut |name| !name.ends_with('b'));
    /// assert_eq!(carrier.len(), 2);
    /// ```
    fn remove_prefixed(&mut self, prefix: &str, remove: &mut dyn FnMut(&str) -> bool) {
        self.remove_where(&mut |name| has_prefix(name, prefix) && remove(name));
    }
}

/// Whether `name` begins with `prefix`, in any case.
fn has_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A field value that holds only visible ASCII and spaces (bytes 0x20 to 0x7e): every value
/// the propagators write, and a valid value in any carrier, HTTP headers included. Built by
/// [`FieldValue::new`], which checks, or by the propagators from text their own grammar has
/// checked (hex ids, a parsed `tracestate`, encoded baggage), so that
/// [`Injector::set_value`] need not check it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue<'a>(Cow<'a, str>);

impl<'a> FieldValue<'a> {
    /// `value` as a field value, or `None` if it holds a byte outside 0x20 to 0x7e.
    pub fn new(value: impl Into<Cow<'a, str>>) -> Option<Self> {
        let value = value.into();
        value.bytes().all(is_field_byte).then_some(Self(value))
    }

    /// A value whose bytes this crate's own grammar has limited to 0x20 to 0x7e (checked in
    /// debug builds).
    pub(crate) fn vouched(value: impl Into<Cow<'a, str>>) -> Self {
        let value = value.into();
        debug_assert!(
            value.bytes().all(is_field_byte),
            "a field value outside 0x20..=0x7e: {value:?}"
        );
        Self(value)
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, borrowed or owned as it was given.
    pub fn into_inner(self) -> Cow<'a, str> {
        self.0
    }
}

/// A byte a [`FieldValue`] may hold: a space or visible ASCII.
const fn is_field_byte(byte: u8) -> bool {
    matches!(byte, 0x20..=0x7e)
}

impl<S: BuildHasher> Extractor for HashMap<String, String, S> {
    /// Looks `name` up exactly: keys of a map carrier must be lowercase (as HTTP/2 and most
    /// frameworks deliver them), which keeps lookups at one hash probe.
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }

    fn names(&self, each: &mut dyn FnMut(&str)) {
        for key in self.keys() {
            each(key);
        }
    }
}

impl<S: BuildHasher> Injector for HashMap<String, String, S> {
    fn set(&mut self, name: &str, value: &str) {
        // Reusing the existing string keeps re-injection into the same map allocation-free.
        // A fresh (empty) map skips the lookup: one hash instead of two.
        if !self.is_empty()
            && let Some(existing) = self.get_mut(name)
        {
            existing.clear();
            existing.push_str(value);
            return;
        }
        self.insert(name.to_owned(), value.to_owned());
    }

    fn set_owned(&mut self, name: &str, value: String) {
        if !self.is_empty()
            && let Some(existing) = self.get_mut(name)
        {
            *existing = value;
            return;
        }
        self.insert(name.to_owned(), value);
    }

    fn remove(&mut self, name: &str) {
        if !self.is_empty() {
            HashMap::remove(self, name);
        }
    }

    fn remove_where(&mut self, remove: &mut dyn FnMut(&str) -> bool) {
        self.retain(|key, _| !remove(key));
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extractor for [(K, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref())
    }

    fn get_all(&self, name: &str, each: &mut dyn FnMut(&str)) {
        for (key, value) in self {
            if key.as_ref().eq_ignore_ascii_case(name) {
                each(value.as_ref());
            }
        }
    }

    fn names(&self, each: &mut dyn FnMut(&str)) {
        for (key, _) in self {
            each(key.as_ref());
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extractor for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<&str> {
        Extractor::get(self.as_slice(), name)
    }

    fn get_all(&self, name: &str, each: &mut dyn FnMut(&str)) {
        self.as_slice().get_all(name, each);
    }

    fn names(&self, each: &mut dyn FnMut(&str)) {
        self.as_slice().names(each);
    }
}

impl Injector for Vec<(String, String)> {
    fn set(&mut self, name: &str, value: &str) {
        self.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        self.push((name.to_owned(), value.to_owned()));
    }

    fn set_owned(&mut self, name: &str, value: String) {
        self.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        self.push((name.to_owned(), value));
    }

    fn remove(&mut self, name: &str) {
        self.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    fn remove_where(&mut self, remove: &mut dyn FnMut(&str) -> bool) {
        self.retain(|(key, _)| !remove(key));
    }
}

#[cfg(feature = "http")]
mod http_carrier {
    use std::borrow::Cow;

    use bytes::Bytes;
    use http::HeaderName;

    use super::{Extractor, FieldValue, Injector};
    use crate::b3::{
        B3_SINGLE, X_B3_FLAGS, X_B3_PARENT_SPAN_ID, X_B3_SAMPLED, X_B3_SPAN_ID, X_B3_TRACE_ID,
    };
    use crate::baggage::BAGGAGE;
    use crate::jaeger::UBER_TRACE_ID;
    use crate::trace_context::{TRACEPARENT, TRACESTATE};

    /// The prebuilt name of a field the propagators read and write. A `&str` name is parsed
    /// (copied, lowercased, checked) on every map call and, when written, copied to the
    /// heap; a prebuilt one is neither.
    fn known(name: &str) -> Option<&'static HeaderName> {
        static NAMES: [HeaderName; 10] = [
            HeaderName::from_static(TRACEPARENT),
            HeaderName::from_static(TRACESTATE),
            HeaderName::from_static(BAGGAGE),
            HeaderName::from_static(B3_SINGLE),
            HeaderName::from_static(X_B3_TRACE_ID),
            HeaderName::from_static(X_B3_SPAN_ID),
            HeaderName::from_static(X_B3_PARENT_SPAN_ID),
            HeaderName::from_static(X_B3_SAMPLED),
            HeaderName::from_static(X_B3_FLAGS),
            HeaderName::from_static(UBER_TRACE_ID),
        ];
        let index = match name {
            TRACEPARENT => 0,
            TRACESTATE => 1,
            BAGGAGE => 2,
            B3_SINGLE => 3,
            X_B3_TRACE_ID => 4,
            X_B3_SPAN_ID => 5,
            X_B3_PARENT_SPAN_ID => 6,
            X_B3_SAMPLED => 7,
            X_B3_FLAGS => 8,
            UBER_TRACE_ID => 9,
            _ => return None,
        };
        Some(&NAMES[index])
    }

    /// Values are handed over as text even when they hold bytes outside visible ASCII, so the
    /// format's own grammar rejects them: a repeated `traceparent` is still seen as repeated,
    /// and a `tracestate` field with a stray byte still invalidates the combined header.
    /// Bytes that are not UTF-8 arrive as U+FFFD (allocating only in that case). Names are
    /// looked up by their prebuilt `HeaderName` when they have one; the text methods read
    /// through the byte ones.
    impl Extractor for http::HeaderMap {
        fn get(&self, name: &str) -> Option<&str> {
            self.get_bytes(name)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
        }

        fn get_bytes(&self, name: &str) -> Option<&[u8]> {
            let value = match known(name) {
                Some(name) => http::HeaderMap::get(self, name),
                None => http::HeaderMap::get(self, name),
            };
            value.map(http::HeaderValue::as_bytes)
        }

        fn get_all(&self, name: &str, each: &mut dyn FnMut(&str)) {
            self.get_all_bytes(name, &mut |bytes| {
                // `from_utf8` checks ASCII a word at a time; the lossy conversion goes byte
                // by byte, so it only runs on a value that needs it.
                match std::str::from_utf8(bytes) {
                    Ok(text) => each(text),
                    Err(_) => each(&String::from_utf8_lossy(bytes)),
                }
            });
        }

        fn get_all_bytes(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
            let values = match known(name) {
                Some(name) => http::HeaderMap::get_all(self, name),
                None => http::HeaderMap::get_all(self, name),
            };
            for value in values {
                each(value.as_bytes());
            }
        }

        fn names(&self, each: &mut dyn FnMut(&str)) {
            for name in self.keys() {
                each(name.as_str());
            }
        }

        fn fields(&self, each: &mut dyn FnMut(&str, &[u8])) {
            // The map yields a name once per value, its values one after another, each with a
            // reference to the same stored name: a name at the address seen just before is a
            // later value of the same field (comparing addresses, not the names' bytes).
            let mut last: Option<&HeaderName> = None;
            for (name, value) in self {
                if !last.is_some_and(|last| std::ptr::eq(last, name)) {
                    each(name.as_str(), value.as_bytes());
                    last = Some(name);
                }
            }
        }
    }

    /// Whether `name` begins with `prefix`, their first eight bytes compared as one word:
    /// comparing slices called a function of some twenty instructions for each name.
    fn starts_with(name: &[u8], prefix: &[u8]) -> bool {
        match (
            name.split_first_chunk::<8>(),
            prefix.split_first_chunk::<8>(),
        ) {
            (Some((head, rest)), Some((prefix_head, prefix_rest))) => {
                u64::from_ne_bytes(*head) == u64::from_ne_bytes(*prefix_head)
                    && (prefix_rest.is_empty() || rest.starts_with(prefix_rest))
            }
            _ => name.starts_with(prefix),
        }
    }

    /// The header value of bytes taken from a [`FieldValue`], without checking them again.
    #[allow(unsafe_code)]
    fn known_header_value(bytes: Bytes) -> http::HeaderValue {
        // SAFETY: `http` requires the bytes to be UTF-8. They come from a `FieldValue`'s
        // `str` (so they are UTF-8), which holds only bytes 0x20 to 0x7e (so they are also
        // bytes `http` accepts in a value: it checks them in debug builds, and the tests run
        // every propagator's output through it).
        unsafe { http::HeaderValue::from_maybe_shared_unchecked(bytes) }
    }

    /// Sets `name` to `value`, through its prebuilt name if it has one; a name that is not
    /// a valid header name is skipped.
    fn insert(map: &mut http::HeaderMap, name: &str, value: http::HeaderValue) {
        if let Some(name) = known(name) {
            map.insert(name, value);
        } else if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            map.insert(name, value);
        }
    }

    /// A name or value that is not a valid header is skipped: every value this crate writes
    /// is valid, so that only happens for names and values an application writes itself. A
    /// skipped value still removes the field's previous one, as `set` promises to replace it.
    impl Injector for http::HeaderMap {
        fn set(&mut self, name: &str, value: &str) {
            match http::HeaderValue::from_str(value) {
                Ok(value) => insert(self, name, value),
                Err(_) => Injector::remove(self, name),
            }
        }

        fn set_owned(&mut self, name: &str, value: String) {
            // The string's buffer becomes the value's, without a copy (and without an
            // allocation when the string is exactly as long as its capacity).
            match http::HeaderValue::try_from(value) {
                Ok(value) => insert(self, name, value),
                Err(_) => Injector::remove(self, name),
            }
        }

        /// The value is stored as it is: the check `http` makes of a value from text would
        /// repeat the one [`FieldValue`] stands for.
        fn set_value(&mut self, name: &str, value: FieldValue<'_>) {
            let bytes = match value.into_inner() {
                Cow::Borrowed(value) => Bytes::copy_from_slice(value.as_bytes()),
                Cow::Owned(value) => Bytes::from(value),
            };
            insert(self, name, known_header_value(bytes));
        }

        fn remove(&mut self, name: &str) {
            match known(name) {
                Some(name) => http::HeaderMap::remove(self, name),
                None => http::HeaderMap::remove(self, name),
            };
        }

        /// The map's names are lowercase, as the prefix is: each name is compared with it
        /// exactly, and `remove` is asked about the prefixed ones only.
        fn remove_prefixed(&mut self, prefix: &str, remove: &mut dyn FnMut(&str) -> bool) {
            debug_assert!(
                !prefix.bytes().any(|byte| byte.is_ascii_uppercase()),
                "a prefix not in lowercase: {prefix:?}"
            );
            let mut doomed = Vec::new();
            for name in self.keys() {
                let text = name.as_str();
                if starts_with(text.as_bytes(), prefix.as_bytes()) && remove(text) {
                    doomed.push(name.clone());
                }
            }
            // Nothing to remove is the usual case: no walk over an empty list.
            if !doomed.is_empty() {
                for name in doomed {
                    http::HeaderMap::remove(self, name);
                }
            }
        }

        fn remove_where(&mut self, remove: &mut dyn FnMut(&str) -> bool) {
            // Names are collected first: the map cannot be changed while its keys are read.
            // Nothing is allocated when no name matches. A plain loop: `collect` on a
            // filtered iterator cost some 90 instructions even over an empty map
            // (`trace_ctx/jaeger_inject`).
            let mut doomed = Vec::new();
            for name in self.keys() {
                if remove(name.as_str()) {
                    doomed.push(name.clone());
                }
            }
            for name in doomed {
                http::HeaderMap::remove(self, name);
            }
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    fn collect(carrier: &dyn Extractor, name: &str) -> Vec<String> {
        let mut values = Vec::new();
        carrier.get_all(name, &mut |v| values.push(v.to_owned()));
        values
    }

    #[test]
    fn hash_map_uses_lowercase_keys_and_reuses_strings() {
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("TraceParent".into(), "x".into());
        assert_eq!(Extractor::get(&map, "traceparent"), None);
        map.insert("traceparent".into(), "x".into());
        assert_eq!(Extractor::get(&map, "traceparent"), Some("x"));
        assert_eq!(collect(&map, "traceparent"), ["x"]);
        map.set("tracestate", "a=1");
        map.set("tracestate", "b=2");
        assert_eq!(Extractor::get(&map, "tracestate"), Some("b=2"));
        let mut names = Vec::new();
        map.names(&mut |n| names.push(n.to_owned()));
        names.sort();
        assert_eq!(names, ["TraceParent", "traceparent", "tracestate"]);
    }

    #[test]
    fn carriers_remove_fields() {
        let mut map: HashMap<String, String> = HashMap::new();
        map.set("tracestate", "a=1");
        map.set("uberctx-a", "1");
        map.set("uberctx-b", "2");
        Injector::remove(&mut map, "tracestate");
        map.remove_where(&mut |name| name == "uberctx-a");
        assert_eq!(map.keys().collect::<Vec<_>>(), ["uberctx-b"]);

        let mut pairs: Vec<(String, String)> = vec![
            ("Baggage".into(), "a=1".into()),
            ("baggage".into(), "b=2".into()),
            ("UberCtx-x".into(), "1".into()),
        ];
        Injector::remove(&mut pairs, "BAGGAGE");
        pairs.remove_where(&mut |name| name.starts_with("UberCtx-"));
        assert!(pairs.is_empty());
    }

    #[test]
    fn pairs_keep_repeated_headers_in_order() {
        let pairs = vec![("tracestate", "a=1"), ("Tracestate", "b=2"), ("other", "z")];
        assert_eq!(collect(&pairs, "tracestate"), ["a=1", "b=2"]);
        assert_eq!(Extractor::get(&pairs[..], "TRACESTATE"), Some("a=1"));
        let mut out: Vec<(String, String)> = Vec::new();
        out.set("b3", "1");
        out.set("B3", "0");
        assert_eq!(out, [("B3".to_owned(), "0".to_owned())]);
    }

    #[cfg(feature = "http")]
    #[test]
    fn header_map_reads_repeated_values() {
        let mut headers = http::HeaderMap::new();
        headers.append("tracestate", http::HeaderValue::from_static("a=1"));
        headers.append("tracestate", http::HeaderValue::from_static("b=2"));
        assert_eq!(collect(&headers, "TraceState"), ["a=1", "b=2"]);
        headers.set("traceparent", "v");
        headers.set("bad name", "v");
        assert_eq!(Extractor::get(&headers, "traceparent"), Some("v"));
        assert_eq!(headers.len(), 3);
        headers.remove_where(&mut |name| name == "tracestate");
        Injector::remove(&mut headers, "traceparent");
        Injector::remove(&mut headers, "bad name");
        assert!(headers.is_empty());
    }

    /// `set` replaces any previous value: a value a header map cannot hold is not written,
    /// and the previous request's value does not stay in its place.
    #[cfg(feature = "http")]
    #[test]
    fn a_header_map_value_it_cannot_hold_leaves_no_earlier_value() {
        let mut headers = http::HeaderMap::new();
        headers.set("x-tenant", "old");
        headers.set("x-tenant", "new\nline");
        assert_eq!(Extractor::get(&headers, "x-tenant"), None);
        headers.set_owned("x-tenant", "old".to_owned());
        headers.set_owned("x-tenant", "new\nline".to_owned());
        assert_eq!(Extractor::get(&headers, "x-tenant"), None);
    }

    /// Every field the propagators use, written and read through the prebuilt names, lands
    /// under the name `http` itself parses, and is found again under any spelling.
    #[cfg(feature = "http")]
    #[test]
    fn header_map_prebuilt_names_match_parsed_ones() {
        let propagators: [&dyn crate::Propagator; 4] = [
            &crate::TraceContextPropagator,
            &crate::BaggagePropagator,
            &crate::B3Propagator::single_header(),
            &crate::JaegerPropagator,
        ];
        let names: Vec<&str> = propagators
            .iter()
            .flat_map(|propagator| propagator.fields().iter().copied())
            .filter(|name| !name.ends_with('-'))
            .collect();
        assert_eq!(names.len(), 10);
        let mut headers = http::HeaderMap::new();
        for (i, name) in names.iter().enumerate() {
            let value = format!("v{i}");
            headers.set(name, &value);
            let parsed = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(headers.get(&parsed).unwrap(), value.as_str(), "{name}");
            assert_eq!(Extractor::get(&headers, name), Some(value.as_str()));
            let upper = name.to_ascii_uppercase();
            assert_eq!(collect(&headers, &upper), [value.as_str()]);
        }
        assert_eq!(headers.len(), names.len());
        for name in &names {
            Injector::remove(&mut headers, name);
        }
        assert!(headers.is_empty());
    }

    #[cfg(feature = "http")]
    #[test]
    fn header_map_hands_over_values_outside_visible_ascii() {
        let mut headers = http::HeaderMap::new();
        headers.append("tracestate", http::HeaderValue::from_static("a=1"));
        let utf8 = http::HeaderValue::from_bytes("b=\u{e9}".as_bytes()).unwrap();
        let not_utf8 = http::HeaderValue::from_bytes(b"c=\xff").unwrap();
        headers.append("tracestate", utf8);
        headers.append("tracestate", not_utf8);
        assert_eq!(
            collect(&headers, "tracestate"),
            ["a=1", "b=\u{e9}", "c=\u{fffd}"]
        );
        assert_eq!(Extractor::get(&headers, "tracestate"), Some("a=1"));
        let mut single = http::HeaderMap::new();
        single.insert("b3", http::HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(Extractor::get(&single, "b3"), None);
        assert_eq!(single.get_bytes("b3"), Some(&b"\xff"[..]));
        let b3 = crate::B3Propagator::single_header();
        assert!(crate::Propagator::extract_span(&b3, &single).is_none());

        // As bytes, values arrive as received; the formats' grammars reject what is not ASCII.
        let mut raw = Vec::new();
        headers.get_all_bytes("tracestate", &mut |value| raw.push(value.to_vec()));
        assert_eq!(raw, [&b"a=1"[..], "b=\u{e9}".as_bytes(), b"c=\xff"]);
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", http::HeaderValue::from_static(valid));
        let span =
            crate::Propagator::extract_span(&crate::TraceContextPropagator, &headers).unwrap();
        assert!(
            span.trace_state().is_empty(),
            "a byte outside ASCII voids tracestate"
        );
        let mut bad = valid.as_bytes().to_vec();
        bad[10] = 0xe9;
        headers.insert("traceparent", http::HeaderValue::from_bytes(&bad).unwrap());
        assert!(
            crate::Propagator::extract_span(&crate::TraceContextPropagator, &headers).is_none()
        );
    }

    #[test]
    fn field_values_hold_only_spaces_and_visible_ascii() {
        for value in ["", "a b", "~!", "k=v,rojo=1"] {
            assert_eq!(
                FieldValue::new(value).map(FieldValue::into_inner),
                Some(value.into())
            );
        }
        for value in ["a\tb", "a\nb", "\u{7f}", "caf\u{e9}", "\0"] {
            assert!(FieldValue::new(value).is_none(), "{value:?}");
        }
        assert!(FieldValue::new(String::from("owned")).is_some());
    }

    /// Prefixed removal asks about the prefixed names only and removes those it is told to:
    /// in a `HeaderMap` (lowercase names, its own walk) and in the default walk, which
    /// matches the prefix in any case.
    #[test]
    fn prefixed_removal_asks_about_prefixed_names_only() {
        let mut pairs: Vec<(String, String)> = ["UberCtx-a", "uberctx-b", "uber-trace-id", "host"]
            .iter()
            .map(|name| ((*name).to_owned(), String::new()))
            .collect();
        let mut asked = Vec::new();
        pairs.remove_prefixed("uberctx-", &mut |name| {
            asked.push(name.to_owned());
            name != "uberctx-b"
        });
        assert_eq!(asked, ["UberCtx-a", "uberctx-b"]);
        let left: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(left, ["uberctx-b", "uber-trace-id", "host"]);

        #[cfg(feature = "http")]
        {
            let mut headers = http::HeaderMap::new();
            for name in [
                "user-agent",
                "uberctx-a",
                "uberctx-b",
                "uber-trace-id",
                "uberctx",
            ] {
                headers.insert(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static("1"),
                );
            }
            let mut asked = Vec::new();
            headers.remove_prefixed("uberctx-", &mut |name| {
                asked.push(name.to_owned());
                name != "uberctx-b"
            });
            asked.sort();
            assert_eq!(asked, ["uberctx-a", "uberctx-b"]);
            let mut left: Vec<&str> = headers.keys().map(http::HeaderName::as_str).collect();
            left.sort_unstable();
            assert_eq!(
                left,
                ["uber-trace-id", "uberctx", "uberctx-b", "user-agent"]
            );
        }
    }

    /// A `HeaderMap` removes, for prefixes shorter and longer than the eight bytes it
    /// compares as one word, the names the default walk removes.
    #[cfg(feature = "http")]
    #[test]
    fn a_header_map_removes_what_the_default_walk_removes_for_any_prefix() {
        let names = [
            "host",
            "uber",
            "uberctx-",
            "uberctx-a",
            "uberctx-ab",
            "uberctx-b",
            "uber-trace-id",
            "user-agent",
            "x-b3-spanid",
        ];
        for prefix in [
            "",
            "u",
            "uber",
            "uberctx",
            "uberctx-",
            "uberctx-a",
            "uberctx-ab",
            "x-b3-",
            "zzzzzzzzz",
        ] {
            let mut headers = http::HeaderMap::new();
            let mut pairs: Vec<(String, String)> = Vec::new();
            for name in names {
                headers.insert(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static("1"),
                );
                pairs.push((name.to_owned(), "1".to_owned()));
            }
            headers.remove_prefixed(prefix, &mut |_| true);
            pairs.remove_prefixed(prefix, &mut |_| true);
            let mut left: Vec<&str> = headers.keys().map(http::HeaderName::as_str).collect();
            left.sort_unstable();
            let mut expected: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
            expected.sort_unstable();
            assert_eq!(left, expected, "{prefix:?}");
        }
    }

    #[test]
    fn trim_ows_strips_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \ta b\t "), b"a b");
        assert_eq!(trim_ows(b"\r\nx\n"), b"\r\nx\n");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b""), b"");
    }

    /// A `HeaderMap`'s own walk gives what the default one (each name, then its first value
    /// by lookup) gives, in the same order, for maps with fields repeated, including the
    /// first of the walk and the last.
    #[cfg(feature = "http")]
    #[test]
    fn a_header_maps_walk_gives_each_field_once_with_its_first_value() {
        struct ByLookup<'a>(&'a http::HeaderMap);
        impl Extractor for ByLookup<'_> {
            fn get(&self, name: &str) -> Option<&str> {
                Extractor::get(self.0, name)
            }
            fn get_bytes(&self, name: &str) -> Option<&[u8]> {
                Extractor::get_bytes(self.0, name)
            }
            fn names(&self, each: &mut dyn FnMut(&str)) {
                Extractor::names(self.0, each);
            }
        }
        let walk = |carrier: &dyn Extractor| {
            let mut fields = Vec::new();
            carrier.fields(&mut |name, value| fields.push((name.to_owned(), value.to_vec())));
            fields
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("uber-trace-id", "first"),
            ("accept", "*/*"),
            ("uberctx-a", "1"),
            ("uber-trace-id", "second"),
            ("uberctx-a", "2"),
            ("host", "x"),
            ("uberctx-b", "3"),
            ("uberctx-b", "4"),
        ] {
            headers.append(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        let fields = walk(&headers);
        assert_eq!(fields, walk(&ByLookup(&headers)));
        assert_eq!(fields.len(), 5);
        assert!(fields.contains(&("uber-trace-id".to_owned(), b"first".to_vec())));
        assert!(fields.contains(&("uberctx-b".to_owned(), b"3".to_vec())));
    }

    proptest::proptest! {
        /// Byte-wise trimming against the standard library's trimming of characters, on text
        /// mixing OWS with other whitespace and multi-byte characters.
        #[test]
        fn trim_ows_agrees_with_trimming_characters(
            text in "[\t a\u{e9}\u{a0}\u{3000}\u{1f600}\x0b\r\n]{0,16}"
        ) {
            proptest::prop_assert_eq!(
                trim_ows(text.as_bytes()),
                text.trim_matches(|c: char| c == ' ' || c == '\t').as_bytes()
            );
        }
    }
}
