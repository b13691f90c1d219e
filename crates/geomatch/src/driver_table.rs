//! One part of the driver table: driver id → value, in one array with linear probing.
//!
//! An update's first step is finding its driver among a million, in a table far larger than
//! the caches. `HashMap` (hashbrown) reads a group of control bytes and then the entry, two
//! cache lines in different places, each a miss; here a lookup starts at the entry's own
//! place and reads the next entries after it, usually in the same line or the next.
//!
//! Deletion shifts later entries of the probe sequence back (Knuth's Algorithm R), so the
//! table keeps no tombstones and a lookup never probes past entries that are gone. The table
//! doubles when an insert would make it more than three quarters full and halves when a
//! removal leaves it less than an eighth full (down to [`MIN_CAPACITY`] places): a fleet that
//! shrinks, at night or after `Index::remove_idle`, gives its places back. A doubled table is
//! just over three eighths full and a halved one just under a quarter, so many inserts or
//! removals come before the next rebuild, and its cost is spread over them.

use std::hash::BuildHasher;

use infra_common::RandomState;

use crate::DriverId;

/// The fewest places a table that holds anything has.
const MIN_CAPACITY: usize = 8;

pub(crate) struct DriverTable<V, S = RandomState> {
    /// A power of two long, or empty before the first insert.
    places: Box<[Option<(DriverId, V)>]>,
    len: usize,
    hasher: S,
}

impl<V: Copy, S: BuildHasher> DriverTable<V, S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        Self {
            places: Box::default(),
            len: 0,
            hasher,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many places the table has, which its memory follows.
    #[cfg(all(test, not(infra_loom)))]
    pub(crate) fn capacity(&self) -> usize {
        self.places.len()
    }

    /// Where `id`'s probe sequence starts; the table must not be empty.
    fn home(&self, id: DriverId) -> usize {
        // The low bits of the hash: a keyed hash mixes all of them.
        (self.hasher.hash_one(id) as usize) & (self.places.len() - 1)
    }

    /// The place that holds `id`, if any.
    fn find(&self, id: DriverId) -> Option<usize> {
        if self.places.is_empty() {
            return None;
        }
        let mask = self.places.len() - 1;
        let mut at = self.home(id);
        // Ends: the table always has empty places.
        loop {
            match &self.places[at] {
                None => return None,
                Some((held, _)) if *held == id => return Some(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    pub(crate) fn contains_key(&self, id: DriverId) -> bool {
        self.find(id).is_some()
    }

    pub(crate) fn get(&self, id: DriverId) -> Option<&V> {
        let at = self.find(id)?;
        self.places[at].as_ref().map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, id: DriverId) -> Option<&mut V> {
        let at = self.find(id)?;
        self.places[at].as_mut().map(|(_, value)| value)
    }

    /// Puts `value` under `id`; the value it replaces, if any.
    pub(crate) fn insert(&mut self, id: DriverId, value: V) -> Option<V> {
        if let Some(at) = self.find(id) {
            let held = self.places[at].as_mut().map(|(_, held)| held)?;
            return Some(std::mem::replace(held, value));
        }
        if (self.len + 1) * 4 > self.places.len() * 3 {
            self.grow();
        }
        self.place(id, value);
        self.len += 1;
        None
    }

    /// Puts an id the table does not hold in the first empty place of its probe sequence.
    fn place(&mut self, id: DriverId, value: V) {
        let mask = self.places.len() - 1;
        let mut at = self.home(id);
        while self.places[at].is_some() {
            at = (at + 1) & mask;
        }
        self.places[at] = Some((id, value));
    }

    /// Doubles the places (to [`MIN_CAPACITY`] from none).
    fn grow(&mut self) {
        self.rebuild((self.places.len() * 2).max(MIN_CAPACITY));
    }

    /// Puts every entry in again, in `capacity` places (a power of two that leaves the table
    /// at most three quarters full).
    fn rebuild(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.places, vec![None; capacity].into_boxed_slice());
        // The entries come in the order of the old places. Into half as many, the homes of
        // the old table's two halves coincide, which could make long runs in a table filled
        // close to full; a halved table is at most a quarter full.
        for (id, value) in old.into_iter().flatten() {
            self.place(id, value);
        }
    }

    /// Takes `id` out; its value, if it was in.
    pub(crate) fn remove(&mut self, id: DriverId) -> Option<V> {
        let hole = self.find(id)?;
        let (_, value) = self.places[hole].take()?;
        self.len -= 1;
        self.close(hole);
        if self.len * 8 < self.places.len() && self.places.len() > MIN_CAPACITY {
            self.rebuild(self.places.len() / 2);
        }
        Some(value)
    }

    /// Closes the hole a removal left: an entry after it whose probe sequence passes the hole
    /// moves into it, which opens a hole where it was, until an empty place ends the run.
    fn close(&mut self, mut hole: usize) {
        let mask = self.places.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let Some((held, _)) = self.places[at] else {
                return;
            };
            // The entry may stay if its home lies after the hole and no later than it (all
            // cyclically): its probe sequence does not pass the hole.
            let home = self.home(held);
            if (at.wrapping_sub(home) & mask) < (at.wrapping_sub(hole) & mask) {
                continue;
            }
            self.places[hole] = self.places[at].take();
            hole = at;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (DriverId, &V)> {
        self.places.iter().flatten().map(|(id, value)| (*id, value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use proptest::prelude::*;

    use super::*;

    /// Hashes an id to its value modulo a few: long runs, collisions and wrap-around at the
    /// end of the array, which a random hash makes rare.
    #[derive(Default)]
    struct Clumping(u64);

    impl Hasher for Clumping {
        fn finish(&self) -> u64 {
            self.0 % 5 + 3
        }

        fn write(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(byte));
            }
        }

        fn write_u64(&mut self, value: u64) {
            self.0 = value;
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Get(u64),
        Change(u64, u32),
    }

    /// Operations on few ids, so they meet the same ones again: of every `3 + removals`, on
    /// average, one insert, one lookup, one change and `removals` removals.
    fn ops(removals: u8) -> impl Strategy<Value = Vec<Op>> {
        let id = 0..40_u64;
        let op = (0..3 + removals, id, any::<u32>()).prop_map(|(kind, id, value)| match kind {
            0 => Op::Insert(id, value),
            1 => Op::Get(id),
            2 => Op::Change(id, value),
            _ => Op::Remove(id),
        });
        proptest::collection::vec(op, 0..300)
    }

    /// Every id inserted, then mostly removals: the table grows to its largest and halves
    /// again and again on the way down.
    fn filled_then_drained() -> impl Strategy<Value = Vec<Op>> {
        ops(6).prop_map(|ops| (0..40).map(|id| Op::Insert(id, 0)).chain(ops).collect())
    }

    /// Runs `ops` on the table and on `HashMap`, which must agree after each.
    fn agrees_with_a_hash_map<S: BuildHasher>(mut table: DriverTable<u32, S>, ops: &[Op]) {
        let mut model: HashMap<u64, u32> = HashMap::new();
        for op in ops {
            match *op {
                Op::Insert(id, value) => {
                    assert_eq!(table.insert(DriverId(id), value), model.insert(id, value));
                }
                Op::Remove(id) => assert_eq!(table.remove(DriverId(id)), model.remove(&id)),
                Op::Get(id) => {
                    assert_eq!(table.get(DriverId(id)), model.get(&id));
                    assert_eq!(table.contains_key(DriverId(id)), model.contains_key(&id));
                }
                Op::Change(id, value) => {
                    if let Some(held) = table.get_mut(DriverId(id)) {
                        *held = value;
                    }
                    if let Some(held) = model.get_mut(&id) {
                        *held = value;
                    }
                }
            }
            assert_eq!(table.len(), model.len());
            assert_eq!(table.is_empty(), model.is_empty());
            assert!(
                table.places.len() <= MIN_CAPACITY.max(8 * table.len()),
                "{} places for {} entries",
                table.places.len(),
                table.len()
            );
        }
        let mut listed: Vec<(u64, u32)> = table.iter().map(|(id, &value)| (id.0, value)).collect();
        let mut expected: Vec<(u64, u32)> = model.into_iter().collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }

    /// A table gives back its places as its entries leave, down to the fewest, and finds the
    /// entries that stay.
    #[test]
    fn a_table_gives_back_its_places_as_entries_leave() {
        let mut table = DriverTable::with_hasher(RandomState::new());
        for id in 0..10_000_u32 {
            table.insert(DriverId(u64::from(id)), id);
        }
        assert_eq!(table.places.len(), 16_384);
        for id in 10..10_000_u32 {
            assert_eq!(table.remove(DriverId(u64::from(id))), Some(id));
        }
        assert!(
            table.places.len() <= 80,
            "{} places for 10",
            table.places.len()
        );
        for id in 0..10_u32 {
            assert_eq!(table.get(DriverId(u64::from(id))), Some(&id));
            assert_eq!(table.remove(DriverId(u64::from(id))), Some(id));
        }
        assert_eq!(table.places.len(), MIN_CAPACITY);
        assert!(table.is_empty());
    }

    proptest! {
        #[test]
        fn a_table_agrees_with_a_hash_map(ops in ops(1)) {
            agrees_with_a_hash_map(DriverTable::with_hasher(RandomState::new()), &ops);
        }

        #[test]
        fn a_table_of_colliding_ids_agrees_with_a_hash_map(ops in ops(1)) {
            let hasher = BuildHasherDefault::<Clumping>::default();
            agrees_with_a_hash_map(DriverTable::with_hasher(hasher), &ops);
        }

        #[test]
        fn a_draining_table_agrees_with_a_hash_map(ops in filled_then_drained()) {
            agrees_with_a_hash_map(DriverTable::with_hasher(RandomState::new()), &ops);
        }

        #[test]
        fn a_draining_table_of_colliding_ids_agrees_with_a_hash_map(ops in filled_then_drained()) {
            let hasher = BuildHasherDefault::<Clumping>::default();
            agrees_with_a_hash_map(DriverTable::with_hasher(hasher), &ops);
        }
    }
}
