//! The removal-tolerant numbered-bucket engine, and the bucket layout that reproduces it.

use std::collections::{BTreeMap, BTreeSet};

use crate::Error;
use crate::engine::{Disruption, Engine, MAX_NODES, Relocation, salted_candidates};
use crate::hashing::{fmix64, mix, mix_salt, reduce};
use crate::numbered::flip_hash;

/// Fewest draws a key makes among all buckets before its fallback. Each draw finds a working
/// bucket with probability `working / buckets`, so with half the buckets vacant a key falls back
/// for fewer than one key in 2^63.
const MIN_DRAWS: u64 = 64;

/// Salt of the fallback's scores, apart from the draws' `1..draws` (at most 2^12).
const FALLBACK_SALT: u64 = 1 << 33;

/// The draws a key makes over `buckets` before its fallback: `max(64, ⌊√buckets⌋)`, at most
/// 4,096 for [`MAX_NODES`] buckets. It depends on the bucket count only, which grows only while
/// no bucket is vacant (every key then stops at its first draw), so it moves no key. The square
/// root balances the two costs: a key falls back with probability `(1 - working/buckets)^draws`
/// and the fallback scores every working bucket, so a lookup costs at most about
/// `draws + buckets / (e · draws)` hashes on average, whatever the share of working buckets.
fn draws(buckets: u64) -> u64 {
    buckets.isqrt().max(MIN_DRAWS)
}

/// `mix_salt(i)` for the first [`MIN_DRAWS`] draws `i`, so that a draw's `mix(key, i)` costs one
/// `fmix64`, not two; the draws beyond them (only with more than 4,096 buckets, and only for keys
/// whose first 64 draws were vacant) compute theirs.
static DRAW_SALTS: [u64; MIN_DRAWS as usize] = draw_salts();

const fn draw_salts() -> [u64; MIN_DRAWS as usize] {
    let mut salts = [0; MIN_DRAWS as usize];
    let mut i = 0;
    while i < MIN_DRAWS {
        salts[i as usize] = mix_salt(i);
        i += 1;
    }
    salts
}

/// Numbered buckets where any node may fail: a key keeps its bucket while that bucket works,
/// and the placement depends only on the bucket layout (which node holds which bucket, and
/// which buckets are vacant), never on the order of the changes that made it so.
///
/// # Algorithm
///
/// Buckets `0..n` are FlipHash's. A key draws the bucket sequence `d_0 = flip_hash(key, n)`,
/// `d_i = reduce(mix(key, i), n)` for `i = 1..D` with `D = max(64, ⌊√n⌋)`, and belongs to the
/// first working bucket in it. If all `D` draws are vacant it belongs to the working bucket `b`
/// with the highest `mix(mix(key, 2^33), b)` (rendezvous over the working buckets; ties, which
/// need equal 64-bit scores, go to the highest bucket). So:
///
/// * with no vacant bucket the engine *is* FlipHash over `n` buckets;
/// * every working bucket gets the same share, however many are vacant and wherever they are:
///   a draw is uniform over all buckets, and the fallback over the working ones;
/// * removing a node moves only its keys (they go to their next working draw, or to their
///   fallback), and restoring a bucket moves only keys onto it;
/// * the same bucket layout gives the same placement whatever the history: a node re-added
///   after failures gets its own bucket back, and exactly its old keys, in whatever order it
///   and the other nodes failed and return.
///
/// Removing a node always leaves its bucket vacant, remembering which node held it; the range
/// never shrinks (shrinking the top bucket would forget its owner, and make the layout depend
/// on the order of removals). Adding a node restores the vacant bucket it held last, if any;
/// otherwise it takes the lowest vacant bucket (and the keys that bucket held); only when no
/// bucket is vacant does it append bucket `n`. So `n` is the largest number of nodes that were
/// ever members at once, and memory is bounded by that peak, not by the number of changes.
/// The cost: a node added and removed again leaves a vacancy, so its keys go to their next
/// draws rather than back to where they were before it came.
///
/// A lookup takes `n / working` draws on average while that is well below `D` (one while
/// nothing is vacant, two with half the buckets vacant), and never more than `D` draws plus one
/// score per working bucket: with one working bucket of 200,000, 447 draws and one score. With
/// 10,000 nodes of which 500 or 100 survive at random, every survivor's share is within 5σ of
/// the binomial mean (the `shares_stay_uniform_with_*_percent_removed` tests). This is the
/// probing idea of DxHash (Dong & Wang 2021) over FlipHash, chosen over MementoHash's removal
/// stack (Coluzzi et al. 2023), which can only restore the most recently removed bucket, so its
/// placement depends on the order of removals and a node returning after another one failed
/// would inherit that node's keys.
///
/// # What reproduces a placement
///
/// The placement is a function of the bucket layout alone: the bucket count, the node of each
/// bucket (for a vacant bucket, the node that held it last) and which buckets are vacant. That is
/// exactly what [`crate::Placement::buckets`] returns and [`crate::Placement::from_buckets`]
/// rebuilds (with the `serde` feature, as JSON). Two placements that reach the same layout by
/// different histories (removals in another order, a node that failed and returned) place every
/// key alike. A [`crate::Membership`] lists only working nodes, so reloading one after removals
/// renumbers the buckets and moves keys; save the bucket layout instead.
///
/// Memory: per bucket a node hash and a vacancy flag (9 bytes), plus a 4-byte list entry per
/// working bucket and two ordered-index entries per vacant bucket. Weights are not supported;
/// every bucket has the same share.
#[derive(Debug, Clone, Default)]
pub struct Memento {
    /// The node hash of each bucket: its node if it works, the node that held it last if not.
    nodes: Vec<u64>,
    /// Whether each bucket is vacant, one bit per bucket (bit `b % 64` of word `b / 64`): 8 KB
    /// for 65,536 buckets, so the draws of a lookup read the first level of cache.
    vacant: Vec<u64>,
    /// The working buckets, lowest first: what the fallback scores.
    working: Vec<u32>,
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
            engine.push(hash);
            if vacant {
                engine.mark_vacant(bucket);
            } else {
                engine.working.push(bucket);
            }
        }
        engine
    }

    /// The number of buckets, working or vacant.
    pub(crate) fn bucket_count(&self) -> usize {
        self.nodes.len()
    }

    #[inline]
    fn is_vacant(&self, bucket: usize) -> bool {
        self.vacant[bucket / 64] >> (bucket % 64) & 1 == 1
    }

    fn set_vacant(&mut self, bucket: usize, vacant: bool) {
        let bit = 1 << (bucket % 64);
        if vacant {
            self.vacant[bucket / 64] |= bit;
        } else {
            self.vacant[bucket / 64] &= !bit;
        }
    }

    /// Appends a bucket held by `node_hash`, working until marked vacant.
    fn push(&mut self, node_hash: u64) {
        self.nodes.push(node_hash);
        self.vacant.resize(self.nodes.len().div_ceil(64), 0);
    }

    /// Makes a working bucket vacant, remembering its node.
    fn vacate(&mut self, bucket: u32) {
        if let Ok(at) = self.working.binary_search(&bucket) {
            self.working.remove(at);
        }
        self.mark_vacant(bucket);
    }

    fn mark_vacant(&mut self, bucket: u32) {
        self.set_vacant(bucket as usize, true);
        self.vacancies.insert(bucket);
        self.former.insert(self.nodes[bucket as usize], bucket);
    }

    fn restore(&mut self, bucket: u32, node_hash: u64) {
        let previous = self.nodes[bucket as usize];
        if self.former.get(&previous) == Some(&bucket) {
            self.former.remove(&previous);
        }
        self.vacancies.remove(&bucket);
        self.set_vacant(bucket as usize, false);
        self.nodes[bucket as usize] = node_hash;
        if let Err(at) = self.working.binary_search(&bucket) {
            self.working.insert(at, bucket);
        }
    }

    #[inline]
    fn bucket(&self, key_hash: u64) -> Option<usize> {
        self.locate(key_hash, || {})
    }

    /// The key's bucket; `hashed` is called once per draw and once per fallback score, so that
    /// a test can count the work of a lookup.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // buckets are below nodes.len() <= MAX_NODES
    fn locate(&self, key_hash: u64, mut hashed: impl FnMut()) -> Option<usize> {
        if self.working.is_empty() {
            return None;
        }
        let buckets = self.nodes.len() as u64;
        hashed();
        let draw = flip_hash(key_hash, buckets) as usize;
        if !self.is_vacant(draw) {
            return Some(draw);
        }
        for salt in &DRAW_SALTS[1..] {
            hashed();
            let draw = reduce(fmix64(key_hash ^ salt), buckets) as usize;
            if !self.is_vacant(draw) {
                return Some(draw);
            }
        }
        for i in MIN_DRAWS..draws(buckets) {
            hashed();
            let draw = reduce(mix(key_hash, i), buckets) as usize;
            if !self.is_vacant(draw) {
                return Some(draw);
            }
        }
        let seed = mix(key_hash, FALLBACK_SALT);
        self.working
            .iter()
            .max_by_key(|&&bucket| {
                hashed();
                (mix(seed, u64::from(bucket)), bucket)
            })
            .map(|&bucket| bucket as usize)
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
        #[allow(clippy::cast_possible_truncation)] // below MAX_NODES
        self.working.push(self.nodes.len() as u32);
        self.push(node_hash);
        Ok(self.nodes.len() - 1)
    }

    #[allow(clippy::cast_possible_truncation)] // buckets are below MAX_NODES
    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        if slot >= self.nodes.len() || self.is_vacant(slot) {
            return None;
        }
        self.vacate(slot as u32);
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
            |bucket| !self.is_vacant(bucket),
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

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::hashing::key_hash;

    /// The hashes one lookup computes.
    fn cost(engine: &Memento, key_hash: u64) -> (Option<usize>, u64) {
        let mut hashes = 0;
        let bucket = engine.locate(key_hash, || hashes += 1);
        (bucket, hashes)
    }

    fn layout(buckets: u32, working: impl Fn(u32) -> bool) -> Memento {
        Memento::from_layout((0..buckets).map(|b| (u64::from(b), !working(b))))
    }

    #[test]
    fn one_working_bucket_of_200_000_costs_the_draws_and_one_score() {
        let engine = layout(200_000, |b| b == 123_456);
        assert_eq!(draws(200_000), 447);
        for key in 0..1_000u64 {
            let (bucket, hashes) = cost(&engine, key_hash(&key));
            assert_eq!(bucket, Some(123_456));
            assert!(hashes <= 447 + 1, "key {key}: {hashes} hashes");
        }
    }

    #[test]
    fn a_lookup_costs_at_most_the_draws_plus_one_score_per_working_bucket() {
        // 1 % working: a key falls back with probability 0.99^447 ≈ 1.1 %, and then scores the
        // 2,000 working buckets.
        let engine = layout(200_000, |b| b % 100 == 7);
        let mut fell_back = 0;
        for key in 0..2_000u64 {
            let (bucket, hashes) = cost(&engine, key_hash(&key));
            assert_eq!(bucket.unwrap() % 100, 7);
            assert!(hashes <= 447 + 2_000, "key {key}: {hashes} hashes");
            fell_back += u64::from(hashes > 447);
        }
        // About 22 of 2,000 (σ ≈ 4.7).
        assert!(
            (5..45).contains(&fell_back),
            "{fell_back} of 2,000 keys fell back"
        );
    }

    #[test]
    fn with_nothing_vacant_a_lookup_is_one_draw() {
        let engine = layout(1_000, |_| true);
        for key in 0..1_000u64 {
            assert_eq!(cost(&engine, key_hash(&key)).1, 1);
        }
    }
}
