//! infra-common: the stable hash against the hashers people reach for, and the system clock
//! against `std::time::Instant`.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use infra_common::hash::{RandomState, StableHasher, stable_hash, stable_hash_u64};
use infra_common::{Clock, SystemClock};

fn hashing(c: &mut Criterion) {
    let key = b"tenant-42/user-1337";
    let mut group = c.benchmark_group("common/hash_19b");
    group.bench_function("infra_stable", |b| b.iter(|| stable_hash(black_box(key))));
    let random = RandomState::new();
    group.bench_function("infra_random", |b| {
        b.iter(|| random.hash_one(black_box(key)));
    });
    let sip = std::collections::hash_map::RandomState::new();
    group.bench_function("std_siphash", |b| {
        b.iter(|| {
            let mut hasher = sip.build_hasher();
            hasher.write(black_box(key));
            hasher.finish()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("common/hash_u64");
    let key = 0x0123_4567_89ab_cdef_u64;
    group.bench_function("infra_stable", |b| {
        b.iter(|| stable_hash_u64(black_box(key)));
    });
    group.bench_function("infra_stable_hasher", |b| {
        b.iter(|| StableHasher::hash_one(black_box(&key)));
    });
    group.bench_function("infra_random", |b| {
        b.iter(|| random.hash_one(black_box(key)));
    });
    group.bench_function("std_siphash", |b| b.iter(|| sip.hash_one(black_box(key))));
    group.finish();
}

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("common/clock_now");
    let clock = SystemClock::new();
    group.bench_function("infra", |b| b.iter(|| black_box(&clock).now_nanos()));
    group.bench_function("std_instant", |b| b.iter(Instant::now));
    group.finish();
}

criterion_group!(benches, hashing, clocks);
criterion_main!(benches);
