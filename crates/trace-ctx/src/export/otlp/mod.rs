//! An OTLP/HTTP exporter (feature `otlp`): batches of spans encoded as an
//! `ExportTraceServiceRequest` (protobuf or JSON), optionally gzipped, and POSTed to
//! `{endpoint}/v1/traces` with retries.

mod env;
mod http;
mod json;
mod proto;
mod response;

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression as GzipLevel;
use flate2::write::GzEncoder;
use infra_common::sync::Arc;
use infra_common::{Clock, SystemClock};

use super::{ExportError, ShutdownSignal, SpanBatchExporter};
use crate::span::{KeyValue, Link, SpanData, SpanKind, Status, Value};

pub use http::RetryPolicy;

/// The instrumentation scope every span is reported under.
const SCOPE_NAME: &str = "infra-trace-ctx";
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The spec's default endpoint for OTLP/HTTP.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
const TRACES_PATH: &str = "/v1/traces";

/// The URL spans go to from a base endpoint: its path (without a trailing `/`), then
/// [`TRACES_PATH`], then its query or fragment if any.
fn traces_url(base: &str) -> String {
    let (path, rest) = base.split_at(base.find(['?', '#']).unwrap_or(base.len()));
    format!("{}{TRACES_PATH}{rest}", path.trim_end_matches('/'))
}

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// `http/protobuf`: `Content-Type: application/x-protobuf` (the default).
    #[default]
    HttpProtobuf,
    /// `http/json`: `Content-Type: application/json`, per the OTLP/JSON mapping.
    HttpJson,
}

/// Whether request bodies are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Sent as encoded (the default).
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// Sends batches of spans to an OpenTelemetry collector (or any OTLP/HTTP receiver). Meant
/// to sit behind a [`BatchSpanProcessor`](crate::BatchSpanProcessor), whose background thread
/// absorbs the network time.
///
/// Only `http://` endpoints are supported (no TLS is built in); put a local collector or
/// a sidecar in front of a remote `https://` one.
///
/// ```no_run
/// use infra_trace_ctx::{BatchSpanProcessor, OtlpExporter, Tracer};
///
/// // Endpoint, headers, compression, timeout, service name and resource attributes from the
/// // standard OTEL_* variables; the endpoint defaults to http://localhost:4318.
/// let otlp = OtlpExporter::builder().from_env()?.build()?;
/// // The batching ones, OTEL_BSP_*, likewise.
/// let processor = BatchSpanProcessor::builder(otlp).from_env()?.build()?;
/// let tracer = Tracer::builder().service("cart").exporter(processor.clone()).build();
/// tracer.span("GET /cart").start().end();
/// processor.shutdown(std::time::Duration::from_secs(5))?;
/// # Ok::<(), infra_trace_ctx::ExportError>(())
/// ```
#[derive(Debug)]
pub struct OtlpExporter {
    sender: http::Sender,
    protocol: Protocol,
    compression: Compression,
    service_name: Option<String>,
    resource: Vec<KeyValue>,
    body: Vec<u8>,
    compressed: Vec<u8>,
    /// Raised by the batch processor once nobody waits for the spans any more.
    shutdown: ShutdownSignal,
    #[cfg(feature = "metrics")]
    failures: metrics::Counter,
}

/// Settings of an [`OtlpExporter`].
#[derive(Clone, Debug)]
pub struct OtlpExporterBuilder {
    url: String,
    protocol: Protocol,
    compression: Compression,
    headers: Vec<(String, String)>,
    timeout: Duration,
    retry: RetryPolicy,
    service_name: Option<String>,
    resource: Vec<KeyValue>,
    clock: Arc<Box<dyn Clock>>,
}

impl Default for OtlpExporterBuilder {
    fn default() -> Self {
        Self {
            url: format!("{DEFAULT_ENDPOINT}{TRACES_PATH}"),
            protocol: Protocol::default(),
            compression: Compression::default(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            service_name: None,
            resource: Vec::new(),
            clock: Arc::new(Box::new(SystemClock::new())),
        }
    }
}

impl OtlpExporter {
    /// Settings with the spec's defaults: `http://localhost:4318/v1/traces`, protobuf, no
    /// compression, a 10 s timeout per request, [`RetryPolicy::default`].
    pub fn builder() -> OtlpExporterBuilder {
        OtlpExporterBuilder::default()
    }

    /// Encodes `batch` as the request body this exporter sends (before compression).
    pub fn encode(&self, batch: &[SpanData], out: &mut Vec<u8>) {
        let groups = group_by_resource(self.service_name.as_deref(), &self.resource, batch);
        match self.protocol {
            Protocol::HttpProtobuf => proto::encode_request(&groups, out),
            Protocol::HttpJson => json::encode_request(&groups, out),
        }
    }
}

impl OtlpExporter {
    /// Sends `batch`; a receiver that answers `413 Content Too Large` gets it again in two
    /// halves, each split further while it is still too large, down to single spans.
    fn send_fitting(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        match self.send_one_request(batch) {
            Err(ExportError::Rejected { status: 413 }) if batch.len() > 1 => {
                let (first, second) = batch.split_at(batch.len() / 2);
                let first_result = self.send_fitting(first);
                let second_result = self.send_fitting(second);
                combine_halves([(first.len(), first_result), (second.len(), second_result)])
            }
            other => other,
        }
    }

    /// Encodes, compresses and POSTs `batch` as one request.
    fn send_one_request(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        self.encode(batch, &mut body);
        let result = match self.compression {
            Compression::None => self.sender.send(&body, &self.shutdown),
            Compression::Gzip => {
                self.compressed.clear();
                let mut encoder = GzEncoder::new(&mut self.compressed, GzipLevel::fast());
                // Writing to a Vec cannot fail.
                let _ = encoder.write_all(&body);
                let _ = encoder.finish();
                self.sender.send(&self.compressed, &self.shutdown)
            }
        };
        self.body = body;
        result
    }
}

/// The outcome of a batch sent as two halves, each `(spans, result)`: a success if both
/// succeeded; the error of a half when every span failed and a half failed whole; otherwise
/// a partial rejection counting the spans that failed, with what each half said.
fn combine_halves(halves: [(usize, Result<(), ExportError>); 2]) -> Result<(), ExportError> {
    let total: usize = halves.iter().map(|(spans, _)| spans).sum();
    let mut rejected = 0u64;
    let mut whole_failure = None;
    let mut messages = Vec::new();
    for (spans, result) in halves {
        match result {
            Ok(()) => {}
            Err(ExportError::PartiallyRejected {
                rejected: some,
                message,
            }) => {
                rejected += some.min(spans as u64);
                messages.push(message);
            }
            Err(error) => {
                rejected += spans as u64;
                messages.push(error.to_string());
                whole_failure.get_or_insert(error);
            }
        }
    }
    match whole_failure {
        _ if rejected == 0 => Ok(()),
        Some(error) if rejected == total as u64 => Err(error),
        _ => Err(ExportError::PartiallyRejected {
            rejected,
            message: messages.join("; "),
        }),
    }
}

impl SpanBatchExporter for OtlpExporter {
    /// Sends `batch` in one request, or, when the receiver answers `413 Content Too Large`,
    /// in halves (each split again while still too large): spans that fit are delivered, and
    /// only a single span too large by itself is lost. When some halves fail, the result is
    /// [`ExportError::PartiallyRejected`] counting their spans.
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        let result = self.send_fitting(batch);
        // The spans not delivered: of a partial success, only those the receiver rejected.
        #[cfg(feature = "metrics")]
        match &result {
            Ok(()) => {}
            Err(ExportError::PartiallyRejected { rejected, .. }) => {
                self.failures.increment((*rejected).min(batch.len() as u64));
            }
            Err(_) => self.failures.increment(batch.len() as u64),
        }
        result
    }

    /// Waits between attempts on `signal` rather than sleeping, and sends nothing once it is
    /// raised: a batch waiting to retry fails as [`ExportError::GaveUp`], a later one as
    /// [`ExportError::Abandoned`]. A request already in flight still runs to its timeout.
    fn watch_shutdown(&mut self, signal: ShutdownSignal) {
        self.shutdown = signal;
    }
}

impl OtlpExporterBuilder {
    /// The collector's base URL (`http://host:port`, optionally with a path prefix); spans
    /// go to `{endpoint}/v1/traces`, as with `OTEL_EXPORTER_OTLP_ENDPOINT`, the path going
    /// before a query the base URL carries.
    #[must_use]
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.url = traces_url(endpoint);
        self
    }

    /// The full URL spans are POSTed to, used as given, as with
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    #[must_use]
    pub fn traces_endpoint(mut self, url: &str) -> Self {
        url.clone_into(&mut self.url);
        self
    }

    /// Protobuf (the default) or JSON.
    #[must_use]
    pub const fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Gzip or nothing (the default).
    #[must_use]
    pub const fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Adds a header sent with every request (an API key, for example). `Content-Type`,
    /// `Content-Encoding` and `Content-Length` describe the body the exporter writes:
    /// [`build`](Self::build) refuses them. A `User-Agent` replaces the exporter's own,
    /// `infra-trace-ctx/<version> (Rust; OTLP exporter)`.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The most one request may take, connection included: more than zero and at most an
    /// hour ([`build`](Self::build) refuses others). Default 10 s.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// When and how often to retry.
    #[must_use]
    pub const fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The clock whose wall time a receiver's `Retry-After: <HTTP-date>` is measured from.
    /// Default: the system clock.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_trace_ctx::OtlpExporter;
    ///
    /// // Tests pin the calendar, so a Retry-After date means the same wait on every run.
    /// let otlp = OtlpExporter::builder().clock(ManualClock::new()).build()?;
    /// # let _ = otlp;
    /// # Ok::<(), infra_trace_ctx::ExportError>(())
    /// ```
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(Box::new(clock));
        self
    }

    /// The resource's `service.name`. Without it (and without `OTEL_SERVICE_NAME`), each
    /// span's tracer service name is used.
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Adds a resource attribute (`deployment.environment`, `host.name`, ...). Every resource
    /// also describes the SDK, as OpenTelemetry's resource conventions require:
    /// `telemetry.sdk.name` `infra-trace-ctx`, `telemetry.sdk.language` `rust` and
    /// `telemetry.sdk.version` this crate's version, each unless set here. An attribute with
    /// an empty key, which OpenTelemetry calls invalid, is ignored.
    #[must_use]
    pub fn resource_attribute(mut self, attribute: KeyValue) -> Self {
        if !crate::span::is_valid_key(&attribute.key) {
            return self;
        }
        if attribute.key == SERVICE_NAME {
            if let Value::Str(name) = &attribute.value {
                self.service_name = Some(name.to_string());
            }
            return self;
        }
        self.resource.retain(|kv| kv.key != attribute.key);
        self.resource.push(attribute);
        self
    }

    /// Applies the standard environment variables that are set: `OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL` (and the
    /// `_TRACES_` forms of the next three), `OTEL_EXPORTER_OTLP_HEADERS`,
    /// `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds),
    /// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` (which wins over a `service.name`
    /// resource attribute).
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidConfig`] naming the first variable whose value is malformed.
    pub fn from_env(self) -> Result<Self, ExportError> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading from `lookup` instead of the process
    /// environment.
    ///
    /// ```
    /// use infra_trace_ctx::OtlpExporter;
    ///
    /// let builder = OtlpExporter::builder().from_lookup(|name| match name {
    ///     "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("soon".to_owned()),
    ///     _ => None,
    /// });
    /// assert!(builder.is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ExportError> {
        env::apply(self, &lookup)
    }

    /// Checks the settings and prepares the HTTP client.
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidConfig`] for a URL that is not `http://host[:port]/...`, a
    /// header name or value HTTP does not allow, a header describing the body (see
    /// [`header`](Self::header)), or a timeout of zero or over an hour.
    pub fn build(self) -> Result<OtlpExporter, ExportError> {
        let content_type = match self.protocol {
            Protocol::HttpProtobuf => "application/x-protobuf",
            Protocol::HttpJson => "application/json",
        };
        let sender = http::Sender::new(
            &self.url,
            &self.headers,
            content_type,
            self.compression == Compression::Gzip,
            self.timeout,
            self.retry,
            self.clock,
        )?;
        let mut resource = self.resource;
        for described in sdk_attributes() {
            if !resource.iter().any(|kv| kv.key == described.key) {
                resource.push(described);
            }
        }
        Ok(OtlpExporter {
            sender,
            protocol: self.protocol,
            compression: self.compression,
            service_name: self.service_name,
            resource,
            body: Vec::new(),
            compressed: Vec::new(),
            shutdown: ShutdownSignal::new(),
            #[cfg(feature = "metrics")]
            failures: crate::metrics::export_failures("otlp"),
        })
    }
}

const SERVICE_NAME: &str = "service.name";

/// The attributes OpenTelemetry's resource conventions require of an SDK, describing it.
fn sdk_attributes() -> [KeyValue; 3] {
    [
        KeyValue::new("telemetry.sdk.name", SCOPE_NAME),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.version", SCOPE_VERSION),
    ]
}

/// How long a receiver's `Retry-After: value` asks to wait when the exporter's clock reads
/// `now`, before the `max_backoff` cap; `None` when the value is neither seconds nor an
/// HTTP-date. For the fuzz target.
#[cfg(fuzzing)]
pub fn fuzz_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    http::parse_retry_after(value, now)
}

/// What a receiver's answer to an accepted export says it rejected: `(spans, message)`, or
/// `None` for a body that is not an `ExportTraceServiceResponse` in that encoding. For the
/// fuzz target.
#[cfg(fuzzing)]
pub fn fuzz_otlp_response(body: &[u8], json: bool) -> Option<(u64, String)> {
    let answer = if json {
        response::decode_json(body)
    } else {
        response::decode_protobuf(body)
    };
    answer.map(|partial| (partial.rejected, partial.message))
}

/// One `ResourceSpans`: a resource and the spans recorded under it.
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    spans: Vec<&'a SpanData>,
}

struct Resource<'a> {
    service: KeyValue,
    attributes: &'a [KeyValue],
}

/// Groups `batch` by resource: one group when the service name is configured, otherwise
/// one per tracer service name, in order of first appearance.
fn group_by_resource<'a>(
    configured: Option<&str>,
    attributes: &'a [KeyValue],
    batch: &'a [SpanData],
) -> Vec<ResourceSpans<'a>> {
    let resource = |name: Cow<'static, str>| Resource {
        service: KeyValue::new(SERVICE_NAME, Value::Str(name)),
        attributes,
    };
    if let Some(name) = configured {
        return vec![ResourceSpans {
            resource: resource(Cow::Owned(name.to_owned())),
            spans: batch.iter().collect(),
        }];
    }
    let mut groups: Vec<ResourceSpans<'a>> = Vec::new();
    for span in batch {
        let service = &span.service;
        match groups
            .iter_mut()
            .find(|group| match &group.resource.service.value {
                Value::Str(name) => name == service,
                _ => false,
            }) {
            Some(group) => group.spans.push(span),
            None => groups.push(ResourceSpans {
                resource: resource(service.clone()),
                spans: vec![span],
            }),
        }
    }
    groups
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far in the future).
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `Span.SpanKind` of trace.proto.
const fn span_kind_code(kind: SpanKind) -> u32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status.StatusCode` of trace.proto.
const fn status_code(status: &Status) -> u32 {
    match status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error(_) => 2,
    }
}

/// trace.proto's `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the next bit is meaningful.
const HAS_IS_REMOTE: u32 = 0x100;
/// trace.proto's `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`.
const IS_REMOTE: u32 = 0x200;

/// W3C trace flags in the low byte, then whether `remote` (always known here).
fn remote_flags(flags: crate::TraceFlags, remote: bool) -> u32 {
    u32::from(flags.bits()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

/// A span's flags: its trace flags, and whether its parent came from another process.
fn span_flags(span: &SpanData) -> u32 {
    remote_flags(span.context.flags(), span.parent_is_remote)
}

/// A link's flags: the linked context's trace flags, and whether that context is remote.
fn link_flags(link: &Link) -> u32 {
    remote_flags(link.context.flags(), link.context.is_remote())
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    /// The signal's path goes after the base's path and before its query or fragment, from the
    /// builder and from `OTEL_EXPORTER_OTLP_ENDPOINT` alike.
    #[test]
    fn the_traces_path_goes_before_a_query_of_the_base_endpoint() {
        let cases = [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/otlp/", "http://c:4318/otlp/v1/traces"),
            ("http://c:4318?tenant=a", "http://c:4318/v1/traces?tenant=a"),
            (
                "http://c:4318/otlp/?t=a/b",
                "http://c:4318/otlp/v1/traces?t=a/b",
            ),
            ("http://c:4318/#part", "http://c:4318/v1/traces#part"),
        ];
        for (base, url) in cases {
            assert_eq!(OtlpExporter::builder().endpoint(base).url, url, "{base}");
            let from_env = OtlpExporter::builder()
                .from_lookup(|name| {
                    (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| base.to_owned())
                })
                .unwrap();
            assert_eq!(from_env.url, url, "{base}");
        }
    }

    #[test]
    fn defaults_are_the_specifications() {
        let builder = OtlpExporter::builder();
        assert_eq!(builder.url, "http://localhost:4318/v1/traces");
        assert_eq!(
            (builder.protocol, builder.compression, builder.timeout),
            (
                Protocol::HttpProtobuf,
                Compression::None,
                Duration::from_secs(10)
            )
        );
        assert_eq!(
            builder.retry,
            RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            }
        );
    }
}
