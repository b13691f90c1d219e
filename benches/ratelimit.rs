//! infra-ratelimit against governor and iopsystems' `ratelimit`: one direct check, a keyed
//! check among 1,000,000 tracked keys, and two threads checking one limiter.
//!
//! Each limiter runs on its default clock (ours: `SystemClock`, governor: its quanta clock,
//! `ratelimit`: `std::time::Instant`), with a quota high enough that the measured checks are
//! admitted: the admitted path is the one that writes (compare-and-swap).
//!
//! The bench also prints the bytes each keyed limiter holds per tracked key, counted by a global
//! allocator wrapper. Under `cargo test --benches` (no `--bench` argument) the keyed group
//! tracks 10,000 keys instead of 1,000,000 to keep the run short.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// Measurement scaffolding, not loom code: the two-thread driver uses std's scoped threads,
// barrier and mutex.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use infra_ratelimit::{Gcra, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// 100 million per second with a burst of one million: every measured check is admitted.
const RATE: u32 = 100_000_000;
const BURST: u32 = 1_000_000;

fn infra_quota() -> Quota {
    Quota::per_second(u64::from(RATE))
        .and_then(|q| q.with_burst(u64::from(BURST)))
        .expect("valid quota")
}

fn governor_quota() -> governor::Quota {
    let rate = NonZeroU32::new(RATE).expect("non-zero");
    let burst = NonZeroU32::new(BURST).expect("non-zero");
    governor::Quota::per_second(rate).allow_burst(burst)
}

/// The keyed group's quota: 1,000 per hour with a burst of one million. Every measured check is
/// admitted, and a key checked once stays short of full for 3.6 s, longer than the group runs:
/// infra's limiter forgets a key as soon as it has replenished (it decides like a new one), and
/// with the direct quota (a cell back every 10 ns) it would forget each key before its next
/// check, leaving nothing to look up.
const KEYED_RATE_PER_HOUR: u32 = 1_000;

fn infra_keyed_quota() -> Quota {
    Quota::per_hour(u64::from(KEYED_RATE_PER_HOUR))
        .and_then(|q| q.with_burst(u64::from(BURST)))
        .expect("valid quota")
}

fn governor_keyed_quota() -> governor::Quota {
    let rate = NonZeroU32::new(KEYED_RATE_PER_HOUR).expect("non-zero");
    let burst = NonZeroU32::new(BURST).expect("non-zero");
    governor::Quota::per_hour(rate).allow_burst(burst)
}

fn iop_limiter() -> ratelimit_iop::Ratelimiter {
    ratelimit_iop::Ratelimiter::builder(u64::from(RATE))
        .max_tokens(u64::from(BURST))
        .initial_available(u64::from(BURST))
        .build()
        .expect("valid ratelimit configuration")
}

fn direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/direct");
    let ours = RateLimiter::new(infra_quota()).expect("valid quota");
    group.bench_function("infra", |b| {
        b.iter(|| black_box(&ours).check().is_allowed());
    });
    let governor = governor::RateLimiter::direct(governor_quota());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(&governor).check().is_ok());
    });
    let iop = iop_limiter();
    group.bench_function("ratelimit", |b| {
        b.iter(|| black_box(&iop).try_wait().is_ok());
    });
    group.finish();
}

/// Whether criterion runs as a benchmark (`cargo bench`) rather than as a quick test.
fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Bytes allocated while `build` runs, per key, keeping what it built alive until measured.
fn bytes_per_key<T>(keys: u64, build: impl FnOnce() -> T) -> (T, f64) {
    let (held, built) = allocator::bytes_held_by(build);
    #[allow(clippy::cast_precision_loss)]
    let per_key = held as f64 / keys as f64;
    (built, per_key)
}

/// The next key of a pseudo-random walk over `0..keys` (a 64-bit LCG), identical for every
/// limiter, so the measured checks touch the whole map rather than a cached subset.
#[inline]
fn next_key(state: &mut u64, keys: u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 20) % keys
}

const WALK_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn keyed_1m(c: &mut Criterion) {
    let keys: u64 = if measuring() { 1_000_000 } else { 10_000 };
    let mut group = c.benchmark_group("ratelimit/keyed_1m");

    let (ours, ours_bytes) = bytes_per_key(keys, || {
        let options = KeyedOptions::default().max_keys(2_000_000);
        let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
            infra_keyed_quota(),
            infra_common::SystemClock::new(),
            options,
        )
        .expect("valid quota");
        for key in 0..keys {
            let _ = limiter.check(&key);
        }
        limiter
    });
    let mut walk = WALK_SEED;
    group.bench_function("infra", |b| {
        b.iter(|| {
            let key = next_key(&mut walk, keys);
            ours.check(black_box(&key)).is_ok_and(|d| d.is_allowed())
        });
    });
    drop(ours);

    let (governor, governor_bytes) = bytes_per_key(keys, || {
        let limiter = governor::RateLimiter::keyed(governor_keyed_quota());
        for key in 0..keys {
            let _ = limiter.check_key(&key);
        }
        limiter
    });
    let mut walk = WALK_SEED;
    group.bench_function("governor", |b| {
        b.iter(|| {
            let key = next_key(&mut walk, keys);
            governor.check_key(black_box(&key)).is_ok()
        });
    });
    drop(governor);
    group.finish();
    println!(
        "ratelimit/keyed_1m: bytes per tracked key over {keys} keys (u64 keys, GCRA): \
         infra {ours_bytes:.1}, governor {governor_bytes:.1}"
    );
}

/// Two threads checking one limiter `iters` times each; the time is the wall time of both.
fn two_threads(iters: u64, check: &(impl Fn() -> bool + Sync)) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    let started = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                if barrier.wait().is_leader() {
                    *started.lock().expect("not poisoned") = Some(Instant::now());
                }
                for _ in 0..iters {
                    black_box(check());
                }
            });
        }
    });
    let started = started
        .lock()
        .expect("not poisoned")
        .expect("set by the leader");
    started.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/contended");
    let ours = RateLimiter::new(infra_quota()).expect("valid quota");
    group.bench_function("infra", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| ours.check().is_allowed()));
    });
    let governor = governor::RateLimiter::direct(governor_quota());
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| governor.check().is_ok()));
    });
    let iop = iop_limiter();
    group.bench_function("ratelimit", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| iop.try_wait().is_ok()));
    });
    group.finish();
}

criterion_group!(benches, direct, keyed_1m, contended);
criterion_main!(benches);
