//! What the tracer does, reported through the [`metrics`] facade (feature `metrics`), so any
//! exporter (Prometheus, StatsD, OpenTelemetry) can serve it.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`SPANS_STARTED_TOTAL`] | counter | `tracer`, `decision` | every span started: `decision` is `sampled` (recorded) or `dropped` (the sampler said no; nothing is recorded) |
//! | [`SPANS_EXPORTED_TOTAL`] | counter | `tracer` | recorded spans handed to the exporter when they end |
//! | [`EXPORT_FAILURES_TOTAL`] | counter | `exporter` | spans an exporter could not deliver: [`JsonLinesExporter`](crate::JsonLinesExporter) write errors, as `exporter="json_lines"`; `OtlpExporter`'s failed batches, and the spans a receiver rejected from a batch it accepted, as `exporter="otlp"` |
//! | [`BATCH_QUEUED_TOTAL`] | counter | `processor` | spans a [`BatchSpanProcessor`](crate::BatchSpanProcessor) accepted into its queue |
//! | [`BATCH_DROPPED_TOTAL`] | counter | `processor`, `reason` | spans it dropped: `reason` is `queue_full` or `after_shutdown` |
//! | [`BATCH_EXPORTED_TOTAL`] | counter | `processor` | spans in batches its exporter accepted |
//! | [`BATCH_FAILED_TOTAL`] | counter | `processor`, `reason` | spans in batches its exporter failed: `reason` is `error` (it returned one) or `panic` |
//!
//! The batch counters follow [`BatchStats`](crate::BatchStats) one for one; `processor` is
//! the name given with `BatchSpanProcessorBuilder::metrics_name`, by default `batch`.
//!
//! `tracer` is the name given with
//! [`TracerBuilder::metrics_name`](crate::TracerBuilder::metrics_name), by default the
//! tracer's service name. Trace ids, span ids and span names never become labels: a series per
//! trace would grow without bound.
//!
//! Counters are registered once, when the tracer (or exporter) is built, and kept as handles:
//! a span costs one increment at start and one at end through the recorder, with no name
//! lookup. The recorder must therefore be installed **before** the tracer is built; one built
//! earlier reports to nothing. Without the feature none of this is compiled: no field, no
//! call, no branch.
//!
//! ```
//! use infra_trace_ctx::Tracer;
//!
//! // Install the exporter's recorder first, then build the tracer.
//! let tracer = Tracer::builder().service("cart").build();
//! tracer.span("GET /cart").start().end();
//! // infra_trace_ctx_spans_started_total{tracer="cart",decision="sampled"} 1
//! // infra_trace_ctx_spans_exported_total{tracer="cart"} 1
//! ```

use metrics::{Counter, SharedString, Unit, counter, describe_counter};

/// Counter of spans started, labelled `tracer` and `decision`.
pub const SPANS_STARTED_TOTAL: &str = "infra_trace_ctx_spans_started_total";
/// Counter of recorded spans handed to the exporter, labelled `tracer`.
pub const SPANS_EXPORTED_TOTAL: &str = "infra_trace_ctx_spans_exported_total";
/// Counter of spans an exporter could not deliver, labelled `exporter`.
pub const EXPORT_FAILURES_TOTAL: &str = "infra_trace_ctx_export_failures_total";
/// Counter of spans a batch processor queued, labelled `processor`.
pub const BATCH_QUEUED_TOTAL: &str = "infra_trace_ctx_batch_queued_total";
/// Counter of spans a batch processor dropped, labelled `processor` and `reason`.
pub const BATCH_DROPPED_TOTAL: &str = "infra_trace_ctx_batch_dropped_total";
/// Counter of spans in batches the exporter accepted, labelled `processor`.
pub const BATCH_EXPORTED_TOTAL: &str = "infra_trace_ctx_batch_exported_total";
/// Counter of spans in batches the exporter failed, labelled `processor` and `reason`.
pub const BATCH_FAILED_TOTAL: &str = "infra_trace_ctx_batch_failed_total";
/// The label naming the batch processor.
pub const PROCESSOR_LABEL: &str = "processor";
/// The label saying why spans were dropped or failed.
pub const REASON_LABEL: &str = "reason";
/// The label naming the tracer.
pub const TRACER_LABEL: &str = "tracer";
/// The label naming the sampling decision.
pub const DECISION_LABEL: &str = "decision";
/// The label naming the exporter.
pub const EXPORTER_LABEL: &str = "exporter";

fn describe() {
    describe_counter!(
        SPANS_STARTED_TOTAL,
        Unit::Count,
        "Spans started, by tracer and sampling decision (sampled, dropped)."
    );
    describe_counter!(
        SPANS_EXPORTED_TOTAL,
        Unit::Count,
        "Recorded spans handed to the exporter when they ended, by tracer."
    );
    describe_counter!(
        EXPORT_FAILURES_TOTAL,
        Unit::Count,
        "Spans an exporter could not deliver, by exporter."
    );
    describe_counter!(
        BATCH_QUEUED_TOTAL,
        Unit::Count,
        "Spans a batch processor accepted into its queue, by processor."
    );
    describe_counter!(
        BATCH_DROPPED_TOTAL,
        Unit::Count,
        "Spans a batch processor dropped, by processor and reason (queue_full, after_shutdown)."
    );
    describe_counter!(
        BATCH_EXPORTED_TOTAL,
        Unit::Count,
        "Spans in batches the exporter accepted, by processor."
    );
    describe_counter!(
        BATCH_FAILED_TOTAL,
        Unit::Count,
        "Spans in batches the exporter failed, by processor and reason (error, panic)."
    );
}

/// A tracer's handles.
#[derive(Debug)]
pub(crate) struct TracerCounters {
    sampled: Counter,
    dropped: Counter,
    exported: Counter,
}

impl TracerCounters {
    /// Handles that report nothing: the builder's placeholder until the tracer is built.
    pub(crate) const fn noop() -> Self {
        Self {
            sampled: Counter::noop(),
            dropped: Counter::noop(),
            exported: Counter::noop(),
        }
    }

    pub(crate) fn new(tracer: SharedString) -> Self {
        describe();
        let started = |decision: &'static str| counter!(SPANS_STARTED_TOTAL, TRACER_LABEL => tracer.clone(), DECISION_LABEL => decision);
        Self {
            sampled: started("sampled"),
            dropped: started("dropped"),
            exported: counter!(SPANS_EXPORTED_TOTAL, TRACER_LABEL => tracer),
        }
    }

    #[inline]
    pub(crate) fn started(&self, sampled: bool) {
        if sampled {
            self.sampled.increment(1);
        } else {
            self.dropped.increment(1);
        }
    }

    #[inline]
    pub(crate) fn exported(&self) {
        self.exported.increment(1);
    }
}

/// A batch processor's handles.
#[derive(Debug)]
pub(crate) struct BatchCounters {
    pub(crate) queued: Counter,
    pub(crate) dropped_queue_full: Counter,
    pub(crate) dropped_after_shutdown: Counter,
    exported: Counter,
    failed_error: Counter,
    failed_panic: Counter,
}

impl BatchCounters {
    pub(crate) fn new(processor: SharedString) -> Self {
        describe();
        let dropped = |reason: &'static str| counter!(BATCH_DROPPED_TOTAL, PROCESSOR_LABEL => processor.clone(), REASON_LABEL => reason);
        let failed = |reason: &'static str| counter!(BATCH_FAILED_TOTAL, PROCESSOR_LABEL => processor.clone(), REASON_LABEL => reason);
        Self {
            queued: counter!(BATCH_QUEUED_TOTAL, PROCESSOR_LABEL => processor.clone()),
            dropped_queue_full: dropped("queue_full"),
            dropped_after_shutdown: dropped("after_shutdown"),
            failed_error: failed("error"),
            failed_panic: failed("panic"),
            exported: counter!(BATCH_EXPORTED_TOTAL, PROCESSOR_LABEL => processor),
        }
    }

    /// Counts a batch of `spans` the exporter returned from, `failed` of them not delivered
    /// (by a panic if `panicked`, else by an error or a partial rejection).
    pub(crate) fn handed(&self, spans: u64, failed: u64, panicked: bool) {
        let failures = if panicked {
            &self.failed_panic
        } else {
            &self.failed_error
        };
        failures.increment(failed);
        self.exported.increment(spans - failed);
    }
}

/// The failure handle of an exporter named `exporter`.
pub(crate) fn export_failures(exporter: &'static str) -> Counter {
    describe();
    counter!(EXPORT_FAILURES_TOTAL, EXPORTER_LABEL => exporter)
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::io;

    use infra_testkit::metrics::{Series, counters, value};
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::{AlwaysOff, JsonLinesExporter, MemoryExporter, Tracer};

    fn started(series: &[Series], tracer: &str, decision: &str) -> Option<u64> {
        value(
            series,
            SPANS_STARTED_TOTAL,
            &[(TRACER_LABEL, tracer), (DECISION_LABEL, decision)],
        )
    }

    #[test]
    fn sampled_and_dropped_spans_are_counted_and_only_sampled_ones_exported() {
        let recorder = DebuggingRecorder::new();
        let exporter = MemoryExporter::new();
        let (sampling, silent) = metrics::with_local_recorder(&recorder, || {
            (
                Tracer::builder()
                    .service("cart")
                    .exporter(exporter.clone())
                    .build(),
                Tracer::builder()
                    .service("cart")
                    .metrics_name("cart-quiet")
                    .sampler(AlwaysOff)
                    .exporter(exporter.clone())
                    .build(),
            )
        });
        sampling.span("recorded").start().end();
        silent.span("dropped").start().end();
        let series = counters(&recorder.snapshotter());
        assert_eq!(started(&series, "cart", "sampled"), Some(1));
        assert_eq!(started(&series, "cart", "dropped"), Some(0));
        assert_eq!(started(&series, "cart-quiet", "sampled"), Some(0));
        assert_eq!(started(&series, "cart-quiet", "dropped"), Some(1));
        let exported = |tracer| value(&series, SPANS_EXPORTED_TOTAL, &[(TRACER_LABEL, tracer)]);
        assert_eq!(exported("cart"), Some(1));
        assert_eq!(exported("cart-quiet"), Some(0));
        assert_eq!(exporter.spans().len(), 1);
        // Two tracers, three series each: the builder's placeholder registers nothing.
        assert_eq!(series.len(), 6);
    }

    #[test]
    fn dropping_a_span_counts_its_export_like_ending_it() {
        let recorder = DebuggingRecorder::new();
        let tracer = metrics::with_local_recorder(&recorder, || {
            Tracer::builder().metrics_name("worker").build()
        });
        let outer = tracer.span("outer").start();
        {
            let _inner = tracer.span("inner").start();
        }
        drop(outer);
        let series = counters(&recorder.snapshotter());
        assert_eq!(started(&series, "worker", "sampled"), Some(2));
        assert_eq!(
            value(&series, SPANS_EXPORTED_TOTAL, &[(TRACER_LABEL, "worker")]),
            Some(2)
        );
    }

    /// A writer whose every write fails, as a full disk or a closed pipe would.
    struct BrokenPipe;

    impl io::Write for BrokenPipe {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_write_errors_are_export_failures() {
        let recorder = DebuggingRecorder::new();
        let (tracer, exporter) = metrics::with_local_recorder(&recorder, || {
            let exporter = JsonLinesExporter::new(BrokenPipe);
            let tracer = Tracer::builder()
                .service("billing")
                .exporter(exporter.clone())
                .build();
            (tracer, exporter)
        });
        tracer.span("charge").start().end();
        tracer.span("refund").start().end();
        assert_eq!(exporter.write_errors(), 2);
        let series = counters(&recorder.snapshotter());
        assert_eq!(
            value(
                &series,
                EXPORT_FAILURES_TOTAL,
                &[(EXPORTER_LABEL, "json_lines")]
            ),
            Some(2)
        );
        // Exported means handed to the exporter, whatever became of it.
        assert_eq!(
            value(&series, SPANS_EXPORTED_TOTAL, &[(TRACER_LABEL, "billing")]),
            Some(2)
        );
    }

    #[test]
    fn every_metric_is_described_as_a_count() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            drop(TracerCounters::new(SharedString::const_str("t")));
            drop(export_failures("e"));
            drop(BatchCounters::new(SharedString::const_str("b")));
        });
        let described = recorder.snapshotter().snapshot().into_vec();
        // One series per handle: a tracer's three, the exporter's one, a processor's six.
        assert_eq!(described.len(), 10);
        for (_, unit, description, _) in described {
            assert_eq!(unit, Some(Unit::Count));
            assert!(description.is_some_and(|d| !d.is_empty()));
        }
    }
}
