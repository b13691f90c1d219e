//! `Cache-Control` parsing (RFC 9111 §5.2), with bounded work on hostile input.
//!
//! The grammar is a comma-separated list of `token [ "=" ( token / quoted-string ) ]`
//! (§5.2). Names are case-insensitive; values may be quoted (recipients accept both forms,
//! §5.2.1 / §5.2.2). What the parser decides where the RFC leaves room:
//!
//! - **Invalid numbers** (`max-age=abc`, `max-age=-1`, `max-age=` or trailing garbage) give
//!   [`Delta::Invalid`]; freshness treats an invalid `max-age` / `s-maxage` as zero, so the
//!   response is stale (§4.2.1: "caches are encouraged to consider responses that have invalid
//!   freshness information to be stale"). Numbers beyond 2^31 saturate there (§1.2.2).
//! - **Duplicates** resolve to the most restrictive reading (§4.2.1): two different `max-age`
//!   or `s-maxage` values make a response's lifetime invalid (stale); for
//!   `stale-while-revalidate`, `stale-if-error`, `max-stale` and a request's `max-age`
//!   ([`CacheControl::request_max_age`]) the smaller wins, for `min-fresh` the larger.
//! - **Qualified `no-cache="..."` and `private="..."`** restrict only the fields they name
//!   ([`CacheControl::no_cache_fields`], [`CacheControl::private_fields`]; §5.2.2.4,
//!   §5.2.2.7), so a CDN keeps the rest of such a response cacheable. A list that is empty,
//!   holds something other than field names, or names more than [`MAX_QUALIFIED_FIELDS`]
//!   fields counts as the unqualified form, which restricts the whole response (the stricter
//!   reading, which those sections allow); so does the unqualified form beside a qualified
//!   one.
//! - **Unknown directives** are kept, in order, as [`CacheControl::extensions`] (§5.2.3), and
//!   otherwise ignored.
//! - **Limits**: at most [`MAX_CACHE_CONTROL_BYTES`] bytes across all field lines and
//!   [`MAX_DIRECTIVES`] directives are read. Past either limit parsing stops and
//!   [`CacheControl::exceeded_limits`] is set: the cache then neither stores the response nor
//!   answers the request from storage, which is safe whatever the unread part said.
//! - **An unclosed quoted-string** (`x="a, private`) runs to the end of the field line, so
//!   the directives after its quote cannot be told apart; the field counts as unreadable
//!   ([`CacheControl::unreadable`]) and is treated as one past the limits.

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName};

/// The most `Cache-Control` bytes read from one message, over all its field lines.
pub const MAX_CACHE_CONTROL_BYTES: usize = 4096;

/// The most directives read from one message.
pub const MAX_DIRECTIVES: usize = 64;

/// The most field names a message's qualified `no-cache` (or `private`) lists may name in
/// all; past it the directive counts as its unqualified form.
pub const MAX_QUALIFIED_FIELDS: usize = 64;

/// The value RFC 9111 §1.2.2 says to use for a delta-seconds too large to represent.
pub(crate) const DELTA_SECONDS_CAP: u32 = 1 << 31;

/// A `delta-seconds` argument (RFC 9111 §1.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta {
    /// A valid number of seconds, saturated at 2^31.
    Seconds(u32),
    /// Not a non-negative integer, or two directives disagreed: treated as zero.
    Invalid,
}

impl Delta {
    /// The seconds, with an invalid value read as zero.
    ///
    /// ```
    /// use infra_edgecache::http::Delta;
    /// assert_eq!(Delta::Seconds(60).seconds_or_zero(), 60);
    /// assert_eq!(Delta::Invalid.seconds_or_zero(), 0);
    /// ```
    pub fn seconds_or_zero(self) -> u64 {
        match self {
            Delta::Seconds(seconds) => u64::from(seconds),
            Delta::Invalid => 0,
        }
    }
}

/// The request's `max-stale` (RFC 9111 §5.2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStale {
    /// No value: any staleness is acceptable.
    Any,
    /// Stale by at most this many seconds.
    Seconds(u32),
}

/// The parsed directives of one message's `Cache-Control` field lines.
///
/// ```
/// use http::HeaderMap;
/// use infra_edgecache::http::{CacheControl, Delta};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("cache-control", "public, max-age=\"60\", s-maxage=300, x-ext=1".parse()?);
/// let cc = CacheControl::from_headers(&headers);
/// assert!(cc.public());
/// assert_eq!(cc.max_age(), Some(Delta::Seconds(60)));
/// assert_eq!(cc.s_maxage(), Some(Delta::Seconds(300)));
/// assert_eq!(cc.extensions().collect::<Vec<_>>(), [("x-ext", Some("1"))]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    max_age: Option<Delta>,
    /// `max-age` read as a request directive: of duplicates, the smaller.
    request_max_age: Option<Delta>,
    s_maxage: Option<Delta>,
    min_fresh: Option<Delta>,
    max_stale: Option<MaxStale>,
    stale_while_revalidate: Option<Delta>,
    stale_if_error: Option<Delta>,
    no_cache: bool,
    no_cache_fields: Vec<HeaderName>,
    no_store: bool,
    no_transform: bool,
    only_if_cached: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    must_understand: bool,
    private: bool,
    private_fields: Vec<HeaderName>,
    public: bool,
    immutable: bool,
    extensions: Vec<(String, Option<String>)>,
    exceeded_limits: bool,
    unclosed_quote: bool,
}

/// Which way a duplicated delta directive resolves.
#[derive(Clone, Copy)]
enum Duplicate {
    /// Disagreeing values make the directive invalid.
    Invalidate,
    /// The smaller value wins.
    Smaller,
    /// The smaller value wins, an invalid one counting as zero: a bound whose unreadable
    /// value is read as zero, so the outcome does not hang on which of the two came first.
    SmallerInvalidAsZero,
    /// The larger value wins.
    Larger,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`, in order.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut parsed = Self::default();
        let mut budget = MAX_CACHE_CONTROL_BYTES;
        let mut directives = 0;
        for line in headers.get_all(CACHE_CONTROL) {
            let bytes = line.as_bytes();
            if bytes.len() > budget {
                parsed.exceeded_limits = true;
                break;
            }
            budget -= bytes.len();
            if !parsed.parse_line(bytes, &mut directives) {
                break;
            }
        }
        parsed
    }

    /// Parses one field value, as if it were the message's only `Cache-Control` line.
    ///
    /// ```
    /// use infra_edgecache::http::{CacheControl, Delta};
    ///
    /// let cc = CacheControl::parse(b"max-age=10, max-age=20");
    /// assert_eq!(cc.max_age(), Some(Delta::Invalid)); // duplicates that disagree: stale
    /// ```
    pub fn parse(value: &[u8]) -> Self {
        let mut parsed = Self::default();
        if value.len() > MAX_CACHE_CONTROL_BYTES {
            parsed.exceeded_limits = true;
            return parsed;
        }
        let mut directives = 0;
        parsed.parse_line(value, &mut directives);
        parsed
    }

    /// Reads the directives of one line; false once the directive limit stopped it.
    fn parse_line(&mut self, line: &[u8], directives: &mut usize) -> bool {
        let mut rest = line;
        loop {
            rest = skip_ows(rest);
            if rest.is_empty() {
                return true;
            }
            if rest[0] == b',' {
                rest = &rest[1..];
                continue;
            }
            if *directives == MAX_DIRECTIVES {
                self.exceeded_limits = true;
                return false;
            }
            *directives += 1;
            let (element, after, closed) = split_element(rest);
            rest = after;
            self.unclosed_quote |= !closed;
            self.apply(element);
        }
    }

    /// Applies one list element (everything up to its unquoted comma).
    fn apply(&mut self, element: &[u8]) {
        let name_len = element.iter().take_while(|&&b| is_tchar(b)).count();
        if name_len == 0 {
            // No directive name (`=5`, a stray quote): nothing to apply.
            return;
        }
        let name = String::from_utf8_lossy(&element[..name_len]).to_ascii_lowercase();
        let value = parse_value(&element[name_len..]);
        match name.as_str() {
            "max-age" => {
                merge_delta(&mut self.max_age, &value, Duplicate::Invalidate);
                merge_delta(
                    &mut self.request_max_age,
                    &value,
                    Duplicate::SmallerInvalidAsZero,
                );
            }
            "s-maxage" => merge_delta(&mut self.s_maxage, &value, Duplicate::Invalidate),
            "min-fresh" => merge_delta(&mut self.min_fresh, &value, Duplicate::Larger),
            "stale-while-revalidate" => {
                merge_delta(&mut self.stale_while_revalidate, &value, Duplicate::Smaller);
            }
            "stale-if-error" => merge_delta(&mut self.stale_if_error, &value, Duplicate::Smaller),
            "max-stale" => self.merge_max_stale(&value),
            "no-cache" => merge_qualified(&mut self.no_cache, &mut self.no_cache_fields, &value),
            "no-store" => self.no_store = true,
            "no-transform" => self.no_transform = true,
            "only-if-cached" => self.only_if_cached = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "private" => merge_qualified(&mut self.private, &mut self.private_fields, &value),
            "public" => self.public = true,
            "immutable" => self.immutable = true,
            _ => {
                let value = match value {
                    Value::None => None,
                    Value::Text(text) => Some(text),
                    Value::Malformed => Some(String::new()),
                };
                self.extensions.push((name, value));
            }
        }
    }

    fn merge_max_stale(&mut self, value: &Value) {
        let parsed = match value {
            Value::None => MaxStale::Any,
            Value::Text(text) => match parse_delta(text) {
                Delta::Seconds(seconds) => MaxStale::Seconds(seconds),
                // An unreadable max-stale grants nothing: the request gets no stale response.
                Delta::Invalid => MaxStale::Seconds(0),
            },
            Value::Malformed => MaxStale::Seconds(0),
        };
        self.max_stale = Some(match (self.max_stale, parsed) {
            (None | Some(MaxStale::Any), new) => new,
            (Some(old @ MaxStale::Seconds(_)), MaxStale::Any) => old,
            (Some(MaxStale::Seconds(old)), MaxStale::Seconds(new)) => {
                MaxStale::Seconds(old.min(new))
            }
        });
    }

    /// `max-age` as a response directive (§5.2.2.1): duplicates that disagree make it
    /// [`Delta::Invalid`], so the response is stale (§4.2.1).
    pub fn max_age(&self) -> Option<Delta> {
        self.max_age
    }

    /// `max-age` as a request directive (§5.2.1.1): of duplicates the smaller, the tighter
    /// bound on the age the client accepts (an invalid value counts as zero, as in
    /// [`Delta::seconds_or_zero`]).
    ///
    /// ```
    /// use infra_edgecache::http::{CacheControl, Delta};
    ///
    /// let cc = CacheControl::parse(b"max-age=30, max-age=5");
    /// assert_eq!(cc.request_max_age(), Some(Delta::Seconds(5)));
    /// assert_eq!(cc.max_age(), Some(Delta::Invalid), "a response's lifetime: stale");
    /// ```
    pub fn request_max_age(&self) -> Option<Delta> {
        self.request_max_age
    }

    /// `s-maxage` (§5.2.2.10): a shared cache's lifetime, overriding `max-age` and `Expires`.
    pub fn s_maxage(&self) -> Option<Delta> {
        self.s_maxage
    }

    /// `min-fresh` (§5.2.1.3, requests).
    pub fn min_fresh(&self) -> Option<Delta> {
        self.min_fresh
    }

    /// `max-stale` (§5.2.1.2, requests).
    pub fn max_stale(&self) -> Option<MaxStale> {
        self.max_stale
    }

    /// `stale-while-revalidate` (RFC 5861 §3).
    pub fn stale_while_revalidate(&self) -> Option<Delta> {
        self.stale_while_revalidate
    }

    /// `stale-if-error` (RFC 5861 §4), in requests or responses.
    pub fn stale_if_error(&self) -> Option<Delta> {
        self.stale_if_error
    }

    /// `no-cache` without field names (§5.2.1.4, §5.2.2.4), or with a list that could not be
    /// read as field names: the whole response must be validated before reuse.
    pub fn no_cache(&self) -> bool {
        self.no_cache
    }

    /// The fields a qualified `no-cache="..."` names (§5.2.2.4), lower-cased: the response
    /// may be reused without validation, but without these fields.
    pub fn no_cache_fields(&self) -> &[HeaderName] {
        &self.no_cache_fields
    }

    /// `no-store` (§5.2.1.5, §5.2.2.5).
    pub fn no_store(&self) -> bool {
        self.no_store
    }

    /// `no-transform` (§5.2.1.6, §5.2.2.6).
    pub fn no_transform(&self) -> bool {
        self.no_transform
    }

    /// `only-if-cached` (§5.2.1.7, requests).
    pub fn only_if_cached(&self) -> bool {
        self.only_if_cached
    }

    /// `must-revalidate` (§5.2.2.2).
    pub fn must_revalidate(&self) -> bool {
        self.must_revalidate
    }

    /// `proxy-revalidate` (§5.2.2.8): `must-revalidate` for shared caches.
    pub fn proxy_revalidate(&self) -> bool {
        self.proxy_revalidate
    }

    /// `must-understand` (§5.2.2.3).
    pub fn must_understand(&self) -> bool {
        self.must_understand
    }

    /// `private` without field names (§5.2.2.7), or with a list that could not be read as
    /// field names: a shared cache must not store the response.
    pub fn private(&self) -> bool {
        self.private
    }

    /// The fields a qualified `private="..."` names (§5.2.2.7), lower-cased: a shared cache
    /// may store the response, but without these fields.
    pub fn private_fields(&self) -> &[HeaderName] {
        &self.private_fields
    }

    /// `public` (§5.2.2.9).
    pub fn public(&self) -> bool {
        self.public
    }

    /// `immutable` (RFC 8246).
    pub fn immutable(&self) -> bool {
        self.immutable
    }

    /// The directives this parser does not know, lower-cased, in order, with their unquoted
    /// values (an empty value where the syntax was broken).
    pub fn extensions(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.extensions
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_deref()))
    }

    /// Whether the field was longer than [`MAX_CACHE_CONTROL_BYTES`] or had more than
    /// [`MAX_DIRECTIVES`] directives, so part of it was not read.
    pub fn exceeded_limits(&self) -> bool {
        self.exceeded_limits
    }

    /// Whether part of the field could not be read: it [exceeded the
    /// limits](Self::exceeded_limits), or a quoted-string in it never closed and swallowed
    /// what followed. Whatever the unread part said (`no-store`, `private`), the cache
    /// neither stores such a response nor answers such a request from storage.
    pub fn unreadable(&self) -> bool {
        self.exceeded_limits || self.unclosed_quote
    }
}

/// A directive's argument as written.
enum Value {
    /// No `=`.
    None,
    /// The token or unquoted string.
    Text(String),
    /// Something other than `= token` or `= quoted-string` followed by whitespace.
    Malformed,
}

/// Applies a `no-cache` or `private` directive: a readable list of field names adds them to
/// `fields`; no list, or one that is empty, is not field names, or takes `fields` past
/// [`MAX_QUALIFIED_FIELDS`], sets `whole`, the unqualified form.
fn merge_qualified(whole: &mut bool, fields: &mut Vec<HeaderName>, value: &Value) {
    let Value::Text(list) = value else {
        *whole = true;
        return;
    };
    let Some(names) = field_names(list) else {
        *whole = true;
        return;
    };
    for name in names {
        if fields.contains(&name) {
            continue;
        }
        if fields.len() == MAX_QUALIFIED_FIELDS {
            *whole = true;
            return;
        }
        fields.push(name);
    }
}

/// The field names of a qualified directive's list (`#field-name`); `None` if it names none
/// or has a member that is not a field name.
fn field_names(list: &str) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for member in list.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        names.push(HeaderName::from_bytes(member.as_bytes()).ok()?);
    }
    (!names.is_empty()).then_some(names)
}

fn merge_delta(slot: &mut Option<Delta>, value: &Value, duplicate: Duplicate) {
    let parsed = match value {
        Value::Text(text) => parse_delta(text),
        Value::None | Value::Malformed => Delta::Invalid,
    };
    *slot = Some(match (*slot, parsed) {
        (None, new) => new,
        (Some(Delta::Invalid), _) => Delta::Invalid,
        (Some(old @ Delta::Seconds(_)), Delta::Invalid) => match duplicate {
            Duplicate::Invalidate | Duplicate::SmallerInvalidAsZero => Delta::Invalid,
            // An unreadable duplicate of a window or bound adds nothing restrictive.
            Duplicate::Smaller | Duplicate::Larger => old,
        },
        (Some(Delta::Seconds(old)), Delta::Seconds(new)) => match duplicate {
            Duplicate::Invalidate if old != new => Delta::Invalid,
            Duplicate::Invalidate => Delta::Seconds(old),
            Duplicate::Smaller | Duplicate::SmallerInvalidAsZero => Delta::Seconds(old.min(new)),
            Duplicate::Larger => Delta::Seconds(old.max(new)),
        },
    });
}

/// `1*DIGIT`, saturating at 2^31 (§1.2.2); anything else is invalid.
fn parse_delta(text: &str) -> Delta {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Delta::Invalid;
    }
    let mut value: u32 = 0;
    for digit in text.bytes() {
        value = value
            .saturating_mul(10)
            .saturating_add(u32::from(digit - b'0'))
            .min(DELTA_SECONDS_CAP);
    }
    Delta::Seconds(value)
}

/// Reads `[ OWS "=" OWS ( token / quoted-string ) ] OWS` after a directive name.
fn parse_value(after_name: &[u8]) -> Value {
    let rest = skip_ows(after_name);
    if rest.is_empty() {
        return Value::None;
    }
    if rest[0] != b'=' {
        return Value::Malformed;
    }
    let rest = skip_ows(&rest[1..]);
    let (text, rest) = if rest.first() == Some(&b'"') {
        match unquote(&rest[1..]) {
            Some(parsed) => parsed,
            None => return Value::Malformed,
        }
    } else {
        let len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        (
            String::from_utf8_lossy(&rest[..len]).into_owned(),
            &rest[len..],
        )
    };
    if skip_ows(rest).is_empty() {
        Value::Text(text)
    } else {
        Value::Malformed
    }
}

/// The content of a quoted-string whose opening quote is already consumed, and what follows
/// its closing quote; `None` if it never closes.
fn unquote(mut input: &[u8]) -> Option<(String, &[u8])> {
    let mut text = Vec::new();
    loop {
        match *input.first()? {
            b'"' => return Some((String::from_utf8_lossy(&text).into_owned(), &input[1..])),
            b'\\' => {
                text.push(*input.get(1)?);
                input = &input[2..];
            }
            byte => {
                text.push(byte);
                input = &input[1..];
            }
        }
    }
}

/// Splits off one list element at the first comma outside a quoted-string; false when a
/// quoted-string in it never closes (the element then runs to the end of `input`).
fn split_element(input: &[u8]) -> (&[u8], &[u8], bool) {
    let mut quoted = false;
    let mut escaped = false;
    for (index, &byte) in input.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            quoted = !quoted;
        } else if byte == b',' && !quoted {
            return (&input[..index], &input[index + 1..], true);
        }
    }
    (input, &[], !quoted)
}

fn skip_ows(input: &[u8]) -> &[u8] {
    let start = input
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &input[start..]
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_request_and_response_directives() {
        let cc = CacheControl::parse(
            b"No-Cache, NO-STORE, max-stale, min-fresh=5, only-if-cached, no-transform",
        );
        assert!(cc.no_cache() && cc.no_store() && cc.only_if_cached() && cc.no_transform());
        assert_eq!(cc.max_stale(), Some(MaxStale::Any));
        assert_eq!(cc.min_fresh(), Some(Delta::Seconds(5)));

        let cc = CacheControl::parse(
            b"private=\"set-cookie, x\", must-revalidate, proxy-revalidate, must-understand, \
              immutable, stale-while-revalidate=30, stale-if-error=600",
        );
        assert!(!cc.private() && cc.must_revalidate() && cc.proxy_revalidate());
        assert_eq!(cc.private_fields(), ["set-cookie", "x"]);
        assert!(cc.must_understand() && cc.immutable());
        assert_eq!(cc.stale_while_revalidate(), Some(Delta::Seconds(30)));
        assert_eq!(cc.stale_if_error(), Some(Delta::Seconds(600)));
        assert_eq!(
            cc.extensions().count(),
            0,
            "the quoted comma is not a separator"
        );
    }

    #[test]
    fn qualified_no_cache_and_private_name_fields() {
        let cc = CacheControl::parse(
            b"no-cache=\"X-Token, x-other\", private=Set-Cookie, no-cache=\"x-token,x-third\"",
        );
        assert!(!cc.no_cache() && !cc.private());
        assert_eq!(cc.no_cache_fields(), ["x-token", "x-other", "x-third"]);
        assert_eq!(cc.private_fields(), ["set-cookie"]);

        for whole in [
            &b"no-cache"[..],
            b"no-cache=\"\"",
            b"no-cache=\" , \"",
            b"no-cache=\"x y\"",
            b"no-cache=\"a\" junk",
            b"no-cache=\"x\", no-cache",
        ] {
            let cc = CacheControl::parse(whole);
            assert!(cc.no_cache(), "{}", String::from_utf8_lossy(whole));
        }

        let names: Vec<String> = (0..=MAX_QUALIFIED_FIELDS)
            .map(|i| format!("x-{i}"))
            .collect();
        let many = format!("private=\"{}\"", names.join(","));
        let cc = CacheControl::parse(many.as_bytes());
        assert!(cc.private(), "past the limit: the whole response");
        assert_eq!(cc.private_fields().len(), MAX_QUALIFIED_FIELDS);
    }

    #[test]
    fn invalid_numbers_are_invalid_and_large_ones_saturate() {
        for bad in [
            &b"max-age=abc"[..],
            b"max-age=-1",
            b"max-age=",
            b"max-age",
            b"max-age=1 2",
            b"max-age=\"5",
            b"max-age=1.5",
        ] {
            let cc = CacheControl::parse(bad);
            assert_eq!(
                cc.max_age(),
                Some(Delta::Invalid),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let cc = CacheControl::parse(b"max-age=99999999999999999999999");
        assert_eq!(cc.max_age(), Some(Delta::Seconds(1 << 31)));
        let cc = CacheControl::parse(b"max-age = \"7\" ");
        assert_eq!(cc.max_age(), Some(Delta::Seconds(7)));
    }

    #[test]
    fn duplicates_resolve_to_the_most_restrictive() {
        let cc = CacheControl::parse(b"max-age=5, max-age=5");
        assert_eq!(cc.max_age(), Some(Delta::Seconds(5)));
        let cc = CacheControl::parse(b"s-maxage=5, s-maxage=6");
        assert_eq!(cc.s_maxage(), Some(Delta::Invalid));
        let cc = CacheControl::parse(b"stale-if-error=50, stale-if-error=10, stale-if-error=x");
        assert_eq!(cc.stale_if_error(), Some(Delta::Seconds(10)));
        let cc = CacheControl::parse(b"min-fresh=1, min-fresh=9");
        assert_eq!(cc.min_fresh(), Some(Delta::Seconds(9)));
        let cc = CacheControl::parse(b"max-stale=9, max-stale, max-stale=3");
        assert_eq!(cc.max_stale(), Some(MaxStale::Seconds(3)));
    }

    #[test]
    fn field_lines_combine_and_unknown_directives_are_kept() {
        let mut headers = HeaderMap::new();
        headers.append(CACHE_CONTROL, "max-age=60".parse().unwrap());
        headers.append(CACHE_CONTROL, "Foo=\"a\\\"b\", bar, ,".parse().unwrap());
        let cc = CacheControl::from_headers(&headers);
        assert_eq!(cc.max_age(), Some(Delta::Seconds(60)));
        assert_eq!(
            cc.extensions().collect::<Vec<_>>(),
            [("foo", Some("a\"b")), ("bar", None)]
        );
        assert!(!cc.exceeded_limits());
    }

    #[test]
    fn an_unclosed_quote_makes_the_field_unreadable() {
        let cc = CacheControl::parse(b"max-age=60, x=\"unclosed, private");
        assert!(cc.unreadable() && !cc.exceeded_limits());
        assert!(!cc.private(), "swallowed by the quoted-string");
        assert!(!CacheControl::parse(b"x=\"closed, private\", max-age=60").unreadable());
    }

    #[test]
    fn limits_stop_parsing_and_say_so() {
        let many = vec!["x"; MAX_DIRECTIVES + 1].join(",");
        let cc = CacheControl::parse(many.as_bytes());
        assert!(cc.exceeded_limits());
        assert_eq!(cc.extensions().count(), MAX_DIRECTIVES);

        let long = format!("max-age=1, x=\"{}\"", "a".repeat(MAX_CACHE_CONTROL_BYTES));
        assert!(CacheControl::parse(long.as_bytes()).exceeded_limits());

        let mut headers = HeaderMap::new();
        let line = "a".repeat(MAX_CACHE_CONTROL_BYTES / 2 + 1);
        headers.append(CACHE_CONTROL, line.parse().unwrap());
        headers.append(CACHE_CONTROL, line.parse().unwrap());
        assert!(CacheControl::from_headers(&headers).exceeded_limits());
    }
}
