//! `uber-trace-id` parsing never panics; what it accepts formats canonically and re-parses
//! identically; `uberctx-` baggage survives injection and extraction.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{JaegerHeader, JaegerPropagator, Propagator};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    header: String,
    /// `uberctx-{key}: value` pairs as received.
    baggage: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    if let Ok(header) = JaegerHeader::parse(&input.header) {
        let canonical = header.to_string();
        assert_eq!(JaegerHeader::parse(&canonical), Ok(header));
        assert_eq!(canonical, canonical.to_ascii_lowercase());
        assert_eq!(header.span_context().is_sampled(), header.flags & 0x03 != 0);
    }
    let names: Vec<String> = input
        .baggage
        .iter()
        .map(|(k, _)| format!("uberctx-{k}"))
        .collect();
    let mut carrier: Vec<(&str, &str)> = vec![("uber-trace-id", input.header.as_str())];
    carrier.extend(
        names
            .iter()
            .map(String::as_str)
            .zip(input.baggage.iter().map(|(_, v)| v.as_str())),
    );
    let cx = JaegerPropagator.extract(&carrier);
    // What was extracted survives a round trip through our own headers.
    let mut out: Vec<(String, String)> = Vec::new();
    JaegerPropagator.inject(&cx, &mut out);
    let back = JaegerPropagator.extract(&out);
    assert_eq!(
        back.span()
            .map(|s| (s.trace_id(), s.span_id(), s.sampling_state())),
        cx.span()
            .map(|s| (s.trace_id(), s.span_id(), s.sampling_state()))
    );
    assert_eq!(back.baggage(), cx.baggage());
});
