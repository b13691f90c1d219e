//! The best `k` drivers a nearest query has found so far, and the `k` coarsely nearest of a
//! bucket, whose rows it reads first.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::DriverId;
use crate::geo::Unit;

/// Up to this many results, a query keeps its best in a sorted array on the stack
/// ([`SortedFew`]) rather than in a heap.
pub(crate) const FEW: usize = 16;

/// The room a heap of the best starts with, for `k` above [`FEW`]: a large `k` grows it only
/// as drivers are found.
const FIRST_CAPACITY: usize = 64;

/// A driver found by a scan, ordered by its rank then by id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    /// Its squared chord from the query point, which bounds how far the query reaches.
    pub(crate) chord2: f64,
    /// Where it stands among the drivers found: any number that orders them as their
    /// distances do (the index's queries rank by the squared chord's bits, and far from the
    /// query point by the exact distance's).
    pub(crate) rank: u64,
    pub(crate) id: DriverId,
    pub(crate) word: u64,
    /// The driver's position, for its exact distance once it is a result.
    pub(crate) unit: Unit,
}

impl Found {
    /// What fills the unused places of a [`SortedFew`], never read.
    const FILLER: Self = Self {
        chord2: 0.0,
        rank: 0,
        id: DriverId(0),
        word: 0,
        unit: [0.0; 3],
    };

    /// The rank, then the id.
    #[inline]
    fn key(&self) -> (u64, u64) {
        (self.rank, self.id.0)
    }
}

impl PartialEq for Found {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Found {}

impl PartialOrd for Found {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Found {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The `k` least items offered (`k` up to [`FEW`]), kept sorted in a fixed array: a place
/// among a few is found by a few comparisons, with no allocation, and the least come out in
/// order with no sort.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SortedFew<T> {
    items: [T; FEW],
    len: usize,
    k: usize,
}

impl<T: Copy + Ord> SortedFew<T> {
    /// Empty, keeping up to `k` (1 to [`FEW`]); `filler` fills the places not yet taken.
    #[inline]
    pub(crate) fn new(k: usize, filler: T) -> Self {
        debug_assert!((1..=FEW).contains(&k));
        Self {
            items: [filler; FEW],
            len: 0,
            k,
        }
    }

    /// The greatest of those kept once there are `k`.
    #[inline]
    pub(crate) fn full_last(&self) -> Option<&T> {
        (self.len == self.k).then(|| &self.items[self.k - 1])
    }

    /// Keeps `item` if there are fewer than `k` or it is less than the greatest kept, which
    /// then drops out.
    #[inline]
    pub(crate) fn offer(&mut self, item: T) {
        let mut place = if self.len < self.k {
            self.len += 1;
            self.len - 1
        } else if item < self.items[self.k - 1] {
            self.k - 1
        } else {
            return;
        };
        while place > 0 && item < self.items[place - 1] {
            self.items[place] = self.items[place - 1];
            place -= 1;
        }
        self.items[place] = item;
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Those kept, least first, to change in place.
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

/// A driver of a bucket as a scan's coarse look found it: the bits of its coarse squared chord
/// above its slot, so that one comparison of integers orders drivers by chord (a squared chord
/// is never negative, so its bits order as its value does). A slot is below 2^32: a bucket's
/// rows take 64 bytes each, so a bucket of more would take 256 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CoarseFound(u64);

impl CoarseFound {
    #[inline]
    pub(crate) fn new(coarse2: f32, slot: usize) -> Self {
        debug_assert!(u32::try_from(slot).is_ok(), "slot {slot} past 2^32");
        Self((u64::from(coarse2.to_bits()) << 32) | (slot as u64 & u64::from(u32::MAX)))
    }

    /// The coarse squared chord.
    #[inline]
    pub(crate) fn coarse2(self) -> f32 {
        f32::from_bits((self.0 >> 32) as u32)
    }

    #[inline]
    pub(crate) fn slot(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

/// Reorders `nearer` (more than `k` drivers) so that the `k` least chords come first, least
/// first (ties by slot), and the others after them.
///
/// The standard library's selection and sort: their partitions and small sorts take no
/// branch per comparison, which matters here, as a bucket's chords come in no order. A
/// selection written for a few dozen values, with fewer instructions but a branch per
/// comparison, mispredicted half of them and took twice the time. Each driver is one integer
/// rather than a pair: half the bytes moved, one comparison.
pub(crate) fn least_first(nearer: &mut [CoarseFound], k: usize) {
    nearer.select_nth_unstable(k - 1);
    nearer[..k].sort_unstable();
}

/// The best `k` drivers so far: sorted in a fixed array for a `k` up to [`FEW`], the usual
/// case; in a heap, worst on top, for a larger `k`.
// The large variant is the usual one, left unboxed so that a query allocates nothing for it.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Best {
    Few(SortedFew<Found>),
    Many { heap: BinaryHeap<Found>, k: usize },
}

impl Best {
    /// Empty, for the best `k` (at least 1).
    #[inline]
    pub(crate) fn new(k: usize) -> Self {
        if k <= FEW {
            Self::Few(SortedFew::new(k, Found::FILLER))
        } else {
            Self::Many {
                heap: BinaryHeap::with_capacity((k + 1).min(FIRST_CAPACITY)),
                k,
            }
        }
    }

    /// The worst of the best once there are `k`.
    #[inline]
    pub(crate) fn full_worst(&self) -> Option<&Found> {
        match self {
            Self::Few(few) => few.full_last(),
            Self::Many { heap, k } => heap.peek().filter(|_| heap.len() == *k),
        }
    }

    /// Keeps `found` if there are fewer than `k` or it is better than the worst, which then
    /// drops out.
    #[inline]
    pub(crate) fn offer(&mut self, found: Found) {
        match self {
            Self::Few(few) => few.offer(found),
            Self::Many { heap, k } => {
                if heap.len() < *k {
                    heap.push(found);
                } else if let Some(mut worst) = heap.peek_mut()
                    && found < *worst
                {
                    *worst = found;
                }
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Self::Few(few) => few.clear(),
            Self::Many { heap, .. } => heap.clear(),
        }
    }

    /// Hands the best, nearest first, to `f`, to change in place; what is left of them
    /// after is not to be read.
    pub(crate) fn with_sorted<R>(&mut self, f: impl FnOnce(&mut [Found]) -> R) -> R {
        match self {
            Self::Few(few) => f(few.as_mut_slice()),
            Self::Many { heap, .. } => f(&mut std::mem::take(heap).into_sorted_vec()),
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(chord2: f64, id: u64) -> Found {
        Found {
            chord2,
            rank: chord2.to_bits(),
            id: DriverId(id),
            ..Found::FILLER
        }
    }

    proptest! {
        /// Both forms keep what a full sort keeps, in its order: the `k` least by squared
        /// chord then id, ties in the chord included.
        #[test]
        fn the_best_are_the_k_least(k in 1usize..40, offered in prop::collection::vec((0u8..20, 0u64..30), 0..80)) {
            let offered: Vec<Found> = offered
                .into_iter()
                .map(|(chord, id)| found(f64::from(chord) * 0.25, id))
                .collect();
            let mut best = Best::new(k);
            for &f in &offered {
                best.offer(f);
            }
            let mut expected = offered.clone();
            expected.sort_by(|a, b| a.chord2.total_cmp(&b.chord2).then(a.id.cmp(&b.id)));
            expected.truncate(k);
            let worst = best.full_worst().map(Found::key);
            prop_assert_eq!(worst, (expected.len() == k).then(|| expected[k - 1].key()));
            let kept: Vec<(u64, u64)> = best.with_sorted(|sorted| sorted.iter().map(Found::key).collect());
            let expected: Vec<(u64, u64)> = expected.iter().map(Found::key).collect();
            prop_assert_eq!(kept, expected);
        }
    }

    proptest! {
        /// `least_first` puts a sort's first `k` first, in order, and keeps every pair, with
        /// duplicates, runs, chords of every size and both ends included.
        #[test]
        fn the_selection_is_the_sort(values in prop::collection::vec((any::<bool>(), 0u32..40, any::<u32>()).prop_map(|(small, few, any)| if small { few } else { any }), 1..150), at in 0usize..150, sorted_first in any::<bool>()) {
            // Pairs of a chord's bits and a slot, a slot shared by several: the reference
            // sorts the pairs as they are.
            let mut pairs: Vec<(u32, usize)> = values.into_iter().enumerate().map(|(slot, bits)| (bits, slot % 7)).collect();
            if sorted_first {
                pairs.sort_unstable();
            }
            let nth = at % pairs.len();
            let mut sorted = pairs.clone();
            sorted.sort_unstable();
            if pairs.len() > nth + 1 {
                let mut first: Vec<CoarseFound> = pairs.iter().map(|&(bits, slot)| CoarseFound::new(f32::from_bits(bits), slot)).collect();
                least_first(&mut first, nth + 1);
                let unpacked = |v: &[CoarseFound]| v.iter().map(|found| (found.coarse2().to_bits(), found.slot())).collect::<Vec<_>>();
                prop_assert_eq!(unpacked(&first[..=nth]), sorted[..=nth].to_vec());
                first.sort_unstable();
                prop_assert_eq!(unpacked(&first), sorted);
            }
        }
    }

    proptest! {
        /// A packed driver gives back its chord and slot, and packed drivers order as their
        /// non-negative chords do, then by slot.
        #[test]
        fn a_packed_driver_orders_by_chord_then_slot(a in (0.0f32..=f32::MAX, 0usize..=u32::MAX as usize), b in (0.0f32..=f32::MAX, 0usize..=u32::MAX as usize)) {
            let (pa, pb) = (CoarseFound::new(a.0, a.1), CoarseFound::new(b.0, b.1));
            prop_assert_eq!((pa.coarse2(), pa.slot()), a);
            let expected = a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            prop_assert_eq!(pa.cmp(&pb), expected);
        }
    }

    #[test]
    fn cleared_best_keeps_nothing() {
        for k in [1, FEW, FEW + 1] {
            let mut best = Best::new(k);
            best.offer(found(1.0, 1));
            best.clear();
            assert!(best.full_worst().is_none(), "{k}");
            best.offer(found(2.0, 2));
            assert_eq!(best.with_sorted(|sorted| sorted.len()), 1, "{k}");
        }
    }
}
