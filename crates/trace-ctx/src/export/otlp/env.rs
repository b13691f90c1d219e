//! The OpenTelemetry SDK environment variables the OTLP exporter reads, through
//! [`crate::otel_env`]: an empty value counts as unset, a malformed one is an error naming the
//! variable.

use std::time::Duration;

use super::{Compression, OtlpExporterBuilder, Protocol, traces_url};
use crate::baggage::percent_decode_utf8;
use crate::export::ExportError;
use crate::otel_env::{self, Lookup};
use crate::span::KeyValue;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];
const COMPRESSION: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
];
const TIMEOUT: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The longest timeout accepted (an hour), from code or the environment: past that a value is
/// more likely a unit mistake, and one near `Duration::MAX` overflowed the HTTP client's
/// deadline (a panic on every export).
pub(super) const MAX_TIMEOUT_MS: u64 = 3_600_000;

pub(super) fn apply(
    mut builder: OtlpExporterBuilder,
    lookup: Lookup<'_>,
) -> Result<OtlpExporterBuilder, ExportError> {
    let get = |name: &str| otel_env::value(lookup, name);
    // The signal-specific variable wins over the general one.
    let first = |names: [&'static str; 2]| otel_env::first(lookup, &names);

    if let Some(url) = get(TRACES_ENDPOINT) {
        builder = builder.traces_endpoint(url.trim());
    } else if let Some(base) = get(ENDPOINT) {
        builder.url = traces_url(base.trim());
    }
    if let Some((name, value)) = first(PROTOCOL) {
        builder.protocol = match value.trim() {
            "http/protobuf" => Protocol::HttpProtobuf,
            "http/json" => Protocol::HttpJson,
            other => {
                return Err(ExportError::invalid(
                    name,
                    format!("{other:?}: only http/protobuf and http/json are supported"),
                ));
            }
        };
    }
    if let Some((name, value)) = first(HEADERS) {
        // Header names are taken as written: `%` is a character a header name may hold.
        for (key, value) in parse_pairs(name, &value, Keys::AsWritten)? {
            builder
                .headers
                .retain(|(existing, _)| !existing.eq_ignore_ascii_case(&key));
            builder.headers.push((key, value));
        }
    }
    if let Some((name, value)) = first(COMPRESSION) {
        builder.compression = match value.trim() {
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => {
                return Err(ExportError::invalid(
                    name,
                    format!("{other:?}: expected gzip or none"),
                ));
            }
        };
    }
    if let Some((name, value)) = first(TIMEOUT) {
        let millis = otel_env::integer(name, &value, 1..=MAX_TIMEOUT_MS, "milliseconds")?;
        builder.timeout = Duration::from_millis(millis);
    }
    if let Some(value) = get(RESOURCE_ATTRIBUTES) {
        for (key, value) in parse_pairs(RESOURCE_ATTRIBUTES, &value, Keys::PercentDecoded)? {
            builder = builder.resource_attribute(KeyValue::new(key, value));
        }
    }
    // Applied last: OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES.
    if let Some(name) = get(SERVICE_NAME) {
        builder.service_name = Some(name.trim().to_owned());
    }
    Ok(builder)
}

/// Whether the keys of a `key=value` list are percent-decoded like its values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    AsWritten,
    /// As the resource SDK specification has it for `OTEL_RESOURCE_ATTRIBUTES`, whose keys
    /// carry `,` and `=` percent-encoded.
    PercentDecoded,
}

/// `key1=value1,key2=value2`, values (and, as `keys` says, keys) percent-decoded (the W3C
/// Baggage syntax both variables use). Blank members are skipped; a member without `=`, with
/// a key that is empty or blank (once decoded, where keys are), or with escapes that are
/// malformed or decode to bytes that are not UTF-8 is an error: the specification calls a
/// decoding failure an error, and a U+FFFD put in its place would send a value nobody wrote.
fn parse_pairs(
    name: &'static str,
    list: &str,
    keys: Keys,
) -> Result<Vec<(String, String)>, ExportError> {
    let mut pairs = Vec::new();
    for member in list.split(',') {
        if member.trim().is_empty() {
            continue;
        }
        let (key, value) = member
            .split_once('=')
            .ok_or_else(|| ExportError::invalid(name, format!("{member:?} is not key=value")))?;
        let decode = |text: &str| {
            percent_decode_utf8(text).ok_or_else(|| {
                ExportError::invalid(
                    name,
                    format!("{member:?} has a malformed percent escape, or one that is not UTF-8"),
                )
            })
        };
        let key = match keys {
            Keys::AsWritten => key.trim().to_owned(),
            Keys::PercentDecoded => decode(key.trim())?,
        };
        // Checked once decoded: `%20` is as blank a key as a space.
        if key.trim().is_empty() {
            return Err(ExportError::invalid(
                name,
                format!("{member:?} has an empty key"),
            ));
        }
        pairs.push((key, decode(value.trim())?));
    }
    Ok(pairs)
}
