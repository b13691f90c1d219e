//! The concurrent map behind keyed limiters.
//!
//! A normal build uses a sharded [`DashMap`] with infra-common's flooding-resistant
//! [`RandomState`]. Under `infra_loom` the same operations run on one loom `RwLock` around a
//! `HashMap`, because dashmap's own locks are invisible to the model checker; the keyed limiter's
//! logic (reservations, expiry, re-insertion) is then model-checked unchanged. Both arms hold a
//! shard lock while a closure looks at or updates a value, and [`Shards::scan`] holds it while
//! deciding whether to drop one: that is what makes "expire only idle keys" race-free.
//!
//! `scan` walks the map in place, from a [`Position`] a CLOCK hand keeps, so that forgetting
//! keys needs no record of them beside the map.

use std::borrow::Borrow;
#[cfg(not(infra_loom))]
use std::hash::BuildHasher;
use std::hash::Hash;

use infra_common::hash::RandomState;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// Table slots, full or empty, a walk of the hand may look at per entry it is asked to
/// examine: a table grows (to twice its slots) only when more than 7/16 of its slots are full,
/// so it is more than 7/32 full after growing, above the 1/8 this allows for; past a few
/// removals a walk still finds the entries asked for, while a table emptied by removals costs a
/// bounded walk, never a pass over it.
pub(crate) const SLOTS_PER_ENTRY: usize = 8;

/// Entries a walk of the hand, or a sweep, examines under one shard lock at the most: checks of
/// that shard's keys wait for no more than these.
pub(crate) const ENTRIES_PER_LOCK: usize = 64;

/// Where a scan of the map stands: a shard and an index in its table (under loom, an index in
/// the one map's iteration order), packed into one word so that a CLOCK hand is one atomic.
/// Positions order as the scan reaches them (shard first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position(u64);

impl Position {
    /// The first slot of the first shard.
    pub(crate) const START: Self = Self(0);
    /// Bits of the word that hold the index: tables of up to 2^40 buckets, shards up to 2^24.
    const INDEX_BITS: u32 = 40;

    fn new(shard: usize, index: usize) -> Self {
        let index = u64::try_from(index).map_or(u64::MAX, |i| i.min((1 << Self::INDEX_BITS) - 1));
        let shard = u64::try_from(shard).unwrap_or(u64::MAX);
        Self((shard << Self::INDEX_BITS) | index)
    }

    #[cfg_attr(infra_loom, allow(dead_code))]
    fn shard(self) -> usize {
        usize::try_from(self.0 >> Self::INDEX_BITS).unwrap_or(usize::MAX)
    }

    fn index(self) -> usize {
        usize::try_from(self.0 & ((1 << Self::INDEX_BITS) - 1)).unwrap_or(usize::MAX)
    }

    /// The word a hand stores.
    pub(crate) fn to_bits(self) -> u64 {
        self.0
    }

    /// The position a hand stored with [`Position::to_bits`].
    pub(crate) fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

/// What one [`Shards::scan`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Where the next scan should start.
    pub(crate) next: Position,
    /// Entries shown to the closure.
    pub(crate) examined: usize,
    /// Slots looked at, full or not.
    pub(crate) slots: usize,
    /// Whether the scan reached the end of the last shard: `next` is then [`Position::START`],
    /// and a scan that began there has seen every entry that stayed where it was.
    pub(crate) wrapped: bool,
    /// Whether the scan stopped because another walk had moved the hand it was given (see
    /// [`Shards::scan`]): `next` is then meaningless, and the walk goes on from the hand.
    pub(crate) overtaken: bool,
}

#[cfg(not(infra_loom))]
pub(crate) struct Shards<K, V> {
    map: dashmap::DashMap<K, V, RandomState>,
    /// Where the next [`Shards::walk`] starts: a [`Position`]'s bits.
    hand: AtomicU64,
}

#[cfg(not(infra_loom))]
impl<K: Hash + Eq, V> Shards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: dashmap::DashMap::with_hasher(RandomState::new()),
            hand: AtomicU64::new(Position::START.to_bits()),
        }
    }

    /// Runs `f` on the value of `key` under a shared shard lock.
    #[inline]
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|value| f(&value))
    }

    /// Looks `key` up under a shared shard lock, running `meanwhile` while the entry's memory is
    /// on its way: returns what `meanwhile` gave and, if the key is present, what `f` gave.
    ///
    /// In a large map the lookup is two dependent cache (and TLB) misses, the table's control
    /// bytes and then the entry. Both are requested at once, before `meanwhile` and the probe
    /// run: the probe starts at the hashed slot, and almost every key sits in the group of
    /// slots starting there, so the line the entry is in is usually the one requested.
    /// `meanwhile` (a clock reading, say) then overlaps the misses instead of preceding them.
    #[inline]
    pub(crate) fn with_meanwhile<Q, T, R>(
        &self,
        key: &Q,
        meanwhile: impl FnOnce() -> T,
        f: impl FnOnce(&V, &T) -> R,
    ) -> (T, Option<R>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The same hash, and the same shard choice from it, as dashmap's own lookups (which
        // truncate it to `usize` for the shard in the same way).
        let hash = self.map.hasher().hash_one(key);
        #[allow(clippy::cast_possible_truncation)]
        let word = hash as usize;
        let shard = self.map.shards()[self.map.determine_shard(word)].read();
        // The table's layout: control bytes start at `data_end`, entries are stored backwards
        // below it, and probing starts at slot `hash & (buckets - 1)`. Only addresses are
        // computed here (wrapping, never dereferenced); a wrong guess costs one useless prefetch.
        let slot = word & (shard.buckets() - 1);
        let data_end = shard.data_end().as_ptr();
        infra_common::prefetch::write(data_end.wrapping_sub(slot + 1));
        infra_common::prefetch::read(data_end.cast::<u8>().wrapping_add(slot));
        let before = meanwhile();
        let found = shard
            .get(hash, |(candidate, _)| key == candidate.borrow())
            .map(|(_, value)| f(value.get(), &before));
        (before, found)
    }

    /// Runs `f` on the key and value of `key`, inserting `make()` first if absent; `f` learns
    /// whether it was inserted. Holds the shard's exclusive lock throughout.
    pub(crate) fn with_or_insert<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&K, &V, bool) -> R,
    ) -> R {
        match self.map.entry(key) {
            dashmap::Entry::Occupied(entry) => f(entry.key(), entry.get(), false),
            dashmap::Entry::Vacant(entry) => {
                let value = entry.insert(make());
                f(value.key(), &value, true)
            }
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }

    /// Shows `keep` the entries from `from` onwards, in table order, each under its shard's
    /// exclusive lock, and removes those it returns `false` for; stops after `max_entries`
    /// entries or `max_slots` slots (full or empty), or at the end of the last shard.
    ///
    /// This is the walk of a CLOCK hand: a table that grows meanwhile moves entries, so a walk
    /// may see one twice or miss one (the order is approximate), but a walk from
    /// [`Position::START`] to the wrap sees every entry that stayed put exactly once. A
    /// position past a table's end (taken before the table changed) is clamped to it.
    ///
    /// With a `hand`, the scan claims what it looks at: under each shard's lock it first
    /// checks that the hand still stands where the scan is (`from` for the first shard), and
    /// moves it past what it looked at before letting the lock go. A scan finding the hand
    /// elsewhere stops there, `overtaken`. Only a scan holding the lock of the shard the hand
    /// points into moves it, so racing walks take turns and never look at the same entries.
    pub(crate) fn scan(
        &self,
        from: Position,
        max_entries: usize,
        max_slots: usize,
        hand: Option<&AtomicU64>,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> Scanned {
        let shards = self.map.shards();
        let (mut shard, mut index) = if from.shard() < shards.len() {
            (from.shard(), from.index())
        } else {
            (0, 0)
        };
        let (mut examined, mut slots, mut wrapped) = (0, 0, false);
        // Where the hand must stand for this scan to go on, as the scan last saw or left it.
        let mut claimed = from.to_bits();
        while examined < max_entries && slots < max_slots {
            let mut table = shards[shard].write();
            if hand.is_some_and(|hand| hand.load(Ordering::Relaxed) != claimed) {
                return Scanned {
                    next: Position::new(shard, index),
                    examined,
                    slots,
                    wrapped,
                    overtaken: true,
                };
            }
            let end = table.buckets();
            index = index.min(end);
            while index < end && examined < max_entries && slots < max_slots {
                // SAFETY: `index < buckets()`, which is all `is_bucket_full` asks (an
                // unallocated table has one bucket whose control byte reads as empty).
                #[allow(unsafe_code)]
                let full = unsafe { table.is_bucket_full(index) };
                if full {
                    // SAFETY: the bucket at `index < buckets()` is full, so it holds an
                    // initialised entry, and the exclusive lock keeps it in place and
                    // unaliased until it is erased below or the lock is released; the
                    // reference given to `keep` does not outlive this block.
                    #[allow(unsafe_code)]
                    unsafe {
                        let bucket = table.bucket(index);
                        let (key, value) = bucket.as_ref();
                        if !keep(key, value.get()) {
                            table.erase(bucket);
                        }
                    }
                    examined += 1;
                }
                index += 1;
                slots += 1;
            }
            let stopped = index < end;
            if !stopped {
                index = 0;
                shard += 1;
                if shard == shards.len() {
                    shard = 0;
                    wrapped = true;
                }
            }
            if let Some(hand) = hand {
                claimed = Position::new(shard, index).to_bits();
                hand.store(claimed, Ordering::Relaxed);
            }
            drop(table);
            if stopped || wrapped {
                break;
            }
        }
        Scanned {
            next: Position::new(shard, index),
            examined,
            slots,
            wrapped,
            overtaken: false,
        }
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key).map(|(_, value)| value)
    }
}

#[cfg(infra_loom)]
pub(crate) struct Shards<K, V> {
    map: infra_common::sync::RwLock<std::collections::HashMap<K, V, RandomState>>,
    hand: AtomicU64,
}

#[cfg(infra_loom)]
impl<K: Hash + Eq, V> Shards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: infra_common::sync::RwLock::new(std::collections::HashMap::with_hasher(
                RandomState::new(),
            )),
            hand: AtomicU64::new(Position::START.to_bits()),
        }
    }

    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.read().get(key).map(f)
    }

    pub(crate) fn with_meanwhile<Q, T, R>(
        &self,
        key: &Q,
        meanwhile: impl FnOnce() -> T,
        f: impl FnOnce(&V, &T) -> R,
    ) -> (T, Option<R>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.read();
        let before = meanwhile();
        let found = map.get(key).map(|value| f(value, &before));
        (before, found)
    }

    pub(crate) fn with_or_insert<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&K, &V, bool) -> R,
    ) -> R
    where
        K: Clone,
    {
        // A vacant entry gives no access to its key once filled: it is looked up again.
        let mut map = self.map.write();
        let inserted = !map.contains_key(&key);
        if inserted {
            map.insert(key.clone(), make());
        }
        let (key, value) = map
            .get_key_value(&key)
            .expect("present: inserted above if absent");
        f(key, value, inserted)
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.map.write().insert(key, value)
    }

    /// As the sharded arm's, over the map's iteration order: the position is an index in it,
    /// and the one lock is every shard's.
    pub(crate) fn scan(
        &self,
        from: Position,
        max_entries: usize,
        max_slots: usize,
        hand: Option<&AtomicU64>,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> Scanned {
        let mut map = self.map.write();
        if hand.is_some_and(|hand| hand.load(Ordering::Relaxed) != from.to_bits()) {
            return Scanned {
                next: from,
                examined: 0,
                slots: 0,
                wrapped: false,
                overtaken: true,
            };
        }
        let len = map.len();
        let start = from.index().min(len);
        let window = start..start.saturating_add(max_entries.min(max_slots));
        let (mut seen, mut examined, mut kept) = (0, 0, 0);
        // `retain` visits the entries in iteration order, and removing some moves no other.
        map.retain(|key, value| {
            let shown = window.contains(&seen);
            seen += 1;
            if !shown {
                return true;
            }
            examined += 1;
            let keep = keep(key, value);
            kept += usize::from(keep);
            keep
        });
        let wrapped = start + examined >= len;
        // The next unseen entry is `kept` further on than where this scan started.
        let next = if wrapped {
            Position::START
        } else {
            Position::new(0, start + kept)
        };
        if let Some(hand) = hand {
            hand.store(next.to_bits(), Ordering::Relaxed);
        }
        Scanned {
            next,
            examined,
            slots: examined.max(1),
            wrapped,
            overtaken: false,
        }
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.write().remove(key)
    }
}

/// What one [`Shards::walk`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Entries shown to the closure (one seen twice counts twice).
    pub(crate) examined: usize,
    /// Whether the walk went all the way round, from the hand back to it: it then saw every
    /// entry that stayed put. A walk that stopped short knows nothing of the entries it did
    /// not reach.
    pub(crate) full_turn: bool,
}

impl<K: Hash + Eq, V> Shards<K, V> {
    /// Shows `keep` up to `entries` entries from the hand on, as [`Shards::scan`] does (so at
    /// most [`SLOTS_PER_ENTRY`] slots per entry, past the end of the map at most once, and at
    /// most [`ENTRIES_PER_LOCK`] under one shard lock), moving the hand past each as it goes.
    ///
    /// Racing walks take turns at the hand: each shard's entries are claimed under its lock,
    /// so two walks never show the same entries (one forgetting idle keys further on while the
    /// other looks again at the active keys the first just passed), and a walk that finds the
    /// hand moved by another goes on from there.
    pub(crate) fn walk(&self, entries: usize, mut keep: impl FnMut(&K, &V) -> bool) -> Walked {
        let start = Position::from_bits(self.hand.load(Ordering::Relaxed));
        let mut slots = entries.saturating_mul(SLOTS_PER_ENTRY);
        let (mut position, mut examined, mut wraps) = (start, 0, 0);
        // Whether no other walk took entries between this walk's scans.
        let mut alone = true;
        // Each scan looks at a slot, reaches the end of the map or is charged a slot for
        // finding the hand moved, so this ends.
        while examined < entries && slots > 0 && wraps < 2 {
            let chunk = (entries - examined).min(ENTRIES_PER_LOCK);
            let scanned = self.scan(position, chunk, slots, Some(&self.hand), &mut keep);
            examined += scanned.examined;
            slots = slots.saturating_sub(scanned.slots.max(1));
            wraps += usize::from(scanned.wrapped);
            position = if scanned.overtaken {
                alone = false;
                Position::from_bits(self.hand.load(Ordering::Relaxed))
            } else {
                scanned.next
            };
        }
        Walked {
            examined,
            // Round the end of the map and on to where the walk began (or round it twice),
            // seeing every entry on the way.
            full_turn: alone && (wraps == 2 || (wraps == 1 && position >= start)),
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_every_inserted_key_across_growth() {
        let shards = Shards::<String, u64>::new();
        for round in 0..3_u64 {
            for i in 0..5_000_u64 {
                let key = format!("key-{i}");
                let (before, found) = shards.with_meanwhile(key.as_str(), || round, |v, r| *v + r);
                assert_eq!(before, round);
                if round == 0 {
                    assert_eq!(found, None, "{key} is not there yet");
                    let (value, inserted) =
                        shards.with_or_insert(key, || i, |_, v, inserted| (*v, inserted));
                    assert_eq!((value, inserted), (i, true));
                } else {
                    assert_eq!(found, Some(i + round));
                }
            }
        }
        assert_eq!(
            shards.with_meanwhile("absent", || (), |v, ()| *v),
            ((), None)
        );
        assert_eq!(shards.remove("key-7"), Some(7));
        assert_eq!(
            shards.with_meanwhile("key-7", || (), |v, ()| *v),
            ((), None)
        );
    }

    /// Every key, each once, in walks of `entries` entries from the start to the wrap.
    fn one_turn(shards: &Shards<u64, u64>, entries: usize) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut position = Position::START;
        loop {
            let scanned = shards.scan(position, entries, usize::MAX, None, |key, _| {
                seen.push(*key);
                true
            });
            assert!(scanned.examined <= entries);
            if scanned.wrapped {
                assert_eq!(scanned.next, Position::START);
                return seen;
            }
            position = scanned.next;
        }
    }

    #[test]
    fn a_turn_of_the_hand_shows_every_entry_once_and_removes_what_it_is_told() {
        let shards = Shards::<u64, u64>::new();
        for key in 0..5_000 {
            shards.insert(key, key);
        }
        for step in [1, 7, 1_000] {
            let mut seen = one_turn(&shards, step);
            seen.sort_unstable();
            assert_eq!(seen, (0..5_000).collect::<Vec<_>>(), "in steps of {step}");
        }
        // Odd keys are dropped as they are shown; the next turn sees only the even ones.
        let mut position = Position::START;
        loop {
            let scanned = shards.scan(position, 3, 10, None, |key, value| {
                assert_eq!(key, value);
                key % 2 == 0
            });
            assert!(scanned.slots <= 10);
            if scanned.wrapped {
                break;
            }
            position = scanned.next;
        }
        let mut seen = one_turn(&shards, 64);
        seen.sort_unstable();
        assert_eq!(seen, (0..5_000).step_by(2).collect::<Vec<_>>());
        assert_eq!(shards.with(&3, |v| *v), None);
    }

    /// Walks of the hand go on where the last one stopped: as many walks as a turn takes show
    /// every entry, and the next walk starts the next turn.
    #[test]
    fn walks_of_the_hand_take_turns() {
        let shards = Shards::<u64, u64>::new();
        for key in 0..5_000 {
            shards.insert(key, key);
        }
        let mut seen = std::collections::HashSet::new();
        let mut walks = 0;
        while seen.len() < 5_000 {
            let shown = shards
                .walk(7, |key, _| {
                    seen.insert(*key);
                    true
                })
                .examined;
            assert!((1..=7).contains(&shown));
            walks += 1;
            assert!(
                walks <= 5_000 / 7 + 2,
                "{} keys seen in {walks} walks",
                seen.len()
            );
        }
    }

    /// A scan given the hand claims only where the hand stands: found elsewhere (another walk
    /// moved it), the scan shows nothing and says so; found in place, it moves the hand on.
    #[test]
    fn a_scan_claims_entries_only_where_the_hand_stands() {
        let shards = Shards::<u64, u64>::new();
        for key in 0..100 {
            shards.insert(key, key);
        }
        let hand = AtomicU64::new(Position::START.to_bits());
        let mut shown = 0;
        let moved = shards.scan(Position::new(0, 1), 10, usize::MAX, Some(&hand), |_, _| {
            shown += 1;
            true
        });
        assert!(moved.overtaken);
        assert_eq!((moved.examined, shown), (0, 0));
        assert_eq!(hand.load(Ordering::Relaxed), Position::START.to_bits());
        let claimed = shards.scan(Position::START, 10, usize::MAX, Some(&hand), |_, _| true);
        assert!(!claimed.overtaken);
        assert_eq!(claimed.examined, 10);
        assert_eq!(hand.load(Ordering::Relaxed), claimed.next.to_bits());
    }

    /// A walk knows whether it went all the way round: from wherever the hand stands, one that
    /// examines fewer entries than the map holds does not, one that examines more does.
    #[test]
    fn a_walk_knows_whether_it_made_a_full_turn() {
        let shards = Shards::<u64, u64>::new();
        for key in 0..1_000 {
            shards.insert(key, key);
        }
        for _ in 0..100 {
            let short = shards.walk(999, |_, _| true);
            assert_eq!((short.examined, short.full_turn), (999, false));
            let round = shards.walk(1_001, |_, _| true);
            assert_eq!((round.examined, round.full_turn), (1_001, true));
        }
    }

    /// A hand left past a table's end, or on a shard that does not exist, resumes safely.
    #[test]
    fn a_stale_position_is_clamped() {
        let shards = Shards::<u64, u64>::new();
        shards.insert(1, 1);
        let far = Position::new(0, usize::MAX);
        let scanned = shards.scan(far, 10, 1_000, None, |_, _| true);
        assert!(scanned.examined <= 1);
        let nowhere = Position::from_bits(u64::MAX);
        let scanned = shards.scan(nowhere, 10, usize::MAX, None, |_, _| true);
        assert!(scanned.wrapped);
        assert_eq!(
            scanned.examined, 1,
            "a bad shard starts a turn from the start"
        );
    }
}

/// Model-checked: racing walks of the hand take turns, so no entry is shown to two of them and
/// each is shown to one.
///
/// `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-ratelimit --features redis --lib
/// loom_models` (the map is internal, so its model lives beside it rather than in
/// `tests/loom.rs`).
#[cfg(all(test, infra_loom))]
mod loom_models {
    use infra_common::sync::{Arc, Mutex, model, thread};

    use super::*;

    #[test]
    fn racing_walks_never_show_an_entry_twice() {
        model(|| {
            let shards = Arc::new(Shards::<u8, ()>::new());
            shards.insert(1, ());
            shards.insert(2, ());
            let shown = Arc::new(Mutex::new(Vec::new()));
            let walks: Vec<_> = (0..2)
                .map(|_| {
                    let (shards, shown) = (Arc::clone(&shards), Arc::clone(&shown));
                    // Both keys are kept, as active keys are: only the hand tells the walks
                    // apart.
                    thread::spawn(move || {
                        shards.walk(1, |key, ()| {
                            shown.lock().push(*key);
                            true
                        })
                    })
                })
                .collect();
            for walk in walks {
                assert_eq!(walk.join().unwrap().examined, 1);
            }
            let mut shown = shown.lock().clone();
            shown.sort_unstable();
            assert_eq!(shown, [1, 2], "each entry shown to one walk");
        });
    }
}
