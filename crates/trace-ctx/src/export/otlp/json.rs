//! OTLP/JSON encoding of an `ExportTraceServiceRequest`, per the OTLP specification's JSON
//! mapping: lowerCamelCase field names, trace and span ids as lowercase hex (not base64),
//! enums as integers, 64-bit integers as decimal strings, and fields equal to their default
//! left out.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{
    Resource, ResourceSpans, SCOPE_NAME, SCOPE_VERSION, link_flags, span_flags, span_kind_code,
    status_code, unix_nanos,
};
use crate::export::push_json_str;
use crate::span::{Event, KeyValue, Link, SpanData, Status, Value};

/// Appends the JSON encoding of an `ExportTraceServiceRequest` holding `groups`.
pub(crate) fn encode_request(groups: &[ResourceSpans<'_>], out: &mut Vec<u8>) {
    let mut json = String::with_capacity(256 * groups.iter().map(|g| g.spans.len()).sum::<usize>());
    json.push_str("{\"resourceSpans\":[");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        write_resource_spans(&mut json, group);
    }
    json.push_str("]}");
    out.extend_from_slice(json.as_bytes());
}

fn write_resource_spans(out: &mut String, group: &ResourceSpans<'_>) {
    out.push_str("{\"resource\":");
    write_resource(out, &group.resource);
    out.push_str(",\"scopeSpans\":[{\"scope\":{\"name\":");
    push_json_str(out, SCOPE_NAME);
    out.push_str(",\"version\":");
    push_json_str(out, SCOPE_VERSION);
    out.push_str("},\"spans\":[");
    for (i, span) in group.spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_span(out, span);
    }
    out.push_str("]}]}");
}

fn write_resource(out: &mut String, resource: &Resource<'_>) {
    out.push_str("{\"attributes\":[");
    write_key_value(out, &resource.service);
    for kv in resource.attributes {
        out.push(',');
        write_key_value(out, kv);
    }
    out.push_str("]}");
}

fn write_span(out: &mut String, span: &SpanData) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\"",
        span.context.trace_id(),
        span.context.span_id()
    );
    write_opt_str(out, "traceState", span.context.trace_state().as_str());
    if let Some(parent) = span.parent_span_id {
        let _ = write!(out, ",\"parentSpanId\":\"{parent}\"");
    }
    write_opt_u32(out, "flags", span_flags(span));
    write_opt_str(out, "name", &span.name);
    let _ = write!(out, ",\"kind\":{}", span_kind_code(span.kind));
    write_time(out, "startTimeUnixNano", span.start);
    write_time(out, "endTimeUnixNano", span.end);
    write_attributes(out, &span.attributes);
    write_opt_u32(out, "droppedAttributesCount", span.dropped_attributes_count);
    if !span.events.is_empty() {
        out.push_str(",\"events\":[");
        for (i, event) in span.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_event(out, event);
        }
        out.push(']');
    }
    write_opt_u32(out, "droppedEventsCount", span.dropped_events_count);
    if !span.links.is_empty() {
        out.push_str(",\"links\":[");
        for (i, link) in span.links.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_link(out, link);
        }
        out.push(']');
    }
    write_opt_u32(out, "droppedLinksCount", span.dropped_links_count);
    if span.status != Status::Unset {
        out.push_str(",\"status\":{");
        if let Status::Error(message) = &span.status
            && !message.is_empty()
        {
            out.push_str("\"message\":");
            push_json_str(out, message);
            out.push(',');
        }
        let _ = write!(out, "\"code\":{}}}", status_code(&span.status));
    }
    out.push('}');
}

fn write_event(out: &mut String, event: &Event) {
    out.push('{');
    let time = unix_nanos(event.time);
    let _ = write!(out, "\"timeUnixNano\":\"{time}\"");
    write_opt_str(out, "name", &event.name);
    write_attributes(out, &event.attributes);
    write_opt_u32(
        out,
        "droppedAttributesCount",
        event.dropped_attributes_count,
    );
    out.push('}');
}

fn write_link(out: &mut String, link: &Link) {
    let _ = write!(
        out,
        "{{\"traceId\":\"{}\",\"spanId\":\"{}\"",
        link.context.trace_id(),
        link.context.span_id()
    );
    write_opt_str(out, "traceState", link.context.trace_state().as_str());
    write_attributes(out, &link.attributes);
    write_opt_u32(out, "droppedAttributesCount", link.dropped_attributes_count);
    write_opt_u32(out, "flags", link_flags(link));
    out.push('}');
}

fn write_attributes(out: &mut String, attributes: &[KeyValue]) {
    if attributes.is_empty() {
        return;
    }
    out.push_str(",\"attributes\":[");
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_key_value(out, kv);
    }
    out.push(']');
}

fn write_key_value(out: &mut String, kv: &KeyValue) {
    out.push_str("{\"key\":");
    push_json_str(out, &kv.key);
    out.push_str(",\"value\":{");
    match &kv.value {
        Value::Str(s) => {
            out.push_str("\"stringValue\":");
            push_json_str(out, s);
        }
        Value::Bool(b) => {
            let _ = write!(out, "\"boolValue\":{b}");
        }
        Value::I64(n) => {
            let _ = write!(out, "\"intValue\":\"{n}\"");
        }
        // The proto3 JSON mapping spells the non-finite doubles as strings.
        Value::F64(x) if x.is_nan() => out.push_str("\"doubleValue\":\"NaN\""),
        Value::F64(x) if x.is_infinite() && *x > 0.0 => {
            out.push_str("\"doubleValue\":\"Infinity\"");
        }
        Value::F64(x) if x.is_infinite() => out.push_str("\"doubleValue\":\"-Infinity\""),
        Value::F64(x) => {
            let _ = write!(out, "\"doubleValue\":{x:?}");
        }
    }
    out.push_str("}}");
}

fn write_opt_str(out: &mut String, name: &str, value: &str) {
    if !value.is_empty() {
        let _ = write!(out, ",\"{name}\":");
        push_json_str(out, value);
    }
}

fn write_opt_u32(out: &mut String, name: &str, value: u32) {
    if value != 0 {
        let _ = write!(out, ",\"{name}\":{value}");
    }
}

fn write_time(out: &mut String, name: &str, time: SystemTime) {
    let nanos = unix_nanos(time);
    if nanos != 0 {
        let _ = write!(out, ",\"{name}\":\"{nanos}\"");
    }
}
