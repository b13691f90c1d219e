//! The crate's one error type.

use std::fmt;

/// What went wrong while parsing or building trace context.
///
/// Every parser returns this rather than panicking or producing a half-filled value. Each
/// variant names the format whose rules were broken and carries a short, static reason, so
/// building an error never allocates (extraction stays allocation-free even on bad input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A `traceparent` header broke the W3C Trace Context rules; the trace must restart.
    TraceParent(&'static str),
    /// A `tracestate` header or entry broke the W3C rules; it must be discarded.
    TraceState(&'static str),
    /// A `baggage` header or entry broke the W3C Baggage rules.
    Baggage(&'static str),
    /// A `b3` or `X-B3-*` header broke the B3 propagation rules.
    B3(&'static str),
    /// An `uber-trace-id` or `uberctx-` header broke the Jaeger propagation rules.
    Jaeger(&'static str),
    /// A trace or span id was not lowercase hex of the right length, or was all zeros.
    InvalidId(&'static str),
    /// Adding an entry would exceed a size limit of the format (members or bytes).
    LimitExceeded(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, reason) = match self {
            Self::TraceParent(reason) => ("invalid traceparent", reason),
            Self::TraceState(reason) => ("invalid tracestate", reason),
            Self::Baggage(reason) => ("invalid baggage", reason),
            Self::B3(reason) => ("invalid b3 header", reason),
            Self::Jaeger(reason) => ("invalid uber-trace-id", reason),
            Self::InvalidId(reason) => ("invalid id", reason),
            Self::LimitExceeded(reason) => ("limit exceeded", reason),
        };
        write!(f, "{what}: {reason}")
    }
}

impl std::error::Error for Error {}
