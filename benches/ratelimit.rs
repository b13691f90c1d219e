//! infra-ratelimit against governor and iopsystems' `ratelimit`: one direct check (admitted and
//! denied), a keyed check among 1,000,000 tracked keys (`u64` keys and IP addresses as
//! `String`s), and two threads checking one limiter.
//!
//! Clocks. Each limiter runs on its default clock (ours: `SystemClock`; governor: its quanta
//! clock; `ratelimit`: `std::time::Instant`), and the direct group adds each one's cached
//! clock or quanta variant beside it: ours on `CoarseClock` (refreshed every millisecond),
//! governor on `QuantaUpkeepClock` (quanta's upkeep thread, every millisecond), and
//! `ratelimit` on a quanta clock read as governor reads it. Keyed groups run governor's store
//! both as shipped (std's SipHash `RandomState`) and with our hasher (infra-common's
//! `RandomState`), so the map's hashing is not what is compared.
//!
//! Admitted groups use a quota high enough that every measured check is admitted: the admitted
//! path is the one that writes (compare-and-swap). The denied group drains a one-per-hour
//! limiter first, so every measured check is denied.
//!
//! The bench also prints the bytes each keyed limiter holds per tracked key, counted by a global
//! allocator wrapper. Under `cargo test --benches` (no `--bench` argument) the keyed groups
//! track 10,000 keys instead of 1,000,000 to keep the run short.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// Measurement scaffolding, not loom code: the two-thread driver uses std's scoped threads,
// barrier and mutex.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use infra_common::{CoarseClock, RandomState, SystemClock};
use infra_ratelimit::{Gcra, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// One per nanosecond with a burst of one million: every measured check is admitted, even on a
/// cached clock, which stands still for a millisecond while a million cells come back.
const RATE: u32 = 1_000_000_000;
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

/// The keyed groups' quota: 1,000 per hour with a burst of one million. Every measured check is
/// admitted, and a key checked once stays short of full for 3.6 s, longer than a group runs:
/// infra's limiter forgets a key as soon as it has replenished (it decides like a new one), and
/// with the direct quota it would forget each key before its next check, leaving nothing to
/// look up.
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

/// The cached clocks' refresh interval.
const UPKEEP: Duration = Duration::from_millis(1);

/// A quanta clock for iopsystems' `ratelimit`, read as governor reads its own: the raw counter
/// scaled to nanoseconds since an origin.
struct QuantaClock {
    clock: quanta::Clock,
    origin: u64,
}

impl QuantaClock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl ratelimit_iop::Clock for QuantaClock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.clock.delta_as_nanos(self.origin, self.clock.raw()))
    }
}

fn iop_limiter<C: ratelimit_iop::Clock>(clock: C) -> ratelimit_iop::Ratelimiter<C> {
    ratelimit_iop::Builder::with_clock(u64::from(RATE), clock)
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
    let coarse = RateLimiter::gcra(infra_quota(), CoarseClock::new()).expect("valid quota");
    group.bench_function("infra_coarse", |b| {
        b.iter(|| black_box(&coarse).check().is_allowed());
    });
    drop(coarse);
    let upkeep =
        governor::clock::QuantaUpkeepClock::from_interval(UPKEEP).expect("one upkeep thread");
    let governor_upkeep = governor::RateLimiter::direct_with_clock(governor_quota(), upkeep);
    group.bench_function("governor_upkeep", |b| {
        b.iter(|| black_box(&governor_upkeep).check().is_ok());
    });
    drop(governor_upkeep);
    let iop = iop_limiter(ratelimit_iop::StdClock::new());
    group.bench_function("ratelimit", |b| {
        b.iter(|| black_box(&iop).try_wait().is_ok());
    });
    let iop_quanta = iop_limiter(QuantaClock::new());
    group.bench_function("ratelimit_quanta", |b| {
        b.iter(|| black_box(&iop_quanta).try_wait().is_ok());
    });
    group.finish();
}

fn denied(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/denied");
    // One per hour, burst 1, drained: every measured check is denied.
    let ours = RateLimiter::new(Quota::per_hour(1).expect("valid quota")).expect("valid quota");
    assert!(ours.check().is_allowed());
    group.bench_function("infra", |b| {
        b.iter(|| black_box(&ours).check().is_denied());
    });
    group.bench_function("infra_try_check", |b| {
        b.iter(|| black_box(&ours).try_check().is_err());
    });
    let governor = governor::RateLimiter::direct(governor::Quota::per_hour(NonZeroU32::MIN));
    assert!(governor.check().is_ok());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(&governor).check().is_err());
    });
    let iop = ratelimit_iop::Ratelimiter::builder(1)
        .period(Duration::from_secs(3_600))
        .max_tokens(1)
        .initial_available(1)
        .build()
        .expect("valid ratelimit configuration");
    assert!(iop.try_wait().is_ok());
    group.bench_function("ratelimit", |b| {
        b.iter(|| black_box(&iop).try_wait().is_err());
    });
    group.finish();
}

/// Whether criterion runs as a benchmark (`cargo bench`) rather than as a quick test.
fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Bytes allocated while `build` runs, per key, keeping what it built alive until measured.
fn bytes_per_key<T>(keys: usize, build: impl FnOnce() -> T) -> (T, f64) {
    let (held, built) = allocator::bytes_held_by(build);
    #[allow(clippy::cast_precision_loss)]
    let per_key = held as f64 / keys as f64;
    (built, per_key)
}

/// The next index of a pseudo-random walk over `0..keys` (a 64-bit LCG), identical for every
/// limiter, so the measured checks touch the whole map rather than a cached subset.
#[inline]
fn next_index(state: &mut u64, keys: usize) -> usize {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    #[allow(clippy::cast_possible_truncation)]
    let index = (*state >> 20) as usize % keys;
    index
}

const WALK_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Measures `check` on a random walk over `keys` under `name`, building the limiter with
/// `build` first (and counting its bytes per key), then drops it; returns the bytes per key.
fn keyed_run<K, L>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    keys: &[K],
    build: impl FnOnce(&[K]) -> L,
    check: impl Fn(&L, &K) -> bool,
) -> f64 {
    let (limiter, bytes) = bytes_per_key(keys.len(), || build(keys));
    let mut walk = WALK_SEED;
    group.bench_function(name, |b| {
        b.iter(|| {
            let key = &keys[next_index(&mut walk, keys.len())];
            check(black_box(&limiter), black_box(key))
        });
    });
    drop(limiter);
    bytes
}

/// The keyed groups over `keys`: ours, governor with our hasher, governor as shipped.
fn keyed_group<K>(
    c: &mut Criterion,
    name: &str,
    keys: &[K],
    check_ours: fn(&KeyedRateLimiter<K, Gcra, SystemClock>, &K) -> bool,
) where
    K: std::hash::Hash + Eq + Clone + Send + Sync,
{
    let mut group = c.benchmark_group(name);
    let ours = keyed_run(
        &mut group,
        "infra",
        keys,
        |keys| {
            let options = KeyedOptions::default().max_keys(2 * keys.len());
            let limiter =
                KeyedRateLimiter::with_options(infra_keyed_quota(), SystemClock::new(), options)
                    .expect("valid quota");
            for key in keys {
                check_ours(&limiter, key);
            }
            limiter
        },
        check_ours,
    );
    let same_hasher = keyed_run(
        &mut group,
        "governor_same_hasher",
        keys,
        |keys| {
            let limiter = governor::RateLimiter::dashmap_with_hasher(
                governor_keyed_quota(),
                RandomState::new(),
            );
            for key in keys {
                let _ = limiter.check_key(key);
            }
            limiter
        },
        |limiter, key| limiter.check_key(key).is_ok(),
    );
    let shipped = keyed_run(
        &mut group,
        "governor",
        keys,
        |keys| {
            let limiter = governor::RateLimiter::keyed(governor_keyed_quota());
            for key in keys {
                let _ = limiter.check_key(key);
            }
            limiter
        },
        |limiter, key| limiter.check_key(key).is_ok(),
    );
    group.finish();
    println!(
        "{name}: bytes per tracked key over {} keys (GCRA): infra {ours:.1}, governor with the \
         same hasher {same_hasher:.1}, governor as shipped {shipped:.1}",
        keys.len()
    );
}

fn keyed_u64(c: &mut Criterion) {
    let count: u64 = if measuring() { 1_000_000 } else { 10_000 };
    let keys: Vec<u64> = (0..count).collect();
    keyed_group(c, "ratelimit/keyed_1m", &keys, |limiter, key| {
        limiter.check(key).is_ok_and(|d| d.is_allowed())
    });
}

fn keyed_ip_strings(c: &mut Criterion) {
    let count: u32 = if measuring() { 1_000_000 } else { 10_000 };
    // Distinct IPv4 addresses, 10.0.0.0 upwards, as the text a proxy header carries.
    let keys: Vec<String> = (0..count)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
        .collect();
    keyed_group(c, "ratelimit/keyed_1m_ip", &keys, |limiter, key| {
        limiter.check(key.as_str()).is_ok_and(|d| d.is_allowed())
    });
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
    let iop = iop_limiter(ratelimit_iop::StdClock::new());
    group.bench_function("ratelimit", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| iop.try_wait().is_ok()));
    });
    group.finish();
}

criterion_group!(
    benches,
    direct,
    denied,
    keyed_u64,
    keyed_ip_strings,
    contended
);
criterion_main!(benches);
