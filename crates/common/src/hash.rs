//! Hashing: one stable function for placement, one random one for in-process maps.
//!
//! # The stable hash
//!
//! [`stable_hash`] is **XXH3-64 with seed [`STABLE_SEED`]** (`0x696e_6672_6131_7631`, the ASCII
//! bytes of `"infra1v1"` read as a big-endian integer), as specified by the xxHash project
//! (`XXH3_64bits_withSeed`). The value is part of our compatibility promise: it is the same in
//! every process, on every platform and in every release, and pinned by known-answer tests. Any
//! other language reproduces it with its xxHash binding, for example in Python:
//!
//! ```text
//! import xxhash
//! xxhash.xxh3_64_intdigest(b"user:42", seed=0x696e667261317631)
//! ```
//!
//! Integers are hashed as their little-endian bytes: [`stable_hash_u64`]`(n)` is
//! `stable_hash(&n.to_le_bytes())`.
//!
//! [`StableHasher`] is the same function behind [`std::hash::Hasher`], for types that
//! implement [`Hash`]. It hashes the concatenation of everything written to it, with every
//! integer written as little-endian bytes and `usize`/`isize` widened to 8 bytes, so the result
//! does not depend on the platform. What a type writes is up to its `Hash` impl: integers write
//! exactly their bytes, `str` and `String` write their UTF-8 bytes followed by one `0xFF` byte,
//! and slices such as `[u8]` and `Vec<u8>` write their length (8 bytes, little-endian) followed
//! by their elements. For cross-language placement of byte strings, hash them with
//! [`stable_hash`] directly.
//!
//! Do not use the stable hash for maps keyed by untrusted input: its seed is public, so an
//! attacker can precompute colliding keys.
//!
//! # The flooding-resistant hash
//!
//! [`RandomState`] builds hashers keyed with fresh random keys (AHash with runtime randomness),
//! so colliding keys cannot be precomputed. Use it for every map or sharded map whose keys come
//! from users (IP addresses, API keys, user ids).
//!
//! ```
//! use infra_common::hash::{RandomState, stable_hash, stable_hash_u64};
//! use std::collections::HashMap;
//!
//! assert_eq!(stable_hash(b"user:42"), 0xc5f3_34dc_1957_cddc);
//! assert_eq!(stable_hash_u64(42), stable_hash(&42u64.to_le_bytes()));
//!
//! let mut per_client: HashMap<String, u32, RandomState> = HashMap::default();
//! *per_client.entry("203.0.113.9".into()).or_default() += 1;
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// The seed of the stable hash: the ASCII bytes of `"infra1v1"` as a big-endian integer.
pub const STABLE_SEED: u64 = 0x696e_6672_6131_7631;

/// Hashes `bytes` with XXH3-64 and [`STABLE_SEED`]: the same value everywhere, forever.
#[inline]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, STABLE_SEED)
}

/// Hashes an integer as its 8 little-endian bytes; equal to `stable_hash(&value.to_le_bytes())`.
#[inline]
pub fn stable_hash_u64(value: u64) -> u64 {
    stable_hash(&value.to_le_bytes())
}

/// Bytes held inline before the hasher switches to XXH3's streaming state. Keys are usually
/// short, and the one-shot function is several times faster than streaming on them.
const INLINE_CAPACITY: usize = 64;

/// [`stable_hash`] as a [`Hasher`]: the stable hash of everything written to it.
///
/// Writing `a` then `b` gives `stable_hash(a ++ b)`, however the bytes were split between
/// calls. Integers are written little-endian, `usize` and `isize` as 8 bytes.
///
/// ```
/// use infra_common::hash::{StableHasher, stable_hash};
/// use std::hash::Hasher;
///
/// let mut hasher = StableHasher::new();
/// hasher.write(b"user:");
/// hasher.write(b"42");
/// assert_eq!(hasher.finish(), stable_hash(b"user:42"));
/// ```
#[derive(Clone)]
pub struct StableHasher {
    inline: [u8; INLINE_CAPACITY],
    inline_len: usize,
    /// Set once more than `INLINE_CAPACITY` bytes were written; then `inline` is unused.
    streaming: Option<Box<Xxh3>>,
}

impl StableHasher {
    /// A hasher that has seen no bytes.
    #[inline]
    pub fn new() -> Self {
        Self {
            inline: [0; INLINE_CAPACITY],
            inline_len: 0,
            streaming: None,
        }
    }

    /// Hashes `value` through its [`Hash`](std::hash::Hash) impl.
    #[inline]
    pub fn hash_one<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
        let mut hasher = Self::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    /// Hands everything over to XXH3's streaming state once the inline buffer is outgrown.
    #[cold]
    #[inline(never)]
    fn write_streaming(&mut self, bytes: &[u8]) {
        let stream = self.streaming.get_or_insert_with(|| {
            let mut stream = Box::new(Xxh3::with_seed(STABLE_SEED));
            stream.update(&self.inline[..self.inline_len]);
            stream
        });
        stream.update(bytes);
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let end = self.inline_len + bytes.len();
        if self.streaming.is_none() && end <= INLINE_CAPACITY {
            self.inline[self.inline_len..end].copy_from_slice(bytes);
            self.inline_len = end;
        } else {
            self.write_streaming(bytes);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        match &self.streaming {
            Some(stream) => stream.digest(),
            // A lone integer key is the most common input; a constant length lets XXH3's
            // 8-byte path inline (several times faster than dispatching on a variable length).
            None if self.inline_len == 8 => {
                let mut word = [0; 8];
                word.copy_from_slice(&self.inline[..8]);
                stable_hash_u64(u64::from_le_bytes(word))
            }
            None => stable_hash(&self.inline[..self.inline_len]),
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write(&[n]);
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_i8(&mut self, n: i8) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_i16(&mut self, n: i16) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_i32(&mut self, n: i32) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_i64(&mut self, n: i64) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_i128(&mut self, n: i128) {
        self.write(&n.to_le_bytes());
    }

    #[inline]
    fn write_isize(&mut self, n: isize) {
        self.write_i64(n as i64);
    }
}

impl fmt::Debug for StableHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StableHasher")
            .field("streaming", &self.streaming.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds flooding-resistant hashers keyed with per-instance random keys.
///
/// Every `RandomState::new()` draws fresh keys from the operating system's randomness (AHash's
/// `runtime-rng`), so hash values differ between instances and processes and cannot be
/// precomputed by whoever chooses the keys. Clones share keys, as a map and its shards must.
#[derive(Clone)]
pub struct RandomState {
    inner: ahash::RandomState,
}

impl RandomState {
    /// A builder with fresh random keys.
    pub fn new() -> Self {
        Self {
            inner: ahash::RandomState::new(),
        }
    }
}

impl Default for RandomState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for RandomState {
    type Hasher = RandomHasher;

    #[inline]
    fn build_hasher(&self) -> RandomHasher {
        RandomHasher {
            inner: self.inner.build_hasher(),
        }
    }
}

impl fmt::Debug for RandomState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys are the secret that makes flooding infeasible: never print them.
        f.write_str("RandomState { .. }")
    }
}

/// The hasher built by [`RandomState`].
#[derive(Clone)]
pub struct RandomHasher {
    inner: ahash::AHasher,
}

impl Hasher for RandomHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.inner.write(bytes);
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.inner.write_u8(n);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.inner.write_u32(n);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.inner.write_u64(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.inner.write_u128(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.inner.write_usize(n);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.inner.finish()
    }
}

impl fmt::Debug for RandomHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RandomHasher { .. }")
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Known answers computed independently with the reference xxHash implementation; the
    /// file's header describes its rows.
    const KNOWN_ANSWERS: &str = include_str!("../testdata/stable_hash_known_answers.txt");

    fn known_answers() -> Vec<(Vec<u8>, u64)> {
        KNOWN_ANSWERS
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (kind, rest) = line.split_once(' ').expect("row has a kind");
                let (input, expected) = rest.rsplit_once(' ').expect("row has an answer");
                let input = match kind {
                    "text" => input.as_bytes().to_vec(),
                    "pattern" => {
                        let len: usize = input.parse().expect("pattern length");
                        (0..len).map(|i| (31 * i + 7) as u8).collect()
                    }
                    other => panic!("unknown row kind {other}"),
                };
                (
                    input,
                    u64::from_str_radix(expected, 16).expect("hex answer"),
                )
            })
            .collect()
    }

    #[test]
    fn stable_hash_matches_the_reference_implementation() {
        let answers = known_answers();
        assert_eq!(answers.len(), 20);
        for (input, expected) in answers {
            assert_eq!(
                stable_hash(&input),
                expected,
                "stable_hash of {} bytes changed",
                input.len()
            );
            // The streaming path must agree with the one-shot path on every length.
            let mut hasher = StableHasher::new();
            hasher.write(&input);
            assert_eq!(hasher.finish(), expected);
        }
    }

    #[test]
    fn stable_hash_u64_hashes_little_endian_bytes() {
        assert_eq!(
            stable_hash_u64(0x0102_0304_0506_0708),
            stable_hash(&[8, 7, 6, 5, 4, 3, 2, 1])
        );
    }

    #[test]
    fn hasher_integers_are_platform_independent() {
        let mut via_usize = StableHasher::new();
        via_usize.write_usize(7);
        let mut via_u64 = StableHasher::new();
        via_u64.write_u64(7);
        assert_eq!(via_usize.finish(), via_u64.finish());
        assert_eq!(via_u64.finish(), stable_hash(&7u64.to_le_bytes()));
        assert_eq!(StableHasher::hash_one(&-1i32), stable_hash(&[0xff; 4]));
    }

    #[test]
    fn hasher_hashes_slices_after_their_length() {
        let expected = stable_hash(&[2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
        assert_eq!(StableHasher::hash_one(&b"ab"[..]), expected);
        assert_eq!(StableHasher::hash_one(&b"ab".to_vec()), expected);
    }

    #[test]
    fn hasher_hashes_str_with_its_terminator() {
        assert_eq!(StableHasher::hash_one("abc"), stable_hash(b"abc\xff"));
    }

    #[test]
    fn random_states_are_independent_and_clones_agree() {
        let a = RandomState::new();
        let b = RandomState::new();
        let key = "203.0.113.9";
        assert_eq!(a.hash_one(key), a.clone().hash_one(key));
        // Two fresh states colliding on 64 bits for several keys would mean the keys are not
        // random at all.
        let differing = (0..8u64).filter(|k| a.hash_one(k) != b.hash_one(k)).count();
        assert!(
            differing >= 7,
            "only {differing} of 8 keys hashed differently"
        );
        assert_eq!(format!("{a:?}"), "RandomState { .. }");
    }

    proptest! {
        #[test]
        fn hasher_equals_one_shot_however_the_input_is_split(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut hasher = StableHasher::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                hasher.write(&bytes[start..point]);
                start = point;
            }
            prop_assert_eq!(hasher.finish(), stable_hash(&bytes));
        }
    }
}
