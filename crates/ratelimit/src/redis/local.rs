//! What a limiter remembers about keys between round trips: keys known to be over their limit
//! (the deny cache) and leases of cells taken in a batch. Both are capped maps keyed by user
//! keys, which clients choose, so both drop what is over before growing and refuse to grow
//! past their caps: a count of entries and their bytes.

use std::mem::size_of;
use std::time::Duration;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicUsize, Ordering};

use super::scripts::ScriptQuota;
use crate::KeyedOptions;
use crate::keyed::{entry_overhead, key_bytes};
use crate::store::Shards;

/// Entries one new key examines at most when its map is full: the keyed limiter's bound on
/// the eviction work of a request thread.
const RECLAIM_SAMPLE: usize = KeyedOptions::RECLAIM_SAMPLE;

/// A map of user keys holding at most about `capacity` entries and `max_bytes` bytes of them
/// (concurrent inserts may pass either by what the threads inserting at once add).
///
/// An entry is charged what the keyed limiter charges a key (its `String` and the bytes its
/// `Hash` writes, so a long key costs its length), its value and its share of the table, as
/// the keyed limiter charges it (`entry_overhead`).
///
/// When full, a new key examines at most [`RECLAIM_SAMPLE`] entries, the next ones at a clock
/// hand that walks the map in place: the ones done with are dropped, the hand moves past the
/// others. A flood of keys that are all still in use costs each new key a bounded look, never
/// a pass over the whole map, and an entry that is done with is found within one turn of the
/// hand (one that stays put: a table growing meanwhile may move it past the hand).
struct CappedMap<V> {
    map: Shards<String, V>,
    len: AtomicUsize,
    capacity: usize,
    /// The charges of the entries in `map`.
    bytes: AtomicUsize,
    max_bytes: usize,
}

impl<V> CappedMap<V> {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            map: Shards::new(),
            len: AtomicUsize::new(0),
            capacity,
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// What an entry for `key` is charged against `max_bytes`.
    fn charge(key: &str) -> usize {
        key_bytes::<String, str>(key)
            .saturating_add(size_of::<V>())
            .saturating_add(entry_overhead::<String, V>())
    }

    /// Whether one more entry of `charge` bytes is within both caps.
    fn fits(&self, charge: usize) -> bool {
        let bytes = self.bytes.load(Ordering::Relaxed);
        self.len.load(Ordering::Relaxed) < self.capacity
            && bytes.saturating_add(charge) <= self.max_bytes
    }

    /// Whether a new entry for `key` fits, after the hand drops the entries `over` says are
    /// done with among the next few it reaches. A key whose charge alone exceeds `max_bytes`
    /// never fits, and drops nothing.
    fn has_room(&self, key: &str, mut over: impl FnMut(&V) -> bool) -> bool {
        let charge = Self::charge(key);
        if charge > self.max_bytes {
            return false;
        }
        if self.fits(charge) {
            return true;
        }
        let (mut dropped, mut freed) = (0, 0);
        self.map.walk(RECLAIM_SAMPLE, |key, value| {
            if over(value) {
                dropped += 1;
                freed += Self::charge(key);
                return false;
            }
            true
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.fits(charge)
    }

    /// Counts `key` if this call inserted it.
    fn count_insert(&self, key: &str, inserted: bool) {
        if inserted {
            self.len.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(Self::charge(key), Ordering::Relaxed);
        }
    }
}

/// Keys over their limit, each with the local clock reading until which one cell is certainly
/// denied, the one at which Redis said the key's state is full again, and the quota (in the
/// script's terms) under which Redis said so: another quota (a per-key one, or the default
/// after a change) may admit the key sooner, so only a check under the same quota is answered
/// from the cache.
pub(crate) struct DenyCache {
    until: CappedMap<Denial>,
}

/// What the deny cache remembers of a key.
#[derive(Clone, Copy, Debug)]
struct Denial {
    until: u64,
    reset_at: u64,
    quota: ScriptQuota,
}

/// A remembered denial as of a clock reading: how long one cell stays denied, and how long
/// until the key's state is full again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Denied {
    pub(crate) one_cell: Duration,
    pub(crate) reset_after: Duration,
}

impl DenyCache {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            until: CappedMap::new(capacity, max_bytes),
        }
    }

    /// How long `key` is still known to be denied under `quota` at `now`, if it is.
    pub(crate) fn denied_for(&self, key: &str, quota: ScriptQuota, now: u64) -> Option<Denied> {
        let denial = self.until.map.with(key, |entry| *entry)?;
        (denial.quota == quota && now < denial.until).then(|| Denied {
            one_cell: Duration::from_nanos(denial.until - now),
            reset_after: Duration::from_nanos(denial.reset_at.saturating_sub(now)),
        })
    }

    /// Remembers that `key` cannot get a cell under `quota` until `until`, and is full again
    /// at `reset_at`, if there is room.
    pub(crate) fn remember(
        &self,
        key: &str,
        quota: ScriptQuota,
        now: u64,
        until: u64,
        reset_at: u64,
    ) {
        if self.until.capacity == 0 || !self.until.has_room(key, |denial| denial.until <= now) {
            return;
        }
        let denial = Denial {
            until,
            reset_at,
            quota,
        };
        let inserted = self.until.map.insert(key.to_owned(), denial).is_none();
        self.until.count_insert(key, inserted);
    }
}

/// Cells taken from Redis in a batch and not yet spent, per key.
pub(crate) struct Leases {
    leases: CappedMap<Mutex<Lease>>,
    /// The most cells one round trip takes.
    batch: u32,
    /// How long unspent cells may be spent, in clock nanoseconds.
    period: u64,
}

#[derive(Debug, Default)]
struct Lease {
    cells: u32,
    /// The clock reading after which the cells are given up.
    expires: u64,
    /// The clock reading at which Redis said the key's state is full again.
    reset_at: u64,
    /// The quota (in the script's terms) Redis granted the cells under: a check under another
    /// one, whose state and capacity differ, must not spend them.
    quota: Option<ScriptQuota>,
    /// Whether a check of this process is taking a new batch for the key.
    fetching: bool,
}

/// What a check of `n` cells does about leases.
pub(crate) enum Take<'a> {
    /// Spent `n` cells of the lease: admitted without a round trip.
    Spent {
        /// Cells left in the lease.
        left: u32,
        /// Time until Redis's state is full, as of when the lease was taken.
        reset_after: Duration,
    },
    /// Take a batch from Redis and fill the lease with what this check does not need.
    Fetch(Fetch<'a>),
    /// Ask Redis for `n` cells only: another check of this process is fetching a batch for the
    /// key, or there is no room for another lease.
    Single,
}

/// The one batch being taken for a key by this process. Dropped without being filled (the
/// check failed or was cancelled), it leaves the lease empty for the next check to fetch.
pub(crate) struct Fetch<'a> {
    leases: &'a Leases,
    key: String,
    quota: ScriptQuota,
    filled: bool,
}

impl Lease {
    fn take(&mut self, n: u32, now: u64, quota: ScriptQuota) -> Step {
        if self.fetching {
            return Step::Single;
        }
        if now < self.expires && self.cells >= n && self.quota == Some(quota) {
            self.cells -= n;
            return Step::Spent {
                left: self.cells,
                reset_after: Duration::from_nanos(self.reset_at.saturating_sub(now)),
            };
        }
        // Cells too few for this check, or granted under another quota, are given up: at most
        // one batch per key is outstanding.
        self.cells = 0;
        self.fetching = true;
        Step::Fetch
    }

    fn is_over(&self, now: u64) -> bool {
        !self.fetching && (self.cells == 0 || self.expires <= now)
    }
}

enum Step {
    Spent { left: u32, reset_after: Duration },
    Fetch,
    Single,
}

impl Leases {
    /// Leases of up to `batch` cells lasting `period` nanoseconds, for at most about
    /// `capacity` keys charged `max_bytes` in all.
    pub(crate) fn new(batch: u32, period: u64, capacity: usize, max_bytes: usize) -> Self {
        Self {
            leases: CappedMap::new(capacity, max_bytes),
            batch,
            period,
        }
    }

    /// The cells one round trip asks for when fetching for a check of `n` cells, at most
    /// `capacity` (the most the quota admits at once).
    pub(crate) fn want(&self, n: u32, capacity: u32) -> u32 {
        self.batch.min(capacity).max(n)
    }

    /// Spends `n` cells of `key`'s lease at `now` for a check under `quota`, or says how to
    /// ask Redis.
    pub(crate) fn take(&self, key: &str, n: u32, now: u64, quota: ScriptQuota) -> Take<'_> {
        let step = match self
            .leases
            .map
            .with(key, |lease| lease.lock().take(n, now, quota))
        {
            Some(step) => step,
            None => {
                if !self.leases.has_room(key, |lease| lease.lock().is_over(now)) {
                    return Take::Single;
                }
                let (step, inserted) = self.leases.map.with_or_insert(
                    key.to_owned(),
                    Mutex::default,
                    |_, lease, inserted| (lease.lock().take(n, now, quota), inserted),
                );
                self.leases.count_insert(key, inserted);
                step
            }
        };
        match step {
            Step::Spent { left, reset_after } => Take::Spent { left, reset_after },
            Step::Fetch => Take::Fetch(Fetch {
                leases: self,
                key: key.to_owned(),
                quota,
                filled: false,
            }),
            Step::Single => Take::Single,
        }
    }
}

impl Fetch<'_> {
    /// Puts the `cells` a batch brought beyond its check's need into the lease, at `now`, with
    /// Redis's state full again `reset_after` from now.
    pub(crate) fn fill(mut self, cells: u32, reset_after: Duration, now: u64) {
        let period = self.leases.period;
        self.leases.leases.map.with(self.key.as_str(), |lease| {
            let mut lease = lease.lock();
            lease.cells = cells;
            lease.expires = now.saturating_add(period);
            lease.reset_at =
                now.saturating_add(infra_common::clock::duration_to_nanos(reset_after));
            lease.quota = Some(self.quota);
            lease.fetching = false;
        });
        self.filled = true;
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.leases.leases.map.with(self.key.as_str(), |lease| {
                lease.lock().fetching = false;
            });
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::redis::RedisOptions;

    /// A full map of keys a flood created, none of them over: how many entries one new key's
    /// `has_room` looks at.
    fn examined_when_full_of_active_entries(capacity: usize) -> usize {
        let map = CappedMap::<u64>::new(capacity, usize::MAX);
        for key in 0..capacity {
            let key = format!("flood-{key}");
            let inserted = map.map.insert(key.clone(), 0).is_none();
            map.count_insert(&key, inserted);
        }
        let mut examined = 0;
        let room = map.has_room("newcomer", |_| {
            examined += 1;
            false
        });
        assert!(!room, "no entry is over");
        examined
    }

    #[test]
    fn a_full_map_examines_a_bounded_sample_per_new_key() {
        for capacity in [100, 10_000] {
            let examined = examined_when_full_of_active_entries(capacity);
            assert!(
                examined <= RECLAIM_SAMPLE,
                "{capacity}: examined {examined}"
            );
        }
    }

    const QUOTA: ScriptQuota = ScriptQuota {
        first: 1,
        second: 1,
        capacity: 1,
        per_micro: 1,
    };

    /// A key of `len` bytes, distinct for each `i`.
    fn long_key(i: usize, len: usize) -> String {
        format!("{i:0len$}")
    }

    /// Remembered keys of the longest length accepted by default, the deny cache full of
    /// active ones: the byte cap, not the count, bounds it.
    #[test]
    fn long_keys_fill_the_deny_cache_up_to_its_bytes_not_its_count() {
        let max_bytes = RedisOptions::DEFAULT_LOCAL_MAX_BYTES;
        let cache = DenyCache::new(100_000, max_bytes);
        for i in 0..20_000 {
            cache.remember(&long_key(i, 1_024), QUOTA, 0, u64::MAX, u64::MAX);
        }
        let remembered = cache.until.len.load(Ordering::Relaxed);
        let per_entry = CappedMap::<Denial>::charge(&long_key(0, 1_024));
        assert_eq!(
            remembered,
            max_bytes / per_entry,
            "{per_entry} bytes per entry"
        );
        assert_eq!(remembered, 12_681, "the README's figure");
        let charged = cache.until.bytes.load(Ordering::Relaxed);
        assert!(charged <= max_bytes, "{charged} bytes charged");
        // Each key is charged its length: the bytes charged cover the keys held.
        assert!(charged >= remembered * 1_024, "{charged} bytes charged");
    }

    #[test]
    fn a_cache_full_by_bytes_reclaims_an_ended_denial_within_one_turn() {
        let key_len = 1_000;
        let per_entry = CappedMap::<Denial>::charge(&long_key(0, key_len));
        let entries = 200;
        let cache = DenyCache::new(100_000, entries * per_entry);
        for i in 0..entries {
            let until = if i == 100 { 10 } else { u64::MAX };
            cache.remember(&long_key(i, key_len), QUOTA, 0, until, until);
        }
        assert_eq!(cache.until.len.load(Ordering::Relaxed), entries);
        let newcomer = long_key(1_000_000, key_len);
        cache.remember(&newcomer, QUOTA, 0, u64::MAX, u64::MAX);
        assert_eq!(cache.denied_for(&newcomer, QUOTA, 0), None, "no room yet");
        // Each new key looks at a bounded sample; within one turn the ended denial is found.
        for attempt in 0..entries.div_ceil(RECLAIM_SAMPLE) + 1 {
            cache.remember(
                &long_key(2_000_000 + attempt, key_len),
                QUOTA,
                20,
                u64::MAX,
                u64::MAX,
            );
        }
        assert_eq!(cache.denied_for(&long_key(100, key_len), QUOTA, 20), None);
        assert_eq!(cache.until.len.load(Ordering::Relaxed), entries);
        assert!(cache.until.bytes.load(Ordering::Relaxed) <= entries * per_entry);
    }

    #[test]
    fn a_key_longer_than_the_byte_cap_is_never_kept_and_evicts_nothing() {
        let cache = DenyCache::new(100, 2_000);
        cache.remember("short", QUOTA, 0, 10, 10);
        cache.remember(&long_key(0, 5_000), QUOTA, 20, u64::MAX, u64::MAX);
        assert_eq!(cache.denied_for(&long_key(0, 5_000), QUOTA, 20), None);
        assert_eq!(
            cache
                .denied_for("short", QUOTA, 5)
                .map(|denied| denied.one_cell),
            Some(Duration::from_nanos(5)),
            "the ended denial was not dropped for a key that could not fit"
        );
    }

    #[test]
    fn leases_of_long_keys_stop_at_the_byte_cap() {
        let key_len = 1_000;
        let per_entry = CappedMap::<Mutex<Lease>>::charge(&long_key(0, key_len));
        let leases = Leases::new(10, 1_000, 100_000, 50 * per_entry);
        // Each batch is still being fetched (its `Fetch` held), so no lease can be given up.
        let takes: Vec<_> = (0..100)
            .map(|i| leases.take(&long_key(i, key_len), 1, 0, QUOTA))
            .collect();
        let fetched = takes
            .iter()
            .filter(|take| matches!(take, Take::Fetch(_)))
            .count();
        assert_eq!(
            fetched, 50,
            "a lease for each key that fits, then one round trip each"
        );
        assert_eq!(leases.leases.len.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn the_deny_cache_finds_an_expired_entry_among_active_ones() {
        let capacity = 1_000;
        let cache = DenyCache::new(capacity, usize::MAX);
        let quota = ScriptQuota {
            first: 1,
            second: 1,
            capacity: 1,
            per_micro: 1,
        };
        let forever = u64::MAX;
        // One entry expires at 10; every other one never does, and sits anywhere in the map.
        for key in 0..capacity {
            let until = if key == 500 { 10 } else { forever };
            cache.remember(&format!("flood-{key}"), quota, 0, until, until);
        }
        assert_eq!(
            cache
                .denied_for("flood-500", quota, 5)
                .map(|denied| denied.one_cell),
            Some(Duration::from_nanos(5))
        );
        // New keys keep coming after it expired: each looks at a bounded sample, and the hand
        // moves on, so within one turn over the map the expired entry makes room.
        let attempts = capacity.div_ceil(RECLAIM_SAMPLE) + 1;
        for attempt in 0..attempts {
            cache.remember(&format!("new-{attempt}"), quota, 20, forever, forever);
        }
        assert_eq!(cache.denied_for("flood-500", quota, 20), None);
        let admitted = (0..attempts)
            .filter(|attempt| {
                cache
                    .denied_for(&format!("new-{attempt}"), quota, 20)
                    .is_some()
            })
            .count();
        assert_eq!(
            admitted, 1,
            "exactly one new key took the expired entry's place"
        );
        assert!(
            cache.denied_for("flood-0", quota, 20).is_some(),
            "active entries stay"
        );
    }
}
