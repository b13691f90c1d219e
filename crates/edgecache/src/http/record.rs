//! The binary form of a stored response, as the shared tier (feature `redis`) keeps it:
//! [`Record`].
//!
//! The format is versioned and every length is checked against the bytes that remain before
//! anything is allocated, so decoding bytes from elsewhere (another process, a shared store
//! anyone on the network may write to) returns a [`DecodeError`] rather than panicking, and
//! allocates in proportion to the input: the body and values are copied once, and the field
//! map grows by one entry per field read (at most the 32 768 a header map holds, each entry
//! larger than the seven bytes a field takes at least: a two-byte length and a one-byte name,
//! a four-byte length and an empty value). All integers are big-endian:
//!
//! ```text
//! "EC" version(u8 = 1)
//! status(u16)
//! freshness: lifetime, initial age (durations), flags(u8: no-cache, never stale),
//!            stale-while-revalidate, stale-if-error (optional durations)
//! expires_in (duration)
//! headers: count(u32), each name(u16 length + bytes) value(u32 length + bytes)
//! vary: count(u8), each name(u16 length + bytes) value(u8: absent 0 / present 1, then u32 length + bytes)
//! tags: count(u8), each u16 length + UTF-8 bytes
//! body: u32 length + bytes
//! ```
//!
//! A duration is seconds (u64) and nanoseconds (u32, below one billion); an optional one is
//! preceded by a byte, 0 for absent and 1 for present. Nothing may follow the body.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::freshness::{Freshness, FreshnessParts};
use super::keys::{MAX_VARY_FIELDS, VaryKey};

/// The version byte this crate writes and reads.
pub const RECORD_VERSION: u8 = 1;

const MAGIC: &[u8; 2] = b"EC";

/// The most tags a record may carry: the cache's limit for storing a response.
const MAX_TAGS: usize = 64;
/// The longest tag: the cache's limit for storing a response.
const MAX_TAG_LEN: usize = 256;

// The decoder accepts exactly what the cache stores.
#[cfg(feature = "tokio")]
const _: () = assert!(
    MAX_TAGS == super::purge::MAX_TAGS_PER_RESPONSE && MAX_TAG_LEN == super::purge::MAX_TAG_BYTES
);

const FLAG_NO_CACHE: u8 = 1;
const FLAG_NEVER_STALE: u8 = 2;

/// One stored response with what a cache needs to reuse it: the value the shared tier keeps
/// under a URL's key.
///
/// ```
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use infra_edgecache::http::{CacheControl, Exchange, Freshness, Heuristic, Record, VaryKey};
/// use std::time::{Duration, SystemTime};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("cache-control", "max-age=60".parse()?);
/// let now = SystemTime::now();
/// let exchange = Exchange { request_time: now, response_time: now };
/// let cc = CacheControl::from_headers(&headers);
/// let record = Record {
///     status: StatusCode::OK,
///     freshness: Freshness::of_response(StatusCode::OK, &headers, &cc, exchange, Heuristic::default()),
///     headers,
///     body: Bytes::from_static(b"hello"),
///     vary: VaryKey::default(),
///     tags: vec!["product-42".into()],
///     expires_in: Duration::from_secs(60),
/// };
/// let bytes = record.encode();
/// assert_eq!(Record::decode(&bytes)?, record);
/// assert!(Record::decode(&bytes[..bytes.len() - 1]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The response status.
    pub status: StatusCode,
    /// The stored fields (no hop-by-hop ones).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The variant: the request fields its `Vary` names, with the values they had.
    pub vary: VaryKey,
    /// The surrogate keys (tags) from its `Surrogate-Key` field.
    pub tags: Vec<Box<str>>,
    /// Its freshness, with the initial age it had when the record was written.
    pub freshness: Freshness,
    /// How long the record was to be kept when written; with the time it has left, this tells
    /// a reader how long it has been kept.
    pub expires_in: Duration,
}

/// Why bytes are not a [`Record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a stored response record: {}", self.what)
    }
}

impl std::error::Error for DecodeError {}

fn invalid(what: &'static str) -> DecodeError {
    DecodeError { what }
}

impl Record {
    /// The record's bytes.
    ///
    /// # Panics
    ///
    /// If a header value, the body or the stored lists exceed the format's length fields
    /// (4 GiB for a body or value, 64 KiB for a field name, 255 vary fields or tags), which no
    /// response the cache stores reaches.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len() + 64 * self.headers.len());
        out.extend_from_slice(MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        let parts = self.freshness.parts();
        put_duration(&mut out, parts.lifetime);
        put_duration(&mut out, parts.initial_age);
        let mut flags = 0;
        if parts.no_cache {
            flags |= FLAG_NO_CACHE;
        }
        if parts.revalidate_when_stale {
            flags |= FLAG_NEVER_STALE;
        }
        out.push(flags);
        put_optional(&mut out, parts.stale_while_revalidate);
        put_optional(&mut out, parts.stale_if_error);
        put_duration(&mut out, self.expires_in);
        put_u32(&mut out, self.headers.len());
        for (name, value) in &self.headers {
            put_short(&mut out, name.as_str().as_bytes());
            put_long(&mut out, value.as_bytes());
        }
        let fields = self.vary.fields();
        out.push(u8::try_from(fields.len()).expect("at most 16 vary fields"));
        for (name, value) in fields {
            put_short(&mut out, name.as_str().as_bytes());
            match value {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    put_long(&mut out, value);
                }
            }
        }
        out.push(u8::try_from(self.tags.len()).expect("at most 64 tags"));
        for tag in &self.tags {
            put_short(&mut out, tag.as_bytes());
        }
        put_long(&mut out, &self.body);
        out
    }

    /// The record `bytes` hold.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything [`Record::encode`] would not have written: another magic
    /// or version, a length past the end, an invalid status, field name or value, a tag that is
    /// not UTF-8 or over the cache's limits, or bytes after the body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Reader { bytes };
        if input.take(2)? != MAGIC {
            return Err(invalid("wrong magic"));
        }
        if input.u8()? != RECORD_VERSION {
            return Err(invalid("unknown version"));
        }
        let status =
            StatusCode::from_u16(input.u16()?).map_err(|_| invalid("invalid status code"))?;
        let lifetime = input.duration()?;
        let initial_age = input.duration()?;
        let flags = input.u8()?;
        if flags & !(FLAG_NO_CACHE | FLAG_NEVER_STALE) != 0 {
            return Err(invalid("unknown freshness flags"));
        }
        let stale_while_revalidate = input.optional()?;
        let stale_if_error = input.optional()?;
        let freshness = Freshness::from_parts(FreshnessParts {
            lifetime,
            initial_age,
            no_cache: flags & FLAG_NO_CACHE != 0,
            revalidate_when_stale: flags & FLAG_NEVER_STALE != 0,
            stale_while_revalidate,
            stale_if_error,
        });
        let expires_in = input.duration()?;

        let header_count = input.u32()?;
        let mut headers = HeaderMap::new();
        for _ in 0..header_count {
            // Each field takes at least seven bytes, so a count past the input ends here, before
            // the map grows further.
            let name = HeaderName::from_bytes(input.short()?)
                .map_err(|_| invalid("invalid field name"))?;
            let value = HeaderValue::from_bytes(input.long()?)
                .map_err(|_| invalid("invalid field value"))?;
            // The map holds at most 32 768 fields, and `append` would panic past that.
            headers
                .try_append(name, value)
                .map_err(|_| invalid("more fields than a header map holds"))?;
        }

        let vary_count = usize::from(input.u8()?);
        if vary_count > MAX_VARY_FIELDS {
            return Err(invalid("too many vary fields"));
        }
        let mut fields = Vec::with_capacity(vary_count);
        for _ in 0..vary_count {
            let name = HeaderName::from_bytes(input.short()?)
                .map_err(|_| invalid("invalid vary field name"))?;
            let value = match input.u8()? {
                0 => None,
                1 => Some(input.long()?.to_vec()),
                _ => return Err(invalid("invalid vary value marker")),
            };
            fields.push((name, value));
        }
        let vary = VaryKey::from_fields(fields).ok_or(invalid("repeated vary field"))?;

        let tag_count = usize::from(input.u8()?);
        if tag_count > MAX_TAGS {
            return Err(invalid("too many tags"));
        }
        let mut tags = Vec::with_capacity(tag_count);
        for _ in 0..tag_count {
            let tag = input.short()?;
            if tag.is_empty() || tag.len() > MAX_TAG_LEN {
                return Err(invalid("empty or oversized tag"));
            }
            let tag = std::str::from_utf8(tag).map_err(|_| invalid("tag is not UTF-8"))?;
            tags.push(Box::from(tag));
        }

        let body = Bytes::copy_from_slice(input.long()?);
        if !input.bytes.is_empty() {
            return Err(invalid("bytes after the body"));
        }
        Ok(Self {
            status,
            headers,
            body,
            vary,
            tags,
            freshness,
            expires_in,
        })
    }
}

fn put_duration(out: &mut Vec<u8>, duration: Duration) {
    out.extend_from_slice(&duration.as_secs().to_be_bytes());
    out.extend_from_slice(&duration.subsec_nanos().to_be_bytes());
}

fn put_optional(out: &mut Vec<u8>, duration: Option<Duration>) {
    match duration {
        None => out.push(0),
        Some(duration) => {
            out.push(1);
            put_duration(out, duration);
        }
    }
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).expect("a length the format can hold");
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("a name the format can hold");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The unread rest of a record.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.bytes.len() {
            return Err(invalid("truncated"));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn duration(&mut self) -> Result<Duration, DecodeError> {
        let secs = u64::from_be_bytes(self.array()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(invalid("nanoseconds out of range"));
        }
        Ok(Duration::new(secs, nanos))
    }

    fn optional(&mut self) -> Result<Option<Duration>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.duration().map(Some),
            _ => Err(invalid("invalid optional marker")),
        }
    }

    fn short(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn long(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        self.take(usize::try_from(len).map_err(|_| invalid("length out of range"))?)
    }
}
