//! Baggage parsing never panics; what it accepts respects the W3C limits, formats
//! canonically and re-parses identically; and any UTF-8 value survives a round trip through
//! percent-encoding.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{Baggage, BaggagePropagator, Propagator};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Repeated `baggage` fields.
    fields: Vec<String>,
    /// A value set through the API, then read back from the wire.
    value: String,
}

fuzz_target!(|input: Input| {
    let parsed = Baggage::parse_all(input.fields.iter().map(String::as_str));
    if let Ok(baggage) = &parsed {
        assert!(baggage.len() <= Baggage::MAX_MEMBERS);
        let canonical = baggage.to_string();
        assert!(canonical.len() <= Baggage::MAX_BYTES);
        let reparsed = Baggage::parse(&canonical).expect("canonical form parses");
        assert_eq!(&reparsed, baggage);
        assert_eq!(reparsed.to_string(), canonical);
    }
    let carrier: Vec<(&str, &str)> = input
        .fields
        .iter()
        .map(|f| ("baggage", f.as_str()))
        .collect();
    let cx = BaggagePropagator.extract(&carrier);
    match &parsed {
        Ok(baggage) => assert_eq!(cx.baggage(), baggage),
        Err(_) => assert!(cx.baggage().is_empty()),
    }

    let mut baggage = Baggage::new();
    if baggage.insert("k", &input.value).is_ok() {
        let back = Baggage::parse(&baggage.to_string()).expect("encoded value parses");
        assert_eq!(back.get("k"), Some(input.value.as_str()));
    }
});
