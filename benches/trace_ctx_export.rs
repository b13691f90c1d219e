//! trace-ctx: the cost of exporting spans, against OpenTelemetry's SDK and OTLP encoding.
//!
//! - `trace_ctx/span_batched`: a sampled span started, given one attribute and ended into a
//!   batch processor whose exporter discards each batch: our `BatchSpanProcessor` and
//!   `opentelemetry_sdk`'s `BatchSpanProcessor` (its default, a dedicated std thread fed by a
//!   bounded `std::sync::mpsc` channel; no async runtime). Both keep OpenTelemetry's defaults:
//!   queue 2048, batch 512, delay 5 s. Only the ending thread's time is measured, and the
//!   processor is flushed (untimed) after every 512 spans, so no span is dropped for a full
//!   queue on either side (the counts printed at the end show it).
//! - `trace_ctx/otlp_encode`: a batch of 512 server spans (8 HTTP semantic-convention
//!   attributes, one event with one attribute, a remote parent) turned into the bytes of an
//!   OTLP `ExportTraceServiceRequest`, as each side's OTLP/HTTP exporter does it: ours through
//!   `OtlpExporter::encode`, OpenTelemetry's as `opentelemetry-otlp`'s HTTP exporter does,
//!   building `opentelemetry-proto`'s prost messages from the SDK's `SpanData`
//!   (`group_spans_by_resource_and_scope`) and encoding them with `prost`. Both sides start
//!   from an owned batch (a copy made outside the measurement) and free it inside it.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex};
use infra_trace_ctx::{
    AlwaysOn, BatchSpanProcessor, ExportError, KeyValue, MemoryExporter, OtlpExporter,
    Propagator as _, SpanBatchExporter, SpanData, SpanKind, TraceContextPropagator, Tracer,
};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use prost::Message as _;

/// OpenTelemetry's default batch size, and the batch `otlp_encode` encodes.
const BATCH: usize = 512;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts the spans of each batch and drops them.
#[derive(Debug)]
struct DiscardBatches(Arc<AtomicU64>);

impl SpanBatchExporter for DiscardBatches {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl SpanExporter for DiscardBatches {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// How many of the spans ended reached the exporter (any others found the queue full).
fn report_delivery(side: &str, ended: u64, exported: &AtomicU64) {
    eprintln!(
        "trace_ctx/span_batched/{side}: {} of {ended} ended spans exported",
        exported.load(Ordering::Relaxed)
    );
}

fn span_batched(c: &mut Criterion) {
    let ours_exported = Arc::new(AtomicU64::new(0));
    let processor = BatchSpanProcessor::builder(DiscardBatches(ours_exported.clone()))
        .build()
        .expect("default settings are valid");
    let ours = Tracer::builder()
        .sampler(AlwaysOn)
        .exporter(processor.clone())
        .build();
    let theirs_exported = Arc::new(AtomicU64::new(0));
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_span_processor(
            opentelemetry_sdk::trace::BatchSpanProcessor::builder(DiscardBatches(
                theirs_exported.clone(),
            ))
            .build(),
        )
        .build();
    let theirs = provider.tracer("bench");

    let mut group = c.benchmark_group("trace_ctx/span_batched");
    // The same work as `trace_ctx/span_sampled`: start a root span, set one attribute, end it.
    let ours_ended = Cell::new(0_u64);
    group.bench_function("infra", |b| {
        b.iter_custom(|iters| {
            time_in_batches(
                iters,
                || {
                    let mut span = ours.span(black_box("checkout")).start();
                    span.set_attribute("items", 3);
                    span.end();
                    ours_ended.set(ours_ended.get() + 1);
                },
                || {
                    processor
                        .force_flush(FLUSH_TIMEOUT)
                        .expect("the discarding exporter keeps up");
                },
            )
        });
    });
    let theirs_ended = Cell::new(0_u64);
    group.bench_function("opentelemetry", |b| {
        b.iter_custom(|iters| {
            time_in_batches(
                iters,
                || {
                    let mut span = theirs.start(black_box("checkout"));
                    span.set_attribute(opentelemetry::KeyValue::new("items", 3));
                    span.end();
                    theirs_ended.set(theirs_ended.get() + 1);
                },
                || {
                    provider
                        .force_flush()
                        .expect("the discarding exporter keeps up");
                },
            )
        });
    });
    group.finish();

    report_delivery("infra", ours_ended.get(), &ours_exported);
    report_delivery("opentelemetry", theirs_ended.get(), &theirs_exported);
}

/// The time `iters` calls of `end_span` take, flushing (untimed) after every `BATCH` of them:
/// the queue then never fills, so every span measured is queued, none dropped, whatever the
/// export thread's share of a loaded machine.
fn time_in_batches(iters: u64, mut end_span: impl FnMut(), flush: impl Fn()) -> Duration {
    let mut measured = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(BATCH as u64);
        let start = Instant::now();
        for _ in 0..chunk {
            end_span();
        }
        measured += start.elapsed();
        flush();
        left -= chunk;
    }
    measured
}

/// The attributes an HTTP server span carries (OpenTelemetry's HTTP semantic conventions).
const HTTP_ATTRIBUTES: [(&str, &str); 6] = [
    ("http.request.method", "GET"),
    ("url.path", "/cart/42"),
    ("url.scheme", "http"),
    ("http.route", "/cart/{id}"),
    ("server.address", "cart.internal"),
    ("user_agent.original", "checkout/1.4"),
];
const HTTP_NUMBERS: [(&str, i64); 2] = [("server.port", 8080), ("http.response.status_code", 200)];
const EVENT: (&str, &str, &str) = ("cache.miss", "cache.key", "cart:42");

/// The request headers the spans' caller sent.
fn caller() -> HashMap<String, String> {
    HashMap::from([("traceparent".to_owned(), TRACEPARENT.to_owned())])
}

/// `BATCH` server spans recorded by our tracer under the caller's context.
fn our_batch() -> Vec<SpanData> {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder()
        .service("cart")
        .exporter(exporter.clone())
        .build();
    let remote = TraceContextPropagator.extract(&caller());
    for _ in 0..BATCH {
        let mut span = tracer
            .span("GET /cart/{id}")
            .kind(SpanKind::Server)
            .remote(&remote)
            .start();
        for (key, value) in HTTP_ATTRIBUTES {
            span.set_attribute(key, value);
        }
        for (key, value) in HTTP_NUMBERS {
            span.set_attribute(key, value);
        }
        span.add_event_with(EVENT.0, [KeyValue::new(EVENT.1, EVENT.2)]);
        span.end();
    }
    exporter.take()
}

/// Keeps every ended span of the SDK; clones share the list.
#[derive(Clone, Debug, Default)]
struct CollectSpans(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanProcessor for CollectSpans {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.lock().push(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// The same `BATCH` server spans recorded by the SDK's tracer.
fn their_batch() -> Vec<opentelemetry_sdk::trace::SpanData> {
    let collected = CollectSpans::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(collected.clone())
        .build();
    let tracer = provider.tracer("infra-trace-ctx");
    let remote = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &caller());
    for _ in 0..BATCH {
        let mut span = tracer
            .span_builder("GET /cart/{id}")
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .start_with_context(&tracer, &remote);
        for (key, value) in HTTP_ATTRIBUTES {
            span.set_attribute(opentelemetry::KeyValue::new(key, value));
        }
        for (key, value) in HTTP_NUMBERS {
            span.set_attribute(opentelemetry::KeyValue::new(key, value));
        }
        span.add_event(
            EVENT.0,
            vec![opentelemetry::KeyValue::new(EVENT.1, EVENT.2)],
        );
        span.end();
    }
    std::mem::take(&mut *collected.0.lock())
}

fn otlp_encode(c: &mut Criterion) {
    let ours = OtlpExporter::builder()
        .service_name("cart")
        .build()
        .expect("the default endpoint is valid");
    let our_spans = our_batch();
    // `service.name` and the SDK's description (`telemetry.sdk.*`), as on our side; the empty
    // builder reads no environment variables.
    let resource = ResourceAttributesWithSchema::from(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_detector(Box::new(
                opentelemetry_sdk::resource::TelemetryResourceDetector,
            ))
            .with_service_name("cart")
            .build(),
    );
    let their_spans = their_batch();
    let their_body = |spans| {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
        .encode_to_vec()
    };

    let mut body = Vec::new();
    ours.encode(&our_spans, &mut body);
    eprintln!(
        "trace_ctx/otlp_encode: {BATCH} spans, {} bytes (infra), {} bytes (opentelemetry)",
        body.len(),
        their_body(their_spans.clone()).len()
    );

    let mut group = c.benchmark_group("trace_ctx/otlp_encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Our exporter keeps its body buffer from one batch to the next.
    group.bench_function("infra", |b| {
        b.iter_batched(
            || our_spans.clone(),
            |spans| {
                body.clear();
                ours.encode(&spans, &mut body);
                drop(spans);
                body.len()
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("opentelemetry", |b| {
        b.iter_batched(|| their_spans.clone(), their_body, BatchSize::SmallInput);
    });
    group.finish();
}

criterion_group!(benches, span_batched, otlp_encode);
criterion_main!(benches);
