//! Proves the hot paths allocate nothing: extracting and injecting a `traceparent` (no
//! `tracestate`), starting, annotating and ending an unsampled span, and starting children
//! of an unsampled parent that carries a `tracestate`, (feature `tower`) serving a request
//! through the server layer when its span is unsampled, also when the request is cut short
//! (its response future or body dropped early), and recording a sampled span for a
//! batch processor once exported spans' boxes come back.
//!
//! A counting global allocator tallies allocations made by the current thread only, so the
//! test harness's own threads do not disturb the count.
#![cfg(not(infra_loom))]

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use infra_testkit::allocator::{CountingAllocator, allocations_in, peak_bytes_during};
use infra_trace_ctx::{
    AlwaysOff, AlwaysOn, B3Propagator, Baggage, BaggagePropagator, BatchSpanProcessor, Context,
    JaegerPropagator, Link, MemoryExporter, ParentBased, Propagator, SpanKind, Status,
    TraceContextPropagator, TraceIdRatio, Tracer,
};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[test]
fn the_counter_sees_allocations() {
    let (count, v) = allocations_in(|| vec![1u8; 32]);
    assert_eq!(count, 1);
    assert_eq!(v.len(), 32);
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";

#[test]
fn traceparent_extract_and_inject_allocate_nothing() {
    let mut incoming: HashMap<String, String> = HashMap::new();
    incoming.insert("traceparent".into(), TRACEPARENT.into());
    incoming.insert("content-type".into(), "application/json".into());
    // The outgoing map already holds the field: re-injection reuses its string.
    let mut outgoing: HashMap<String, String> = HashMap::new();
    outgoing.insert("traceparent".into(), String::with_capacity(64));
    // Warm-up: the first use of thread-locals may set them up.
    let _ = TraceContextPropagator.extract(&incoming);

    let (count, ()) = allocations_in(|| {
        for _ in 0..100 {
            let cx = TraceContextPropagator.extract(&incoming);
            assert!(cx.span().is_some());
            TraceContextPropagator.inject(&cx, &mut outgoing);
        }
    });
    assert_eq!(
        count, 0,
        "extract + inject allocated {count} times in 100 rounds"
    );
    assert_eq!(outgoing["traceparent"], TRACEPARENT);

    // A rejected header costs nothing either.
    incoming.insert("traceparent".into(), "00-not-a-valid-header".into());
    let (count, cx) = allocations_in(|| TraceContextPropagator.extract(&incoming));
    assert_eq!(count, 0);
    assert!(cx.span().is_none());
}

#[cfg(feature = "http")]
#[test]
fn header_map_extraction_allocates_nothing() {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
    let _ = TraceContextPropagator.extract(&headers);
    let (count, cx) = allocations_in(|| TraceContextPropagator.extract(&headers));
    assert_eq!(count, 0);
    assert!(cx.span().is_some());
}

/// A field this crate writes is named without allocating: only its value is copied.
#[cfg(feature = "http")]
#[test]
fn header_map_injection_allocates_only_the_value() {
    let mut incoming = http::HeaderMap::new();
    incoming.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
    let cx = TraceContextPropagator.extract(&incoming);
    let mut outgoing = http::HeaderMap::with_capacity(4);
    TraceContextPropagator.inject(&cx, &mut outgoing);
    let (count, ()) = allocations_in(|| TraceContextPropagator.inject(&cx, &mut outgoing));
    assert_eq!(count, 1);
    assert_eq!(outgoing["traceparent"], TRACEPARENT);
}

/// A baggage header is encoded once, into a string whose buffer the `HeaderMap` keeps as the
/// value: one allocation, where copying the string into a header value would be a second.
#[cfg(feature = "http")]
#[test]
fn header_map_baggage_injection_allocates_the_encoded_value_once() {
    let mut incoming = http::HeaderMap::new();
    incoming.insert(
        "baggage",
        http::HeaderValue::from_static("userId=alice,tenant=acme%20corp;ttl=60"),
    );
    let cx = BaggagePropagator.extract(&incoming);
    let mut outgoing = http::HeaderMap::with_capacity(4);
    BaggagePropagator.inject(&cx, &mut outgoing);
    let (count, ()) = allocations_in(|| BaggagePropagator.inject(&cx, &mut outgoing));
    assert_eq!(count, 1);
    assert_eq!(
        outgoing["baggage"],
        "userId=alice,tenant=acme%20corp;ttl=60"
    );
}

/// A `tracestate` as tracers write it (no whitespace, no repeated key) becomes the shared
/// value in one allocation; one that needs rewriting costs a second (the rewritten copy).
#[test]
fn a_canonical_tracestate_is_extracted_in_one_allocation() {
    let extract = |tracestate: &str| {
        let mut incoming: HashMap<String, String> = HashMap::new();
        incoming.insert("traceparent".into(), TRACEPARENT.into());
        incoming.insert("tracestate".into(), tracestate.into());
        let (count, cx) = allocations_in(|| TraceContextPropagator.extract(&incoming));
        let state = cx.span().expect("valid traceparent").trace_state().clone();
        (count, state.as_str().to_owned())
    };
    let _ = extract("warm=up");
    let canonical = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,dd=s:1;o:rum";
    assert_eq!(extract(canonical), (1, canonical.to_owned()));
    let spaced = "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,dd=s:1;o:rum";
    assert_eq!(extract(spaced), (2, canonical.to_owned()));
}

/// B3 and Jaeger headers are formatted on the stack: re-injected into a map that already
/// holds their fields, they allocate nothing.
#[test]
fn b3_and_jaeger_injection_into_a_reused_map_allocates_nothing() {
    let mut incoming: HashMap<String, String> = HashMap::new();
    incoming.insert("traceparent".into(), TRACEPARENT.into());
    let cx = TraceContextPropagator.extract(&incoming);
    let propagators: [&dyn Propagator; 3] = [
        &B3Propagator::single_header(),
        &B3Propagator::multi_header(),
        &JaegerPropagator,
    ];
    // One map per propagator: single- and multi-header B3 each remove the other's fields.
    let mut outgoing: Vec<HashMap<String, String>> = vec![HashMap::new(); propagators.len()];
    for (propagator, map) in propagators.iter().zip(&mut outgoing) {
        propagator.inject(&cx, map);
    }
    let (count, ()) = allocations_in(|| {
        for (propagator, map) in propagators.iter().zip(&mut outgoing) {
            propagator.inject(&cx, map);
        }
    });
    assert_eq!(count, 0, "B3 and Jaeger injection allocated {count} times");
    assert_eq!(
        outgoing[0]["b3"],
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
    );
    assert_eq!(outgoing[1]["x-b3-spanid"], "00f067aa0ba902b7");
    assert_eq!(
        outgoing[2]["uber-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
    );
}

/// Baggage is encoded into a buffer of its exact length: one allocation, never a regrowth.
#[test]
fn baggage_injection_allocates_the_header_once() {
    let mut incoming: HashMap<String, String> = HashMap::new();
    incoming.insert(
        "baggage".into(),
        "userId=alice,tenant=acme%20corp,isProduction=false".into(),
    );
    let cx = BaggagePropagator.extract(&incoming);
    let mut outgoing: HashMap<String, String> = HashMap::new();
    BaggagePropagator.inject(&cx, &mut outgoing);
    let (count, ()) = allocations_in(|| BaggagePropagator.inject(&cx, &mut outgoing));
    assert_eq!(count, 1);
    assert_eq!(outgoing["baggage"], incoming["baggage"]);
}

#[test]
fn unsampled_spans_allocate_nothing() {
    let tracer = Tracer::builder().sampler(AlwaysOff).build();
    let ratio = Tracer::builder()
        .sampler(ParentBased::new(TraceIdRatio::new(0.0)))
        .build();
    let mut incoming: HashMap<String, String> = HashMap::new();
    incoming.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
    );
    let remote = TraceContextPropagator.extract(&incoming);
    let parent = remote.span().expect("valid header").clone();
    // The first attach on a thread allocates the thread's list of attachments, once.
    let warm_up = tracer.span("warm-up").start();
    drop(warm_up.attach());
    drop(warm_up);

    let (count, ()) = allocations_in(|| {
        for _ in 0..100 {
            let mut root = tracer.span("checkout").kind(SpanKind::Server).start();
            root.set_attribute("http.method", "POST");
            root.set_attribute("items", 3);
            root.add_event("validated");
            root.set_status(Status::Ok);
            {
                let _guard = root.attach();
                let mut child = tracer.span("load cart").start();
                assert_eq!(child.context().trace_id(), root.context().trace_id());
                child.end();
            }
            root.end();
            // A remote unsampled parent followed by a parent-based sampler.
            let server = ratio.span("handle").parent(&parent).start();
            assert!(!server.is_recording());
        }
    });
    assert_eq!(
        count, 0,
        "unsampled spans allocated {count} times in 100 rounds"
    );
    assert!(Context::current().span().is_none());
}

/// The consistent ratio sampler decides a root span with a compare of the trace id's
/// randomness against its threshold: a root it does not keep allocates nothing.
#[test]
fn a_root_span_a_trace_id_ratio_does_not_keep_allocates_nothing() {
    let tracer = Tracer::builder()
        .sampler(ParentBased::new(TraceIdRatio::new(0.01)))
        .build();
    drop(tracer.span("warm-up").root().start());
    let mut unkept = 0;
    for _ in 0..10_000 {
        let (count, mut span) = allocations_in(|| tracer.span("checkout").root().start());
        if span.is_recording() {
            span.end();
            continue;
        }
        assert_eq!(count, 0, "an unkept root span allocated {count} times");
        let (count, ()) = allocations_in(|| span.end());
        assert_eq!(
            count, 0,
            "ending an unkept root span allocated {count} times"
        );
        unkept += 1;
    }
    // About 9,900 of 10,000 roots fall outside 1 %.
    assert!(unkept > 9_000, "only {unkept} roots were not kept");
}

#[test]
fn an_unsampled_span_frees_the_name_and_links_its_builder_owned() {
    let tracer = Tracer::builder().sampler(AlwaysOff).build();
    let parent = tracer.span("parent").root().start().context().clone();
    // 1,000 spans, each given a 1,000-byte name, a link or both: kept, the names would hold
    // a megabyte and the links (80 bytes or more each) tens of kilobytes; freed, one span's
    // worth at a time. Each owned part must be freed whatever the other is.
    for (owned_name, linked) in [(true, true), (true, false), (false, true)] {
        let (peak, ()) = peak_bytes_during(|| {
            for _ in 0..1_000 {
                let name = if owned_name {
                    Cow::Owned("x".repeat(1_000))
                } else {
                    Cow::Borrowed("static")
                };
                let mut builder = tracer.span(name);
                if linked {
                    builder = builder.link(Link::new(parent.clone()));
                }
                let mut span = builder.start();
                assert!(!span.is_recording());
                span.end();
            }
        });
        assert!(
            peak < 16_384,
            "owned name {owned_name}, link {linked}: held {peak} bytes at once"
        );
    }
}

#[test]
fn children_of_an_unsampled_parent_with_a_tracestate_allocate_nothing() {
    let tracer = Tracer::builder()
        .sampler(ParentBased::new(TraceIdRatio::new(0.5)))
        .build();
    let mut incoming: HashMap<String, String> = HashMap::new();
    incoming.insert(
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
    );
    incoming.insert(
        "tracestate".into(),
        "ot=th:8;rv:0123456789abcd,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into(),
    );
    let remote = TraceContextPropagator.extract(&incoming);
    let parent = remote.span().expect("valid header").clone();
    assert!(!parent.trace_state().is_empty());
    let warm_up = tracer.span("warm-up").start();
    drop(warm_up.attach());
    drop(warm_up);

    let (count, ()) = allocations_in(|| {
        for _ in 0..100 {
            // An explicit remote parent, then the thread's current span as the parent.
            let server = tracer.span("handle").parent(&parent).start();
            assert!(!server.is_recording());
            assert_eq!(server.context().trace_state(), parent.trace_state());
            let _guard = server.attach();
            let child = tracer.span("query").start();
            assert!(!child.is_recording());
            assert_eq!(child.context().trace_state(), parent.trace_state());
        }
    });
    assert_eq!(
        count, 0,
        "children of an unsampled parent allocated {count} times in 100 rounds"
    );
}

/// Once exported spans' boxes come back from a batch processor, a sampled span with an
/// attribute costs its recording thread no allocation: it starts in a spare box whose
/// attribute list kept its capacity, and ends into the queue in that box.
#[test]
fn a_sampled_span_ended_into_a_batch_processor_reuses_an_exported_one() {
    let (processor, tracer) = batch_tracer("checkout-service");
    let count = allocations_of_warm_batched_spans(&processor, &tracer, |tracer| {
        let mut span = tracer.span("checkout").start();
        assert!(span.is_recording());
        span.set_attribute("items", 3);
        span.end();
    });
    assert_eq!(count, 0, "50 batched spans allocated {count} times");
    processor
        .force_flush(Duration::from_secs(30))
        .expect("the memory exporter keeps up");
    assert_eq!(processor.stats().exported, 150);
}

/// The same with the service named at run time (from configuration or the environment, as
/// most services are): a spare box keeps the service name it carried, so an owned name is
/// not copied into every record.
#[test]
fn a_batched_span_of_a_service_named_at_run_time_allocates_nothing() {
    let (processor, tracer) = batch_tracer(String::from("checkout"));
    let count = allocations_of_warm_batched_spans(&processor, &tracer, |tracer| {
        let mut span = tracer.span("checkout").start();
        assert!(span.is_recording());
        span.end();
    });
    assert_eq!(count, 0, "50 batched spans allocated {count} times");
}

/// The README: a spare box's "attribute, event and link lists keep their memory up to 16
/// entries", so a span that adds a link (`Span::add_link`, as a batch consumer links the
/// messages it handles) reuses the spare's link list instead of allocating one.
#[test]
fn a_batched_span_adding_a_link_reuses_the_spare_link_list() {
    let (processor, tracer) = batch_tracer("checkout-service");
    let linked = infra_trace_ctx::SpanContext::new(
        infra_trace_ctx::TraceId::random(),
        infra_trace_ctx::SpanId::random(),
        infra_trace_ctx::TraceFlags::SAMPLED,
    );
    let count = allocations_of_warm_batched_spans(&processor, &tracer, |tracer| {
        let mut span = tracer.span("consumer").start();
        assert!(span.is_recording());
        span.add_event("received");
        span.add_link(Link::new(linked.clone()));
        span.end();
    });
    assert_eq!(
        count, 0,
        "50 batched spans with a link allocated {count} times"
    );
}

/// An always-on tracer of `service` ending its spans into a batch processor.
fn batch_tracer(service: impl Into<Cow<'static, str>>) -> (BatchSpanProcessor, Tracer) {
    let processor = BatchSpanProcessor::builder(MemoryExporter::new())
        .max_batch_size(64)
        .build()
        .expect("valid sizes");
    let tracer = Tracer::builder()
        .service(service)
        .sampler(AlwaysOn)
        .exporter(processor.clone())
        .build();
    (processor, tracer)
}

/// The allocations of 50 spans made by `record`, once two flushed rounds of 50 have filled
/// the processor's slots (their boxes are freed) and then brought boxes back, cleared.
fn allocations_of_warm_batched_spans(
    processor: &BatchSpanProcessor,
    tracer: &Tracer,
    record: impl Fn(&Tracer),
) -> u64 {
    for _ in 0..2 {
        (0..50).for_each(|_| record(tracer));
        processor
            .force_flush(Duration::from_secs(30))
            .expect("the memory exporter keeps up");
    }
    allocations_in(|| (0..50).for_each(|_| record(tracer))).0
}

/// A service that answers at once with an empty response, allocating nothing itself.
#[cfg(feature = "tower")]
#[derive(Clone)]
struct Empty;

#[cfg(feature = "tower")]
impl tower::Service<http::Request<()>> for Empty {
    type Response = http::Response<String>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(String::new())))
    }
}

#[cfg(feature = "tower")]
#[test]
fn an_unsampled_server_span_named_by_its_route_allocates_nothing() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Poll, Waker};

    use infra_trace_ctx::ServerLayer;
    use tower::{Layer, Service};

    let tracer = Tracer::builder().sampler(AlwaysOff).build();
    let route = |request: &http::Request<()>| {
        if request.uri().path().starts_with("/cart/") {
            "GET /cart/{id}"
        } else {
            "GET"
        }
    };
    let mut named = ServerLayer::new(tracer.clone(), TraceContextPropagator)
        .route(route)
        .layer(Empty);
    let mut by_method = ServerLayer::new(tracer, TraceContextPropagator).layer(Empty);
    let requests: Vec<http::Request<()>> = (0..200)
        .map(|i| {
            http::Request::builder()
                .uri(format!("/cart/{i}"))
                .header("traceparent", TRACEPARENT)
                .body(())
                .expect("valid request")
        })
        .collect();
    let mut waker_cx = std::task::Context::from_waker(Waker::noop());
    // Warm-up: the first attach on a thread allocates the thread's list of attachments.
    let mut warm_up = by_method.call(http::Request::new(()));
    assert!(pin!(&mut warm_up).poll(&mut waker_cx).is_ready());

    let mut requests = requests.into_iter();
    let (count, ()) = allocations_in(|| {
        for _ in 0..100 {
            let request = requests.next().expect("enough requests");
            let mut future = pin!(named.call(request));
            assert!(matches!(
                future.as_mut().poll(&mut waker_cx),
                Poll::Ready(Ok(_))
            ));
            let request = requests.next().expect("enough requests");
            let mut future = pin!(by_method.call(request));
            assert!(matches!(
                future.as_mut().poll(&mut waker_cx),
                Poll::Ready(Ok(_))
            ));
        }
    });
    assert_eq!(
        count, 0,
        "unsampled server spans allocated {count} times in 100 rounds"
    );
}

/// A service that answers at once with a body of one frame, allocating nothing itself.
#[cfg(feature = "tower")]
struct CutShort;

#[cfg(feature = "tower")]
impl tower::Service<http::Request<()>> for CutShort {
    type Response = http::Response<http_body_util::Full<&'static [u8]>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let body = http_body_util::Full::new(&b"a frame never read"[..]);
        std::future::ready(Ok(http::Response::new(body)))
    }
}

/// The server layer's handling of a request given up before its response, or of a body
/// dropped before its end, costs an unsampled request no allocation either.
#[cfg(feature = "tower")]
#[test]
fn an_unsampled_server_span_of_a_request_cut_short_allocates_nothing() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Poll, Waker};

    use infra_trace_ctx::ServerLayer;
    use tower::{Layer, Service};

    let tracer = Tracer::builder().sampler(AlwaysOff).build();
    let mut service = ServerLayer::new(tracer, TraceContextPropagator).layer(CutShort);
    let requests: Vec<http::Request<()>> = (0..200)
        .map(|i| {
            http::Request::builder()
                .uri(format!("/cart/{i}"))
                .header("traceparent", TRACEPARENT)
                .body(())
                .expect("valid request")
        })
        .collect();
    let mut waker_cx = std::task::Context::from_waker(Waker::noop());
    // Warm-up: the first attach on a thread allocates the thread's list of attachments.
    let mut warm_up = service.call(http::Request::new(()));
    assert!(pin!(&mut warm_up).poll(&mut waker_cx).is_ready());

    let mut requests = requests.into_iter();
    let (count, ()) = allocations_in(|| {
        for _ in 0..100 {
            // A body dropped before its end.
            let request = requests.next().expect("enough requests");
            let mut future = pin!(service.call(request));
            let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut waker_cx) else {
                panic!("the service answers at once");
            };
            assert!(!http_body::Body::is_end_stream(response.body()));
            drop(response);
            // A response future dropped before it was polled.
            let request = requests.next().expect("enough requests");
            drop(service.call(request));
        }
    });
    assert_eq!(
        count, 0,
        "unsampled server spans of requests cut short allocated {count} times in 100 rounds"
    );
}

#[cfg(feature = "tower")]
#[test]
fn an_unsampled_client_span_costs_no_allocation() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Poll, Waker};

    use infra_trace_ctx::ClientLayer;
    use tower::{Layer, Service};

    let mut spanned = ClientLayer::new(TraceContextPropagator)
        .with_tracer(Tracer::builder().sampler(AlwaysOff).build())
        .layer(Empty);
    let mut plain = ClientLayer::new(TraceContextPropagator).layer(Empty);
    let mut waker_cx = std::task::Context::from_waker(Waker::noop());
    let root = Tracer::builder()
        .sampler(AlwaysOff)
        .build()
        .span("handler")
        .start();
    let _guard = root.attach();
    // Injecting into the request's empty header map allocates the same with or without a
    // span: the span's share must be nothing, whatever the path.
    let call = |client: &mut dyn FnMut(http::Request<()>) -> bool, i: u32| {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://pay.example/charge/{i}?sig=abc"))
            .body(())
            .expect("valid request");
        allocations_in(|| assert!(client(request))).0
    };
    let mut with_span = |request| {
        let mut future = pin!(spanned.call(request));
        matches!(future.as_mut().poll(&mut waker_cx), Poll::Ready(Ok(_)))
    };
    let spanned_counts: Vec<u64> = (0..50).map(|i| call(&mut with_span, i)).collect();
    let mut waker_cx = std::task::Context::from_waker(Waker::noop());
    let mut without = |request| {
        let mut future = pin!(plain.call(request));
        matches!(future.as_mut().poll(&mut waker_cx), Poll::Ready(Ok(_)))
    };
    let plain_counts: Vec<u64> = (0..50).map(|i| call(&mut without, i)).collect();
    assert!(
        plain_counts.iter().all(|&n| n > 0),
        "injection allocates its header"
    );
    assert_eq!(
        spanned_counts, plain_counts,
        "an unsampled client span allocated beyond the injection"
    );
}

/// A header of 100,000 members is read in bounded memory: only the 64 members kept are held,
/// yet a repeated key at the very end still updates its value, and a malformed last member
/// still invalidates the whole header.
#[test]
fn a_huge_baggage_header_is_read_in_bounded_memory() {
    let members: Vec<String> = (0..100_000).map(|n| format!("key{n}=value{n}")).collect();
    let header = format!("{},key3=last", members.join(","));
    let (peak, baggage) = infra_testkit::allocator::peak_bytes_during(|| Baggage::parse(&header));
    let baggage = baggage.unwrap();
    assert_eq!(baggage.len(), 64);
    assert_eq!(baggage.get("key63"), Some("value63"));
    assert_eq!(baggage.get("key64"), None);
    assert_eq!(baggage.get("key3"), Some("last"));
    // 64 members of at most 8192 bytes encoded, with their bookkeeping, fit in 32 KiB; the
    // 100,000 members parsed would take megabytes.
    assert!(
        peak < 32 * 1024,
        "reading the header peaked at {peak} bytes"
    );

    let broken = format!("{},key3", members.join(","));
    let (peak, result) = infra_testkit::allocator::peak_bytes_during(|| Baggage::parse(&broken));
    assert!(
        result.is_err(),
        "a malformed last member invalidates the header"
    );
    assert!(
        peak < 32 * 1024,
        "rejecting the header peaked at {peak} bytes"
    );
}
