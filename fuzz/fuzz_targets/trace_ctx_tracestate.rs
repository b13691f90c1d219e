//! `tracestate` parsing never panics; what it accepts is within the limits, formats
//! canonically and re-parses identically, and the combination of repeated headers equals
//! parsing them joined with commas.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_trace_ctx::TraceState;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Repeated header fields, in order.
    fields: Vec<String>,
    /// An entry to insert afterwards.
    insert: Option<(String, String)>,
}

/// An independent, deliberately plain reading of the Level 2 list rules: the members a valid
/// header holds, in order, or `None` if the header is invalid.
fn reference(header: &str) -> Option<Vec<(String, String)>> {
    let mut members: Vec<(String, String)> = Vec::new();
    for member in header.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        let key_ok = key.len() <= 256
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*/@".contains(c));
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && !value.ends_with(' ')
            && value
                .chars()
                .all(|c| (' '..='~').contains(&c) && c != ',' && c != '=');
        if !key_ok || !value_ok {
            return None;
        }
        // A repeated key keeps its first entry.
        if !members.iter().any(|(k, _)| k == key) {
            members.push((key.to_owned(), value.to_owned()));
        }
    }
    (members.len() <= TraceState::MAX_MEMBERS).then_some(members)
}

fuzz_target!(|input: Input| {
    let parsed = TraceState::parse_all(input.fields.iter().map(String::as_str));
    let joined = TraceState::parse(&input.fields.join(","));
    assert_eq!(parsed, joined, "repeated fields combine as if joined");
    let expected = reference(&input.fields.join(","));
    assert_eq!(
        parsed.is_ok(),
        expected.is_some(),
        "parser and reference disagree on {:?}",
        input.fields
    );
    if let (Ok(state), Some(members)) = (&parsed, &expected) {
        let total: usize = members
            .iter()
            .map(|(k, v)| k.len() + v.len() + 1)
            .sum::<usize>()
            + members.len().saturating_sub(1);
        if total <= TraceState::MAX_LEN {
            let got: Vec<(String, String)> = state
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(
                &got, members,
                "a short valid header is kept whole, in order"
            );
        }
    }
    let Ok(mut state) = parsed else { return };
    check(&state);
    if let Some((key, value)) = &input.insert {
        let before = state.clone();
        match state.insert(key, value) {
            Ok(()) => {
                assert_eq!(state.iter().next(), Some((key.as_str(), value.as_str())));
                assert_eq!(state.iter().filter(|(k, _)| k == key).count(), 1);
                check(&state);
            }
            Err(_) => assert_eq!(state, before, "a rejected insert changes nothing"),
        }
    }
});

fn check(state: &TraceState) {
    assert!(state.len() <= TraceState::MAX_MEMBERS);
    assert!(state.as_str().len() <= TraceState::MAX_LEN);
    let canonical = state.to_string();
    assert!(!canonical.contains(' ') || canonical.split(',').all(|e| !e.ends_with(' ')));
    let reparsed = TraceState::parse(&canonical).expect("canonical form parses");
    assert_eq!(&reparsed, state);
    assert_eq!(reparsed.to_string(), canonical);
}
