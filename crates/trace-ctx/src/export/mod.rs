//! Exporters: [`MemoryExporter`] for tests, [`JsonLinesExporter`] for logs and files, and
//! [`BatchSpanProcessor`], which moves export off the request path.

mod batch;
mod error;
#[cfg(feature = "otlp")]
mod otlp;
mod shutdown;
mod spare;

pub(crate) use batch::RecordSink;
pub use batch::{BatchSpanProcessor, BatchSpanProcessorBuilder, BatchStats, SpanBatchExporter};
pub use error::ExportError;
#[cfg(feature = "otlp")]
pub use otlp::{Compression, OtlpExporter, OtlpExporterBuilder, Protocol, RetryPolicy};
#[cfg(all(feature = "otlp", fuzzing))]
pub use otlp::{fuzz_otlp_response, fuzz_retry_after};
pub use shutdown::ShutdownSignal;

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use infra_common::sync::{Arc, Mutex};

use crate::span::{Exporter, KeyValue, SpanData, Status, Value};

/// Keeps every exported span in memory; clones share the same list.
///
/// ```
/// use infra_trace_ctx::{MemoryExporter, Tracer};
///
/// let exporter = MemoryExporter::new();
/// let tracer = Tracer::builder().exporter(exporter.clone()).build();
/// tracer.span("work").start().end();
/// assert_eq!(exporter.spans()[0].name, "work");
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryExporter {
    spans: Arc<Mutex<Vec<SpanData>>>,
    record_only: Arc<Mutex<Vec<SpanData>>>,
}

impl MemoryExporter {
    /// An empty exporter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the spans exported so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().clone()
    }

    /// Removes and returns the spans exported so far.
    pub fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.spans.lock())
    }

    /// A copy of the recorded but unsampled spans received so far
    /// ([`Exporter::record_only`]), kept apart from the exported ones.
    pub fn record_only_spans(&self) -> Vec<SpanData> {
        self.record_only.lock().clone()
    }
}

impl Exporter for MemoryExporter {
    fn export(&self, span: SpanData) {
        self.spans.lock().push(span);
    }

    fn record_only(&self, span: SpanData) {
        self.record_only.lock().push(span);
    }
}

/// Writes each span as one JSON object per line.
///
/// Fields: `service`, `name`, `kind`, `trace_id`, `span_id`, `parent_span_id` (or null),
/// `trace_flags`, `start_unix_nanos`, `end_unix_nanos`, `duration_nanos`, `status`
/// (`"unset"`, `"ok"` or `{"error": "..."}`), `attributes` (an object), `events` (a list
/// of `{name, time_unix_nanos, attributes, dropped_attributes_count}`), `links` (a list of
/// `{trace_id, span_id, trace_state, attributes, dropped_attributes_count}`), and
/// `dropped_attributes_count`, `dropped_events_count`, `dropped_links_count`. Write errors are counted, not raised: tracing
/// must never fail the request it observes.
///
/// ```
/// use infra_trace_ctx::{JsonLinesExporter, Tracer};
///
/// let exporter = JsonLinesExporter::new(Vec::new());
/// let tracer = Tracer::builder().service("cart").exporter(exporter.clone()).build();
/// tracer.span("GET /cart").start().end();
/// drop(tracer); // the tracer holds a handle too
/// let output = String::from_utf8(exporter.into_inner().unwrap_or_default())?;
/// assert!(output.starts_with(r#"{"service":"cart","name":"GET /cart","#));
/// assert!(output.ends_with("}\n"));
/// # Ok::<(), std::string::FromUtf8Error>(())
/// ```
pub struct JsonLinesExporter<W> {
    shared: Arc<JsonShared<W>>,
}

struct JsonShared<W> {
    writer: Mutex<W>,
    errors: infra_common::sync::atomic::AtomicU64,
    #[cfg(feature = "metrics")]
    failures: metrics::Counter,
}

impl<W> Clone for JsonLinesExporter<W> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: Write> JsonLinesExporter<W> {
    /// Writes to `writer` (wrap files in a `BufWriter`).
    pub fn new(writer: W) -> Self {
        Self {
            shared: Arc::new(JsonShared {
                writer: Mutex::new(writer),
                errors: infra_common::sync::atomic::AtomicU64::new(0),
                #[cfg(feature = "metrics")]
                failures: crate::metrics::export_failures("json_lines"),
            }),
        }
    }

    /// How many spans could not be written.
    pub fn write_errors(&self) -> u64 {
        self.shared
            .errors
            .load(infra_common::sync::atomic::Ordering::Relaxed)
    }

    /// The writer, if this is the last handle to it.
    pub fn into_inner(self) -> Option<W> {
        Arc::try_unwrap(self.shared)
            .ok()
            .map(|shared| shared.writer.into_inner())
    }
}

impl<W> fmt::Debug for JsonLinesExporter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter").finish_non_exhaustive()
    }
}

impl<W: Write + Send> Exporter for JsonLinesExporter<W> {
    fn export(&self, span: SpanData) {
        let mut line = String::with_capacity(256);
        // Formatting into a String cannot fail.
        let _ = write_json(&mut line, &span);
        line.push('\n');
        let mut writer = self.shared.writer.lock();
        if writer.write_all(line.as_bytes()).is_err() {
            self.shared
                .errors
                .fetch_add(1, infra_common::sync::atomic::Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.shared.failures.increment(1);
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub(crate) fn write_json(out: &mut String, span: &SpanData) -> fmt::Result {
    out.push_str("{\"service\":");
    push_json_str(out, &span.service);
    out.push_str(",\"name\":");
    push_json_str(out, &span.name);
    write!(
        out,
        ",\"kind\":\"{}\",\"trace_id\":\"{}\",\"span_id\":\"{}\",\"parent_span_id\":",
        span.kind.as_str(),
        span.context.trace_id(),
        span.context.span_id()
    )?;
    match span.parent_span_id {
        Some(parent) => write!(out, "\"{parent}\"")?,
        None => out.push_str("null"),
    }
    write!(
        out,
        ",\"trace_flags\":\"{:02x}\",\"start_unix_nanos\":{},\"end_unix_nanos\":{},\"duration_nanos\":{},\"status\":",
        span.context.flags().bits(),
        unix_nanos(span.start),
        unix_nanos(span.end),
        span.duration().as_nanos()
    )?;
    match &span.status {
        Status::Unset => out.push_str("\"unset\""),
        Status::Ok => out.push_str("\"ok\""),
        Status::Error(message) => {
            out.push_str("{\"error\":");
            push_json_str(out, message);
            out.push('}');
        }
    }
    out.push_str(",\"attributes\":");
    write_attributes(out, &span.attributes)?;
    out.push_str(",\"events\":[");
    for (i, event) in span.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_json_str(out, &event.name);
        write!(
            out,
            ",\"time_unix_nanos\":{},\"attributes\":",
            unix_nanos(event.time)
        )?;
        write_attributes(out, &event.attributes)?;
        write!(
            out,
            ",\"dropped_attributes_count\":{}}}",
            event.dropped_attributes_count
        )?;
    }
    out.push_str("],\"links\":[");
    for (i, link) in span.links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(
            out,
            "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",\"trace_state\":",
            link.context.trace_id(),
            link.context.span_id()
        )?;
        push_json_str(out, link.context.trace_state().as_str());
        out.push_str(",\"attributes\":");
        write_attributes(out, &link.attributes)?;
        write!(
            out,
            ",\"dropped_attributes_count\":{}}}",
            link.dropped_attributes_count
        )?;
    }
    write!(
        out,
        "],\"dropped_attributes_count\":{},\"dropped_events_count\":{},\"dropped_links_count\":{}}}",
        span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count
    )?;
    Ok(())
}

fn write_attributes(out: &mut String, attributes: &[KeyValue]) -> fmt::Result {
    out.push('{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, &kv.key);
        out.push(':');
        match &kv.value {
            Value::Str(s) => push_json_str(out, s),
            Value::I64(n) => write!(out, "{n}")?,
            // JSON has no NaN or infinity: those become null.
            Value::F64(x) if x.is_finite() => write!(out, "{x}")?,
            Value::F64(_) => out.push_str("null"),
            Value::Bool(b) => write!(out, "{b}")?,
        }
    }
    out.push('}');
    Ok(())
}

/// Appends `s` as a JSON string literal: quoted, with quotes, backslashes and control
/// characters escaped. Shared by every JSON-lines writer in the crate.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::span::{KeyValue, SpanKind, Tracer};
    use infra_common::ManualClock;
    use std::time::Duration;

    #[test]
    fn json_lines_escape_and_describe_the_span() {
        let exporter = JsonLinesExporter::new(Vec::new());
        let clock = ManualClock::new();
        let tracer = Tracer::builder()
            .service("pay\"ment")
            .exporter(exporter.clone())
            .clock(clock.clone())
            .build();
        let mut span = tracer.span("charge\ncard").kind(SpanKind::Client).start();
        span.set_attribute("amount", 12.5);
        span.set_attribute("nan", f64::NAN);
        span.set_attribute("ok", true);
        span.set_attribute("tab", "a\tb\u{1}");
        clock.advance(Duration::from_micros(1500));
        span.add_event_with("retry", [KeyValue::new("n", 1)]);
        span.set_status(Status::Error("declined".into()));
        let trace_id = span.context().trace_id();
        span.end();
        tracer.span("second").start().end();
        assert_eq!(exporter.write_errors(), 0);
        drop(tracer);
        let text = String::from_utf8(exporter.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first = lines[0];
        assert!(
            first.starts_with(
                r#"{"service":"pay\"ment","name":"charge\ncard","kind":"client","trace_id":""#
            ),
            "{first}"
        );
        assert!(first.contains(&format!("\"trace_id\":\"{trace_id}\"")));
        assert!(
            first.contains(r#""parent_span_id":null,"trace_flags":"03""#),
            "{first}"
        );
        assert!(
            first.contains(r#""duration_nanos":1500000,"status":{"error":"declined"}"#),
            "{first}"
        );
        assert!(
            first.contains(
                r#""attributes":{"amount":12.5,"nan":null,"ok":true,"tab":"a\tb\u0001"}"#
            ),
            "{first}"
        );
        assert!(first.contains(r#""events":[{"name":"retry","time_unix_nanos":1704067200001500000,"attributes":{"n":1},"dropped_attributes_count":0}],"links":[],"#), "{first}");
        assert!(
            first.ends_with(
                r#""dropped_attributes_count":0,"dropped_events_count":0,"dropped_links_count":0}"#
            ),
            "{first}"
        );
        assert!(lines[1].contains(r#""status":"unset""#));
    }

    struct Failing;

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_counted_not_raised() {
        let exporter = JsonLinesExporter::new(Failing);
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        tracer.span("a").start().end();
        assert_eq!(exporter.write_errors(), 1);
    }

    #[test]
    fn memory_exporter_take_empties_it() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        tracer.span("a").start().end();
        assert_eq!(exporter.take().len(), 1);
        assert!(exporter.spans().is_empty());
    }
}
