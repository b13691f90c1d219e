//! Trace ids, span ids and trace flags, and the fast random generator behind new ids.
//!
//! Ids are non-zero by construction: an all-zero id is invalid in every format this crate
//! speaks, so the types cannot hold one and `Option<TraceId>` costs no extra space.

use std::cell::Cell;
use std::fmt;
use std::hash::BuildHasher;
use std::num::{NonZeroU64, NonZeroU128};

use infra_common::sync::thread::thread_local;

use crate::Error;

/// A 16-byte trace id, never all zeros. Written as 32 lowercase hex characters.
///
/// ```
/// use infra_trace_ctx::TraceId;
///
/// let id: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse()?;
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!("00000000000000000000000000000000".parse::<TraceId>().is_err());
/// # Ok::<(), infra_trace_ctx::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

/// An 8-byte span (parent) id, never all zeros. Written as 16 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl TraceId {
    /// The id with these big-endian bytes, or `None` if they are all zero.
    pub const fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        Self::from_u128(u128::from_be_bytes(bytes))
    }

    /// The id with this value (the bytes read big-endian), or `None` for zero.
    pub const fn from_u128(value: u128) -> Option<Self> {
        match NonZeroU128::new(value) {
            Some(value) => Some(Self(value)),
            None => None,
        }
    }

    /// The id's 16 bytes, most significant first (the order they are written in hex).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.get().to_be_bytes()
    }

    /// The id as an integer.
    pub const fn to_u128(self) -> u128 {
        self.0.get()
    }

    /// A fresh id from the thread's fast generator: every bit is random, so the id satisfies
    /// the Level 2 requirement that its rightmost 7 bytes be random.
    ///
    /// Not cryptographically secure: ids are identifiers, not secrets.
    #[inline]
    pub fn random() -> Self {
        loop {
            let (high, low) = next_random_pair();
            if let Some(id) = Self::from_u128((u128::from(high) << 64) | u128::from(low)) {
                return id;
            }
        }
    }

    /// The 56 random bits the Level 2 random flag promises: the id's rightmost 7 bytes.
    pub const fn randomness(self) -> u64 {
        // Truncation is the point: keep the low 56 bits.
        #[allow(clippy::cast_possible_truncation)]
        let low = self.0.get() as u64;
        low & ((1 << 56) - 1)
    }

    /// Parses 32 lowercase hex characters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] on a wrong length, a non-hex or uppercase character, or all zeros.
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 {
            return Err(Error::InvalidId("a trace id is 32 hex characters"));
        }
        let value =
            parse_lower_hex_u128(bytes).ok_or(Error::InvalidId("a trace id is lowercase hex"))?;
        Self::from_u128(value).ok_or(Error::InvalidId("an all-zero trace id is invalid"))
    }

    /// Writes the 32 lowercase hex characters into `out`.
    #[inline]
    pub fn write_hex(self, out: &mut [u8; 32]) {
        write_hex(&self.to_bytes(), out);
    }
}

/// A new trace id and span id for a root span, from one load of the thread's generator.
#[inline]
pub(crate) fn random_root_ids() -> (TraceId, SpanId) {
    with_generator(|state| {
        loop {
            let (high, low, span) = (wyrand(state), wyrand(state), wyrand(state));
            let trace = TraceId::from_u128((u128::from(high) << 64) | u128::from(low));
            if let (Some(trace), Some(span)) = (trace, SpanId::from_u64(span)) {
                break (trace, span);
            }
        }
    })
}

impl SpanId {
    /// The id with these big-endian bytes, or `None` if they are all zero.
    pub const fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        Self::from_u64(u64::from_be_bytes(bytes))
    }

    /// The id with this value, or `None` for zero.
    pub const fn from_u64(value: u64) -> Option<Self> {
        match NonZeroU64::new(value) {
            Some(value) => Some(Self(value)),
            None => None,
        }
    }

    /// The id's 8 bytes, most significant first.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }

    /// The id as an integer.
    pub const fn to_u64(self) -> u64 {
        self.0.get()
    }

    /// A fresh random id from the thread's fast generator.
    #[inline]
    pub fn random() -> Self {
        loop {
            if let Some(id) = Self::from_u64(next_random()) {
                return id;
            }
        }
    }

    /// Parses 16 lowercase hex characters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] on a wrong length, a non-hex or uppercase character, or all zeros.
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let bytes = hex.as_bytes();
        if bytes.len() != 16 {
            return Err(Error::InvalidId("a span id is 16 hex characters"));
        }
        let value =
            parse_lower_hex_u128(bytes).ok_or(Error::InvalidId("a span id is lowercase hex"))?;
        // 16 hex characters always fit in 64 bits.
        #[allow(clippy::cast_possible_truncation)]
        Self::from_u64(value as u64).ok_or(Error::InvalidId("an all-zero span id is invalid"))
    }

    /// Writes the 16 lowercase hex characters into `out`.
    #[inline]
    pub fn write_hex(self, out: &mut [u8; 16]) {
        write_hex(&self.to_bytes(), out);
    }
}

impl std::str::FromStr for TraceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_hex(s)
    }
}

impl std::str::FromStr for SpanId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_hex(s)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 32];
        self.write_hex(&mut out);
        f.write_str(ascii(&out))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 16];
        self.write_hex(&mut out);
        f.write_str(ascii(&out))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The `trace-flags` byte of W3C Trace Context Level 2.
///
/// Only the bits this crate understands are kept ([`TraceFlags::SAMPLED`] and
/// [`TraceFlags::RANDOM`]): the spec forbids propagating flags one does not know.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// No flag set: not sampled, no randomness promise.
    pub const NONE: Self = Self(0);
    /// The caller may have recorded this trace.
    pub const SAMPLED: Self = Self(0x01);
    /// Level 2: the rightmost 7 bytes of the trace id are random.
    pub const RANDOM: Self = Self(0x02);
    /// Every bit this crate knows; the others are dropped on the way in.
    pub const KNOWN: u8 = 0x03;

    /// Flags from a received byte, unknown bits cleared.
    pub const fn from_wire(byte: u8) -> Self {
        Self(byte & Self::KNOWN)
    }

    /// The flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether the sampled bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED.0 != 0
    }

    /// Whether the random bit is set.
    pub const fn is_random(self) -> bool {
        self.0 & Self::RANDOM.0 != 0
    }

    /// These flags with the sampled bit set to `sampled`.
    #[must_use]
    pub const fn with_sampled(self, sampled: bool) -> Self {
        if sampled {
            Self(self.0 | Self::SAMPLED.0)
        } else {
            Self(self.0 & !Self::SAMPLED.0)
        }
    }

    /// These flags with the random bit set to `random`.
    #[must_use]
    pub const fn with_random(self, random: bool) -> Self {
        if random {
            Self(self.0 | Self::RANDOM.0)
        } else {
            Self(self.0 & !Self::RANDOM.0)
        }
    }
}

impl std::ops::BitOr for TraceFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TraceFlags({:02x}: sampled={}, random={})",
            self.0,
            self.is_sampled(),
            self.is_random()
        )
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out`, which is twice as long: eight bytes at a time
/// ([`hex_of_eight`]), then four at a time as one word ([`hex_word`]), the rest digit by
/// digit from a table. Inlined, so that each caller's fixed id length unrolls the loops.
#[inline]
pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    let mut eights = bytes.chunks_exact(8);
    let mut sixteens = out.chunks_exact_mut(16);
    for (group, digits) in (&mut eights).zip(&mut sixteens) {
        let group: [u8; 8] = group.try_into().unwrap_or_default();
        digits.copy_from_slice(&hex_of_eight(group));
    }
    let mut groups = eights.remainder().chunks_exact(4);
    let mut words = sixteens.into_remainder().chunks_exact_mut(8);
    for (group, word) in (&mut groups).zip(&mut words) {
        let group: [u8; 4] = group.try_into().unwrap_or_default();
        word.copy_from_slice(&hex_word(u32::from_be_bytes(group)));
    }
    let pairs = words.into_remainder().chunks_exact_mut(2);
    for (byte, pair) in groups.remainder().iter().zip(pairs) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The sixteen lowercase hex digits of `bytes`, in their order, computed in one SSE2 vector
/// (part of every x86-64 processor): about a dozen instructions, where two [`hex_word`]s
/// take some fifty (the ids of every header a propagator writes). Plain loops over arrays
/// doing the same were not vectorised, and took several hundred.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
#[allow(unsafe_code)]
fn hex_of_eight(bytes: [u8; 8]) -> [u8; 16] {
    // SAFETY: the function only needs SSE2, which this build enables (the `cfg` above), so
    // every processor it runs on has it.
    unsafe { hex_of_eight_sse2(bytes) }
}

/// [`hex_of_eight`] in SSE2: the bytes' high and low nibbles interleaved into bytes of their
/// own, each turned into its digit there.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn hex_of_eight_sse2(bytes: [u8; 8]) -> [u8; 16] {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_cvtsi64_si128, _mm_cvtsi128_si64,
        _mm_set1_epi8, _mm_srli_epi16, _mm_unpackhi_epi64, _mm_unpacklo_epi8,
    };
    // The bytes in the vector's low half, in order (lane 0 first).
    let bytes = _mm_cvtsi64_si128(i64::from_le_bytes(bytes));
    let nibble = _mm_set1_epi8(0x0f);
    // Shifting 16-bit lanes brings each byte's high nibble down, with a neighbour's bits
    // above it, which the mask clears.
    let high = _mm_and_si128(_mm_srli_epi16::<4>(bytes), nibble);
    let low = _mm_and_si128(bytes, nibble);
    let nibbles = _mm_unpacklo_epi8(high, low);
    // `0`..`9` are the nibble plus b'0'; a nibble from 10 up is a letter, 39 further on.
    let letters = _mm_and_si128(
        _mm_cmpgt_epi8(nibbles, _mm_set1_epi8(9)),
        _mm_set1_epi8(0x27),
    );
    let digits = _mm_add_epi8(_mm_add_epi8(nibbles, _mm_set1_epi8(0x30)), letters);
    let first = _mm_cvtsi128_si64(digits).to_le_bytes();
    let second = _mm_cvtsi128_si64(_mm_unpackhi_epi64(digits, digits)).to_le_bytes();
    let mut out = [0; 16];
    out[..8].copy_from_slice(&first);
    out[8..].copy_from_slice(&second);
    out
}

/// The sixteen lowercase hex digits of `bytes`, in their order, as two [`hex_word`]s.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn hex_of_eight(bytes: [u8; 8]) -> [u8; 16] {
    let [a, b, c, d, e, f, g, h] = bytes;
    let mut out = [0; 16];
    out[..8].copy_from_slice(&hex_word(u32::from_be_bytes([a, b, c, d])));
    out[8..].copy_from_slice(&hex_word(u32::from_be_bytes([e, f, g, h])));
    out
}

/// The eight lowercase hex digits of `value`, most significant first, computed in one 64-bit
/// word: each nibble is spread into a byte of its own and turned into its digit there.
#[inline(always)]
fn hex_word(value: u32) -> [u8; 8] {
    let spread = u64::from(value);
    let spread = (spread | (spread << 16)) & 0x0000_ffff_0000_ffff;
    let spread = (spread | (spread << 8)) & 0x00ff_00ff_00ff_00ff;
    let nibbles = (spread | (spread << 4)) & (LANES * 0x0f);
    // 0x76 added to a nibble sets its byte's high bit iff the nibble is 10 or more.
    let letters = ((nibbles + LANES * 0x76) >> 7) & LANES;
    let digits = nibbles + LANES * u64::from(b'0') + letters * u64::from(b'a' - b'0' - 10);
    digits.to_be_bytes()
}

/// The value of one lowercase hex digit.
#[inline]
pub(crate) const fn lower_hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// The value of one hex digit of either case (for formats that allow uppercase).
#[inline]
pub(crate) const fn any_hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => lower_hex_value(byte),
    }
}

/// Each byte's value as a hex digit, or `0xff` if it is not one; uppercase digits count
/// only with `upper`.
const fn hex_value_table(upper: bool) -> [u8; 256] {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        if upper {
            table[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    table
}

const LOWER_HEX_VALUE: [u8; 256] = hex_value_table(false);
const ANY_HEX_VALUE: [u8; 256] = hex_value_table(true);

/// Parses up to 16 hex digits with `table`, one at a time. Branch-free over the digits:
/// invalid ones are detected once at the end from the OR of their table entries. Reads the
/// digits in front of the last whole groups of eight, which [`parse_hex_word`] reads.
#[inline(always)]
fn parse_hex_u64(digits: &[u8], table: &[u8; 256]) -> Option<u64> {
    let mut value = 0u64;
    let mut invalid = 0u8;
    for &digit in digits {
        let nibble = table[usize::from(digit)];
        invalid |= nibble;
        value = (value << 4) | u64::from(nibble & 0x0f);
    }
    (invalid & 0xf0 == 0).then_some(value)
}

/// A byte of 1 in every lane of a word.
pub(crate) const LANES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every lane of a word.
pub(crate) const HIGH_BITS: u64 = LANES * 0x80;

/// For every byte of `word` below 0x80, its high bit set iff the byte is in `low..=high`
/// (the additions cannot carry into the next byte for such bytes); other bits clear. Bytes
/// from 0x80 up may carry (the result is then meaningless, and the caller rejects the word).
#[inline(always)]
const fn bytes_within(word: u64, low: u8, high: u8) -> u64 {
    let at_least_low = word.wrapping_add(LANES * (0x80 - low as u64));
    let above_high = word.wrapping_add(LANES * (0x7f - high as u64));
    at_least_low & !above_high & HIGH_BITS
}

/// Parses eight hex digits, most significant first, as one 64-bit word: a handful of word
/// operations check and combine all eight, where a table takes a load per digit (the ids of
/// every format are mostly whole groups of eight). Uppercase letters count only with `upper`.
#[inline(always)]
fn parse_hex_word(digits: [u8; 8], upper: bool) -> Option<u32> {
    let (value, invalid) = hex_word_value(digits, upper);
    (invalid == 0).then_some(value)
}

/// The value of eight hex digits read as one word, and a mask that is zero iff all eight are
/// digits (the value means nothing otherwise). Callers reading several words check their
/// masks once, together.
#[inline(always)]
fn hex_word_value(digits: [u8; 8], upper: bool) -> (u32, u64) {
    let word = u64::from_be_bytes(digits);
    // Setting bit 5 of every byte folds `A`-`F` onto `a`-`f` and moves no other byte there
    // (nor any byte below 0x80 to 0x80 or above); digits are checked on the word as it is.
    let letters = if upper { word | (LANES * 0x20) } else { word };
    let hex = bytes_within(word, b'0', b'9') | bytes_within(letters, b'a', b'f');
    // A byte from 0x80 up is never a digit (and `bytes_within` says nothing about it).
    let invalid = (word & HIGH_BITS) | (hex ^ HIGH_BITS);
    // A digit's low four bits are its value; a letter (bit 6 set) is worth 9 more.
    let nibbles = (word & (LANES * 0x0f)) + ((word >> 6) & LANES) * 9;
    // Pack neighbours together: nibbles into bytes, bytes into 16-bit halves, then those.
    let bytes = ((nibbles >> 4) | nibbles) & 0x00ff_00ff_00ff_00ff;
    let halves = ((bytes >> 8) | bytes) & 0x0000_ffff_0000_ffff;
    // The packing leaves the value in the low 32 bits.
    #[allow(clippy::cast_possible_truncation)]
    let value = ((halves >> 16) | halves) as u32;
    (value, invalid)
}

/// Parses exactly `N` hex digits, `N` a multiple of 8 up to 32 (the id fields of a header
/// whose layout is fixed), as whole words, checking all of them once at the end. Uppercase
/// letters count only with `upper`.
#[inline(always)]
pub(crate) fn parse_hex_words<const N: usize>(digits: &[u8; N], upper: bool) -> Option<u128> {
    const { assert!(N.is_multiple_of(8) && N <= 32) };
    let mut value = 0u128;
    let mut invalid = 0u64;
    for &group in digits.as_chunks::<8>().0 {
        let (word, word_invalid) = hex_word_value(group, upper);
        value = (value << 32) | u128::from(word);
        invalid |= word_invalid;
    }
    (invalid == 0).then_some(value)
}

/// Parses 1 to 32 hex digits: the digits in front of the last whole groups of eight one at a
/// time with `table`, then each group of eight as a word.
#[inline(always)]
fn parse_hex_u128(digits: &[u8], table: &[u8; 256], upper: bool) -> Option<u128> {
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    let (head, groups) = digits.split_at(digits.len() % 8);
    let mut value = u128::from(parse_hex_u64(head, table)?);
    for group in groups.chunks_exact(8) {
        let group: [u8; 8] = group.try_into().ok()?;
        value = (value << 32) | u128::from(parse_hex_word(group, upper)?);
    }
    Some(value)
}

/// Parses 1 to 32 lowercase hex digits.
#[inline]
pub(crate) fn parse_lower_hex_u128(digits: &[u8]) -> Option<u128> {
    parse_hex_u128(digits, &LOWER_HEX_VALUE, false)
}

/// Parses 1 to 32 hex digits of either case.
#[inline]
pub(crate) fn parse_any_hex_u128(digits: &[u8]) -> Option<u128> {
    parse_hex_u128(digits, &ANY_HEX_VALUE, true)
}

/// Views bytes this crate wrote itself (hex digits and header punctuation) as text.
pub(crate) fn ascii(bytes: &[u8]) -> &str {
    // Every caller passes bytes it produced from ASCII tables; a failure here is a bug in
    // this crate, never a consequence of input.
    std::str::from_utf8(bytes).expect("formatted header bytes are ASCII")
}

thread_local! {
    /// The per-thread generator state and the fork generation it was seeded in; a zero
    /// state means "not seeded yet".
    static RNG_STATE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next output of the thread's wyrand generator.
///
/// wyrand passes BigCrush and PractRand, costs a multiply per output and needs no lock: each
/// thread has its own state, seeded from the operating system's randomness, and seeded again
/// in a child process after `fork()`, which would otherwise repeat its parent's ids.
#[inline]
pub(crate) fn next_random() -> u64 {
    with_generator(wyrand)
}

/// Two outputs for one load of the generator (a trace id's two halves).
#[inline]
fn next_random_pair() -> (u64, u64) {
    with_generator(|state| (wyrand(state), wyrand(state)))
}

/// Runs `draw` on the thread's generator state and stores the state it leaves.
///
/// The state is copied out and back with two one-line accesses rather than drawn inside
/// one closure: the compiler inlines those into direct thread-local loads and stores, where
/// the larger closure left a call through the key's accessor on every span.
#[inline]
fn with_generator<T>(draw: impl FnOnce(&mut u64) -> T) -> T {
    let (mut state, generation) = load_state(RNG_STATE.with(Cell::get));
    let value = draw(&mut state);
    RNG_STATE.with(|cell| cell.set((state, generation)));
    value
}

#[inline]
fn load_state(stored: (u64, u64)) -> (u64, u64) {
    let generation = fork::generation();
    match stored {
        (0, _) => seed(),
        (state, seeded_in) if seeded_in == generation => (state, generation),
        _ => seed(),
    }
}

#[inline]
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let product = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    // Folding the 128-bit product is the generator's output function.
    #[allow(clippy::cast_possible_truncation)]
    let folded = ((product >> 64) ^ product) as u64;
    folded
}

/// A non-zero seed from a randomly keyed hasher (its keys come from the operating system),
/// with the fork generation it belongs to. The process id is hashed in too: a forked child
/// inherits the hasher's key source, so two children of one parent would otherwise draw the
/// same keys.
#[cold]
fn seed() -> (u64, u64) {
    fork::watch();
    let generation = fork::generation();
    let keyed = infra_common::hash::RandomState::new();
    let seed = keyed.hash_one((std::thread::current().id(), std::process::id()));
    (seed | 1, generation)
}

/// Counts the `fork()`s this process descends from, so that a thread can tell that its
/// generator state was copied from a parent process.
#[cfg(unix)]
mod fork {
    // A process-wide counter that only a child process's first moments write: `fork()` is
    // outside what loom models, so the `std` atomic is used directly.
    #[allow(clippy::disallowed_types)]
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    #[allow(clippy::disallowed_types)]
    static WATCHING: std::sync::Once = std::sync::Once::new();

    /// The current generation: one more in a child than in its parent.
    #[inline]
    pub(super) fn generation() -> u64 {
        // Relaxed: the handler runs in the child's only thread before `fork()` returns, so
        // every later read in the child is ordered after it by program order.
        GENERATION.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers the child handler, once per process (children inherit it).
    pub(super) fn watch() {
        WATCHING.call_once(|| {
            #[allow(unsafe_code)]
            // SAFETY: `pthread_atfork` only records the handler; `after_fork_in_child` is a
            // plain `extern "C"` function that does one atomic add, which is
            // async-signal-safe as the child of a multi-threaded process requires.
            // On failure (ENOMEM) a child would repeat ids as before; an id generator has
            // nothing better to do than go on.
            unsafe {
                libc::pthread_atfork(None, None, Some(after_fork_in_child))
            };
        });
    }

    extern "C" fn after_fork_in_child() {
        GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Without `fork()`, there is one generation.
#[cfg(not(unix))]
mod fork {
    #[inline]
    pub(super) const fn generation() -> u64 {
        0
    }

    pub(super) const fn watch() {}
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any mix of digits, letters and separators, of every length around the ids':
        /// the parsers agree with the standard library's radix parser on what each accepts.
        #[test]
        fn hex_parsing_agrees_with_the_standard_library(digits in "[0-9a-fA-Fg:-]{0,33}") {
            let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            let upper_hex = |b: u8| (b'A'..=b'F').contains(&b);
            let sized = (1..=32).contains(&digits.len());
            let lower = sized && digits.bytes().all(lower_hex);
            let any = sized && digits.bytes().all(|b| lower_hex(b) || upper_hex(b));
            let expected = u128::from_str_radix(&digits, 16).ok();
            proptest::prop_assert_eq!(
                parse_lower_hex_u128(digits.as_bytes()),
                expected.filter(|_| lower)
            );
            proptest::prop_assert_eq!(
                parse_any_hex_u128(digits.as_bytes()),
                expected.filter(|_| any)
            );
        }

        /// Valid ids of every length, which random text above seldom produces.
        #[test]
        fn valid_hex_reads_as_the_standard_library_reads_it(digits in "[0-9a-f]{1,32}") {
            let expected = u128::from_str_radix(&digits, 16).ok();
            proptest::prop_assert_eq!(parse_lower_hex_u128(digits.as_bytes()), expected);
            let upper = digits.to_ascii_uppercase();
            proptest::prop_assert_eq!(parse_any_hex_u128(upper.as_bytes()), expected);
        }
    }

    /// The word parser against the one-digit-at-a-time reference, with every byte value in
    /// every position of a group of eight (the other seven valid digits of both kinds).
    #[test]
    fn word_parsing_agrees_with_the_digit_tables_on_every_byte() {
        for background in [*b"0123abcd", *b"9f8e7d6c", *b"ABCDEF09"] {
            for position in 0..8 {
                for byte in 0..=u8::MAX {
                    let mut digits = background;
                    digits[position] = byte;
                    for (upper, table) in [(false, &LOWER_HEX_VALUE), (true, &ANY_HEX_VALUE)] {
                        let reference = parse_hex_u64(&digits, table).map(|value| {
                            u32::try_from(value).expect("eight digits fit in 32 bits")
                        });
                        assert_eq!(
                            parse_hex_word(digits, upper),
                            reference,
                            "{digits:?}, uppercase allowed: {upper}"
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Hex writing, word at a time and digit by digit, against the standard formatter.
        #[test]
        fn hex_writing_agrees_with_the_standard_formatter(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20)
        ) {
            let mut out = vec![0; bytes.len() * 2];
            write_hex(&bytes, &mut out);
            let expected: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            proptest::prop_assert_eq!(ascii(&out), expected);
        }
    }

    #[test]
    fn hex_words_hold_every_digit_in_every_position() {
        for digit in 0..16u32 {
            for position in 0..8 {
                let value = digit << (4 * position);
                assert_eq!(ascii(&hex_word(value)), format!("{value:08x}"));
                let value = !value;
                assert_eq!(ascii(&hex_word(value)), format!("{value:08x}"));
            }
        }
    }

    #[test]
    fn ids_reject_zero_and_bad_hex() {
        assert!(TraceId::from_u128(0).is_none());
        assert!(SpanId::from_u64(0).is_none());
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00000000000000000000000000000000",
        ] {
            assert!(TraceId::from_hex(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SpanId::from_hex("00f067aa0ba902b7").is_ok());
        assert!(SpanId::from_hex("00F067AA0BA902B7").is_err());
        assert!(SpanId::from_hex("0000000000000000").is_err());
    }

    #[test]
    fn random_ids_are_distinct_and_non_zero() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(TraceId::random()));
        }
        let spans: std::collections::HashSet<_> = (0..10_000).map(|_| SpanId::random()).collect();
        assert_eq!(spans.len(), 10_000);
    }

    #[test]
    fn random_bits_are_balanced() {
        // Each of the 56 random bits should be set in about half of the ids.
        let mut ones = [0u32; 56];
        let n = 20_000;
        for _ in 0..n {
            let r = TraceId::random().randomness();
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += u32::from((r >> bit) & 1 == 1);
            }
        }
        for (bit, count) in ones.iter().enumerate() {
            assert!((9_000..11_000).contains(count), "bit {bit}: {count} of {n}");
        }
    }

    #[test]
    fn flags_drop_unknown_bits() {
        let flags = TraceFlags::from_wire(0xff);
        assert_eq!(flags.bits(), 0x03);
        assert!(flags.is_sampled() && flags.is_random());
        assert_eq!(flags.with_sampled(false).bits(), 0x02);
        assert_eq!(TraceFlags::from_wire(0x04), TraceFlags::NONE);
    }

    #[test]
    fn hex_round_trips() {
        let id = TraceId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10).unwrap();
        assert_eq!(id.to_string(), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(id.to_string().parse::<TraceId>().unwrap(), id);
        let span = SpanId::from_u64(0xab).unwrap();
        assert_eq!(span.to_string(), "00000000000000ab");
        assert_eq!(format!("{span:?}"), "SpanId(00000000000000ab)");
    }

    /// The parser before word-at-a-time reading: each half of up to 16 digits by table.
    fn previous_parse_hex_u128(digits: &[u8], table: &[u8; 256]) -> Option<u128> {
        match digits.len() {
            0 | 33.. => None,
            1..=16 => parse_hex_u64(digits, table).map(u128::from),
            len => {
                let (high, low) = digits.split_at(len - 16);
                let high = parse_hex_u64(high, table)?;
                let low = parse_hex_u64(low, table)?;
                Some((u128::from(high) << 64) | u128::from(low))
            }
        }
    }

    proptest::proptest! {
        /// Differential against the previous parser: any bytes (high bytes, the neighbours
        /// of the digit ranges, several invalid bytes in one word) and every length to 40.
        #[test]
        fn word_parsing_agrees_with_the_previous_parser_on_any_bytes(
            picks in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), proptest::prelude::any::<u8>()),
                0..40,
            )
        ) {
            // Half the bytes from the digits and their neighbours, half from all 256.
            const EDGES: &[u8] = b"0123456789abcdefABCDEF/:@G`g\x00\x7f\x80\xb0\xb9\xc1\xe1\xff";
            let digits: Vec<u8> = picks
                .iter()
                .map(|&(edge, byte)| if edge { EDGES[usize::from(byte) % EDGES.len()] } else { byte })
                .collect();
            proptest::prop_assert_eq!(
                parse_lower_hex_u128(&digits),
                previous_parse_hex_u128(&digits, &LOWER_HEX_VALUE)
            );
            proptest::prop_assert_eq!(
                parse_any_hex_u128(&digits),
                previous_parse_hex_u128(&digits, &ANY_HEX_VALUE)
            );
        }
    }

    /// The fixed-width parser against the general one, with every byte value in every
    /// position of 16 and 32 digits: one invalid byte in any word fails the whole.
    #[test]
    fn fixed_width_parsing_agrees_with_the_general_parser_on_every_byte() {
        type Parser = fn(&[u8]) -> Option<u128>;
        let parsers: [(bool, Parser); 2] =
            [(false, parse_lower_hex_u128), (true, parse_any_hex_u128)];
        for background in [
            *b"0123456789abcdeffedcba9876543210",
            *b"0123456789abcdefABCDEF0987654321",
        ] {
            for position in 0..32 {
                for byte in 0..=u8::MAX {
                    let mut long = background;
                    long[position] = byte;
                    let short: [u8; 16] = long[position / 16 * 16..][..16]
                        .try_into()
                        .expect("16 digits");
                    for (upper, general) in parsers {
                        assert_eq!(
                            parse_hex_words(&long, upper),
                            general(&long),
                            "{long:?} {upper}"
                        );
                        assert_eq!(
                            parse_hex_words(&short, upper),
                            general(&short),
                            "{short:?} {upper}"
                        );
                    }
                }
            }
        }
    }

    /// Every pair of bytes in every pair of positions of one word, the rest valid digits:
    /// a carry out of one lane must never make another lane's invalid byte pass.
    #[test]
    fn word_parsing_agrees_with_the_digit_tables_on_every_byte_pair() {
        for first in 0..8 {
            for second in first + 1..8 {
                for a in 0..=u8::MAX {
                    for b in [
                        0u8, b'/', b'0', b'9', b':', b'@', b'A', b'F', b'G', b'`', b'a', b'f',
                        b'g', 0x7f, 0x80, 0xb0, 0xe1, 0xff,
                    ] {
                        let mut digits = *b"5a5a5a5a";
                        digits[first] = a;
                        digits[second] = b;
                        for (upper, table) in [(false, &LOWER_HEX_VALUE), (true, &ANY_HEX_VALUE)] {
                            let reference = parse_hex_u64(&digits, table)
                                .map(|value| u32::try_from(value).expect("eight digits"));
                            assert_eq!(
                                parse_hex_word(digits, upper),
                                reference,
                                "{digits:?} {upper}"
                            );
                        }
                    }
                }
            }
        }
    }
}
