//! `TracingBridge`: `tracing` spans recorded as this crate's spans, checked through a
//! `MemoryExporter`.
#![cfg(all(feature = "tracing", feature = "tokio", not(infra_loom)))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_trace_ctx::{
    AlwaysOff, Context, FutureExt as _, MemoryExporter, Propagator, SpanContext, SpanData,
    SpanKind, Status, TraceContextPropagator, Tracer, TracingBridge, Value,
};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt;

/// A bridge exporting to a fresh memory exporter, timed by a manual clock.
struct Bridge {
    exporter: MemoryExporter,
    clock: ManualClock,
    tracer: Tracer,
}

impl Bridge {
    fn new() -> Self {
        let exporter = MemoryExporter::new();
        let clock = ManualClock::new();
        let tracer = Tracer::builder()
            .service("cart")
            .exporter(exporter.clone())
            .clock(clock.clone())
            .build();
        Self {
            exporter,
            clock,
            tracer,
        }
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::registry().with(TracingBridge::new(self.tracer.clone()))
    }

    /// Runs `f` with the bridge as this thread's subscriber.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::subscriber::with_default(self.subscriber(), f)
    }

    fn span(&self, name: &str) -> SpanData {
        let spans = self.exporter.spans();
        let mut named = spans.iter().filter(|span| span.name == name);
        let span = named.next().unwrap_or_else(|| panic!("no span {name}"));
        assert!(named.next().is_none(), "two spans named {name}");
        span.clone()
    }
}

#[tracing::instrument(fields(otel.kind = "server", user = "alice"))]
fn checkout(order: u64, express: bool) -> u64 {
    tracing::info!(items = 3, "loaded the cart");
    price(order)
}

#[tracing::instrument]
fn price(order: u64) -> u64 {
    order * 2
}

#[test]
fn instrumented_functions_nest_with_fields_events_and_kinds() {
    let bridge = Bridge::new();
    let total = bridge.run(|| checkout(21, true));
    assert_eq!(total, 42);
    let checkout = bridge.span("checkout");
    let price = bridge.span("price");
    assert_eq!(bridge.exporter.spans().len(), 2);
    assert_eq!(price.parent_span_id, Some(checkout.context.span_id()));
    assert_eq!(price.context.trace_id(), checkout.context.trace_id());
    assert_eq!(checkout.parent_span_id, None);
    assert_eq!(checkout.kind, SpanKind::Server);
    assert_eq!(price.kind, SpanKind::Internal);
    assert_eq!(checkout.attribute("order"), Some(&Value::I64(21)));
    assert_eq!(checkout.attribute("express"), Some(&Value::Bool(true)));
    assert_eq!(checkout.attribute("user"), Some(&Value::from("alice")));
    assert_eq!(checkout.attribute("otel.kind"), None);
    assert_eq!(price.attribute("order"), Some(&Value::I64(21)));
    assert_eq!(checkout.service, "cart");

    assert_eq!(checkout.events.len(), 1);
    let event = &checkout.events[0];
    assert_eq!(event.name, "loaded the cart");
    let attribute = |key: &str| event.attributes.iter().find(|kv| kv.key == key);
    assert_eq!(attribute("items").map(|kv| &kv.value), Some(&Value::I64(3)));
    assert_eq!(
        attribute("level").map(|kv| &kv.value),
        Some(&Value::from("INFO"))
    );
    assert_eq!(
        attribute("target").map(|kv| &kv.value),
        Some(&Value::from(module_path!()))
    );
    assert!(price.events.is_empty());
}

#[test]
fn fields_are_typed_and_otel_fields_configure_the_span() {
    let bridge = Bridge::new();
    bridge.run(|| {
        let span = tracing::info_span!(
            "GET",
            "otel.name" = "GET /cart/{id}",
            "otel.kind" = "CLIENT",
            signed = -5i64,
            huge = u64::MAX,
            ratio = 0.25,
            debug = ?vec![1, 2],
            display = %"shown",
            later = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        span.record("later", 7);
        span.record("otel.status_description", "card declined");
        span.record("otel.status_code", "ERROR");
    });
    let span = bridge.span("GET /cart/{id}");
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(span.attribute("signed"), Some(&Value::I64(-5)));
    assert_eq!(
        span.attribute("huge"),
        Some(&Value::from(u64::MAX.to_string()))
    );
    assert_eq!(span.attribute("ratio"), Some(&Value::F64(0.25)));
    assert_eq!(span.attribute("debug"), Some(&Value::from("[1, 2]")));
    assert_eq!(span.attribute("display"), Some(&Value::from("shown")));
    assert_eq!(span.attribute("later"), Some(&Value::I64(7)));
    assert_eq!(span.status, Status::Error("card declined".into()));
    assert!(
        span.attributes
            .iter()
            .all(|kv| !kv.key.starts_with("otel."))
    );

    // A name recorded later renames the span; `ok` is final.
    let bridge = Bridge::new();
    bridge.run(|| {
        let span = tracing::info_span!(
            "route",
            "otel.name" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
        );
        span.record("otel.name", "GET /items");
        span.record("otel.status_code", "ok");
        span.record("otel.status_code", "error");
    });
    let span = bridge.span("GET /items");
    assert_eq!(span.status, Status::Ok);
}

#[test]
fn timing_runs_from_creation_to_close_on_the_tracer_clock() {
    let bridge = Bridge::new();
    bridge.run(|| {
        let span = tracing::info_span!("load");
        bridge.clock.advance(Duration::from_millis(3));
        span.in_scope(|| bridge.clock.advance(Duration::from_millis(4)));
        // Not entered, still open: time keeps counting until the last handle goes.
        let handle = span.clone();
        drop(span);
        bridge.clock.advance(Duration::from_millis(5));
        assert!(bridge.exporter.spans().is_empty(), "closed too early");
        drop(handle);
    });
    assert_eq!(bridge.span("load").duration(), Duration::from_millis(12));
}

#[test]
fn entered_spans_are_the_current_context_and_nest() {
    let bridge = Bridge::new();
    bridge.run(|| {
        assert!(Context::current().span().is_none());
        let outer = tracing::info_span!("outer");
        let outer_guard = outer.enter();
        let outer_id = Context::current().span().map(SpanContext::span_id);
        assert!(outer_id.is_some());
        {
            let _inner = tracing::info_span!("inner").entered();
            let inner_id = Context::current().span().map(SpanContext::span_id);
            assert!(inner_id.is_some() && inner_id != outer_id);
            // A span started directly is a child of the entered one.
            bridge.tracer.span("direct").start().end();
            // Entering the same span again nests too.
            let again = outer.enter();
            assert_eq!(
                Context::current().span().map(SpanContext::span_id),
                outer_id
            );
            drop(again);
            assert_eq!(
                Context::current().span().map(SpanContext::span_id),
                inner_id
            );
        }
        assert_eq!(
            Context::current().span().map(SpanContext::span_id),
            outer_id
        );
        drop(outer_guard);
        assert!(Context::current().span().is_none());
    });
    let outer = bridge.span("outer");
    let direct = bridge.span("direct");
    assert_eq!(
        direct.parent_span_id,
        Some(bridge.span("inner").context.span_id())
    );
    assert_eq!(
        bridge.span("inner").parent_span_id,
        Some(outer.context.span_id())
    );
}

#[test]
fn a_span_under_an_extracted_remote_parent_keeps_its_trace_id() {
    let bridge = Bridge::new();
    let headers = vec![(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let remote = TraceContextPropagator.extract(&headers);
    let parent = remote.span().cloned().unwrap();
    bridge.run(|| {
        let _attached = remote.attach();
        tracing::info_span!("handle").in_scope(|| {
            // And what it calls carries it on.
            let mut outgoing: Vec<(String, String)> = Vec::new();
            TraceContextPropagator.inject(&Context::current(), &mut outgoing);
            assert!(
                outgoing[0]
                    .1
                    .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            );
        });
        // `parent: None` starts a new trace even under a current context.
        tracing::info_span!(parent: None, "detached").in_scope(|| {});
    });
    let handle = bridge.span("handle");
    assert_eq!(handle.context.trace_id(), parent.trace_id());
    assert_eq!(handle.parent_span_id, Some(parent.span_id()));
    let detached = bridge.span("detached");
    assert_ne!(detached.context.trace_id(), parent.trace_id());
    assert_eq!(detached.parent_span_id, None);
}

#[test]
fn follows_from_becomes_a_link() {
    let bridge = Bridge::new();
    bridge.run(|| {
        let producer = tracing::info_span!("produce");
        let consumer = tracing::info_span!(parent: None, "consume");
        consumer.follows_from(&producer);
    });
    let consume = bridge.span("consume");
    assert_eq!(consume.links.len(), 1);
    assert_eq!(
        consume.links[0].context.span_id(),
        bridge.span("produce").context.span_id()
    );
}

#[test]
fn unsampled_spans_export_nothing_and_propagate_their_ids() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder()
        .sampler(AlwaysOff)
        .exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(TracingBridge::new(tracer));
    tracing::subscriber::with_default(subscriber, || {
        let _outer = tracing::info_span!("outer", user = "alice").entered();
        let outer = Context::current().span().cloned().unwrap();
        assert!(!outer.is_sampled());
        let _inner = tracing::info_span!("inner").entered();
        tracing::info!("ignored");
        assert_eq!(
            Context::current().span().map(SpanContext::trace_id),
            Some(outer.trace_id())
        );
    });
    assert!(exporter.spans().is_empty());
}

#[test]
fn an_instrumented_future_entered_at_every_poll_ends_once() {
    let bridge = Bridge::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let _default = tracing::subscriber::set_default(bridge.subscriber());
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8 {
            let work = async move {
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                    tracing::info!("step");
                }
                // While entered, the span is this crate's current context.
                Context::current().span().map(SpanContext::span_id)
            };
            let span = tracing::info_span!("task", task);
            let traced = tracing::instrument::WithSubscriber::with_subscriber(
                work.instrument(span),
                dispatch.clone(),
            );
            tasks.push(tokio::spawn(traced));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
    });
    let spans = bridge.exporter.spans();
    assert_eq!(spans.len(), 8, "each task's span exported exactly once");
    for span in &spans {
        assert_eq!(span.name, "task");
        assert_eq!(span.events.len(), 5);
    }
    let mut tasks: Vec<i64> = spans
        .iter()
        .filter_map(|span| match span.attribute("task") {
            Some(Value::I64(task)) => Some(*task),
            _ => None,
        })
        .collect();
    tasks.sort_unstable();
    assert_eq!(tasks, (0..8).collect::<Vec<_>>());
    // No worker thread kept a span current after its poll.
    let leftover = runtime.block_on(async {
        tokio::spawn(async { Context::current().span().is_some() })
            .await
            .unwrap()
    });
    assert!(!leftover);
}

#[test]
fn spans_from_several_threads_each_get_their_own_parent() {
    let bridge = Bridge::new();
    let dispatch = tracing::Dispatch::new(bridge.subscriber());
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let dispatch = dispatch.clone();
            infra_common::sync::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let _root = tracing::info_span!("root", thread).entered();
                    for _ in 0..10 {
                        tracing::info_span!("child", thread).in_scope(|| {});
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let spans = bridge.exporter.spans();
    assert_eq!(spans.len(), 44);
    for root in spans.iter().filter(|span| span.name == "root") {
        let children: Vec<_> = spans
            .iter()
            .filter(|span| span.parent_span_id == Some(root.context.span_id()))
            .collect();
        assert_eq!(children.len(), 10);
        for child in children {
            assert_eq!(child.attribute("thread"), root.attribute("thread"));
            assert_eq!(child.context.trace_id(), root.context.trace_id());
        }
    }
}

#[test]
fn a_context_carried_into_a_task_parents_its_spans() {
    let bridge = Bridge::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _default = tracing::subscriber::set_default(bridge.subscriber());
    let mut server = bridge.tracer.span("server").kind(SpanKind::Server).start();
    let cx = Context::new().with_span(server.context().clone());
    runtime.block_on(
        async {
            tracing::info_span!("query").in_scope(|| {});
        }
        .with_context(cx),
    );
    server.end();
    assert_eq!(
        bridge.span("query").parent_span_id,
        Some(bridge.span("server").context.span_id())
    );
}

/// `otel.status_description` is "the description of an `error` status" whatever order the
/// two fields are recorded in: a span that records the code first (the error is known, then
/// its message is formatted) gets the description recorded after it.
#[test]
fn a_status_description_recorded_after_the_error_code_describes_it() {
    let bridge = Bridge::new();
    bridge.run(|| {
        let span = tracing::info_span!(
            "charge",
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        span.record("otel.status_code", "error");
        span.record("otel.status_description", "card declined");
    });
    assert_eq!(
        bridge.span("charge").status,
        Status::Error("card declined".into())
    );
}
