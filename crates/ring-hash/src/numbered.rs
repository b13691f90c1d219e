//! Numbered buckets: Jump consistent hash and FlipHash, as functions and as engines.

use std::marker::PhantomData;

use crate::Error;
use crate::engine::{Disruption, Engine, MAX_NODES, Relocation, salted_candidates};
use crate::hashing::{fmix64, mix};

/// Jump consistent hash (Lamping & Veach 2014): the bucket in `0..buckets` for `key`.
///
/// This is the paper's algorithm with its step computed in exact integer arithmetic,
/// `j = floor((b + 1) · 2^31 / ((key >> 33) + 1))`, where the paper's reference code uses a
/// double-precision division. The two agree except when the exact quotient lies within rounding
/// distance of an integer, so reproduce placements with this formula, not the float one.
/// Returns 0 when `buckets` is 0.
///
/// ```
/// use infra_ring_hash::jump_hash;
///
/// let before = jump_hash(42, 10);
/// let after = jump_hash(42, 11);
/// assert!(after == before || after == 10); // a key only ever moves to the new bucket
/// ```
#[inline]
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = u64::from(buckets);
    let mut bucket = 0u64;
    let mut next = 0u64;
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) << 31) / ((key >> 33) + 1);
    }
    #[allow(clippy::cast_possible_truncation)] // bucket < buckets <= u32::MAX
    let bucket = bucket as u32;
    bucket
}

/// The salt of FlipHash's `i`-th draw for range `2^r`, distinct from the power-of-two salts
/// `0..=64`.
#[inline]
const fn flip_salt(r: u32, i: u64) -> u64 {
    (1 << 16) | ((r as u64) << 8) | i
}

/// FlipHash onto a power-of-two range: a bucket in `0..2^r`, `r <= 63`.
#[inline]
fn flip_pow2(key: u64, r: u32) -> u64 {
    let a = fmix64(key) & ((1u64 << r) - 1);
    if a == 0 {
        return 0;
    }
    let b = 63 - a.leading_zeros();
    (1u64 << b) | (mix(key, u64::from(b) + 1) & ((1u64 << b) - 1))
}

/// Most draws FlipHash makes before falling back to the lower half; each draw lands in range
/// with probability above 1/2, so the fallback happens for fewer than one key in 2^64.
const FLIP_DRAWS: u64 = 64;

/// FlipHash (Masson & Lee 2024): a consistent range hash onto `0..buckets` in expected constant
/// time, whatever the number of buckets.
///
/// For `2^(r-1) < buckets <= 2^r`, the power-of-two hash `d = flip_pow2(key, r)` is kept when it
/// is a bucket. Otherwise the key draws `c_i = mix(key, flip_salt(r, i)) mod 2^r`: the first draw
/// below `buckets` decides — the lower half `c_i < 2^(r-1)` means `flip_pow2(key, r - 1)`, the
/// upper half means `c_i` itself. `flip_pow2(key, r)` takes `a = fmix64(key) mod 2^r` and, when
/// `a != 0`, returns `2^b + (mix(key, b + 1) mod 2^b)` with `b = floor(log2 a)`.
///
/// Consistency (a key only ever moves to the new bucket when `buckets` grows by one) follows
/// because every step only asks "is this value below `buckets`?". Returns 0 when `buckets` is 0.
/// Above 2^63 buckets every key goes to one of the lowest 2^63 (the engines hold at most 2^24).
///
/// ```
/// use infra_ring_hash::flip_hash;
///
/// for key in 0..1000u64 {
///     let before = flip_hash(key, 1000);
///     let after = flip_hash(key, 1001);
///     assert!(after == before || after == 1000);
/// }
/// ```
#[inline]
pub fn flip_hash(key: u64, buckets: u64) -> u64 {
    if buckets <= 1 {
        return 0;
    }
    let r = 64 - (buckets - 1).leading_zeros(); // 2^(r-1) < buckets <= 2^r
    if r == 64 {
        // Beyond 2^63 buckets, fall back to the power-of-two hash of the lower half.
        return flip_pow2(key, 63);
    }
    let d = flip_pow2(key, r);
    if d < buckets {
        return d;
    }
    let half = 1u64 << (r - 1);
    let mask = (1u64 << r) - 1;
    for i in 0..FLIP_DRAWS {
        let c = mix(key, flip_salt(r, i)) & mask;
        if c < half {
            return flip_pow2(key, r - 1);
        }
        if c < buckets {
            return c;
        }
    }
    flip_pow2(key, r - 1)
}

/// A consistent hash onto numbered buckets `0..n`, the building block of [`NumberedBuckets`].
pub trait RangeHash: Clone + Copy + std::fmt::Debug + Default + Send + Sync + 'static {
    /// The engine's name.
    const NAME: &'static str;

    /// The bucket of `key` among `buckets` (`buckets >= 1`).
    fn bucket(key: u64, buckets: u32) -> u32;
}

/// [`jump_hash`] as a [`RangeHash`].
#[derive(Debug, Clone, Copy, Default)]
pub struct JumpHash;

impl RangeHash for JumpHash {
    const NAME: &'static str = "jump";

    #[inline]
    fn bucket(key: u64, buckets: u32) -> u32 {
        jump_hash(key, buckets)
    }
}

/// [`flip_hash`] as a [`RangeHash`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FlipHash;

impl RangeHash for FlipHash {
    const NAME: &'static str = "fliphash";

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // the result is below `buckets`
    fn bucket(key: u64, buckets: u32) -> u32 {
        flip_hash(key, u64::from(buckets)) as u32
    }
}

/// An engine over numbered buckets: node `i` (in the order nodes were added) is bucket `i`.
///
/// Adding a node appends bucket `n` and moves only keys onto it. Removing the last bucket moves
/// only its keys; removing any other bucket moves the last node into the hole (a
/// [`Relocation`]), so that node's keys move too: about `2/n` of the keys instead of `1/n`.
/// This is [`Disruption::MinimalAtTheEnd`]; use [`crate::Memento`] when arbitrary nodes fail.
/// Weights are not supported (every bucket has the same share).
#[derive(Debug, Clone, Default)]
pub struct NumberedBuckets<H: RangeHash> {
    nodes: Vec<u64>,
    hash: PhantomData<H>,
}

/// Jump consistent hash as an engine.
pub type Jump = NumberedBuckets<JumpHash>;

/// FlipHash as an engine.
pub type Flip = NumberedBuckets<FlipHash>;

impl<H: RangeHash> NumberedBuckets<H> {
    /// An engine with no bucket.
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            hash: PhantomData,
        }
    }

    #[allow(clippy::cast_possible_truncation)] // add() keeps the count within u32
    fn count(&self) -> u32 {
        self.nodes.len() as u32
    }
}

impl<H: RangeHash> Engine for NumberedBuckets<H> {
    fn name(&self) -> &'static str {
        H::NAME
    }

    fn disruption(&self) -> Disruption {
        Disruption::MinimalAtTheEnd
    }

    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        if weight != 1 {
            return Err(Error::WeightNotSupported {
                engine: H::NAME,
                weight,
            });
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(Error::TooManyNodes { engine: H::NAME });
        }
        self.nodes.push(node_hash);
        Ok(self.nodes.len() - 1)
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        let last = self.nodes.len().checked_sub(1)?;
        self.nodes.swap_remove(slot);
        (slot != last).then_some(Relocation {
            from: last,
            to: slot,
        })
    }

    fn set_weight(&mut self, _slot: usize, weight: u32) -> Result<(), Error> {
        if weight == 1 {
            Ok(())
        } else {
            Err(Error::WeightNotSupported {
                engine: H::NAME,
                weight,
            })
        }
    }

    fn rebuild(&mut self) {}

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        let count = self.count();
        (count > 0).then(|| H::bucket(key_hash, count) as usize)
    }

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        salted_candidates(
            key_hash,
            self.nodes.len(),
            |hash| self.lookup(hash),
            |_| true,
        )
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    /// The paper's reference code, with its double-precision step.
    fn float_jump(mut key: u64, buckets: u32) -> u32 {
        let (mut b, mut j) = (-1i64, 0i64);
        while j < i64::from(buckets) {
            b = j;
            key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
        b as u32
    }

    #[test]
    fn integer_jump_agrees_with_the_float_reference() {
        let mut differing = 0;
        for i in 0..200_000u64 {
            let key = fmix64(i);
            let buckets = (i % 5000) as u32 + 1;
            if jump_hash(key, buckets) != float_jump(key, buckets) {
                differing += 1;
            }
        }
        // Only keys whose exact step lands within rounding distance of an integer may differ.
        assert!(differing <= 2, "{differing} keys differ");
    }

    #[test]
    fn numbered_engines_fill_holes_with_the_last_bucket() {
        let mut jump = Jump::new();
        for hash in 0..4 {
            jump.add(hash, 1).unwrap();
        }
        assert_eq!(jump.remove(1), Some(Relocation { from: 3, to: 1 }));
        assert_eq!(jump.remove(2), None);
        assert_eq!(jump.nodes, [0, 3]);
        assert!(jump.set_weight(0, 2).is_err());
    }

    #[test]
    fn flip_hash_above_two_to_the_63_buckets_uses_the_lowest_two_to_the_63() {
        for key in 0..10_000u64 {
            for buckets in [(1 << 63) + 1, u64::MAX] {
                assert!(flip_hash(fmix64(key), buckets) < 1 << 63, "{key}");
            }
        }
    }

    #[test]
    fn flip_hash_spreads_keys_evenly() {
        // Powers of two, and counts between them, where FlipHash re-draws keys that land
        // beyond the range.
        for buckets in [3u64, 100, 128, 1000, 1500] {
            let per_bucket = 1000u64;
            let mut counts = vec![0u64; buckets as usize];
            for key in 0..per_bucket * buckets {
                counts[flip_hash(fmix64(key), buckets) as usize] += 1;
            }
            // Five binomial standard deviations: about one bucket in two million outside.
            let p = 1.0 / buckets as f64;
            let sigma = (per_bucket as f64 * buckets as f64 * p * (1.0 - p)).sqrt();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                (*min as f64) > per_bucket as f64 - 5.0 * sigma
                    && (*max as f64) < per_bucket as f64 + 5.0 * sigma,
                "{buckets} buckets: min {min} max {max}"
            );
        }
    }
}
