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
//! by their elements. Those bytes are std's choice, which std does not promise to keep across
//! compiler releases: for anything that must stay put (placements), use [`StableHash`].
//!
//! # Stable encodings: [`StableHash`]
//!
//! std's [`Hash`] impls are free to change what they write between compiler releases (today
//! `str` appends a `0xFF` byte and slices prefix their length), so a value hashed through
//! [`StableHasher::hash_one`] is only as stable as std's choice. [`StableHash`] fixes the bytes
//! ourselves; `value.stable_hash()` is [`stable_hash`] of the value's **encoding**:
//!
//! | type | encoding |
//! | --- | --- |
//! | `str`, `String` | its UTF-8 bytes, nothing else |
//! | `[u8]`, `Vec<u8>` | its bytes, nothing else |
//! | `u8`, `u16`, `u32`, `u64`, `u128` and `i8` to `i128` | its little-endian bytes (1 to 16) |
//! | `usize`, `isize` | as `u64`, `i64`: 8 little-endian bytes on every platform |
//! | `&T` | the encoding of `T` |
//! | `Ipv4Addr`, `Ipv6Addr` | its 4 or 16 octets, in network order |
//! | `IpAddr` | `0x04` then the 4 octets, or `0x06` then the 16 octets |
//! | `SocketAddrV4`, `SocketAddrV6` | the address's octets, then the port (2 bytes, little-endian); an IPv6 flow label and scope id are not part of it |
//! | `SocketAddr` | `0x04` or `0x06`, then the encoding of the `SocketAddrV4` or `SocketAddrV6` |
//! | tuples `(A,)` to `(A, B, C, D, E, F)` | the **field** encodings of the elements, in order |
//! | arrays `[T; N]` | the **field** encodings of the `N` elements, in order (no length) |
//!
//! A value's field encoding, used inside tuples and arrays, is its encoding for every type of
//! fixed size, and for `str`/`String`/`[u8]`/`Vec<u8>` its length as 8 little-endian bytes
//! followed by its bytes, so that `("ab", "c")` and `("a", "bc")` differ. Consequences worth
//! knowing: `"k"`, `b"k"` (a `[u8; 1]`), `b"k".to_vec()` and `String::from("k")` all hash
//! alike; `7u32` (4 bytes) and `7u64` (8 bytes) do not; `("ab", 1u8)` encodes as
//! `02 00 00 00 00 00 00 00 61 62 01`. The encodings are pinned by known-answer tests.
//!
//! ```
//! use infra_common::hash::{StableHash, stable_hash};
//!
//! assert_eq!("user:42".stable_hash(), stable_hash(b"user:42"));
//! assert_eq!(b"user:42".stable_hash(), "user:42".stable_hash());
//! assert_eq!(0x0102u16.stable_hash(), stable_hash(&[0x02, 0x01]));
//! assert_eq!(
//!     ("ab", 1u8).stable_hash(),
//!     stable_hash(&[2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', 1])
//! );
//! ```
//!
//! Do not use the stable hash for maps keyed by untrusted input: its seed is public, so an
//! attacker can precompute colliding keys.
//!
//! # The flooding-resistant hash
//!
//! [`RandomState`] builds hashers keyed from a secret the process draws once from the operating
//! system's randomness (AHash's `runtime-rng`), varied per instance, so colliding keys cannot be
//! precomputed. Use it for every map or sharded map whose keys come
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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

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

/// A value with a byte encoding we define, hashed with [`stable_hash`]: the same in every
/// process, on every platform, with every compiler release.
///
/// The encodings of the implementing types are listed in the [module docs](self). To make your
/// own type a key or node of a placement, write its fields as a tuple would, which keeps the
/// encoding unambiguous:
///
/// ```
/// use infra_common::hash::{StableHash, StableHasher};
///
/// struct Endpoint {
///     host: String,
///     port: u16,
/// }
///
/// impl StableHash for Endpoint {
///     fn write_stable(&self, hasher: &mut StableHasher) {
///         (self.host.as_str(), self.port).write_stable(hasher);
///     }
/// }
///
/// let endpoint = Endpoint { host: "10.0.0.1".into(), port: 6379 };
/// assert_eq!(endpoint.stable_hash(), ("10.0.0.1", 6379u16).stable_hash());
/// ```
pub trait StableHash {
    /// Writes the value's encoding: the bytes [`StableHash::stable_hash`] hashes.
    fn write_stable(&self, hasher: &mut StableHasher);

    /// Writes the value as one element of a tuple or array. This must be self-delimiting (no
    /// encoding of the type is a prefix of another): the default, the plain encoding, is right
    /// for every type whose encoding has a fixed length or is itself made of fields; types of
    /// variable length (such as `str`) write their length first.
    #[inline]
    fn write_stable_field(&self, hasher: &mut StableHasher) {
        self.write_stable(hasher);
    }

    /// [`stable_hash`] of the value's encoding. Byte strings and integers override it with a
    /// one-shot hash of their bytes, which gives the same value faster.
    #[inline]
    fn stable_hash(&self) -> u64 {
        let mut hasher = StableHasher::new();
        self.write_stable(&mut hasher);
        hasher.finish()
    }
}

/// Writes a length as 8 little-endian bytes, the prefix of variable-length fields.
#[inline]
fn write_length(hasher: &mut StableHasher, len: usize) {
    hasher.write(&(len as u64).to_le_bytes());
}

impl StableHash for [u8] {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        hasher.write(self);
    }

    #[inline]
    fn write_stable_field(&self, hasher: &mut StableHasher) {
        write_length(hasher, self.len());
        hasher.write(self);
    }

    #[inline]
    fn stable_hash(&self) -> u64 {
        stable_hash(self)
    }
}

impl StableHash for str {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        self.as_bytes().write_stable(hasher);
    }

    #[inline]
    fn write_stable_field(&self, hasher: &mut StableHasher) {
        self.as_bytes().write_stable_field(hasher);
    }

    #[inline]
    fn stable_hash(&self) -> u64 {
        stable_hash(self.as_bytes())
    }
}

/// Forwards every method to the `Target` an owning or borrowing type derefs to.
macro_rules! forward_stable_hash {
    ($(impl$([$($generics:tt)*])? for $outer:ty => $inner:ty;)*) => {$(
        impl$(<$($generics)*>)? StableHash for $outer {
            #[inline]
            fn write_stable(&self, hasher: &mut StableHasher) {
                <$inner as StableHash>::write_stable(self, hasher);
            }

            #[inline]
            fn write_stable_field(&self, hasher: &mut StableHasher) {
                <$inner as StableHash>::write_stable_field(self, hasher);
            }

            #[inline]
            fn stable_hash(&self) -> u64 {
                <$inner as StableHash>::stable_hash(self)
            }
        }
    )*};
}

forward_stable_hash! {
    impl for String => str;
    impl for Vec<u8> => [u8];
    impl[T: StableHash + ?Sized] for &T => T;
}

/// Integers: their little-endian bytes, hashed in one shot.
macro_rules! stable_hash_integers {
    ($($int:ty),*) => {$(
        impl StableHash for $int {
            #[inline]
            fn write_stable(&self, hasher: &mut StableHasher) {
                hasher.write(&self.to_le_bytes());
            }

            #[inline]
            fn stable_hash(&self) -> u64 {
                stable_hash(&self.to_le_bytes())
            }
        }
    )*};
}

stable_hash_integers!(u8, u16, u32, u128, i8, i16, i32, i128);

impl StableHash for u64 {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        hasher.write(&self.to_le_bytes());
    }

    #[inline]
    fn stable_hash(&self) -> u64 {
        stable_hash_u64(*self)
    }
}

impl StableHash for i64 {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        hasher.write(&self.to_le_bytes());
    }

    #[inline]
    #[allow(clippy::cast_sign_loss)] // the same 8 bytes, reinterpreted
    fn stable_hash(&self) -> u64 {
        stable_hash_u64(*self as u64)
    }
}

impl StableHash for usize {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        (*self as u64).write_stable(hasher);
    }

    #[inline]
    fn stable_hash(&self) -> u64 {
        stable_hash_u64(*self as u64)
    }
}

impl StableHash for isize {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        (*self as i64).write_stable(hasher);
    }

    #[inline]
    fn stable_hash(&self) -> u64 {
        (*self as i64).stable_hash()
    }
}

impl StableHash for Ipv4Addr {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        hasher.write(&self.octets());
    }
}

impl StableHash for Ipv6Addr {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        hasher.write(&self.octets());
    }
}

impl StableHash for IpAddr {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        match self {
            Self::V4(ip) => (4u8, ip).write_stable(hasher),
            Self::V6(ip) => (6u8, ip).write_stable(hasher),
        }
    }
}

impl StableHash for SocketAddrV4 {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        (self.ip(), self.port()).write_stable(hasher);
    }
}

impl StableHash for SocketAddrV6 {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        (self.ip(), self.port()).write_stable(hasher);
    }
}

impl StableHash for SocketAddr {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        match self {
            Self::V4(addr) => (4u8, addr).write_stable(hasher),
            Self::V6(addr) => (6u8, addr).write_stable(hasher),
        }
    }
}

/// Tuples: the field encodings of their elements, in order.
macro_rules! stable_hash_tuples {
    ($(($($name:ident),+))*) => {$(
        impl<$($name: StableHash),+> StableHash for ($($name,)+) {
            #[inline]
            #[allow(non_snake_case)] // the bindings reuse the type parameters' names
            fn write_stable(&self, hasher: &mut StableHasher) {
                let ($($name,)+) = self;
                $($name.write_stable_field(hasher);)+
            }
        }
    )*};
}

stable_hash_tuples! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
}

impl<T: StableHash, const N: usize> StableHash for [T; N] {
    #[inline]
    fn write_stable(&self, hasher: &mut StableHasher) {
        for element in self {
            element.write_stable_field(hasher);
        }
    }
}

/// Builds flooding-resistant hashers keyed with per-instance random keys.
///
/// The first `RandomState::new()` of a process draws a secret from the operating system's
/// randomness (AHash's `runtime-rng`); every instance derives its keys from that secret and a
/// process-wide counter, so hash values differ between instances and processes and cannot be
/// precomputed by whoever chooses the keys. Clones share keys, as a map and its shards must.
#[derive(Clone)]
pub struct RandomState {
    inner: ahash::RandomState,
}

impl RandomState {
    /// A builder with keys of its own, derived from the process's random secret.
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
        // Two states colliding on 64 bits for several keys would mean their keys are not
        // distinct at all.
        let differing = (0..8u64).filter(|k| a.hash_one(k) != b.hash_one(k)).count();
        assert!(
            differing >= 7,
            "only {differing} of 8 keys hashed differently"
        );
        assert_eq!(format!("{a:?}"), "RandomState { .. }");
    }

    /// Asserts that `value` encodes as exactly `bytes`, through both the streamed
    /// (`write_stable`) and the one-shot (`stable_hash`) paths.
    fn assert_encodes<T: StableHash + ?Sized>(value: &T, bytes: &[u8]) {
        let mut hasher = StableHasher::new();
        value.write_stable(&mut hasher);
        assert_eq!(hasher.finish(), stable_hash(bytes), "streamed encoding");
        assert_eq!(value.stable_hash(), stable_hash(bytes), "one-shot hash");
    }

    #[test]
    fn byte_strings_encode_as_their_bytes_alone() {
        assert_encodes("user:42", b"user:42");
        assert_encodes(&String::from("user:42"), b"user:42");
        assert_encodes(&b"user:42"[..], b"user:42");
        assert_encodes(&b"user:42".to_vec(), b"user:42");
        assert_encodes(b"user:42", b"user:42");
        assert_encodes("", b"");
        assert_encodes(&&&"k", b"k");
        // The pinned value: the crate's known answer for "user:42".
        assert_eq!("user:42".stable_hash(), 0xc5f3_34dc_1957_cddc);
    }

    #[test]
    fn integers_encode_little_endian_at_their_width() {
        assert_encodes(&0x01u8, &[1]);
        assert_encodes(&0x0102u16, &[2, 1]);
        assert_encodes(&0x0102_0304u32, &[4, 3, 2, 1]);
        assert_encodes(&0x0102_0304_0506_0708u64, &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_encodes(&1u128, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_encodes(&-1i8, &[0xff]);
        assert_encodes(&-2i16, &[0xfe, 0xff]);
        assert_encodes(&-1i32, &[0xff; 4]);
        assert_encodes(&-1i64, &[0xff; 8]);
        assert_encodes(&-1i128, &[0xff; 16]);
        assert_encodes(&7usize, &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_encodes(&-1isize, &[0xff; 8]);
    }

    #[test]
    fn tuples_and_arrays_length_prefix_their_byte_string_fields() {
        assert_encodes(&("ab", 1u8), &[2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b', 1]);
        assert_encodes(&(1u16,), &[1, 0]);
        assert_encodes(
            &(
                "a",
                String::from("bc"),
                b"d".to_vec(),
                &b"e"[..],
                2u32,
                -1i8,
            ),
            &[
                1, 0, 0, 0, 0, 0, 0, 0, b'a', //
                2, 0, 0, 0, 0, 0, 0, 0, b'b', b'c', //
                1, 0, 0, 0, 0, 0, 0, 0, b'd', //
                1, 0, 0, 0, 0, 0, 0, 0, b'e', //
                2, 0, 0, 0, 0xff,
            ],
        );
        assert_encodes(&[1u16, 2], &[1, 0, 2, 0]);
        assert_encodes(
            &["a", "bc"],
            &[
                1, 0, 0, 0, 0, 0, 0, 0, b'a', 2, 0, 0, 0, 0, 0, 0, 0, b'b', b'c',
            ],
        );
        assert_encodes(
            &((1u8, "x"), [3u8; 2]),
            &[1, 1, 0, 0, 0, 0, 0, 0, 0, b'x', 3, 3],
        );
        assert_ne!(("ab", "c").stable_hash(), ("a", "bc").stable_hash());
    }

    #[test]
    fn addresses_encode_their_octets_and_port() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

        let v4 = Ipv4Addr::new(10, 0, 0, 1);
        assert_encodes(&v4, &[10, 0, 0, 1]);
        assert_encodes(&IpAddr::V4(v4), &[4, 10, 0, 0, 1]);
        let mut v6_bytes = [0u8; 16];
        v6_bytes[15] = 1;
        assert_encodes(&Ipv6Addr::LOCALHOST, &v6_bytes);
        let mut tagged = vec![6];
        tagged.extend_from_slice(&v6_bytes);
        assert_encodes(&IpAddr::V6(Ipv6Addr::LOCALHOST), &tagged);
        let socket: SocketAddr = "10.0.0.1:11211".parse().unwrap();
        assert_encodes(&socket, &[4, 10, 0, 0, 1, 0xcb, 0x2b]); // 11211 = 0x2bcb
        // Flow label and scope id are not hashed; the address and port are.
        let with_flow = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 80, 7, 3);
        let plain = SocketAddrV6::new(Ipv6Addr::LOCALHOST, 80, 0, 0);
        assert_eq!(with_flow.stable_hash(), plain.stable_hash());
        let mut expected = v6_bytes.to_vec();
        expected.extend_from_slice(&[80, 0]);
        assert_encodes(&plain, &expected);
    }

    proptest! {
        #[test]
        fn byte_string_hashes_match_the_hash_of_their_bytes(text in ".{0,300}") {
            prop_assert_eq!(text.stable_hash(), stable_hash(text.as_bytes()));
            let mut hasher = StableHasher::new();
            text.write_stable(&mut hasher);
            prop_assert_eq!(hasher.finish(), stable_hash(text.as_bytes()));
        }

        #[test]
        fn integer_hashes_match_the_hash_of_their_bytes(n in any::<u64>(), m in any::<i32>()) {
            prop_assert_eq!(n.stable_hash(), stable_hash(&n.to_le_bytes()));
            prop_assert_eq!(m.stable_hash(), stable_hash(&m.to_le_bytes()));
            let mut hasher = StableHasher::new();
            (n, m).write_stable(&mut hasher);
            let mut both = n.to_le_bytes().to_vec();
            both.extend_from_slice(&m.to_le_bytes());
            prop_assert_eq!(hasher.finish(), stable_hash(&both));
        }
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
