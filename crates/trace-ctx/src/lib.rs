//! Trace context that crosses process boundaries, decides what to sample, and records
//! lightweight spans, with no allocation on the hot path.
//!
//! A request that passes through a gateway, auth, cart, pricing, inventory and payment
//! service is one trace only if every hop carries the same trace id. This crate reads and
//! writes that context in the formats services speak, strictly by each spec:
//!
//! | format | type | propagator |
//! | --- | --- | --- |
//! | W3C Trace Context Level 2 (`traceparent`, `tracestate`) | [`TraceParent`], [`TraceState`] | [`TraceContextPropagator`] |
//! | W3C Baggage (`baggage`) | [`Baggage`] | [`BaggagePropagator`] |
//! | B3 single (`b3`) and multi (`X-B3-*`) | [`B3`] | [`B3Propagator`] |
//! | Jaeger (`uber-trace-id`, `uberctx-*`) | [`JaegerHeader`] | [`JaegerPropagator`] |
//! | several at once | | [`CompositePropagator`] |
//!
//! Invalid input yields no context (or an [`Error`]), never a panic and never a half-read
//! context. Carriers implement [`Extractor`] and [`Injector`]: `HashMap<String, String>`,
//! vectors of pairs, and `http::HeaderMap` (feature `http`).
//!
//! Sampling: [`AlwaysOn`], [`AlwaysOff`], [`ParentBased`], [`TraceIdRatio`] (consistent
//! across services, with OpenTelemetry's `ot=th:…` threshold and `rv:…` randomness in
//! `tracestate`, see [`Threshold`]) and [`RateLimited`]. Spans: [`Tracer`], [`Span`], with [`MemoryExporter`]
//! and [`JsonLinesExporter`], and [`BatchSpanProcessor`], which exports off the request path
//! (to `OtlpExporter`, an OTLP/HTTP exporter, with feature `otlp`). The current [`Context`] follows a thread (scope guards) and,
//! with feature `tokio`, a task across `.await` (`FutureExt::with_context`).
//!
//! Features: `http` (carriers for `http::HeaderMap`), `tokio` (context across `.await`),
//! `tracing` (a `tracing-subscriber` layer stamping trace and span ids on log events, and
//! [`TracingBridge`], which records `tracing` spans as this crate's spans),
//! `tower` (server and client layers for HTTP services), `otlp` (the OTLP/HTTP exporter), `metrics` (spans started, sampled,
//! dropped and exported, and export failures, through the `metrics` facade; names in the
//! `metrics` module), `reqwest` (a `reqwest-middleware` middleware, `TraceMiddleware`).
//!
//! # Quick start
//!
//! ```
//! use std::collections::HashMap;
//! use infra_trace_ctx::{Propagator, SpanKind, TraceContextPropagator, Tracer};
//!
//! let tracer = Tracer::builder().service("cart").build();
//!
//! // An incoming request.
//! let mut incoming = HashMap::new();
//! incoming.insert(
//!     "traceparent".to_owned(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".to_owned(),
//! );
//! let remote = TraceContextPropagator.extract(&incoming);
//! let parent = remote.span().expect("a valid traceparent");
//! let server = tracer.span("GET /cart").kind(SpanKind::Server).parent(parent).start();
//!
//! // An outgoing call carries the same trace id and this span as its parent.
//! let mut outgoing: HashMap<String, String> = HashMap::new();
//! let cx = remote.clone().with_span(server.context().clone());
//! TraceContextPropagator.inject(&cx, &mut outgoing);
//! assert!(outgoing["traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! assert!(outgoing["traceparent"].ends_with("-03"));
//! ```

mod b3;
mod baggage;
mod carrier;
mod context;
mod error;
mod export;
mod fields;
#[cfg(feature = "tokio")]
mod future;
mod id;
mod inline_text;
mod jaeger;
#[cfg(feature = "tracing")]
mod log_layer;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "tower")]
mod middleware;
mod otel_env;
mod probability;
mod propagator;
#[cfg(feature = "reqwest")]
mod reqwest_client;
mod sampler;
// Used by the tower layers and the reqwest middleware only.
#[cfg(any(feature = "tower", feature = "reqwest"))]
mod semconv;
mod span;
mod trace_context;
mod trace_state;
#[cfg(feature = "tracing")]
mod tracing_bridge;
mod wall_anchor;

pub use b3::{
    B3, B3_SINGLE, B3Ids, B3Propagator, B3Sampling, X_B3_FLAGS, X_B3_PARENT_SPAN_ID, X_B3_SAMPLED,
    X_B3_SPAN_ID, X_B3_TRACE_ID,
};
pub use baggage::{BAGGAGE, Baggage, BaggageEntry, BaggagePropagator};
pub use carrier::{Extractor, FieldValue, Injector};
pub use context::{Context, ContextGuard, SamplingState, SpanContext};
pub use error::Error;
pub use export::{
    BatchSpanProcessor, BatchSpanProcessorBuilder, BatchStats, ExportError, JsonLinesExporter,
    MemoryExporter, ShutdownSignal, SpanBatchExporter,
};
#[cfg(feature = "otlp")]
pub use export::{Compression, OtlpExporter, OtlpExporterBuilder, Protocol, RetryPolicy};
#[cfg(all(feature = "otlp", fuzzing))]
pub use export::{fuzz_otlp_response, fuzz_retry_after};
#[cfg(feature = "tokio")]
pub use future::{FutureExt, WithContext, spawn};
pub use id::{SpanId, TraceFlags, TraceId};
pub use jaeger::{JaegerHeader, JaegerPropagator, UBER_TRACE_ID, UBERCTX_PREFIX};
#[cfg(feature = "tracing")]
pub use log_layer::{TraceLogLayer, current_ids};
#[cfg(feature = "tower")]
pub use middleware::{
    ClientLayer, MethodName, ResponseFuture, RouteName, ServerLayer, ServerResponseFuture,
    TracedBody, TracedClient, TracedServer,
};
pub use probability::Threshold;
pub use propagator::{CompositePropagator, Propagator};
#[cfg(feature = "reqwest")]
pub use reqwest_client::TraceMiddleware;
pub use sampler::{
    AlwaysOff, AlwaysOn, ParentBased, RateLimited, Sampler, SamplingDecision, SamplingResult,
    TraceIdRatio,
};
pub use span::{
    Event, Exporter, KeyValue, Link, NoopExporter, Span, SpanBuilder, SpanData, SpanKind,
    SpanLimits, Status, Tracer, TracerBuilder, Value,
};
pub use trace_context::{
    TRACEPARENT, TRACEPARENT_LEN, TRACESTATE, TraceContextPropagator, TraceParent,
    TraceParentHeader,
};
pub use trace_state::TraceState;
#[cfg(feature = "tracing")]
pub use tracing_bridge::TracingBridge;

// The README's examples run as doctests, so the front page cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
