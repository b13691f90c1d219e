//! The `Cache-Status` response field (RFC 9211): how this cache handled a response, written
//! as the field's last member, after those the caches behind it wrote (§2: the first member
//! is the cache closest to the origin, the last the one closest to the client).

use std::fmt::{self, Write as _};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::cache_control::is_tchar;
use super::freshness::Freshness;

/// The field's name.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache name used when the builder is not given one.
pub(crate) const DEFAULT_CACHE_NAME: &str = "edgecache";

/// Why a request went forward (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Nothing stored for the URL.
    UriMiss,
    /// Responses stored for the URL, none selected by the request's `Vary` fields.
    VaryMiss,
    /// A stored response that was stale, or marked stale by a soft purge.
    Stale,
    /// A fresh stored response the request's own directives did not let the cache use.
    Request,
    /// A method the cache does not store.
    Method,
    /// A request the cache does not handle: `Range`, `If-Match`, `If-Unmodified-Since`, an
    /// unreadable `Cache-Control`, a `Host` that is not one `host[:port]` or not the absolute
    /// target's, a target with userinfo.
    Bypass,
}

impl Forward {
    fn token(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Stale => "stale",
            Self::Request => "request",
            Self::Method => "method",
            Self::Bypass => "bypass",
        }
    }
}

/// This cache's member of one response's `Cache-Status` (RFC 9211 §2), carried in the
/// response's extensions until the field is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Member {
    hit: bool,
    forward: Option<Forward>,
    forward_status: Option<StatusCode>,
    stored: bool,
    /// Whether the request waited on another's fetch: `Some(true)` when it used its
    /// response, `Some(false)` when it then had to go forward itself (§2.6).
    collapsed: Option<bool>,
    detail: Option<&'static str>,
    /// Whether the response is the stored one, so its remaining freshness is reported.
    reports_ttl: bool,
    ttl: Option<i64>,
}

impl Member {
    /// Served from storage without going forward (§2.1), fresh or stale.
    pub(crate) fn hit() -> Self {
        Self {
            hit: true,
            reports_ttl: true,
            ..Self::default()
        }
    }

    /// Sent forward for `reason` (§2.2).
    pub(crate) fn forward(reason: Forward) -> Self {
        Self {
            forward: Some(reason),
            ..Self::default()
        }
    }

    /// The status the next hop answered with (§2.3).
    pub(crate) fn forward_status(self, status: Option<StatusCode>) -> Self {
        Self {
            forward_status: status,
            ..self
        }
    }

    /// Whether the response forwarded for was stored (§2.5); a stored one reports its
    /// remaining freshness.
    pub(crate) fn stored(self, stored: bool) -> Self {
        Self {
            stored,
            reports_ttl: self.reports_ttl || stored,
            ..self
        }
    }

    /// The request waited on another's fetch (§2.6): `used` whether it was given that
    /// fetch's response, rather than having to go forward on its own.
    pub(crate) fn collapsed(self, used: bool) -> Self {
        Self {
            collapsed: Some(used),
            ..self
        }
    }

    /// A hit read from the shared tier (feature `redis`) rather than this process's store.
    pub(crate) fn read_from_shared_tier(self) -> Self {
        Self {
            detail: Some("shared-tier"),
            ..self
        }
    }

    /// The stored response served in place of the next hop's error (RFC 5861 §4); it reports
    /// its (negative) remaining freshness.
    pub(crate) fn stale_if_error(self) -> Self {
        Self {
            detail: Some("stale-if-error"),
            reports_ttl: true,
            ..self
        }
    }

    /// The member for a response served from `freshness` at age `age`: the remaining
    /// freshness (§2.4, negative once stale) where the member reports one.
    pub(crate) fn at_age(self, freshness: &Freshness, age: Duration) -> Self {
        if !self.reports_ttl {
            return self;
        }
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self {
            ttl: Some(seconds(freshness.lifetime()).saturating_sub(seconds(age))),
            ..self
        }
    }

    /// The member as written, after the cache's name (an sf-token or sf-string). The
    /// parameters are put together on the stack and the result allocated once, at its exact
    /// size, so the field value takes it without copying or reallocating: this runs for every
    /// response served.
    fn serialize(&self, name: &str) -> Vec<u8> {
        let mut params = Params::default();
        // `Params` holds the longest parameter list a member can have (its test), so none of
        // these writes fails.
        if self.hit {
            let _ = params.write_str("; hit");
        }
        if let Some(forward) = self.forward {
            let _ = write!(params, "; fwd={}", forward.token());
        }
        if let Some(status) = self.forward_status {
            let _ = write!(params, "; fwd-status={}", status.as_u16());
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(params, "; ttl={ttl}");
        }
        if self.stored {
            let _ = params.write_str("; stored");
        }
        match self.collapsed {
            Some(true) => {
                let _ = params.write_str("; collapsed");
            }
            Some(false) => {
                let _ = params.write_str("; collapsed=?0");
            }
            None => {}
        }
        if let Some(detail) = self.detail {
            let _ = write!(params, "; detail={detail}");
        }
        let params = params.as_bytes();
        let mut out = Vec::with_capacity(name.len() + params.len());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(params);
        out
    }

    /// Writes the member into `headers` as the last member of `Cache-Status`, after the
    /// members already there, which it keeps (§2).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap, name: &str) {
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(self.serialize(name))) {
            headers.append(CACHE_STATUS, value);
        }
    }
}

/// The longest a member's parameters can be written: `; hit` (5), `; fwd=vary-miss` (15),
/// `; fwd-status=` and three digits (16), `; ttl=-9223372036854775808` (26), `; stored` (8),
/// `; collapsed=?0` (14), `; detail=stale-if-error` (23), 107 bytes, rounded up.
const PARAMS_CAPACITY: usize = 112;

/// A member's parameters, written on the stack; a write that would not fit fails.
struct Params {
    bytes: [u8; PARAMS_CAPACITY],
    len: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            bytes: [0; PARAMS_CAPACITY],
            len: 0,
        }
    }
}

impl Params {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for Params {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `name` as a Cache-Status identifier: itself if it is an sf-token (RFC 8941 §3.3.4), else an
/// sf-string (§3.3.3) with `"` and `\` escaped; `None` if it has a character neither allows
/// (anything outside printable ASCII).
pub(crate) fn cache_name(name: &str) -> Option<Box<str>> {
    if !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    let is_token = name
        .bytes()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'*')
        && name.bytes().all(|b| is_tchar(b) || b == b':' || b == b'/');
    if is_token {
        return Some(name.into());
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(quoted.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tokens_or_quoted_strings() {
        assert_eq!(cache_name("edge-tokyo").as_deref(), Some("edge-tokyo"));
        assert_eq!(cache_name("cdn/1:a").as_deref(), Some("cdn/1:a"));
        assert_eq!(
            cache_name("Edge \"T\\1\"").as_deref(),
            Some("\"Edge \\\"T\\\\1\\\"\"")
        );
        assert_eq!(cache_name("1st").as_deref(), Some("\"1st\""));
        assert_eq!(cache_name("").as_deref(), Some("\"\""));
        assert_eq!(cache_name("caché"), None);
        assert_eq!(cache_name("a\nb"), None);
    }

    #[test]
    fn members_are_written_in_the_rfcs_order() {
        let member = Member::forward(Forward::Stale)
            .forward_status(Some(StatusCode::SERVICE_UNAVAILABLE))
            .stored(true)
            .collapsed(true)
            .stale_if_error();
        assert_eq!(
            member.serialize("c"),
            b"c; fwd=stale; fwd-status=503; stored; collapsed; detail=stale-if-error"
        );
        assert_eq!(Member::hit().serialize("c"), b"c; hit");
    }

    #[test]
    fn the_longest_member_is_written_whole() {
        let longest = Member {
            hit: true,
            forward: Some(Forward::VaryMiss),
            forward_status: Some(StatusCode::from_u16(999).unwrap()),
            stored: true,
            collapsed: Some(false),
            detail: Some("stale-if-error"),
            reports_ttl: true,
            ttl: Some(i64::MIN),
        };
        let name = "a-cache-name-longer-than-the-parameters-".repeat(4);
        let written = String::from_utf8(longest.serialize(&name)).unwrap();
        assert_eq!(
            written.strip_prefix(name.as_str()),
            Some(
                "; hit; fwd=vary-miss; fwd-status=999; ttl=-9223372036854775808; stored; \
                 collapsed=?0; detail=stale-if-error"
            )
        );
    }
}
