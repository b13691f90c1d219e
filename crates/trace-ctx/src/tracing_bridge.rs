//! A `tracing-subscriber` layer that records `tracing` spans (`#[instrument]`,
//! `tracing::info_span!`) as this crate's spans (feature `tracing`), so code instrumented
//! for `tracing` exports through a [`Tracer`] without being rewritten.
//!
//! Each `tracing` span becomes one [`Span`]: its parent is the bridged span of its `tracing`
//! parent, or else this crate's current [`Context`] (a server span started by
//! `ServerLayer`, a context extracted from a request); its fields become attributes, events
//! inside it become span events, and it is current (for propagation, logs and spans started
//! directly) while entered. It ends when `tracing` closes it: when the last handle to it is
//! dropped.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use infra_common::sync::thread::thread_local;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::{Context, ContextGuard, KeyValue, Link, Span, SpanKind, Status, Tracer, Value};

/// Records `tracing` spans as spans of a [`Tracer`].
///
/// Fields named like tracing-opentelemetry's special fields configure the span instead of
/// becoming attributes:
///
/// | field | effect |
/// | --- | --- |
/// | `otel.name` | the span's name (else the `tracing` span's name); recorded later, renames it |
/// | `otel.kind` | `server`, `client`, `producer`, `consumer` or `internal` (any case); only at creation, since the sampler sees it |
/// | `otel.status_code` | `ok` or `error` (any case): the span's [`Status`] |
/// | `otel.status_description` | the description of an `error` status |
///
/// Other fields become attributes, typed: integers (a `u64` above `i64::MAX` as text),
/// floats, booleans, strings, and anything else as its `Debug` text. An event inside a span
/// becomes a span event named by its message, with its other fields, `level` and `target`
/// as attributes. Nothing is recorded for an unsampled span: its fields are not even read,
/// except the `otel.name` and `otel.kind` the sampler needs.
///
/// Entering a span makes a context holding it current on the entering thread until the
/// matching exit on that thread (entries nest; an instrumented future is entered at each
/// poll, on whichever thread polls it). A span's time runs from its creation to its close,
/// on the tracer's clock.
///
/// ```
/// use infra_trace_ctx::{MemoryExporter, Tracer, TracingBridge};
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let exporter = MemoryExporter::new();
/// let tracer = Tracer::builder().service("cart").exporter(exporter.clone()).build();
/// let subscriber = tracing_subscriber::registry().with(TracingBridge::new(tracer));
/// tracing::subscriber::with_default(subscriber, || {
///     let checkout = tracing::info_span!("checkout", items = 3, "otel.kind" = "server");
///     let _entered = checkout.enter();
///     tracing::info_span!("charge").in_scope(|| tracing::info!(amount = 12, "charged"));
/// });
/// let spans = exporter.spans();
/// assert_eq!(spans[0].name, "charge");
/// assert_eq!(spans[0].parent_span_id, Some(spans[1].context.span_id()));
/// assert_eq!(spans[0].events[0].name, "charged");
/// assert_eq!(spans[1].attribute("items"), Some(&3i64.into()));
/// ```
#[derive(Clone, Debug)]
pub struct TracingBridge {
    tracer: Tracer,
}

impl TracingBridge {
    /// A layer starting its spans with `tracer` (its sampler, exporter and clock).
    pub const fn new(tracer: Tracer) -> Self {
        Self { tracer }
    }
}

/// The span a `tracing` span was bridged to, kept in the `tracing` span's extensions.
struct Bridged {
    span: Span,
    /// The last `otel.status_description`, for an `otel.status_code` of `error` recorded
    /// before it, with it or after it.
    status_description: Option<String>,
    /// Whether an `otel.status_code` of `error` was recorded: a description recorded later
    /// then describes that error.
    status_error: bool,
}

thread_local! {
    /// The spans this thread has entered and not yet exited, oldest first, with the guard
    /// that keeps each current. Guards are not `Send`, so they live with the thread that
    /// entered, never in the span's (shared) extensions.
    static ENTERED: RefCell<Vec<(Id, ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for TracingBridge
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let mut setup = Setup::default();
        attrs.record(&mut setup);
        let name = setup.name.unwrap_or(Cow::Borrowed(attrs.metadata().name()));
        let builder = self
            .tracer
            .span(name)
            .kind(setup.kind.unwrap_or(SpanKind::Internal));
        let parent = span_ref
            .parent()
            .and_then(|parent| bridged_context(&parent.extensions()));
        let span = match &parent {
            Some(parent) => builder.parent(parent).start(),
            // `parent: None` in the macro: a new trace, whatever is current.
            None if attrs.is_root() => builder.root().start(),
            // No bridged `tracing` parent: this crate's current context decides.
            None => builder.start(),
        };
        let mut bridged = Bridged {
            span,
            status_description: None,
            status_error: false,
        };
        if bridged.span.is_recording() {
            SpanFields::record(&mut bridged, |visit| attrs.record(visit));
        }
        span_ref.extensions_mut().insert(bridged);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let mut extensions = span_ref.extensions_mut();
        if let Some(bridged) = extensions.get_mut::<Bridged>()
            && bridged.span.is_recording()
        {
            SpanFields::record(bridged, |visit| values.record(visit));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: LayerContext<'_, S>) {
        let (Some(span_ref), Some(follows)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(linked) = bridged_context(&follows.extensions()) else {
            return;
        };
        if let Some(bridged) = span_ref.extensions_mut().get_mut::<Bridged>() {
            bridged.span.add_link(Link::new(linked));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.event_span(event) else {
            return;
        };
        let mut extensions = span_ref.extensions_mut();
        let Some(Bridged { span, .. }) = extensions.get_mut::<Bridged>() else {
            return;
        };
        if !span.is_recording() {
            return;
        }
        let metadata = event.metadata();
        let mut fields = EventFields::default();
        event.record(&mut Typed(&mut fields));
        let EventFields {
            message,
            mut attributes,
        } = fields;
        // Ours last, so they win over an event field of the same name.
        put(
            &mut attributes,
            KeyValue::new("level", metadata.level().as_str()),
        );
        put(&mut attributes, KeyValue::new("target", metadata.target()));
        let name = message.map_or(Cow::Borrowed(metadata.name()), Cow::Owned);
        span.add_event_with(name, attributes);
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(id) else {
            return;
        };
        let Some(context) = bridged_context(&span_ref.extensions()) else {
            return;
        };
        let mut current = Context::current();
        current.set_span(Some(context));
        let guard = current.attach();
        ENTERED.with(|entered| entered.borrow_mut().push((id.clone(), guard)));
    }

    fn on_exit(&self, id: &Id, _ctx: LayerContext<'_, S>) {
        let exited = ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            let at = entered
                .iter()
                .rposition(|(entered_id, _)| entered_id == id)?;
            Some(entered.remove(at))
        });
        // Dropped outside the borrow: the guard restores the previous context.
        drop(exited);
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span_ref) = ctx.span(&id) else {
            return;
        };
        let bridged = span_ref.extensions_mut().remove::<Bridged>();
        if let Some(mut bridged) = bridged {
            bridged.span.end();
        }
    }
}

fn bridged_context(
    extensions: &tracing_subscriber::registry::Extensions<'_>,
) -> Option<crate::SpanContext> {
    extensions
        .get::<Bridged>()
        .map(|bridged| bridged.span.context().clone())
}

/// Sets `kv` in `attributes`, replacing a value of the same key.
fn put(attributes: &mut Vec<KeyValue>, kv: KeyValue) {
    match attributes
        .iter_mut()
        .find(|existing| existing.key == kv.key)
    {
        Some(existing) => existing.value = kv.value,
        None => attributes.push(kv),
    }
}

fn parse_kind(text: &str) -> Option<SpanKind> {
    [
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
        SpanKind::Internal,
    ]
    .into_iter()
    .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
}

/// The span's name and kind, read before it starts (the sampler sees both).
#[derive(Default)]
struct Setup {
    name: Option<Cow<'static, str>>,
    kind: Option<SpanKind>,
}

impl Visit for Setup {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            OTEL_NAME => self.name = Some(Cow::Owned(value.to_owned())),
            OTEL_KIND => self.kind = parse_kind(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), OTEL_NAME | OTEL_KIND) {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

const OTEL_NAME: &str = "otel.name";
const OTEL_KIND: &str = "otel.kind";
const OTEL_STATUS_CODE: &str = "otel.status_code";
const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";

/// Receives a field's value, typed: what [`Typed`] hands on.
trait FieldSink {
    /// An integer, float or boolean.
    fn value(&mut self, field: &Field, value: Value);
    /// A string, or anything else as its `Debug` text.
    fn text(&mut self, field: &Field, text: &str);
}

/// A visitor converting each field to a [`Value`] or text for a [`FieldSink`].
struct Typed<'a, F>(&'a mut F);

impl<F: FieldSink> Visit for Typed<'_, F> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.value(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // `Value` has no unsigned integer: one too large for `i64` keeps its digits as text.
        match i64::try_from(value) {
            Ok(value) => self.0.value(field, Value::I64(value)),
            Err(_) => self.0.text(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.value(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.value(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.text(field, &format!("{value:?}"));
    }
}

/// A recorded span's fields: attributes, and the `otel.*` fields applied.
struct SpanFields<'a> {
    bridged: &'a mut Bridged,
    /// `otel.status_code` if this record set it: `Some(true)` for ok, `Some(false)` for error.
    status_ok: Option<bool>,
    /// Whether this record set `otel.status_description`.
    described: bool,
}

impl<'a> SpanFields<'a> {
    fn record(bridged: &'a mut Bridged, values: impl FnOnce(&mut dyn Visit)) {
        let mut fields = SpanFields {
            bridged,
            status_ok: None,
            described: false,
        };
        values(&mut Typed(&mut fields));
        // After the visit: the description may come after the code among the fields, or in
        // a later record than the code's.
        let bridged = fields.bridged;
        match fields.status_ok {
            Some(true) => bridged.span.set_status(Status::Ok),
            Some(false) => bridged.status_error = true,
            None => {}
        }
        let error_described = fields.status_ok == Some(false) || fields.described;
        if bridged.status_error && error_described {
            let description = bridged.status_description.clone().unwrap_or_default();
            bridged
                .span
                .set_status(Status::Error(Cow::Owned(description)));
        }
    }
}

impl FieldSink for SpanFields<'_> {
    fn value(&mut self, field: &Field, value: Value) {
        self.bridged.span.set_attribute(field.name(), value);
    }

    fn text(&mut self, field: &Field, text: &str) {
        match field.name() {
            OTEL_NAME => self.bridged.span.update_name(text.to_owned()),
            // Read before the span started.
            OTEL_KIND => {}
            OTEL_STATUS_CODE => {
                if text.eq_ignore_ascii_case("ok") {
                    self.status_ok = Some(true);
                } else if text.eq_ignore_ascii_case("error") {
                    self.status_ok = Some(false);
                }
            }
            OTEL_STATUS_DESCRIPTION => {
                self.bridged.status_description = Some(text.to_owned());
                self.described = true;
            }
            _ => self.value(field, Value::from(text.to_owned())),
        }
    }
}

/// An event's message and its other fields as attributes.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    attributes: Vec<KeyValue>,
}

impl FieldSink for EventFields {
    fn value(&mut self, field: &Field, value: Value) {
        put(&mut self.attributes, KeyValue::new(field.name(), value));
    }

    fn text(&mut self, field: &Field, text: &str) {
        if field.name() == "message" && self.message.is_none() {
            self.message = Some(text.to_owned());
        } else {
            self.value(field, Value::from(text.to_owned()));
        }
    }
}
