//! The batch processor: what it queues, drops, flushes and delivers on shutdown, what an
//! exporter's errors and panics do to it, and a property test against a model of the queue.

mod support;

use std::time::Duration;

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex};
use infra_common::{Clock, ManualClock, SystemClock};
use infra_trace_ctx::{
    BatchSpanProcessor, BatchSpanProcessorBuilder, BatchStats, ExportError, MemoryExporter,
    SpanBatchExporter, SpanData, Tracer,
};
use support::{Gate, GatedExporter, eventually};

const LONG: Duration = Duration::from_secs(60);

/// A processor feeding `exporter` that exports only on a full batch, a flush or shutdown
/// (the scheduled delay is out of reach), set up further by `settings`, and a tracer ending
/// spans into it.
fn started<E: SpanBatchExporter>(
    exporter: E,
    settings: impl FnOnce(BatchSpanProcessorBuilder<E>) -> BatchSpanProcessorBuilder<E>,
) -> (BatchSpanProcessor, Tracer) {
    let processor = settings(BatchSpanProcessor::builder(exporter).scheduled_delay(LONG))
        .build()
        .unwrap();
    let tracer = Tracer::builder()
        .service("checkout")
        .exporter(processor.clone())
        .clock(ManualClock::new())
        .build();
    (processor, tracer)
}

fn end_spans(tracer: &Tracer, names: std::ops::Range<u32>) {
    for n in names {
        tracer.span(format!("op-{n}")).start().end();
    }
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

fn expected(names: std::ops::Range<u32>) -> Vec<String> {
    names.map(|n| format!("op-{n}")).collect()
}

/// Records the size of every batch it receives.
#[derive(Clone, Debug, Default)]
struct BatchSizes {
    sizes: Arc<Mutex<Vec<usize>>>,
    spans: MemoryExporter,
}

impl SpanBatchExporter for BatchSizes {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.sizes.lock().push(batch.len());
        self.spans.export_batch(batch)
    }
}

#[test]
fn flush_delivers_every_queued_span_in_order_in_bounded_batches() {
    let exporter = BatchSizes::default();
    let (processor, tracer) = started(exporter.clone(), |b| b.max_batch_size(4));
    end_spans(&tracer, 0..10);
    processor.force_flush(LONG).unwrap();
    assert_eq!(names(&exporter.spans.spans()), expected(0..10));
    let sizes = exporter.sizes.lock().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (10, 10, 0));
}

/// A span recorded in a box an exported span came back in starts blank: no attribute, event,
/// link, status, trace state, parent or drop count of the box's earlier span shows.
#[test]
fn tracers_of_two_services_sharing_a_processor_each_stamp_their_own_name_on_reused_boxes() {
    let exporter = MemoryExporter::new();
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .max_batch_size(4)
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = |service: String| {
        Tracer::builder()
            .service(service)
            .exporter(processor.clone())
            .clock(ManualClock::new())
            .build()
    };
    let (cart, payments) = (tracer("cart".to_owned()), tracer("payments".to_owned()));
    // Boxes come back after each batch, so later spans of either tracer reuse boxes that the
    // other one filled.
    for n in 0..16 {
        let by = if n % 3 == 0 { &payments } else { &cart };
        by.span(format!("op-{n}")).start().end();
        if n % 4 == 3 {
            processor.force_flush(LONG).unwrap();
        }
    }
    let stamped: Vec<(String, String)> = exporter
        .take()
        .iter()
        .map(|span| (span.name.to_string(), span.service.to_string()))
        .collect();
    let wanted: Vec<(String, String)> = (0..16)
        .map(|n| {
            let service = if n % 3 == 0 { "payments" } else { "cart" };
            (format!("op-{n}"), service.to_owned())
        })
        .collect();
    assert_eq!(stamped, wanted);
}

#[test]
fn a_reused_box_carries_nothing_over_from_its_earlier_span() {
    use infra_trace_ctx::{
        KeyValue, Link, SpanContext, SpanId, SpanLimits, Status, TraceFlags, TraceId, TraceState,
    };

    let exporter = MemoryExporter::new();
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .max_batch_size(4)
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = Tracer::builder()
        .exporter(processor.clone())
        .span_limits(SpanLimits {
            max_attributes: 2,
            max_events: 1,
            max_links: 1,
            ..SpanLimits::default()
        })
        .clock(ManualClock::new())
        .build();
    let parent = SpanContext::remote(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED)
        .with_trace_state(TraceState::parse("congo=1").unwrap());
    let full = |n: u32| {
        let link = Link::new(parent.clone()).with_attributes([KeyValue::new("k", 1)]);
        let mut span = tracer
            .span(format!("full-{n}"))
            .parent(&parent)
            .link(link.clone())
            .link(link)
            .start();
        for key in ["a", "b", "c"] {
            span.set_attribute(key, format!("value of {key}"));
        }
        span.add_event("first");
        span.add_event("second");
        span.set_status(Status::Error("failed".into()));
        span.end();
    };
    // The first batch fills the processor's slots; the boxes of the second come back.
    for n in 0..8 {
        full(n);
        if n % 4 == 3 {
            processor.force_flush(LONG).unwrap();
        }
    }
    let full_spans = exporter.take();
    let full_span = &full_spans[7];
    assert_eq!(
        (
            full_span.attributes.len(),
            full_span.dropped_attributes_count,
            full_span.dropped_events_count,
            full_span.dropped_links_count
        ),
        (2, 1, 1, 1)
    );

    end_spans(&tracer, 0..4);
    processor.force_flush(LONG).unwrap();
    let blank = exporter.take();
    assert_eq!(names(&blank), expected(0..4));
    for span in &blank {
        assert!(span.attributes.is_empty(), "{span:?}");
        assert!(span.events.is_empty() && span.links.is_empty(), "{span:?}");
        assert_eq!(span.status, Status::Unset);
        assert!(span.context.trace_state().is_empty());
        assert_eq!((span.parent_span_id, span.parent_is_remote), (None, false));
        assert_eq!(
            (
                span.dropped_attributes_count,
                span.dropped_events_count,
                span.dropped_links_count
            ),
            (0, 0, 0)
        );
        assert_eq!(span.service, "unknown_service");
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let gate = Gate::default();
    let exporter = GatedExporter::new(&gate);
    let (processor, tracer) = started(exporter.clone(), |b| b.max_queue_size(4).max_batch_size(2));
    // The first full batch goes to the exporter, which holds it until the gate opens.
    end_spans(&tracer, 0..2);
    eventually(|| gate.waiting() == 1);
    end_spans(&tracer, 2..6); // fills the queue
    end_spans(&tracer, 6..9); // no room: dropped, and the caller did not wait
    let stats = processor.stats();
    assert_eq!(stats.queued, 6);
    assert_eq!(stats.dropped_queue_full, 3);
    gate.open();
    processor.force_flush(LONG).unwrap();
    assert_eq!(names(&exporter.spans.spans()), expected(0..6));
    assert_eq!(processor.stats().exported, 6);
}

#[test]
fn flush_times_out_while_the_exporter_is_stuck_and_keeps_the_spans() {
    let gate = Gate::default();
    let exporter = GatedExporter::new(&gate);
    let (processor, tracer) = started(exporter.clone(), |b| b.clock(SystemClock::new()));
    end_spans(&tracer, 0..3);
    // The exporter cannot return before the gate opens, whatever the machine's speed.
    assert_eq!(
        processor.force_flush(Duration::from_millis(20)),
        Err(ExportError::Timeout)
    );
    gate.open();
    processor.force_flush(LONG).unwrap();
    assert_eq!(names(&exporter.spans.spans()), expected(0..3));
}

#[test]
fn shutdown_delivers_what_was_queued_and_drops_later_spans() {
    let exporter = MemoryExporter::new();
    let (processor, tracer) = started(exporter.clone(), |b| b);
    end_spans(&tracer, 0..3);
    processor.shutdown(LONG).unwrap();
    assert_eq!(names(&exporter.spans()), expected(0..3));
    end_spans(&tracer, 3..5);
    processor.shutdown(LONG).unwrap();
    processor.force_flush(LONG).unwrap();
    assert_eq!(exporter.spans().len(), 3);
    let stats = processor.stats();
    assert_eq!(
        (stats.queued, stats.exported, stats.dropped_after_shutdown),
        (3, 3, 2)
    );
}

#[test]
fn dropping_the_last_handle_exports_what_was_queued() {
    let exporter = MemoryExporter::new();
    let (processor, tracer) = started(exporter.clone(), |b| b);
    end_spans(&tracer, 0..5);
    // The tracer holds the last handle.
    drop(processor);
    drop(tracer);
    assert_eq!(names(&exporter.spans()), expected(0..5));
}

#[derive(Debug)]
struct Refuses;

impl SpanBatchExporter for Refuses {
    fn export_batch(&mut self, _batch: &[SpanData]) -> Result<(), ExportError> {
        Err(ExportError::Rejected { status: 400 })
    }
}

#[test]
fn export_failures_are_counted_and_a_flush_completes_and_reports_them() {
    // The default batch and a long delay: the spans wait in the queue for the flush.
    let (processor, tracer) = started(Refuses, |b| b);
    end_spans(&tracer, 0..5);
    let refused = Some(Box::new(ExportError::Rejected { status: 400 }));
    assert_eq!(
        processor.force_flush(LONG),
        Err(ExportError::NotDelivered {
            spans: 5,
            last: refused.clone(),
        })
    );
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (5, 0, 5));
    // A flush reports the failures it waited for, not earlier ones.
    processor.force_flush(LONG).unwrap();
    end_spans(&tracer, 5..6);
    assert_eq!(
        processor.shutdown(LONG),
        Err(ExportError::NotDelivered {
            spans: 1,
            last: refused,
        })
    );
}

#[test]
fn the_scheduled_delay_exports_a_partial_batch_without_a_flush() {
    let exporter = MemoryExporter::new();
    let (processor, tracer) = started(exporter.clone(), |b| {
        b.scheduled_delay(Duration::from_millis(1))
    });
    end_spans(&tracer, 0..1);
    eventually(|| exporter.spans().len() == 1);
    assert_eq!(processor.stats().exported, 1);
}

/// A manual clock that counts its readings, so a test can tell that the worker has looked at
/// the time since the test moved it.
#[derive(Clone, Debug)]
struct WatchedClock {
    time: ManualClock,
    readings: Arc<AtomicU64>,
}

impl WatchedClock {
    fn new() -> Self {
        Self {
            time: ManualClock::new(),
            readings: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns once the clock has been read twice more: the second reading comes after
    /// whatever the reader decided on the first.
    fn await_two_readings(&self) {
        let before = self.readings.load(Ordering::SeqCst);
        eventually(|| self.readings.load(Ordering::SeqCst) >= before + 2);
    }
}

impl Clock for WatchedClock {
    fn now_nanos(&self) -> u64 {
        self.readings.fetch_add(1, Ordering::SeqCst);
        self.time.now_nanos()
    }

    fn wall_time(&self) -> std::time::SystemTime {
        self.time.wall_time()
    }
}

#[test]
fn the_scheduled_delay_is_measured_on_the_processors_clock() {
    let exporter = MemoryExporter::new();
    let clock = WatchedClock::new();
    let (_processor, tracer) = started(exporter.clone(), |b| b.clock(clock.clone()));
    end_spans(&tracer, 0..1);
    clock.await_two_readings(); // the worker is watching the clock
    clock.time.advance(LONG - Duration::from_nanos(1));
    clock.await_two_readings();
    assert!(exporter.spans().is_empty(), "exported before the delay");
    clock.time.advance(Duration::from_nanos(1));
    eventually(|| exporter.spans().len() == 1);
}

/// A test that ends a span and moves its manual clock past the delay sees the span
/// exported, whenever the worker happens to look: the delay runs from when the span was
/// queued, not from the worker's first sight of it (which a test cannot observe).
#[test]
fn a_span_is_exported_once_the_clock_passes_the_delay_after_it_was_queued() {
    let exporter = MemoryExporter::new();
    let clock = WatchedClock::new();
    let (_processor, tracer) = started(exporter.clone(), |b| b.clock(clock.clone()));
    end_spans(&tracer, 0..1);
    clock.time.advance(LONG);
    eventually(|| exporter.spans().len() == 1);
    // A later span waits a delay of its own, from its own queueing.
    end_spans(&tracer, 1..2);
    clock.time.advance(LONG - Duration::from_nanos(1));
    clock.await_two_readings();
    assert_eq!(exporter.spans().len(), 1, "exported before its delay");
    clock.time.advance(Duration::from_nanos(1));
    eventually(|| exporter.spans().len() == 2);
}

#[test]
fn sizes_are_checked_when_building() {
    for (queue, batch) in [(0, 1), (4, 0), (4, 5)] {
        let built = BatchSpanProcessor::builder(MemoryExporter::new())
            .max_queue_size(queue)
            .max_batch_size(batch)
            .build();
        assert!(
            matches!(built, Err(ExportError::InvalidConfig { .. })),
            "queue {queue}, batch {batch}"
        );
    }
    assert_eq!(
        BatchSpanProcessor::builder(MemoryExporter::new())
            .build()
            .unwrap()
            .stats(),
        BatchStats::default()
    );
}

/// The sizes are limits, not allocations: a processor allowed a huge queue and batch takes
/// memory for the spans it is given, and exports them as any other does.
#[test]
fn huge_queue_and_batch_sizes_cost_only_the_spans_queued() {
    for size in [usize::MAX, 1 << 40] {
        let exporter = MemoryExporter::new();
        let (processor, tracer) = started(exporter.clone(), |builder| {
            builder.max_queue_size(size).max_batch_size(size)
        });
        end_spans(&tracer, 0..3);
        processor.force_flush(LONG).unwrap();
        assert_eq!(names(&exporter.spans()), expected(0..3), "size {size}");
        assert_eq!(processor.stats().exported, 3);
    }
}

/// The idle worker looks for spans once per delay at most: a delay of nanoseconds would have
/// it spin on a core while nothing is traced, and zero hand each span over on its own.
#[test]
fn a_scheduled_delay_under_a_millisecond_is_refused() {
    for delay in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(999),
    ] {
        let result = BatchSpanProcessor::builder(MemoryExporter::new())
            .scheduled_delay(delay)
            .build();
        match result {
            Err(ExportError::InvalidConfig { setting, .. }) => {
                assert_eq!(setting, "scheduled_delay");
            }
            other => panic!("{delay:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(
        BatchSpanProcessor::builder(MemoryExporter::new())
            .scheduled_delay(Duration::from_millis(1))
            .build()
            .is_ok()
    );
}

/// Panics on a batch holding a span named `panic`, refuses one holding `refuse`, and keeps
/// every other batch.
#[derive(Clone, Debug, Default)]
struct Moody {
    spans: MemoryExporter,
}

impl SpanBatchExporter for Moody {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        if batch.iter().any(|span| span.name == "panic") {
            panic!("the exporter broke on purpose");
        }
        if batch.iter().any(|span| span.name == "refuse") {
            return Err(ExportError::Rejected { status: 400 });
        }
        self.spans.export_batch(batch)
    }
}

/// Ends spans named `names`, each flushed on its own, so each is a batch of its own; what each
/// flush returned.
fn end_and_flush_each(
    processor: &BatchSpanProcessor,
    tracer: &Tracer,
    names: &[&'static str],
) -> Vec<Result<(), ExportError>> {
    names
        .iter()
        .map(|name| {
            tracer.span(*name).start().end();
            processor.force_flush(LONG)
        })
        .collect()
}

#[test]
fn a_panicking_exporter_fails_its_batch_and_export_goes_on() {
    let exporter = Moody::default();
    let (processor, tracer) = started(exporter.clone(), |b| b);
    let flushes = end_and_flush_each(
        &processor,
        &tracer,
        &["before", "panic", "after", "panic", "last"],
    );
    let panicked = Err(ExportError::NotDelivered {
        spans: 1,
        last: None,
    });
    assert_eq!(
        flushes,
        [Ok(()), panicked.clone(), Ok(()), panicked, Ok(())]
    );
    assert_eq!(names(&exporter.spans.spans()), ["before", "after", "last"]);
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (5, 3, 2));
    // The background thread is still there to deliver on shutdown.
    tracer.span("at shutdown").start().end();
    processor.shutdown(LONG).unwrap();
    assert_eq!(exporter.spans.spans().len(), 4);
}

#[cfg(feature = "metrics")]
#[test]
fn counters_follow_the_stats_with_a_reason_for_each_drop_and_failure() {
    use infra_testkit::metrics::{counters, value};
    use infra_trace_ctx::metrics::{
        BATCH_DROPPED_TOTAL, BATCH_EXPORTED_TOTAL, BATCH_FAILED_TOTAL, BATCH_QUEUED_TOTAL,
        PROCESSOR_LABEL, REASON_LABEL,
    };
    use metrics_util::debugging::DebuggingRecorder;

    let recorder = DebuggingRecorder::new();
    let gate = Gate::default();
    gate.open();
    let exporter = GatedExporter::new(&gate);
    let moody = Moody::default();
    let ((gated, gated_tracer), (failing, failing_tracer)) =
        metrics::with_local_recorder(&recorder, || {
            (
                started(exporter.clone(), |b| {
                    b.max_queue_size(2).max_batch_size(1).metrics_name("gated")
                }),
                // Left at the default name.
                started(moody, |b| b),
            )
        });
    // One span exported, then one held at the gate, two queued behind it, one dropped.
    end_spans(&gated_tracer, 0..1);
    gated.force_flush(LONG).unwrap();
    gate.close();
    end_spans(&gated_tracer, 1..2);
    eventually(|| gate.waiting() == 1);
    end_spans(&gated_tracer, 2..5);
    gate.open();
    gated.shutdown(LONG).unwrap();
    end_spans(&gated_tracer, 5..7);
    let flushes = end_and_flush_each(
        &failing,
        &failing_tracer,
        &["refuse", "panic", "panic", "ok"],
    );
    assert_eq!(flushes.iter().filter(|flush| flush.is_err()).count(), 3);

    let series = counters(&recorder.snapshotter());
    let count = |name, labels: &[(&str, &str)]| value(&series, name, labels).unwrap_or(0);
    let gated_stats = gated.stats();
    assert_eq!((gated_stats.queued, gated_stats.dropped_queue_full), (4, 1));
    assert_eq!(gated_stats.dropped_after_shutdown, 2);
    for (processor, stats) in [("gated", gated_stats), ("batch", failing.stats())] {
        let labels = [(PROCESSOR_LABEL, processor)];
        let reason = |reason| [(PROCESSOR_LABEL, processor), (REASON_LABEL, reason)];
        assert_eq!(count(BATCH_QUEUED_TOTAL, &labels), stats.queued);
        assert_eq!(count(BATCH_EXPORTED_TOTAL, &labels), stats.exported);
        assert_eq!(
            count(BATCH_DROPPED_TOTAL, &reason("queue_full")),
            stats.dropped_queue_full
        );
        assert_eq!(
            count(BATCH_DROPPED_TOTAL, &reason("after_shutdown")),
            stats.dropped_after_shutdown
        );
        assert_eq!(
            count(BATCH_FAILED_TOTAL, &reason("error"))
                + count(BATCH_FAILED_TOTAL, &reason("panic")),
            stats.failed
        );
    }
    let failed = |reason| {
        count(
            BATCH_FAILED_TOTAL,
            &[(PROCESSOR_LABEL, "batch"), (REASON_LABEL, reason)],
        )
    };
    assert_eq!((failed("error"), failed("panic")), (1, 2));
    assert_eq!(
        count(BATCH_EXPORTED_TOTAL, &[(PROCESSOR_LABEL, "batch")]),
        1
    );
}

mod model {
    //! Random sequences of ended spans, flushes, a stalled exporter and shutdown, against a
    //! model of a bounded queue in front of one exporter.

    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// A span ends.
        End,
        /// The exporter is let through, everything is flushed, and it stalls again.
        Flush,
        /// Shutdown, with the exporter let through; later spans are dropped.
        Shutdown,
    }

    #[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![8 => Just(Op::End), 2 => Just(Op::Flush), 1 => Just(Op::Shutdown)]
    }

    /// What the processor must have done: spans are numbered in the order they end.
    #[derive(Debug, Default)]
    struct Model {
        queue: VecDeque<u32>,
        /// The batch the exporter has taken and is stuck on.
        held: Option<Vec<u32>>,
        exported: Vec<u32>,
        queued: u64,
        dropped_full: u64,
        dropped_after_shutdown: u64,
        shut_down: bool,
    }

    impl Model {
        /// Returns whether the exporter takes a batch because of this span.
        fn end(&mut self, span: u32, capacity: usize, batch: usize) -> bool {
            if self.shut_down {
                self.dropped_after_shutdown += 1;
                return false;
            }
            if self.queue.len() == capacity {
                self.dropped_full += 1;
                return false;
            }
            self.queue.push_back(span);
            self.queued += 1;
            if self.held.is_none() && self.queue.len() == batch {
                self.held = Some(self.queue.drain(..).collect());
                return true;
            }
            false
        }

        fn deliver_all(&mut self) {
            self.exported.extend(self.held.take().unwrap_or_default());
            self.exported.extend(self.queue.drain(..));
        }
    }

    fn span_name(n: u32) -> String {
        format!("op-{n}")
    }

    proptest! {
        #[test]
        fn flush_and_shutdown_deliver_everything_queued_once(
            (capacity, batch) in (1usize..6).prop_flat_map(|queue| (Just(queue), 1..=queue)),
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let gate = Gate::default();
            let exporter = GatedExporter::new(&gate);
            let (processor, tracer) = started(exporter.clone(), |b| {
                b.max_queue_size(capacity).max_batch_size(batch)
            });
            // Dropped before the processor, so a failing case does not stall its shutdown.
            let _release = Release(gate.clone());
            let mut model = Model::default();
            let mut next = 0;
            for op in ops {
                match op {
                    Op::End => {
                        tracer.span(span_name(next)).start().end();
                        if model.end(next, capacity, batch) {
                            // The exporter holds the batch before anything else happens, as
                            // the model says.
                            eventually(|| gate.waiting() == 1);
                        }
                        next += 1;
                    }
                    Op::Flush => {
                        gate.open();
                        processor.force_flush(LONG).unwrap();
                        gate.close();
                        model.deliver_all();
                    }
                    Op::Shutdown => {
                        gate.open();
                        processor.shutdown(LONG).unwrap();
                        model.deliver_all();
                        model.shut_down = true;
                    }
                }
                let stats = processor.stats();
                prop_assert_eq!(stats.queued, model.queued);
                prop_assert_eq!(stats.dropped_queue_full, model.dropped_full);
                prop_assert_eq!(stats.dropped_after_shutdown, model.dropped_after_shutdown);
                // Between flushes the exporter returns nothing, so what it delivered is
                // exactly what the model delivered by the last flush: none missing, none twice.
                let delivered = names(&exporter.spans.spans());
                let expected: Vec<String> = model.exported.iter().map(|&n| span_name(n)).collect();
                prop_assert_eq!(&delivered, &expected);
                prop_assert_eq!(stats.exported, expected.len() as u64);
            }
        }
    }

    /// Opens the gate when dropped.
    struct Release(Gate);

    impl Drop for Release {
        fn drop(&mut self) {
            self.0.open();
        }
    }
}

/// `shutdown`'s docs: "Later calls return at once"; the README: once a shutdown's deadline
/// has passed, "nobody waits for" the queued spans. After a shutdown that timed out, a
/// second call (as the drop of the last handle makes, with `drop_timeout`, 30 s by default)
/// returns `Timeout` at once instead of waiting out its own timeout for an exporter that is
/// stuck; on the manual clock here, which nobody advances, such a wait would never end.
#[test]
fn a_shutdown_after_one_that_timed_out_returns_at_once() {
    let gate = Gate::default();
    let (processor, tracer) = started(GatedExporter::new(&gate), |b| b.clock(ManualClock::new()));
    end_spans(&tracer, 0..1);
    let _ = processor.force_flush(Duration::ZERO);
    eventually(|| gate.waiting() == 1);
    assert_eq!(
        processor.shutdown(Duration::ZERO),
        Err(ExportError::Timeout)
    );

    let returned: Arc<Mutex<Option<Result<(), ExportError>>>> = Arc::default();
    let caller = {
        let (processor, returned) = (processor.clone(), Arc::clone(&returned));
        infra_common::sync::thread::spawn(move || {
            *returned.lock() = Some(processor.shutdown(Duration::from_secs(1)));
        })
    };
    // Generous for a call that should not wait at all; waited out only when it does.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while returned.lock().is_none() && std::time::Instant::now() < deadline {
        infra_common::sync::thread::yield_now();
    }
    let result = returned.lock().take();
    gate.open();
    caller.join().unwrap();
    assert_eq!(
        result,
        Some(Err(ExportError::Timeout)),
        "the second shutdown was still waiting after 5 s, or did not report the timeout"
    );
}
