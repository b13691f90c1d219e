//! Recorded spans' boxes, handed back by the batch processor's thread for new spans to reuse.
//!
//! A span recorded for a [`BatchSpanProcessor`](super::BatchSpanProcessor) lives in one box
//! from its start until the processor's thread has exported it: the box itself goes through
//! the queue. After each batch that thread returns the boxes here, their records cleared but
//! their attribute, event and link lists keeping their capacity, and a span starting on any
//! thread takes one before allocating. Once boxes circulate, a sampled span allocates
//! nothing on the thread that records it, and nothing allocated there is freed on the
//! processor's thread (which would send every allocation down the allocator's slow path).

use std::borrow::Cow;

use infra_common::sync::Mutex;

use crate::TraceState;
use crate::span::{SpanData, SpanRecord, Status};

/// A cleared record keeps a list's memory up to this many entries: a rare span with many
/// attributes must not leave a large allocation behind in the pool.
const KEPT_CAPACITY: usize = 16;

/// Cleared records waiting for a span to start, at most `cap` of them.
pub(crate) struct Spares {
    // Boxes, not records: the allocations themselves are what is reused, and a box moves
    // through the queue as one pointer.
    #[allow(clippy::vec_box)]
    boxes: Mutex<Vec<Box<SpanRecord>>>,
    cap: usize,
}

impl Spares {
    /// An empty pool keeping at most `cap` boxes.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            boxes: Mutex::new(Vec::new()),
            cap,
        }
    }

    /// A cleared record, if one is spare. A span start never waits for the processor's
    /// thread: while that thread is returning boxes, the caller allocates instead.
    #[inline]
    pub(crate) fn take(&self) -> Option<Box<SpanRecord>> {
        self.boxes.try_lock()?.pop()
    }

    /// Keeps as many of `records` (cleared) as the cap allows and drops the others, outside
    /// the lock; leaves `records` empty, with its capacity.
    #[allow(clippy::vec_box)] // the boxes are kept, as above
    pub(crate) fn give_back(&self, records: &mut Vec<Box<SpanRecord>>) {
        let mut boxes = self.boxes.lock();
        let kept = self.cap.saturating_sub(boxes.len()).min(records.len());
        boxes.extend(records.drain(..kept));
        drop(boxes);
        records.clear();
    }

    /// How many boxes are spare.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.boxes.lock().len()
    }
}

/// Releases what an exported span holds (its name, the trace state, list entries) so its
/// storage can record another span. The lists keep their capacity, up to
/// [`KEPT_CAPACITY`]; the plain fields are left as they are, since a span start writes
/// them all. The service name stays: the span start replaces it only when its tracer's
/// differs, so a name owned by the tracer is not copied per span.
pub(crate) fn clear(span: &mut SpanData) {
    span.name = Cow::Borrowed("");
    *span.context.trace_state_mut() = TraceState::default();
    span.status = Status::Unset;
    clear_list(&mut span.attributes);
    clear_list(&mut span.events);
    clear_list(&mut span.links);
}

fn clear_list<T>(list: &mut Vec<T>) {
    if list.capacity() > KEPT_CAPACITY {
        *list = Vec::new();
    } else {
        list.clear();
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{KeyValue, MemoryExporter, Tracer};

    /// A recorded span's data, with one attribute per name in `attributes`.
    fn span_data(attributes: usize) -> SpanData {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder()
            .service("cart")
            .exporter(exporter.clone())
            .build();
        let mut span = tracer.span(format!("span of {attributes}")).start();
        for n in 0..attributes {
            span.set_attribute(format!("key {n}"), "value");
        }
        span.add_event_with("event", [KeyValue::new("k", 1)]);
        span.set_status(Status::Error("failed".into()));
        span.end();
        exporter.take().remove(0)
    }

    #[test]
    fn clearing_keeps_small_lists_capacity_and_the_service_name_only() {
        let mut span = span_data(3);
        span.context = span
            .context
            .clone()
            .with_trace_state(TraceState::parse("congo=1").expect("valid"));
        let capacity = span.attributes.capacity();
        clear(&mut span);
        assert!(span.attributes.is_empty() && span.events.is_empty() && span.links.is_empty());
        assert_eq!(span.attributes.capacity(), capacity);
        assert_eq!(&*span.name, "");
        assert_eq!(
            &*span.service, "cart",
            "the service name is kept for the next span"
        );
        assert!(span.context.trace_state().is_empty());
        assert_eq!(span.status, Status::Unset);
    }

    #[test]
    fn clearing_frees_a_long_list() {
        let mut span = span_data(KEPT_CAPACITY + 1);
        clear(&mut span);
        assert_eq!(span.attributes.capacity(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_cap() {
        let spares = Spares::new(2);
        let record = |n| {
            Box::new(SpanRecord {
                data: span_data(n),
                start_nanos: 0,
            })
        };
        let mut returned = vec![record(0), record(1), record(2)];
        spares.give_back(&mut returned);
        assert!(returned.is_empty());
        assert_eq!(spares.len(), 2);
        let mut more = vec![record(3)];
        spares.give_back(&mut more);
        assert_eq!(spares.len(), 2);
        assert!(spares.take().is_some() && spares.take().is_some());
        assert!(spares.take().is_none());
    }
}
