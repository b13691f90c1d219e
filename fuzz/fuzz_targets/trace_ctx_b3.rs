//! B3 parsing (single and multi header) never panics; what it accepts formats canonically
//! and re-parses identically, in both forms.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{B3, B3Propagator, Context, Propagator};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    single: String,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
    sampled: Option<String>,
    flags: Option<String>,
}

fuzz_target!(|input: Input| {
    if let Ok(b3) = B3::parse_single(&input.single) {
        // A parent id is only ever accepted after a sampling field, so nothing is lost.
        let canonical = b3.to_string();
        assert_eq!(B3::parse_single(&canonical), Ok(b3));
        assert_eq!(canonical, canonical.to_ascii_lowercase());
    }

    let mut carrier: Vec<(&str, &str)> = Vec::new();
    for (name, value) in [
        ("X-B3-TraceId", &input.trace_id),
        ("X-B3-SpanId", &input.span_id),
        ("X-B3-ParentSpanId", &input.parent_span_id),
        ("X-B3-Sampled", &input.sampled),
        ("X-B3-Flags", &input.flags),
    ] {
        if let Some(value) = value {
            carrier.push((name, value));
        }
    }
    if let Ok(b3) = B3::extract_multi(&carrier) {
        let mut out: Vec<(String, String)> = Vec::new();
        b3.inject_multi(&mut out);
        assert_eq!(B3::extract_multi(&out), Ok(b3));
        let cx = B3Propagator::multi_header().extract(&carrier);
        assert_eq!(cx.span().cloned(), b3.span_context());
        // Every sampling state (defer and debug included) survives the propagator, and a
        // reused carrier holds only what the second injection wrote.
        for propagator in [B3Propagator::multi_header(), B3Propagator::single_header()] {
            let mut again: Vec<(String, String)> = Vec::new();
            propagator.inject(&cx, &mut again);
            let back = propagator.extract(&again);
            assert_eq!(back.span(), cx.span());
            assert_eq!(back.sampling_state(), cx.sampling_state());
            propagator.inject(&Context::new(), &mut again);
            assert!(again.is_empty(), "{again:?}");
        }
    }
});
