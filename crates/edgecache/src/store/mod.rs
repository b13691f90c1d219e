//! The core store: sharded, size-aware, with an adaptive scan-resistant policy.
//!
//! A [`Cache`] splits its byte budget evenly over a power-of-two number of shards, each behind
//! its own lock; a key's hash picks its shard. Each shard runs adaptive W-TinyLFU (see
//! `shard.rs` for the policy and the papers it follows): a small LRU window admits new
//! entries, a frequency sketch decides which of a window leaver and the main space's
//! least-recently-used entry is worth keeping (a rejected key that soon returns may enter
//! anyway, while that pays), and ghosts of recently evicted keys resize the window to whatever
//! the workload rewards.
//!
//! ```
//! use std::time::Duration;
//! use infra_common::{ManualClock, sync::Arc};
//! use infra_edgecache::Cache;
//!
//! let clock = Arc::new(ManualClock::new());
//! let cache: Cache<String, Arc<Vec<u8>>> = Cache::builder(1 << 20) // 1 MiB
//!     // A body of 4 GiB or more saturates rather than wrapping to a small weight.
//!     .weigher(|key: &String, body: &Arc<Vec<u8>>| {
//!         u32::try_from(key.len() + body.len()).unwrap_or(u32::MAX)
//!     })
//!     .clock(Arc::clone(&clock))
//!     .build();
//! cache.insert_with_ttl("/a".to_owned(), Arc::new(b"hello".to_vec()), Duration::from_secs(60));
//! assert_eq!(cache.get(&"/a".to_owned()).as_deref(), Some(&b"hello".to_vec()));
//! clock.advance(Duration::from_secs(61));
//! assert_eq!(cache.get(&"/a".to_owned()), None); // expired: a miss, and reclaimed
//! assert_eq!(cache.len(), 0);
//! ```

mod evicted;
mod ghost;
mod readmission;
mod shard;
mod sketch;

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, RandomState, SystemClock};

use crate::stats::Stats;
use shard::{NEVER, Shard};

/// How much an entry weighs against the budget: bytes, usually.
type Weigher<K, V> = Box<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// A shard on a cache line of its own, so two threads working on neighbouring shards do not
/// slow each other down.
#[repr(align(128))]
struct PaddedShard<K, V>(Mutex<Shard<K, V>>);

/// Counters the HTTP layer records through the cache; rare events, so plain shared atomics.
#[derive(Debug, Default)]
struct LayerCounters {
    stale_served: AtomicU64,
    revalidations: AtomicU64,
    coalesced_waits: AtomicU64,
}

/// A concurrent, size-aware cache with per-entry time to live.
///
/// `Cache` is `Send + Sync`: share it by reference or in an `Arc`. Values are cloned out on
/// every hit, so store cheap-to-clone values (`Arc<..>`, `Bytes`).
///
/// The budget is a total weight, split evenly over the shards; each entry weighs what the
/// [weigher](CacheBuilder::weigher) says (1 by default, making the budget an entry count).
/// After every insert each shard holds at most its share. An entry heavier than one shard's
/// share is not stored (see [`Stats::rejections`]).
///
/// ```
/// use infra_edgecache::Cache;
///
/// let cache: Cache<u64, &'static str> = Cache::builder(2).shards(1).build();
/// cache.insert(1, "one");
/// cache.insert(2, "two");
/// cache.insert(3, "three");
/// assert_eq!(cache.len(), 2); // the budget holds two unit-weight entries
/// ```
pub struct Cache<K, V> {
    shards: Box<[PaddedShard<K, V>]>,
    /// Bits of the hash above the table's, used to pick a shard.
    shard_mask: usize,
    hasher: RandomState,
    weigher: Weigher<K, V>,
    clock: Box<dyn Clock>,
    layer: LayerCounters,
}

/// Configures a [`Cache`]; start with [`Cache::builder`].
pub struct CacheBuilder<K, V> {
    max_weight: u64,
    shards: Option<usize>,
    weigher: Weigher<K, V>,
    clock: Box<dyn Clock>,
}

/// The most shards a cache splits into.
const MAX_SHARDS: usize = 1 << 16;

impl<K, V> CacheBuilder<K, V> {
    /// How much each entry weighs (default: 1 for every entry). Weights of 0 count as 1, so
    /// the number of entries stays bounded by the budget.
    #[must_use]
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Box::new(weigher);
        self
    }

    /// The number of shards, rounded up to a power of two and capped at 65,536 (default: four
    /// per available core, rounded up to a power of two), and at the largest power of two
    /// within the budget, so every shard's share holds at least one unit-weight entry. Each
    /// gets an equal share of the budget; one shard gives the exact policy, more shards let
    /// more threads work at once.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The clock that times entries' time to live (default: [`SystemClock`]).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Builds the cache.
    #[must_use]
    pub fn build(self) -> Cache<K, V> {
        let requested = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get) * 4
        });
        // A shard with a share of 0 would refuse every entry, so there are never more shards
        // than units of budget: the largest power of two within the budget caps the count.
        let budget_cap = usize::try_from(self.max_weight)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_SHARDS);
        let budget_cap = 1 << budget_cap.ilog2();
        let count = requested
            .clamp(1, MAX_SHARDS)
            .next_power_of_two()
            .min(budget_cap);
        let count_u64 = count as u64;
        // The remainder of the split goes to the first shards, so the shares sum to the budget.
        let shards = (0..count_u64)
            .map(|index| {
                let share =
                    self.max_weight / count_u64 + u64::from(index < self.max_weight % count_u64);
                PaddedShard(Mutex::new(Shard::new(share)))
            })
            .collect();
        Cache {
            shards,
            shard_mask: count - 1,
            hasher: RandomState::new(),
            weigher: self.weigher,
            clock: self.clock,
            layer: LayerCounters::default(),
        }
    }
}

impl<K, V> Cache<K, V> {
    /// Starts configuring a cache that holds at most `max_weight` in total.
    ///
    /// ```
    /// use infra_edgecache::Cache;
    ///
    /// let cache: Cache<&str, Vec<u8>> = Cache::builder(64 << 20)
    ///     .weigher(|_, body: &Vec<u8>| u32::try_from(body.len()).unwrap_or(u32::MAX))
    ///     .build();
    /// cache.insert("k", vec![0; 1000]);
    /// assert_eq!(cache.weighted_size(), 1000);
    /// ```
    #[must_use]
    pub fn builder(max_weight: u64) -> CacheBuilder<K, V> {
        CacheBuilder {
            max_weight,
            shards: None,
            weigher: Box::new(|_, _| 1),
            clock: Box::new(SystemClock::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn locate(&self, key: &K) -> (u64, &Mutex<Shard<K, V>>) {
        let hash = self.hasher.hash_one(key);
        // The table inside a shard uses the low bits and the top seven; the shard takes bits
        // from the middle, so neither sees a constant.
        let index = (hash >> 32) as usize & self.shard_mask;
        (hash, &self.shards[index].0)
    }

    fn now(&self) -> impl Fn() -> u64 + '_ {
        || self.clock.now_nanos()
    }

    /// The value of `key`, if present and not expired. Counts a hit or a miss and tells the
    /// policy about the access. An expired entry is removed.
    pub fn get(&self, key: &K) -> Option<V> {
        let (hash, shard) = self.locate(key);
        shard.lock().get(hash, key, &self.now())
    }

    /// The value of `key`, if present and not expired, without counting the lookup or
    /// changing the policy's view of the entry.
    ///
    /// ```
    /// use infra_edgecache::Cache;
    ///
    /// let cache: Cache<u8, u8> = Cache::builder(10).build();
    /// cache.insert(1, 1);
    /// assert_eq!(cache.peek(&1), Some(1));
    /// assert_eq!(cache.stats().hits, 0);
    /// ```
    pub fn peek(&self, key: &K) -> Option<V> {
        let (hash, shard) = self.locate(key);
        shard.lock().peek(hash, key, &self.now())
    }

    /// Inserts or replaces the value of `key`, without expiry.
    pub fn insert(&self, key: K, value: V) {
        self.insert_until(key, value, NEVER);
    }

    /// Inserts or replaces the value of `key`, which expires after `ttl` on the cache's
    /// clock. An expired entry is a miss; it is reclaimed when it is next looked up, when its
    /// key is stored again (counted as an insert, not an update), when an insert's
    /// incremental sweep reaches it, by the policy's eviction, demotion or admission duel
    /// (which it takes no part in, so it never makes a live entry leave in its place, even
    /// marked by a hit; counted as an expiration, not an eviction), or by
    /// [`Cache::purge_expired`].
    /// A `ttl` of zero stores nothing (the write counts as an insert, or an update of a
    /// present value, and an expiration) and removes the key's older value: a dead entry
    /// never takes a live one's place.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        self.insert_with_ttl_evicting(key, value, ttl);
    }

    /// [`Cache::insert_with_ttl`], returning whether the entry is held once the insert is
    /// done (not if it was refused as heavier than a shard's share, see
    /// [`Stats::rejections`], had a TTL of zero, or was evicted at once by the admission
    /// policy) and how many entries the policy evicted, the entry itself included.
    pub(crate) fn insert_with_ttl_evicting(&self, key: K, value: V, ttl: Duration) -> (bool, u64) {
        self.insert_until(key, value, self.expiry(ttl))
    }

    /// The reading at which an entry written now with `ttl` expires.
    fn expiry(&self, ttl: Duration) -> u64 {
        let expires_at = self
            .clock
            .now_nanos()
            .saturating_add(duration_to_nanos(ttl));
        // `NEVER` means no expiry; a finite TTL saturating into it stays finite.
        expires_at.min(NEVER - 1)
    }

    /// Replaces the value of `key`, if present and not expired, with `value` expiring after
    /// `ttl`, as the cache's own upkeep of a value it holds (the HTTP layer dropping one of a
    /// URL's variants) rather than a write: counted in [`Stats`] neither as an insert nor as
    /// an update, and not an access the policy sees. Returns how many entries the policy
    /// evicted for it (only a heavier value needs room), or `None` if `key` had no live value,
    /// which is then left as it is, or if `value` alone outweighs a shard's share, which
    /// removes the older value rather than empty the shard making room for it.
    #[cfg(feature = "tokio")]
    pub(crate) fn replace_uncounted(&self, key: &K, value: V, ttl: Duration) -> Option<u64> {
        let weight = (self.weigher)(key, &value);
        let expires_at = self.expiry(ttl);
        let (hash, shard) = self.locate(key);
        let mut shard = shard.lock();
        let evictions = shard.counters.evictions;
        let replaced = shard.replace(hash, key, value, weight, expires_at, &self.now());
        replaced.then(|| shard.counters.evictions - evictions)
    }

    /// Inserts, returning whether the entry is held afterwards (not if refused, expired as
    /// written, or evicted at once by the policy) and how many entries the policy evicted.
    fn insert_until(&self, key: K, value: V, expires_at: u64) -> (bool, u64) {
        let weight = (self.weigher)(&key, &value);
        let (hash, shard) = self.locate(&key);
        let mut shard = shard.lock();
        let evictions = shard.counters.evictions;
        let held = shard.insert(hash, key, value, weight, expires_at, &self.now());
        (held, shard.counters.evictions - evictions)
    }

    /// Removes `key`, returning its value if it was present and not expired.
    pub fn remove(&self, key: &K) -> Option<V> {
        let (hash, shard) = self.locate(key);
        shard.lock().remove(hash, key, &self.now())
    }

    /// Keeps only the entries for which `keep` returns true; expired entries go as well.
    /// Visits each shard under its lock in turn, so `keep` must not use this cache.
    ///
    /// ```
    /// use infra_edgecache::Cache;
    ///
    /// let cache: Cache<u32, u32> = Cache::builder(100).shards(1).build();
    /// for key in 0..10 {
    ///     cache.insert(key, key * 10);
    /// }
    /// cache.retain(|key, _| key % 2 == 0);
    /// assert_eq!(cache.len(), 5);
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let now = self.now();
        for shard in &*self.shards {
            shard.0.lock().retain(&mut keep, &now);
        }
    }

    /// Removes every expired entry now, rather than as they are found.
    pub fn purge_expired(&self) {
        let now = self.now();
        for shard in &*self.shards {
            shard.0.lock().purge_expired(&now);
        }
    }
}

impl<K, V> Cache<K, V> {
    /// The number of entries held, expired ones not yet reclaimed included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.0.lock().len()).sum()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The summed weight of the entries held.
    pub fn weighted_size(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.lock().weight())
            .sum()
    }

    /// The budget the cache was built with.
    pub fn max_weight(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.0.lock().max_weight())
            .sum()
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// A snapshot of the counters, summed over the shards (each read under its lock, so the
    /// sum is not one instant's if other threads are busy).
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            stale_served: self.layer.stale_served.load(Ordering::Relaxed),
            revalidations: self.layer.revalidations.load(Ordering::Relaxed),
            coalesced_waits: self.layer.coalesced_waits.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for shard in &*self.shards {
            let shard = shard.0.lock();
            let counters = shard.counters;
            stats.hits += counters.hits;
            stats.misses += counters.misses;
            stats.inserts += counters.inserts;
            stats.updates += counters.updates;
            stats.evictions += counters.evictions;
            stats.expirations += counters.expirations;
            stats.rejections += counters.rejections;
            stats.entries += shard.len() as u64;
            stats.weighted_size += shard.weight();
        }
        stats
    }

    /// Counts a stale response served (for the HTTP layer; see [`Stats::stale_served`]).
    pub fn record_stale_served(&self) {
        self.layer.stale_served.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a revalidation sent to the origin (see [`Stats::revalidations`]).
    pub fn record_revalidation(&self) {
        self.layer.revalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that waited for another's origin fetch (see
    /// [`Stats::coalesced_waits`]).
    pub fn record_coalesced_wait(&self) {
        self.layer.coalesced_waits.fetch_add(1, Ordering::Relaxed);
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.shards.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_weight", &self.max_weight)
            .field("shards", &self.shards)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
