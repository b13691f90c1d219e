//! `traceparent` parsing never panics; whatever it accepts has the structure the spec
//! requires, formats to a canonical version-00 header, and parses back identically.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{Propagator, TraceContextPropagator, TraceParent};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The header value as received.
    value: String,
    /// Also send it twice (a repeated traceparent must be rejected).
    repeat: bool,
}

/// An independent reading of the rules: the four dash-separated leading fields of a value
/// the parser accepted.
fn reference_fields(value: &str) -> Option<(&str, &str, &str, &str)> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let version = value.get(0..2)?;
    let trace = value.get(3..35)?;
    let parent = value.get(36..52)?;
    let flags = value.get(53..55)?;
    let dashes = [2, 35, 52].iter().all(|&i| value.as_bytes()[i] == b'-');
    let ok = dashes
        && lower_hex(version)
        && version != "ff"
        && lower_hex(trace)
        && lower_hex(parent)
        && lower_hex(flags)
        && trace != "00000000000000000000000000000000"
        && parent != "0000000000000000"
        && (if version == "00" {
            value.len() == 55
        } else {
            value.len() == 55 || value.as_bytes()[55] == b'-'
        });
    ok.then_some((version, trace, parent, flags))
}

fuzz_target!(|input: Input| {
    let parsed = TraceParent::parse(&input.value);
    let reference = reference_fields(&input.value);
    assert_eq!(
        parsed.is_ok(),
        reference.is_some(),
        "parser and reference disagree on {:?}",
        input.value
    );
    if let Ok(parent) = parsed {
        let (_, trace, span, flags) = reference.unwrap_or_default();
        let header = parent.encode();
        let canonical = header.as_str();
        assert_eq!(&canonical[..3], "00-");
        assert_eq!(&canonical[3..35], trace);
        assert_eq!(&canonical[36..52], span);
        let flags = u8::from_str_radix(flags, 16).unwrap_or_default() & 0x03;
        assert_eq!(parent.flags.bits(), flags, "unknown flags must be dropped");
        assert_eq!(TraceParent::parse(canonical), Ok(parent));
        assert_eq!(
            TraceParent::parse(canonical).map(|p| p.encode()),
            Ok(header)
        );
    }
    let mut carrier = vec![("traceparent", input.value.as_str())];
    if input.repeat {
        carrier.push(("traceparent", input.value.as_str()));
    }
    let cx = TraceContextPropagator.extract(&carrier);
    assert_eq!(cx.span().is_some(), parsed.is_ok() && !input.repeat);
});
