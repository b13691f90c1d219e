//! The OTLP exporter's environment variables, read through `from_lookup` (what `from_env`
//! calls): any values parse or are refused with an error naming a variable, never a panic.
//! A model written here from the SDK specification decides which effective values are
//! malformed; the parser must accept exactly when the model finds none, and an error must name
//! one the model finds malformed. An accepted configuration builds or is refused cleanly.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{ExportError, OtlpExporter};
use libfuzzer_sys::fuzz_target;

// Indexes into `NAMES` of the variables the model checks; the endpoints and the service name
// are free text to it (`build` checks the URL), and the last name is one the exporter ignores.
const PROTOCOL: usize = 2;
const TRACES_PROTOCOL: usize = 3;
const HEADERS: usize = 4;
const TRACES_HEADERS: usize = 5;
const COMPRESSION: usize = 6;
const TRACES_COMPRESSION: usize = 7;
const TIMEOUT: usize = 8;
const TRACES_TIMEOUT: usize = 9;
const RESOURCE_ATTRIBUTES: usize = 10;

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

/// A value the specification treats as set: present and not blank.
fn set(input: &Input, index: usize) -> Option<&str> {
    input.values[index]
        .as_deref()
        .map(|v| v.trim_matches(char::is_whitespace))
        .filter(|v| !v.is_empty())
}

/// The variable in effect: the signal-specific one if set, else the general one.
fn effective(input: &Input, specific: usize, general: usize) -> Option<(usize, &str)> {
    [specific, general]
        .into_iter()
        .find_map(|i| set(input, i).map(|v| (i, v)))
}

/// Milliseconds, as the specification's "Timeout" type: an integer (decimal digits only),
/// here from 1 ms to an hour. Compared as digit strings, so no integer parser is involved.
fn timeout_ok(value: &str) -> bool {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let significant = value.trim_start_matches('0');
    !significant.is_empty()
        && (significant.len() < 7 || (significant.len() == 7 && significant <= "3600000"))
}

/// `text` percent-decoded, if each `%` in it starts an escape of two hex digits and the bytes
/// decoded are UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
    let mut decoded = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let (high, low) = (hex(at + 1)?, hex(at + 2)?);
            decoded.push((high * 16 + low) as u8);
            at += 3;
        } else {
            decoded.push(byte);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `key=value` members separated by commas (blank members allowed), each value (and each key,
/// when `keys_decoded`: the resource attributes, whose keys the specification percent-encodes
/// too) decoding to UTF-8 (`decode`), and each key non-blank (once decoded, where it is: `%20`
/// is as blank as a space).
fn pairs_ok(list: &str, keys_decoded: bool) -> bool {
    list.split(',')
        .filter(|member| !member.trim().is_empty())
        .all(|member| {
            let Some((key, value)) = member.split_once('=') else {
                return false;
            };
            let key = if keys_decoded {
                decode(key)
            } else {
                Some(key.to_owned())
            };
            key.is_some_and(|key| !key.trim().is_empty()) && decode(value).is_some()
        })
}

/// The variables whose effective value the model finds malformed.
fn malformed(input: &Input) -> Vec<&'static str> {
    let mut bad = Vec::new();
    let mut check = |found: Option<(usize, &str)>, ok: &dyn Fn(&str) -> bool| {
        if let Some((index, value)) = found
            && !ok(value)
        {
            bad.push(NAMES[index]);
        }
    };
    check(effective(input, TRACES_PROTOCOL, PROTOCOL), &|v| {
        v == "http/protobuf" || v == "http/json"
    });
    check(effective(input, TRACES_COMPRESSION, COMPRESSION), &|v| {
        v == "gzip" || v == "none"
    });
    check(effective(input, TRACES_TIMEOUT, TIMEOUT), &timeout_ok);
    check(effective(input, TRACES_HEADERS, HEADERS), &|v| {
        pairs_ok(v, false)
    });
    check(
        set(input, RESOURCE_ATTRIBUTES).map(|v| (RESOURCE_ATTRIBUTES, v)),
        &|v| pairs_ok(v, true),
    );
    bad
}

fuzz_target!(|input: Input| {
    let lookup = |name: &str| {
        let index = NAMES.iter().position(|n| *n == name)?;
        input.values[index].clone()
    };
    let bad = malformed(&input);
    match OtlpExporter::builder().from_lookup(lookup) {
        Ok(builder) => {
            assert!(bad.is_empty(), "accepted although {bad:?} are malformed");
            match builder.build() {
                Ok(_) => {}
                Err(ExportError::InvalidConfig { setting, .. }) => {
                    assert!(matches!(setting, "endpoint" | "headers"), "{setting}");
                }
                Err(other) => panic!("building only fails on configuration: {other:?}"),
            }
        }
        Err(ExportError::InvalidConfig { setting, .. }) => {
            assert!(
                bad.contains(&setting),
                "refused {setting}, which the model finds well formed (malformed: {bad:?})"
            );
        }
        Err(other) => panic!("parsing only fails on configuration: {other:?}"),
    }
});
