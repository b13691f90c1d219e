//! The concurrent map behind keyed limiters.
//!
//! A normal build uses a sharded [`DashMap`] with infra-common's flooding-resistant
//! [`RandomState`]. Under `infra_loom` the same operations run on one loom `RwLock` around a
//! `HashMap`, because dashmap's own locks are invisible to the model checker; the keyed limiter's
//! logic (reservations, expiry, re-insertion) is then model-checked unchanged. Both arms hold a
//! shard lock while a closure looks at or updates a value, and `evict_hashed` holds it while
//! deciding whether to drop one: that is what makes "expire only idle keys" race-free.

use std::borrow::Borrow;
#[cfg(not(infra_loom))]
use std::hash::BuildHasher;
use std::hash::Hash;

use infra_common::hash::RandomState;

#[cfg(not(infra_loom))]
pub(crate) struct Shards<K, V> {
    map: dashmap::DashMap<K, V, RandomState>,
}

#[cfg(not(infra_loom))]
impl<K: Hash + Eq, V> Shards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: dashmap::DashMap::with_hasher(RandomState::new()),
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
        prefetch::for_write(data_end.wrapping_sub(slot + 1));
        prefetch::for_read(data_end.cast::<u8>().wrapping_add(slot));
        let before = meanwhile();
        let found = shard
            .get(hash, |(candidate, _)| key == candidate.borrow())
            .map(|(_, value)| f(value.get(), &before));
        (before, found)
    }

    /// Runs `f` on the value of `key`, inserting `make()` first if absent; `f` learns whether it
    /// was inserted. Holds the shard's exclusive lock throughout.
    pub(crate) fn with_or_insert<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&V, bool) -> R,
    ) -> R {
        match self.map.entry(key) {
            dashmap::Entry::Occupied(entry) => f(entry.get(), false),
            dashmap::Entry::Vacant(entry) => {
                let value = entry.insert(make());
                f(&value, true)
            }
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }

    /// The hash the map files `key` under.
    pub(crate) fn hash_of<Q>(&self, key: &Q) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        self.map.hasher().hash_one(key)
    }

    /// Finds the entry whose key hashes to `hash` and, under the shard's exclusive lock, asks
    /// `keep` about it: the entry is removed when `keep` returns `None`. Returns `None` when no
    /// key has that hash, else what `keep` returned.
    ///
    /// Eviction remembers keys by hash alone (8 bytes each, not a second copy of every key), so
    /// the entry is found by probing for the hash and re-hashing each candidate's key: the
    /// table's own equality tag is only 7 bits of it.
    pub(crate) fn evict_hashed<R>(
        &self,
        hash: u64,
        keep: impl FnOnce(&K, &V) -> Option<R>,
    ) -> Option<Option<R>> {
        let hasher = self.map.hasher();
        #[allow(clippy::cast_possible_truncation)]
        let shard = self.map.determine_shard(hash as usize);
        let mut table = self.map.shards()[shard].write();
        let matches =
            |(candidate, _): &(K, dashmap::SharedValue<V>)| hasher.hash_one(candidate) == hash;
        let (key, value) = table.get(hash, matches)?;
        let kept = keep(key, value.get());
        if kept.is_none() {
            table.remove_entry(hash, matches);
        }
        Some(kept)
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key).map(|(_, value)| value)
    }
}

/// Cache-line prefetch hints: they never dereference their argument and cannot fault, so any
/// address (even a dangling or out-of-bounds one) is fine. No-ops where no stable intrinsic
/// exists and under Miri.
#[cfg(not(infra_loom))]
mod prefetch {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    use std::arch::x86_64::{_MM_HINT_ET0 as WRITE, _MM_HINT_T0 as READ};
    // Where no hint is emitted, any values do.
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    const WRITE: i32 = 0;
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    const READ: i32 = 0;

    /// Asks for the line holding `ptr`, to be written soon.
    #[inline(always)]
    pub(super) fn for_write<T>(ptr: *const T) {
        hint::<WRITE, T>(ptr);
    }

    /// Asks for the line holding `ptr`, to be read soon.
    #[inline(always)]
    pub(super) fn for_read<T>(ptr: *const T) {
        hint::<READ, T>(ptr);
    }

    /// Asks for the line holding `ptr` with `_mm_prefetch` hint `HINT`.
    #[inline(always)]
    fn hint<const HINT: i32, T>(ptr: *const T) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 target has. The instruction it
        // emits (`prefetchw` for the write hint where the target has it, `prefetcht0`
        // otherwise) only warms the cache: it reads no memory the program can observe and never
        // faults, whatever the address.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<HINT>(ptr.cast::<i8>());
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        let _ = ptr;
    }
}

#[cfg(infra_loom)]
pub(crate) struct Shards<K, V> {
    map: infra_common::sync::RwLock<std::collections::HashMap<K, V, RandomState>>,
}

#[cfg(infra_loom)]
impl<K: Hash + Eq, V> Shards<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: infra_common::sync::RwLock::new(std::collections::HashMap::with_hasher(
                RandomState::new(),
            )),
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
        f: impl FnOnce(&V, bool) -> R,
    ) -> R {
        let mut map = self.map.write();
        let mut inserted = false;
        let value = map.entry(key).or_insert_with(|| {
            inserted = true;
            make()
        });
        f(value, inserted)
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Option<V> {
        self.map.write().insert(key, value)
    }

    pub(crate) fn hash_of<Q>(&self, key: &Q) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        use std::hash::BuildHasher;
        self.map.read().hasher().hash_one(key)
    }

    pub(crate) fn evict_hashed<R>(
        &self,
        hash: u64,
        keep: impl FnOnce(&K, &V) -> Option<R>,
    ) -> Option<Option<R>>
    where
        K: Clone,
    {
        use std::hash::BuildHasher;
        let mut map = self.map.write();
        let hasher = map.hasher().clone();
        let key = map.keys().find(|key| hasher.hash_one(key) == hash)?.clone();
        let kept = keep(&key, &map[&key]);
        if kept.is_none() {
            map.remove(&key);
        }
        Some(kept)
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.write().remove(key)
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
                        shards.with_or_insert(key, || i, |v, inserted| (*v, inserted));
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
        let hash = shards.hash_of("key-9");
        assert_eq!(shards.evict_hashed(hash, |_, v| Some(*v)), Some(Some(9)));
        assert_eq!(
            shards.evict_hashed(hash, |key, _| (key != "key-9").then_some(())),
            Some(None)
        );
        assert_eq!(
            shards.evict_hashed(hash, |_, v| Some(*v)),
            None,
            "key-9 is gone"
        );
    }
}
