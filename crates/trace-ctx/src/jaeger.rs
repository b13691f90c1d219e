//! Jaeger propagation: `uber-trace-id` and `uberctx-{key}` baggage headers.
//!
//! Rules followed (Jaeger client propagation format):
//! - `{trace-id}:{span-id}:{parent-span-id}:{flags}`, each field hex (either case, as
//!   Jaeger clients accept), without required padding: trace id 1 to 32 digits, span and
//!   parent ids 1 to 16, flags 1 or 2; the separators may be URL-encoded (`%3A`, either
//!   case), as OpenTelemetry's Java and Go propagators send them;
//! - trace and span ids must not be zero; parent `0` means "no parent" (the field is
//!   deprecated);
//! - flags: `0x01` sampled, `0x02` debug; debug implies sampled, so a span context read from
//!   flags `2` is sampled and written back as `3`. [`JaegerHeader`] keeps the whole flags
//!   byte (`1:2:0:9` reads and writes back as `9`), but a [`SpanContext`] holds only the
//!   sampling decision, so other bits (firehose `0x08`, for one) are not propagated: the
//!   propagator writes `0`, `1` or `3`;
//! - `uberctx-{key}: {value}` carries baggage, the value percent-encoded; a `+` reads as a
//!   space (Go clients encode with `url.QueryEscape`), so a plus is written as `%2B`;
//! - the member's key is the field's key lowercased. Fields whose names differ only in case
//!   (`uberctx-Foo: a` and `uberctx-foo: b`) give one member, whatever order the carrier
//!   walks them in: the lowercase name's value; without one, the value of the name first in
//!   byte order (`UBERCTX-FOO` before `Uberctx-Foo` before `uberctx-Foo`). A field whose
//!   value does not decode takes no part. This matters in a `HashMap`, whose keys are exact
//!   and whose walk order comes from its own random keys: a carrier whose lookups ignore case
//!   (a `Vec` of pairs) gives every spelling the value of the first such field, and an
//!   `http::HeaderMap`'s names are all lowercase. Jaeger's Go client lowercases every name
//!   into a map as its carrier's walk meets it, so there the field met last wins, and a Go
//!   map's walk order is random too;
//! - output: lowercase, ids zero-padded to 32 and 16 digits, flags unpadded.
//!
//! Not read: `jaeger-debug-id` and `jaeger-baggage`. Jaeger's clients read them only to
//! start a trace from a request made by hand (a debug root span tagged with the id, and
//! baggage given as `k1=v1,k2=v2`) and write neither on a call, so no service passes them
//! on; OpenTelemetry's Rust Jaeger propagator reads neither. Baggage set by hand travels as
//! `uberctx-{key}` or as W3C `baggage` ([`crate::BaggagePropagator`]).

use std::fmt;

use crate::baggage::{is_tchar, percent_decode, percent_encoded_len_with, write_percent_encoded};
use crate::carrier::{Extractor, FieldValue, Injector, trim_ows};
use crate::fields::{Fields, find_byte};
use crate::id::{parse_any_hex_u128, parse_hex_words};
use crate::inline_text::InlineText;
use crate::propagator::Propagator;
use crate::{Baggage, Context, Error, SamplingState, SpanContext, SpanId, TraceFlags, TraceId};

/// The Jaeger trace header name.
pub const UBER_TRACE_ID: &str = "uber-trace-id";
/// The prefix of Jaeger baggage headers.
pub const UBERCTX_PREFIX: &str = "uberctx-";

/// A parsed `uber-trace-id` header.
///
/// ```
/// use infra_trace_ctx::JaegerHeader;
///
/// let header = JaegerHeader::parse("A3CE929D0E0E4736:e457b5a2e4d86bd1:0:1")?;
/// assert!(header.is_sampled());
/// assert_eq!(
///     header.to_string(),
///     "0000000000000000a3ce929d0e0e4736:e457b5a2e4d86bd1:0:1"
/// );
/// # Ok::<(), infra_trace_ctx::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JaegerHeader {
    /// The trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub span_id: SpanId,
    /// The caller's parent, or `None` for `0`.
    pub parent_span_id: Option<SpanId>,
    /// The flags byte as received: `0x01` sampled, `0x02` debug, other bits kept here but not
    /// in [`JaegerHeader::span_context`].
    pub flags: u8,
}

impl JaegerHeader {
    /// The sampled flag.
    pub const SAMPLED: u8 = 0x01;
    /// The debug flag.
    pub const DEBUG: u8 = 0x02;

    /// Parses an `uber-trace-id` value.
    ///
    /// # Errors
    ///
    /// [`Error::Jaeger`] if the value breaks the rules in the module docs.
    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::parse_bytes(value.as_bytes())
    }

    /// [`JaegerHeader::parse`] on the bytes of a value, which need not be UTF-8 (any byte
    /// outside the grammar is rejected).
    fn parse_bytes(value: &[u8]) -> Result<Self, Error> {
        let value = trim_ows(value);
        if let Some(header) = Self::parse_full_width(value) {
            return Ok(header);
        }
        // Only the URL-encoded form allocates: its `%3A` separators become `:`.
        let decoded;
        let value = if find_byte(value, b'%').is_some() {
            decoded = decode_separators(value);
            &decoded
        } else {
            value
        };
        let mut fields = Fields::new(value, b':');
        let mut next = |max: usize, what: &'static str| -> Result<u128, Error> {
            let field = fields
                .next()
                .ok_or(Error::Jaeger("four fields separated by ':'"))?;
            if field.is_empty() || field.len() > max {
                return Err(Error::Jaeger(what));
            }
            parse_any_hex_u128(field).ok_or(Error::Jaeger(what))
        };
        let trace_id = next(32, "the trace id is 1 to 32 hex digits")?;
        let span_id = next(16, "the span id is 1 to 16 hex digits")?;
        let parent_span_id = next(16, "the parent id is 1 to 16 hex digits")?;
        let flags = next(2, "the flags are 1 or 2 hex digits")?;
        if fields.next().is_some() {
            return Err(Error::Jaeger("four fields separated by ':'"));
        }
        // Each field's length bounds it to its type's width.
        #[allow(clippy::cast_possible_truncation)]
        let (span_id, parent_span_id, flags) = (span_id as u64, parent_span_id as u64, flags as u8);
        Ok(Self {
            trace_id: TraceId::from_u128(trace_id).ok_or(Error::Jaeger("the trace id is zero"))?,
            span_id: SpanId::from_u64(span_id).ok_or(Error::Jaeger("the span id is zero"))?,
            parent_span_id: SpanId::from_u64(parent_span_id),
            flags,
        })
    }

    /// The layout every tracer writes (a 32-digit trace id and a 16-digit span id, plain `:`
    /// separators), read with its ids at fixed places: no search for their separators, and
    /// each id read as whole words with one check of all its digits. `None` for anything
    /// else, valid or not, which the general reading then takes (so errors are its own).
    #[inline]
    fn parse_full_width(value: &[u8]) -> Option<Self> {
        let (trace_id, rest) = value.split_first_chunk::<32>()?;
        let (span_id, rest) = match rest {
            [b':', rest @ ..] => rest.split_first_chunk::<16>()?,
            _ => return None,
        };
        let [b':', rest @ ..] = rest else {
            return None;
        };
        let (parent, flags) = rest.split_at(find_byte(rest, b':')?);
        let flags = &flags[1..];
        if !(1..=16).contains(&parent.len()) || !(1..=2).contains(&flags.len()) {
            return None;
        }
        let trace_id = parse_hex_words(trace_id, true)?;
        let span_id = parse_hex_words(span_id, true)?;
        let parent_span_id = parse_any_hex_u128(parent)?;
        let flags = parse_any_hex_u128(flags)?;
        // Each field's length bounds it to its type's width.
        #[allow(clippy::cast_possible_truncation)]
        Some(Self {
            trace_id: TraceId::from_u128(trace_id)?,
            span_id: SpanId::from_u64(span_id as u64)?,
            parent_span_id: SpanId::from_u64(parent_span_id as u64),
            flags: flags as u8,
        })
    }

    /// Whether the sampled or debug flag is set.
    pub const fn is_sampled(&self) -> bool {
        self.flags & (Self::SAMPLED | Self::DEBUG) != 0
    }

    /// The span context this header describes: [`SamplingState::Debug`] if the debug flag
    /// is set (with or without the sampled flag: debug implies sampled), else accept or deny.
    pub fn span_context(&self) -> SpanContext {
        let state = if self.flags & Self::DEBUG != 0 {
            SamplingState::Debug
        } else if self.flags & Self::SAMPLED != 0 {
            SamplingState::Accept
        } else {
            SamplingState::Deny
        };
        SpanContext::remote(self.trace_id, self.span_id, TraceFlags::NONE)
            .with_sampling_state(state)
    }

    /// The header describing `span`.
    pub fn of(span: &SpanContext) -> Self {
        Self {
            trace_id: span.trace_id(),
            span_id: span.span_id(),
            parent_span_id: None,
            flags: match span.sampling_state() {
                SamplingState::Debug => Self::SAMPLED | Self::DEBUG,
                state if state.is_sampled() => Self::SAMPLED,
                _ => 0,
            },
        }
    }
}

/// Finds, in a walk over a carrier's fields, the `uber-trace-id` value a lookup of the name
/// gives, without the lookup when the walk meets the name in lowercase.
struct TraceHeader<'a> {
    carrier: &'a dyn Extractor,
    /// The context the header describes (`None` if it is invalid or absent), once met.
    found: Option<Option<SpanContext>>,
}

impl<'a> TraceHeader<'a> {
    fn new(carrier: &'a dyn Extractor) -> Self {
        Self {
            carrier,
            found: None,
        }
    }

    /// If `name` is the first `uber-trace-id` of the walk in any case, reads the trace
    /// header and says so.
    fn read(&mut self, name: &str, value: &[u8]) -> bool {
        if self.found.is_some() {
            return false;
        }
        // Names are lowercase in most carriers (always in a `HeaderMap`): the exact
        // comparison is a few word compares where ignoring case goes byte by byte. The first
        // lowercase one of the walk is the field a lookup finds.
        let value = if name == UBER_TRACE_ID {
            Some(value)
        } else if name.eq_ignore_ascii_case(UBER_TRACE_ID) {
            // Another case: a carrier that ignores case finds this very field, but one with
            // exact keys (a `HashMap`) finds only a lowercase one, wherever its walk puts it.
            self.carrier.get_bytes(UBER_TRACE_ID)
        } else {
            return false;
        };
        self.found = Some(value.and_then(span_context_of));
        true
    }

    /// The context the trace header describes, after the walk; looked up if the walk did not
    /// meet it (a carrier that can look fields up but lists none).
    fn span(self) -> Option<SpanContext> {
        self.found.unwrap_or_else(|| {
            self.carrier
                .get_bytes(UBER_TRACE_ID)
                .and_then(span_context_of)
        })
    }
}

/// The context a trace header value describes, `None` if it is invalid.
fn span_context_of(value: &[u8]) -> Option<SpanContext> {
    JaegerHeader::parse_bytes(value)
        .ok()
        .map(|header| header.span_context())
}

/// Adds the baggage member a `uberctx-{key}` field carries, or holds it back in `mixed_case`
/// if the field's name is not all lowercase (see [`MixedCaseFields`]).
///
/// The member's key is the field's key lowercased, its value the field's value
/// percent-decoded (a `+` is a space). Other fields, a key outside the token characters and a
/// value that does not decode add nothing.
#[inline]
fn add_uberctx(name: &str, value: &[u8], baggage: &mut Baggage, mixed_case: &mut MixedCaseFields) {
    // Inlined into the walk, so that the fields that are not baggage (most of a request's)
    // are turned away without a call.
    if let Some(key) = uberctx_key(name) {
        add_member(name, key, value, baggage, mixed_case);
    }
}

/// [`add_uberctx`] for a field whose name has the prefix.
fn add_member(
    name: &str,
    key: &str,
    value: &[u8],
    baggage: &mut Baggage,
    mixed_case: &mut MixedCaseFields,
) {
    let Some(value) = member_value(key, value) else {
        return;
    };
    if is_lowercase(name) {
        let _ = baggage.insert(key, &value);
    } else {
        mixed_case.hold(name, key, value);
    }
}

/// Whether `name` may be one of Jaeger's fields: both begin with `uber` (in any case) and are
/// longer than eight bytes. Compared as one word, so that the other fields of a request (most
/// of them, `user-agent` included) are turned away before their names are compared.
#[inline(always)]
fn begins_with_uber(name: &str) -> bool {
    match name.as_bytes().first_chunk::<4>() {
        // Setting bit 5 of each byte folds the uppercase letters onto `uber` and moves no
        // other byte there.
        Some(&head) => {
            name.len() > 8 && u32::from_le_bytes(head) | 0x2020_2020 == u32::from_le_bytes(*b"uber")
        }
        None => false,
    }
}

/// The key of a `uberctx-{key}` field (the prefix in any case), as the name spells it.
#[inline(always)]
fn uberctx_key(name: &str) -> Option<&str> {
    // Most fields of a request are not baggage: their first letter turns them away before
    // the prefix is compared without regard to case.
    let prefixed = name.len() > UBERCTX_PREFIX.len()
        && name.as_bytes()[0].eq_ignore_ascii_case(&b'u')
        && name.as_bytes()[..UBERCTX_PREFIX.len()].eq_ignore_ascii_case(UBERCTX_PREFIX.as_bytes());
    prefixed.then(|| &name[UBERCTX_PREFIX.len()..])
}

/// The value of the member a `uberctx-{key}` field carries: `None` for a key outside the
/// token characters or a value that does not decode.
fn member_value(key: &str, value: &[u8]) -> Option<String> {
    if !key.bytes().all(is_tchar) {
        return None;
    }
    let raw = std::str::from_utf8(value).ok()?;
    // A `+` is a space in what Go's url.QueryEscape writes (a plus arrives as `%2B`).
    if raw.contains('+') {
        percent_decode(&raw.replace('+', " "))
    } else {
        percent_decode(raw)
    }
}

fn is_lowercase(name: &str) -> bool {
    !name.bytes().any(|byte| byte.is_ascii_uppercase())
}

/// The `uberctx-*` fields of one walk whose names are not all lowercase, held back until the
/// walk ends so that the member their key gets does not depend on the order of the walk (a
/// `HashMap` walks its keys in an order of its own random keys). Of the fields whose keys are
/// the same once lowercased, a field named in lowercase gives the member (added during the
/// walk); without one, the field whose name comes first in byte order (`UBERCTX-K` before
/// `Uberctx-K` before `uberctx-K`; of one name met twice, the first met). A field whose
/// value does not decode carries no member and takes no part.
///
/// Holding nothing costs nothing: a carrier whose `uberctx-*` names are lowercase (every
/// `HeaderMap`) allocates nothing here and is walked once.
#[derive(Default)]
struct MixedCaseFields(Vec<MixedCaseField>);

struct MixedCaseField {
    /// The member's key: the field's key lowercased.
    key: String,
    name: String,
    value: String,
}

impl MixedCaseFields {
    fn hold(&mut self, name: &str, key: &str, value: String) {
        self.0.push(MixedCaseField {
            key: key.to_ascii_lowercase(),
            name: name.to_owned(),
            value,
        });
    }

    /// Adds the members the held fields give, after the walk over `carrier`.
    #[inline(always)]
    fn settle(self, carrier: &dyn Extractor, baggage: &mut Baggage) {
        // Inlined: with nothing held (the common case) this is one comparison.
        if !self.0.is_empty() {
            Self::settle_held(self.0, carrier, baggage);
        }
    }

    fn settle_held(mut held: Vec<MixedCaseField>, carrier: &dyn Extractor, baggage: &mut Baggage) {
        // By key, then by name (a stable sort: one name met twice stays in walk order); the
        // first of each key is the one that may give its member.
        held.sort_by(|a, b| (&a.key, &a.name).cmp(&(&b.key, &b.name)));
        held.dedup_by(|later, first| later.key == first.key);
        let winners = held;
        // A key a lowercase name carries is settled already. Which keys those are takes a
        // second walk, made only when some name was not lowercase.
        let mut beaten = vec![false; winners.len()];
        carrier.fields(&mut |name, value| {
            let Some(key) = uberctx_key(name).filter(|_| is_lowercase(name)) else {
                return;
            };
            if let Ok(at) = winners.binary_search_by(|winner| winner.key.as_str().cmp(key))
                && member_value(key, value).is_some()
            {
                beaten[at] = true;
            }
        });
        for (winner, beaten) in winners.iter().zip(beaten) {
            if !beaten {
                let _ = baggage.insert(&winner.key, &winner.value);
            }
        }
    }
}

/// The longest header: 32, 16 and 16 hex digits and two of flags, with three colons.
const UBER_TRACE_ID_MAX_LEN: usize = 32 + 1 + 16 + 1 + 16 + 1 + 2;

impl JaegerHeader {
    /// The header value, formatted on the stack.
    fn encode(&self) -> InlineText<UBER_TRACE_ID_MAX_LEN> {
        let mut out = InlineText::new();
        out.push_hex(&self.trace_id.to_bytes());
        out.push_str(":");
        out.push_hex(&self.span_id.to_bytes());
        out.push_str(":");
        match self.parent_span_id {
            Some(parent) => out.push_hex(&parent.to_bytes()),
            None => out.push_str("0"),
        }
        out.push_str(":");
        out.push_minimal_hex(self.flags);
        out
    }
}

impl fmt::Display for JaegerHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl std::str::FromStr for JaegerHeader {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// `value` with each URL-encoded separator (`%3A` or `%3a`) decoded to `:`.
fn decode_separators(value: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&byte, tail)) = rest.split_first() {
        if let (b'%', [b'3', b'A' | b'a', after @ ..]) = (byte, tail) {
            decoded.push(b':');
            rest = after;
        } else {
            decoded.push(byte);
            rest = tail;
        }
    }
    decoded
}

/// Propagates Jaeger's `uber-trace-id` and `uberctx-*` baggage.
///
/// ```
/// use infra_trace_ctx::{JaegerPropagator, Propagator};
///
/// let carrier = vec![
///     ("uber-trace-id", "a3ce929d0e0e4736:e457b5a2e4d86bd1:0:1"),
///     ("uberctx-tenant", "acme%20corp"),
/// ];
/// let cx = JaegerPropagator.extract(&carrier);
/// assert!(cx.span().is_some_and(|span| span.is_sampled()));
/// assert_eq!(cx.baggage().get("tenant"), Some("acme corp"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JaegerPropagator;

impl Propagator for JaegerPropagator {
    fn extract_span(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let mut trace_header = TraceHeader::new(carrier);
        carrier.fields(&mut |name, value| {
            trace_header.read(name, value);
        });
        trace_header.span()
    }

    /// The `uberctx-*` fields' members; of fields whose names differ only in case, a
    /// lowercase name's, else the name first in byte order (see the module docs).
    fn extract_baggage(&self, carrier: &dyn Extractor, baggage: &mut Baggage) {
        let mut mixed_case = MixedCaseFields::default();
        carrier.fields(&mut |name, value| add_uberctx(name, value, baggage, &mut mixed_case));
        mixed_case.settle(carrier, baggage);
    }

    /// The span context and the baggage from one walk over the carrier's fields, where
    /// [`Propagator::extract`]'s parts would walk them twice. Of `uberctx-*` names that
    /// differ only in case, a lowercase name's value wins, else the name first in byte order
    /// (see the module docs); only a carrier holding such a name is walked a second time.
    fn extract(&self, carrier: &dyn Extractor) -> Context {
        let mut cx = Context::new();
        let mut trace_header = TraceHeader::new(carrier);
        let mut mixed_case = MixedCaseFields::default();
        let baggage = cx.baggage_mut();
        carrier.fields(&mut |name, value| {
            if begins_with_uber(name) && !trace_header.read(name, value) {
                add_uberctx(name, value, baggage, &mut mixed_case);
            }
        });
        mixed_case.settle(carrier, baggage);
        cx.set_span(trace_header.span());
        cx
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        // A reused carrier may hold the previous request's baggage: every `uberctx-*` field
        // whose key this context does not carry goes, before anything is written (the scan
        // then passes over the old fields only). The carrier turns away the names without
        // the prefix itself; the check is repeated here for a carrier that does not.
        let baggage = cx.baggage();
        carrier.remove_prefixed(UBERCTX_PREFIX, &mut |name| {
            name.len() >= UBERCTX_PREFIX.len()
                && name.as_bytes()[..UBERCTX_PREFIX.len()]
                    .eq_ignore_ascii_case(UBERCTX_PREFIX.as_bytes())
                && baggage.get(&name[UBERCTX_PREFIX.len()..]).is_none()
        });
        match cx.span() {
            Some(span) => {
                carrier.set_value(
                    UBER_TRACE_ID,
                    JaegerHeader::of(span).encode().as_field_value(),
                );
            }
            None => carrier.remove(UBER_TRACE_ID),
        }
        for entry in cx.baggage().iter() {
            // A plain `+` would read back as a space (see extraction), so it is escaped in the
            // same pass. A buffer of the exact length becomes the header value's without a
            // further allocation.
            let mut value = String::with_capacity(percent_encoded_len_with(entry.value(), true));
            // Writing into a String cannot fail.
            let _ = write_percent_encoded::<true>(&mut value, entry.value());
            debug_assert_eq!(value.len(), value.capacity());
            let mut name = String::with_capacity(UBERCTX_PREFIX.len() + entry.key().len());
            name.push_str(UBERCTX_PREFIX);
            name.push_str(entry.key());
            // Percent-encoded: visible ASCII.
            carrier.set_value(&name, FieldValue::vouched(value));
        }
    }

    fn fields(&self) -> &'static [&'static str] {
        &[UBER_TRACE_ID, UBERCTX_PREFIX]
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// (header, canonical form or None if invalid).
    const VECTORS: &[(&str, Option<&str>)] = &[
        (
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            Some("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"),
        ),
        (
            "abc:def:0:3",
            Some("00000000000000000000000000000abc:0000000000000def:0:3"),
        ),
        (
            "ABC:DEF:1:0",
            Some("00000000000000000000000000000abc:0000000000000def:0000000000000001:0"),
        ),
        (
            "1:2:3:ff",
            Some("00000000000000000000000000000001:0000000000000002:0000000000000003:ff"),
        ),
        (
            "1:2:0:01",
            Some("00000000000000000000000000000001:0000000000000002:0:1"),
        ),
        ("0:2:0:1", None),
        ("1:0:0:1", None),
        ("1:2:0", None),
        ("1:2:0:1:5", None),
        ("1::0:1", None),
        ("1:2:0:", None),
        ("1:2:0:100", None),
        ("g:2:0:1", None),
        ("4bf92f3577b34da6a3ce929d0e0e47366:2:0:1", None),
        ("1:00f067aa0ba902b70:0:1", None),
        // The URL-encoded form OpenTelemetry's Java and Go propagators send.
        (
            "1%3A2%3A0%3A1",
            Some("00000000000000000000000000000001:0000000000000002:0:1"),
        ),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736%3a00f067aa0ba902b7%3a0%3a3",
            Some("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:3"),
        ),
        ("1%3B2%3A0%3A1", None),
        ("1%3A2%3A0%3A", None),
        ("1%2:0:1", None),
        ("", None),
    ];

    #[test]
    fn vectors() {
        for (value, expected) in VECTORS {
            let parsed = JaegerHeader::parse(value);
            match expected {
                Some(canonical) => {
                    let header = parsed.unwrap_or_else(|e| panic!("{value:?} rejected: {e}"));
                    assert_eq!(header.to_string(), *canonical);
                }
                None => assert!(parsed.is_err(), "{value:?} accepted: {parsed:?}"),
            }
        }
    }

    #[test]
    fn debug_flag_means_sampled() {
        assert!(JaegerHeader::parse("1:2:0:2").unwrap().is_sampled());
        assert!(!JaegerHeader::parse("1:2:0:0").unwrap().is_sampled());
    }

    /// (received `uber-trace-id`, what the propagator writes back): debug survives, and
    /// debug without sampled is sampled (the format sets debug only with sampled).
    const FLAG_ROUND_TRIPS: &[(&str, &str)] = &[
        (
            "1:2:0:0",
            "00000000000000000000000000000001:0000000000000002:0:0",
        ),
        (
            "1:2:0:1",
            "00000000000000000000000000000001:0000000000000002:0:1",
        ),
        (
            "1:2:0:2",
            "00000000000000000000000000000001:0000000000000002:0:3",
        ),
        (
            "1:2:0:3",
            "00000000000000000000000000000001:0000000000000002:0:3",
        ),
        // Bits other than sampled and debug (firehose, 0x08) have no place in a span context.
        (
            "1:2:0:9",
            "00000000000000000000000000000001:0000000000000002:0:1",
        ),
        (
            "1:2:0:8",
            "00000000000000000000000000000001:0000000000000002:0:0",
        ),
        (
            "1:2:0:ff",
            "00000000000000000000000000000001:0000000000000002:0:3",
        ),
    ];

    #[test]
    fn the_header_keeps_every_flag_bit() {
        let header = JaegerHeader::parse("1:2:0:9").unwrap();
        assert_eq!(header.flags, 0x09);
        assert!(header.to_string().ends_with(":0:9"), "{header}");
        assert_eq!(
            JaegerHeader::of(&header.span_context()).flags,
            JaegerHeader::SAMPLED
        );
    }

    #[test]
    fn debug_flag_is_written_back() {
        for (received, expected) in FLAG_ROUND_TRIPS {
            let cx = JaegerPropagator.extract(&vec![(UBER_TRACE_ID, *received)]);
            let mut out: Vec<(String, String)> = Vec::new();
            JaegerPropagator.inject(&cx, &mut out);
            assert_eq!(
                out,
                [(UBER_TRACE_ID.to_owned(), (*expected).to_owned())],
                "{received}"
            );
        }
    }

    #[test]
    fn baggage_round_trips_through_uberctx_headers() {
        let mut baggage = Baggage::new();
        baggage.insert("tenant", "acme corp, ✓").unwrap();
        let cx = Context::new()
            .with_span(SpanContext::new(
                TraceId::random(),
                SpanId::random(),
                TraceFlags::SAMPLED,
            ))
            .with_baggage(baggage);
        let mut out: Vec<(String, String)> = Vec::new();
        JaegerPropagator.inject(&cx, &mut out);
        let back = JaegerPropagator.extract(&out);
        assert_eq!(back.baggage().get("tenant"), Some("acme corp, ✓"));
        assert_eq!(
            back.span().unwrap().trace_id(),
            cx.span().unwrap().trace_id()
        );
        // Go clients encode with url.QueryEscape: `+` is a space, a plus is `%2B`.
        let carrier = vec![
            ("uberctx-greeting", "hello+world%21"),
            ("uberctx-sum", "1%2B1"),
        ];
        let back = JaegerPropagator.extract(&carrier);
        assert_eq!(back.baggage().get("greeting"), Some("hello world!"));
        assert_eq!(back.baggage().get("sum"), Some("1+1"));
        let mut out: Vec<(String, String)> = Vec::new();
        JaegerPropagator.inject(&back, &mut out);
        assert_eq!(JaegerPropagator.extract(&out).baggage(), back.baggage());
        let written = |name: &str| out.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(written("uberctx-sum"), Some("1%2B1"));
        assert_eq!(written("uberctx-greeting"), Some("hello%20world!"));

        let carrier = vec![("UberCtx-Mixed", "x"), ("uberctx-bad%", "%zz")];
        let back = JaegerPropagator.extract(&carrier);
        assert_eq!(back.baggage().get("mixed"), Some("x"));
        assert_eq!(back.baggage().len(), 1);
    }

    /// `jaeger-debug-id` and `jaeger-baggage` (see the module docs) carry no span, no
    /// decision and no baggage, alone or beside a trace header.
    #[test]
    fn jaeger_debug_id_and_jaeger_baggage_are_not_read() {
        let by_hand = [
            ("jaeger-debug-id", "find-me"),
            ("jaeger-baggage", "k1=v1,k2=v2"),
        ];
        let cx = JaegerPropagator.extract(&by_hand.to_vec());
        assert_eq!((cx.span(), cx.sampling_state()), (None, None));
        assert!(cx.baggage().is_empty());
        let mut with_trace = by_hand.to_vec();
        with_trace.push((UBER_TRACE_ID, "1:2:0:0"));
        let cx = JaegerPropagator.extract(&with_trace);
        let state = cx.span().map(SpanContext::sampling_state);
        assert_eq!(state, Some(SamplingState::Deny));
        assert!(cx.baggage().is_empty());
    }

    /// A `HashMap` carrier is read by lowercase names, one probe each (as the W3C and B3
    /// propagators read it): a mixed-case `Uber-Trace-Id` key is not the trace header, and a
    /// lowercase one beside it wins whichever order the map walks its keys in.
    #[test]
    fn a_hash_map_is_read_by_its_lowercase_trace_header_only() {
        let lowercase = "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1";
        let map = |fields: &[(&str, &str)]| -> HashMap<String, String> {
            fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect()
        };
        let trace_id = |cx: &Context| cx.span().map(|span| span.trace_id().to_u128());
        let only_mixed_case = map(&[("Uber-Trace-Id", lowercase)]);
        assert_eq!(trace_id(&JaegerPropagator.extract(&only_mixed_case)), None);
        assert_eq!(JaegerPropagator.extract_span(&only_mixed_case), None);
        // Each map hashes with keys of its own, so the maps walk the two fields in both orders.
        for _ in 0..64 {
            let both = map(&[("uber-trace-id", lowercase), ("Uber-Trace-Id", "1:2:0:1")]);
            let expected = Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
            assert_eq!(trace_id(&JaegerPropagator.extract(&both)), expected);
            let span = JaegerPropagator.extract_span(&both);
            assert_eq!(span.map(|span| span.trace_id().to_u128()), expected);
        }
    }

    /// `uberctx-*` names of a `HashMap` that differ only in case give their key one member by
    /// the rule of the module docs, not by the order the map walks them in: the lowercase
    /// name's value, else the name first in byte order; a value that does not decode takes no
    /// part.
    #[test]
    fn uberctx_names_differing_only_in_case_give_one_member_whatever_the_walk_order() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[
                    ("UberCtx-Tenant", "mixed"),
                    ("uberctx-tenant", "lowercase"),
                    ("UBERCTX-TENANT", "upper"),
                ],
                "lowercase",
            ),
            (
                &[
                    ("Uberctx-Tenant", "second"),
                    ("uberctx-Tenant", "third"),
                    ("UBERCTX-TENANT", "first"),
                ],
                "first",
            ),
            (
                &[("uberctx-tenant", "%zz"), ("UberCtx-Tenant", "decodes")],
                "decodes",
            ),
            (&[("UBERCTX-TENANT", "%zz"), ("UberCtx-Tenant", "ok")], "ok"),
        ];
        for (fields, expected) in cases {
            // Each map hashes with keys of its own, so the maps walk the fields in many orders.
            for _ in 0..64 {
                let map: HashMap<String, String> = fields
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect();
                let cx = JaegerPropagator.extract(&map);
                assert_eq!(cx.baggage().get("tenant"), Some(expected), "{fields:?}");
                assert_eq!(cx.baggage().len(), 1);
                let mut baggage = Baggage::new();
                JaegerPropagator.extract_baggage(&map, &mut baggage);
                assert_eq!(&baggage, cx.baggage());
            }
        }
    }

    /// Extraction walks a carrier once; a second time only when a `uberctx-*` name in it is
    /// not all lowercase (to find which keys a lowercase name carries).
    #[test]
    fn a_carrier_is_walked_again_only_for_a_mixed_case_uberctx_name() {
        struct Counted {
            fields: Vec<(&'static str, &'static str)>,
            walks: std::cell::Cell<usize>,
        }
        impl Extractor for Counted {
            fn get(&self, name: &str) -> Option<&str> {
                Extractor::get(&self.fields, name)
            }
            fn names(&self, each: &mut dyn FnMut(&str)) {
                self.walks.set(self.walks.get() + 1);
                self.fields.names(each);
            }
        }
        let walks = |fields: &[(&'static str, &'static str)]| {
            let carrier = Counted {
                fields: fields.to_vec(),
                walks: std::cell::Cell::new(0),
            };
            let cx = JaegerPropagator.extract(&carrier);
            assert_eq!(cx.baggage().get("tenant"), Some("acme"));
            carrier.walks.get()
        };
        let trace = (UBER_TRACE_ID, "1:2:0:1");
        assert_eq!(
            walks(&[trace, ("uberctx-tenant", "acme"), ("host", "a")]),
            1
        );
        assert_eq!(
            walks(&[trace, ("Uberctx-Tenant", "acme"), ("host", "a")]),
            2
        );
    }

    /// A carrier that can look its fields up but not list them (its `names` walks nothing)
    /// still yields the trace header, as the lookup before the walk found it.
    #[test]
    fn a_carrier_that_cannot_list_its_fields_still_yields_the_trace_header() {
        struct LookupOnly(Vec<(&'static str, &'static str)>);
        impl Extractor for LookupOnly {
            fn get(&self, name: &str) -> Option<&str> {
                Extractor::get(&self.0, name)
            }
            fn names(&self, _: &mut dyn FnMut(&str)) {}
        }
        let carrier = LookupOnly(vec![(UBER_TRACE_ID, "1:2:0:1")]);
        let span = JaegerPropagator.extract(&carrier).span().cloned();
        assert_eq!(span.map(|span| span.trace_id().to_u128()), Some(1));
        let span = JaegerPropagator.extract_span(&carrier);
        assert_eq!(span.map(|span| span.span_id().to_u64()), Some(2));
    }

    /// The header's grammar read with the standard library alone: four `:`-separated
    /// fields, each 1 to its width of hex digits of either case; ids not zero.
    fn reference_parse(value: &str) -> Option<(u128, u64, u64, u8)> {
        let fields: Vec<&str> = value.trim_matches([' ', '\t']).split(':').collect();
        let [trace, span, parent, flags] = fields.as_slice() else {
            return None;
        };
        let hex = |field: &str, width: usize| {
            let digits = (1..=width).contains(&field.len())
                && field.bytes().all(|byte| byte.is_ascii_hexdigit());
            digits
                .then(|| u128::from_str_radix(field, 16).ok())
                .flatten()
        };
        let (trace, span) = (hex(trace, 32)?, hex(span, 16)?);
        let (parent, flags) = (hex(parent, 16)?, hex(flags, 2)?);
        (trace != 0 && span != 0).then(|| {
            (
                trace,
                u64::try_from(span).unwrap(),
                u64::try_from(parent).unwrap(),
                u8::try_from(flags).unwrap(),
            )
        })
    }

    /// A header near the layout tracers write: full-width ids of either case, short or long
    /// parent and flags, and now and then a byte replaced by one from around the grammar
    /// (a separator, a non-digit, a zero, a space, a non-ASCII byte).
    fn near_full_width() -> impl Strategy<Value = String> {
        let layout = "[0-9a-fA-F]{31,33}:[0-9a-fA-F]{15,17}:[0-9a-fA-F]{1,17}:[0-9a-fA-F]{1,3}";
        (
            layout,
            proptest::option::of((any::<prop::sample::Index>(), "[:g0 \t%é]")),
        )
            .prop_map(|(mut value, replace)| {
                if let Some((at, with)) = replace {
                    let at = at.index(value.len());
                    value.replace_range(at..=at, &with);
                }
                value
            })
    }

    /// A carrier of Jaeger fields and others: a trace header (valid or not, in either case,
    /// maybe twice), `uberctx-*` members (some repeated, some invalid) and ordinary headers,
    /// in any order.
    fn jaeger_carrier() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = "uber-trace-id|Uber-Trace-Id|uberctx-[a-cA-C%]{1,2}|host|accept|x-other";
        let value = concat!(
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            "|1:2:0:3|0:2:0:1|[a-z0-9+%]{0,6}"
        );
        proptest::collection::vec((name, value), 0..8)
    }

    proptest! {
        /// Extraction in one walk gives the context its two parts give apart.
        #[test]
        fn one_walk_extracts_what_the_parts_do(carrier in jaeger_carrier()) {
            let mut parts = Context::new();
            parts.set_span(JaegerPropagator.extract_span(&carrier));
            JaegerPropagator.extract_baggage(&carrier, parts.baggage_mut());
            let whole = JaegerPropagator.extract(&carrier);
            prop_assert_eq!(whole.span(), parts.span());
            prop_assert_eq!(whole.baggage(), parts.baggage());
            prop_assert_eq!(whole.sampling_state(), None);
            // The span is the one the first trace header names, as a lookup finds it.
            let looked_up = carrier
                .get_bytes(UBER_TRACE_ID)
                .and_then(|value| JaegerHeader::parse_bytes(value).ok())
                .map(|header| header.span_context());
            prop_assert_eq!(whole.span(), looked_up.as_ref());
            // The same fields in a map with exact keys: its lowercase trace header only.
            let map: HashMap<String, String> = carrier.iter().cloned().collect();
            let looked_up = Extractor::get_bytes(&map, UBER_TRACE_ID)
                .and_then(span_context_of);
            let from_map = JaegerPropagator.extract(&map);
            prop_assert_eq!(from_map.span(), looked_up.as_ref());
            prop_assert_eq!(JaegerPropagator.extract_span(&map), looked_up);
        }

        /// Both readings (the full-width one and the general one) agree with the reference.
        #[test]
        fn parsing_agrees_with_a_reference_reading(value in near_full_width()) {
            let ours = JaegerHeader::parse(&value).ok().map(|header| {
                (
                    header.trace_id.to_u128(),
                    header.span_id.to_u64(),
                    header.parent_span_id.map_or(0, SpanId::to_u64),
                    header.flags,
                )
            });
            prop_assert_eq!(ours, reference_parse(&value), "{:?}", value);
        }

        #[test]
        fn format_then_parse_is_identity(t in 1u128.., s in 1u64.., p in any::<u64>(), flags in any::<u8>()) {
            let header = JaegerHeader {
                trace_id: TraceId::from_u128(t).unwrap(),
                span_id: SpanId::from_u64(s).unwrap(),
                parent_span_id: SpanId::from_u64(p),
                flags,
            };
            prop_assert_eq!(JaegerHeader::parse(&header.to_string()), Ok(header));
        }

        /// Separators decode as replacing each spelling of `%3A` in turn would.
        #[test]
        fn separators_decode_like_text_replacement(value in "[%3Aa:0-9]{0,24}") {
            let replaced = value.replace("%3A", ":").replace("%3a", ":");
            prop_assert_eq!(decode_separators(value.as_bytes()), replaced.into_bytes());
        }
    }
}
