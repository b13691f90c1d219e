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
///   then wins a share `w / Σw` of the keys.
///
/// Ties (probability about 2^-64) go to the node with the smaller node hash.
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

impl Rendezvous {
    /// An empty rendezvous engine.
    pub fn new() -> Self {
        Self::default()
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
            left < right
        }
    }

    fn compare(&self, a: (u64, u32, usize), b: (u64, u32, usize)) -> Ordering {
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

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        // Scores in order, best first: each step scans every node for the best one ranked
        // after the previous pick (ties broken by node-hash rank, so the order is total).
        // O(n) per node taken and no allocation; callers usually stop after one or two.
        let score = move |rank: usize| {
            let (salt, weight, _) = self.nodes[rank];
            (fmix64(key_hash ^ salt), weight, rank)
        };
        let mut previous: Option<(u64, u32, usize)> = None;
        std::iter::from_fn(move || {
            let next = (0..self.nodes.len())
                .map(score)
                .filter(|&c| previous.is_none_or(|p| self.compare(p, c) == Ordering::Less))
                .min_by(|&a, &b| self.compare(a, b))?;
            previous = Some(next);
            Some(self.nodes[next.2].2 as usize)
        })
    }
}
