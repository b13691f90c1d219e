//! trace-ctx: propagation (W3C Trace Context, B3, Jaeger, Baggage) on `http::HeaderMap` and
//! span start/end, against OpenTelemetry's propagators and SDK tracer on identical inputs.
//!
//! Both sides read and write an `http::HeaderMap`, the carrier a real service has:
//! OpenTelemetry through `opentelemetry_http::{HeaderExtractor, HeaderInjector}` and
//! `extract_with_context(&Context::new(), …)` (no thread-local current context), this crate
//! through its own `HeaderMap` carrier.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// OpenTelemetry deprecates its B3 and Jaeger propagators (it recommends W3C Trace Context);
// services still send both formats, so they stay the peers for those rows.
#![allow(deprecated)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use infra_trace_ctx::{
    AlwaysOff, AlwaysOn, B3Propagator, BaggagePropagator, JaegerPropagator, NoopExporter,
    Propagator, SpanKind, TraceContextPropagator, Tracer,
};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The same caller, not sampled.
const TRACEPARENT_UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,dd=s:1;o:rum";
const B3: &str = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1";
const UBER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1";
const BAGGAGE: &str = "userId=alice,tenant=acme%20corp,isProduction=false";

/// A request's headers: the propagation headers given plus four ordinary ones.
fn request(propagation: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "cart.internal"),
        ("user-agent", "checkout/1.4"),
        ("accept", "*/*"),
        ("content-type", "application/json"),
    ]
    .iter()
    .chain(propagation)
    {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// Extract from `headers` and inject the result into a fresh `HeaderMap` per iteration,
/// both sides, in groups `{name}_extract` / `{name}_inject` (`extract` / `inject` for W3C).
fn propagation_pair(
    c: &mut Criterion,
    name: &str,
    headers: &HeaderMap,
    ours: &impl Propagator,
    theirs: &impl TextMapPropagator,
) {
    let (extract, inject) = if name == "w3c" {
        (
            "trace_ctx/extract".to_owned(),
            "trace_ctx/inject".to_owned(),
        )
    } else {
        (
            format!("trace_ctx/{name}_extract"),
            format!("trace_ctx/{name}_inject"),
        )
    };
    extract_group(c, &extract, headers, ours, theirs);

    let our_cx = ours.extract(headers);
    let their_cx =
        theirs.extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers));
    let mut group = c.benchmark_group(&inject);
    group.bench_function("infra", |b| {
        b.iter(|| {
            let mut out = HeaderMap::new();
            ours.inject(black_box(&our_cx), &mut out);
            out
        });
    });
    let mut written = HeaderMap::new();
    ours.inject(&our_cx, &mut written);
    bench_floor(&mut group, &written);
    group.bench_function("opentelemetry", |b| {
        b.iter(|| {
            let mut out = HeaderMap::new();
            theirs.inject_context(black_box(&their_cx), &mut HeaderInjector(&mut out));
            out
        });
    });
    group.finish();
}

/// The `{group}` rows of [`inject_reused`]: the contexts `ours_in` and `theirs_in` extract
/// from `headers`, injected by `ours` and `theirs`.
fn reused_pair(
    c: &mut Criterion,
    group: &str,
    headers: &HeaderMap,
    (ours_in, ours): (&impl Propagator, &impl Propagator),
    (theirs_in, theirs): (&impl TextMapPropagator, &impl TextMapPropagator),
) {
    let our_cx = ours_in.extract(headers);
    let their_cx =
        theirs_in.extract_with_context(&opentelemetry::Context::new(), &HeaderExtractor(headers));
    inject_reused(
        c,
        group,
        |map| ours.inject(black_box(&our_cx), map),
        |map| theirs.inject_context(black_box(&their_cx), &mut HeaderInjector(map)),
    );
}

/// The floor under any injector into a fresh `HeaderMap`: the fields `written` holds, each
/// value copied from its bytes into a new map (as a value computed per request must be), with
/// the names prebuilt. No formatting, no context read: what is left is the map's own work.
fn bench_floor(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    written: &HeaderMap,
) {
    let fields = owned_fields(written);
    group.bench_function("headermap_floor", |b| {
        b.iter(|| {
            let mut out = HeaderMap::new();
            insert_fields(&mut out, black_box(&fields));
            out
        });
    });
}

/// Every field of `map`, its name and a copy of its value's bytes.
fn owned_fields(map: &HeaderMap) -> Vec<(HeaderName, Vec<u8>)> {
    map.iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect()
}

/// Sets each of `fields` in `map`, each value made from its bytes, replacing what was there.
fn insert_fields(map: &mut HeaderMap, fields: &[(HeaderName, Vec<u8>)]) {
    for (name, value) in fields {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.insert(name, value);
        }
    }
}

/// Injection as a client makes it, in group `group`: into the headers of the request being
/// sent, which already hold `host`, `user-agent`, `accept` and `content-type`, not into a map
/// allocated for the propagation fields alone. The map is reused from one iteration to the
/// next, so each injection also finds the fields the previous one wrote and must replace them
/// (a reused carrier must not carry one request's state into the next): both injectors
/// replace, ours by clearing what it owns before writing, OpenTelemetry's through
/// `HeaderInjector`, whose `set` is `HeaderMap::insert` (with these non-empty contexts it has
/// nothing to clear). Setup checks that two injections leave each side with one value per
/// field, the same fields, of the same lengths.
///
/// A fresh map costs as much as some injections (the `headermap_floor` rows of the inject
/// groups), and no request pays it: its headers exist before the context is injected. These
/// rows measure the injectors without that allocation. `headermap_floor` here is the same
/// reused map given the same values with no formatting.
fn inject_reused(
    c: &mut Criterion,
    group: &str,
    ours: impl Fn(&mut HeaderMap),
    theirs: impl Fn(&mut HeaderMap),
) {
    let base = request(&[]);
    let mut our_map = base.clone();
    let mut their_map = base.clone();
    for _ in 0..2 {
        ours(&mut our_map);
        theirs(&mut their_map);
    }
    assert_same_fields(&our_map, &their_map);
    let mut floor_map = our_map.clone();
    let written: Vec<_> = owned_fields(&our_map)
        .into_iter()
        .filter(|(name, _)| !base.contains_key(name))
        .collect();

    let mut group = c.benchmark_group(group);
    group.bench_function("infra", |b| b.iter(|| ours(black_box(&mut our_map))));
    group.bench_function("headermap_floor", |b| {
        b.iter(|| insert_fields(black_box(&mut floor_map), black_box(&written)));
    });
    group.bench_function("opentelemetry", |b| {
        b.iter(|| theirs(black_box(&mut their_map)));
    });
    group.finish();
}

/// Panics unless `a` and `b` hold the same names, each once, with values of the same length
/// (baggage members may come in another order).
fn assert_same_fields(a: &HeaderMap, b: &HeaderMap) {
    assert_eq!(a.len(), a.keys_len(), "a field written twice: {a:?}");
    assert_eq!(b.len(), b.keys_len(), "a field written twice: {b:?}");
    assert_eq!(a.len(), b.len(), "different fields: {a:?} / {b:?}");
    for (name, value) in a {
        let other = b.get(name).map(HeaderValue::len);
        assert_eq!(other, Some(value.len()), "{name}: {a:?} / {b:?}");
    }
}

fn propagation(c: &mut Criterion) {
    propagation_pair(
        c,
        "w3c",
        &request(&[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)]),
        &TraceContextPropagator,
        &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // OpenTelemetry's `SingleHeader` encoding writes the multi-header fields too (see the
    // reused B3 group below), so ours writes both forms here: the same four fields each.
    propagation_pair(
        c,
        "b3",
        &request(&[("b3", B3)]),
        &B3Propagator::single_and_multi_header(),
        &opentelemetry_zipkin::Propagator::with_encoding(
            opentelemetry_zipkin::B3Encoding::SingleHeader,
        ),
    );
    b3_multi_extract(c);
    propagation_pair(
        c,
        "baggage",
        &request(&[("baggage", BAGGAGE)]),
        &BaggagePropagator,
        &opentelemetry_sdk::propagation::BaggagePropagator::new(),
    );
    jaeger(c);

    let w3c = TraceContextPropagator;
    let otel_w3c = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    reused_pair(
        c,
        "trace_ctx/inject_reused",
        &request(&[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)]),
        (&w3c, &w3c),
        (&otel_w3c, &otel_w3c),
    );
    // OpenTelemetry's B3 propagator writes the multi-header fields with any encoding but
    // `SingleHeader` alone: `B3Encoding::support(&UnSpecified)` is true of every encoding (a
    // mask of zero), so its `SingleHeader` writes `b3` and three `x-b3-*` fields where ours
    // writes `b3`. The multi-header encodings write the same three fields on both sides.
    reused_pair(
        c,
        "trace_ctx/b3_inject_reused",
        &request(&[("b3", B3)]),
        (
            &B3Propagator::single_header(),
            &B3Propagator::multi_header(),
        ),
        (
            &opentelemetry_zipkin::Propagator::with_encoding(
                opentelemetry_zipkin::B3Encoding::SingleHeader,
            ),
            &opentelemetry_zipkin::Propagator::with_encoding(
                opentelemetry_zipkin::B3Encoding::MultipleHeader,
            ),
        ),
    );
    let baggage = BaggagePropagator;
    let otel_baggage = opentelemetry_sdk::propagation::BaggagePropagator::new();
    reused_pair(
        c,
        "trace_ctx/baggage_inject_reused",
        &request(&[("baggage", BAGGAGE)]),
        (&baggage, &baggage),
        (&otel_baggage, &otel_baggage),
    );
}

/// B3's multiple-header form: `x-b3-traceid`, `x-b3-spanid` and `x-b3-sampled` (what both
/// sides' multi-header encodings write). Both sides look for the single `b3` header first.
fn b3_multi_extract(c: &mut Criterion) {
    let (trace_id, span_id) = B3.split_at(32);
    let headers = request(&[
        ("x-b3-traceid", trace_id),
        ("x-b3-spanid", &span_id[1..17]),
        ("x-b3-sampled", "1"),
    ]);
    let theirs = opentelemetry_zipkin::Propagator::with_encoding(
        opentelemetry_zipkin::B3Encoding::MultipleHeader,
    );
    extract_group(
        c,
        "trace_ctx/b3_multi_extract",
        &headers,
        &B3Propagator::multi_header(),
        &theirs,
    );
}

/// The group `name`: both sides extracting from `headers`.
fn extract_group(
    c: &mut Criterion,
    name: &str,
    headers: &HeaderMap,
    ours: &impl Propagator,
    theirs: &impl TextMapPropagator,
) {
    // Each extracted context is handed to `std::hint::black_box` and dropped inside the
    // routine. Returned to criterion instead, it would pass through criterion 0.5's
    // `black_box`, a volatile read that copies the value one byte at a time: a cost that
    // grows with the size of each side's `Context` (ours is larger, holding the span context
    // inline) and that no caller pays.
    let mut group = c.benchmark_group(name);
    group.bench_function("infra", |b| {
        b.iter(|| {
            black_box(ours.extract(black_box(headers)));
        });
    });
    group.bench_function("opentelemetry", |b| {
        b.iter(|| {
            black_box(theirs.extract_with_context(
                &opentelemetry::Context::new(),
                &HeaderExtractor(black_box(headers)),
            ));
        });
    });
    group.finish();
}

/// `HeaderMap` carriers for OpenTelemetry 0.32's API, which its Jaeger propagator uses
/// (`opentelemetry_http` implements 0.33's).
struct HeaderReader032<'a>(&'a HeaderMap);

impl opentelemetry_032::propagation::Extractor for HeaderReader032<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWriter032<'a>(&'a mut HeaderMap);

impl opentelemetry_032::propagation::Injector for HeaderWriter032<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

fn jaeger(c: &mut Criterion) {
    use opentelemetry_032::propagation::TextMapPropagator as _;

    let headers = request(&[("uber-trace-id", UBER_TRACE_ID)]);
    let theirs = opentelemetry_jaeger_propagator::Propagator::new();
    let mut group = c.benchmark_group("trace_ctx/jaeger_extract");
    // Contexts go to `std::hint::black_box`, as in `extract_group`.
    group.bench_function("infra", |b| {
        b.iter(|| {
            black_box(JaegerPropagator.extract(black_box(&headers)));
        });
    });
    group.bench_function("opentelemetry", |b| {
        b.iter(|| {
            black_box(theirs.extract_with_context(
                &opentelemetry_032::Context::new(),
                &HeaderReader032(black_box(&headers)),
            ));
        });
    });
    group.finish();

    let our_cx = JaegerPropagator.extract(&headers);
    let their_cx = theirs.extract_with_context(
        &opentelemetry_032::Context::new(),
        &HeaderReader032(&headers),
    );
    let mut group = c.benchmark_group("trace_ctx/jaeger_inject");
    group.bench_function("infra", |b| {
        b.iter(|| {
            let mut out = HeaderMap::new();
            JaegerPropagator.inject(black_box(&our_cx), &mut out);
            out
        });
    });
    let mut written = HeaderMap::new();
    JaegerPropagator.inject(&our_cx, &mut written);
    bench_floor(&mut group, &written);
    group.bench_function("opentelemetry", |b| {
        b.iter(|| {
            let mut out = HeaderMap::new();
            theirs.inject_context(black_box(&their_cx), &mut HeaderWriter032(&mut out));
            out
        });
    });
    group.finish();

    inject_reused(
        c,
        "trace_ctx/jaeger_inject_reused",
        |map| JaegerPropagator.inject(black_box(&our_cx), map),
        |map| theirs.inject_context(black_box(&their_cx), &mut HeaderWriter032(map)),
    );
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
    sampler: opentelemetry_sdk::trace::Sampler,
) -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    opentelemetry_sdk::trace::SdkTracer,
) {
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
        let (_provider, theirs) = otel_tracer(if sampled {
            opentelemetry_sdk::trace::Sampler::AlwaysOn
        } else {
            opentelemetry_sdk::trace::Sampler::AlwaysOff
        });
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

/// The real server path: extract the caller's context from the request's `HeaderMap`,
/// start a server span under it, set one attribute, end it. Both tracers sample parent-based
/// (ours by default, the SDK's `ParentBased(AlwaysOn)`), so the span follows the caller:
/// recorded and discarded at end in `server_span`, unsampled in `server_span_unsampled`.
fn server_span(c: &mut Criterion) {
    for (group_name, traceparent) in [
        ("trace_ctx/server_span", TRACEPARENT),
        ("trace_ctx/server_span_unsampled", TRACEPARENT_UNSAMPLED),
    ] {
        let headers = request(&[("traceparent", traceparent), ("tracestate", TRACESTATE)]);
        let ours = Tracer::builder().exporter(NoopExporter).build();
        let (_provider, theirs) = otel_tracer(opentelemetry_sdk::trace::Sampler::ParentBased(
            Box::new(opentelemetry_sdk::trace::Sampler::AlwaysOn),
        ));
        let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let mut group = c.benchmark_group(group_name);
        group.bench_function("infra", |b| {
            b.iter(|| {
                let remote = TraceContextPropagator.extract(black_box(&headers));
                let mut span = ours
                    .span("GET /cart")
                    .kind(SpanKind::Server)
                    .remote(&remote)
                    .start();
                span.set_attribute("items", 3);
                span.end();
            });
        });
        group.bench_function("opentelemetry", |b| {
            b.iter(|| {
                let remote = otel.extract_with_context(
                    &opentelemetry::Context::new(),
                    &HeaderExtractor(black_box(&headers)),
                );
                let mut span = theirs
                    .span_builder("GET /cart")
                    .with_kind(opentelemetry::trace::SpanKind::Server)
                    .start_with_context(&theirs, &remote);
                span.set_attribute(opentelemetry::KeyValue::new("items", 3));
                span.end();
            });
        });
        group.finish();
    }
}

criterion_group!(benches, propagation, spans, server_span);
criterion_main!(benches);
