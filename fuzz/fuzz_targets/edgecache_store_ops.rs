//! Arbitrary sequences of inserts (with and without a time to live, with any weight), lookups,
//! peeks, removals and clock advances on a small edgecache store agree with a reference model
//! of what was last written: a lookup returns the last value written for its key or nothing,
//! never an expired value, and an entry once shown gone stays gone until written again. The
//! budget holds after every operation, and at the end the entries and weights the store counts
//! are exactly those it shows.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use arbitrary::Arbitrary;
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_edgecache::Cache;
use libfuzzer_sys::fuzz_target;

// The reference model `tests/store.rs` checks the store against.
#[path = "../../crates/edgecache/tests/support/store_model.rs"]
mod model;
use model::Model;

#[derive(Debug, Arbitrary)]
enum Op {
    Insert {
        key: u8,
        value: u32,
        weight: u32,
    },
    InsertTtl {
        key: u8,
        value: u32,
        weight: u32,
        seconds: u32,
    },
    Get(u8),
    Peek(u8),
    Remove(u8),
    Advance(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    budget: u16,
    shards: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let budget = u64::from(input.budget);
    let clock = Arc::new(ManualClock::new());
    let cache: Cache<u8, (u32, u32)> = Cache::builder(budget)
        .shards(usize::from(input.shards % 8) + 1)
        .weigher(|_, &(_, weight)| weight)
        .clock(Arc::clone(&clock))
        .build();
    // One model tick is one second of the cache's clock.
    let mut model = Model::default();
    for op in input.ops.iter().take(2_000) {
        match *op {
            Op::Insert { key, value, weight } => {
                cache.insert(key, (value, weight));
                model.insert(key, value, weight, None);
            }
            Op::InsertTtl {
                key,
                value,
                weight,
                seconds,
            } => {
                cache.insert_with_ttl(key, (value, weight), Duration::from_secs(seconds.into()));
                model.insert(key, value, weight, Some(u64::from(seconds)));
            }
            Op::Get(key) | Op::Peek(key) => {
                let got = match op {
                    Op::Get(_) => cache.get(&key),
                    _ => cache.peek(&key),
                };
                if let Err(error) = model.looked_up(key, got.map(|(value, _)| value)) {
                    panic!("{error}");
                }
            }
            Op::Remove(key) => {
                let removed = cache.remove(&key);
                if let Err(error) = model.removed(key, removed.map(|(value, _)| value)) {
                    panic!("{error}");
                }
            }
            Op::Advance(seconds) => {
                clock.advance(Duration::from_secs(seconds.into()));
                model.advance(u64::from(seconds));
            }
        }
        assert!(cache.weighted_size() <= budget, "over budget");
    }
    cache.purge_expired();
    let (held, weight) = model
        .held(|key| cache.peek(&key).map(|(value, _)| value))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(cache.len(), held, "entries nobody can see");
    assert_eq!(cache.weighted_size(), weight);
});
