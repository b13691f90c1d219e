//! The removal-tolerant numbered-bucket engine, and the bucket layout that reproduces it.

use std::collections::{BTreeMap, BTreeSet};

use crate::Error;
use crate::engine::{Disruption, Engine, MAX_NODES, Relocation, salted_candidates};
use crate::hashing::{mix, reduce};
use crate::numbered::flip_hash;

/// Draws a key makes among all buckets before scanning for the next working one. Each draw
/// finds a working bucket with probability `working / buckets`, so with half the buckets
/// vacant the scan runs for fewer than one key in 2^63.
const DRAWS: u64 = 64;

/// Numbered buckets where any node may fail: a key keeps its bucket while that bucket works,
/// and the placement depends only on *which* buckets are vacant, never on the order of the
/// changes that made them so.
///
/// # Algorithm
///
/// Buckets `0..n` are FlipHash's. A key draws the bucket sequence `d_0 = flip_hash(key, n)`,
/// `d_i = reduce(mix(key, i), n)` for `i = 1..64`, and belongs to the first working bucket in
/// it; if all 64 draws are vacant, to the first working bucket after `d_63`, cyclically. So:
///
/// * with no vacant bucket the engine *is* FlipHash over `n` buckets;
/// * removing a node moves only its keys (they go to their next working draw), and restoring a
///   bucket moves only keys onto it;
/// * the same set of vacant buckets gives the same placement whatever the history: a node
///   re-added after failures gets its own bucket back, and exactly its old keys, even when other
///   nodes failed after it.
///
/// Removing a node leaves its bucket vacant, remembering which node held it, except that
/// removing the highest bucket while no other is vacant shrinks `n` (FlipHash's own
/// consistent shrink). Adding a node restores the vacant bucket it held last, if any; otherwise
/// the lowest vacant bucket (and the keys that bucket held); and
/// appends bucket `n` only when no bucket is vacant.
///
/// A lookup takes `n / working` draws on average (one while nothing is vacant, two with half
/// the buckets vacant). This is the probing idea of DxHash (Dong & Wang 2021) over FlipHash,
/// chosen over MementoHash's removal stack (Coluzzi et al. 2023), which is a little faster at
/// heavy removal but can only restore the most recently removed bucket, so its placement
/// depends on the order of removals and a node returning after another one failed would
/// inherit that node's keys.
///
/// # What reproduces a placement
///
/// The engine's state is the bucket count, the node hash of each bucket and which buckets are
/// vacant: exactly what [`crate::Placement::buckets`] returns and
/// [`crate::Placement::from_buckets`] rebuilds (with the `serde` feature, as JSON). A
/// [`crate::Membership`] lists only working nodes, so reloading one after removals renumbers
/// the buckets and moves keys; save the bucket layout instead.
///
/// Memory: a node hash and a flag per bucket ever used, plus an index entry per vacant
/// bucket. Weights are not supported; every bucket has the same share.
#[derive(Debug, Clone, Default)]
pub struct Memento {
    /// The node hash of each bucket: its node if it works, the node that held it last if not.
    nodes: Vec<u64>,
    /// Whether each bucket is vacant.
    vacant: Vec<bool>,
    /// The vacant buckets, lowest first.
    vacancies: BTreeSet<u32>,
    /// Vacant buckets by the hash of the node that held them last.
    former: BTreeMap<u64, u32>,
}

impl Memento {
    /// An engine with no bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// Vacant buckets: removed and not yet restored.
    #[allow(clippy::cast_possible_truncation)] // at most MAX_NODES buckets
    pub fn removed(&self) -> u32 {
        self.vacancies.len() as u32
    }

    /// An engine with these buckets, `(node_hash, vacant)` in bucket order.
    pub(crate) fn from_layout(buckets: impl IntoIterator<Item = (u64, bool)>) -> Self {
        let mut engine = Self::new();
        for (bucket, (hash, vacant)) in (0u32..).zip(buckets) {
            engine.nodes.push(hash);
            engine.vacant.push(vacant);
            if vacant {
                engine.vacate(bucket);
            }
        }
        engine
    }

    /// The number of buckets, working or vacant.
    pub(crate) fn bucket_count(&self) -> usize {
        self.nodes.len()
    }

    fn vacate(&mut self, bucket: u32) {
        self.vacant[bucket as usize] = true;
        self.vacancies.insert(bucket);
        self.former.insert(self.nodes[bucket as usize], bucket);
    }

    fn restore(&mut self, bucket: u32, node_hash: u64) {
        let previous = self.nodes[bucket as usize];
        if self.former.get(&previous) == Some(&bucket) {
            self.former.remove(&previous);
        }
        self.vacancies.remove(&bucket);
        self.vacant[bucket as usize] = false;
        self.nodes[bucket as usize] = node_hash;
    }

    fn working(&self) -> usize {
        self.nodes.len() - self.vacancies.len()
    }

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // buckets are below nodes.len() <= MAX_NODES
    fn bucket(&self, key_hash: u64) -> Option<usize> {
        if self.working() == 0 {
            return None;
        }
        let buckets = self.nodes.len() as u64;
        let mut draw = flip_hash(key_hash, buckets) as usize;
        if !self.vacant[draw] {
            return Some(draw);
        }
        for i in 1..DRAWS {
            draw = reduce(mix(key_hash, i), buckets) as usize;
            if !self.vacant[draw] {
                return Some(draw);
            }
        }
        // Consistent too: a removal elsewhere cannot change the first working bucket after
        // `draw`, and a restore changes it only to the restored bucket.
        (draw..self.vacant.len())
            .chain(0..draw)
            .find(|&bucket| !self.vacant[bucket])
    }
}

impl Engine for Memento {
    fn name(&self) -> &'static str {
        "memento"
    }

    fn disruption(&self) -> Disruption {
        Disruption::Minimal
    }

    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        if weight != 1 {
            return Err(Error::WeightNotSupported {
                engine: "memento",
                weight,
            });
        }
        let reclaimed = self
            .former
            .get(&node_hash)
            .copied()
            .or_else(|| self.vacancies.first().copied());
        if let Some(bucket) = reclaimed {
            self.restore(bucket, node_hash);
            return Ok(bucket as usize);
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(Error::TooManyNodes { engine: "memento" });
        }
        self.nodes.push(node_hash);
        self.vacant.push(false);
        Ok(self.nodes.len() - 1)
    }

    #[allow(clippy::cast_possible_truncation)] // buckets are below MAX_NODES
    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        if slot >= self.nodes.len() || self.vacant[slot] {
            return None;
        }
        if self.vacancies.is_empty() && slot + 1 == self.nodes.len() {
            self.nodes.pop();
            self.vacant.pop();
        } else {
            self.vacate(slot as u32);
        }
        None
    }

    fn set_weight(&mut self, _slot: usize, weight: u32) -> Result<(), Error> {
        if weight == 1 {
            Ok(())
        } else {
            Err(Error::WeightNotSupported {
                engine: "memento",
                weight,
            })
        }
    }

    fn rebuild(&mut self) {}

    fn keeps_vacant_slots(&self) -> bool {
        true
    }

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        self.bucket(key_hash)
    }

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        salted_candidates(
            key_hash,
            self.nodes.len(),
            |hash| self.lookup(hash),
            |bucket| !self.vacant[bucket],
        )
    }
}

/// One bucket of a [`Memento`] placement: the node that holds it, or held it last.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Bucket<N> {
    /// The node.
    pub node: N,
    /// Whether the node was removed and the bucket waits for it (or a replacement).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "std::ops::Not::not")
    )]
    pub vacant: bool,
}

/// Every bucket of a [`Memento`] placement in order, working or vacant: the state that
/// reproduces its placement exactly ([`crate::Placement::buckets`],
/// [`crate::Placement::from_buckets`]).
///
/// With the `serde` feature it reads and writes, for example:
///
/// ```json
/// { "buckets": [ { "node": "cache-a" }, { "node": "cache-b", "vacant": true } ] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BucketLayout<N> {
    /// The buckets, bucket 0 first.
    pub buckets: Vec<Bucket<N>>,
}
