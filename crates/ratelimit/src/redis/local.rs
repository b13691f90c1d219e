//! What a limiter remembers about keys between round trips: keys known to be over their limit
//! (the deny cache) and leases of cells taken in a batch. Both are capped maps keyed by user
//! keys, which clients choose, so both drop what is over before growing and refuse to grow
//! past their cap.

use std::collections::VecDeque;
use std::time::Duration;

use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicUsize, Ordering};

use super::scripts::ScriptQuota;
use crate::KeyedOptions;
use crate::store::Shards;

/// Entries one new key examines at most when its map is full: the keyed limiter's bound on
/// the eviction work of a request thread.
const RECLAIM_SAMPLE: usize = KeyedOptions::RECLAIM_SAMPLE;

/// A map of user keys holding at most about `capacity` entries (concurrent inserts may pass it
/// by the number of threads inserting at once).
///
/// When full, a new key examines at most [`RECLAIM_SAMPLE`] entries, taken in turn round the
/// map like a clock hand: the ones done with are dropped, the others go back at the end of the
/// turn. A flood of keys that are all still in use costs each new key a bounded look, never a
/// pass over the whole map, and an entry that is done with is found within one turn.
struct CappedMap<V> {
    map: Shards<String, V>,
    /// The hash of every key in `map` once, in the order the hand reaches them. A key joins it
    /// after its insertion and leaves it when dropped.
    turn: Mutex<VecDeque<u64>>,
    len: AtomicUsize,
    capacity: usize,
}

impl<V> CappedMap<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: Shards::new(),
            turn: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    /// Whether a new key fits, after the hand drops the entries `over` says are done with
    /// among the next few it reaches.
    fn has_room(&self, mut over: impl FnMut(&V) -> bool) -> bool {
        if self.len.load(Ordering::Relaxed) < self.capacity {
            return true;
        }
        for _ in 0..RECLAIM_SAMPLE {
            // The turn's lock is never held while a shard lock is taken: inserting takes them
            // the other way round.
            let Some(hash) = self.turn.lock().pop_front() else {
                break;
            };
            match self
                .map
                .evict_hashed(hash, |_, value| (!over(value)).then_some(()))
            {
                Some(Some(())) => self.turn.lock().push_back(hash),
                Some(None) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                // Only after a 64-bit hash collision, when the other key's turn took this one.
                None => {}
            }
        }
        self.len.load(Ordering::Relaxed) < self.capacity
    }

    /// Counts `key` and gives it its place in the turn if this call inserted it.
    fn count_insert(&self, key: &str, inserted: bool) {
        if inserted {
            self.len.fetch_add(1, Ordering::Relaxed);
            self.turn.lock().push_back(self.map.hash_of(key));
        }
    }
}

/// Keys over their limit, each with the local clock reading until which one cell is certainly
/// denied and the quota (in the script's terms) under which Redis said so: another quota
/// (a per-key one, or the default after a change) may admit the key sooner, so only a check
/// under the same quota is answered from the cache.
pub(crate) struct DenyCache {
    until: CappedMap<(u64, ScriptQuota)>,
}

impl DenyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            until: CappedMap::new(capacity),
        }
    }

    /// How long `key` is still known to be denied under `quota` at `now`, if it is.
    pub(crate) fn denied_for(&self, key: &str, quota: ScriptQuota, now: u64) -> Option<Duration> {
        let (until, under) = self.until.map.with(key, |entry| *entry)?;
        (under == quota && now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Remembers that `key` cannot get a cell under `quota` until `until`, if there is room.
    pub(crate) fn remember(&self, key: &str, quota: ScriptQuota, now: u64, until: u64) {
        if self.until.capacity == 0 || !self.until.has_room(|&(until, _)| until <= now) {
            return;
        }
        let inserted = self
            .until
            .map
            .insert(key.to_owned(), (until, quota))
            .is_none();
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
    filled: bool,
}

impl Lease {
    fn take(&mut self, n: u32, now: u64) -> Step {
        if self.fetching {
            return Step::Single;
        }
        if now < self.expires && self.cells >= n {
            self.cells -= n;
            return Step::Spent {
                left: self.cells,
                reset_after: Duration::from_nanos(self.reset_at.saturating_sub(now)),
            };
        }
        // Cells too few for this check are given up: at most one batch per key is outstanding.
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
    /// `capacity` keys.
    pub(crate) fn new(batch: u32, period: u64, capacity: usize) -> Self {
        Self {
            leases: CappedMap::new(capacity),
            batch,
            period,
        }
    }

    /// The cells one round trip asks for when fetching for a check of `n` cells, at most
    /// `capacity` (the most the quota admits at once).
    pub(crate) fn want(&self, n: u32, capacity: u32) -> u32 {
        self.batch.min(capacity).max(n)
    }

    /// Spends `n` cells of `key`'s lease at `now`, or says how to ask Redis.
    pub(crate) fn take(&self, key: &str, n: u32, now: u64) -> Take<'_> {
        let step = match self.leases.map.with(key, |lease| lease.lock().take(n, now)) {
            Some(step) => step,
            None => {
                if !self.leases.has_room(|lease| lease.lock().is_over(now)) {
                    return Take::Single;
                }
                let (step, inserted) = self.leases.map.with_or_insert(
                    key.to_owned(),
                    Mutex::default,
                    |lease, inserted| (lease.lock().take(n, now), inserted),
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

    /// A full map of keys a flood created, none of them over: how many entries one new key's
    /// `has_room` looks at.
    fn examined_when_full_of_active_entries(capacity: usize) -> usize {
        let map = CappedMap::<u64>::new(capacity);
        for key in 0..capacity {
            let key = format!("flood-{key}");
            let inserted = map.map.insert(key.clone(), 0).is_none();
            map.count_insert(&key, inserted);
        }
        let mut examined = 0;
        let room = map.has_room(|_| {
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

    #[test]
    fn the_deny_cache_finds_an_expired_entry_among_active_ones() {
        let capacity = 1_000;
        let cache = DenyCache::new(capacity);
        let quota = ScriptQuota {
            first: 1,
            second: 1,
            capacity: 1,
        };
        let forever = u64::MAX;
        // One entry expires at 10; every other one never does, and sits anywhere in the map.
        for key in 0..capacity {
            let until = if key == 500 { 10 } else { forever };
            cache.remember(&format!("flood-{key}"), quota, 0, until);
        }
        assert_eq!(
            cache.denied_for("flood-500", quota, 5),
            Some(Duration::from_nanos(5))
        );
        // New keys keep coming after it expired: each looks at a bounded sample, and the hand
        // moves on, so within one turn over the map the expired entry makes room.
        let attempts = capacity.div_ceil(RECLAIM_SAMPLE) + 1;
        for attempt in 0..attempts {
            cache.remember(&format!("new-{attempt}"), quota, 20, forever);
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
