//! What a cache has counted: [`Stats`].

/// A snapshot of a [`Cache`](crate::Cache)'s counters, summed over its shards.
///
/// The store counts lookups, inserts and removals by the policy. The HTTP layer built on the
/// store counts its own events on the same cache through
/// [`Cache::record_stale_served`](crate::Cache::record_stale_served),
/// [`Cache::record_revalidation`](crate::Cache::record_revalidation) and
/// [`Cache::record_coalesced_wait`](crate::Cache::record_coalesced_wait), so one snapshot
/// describes both.
///
/// ```
/// use infra_edgecache::Cache;
///
/// let cache: Cache<u32, u32> = Cache::builder(100).build();
/// cache.insert(1, 10);
/// assert_eq!(cache.get(&1), Some(10));
/// assert_eq!(cache.get(&2), None);
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups ([`Cache::get`](crate::Cache::get)) that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing, or an expired entry.
    pub misses: u64,
    /// Inserts of a key that was absent.
    pub inserts: u64,
    /// Inserts that replaced the value of a present key. In an `HttpCache`, a response stored
    /// for a URL that had responses stored already; dropping an outdated one of them is not
    /// an update.
    pub updates: u64,
    /// Live entries the policy removed to stay within the budget. An expired entry the
    /// policy meets is counted in `expirations` instead.
    pub evictions: u64,
    /// Entries removed because their time to live ran out, whatever removed them: a lookup,
    /// a write of the key, an insert's sweep, [`Cache::remove`](crate::Cache::remove),
    /// [`Cache::retain`](crate::Cache::retain),
    /// [`Cache::purge_expired`](crate::Cache::purge_expired), or the policy making room.
    pub expirations: u64,
    /// Inserts refused because the entry alone outweighs its shard's budget.
    pub rejections: u64,
    /// Entries held now.
    pub entries: u64,
    /// Summed weight (bytes, with a byte weigher) of the entries held now.
    pub weighted_size: u64,
    /// Stale responses served (recorded by the HTTP layer).
    pub stale_served: u64,
    /// Revalidations sent to the origin (recorded by the HTTP layer).
    pub revalidations: u64,
    /// Requests that waited for another request's origin fetch (recorded by the HTTP layer).
    pub coalesced_waits: u64,
}

impl Stats {
    /// Hits over lookups, 0 when there were none.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}
