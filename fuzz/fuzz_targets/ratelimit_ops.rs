//! Arbitrary sequences of (advance time, check n, sweep) on every rate-limiting algorithm, direct
//! and keyed (eight keys competing for a cap of 1 to 4, so new keys keep evicting replenished
//! ones, or a roomy 256), agree step by step with the crate's simple reference models: admitted
//! or not, remaining, retry-after and reset-after; a keyed limiter refuses a new key only when
//! the cap is full of keys that are not idle, eviction never changes a decision, and a sweep
//! leaves exactly the keys that are not idle.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use arbitrary::Arbitrary;
use infra_ratelimit::Quota;
use infra_ratelimit::reference::{Kind, Op, run};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    AdvanceMicros(u32),
    AdvanceNanos(u16),
    Check { key: u8, n: u8 },
    Sweep,
}

#[derive(Debug, Arbitrary)]
struct Input {
    kind: u8,
    /// 0: a direct limiter; otherwise a keyed one (see `max_keys` below).
    cap: u8,
    limit: u8,
    period_millis: u16,
    burst: u8,
    ops: Vec<FuzzOp>,
}

fuzz_target!(|input: Input| {
    let kind = Kind::ALL[usize::from(input.kind) % Kind::ALL.len()];
    let Ok(quota) = Quota::new(
        u64::from(input.limit),
        Duration::from_millis(u64::from(input.period_millis)),
    )
    .and_then(|q| q.with_burst(u64::from(input.burst))) else {
        return;
    };
    let ops: Vec<Op> = input
        .ops
        .iter()
        .take(128)
        .map(|op| match *op {
            FuzzOp::AdvanceMicros(micros) => Op::Advance(u64::from(micros) * 1_000),
            FuzzOp::AdvanceNanos(nanos) => Op::Advance(u64::from(nanos)),
            FuzzOp::Check { key, n } => Op::Check {
                key: key % 8,
                n: u32::from(n % 32),
            },
            FuzzOp::Sweep => Op::Sweep,
        })
        .collect();
    let max_keys = match input.cap % 6 {
        0 => None,
        5 => Some(256),
        cap => Some(usize::from(cap)),
    };
    if let Err(disagreement) = run(kind, quota, max_keys, &ops) {
        panic!("{kind:?} max_keys={max_keys:?} {quota:?}: {disagreement}");
    }
});
