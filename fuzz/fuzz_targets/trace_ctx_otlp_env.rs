//! The OTLP exporter's environment variables: any values parse or are refused with an error
//! naming a variable, never a panic; what is accepted obeys the specification's rules, checked
//! against a model written here; and an accepted configuration builds or is refused cleanly.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{ExportError, OtlpExporter};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 13] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SERVICE_NAME",
    "OTEL_UNRELATED",
];

#[derive(Debug, Arbitrary)]
struct Input {
    /// A value for each variable in `NAMES`, or unset.
    values: [Option<String>; 13],
}

/// The variable in effect among a signal-specific one and its general one (empty = unset).
fn effective<'a>(input: &'a Input, specific: usize, general: usize) -> Option<&'a str> {
    [specific, general]
        .into_iter()
        .find_map(|i| input.values[i].as_deref().filter(|v| !v.trim().is_empty()))
}

fuzz_target!(|input: Input| {
    let lookup = |name: &str| {
        let index = NAMES.iter().position(|n| *n == name)?;
        input.values[index].clone()
    };
    match OtlpExporter::builder().from_lookup(lookup) {
        Ok(builder) => {
            if let Some(protocol) = effective(&input, 3, 2) {
                assert!(matches!(protocol.trim(), "http/protobuf" | "http/json"));
            }
            if let Some(compression) = effective(&input, 7, 6) {
                assert!(matches!(compression.trim(), "gzip" | "none"));
            }
            if let Some(timeout) = effective(&input, 9, 8) {
                let ms: u64 = timeout.trim().parse().expect("an accepted timeout is a number");
                assert!((1..=3_600_000).contains(&ms));
            }
            match builder.build() {
                Ok(_) | Err(ExportError::InvalidConfig { .. }) => {}
                Err(other) => panic!("building only fails on configuration: {other:?}"),
            }
        }
        Err(ExportError::InvalidConfig { setting, .. }) => {
            assert!(NAMES[..12].contains(&setting), "{setting}");
        }
        Err(other) => panic!("parsing only fails on configuration: {other:?}"),
    }
});
