//! The store against its definition: a reference model for the values, exact accounting of
//! entries and weights, the budget after every operation, time to live on a manual clock, scan
//! resistance, statistics, and concurrent use.

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::{Arc, thread};
use infra_edgecache::Cache;
use proptest::prelude::*;

#[path = "support/store_model.rs"]
mod model;
use model::Model;

const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
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
        ticks: u8,
    },
    Get(u8),
    Peek(u8),
    Remove(u8),
    Advance(u8),
}

// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; the strategy is test-only.
#[allow(clippy::disallowed_types)]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..24_u8, any::<u32>(), 0..45_u32)
            .prop_map(|(key, value, weight)| Op::Insert { key, value, weight }),
        2 => (0..24_u8, any::<u32>(), 0..45_u32, 0..4_u8).prop_map(|(key, value, weight, ticks)| {
            Op::InsertTtl { key, value, weight, ticks }
        }),
        4 => (0..24_u8).prop_map(Op::Get),
        1 => (0..24_u8).prop_map(Op::Peek),
        1 => (0..24_u8).prop_map(Op::Remove),
        1 => (0..3_u8).prop_map(Op::Advance),
    ]
}

const BUDGET: u64 = 100;

fn run(ops: &[Op], shards: usize) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new());
    // The weigher reads the weight from the value's low bits, so each insert picks its own.
    let cache: Cache<u8, (u32, u32)> = Cache::builder(BUDGET)
        .shards(shards)
        .weigher(|_, &(_, weight)| weight)
        .clock(Arc::clone(&clock))
        .build();
    let share = BUDGET / cache.shard_count() as u64;
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Insert { key, value, weight } => {
                cache.insert(key, (value, weight));
                model.insert(key, value, weight, None);
            }
            Op::InsertTtl {
                key,
                value,
                weight,
                ticks,
            } => {
                cache.insert_with_ttl(key, (value, weight), TICK * u32::from(ticks));
                model.insert(key, value, weight, Some(u64::from(ticks)));
            }
            Op::Get(key) | Op::Peek(key) => {
                let got = if matches!(op, Op::Get(_)) {
                    cache.get(&key)
                } else {
                    cache.peek(&key)
                };
                model
                    .looked_up(key, got.map(|(value, _)| value))
                    .map_err(TestCaseError::fail)?;
            }
            Op::Remove(key) => {
                let removed = cache.remove(&key);
                model
                    .removed(key, removed.map(|(value, _)| value))
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(cache.peek(&key), None);
            }
            Op::Advance(ticks) => {
                clock.advance(TICK * u32::from(ticks));
                model.advance(u64::from(ticks));
            }
        }
        prop_assert!(
            cache.weighted_size() <= BUDGET,
            "over budget: {}",
            cache.weighted_size()
        );
        // Each shard keeps its share, so the total stays within the budget too.
        prop_assert!(cache.weighted_size() <= share * cache.shard_count() as u64);
    }
    // Exact accounting: once expired entries are purged, the cache holds exactly the model's
    // keys it still shows, and its weight is theirs.
    cache.purge_expired();
    let (held, weight) = model
        .held(|key| cache.peek(&key).map(|(value, _)| value))
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(cache.len(), held, "entries the model cannot see");
    prop_assert_eq!(cache.weighted_size(), weight);
    let stats = cache.stats();
    prop_assert_eq!(stats.entries, held as u64);
    prop_assert_eq!(stats.weighted_size, weight);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_shard_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(&ops, 1)?;
    }

    #[test]
    fn four_shards_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(&ops, 4)?;
    }
}

/// A one-shard cache of `max_weight` (so the policy is exact) on a manual clock the test moves.
fn one_shard_on_a_manual_clock<K, V>(max_weight: u64) -> (Arc<ManualClock>, Cache<K, V>) {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::builder(max_weight)
        .shards(1)
        .clock(Arc::clone(&clock))
        .build();
    (clock, cache)
}

#[test]
fn an_entry_expires_after_its_ttl_and_is_reclaimed() {
    let (clock, cache) = one_shard_on_a_manual_clock::<&str, u32>(10);
    cache.insert_with_ttl("a", 1, Duration::from_secs(10));
    cache.insert("b", 2);
    clock.advance(Duration::from_secs(9));
    assert_eq!(cache.get(&"a"), Some(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.peek(&"a"), None);
    assert_eq!(cache.get(&"a"), None);
    assert_eq!(cache.get(&"b"), Some(2));
    assert_eq!(
        cache.len(),
        1,
        "the expired entry was reclaimed by the lookup"
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.expirations), (2, 1, 1));
}

#[test]
fn storing_a_key_again_after_it_expired_counts_an_insert_not_an_update() {
    let (clock, cache) = one_shard_on_a_manual_clock::<&str, u32>(10);
    cache.insert_with_ttl("a", 1, Duration::from_secs(10));
    clock.advance(Duration::from_secs(10));
    // Expired, so absent to every lookup: the write is not a replacement of a present value.
    cache.insert("a", 2);
    let stats = cache.stats();
    assert_eq!((stats.inserts, stats.updates, stats.expirations), (2, 0, 1));
    assert_eq!(cache.get(&"a"), Some(2));
}

#[test]
fn an_expired_entry_removed_or_dropped_by_retain_counts_as_an_expiration() {
    let (clock, cache) = one_shard_on_a_manual_clock::<u32, u32>(10);
    cache.insert_with_ttl(1, 1, Duration::from_secs(1));
    cache.insert_with_ttl(2, 2, Duration::from_secs(1));
    cache.insert(3, 3);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.remove(&1), None);
    cache.retain(|_, _| true);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.stats().expirations, 2);
}

#[test]
fn an_entry_expired_as_it_is_written_is_not_stored_and_evicts_nothing() {
    let (_clock, cache) = one_shard_on_a_manual_clock::<u32, u32>(100);
    for key in 0..100 {
        cache.insert(key, key);
    }
    for key in 100..300 {
        cache.insert_with_ttl(key, key, Duration::ZERO);
    }
    assert!(
        (0..100).all(|key| cache.peek(&key) == Some(key)),
        "a dead entry took a live one's place"
    );
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (100, 0));
    assert_eq!((stats.inserts, stats.expirations), (300, 200));
    // Written over a live value, it replaces it: the key is gone, not left at its old value.
    cache.insert_with_ttl(7, 70, Duration::ZERO);
    assert_eq!(cache.peek(&7), None);
    assert_eq!(cache.len(), 99);
    let stats = cache.stats();
    assert_eq!((stats.updates, stats.expirations), (1, 201));
}

#[test]
fn expired_entries_nobody_asks_for_are_reclaimed_by_later_inserts() {
    let (clock, cache) = one_shard_on_a_manual_clock::<u32, u32>(1000);
    for key in 0..100 {
        cache.insert_with_ttl(key, key, Duration::from_secs(1));
    }
    clock.advance(Duration::from_secs(2));
    // Each insert sweeps a few slots; 100 inserts of new keys cover the old ones.
    for key in 100..200 {
        cache.insert(key, key);
    }
    assert_eq!(cache.len(), 100);
    assert_eq!(cache.stats().expirations, 100);
}

#[test]
fn purge_expired_removes_every_expired_entry() {
    let (clock, cache) = one_shard_on_a_manual_clock::<u32, u32>(1000);
    for key in 0..50 {
        cache.insert_with_ttl(key, key, Duration::from_secs(u64::from(key % 2 + 1)));
    }
    clock.advance(Duration::from_secs(1));
    cache.purge_expired();
    assert_eq!(cache.len(), 25);
    assert!((0..50).all(|key| cache.peek(&key).is_some() == (key % 2 == 1)));
    assert_eq!(cache.stats().expirations, 25);
}

#[test]
fn an_entry_heavier_than_a_shard_is_refused_and_removes_the_older_value() {
    let cache: Cache<u32, u32> = Cache::builder(100).shards(1).weigher(|_, &v| v).build();
    cache.insert(1, 10);
    cache.insert(1, 101);
    assert_eq!(
        cache.get(&1),
        None,
        "the older value must not outlive the refused write"
    );
    assert_eq!(cache.stats().rejections, 1);
    assert_eq!(cache.weighted_size(), 0);
}

#[test]
fn a_scan_does_not_flush_a_hot_set() {
    let cache: Cache<u64, u64> = Cache::builder(100).shards(1).build();
    // A hot set of 50 keys, each requested often.
    for _ in 0..20 {
        for key in 0..50 {
            if cache.get(&key).is_none() {
                cache.insert(key, key);
            }
        }
    }
    // A one-pass scan of 10,000 keys never seen before.
    for key in 1_000..11_000 {
        if cache.get(&key).is_none() {
            cache.insert(key, key);
        }
    }
    let survivors = (0..50).filter(|key| cache.peek(key).is_some()).count();
    assert!(
        survivors >= 45,
        "only {survivors} of 50 hot keys survived the scan"
    );
}

#[test]
fn a_scan_of_keys_asked_twice_does_not_cost_a_hot_set_its_hits() {
    let cache: Cache<u64, u64> = Cache::builder(1_000).shards(1).build();
    let request = |key: u64| {
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.insert(key, key);
        }
        hit
    };
    // A hot set of 500 keys, each requested often.
    for _ in 0..20 {
        for key in 0..500 {
            request(key);
        }
    }
    // 20,000 keys never seen before, each asked for twice, 200 requests apart: every second
    // request is a rejected key returning. The hot set is still asked for, once per step, all
    // its keys in turn.
    let (first, count, apart) = (1_000_000_u64, 20_000_u64, 200_u64);
    let mut hot_misses = 0;
    for step in 0..count + apart {
        if step < count {
            request(first + step);
        }
        if step >= apart {
            request(first + step - apart);
        }
        if !request(step * 263 % 500) {
            hot_misses += 1;
        }
    }
    assert_eq!(
        hot_misses, 0,
        "the hot set missed {hot_misses} times during the scan"
    );
}

#[test]
fn budget_is_split_over_shards_and_never_exceeded() {
    let cache: Cache<u32, u32> = Cache::builder(1000).shards(8).weigher(|_, &v| v).build();
    assert_eq!(cache.shard_count(), 8);
    assert_eq!(cache.max_weight(), 1000);
    for key in 0..10_000 {
        cache.insert(key, key % 50 + 1);
        assert!(cache.weighted_size() <= 1000);
    }
    assert!(
        cache.weighted_size() > 500,
        "the shards are used: {}",
        cache.weighted_size()
    );
}

#[test]
fn a_budget_smaller_than_the_shard_count_leaves_no_shard_without_room() {
    // Four per core on a large machine asks for more shards than a small budget has units.
    let cache: Cache<u32, u32> = Cache::builder(4).shards(64).build();
    assert_eq!(cache.max_weight(), 4);
    for key in 0..64 {
        cache.insert(key, key);
    }
    assert_eq!(
        cache.stats().rejections,
        0,
        "a unit-weight entry was refused"
    );
    assert!(!cache.is_empty() && cache.weighted_size() <= 4);
}

#[test]
fn layer_counters_add_up_in_stats() {
    let cache: Cache<u32, u32> = Cache::builder(10).build();
    cache.record_stale_served();
    cache.record_revalidation();
    cache.record_revalidation();
    cache.record_coalesced_wait();
    let stats = cache.stats();
    assert_eq!(
        (
            stats.stale_served,
            stats.revalidations,
            stats.coalesced_waits
        ),
        (1, 2, 1)
    );
}

#[test]
fn retain_keeps_what_the_predicate_keeps() {
    let cache: Cache<u32, u32> = Cache::builder(100).shards(4).build();
    for key in 0..40 {
        cache.insert(key, key);
    }
    cache.retain(|_, &value| value >= 30);
    assert_eq!(cache.len(), 10);
    assert_eq!(cache.weighted_size(), 10);
    assert!((30..40).all(|key| cache.peek(&key) == Some(key)));
}

#[test]
fn threads_share_a_cache_without_losing_values_or_budget() {
    let cache: Arc<Cache<u32, u32>> = Arc::new(Cache::builder(512).shards(4).build());
    let workers: Vec<_> = (0..4_u32)
        .map(|worker| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                for round in 0..2_000_u32 {
                    let key = (round * 7 + worker) % 1_000;
                    match cache.get(&key) {
                        // Every writer stores key * 3, so any value seen must be that.
                        Some(value) => assert_eq!(value, key * 3),
                        None => cache.insert(key, key * 3),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    assert!(cache.weighted_size() <= 512);
    let stats = cache.stats();
    assert_eq!(stats.hits + stats.misses, 8_000);
    assert_eq!(stats.entries, cache.len() as u64);
}

/// The counters balance through random operations on one, two and eight shards, with weights
/// of 0, of `u32::MAX` and over a shard's share, TTLs that run out, removals, `retain` and
/// `purge_expired`: every lookup is a hit or a miss, every stored write an insert or an
/// update, and the entries held are the inserts less every way out (evictions, expirations,
/// live removals, and older values a refused write removed).
#[test]
fn the_counters_balance_through_random_operations() {
    for seed in 1..60_u64 {
        for shards in [1_usize, 2, 8] {
            let clock = Arc::new(ManualClock::new());
            let budget = 50 + seed % 200;
            let cache: Cache<u16, u32> = Cache::builder(budget)
                .shards(shards)
                .weigher(|_, &weight| weight)
                .clock(Arc::clone(&clock))
                .build();
            let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let (mut lookups, mut writes, mut removed) = (0_u64, 0_u64, 0_u64);
            for _ in 0..2_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let key = u16::try_from(state % 64).unwrap();
                let weight = match (state >> 8) % 10 {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 40,
                    _ => u32::try_from((state >> 16) % 8).unwrap(),
                };
                match (state >> 24) % 7 {
                    0 | 1 => {
                        lookups += 1;
                        cache.get(&key);
                    }
                    operation @ (2 | 3) => {
                        let had = cache.peek(&key).is_some();
                        let rejections = cache.stats().rejections;
                        if operation == 2 {
                            cache.insert(key, weight);
                        } else {
                            cache.insert_with_ttl(key, weight, TICK * u32::from(weight % 4 == 0));
                        }
                        if cache.stats().rejections > rejections {
                            removed += u64::from(had);
                        } else {
                            writes += 1;
                        }
                    }
                    4 => removed += u64::from(cache.remove(&key).is_some()),
                    5 => clock.advance(TICK * u32::try_from((state >> 40) % 3).unwrap()),
                    _ if (state >> 50) % 8 == 0 => cache.purge_expired(),
                    _ => cache.retain(|_, _| true),
                }
                let stats = cache.stats();
                assert!(stats.weighted_size <= budget, "over budget: {stats:?}");
                assert_eq!(stats.hits + stats.misses, lookups);
                assert_eq!(stats.inserts + stats.updates, writes);
                assert_eq!(
                    stats.inserts,
                    stats.entries + stats.evictions + stats.expirations + removed,
                    "seed {seed}, {shards} shards: {stats:?}"
                );
            }
        }
    }
}
