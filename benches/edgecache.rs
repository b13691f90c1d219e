//! infra-edgecache's store against moka (`sync::Cache`) and quick_cache (`sync::Cache`): hit
//! reads from one and two threads, and a mixed load of reads and inserts over a key space
//! twice the cache's size. Each peer runs as shipped and, where it lets one choose, with the
//! same keyed hasher as ours (`+ours hasher` rows).

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The two-thread driver uses std's scoped threads and barrier outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infra_common::RandomState;
use infra_edgecache::Cache;

mod support;
use support::threads::two_threads;

/// Entries in every cache.
const ENTRIES: u64 = 100_000;

/// A cache under test: get and insert of u64 keys and values.
trait Bench: Sync {
    fn get(&self, key: u64) -> Option<u64>;
    fn insert(&self, key: u64, value: u64);
}

impl Bench for Cache<u64, u64> {
    fn get(&self, key: u64) -> Option<u64> {
        Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: u64) {
        Cache::insert(self, key, value);
    }
}

impl<S: std::hash::BuildHasher + Clone + Send + Sync + 'static> Bench
    for moka::sync::Cache<u64, u64, S>
{
    fn get(&self, key: u64) -> Option<u64> {
        moka::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: u64) {
        moka::sync::Cache::insert(self, key, value);
    }
}

impl<S: std::hash::BuildHasher + Clone + Send + Sync> Bench
    for quick_cache::sync::Cache<u64, u64, quick_cache::UnitWeighter, S>
{
    fn get(&self, key: u64) -> Option<u64> {
        quick_cache::sync::Cache::get(self, &key)
    }
    fn insert(&self, key: u64, value: u64) {
        quick_cache::sync::Cache::insert(self, key, value);
    }
}

fn caches() -> Vec<(&'static str, Box<dyn Bench>)> {
    let capacity = usize::try_from(ENTRIES).expect("fits");
    vec![
        (
            "infra",
            Box::new(Cache::<u64, u64>::builder(ENTRIES).build()),
        ),
        (
            "moka",
            Box::new(moka::sync::Cache::<u64, u64>::new(ENTRIES)),
        ),
        (
            "moka+ours hasher",
            Box::new(
                moka::sync::Cache::builder()
                    .max_capacity(ENTRIES)
                    .build_with_hasher(RandomState::new()),
            ),
        ),
        (
            "quick_cache",
            Box::new(quick_cache::sync::Cache::<u64, u64>::new(capacity)),
        ),
        (
            "quick_cache+ours hasher",
            Box::new(quick_cache::sync::Cache::with(
                capacity,
                ENTRIES,
                quick_cache::UnitWeighter,
                RandomState::new(),
                quick_cache::sync::DefaultLifecycle::default(),
            )),
        ),
    ]
}

/// A key sequence: the golden-ratio stride visits `0..space` in a scrambled order.
fn key(i: u64, space: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % space
}

fn get_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("edgecache/get_hit");
    // Half the capacity, so every read hits whatever each policy admitted.
    let hot = ENTRIES / 2;
    for (name, cache) in caches() {
        for round in 0..4 {
            for k in 0..hot {
                if cache.get(k).is_none() {
                    cache.insert(k, k + round);
                }
            }
        }
        group.bench_function(format!("{name}/1 thread"), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(cache.get(key(i, hot)))
            });
        });
        group.bench_function(format!("{name}/2 threads"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|thread, i| {
                    // Each thread its own run of keys.
                    let i = i.wrapping_add(thread << 32);
                    black_box(cache.get(key(i, hot)));
                })
            });
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion) {
    let mut group = c.benchmark_group("edgecache/mixed");
    // Keys over twice the capacity: a read misses often, and a miss inserts.
    let space = ENTRIES * 2;
    for (name, cache) in caches() {
        group.bench_function(format!("{name}/1 thread"), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                let k = key(i, space);
                if cache.get(k).is_none() {
                    cache.insert(k, k);
                }
            });
        });
        group.bench_function(format!("{name}/2 threads"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|thread, i| {
                    // Each thread its own run of keys.
                    let i = i.wrapping_add(thread << 32);
                    let k = key(i, space);
                    if cache.get(k).is_none() {
                        cache.insert(k, k);
                    }
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, get_hit, mixed);
criterion_main!(benches);
