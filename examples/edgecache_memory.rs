//! Memory per entry of the edgecache store beside moka and quick_cache: a counting global
//! allocator measures the heap each cache holds after 100,000 inserts of `u64` keys and values
//! (16 bytes of payload per entry), capacity 100,000 entries, default configurations.
//!
//! ```text
//! cargo run --release -p examples --example edgecache_memory
//! ```

use infra_edgecache::Cache;
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const ENTRIES: u64 = 100_000;

/// Heap bytes held by what `build` returns once it has inserted `ENTRIES` entries.
fn measure<T>(build: impl FnOnce() -> T) -> isize {
    let (held, cache) = allocator::bytes_held_by(build);
    drop(cache);
    held
}

fn main() {
    let rows: [(&str, isize); 3] = [
        (
            "infra-edgecache (8 shards)",
            measure(|| {
                let cache: Cache<u64, u64> = Cache::builder(ENTRIES).shards(8).build();
                for key in 0..ENTRIES {
                    cache.insert(key, key);
                }
                cache
            }),
        ),
        (
            "moka sync::Cache",
            measure(|| {
                let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(ENTRIES);
                for key in 0..ENTRIES {
                    cache.insert(key, key);
                }
                cache.run_pending_tasks();
                cache
            }),
        ),
        (
            "quick_cache sync::Cache",
            measure(|| {
                let cache: quick_cache::sync::Cache<u64, u64> =
                    quick_cache::sync::Cache::new(ENTRIES as usize);
                for key in 0..ENTRIES {
                    cache.insert(key, key);
                }
                cache
            }),
        ),
    ];
    println!("| cache | heap bytes | bytes per entry | overhead per entry (minus 16 B payload) |");
    println!("| --- | --- | --- | --- |");
    for (name, bytes) in rows {
        let per_entry = bytes as f64 / ENTRIES as f64;
        println!(
            "| {name} | {bytes} | {per_entry:.1} | {:.1} |",
            per_entry - 16.0
        );
    }
}
