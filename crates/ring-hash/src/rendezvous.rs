//! Weighted rendezvous (highest-random-weight) hashing.

use std::cmp::Ordering;

use crate::Error;
use crate::engine::{Disruption, Engine, MAX_NODES, Relocation, SlotTable};
use crate::hashing::{GOLDEN, fmix64, neg_log2};

/// Weighted rendezvous hashing (Thaler & Ravishankar 1996; weights after Schindelhauer &
/// Schomaker 2005).
///
/// Every node draws a score for every key and the best score wins: `get_n` is simply the `n`
/// best scores, in order, so replicas come for free. A lookup costs one [`mix`] per node, so this
/// engine suits tens of nodes, not thousands.
///
/// * All weights equal: the score is `s = mix(key, node)` and the largest wins.
/// * Otherwise: the score is `neg_log2(s) / weight` (the integer form of `-ln(u) / w`), compared
///   exactly by cross-multiplication in 128 bits, and the smallest wins. A node with weight `w`
///   then wins a share `w / Σw` of the keys. The fixed-point logarithm keeps about 40 bits of
///   `s`, so two scores can tie there while the `s` differ: the larger `s` wins, as with equal
///   weights, so a change that switches between the two forms (adding or reweighting a node)
///   never reorders two nodes of the same weight.
///
/// Equal `s` for one key need equal node hashes, which [`crate::Placement`] refuses; any tie
/// left goes to the node with the smaller node hash.
///
/// Up to 32 nodes, the candidate walk behind `get_n` and `node_iter` allocates nothing: it
/// scores every node once into an array on the stack and sorts it, as a sort-based
/// implementation does. With more nodes, the first 16 candidates come from rescanning the
/// nodes (no allocation) and a walk past them scores every node once more into one vector and
/// sorts it, so a full walk (a [`crate::BoundedLoad`] spill-over) costs O(n log n), not O(n²).
///
/// Disruption is minimal: a node's score for a key never depends on the other nodes.
///
/// [`mix`]: crate::hashing::mix
#[derive(Debug, Clone, Default)]
pub struct Rendezvous {
    slots: SlotTable,
    /// Live nodes sorted by node hash: `(fmix64(node_hash ^ GOLDEN), weight, slot)`, so a
    /// score is one `fmix64(key ^ salt)`.
    nodes: Vec<(u64, u32, u32)>,
    uniform: bool,
}

/// A node's score for a key: `(score, weight, rank)`, `rank` being its position in
/// [`Rendezvous::nodes`].
type Candidate = (u64, u32, u32);

/// Candidates a walk over more than [`STACK_NODES`] nodes takes by rescanning every node before
/// it sorts the rest: replica lists up to this long cost `n` scores each and allocate nothing
/// (as [`crate::Placement::get_n_into`] promises for short lists), and a longer walk costs `n`
/// more scores and a sort.
const SCANNED_CANDIDATES: usize = 16;

/// Up to this many nodes, a walk scores every node once into an array on the stack (512
/// bytes) and sorts it: a full order then costs `n` scores and a sort of `n`, where rescanning
/// cost `n` scores per candidate (5× slower than a sorting peer at 10 nodes).
const STACK_NODES: usize = 32;

/// Where a walk's candidates come from.
#[allow(clippy::large_enum_variant)] // on the stack on purpose: a box is the allocation it saves
enum Rest {
    /// Up to [`STACK_NODES`] nodes: every node's candidate, sorted best first on the first
    /// call (`next` is `None` until then); `next` is the one to yield.
    Stack {
        sorted: [Candidate; STACK_NODES],
        next: Option<usize>,
    },
    /// More nodes: the first [`SCANNED_CANDIDATES`] by rescanning.
    Scanning,
    /// More nodes: the candidates after the scanned ones, sorted.
    Heap(std::vec::IntoIter<Candidate>),
}

impl Rendezvous {
    /// An empty rendezvous engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The score of the node at `rank` for `key_hash`.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // node counts are checked to fit u32
    fn score(&self, key_hash: u64, rank: usize) -> Candidate {
        let (salt, weight, _) = self.nodes[rank];
        (fmix64(key_hash ^ salt), weight, rank as u32)
    }

    /// Every node's candidate, best first, from `score` (a node's [`Rendezvous::score`] for
    /// one key). Up to [`STACK_NODES`] nodes, every node's score once, sorted on the stack at
    /// the first call; above, the first [`SCANNED_CANDIDATES`] by a scan of every node each
    /// (the first is a lookup's work), then the rest by one sort.
    fn by_score(&self, score: impl Fn(usize) -> Candidate) -> impl Iterator<Item = Candidate> {
        let nodes = self.nodes.len();
        let after = |previous: Option<Candidate>, candidate: Candidate| {
            previous.is_none_or(|p| self.compare(p, candidate) == Ordering::Less)
        };
        let mut previous: Option<Candidate> = None;
        let mut taken = 0;
        let mut rest = if nodes <= STACK_NODES {
            Rest::Stack {
                sorted: [(0, 0, 0); STACK_NODES],
                next: None,
            }
        } else {
            Rest::Scanning
        };
        std::iter::from_fn(move || match &mut rest {
            Rest::Stack { sorted, next } => {
                let at = *next.get_or_insert_with(|| {
                    self.sort_all(&mut sorted[..nodes], &score);
                    0
                });
                *next = Some(at + 1);
                sorted[..nodes].get(at).copied()
            }
            Rest::Scanning if taken < SCANNED_CANDIDATES => {
                taken += 1;
                let next = (0..nodes)
                    .map(&score)
                    .filter(|&candidate| after(previous, candidate))
                    .min_by(|&a, &b| self.compare(a, b))?;
                previous = Some(next);
                Some(next)
            }
            Rest::Scanning => {
                // One allocation, sized for every candidate after the scanned ones.
                let mut sorted = Vec::with_capacity(nodes.saturating_sub(SCANNED_CANDIDATES));
                sorted.extend(
                    (0..nodes)
                        .map(&score)
                        .filter(|&candidate| after(previous, candidate)),
                );
                sorted.sort_unstable_by(|&a, &b| self.compare(a, b));
                let mut sorted = sorted.into_iter();
                let next = sorted.next();
                rest = Rest::Heap(sorted);
                next
            }
            Rest::Heap(sorted) => sorted.next(),
        })
    }

    /// Fills `out` with the candidates of ranks `0..out.len()` and sorts them, best first.
    fn sort_all(&self, out: &mut [Candidate], score: impl Fn(usize) -> Candidate) {
        for (rank, candidate) in out.iter_mut().enumerate() {
            *candidate = score(rank);
        }
        if self.uniform {
            // `compare`'s order as one integer: the larger score first, then the lower rank.
            out.sort_unstable_by_key(|&(score, _, rank)| {
                (u128::from(!score) << 32) | u128::from(rank)
            });
        } else {
            out.sort_unstable_by(|&a, &b| self.compare(a, b));
        }
    }

    /// Whether candidate `a` (`score`, weight) beats candidate `b`.
    #[inline]
    fn better(&self, a: (u64, u32), b: (u64, u32)) -> bool {
        if self.uniform {
            a.0 > b.0
        } else {
            // neg_log2(a)/wa < neg_log2(b)/wb  <=>  neg_log2(a)*wb < neg_log2(b)*wa
            let left = u128::from(neg_log2(a.0)) * u128::from(b.1);
            let right = u128::from(neg_log2(b.0)) * u128::from(a.1);
            // The logarithm keeps about 40 bits of a score, so scores that differ can tie on
            // it: the larger score wins then, as with equal weights, so that adding or
            // reweighting a node never reorders two nodes that share a weight.
            left < right || (left == right && a.0 > b.0)
        }
    }

    #[inline]
    fn compare(&self, a: Candidate, b: Candidate) -> Ordering {
        if self.better((a.0, a.1), (b.0, b.1)) {
            Ordering::Less
        } else if self.better((b.0, b.1), (a.0, a.1)) {
            Ordering::Greater
        } else {
            a.2.cmp(&b.2)
        }
    }
}

impl Engine for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    fn disruption(&self) -> Disruption {
        Disruption::Minimal
    }

    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        self.slots.check_room(MAX_NODES, "rendezvous")?;
        Ok(self.slots.insert(node_hash, weight))
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        self.slots.remove(slot);
        None
    }

    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error> {
        self.slots.set_weight(slot, weight);
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation)] // slot counts are checked to fit u32
    fn rebuild(&mut self) {
        let sorted = self.slots.sorted_by_hash();
        self.uniform = sorted.windows(2).all(|pair| pair[0].2 == pair[1].2);
        self.nodes = sorted
            .into_iter()
            .map(|(slot, hash, weight)| (fmix64(hash ^ GOLDEN), weight, slot as u32))
            .collect();
    }

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        let (first, rest) = self.nodes.split_first()?;
        let mut best = (fmix64(key_hash ^ first.0), first.1);
        let mut best_slot = first.2;
        if self.uniform {
            for &(salt, _, slot) in rest {
                let score = fmix64(key_hash ^ salt);
                if score > best.0 {
                    best.0 = score;
                    best_slot = slot;
                }
            }
        } else {
            for &(salt, weight, slot) in rest {
                let candidate = (fmix64(key_hash ^ salt), weight);
                if self.better(candidate, best) {
                    best = candidate;
                    best_slot = slot;
                }
            }
        }
        Some(best_slot as usize)
    }

    const DISTINCT_CANDIDATES: bool = true;

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        // Scores in order, best first (ties broken by node-hash rank, so the order is total).
        self.by_score(move |rank| self.score(key_hash, rank))
            .map(|(_, _, rank)| self.nodes[rank as usize].2 as usize)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::hashing::key_hash;
    use crate::{Member, Placement};

    /// A full walk of a small membership used to rescan every node per candidate (100 scores
    /// for 10 nodes, 5× slower than `rendezvous_hash`'s score-and-sort); now it scores each node
    /// once. The order is checked against rendezvous's definition through lookups alone: the
    /// `k`-th candidate owns the key once the `k - 1` before it are removed.
    #[test]
    fn a_full_walk_of_a_small_membership_scores_each_node_once() {
        let cases = [
            (1, false),
            (10, false),
            (10, true),
            (32, false),
            (32, true),
            (33, false),
        ];
        for (nodes, weighted) in cases {
            let members =
                (0..nodes).map(|node| Member::weighted(node, 1 + node % 4 * u32::from(weighted)));
            let placement = Placement::from_members(Rendezvous::new(), members).unwrap();
            let engine = placement.engine();
            for key_hash in [0, 7, u64::MAX] {
                let scores = Cell::new(0usize);
                let walk: Vec<u32> = engine
                    .by_score(|rank| {
                        scores.set(scores.get() + 1);
                        engine.score(key_hash, rank)
                    })
                    .map(|(_, _, rank)| engine.nodes[rank as usize].2)
                    .collect();
                if nodes as usize <= STACK_NODES {
                    assert_eq!(scores.get(), nodes as usize, "{nodes} nodes");
                }
                let mut left = placement.clone();
                let mut reference = Vec::new();
                while let Some(&owner) = left.node_for_hash(key_hash) {
                    reference.push(owner);
                    left.remove(&owner).unwrap();
                }
                let walked: Vec<u32> = walk
                    .iter()
                    .map(|&slot| placement.node_in_slot(slot as usize).unwrap().0)
                    .collect();
                assert_eq!(walked, reference, "{nodes} nodes, weighted: {weighted}");
            }
        }
    }

    /// The fixed-point logarithm keeps about 40 bits of a score, so two nodes of equal weight
    /// can tie on it for a key while their scores differ. Adding a heavier node switches the
    /// membership from comparing scores to comparing logarithms; a tie between the two nodes
    /// that stayed must still go the way the scores went, or the key moves between them.
    #[test]
    fn adding_a_heavier_node_moves_keys_only_onto_it_where_two_logarithms_tie() {
        let (stays, tied, heavier) = (1_218_998u64, 1_737_543u64, 2_097_152u64);
        let key = "user:42";
        let score = |node: u64| crate::hashing::mix(key_hash(key), key_hash(&node));
        assert!(score(stays) > score(tied));
        assert_eq!(neg_log2(score(stays)), neg_log2(score(tied)), "not a tie");

        let mut placement =
            Placement::from_members(Rendezvous::new(), [Member::new(stays), Member::new(tied)])
                .unwrap();
        assert_eq!(placement.node(key), Some(&stays));
        placement.add(heavier, 2).unwrap();
        assert_eq!(placement.node(key), Some(&stays));
    }

    /// A full walk used to rescan every node for each candidate: n² scores, 4,000,000 for
    /// 2,000 nodes (211 ms per spilled bounded take at 3,000 nodes in release).
    #[test]
    fn a_full_walk_scores_each_node_a_bounded_number_of_times() {
        for weighted in [false, true] {
            let members =
                (0..2000u32).map(|node| Member::weighted(node, 1 + node % 3 * u32::from(weighted)));
            let placement = Placement::from_members(Rendezvous::new(), members).unwrap();
            let engine = placement.engine();
            for key_hash in [0, 42, u64::MAX] {
                let scores = Cell::new(0usize);
                let walk: Vec<Candidate> = engine
                    .by_score(|rank| {
                        scores.set(scores.get() + 1);
                        engine.score(key_hash, rank)
                    })
                    .collect();
                // 16 scanned candidates, then one more score per node for the sort.
                assert!(
                    scores.get() <= 17 * 2000,
                    "{} scores for 2000 nodes",
                    scores.get()
                );
                // Every node once, each strictly after the one before.
                let mut ranks: Vec<usize> = walk.iter().map(|c| c.2 as usize).collect();
                assert!(
                    walk.windows(2)
                        .all(|pair| engine.compare(pair[0], pair[1]) == Ordering::Less)
                );
                ranks.sort_unstable();
                assert!(ranks.iter().copied().eq(0..2000));
                // The walk starts at the lookup's answer.
                assert_eq!(
                    Some(engine.nodes[walk[0].2 as usize].2 as usize),
                    engine.lookup(key_hash)
                );
            }
        }
    }
}
