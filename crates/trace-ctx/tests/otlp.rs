//! The OTLP exporter against a loopback receiver: what it sends is decoded with the official
//! protobuf definitions (`opentelemetry-proto`) and compared field by field with a mapping
//! written here from the OTLP specification.
#![cfg(feature = "otlp")]

mod support;

use std::io::Read as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra_common::ManualClock;
use infra_common::sync::{Arc, Mutex, thread};
use infra_testkit::LoopbackListener;
use infra_trace_ctx::{
    BatchSpanProcessor, Compression, ExportError, KeyValue, Link, MemoryExporter, OtlpExporter,
    OtlpExporterBuilder, Protocol, RetryPolicy, ShutdownSignal, SpanBatchExporter, SpanContext,
    SpanData, SpanId, SpanKind, SpanLimits, Status, TraceFlags, TraceId, TraceState, Tracer, Value,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use prost::Message as _;
use support::eventually;
use support::receiver::{Receiver, Reply, Request};

/// Spans that use every field: each attribute type, events, links (local and remote, with
/// trace state), each status, each kind, parents, and every dropped count.
fn sample_spans() -> Vec<SpanData> {
    let memory = MemoryExporter::new();
    let clock = ManualClock::new();
    let limits = SpanLimits {
        max_attributes: 5,
        max_events: 2,
        max_links: 2,
        max_attributes_per_event: 1,
        max_attributes_per_link: 1,
        max_attribute_value_length: None,
    };
    let tracer = Tracer::builder()
        .service("checkout")
        .exporter(memory.clone())
        .clock(clock.clone())
        .span_limits(limits)
        .build();
    let remote = SpanContext::remote(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED)
        .with_trace_state(TraceState::parse("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").unwrap());
    let mut root = tracer
        .span("GET /cart")
        .kind(SpanKind::Server)
        .parent(&remote)
        .start();
    root.set_attribute("http.method", "GET");
    root.set_attribute("retries", -3);
    root.set_attribute("ratio", 0.25);
    root.set_attribute("cached", true);
    root.set_attribute("big", i64::MAX);
    root.set_attribute("over.limit", "dropped");
    clock.advance(Duration::from_micros(1_500));
    root.add_event_with(
        "retry",
        [KeyValue::new("attempt", 2), KeyValue::new("dropped", 1)],
    );
    root.add_event("cache miss");
    root.add_event("over the event limit");
    let local = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
    root.add_link(Link::new(local).with_attributes([
        KeyValue::new("queue", "orders"),
        KeyValue::new("dropped", 1.5),
    ]));
    root.add_link(Link::new(remote.clone()));
    root.add_link(Link::new(remote.clone()));
    {
        let _guard = root.attach();
        let mut child = tracer.span("charge").kind(SpanKind::Client).start();
        child.set_status(Status::Ok);
        clock.advance(Duration::from_millis(20));
        child.end();
        let mut producer = tracer.span("").kind(SpanKind::Producer).start();
        producer.set_status(Status::Error("".into()));
        producer.end();
        tracer
            .span("consume")
            .kind(SpanKind::Consumer)
            .start()
            .end();
        tracer.span("inside").root().start().end();
    }
    root.set_status(Status::Error("card \"declined\"\n".into()));
    clock.advance(Duration::from_millis(3));
    root.end();
    memory.spans()
}

fn nanos(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

fn any_value(value: &Value) -> common::AnyValue {
    use common::any_value::Value as V;
    let value = match value {
        Value::Str(s) => V::StringValue(s.to_string()),
        Value::I64(n) => V::IntValue(*n),
        Value::F64(x) => V::DoubleValue(*x),
        Value::Bool(b) => V::BoolValue(*b),
    };
    common::AnyValue { value: Some(value) }
}

fn key_values(attributes: &[KeyValue]) -> Vec<common::KeyValue> {
    attributes
        .iter()
        .map(|kv| common::KeyValue {
            key: kv.key.to_string(),
            value: Some(any_value(&kv.value)),
            ..Default::default()
        })
        .collect()
}

/// The request the OTLP specification describes for `spans`, written from the .proto
/// definitions, independently of the exporter's encoder.
fn expected_request(
    service: &str,
    resource: &[KeyValue],
    spans: &[SpanData],
) -> ExportTraceServiceRequest {
    let mut attributes = vec![KeyValue::new("service.name", service.to_owned())];
    attributes.extend_from_slice(resource);
    // The SDK's description, from the resource conventions, after the user's attributes.
    let sdk = [
        KeyValue::new("telemetry.sdk.name", "infra-trace-ctx"),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    for kv in sdk {
        if !resource.iter().any(|set| set.key == kv.key) {
            attributes.push(kv);
        }
    }
    let spans = spans
        .iter()
        .map(|span| trace::Span {
            trace_id: span.context.trace_id().to_bytes().to_vec(),
            span_id: span.context.span_id().to_bytes().to_vec(),
            trace_state: span.context.trace_state().to_string(),
            parent_span_id: span
                .parent_span_id
                .map(|id| id.to_bytes().to_vec())
                .unwrap_or_default(),
            // SpanFlags: the W3C flags, and whether the parent was remote (always known).
            flags: u32::from(span.context.flags().bits())
                | trace::SpanFlags::ContextHasIsRemoteMask as u32
                | if span.parent_is_remote {
                    trace::SpanFlags::ContextIsRemoteMask as u32
                } else {
                    0
                },
            name: span.name.to_string(),
            kind: match span.kind {
                SpanKind::Internal => trace::span::SpanKind::Internal,
                SpanKind::Server => trace::span::SpanKind::Server,
                SpanKind::Client => trace::span::SpanKind::Client,
                SpanKind::Producer => trace::span::SpanKind::Producer,
                SpanKind::Consumer => trace::span::SpanKind::Consumer,
            } as i32,
            start_time_unix_nano: nanos(span.start),
            end_time_unix_nano: nanos(span.end),
            attributes: key_values(&span.attributes),
            dropped_attributes_count: span.dropped_attributes_count,
            events: span
                .events
                .iter()
                .map(|event| trace::span::Event {
                    time_unix_nano: nanos(event.time),
                    name: event.name.to_string(),
                    attributes: key_values(&event.attributes),
                    dropped_attributes_count: event.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: span.dropped_events_count,
            links: span
                .links
                .iter()
                .map(|link| trace::span::Link {
                    trace_id: link.context.trace_id().to_bytes().to_vec(),
                    span_id: link.context.span_id().to_bytes().to_vec(),
                    trace_state: link.context.trace_state().to_string(),
                    attributes: key_values(&link.attributes),
                    dropped_attributes_count: link.dropped_attributes_count,
                    flags: u32::from(link.context.flags().bits())
                        | trace::SpanFlags::ContextHasIsRemoteMask as u32
                        | if link.context.is_remote() {
                            trace::SpanFlags::ContextIsRemoteMask as u32
                        } else {
                            0
                        },
                })
                .collect(),
            dropped_links_count: span.dropped_links_count,
            status: match &span.status {
                Status::Unset => None,
                Status::Ok => Some(trace::Status {
                    message: String::new(),
                    code: trace::status::StatusCode::Ok as i32,
                }),
                Status::Error(message) => Some(trace::Status {
                    message: message.to_string(),
                    code: trace::status::StatusCode::Error as i32,
                }),
            },
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![trace::ResourceSpans {
            resource: Some(Resource {
                attributes: key_values(&attributes),
                ..Default::default()
            }),
            scope_spans: vec![trace::ScopeSpans {
                scope: Some(common::InstrumentationScope {
                    name: "infra-trace-ctx".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn exporter(receiver: &Receiver, builder: OtlpExporterBuilder) -> OtlpExporter {
    builder
        .endpoint(&receiver.endpoint())
        .retry(quick_retries(3))
        .build()
        .unwrap()
}

/// Exports `spans` once to a new receiver answering `script`, through an exporter built from
/// `builder` with quick retries: what the export returned and what the receiver saw.
fn send(
    script: Vec<Reply>,
    builder: OtlpExporterBuilder,
    spans: &[SpanData],
) -> (Result<(), ExportError>, Vec<Request>) {
    let receiver = Receiver::start(script);
    let result = exporter(&receiver, builder).export_batch(spans);
    (result, receiver.requests())
}

fn decode_protobuf(body: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(body).expect("a valid ExportTraceServiceRequest")
}

#[test]
fn protobuf_carries_every_field_of_every_span() {
    let spans = sample_spans();
    assert!(spans.iter().any(|s| s.dropped_attributes_count > 0));
    assert!(
        spans
            .iter()
            .any(|s| s.dropped_events_count > 0 && s.dropped_links_count > 0)
    );
    let resource = [
        KeyValue::new("deployment.environment", "test"),
        KeyValue::new("host.cores", 2),
    ];
    let builder = resource
        .iter()
        .fold(OtlpExporter::builder().service_name("cart"), |b, kv| {
            b.resource_attribute(kv.clone())
        });
    let (result, requests) = send(Vec::new(), builder, &spans);
    result.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/traces")
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.header("content-encoding"), None);
    let decoded = decode_protobuf(&request.body);
    assert_eq!(decoded, expected_request("cart", &resource, &spans));
    // The server span continues a remote parent; its children and the new root do not.
    let remote_bits = |name: &str| {
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        spans.iter().find(|s| s.name == name).unwrap().flags & 0x300
    };
    assert_eq!(remote_bits("GET /cart"), 0x300);
    assert_eq!(remote_bits("charge"), 0x100);
    assert_eq!(remote_bits("inside"), 0x100);
}

#[test]
fn json_carries_every_field_of_every_span() {
    let spans = sample_spans();
    let (result, requests) = send(
        Vec::new(),
        OtlpExporter::builder().protocol(Protocol::HttpJson),
        &spans,
    );
    result.unwrap();
    let request = &requests[0];
    assert_eq!(request.header("content-type"), Some("application/json"));
    let decoded: ExportTraceServiceRequest =
        serde_json::from_slice(&request.body).expect("OTLP/JSON the official types accept");
    // Without a configured name, the resource is named after the tracer's service.
    assert_eq!(decoded, expected_request("checkout", &[], &spans));
    // The JSON mapping's own spellings: hex ids, 64-bit integers as strings.
    let text = std::str::from_utf8(&request.body).unwrap();
    assert!(text.contains(&format!("\"traceId\":\"{}\"", spans[0].context.trace_id())));
    assert!(text.contains(&format!("\"intValue\":\"{}\"", i64::MAX)));
}

#[test]
fn spans_of_several_services_get_a_resource_each() {
    let mut spans = Vec::new();
    for service in ["cart", "pricing", "cart"] {
        let memory = MemoryExporter::new();
        let tracer = Tracer::builder()
            .service(service)
            .exporter(memory.clone())
            .build();
        tracer.span(format!("{service}-op")).start().end();
        spans.extend(memory.spans());
    }
    let (result, requests) = send(Vec::new(), OtlpExporter::builder(), &spans);
    result.unwrap();
    let decoded = decode_protobuf(&requests[0].body);
    let cart = expected_request("cart", &[], &[spans[0].clone(), spans[2].clone()]);
    let pricing = expected_request("pricing", &[], &spans[1..2]);
    assert_eq!(
        decoded.resource_spans,
        [cart.resource_spans, pricing.resource_spans].concat()
    );
}

/// The resource's attributes as (key, string value) pairs, in order, from a protobuf body.
fn resource_strings(body: &[u8]) -> Vec<(String, String)> {
    let decoded = decode_protobuf(body);
    let resource = decoded.resource_spans[0].resource.clone().unwrap();
    resource
        .attributes
        .into_iter()
        .map(|kv| {
            let value = match kv.value.and_then(|value| value.value) {
                Some(common::any_value::Value::StringValue(text)) => text,
                other => format!("{other:?}"),
            };
            (kv.key, value)
        })
        .collect()
}

/// The resource conventions require an SDK to describe itself (`telemetry.sdk.name`,
/// `.language`, `.version`); an attribute the user sets under one of those keys replaces it.
#[test]
fn the_resource_names_the_sdk_unless_the_user_does() {
    let spans = sample_spans();
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let strings = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let mut body = Vec::new();
    let plain = OtlpExporter::builder()
        .service_name("cart")
        .build()
        .unwrap();
    plain.encode(&spans, &mut body);
    assert_eq!(
        resource_strings(&body),
        strings(&[
            ("service.name", "cart"),
            ("telemetry.sdk.name", "infra-trace-ctx"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", &version),
        ])
    );

    let renamed = OtlpExporter::builder()
        .service_name("cart")
        .resource_attribute(KeyValue::new("telemetry.sdk.name", "in-house"))
        .build()
        .unwrap();
    body.clear();
    renamed.encode(&spans, &mut body);
    assert_eq!(
        resource_strings(&body),
        strings(&[
            ("service.name", "cart"),
            ("telemetry.sdk.name", "in-house"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", &version),
        ])
    );
}

/// OpenTelemetry's resource conventions name a service that was given no name
/// `unknown_service`, which backends group such services under.
#[test]
fn a_tracer_without_a_service_name_exports_the_specifications_unknown_service() {
    let memory = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(memory.clone()).build();
    tracer.span("op").start().end();
    let exporter = OtlpExporter::builder().build().unwrap();
    let mut body = Vec::new();
    exporter.encode(&memory.spans(), &mut body);
    let decoded = decode_protobuf(&body);
    let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
    let service = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.clone());
    assert_eq!(
        service,
        Some(common::any_value::Value::StringValue(
            "unknown_service".into()
        ))
    );
}

#[test]
fn gzip_bodies_round_trip() {
    let spans = sample_spans();
    let (result, requests) = send(
        Vec::new(),
        OtlpExporter::builder().compression(Compression::Gzip),
        &spans,
    );
    result.unwrap();
    let request = &requests[0];
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(request.body.as_slice())
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(
        decode_protobuf(&body),
        expected_request("checkout", &[], &spans)
    );
}

/// The OTLP exporter specification asks exporters to name themselves, their language and
/// their version in `User-Agent`; a header configured by the user replaces that name.
#[test]
fn requests_name_the_exporter_in_their_user_agent() {
    let spans = sample_spans();
    let (result, requests) = send(Vec::new(), OtlpExporter::builder(), &spans);
    result.unwrap();
    let expected = format!(
        "infra-trace-ctx/{} (Rust; OTLP exporter)",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(requests[0].header("user-agent"), Some(expected.as_str()));

    let (result, requests) = send(
        Vec::new(),
        OtlpExporter::builder().header("User-Agent", "checkout/2.1"),
        &spans,
    );
    result.unwrap();
    let agents: Vec<&str> = requests[0]
        .headers
        .iter()
        .filter(|(name, _)| name == "user-agent")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(agents, ["checkout/2.1"]);
}

#[test]
fn retries_503_and_429_then_succeeds_with_the_same_body() {
    let script = vec![
        Reply::Status(503, vec![]),
        Reply::Status(429, vec![("retry-after", "0".to_owned())]),
    ];
    let (result, requests) = send(script, OtlpExporter::builder(), &sample_spans());
    result.unwrap();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
}

/// A receiver that asks for more than `max_backoff` (5 s by default) is not asked again early:
/// the batch is given up after its one request.
#[test]
fn a_retry_after_beyond_the_max_backoff_gives_up_without_asking_again() {
    let script = vec![Reply::Status(429, vec![("retry-after", "3600".to_owned())]); 3];
    let (result, requests) = send(script, OtlpExporter::builder(), &sample_spans());
    assert_eq!(
        result,
        Err(ExportError::GaveUp {
            attempts: 1,
            last: Box::new(ExportError::Rejected { status: 429 }),
        })
    );
    assert_eq!(requests.len(), 1);
}

#[test]
fn gives_up_after_the_attempt_limit() {
    let script = vec![Reply::Status(502, vec![]); 10];
    let (result, requests) = send(script, OtlpExporter::builder(), &sample_spans());
    assert_eq!(
        result,
        Err(ExportError::GaveUp {
            attempts: 3,
            last: Box::new(ExportError::Rejected { status: 502 }),
        })
    );
    assert_eq!(requests.len(), 3);
}

/// `RetryPolicy::max_attempts` of 0 counts as 1: the request is sent once, not retried.
#[test]
fn zero_attempts_send_the_request_once() {
    let receiver = Receiver::start(vec![Reply::Status(503, vec![]); 3]);
    let result = OtlpExporter::builder()
        .endpoint(&receiver.endpoint())
        .retry(quick_retries(0))
        .build()
        .unwrap()
        .export_batch(&sample_spans());
    assert_eq!(
        result,
        Err(ExportError::GaveUp {
            attempts: 1,
            last: Box::new(ExportError::Rejected { status: 503 }),
        })
    );
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn a_client_error_is_not_retried() {
    let script = vec![Reply::Status(400, vec![])];
    let (result, requests) = send(script, OtlpExporter::builder(), &sample_spans());
    assert_eq!(result, Err(ExportError::Rejected { status: 400 }));
    assert_eq!(requests.len(), 1);
}

#[test]
fn a_receiver_that_never_answers_hits_the_timeout() {
    let receiver = Receiver::start(vec![Reply::Silence; 2]);
    let mut otlp = OtlpExporter::builder()
        .endpoint(&receiver.endpoint())
        .timeout(Duration::from_millis(200))
        .retry(quick_retries(2))
        .build()
        .unwrap();
    match otlp.export_batch(&sample_spans()) {
        Err(ExportError::GaveUp { attempts: 2, last }) => {
            assert!(matches!(*last, ExportError::Transport(_)), "{last:?}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(receiver.requests().len(), 2);
}

#[test]
fn a_refused_connection_is_retried_then_reported_as_a_failure() {
    // A loopback port that was free a moment ago and has nothing listening any more.
    let closed = LoopbackListener::bind().unwrap().addr();
    let to_closed_port = || {
        OtlpExporter::builder()
            .endpoint(&format!("http://{closed}"))
            .retry(quick_retries(3))
            .build()
            .unwrap()
    };
    match to_closed_port().export_batch(&sample_spans()) {
        Err(ExportError::GaveUp { attempts: 3, last }) => {
            assert!(matches!(*last, ExportError::Transport(_)), "{last:?}");
        }
        other => panic!("expected three refused attempts, got {other:?}"),
    }
    // Behind a batch processor the spans count as failed, the flush says so, and nothing
    // else breaks.
    let processor = BatchSpanProcessor::builder(to_closed_port())
        .build()
        .unwrap();
    let tracer = Tracer::builder().exporter(processor.clone()).build();
    tracer.span("lost").start().end();
    match processor.force_flush(Duration::from_secs(60)) {
        Err(ExportError::NotDelivered {
            spans: 1,
            last: Some(last),
        }) => assert!(
            matches!(*last, ExportError::GaveUp { attempts: 3, .. }),
            "{last:?}"
        ),
        other => panic!("expected the lost span reported, got {other:?}"),
    }
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (1, 0, 1));
}

/// A `Retry-After` date is read against the exporter's clock, not the machine's: on a clock
/// set to 2100, a date in 2099 is past, so the retry is immediate even though the back-off
/// (and a reading against the real calendar) would wait ten minutes.
#[test]
fn a_retry_after_date_is_measured_from_the_exporters_clock() {
    let now = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
    let clock = ManualClock::with_wall_time(now);
    let a_day_ago = httpdate::fmt_http_date(now - Duration::from_secs(86_400));
    let receiver = Receiver::start(vec![Reply::Status(503, vec![("retry-after", a_day_ago)])]);
    let ten_minutes = Duration::from_secs(600);
    let mut otlp = OtlpExporter::builder()
        .endpoint(&receiver.endpoint())
        .clock(clock)
        .retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: ten_minutes,
            max_backoff: ten_minutes,
        })
        .build()
        .unwrap();
    let spans = sample_spans();
    let done = Arc::new(Mutex::new(None));
    let finished = Arc::clone(&done);
    // On a thread of its own, so a wrong wait fails the bounded poll instead of hanging.
    drop(thread::spawn(move || {
        *finished.lock() = Some(otlp.export_batch(&spans));
    }));
    eventually(|| done.lock().is_some());
    assert_eq!(done.lock().take(), Some(Ok(())));
    assert_eq!(receiver.requests().len(), 2);
}

/// Reads variables from `vars` instead of the process environment.
fn lookup_in(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Environment variables that configure the exporter, and what the receiver then sees.
#[test]
fn environment_variables_configure_the_exporter() {
    let receiver = Receiver::start(Vec::new());
    let endpoint = receiver.endpoint();
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{endpoint}/base/")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/protobuf".to_owned(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=s%C3%A9cret%2C1 , x-team = cart,".to_owned(),
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_owned()),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", " ".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=ignored,region=eu%20west".to_owned(),
        ),
        ("OTEL_SERVICE_NAME", "cart".to_owned()),
    ];
    let mut otlp = OtlpExporter::builder()
        .from_lookup(lookup_in(&vars))
        .unwrap()
        .build()
        .unwrap();
    let spans = sample_spans();
    otlp.export_batch(&spans).unwrap();
    let request = &receiver.requests()[0];
    assert_eq!(request.path, "/base/v1/traces");
    assert_eq!(request.header("api-key"), Some("sécret,1"));
    assert_eq!(request.header("x-team"), Some("cart"));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(request.header("content-encoding"), Some("gzip"));
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(request.body.as_slice())
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(
        decode_protobuf(&body),
        expected_request("cart", &[KeyValue::new("region", "eu west")], &spans)
    );

    // The traces endpoint is used as given.
    let traces = [(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        format!("{endpoint}/custom"),
    )];
    OtlpExporter::builder()
        .from_lookup(lookup_in(&traces))
        .unwrap()
        .build()
        .unwrap()
        .export_batch(&spans)
        .unwrap();
    assert_eq!(receiver.requests()[1].path, "/custom");
}

/// The resource SDK specification has `,` and `=` percent-encoded in `OTEL_RESOURCE_ATTRIBUTES`
/// keys as well as values, so both are decoded.
#[test]
fn resource_attribute_keys_are_percent_decoded_like_values() {
    let vars = [(
        "OTEL_RESOURCE_ATTRIBUTES",
        "team%3Dsub%2Cteam=cart%2Cpay,k%C3%A9y=v".to_owned(),
    )];
    let otlp = OtlpExporter::builder()
        .service_name("cart")
        .from_lookup(lookup_in(&vars))
        .unwrap()
        .build()
        .unwrap();
    let mut body = Vec::new();
    otlp.encode(&sample_spans(), &mut body);
    let attributes = resource_strings(&body);
    assert_eq!(
        attributes[1..3],
        [
            ("team=sub,team".to_owned(), "cart,pay".to_owned()),
            ("kéy".to_owned(), "v".to_owned()),
        ]
    );
    let malformed = OtlpExporter::builder()
        .from_lookup(|n| (n == "OTEL_RESOURCE_ATTRIBUTES").then(|| "k%zz=v".to_owned()));
    assert!(matches!(
        malformed,
        Err(ExportError::InvalidConfig {
            setting: "OTEL_RESOURCE_ATTRIBUTES",
            ..
        })
    ));
}

/// An attribute key must be a non-empty string (the OpenTelemetry common specification):
/// attributes with an empty key, set on a span, its events, its links or the resource, never
/// reach the receiver.
#[test]
fn no_attribute_with_an_empty_key_is_exported() {
    let memory = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(memory.clone()).build();
    let empty = || KeyValue::new("", "no name");
    let linked = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
    let mut span = tracer
        .span("empty keys")
        .link(Link::new(linked.clone()).with_attributes([empty()]))
        .start();
    span.set_attribute("", 1);
    span.add_event_with("tick", [empty()]);
    span.add_link(Link::new(linked).with_attributes([empty()]));
    span.end();
    let otlp = OtlpExporter::builder()
        .service_name("cart")
        .resource_attribute(empty())
        .build()
        .unwrap();
    let mut body = Vec::new();
    otlp.encode(&memory.spans(), &mut body);

    let decoded = decode_protobuf(&body);
    let resource_spans = &decoded.resource_spans[0];
    let span = &resource_spans.scope_spans[0].spans[0];
    let keys = resource_spans.resource.iter().flat_map(|r| &r.attributes);
    let keys = keys
        .chain(&span.attributes)
        .chain(span.events.iter().flat_map(|e| &e.attributes))
        .chain(span.links.iter().flat_map(|l| &l.attributes));
    assert!(keys.clone().count() >= 4, "the resource describes the SDK");
    assert!(keys.clone().all(|kv| !kv.key.is_empty()), "{decoded:?}");
    assert_eq!(span.dropped_attributes_count, 1);
    assert_eq!(span.events[0].dropped_attributes_count, 1);
    assert!(span.links.iter().all(|l| l.dropped_attributes_count == 1));
}

/// (variable, value) pairs that must be refused, each naming its variable.
const INVALID: &[(&str, &str)] = &[
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/xml"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "=value"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "key=bad%zzescape"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "key=%E"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "+5"),
    (
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "99999999999999999999999",
    ),
    ("OTEL_RESOURCE_ATTRIBUTES", "region"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=1,=2"),
    // A key that is blank once decoded is as empty as one written blank.
    ("OTEL_RESOURCE_ATTRIBUTES", "%20=v"),
    ("OTEL_RESOURCE_ATTRIBUTES", "a=1,%09%20=2"),
    // Escapes that decode to bytes which are not UTF-8: a failure to decode, not U+FFFD.
    ("OTEL_RESOURCE_ATTRIBUTES", "region=eu%FF"),
    ("OTEL_RESOURCE_ATTRIBUTES", "k%C3=v"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=%C3%28"),
];

#[test]
fn malformed_environment_values_are_errors_naming_the_variable() {
    for (name, value) in INVALID {
        let result =
            OtlpExporter::builder().from_lookup(|n| (n == *name).then(|| (*value).to_owned()));
        match result {
            Err(ExportError::InvalidConfig { setting, .. }) => assert_eq!(setting, *name),
            other => panic!("{name}={value:?}: expected an error, got {other:?}"),
        }
    }
}

/// Endpoints, headers and timeouts are checked when building, whether from code or the
/// environment.
#[test]
fn unusable_endpoints_and_headers_are_refused_when_building() {
    let builders = [
        OtlpExporter::builder().traces_endpoint("not a url"),
        OtlpExporter::builder().traces_endpoint("https://collector:4318/v1/traces"),
        OtlpExporter::builder().traces_endpoint("ftp://collector/v1/traces"),
        OtlpExporter::builder().traces_endpoint("/v1/traces"),
        OtlpExporter::builder().header("bad header", "x"),
        OtlpExporter::builder().header("x-ok", "line\nbreak"),
        OtlpExporter::builder().header("Content-Type", "text/plain"),
        OtlpExporter::builder().header("content-encoding", "br"),
        OtlpExporter::builder().header("Content-Length", "0"),
        OtlpExporter::builder().timeout(Duration::ZERO),
        OtlpExporter::builder().timeout(Duration::MAX),
        OtlpExporter::builder().timeout(Duration::from_secs(3601)),
        OtlpExporter::builder()
            .from_lookup(|n| (n == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "k=%0D%0A".to_owned()))
            .unwrap(),
    ];
    for builder in builders {
        let debug = format!("{builder:?}");
        assert!(
            matches!(builder.build(), Err(ExportError::InvalidConfig { .. })),
            "{debug}"
        );
    }
}

/// A receiver's answer to an accepted request, encoded by the official definitions.
fn partial_success_protobuf(rejected: i64, message: &str) -> Vec<u8> {
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.to_owned(),
        }),
    }
    .encode_to_vec()
}

/// OTLP's partial success: a `200` whose body names spans the receiver did not store is
/// reported with them, in either encoding, and not retried (the specification forbids it).
#[test]
fn a_partial_success_reports_the_rejected_spans_and_is_not_retried() {
    let protobuf = Reply::Body(
        "application/x-protobuf",
        partial_success_protobuf(2, "span too large"),
    );
    let json = Reply::Body(
        "application/json",
        br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"span too large"}}"#.to_vec(),
    );
    let json_builder = OtlpExporter::builder().protocol(Protocol::HttpJson);
    for (reply, builder) in [(protobuf, OtlpExporter::builder()), (json, json_builder)] {
        let (result, requests) = send(vec![reply], builder, &sample_spans());
        assert_eq!(
            result,
            Err(ExportError::PartiallyRejected {
                rejected: 2,
                message: "span too large".to_owned(),
            })
        );
        assert_eq!(requests.len(), 1);
    }
}

/// The exporter's failure counter counts the spans it could not deliver: only the rejected
/// ones of a partial success, every span of a batch refused whole.
#[cfg(feature = "metrics")]
#[test]
fn the_failure_counter_counts_only_the_spans_not_delivered() {
    use infra_testkit::metrics::{counters, value};
    use infra_trace_ctx::metrics::{EXPORT_FAILURES_TOTAL, EXPORTER_LABEL};
    use metrics_util::debugging::DebuggingRecorder;

    let spans = sample_spans();
    let receiver = Receiver::start(vec![
        Reply::Body(
            "application/x-protobuf",
            partial_success_protobuf(2, "span too large"),
        ),
        Reply::Status(400, vec![]),
    ]);
    let recorder = DebuggingRecorder::new();
    let mut otlp =
        metrics::with_local_recorder(&recorder, || exporter(&receiver, OtlpExporter::builder()));
    assert!(matches!(
        otlp.export_batch(&spans),
        Err(ExportError::PartiallyRejected { rejected: 2, .. })
    ));
    assert_eq!(
        otlp.export_batch(&spans),
        Err(ExportError::Rejected { status: 400 })
    );
    let series = counters(&recorder.snapshotter());
    assert_eq!(
        value(&series, EXPORT_FAILURES_TOTAL, &[(EXPORTER_LABEL, "otlp")]),
        Some(2 + spans.len() as u64),
        "the two rejected spans of the first batch, all of the second"
    );
}

/// A success body without rejected spans (an empty response, a warning with a count of zero,
/// or bytes that are no response at all) is a success.
#[test]
fn a_success_body_without_rejected_spans_is_a_success() {
    for body in [
        Vec::new(),
        partial_success_protobuf(0, "a warning"),
        b"\xff not protobuf".to_vec(),
    ] {
        let reply = Reply::Body("application/x-protobuf", body);
        let (result, _) = send(vec![reply], OtlpExporter::builder(), &sample_spans());
        result.unwrap();
    }
}

/// The names of the spans a protobuf request carried, in order.
fn span_names(request: &Request) -> Vec<String> {
    decode_protobuf(&request.body)
        .resource_spans
        .iter()
        .flat_map(|group| &group.scope_spans)
        .flat_map(|scope| &scope.spans)
        .map(|span| span.name.clone())
        .collect()
}

/// A receiver (or a proxy in front of it) that answers `413 Content Too Large` gets the batch
/// again in halves, split further while still too large: every span that fits is delivered,
/// and the batch is not lost whole at every export.
#[test]
fn a_batch_too_large_for_the_receiver_is_sent_again_in_halves() {
    let spans = sample_spans();
    assert_eq!(spans.len(), 5);
    let names: Vec<String> = spans.iter().map(|span| span.name.to_string()).collect();
    let too_large = || Reply::Status(413, vec![]);
    // 5 spans: too large; the first 2 fit; the last 3 do not, then 1 and 2 of them do.
    let (result, requests) = send(
        vec![too_large(), Reply::Status(200, vec![]), too_large()],
        OtlpExporter::builder(),
        &spans,
    );
    result.unwrap();
    let sent: Vec<Vec<String>> = requests.iter().map(span_names).collect();
    assert_eq!(
        sent.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 2, 3, 1, 2]
    );
    let delivered: Vec<String> = [1, 3, 4].iter().flat_map(|&i| sent[i].clone()).collect();
    assert_eq!(delivered, names, "each span delivered once, in order");

    // A span too large by itself is the only one lost: the others are delivered, and the
    // result counts the one.
    let (result, requests) = send(
        vec![too_large(), too_large(), too_large()],
        OtlpExporter::builder(),
        &spans,
    );
    let sent: Vec<Vec<String>> = requests.iter().map(span_names).collect();
    assert_eq!(
        sent.iter().map(Vec::len).collect::<Vec<_>>(),
        [5, 2, 1, 1, 3]
    );
    assert_eq!(
        result,
        Err(ExportError::PartiallyRejected {
            rejected: 1,
            message: ExportError::Rejected { status: 413 }.to_string(),
        })
    );
}

/// A receiver that refuses every size with `413` is asked once per node of the halving:
/// `2n − 1` requests for a batch of `n` spans, and the batch is reported refused.
#[test]
fn a_receiver_refusing_every_size_costs_a_batch_of_n_spans_2n_minus_1_requests() {
    let spans = sample_spans();
    for n in 1..=spans.len() {
        let refusals = (0..4 * n).map(|_| Reply::Status(413, vec![])).collect();
        let (result, requests) = send(refusals, OtlpExporter::builder(), &spans[..n]);
        assert_eq!(requests.len(), 2 * n - 1, "a batch of {n}");
        // Every span lost: the receiver's refusal, not a partial rejection.
        assert_eq!(
            result,
            Err(ExportError::Rejected { status: 413 }),
            "a batch of {n}"
        );
    }
}

#[test]
fn a_batch_processor_counts_a_partial_rejection_as_failed_spans() {
    let receiver = Receiver::start(vec![Reply::Body(
        "application/x-protobuf",
        partial_success_protobuf(2, "span too large"),
    )]);
    // The default batch and delay: the five spans wait in the queue for the shutdown, which
    // then sees their export.
    let processor = BatchSpanProcessor::builder(exporter(&receiver, OtlpExporter::builder()))
        .build()
        .unwrap();
    let tracer = Tracer::builder().exporter(processor.clone()).build();
    for n in 0..5 {
        tracer.span(format!("op-{n}")).start().end();
    }
    match processor.shutdown(Duration::from_secs(60)) {
        Err(ExportError::NotDelivered {
            spans: 2,
            last: Some(last),
        }) => assert!(
            matches!(*last, ExportError::PartiallyRejected { rejected: 2, .. }),
            "{last:?}"
        ),
        other => panic!("expected the two rejected spans reported, got {other:?}"),
    }
    let stats = processor.stats();
    assert_eq!((stats.exported, stats.failed), (3, 2));
}

#[test]
fn behind_a_batch_processor_every_span_reaches_the_receiver() {
    let receiver = Receiver::start(Vec::new());
    let processor = BatchSpanProcessor::builder(exporter(&receiver, OtlpExporter::builder()))
        .max_batch_size(3)
        .build()
        .unwrap();
    let tracer = Tracer::builder().exporter(processor.clone()).build();
    for n in 0..7 {
        tracer.span(format!("op-{n}")).start().end();
    }
    processor.shutdown(Duration::from_secs(60)).unwrap();
    let names: Vec<String> = receiver
        .requests()
        .iter()
        .flat_map(|r| decode_protobuf(&r.body).resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|s| s.name)
        .collect();
    assert_eq!(names, (0..7).map(|n| format!("op-{n}")).collect::<Vec<_>>());
    assert_eq!(processor.stats().exported, 7);
}

/// Forwards to an OTLP exporter and sets `ended` when dropped, which happens when the batch
/// processor's background thread ends.
#[derive(Debug)]
struct Watched {
    otlp: OtlpExporter,
    ended: Arc<Mutex<bool>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        *self.ended.lock() = true;
    }
}

impl SpanBatchExporter for Watched {
    fn export_batch(&mut self, batch: &[SpanData]) -> Result<(), ExportError> {
        self.otlp.export_batch(batch)
    }

    fn watch_shutdown(&mut self, signal: ShutdownSignal) {
        self.otlp.watch_shutdown(signal);
    }
}

/// A batch waiting out an hour-long back-off when the processor's shutdown deadline passes
/// is given up at once: shutdown reports the timeout, the batch counts as failed after its
/// one request, and the background thread ends instead of sleeping for the hour.
#[test]
fn a_shutdown_deadline_ends_a_retry_wait() {
    let receiver = Receiver::start(vec![Reply::Status(503, vec![]); 5]);
    let an_hour = Duration::from_secs(3600);
    let otlp = OtlpExporter::builder()
        .endpoint(&receiver.endpoint())
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: an_hour,
            max_backoff: an_hour,
        })
        .build()
        .unwrap();
    let ended = Arc::new(Mutex::new(false));
    let processor = BatchSpanProcessor::builder(Watched {
        otlp,
        ended: Arc::clone(&ended),
    })
    .build()
    .unwrap();
    let tracer = Tracer::builder().exporter(processor.clone()).build();
    tracer.span("stuck").start().end();
    // Start the export without waiting for it, and see its first request answered 503.
    assert_eq!(
        processor.force_flush(Duration::ZERO),
        Err(ExportError::Timeout)
    );
    eventually(|| receiver.requests().len() == 1);
    assert_eq!(
        processor.shutdown(Duration::from_millis(50)),
        Err(ExportError::Timeout)
    );
    // Within the 30 s bound of `eventually`, far less than the hour of back-off.
    eventually(|| *ended.lock());
    let stats = processor.stats();
    assert_eq!((stats.queued, stats.exported, stats.failed), (1, 0, 1));
    assert_eq!(receiver.requests().len(), 1);
}

/// Once the signal is raised an exporter sends nothing more: a batch handed to it afterwards
/// fails at once without a request.
#[test]
fn after_the_shutdown_signal_nothing_is_sent() {
    let receiver = Receiver::start(Vec::new());
    let mut otlp = exporter(&receiver, OtlpExporter::builder());
    let signal = ShutdownSignal::new();
    otlp.watch_shutdown(signal.clone());
    signal.raise();
    assert_eq!(
        otlp.export_batch(&sample_spans()),
        Err(ExportError::Abandoned)
    );
    assert!(receiver.requests().is_empty());
}
