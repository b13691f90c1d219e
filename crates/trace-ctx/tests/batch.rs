//! The batch processor: what it queues, drops, flushes and delivers on shutdown.

mod support;

use std::time::Duration;

use infra_common::sync::{Arc, Mutex};
use infra_common::{ManualClock, SystemClock};
use infra_trace_ctx::{
    BatchSpanProcessor, BatchStats, ExportError, MemoryExporter, SpanBatchExporter, SpanData,
    Tracer,
};
use support::{Gate, GatedExporter, eventually};

const LONG: Duration = Duration::from_secs(60);

fn tracer(processor: &BatchSpanProcessor) -> Tracer {
    Tracer::builder()
        .service("checkout")
        .exporter(processor.clone())
        .clock(ManualClock::new())
        .build()
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
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .max_batch_size(4)
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = tracer(&processor);
    end_spans(&tracer, 0..10);
    processor.force_flush(LONG).unwrap();
    assert_eq!(names(&exporter.spans.spans()), expected(0..10));
    let sizes = exporter.sizes.lock().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (10, 10, 0));
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let gate = Gate::default();
    let exporter = GatedExporter::new(&gate);
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .max_queue_size(4)
        .max_batch_size(2)
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = tracer(&processor);
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
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .scheduled_delay(LONG)
        .clock(SystemClock::new())
        .build()
        .unwrap();
    let tracer = tracer(&processor);
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
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = tracer(&processor);
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
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = tracer(&processor);
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
fn export_failures_are_counted_and_flush_still_completes() {
    let processor = BatchSpanProcessor::builder(Refuses)
        .max_batch_size(2)
        .scheduled_delay(LONG)
        .build()
        .unwrap();
    let tracer = tracer(&processor);
    end_spans(&tracer, 0..5);
    processor.force_flush(LONG).unwrap();
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (5, 0, 5));
}

#[test]
fn the_scheduled_delay_exports_a_partial_batch_without_a_flush() {
    let exporter = MemoryExporter::new();
    let processor = BatchSpanProcessor::builder(exporter.clone())
        .scheduled_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    let tracer = tracer(&processor);
    end_spans(&tracer, 0..1);
    eventually(|| exporter.spans().len() == 1);
    assert_eq!(processor.stats().exported, 1);
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

/// A zero delay would make the worker's wait for a batch return at once, spinning it while
/// idle.
#[test]
fn a_zero_scheduled_delay_is_refused() {
    let result = BatchSpanProcessor::builder(MemoryExporter::new())
        .scheduled_delay(Duration::ZERO)
        .build();
    match result {
        Err(ExportError::InvalidConfig { setting, .. }) => assert_eq!(setting, "scheduled_delay"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    assert!(
        BatchSpanProcessor::builder(MemoryExporter::new())
            .scheduled_delay(Duration::from_nanos(1))
            .build()
            .is_ok()
    );
}
