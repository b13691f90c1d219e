//! The integer functions every engine is built from, specified exactly so that another language
//! can reproduce placements bit for bit.
//!
//! # Keys and nodes
//!
//! A key or node is turned into 64 bits once, with infra-common's
//! [`StableHash`]: XXH3-64 seeded with [`STABLE_SEED`](infra_common::hash::STABLE_SEED) over
//! an encoding this workspace defines byte for byte (std's `Hash` is not used, since std does not
//! promise its bytes across compiler releases). A `str`, `String`, `[u8]`, `[u8; N]` or `Vec<u8>`
//! is its bytes alone, so the node `"cache-1"` has the hash
//! `XXH3_64bits_withSeed(b"cache-1", 0x696e667261317631)` and `node("k")`, `node(b"k")` agree;
//! integers are their little-endian bytes at their own width (`7u32` is 4 bytes, `7u64` 8);
//! tuples and arrays are listed in [`StableHash`]'s docs. Callers holding a hash already use the
//! `*_for_hash` lookups.
//!
//! The file `vectors/placements.txt` in this crate's source lists memberships, removals, keys and
//! the node every engine picks; the crate's tests check every row, so a change of placement
//! cannot ship unnoticed, and a port to another language can check itself against the same
//! rows (`vectors/reference.py` does, for the key hash and Jump).
//!
//! # Everything after that is integer arithmetic
//!
//! * [`fmix64`] is MurmurHash3's 64-bit finalizer.
//! * [`mix`]`(a, b) = fmix64(a ^ fmix64(b ^ 0x9e37_79b9_7f4a_7c15))`: a hash of the pair, used for
//!   ring points (`mix(node, i)`), rendezvous scores (`mix(key, node)`), Maglev's offset and skip
//!   and every salted re-hash.
//! * [`reduce`]`(x, n) = (x * n) >> 64` in 128-bit arithmetic: maps 64 uniform bits onto
//!   `0..n` without a division (Lemire's multiply-shift).
//!
//! All arithmetic wraps modulo 2^64 (or 2^128 for [`reduce`]). No floating point is used on any
//! lookup path, so results cannot depend on the platform's float rounding.

use infra_common::hash::StableHash;

/// The 64-bit golden-ratio constant used to decorrelate the second argument of [`mix`].
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The stable 64-bit hash of a key or node: [`StableHash::stable_hash`], named for what it is
/// used for here. Byte strings and integers take XXH3's one-shot path, with no streaming state.
///
/// ```
/// use infra_common::hash::stable_hash;
/// use infra_ring_hash::hashing::key_hash;
///
/// // Byte strings hash their bytes alone, whatever their type.
/// assert_eq!(key_hash("user:42"), stable_hash(b"user:42"));
/// assert_eq!(key_hash(b"user:42"), key_hash("user:42"));
/// assert_eq!(key_hash(&b"user:42".to_vec()), key_hash("user:42"));
/// // Integers hash their little-endian bytes.
/// assert_eq!(key_hash(&7u64), stable_hash(&7u64.to_le_bytes()));
/// assert_eq!(key_hash(&7u32), stable_hash(&7u32.to_le_bytes()));
/// ```
#[inline]
pub fn key_hash<K: StableHash + ?Sized>(key: &K) -> u64 {
    key.stable_hash()
}

/// MurmurHash3's 64-bit finalizer: a bijection on `u64` with full avalanche.
#[inline]
pub const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hashes the pair `(a, b)`: `fmix64(a ^ fmix64(b ^ GOLDEN))`.
#[inline]
pub const fn mix(a: u64, b: u64) -> u64 {
    fmix64(a ^ mix_salt(b))
}

/// The half of [`mix`] that depends on `b` alone: `mix(a, b) == fmix64(a ^ mix_salt(b))`, so a
/// caller mixing many `a` with a few fixed `b` can compute it once.
#[inline]
pub(crate) const fn mix_salt(b: u64) -> u64 {
    fmix64(b ^ GOLDEN)
}

/// Maps uniform 64-bit `x` onto `0..n` as `(x * n) >> 64` (128-bit product).
#[inline]
#[allow(clippy::cast_possible_truncation)] // the shifted product is < n, which is a u64
pub const fn reduce(x: u64, n: u64) -> u64 {
    ((x as u128 * n as u128) >> 64) as u64
}

/// Bits of the table index in [`neg_log2`]: 256 intervals of `[1, 2)`.
const LOG_TABLE_BITS: u32 = 8;

/// `log2(1 + i / 256)` in Q32 fixed point for `i` in `0..=256`, computed at compile time with
/// the integer square-and-compare algorithm, so the table is identical on every platform.
static LOG2_TABLE: [u64; 257] = log2_table();

const fn log2_table() -> [u64; 257] {
    let mut table = [0u64; 257];
    let mut i = 0;
    while i <= 256 {
        // The mantissa 1 + i/256 in Q62.
        let mut value: u128 = (1u128 << 62) + ((i as u128) << 54);
        let mut bits: u64 = 0;
        let mut bit = 0;
        while bit < 32 {
            value = (value * value) >> 62;
            bits <<= 1;
            if value >= (2u128 << 62) {
                value >>= 1;
                bits |= 1;
            }
            bit += 1;
        }
        // log2(2) is exactly 1; the loop cannot represent it in 32 fractional bits.
        table[i] = if i == 256 { 1 << 32 } else { bits };
        i += 1;
    }
    table
}

/// `-log2(u)` in Q32 fixed point, where `u = ((x >> 1) + 1) / 2^63` lies in `(0, 1]`.
///
/// The fractional part of the logarithm comes from a 257-entry table with linear interpolation
/// on the next 32 bits; the absolute error is below `3e-6`. Used by weighted rendezvous, whose
/// score is `neg_log2(mix(key, node)) / weight` (smallest wins; between equal quotients, the
/// larger `mix(key, node)`), the integer form of the classic `-ln(u) / w`.
#[inline]
pub fn neg_log2(x: u64) -> u64 {
    let y = (x >> 1) + 1; // in 1..=2^63
    let zeros = y.leading_zeros();
    let whole = u64::from(63 - zeros);
    let mantissa = y << zeros; // top bit set
    let index = ((mantissa >> (63 - LOG_TABLE_BITS)) & 0xff) as usize;
    let rest = (mantissa >> (63 - LOG_TABLE_BITS - 32)) & 0xffff_ffff;
    let low = LOG2_TABLE[index];
    let high = LOG2_TABLE[index + 1];
    let fraction = low + (((high - low) * rest) >> 32);
    (63u64 << 32) - ((whole << 32) + fraction)
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fmix64_matches_the_murmur3_reference() {
        // Known answers of MurmurHash3's fmix64 (the finalizer is a bijection; 0 maps to 0).
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn reduce_stays_in_range_and_is_monotonic() {
        assert_eq!(reduce(0, 10), 0);
        assert_eq!(reduce(u64::MAX, 10), 9);
        assert_eq!(reduce(u64::MAX / 2, 10), 4);
    }

    #[test]
    fn log_table_is_close_to_the_real_logarithm() {
        for (i, &value) in LOG2_TABLE.iter().enumerate() {
            let exact = (1.0 + i as f64 / 256.0).log2();
            let got = value as f64 / 4_294_967_296.0;
            assert!((exact - got).abs() < 1e-8, "entry {i}: {got} vs {exact}");
        }
    }

    #[test]
    fn neg_log2_approximates_minus_log2() {
        for x in [
            0u64,
            1,
            12_345,
            1 << 40,
            u64::MAX / 3,
            u64::MAX - 5,
            u64::MAX,
        ] {
            let u = ((x >> 1) as f64 + 1.0) / 9_223_372_036_854_775_808.0;
            let exact = -u.log2();
            let got = neg_log2(x) as f64 / 4_294_967_296.0;
            assert!((exact - got).abs() < 3e-6, "x={x}: {got} vs {exact}");
        }
        assert_eq!(neg_log2(u64::MAX), 0);
    }
}
