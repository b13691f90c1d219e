//! OTLP protobuf encoding of an `ExportTraceServiceRequest`, written by hand so the core
//! needs no code generator. Field numbers follow `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`.
//!
//! Every message is written as its length, then its fields; lengths come from `*_len`
//! functions that mirror the writers field by field. Proto3 scalars equal to their default
//! (zero, empty) are left out, as a generated encoder does; a oneof `AnyValue` member is
//! always written, since its presence is the value.

use std::time::SystemTime;

use super::{Resource, ResourceSpans, SCOPE_NAME, SCOPE_VERSION, span_kind_code, unix_nanos};
use crate::span::{Event, KeyValue, Link, SpanData, Status, Value};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Appends the protobuf encoding of an `ExportTraceServiceRequest` holding `groups`.
pub(crate) fn encode_request(groups: &[ResourceSpans<'_>], out: &mut Vec<u8>) {
    for group in groups {
        put_message(out, 1, resource_spans_len(group), |out| {
            put_resource_spans(out, group);
        });
    }
}

fn varint_len(value: u64) -> usize {
    // 7 payload bits per byte; `| 1` gives zero one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// Size of a length-delimited field whose payload is `len` bytes.
fn len_field(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

fn put_message(out: &mut Vec<u8>, field: u32, len: usize, body: impl FnOnce(&mut Vec<u8>)) {
    put_key(out, field, LEN);
    put_varint(out, len as u64);
    let start = out.len();
    body(out);
    debug_assert_eq!(
        out.len() - start,
        len,
        "field {field}: length and body disagree"
    );
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn opt_str_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(field, s.len())
    }
}

fn put_opt_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

fn opt_u32_len(field: u32, value: u32) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + varint_len(u64::from(value))
    }
}

fn put_opt_u32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        put_key(out, field, VARINT);
        put_varint(out, u64::from(value));
    }
}

fn fixed64_len(field: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(field) + 8 }
}

fn put_fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, FIXED64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32_len(field: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(field) + 4 }
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        put_key(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn time_len(field: u32, time: SystemTime) -> usize {
    fixed64_len(field, unix_nanos(time))
}

fn put_time(out: &mut Vec<u8>, field: u32, time: SystemTime) {
    put_fixed64(out, field, unix_nanos(time));
}

// AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => len_field(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(n) => key_len(3) + varint_len(*n as u64),
        Value::F64(_) => key_len(4) + 8,
    }
}

fn put_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(s) => put_bytes(out, 1, s.as_bytes()),
        Value::Bool(b) => {
            put_key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::I64(n) => {
            put_key(out, 3, VARINT);
            // int64 is two's complement in ten bytes when negative.
            put_varint(out, *n as u64);
        }
        Value::F64(x) => {
            put_key(out, 4, FIXED64);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

// KeyValue: key = 1, value = 2.
fn key_value_len(kv: &KeyValue) -> usize {
    opt_str_len(1, &kv.key) + len_field(2, any_value_len(&kv.value))
}

fn put_key_value(out: &mut Vec<u8>, kv: &KeyValue) {
    put_opt_str(out, 1, &kv.key);
    put_message(out, 2, any_value_len(&kv.value), |out| {
        put_any_value(out, &kv.value);
    });
}

fn attributes_len(field: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| len_field(field, key_value_len(kv)))
        .sum()
}

fn put_attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        put_message(out, field, key_value_len(kv), |out| put_key_value(out, kv));
    }
}

// ExportTraceServiceRequest.resource_spans = 1; ResourceSpans: resource = 1, scope_spans = 2.
fn resource_spans_len(group: &ResourceSpans<'_>) -> usize {
    len_field(1, resource_len(&group.resource)) + len_field(2, scope_spans_len(group))
}

fn put_resource_spans(out: &mut Vec<u8>, group: &ResourceSpans<'_>) {
    put_message(out, 1, resource_len(&group.resource), |out| {
        put_resource(out, &group.resource);
    });
    put_message(out, 2, scope_spans_len(group), |out| {
        put_scope_spans(out, group);
    });
}

// Resource: attributes = 1. The service name comes first.
fn resource_len(resource: &Resource<'_>) -> usize {
    len_field(1, key_value_len(&resource.service)) + attributes_len(1, resource.attributes)
}

fn put_resource(out: &mut Vec<u8>, resource: &Resource<'_>) {
    put_attributes(out, 1, std::slice::from_ref(&resource.service));
    put_attributes(out, 1, resource.attributes);
}

// ScopeSpans: scope = 1, spans = 2; InstrumentationScope: name = 1, version = 2.
fn scope_len() -> usize {
    opt_str_len(1, SCOPE_NAME) + opt_str_len(2, SCOPE_VERSION)
}

fn scope_spans_len(group: &ResourceSpans<'_>) -> usize {
    len_field(1, scope_len())
        + group
            .spans
            .iter()
            .map(|span| len_field(2, span_len(span)))
            .sum::<usize>()
}

fn put_scope_spans(out: &mut Vec<u8>, group: &ResourceSpans<'_>) {
    put_message(out, 1, scope_len(), |out| {
        put_opt_str(out, 1, SCOPE_NAME);
        put_opt_str(out, 2, SCOPE_VERSION);
    });
    for span in &group.spans {
        put_message(out, 2, span_len(span), |out| put_span(out, span));
    }
}

// Span: trace_id = 1, span_id = 2, trace_state = 3, parent_span_id = 4, name = 5, kind = 6,
// start = 7, end = 8, attributes = 9, dropped_attributes_count = 10, events = 11,
// dropped_events_count = 12, links = 13, dropped_links_count = 14, status = 15, flags = 16.
fn span_len(span: &SpanData) -> usize {
    len_field(1, 16)
        + len_field(2, 8)
        + opt_str_len(3, span.context.trace_state().as_str())
        + span.parent_span_id.map_or(0, |_| len_field(4, 8))
        + opt_str_len(5, &span.name)
        + key_len(6)
        + 1
        + time_len(7, span.start)
        + time_len(8, span.end)
        + attributes_len(9, &span.attributes)
        + opt_u32_len(10, span.dropped_attributes_count)
        + span
            .events
            .iter()
            .map(|event| len_field(11, event_len(event)))
            .sum::<usize>()
        + opt_u32_len(12, span.dropped_events_count)
        + span
            .links
            .iter()
            .map(|link| len_field(13, link_len(link)))
            .sum::<usize>()
        + opt_u32_len(14, span.dropped_links_count)
        + status_len(&span.status).map_or(0, |len| len_field(15, len))
        + fixed32_len(16, super::span_flags(span))
}

fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    put_bytes(out, 1, &span.context.trace_id().to_bytes());
    put_bytes(out, 2, &span.context.span_id().to_bytes());
    put_opt_str(out, 3, span.context.trace_state().as_str());
    if let Some(parent) = span.parent_span_id {
        put_bytes(out, 4, &parent.to_bytes());
    }
    put_opt_str(out, 5, &span.name);
    put_key(out, 6, VARINT);
    // Every kind code is below 128: one byte.
    out.push(span_kind_code(span.kind) as u8);
    put_time(out, 7, span.start);
    put_time(out, 8, span.end);
    put_attributes(out, 9, &span.attributes);
    put_opt_u32(out, 10, span.dropped_attributes_count);
    for event in &span.events {
        put_message(out, 11, event_len(event), |out| put_event(out, event));
    }
    put_opt_u32(out, 12, span.dropped_events_count);
    for link in &span.links {
        put_message(out, 13, link_len(link), |out| put_link(out, link));
    }
    put_opt_u32(out, 14, span.dropped_links_count);
    if let Some(len) = status_len(&span.status) {
        put_message(out, 15, len, |out| put_status(out, &span.status));
    }
    put_fixed32(out, 16, super::span_flags(span));
}

// Event: time_unix_nano = 1, name = 2, attributes = 3, dropped_attributes_count = 4.
fn event_len(event: &Event) -> usize {
    time_len(1, event.time)
        + opt_str_len(2, &event.name)
        + attributes_len(3, &event.attributes)
        + opt_u32_len(4, event.dropped_attributes_count)
}

fn put_event(out: &mut Vec<u8>, event: &Event) {
    put_time(out, 1, event.time);
    put_opt_str(out, 2, &event.name);
    put_attributes(out, 3, &event.attributes);
    put_opt_u32(out, 4, event.dropped_attributes_count);
}

// Link: trace_id = 1, span_id = 2, trace_state = 3, attributes = 4,
// dropped_attributes_count = 5, flags = 6.
fn link_len(link: &Link) -> usize {
    len_field(1, 16)
        + len_field(2, 8)
        + opt_str_len(3, link.context.trace_state().as_str())
        + attributes_len(4, &link.attributes)
        + opt_u32_len(5, link.dropped_attributes_count)
        + fixed32_len(6, super::link_flags(link))
}

fn put_link(out: &mut Vec<u8>, link: &Link) {
    put_bytes(out, 1, &link.context.trace_id().to_bytes());
    put_bytes(out, 2, &link.context.span_id().to_bytes());
    put_opt_str(out, 3, link.context.trace_state().as_str());
    put_attributes(out, 4, &link.attributes);
    put_opt_u32(out, 5, link.dropped_attributes_count);
    put_fixed32(out, 6, super::link_flags(link));
}

// Status: message = 2, code = 3. An unset status is left out.
fn status_len(status: &Status) -> Option<usize> {
    match status {
        Status::Unset => None,
        Status::Ok => Some(key_len(3) + 1),
        Status::Error(message) => Some(opt_str_len(2, message) + key_len(3) + 1),
    }
}

fn put_status(out: &mut Vec<u8>, status: &Status) {
    if let Status::Error(message) = status {
        put_opt_str(out, 2, message);
    }
    put_key(out, 3, VARINT);
    out.push(super::status_code(status) as u8);
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn varints_match_their_lengths() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
        }
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }
}
