//! The frequency sketch behind admission: a count-min sketch of 4-bit counters with aging.
//!
//! TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", ACM ToS 2017) estimates how often each key was asked for recently. Four counters per
//! key, each 4 bits, sixteen to a `u64`; the estimate is the smallest of the four, so collisions
//! can only overstate a key. After `sample_size` increments every counter is halved, so the
//! sketch forgets old popularity and follows a changing workload.
//!
//! The sketch holds one word per expected entry (8 bytes, 16 counters), grown to the number of
//! entries the shard actually holds, so its memory is bounded by the entries' own.

/// The counters are 4 bits wide: at most 15.
const COUNTER_MAX: u64 = 15;
/// Clears the high bit of every nibble after a shift right by one (halving each counter).
const HALVING_MASK: u64 = 0x7777_7777_7777_7777;
/// One odd multiplier per counter row, so the four positions of a key are independent.
const ROW_SEEDS: [u64; 4] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0xd6e8_feb8_6659_fd93,
];
/// The table size small shards get (see `words_for`).
const SMALL_SHARD_WORDS: usize = 8 << 10;
/// The largest table, in words (2^26 words = 512 MiB would be absurd; 2^24 = 128 MiB holds the
/// counters for 16 million entries per shard).
const MAX_WORDS: usize = 1 << 24;

/// Recent access frequencies, estimated.
#[derive(Debug, Clone)]
pub(crate) struct FrequencySketch {
    words: Vec<u64>,
    /// Number of counters minus one (the counter count is a power of two).
    counter_mask: u64,
    /// Increments since the last halving.
    additions: u64,
    /// Increments between two halvings: ten per expected entry, as in TinyLFU.
    sample_size: u64,
}

impl FrequencySketch {
    /// A sketch sized for `entries` entries.
    pub(crate) fn new(entries: usize) -> Self {
        let words = Self::words_for(entries);
        Self {
            words: vec![0; words],
            counter_mask: (words as u64 * 16) - 1,
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
        if Self::words_for(entries) > self.words.len() {
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
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(MAX_WORDS)
            .min(MAX_WORDS)
    }

    /// The counter positions of a key's hash, one per row.
    #[inline]
    fn positions(&self, hash: u64) -> [u64; 4] {
        ROW_SEEDS.map(|seed| {
            let mixed = (hash ^ (hash >> 29)).wrapping_mul(seed);
            (mixed ^ (mixed >> 32)) & self.counter_mask
        })
    }

    #[inline]
    fn counter(&self, position: u64) -> u64 {
        let word = self.words[(position >> 4) as usize];
        (word >> ((position & 15) * 4)) & COUNTER_MAX
    }

    /// The estimated number of recent accesses of the key with this hash, 0 to 15.
    #[inline]
    pub(crate) fn frequency(&self, hash: u64) -> u8 {
        let estimate = self
            .positions(hash)
            .into_iter()
            .map(|position| self.counter(position))
            .min()
            .unwrap_or(0);
        // At most COUNTER_MAX, so the conversion never fails.
        u8::try_from(estimate).unwrap_or(u8::MAX)
    }

    /// Counts one access of the key with this hash.
    #[inline]
    pub(crate) fn increment(&mut self, hash: u64) {
        let mut added = false;
        for position in self.positions(hash) {
            let word = &mut self.words[(position >> 4) as usize];
            let shift = (position & 15) * 4;
            if (*word >> shift) & COUNTER_MAX < COUNTER_MAX {
                *word += 1 << shift;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size {
                self.halve();
            }
        }
    }

    /// Ages every counter by halving it.
    fn halve(&mut self) {
        for word in &mut self.words {
            *word = (*word >> 1) & HALVING_MASK;
        }
        self.additions /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::FrequencySketch;

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
}
