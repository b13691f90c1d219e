//! A `tracing-subscriber` layer that writes each log event as a JSON line stamped with the
//! current trace id and span id (feature `tracing`), so one request's logs can be joined
//! across services by trace id.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::UNIX_EPOCH;

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context as LayerContext, Layer};

use crate::export::push_json_str;
use crate::{Context, SpanContext, SpanId, TraceId};

/// Writes each event at or above its level ([`LevelFilter::INFO`] unless
/// [`TraceLogLayer::with_level`] says otherwise) as one JSON object per line:
/// `{"time_unix_nanos":…,"level":"INFO","target":"…","trace_id":"…","span_id":"…","message":"…","fields":{…}}`.
///
/// `trace_id` and `span_id` come from this crate's current [`Context`] (thread or task), and
/// are `null` outside any trace. `message` is left out when the event has none; the event's
/// other fields are nested under `fields` (left out when there are none), so a field named
/// like one of the layer's own keys never repeats a key. A field name repeated within one
/// event keeps its first value. Strings are JSON-escaped (quotes, backslashes, control
/// characters), so no field value can break a line or forge a key.
///
/// Each line is written with one `write_all` to a writer from the [`MakeWriter`]
/// (`std::io::stdout`, a `Mutex` around any `Write`, a non-blocking appender…). Write errors
/// are counted, never raised.
///
/// The level filter decides what this layer writes, not what other layers see. To keep
/// noisy targets from being built at all, filter the layer (or the subscriber) by target:
///
/// ```
/// use infra_trace_ctx::{Context, SpanContext, SpanId, TraceFlags, TraceId, TraceLogLayer};
/// use tracing::level_filters::LevelFilter;
/// use tracing_subscriber::filter::Targets;
/// use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
///
/// let layer = TraceLogLayer::new(std::io::stdout)
///     .with_level(LevelFilter::DEBUG)
///     // hyper's TRACE and DEBUG lines stay out; everything else down to DEBUG is written.
///     .with_filter(Targets::new().with_target("hyper", LevelFilter::WARN).with_default(LevelFilter::TRACE));
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
///     let _guard = Context::new().with_span(span).attach();
///     tracing::info!(order = 42, "payment accepted");
///     tracing::trace!("below the layer's level: not written");
/// });
/// ```
pub struct TraceLogLayer<W, C = SystemClock> {
    make_writer: W,
    clock: C,
    level: LevelFilter,
    errors: AtomicU64,
}

impl<W> TraceLogLayer<W>
where
    W: for<'w> MakeWriter<'w>,
{
    /// A layer writing to writers from `make_writer`, timestamped with the system clock.
    pub fn new(make_writer: W) -> Self {
        Self::with_clock(make_writer, SystemClock::new())
    }
}

// tracing-subscriber implements `MakeWriter` for std's `Mutex` (not ours): each line is
// written under the lock, so lines from several threads never interleave.
#[allow(clippy::disallowed_types)]
impl<W: Write + 'static> TraceLogLayer<std::sync::Mutex<W>> {
    /// A layer writing to one `writer` shared by all threads (a file, a buffer), timestamped
    /// with the system clock.
    pub fn from_writer(writer: W) -> Self {
        Self::new(std::sync::Mutex::new(writer))
    }
}

impl<W, C: Clock> TraceLogLayer<W, C>
where
    W: for<'w> MakeWriter<'w>,
{
    /// A layer writing to writers from `make_writer`, timestamped with `clock`'s wall time.
    pub fn with_clock(make_writer: W, clock: C) -> Self {
        Self {
            make_writer,
            clock,
            level: LevelFilter::INFO,
            errors: AtomicU64::new(0),
        }
    }

    /// Writes events at `level` and above (more severe) only; [`LevelFilter::INFO`] by
    /// default, [`LevelFilter::OFF`] writes nothing.
    #[must_use]
    pub fn with_level(mut self, level: LevelFilter) -> Self {
        self.level = level;
        self
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
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl<S, W, C> Layer<S> for TraceLogLayer<W, C>
where
    S: tracing::Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
    C: Clock + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > self.level {
            return;
        }
        let nanos = self
            .clock
            .wall_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut json = EventJson::new(
            nanos,
            metadata.level().as_str(),
            metadata.target(),
            current_ids(),
        );
        event.record(&mut json);
        let line = json.finish();
        let mut writer = self.make_writer.make_writer_for(metadata);
        if writer.write_all(line.as_bytes()).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trace id and span id of the current context, for formatters that want to add them
/// to their own output.
pub fn current_ids() -> Option<(TraceId, SpanId)> {
    Context::map_current(|cx| cx.span().map(|s: &SpanContext| (s.trace_id(), s.span_id())))
}

/// One event's JSON object, built in one pass: the layer's own keys and the message in
/// `line`, the event's other fields in `fields` (each with its leading comma), every name
/// at most once.
struct EventJson<'n> {
    line: String,
    has_message: bool,
    fields: String,
    seen: Vec<&'n str>,
}

impl<'n> EventJson<'n> {
    fn new(nanos: u128, level: &str, target: &str, ids: Option<(TraceId, SpanId)>) -> Self {
        let mut line = String::with_capacity(256);
        // Formatting into a String cannot fail.
        let _ = write!(line, "{{\"time_unix_nanos\":{nanos},\"level\":");
        push_json_str(&mut line, level);
        line.push_str(",\"target\":");
        push_json_str(&mut line, target);
        match ids {
            Some((trace_id, span_id)) => {
                let _ = write!(
                    line,
                    ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
                );
            }
            None => line.push_str(",\"trace_id\":null,\"span_id\":null"),
        }
        Self {
            line,
            has_message: false,
            fields: String::new(),
            seen: Vec::new(),
        }
    }

    /// Writes the key for field `name` and returns where its value goes; `None` for a name
    /// already written (its first value stands).
    fn key(&mut self, name: &'n str) -> Option<&mut String> {
        if name == "message" && !self.has_message {
            self.has_message = true;
            self.line.push_str(",\"message\":");
            return Some(&mut self.line);
        }
        if self.seen.contains(&name) {
            return None;
        }
        self.seen.push(name);
        self.fields.push(',');
        push_json_str(&mut self.fields, name);
        self.fields.push(':');
        Some(&mut self.fields)
    }

    fn finish(mut self) -> String {
        if let Some(fields) = self.fields.strip_prefix(',') {
            self.line.push_str(",\"fields\":{");
            self.line.push_str(fields);
            self.line.push('}');
        }
        self.line.push_str("}\n");
        self.line
    }
}

impl Visit for EventJson<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(out) = self.key(field.name()) {
            push_json_str(out, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(out) = self.key(field.name()) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(out) = self.key(field.name()) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(out) = self.key(field.name()) {
            let _ = write!(out, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if let Some(out) = self.key(field.name()) {
            // JSON has no NaN or infinity.
            if value.is_finite() {
                let _ = write!(out, "{value}");
            } else {
                out.push_str("null");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(out) = self.key(field.name()) {
            push_json_str(out, &format!("{value:?}"));
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::TraceFlags;
    use infra_common::ManualClock;
    use infra_common::sync::{Arc, Mutex};
    use proptest::prelude::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A buffer shared between the test and the layer's writers.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Shared {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` under a layer (as `configure` leaves it) writing to a fresh buffer; returns
    /// the lines written.
    fn logged(
        configure: impl FnOnce(TraceLogLayer<Shared, ManualClock>) -> TraceLogLayer<Shared, ManualClock>,
        f: impl FnOnce(),
    ) -> Vec<String> {
        let out = Shared::default();
        let layer = configure(TraceLogLayer::with_clock(out.clone(), ManualClock::new()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        out.lines()
    }

    impl<'w> MakeWriter<'w> for Shared {
        type Writer = Self;

        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    /// A JSON value whose objects keep every key in order, repeated ones included (a map
    /// would silently keep one of them).
    #[derive(Debug, PartialEq)]
    enum Json {
        Null,
        Bool(bool),
        Int(i128),
        Float(f64),
        Str(String),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        fn parse(line: &str) -> Self {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
        }

        fn get(&self, key: &str) -> Option<&Self> {
            match self {
                Self::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        /// Whether no object in the value repeats a key.
        fn keys_unique(&self) -> bool {
            match self {
                Self::Object(entries) => {
                    let mut keys: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
                    keys.sort();
                    keys.windows(2).all(|w| w[0] != w[1])
                        && entries.iter().all(|(_, v)| v.keys_unique())
                }
                _ => true,
            }
        }

        fn str(text: &str) -> Self {
            Self::Str(text.to_owned())
        }
    }

    impl<'de> serde::Deserialize<'de> for Json {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct JsonVisitor;

            impl<'de> serde::de::Visitor<'de> for JsonVisitor {
                type Value = Json;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON value without arrays")
                }

                fn visit_unit<E>(self) -> Result<Json, E> {
                    Ok(Json::Null)
                }

                fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                    Ok(Json::Bool(v))
                }

                fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                    Ok(Json::Int(v.into()))
                }

                fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                    Ok(Json::Int(v.into()))
                }

                fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                    Ok(Json::Float(v))
                }

                fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                    Ok(Json::str(v))
                }

                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Json, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry::<String, Json>()? {
                        entries.push(entry);
                    }
                    Ok(Json::Object(entries))
                }
            }

            deserializer.deserialize_any(JsonVisitor)
        }
    }

    #[test]
    fn events_carry_the_current_trace_and_span_ids() {
        let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
        let lines = logged(
            |layer| layer,
            || {
                tracing::warn!(target: "checkout", "no trace yet");
                let _guard = Context::new().with_span(span.clone()).attach();
                tracing::info!(target: "checkout", user = "al\"ice", items = 3, total = 9.5, ok = true, "paid");
                tracing::info!(target: "checkout", nan = f64::NAN);
            },
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            r#"{"time_unix_nanos":1704067200000000000,"level":"WARN","target":"checkout","trace_id":null,"span_id":null,"message":"no trace yet"}"#
        );
        assert_eq!(
            lines[1],
            format!(
                r#"{{"time_unix_nanos":1704067200000000000,"level":"INFO","target":"checkout","trace_id":"{}","span_id":"{}","message":"paid","fields":{{"user":"al\"ice","items":3,"total":9.5,"ok":true}}}}"#,
                span.trace_id(),
                span.span_id()
            )
        );
        assert!(
            lines[2].ends_with(r#","fields":{"nan":null}}"#),
            "{}",
            lines[2]
        );
        assert_eq!(current_ids(), None);
    }

    #[test]
    fn the_level_defaults_to_info_and_can_be_changed() {
        let all_levels = || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        };
        let messages = |lines: Vec<String>| -> Vec<String> {
            lines
                .iter()
                .map(|line| match Json::parse(line).get("message") {
                    Some(Json::Str(message)) => message.clone(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(messages(logged(|l| l, all_levels)), ["e", "w", "i"]);
        assert_eq!(
            messages(logged(|l| l.with_level(LevelFilter::TRACE), all_levels)),
            ["e", "w", "i", "d", "t"]
        );
        assert_eq!(
            messages(logged(|l| l.with_level(LevelFilter::WARN), all_levels)),
            ["e", "w"]
        );
        assert!(logged(|l| l.with_level(LevelFilter::OFF), all_levels).is_empty());
    }

    #[test]
    fn fields_named_like_the_layers_keys_are_nested_not_repeated() {
        let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
        let lines = logged(
            |l| l,
            || {
                let _guard = Context::new().with_span(span.clone()).attach();
                tracing::info!(
                    trace_id = "forged",
                    span_id = 1,
                    level = "ERROR",
                    target = "elsewhere",
                    time_unix_nanos = 2,
                    timestamp = 3,
                    fields = "flat",
                    "real message"
                );
            },
        );
        let json = Json::parse(&lines[0]);
        assert!(json.keys_unique(), "{}", lines[0]);
        assert_eq!(
            json.get("trace_id"),
            Some(&Json::Str(span.trace_id().to_string()))
        );
        assert_eq!(json.get("level"), Some(&Json::str("INFO")));
        assert_eq!(json.get("message"), Some(&Json::str("real message")));
        let fields = json.get("fields").unwrap();
        assert_eq!(fields.get("trace_id"), Some(&Json::str("forged")));
        assert_eq!(fields.get("span_id"), Some(&Json::Int(1)));
        assert_eq!(fields.get("level"), Some(&Json::str("ERROR")));
        assert_eq!(fields.get("target"), Some(&Json::str("elsewhere")));
        assert_eq!(fields.get("fields"), Some(&Json::str("flat")));
    }

    #[test]
    fn control_characters_and_unicode_survive_a_json_parser() {
        let nasty = "line\nbreak\r\ttab\u{0}\u{1f}\u{7f} \"quoted\" \\ é 漢字 🦀 \u{2028}";
        let lines = logged(
            |l| l,
            || tracing::info!(value = nasty, debug = ?nasty, "{nasty}"),
        );
        assert_eq!(lines.len(), 1, "a value broke the line");
        let json = Json::parse(&lines[0]);
        assert_eq!(json.get("message"), Some(&Json::str(nasty)));
        let fields = json.get("fields").unwrap();
        assert_eq!(fields.get("value"), Some(&Json::str(nasty)));
        assert_eq!(fields.get("debug"), Some(&Json::Str(format!("{nasty:?}"))));
    }

    #[test]
    fn a_make_writer_closure_and_a_shared_writer_both_work_and_errors_are_counted() {
        struct Failing;

        impl Write for Failing {
            fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let out = Shared::default();
        let handle = out.clone();
        let layer = TraceLogLayer::new(move || handle.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("via a closure");
        });
        assert_eq!(out.lines().len(), 1);

        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(TraceLogLayer::from_writer(Failing)),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("lost");
            tracing::info!("lost too");
        });
        // `from_writer` wraps the writer in std's `Mutex`.
        #[allow(clippy::disallowed_types)]
        let layer = dispatch
            .downcast_ref::<TraceLogLayer<std::sync::Mutex<Failing>>>()
            .unwrap();
        assert_eq!(layer.write_errors(), 2);
    }

    /// Field names that collide with the layer's keys, or with each other, among others.
    fn field_name() -> impl Strategy<Value = String> {
        let reserved = prop::sample::select(vec![
            "message",
            "fields",
            "trace_id",
            "span_id",
            "level",
            "target",
            "time_unix_nanos",
            "timestamp",
            "a",
        ]);
        (any::<bool>(), reserved, any::<String>()).prop_map(|(pick_reserved, reserved, other)| {
            if pick_reserved {
                reserved.to_owned()
            } else {
                other
            }
        })
    }

    proptest! {
        /// Any fields with any names and string values: every line parses, no object repeats
        /// a key, and each value reads back as written. Model: the first `message` is the
        /// top-level message, every other name keeps its first value under `fields`.
        #[test]
        fn every_line_parses_with_unique_keys(
            fields in prop::collection::vec((field_name(), any::<String>()), 0..12),
            has_ids in any::<bool>(),
        ) {
            let ids = has_ids.then(|| (TraceId::random(), SpanId::random()));
            let mut json = EventJson::new(7, "INFO", "t\u{1}rget", ids);
            for (name, value) in &fields {
                if let Some(out) = json.key(name) {
                    push_json_str(out, value);
                }
            }
            let line = json.finish();
            prop_assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let parsed = Json::parse(&line);
            prop_assert!(parsed.keys_unique(), "{}", line);
            prop_assert_eq!(parsed.get("target"), Some(&Json::str("t\u{1}rget")));

            let mut message = None;
            let mut expected: Vec<(String, Json)> = Vec::new();
            for (name, value) in &fields {
                if name == "message" && message.is_none() {
                    message = Some(Json::str(value));
                } else if !expected.iter().any(|(n, _)| n == name) {
                    expected.push((name.clone(), Json::str(value)));
                }
            }
            prop_assert_eq!(parsed.get("message"), message.as_ref());
            match parsed.get("fields") {
                Some(Json::Object(entries)) => prop_assert_eq!(entries, &expected),
                None => prop_assert!(expected.is_empty()),
                Some(other) => prop_assert!(false, "fields is {:?}", other),
            }
        }
    }
}
