//! OpenTelemetry's `ot=` sub-keys in `tracestate` (`th:` threshold, `rv:` randomness, others
//! kept as they are): reading never panics and agrees with a model of the specification's
//! rules (`th` is 1 to 14 lowercase hex digits, padded with zeros to 56 bits; `rv` exactly 14);
//! writing a threshold or a randomness reads back as written, keeps every other sub-key and
//! entry in order, and the result re-parses to the same state.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::{Threshold, TraceState};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Entries before the `ot` one, as `key=value` text.
    before: String,
    /// The `ot` value's sub-keys, joined with `;`.
    sub_keys: Vec<SubKey>,
    /// Entries after the `ot` one.
    after: String,
    writes: Vec<Write>,
}

#[derive(Debug, Arbitrary)]
enum SubKey {
    Th(String),
    Rv(String),
    Other(String, String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Write {
    Threshold(Option<u64>),
    Randomness(u64),
}

const LOWER_HEX: &str = "0123456789abcdef";

/// `th`: 1 to 14 lowercase hex digits, the value they give when padded on the right with
/// zeros to 14 digits.
fn model_th(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 14 || !text.chars().all(|c| LOWER_HEX.contains(c)) {
        return None;
    }
    u64::from_str_radix(&format!("{text:0<14}"), 16).ok()
}

/// `rv`: exactly 14 lowercase hex digits.
fn model_rv(text: &str) -> Option<u64> {
    if text.len() != 14 || !text.chars().all(|c| LOWER_HEX.contains(c)) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// The value of the first `key:` member of the `ot` entry.
fn sub_key<'a>(state: &'a TraceState, key: &str) -> Option<&'a str> {
    state
        .get("ot")?
        .split(';')
        .find_map(|member| member.strip_prefix(key)?.strip_prefix(':'))
}

/// The `ot` members other than `key:…`, and the entries other than `ot`.
fn rest(state: &TraceState, key: &str) -> (Vec<String>, Vec<(String, String)>) {
    let members = state
        .get("ot")
        .unwrap_or("")
        .split(';')
        .filter(|m| !m.is_empty() && m.split_once(':').map(|(k, _)| k) != Some(key))
        .map(str::to_owned)
        .collect();
    let entries = state
        .iter()
        .filter(|(k, _)| *k != "ot")
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (members, entries)
}

fn check_reads(state: &TraceState) {
    assert_eq!(
        state.ot_threshold().map(Threshold::bits),
        sub_key(state, "th").and_then(model_th),
        "th of {state}"
    );
    assert_eq!(
        state.ot_randomness(),
        sub_key(state, "rv").and_then(model_rv),
        "rv of {state}"
    );
    let reparsed = TraceState::parse(&state.to_string()).expect("a written state parses");
    assert_eq!(&reparsed, state);
}

fn write(
    state: &mut TraceState,
    key: &str,
    value: Option<u64>,
    apply: impl FnOnce(&mut TraceState) -> Result<(), infra_trace_ctx::Error>,
) {
    let before = state.clone();
    let (members, entries) = rest(state, key);
    match apply(state) {
        Ok(()) => {
            check_reads(state);
            assert_eq!(rest(state, key), (members, entries), "only {key} changed");
            match key {
                "th" => assert_eq!(state.ot_threshold().map(Threshold::bits), value),
                _ => assert_eq!(state.ot_randomness(), value),
            }
            if value.is_some() {
                // What is written comes first in `ot`, and `ot` first in the list.
                let first = state.iter().next().expect("ot is present");
                assert_eq!(first.0, "ot");
                assert!(first.1.starts_with(&format!("{key}:")));
            }
        }
        Err(_) => assert_eq!(state, &before, "a refused write changes nothing"),
    }
}

fuzz_target!(|input: Input| {
    let ot: Vec<String> = input
        .sub_keys
        .iter()
        .map(|sub_key| match sub_key {
            SubKey::Th(v) => format!("th:{v}"),
            SubKey::Rv(v) => format!("rv:{v}"),
            SubKey::Other(k, v) => format!("{k}:{v}"),
            SubKey::Raw(raw) => raw.clone(),
        })
        .collect();
    let header = format!("{},ot={},{}", input.before, ot.join(";"), input.after);
    let Ok(mut state) = TraceState::parse(&header) else {
        return;
    };
    check_reads(&state);
    for op in &input.writes {
        match *op {
            Write::Threshold(bits) => {
                let threshold = bits.and_then(|b| Threshold::from_bits(b & ((1 << 56) - 1)));
                if let Some(t) = threshold {
                    // `th` is written with trailing zeros removed and reads back exactly.
                    let text = t.to_string();
                    assert!((1..=14).contains(&text.len()), "{text}");
                    assert!(text == "0" || !text.ends_with('0'), "{text}");
                    assert_eq!(model_th(&text), Some(t.bits()), "{text}");
                    assert_eq!(Threshold::parse(&text), Ok(t));
                }
                let expected = threshold.map(Threshold::bits);
                write(&mut state, "th", expected, |s| {
                    s.set_ot_threshold(threshold)
                });
            }
            Write::Randomness(value) => {
                let expected = Some(value % (1 << 56));
                write(&mut state, "rv", expected, |s| s.set_ot_randomness(value));
            }
        }
    }
});
