//! One part of the driver table: driver id → value, in one array with linear probing.
//!
//! An update's first step is finding its driver among a million, in a table far larger than
//! the caches. `HashMap` (hashbrown) reads a group of control bytes and then the entry, two
//! cache lines in different places, each a miss; here a lookup starts at the entry's own
//! place and reads the next entries after it, usually in the same or the next line (which
//! the hardware fetches with it).
//!
//! Deletion shifts later entries of the probe sequence back (Knuth's Algorithm R), so the
//! table keeps no tombstones and a lookup never probes past entries that are gone. The table
//! grows at three quarters full and never shrinks, like `HashMap`.

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

    /// Doubles the places (to [`MIN_CAPACITY`] from none) and puts every entry in again.
    fn grow(&mut self) {
        let capacity = (self.places.len() * 2).max(MIN_CAPACITY);
        let old = std::mem::replace(&mut self.places, vec![None; capacity].into_boxed_slice());
        for (id, value) in old.into_iter().flatten() {
            self.place(id, value);
        }
    }

    /// Takes `id` out; its value, if it was in.
    pub(crate) fn remove(&mut self, id: DriverId) -> Option<V> {
        let mut hole = self.find(id)?;
        let (_, value) = self.places[hole].take()?;
        self.len -= 1;
        // Close the hole: an entry after it whose probe sequence passes the hole moves into
        // it, which opens a hole where it was, until an empty place ends the run.
        let mask = self.places.len() - 1;
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let Some((held, _)) = self.places[at] else {
                return Some(value);
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

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        // Few ids, so operations meet the same ones again.
        let id = 0..40_u64;
        let op = (0..4_u8, id, any::<u32>()).prop_map(|(kind, id, value)| match kind {
            0 => Op::Insert(id, value),
            1 => Op::Remove(id),
            2 => Op::Get(id),
            _ => Op::Change(id, value),
        });
        proptest::collection::vec(op, 0..300)
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
        }
        let mut listed: Vec<(u64, u32)> = table.iter().map(|(id, &value)| (id.0, value)).collect();
        let mut expected: Vec<(u64, u32)> = model.into_iter().collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }

    proptest! {
        #[test]
        fn a_table_agrees_with_a_hash_map(ops in ops()) {
            agrees_with_a_hash_map(DriverTable::with_hasher(RandomState::new()), &ops);
        }

        #[test]
        fn a_table_of_colliding_ids_agrees_with_a_hash_map(ops in ops()) {
            let hasher = BuildHasherDefault::<Clumping>::default();
            agrees_with_a_hash_map(DriverTable::with_hasher(hasher), &ops);
        }
    }
}
