//! Interoperability with OpenTelemetry's Rust propagators, in both directions: what one
//! injects, the other extracts to the same ids, sampling state, trace state and baggage.
//!
//! The peers: `opentelemetry_sdk`'s `TraceContextPropagator` and `BaggagePropagator`,
//! `opentelemetry-zipkin`'s B3 propagator (single and multiple headers) and
//! `opentelemetry-jaeger-propagator` (built on opentelemetry 0.32, its latest release). Each
//! proptest generates random contexts on one side, injects them into a header map, extracts
//! them on the other side and compares. Where the two disagree, a named test pins the
//! disagreement and the comment above it cites the specification section that decides it.
#![cfg(not(infra_loom))]
// OpenTelemetry deprecates its B3 and Jaeger propagators (it recommends W3C Trace Context);
// services still send both formats, which is why this crate reads them.
#![allow(deprecated)]

use std::collections::HashMap;

use infra_trace_ctx::{
    B3Propagator, Baggage, BaggagePropagator, Context, JaegerPropagator, Propagator, SamplingState,
    SpanContext, SpanId, TraceContextPropagator, TraceFlags, TraceId, TraceState,
};
use opentelemetry::baggage::{BaggageExt, KeyValueMetadata};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use otel032::*;
use proptest::prelude::*;

type Headers = HashMap<String, String>;

mod otel {
    pub(crate) use opentelemetry::Context;
    pub(crate) use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    pub(crate) use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
    pub(crate) use opentelemetry_zipkin::{B3Encoding, Propagator as B3Propagator};
}

/// The Jaeger peer speaks opentelemetry 0.32's types.
mod otel032 {
    pub(crate) use opentelemetry_032::Context;
    pub(crate) use opentelemetry_032::propagation::TextMapPropagator as _;
    pub(crate) use opentelemetry_032::trace::TraceContextExt as _;
    pub(crate) use opentelemetry_032::trace::{
        SpanContext, SpanId, TraceFlags, TraceId, TraceState,
    };
    pub(crate) use opentelemetry_jaeger_propagator::Propagator as JaegerPropagator;
}

/// B3's flag bits in OpenTelemetry's Zipkin propagator (its own, outside W3C's flags):
/// 0x02 deferred, 0x04 debug. Jaeger's propagator uses 0x04 for debug too.
const OTEL_DEFERRED: u8 = 0x02;
const OTEL_DEBUG: u8 = 0x04;

fn our_span(trace: u128, span: u64, flags: TraceFlags) -> SpanContext {
    SpanContext::new(
        TraceId::from_u128(trace).expect("non-zero"),
        SpanId::from_u64(span).expect("non-zero"),
        flags,
    )
}

fn otel_span(trace: u128, span: u64, flags: u8, state: otel::TraceState) -> otel::SpanContext {
    otel::SpanContext::new(
        otel::TraceId::from(trace),
        otel::SpanId::from(span),
        otel::TraceFlags::new(flags),
        true,
        state,
    )
}

/// The span context an OpenTelemetry propagator extracted, if valid.
fn otel_extracted(cx: &otel::Context) -> Option<otel::SpanContext> {
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

fn ids_of(span: &otel::SpanContext) -> (u128, u64) {
    (
        u128::from_be_bytes(span.trace_id().to_bytes()),
        u64::from_be_bytes(span.span_id().to_bytes()),
    )
}

fn our_ids(span: &SpanContext) -> (u128, u64) {
    (span.trace_id().to_u128(), span.span_id().to_u64())
}

/// A tracestate member list with distinct keys, as both sides accept it: keys that start
/// with a letter and hold no `@` (Level 1 and Level 2 agree on those; see
/// `tracestate_keys_level_2_accepts_and_level_1_rejects`), values without spaces at either
/// end.
fn trace_state_members() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = "[a-z][a-z0-9_*/-]{0,15}";
    let value = "[!-+\\--<>-~]([ !-+\\--<>-~]{0,18}[!-+\\--<>-~])?";
    prop::collection::vec((key, value), 0..8).prop_map(|members| {
        let mut seen = std::collections::HashSet::new();
        members
            .into_iter()
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect()
    })
}

fn joined(members: &[(String, String)]) -> String {
    members
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ids() -> impl Strategy<Value = (u128, u64)> {
    (1..=u128::MAX, 1..=u64::MAX)
}

proptest! {
    /// Ours injects `traceparent` and `tracestate`; OpenTelemetry extracts the same ids,
    /// sampled flag and state. It drops the Level 2 random flag (see
    /// `the_random_flag_is_level_2_and_opentelemetry_drops_it`).
    #[test]
    fn w3c_ours_to_opentelemetry((trace, span) in ids(), sampled: bool, random: bool,
                                 members in trace_state_members()) {
        let flags = TraceFlags::NONE.with_sampled(sampled).with_random(random);
        let mut ours = our_span(trace, span, flags);
        if !members.is_empty() {
            ours = ours.with_trace_state(TraceState::parse(&joined(&members)).expect("valid"));
        }
        let mut headers = Headers::new();
        TraceContextPropagator.inject(&Context::new().with_span(ours), &mut headers);
        let theirs = otel::TraceContextPropagator::new().extract(&headers);
        let theirs = otel_extracted(&theirs).expect("a valid traceparent");
        prop_assert_eq!(ids_of(&theirs), (trace, span));
        prop_assert_eq!(theirs.is_sampled(), sampled);
        prop_assert_eq!(theirs.trace_state().header(), joined(&members));
    }

    /// OpenTelemetry injects; ours extracts the same ids, sampled flag and state.
    #[test]
    fn w3c_opentelemetry_to_ours((trace, span) in ids(), sampled: bool,
                                 members in trace_state_members()) {
        let state = otel::TraceState::from_key_value(members.clone()).expect("valid");
        let theirs = otel_span(trace, span, u8::from(sampled), state);
        let mut headers = Headers::new();
        otel::TraceContextPropagator::new()
            .inject_context(&otel::Context::new().with_remote_span_context(theirs), &mut headers);
        let ours = TraceContextPropagator.extract(&headers);
        let ours = ours.span().expect("a valid traceparent");
        prop_assert_eq!(our_ids(ours), (trace, span));
        prop_assert_eq!(ours.is_sampled(), sampled);
        prop_assert!(!ours.flags().is_random(), "OpenTelemetry never sets it");
        prop_assert_eq!(ours.trace_state().to_string(), joined(&members));
    }
}

/// W3C Trace Context Level 2, §3.2.2.5.2 (random trace id flag): a caller that sets it
/// promises a random trace id. OpenTelemetry's propagator implements Level 1 and keeps only
/// the sampled bit, so the promise is lost on its side, never invented on ours.
#[test]
fn the_random_flag_is_level_2_and_opentelemetry_drops_it() {
    let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
    let headers = Headers::from([("traceparent".to_owned(), header.to_owned())]);
    let ours = TraceContextPropagator.extract(&headers);
    assert!(ours.span().expect("valid").flags().is_random());
    let theirs = otel_extracted(&otel::TraceContextPropagator::new().extract(&headers)).unwrap();
    assert_eq!(theirs.trace_flags(), otel::TraceFlags::SAMPLED);
}

/// W3C Trace Context Level 2, §3.3.1.3.1 (tracestate keys): Level 2 allows `@` anywhere
/// after the first character, any number of times; Level 1's multi-tenant form allowed one
/// `@` and a system id of at most 14 characters. OpenTelemetry applies Level 1 and
/// discards the whole header; ours applies Level 2 (the crate README explains the choice).
#[test]
fn tracestate_keys_level_2_accepts_and_level_1_rejects() {
    for state in ["foo@bar@baz=1,rojo=1", "t@vvvvvvvvvvvvvvv=1,rojo=1"] {
        let headers = Headers::from([
            (
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ),
            ("tracestate".to_owned(), state.to_owned()),
        ]);
        let ours = TraceContextPropagator.extract(&headers);
        assert_eq!(ours.span().unwrap().trace_state().to_string(), state);
        let theirs =
            otel_extracted(&otel::TraceContextPropagator::new().extract(&headers)).unwrap();
        assert_eq!(theirs.trace_state().header(), "", "{state}");
    }
}

/// Duplicated `tracestate` keys. W3C Trace Context §3.3.1.1: a key appears at most once,
/// and a receiver MAY discard duplicates. Ours keeps the first entry (the README says so);
/// whatever OpenTelemetry keeps, both sides agree on the value of the first key and ours
/// never forwards a duplicate.
#[test]
fn duplicated_tracestate_keys() {
    let headers = Headers::from([
        (
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        ),
        ("tracestate".to_owned(), "rojo=1,congo=2,rojo=3".to_owned()),
    ]);
    let ours = TraceContextPropagator.extract(&headers);
    let ours_state = ours.span().unwrap().trace_state().clone();
    assert_eq!(ours_state.to_string(), "rojo=1,congo=2");
    let theirs = otel_extracted(&otel::TraceContextPropagator::new().extract(&headers)).unwrap();
    assert_eq!(theirs.trace_state().get("rojo"), Some("1"));
    assert_eq!(theirs.trace_state().get("congo"), Some("2"));

    // What ours forwards, OpenTelemetry reads back without the duplicate.
    let mut forwarded = Headers::new();
    TraceContextPropagator.inject(&ours, &mut forwarded);
    let back = otel_extracted(&otel::TraceContextPropagator::new().extract(&forwarded)).unwrap();
    assert_eq!(back.trace_state().header(), "rojo=1,congo=2");
}

/// A property of a baggage member: a name and an optional value.
type Property = (String, Option<String>);
/// A baggage member: key, value, properties.
type Member = (String, String, Vec<Property>);

/// A baggage member: a token key (no `%`, which OpenTelemetry would percent-decode in a key
/// and ours keeps), a value, and properties (token names, optional token values).
fn baggage_members(value: &'static str) -> impl Strategy<Value = Vec<Member>> {
    let key = "[A-Za-z0-9!#$&'*+.^_`|~-]{1,12}";
    let property = ("[A-Za-z0-9_-]{1,6}", prop::option::of("[A-Za-z0-9_-]{1,6}"));
    prop::collection::vec((key, value, prop::collection::vec(property, 0..3)), 0..8).prop_map(
        |members| {
            let mut seen = std::collections::HashSet::new();
            members
                .into_iter()
                // Both sides trim a value's surrounding whitespace (W3C Baggage §3.2.1.1: OWS
                // around a value is not part of it).
                .filter(|(key, value, _)| value.trim() == value && seen.insert(key.clone()))
                .collect()
        },
    )
}

fn properties_text(properties: &[(String, Option<String>)]) -> String {
    properties
        .iter()
        .map(|(name, value)| match value {
            Some(value) => format!("{name}={value}"),
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Ours' baggage as (key, value, properties) in key order.
fn ours_baggage(baggage: &Baggage) -> Vec<(String, String, String)> {
    let mut entries: Vec<_> = baggage
        .iter()
        .map(|entry| {
            let properties: Vec<(String, Option<String>)> = entry
                .properties()
                .map(|(name, value)| (name.to_owned(), value.map(str::to_owned)))
                .collect();
            (
                entry.key().to_owned(),
                entry.value().to_owned(),
                properties_text(&properties),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// The value OpenTelemetry extracted for baggage `key`.
fn otel_value<'a>(cx: &'a otel::Context, key: &str) -> Option<&'a str> {
    cx.baggage()
        .get(key)
        .map(opentelemetry::StringValue::as_str)
}

fn otel_baggage(cx: &otel::Context) -> Vec<(String, String, String)> {
    let mut entries: Vec<_> = cx
        .baggage()
        .iter()
        .map(|(key, (value, metadata))| {
            (
                key.as_str().to_owned(),
                value.as_str().to_owned(),
                metadata.as_str().to_owned(),
            )
        })
        .collect();
    entries.sort();
    entries
}

fn expected(members: &[Member]) -> Vec<(String, String, String)> {
    let mut entries: Vec<_> = members
        .iter()
        .map(|(k, v, p)| (k.clone(), v.clone(), properties_text(p)))
        .collect();
    entries.sort();
    entries
}

proptest! {
    /// Ours injects any printable value (percent-encoding what it must); OpenTelemetry
    /// decodes the same keys, values and properties.
    #[test]
    fn baggage_ours_to_opentelemetry(members in baggage_members("\\PC{0,12}")) {
        let mut baggage = Baggage::new();
        for (key, value, properties) in &members {
            let properties: Vec<(&str, Option<&str>)> =
                properties.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
            baggage.insert_with_properties(key, value, &properties).expect("valid member");
        }
        let mut headers = Headers::new();
        BaggagePropagator.inject(&Context::new().with_baggage(baggage), &mut headers);
        let theirs = otel::BaggagePropagator::new().extract(&headers);
        prop_assert_eq!(otel_baggage(&theirs), expected(&members));
    }

    /// OpenTelemetry injects; ours decodes the same. Values hold neither `%` nor `\`, which
    /// OpenTelemetry writes unencoded (see `opentelemetry_writes_percent_and_backslash_raw`).
    #[test]
    fn baggage_opentelemetry_to_ours(members in baggage_members("[^%\\\\\\p{C}]{0,12}")) {
        let entries: Vec<KeyValueMetadata> = members
            .iter()
            .map(|(k, v, p)| KeyValueMetadata::new(k.clone(), v.clone(), properties_text(p).as_str()))
            .collect();
        let cx = otel::Context::new().with_baggage(entries);
        let mut headers = Headers::new();
        otel::BaggagePropagator::new().inject_context(&cx, &mut headers);
        let ours = BaggagePropagator.extract(&headers);
        prop_assert_eq!(ours_baggage(ours.baggage()), expected(&members));
    }
}

/// W3C Baggage §3.2.1.1 (value): a value is `baggage-octet`s, which exclude `\`, and `%`
/// starts a percent-encoded octet. OpenTelemetry writes both raw: ours reads `%41` as `A`
/// and refuses a header holding `\` (a member that breaks the grammar invalidates the
/// header, as the README says). Ours encodes both, and OpenTelemetry reads them back.
#[test]
fn opentelemetry_writes_percent_and_backslash_raw() {
    let send = |value: &str| {
        let cx =
            otel::Context::new().with_baggage([KeyValueMetadata::new("k", value.to_owned(), "")]);
        let mut headers = Headers::new();
        otel::BaggagePropagator::new().inject_context(&cx, &mut headers);
        headers
    };
    let percent = send("100%41");
    assert_eq!(percent["baggage"], "k=100%41");
    assert_eq!(
        BaggagePropagator.extract(&percent).baggage().get("k"),
        Some("100A")
    );
    let backslash = send("a\\b");
    assert_eq!(backslash["baggage"], "k=a\\b");
    assert!(BaggagePropagator.extract(&backslash).baggage().is_empty());

    let mut baggage = Baggage::new();
    baggage.insert("k", "100%41 a\\b").unwrap();
    let mut headers = Headers::new();
    BaggagePropagator.inject(&Context::new().with_baggage(baggage), &mut headers);
    let theirs = otel::BaggagePropagator::new().extract(&headers);
    assert_eq!(otel_value(&theirs, "k"), Some("100%41 a\\b"));
}

/// W3C Baggage §3.2.1.1: a value's octets include `=`. OpenTelemetry reads a member up to
/// its second `=` and drops the rest, so ours percent-encodes `=` in the values it writes
/// (which any conforming reader decodes) and reads a raw one whole.
#[test]
fn a_value_holding_an_equals_sign() {
    let raw = Headers::from([("baggage".to_owned(), "k=a=b".to_owned())]);
    assert_eq!(
        BaggagePropagator.extract(&raw).baggage().get("k"),
        Some("a=b")
    );
    let theirs = otel::BaggagePropagator::new().extract(&raw);
    assert_eq!(otel_value(&theirs, "k"), Some("a"));

    let mut baggage = Baggage::new();
    baggage.insert("k", "a=b").unwrap();
    let mut headers = Headers::new();
    BaggagePropagator.inject(&Context::new().with_baggage(baggage), &mut headers);
    assert_eq!(headers["baggage"], "k=a%3Db");
    let theirs = otel::BaggagePropagator::new().extract(&headers);
    assert_eq!(otel_value(&theirs, "k"), Some("a=b"));
}

/// Duplicated baggage keys: W3C Baggage leaves the choice to the receiver. Ours keeps the
/// key's first position and its last value; OpenTelemetry keeps the last value too.
#[test]
fn duplicated_baggage_keys() {
    let headers = Headers::from([("baggage".to_owned(), "user=1,tenant=acme,user=2".to_owned())]);
    let ours = BaggagePropagator.extract(&headers);
    let theirs = otel::BaggagePropagator::new().extract(&headers);
    assert_eq!(ours.baggage().get("user"), Some("2"));
    assert_eq!(otel_value(&theirs, "user"), Some("2"));
    assert_eq!(ours_baggage(ours.baggage()), otel_baggage(&theirs));
}

/// The four B3 sampling states, as ours names them and as OpenTelemetry's Zipkin propagator
/// encodes them in its flags after extracting the given form.
fn otel_b3_flags(state: SamplingState, single: bool) -> u8 {
    match state {
        SamplingState::Accept => 0x01,
        SamplingState::Deny => 0x00,
        SamplingState::Defer => OTEL_DEFERRED,
        // Single-header `d` sets its debug bit alone; `X-B3-Flags: 1` sets debug and
        // sampled. Both inject back as debug.
        SamplingState::Debug if single => OTEL_DEBUG,
        _ => OTEL_DEBUG | 0x01,
    }
}

fn b3_states() -> impl Strategy<Value = SamplingState> {
    prop::sample::select(
        &[
            SamplingState::Accept,
            SamplingState::Deny,
            SamplingState::Defer,
            SamplingState::Debug,
        ][..],
    )
}

fn otel_b3(single: bool) -> otel::B3Propagator {
    otel::B3Propagator::with_encoding(if single {
        otel::B3Encoding::SingleHeader
    } else {
        otel::B3Encoding::MultipleHeader
    })
}

fn our_b3(single: bool) -> B3Propagator {
    if single {
        B3Propagator::single_header()
    } else {
        B3Propagator::multi_header()
    }
}

proptest! {
    /// B3, single and multiple headers, every sampling state (debug and deferred included):
    /// ours injects, OpenTelemetry extracts the same ids and state.
    #[test]
    fn b3_ours_to_opentelemetry((trace, span) in ids(), state in b3_states(), single: bool) {
        let ours = our_span(trace, span, TraceFlags::NONE).with_sampling_state(state);
        let mut headers = Headers::new();
        our_b3(single).inject(&Context::new().with_span(ours), &mut headers);
        let theirs = otel_extracted(&otel_b3(single).extract(&headers)).expect("valid b3");
        prop_assert_eq!(ids_of(&theirs), (trace, span));
        prop_assert_eq!(theirs.trace_flags().to_u8(), otel_b3_flags(state, single), "{:?}", headers);
    }

    /// OpenTelemetry injects each state; ours extracts the same ids and state.
    #[test]
    fn b3_opentelemetry_to_ours((trace, span) in ids(), state in b3_states(), single: bool) {
        let theirs = otel_span(trace, span, otel_b3_flags(state, single), otel::TraceState::default());
        let mut headers = Headers::new();
        otel_b3(single)
            .inject_context(&otel::Context::new().with_remote_span_context(theirs), &mut headers);
        let ours = our_b3(single).extract(&headers);
        let ours = ours.span().expect("valid b3");
        prop_assert_eq!(our_ids(ours), (trace, span));
        prop_assert_eq!(ours.sampling_state(), state, "{:?}", headers);
    }
}

/// B3 "Single Header": `b3: 0` alone is a valid header, a deny decision without ids. Ours
/// extracts the decision (and follows it); OpenTelemetry's extractor finds no context in
/// it, though its injector writes exactly this for a context without a span.
#[test]
fn a_b3_deny_decision_alone() {
    let mut headers = Headers::new();
    otel_b3(true).inject_context(&otel::Context::new(), &mut headers);
    assert_eq!(headers["b3"], "0");
    let ours = B3Propagator::single_header().extract(&headers);
    assert!(ours.span().is_none());
    assert_eq!(ours.sampling_state(), Some(SamplingState::Deny));
    assert!(otel_extracted(&otel_b3(true).extract(&headers)).is_none());
}

fn jaeger_states() -> impl Strategy<Value = SamplingState> {
    prop::sample::select(
        &[
            SamplingState::Accept,
            SamplingState::Deny,
            SamplingState::Debug,
        ][..],
    )
}

/// Jaeger's flags as OpenTelemetry's Jaeger propagator holds them after extraction.
fn otel_jaeger_flags(state: SamplingState) -> u8 {
    match state {
        SamplingState::Accept => 0x01,
        SamplingState::Debug => OTEL_DEBUG | 0x01,
        _ => 0x00,
    }
}

proptest! {
    /// Jaeger `uber-trace-id`, with the debug flag: ours injects, OpenTelemetry extracts.
    #[test]
    fn jaeger_ours_to_opentelemetry((trace, span) in ids(), state in jaeger_states()) {
        let ours = our_span(trace, span, TraceFlags::NONE).with_sampling_state(state);
        let mut headers = Headers::new();
        JaegerPropagator.inject(&Context::new().with_span(ours), &mut headers);
        let theirs = otel032::JaegerPropagator::new().extract(&headers);
        let theirs = theirs.span().span_context().clone();
        prop_assert!(theirs.is_valid(), "{:?}", headers);
        prop_assert_eq!(
            (
                u128::from_be_bytes(theirs.trace_id().to_bytes()),
                u64::from_be_bytes(theirs.span_id().to_bytes()),
            ),
            (trace, span)
        );
        prop_assert_eq!(theirs.trace_flags().to_u8(), otel_jaeger_flags(state), "{:?}", headers);
    }

    /// OpenTelemetry injects; ours extracts the same ids and state.
    #[test]
    fn jaeger_opentelemetry_to_ours((trace, span) in ids(), state in jaeger_states()) {
        let theirs = otel032::SpanContext::new(
            otel032::TraceId::from(trace),
            otel032::SpanId::from(span),
            otel032::TraceFlags::new(otel_jaeger_flags(state)),
            true,
            otel032::TraceState::default(),
        );
        let mut headers = Headers::new();
        otel032::JaegerPropagator::new().inject_context(
            &otel032::Context::new().with_remote_span_context(theirs),
            &mut headers,
        );
        let ours = JaegerPropagator.extract(&headers);
        let ours = ours.span().expect("valid uber-trace-id");
        prop_assert_eq!(our_ids(ours), (trace, span));
        prop_assert_eq!(ours.sampling_state(), state, "{:?}", headers);
    }
}

/// Jaeger baggage (`uberctx-{key}`): Jaeger's own clients treat it as baggage, and so does
/// ours; OpenTelemetry's Jaeger propagator writes none and reads the fields into its trace
/// state under their full names, not into baggage. What reaches it is kept, just elsewhere.
#[test]
fn jaeger_baggage_becomes_opentelemetry_trace_state() {
    let mut baggage = Baggage::new();
    baggage.insert("tenant", "acme").unwrap();
    let span = our_span(
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
        0xe457_b5a2_e4d8_6bd1,
        TraceFlags::SAMPLED,
    )
    .with_sampling_state(SamplingState::Accept);
    let mut headers = Headers::new();
    JaegerPropagator.inject(
        &Context::new().with_span(span).with_baggage(baggage),
        &mut headers,
    );
    assert_eq!(headers["uberctx-tenant"], "acme");
    let theirs = otel032::JaegerPropagator::new().extract(&headers);
    assert_eq!(
        theirs
            .span()
            .span_context()
            .trace_state()
            .get("uberctx-tenant"),
        Some("acme")
    );
    assert!(opentelemetry_032::baggage::BaggageExt::baggage(&theirs).is_empty());
}
