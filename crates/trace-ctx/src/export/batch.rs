//! The batch span processor: ended spans go into a bounded queue on the request path, and a
//! background thread hands them, a batch at a time, to a [`SpanBatchExporter`].
//!
//! The request path takes one short lock to end a span and never waits for the network: when
//! the queue is full the span is dropped and counted. A span recorded for the processor
//! travels in the box it was recorded in, which comes back for a new span once exported (see
//! [`super::spare`]; a span start only tries that lock).
//!
//! Bookkeeping works in sequence numbers: `accepted` counts spans ever queued, `handed` the
//! ones whose batch the exporter has returned from. A flush remembers `accepted` when it is
//! called and waits until `handed` reaches it, so it cannot return while a span queued before
//! it is still in the queue or in the worker's hands.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::{Arc, Condvar, Mutex, thread};
use infra_common::{Clock, SystemClock};

use super::spare::{self, Spares};
use super::{ExportError, ShutdownSignal};
use crate::otel_env;
use crate::span::{Exporter, SpanData, SpanRecord};

/// The longest the worker waits before it looks at the queue and the clock again (unless the
/// scheduled delay is shorter): a first span is seen, and a clock that jumps is followed,
/// within it.
const CLOCK_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The shortest scheduled delay [`BatchSpanProcessorBuilder::build`] accepts: the idle worker
/// wakes once per delay at most, so a shorter one would keep a core busy for nothing.
const MIN_SCHEDULED_DELAY: Duration = Duration::from_millis(1);

/// The most spans the queue and the worker's buffers have room for before any span arrives
/// (the default batch size). The configured sizes are limits, not allocations: room for a
/// huge batch set aside up front overflowed, or aborted the process when the memory was not
/// there. Past this, the buffers grow to what the batches take, and keep it.
const PREALLOCATED: usize = 512;

/// The variables [`BatchSpanProcessorBuilder::from_env`] reads.
const SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
const MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
const MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// Receives finished spans a batch at a time, on the batch processor's background thread,
/// where blocking (network, disk) is fine.
///
/// ```
/// use infra_trace_ctx::{ExportError, SpanBatchExporter, SpanData};
///
/// #[derive(Debug, Default)]
/// struct CountNames(usize);
///
/// impl SpanBatchExporter for CountNames {
///     fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
///         self.0 += batch.iter().filter(|span| span.name == "checkout").count();
///         Ok(())
///     }
/// }
/// # let _ = CountNames::default();
/// ```
pub trait SpanBatchExporter: Send + fmt::Debug + 'static {
    /// Delivers `batch` (at most the processor's batch size, in the order the spans ended).
    /// An error is counted in [`BatchStats::failed`]; the spans are not retried by the
    /// processor (an exporter that wants retries does them itself, as the OTLP one does).
    /// A panic is caught and counted the same way, and the next batch goes to the same
    /// exporter: one that cannot carry on after a panic should catch it itself.
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError>;

    /// Called once, before the processor's background thread starts, with the signal the
    /// processor raises when its shutdown (or drop) deadline passes. From then on nobody waits
    /// for the spans still queued: an exporter that waits between attempts should wait on the
    /// signal and stop retrying once it is raised, so the thread ends soon after the deadline.
    /// The default ignores it.
    fn watch_shutdown(&mut self, signal: ShutdownSignal) {
        let _ = signal;
    }
}

impl SpanBatchExporter for crate::MemoryExporter {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        for span in batch {
            Exporter::export(self, span.clone());
        }
        Ok(())
    }
}

/// What a batch processor has done with the spans it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Spans accepted into the queue.
    pub queued: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because they ended after [`BatchSpanProcessor::shutdown`].
    pub dropped_after_shutdown: u64,
    /// Spans in batches the exporter accepted, less those a receiver rejected from them
    /// ([`ExportError::PartiallyRejected`]).
    pub exported: u64,
    /// Spans in batches the exporter returned an error for or panicked on, and those a
    /// receiver rejected from a batch it accepted.
    pub failed: u64,
}

/// An [`Exporter`] for [`Tracer::builder`](crate::Tracer::builder) that queues each ended
/// span and exports them in batches from a background thread.
///
/// Guarantees:
/// - Ending a span never blocks on the exporter: it takes a short lock, and when the queue
///   holds [`max_queue_size`](BatchSpanProcessorBuilder::max_queue_size) spans the span is
///   dropped and counted in [`BatchStats::dropped_queue_full`].
/// - A batch is exported as soon as [`max_batch_size`](BatchSpanProcessorBuilder::max_batch_size)
///   spans are queued, on [`force_flush`](Self::force_flush), on shutdown, or when
///   [`scheduled_delay`](BatchSpanProcessorBuilder::scheduled_delay) passes with spans queued.
/// - [`force_flush`](Self::force_flush) and [`shutdown`](Self::shutdown) return `Ok` only once
///   every span queued before the call has been handed to the exporter, and
///   [`ExportError::Timeout`] if their deadline passes first, or
///   [`ExportError::NotDelivered`] if the exporter failed for spans of the batches holding
///   spans queued before the call (not for later batches, even those it returned from
///   before the caller woke).
/// - After shutdown (explicit, or when the last clone is dropped) spans are dropped and
///   counted in [`BatchStats::dropped_after_shutdown`].
/// - When a shutdown's deadline passes, the exporter's [`ShutdownSignal`] is raised, so an
///   exporter that watches it (as the OTLP one does) gives the remaining batches up instead of
///   retrying them: they count in [`BatchStats::failed`].
/// - A panic in the exporter is caught on the background thread: its batch counts as
///   failed, and export goes on with the next batch.
///
/// Clones share one queue and one background thread.
///
/// ```
/// use std::time::Duration;
/// use infra_trace_ctx::{BatchSpanProcessor, MemoryExporter, Tracer};
///
/// let received = MemoryExporter::new();
/// let processor = BatchSpanProcessor::builder(received.clone()).build()?;
/// let tracer = Tracer::builder().exporter(processor.clone()).build();
/// tracer.span("checkout").start().end();
/// processor.force_flush(Duration::from_secs(5))?;
/// assert_eq!(received.spans()[0].name, "checkout");
/// assert_eq!(processor.stats().exported, 1);
/// # Ok::<(), infra_trace_ctx::ExportError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BatchSpanProcessor {
    owner: Arc<Owner>,
}

/// Settings of a [`BatchSpanProcessor`]; defaults are OpenTelemetry's (queue 2048, batch
/// 512, delay 5 s) and a shutdown-on-drop timeout of 30 s.
#[derive(Debug)]
pub struct BatchSpanProcessorBuilder<E> {
    exporter: E,
    max_queue_size: usize,
    max_batch_size: usize,
    scheduled_delay: Duration,
    drop_timeout: Duration,
    clock: Box<dyn Clock>,
    #[cfg(feature = "metrics")]
    metrics_name: metrics::SharedString,
}

/// Owned by the handles and not by the worker, so the last handle's drop shuts down.
struct Owner {
    shared: Arc<Shared>,
    worker: Mutex<Option<thread::JoinHandle<()>>>,
    /// Raised when a shutdown's deadline passes.
    deadline_passed: ShutdownSignal,
    drop_timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the worker: a full batch, a flush, a shutdown.
    work: Condvar,
    /// Wakes flushers: a batch was handed over.
    progress: Condvar,
    /// Exported spans' boxes, cleared, for new spans.
    spares: Spares,
    max_queue_size: usize,
    max_batch_size: usize,
    scheduled_delay: Duration,
    clock: Box<dyn Clock>,
    #[cfg(feature = "metrics")]
    counters: crate::metrics::BatchCounters,
}

struct State {
    queue: VecDeque<Box<SpanRecord>>,
    /// Spans ever queued; a flush waits for `handed` to reach its value at the call.
    accepted: u64,
    /// Spans whose batch the exporter has returned from.
    handed: u64,
    /// The highest `accepted` a flush waits for; the worker exports until `handed` reaches it.
    flush_up_to: u64,
    /// When the oldest queued span's scheduled delay started, on the processor's clock: read
    /// when a span enters the empty queue (once per batch), or when a batch leaves spans
    /// behind. `None` while the queue is empty.
    delay_started: Option<u64>,
    shut_down: bool,
    stats: BatchStats,
    /// The flushes and shutdowns waiting for `handed` to reach their targets.
    waiting: Vec<Waiter>,
    /// The id the next waiter takes.
    next_waiter: u64,
}

/// A flush or shutdown waiting for the spans queued before it: the failures it will report.
/// The worker counts them as it returns from each batch, since the waiting thread may wake
/// only after later batches, of spans ended after the call, failed too.
struct Waiter {
    id: u64,
    /// `accepted` at the call: a batch starting below it holds spans queued before the call.
    target: u64,
    /// Spans queued before the call that were not delivered.
    failed: u64,
    /// The exporter's last error among those batches, or `None` if it panicked.
    last: Option<ExportError>,
}

impl BatchSpanProcessor {
    /// Settings for a processor feeding `exporter`.
    pub fn builder<E: SpanBatchExporter>(exporter: E) -> BatchSpanProcessorBuilder<E> {
        BatchSpanProcessorBuilder {
            exporter,
            max_queue_size: 2048,
            max_batch_size: 512,
            scheduled_delay: Duration::from_secs(5),
            drop_timeout: Duration::from_secs(30),
            clock: Box::new(SystemClock::new()),
            #[cfg(feature = "metrics")]
            metrics_name: metrics::SharedString::const_str("batch"),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> BatchStats {
        self.owner.shared.state.lock().stats
    }

    /// Exports everything queued before this call and waits, at most `timeout`, until the
    /// exporter has returned for all of it.
    ///
    /// # Errors
    ///
    /// [`ExportError::Timeout`] if `timeout` passes first (the spans stay queued);
    /// [`ExportError::NotDelivered`] if spans queued before this call, that the exporter
    /// returned from meanwhile, were not delivered (an error, a partial rejection or a panic),
    /// which [`BatchStats::failed`] counts too; failures of spans ended while this waited are
    /// not reported, whether in later batches or in a batch beside its own spans.
    pub fn force_flush(&self, timeout: Duration) -> Result<(), ExportError> {
        let shared = &self.owner.shared;
        let mut state = shared.state.lock();
        let target = state.accepted;
        state.flush_up_to = state.flush_up_to.max(target);
        shared.work.notify_one();
        shared.wait_delivered(&mut state, target, timeout)
    }

    /// Stops accepting spans, exports everything already queued and, once the exporter has
    /// returned for all of it (at most `timeout`), stops the background thread. Later calls
    /// return at once (with [`ExportError::Timeout`] again if this one timed out, as does
    /// dropping the last handle); spans ended afterwards are dropped and counted.
    ///
    /// If `timeout` passes first, this returns [`ExportError::Timeout`] and raises the
    /// exporter's [`ShutdownSignal`]: OpenTelemetry's specification owes queued spans their
    /// export until the shutdown's timeout, not after it. If the exporter failed, while this
    /// waited, for spans of the batches holding spans queued before it,
    /// [`ExportError::NotDelivered`] (the thread still stops).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), ExportError> {
        self.owner.shutdown(timeout)
    }
}

impl Owner {
    fn shutdown(&self, timeout: Duration) -> Result<(), ExportError> {
        // A shutdown whose deadline already passed owes nobody another wait: the exporter was
        // told to give up, and the worker ends by itself once it returns.
        if self.deadline_passed.is_raised() {
            return Err(ExportError::Timeout);
        }
        let shared = &self.shared;
        let delivered = {
            let mut state = shared.state.lock();
            state.shut_down = true;
            let target = state.accepted;
            shared.work.notify_one();
            let delivered = shared.wait_delivered(&mut state, target, timeout);
            if delivered == Err(ExportError::Timeout) {
                self.deadline_passed.raise();
                return delivered;
            }
            delivered
        };
        // Everything is handed over, so the worker is leaving its loop: joining is short.
        if let Some(worker) = self.worker.lock().take() {
            // A worker that panicked (inside the exporter) has nothing left to deliver.
            let _ = worker.join();
        }
        delivered
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Nobody can be told about a failure here; the counters still show it.
        let _ = self.shutdown(self.drop_timeout);
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchSpanProcessor")
            .field("stats", &self.shared.state.lock().stats)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Waits as [`wait_handed`](Self::wait_handed) does, then reports the spans queued before
    /// `target` that were not delivered ([`ExportError::NotDelivered`]), and only those.
    fn wait_delivered(
        &self,
        state: &mut infra_common::sync::MutexGuard<'_, State>,
        target: u64,
        timeout: Duration,
    ) -> Result<(), ExportError> {
        let id = state.next_waiter;
        state.next_waiter += 1;
        state.waiting.push(Waiter {
            id,
            target,
            failed: 0,
            last: None,
        });
        let waited = self.wait_handed(state, target, timeout);
        let at = state.waiting.iter().position(|waiter| waiter.id == id);
        let waiter = state
            .waiting
            .swap_remove(at.expect("a waiter leaves the list only here"));
        waited?;
        if waiter.failed == 0 {
            return Ok(());
        }
        Err(ExportError::NotDelivered {
            spans: waiter.failed,
            last: waiter.last.map(Box::new),
        })
    }

    /// Waits until `handed` reaches `target`, or `timeout` passes on the clock.
    fn wait_handed(
        &self,
        state: &mut infra_common::sync::MutexGuard<'_, State>,
        target: u64,
        timeout: Duration,
    ) -> Result<(), ExportError> {
        let deadline = self
            .clock
            .now_nanos()
            .saturating_add(duration_to_nanos(timeout));
        while state.handed < target {
            let now = self.clock.now_nanos();
            if now >= deadline {
                return Err(ExportError::Timeout);
            }
            self.progress
                .wait_timeout(state, Duration::from_nanos(deadline - now));
        }
        Ok(())
    }

    fn run(&self, mut exporter: impl SpanBatchExporter) {
        // Swapped with the queue when the queue holds at most one batch, so taking a batch
        // moves no span and both buffers keep their capacity.
        let room = self.max_batch_size.min(PREALLOCATED);
        let mut taken = VecDeque::with_capacity(room);
        // The spans handed to the exporter, in one slice as it takes them. Each slot keeps a
        // cleared span between batches and trades it with a queued box for that box's span,
        // so the box goes back to the spares ready for reuse, and lists keep their capacity
        // on both sides.
        let mut batch: Vec<SpanData> = Vec::with_capacity(room);
        let mut emptied = Vec::with_capacity(room);
        let delay = duration_to_nanos(self.scheduled_delay);
        let mut state = self.state.lock();
        loop {
            // The worker looks for the delay's end at every check interval (a first span does
            // not wake it: on a busy tracer that would cost the ending thread a system call
            // per batch); the delay itself runs from the span's queueing.
            while !(state.shut_down
                || state.queue.len() >= self.max_batch_size
                || state.flush_up_to > state.handed)
            {
                if state.queue.is_empty() {
                    let nap = self.scheduled_delay.min(CLOCK_CHECK_INTERVAL);
                    self.work.wait_timeout(&mut state, nap);
                    continue;
                }
                let now = self.clock.now_nanos();
                let due = state.delay_started.get_or_insert(now).saturating_add(delay);
                if now >= due {
                    break;
                }
                // The wait is real time, the delay clock time: a clock that jumps (a test's
                // manual clock, advanced) is seen within one check interval.
                let left = Duration::from_nanos(due - now).min(CLOCK_CHECK_INTERVAL);
                self.work.wait_timeout(&mut state, left);
            }
            if state.shut_down && state.queue.is_empty() {
                return;
            }
            if state.queue.len() <= self.max_batch_size {
                std::mem::swap(&mut state.queue, &mut taken);
                state.delay_started = None;
            } else {
                taken.extend(state.queue.drain(..self.max_batch_size));
                // The spans left behind wait a delay of their own from here.
                state.delay_started = Some(self.clock.now_nanos());
            }
            drop(state);
            let count = taken.len();
            for (slot, mut record) in taken.drain(..).enumerate() {
                if let Some(cleared) = batch.get_mut(slot) {
                    std::mem::swap(cleared, &mut record.data);
                    emptied.push(record);
                } else {
                    // Until a batch has held this many spans, the slot is new: the box is
                    // freed, and a span started later allocates its own.
                    batch.push(record.into_data());
                }
            }
            // Before the export, which may take long, so new spans need not allocate meanwhile.
            self.spares.give_back(&mut emptied);
            // A panicking exporter must not take the thread with it: flushes would then wait
            // out their deadlines and every later span would pile up unexported. Unwind
            // safety is asserted because the exporter is the only state the closure touches,
            // and the trait documents that it keeps being called after a panic.
            let result = catch_unwind(AssertUnwindSafe(|| exporter.export_batch(&batch[..count])));
            batch[..count].iter_mut().for_each(spare::clear);
            let count = count as u64;
            // The spans not delivered, and why (`None`: the exporter panicked).
            let (failed, why) = match result {
                Ok(Ok(())) => (0, None),
                // The receiver stored the rest of the batch.
                Ok(Err(error @ ExportError::PartiallyRejected { rejected, .. })) => {
                    (rejected.min(count), Some(error))
                }
                Ok(Err(error)) => (count, Some(error)),
                Err(_) => (count, None),
            };
            #[cfg(feature = "metrics")]
            self.counters.handed(count, failed, why.is_none());
            state = self.state.lock();
            let batch_start = state.handed;
            state.handed += count;
            state.stats.failed += failed;
            state.stats.exported += count - failed;
            if failed > 0 {
                let batch_end = batch_start + count;
                let holds_theirs = |waiter: &&mut Waiter| waiter.target > batch_start;
                for waiter in state.waiting.iter_mut().filter(holds_theirs) {
                    // Spans leave in the order they were queued: the batch's first spans are
                    // the waiter's, any after its target were ended after its call. Which
                    // spans a receiver rejected in part is not known: up to the waiter's.
                    let theirs = waiter.target.min(batch_end) - batch_start;
                    waiter.failed += failed.min(theirs);
                    waiter.last.clone_from(&why);
                }
            }
            self.progress.notify_all();
        }
    }

    /// Queues an ended span's record, or drops and counts it.
    fn push(&self, record: Box<SpanRecord>) {
        let mut state = self.state.lock();
        if state.shut_down {
            state.stats.dropped_after_shutdown += 1;
            drop(state);
            #[cfg(feature = "metrics")]
            self.counters.dropped_after_shutdown.increment(1);
            return;
        }
        if state.queue.len() >= self.max_queue_size {
            state.stats.dropped_queue_full += 1;
            drop(state);
            #[cfg(feature = "metrics")]
            self.counters.dropped_queue_full.increment(1);
            return;
        }
        if state.queue.is_empty() {
            // The delay runs from the first span's queueing, so a clock moved past it after
            // the span ended (a test's manual clock) always sees it exported: one clock
            // reading per batch, not per span.
            state.delay_started = Some(self.clock.now_nanos());
        }
        state.queue.push_back(record);
        state.accepted += 1;
        state.stats.queued += 1;
        // Once per batch: the worker re-checks the length after every export anyway.
        let batch_ready = state.queue.len() == self.max_batch_size;
        drop(state);
        #[cfg(feature = "metrics")]
        self.counters.queued.increment(1);
        if batch_ready {
            self.work.notify_one();
        }
    }
}

impl Exporter for BatchSpanProcessor {
    /// Queues `span` in a spare box, or a new one. (A [`Tracer`](crate::Tracer) built with
    /// this processor itself as its exporter does not come here: its spans arrive in the
    /// boxes they were recorded in.)
    fn export(&self, span: SpanData) {
        let shared = &self.owner.shared;
        let record = match shared.spares.take() {
            Some(mut record) => {
                record.data = span;
                record
            }
            None => Box::new(SpanRecord {
                data: span,
                start_nanos: 0,
            }),
        };
        shared.push(record);
    }
}

/// A [`BatchSpanProcessor`]'s queue and spare boxes, held by a [`Tracer`](crate::Tracer)
/// built with the processor as its exporter: its recorded spans start in spare boxes and end
/// into the queue without leaving them. Unlike the processor's handles, it does not keep the
/// processor from shutting down when they are all dropped.
#[derive(Clone)]
pub(crate) struct RecordSink {
    shared: Arc<Shared>,
}

impl RecordSink {
    /// A cleared box for a new span, if one is spare.
    #[inline]
    pub(crate) fn spare(&self) -> Option<Box<SpanRecord>> {
        self.shared.spares.take()
    }

    /// Queues an ended, sampled span, as [`Exporter::export`] does.
    pub(crate) fn push(&self, record: Box<SpanRecord>) {
        self.shared.push(record);
    }
}

impl fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSink").finish_non_exhaustive()
    }
}

impl BatchSpanProcessor {
    /// The queue and spare boxes, for a tracer exporting to this processor.
    pub(crate) fn sink(&self) -> RecordSink {
        RecordSink {
            shared: Arc::clone(&self.owner.shared),
        }
    }
}

impl<E: SpanBatchExporter> BatchSpanProcessorBuilder<E> {
    /// The most spans waiting for export; more are dropped and counted. Default 2048.
    #[must_use]
    pub const fn max_queue_size(mut self, spans: usize) -> Self {
        self.max_queue_size = spans;
        self
    }

    /// The most spans per [`SpanBatchExporter::export_batch`] call (at most the queue size).
    /// Default 512.
    #[must_use]
    pub const fn max_batch_size(mut self, spans: usize) -> Self {
        self.max_batch_size = spans;
        self
    }

    /// How long queued spans may wait for a batch to fill, measured on the processor's
    /// [`clock`](Self::clock) from when the oldest of them was queued (spans a full batch left
    /// behind, from when that batch was taken). The worker notices the delay's end within
    /// 50 ms (or the delay if shorter) when waiting, once its export returns when exporting.
    /// Default 5 s; less than 1 ms is rejected by [`build`](Self::build).
    #[must_use]
    pub const fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = delay;
        self
    }

    /// How long dropping the last handle waits for queued spans to be exported. Default 30 s.
    #[must_use]
    pub const fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// The clock that measures the scheduled delay and flush and shutdown deadlines. Default:
    /// the system clock. Waits are real time: a waiting worker looks at the queue and the
    /// clock at least every 50 ms, so a clock that jumps (a test's manual clock) is followed
    /// within that (an exporting one, once the export returns).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The `processor` label of this processor's counters (feature `metrics`, see
    /// [`crate::metrics`]). Default `batch`.
    ///
    /// ```
    /// use infra_trace_ctx::{BatchSpanProcessor, MemoryExporter};
    ///
    /// // infra_trace_ctx_batch_queued_total{processor="audit"}, and so on.
    /// let processor = BatchSpanProcessor::builder(MemoryExporter::new())
    ///     .metrics_name("audit")
    ///     .build()?;
    /// # let _ = processor;
    /// # Ok::<(), infra_trace_ctx::ExportError>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_name(mut self, name: impl Into<metrics::SharedString>) -> Self {
        self.metrics_name = name.into();
        self
    }

    /// Applies the batch span processor variables of OpenTelemetry's SDK environment
    /// specification that are set: `OTEL_BSP_SCHEDULE_DELAY` (milliseconds, at least 1),
    /// `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (each at least 1, the
    /// batch at most the queue). An `OTEL_BSP_MAX_QUEUE_SIZE` smaller than the batch, without
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, brings the batch down to it; unset variables leave
    /// the settings made in code as they are. `OTEL_BSP_EXPORT_TIMEOUT`
    /// is not read: the processor does not cut an export short, and an exporter bounds its own
    /// requests (as [`OtlpExporter`](crate::OtlpExporter)'s `timeout` does).
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidConfig`] naming the first variable whose value is malformed: not
    /// decimal digits, zero, too large a number, or a batch larger than the queue.
    pub fn from_env(self) -> Result<Self, ExportError> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading from `lookup` instead of the process
    /// environment.
    ///
    /// ```
    /// use std::time::Duration;
    /// use infra_trace_ctx::{BatchSpanProcessor, MemoryExporter};
    ///
    /// let processor = BatchSpanProcessor::builder(MemoryExporter::new())
    ///     .from_lookup(|name| match name {
    ///         "OTEL_BSP_SCHEDULE_DELAY" => Some("1000".to_owned()),
    ///         "OTEL_BSP_MAX_QUEUE_SIZE" => Some("256".to_owned()),
    ///         _ => None,
    ///     })?
    ///     .build()?;
    /// # processor.shutdown(Duration::from_secs(5))?;
    /// # Ok::<(), infra_trace_ctx::ExportError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ExportError> {
        let lookup: otel_env::Lookup<'_> = &lookup;
        if let Some(value) = otel_env::value(lookup, SCHEDULE_DELAY) {
            let millis = otel_env::integer(SCHEDULE_DELAY, &value, 1..=u64::MAX, "milliseconds")?;
            self.scheduled_delay = Duration::from_millis(millis);
        }
        let queue_from_env = otel_env::value(lookup, MAX_QUEUE_SIZE);
        if let Some(value) = &queue_from_env {
            self.max_queue_size = otel_env::count(MAX_QUEUE_SIZE, value, 1)?;
        }
        match otel_env::value(lookup, MAX_EXPORT_BATCH_SIZE) {
            Some(value) => {
                self.max_batch_size = otel_env::count(MAX_EXPORT_BATCH_SIZE, &value, 1)?;
                if self.max_batch_size > self.max_queue_size {
                    return Err(ExportError::invalid(
                        MAX_EXPORT_BATCH_SIZE,
                        format!(
                            "{value:?}: larger than the queue ({} spans)",
                            self.max_queue_size
                        ),
                    ));
                }
            }
            // The specification's default batch (512) is only a default: a smaller queue
            // asked for alone takes it down rather than failing the build. Without the queue
            // variable, the sizes set in code stay for the build to judge.
            None if queue_from_env.is_some() => {
                self.max_batch_size = self.max_batch_size.min(self.max_queue_size);
            }
            None => {}
        }
        Ok(self)
    }

    /// Starts the background thread.
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidConfig`] if the queue or batch size is zero, the batch is larger
    /// than the queue, or the scheduled delay is shorter than 1 ms.
    pub fn build(self) -> Result<BatchSpanProcessor, ExportError> {
        if self.max_queue_size == 0 {
            return Err(ExportError::invalid("max_queue_size", "must be at least 1"));
        }
        if self.scheduled_delay < MIN_SCHEDULED_DELAY {
            // The idle worker looks for spans every delay at most: a delay of nanoseconds
            // would have it spin on the processor, and zero hand each span over on its own.
            return Err(ExportError::invalid(
                "scheduled_delay",
                "must be at least 1 ms",
            ));
        }
        if self.max_batch_size == 0 || self.max_batch_size > self.max_queue_size {
            return Err(ExportError::invalid(
                "max_batch_size",
                format!(
                    "must be between 1 and the queue size ({})",
                    self.max_queue_size
                ),
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(self.max_batch_size.min(PREALLOCATED)),
                accepted: 0,
                handed: 0,
                flush_up_to: 0,
                delay_started: None,
                shut_down: false,
                stats: BatchStats::default(),
                waiting: Vec::new(),
                next_waiter: 0,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            // One batch's worth: what comes back after each export, enough for the spans
            // ended until the next one in the steady state.
            spares: Spares::new(self.max_batch_size),
            max_queue_size: self.max_queue_size,
            max_batch_size: self.max_batch_size,
            scheduled_delay: self.scheduled_delay,
            clock: self.clock,
            #[cfg(feature = "metrics")]
            counters: crate::metrics::BatchCounters::new(self.metrics_name),
        });
        let mut exporter = self.exporter;
        let deadline_passed = ShutdownSignal::new();
        exporter.watch_shutdown(deadline_passed.clone());
        let worker = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.run(exporter))
        };
        Ok(BatchSpanProcessor {
            owner: Arc::new(Owner {
                shared,
                worker: Mutex::new(Some(worker)),
                deadline_passed,
                drop_timeout: self.drop_timeout,
            }),
        })
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_opentelemetry_s_and_a_30_second_drop() {
        let builder = BatchSpanProcessor::builder(crate::MemoryExporter::new());
        assert_eq!(
            (
                builder.max_queue_size,
                builder.max_batch_size,
                builder.scheduled_delay,
                builder.drop_timeout
            ),
            (2048, 512, Duration::from_secs(5), Duration::from_secs(30))
        );
    }

    /// Reads `vars` instead of the process environment, which other tests may be changing.
    fn lookup_in(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn from_vars(
        vars: &[(&str, &str)],
    ) -> Result<BatchSpanProcessorBuilder<crate::MemoryExporter>, ExportError> {
        BatchSpanProcessor::builder(crate::MemoryExporter::new()).from_lookup(lookup_in(vars))
    }

    #[test]
    fn the_otel_bsp_variables_configure_the_processor() {
        let builder = from_vars(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", " 100 "),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
        ])
        .unwrap();
        assert_eq!(
            (
                builder.scheduled_delay,
                builder.max_queue_size,
                builder.max_batch_size
            ),
            (Duration::from_millis(250), 100, 100)
        );
        builder
            .build()
            .unwrap()
            .shutdown(Duration::from_secs(5))
            .unwrap();

        // Unset or blank variables leave the settings made in code.
        let builder = BatchSpanProcessor::builder(crate::MemoryExporter::new())
            .max_queue_size(64)
            .max_batch_size(8)
            .from_lookup(lookup_in(&[("OTEL_BSP_MAX_QUEUE_SIZE", "")]))
            .unwrap();
        assert_eq!((builder.max_queue_size, builder.max_batch_size), (64, 8));
        assert_eq!(builder.scheduled_delay, Duration::from_secs(5));
    }

    /// With no variable set, settings made in code stay as they are, a batch larger than the
    /// queue included: the build refuses it as it would without `from_lookup`.
    #[test]
    fn no_variable_set_leaves_a_batch_larger_than_the_queue_for_the_build_to_refuse() {
        let builder = BatchSpanProcessor::builder(crate::MemoryExporter::new())
            .max_queue_size(100)
            .max_batch_size(200)
            .from_lookup(|_| None)
            .unwrap();
        assert_eq!((builder.max_queue_size, builder.max_batch_size), (100, 200));
        assert!(matches!(
            builder.build(),
            Err(ExportError::InvalidConfig {
                setting: "max_batch_size",
                ..
            })
        ));
    }

    /// A value that is not a count or a delay the processor can work with is an error naming
    /// the variable, as a malformed `OTEL_EXPORTER_OTLP_*` value is.
    #[test]
    fn malformed_otel_bsp_values_are_errors_naming_the_variable() {
        let invalid: &[&[(&str, &str)]] = &[
            &[("OTEL_BSP_SCHEDULE_DELAY", "5s")],
            &[("OTEL_BSP_SCHEDULE_DELAY", "0")],
            &[("OTEL_BSP_SCHEDULE_DELAY", "-1")],
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "+10")],
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "99999999999999999999999")],
            &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")],
            &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1.5")],
            // Larger than the default queue, then than the queue set beside it.
            &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")],
            &[
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20"),
            ],
        ];
        for vars in invalid {
            let named = vars.last().unwrap().0;
            match from_vars(vars) {
                Err(ExportError::InvalidConfig { setting, .. }) => assert_eq!(setting, named),
                other => panic!("{vars:?}: expected an error, got {other:?}"),
            }
        }
    }

    /// The batch shrinks with a queue the environment makes smaller than the default batch,
    /// so setting only `OTEL_BSP_MAX_QUEUE_SIZE` low still builds.
    #[test]
    fn a_small_queue_alone_brings_the_default_batch_down_to_it() {
        let builder = from_vars(&[("OTEL_BSP_MAX_QUEUE_SIZE", "100")]).unwrap();
        assert_eq!((builder.max_queue_size, builder.max_batch_size), (100, 100));
    }

    /// Holds its first batch until `open` is set, then refuses every later one.
    #[derive(Debug)]
    struct FirstHeldThenRefused {
        open: Arc<(Mutex<bool>, Condvar)>,
        first: bool,
    }

    impl SpanBatchExporter for FirstHeldThenRefused {
        fn export_batch(&mut self, _batch: &[crate::SpanData]) -> Result<(), ExportError> {
            if !std::mem::replace(&mut self.first, false) {
                return Err(ExportError::Rejected { status: 400 });
            }
            let (open, opened) = &*self.open;
            let mut open = open.lock();
            while !*open {
                opened.wait(&mut open);
            }
            Ok(())
        }
    }

    /// Polls `condition` (the processor's state, which only this module sees) until it holds.
    fn eventually(mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "not reached in 30 s");
            thread::yield_now();
        }
    }

    /// A failed batch holding spans queued before a flush and spans ended after it counts
    /// only the flush's own against it.
    #[test]
    fn a_flush_counts_only_its_own_spans_of_a_failed_batch() {
        const LONG: Duration = Duration::from_secs(60);
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let processor = BatchSpanProcessor::builder(FirstHeldThenRefused {
            open: Arc::clone(&open),
            first: true,
        })
        .scheduled_delay(Duration::from_secs(3600))
        .clock(infra_common::ManualClock::new())
        .build()
        .unwrap();
        let tracer = crate::Tracer::builder()
            .exporter(processor.clone())
            .clock(infra_common::ManualClock::new())
            .build();
        let shared = Arc::clone(&processor.owner.shared);
        let waiters = || shared.state.lock().waiting.len();

        // The first flush takes span 0 to the exporter, which holds it.
        tracer.span("0").start().end();
        let first = thread::spawn({
            let processor = processor.clone();
            move || processor.force_flush(LONG)
        });
        eventually(|| shared.state.lock().queue.is_empty() && waiters() == 1);
        // Span 1 is queued before the second flush, span 2 after it: one batch then holds
        // both, and the exporter refuses it.
        tracer.span("1").start().end();
        let second = thread::spawn({
            let processor = processor.clone();
            move || processor.force_flush(LONG)
        });
        eventually(|| waiters() == 2);
        tracer.span("2").start().end();
        *open.0.lock() = true;
        open.1.notify_all();

        assert_eq!(first.join().unwrap(), Ok(()));
        assert_eq!(
            second.join().unwrap(),
            Err(ExportError::NotDelivered {
                spans: 1,
                last: Some(Box::new(ExportError::Rejected { status: 400 })),
            })
        );
        let stats = processor.stats();
        assert_eq!((stats.exported, stats.failed), (1, 2));
    }
}
