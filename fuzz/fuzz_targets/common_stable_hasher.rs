//! The streaming stable hasher equals the one-shot stable hash however the input is split.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::hash::Hasher;

use arbitrary::Arbitrary;
use infra_common::hash::{StableHasher, stable_hash};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    bytes: Vec<u8>,
    /// Lengths of the successive `write` calls; what they leave over is written last.
    chunk_lengths: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let mut hasher = StableHasher::new();
    let mut rest = input.bytes.as_slice();
    for length in input.chunk_lengths {
        let (chunk, tail) = rest.split_at(usize::from(length).min(rest.len()));
        hasher.write(chunk);
        rest = tail;
    }
    hasher.write(rest);
    assert_eq!(hasher.finish(), stable_hash(&input.bytes));
});
