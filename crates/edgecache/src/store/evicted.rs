//! The keys the main space let go, remembered approximately and compactly for admission.
//!
//! A key the main space evicted that is asked for again wins a tied admission duel (see
//! `shard.rs`). That pays only when the shard remembers up to as many evictions as half its
//! entry count (Zipf 1.2 at 25,000 entries), and a [`super::ghost::Ghost`] of that many hashes
//! raised the memory test's figure after its floods from 123 to 145 bytes per entry.
//! Membership is all the duel asks, so two Bloom filters take turns instead: keys go into the
//! current one, and when it has taken its share (or as many keys as it was sized for, if
//! `capacity` has grown since), the older one is cleared and becomes current. A key is
//! remembered while either holds it: through the last half to whole of `capacity` evictions.
//! At 16 to 32 bits (a power of two words) and 4 probes per key, a full filter answers wrongly
//! for at most about one key in 400, so the two together for at most about one in 200; a
//! wrong answer only lets a newcomer win one tie.

use super::sketch::mix;

/// Filter bits per key a generation takes.
const BITS_PER_KEY: usize = 16;
/// Bits set and tested per key.
const PROBES: u64 = 4;
/// Odd multipliers deriving a key's two probe hashes from its hash.
const FIRST_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const STEP_SEED: u64 = 0xd6e8_feb8_6659_fd93;

/// Two Bloom filters of key hashes, the newer one taking pushes.
#[derive(Debug, Default)]
pub(crate) struct Evicted {
    filters: [Vec<u64>; 2],
    /// Index of the filter taking pushes.
    current: usize,
    /// Keys pushed into the current filter.
    pushed: usize,
}

/// The bit positions of a key's hash in a filter of `words` words (a power of two): double
/// hashing, `first + i × step`, with an odd step so the probes differ.
fn probes(hash: u64, words: usize) -> impl Iterator<Item = (usize, u64)> {
    let (first, step) = (mix(hash, FIRST_SEED), mix(hash, STEP_SEED) | 1);
    let mask = (words * 64 - 1) as u64;
    (0..PROBES).map(move |i| {
        let bit = first.wrapping_add(i.wrapping_mul(step)) & mask;
        ((bit / 64) as usize, 1 << (bit % 64))
    })
}

fn contains(filter: &[u64], hash: u64) -> bool {
    !filter.is_empty() && probes(hash, filter.len()).all(|(word, bit)| filter[word] & bit != 0)
}

impl Evicted {
    /// Remembers `hash`, among the last `capacity` (to `capacity / 2`) hashes pushed (fewer
    /// just after `capacity` grew: a filter takes no more keys than it was sized for).
    pub(crate) fn push(&mut self, hash: u64, capacity: usize) {
        let share = capacity.div_ceil(2).max(1);
        // A filter sized for a smaller capacity, filled to the new share, would answer yes
        // for almost every key: it is full at the keys it was sized for.
        let sized_for = self.filters[self.current].len() * 64 / BITS_PER_KEY;
        if self.pushed >= share.min(sized_for) {
            // The older filter is cleared and sized for the current capacity.
            self.current ^= 1;
            let words = (share * BITS_PER_KEY).div_ceil(64).next_power_of_two();
            let filter = &mut self.filters[self.current];
            filter.clear();
            filter.resize(words, 0);
            self.pushed = 0;
        }
        let filter = &mut self.filters[self.current];
        for (word, bit) in probes(hash, filter.len()) {
            filter[word] |= bit;
        }
        self.pushed += 1;
    }

    /// Whether `hash` was pushed recently (rarely, wrongly, one that was not).
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.filters.iter().any(|filter| contains(filter, hash))
    }
}

#[cfg(test)]
mod tests {
    use super::Evicted;

    fn spread(key: u64) -> u64 {
        key.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn remembers_the_last_half_to_whole_capacity_of_pushes() {
        let mut evicted = Evicted::default();
        let capacity = 1_000;
        for key in 0..3_000 {
            evicted.push(spread(key), capacity);
        }
        // The last full generation and the current one are held; everything older is gone.
        assert!((2_000..3_000).all(|key| evicted.contains(spread(key))));
        let forgotten = (0..1_500)
            .filter(|&key| evicted.contains(spread(key)))
            .count();
        assert!(
            forgotten <= 10,
            "{forgotten} of 1,500 old keys still answered"
        );
    }

    /// Fewer than one in 200 of 100,000 keys never pushed are said to have been.
    fn assert_rarely_wrong(evicted: &Evicted) {
        let wrong = (1_000_000..1_100_000)
            .filter(|&key| evicted.contains(spread(key)))
            .count();
        assert!(wrong < 500, "{wrong} of 100,000 never pushed answered");
    }

    #[test]
    fn wrong_answers_are_rare() {
        let mut evicted = Evicted::default();
        for key in 0..10_000 {
            evicted.push(spread(key), 20_000);
        }
        assert_rarely_wrong(&evicted);
    }

    /// A shard's entry count can grow many times over between two evictions (light entries
    /// replacing heavy ones): the filter sized for the smaller count still answers rightly.
    #[test]
    fn wrong_answers_stay_rare_when_the_capacity_grows() {
        let mut evicted = Evicted::default();
        evicted.push(spread(0), 16);
        for key in 1..10_000 {
            evicted.push(spread(key), 20_000);
        }
        assert_rarely_wrong(&evicted);
    }
}
