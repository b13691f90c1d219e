//! What an [`HttpCache`](crate::http::HttpCache) does, reported through the [`metrics`]
//! facade (feature `metrics`), so any exporter (Prometheus, StatsD, OpenTelemetry) can serve
//! it.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`LOOKUPS_TOTAL`] | counter | `cache`, `outcome` | lookups of a URL in this process's store: `outcome` is `hit` (something stored for the URL) or `miss` |
//! | [`STALE_SERVED_TOTAL`] | counter | `cache` | stale responses served (`max-stale`, `stale-while-revalidate`, `stale-if-error`) |
//! | [`REVALIDATIONS_TOTAL`] | counter | `cache` | revalidations sent to the origin, background ones included |
//! | [`COALESCED_WAITS_TOTAL`] | counter | `cache` | requests that waited for another request's fetch |
//! | [`EVICTIONS_TOTAL`] | counter | `cache` | URLs the store's policy removed to stay within its budget |
//! | [`STORED_BYTES_TOTAL`] | counter | `cache` | bytes of responses stored (their weight against the budget) |
//! | [`SHARED_READS_TOTAL`] | counter | `cache`, `outcome` | reads of the shared tier (feature `redis`): `hit`, `miss`, `error` (Redis failed or timed out) or `invalid` (a record that does not decode) |
//! | [`SHARED_WRITES_TOTAL`] | counter | `cache`, `outcome` | writes to the shared tier: `written` or `error` |
//! | [`PURGE_MESSAGES_TOTAL`] | counter | `cache`, `outcome` | broadcast purges: `published`, `error` (could not publish), `applied` (received from another edge) or `invalid` |
//!
//! `cache` is the name given with
//! [`HttpCacheBuilder::metrics_name`](crate::http::HttpCacheBuilder::metrics_name), or
//! [`DEFAULT_NAME`]. URLs, tags and hosts never become labels: a series per URL would grow
//! without bound.
//!
//! The cache registers its counters once, when it is built, and keeps the handles, so the
//! recorder must be installed **before** the cache is built. Without the feature none of this
//! is compiled: no field, no call, no branch.

use std::borrow::Cow;

use metrics::{Counter, SharedString, Unit, counter, describe_counter};

/// Counter of store lookups, labelled `cache` and `outcome` (`hit`, `miss`).
pub const LOOKUPS_TOTAL: &str = "infra_edgecache_lookups_total";
/// Counter of stale responses served, labelled `cache`.
pub const STALE_SERVED_TOTAL: &str = "infra_edgecache_stale_served_total";
/// Counter of revalidations sent to the origin, labelled `cache`.
pub const REVALIDATIONS_TOTAL: &str = "infra_edgecache_revalidations_total";
/// Counter of requests that waited for another's fetch, labelled `cache`.
pub const COALESCED_WAITS_TOTAL: &str = "infra_edgecache_coalesced_waits_total";
/// Counter of live entries evicted by the policy, labelled `cache`: the store's
/// [`Stats::evictions`](crate::Stats::evictions).
pub const EVICTIONS_TOTAL: &str = "infra_edgecache_evictions_total";
/// Counter of bytes of responses stored, labelled `cache`.
pub const STORED_BYTES_TOTAL: &str = "infra_edgecache_stored_bytes_total";
/// Counter of shared tier reads, labelled `cache` and `outcome`.
pub const SHARED_READS_TOTAL: &str = "infra_edgecache_shared_reads_total";
/// Counter of shared tier writes, labelled `cache` and `outcome`.
pub const SHARED_WRITES_TOTAL: &str = "infra_edgecache_shared_writes_total";
/// Counter of broadcast purges, labelled `cache` and `outcome`.
pub const PURGE_MESSAGES_TOTAL: &str = "infra_edgecache_purge_messages_total";
/// Counter of purge subscriptions made after a time without one: renewed after a loss, or
/// first made after failed attempts (each marks what was stored stale), labelled `cache`.
pub const PURGE_RESUBSCRIPTIONS_TOTAL: &str = "infra_edgecache_purge_resubscriptions_total";
/// The label naming the cache instance.
pub const CACHE_LABEL: &str = "cache";
/// The label naming an outcome.
pub const OUTCOME_LABEL: &str = "outcome";
/// The `cache` label of a cache that was given no name.
pub const DEFAULT_NAME: &str = "default";

fn describe() {
    describe_counter!(
        LOOKUPS_TOTAL,
        Unit::Count,
        "Store lookups of a URL by cache and outcome (hit, miss)."
    );
    describe_counter!(
        STALE_SERVED_TOTAL,
        Unit::Count,
        "Stale responses served, by cache."
    );
    describe_counter!(
        REVALIDATIONS_TOTAL,
        Unit::Count,
        "Revalidations sent to the origin, by cache."
    );
    describe_counter!(
        COALESCED_WAITS_TOTAL,
        Unit::Count,
        "Requests that waited for another request's origin fetch, by cache."
    );
    describe_counter!(
        EVICTIONS_TOTAL,
        Unit::Count,
        "Entries the store's policy evicted to stay within its budget, by cache."
    );
    describe_counter!(
        STORED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of responses stored, by cache."
    );
    describe_counter!(
        SHARED_READS_TOTAL,
        Unit::Count,
        "Shared tier reads by cache and outcome (hit, miss, error, invalid)."
    );
    describe_counter!(
        SHARED_WRITES_TOTAL,
        Unit::Count,
        "Shared tier writes by cache and outcome (written, error)."
    );
    describe_counter!(
        PURGE_MESSAGES_TOTAL,
        Unit::Count,
        "Broadcast purges by cache and outcome (published, error, applied, invalid)."
    );
}

/// The handles an `HttpCache` increments.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    hits: Counter,
    misses: Counter,
    stale_served: Counter,
    revalidations: Counter,
    coalesced_waits: Counter,
    evictions: Counter,
    stored_bytes: Counter,
    #[cfg(feature = "redis")]
    pub(crate) shared: SharedMetrics,
}

impl HttpMetrics {
    pub(crate) fn new(cache: Cow<'static, str>) -> Self {
        describe();
        let cache = SharedString::from(cache);
        let lookups = |outcome: &'static str| counter!(LOOKUPS_TOTAL, CACHE_LABEL => cache.clone(), OUTCOME_LABEL => outcome);
        Self {
            hits: lookups("hit"),
            misses: lookups("miss"),
            stale_served: counter!(STALE_SERVED_TOTAL, CACHE_LABEL => cache.clone()),
            revalidations: counter!(REVALIDATIONS_TOTAL, CACHE_LABEL => cache.clone()),
            coalesced_waits: counter!(COALESCED_WAITS_TOTAL, CACHE_LABEL => cache.clone()),
            evictions: counter!(EVICTIONS_TOTAL, CACHE_LABEL => cache.clone()),
            stored_bytes: counter!(STORED_BYTES_TOTAL, CACHE_LABEL => cache.clone()),
            #[cfg(feature = "redis")]
            shared: SharedMetrics::new(&cache),
        }
    }

    #[inline]
    pub(crate) fn lookup(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.increment(1);
    }

    #[inline]
    pub(crate) fn stale_served(&self) {
        self.stale_served.increment(1);
    }

    #[inline]
    pub(crate) fn revalidation(&self) {
        self.revalidations.increment(1);
    }

    #[inline]
    pub(crate) fn coalesced_wait(&self) {
        self.coalesced_waits.increment(1);
    }

    /// A response of `bytes` stored, which made the policy evict `evicted` entries.
    #[inline]
    pub(crate) fn stored(&self, bytes: usize, evicted: u64) {
        self.stored_bytes
            .increment(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.evicted(evicted);
    }

    /// Entries the policy evicted for a change to the store that stored no response.
    #[inline]
    pub(crate) fn evicted(&self, entries: u64) {
        self.evictions.increment(entries);
    }
}

/// The handles of the shared tier's events.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct SharedMetrics {
    reads: [Counter; 4],
    writes: [Counter; 3],
    purges: [Counter; 4],
    resubscriptions: Counter,
}

#[cfg(feature = "redis")]
impl SharedMetrics {
    fn new(cache: &SharedString) -> Self {
        let with = |name: &'static str, outcome: &'static str| counter!(name, CACHE_LABEL => cache.clone(), OUTCOME_LABEL => outcome);
        Self {
            reads: ["hit", "miss", "error", "invalid"].map(|o| with(SHARED_READS_TOTAL, o)),
            writes: ["written", "error", "refused"].map(|o| with(SHARED_WRITES_TOTAL, o)),
            purges: ["published", "error", "applied", "invalid"]
                .map(|o| with(PURGE_MESSAGES_TOTAL, o)),
            resubscriptions: counter!(PURGE_RESUBSCRIPTIONS_TOTAL, CACHE_LABEL => cache.clone()),
        }
    }

    pub(crate) fn count(&self, event: crate::http::shared::Event) {
        use crate::http::shared::Event;

        match event {
            Event::Hit => &self.reads[0],
            Event::Miss => &self.reads[1],
            Event::ReadError => &self.reads[2],
            Event::InvalidRecord => &self.reads[3],
            Event::Write => &self.writes[0],
            Event::WriteError => &self.writes[1],
            Event::WriteRefused => &self.writes[2],
            Event::PurgePublished => &self.purges[0],
            Event::PurgeError => &self.purges[1],
            Event::PurgeApplied => &self.purges[2],
            Event::InvalidMessage => &self.purges[3],
            Event::Resubscribed => &self.resubscriptions,
        }
        .increment(1);
    }
}
