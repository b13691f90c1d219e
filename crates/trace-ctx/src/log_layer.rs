//! A `tracing-subscriber` layer that writes each log event as a JSON line stamped with the
//! current trace id and span id (feature `tracing`), so one request's logs can be joined
//! across services by trace id.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::UNIX_EPOCH;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, Layer};

use crate::export::push_json_str;
use crate::{Context, SpanContext};

/// Writes every event as one JSON object per line:
/// `{"time_unix_nanos":…,"level":"INFO","target":"…","trace_id":"…","span_id":"…","message":"…",<fields>}`.
///
/// `trace_id` and `span_id` come from this crate's current [`Context`] (thread or task), and
/// are `null` outside any trace. Write errors are counted, never raised.
///
/// ```
/// use infra_trace_ctx::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceLogLayer};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let layer = TraceLogLayer::new(std::io::sink());
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
///     let _guard = Context::new().with_span(span).attach();
///     tracing::info!(order = 42, "payment accepted");
/// });
/// ```
pub struct TraceLogLayer<W, C = SystemClock> {
    writer: Mutex<W>,
    clock: C,
    errors: AtomicU64,
}

impl<W: Write> TraceLogLayer<W> {
    /// A layer writing to `writer`, timestamped with the system clock.
    pub fn new(writer: W) -> Self {
        Self::with_clock(writer, SystemClock::new())
    }
}

impl<W: Write, C: Clock> TraceLogLayer<W, C> {
    /// A layer writing to `writer`, timestamped with `clock`'s wall time.
    pub fn with_clock(writer: W, clock: C) -> Self {
        Self {
            writer: Mutex::new(writer),
            clock,
            errors: AtomicU64::new(0),
        }
    }

    /// How many lines could not be written.
    pub fn write_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl<W, C: fmt::Debug> fmt::Debug for TraceLogLayer<W, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLogLayer")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<S, W, C> Layer<S> for TraceLogLayer<W, C>
where
    S: tracing::Subscriber,
    W: Write + Send + 'static,
    C: Clock + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut line = String::with_capacity(256);
        let nanos = self
            .clock
            .wall_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let metadata = event.metadata();
        let ids = Context::map_current(|cx| cx.span().map(|s| (s.trace_id(), s.span_id())));
        // Formatting into a String cannot fail.
        let _ = write!(
            line,
            "{{\"time_unix_nanos\":{nanos},\"level\":\"{}\",\"target\":",
            metadata.level()
        );
        push_json_str(&mut line, metadata.target());
        match ids {
            Some((trace_id, span_id)) => {
                let _ = write!(
                    line,
                    ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
                );
            }
            None => line.push_str(",\"trace_id\":null,\"span_id\":null"),
        }
        event.record(&mut JsonFields { line: &mut line });
        line.push_str("}\n");
        if self.writer.lock().write_all(line.as_bytes()).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trace id and span id of the current context, for formatters that want to add them
/// to their own output.
pub fn current_ids() -> Option<(crate::TraceId, crate::SpanId)> {
    Context::map_current(|cx| cx.span().map(|s: &SpanContext| (s.trace_id(), s.span_id())))
}

struct JsonFields<'a> {
    line: &'a mut String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        push_json_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
        } else {
            self.line.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        push_json_str(self.line, &format!("{value:?}"));
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{SpanId, TraceFlags, TraceId};
    use infra_common::ManualClock;
    use infra_common::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_carry_the_current_trace_and_span_ids() {
        let out = Shared::default();
        let layer = TraceLogLayer::with_clock(out.clone(), ManualClock::new());
        let subscriber = tracing_subscriber::registry().with(layer);
        let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "checkout", "no trace yet");
            let _guard = Context::new().with_span(span.clone()).attach();
            tracing::info!(target: "checkout", user = "al\"ice", items = 3, total = 9.5, ok = true, "paid");
        });
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"time_unix_nanos":1704067200000000000,"level":"WARN","target":"checkout","trace_id":null,"span_id":null,"message":"no trace yet"}"#
        );
        assert_eq!(
            lines[1],
            format!(
                r#"{{"time_unix_nanos":1704067200000000000,"level":"INFO","target":"checkout","trace_id":"{}","span_id":"{}","message":"paid","user":"al\"ice","items":3,"total":9.5,"ok":true}}"#,
                span.trace_id(),
                span.span_id()
            )
        );
        assert_eq!(current_ids(), None);
    }
}
