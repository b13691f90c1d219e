//! The hit-ratio harness: workloads (Zipf, the ARC paper's OLTP and P3 traces), the peers
//! (a reference LRU, moka, quick_cache), Belady's offline optimum, and ours, all replayed the
//! same way: look the key up; on a miss, insert it. Every entry weighs 1, so capacities are
//! entry counts, as the traces' published tables count them.
//!
//! Shared by `tests/hit_ratio.rs` (cheap rows, as a regression check) and the
//! `edgecache_hit_ratio` example (the full table and its plot).
#![allow(dead_code, reason = "the test uses a subset of what the example uses")]

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::Read;
use std::path::Path;

use infra_edgecache::Cache;

/// A request sequence: keys in order.
pub(crate) type Trace = Vec<u64>;

/// SplitMix64: a tiny, well-mixed generator, enough for drawing workloads reproducibly.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// `requests` draws from a Zipf distribution with exponent `exponent` over `keys` keys: the
/// key of rank r (from 1) has probability proportional to 1 / r^exponent. Drawn by inverting
/// the cumulative distribution with a binary search. Keys are the ranks scrambled by an odd
/// multiplier (a bijection), so no policy sees popularity in the key's bits.
pub(crate) fn zipf(keys: usize, exponent: f64, requests: usize, seed: u64) -> Trace {
    let mut cumulative = Vec::with_capacity(keys);
    let mut total = 0.0;
    for rank in 1..=keys {
        total += 1.0 / (rank as f64).powf(exponent);
        cumulative.push(total);
    }
    let mut rng = SplitMix64::new(seed);
    (0..requests)
        .map(|_| {
            let target = rng.next_f64() * total;
            let rank = cumulative.partition_point(|&c| c <= target).min(keys - 1) as u64;
            (rank + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        })
        .collect()
}

/// Reads a trace of the ARC paper's format (zstd-compressed lines `start count _ _`, each
/// `count` accesses to pages `start..start + count`).
pub(crate) fn arc_trace(path: &Path) -> Trace {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .expect("a zstd frame");
    let mut text = String::new();
    decoder.read_to_string(&mut text).expect("UTF-8 text");
    let mut trace = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(start), Some(count)) = (fields.next(), fields.next()) else {
            continue;
        };
        let start: u64 = start.parse().expect("a block number");
        let count: u64 = count.parse().expect("a block count");
        trace.extend(start..start + count);
    }
    trace
}

/// The recorded traces' folder, found above the package being built (the crate or the
/// examples package).
pub(crate) fn traces_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("benches/data/cache-traces"))
        .find(|dir| dir.is_dir())
        .expect("the workspace's benches/data/cache-traces folder")
}

/// A least-recently-used cache written from the definition: each key's last-use time, and the
/// keys ordered by it.
pub(crate) fn lru(trace: &[u64], capacity: usize) -> f64 {
    let mut last_use: HashMap<u64, u64> = HashMap::new();
    let mut by_time: BTreeMap<u64, u64> = BTreeMap::new();
    let mut hits = 0_u64;
    for (time, &key) in trace.iter().enumerate() {
        let time = time as u64;
        if let Some(previous) = last_use.insert(key, time) {
            by_time.remove(&previous);
            hits += 1;
        } else if last_use.len() > capacity {
            let (_, oldest) = by_time
                .pop_first()
                .expect("a full cache has a least recent key");
            last_use.remove(&oldest);
        }
        by_time.insert(time, key);
    }
    hits as f64 / trace.len() as f64
}

/// Belady's MIN: on a miss with the cache full, drop whichever of the cached keys and the new
/// one is next used furthest in the future. No online policy can beat it.
pub(crate) fn belady(trace: &[u64], capacity: usize) -> f64 {
    // next_use[i]: the index of the next request for trace[i] after i, or MAX.
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, &key) in trace.iter().enumerate().rev() {
        if let Some(next) = seen.insert(key, i) {
            next_use[i] = next;
        }
    }
    // Cached keys with their next use; the heap holds (next use, key) with stale pairs
    // skipped when popped.
    let mut cached: HashMap<u64, usize> = HashMap::new();
    let mut heap: BinaryHeap<(usize, u64)> = BinaryHeap::new();
    let mut hits = 0_u64;
    for (i, &key) in trace.iter().enumerate() {
        let next = next_use[i];
        if cached.contains_key(&key) {
            hits += 1;
        } else if cached.len() >= capacity {
            // The furthest cached key, skipping stale heap pairs.
            let furthest = loop {
                let (when, candidate) = *heap.peek().expect("a full cache has entries");
                if cached.get(&candidate) == Some(&when) {
                    break when;
                }
                heap.pop();
            };
            if furthest <= next {
                continue; // the new key is the one needed last: do not cache it
            }
            let (_, evicted) = heap.pop().expect("peeked");
            cached.remove(&evicted);
        }
        cached.insert(key, next);
        heap.push((next, key));
    }
    hits as f64 / trace.len() as f64
}

/// Replays `trace` through a cache given as its lookup and insert.
fn replay(trace: &[u64], mut get: impl FnMut(u64) -> bool, mut insert: impl FnMut(u64)) -> f64 {
    let mut hits = 0_u64;
    for &key in trace {
        if get(key) {
            hits += 1;
        } else {
            insert(key);
        }
    }
    hits as f64 / trace.len() as f64
}

/// moka's `sync::Cache` as shipped (its own hasher).
pub(crate) fn moka(trace: &[u64], capacity: usize) -> f64 {
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::new(capacity as u64);
    replay(
        trace,
        |key| cache.get(&key).is_some(),
        |key| cache.insert(key, ()),
    )
}

/// quick_cache's `sync::Cache` as shipped (sharded, its own hasher).
pub(crate) fn quick_cache_sync(trace: &[u64], capacity: usize) -> f64 {
    let cache: quick_cache::sync::Cache<u64, ()> = quick_cache::sync::Cache::new(capacity);
    replay(
        trace,
        |key| cache.get(&key).is_some(),
        |key| cache.insert(key, ()),
    )
}

/// quick_cache's single-shard `unsync::Cache`.
pub(crate) fn quick_cache_unsync(trace: &[u64], capacity: usize) -> f64 {
    let cache = std::cell::RefCell::new(quick_cache::unsync::Cache::<u64, ()>::new(capacity));
    replay(
        trace,
        |key| cache.borrow().get(&key).is_some(),
        |key| cache.borrow_mut().insert(key, ()),
    )
}

/// Ours, with `shards` shards (the budget split evenly among them).
pub(crate) fn edgecache(trace: &[u64], capacity: usize, shards: usize) -> f64 {
    let cache: Cache<u64, ()> = Cache::builder(capacity as u64).shards(shards).build();
    replay(
        trace,
        |key| cache.get(&key).is_some(),
        |key| cache.insert(key, ()),
    )
}
