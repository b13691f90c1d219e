//! Model-checks the rate-limited sampler's shared atomic budget: concurrent decisions never
//! hand out more traces than the budget, and never lose one that was available.
#![cfg(infra_loom)]

use infra_common::ManualClock;
use infra_common::sync::{Arc, model, thread};
use infra_trace_ctx::RateLimited;

#[test]
fn concurrent_decisions_share_a_budget_of_one() {
    model(|| {
        let sampler = Arc::new(RateLimited::with_clock(1, ManualClock::new()));
        let other = Arc::clone(&sampler);
        let worker = thread::spawn(move || other.try_acquire());
        let here = sampler.try_acquire();
        let there = worker.join().expect("worker finished");
        assert!(
            here ^ there,
            "exactly one of two decisions gets the single trace"
        );
        assert!(!sampler.try_acquire());
    });
}

#[test]
fn concurrent_decisions_use_a_budget_of_two_fully() {
    model(|| {
        let sampler = Arc::new(RateLimited::with_clock(2, ManualClock::new()));
        let other = Arc::clone(&sampler);
        let worker = thread::spawn(move || other.try_acquire());
        let here = sampler.try_acquire();
        let there = worker.join().expect("worker finished");
        assert!(here && there, "a budget of two serves both");
        assert!(!sampler.try_acquire(), "and nothing more");
    });
}

#[test]
fn refill_races_with_decisions() {
    model(|| {
        let clock = ManualClock::new();
        let sampler = Arc::new(RateLimited::with_clock(1, clock.clone()));
        assert!(sampler.try_acquire());
        let other = Arc::clone(&sampler);
        let worker = thread::spawn(move || other.try_acquire());
        clock.advance(std::time::Duration::from_secs(1));
        let here = sampler.try_acquire();
        let there = worker.join().expect("worker finished");
        // The worker decides before the refill (and gets nothing) or after it (and takes
        // the one new trace); this thread always sees the refill. Either way, exactly one.
        assert!(here ^ there);
    });
}

/// Two threads each end a span and flush; each flush must find its own span delivered, even
/// when the worker has taken the batch but not yet returned from the exporter.
#[test]
fn flush_returns_only_after_spans_queued_before_it_are_exported() {
    use infra_trace_ctx::{BatchSpanProcessor, MemoryExporter, Tracer};
    use std::time::Duration;

    model(|| {
        let received = MemoryExporter::new();
        let processor = BatchSpanProcessor::builder(received.clone())
            .max_batch_size(2)
            .clock(ManualClock::new())
            .build()
            .expect("valid sizes");
        let tracer = Tracer::builder()
            .exporter(processor.clone())
            .clock(ManualClock::new())
            .build();
        let end_and_flush = {
            let (tracer, processor, received) =
                (tracer.clone(), processor.clone(), received.clone());
            move |name: &'static str| {
                tracer.span(name).start().end();
                processor
                    .force_flush(Duration::from_secs(1))
                    .expect("loom never times out");
                assert!(
                    received.spans().iter().any(|span| span.name == name),
                    "flush returned before {name} was exported"
                );
            }
        };
        let other = {
            let end_and_flush = end_and_flush.clone();
            thread::spawn(move || end_and_flush("there"))
        };
        end_and_flush("here");
        other.join().expect("other thread finished");
        drop(tracer);
        processor
            .shutdown(Duration::from_secs(1))
            .expect("loom never times out");
    });
}

/// An exporter that, like the OTLP one between attempts, waits on the shutdown signal.
#[derive(Debug, Default)]
struct WaitsToRetry {
    signal: Option<infra_trace_ctx::ShutdownSignal>,
}

impl infra_trace_ctx::SpanBatchExporter for WaitsToRetry {
    fn export_batch(
        &mut self,
        _batch: &[infra_trace_ctx::SpanData],
    ) -> Result<(), infra_trace_ctx::ExportError> {
        let signal = self
            .signal
            .as_ref()
            .expect("given before the thread starts");
        // Loom does not model time: this returns only once the signal is raised.
        assert!(signal.wait_timeout(std::time::Duration::from_secs(3600)));
        Err(infra_trace_ctx::ExportError::Abandoned)
    }

    fn watch_shutdown(&mut self, signal: infra_trace_ctx::ShutdownSignal) {
        self.signal = Some(signal);
    }
}

/// A shutdown whose deadline passes while the exporter waits to retry raises the signal in
/// every interleaving, so the waiting exporter returns and the background thread ends (loom
/// reports a deadlock otherwise): dropping the processor joins it.
#[test]
fn a_passed_shutdown_deadline_releases_an_exporter_waiting_to_retry() {
    use infra_trace_ctx::{BatchSpanProcessor, ExportError, Tracer};
    use std::time::Duration;

    model(|| {
        let processor = BatchSpanProcessor::builder(WaitsToRetry::default())
            .max_batch_size(1)
            .clock(ManualClock::new())
            .build()
            .expect("valid sizes");
        let tracer = Tracer::builder()
            .exporter(processor.clone())
            .clock(ManualClock::new())
            .build();
        tracer.span("stuck").start().end();
        assert_eq!(
            processor.shutdown(Duration::ZERO),
            Err(ExportError::Timeout)
        );
        drop(tracer);
        drop(processor);
    });
}

/// Spans ending while the worker hands an exported batch's boxes back (a span start only
/// tries the spares' lock, never waits for it) each get a box of their own: every span is
/// delivered once, under its own name, with nothing of the span its box held before.
#[test]
fn spans_recorded_while_boxes_come_back_are_delivered_once_and_blank() {
    use infra_trace_ctx::{BatchSpanProcessor, MemoryExporter, Tracer};
    use std::time::Duration;

    model(|| {
        let received = MemoryExporter::new();
        let processor = BatchSpanProcessor::builder(received.clone())
            .max_batch_size(1)
            .clock(ManualClock::new())
            .build()
            .expect("valid sizes");
        let tracer = Tracer::builder()
            .exporter(processor.clone())
            .clock(ManualClock::new())
            .build();
        let record = |tracer: &Tracer, name: &'static str| {
            let mut span = tracer.span(name).start();
            span.set_attribute(name, 1);
            span.end();
        };
        // The first batch's box fills the worker's slot; the second's comes back cleared.
        for name in ["first", "second"] {
            record(&tracer, name);
            processor
                .force_flush(Duration::from_secs(1))
                .expect("loom never times out");
        }
        let other = {
            let tracer = tracer.clone();
            thread::spawn(move || record(&tracer, "there"))
        };
        record(&tracer, "here");
        other.join().expect("other thread finished");
        processor
            .shutdown(Duration::from_secs(1))
            .expect("loom never times out");
        let mut names = Vec::new();
        for span in received.spans() {
            assert_eq!(span.attributes.len(), 1, "{span:?}");
            assert_eq!(span.attributes[0].key, span.name);
            names.push(span.name.into_owned());
        }
        names.sort_unstable();
        assert_eq!(names, ["first", "here", "second", "there"]);
    });
}

/// An exporter that, while it exports the first batch, ends two spans (a full batch) through
/// the tracer in `tracer`, then fails every later batch.
#[derive(Debug)]
struct EndsTwoThenFails {
    tracer: Arc<infra_common::sync::Mutex<Option<infra_trace_ctx::Tracer>>>,
}

impl infra_trace_ctx::SpanBatchExporter for EndsTwoThenFails {
    fn export_batch(
        &mut self,
        _batch: &[infra_trace_ctx::SpanData],
    ) -> Result<(), infra_trace_ctx::ExportError> {
        // Taken, so the worker holds no handle of its own processor once this returns.
        let Some(tracer) = self.tracer.lock().take() else {
            return Err(infra_trace_ctx::ExportError::Rejected { status: 400 });
        };
        tracer.span("after 1").start().end();
        tracer.span("after 2").start().end();
        Ok(())
    }
}

/// A flush reports only the failures of spans queued before it: the two spans ended while it
/// waits, and failed by the exporter right after the flush's own span was delivered, are not
/// its failures, however late the flushing thread wakes.
#[test]
fn a_flush_does_not_report_failures_of_spans_ended_after_it() {
    use infra_trace_ctx::{BatchSpanProcessor, ExportError, Tracer};
    use std::time::Duration;

    model(|| {
        let cell = Arc::new(infra_common::sync::Mutex::new(None));
        // A batch of two and a delay the manual clock never reaches: the first span leaves
        // only for the flush, the two the exporter ends leave at once as a full batch.
        let processor = BatchSpanProcessor::builder(EndsTwoThenFails {
            tracer: cell.clone(),
        })
        .max_batch_size(2)
        .clock(ManualClock::new())
        .build()
        .expect("valid sizes");
        let tracer = Tracer::builder()
            .exporter(processor.clone())
            .clock(ManualClock::new())
            .build();
        *cell.lock() = Some(tracer.clone());
        tracer.span("before").start().end();
        assert_eq!(processor.force_flush(Duration::from_secs(1)), Ok(()));
        drop(tracer);
        // The later batch was queued before this call: its failure is this call's to report
        // if the exporter returned from it meanwhile.
        let shutdown = processor.shutdown(Duration::from_secs(1));
        assert!(
            matches!(
                shutdown,
                Ok(()) | Err(ExportError::NotDelivered { spans: 2, .. })
            ),
            "{shutdown:?}"
        );
    });
}
