//! The [`Engine`] trait every placement algorithm implements, and the slot bookkeeping they share.

use std::fmt;

use crate::Error;

/// The most nodes any engine holds (2^24, 16,777,216): beyond it `add` returns
/// [`Error::TooManyNodes`]. Engines with a table may hold fewer (see [`crate::MAX_RING_POINTS`]
/// and [`crate::MaglevConfig`]).
pub const MAX_NODES: usize = 1 << 24;

/// A node that changed slot during a removal: the numbered-bucket engines (Jump, FlipHash)
/// fill the removed bucket with the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocation {
    /// The slot the node occupied before.
    pub from: usize,
    /// The slot the node occupies now.
    pub to: usize,
}

/// Which membership changes move only the keys they must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disruption {
    /// Adding a node moves keys only onto it; removing a node moves only its keys; reweighting a
    /// node moves keys only onto or off it.
    Minimal,
    /// Adding a node, and removing the most recently added one, are minimal; removing another
    /// node also moves the keys of the node that takes its number (about `2/n` of the keys).
    MinimalAtTheEnd,
    /// Changes move a little more than the ideal: a few keys shuffle between nodes that did not
    /// change (Maglev's table repopulation).
    NearMinimal,
}

/// A placement algorithm: maps a 64-bit key hash to a slot, and to an ordered list of distinct
/// slots.
///
/// Engines see nodes only as `(node_hash, weight)` pairs in numbered slots; [`crate::Placement`]
/// keeps the node values and validates input, so engines can assume that `weight >= 1`, that
/// `slot` names a live node, and that [`Engine::rebuild`] runs after every batch of changes and
/// before any lookup.
pub trait Engine: Clone + fmt::Debug + Send + Sync + 'static {
    /// The engine's name, for errors and reports.
    fn name(&self) -> &'static str;

    /// What [`Disruption`] guarantee the engine gives.
    fn disruption(&self) -> Disruption;

    /// Adds a node and returns its slot. Must not change anything when it returns an error.
    ///
    /// # Errors
    ///
    /// [`Error::WeightNotSupported`] or [`Error::TooManyNodes`].
    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error>;

    /// Removes the node in `slot`, returning the node that moved into another slot, if any.
    fn remove(&mut self, slot: usize) -> Option<Relocation>;

    /// Changes the weight of the node in `slot`. Must not change anything when it fails.
    ///
    /// # Errors
    ///
    /// [`Error::WeightNotSupported`] for unweighted engines.
    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error>;

    /// Whether a removed node's slot stays reserved for it, so that re-adding the node can
    /// restore it (as [`crate::Memento`] does). [`crate::Placement`] then keeps the removed node
    /// to report it in the layout. `false` unless overridden.
    fn keeps_vacant_slots(&self) -> bool {
        false
    }

    /// Recomputes lookup structures after a batch of `add`/`remove`/`set_weight` calls.
    fn rebuild(&mut self);

    /// The slot that owns `key_hash`, or `None` when there is no node.
    fn lookup(&self, key_hash: u64) -> Option<usize>;

    /// The slots for `key_hash` in preference order, lazily: the first is [`Engine::lookup`]'s
    /// answer, a slot may come more than once (callers keep the first time), and every live
    /// slot comes at least once before the iterator ends. [`crate::Placement::get_n`] and
    /// [`crate::Placement::node_iter`] keep the distinct ones; since the order depends only on
    /// the key and the engine, `get_n(key, n)` is always a prefix of `get_n(key, n + 1)`.
    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_;

    /// Whether [`Engine::candidates`] never repeats a slot, so that callers may skip their
    /// distinctness check (default `false`).
    const DISTINCT_CANDIDATES: bool = false;
}

/// Node hashes and weights by slot, with a free list so slots are reused (most recent first).
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotTable {
    slots: Vec<Option<(u64, u32)>>,
    free: Vec<usize>,
    live: usize,
    total_weight: u64,
}

impl SlotTable {
    /// [`Error::TooManyNodes`] when one more node would exceed `limit` (at most [`MAX_NODES`]).
    pub(crate) fn check_room(&self, limit: usize, engine: &'static str) -> Result<(), Error> {
        if self.live >= limit.min(MAX_NODES) {
            Err(Error::TooManyNodes { engine })
        } else {
            Ok(())
        }
    }

    pub(crate) fn insert(&mut self, node_hash: u64, weight: u32) -> usize {
        self.live += 1;
        self.total_weight += u64::from(weight);
        if let Some(slot) = self.free.pop() {
            self.slots[slot] = Some((node_hash, weight));
            slot
        } else {
            self.slots.push(Some((node_hash, weight)));
            self.slots.len() - 1
        }
    }

    pub(crate) fn remove(&mut self, slot: usize) {
        if let Some((_, weight)) = self.slots.get_mut(slot).and_then(Option::take) {
            self.live -= 1;
            self.total_weight -= u64::from(weight);
            self.free.push(slot);
        }
    }

    pub(crate) fn set_weight(&mut self, slot: usize, weight: u32) {
        if let Some(Some(entry)) = self.slots.get_mut(slot) {
            self.total_weight = self.total_weight - u64::from(entry.1) + u64::from(weight);
            entry.1 = weight;
        }
    }

    /// The weight of the node in `slot` (0 for an empty slot).
    pub(crate) fn weight(&self, slot: usize) -> u32 {
        self.slots
            .get(slot)
            .copied()
            .flatten()
            .map_or(0, |(_, weight)| weight)
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Sum of the live nodes' weights.
    pub(crate) fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The live slots, in slot order.
    pub(crate) fn live_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| entry.map(|_| slot))
    }

    /// One past the highest slot ever used.
    pub(crate) fn bound(&self) -> usize {
        self.slots.len()
    }

    /// `(slot, node_hash, weight)` of every live node, sorted by node hash so that every
    /// structure built from it is independent of the order in which nodes were added.
    pub(crate) fn sorted_by_hash(&self) -> Vec<(usize, u64, u32)> {
        let mut nodes: Vec<(usize, u64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| entry.map(|(hash, weight)| (slot, hash, weight)))
            .collect();
        nodes.sort_unstable_by_key(|&(slot, hash, _)| (hash, slot));
        nodes
    }
}

/// The slots a replica list holds already: the list itself for short lists, a bitmap over
/// `0..slot_bound` for long ones (bounded load asks for every node), kept on the stack up to
/// [`STACK_SLOTS`] slots so that `get_n` allocates only its answer there.
#[allow(clippy::large_enum_variant)] // on the stack on purpose: a box is the allocation it saves
pub(crate) enum SeenSlots {
    Few {
        slots: [usize; FEW_SLOTS],
        len: usize,
    },
    Stack([u64; STACK_SLOTS / 64]),
    Heap(Vec<u64>),
}

/// Lists up to this long are checked one by one.
const FEW_SLOTS: usize = 16;

/// Slots a long list's bitmap covers on the stack (512 bytes); more take a heap bitmap of one
/// bit per slot.
const STACK_SLOTS: usize = 4096;

impl SeenSlots {
    /// Room for a list of `want` slots below `slot_bound`.
    pub(crate) fn new(want: usize, slot_bound: usize) -> Self {
        if want <= FEW_SLOTS {
            Self::Few {
                slots: [0; FEW_SLOTS],
                len: 0,
            }
        } else if slot_bound <= STACK_SLOTS {
            Self::Stack([0; STACK_SLOTS / 64])
        } else {
            Self::Heap(vec![0; slot_bound.div_ceil(64)])
        }
    }

    /// Records `slot`; `false` when it was recorded already. A short list takes at most
    /// [`FEW_SLOTS`] slots, the `want` it was made for.
    pub(crate) fn insert(&mut self, slot: usize) -> bool {
        let words: &mut [u64] = match self {
            Self::Few { slots, len } => {
                if slots[..*len].contains(&slot) {
                    return false;
                }
                slots[*len] = slot;
                *len += 1;
                return true;
            }
            Self::Stack(words) => words,
            Self::Heap(words) => words,
        };
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let fresh = words[word] & bit == 0;
        words[word] |= bit;
        fresh
    }
}

/// Salted draws a key makes before walking the remaining buckets.
const SALTED_DRAWS: u64 = 64;

/// Salt of the walk's permutation, apart from the draws' `1..SALTED_DRAWS`.
const WALK_SALT: u64 = 1 << 32;

/// Preference order for engines without a natural successor order (Jump, FlipHash, Memento):
/// candidate `i < 64` is `lookup(mix(key_hash, i))` (candidate 0 is the key itself), which
/// follows the engine's own balance and is as stable under membership changes as a lookup;
/// then every bucket of `0..bound` that `live` accepts, in an order given by a pseudo-random
/// permutation seeded by the key ([`KeyedPermutation`]), so that no bucket is favoured at the
/// end of a long list.
pub(crate) fn salted_candidates<'a>(
    key_hash: u64,
    bound: usize,
    lookup: impl Fn(u64) -> Option<usize> + 'a,
    live: impl Fn(usize) -> bool + 'a,
) -> impl Iterator<Item = usize> + 'a {
    let draws = (0..SALTED_DRAWS).filter_map(move |i| {
        lookup(if i == 0 {
            key_hash
        } else {
            crate::hashing::mix(key_hash, i)
        })
    });
    let permutation = KeyedPermutation::new(key_hash, bound as u64);
    #[allow(clippy::cast_possible_truncation)] // below bound, a usize
    let walk = (0..permutation.domain())
        .map(move |j| permutation.apply(j))
        .filter(move |&bucket| bucket < bound as u64 && live(bucket as usize))
        .map(|bucket| bucket as usize);
    draws.chain(walk)
}

/// A permutation of `0..2^(2h)` (the smallest even power of two covering the buckets) chosen
/// by the key: a four-round Feistel network on two `h`-bit halves whose round function is
/// `mix`. Walking `apply(0), apply(1), ...` and keeping values below the bucket count visits
/// every bucket once, in an order that differs from key to key, with no allocation.
#[derive(Clone, Copy)]
struct KeyedPermutation {
    key: u64,
    half_bits: u32,
}

impl KeyedPermutation {
    fn new(key_hash: u64, buckets: u64) -> Self {
        let bits = 64 - buckets.saturating_sub(1).leading_zeros();
        Self {
            key: crate::hashing::mix(key_hash, WALK_SALT),
            half_bits: bits.div_ceil(2),
        }
    }

    /// The size of the permuted range, at most four times the bucket count (or 1).
    fn domain(self) -> u64 {
        1 << (2 * self.half_bits)
    }

    fn apply(self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for round in 0..4u64 {
            let f = crate::hashing::mix(self.key, (round << 32) | right) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }
}
