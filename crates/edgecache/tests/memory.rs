//! Heap per entry once the policy's remembered hashes are full: the store's memory bound.
//!
//! One test in this binary: the counting allocator's live total is shared by every thread, so
//! a second test running beside it would be counted too.

use infra_edgecache::Cache;
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const ENTRIES: u64 = 100_000;

/// Heap bytes per budgeted entry held by a cache of `ENTRIES` `u64` entries (8 shards) that
/// has been asked for `requests` distinct keys, each looked up and then inserted.
fn heap_per_entry_after(requests: u64) -> f64 {
    let (held, cache) = allocator::bytes_held_by(|| {
        let cache: Cache<u64, u64> = Cache::builder(ENTRIES).shards(8).build();
        for key in 0..requests {
            if cache.get(&key).is_none() {
                cache.insert(key, key);
            }
        }
        cache
    });
    assert!(cache.len() as u64 <= ENTRIES);
    drop(cache);
    held as f64 / ENTRIES as f64
}

#[test]
fn heap_per_entry_stays_bounded_once_the_remembered_hashes_are_full() {
    let filled = heap_per_entry_after(ENTRIES);
    // Twice the capacity in new distinct keys, nearly every one rejected: enough to fill the
    // ghosts and the rejected keys' hashes (half the entry count).
    let flooded = heap_per_entry_after(3 * ENTRIES);
    let flooded_twice = heap_per_entry_after(5 * ENTRIES);
    println!(
        "heap per entry: {filled:.1} B filled once, {flooded:.1} B after a flood, \
         {flooded_twice:.1} B after twice that"
    );
    assert!(
        filled <= 88.0,
        "{filled:.1} B per entry with nothing evicted"
    );
    assert!(flooded <= 128.0, "{flooded:.1} B per entry after a flood");
    // The remembered hashes are bounded: a longer flood holds no more.
    assert!(
        flooded_twice <= flooded * 1.01,
        "{flooded_twice:.1} B per entry after twice the flood, against {flooded:.1}"
    );
}
