//! The OTLP exporter's reading of a receiver's answer (`ExportTraceServiceResponse`'s partial
//! success), in protobuf and in JSON: any bytes give an answer or none, never a panic; an
//! answer encoded here, by a protobuf writer and with serde_json, reads back as the count
//! and message it holds (a negative count as zero), whatever unknown fields surround it.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::fuzz_otlp_response;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input {
    Bytes {
        body: Vec<u8>,
        json: bool,
    },
    Answer {
        rejected: i64,
        message: String,
        /// Unknown varint fields (number, value) written before the answer.
        unknown: Vec<(u8, u64)>,
        /// JSON: the count as a decimal string (the protobuf JSON mapping) or a number.
        count_as_string: bool,
    },
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fuzz_target!(|input: Input| match input {
    Input::Bytes { body, json } => {
        let _ = fuzz_otlp_response(&body, json);
    }
    Input::Answer {
        rejected,
        message,
        unknown,
        count_as_string,
    } => {
        let expected = Some((u64::try_from(rejected).unwrap_or(0), message.clone()));

        let mut inner = Vec::new();
        varint(&mut inner, 1 << 3);
        varint(&mut inner, rejected as u64);
        length_delimited(&mut inner, 2, message.as_bytes());
        let mut body = Vec::new();
        for (number, value) in unknown {
            // Field numbers 2 and up: 1 is the answer itself.
            varint(&mut body, (u64::from(number) + 2) << 3);
            varint(&mut body, value);
        }
        length_delimited(&mut body, 1, &inner);
        assert_eq!(fuzz_otlp_response(&body, false), expected);

        let count = if count_as_string {
            serde_json::Value::String(rejected.to_string())
        } else {
            serde_json::Value::from(rejected)
        };
        let json = serde_json::json!({
            "partialSuccess": { "rejectedSpans": count, "errorMessage": message }
        });
        let body = serde_json::to_vec(&json).expect("serialisable");
        assert_eq!(fuzz_otlp_response(&body, true), expected);
    }
});
