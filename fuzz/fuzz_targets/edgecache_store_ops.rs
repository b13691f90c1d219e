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

use std::collections::HashMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_edgecache::Cache;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Insert {
        key: u8,
        value: u16,
        weight: u32,
    },
    InsertTtl {
        key: u8,
        value: u16,
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

/// The last write of a key: value, weight (0 counts as 1), expiry in seconds.
struct Written {
    value: u16,
    weight: u64,
    expires: Option<u64>,
}

fuzz_target!(|input: Input| {
    let budget = u64::from(input.budget);
    let clock = Arc::new(ManualClock::new());
    let cache: Cache<u8, (u16, u32)> = Cache::builder(budget)
        .shards(usize::from(input.shards % 8) + 1)
        .weigher(|_, &(_, weight)| weight)
        .clock(Arc::clone(&clock))
        .build();
    let mut model: HashMap<u8, Written> = HashMap::new();
    let mut now = 0_u64;
    for op in input.ops.iter().take(2_000) {
        match *op {
            Op::Insert { key, value, weight } => {
                cache.insert(key, (value, weight));
                let weight = u64::from(weight.max(1));
                model.insert(
                    key,
                    Written {
                        value,
                        weight,
                        expires: None,
                    },
                );
            }
            Op::InsertTtl {
                key,
                value,
                weight,
                seconds,
            } => {
                cache.insert_with_ttl(key, (value, weight), Duration::from_secs(seconds.into()));
                let weight = u64::from(weight.max(1));
                let expires = Some(now + u64::from(seconds));
                model.insert(
                    key,
                    Written {
                        value,
                        weight,
                        expires,
                    },
                );
            }
            Op::Get(key) | Op::Peek(key) => {
                let got = match op {
                    Op::Get(_) => cache.get(&key),
                    _ => cache.peek(&key),
                };
                match (got, model.get(&key)) {
                    (Some((value, _)), Some(written)) => {
                        assert_eq!(value, written.value, "a wrong value for {key}");
                        assert!(written.expires.is_none_or(|at| now < at), "expired value");
                    }
                    (Some(found), None) => panic!("{key} returned {found:?} after it was gone"),
                    (None, _) => {
                        model.remove(&key);
                    }
                }
            }
            Op::Remove(key) => {
                let removed = cache.remove(&key);
                let written = model.remove(&key);
                if let Some((value, _)) = removed {
                    let written = written.expect("a removed value was written");
                    assert_eq!(value, written.value);
                    assert!(written.expires.is_none_or(|at| now < at));
                }
            }
            Op::Advance(seconds) => {
                clock.advance(Duration::from_secs(seconds.into()));
                now += u64::from(seconds);
            }
        }
        assert!(cache.weighted_size() <= budget, "over budget");
    }
    cache.purge_expired();
    let (mut held, mut weight) = (0, 0);
    for (key, written) in &model {
        if let Some((value, _)) = cache.peek(key) {
            assert_eq!(value, written.value);
            held += 1;
            weight += written.weight;
        }
    }
    assert_eq!(cache.len(), held, "entries nobody can see");
    assert_eq!(cache.weighted_size(), weight);
});
