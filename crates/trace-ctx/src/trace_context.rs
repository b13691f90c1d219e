//! W3C Trace Context Level 2: the `traceparent` header and the propagator for it and
//! `tracestate`.
//!
//! `traceparent` rules followed ("traceparent Header" and "Versioning of traceparent"):
//! - `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex only;
//! - version `ff` is invalid; version `00` is exactly 55 characters;
//! - a higher version is parsed for its first four fields if it is at least 55 characters and
//!   the flags are followed by the end or a `-`; what follows is not interpreted;
//! - all-zero trace or parent ids are invalid;
//! - flags: sampled (`0x01`) and Level 2 random (`0x02`) are kept, unknown bits are dropped;
//! - spaces and tabs around the value are ignored; a repeated `traceparent` is invalid;
//! - output is always version `00`.
//!
//! When `traceparent` is invalid, `tracestate` is not read; an invalid `tracestate` is dropped
//! without affecting `traceparent`.

use std::fmt;

use crate::carrier::{Extractor, FieldValue, Injector, trim_ows};
use crate::id::{lower_hex_value, parse_lower_hex_u128};
use crate::propagator::Propagator;
use crate::trace_state::TraceStateBuilder;
use crate::{Context, Error, SpanContext, SpanId, TraceFlags, TraceId};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// The length of a version `00` `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent` header.
///
/// ```
/// use infra_trace_ctx::TraceParent;
///
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
/// let parent = TraceParent::parse(header)?;
/// assert!(parent.flags.is_sampled() && parent.flags.is_random());
/// assert_eq!(parent.encode().as_str(), header);
///
/// // A future version is read for the fields this version knows, and written as 00.
/// let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
/// assert_eq!(&TraceParent::parse(future)?.encode().as_str()[..2], "00");
/// # Ok::<(), infra_trace_ctx::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub parent_id: SpanId,
    /// The flags, unknown bits already dropped.
    pub flags: TraceFlags,
}

/// A formatted `traceparent`, held inline: formatting does not allocate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParentHeader([u8; TRACEPARENT_LEN]);

impl TraceParentHeader {
    /// The header value.
    // Checking the bytes were UTF-8 took a sixteenth of `TraceContextPropagator::inject`.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // SAFETY: the field is private and `TraceParent::encode` is its only writer: it fills
        // it with `-`, `0` and lowercase hex digits from `write_hex` (each at most 0x66, its
        // lanes never carrying: `hex_words_hold_every_digit_in_every_position`), all ASCII,
        // hence UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The header value as a field value (see [`TraceParentHeader::as_str`] for its bytes).
    pub(crate) fn as_field_value(&self) -> FieldValue<'_> {
        FieldValue::vouched(self.as_str())
    }
}

impl fmt::Debug for TraceParentHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TraceParent {
    /// Parses a `traceparent` value.
    ///
    /// # Errors
    ///
    /// [`Error::TraceParent`] if the value breaks any rule listed in the module docs.
    pub fn parse(value: &str) -> Result<Self, Error> {
        Self::parse_bytes(value.as_bytes())
    }

    /// [`TraceParent::parse`] on the bytes of a value, which need not be UTF-8 (any byte
    /// outside the grammar is rejected).
    pub(crate) fn parse_bytes(value: &[u8]) -> Result<Self, Error> {
        let bytes = trim_ows(value);
        if bytes.len() < TRACEPARENT_LEN {
            return Err(Error::TraceParent("shorter than 55 characters"));
        }
        let version = match (lower_hex_value(bytes[0]), lower_hex_value(bytes[1])) {
            (Some(high), Some(low)) => (high << 4) | low,
            _ => {
                return Err(Error::TraceParent(
                    "the version is two lowercase hex digits",
                ));
            }
        };
        if version == 0xff {
            return Err(Error::TraceParent("version ff is invalid"));
        }
        if version == 0 && bytes.len() != TRACEPARENT_LEN {
            return Err(Error::TraceParent("version 00 is exactly 55 characters"));
        }
        if bytes.len() > TRACEPARENT_LEN && bytes[TRACEPARENT_LEN] != b'-' {
            return Err(Error::TraceParent(
                "the flags end the value or precede a dash",
            ));
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(Error::TraceParent("fields are separated by dashes"));
        }
        let trace_id = parse_lower_hex_u128(&bytes[3..35]).ok_or(Error::TraceParent(
            "the trace id is 32 lowercase hex digits",
        ))?;
        let parent_id = parse_lower_hex_u128(&bytes[36..52]).ok_or(Error::TraceParent(
            "the parent id is 16 lowercase hex digits",
        ))?;
        let flags = parse_lower_hex_u128(&bytes[53..55])
            .ok_or(Error::TraceParent("the flags are two lowercase hex digits"))?;
        let trace_id =
            TraceId::from_u128(trace_id).ok_or(Error::TraceParent("the trace id is all zeros"))?;
        // The parent id and flags fields are 16 and 2 hex digits: they fit their types.
        #[allow(clippy::cast_possible_truncation)]
        let (parent_id, flags) = (parent_id as u64, flags as u8);
        let parent_id =
            SpanId::from_u64(parent_id).ok_or(Error::TraceParent("the parent id is all zeros"))?;
        Ok(Self {
            trace_id,
            parent_id,
            flags: TraceFlags::from_wire(flags),
        })
    }

    /// Formats as a version `00` header, on the stack.
    pub fn encode(&self) -> TraceParentHeader {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        let mut trace = [0; 32];
        self.trace_id.write_hex(&mut trace);
        out[3..35].copy_from_slice(&trace);
        let mut parent = [0; 16];
        self.parent_id.write_hex(&mut parent);
        out[36..52].copy_from_slice(&parent);
        crate::id::write_hex(&[self.flags.bits()], &mut out[53..55]);
        TraceParentHeader(out)
    }

    /// The `traceparent` describing `span`.
    pub fn of(span: &SpanContext) -> Self {
        Self {
            trace_id: span.trace_id(),
            parent_id: span.span_id(),
            flags: span.flags(),
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl std::str::FromStr for TraceParent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Propagates `traceparent` and `tracestate` (W3C Trace Context Level 2).
///
/// Extraction of a `traceparent` without `tracestate` and injection of a context with an
/// empty trace state allocate nothing.
///
/// ```
/// use std::collections::HashMap;
/// use infra_trace_ctx::{Propagator, TraceContextPropagator};
///
/// let mut headers = HashMap::new();
/// headers.insert(
///     "traceparent".to_owned(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
/// );
/// headers.insert("tracestate".to_owned(), "congo=t61rcWkgMzE".to_owned());
/// let cx = TraceContextPropagator.extract(&headers);
/// let span = cx.span().expect("valid traceparent");
/// assert!(span.is_remote() && span.is_sampled());
/// assert_eq!(span.trace_state().get("congo"), Some("t61rcWkgMzE"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextPropagator;

impl Propagator for TraceContextPropagator {
    fn extract_span(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let mut count = 0usize;
        let mut parsed = None;
        carrier.get_all_bytes(TRACEPARENT, &mut |value| {
            count += 1;
            if count == 1 {
                parsed = TraceParent::parse_bytes(value).ok();
            }
        });
        // Two traceparent fields cannot be combined: the request's parent is ambiguous.
        if count != 1 {
            return None;
        }
        let parent = parsed?;
        let mut builder = TraceStateBuilder::default();
        carrier.get_all_bytes(TRACESTATE, &mut |value| builder.push_header(value));
        let span = SpanContext::remote(parent.trace_id, parent.parent_id, parent.flags);
        Some(match builder.finish() {
            Ok(state) => span.with_trace_state(state),
            Err(_) => span,
        })
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        // A reused carrier may hold the previous request's fields: each one not written
        // now is removed.
        let Some(span) = cx.span() else {
            carrier.remove(TRACEPARENT);
            carrier.remove(TRACESTATE);
            return;
        };
        // Removed before the write: on an empty carrier (a fresh request's map) a removal
        // costs nothing, after it a lookup.
        if span.trace_state().is_empty() {
            carrier.remove(TRACESTATE);
        }
        carrier.set_value(TRACEPARENT, TraceParent::of(span).encode().as_field_value());
        if !span.trace_state().is_empty() {
            carrier.set_value(TRACESTATE, span.trace_state().as_field_value());
        }
    }

    fn fields(&self) -> &'static [&'static str] {
        &[TRACEPARENT, TRACESTATE]
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    /// (header, expected flags byte if valid).
    const VECTORS: &[(&str, Option<u8>)] = &[
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some(0x01),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            Some(0x00),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
            Some(0x02),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            Some(0x03),
        ),
        // Unknown flag bits are dropped, not propagated.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            Some(0x03),
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-04",
            Some(0x00),
        ),
        // Optional whitespace around the value.
        (
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
            Some(0x01),
        ),
        // Future versions: the first four fields are used, the rest ignored.
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some(0x01),
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            Some(0x01),
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
            Some(0x01),
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-holds",
            None,
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            None,
        ),
        // Version 00 must be exactly 55 characters.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            None,
        ),
        // Version ff and malformed versions.
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "CC-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        ),
        // Uppercase hex is rejected everywhere.
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            None,
        ),
        // All-zero ids.
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            None,
        ),
        // Wrong lengths and separators.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
            None,
        ),
        (
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-.1",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            None,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7 01",
            None,
        ),
        ("", None),
    ];

    #[test]
    fn spec_vectors() {
        for (header, flags) in VECTORS {
            let parsed = TraceParent::parse(header);
            match flags {
                Some(flags) => {
                    let parent = parsed.unwrap_or_else(|e| panic!("{header:?} rejected: {e}"));
                    assert_eq!(parent.trace_id.to_string(), ID);
                    assert_eq!(parent.parent_id.to_string(), PARENT);
                    assert_eq!(parent.flags.bits(), *flags, "{header:?}");
                    let reencoded = parent.encode();
                    assert_eq!(&reencoded.as_str()[..2], "00");
                    assert_eq!(TraceParent::parse(reencoded.as_str()), Ok(parent));
                }
                None => assert!(parsed.is_err(), "{header:?} accepted: {parsed:?}"),
            }
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn repeated_traceparent_restarts_the_trace() {
        let carrier = headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)]);
        assert!(TraceContextPropagator.extract(&carrier).span().is_none());
    }

    #[test]
    fn tracestate_is_combined_and_independent_of_traceparent() {
        let carrier = headers(&[
            ("TraceParent", VALID),
            (TRACESTATE, "rojo=1"),
            ("TRACESTATE", "congo=2"),
        ]);
        let cx = TraceContextPropagator.extract(&carrier);
        assert_eq!(cx.span().unwrap().trace_state().as_str(), "rojo=1,congo=2");

        let carrier = headers(&[(TRACEPARENT, VALID), (TRACESTATE, "rojo=1,bad key=2")]);
        let cx = TraceContextPropagator.extract(&carrier);
        let span = cx
            .span()
            .expect("a bad tracestate does not affect traceparent");
        assert!(span.trace_state().is_empty());

        // A key repeated in one field or across fields keeps the list (first entry wins).
        for repeated in [&["foo=1,foo=1"][..], &["foo=1,foo=2"], &["foo=1", "foo=2"]] {
            let mut carrier = headers(&[(TRACEPARENT, VALID)]);
            carrier.extend(
                repeated
                    .iter()
                    .map(|v| (TRACESTATE.to_owned(), (*v).to_owned())),
            );
            let cx = TraceContextPropagator.extract(&carrier);
            assert_eq!(
                cx.span().unwrap().trace_state().as_str(),
                "foo=1",
                "{repeated:?}"
            );
        }

        let carrier = headers(&[(TRACEPARENT, "00-bad"), (TRACESTATE, "rojo=1")]);
        assert!(TraceContextPropagator.extract(&carrier).span().is_none());
    }

    #[test]
    fn inject_writes_version_00_and_skips_empty_tracestate() {
        let carrier = headers(&[(
            TRACEPARENT,
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-x",
        )]);
        let cx = TraceContextPropagator.extract(&carrier);
        let mut out: Vec<(String, String)> = Vec::new();
        TraceContextPropagator.inject(&cx, &mut out);
        assert_eq!(
            out,
            headers(&[(
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
            )])
        );
        TraceContextPropagator.inject(&Context::new(), &mut out);
        assert!(out.is_empty(), "an empty context clears the fields it owns");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(trace in 1u128.., parent in 1u64.., flags in 0u8..4) {
            let value = TraceParent {
                trace_id: TraceId::from_u128(trace).unwrap(),
                parent_id: SpanId::from_u64(parent).unwrap(),
                flags: TraceFlags::from_wire(flags),
            };
            prop_assert_eq!(TraceParent::parse(value.encode().as_str()), Ok(value));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = TraceParent::parse(&text);
        }
    }
}
