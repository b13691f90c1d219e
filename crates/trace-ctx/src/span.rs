//! Lightweight spans: a [`Tracer`] starts [`Span`]s, a [`Sampler`] decides which are
//! recorded, and an [`Exporter`] receives each recorded span when it ends.
//!
//! An unsampled span is a span context on the stack and nothing else: starting, annotating
//! and ending it allocates nothing, even under a parent carrying a `tracestate` (the state is
//! shared, not copied), so instrumentation can stay in hot code.
//!
//! A recorded span keeps at most [`SpanLimits`] attributes, events and links (OpenTelemetry's
//! defaults, 128 each) and counts what it dropped; the counts are exported with the span. A
//! string attribute value may be limited in length too (no limit by default).

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::mem::ManuallyDrop;
use std::time::{Duration, SystemTime};

use infra_common::{Clock, SystemClock};

use crate::export::{ExportError, RecordSink};
use crate::otel_env::{self, Lookup};
use crate::sampler::{AlwaysOn, ParentBased, Sampler};
use crate::wall_anchor::WallAnchor;
use crate::{
    BatchSpanProcessor, Context, ContextGuard, SamplingState, SpanContext, SpanId, TraceFlags,
};

/// The role of a span in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// Work inside a process.
    #[default]
    Internal,
    /// Handling an incoming request.
    Server,
    /// Making an outgoing request.
    Client,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

impl SpanKind {
    /// The lowercase name (`"server"`, ...), as exporters write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// How a span's work ended. [`Status::Ok`] is final: once set, later statuses are ignored;
/// setting [`Status::Unset`] is ignored too (OpenTelemetry's rules).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// Not set (the default).
    #[default]
    Unset,
    /// Succeeded.
    Ok,
    /// Failed, with a description.
    Error(Cow<'static, str>),
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Text.
    Str(Cow<'static, str>),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Self::Str(Cow::Borrowed(value))
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::Str(Cow::Owned(value))
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::I64(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Self::I64(i64::from(value))
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Self::I64(i64::from(value))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self::F64(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

/// A named attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// The attribute's name.
    pub key: Cow<'static, str>,
    /// Its value.
    pub value: Value,
}

impl KeyValue {
    /// An attribute.
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Something that happened at a moment during a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's name.
    pub name: Cow<'static, str>,
    /// When it happened.
    pub time: SystemTime,
    /// Its attributes, at most [`SpanLimits::max_attributes_per_event`].
    pub attributes: Vec<KeyValue>,
    /// How many attributes were dropped over the limit.
    pub dropped_attributes_count: u32,
}

/// A reference from a span to another span, of this trace or another (a batch consumer
/// links the messages it handles, for example).
///
/// ```
/// use infra_trace_ctx::{KeyValue, Link, SpanContext, SpanId, TraceFlags, TraceId};
///
/// let producer = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
/// let link = Link::new(producer.clone()).with_attributes([KeyValue::new("queue", "orders")]);
/// assert_eq!(link.context, producer);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Link {
    /// The linked span.
    pub context: SpanContext,
    /// The link's attributes, at most [`SpanLimits::max_attributes_per_link`]; on a recorded
    /// span, a repeated key keeps its last value.
    pub attributes: Vec<KeyValue>,
    /// How many attributes were dropped over the limit.
    pub dropped_attributes_count: u32,
}

impl Link {
    /// A link to `context`, without attributes.
    pub const fn new(context: SpanContext) -> Self {
        Self {
            context,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        }
    }

    /// This link with `attributes`.
    #[must_use]
    pub fn with_attributes(mut self, attributes: impl IntoIterator<Item = KeyValue>) -> Self {
        self.attributes = attributes.into_iter().collect();
        self
    }
}

/// The most a recorded span keeps; past a limit, new items are dropped and counted
/// ([`SpanData::dropped_attributes_count`] and the like), and string values longer than
/// [`max_attribute_value_length`](Self::max_attribute_value_length) are truncated. The
/// defaults are OpenTelemetry's: 128 of each, and no limit on a value's length. The standard
/// environment variables can set them ([`from_env`](Self::from_env)).
///
/// ```
/// use infra_trace_ctx::{SpanLimits, Tracer};
///
/// let limits = SpanLimits { max_attributes: 16, ..SpanLimits::default() };
/// let tracer = Tracer::builder().span_limits(limits).build();
/// # let _ = tracer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanLimits {
    /// Distinct attribute keys per span (updating a kept key is always allowed).
    pub max_attributes: usize,
    /// Events per span.
    pub max_events: usize,
    /// Links per span.
    pub max_links: usize,
    /// Attributes per event.
    pub max_attributes_per_event: usize,
    /// Attributes per link.
    pub max_attributes_per_link: usize,
    /// The most characters a string value of an attribute (of the span, its events or its
    /// links) keeps: a longer one is cut to its first characters, and not counted as dropped.
    /// `None`, the default: no limit.
    pub max_attribute_value_length: Option<usize>,
}

impl Default for SpanLimits {
    fn default() -> Self {
        Self {
            max_attributes: 128,
            max_events: 128,
            max_links: 128,
            max_attributes_per_event: 128,
            max_attributes_per_link: 128,
            max_attribute_value_length: None,
        }
    }
}

/// The span limit variables of OpenTelemetry's SDK environment specification.
const ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_ATTRIBUTE_COUNT_LIMIT";
const ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT";
const SPAN_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT";
const SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT";
const SPAN_EVENT_COUNT_LIMIT: &str = "OTEL_SPAN_EVENT_COUNT_LIMIT";
const SPAN_LINK_COUNT_LIMIT: &str = "OTEL_SPAN_LINK_COUNT_LIMIT";
const EVENT_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT";
const LINK_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT";

impl SpanLimits {
    /// These limits with the standard environment variables that are set applied:
    /// `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT` ([`max_attributes`](Self::max_attributes)),
    /// `OTEL_SPAN_EVENT_COUNT_LIMIT`, `OTEL_SPAN_LINK_COUNT_LIMIT`,
    /// `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT` and
    /// `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`; where a span's, event's or link's own variable
    /// is unset, `OTEL_ATTRIBUTE_COUNT_LIMIT` sets its attribute count and
    /// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` the value length, as the specification's general
    /// limits. An empty value counts as unset; zero is a limit (nothing kept).
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidConfig`] naming the first variable whose value is not decimal
    /// digits or is too large, as a malformed OTLP exporter variable is.
    pub fn from_env(self) -> Result<Self, ExportError> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading from `lookup` instead of the process
    /// environment.
    ///
    /// ```
    /// use infra_trace_ctx::{SpanLimits, Tracer};
    ///
    /// let limits = SpanLimits::default().from_lookup(|name| match name {
    ///     "OTEL_ATTRIBUTE_COUNT_LIMIT" => Some("32".to_owned()),
    ///     "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" => Some("64".to_owned()),
    ///     _ => None,
    /// })?;
    /// assert_eq!((limits.max_attributes, limits.max_attributes_per_event), (64, 32));
    /// let tracer = Tracer::builder().span_limits(limits).build();
    /// # let _ = tracer;
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
        let lookup: Lookup<'_> = &lookup;
        let general = ATTRIBUTE_COUNT_LIMIT;
        // Each limit's own variable first, then the general one where there is one.
        let counts: [(&[&'static str], &mut usize); 5] = [
            (
                &[SPAN_ATTRIBUTE_COUNT_LIMIT, general],
                &mut self.max_attributes,
            ),
            (&[SPAN_EVENT_COUNT_LIMIT], &mut self.max_events),
            (&[SPAN_LINK_COUNT_LIMIT], &mut self.max_links),
            (
                &[EVENT_ATTRIBUTE_COUNT_LIMIT, general],
                &mut self.max_attributes_per_event,
            ),
            (
                &[LINK_ATTRIBUTE_COUNT_LIMIT, general],
                &mut self.max_attributes_per_link,
            ),
        ];
        for (names, limit) in counts {
            if let Some(count) = first_count(lookup, names)? {
                *limit = count;
            }
        }
        let lengths = [
            SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
            ATTRIBUTE_VALUE_LENGTH_LIMIT,
        ];
        if let Some(length) = first_count(lookup, &lengths)? {
            self.max_attribute_value_length = Some(length);
        }
        Ok(self)
    }
}

/// The count in the first of `names` that is set, if any.
fn first_count(lookup: Lookup<'_>, names: &[&'static str]) -> Result<Option<usize>, ExportError> {
    otel_env::first(lookup, names)
        .map(|(name, value)| otel_env::count(name, &value, 0))
        .transpose()
}

/// Cuts a string `value` to its first `max` characters (OpenTelemetry counts a string's length
/// in characters, not bytes); other values, and all of them when `max` is `None`, are left
/// alone. A `'static` string is cut by borrowing less of it, not copied.
fn truncate_value(value: &mut Value, max: Option<usize>) {
    let (Some(max), Value::Str(text)) = (max, value) else {
        return;
    };
    let Some((end, _)) = text.char_indices().nth(max) else {
        return;
    };
    match text {
        Cow::Borrowed(borrowed) => {
            let whole: &'static str = borrowed;
            *borrowed = &whole[..end];
        }
        Cow::Owned(owned) => owned.truncate(end),
    }
}

/// Keeps the first `max` items; returns how many were dropped (saturating).
fn cap_len<T>(items: &mut Vec<T>, max: usize) -> u32 {
    let dropped = items.len().saturating_sub(max);
    items.truncate(max);
    u32::try_from(dropped).unwrap_or(u32::MAX)
}

/// An event's or link's attributes as a span's would be after `set_attribute` for each in
/// turn: attributes with an empty key are dropped, a repeated key keeps the place of its first
/// occurrence and the value of its last (exporters must send unique keys), keys past the
/// count limit are dropped, and string values cut to the length limit. The count differs: it
/// is of distinct keys dropped over the count limit, where a span counts every `set_attribute`
/// call of a key it dropped (`repeated_event_and_link_keys_keep_the_last_value`), plus each
/// empty key. In place: the merge allocates nothing.
fn limit_attributes(attributes: &mut Vec<KeyValue>, limits: AttributeLimits) -> u32 {
    let given = attributes.len();
    attributes.retain(|kv| is_valid_key(&kv.key));
    let invalid = u32::try_from(given - attributes.len()).unwrap_or(u32::MAX);
    let mut unique = 0;
    for next in 0..attributes.len() {
        match attributes[..unique]
            .iter()
            .position(|kv| kv.key == attributes[next].key)
        {
            // Entries between `unique` and `next` are merged duplicates, free to overwrite.
            Some(first) => attributes.swap(first, next),
            None => {
                attributes.swap(unique, next);
                unique += 1;
            }
        }
    }
    attributes.truncate(unique);
    let dropped = cap_len(attributes, limits.count);
    for kv in attributes.iter_mut() {
        truncate_value(&mut kv.value, limits.value_length);
    }
    dropped.saturating_add(invalid)
}

/// The limits on one list of attributes: how many, and how long a string value.
#[derive(Clone, Copy)]
struct AttributeLimits {
    count: usize,
    value_length: Option<usize>,
}

impl SpanLimits {
    /// The limits on an event's attributes.
    const fn per_event(&self) -> AttributeLimits {
        AttributeLimits {
            count: self.max_attributes_per_event,
            value_length: self.max_attribute_value_length,
        }
    }

    /// The limits on a link's attributes.
    const fn per_link(&self) -> AttributeLimits {
        AttributeLimits {
            count: self.max_attributes_per_link,
            value_length: self.max_attribute_value_length,
        }
    }
}

/// Whether `key` may name an attribute: OpenTelemetry's common specification requires a
/// non-empty string, and calls an attribute with an empty key invalid.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
}

/// A finished, recorded span, as exporters receive it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SpanData {
    /// The service that recorded it (see [`TracerBuilder::service`]).
    pub service: Cow<'static, str>,
    /// The operation's name.
    pub name: Cow<'static, str>,
    /// Its role.
    pub kind: SpanKind,
    /// Its context (trace id, span id, flags, trace state).
    pub context: SpanContext,
    /// The parent span's id, if it had a parent.
    pub parent_span_id: Option<SpanId>,
    /// Whether the parent's context came from another process (extracted from a request);
    /// `false` for a local parent and for a root span.
    pub parent_is_remote: bool,
    /// Wall-clock start: the monotonic start plus an offset to the calendar clock read at
    /// most 100 ms (monotonic) before or after it, so a step of the calendar clock shows
    /// within 100 ms.
    pub start: SystemTime,
    /// Wall-clock end: the start plus the monotonic duration, so it never precedes the start.
    pub end: SystemTime,
    /// Attributes in the order they were set (a repeated key keeps its last value), at most
    /// [`SpanLimits::max_attributes`].
    pub attributes: Vec<KeyValue>,
    /// Events in order, at most [`SpanLimits::max_events`].
    pub events: Vec<Event>,
    /// Links in order, at most [`SpanLimits::max_links`].
    pub links: Vec<Link>,
    /// How the work ended.
    pub status: Status,
    /// Attributes dropped over [`SpanLimits::max_attributes`].
    pub dropped_attributes_count: u32,
    /// Events dropped over [`SpanLimits::max_events`].
    pub dropped_events_count: u32,
    /// Links dropped over [`SpanLimits::max_links`].
    pub dropped_links_count: u32,
}

impl SpanData {
    /// How long the span took.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }
}

/// Receives recorded spans when they end. Called on the thread that ends the span, so an
/// implementation should hand slow work (network) to a background task.
pub trait Exporter: Send + Sync + fmt::Debug {
    /// Takes one finished, sampled span.
    fn export(&self, span: SpanData);

    /// Takes one finished span that was recorded but not sampled
    /// ([`SamplingDecision::RecordOnly`](crate::SamplingDecision::RecordOnly)): not for
    /// export, but available to whatever consumes recorded spans locally (span metrics, for
    /// example). Ignored by default.
    fn record_only(&self, span: SpanData) {
        let _ = span;
    }
}

impl<E: Exporter + ?Sized> Exporter for Box<E> {
    fn export(&self, span: SpanData) {
        (**self).export(span);
    }

    fn record_only(&self, span: SpanData) {
        (**self).record_only(span);
    }
}

// For callers that share an exporter in a `std` `Arc`, which is theirs to choose.
#[allow(clippy::disallowed_types)]
impl<E: Exporter + ?Sized> Exporter for std::sync::Arc<E> {
    fn export(&self, span: SpanData) {
        (**self).export(span);
    }

    fn record_only(&self, span: SpanData) {
        (**self).record_only(span);
    }
}

/// Discards every span: for services that propagate context without recording.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopExporter;

impl Exporter for NoopExporter {
    fn export(&self, _span: SpanData) {}
}

/// Starts spans. Cheap to clone: clones share one configuration.
///
/// ```
/// use infra_trace_ctx::{MemoryExporter, SpanKind, Tracer};
///
/// let exporter = MemoryExporter::new();
/// let tracer = Tracer::builder().service("cart").exporter(exporter.clone()).build();
/// {
///     let mut span = tracer.span("GET /cart").kind(SpanKind::Server).start();
///     span.set_attribute("items", 3);
///     let _in_span = span.attach();
///     let child = tracer.span("load items").start();
///     assert_eq!(child.context().trace_id(), span.context().trace_id());
/// }
/// assert_eq!(exporter.spans().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Tracer {
    // Configuration shared by clones, a plain std Arc (the loom Arc cannot hold trait
    // objects): immutable but for the wall anchor's atomics, which have a loom model of
    // their own.
    #[allow(clippy::disallowed_types)]
    inner: std::sync::Arc<TracerConfig>,
}

#[derive(Debug)]
struct TracerConfig {
    service: Cow<'static, str>,
    sampler: Box<dyn Sampler>,
    exporter: Box<dyn Exporter>,
    /// Set when `exporter` is a [`BatchSpanProcessor`]: sampled spans then start in its
    /// spare boxes and end into its queue in their box, neither allocated nor copied.
    batch: Option<RecordSink>,
    clock: Box<dyn Clock>,
    /// Spans' wall-clock starts from the monotonic clock.
    wall: WallAnchor,
    limits: SpanLimits,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::TracerCounters,
}

/// Configures a [`Tracer`]. Defaults: service `"unknown_service"` (OpenTelemetry's name for a
/// service given none), parent-based sampling that
/// samples every new trace, no exporter, the system clock, [`SpanLimits::default`].
#[derive(Debug)]
pub struct TracerBuilder {
    config: TracerConfig,
    /// Whether [`TracerBuilder::exporter`] was called: without it, recorded spans are
    /// dropped, which `build` reports (feature `tracing`).
    #[cfg(feature = "tracing")]
    exporter_configured: bool,
    #[cfg(feature = "metrics")]
    metrics_name: Option<Cow<'static, str>>,
}

impl TracerBuilder {
    /// The service name stamped on every span.
    #[must_use]
    pub fn service(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.service = name.into();
        self
    }

    /// The sampler.
    #[must_use]
    pub fn sampler(mut self, sampler: impl Sampler + 'static) -> Self {
        self.config.sampler = Box::new(sampler);
        self
    }

    /// Where recorded spans go.
    ///
    /// A [`BatchSpanProcessor`] given here itself (not behind a `Box` or an `Arc`) receives
    /// each sampled span in the box it was recorded in, and lends the boxes of exported spans
    /// back for new ones: once they circulate, a sampled span allocates nothing on the
    /// thread that records it and its record is never copied there.
    #[must_use]
    pub fn exporter(mut self, exporter: impl Exporter + 'static) -> Self {
        self.config.batch = (&exporter as &dyn Any)
            .downcast_ref::<BatchSpanProcessor>()
            .map(BatchSpanProcessor::sink);
        self.config.exporter = Box::new(exporter);
        #[cfg(feature = "tracing")]
        {
            self.exporter_configured = true;
        }
        self
    }

    /// The clock spans are timed with.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.config.clock = Box::new(clock);
        self
    }

    /// The most attributes, events and links a recorded span keeps.
    #[must_use]
    pub const fn span_limits(mut self, limits: SpanLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The `tracer` label of this tracer's metrics (default: the service name). The counters
    /// are registered by [`TracerBuilder::build`], with the recorder installed then (see
    /// [`crate::metrics`]).
    ///
    /// ```
    /// use infra_trace_ctx::Tracer;
    ///
    /// let tracer = Tracer::builder().service("cart").metrics_name("cart-canary").build();
    /// tracer.span("GET /cart").start().end();
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.metrics_name = Some(name.into());
        self
    }

    /// The tracer. With feature `tracing`, a builder given no [`TracerBuilder::exporter`]
    /// logs one warning here: its recorded spans would be dropped without a word
    /// (`.exporter(NoopExporter)` says that is intended).
    #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
    // `Tracer` holds a std `Arc`; see its field.
    #[allow(clippy::disallowed_types)]
    pub fn build(mut self) -> Tracer {
        #[cfg(feature = "tracing")]
        if !self.exporter_configured {
            tracing::warn!(
                service = %self.config.service,
                "no exporter configured: recorded spans are dropped when they end \
                 (set one with TracerBuilder::exporter, or NoopExporter to drop them on purpose)"
            );
        }
        #[cfg(feature = "metrics")]
        {
            let name = self
                .metrics_name
                .unwrap_or_else(|| self.config.service.clone());
            self.config.metrics = crate::metrics::TracerCounters::new(name.into());
        }
        Tracer {
            inner: std::sync::Arc::new(self.config),
        }
    }
}

impl Tracer {
    /// A builder with the defaults listed on [`TracerBuilder`].
    pub fn builder() -> TracerBuilder {
        TracerBuilder {
            config: TracerConfig {
                service: Cow::Borrowed("unknown_service"),
                sampler: Box::new(ParentBased::new(AlwaysOn)),
                exporter: Box::new(NoopExporter),
                batch: None,
                clock: Box::new(SystemClock::new()),
                wall: WallAnchor::new(),
                limits: SpanLimits::default(),
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::TracerCounters::noop(),
            },
            #[cfg(feature = "metrics")]
            metrics_name: None,
            #[cfg(feature = "tracing")]
            exporter_configured: false,
        }
    }

    /// Prepares a span named `name`; its parent is the thread's current span unless set (or,
    /// when the current context has no span, the decision that context received alone,
    /// [`Context::sampling_state`], reaches the sampler as [`SpanBuilder::remote`] hands it).
    #[inline]
    pub fn span(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder<'_> {
        SpanBuilder {
            tracer: self,
            name: name.into(),
            kind: SpanKind::Internal,
            parent: ParentChoice::Current,
            links: Vec::new(),
        }
    }
}

enum ParentChoice<'a> {
    Current,
    Root,
    Explicit(&'a SpanContext),
    Remote(&'a Context),
}

/// A span about to start; see [`Tracer::span`].
pub struct SpanBuilder<'a> {
    tracer: &'a Tracer,
    name: Cow<'static, str>,
    kind: SpanKind,
    parent: ParentChoice<'a>,
    links: Vec<Link>,
}

impl fmt::Debug for SpanBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanBuilder")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<'a> SpanBuilder<'a> {
    /// The span's kind.
    #[must_use]
    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    /// Makes `parent` (typically extracted from a request) the parent.
    #[must_use]
    pub fn parent(mut self, parent: &'a SpanContext) -> Self {
        self.parent = ParentChoice::Explicit(parent);
        self
    }

    /// Continues the context `remote` extracted from a request: its span is the parent, or,
    /// if it has none, the span starts a new trace and the sampling decision the caller sent
    /// alone ([`Context::sampling_state`], B3 `b3: 0`, `1` or `d`) reaches the sampler as a
    /// remote parent's decision: the default [`ParentBased`](crate::ParentBased) follows it,
    /// as it follows a remote parent with ids, and a sampler that ignores parents ignores it.
    /// Without either, the span starts a new trace and the sampler decides.
    #[must_use]
    pub fn remote(mut self, remote: &'a Context) -> Self {
        self.parent = ParentChoice::Remote(remote);
        self
    }

    /// Starts a new trace, ignoring the current span.
    #[must_use]
    pub fn root(mut self) -> Self {
        self.parent = ParentChoice::Root;
        self
    }

    /// Links the span to another span (kept only if the span is recorded).
    #[must_use]
    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    /// Starts the span: asks the sampler, and records only if it says so.
    #[inline]
    pub fn start(self) -> Span {
        match self.parent {
            ParentChoice::Explicit(parent) => self.start_under(Some(parent), None),
            ParentChoice::Root => self.start_under(None, None),
            ParentChoice::Remote(remote) => match remote.span() {
                Some(parent) => self.start_under(Some(parent), None),
                None => self.start_under(None, remote.sampling_state()),
            },
            ParentChoice::Current => {
                // Copying the parent out (no allocation for an empty trace state) measured
                // about twice as fast as running the whole start inside the thread-local
                // borrow: the span no longer travels back through the closure's return slot.
                // Without a span, the current context may still hold a decision the caller
                // sent alone (`b3: 0`), which the sampler sees as `remote` hands it.
                let (parent, sent) = Context::map_current(|cx| match cx.span() {
                    Some(span) => (Some(span.clone()), None),
                    None => (None, cx.sampling_state()),
                });
                self.start_under(parent.as_ref(), sent)
            }
        }
    }

    #[inline]
    fn start_under(self, parent: Option<&SpanContext>, sent: Option<SamplingState>) -> Span {
        let config = &*self.tracer.inner;
        let (trace_id, span_id, random) = match parent {
            Some(parent) => (
                parent.trace_id(),
                SpanId::random(),
                parent.flags().is_random(),
            ),
            None => {
                let (trace_id, span_id) = crate::id::random_root_ids();
                (trace_id, span_id, true)
            }
        };
        let result = match sent {
            // A decision sent without ids goes to the sampler as a remote parent carrying it,
            // so it is followed (or not) as the same decision with ids would be: the default
            // `ParentBased` follows it, a sampler that ignores parents ignores it. That parent
            // stands for the decision alone: it has the new trace's ids, and the span still
            // starts that trace. Defer (or none) leaves the sampler a root to decide.
            Some(state @ (SamplingState::Deny | SamplingState::Accept | SamplingState::Debug)) => {
                let decided =
                    SpanContext::remote(trace_id, span_id, TraceFlags::NONE.with_random(random))
                        .with_sampling_state(state);
                config
                    .sampler
                    .sample(Some(&decided), trace_id, &self.name, self.kind)
            }
            _ => config
                .sampler
                .sample(parent, trace_id, &self.name, self.kind),
        };
        let decision = result.decision;
        #[cfg(feature = "metrics")]
        config.metrics.started(decision.is_sampled());
        let flags = TraceFlags::NONE
            .with_random(random)
            .with_sampled(decision.is_sampled());
        // Debug is a request to keep the whole trace: a sampled child carries it on.
        let debug = sent == Some(SamplingState::Debug)
            || parent.is_some_and(|p| p.sampling_state() == SamplingState::Debug);
        let sampling = match (decision.is_sampled(), debug) {
            (true, true) => SamplingState::Debug,
            (true, false) => SamplingState::Accept,
            (false, _) => SamplingState::Deny,
        };
        // Unless the sampler changed it, shared with the parent: a reference count, not a copy.
        let trace_state = result
            .trace_state
            .or_else(|| parent.map(|p| p.trace_state().clone()))
            .unwrap_or_default();
        // The context is built where it goes, in one expression on each path: a context built
        // once before the paths part (or by a chain of `with_*` calls) lived in a stack
        // temporary written field by field, then copied into the span 16 bytes at a time, a
        // store-forwarding stall (`trace_ctx/span_unsampled`).
        if !decision.is_recording() {
            self.discard();
            return Span {
                context: SpanContext::local(trace_id, span_id, flags, trace_state, sampling),
                recording: ManuallyDrop::new(None),
            };
        }
        let context = SpanContext::local(trace_id, span_id, flags, trace_state, sampling);
        self.record(context, parent)
    }

    /// Drops the builder of an unrecorded span.
    ///
    /// Usually it owns nothing (a `'static` name, no links), and then it is forgotten: its
    /// drop glue, an out-of-line call, took about a tenth of an unsampled span's time
    /// (`trace_ctx/span_unsampled`). A builder that owns memory is dropped as usual
    /// (`tests/alloc.rs` checks that nothing leaks).
    #[inline(always)]
    fn discard(self) {
        let SpanBuilder { name, links, .. } = self;
        if links.capacity() == 0 && matches!(name, Cow::Borrowed(_)) {
            std::mem::forget((name, links));
        }
    }

    fn record(self, context: SpanContext, parent: Option<&SpanContext>) -> Span {
        let config = &*self.tracer.inner;
        let limits = config.limits;
        let start_nanos = config.clock.now_nanos();
        let start = config.wall.wall_at(&*config.clock, start_nanos);
        let mut links = self.links;
        let dropped_links_count = cap_len(&mut links, limits.max_links);
        for link in &mut links {
            let dropped = limit_attributes(&mut link.attributes, limits.per_link());
            link.dropped_attributes_count = link.dropped_attributes_count.saturating_add(dropped);
        }
        let record = match config.batch.as_ref().and_then(RecordSink::spare) {
            // A batch processor's spare: its lists are empty (with their capacity) and every
            // other field is written here, in place.
            Some(mut record) => {
                let data = &mut record.data;
                // The spare keeps the last service name it carried: a service named at run
                // time (an owned string) is then not copied, nor freed on the export thread,
                // per span.
                if data.service != config.service {
                    data.service = config.service.clone();
                }
                data.name = self.name;
                data.kind = self.kind;
                data.context = context.clone();
                data.parent_span_id = parent.map(SpanContext::span_id);
                data.parent_is_remote = parent.is_some_and(SpanContext::is_remote);
                data.start = start;
                data.end = start;
                // Without builder links the spare's empty list stays, with its capacity, for
                // `Span::add_link`; replacing it would free that memory here and reallocate.
                if links.capacity() != 0 {
                    data.links = links;
                }
                data.status = Status::Unset;
                data.dropped_attributes_count = 0;
                data.dropped_events_count = 0;
                data.dropped_links_count = dropped_links_count;
                record.start_nanos = start_nanos;
                record
            }
            // Written into a fresh allocation rather than moved into `Box::new`, which built
            // the whole record on the stack and copied it (272 bytes) into the box: this way
            // the fields are stored in place (measured with callgrind, `span_batched`).
            None => Box::write(
                Box::new_uninit(),
                SpanRecord {
                    start_nanos,
                    data: SpanData {
                        service: config.service.clone(),
                        name: self.name,
                        kind: self.kind,
                        context: context.clone(),
                        parent_span_id: parent.map(SpanContext::span_id),
                        parent_is_remote: parent.is_some_and(SpanContext::is_remote),
                        start,
                        end: start,
                        attributes: Vec::new(),
                        events: Vec::new(),
                        links,
                        status: Status::Unset,
                        dropped_attributes_count: 0,
                        dropped_events_count: 0,
                        dropped_links_count,
                    },
                },
            ),
        };
        Span {
            recording: ManuallyDrop::new(Some(Recording {
                tracer: self.tracer.clone(),
                record,
            })),
            context,
        }
    }
}

/// A recorded span until it ends: the tracer stays with the span, while the record's box
/// may go on to a batch processor's queue (and come back, cleared, for another span).
struct Recording {
    tracer: Tracer,
    record: Box<SpanRecord>,
}

/// A recorded span's data, and the monotonic reading its times are measured from.
pub(crate) struct SpanRecord {
    pub(crate) data: SpanData,
    pub(crate) start_nanos: u64,
}

impl SpanRecord {
    /// The data, out of its box.
    pub(crate) fn into_data(self: Box<Self>) -> SpanData {
        let Self { data, .. } = *self;
        data
    }
}

/// A unit of work in a trace. Ends (and, if sampled, is exported) when [`Span::end`] is
/// called or the span is dropped.
pub struct Span {
    context: SpanContext,
    // `ManuallyDrop` because `Drop for Span` always takes it (to finish the span), so the
    // recording's drop glue would only ever drop `None`: without it, that glue made a span's
    // drop too large to inline. Two pointers, which fit where the context's alignment left
    // room: a span stays 64 bytes.
    recording: ManuallyDrop<Option<Recording>>,
}

impl Span {
    /// This span's context: what to propagate to the calls it makes.
    pub const fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Whether the span is being recorded (sampled, or
    /// [`SamplingDecision::RecordOnly`](crate::SamplingDecision::RecordOnly)).
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// The name of a recorded span (`None` if unrecorded: its name is not kept).
    #[cfg(any(feature = "tower", feature = "reqwest"))]
    pub(crate) fn recorded_name(&self) -> Option<&str> {
        self.recording.as_ref().map(|r| &*r.record.data.name)
    }

    /// Sets an attribute; does nothing on an unrecorded span. A new key past
    /// [`SpanLimits::max_attributes`], or an empty key (which OpenTelemetry calls invalid), is
    /// dropped and counted in [`SpanData::dropped_attributes_count`]; a string value is cut to
    /// [`SpanLimits::max_attribute_value_length`].
    #[inline]
    pub fn set_attribute(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        if let Some(recording) = &mut *self.recording {
            recording.set_attribute(key.into(), value.into());
        }
    }

    /// Records an event now; does nothing on an unrecorded span.
    pub fn add_event(&mut self, name: impl Into<Cow<'static, str>>) {
        self.add_event_with(name, []);
    }

    /// Records an event with attributes now; `attributes` is not consumed on an unrecorded
    /// span. A repeated key keeps its last value, in the place of its first. Past
    /// [`SpanLimits::max_events`] the event is dropped and counted; past
    /// [`SpanLimits::max_attributes_per_event`] its extra attributes are, as are attributes
    /// with an empty key.
    pub fn add_event_with(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        attributes: impl IntoIterator<Item = KeyValue>,
    ) {
        let Some(recording) = &mut *self.recording else {
            return;
        };
        let limits = recording.tracer.inner.limits;
        if recording.record.data.events.len() >= limits.max_events {
            recording.record.data.dropped_events_count =
                recording.record.data.dropped_events_count.saturating_add(1);
            return;
        }
        let time = recording.wall_now();
        let mut attributes: Vec<KeyValue> = attributes.into_iter().collect();
        let dropped_attributes_count = limit_attributes(&mut attributes, limits.per_event());
        recording.record.data.events.push(Event {
            name: name.into(),
            time,
            attributes,
            dropped_attributes_count,
        });
    }

    /// Adds a link; does nothing on an unrecorded span. Past [`SpanLimits::max_links`] the
    /// link is dropped and counted; past [`SpanLimits::max_attributes_per_link`] its extra
    /// attributes are, as are attributes with an empty key.
    pub fn add_link(&mut self, mut link: Link) {
        let Some(recording) = &mut *self.recording else {
            return;
        };
        let limits = recording.tracer.inner.limits;
        if recording.record.data.links.len() >= limits.max_links {
            recording.record.data.dropped_links_count =
                recording.record.data.dropped_links_count.saturating_add(1);
            return;
        }
        let dropped = limit_attributes(&mut link.attributes, limits.per_link());
        link.dropped_attributes_count = link.dropped_attributes_count.saturating_add(dropped);
        recording.record.data.links.push(link);
    }

    /// Sets the status; does nothing on an unrecorded span. [`Status::Ok`] is final (a
    /// later error does not replace it), and [`Status::Unset`] is ignored.
    ///
    /// ```
    /// use infra_trace_ctx::{MemoryExporter, Status, Tracer};
    ///
    /// let exporter = MemoryExporter::new();
    /// let tracer = Tracer::builder().exporter(exporter.clone()).build();
    /// let mut span = tracer.span("charge").start();
    /// span.set_status(Status::Ok);
    /// span.set_status(Status::Error("late failure".into()));
    /// span.end();
    /// assert_eq!(exporter.spans()[0].status, Status::Ok);
    /// ```
    pub fn set_status(&mut self, status: Status) {
        if let Some(recording) = &mut *self.recording
            && recording.record.data.status != Status::Ok
            && status != Status::Unset
        {
            recording.record.data.status = status;
        }
    }

    /// Whether the span's status is already an error: the first failure recorded on an
    /// exchange is its cause, and what follows from it (a body cut short after a 5xx) keeps it.
    #[cfg(any(feature = "tower", feature = "reqwest"))]
    pub(crate) fn has_failed(&self) -> bool {
        self.recording
            .as_ref()
            .is_some_and(|recording| matches!(recording.record.data.status, Status::Error(_)))
    }

    /// Renames the span (a route known only after the span started, for example); does
    /// nothing on an unrecorded span. The sampler saw the name the span started with.
    ///
    /// ```
    /// use infra_trace_ctx::{MemoryExporter, Tracer};
    ///
    /// let exporter = MemoryExporter::new();
    /// let tracer = Tracer::builder().exporter(exporter.clone()).build();
    /// let mut span = tracer.span("GET").start();
    /// span.update_name("GET /cart/{id}");
    /// span.end();
    /// assert_eq!(exporter.spans()[0].name, "GET /cart/{id}");
    /// ```
    pub fn update_name(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(recording) = &mut *self.recording {
            recording.record.data.name = name.into();
        }
    }

    /// Makes a context holding this span current on this thread until the guard drops, so
    /// spans started meanwhile become its children. Baggage of the current context is kept.
    pub fn attach(&self) -> ContextGuard {
        let mut cx = Context::current();
        cx.set_span(Some(self.context.clone()));
        cx.attach()
    }

    /// Ends the span now: a recorded span goes to the exporter. Ending again does nothing;
    /// an ended span is unrecorded (its setters do nothing) and keeps its context.
    ///
    /// ```
    /// use infra_trace_ctx::{AlwaysOn, MemoryExporter, Tracer};
    ///
    /// let exporter = MemoryExporter::new();
    /// let tracer = Tracer::builder().sampler(AlwaysOn).exporter(exporter.clone()).build();
    /// let mut span = tracer.span("checkout").start();
    /// let context = span.context().clone();
    /// span.end();
    /// assert!(!span.is_recording());
    /// assert_eq!(span.context(), &context);
    /// span.set_attribute("late", 1); // ignored
    /// span.end(); // nothing more is exported
    /// drop(span); // nor here
    /// assert_eq!(exporter.spans().len(), 1);
    /// assert!(exporter.spans()[0].attributes.is_empty());
    /// ```
    // `&mut self`, as OpenTelemetry's `Span::end`, not `self`: rustc copies a by-value
    // argument of a span's size (64 bytes) into a frame of its own even when `end` is
    // inlined, and the copy read back the context `start` had just written field by field, a
    // store-forwarding stall that took a quarter of an unsampled span's time
    // (`trace_ctx/span_unsampled`).
    #[inline]
    pub fn end(&mut self) {
        self.finish();
    }

    // Always inlined, with the recorded span's work out of line.
    #[inline(always)]
    fn finish(&mut self) {
        if let Some(recording) = self.recording.take() {
            Self::finish_recording(recording);
        }
    }

    fn finish_recording(mut recording: Recording) {
        recording.record.data.end = recording.wall_now();
        let Recording { tracer, record } = recording;
        if !record.data.context.is_sampled() {
            tracer.inner.exporter.record_only(record.into_data());
            return;
        }
        match &tracer.inner.batch {
            Some(batch) => batch.push(record),
            None => tracer.inner.exporter.export(record.into_data()),
        }
        // Counted after the hand-over: a call in between made the span's data take a
        // detour through the stack (an extra copy of `SpanData`, measured).
        #[cfg(feature = "metrics")]
        tracer.inner.metrics.exported();
    }
}

impl Recording {
    fn set_attribute(&mut self, key: Cow<'static, str>, mut value: Value) {
        let limits = &self.tracer.inner.limits;
        let max = limits.max_attributes;
        truncate_value(&mut value, limits.max_attribute_value_length);
        let attributes = &mut self.record.data.attributes;
        if let Some(existing) = attributes.iter_mut().find(|kv| kv.key == key) {
            existing.value = value;
            return;
        }
        if attributes.len() < max && is_valid_key(&key) {
            attributes.push(KeyValue { key, value });
        } else {
            self.record.data.dropped_attributes_count =
                self.record.data.dropped_attributes_count.saturating_add(1);
        }
    }

    /// The wall time now, derived from the start and the monotonic clock so that timestamps
    /// within a span never go backwards even if the wall clock does.
    fn wall_now(&self) -> SystemTime {
        let elapsed = self
            .tracer
            .inner
            .clock
            .elapsed_since(self.record.start_nanos);
        self.record.data.start + elapsed
    }
}

impl Drop for Span {
    #[inline]
    fn drop(&mut self) {
        self.finish();
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("recording", &self.is_recording())
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{AlwaysOff, MemoryExporter, TraceId, TraceIdRatio};
    use crate::{SamplingDecision, SamplingResult, SamplingState};
    use infra_common::ManualClock;

    fn tracer(exporter: &MemoryExporter, clock: &ManualClock) -> Tracer {
        Tracer::builder()
            .service("checkout")
            .exporter(exporter.clone())
            .clock(clock.clone())
            .build()
    }

    #[test]
    fn records_timing_attributes_events_status_and_parent() {
        let exporter = MemoryExporter::new();
        let clock = ManualClock::new();
        let tracer = tracer(&exporter, &clock);
        let mut root = tracer.span("checkout").kind(SpanKind::Server).start();
        root.set_attribute("user", "alice");
        root.set_attribute("user", "bob");
        clock.advance(Duration::from_millis(5));
        root.add_event_with("retry", [KeyValue::new("attempt", 2)]);
        let mut child = {
            let _guard = root.attach();
            tracer.span("charge").kind(SpanKind::Client).start()
        };
        clock.advance(Duration::from_millis(20));
        child.end();
        root.set_status(Status::Error("card declined".into()));
        root.end();

        let spans = exporter.spans();
        assert_eq!(spans.len(), 2);
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(child.parent_span_id, Some(root.context.span_id()));
        assert_eq!(child.context.trace_id(), root.context.trace_id());
        assert_eq!(root.parent_span_id, None);
        assert_eq!(root.duration(), Duration::from_millis(25));
        assert_eq!(child.duration(), Duration::from_millis(20));
        assert_eq!(root.attribute("user"), Some(&Value::from("bob")));
        assert_eq!(root.attributes.len(), 1);
        assert_eq!(root.events[0].name, "retry");
        assert_eq!(root.events[0].time, root.start + Duration::from_millis(5));
        assert_eq!(root.status, Status::Error("card declined".into()));
        assert_eq!(root.service, "checkout");
        assert!(root.context.flags().is_random() && root.context.is_sampled());
    }

    #[test]
    fn remote_parent_keeps_trace_id_random_flag_and_trace_state() {
        let exporter = MemoryExporter::new();
        let tracer = tracer(&exporter, &ManualClock::new());
        let remote = SpanContext::remote(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED)
            .with_trace_state(crate::TraceState::parse("congo=1").unwrap());
        let span = tracer.span("handle").parent(&remote).start();
        assert_eq!(span.context().trace_id(), remote.trace_id());
        assert_ne!(span.context().span_id(), remote.span_id());
        assert!(
            !span.context().flags().is_random(),
            "the parent did not promise randomness"
        );
        assert_eq!(span.context().trace_state().get("congo"), Some("1"));
        assert!(!span.context().is_remote());
        drop(span);
        assert_eq!(exporter.spans()[0].parent_span_id, Some(remote.span_id()));
    }

    /// (root sampler of a parent-based tracer, B3 headers received, whether the server span
    /// is sampled, its sampling state).
    type Headers = &'static [(&'static str, &'static str)];
    const B3_DECISIONS: &[(bool, Headers, bool, SamplingState)] = &[
        // `b3: 0` alone is "deny", not "no context": no new sampled trace starts.
        (true, &[("b3", "0")], false, SamplingState::Deny),
        (true, &[("x-b3-sampled", "0")], false, SamplingState::Deny),
        (false, &[("b3", "1")], true, SamplingState::Accept),
        (false, &[("b3", "d")], true, SamplingState::Debug),
        // Ids without a state defer: this service's root sampler decides.
        (
            true,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
            true,
            SamplingState::Accept,
        ),
        (
            false,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
            false,
            SamplingState::Deny,
        ),
        (
            false,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
            true,
            SamplingState::Debug,
        ),
        (
            true,
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")],
            false,
            SamplingState::Deny,
        ),
        (true, &[], true, SamplingState::Accept),
    ];

    /// Checks every row of [`B3_DECISIONS`] on the span `start` begins with a tracer whose root
    /// sampler the row names, given the context extracted from the row's headers.
    fn assert_b3_decisions_reach(start: impl Fn(&Tracer, &Context) -> Span) {
        use crate::{B3Propagator, ParentBased, Propagator};
        for (root_samples, received, sampled, state) in B3_DECISIONS {
            let sampler = if *root_samples {
                ParentBased::new(AlwaysOn)
            } else {
                ParentBased::new(AlwaysOff)
            };
            let tracer = Tracer::builder().sampler(sampler).build();
            let remote = B3Propagator::single_header().extract(&received.to_vec());
            let span = start(&tracer, &remote);
            assert_eq!(span.context().is_sampled(), *sampled, "{received:?}");
            assert_eq!(span.context().sampling_state(), *state, "{received:?}");
            if let Some(parent) = remote.span() {
                assert_eq!(span.context().trace_id(), parent.trace_id());
            }
        }
    }

    #[test]
    fn b3_decisions_reach_the_span() {
        assert_b3_decisions_reach(|tracer, remote| tracer.span("handle").remote(remote).start());
    }

    /// The same decisions reach a span started under the current context, as a proxy's
    /// client span or a bridged `tracing` span is: `b3: 0` alone attached as the current
    /// context must not start a sampled trace (nor `b3: d` alone an unsampled one).
    #[test]
    fn b3_decisions_attached_as_the_current_context_reach_the_span() {
        assert_b3_decisions_reach(|tracer, remote| {
            let _current = remote.clone().attach();
            tracer.span("handle").start()
        });
    }

    /// A decision received alone goes to the tracer's sampler as a remote parent's decision
    /// with ids does: `b3: 1` alone must not record a span that the same decision with ids
    /// (or no header at all) would not, whatever the sampler (a switch-off, a ratio, a
    /// parent-based sampler told to re-decide sampled remote parents).
    #[test]
    fn a_decision_received_alone_goes_through_the_configured_sampler() {
        use crate::{B3Propagator, ParentBased, Propagator};
        let samplers: [(&str, Box<dyn Sampler>); 3] = [
            ("always off", Box::new(AlwaysOff)),
            ("ratio 0", Box::new(TraceIdRatio::new(0.0))),
            (
                "remote sampled re-decided",
                Box::new(ParentBased::new(AlwaysOn).remote_sampled(AlwaysOff)),
            ),
        ];
        for (label, sampler) in samplers {
            let tracer = Tracer::builder().sampler(sampler).build();
            for received in [
                "1",
                "d",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
            ] {
                let remote = B3Propagator::single_header().extract(&vec![("b3", received)]);
                let span = tracer.span("handle").remote(&remote).start();
                assert!(!span.context().is_sampled(), "{label}: b3: {received}");
                let _current = remote.clone().attach();
                let span = tracer.span("handle").start();
                assert!(
                    !span.context().is_sampled(),
                    "{label}: b3: {received}, current"
                );
            }
        }
        // The sampler may keep what the caller denied, as it may a denied parent with ids.
        let tracer = Tracer::builder().sampler(AlwaysOn).build();
        for received in ["0", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"] {
            let remote = B3Propagator::single_header().extract(&vec![("b3", received)]);
            let span = tracer.span("handle").remote(&remote).start();
            assert!(span.context().is_sampled(), "always on: b3: {received}");
        }
    }

    #[test]
    fn unsampled_spans_export_nothing_and_propagate_not_sampled() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder()
            .sampler(AlwaysOff)
            .exporter(exporter.clone())
            .build();
        let mut span = tracer.span("quiet").start();
        span.set_attribute("k", 1);
        span.add_event("e");
        span.set_status(Status::Ok);
        assert!(!span.is_recording());
        assert!(!span.context().is_sampled());
        let _guard = span.attach();
        let child = tracer.span("child").start();
        assert_eq!(child.context().trace_id(), span.context().trace_id());
        drop(child);
        span.end();
        assert!(exporter.spans().is_empty());
    }

    /// Log lines written by a [`crate::TraceLogLayer`].
    #[cfg(feature = "tracing")]
    #[derive(Clone, Default)]
    struct Lines(infra_common::sync::Arc<infra_common::sync::Mutex<Vec<u8>>>);

    #[cfg(feature = "tracing")]
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[cfg(feature = "tracing")]
    #[test]
    fn a_tracer_built_without_an_exporter_warns_once() {
        use tracing_subscriber::layer::SubscriberExt as _;

        let lines = Lines::default();
        let subscriber =
            tracing_subscriber::registry().with(crate::TraceLogLayer::from_writer(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let silent = Tracer::builder().service("cart").build();
            silent.span("dropped").start().end();
            silent.span("dropped too").start().end();
            let _ = Tracer::builder().exporter(NoopExporter).build();
            let _ = Tracer::builder().exporter(MemoryExporter::new()).build();
        });
        let text = String::from_utf8(lines.0.lock().clone()).expect("UTF-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("\"level\":\"WARN\""), "{text}");
        assert!(text.contains("no exporter configured"), "{text}");
        assert!(text.contains("cart"), "{text}");
    }

    /// Decides `decision` and, if given, sets the new span's trace state.
    #[derive(Debug)]
    struct Fixed(SamplingDecision, Option<&'static str>);

    impl Sampler for Fixed {
        fn should_sample(
            &self,
            _parent: Option<&SpanContext>,
            _trace_id: TraceId,
            _name: &str,
            _kind: SpanKind,
        ) -> SamplingDecision {
            self.0
        }

        fn sample(
            &self,
            parent: Option<&SpanContext>,
            trace_id: TraceId,
            name: &str,
            kind: SpanKind,
        ) -> SamplingResult {
            let decision = self.should_sample(parent, trace_id, name, kind);
            match self.1 {
                Some(state) => SamplingResult::with_trace_state(
                    decision,
                    crate::TraceState::parse(state).expect("a valid tracestate"),
                ),
                None => SamplingResult::keep(decision),
            }
        }
    }

    #[test]
    fn sampling_state_flags_and_trace_state_follow_the_decision_and_the_parent() {
        use SamplingDecision::{Drop, RecordAndSample, RecordOnly};
        let parent = |state: SamplingState| {
            SpanContext::remote(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED)
                .with_sampling_state(state)
                .with_trace_state(crate::TraceState::parse("congo=1").unwrap())
        };
        // (parent's state, sampler, sampled, recording, state, trace state)
        let cases = [
            (
                SamplingState::Debug,
                Fixed(RecordAndSample, None),
                true,
                true,
                SamplingState::Debug,
                "congo=1",
            ),
            (
                SamplingState::Debug,
                Fixed(Drop, None),
                false,
                false,
                SamplingState::Deny,
                "congo=1",
            ),
            (
                SamplingState::Debug,
                Fixed(RecordOnly, None),
                false,
                true,
                SamplingState::Deny,
                "congo=1",
            ),
            (
                SamplingState::Accept,
                Fixed(RecordAndSample, None),
                true,
                true,
                SamplingState::Accept,
                "congo=1",
            ),
            (
                SamplingState::Accept,
                Fixed(Drop, Some("rojo=2")),
                false,
                false,
                SamplingState::Deny,
                "rojo=2",
            ),
            (
                SamplingState::Debug,
                Fixed(RecordOnly, Some("rojo=2")),
                false,
                true,
                SamplingState::Deny,
                "rojo=2",
            ),
            (
                SamplingState::Accept,
                Fixed(RecordAndSample, Some("")),
                true,
                true,
                SamplingState::Accept,
                "",
            ),
        ];
        for (state, sampler, sampled, recording, expected, trace_state) in cases {
            let label = format!("{state:?} parent, {sampler:?}");
            let parent = parent(state);
            let tracer = Tracer::builder().sampler(sampler).build();
            let span = tracer.span("child").parent(&parent).start();
            let cx = span.context();
            assert_eq!(cx.is_sampled(), sampled, "{label}");
            assert_eq!(span.is_recording(), recording, "{label}");
            assert_eq!(cx.sampling_state(), expected, "{label}");
            assert_eq!(cx.trace_state().as_str(), trace_state, "{label}");
            assert_eq!(cx.trace_id(), parent.trace_id(), "{label}");
            assert!(!cx.is_remote() && !cx.flags().is_random(), "{label}");
        }
    }

    /// The recording's tracer and box fit in the room the context's alignment leaves.
    #[test]
    fn a_span_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Span>(), 64);
    }

    #[test]
    fn explicit_root_ignores_the_current_span() {
        let tracer = Tracer::builder().sampler(TraceIdRatio::new(1.0)).build();
        let outer = tracer.span("outer").start();
        let _guard = outer.attach();
        let root = tracer.span("new trace").root().start();
        assert_ne!(root.context().trace_id(), outer.context().trace_id());
        assert_eq!(SpanKind::Consumer.as_str(), "consumer");
    }
}
