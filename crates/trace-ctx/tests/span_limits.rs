//! Span limits (OpenTelemetry's defaults) with counts of what was dropped, links, and the
//! finality of an `Ok` status.
#![cfg(not(infra_loom))]

use infra_trace_ctx::{
    ExportError, JsonLinesExporter, KeyValue, Link, MemoryExporter, SpanContext, SpanData, SpanId,
    SpanLimits, Status, TraceFlags, TraceId, Tracer,
};
use proptest::prelude::*;

fn attributes(n: usize) -> Vec<KeyValue> {
    (0..n).map(|i| KeyValue::new(format!("a{i}"), 1)).collect()
}

fn link() -> Link {
    Link::new(SpanContext::new(
        TraceId::random(),
        SpanId::random(),
        TraceFlags::SAMPLED,
    ))
}

fn only_span(exporter: &MemoryExporter) -> SpanData {
    let mut spans = exporter.take();
    assert_eq!(spans.len(), 1);
    spans.remove(0)
}

#[test]
fn defaults_are_opentelemetry_s_128() {
    let limits = SpanLimits::default();
    assert_eq!(
        [
            limits.max_attributes,
            limits.max_events,
            limits.max_links,
            limits.max_attributes_per_event,
            limits.max_attributes_per_link
        ],
        [128; 5]
    );
    // The specification's default value length: no limit.
    assert_eq!(limits.max_attribute_value_length, None);
}

#[test]
fn default_limits_drop_and_count_past_128() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let mut builder = tracer.span("busy");
    for _ in 0..130 {
        builder = builder.link(link().with_attributes(attributes(3)));
    }
    let mut span = builder.start();
    for i in 0..200 {
        span.set_attribute(format!("k{i}"), i);
    }
    // Updating a kept key is not a new attribute.
    span.set_attribute("k0", "updated");
    for _ in 0..150 {
        span.add_event_with("tick", attributes(130));
    }
    span.add_link(link().with_attributes(attributes(129)));
    span.end();

    let data = only_span(&exporter);
    assert_eq!(data.attributes.len(), 128);
    assert_eq!(data.dropped_attributes_count, 72);
    assert_eq!(data.attribute("k0"), Some(&"updated".into()));
    assert_eq!(data.attribute("k128"), None);
    assert_eq!(data.events.len(), 128);
    assert_eq!(data.dropped_events_count, 22);
    assert!(data.events.iter().all(|e| e.attributes.len() == 128));
    assert!(data.events.iter().all(|e| e.dropped_attributes_count == 2));
    // 130 links at start keep 128; the one added later is dropped too.
    assert_eq!(data.links.len(), 128);
    assert_eq!(data.dropped_links_count, 3);
    assert!(data.links.iter().all(|l| l.dropped_attributes_count == 0));
}

#[test]
fn link_attributes_are_capped_and_links_exported() {
    let exporter = JsonLinesExporter::new(Vec::new());
    let tracer = Tracer::builder()
        .exporter(exporter.clone())
        .span_limits(SpanLimits {
            max_attributes_per_link: 1,
            ..SpanLimits::default()
        })
        .build();
    let target = link();
    let mut span = tracer.span("consume").start();
    span.add_link(target.clone().with_attributes(attributes(3)));
    span.end();
    drop(tracer);
    let text = String::from_utf8(exporter.into_inner().unwrap()).unwrap();
    let expected = format!(
        r#""links":[{{"trace_id":"{}","span_id":"{}","trace_state":"","attributes":{{"a0":1}},"dropped_attributes_count":2}}]"#,
        target.context.trace_id(),
        target.context.span_id()
    );
    assert!(text.contains(&expected), "{text}");
}

/// The OpenTelemetry common specification makes an attribute key a non-empty string: one
/// with an empty key is dropped where it is set, on the span, an event or a link, and counted
/// with the attributes dropped over a limit.
#[test]
fn attributes_with_empty_keys_are_dropped_and_counted() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let keyed = |key: &'static str| KeyValue::new(key, 1);
    let mut span = tracer
        .span("empty keys")
        .link(link().with_attributes([keyed(""), keyed("kept")]))
        .start();
    span.set_attribute("", "no name");
    span.set_attribute("kept", 1);
    span.set_attribute(String::new(), 2);
    span.add_event_with("tick", [keyed(""), keyed("kept"), keyed("")]);
    span.add_link(link().with_attributes([keyed("")]));
    span.end();

    let data = only_span(&exporter);
    assert_eq!(data.attributes, [keyed("kept")]);
    assert_eq!(data.dropped_attributes_count, 2);
    assert_eq!(data.events[0].attributes, [keyed("kept")]);
    assert_eq!(data.events[0].dropped_attributes_count, 2);
    assert_eq!(data.links[0].attributes, [keyed("kept")]);
    assert_eq!(data.links[0].dropped_attributes_count, 1);
    assert!(data.links[1].attributes.is_empty());
    assert_eq!(data.links[1].dropped_attributes_count, 1);
}

/// Reads `vars` instead of the process environment, which other tests may be changing.
fn lookup_in(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// The span limit variables of the OpenTelemetry SDK environment specification: a span's,
/// event's or link's own variable wins over the general `OTEL_ATTRIBUTE_*` one.
#[test]
fn the_otel_limit_variables_set_the_limits() {
    let general = [
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "7"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "30"),
    ];
    let limits = SpanLimits::default()
        .from_lookup(lookup_in(&general))
        .unwrap();
    assert_eq!(
        limits,
        SpanLimits {
            max_attributes: 7,
            max_attributes_per_event: 7,
            max_attributes_per_link: 7,
            max_attribute_value_length: Some(30),
            ..SpanLimits::default()
        }
    );

    let specific = [
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "7"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "30"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "1"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "0"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "2"),
        ("OTEL_SPAN_LINK_COUNT_LIMIT", "3"),
        ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "4"),
        ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", " 5 "),
    ];
    let limits = SpanLimits::default()
        .from_lookup(lookup_in(&specific))
        .unwrap();
    assert_eq!(
        limits,
        SpanLimits {
            max_attributes: 1,
            max_events: 2,
            max_links: 3,
            max_attributes_per_event: 4,
            max_attributes_per_link: 5,
            max_attribute_value_length: Some(0),
        }
    );

    // Unset and blank variables leave the limits as they were.
    let custom = SpanLimits {
        max_events: 9,
        ..SpanLimits::default()
    };
    let blank = [("OTEL_SPAN_EVENT_COUNT_LIMIT", " ")];
    assert_eq!(custom.from_lookup(lookup_in(&blank)), Ok(custom));
}

#[test]
fn malformed_otel_limit_values_are_errors_naming_the_variable() {
    let invalid = [
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", "many"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1"),
        ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "+3"),
        ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1k"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "1.0"),
        ("OTEL_SPAN_LINK_COUNT_LIMIT", "99999999999999999999999"),
        ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "0x10"),
        ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "infinity"),
    ];
    for (name, value) in invalid {
        match SpanLimits::default().from_lookup(lookup_in(&[(name, value)])) {
            Err(ExportError::InvalidConfig { setting, .. }) => assert_eq!(setting, name),
            other => panic!("{name}={value:?}: expected an error, got {other:?}"),
        }
    }
}

/// A string value longer than the limit keeps its first characters (characters, not bytes,
/// as the specification counts them), on the span, its events and its links; other values
/// are left alone.
#[test]
fn string_values_are_truncated_to_the_value_length_limit() {
    let exporter = MemoryExporter::new();
    let limits = SpanLimits {
        max_attribute_value_length: Some(3),
        ..SpanLimits::default()
    };
    let tracer = Tracer::builder()
        .exporter(exporter.clone())
        .span_limits(limits)
        .build();
    let long = || {
        [
            KeyValue::new("word", "héllo"),
            KeyValue::new("owned", "abcdef".to_owned()),
            KeyValue::new("short", "ab"),
            KeyValue::new("number", 123_456),
        ]
    };
    let mut span = tracer
        .span("long values")
        .link(link().with_attributes(long()))
        .start();
    for kv in long() {
        span.set_attribute(kv.key, kv.value);
    }
    span.set_attribute("short", "updated");
    span.add_event_with("tick", long());
    span.add_link(link().with_attributes(long()));
    span.end();

    let data = only_span(&exporter);
    let truncated = [
        KeyValue::new("word", "hél"),
        KeyValue::new("owned", "abc"),
        KeyValue::new("short", "ab"),
        KeyValue::new("number", 123_456),
    ];
    let mut updated = truncated.clone();
    updated[2] = KeyValue::new("short", "upd");
    assert_eq!(data.attributes, updated);
    assert_eq!(data.events[0].attributes, truncated);
    assert_eq!(data.links[0].attributes, truncated);
    assert_eq!(data.links[1].attributes, truncated);
    // Truncation is not dropping.
    assert_eq!(data.dropped_attributes_count, 0);
}

#[test]
fn unsampled_spans_ignore_links() {
    let tracer = Tracer::builder()
        .sampler(infra_trace_ctx::AlwaysOff)
        .build();
    let mut span = tracer.span("quiet").link(link()).start();
    span.add_link(link());
    assert!(!span.is_recording());
}

#[test]
fn ok_is_final_and_unset_is_ignored() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();

    let mut span = tracer.span("ok then error").start();
    span.set_status(Status::Ok);
    span.set_status(Status::Error("too late".into()));
    span.set_status(Status::Unset);
    span.end();
    assert_eq!(only_span(&exporter).status, Status::Ok);

    let mut span = tracer.span("error then ok").start();
    span.set_status(Status::Error("first".into()));
    span.set_status(Status::Unset);
    assert_eq!(exporter.spans().len(), 0);
    span.set_status(Status::Error("second".into()));
    span.end();
    assert_eq!(only_span(&exporter).status, Status::Error("second".into()));

    let mut span = tracer.span("error then ok").start();
    span.set_status(Status::Error("failed".into()));
    span.set_status(Status::Ok);
    span.end();
    assert_eq!(only_span(&exporter).status, Status::Ok);
}

/// One operation on a span, for the model test.
#[derive(Clone, Debug)]
enum Op {
    Attribute(u8),
    Event(u8),
    Link(u8),
}

#[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12).prop_map(Op::Attribute),
        (0u8..6).prop_map(Op::Event),
        (0u8..6).prop_map(Op::Link),
    ]
}

proptest! {
    /// Against a plain model: kept counts are min(limit, distinct or total) and the
    /// dropped counts make up the rest.
    #[test]
    fn kept_plus_dropped_is_everything(
        ops in proptest::collection::vec(op(), 0..60),
        limits in (0usize..6, 0usize..6, 0usize..6, 0usize..4, 0usize..4),
    ) {
        let limits = SpanLimits {
            max_attributes: limits.0,
            max_events: limits.1,
            max_links: limits.2,
            max_attributes_per_event: limits.3,
            max_attributes_per_link: limits.4,
            max_attribute_value_length: None,
        };
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).span_limits(limits).build();
        let mut span = tracer.span("model").start();
        // The model: keys kept in first-set order, and plain counters.
        let mut kept_keys: Vec<u8> = Vec::new();
        let (mut dropped_attributes, mut events, mut links) = (0u32, 0usize, 0usize);
        let mut event_sizes = Vec::new();
        let mut link_sizes = Vec::new();
        for op in &ops {
            match *op {
                Op::Attribute(key) => {
                    span.set_attribute(format!("k{key}"), 1);
                    if !kept_keys.contains(&key) {
                        if kept_keys.len() < limits.max_attributes {
                            kept_keys.push(key);
                        } else {
                            dropped_attributes += 1;
                        }
                    }
                }
                Op::Event(size) => {
                    span.add_event_with("e", attributes(usize::from(size)));
                    events += 1;
                    if event_sizes.len() < limits.max_events {
                        event_sizes.push(usize::from(size));
                    }
                }
                Op::Link(size) => {
                    span.add_link(link().with_attributes(attributes(usize::from(size))));
                    links += 1;
                    if link_sizes.len() < limits.max_links {
                        link_sizes.push(usize::from(size));
                    }
                }
            }
        }
        span.end();
        let data = only_span(&exporter);
        let keys: Vec<String> = data.attributes.iter().map(|kv| kv.key.to_string()).collect();
        let expected: Vec<String> = kept_keys.iter().map(|k| format!("k{k}")).collect();
        prop_assert_eq!(keys, expected);
        prop_assert_eq!(data.dropped_attributes_count, dropped_attributes);
        prop_assert_eq!(data.events.len() + data.dropped_events_count as usize, events);
        prop_assert_eq!(data.links.len() + data.dropped_links_count as usize, links);
        for (event, size) in data.events.iter().zip(&event_sizes) {
            prop_assert_eq!(event.attributes.len(), (*size).min(limits.max_attributes_per_event));
            prop_assert_eq!(event.attributes.len() + event.dropped_attributes_count as usize, *size);
        }
        prop_assert_eq!(data.events.len(), event_sizes.len());
        for (link, size) in data.links.iter().zip(&link_sizes) {
            prop_assert_eq!(link.attributes.len(), (*size).min(limits.max_attributes_per_link));
            prop_assert_eq!(link.attributes.len() + link.dropped_attributes_count as usize, *size);
        }
        prop_assert_eq!(data.links.len(), link_sizes.len());
    }
}

/// Exporters must send unique keys: a repeated key on an event or a link keeps its last
/// value, in the place of its first, as `set_attribute` does for the span's own attributes.
#[test]
fn repeated_event_and_link_keys_keep_the_last_value() {
    let exporter = MemoryExporter::new();
    let json = JsonLinesExporter::new(Vec::new());
    let limits = SpanLimits {
        max_attributes_per_event: 2,
        max_attributes_per_link: 2,
        ..SpanLimits::default()
    };
    for tracer in [
        Tracer::builder()
            .span_limits(limits)
            .exporter(exporter.clone())
            .build(),
        Tracer::builder()
            .span_limits(limits)
            .exporter(json.clone())
            .build(),
    ] {
        let repeated = || {
            [
                KeyValue::new("user", "a"),
                KeyValue::new("n", 1),
                KeyValue::new("user", "b"),
                KeyValue::new("over", true),
                KeyValue::new("n", 2),
            ]
        };
        let mut span = tracer
            .span("s")
            .link(link().with_attributes(repeated()))
            .start();
        span.add_link(link().with_attributes(repeated()));
        span.add_event_with("e", repeated());
        span.end();
    }
    let span = only_span(&exporter);
    let expected = vec![KeyValue::new("user", "b"), KeyValue::new("n", 2)];
    assert_eq!(span.events[0].attributes, expected);
    // Limits apply to distinct keys: one (`over`) is dropped.
    assert_eq!(span.events[0].dropped_attributes_count, 1);
    for link in &span.links {
        assert_eq!(link.attributes, expected);
        assert_eq!(link.dropped_attributes_count, 1);
    }
    let line = String::from_utf8(json.into_inner().unwrap()).unwrap();
    assert_eq!(
        line.matches("\"user\"").count(),
        3,
        "once per event and link: {line}"
    );
}
