//! The hash functions placements are specified with, written out here from their public
//! definitions (MurmurHash3's finalizer, the pair hash and multiply-shift documented in the
//! crate's `hashing` module) so that reference models share no code with the crate.

use infra_common::hash::StableHash;

/// MurmurHash3's `fmix64`, from the MurmurHash3 source's constants.
pub(crate) fn murmur_fmix(mut h: u64) -> u64 {
    h = (h ^ (h >> 33)).wrapping_mul(0xff51afd7ed558ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

/// The documented pair hash: `fmix64(a ^ fmix64(b ^ 0x9e3779b97f4a7c15))`.
pub(crate) fn pair(a: u64, b: u64) -> u64 {
    murmur_fmix(a ^ murmur_fmix(b ^ 0x9e3779b97f4a7c15))
}

/// The documented range reduction: the high 64 bits of `x · n`.
pub(crate) fn scale(x: u64, n: u64) -> u64 {
    let wide = u128::from(x) * u128::from(n);
    (wide >> 64) as u64
}

/// A node's or key's 64-bit hash: infra-common's stable hash of its encoding.
pub(crate) fn hash_of<T: StableHash + ?Sized>(value: &T) -> u64 {
    value.stable_hash()
}

#[test]
fn murmur_fmix_known_answers() {
    assert_eq!(murmur_fmix(0), 0);
    assert_eq!(murmur_fmix(1), 0xb456_bcfc_34c2_cb2c);
}
