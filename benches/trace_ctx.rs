//! trace-ctx: W3C trace-context propagation and span start/end, against OpenTelemetry's
//! `TraceContextPropagator` and SDK tracer on identical inputs.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use infra_trace_ctx::{
    AlwaysOff, AlwaysOn, NoopExporter, Propagator, TraceContextPropagator, Tracer,
};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,dd=s:1;o:rum";

fn incoming() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    headers.insert("traceparent".to_owned(), TRACEPARENT.to_owned());
    headers.insert("tracestate".to_owned(), TRACESTATE.to_owned());
    headers.insert("content-type".to_owned(), "application/json".to_owned());
    headers.insert("accept".to_owned(), "*/*".to_owned());
    headers
}

fn extract(c: &mut Criterion) {
    let headers = incoming();
    let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let mut group = c.benchmark_group("trace_ctx/extract");
    group.bench_function("infra", |b| {
        b.iter(|| TraceContextPropagator.extract(black_box(&headers)));
    });
    group.bench_function("opentelemetry", |b| {
        b.iter(|| otel.extract(black_box(&headers)));
    });
    group.finish();
}

fn inject(c: &mut Criterion) {
    let headers = incoming();
    let ours = TraceContextPropagator.extract(&headers);
    let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let theirs = otel.extract(&headers);
    let mut group = c.benchmark_group("trace_ctx/inject");
    // Each iteration fills a fresh header map, as an outgoing request would.
    group.bench_function("infra", |b| {
        b.iter(|| {
            let mut out: HashMap<String, String> = HashMap::with_capacity(4);
            TraceContextPropagator.inject(black_box(&ours), &mut out);
            out
        });
    });
    group.bench_function("opentelemetry", |b| {
        b.iter(|| {
            let mut out: HashMap<String, String> = HashMap::with_capacity(4);
            otel.inject_context(black_box(&theirs), &mut out);
            out
        });
    });
    group.finish();
}

/// Drops every finished span: the SDK's cost without an exporter's.
#[derive(Debug)]
struct DiscardProcessor;

impl opentelemetry_sdk::trace::SpanProcessor for DiscardProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        black_box(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

fn otel_tracer(
    sampled: bool,
) -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    opentelemetry_sdk::trace::SdkTracer,
) {
    let sampler = if sampled {
        opentelemetry_sdk::trace::Sampler::AlwaysOn
    } else {
        opentelemetry_sdk::trace::Sampler::AlwaysOff
    };
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(DiscardProcessor)
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

fn spans(c: &mut Criterion) {
    for (group_name, sampled) in [
        ("trace_ctx/span_unsampled", false),
        ("trace_ctx/span_sampled", true),
    ] {
        let ours = if sampled {
            Tracer::builder()
                .sampler(AlwaysOn)
                .exporter(NoopExporter)
                .build()
        } else {
            Tracer::builder().sampler(AlwaysOff).build()
        };
        let (_provider, theirs) = otel_tracer(sampled);
        let mut group = c.benchmark_group(group_name);
        // The same work on both sides: start a root span, set one attribute, end it.
        group.bench_function("infra", |b| {
            b.iter(|| {
                let mut span = ours.span(black_box("checkout")).start();
                span.set_attribute("items", 3);
                span.end();
            });
        });
        group.bench_function("opentelemetry", |b| {
            b.iter(|| {
                let mut span = theirs.start(black_box("checkout"));
                span.set_attribute(opentelemetry::KeyValue::new("items", 3));
                span.end();
            });
        });
        group.finish();
    }
}

criterion_group!(benches, extract, inject, spans);
criterion_main!(benches);
