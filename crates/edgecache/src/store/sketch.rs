//! The frequency sketch behind admission: a count-min sketch of 4-bit counters with aging.
//!
//! TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", ACM ToS 2017) estimates how often each key was asked for recently. Four counters per
//! key, each 4 bits, sixteen to a `u64`; the estimate is the smallest of the four, so collisions
//! can only overstate a key. After `sample_size` increments every counter is halved, so the
//! sketch forgets old popularity and follows a changing workload.
//!
//! An increment is conservative (Estan and Varghese, "New Directions in Traffic Measurement and
//! Accounting", SIGCOMM 2002): only the key's counters that hold its current estimate go up,
//! since the others already overstate it. Every counter of a key still stays at or above the
//! key's true count, and collisions inflate estimates less. The blocked table below crowds more
//! keys onto the same counters than four independent rows would; with plain increments it
//! measured lower on P3 at 32,768 entries, with conservative ones it did not (BENCHMARKS.md,
//! "Hit ratio (store policy)").
//!
//! The table is blocked, as Caffeine's frequency sketch is since version 3: one hash of the key
//! picks a 64-byte block (eight words, one cache line), another picks the four counters inside
//! it, each in a word of its own (row `i` uses word `2i` or `2i + 1`). A hit's increment and an
//! admission's estimate then touch one cache line instead of four; at 100,000 entries the table
//! is far larger than the CPU's L1 and L2, so each line touched is a likely miss.
//!
//! The sketch holds one word per expected entry (8 bytes, 16 counters), grown to the number of
//! entries the shard actually holds, so its memory is bounded by the entries' own.

/// The counters are 4 bits wide: at most 15.
const COUNTER_MAX: u64 = 15;
/// Clears the high bit of every nibble after a shift right by one (halving each counter).
const HALVING_MASK: u64 = 0x7777_7777_7777_7777;
/// Words in a block: eight `u64`s fill one 64-byte cache line.
const BLOCK_WORDS: usize = 8;
/// Odd multiplier of the hash that picks a key's block.
const BLOCK_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Odd multiplier of the hash that picks a key's four counters inside its block; independent
/// of the block's, so keys sharing a block do not share counters as well.
const COUNTER_SEED: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// The table size small shards get (see `words_for`).
const SMALL_SHARD_WORDS: usize = 8 << 10;
/// The largest table, in words (2^26 words = 512 MiB would be absurd; 2^24 = 128 MiB holds the
/// counters for 16 million entries per shard).
const MAX_WORDS: usize = 1 << 24;

/// One cache line of counters, aligned so it never straddles two lines.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Block([u64; BLOCK_WORDS]);

/// Where a key's four counters sit: its block, and per row the word and the nibble's shift.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
struct Counters {
    block: usize,
    words: [usize; 4],
    shifts: [u64; 4],
}

/// Row `row`'s counter of the key whose counter selector (a mix of its hash) is `selector`:
/// its word in the block and the nibble's shift in that word. A byte of the selector per row:
/// its low bit picks one of the row's two words, the next four the nibble.
#[inline(always)]
fn slot(selector: u64, row: usize) -> (usize, u64) {
    let byte = selector >> (8 * row);
    // Row `row` owns words `2 * row` and `2 * row + 1`, so rows never share a word; the mask
    // only tells the compiler the index is inside the block.
    let word = (2 * row + (byte & 1) as usize) & (BLOCK_WORDS - 1);
    (word, ((byte >> 1) & 15) * 4)
}

/// Recent access frequencies, estimated.
#[derive(Debug, Clone)]
pub(crate) struct FrequencySketch {
    blocks: Vec<Block>,
    /// Number of blocks minus one (the block count is a power of two).
    block_mask: u64,
    /// Increments since the last halving.
    additions: u64,
    /// Increments between two halvings: ten per word of the table (a word per expected entry
    /// in a large shard, up to sixteen in a small one; see `words_for`), as in TinyLFU.
    sample_size: u64,
}

/// Spreads a hash under a multiplier, folding the high bits of the product into the low ones,
/// which are the ones used.
#[inline]
pub(super) fn mix(hash: u64, seed: u64) -> u64 {
    let mixed = (hash ^ (hash >> 29)).wrapping_mul(seed);
    mixed ^ (mixed >> 32)
}

impl FrequencySketch {
    /// The highest estimate [`Self::frequency`] gives: a counter's ceiling.
    pub(crate) const MAX_FREQUENCY: u8 = COUNTER_MAX as u8;

    /// A sketch sized for `entries` entries.
    pub(crate) fn new(entries: usize) -> Self {
        let words = Self::words_for(entries);
        let blocks = (words / BLOCK_WORDS).max(1);
        Self {
            blocks: vec![Block::default(); blocks],
            block_mask: blocks as u64 - 1,
            additions: 0,
            sample_size: 10 * words as u64,
        }
    }

    /// How many increments make up one sample (the aging period).
    #[cfg(test)]
    pub(crate) fn sample_size(&self) -> u64 {
        self.sample_size
    }

    /// Grows the table when the shard holds more entries than it was sized for. Growing
    /// forgets the counts, as a resize of a hashed table must; it happens a logarithmic number
    /// of times.
    pub(crate) fn ensure_capacity(&mut self, entries: usize) {
        if Self::words_for(entries) > self.blocks.len() * BLOCK_WORDS {
            *self = Self::new(entries);
        }
    }

    /// The table size for `entries` entries: a word (16 counters) per entry, and for small
    /// shards up to 16 words per entry but no more than 8 Ki words (64 KiB), because a small
    /// table ages after only a few thousand requests, too few to tell keys of similar
    /// popularity apart (measured on the Zipf rows of the hit-ratio table).
    fn words_for(entries: usize) -> usize {
        let small_shard_words = entries.saturating_mul(16).min(SMALL_SHARD_WORDS);
        entries
            .max(small_shard_words)
            .max(BLOCK_WORDS)
            .checked_next_power_of_two()
            .unwrap_or(MAX_WORDS)
            .min(MAX_WORDS)
    }

    /// The block of a key's hash, and the selector of its four counters inside it (see
    /// [`slot`]), from two independent mixes of the hash.
    #[inline(always)]
    fn place(&self, hash: u64) -> (usize, u64) {
        let block = (mix(hash, BLOCK_SEED) & self.block_mask) as usize;
        (block, mix(hash, COUNTER_SEED))
    }

    /// The counters of a key's hash, for tests that set or read them directly.
    #[cfg(test)]
    fn counters(&self, hash: u64) -> Counters {
        let (block, selector) = self.place(hash);
        Counters {
            block,
            words: [0, 1, 2, 3].map(|row| slot(selector, row).0),
            shifts: [0, 1, 2, 3].map(|row| slot(selector, row).1),
        }
    }

    /// The estimated number of recent accesses of the key with this hash, 0 to 15.
    #[inline]
    pub(crate) fn frequency(&self, hash: u64) -> u8 {
        let (block, selector) = self.place(hash);
        let block = &self.blocks[block].0;
        let mut estimate = COUNTER_MAX;
        for row in 0..4 {
            let (word, shift) = slot(selector, row);
            estimate = estimate.min((block[word] >> shift) & COUNTER_MAX);
        }
        // At most COUNTER_MAX, so the conversion never fails.
        u8::try_from(estimate).unwrap_or(u8::MAX)
    }

    /// Counts one access of the key with this hash: the counters at the key's estimate go up
    /// by one, unless they are saturated.
    #[inline]
    pub(crate) fn increment(&mut self, hash: u64) {
        let (block, selector) = self.place(hash);
        let block = &mut self.blocks[block].0;
        let mut counts = [0; 4];
        let mut estimate = COUNTER_MAX;
        for (row, count) in counts.iter_mut().enumerate() {
            let (word, shift) = slot(selector, row);
            *count = (block[word] >> shift) & COUNTER_MAX;
            estimate = estimate.min(*count);
        }
        if estimate == COUNTER_MAX {
            return;
        }
        // Without branches: each counter at the estimate (at least one is) goes up by one.
        for (row, count) in counts.into_iter().enumerate() {
            let (word, shift) = slot(selector, row);
            block[word] += u64::from(count == estimate) << shift;
        }
        self.additions += 1;
        if self.additions >= self.sample_size {
            self.halve();
        }
    }

    /// Ages every counter by halving it.
    fn halve(&mut self) {
        for word in self.blocks.iter_mut().flat_map(|block| &mut block.0) {
            *word = (*word >> 1) & HALVING_MASK;
        }
        self.additions /= 2;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::{BLOCK_SEED, COUNTER_MAX, COUNTER_SEED, FrequencySketch, mix};

    #[test]
    fn counts_saturate_at_fifteen_and_never_understate() {
        let mut sketch = FrequencySketch::new(64);
        for _ in 0..20 {
            sketch.increment(7);
        }
        assert_eq!(sketch.frequency(7), 15);
        for _ in 0..3 {
            sketch.increment(8);
        }
        assert!(sketch.frequency(8) >= 3);
    }

    #[test]
    fn a_full_sample_halves_every_counter() {
        let mut sketch = FrequencySketch::new(1024);
        for _ in 0..8 {
            sketch.increment(42);
        }
        assert_eq!(sketch.frequency(42), 8);
        // The increment that completes the sample triggers the halving.
        sketch.additions = sketch.sample_size() - 1;
        sketch.increment(1 << 40);
        assert_eq!(sketch.frequency(42), 4);
        assert_eq!(sketch.additions, sketch.sample_size() / 2);
    }

    #[test]
    fn an_increment_touches_one_block_and_four_distinct_words() {
        let mut sketch = FrequencySketch::new(4096);
        for hash in [0, 1, 42, u64::MAX, 0x1234_5678_9abc_def0] {
            let before = sketch.blocks.clone();
            sketch.increment(hash);
            let changed: Vec<(usize, usize)> = before
                .iter()
                .zip(&sketch.blocks)
                .enumerate()
                .flat_map(|(block, (old, new))| {
                    (0..8)
                        .filter(move |&word| old.0[word] != new.0[word])
                        .map(move |word| (block, word))
                })
                .collect();
            assert_eq!(changed.len(), 4, "hash {hash:#x}: {changed:?}");
            assert!(changed.iter().all(|&(block, _)| block == changed[0].0));
        }
    }

    #[test]
    fn an_increment_raises_only_the_counters_at_the_estimate() {
        let mut sketch = FrequencySketch::new(64);
        let hash = 0x5eed;
        let counters = sketch.counters(hash);
        let places = || counters.words.into_iter().zip(counters.shifts);
        // Collisions left the key's counters at 2, 5, 2 and 7.
        for ((word, shift), count) in places().zip([2, 5, 2, 7]) {
            sketch.blocks[counters.block].0[word] |= count << shift;
        }
        sketch.increment(hash);
        let read = |sketch: &FrequencySketch| -> Vec<u64> {
            places()
                .map(|(word, shift)| (sketch.blocks[counters.block].0[word] >> shift) & 15)
                .collect()
        };
        assert_eq!(read(&sketch), [3, 5, 3, 7]);
        assert_eq!(sketch.frequency(hash), 3);
        assert_eq!(sketch.additions, 1);
    }

    #[test]
    fn sizing_keeps_the_word_per_entry_rule() {
        assert_eq!(FrequencySketch::new(1).blocks.len() * 8, 16);
        assert_eq!(FrequencySketch::new(100).blocks.len() * 8, 2048);
        // A small shard's sample is ten per word, not per entry: 204 accesses per entry here.
        assert_eq!(FrequencySketch::new(100).sample_size(), 20_480);
        assert_eq!(FrequencySketch::new(100_000).blocks.len() * 8, 131_072);
        assert_eq!(FrequencySketch::new(100_000).sample_size(), 1_310_720);
        assert_eq!(FrequencySketch::new(usize::MAX).blocks.len() * 8, 1 << 24);
    }

    /// The conservative increment as defined, one counter after another: the key's block and
    /// counters from the hash's two mixes (a selector byte per row: its low bit picks the row's
    /// word, the next four the nibble), the estimate as the smallest of the four, and, below
    /// the ceiling, each counter holding the estimate raised by one, counting an addition and
    /// halving at the end of a sample.
    fn increment_as_defined(sketch: &mut FrequencySketch, hash: u64) {
        let block = (mix(hash, BLOCK_SEED) & sketch.block_mask) as usize;
        let selector = mix(hash, COUNTER_SEED);
        let places: Vec<(usize, u64)> = (0..4)
            .map(|row| {
                let byte = selector >> (8 * row);
                (2 * row + (byte & 1) as usize, ((byte >> 1) & 15) * 4)
            })
            .collect();
        let words = &mut sketch.blocks[block].0;
        let estimate = places
            .iter()
            .map(|&(word, shift)| (words[word] >> shift) & COUNTER_MAX)
            .min()
            .unwrap_or(COUNTER_MAX);
        let mut added = false;
        if estimate < COUNTER_MAX {
            for &(word, shift) in &places {
                if (words[word] >> shift) & COUNTER_MAX == estimate {
                    words[word] += 1 << shift;
                    added = true;
                }
            }
        }
        if added {
            sketch.additions += 1;
            if sketch.additions >= sketch.sample_size {
                sketch.halve();
            }
        }
    }

    /// The estimate as defined: the smallest of the key's four counters.
    fn frequency_as_defined(sketch: &FrequencySketch, hash: u64) -> u8 {
        let block = &sketch.blocks[(mix(hash, BLOCK_SEED) & sketch.block_mask) as usize].0;
        let selector = mix(hash, COUNTER_SEED);
        (0..4)
            .map(|row| {
                let byte = selector >> (8 * row);
                (block[2 * row + (byte & 1) as usize] >> (((byte >> 1) & 15) * 4)) & COUNTER_MAX
            })
            .min()
            .map_or(0, |estimate| estimate as u8)
    }

    /// 500 to 2,500 keys of 48, half of them among four hot keys, which saturate between
    /// halvings on a small table.
    fn skewed_keys() -> impl Strategy<Value = Vec<u64>> {
        let key = (0u64..96).prop_map(|key| if key < 48 { key } else { key % 4 });
        proptest::collection::vec(key, 500..2500)
    }

    proptest! {
        /// The increment and the estimate keep every counter and decision of their
        /// definition: after each increment the whole table, the additions and every key's
        /// estimate agree with a sketch driven by the definition, through saturated counters
        /// and halvings (hot keys on a small table reach fifteen, and it ages often).
        #[test]
        fn increments_and_estimates_match_their_definition(
            entries in 1usize..8,
            keys in skewed_keys(),
        ) {
            let mut sketch = FrequencySketch::new(entries);
            let mut defined = sketch.clone();
            let hash = |key: u64| key.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (key << 59);
            for key in keys {
                sketch.increment(hash(key));
                increment_as_defined(&mut defined, hash(key));
                prop_assert_eq!(sketch.additions, defined.additions);
                prop_assert!(
                    sketch.blocks.iter().zip(&defined.blocks).all(|(a, b)| a.0 == b.0),
                    "the tables differ after key {}", key
                );
                for other in 0..48 {
                    prop_assert_eq!(
                        sketch.frequency(hash(other)),
                        frequency_as_defined(&defined, hash(other))
                    );
                }
            }
        }

        /// Count-min's guarantee against an exact model: a conservative increment lifts every
        /// counter of the key to at least its estimate plus one, and collisions only add, so
        /// the smallest of a key's four is at least the key's true count, capped at 15 as the
        /// counters are; halving both at the same points keeps that order.
        #[test]
        fn the_estimate_never_falls_below_the_true_count(
            entries in 1usize..40,
            keys in proptest::collection::vec(0u64..300, 1..4000),
        ) {
            let mut sketch = FrequencySketch::new(entries);
            let mut exact: HashMap<u64, u64> = HashMap::new();
            for key in keys {
                let hash = key.wrapping_mul(0x2545_f491_4f6c_dd1d);
                let count = exact.entry(hash).or_insert(0);
                *count = (*count + 1).min(15);
                let count = *count;
                let before = sketch.additions;
                sketch.increment(hash);
                if sketch.additions < before {
                    for count in exact.values_mut() {
                        *count /= 2;
                    }
                    for (&hash, &count) in &exact {
                        prop_assert!(u64::from(sketch.frequency(hash)) >= count);
                    }
                } else {
                    prop_assert!(u64::from(sketch.frequency(hash)) >= count);
                }
            }
            for (&hash, &count) in &exact {
                prop_assert!(u64::from(sketch.frequency(hash)) >= count);
            }
        }
    }
}
