//! Readmission: a second chance for keys the admission duel keeps turning away.
//!
//! The duel compares estimated frequencies, and the sketch halves its counters only every ten
//! requests per entry. When a workload moves to a new working set (a disk trace entering a new
//! loop), the main space is full of entries whose counts are high but stale, and the new keys
//! lose every duel until the next halvings bring those counts down: the P3 trace at 131,072
//! entries lost a third of its hits for a quarter of a million requests that way.
//!
//! A key rejected by the duel and asked for again while still in the *rejected* ghost (the
//! hashes of the last rejections, as many as half the shard's entries) is a returning key;
//! when it next leaves the window it enters the main space even if it loses the duel, as
//! CLOCK-Pro and 2Q admit a key that returns to their ghost list. The miss and the insert that
//! follows it are two calls, and other requests' misses and inserts may come between them (a
//! fetch from the origin takes a while), so the shard remembers the last [`RETURNING_MAX`]
//! returning keys until their inserts rather than only the last one. A readmitted key
//! displaces one main entry, never more (a returning key too heavy for one victim's room has
//! to win its duels), and never one whose count is at the sketch's ceiling: such an entry was
//! asked for often since the last halving, so its count is not stale, and a scan of keys each
//! asked for twice must not push it out.
//!
//! Readmission would churn the main space under Zipf, where a rejected key returning soon is a
//! marginal key rightly turned away, so it earns its place: a readmitted entry that is hit in
//! the main space adds a credit, one that leaves it unhit (evicted, expired or removed: the
//! victim it displaced was lost for nothing) takes one away, and while the credit is negative
//! only one returning key in [`EXPLORE_EVERY`] is readmitted, enough to notice when it pays
//! again.
//!
//! Harm is also seen directly: the shard remembers the last entries readmissions displaced,
//! and one of them asked for again is a hit readmission cost (unless it was stored again or
//! removed since: it did not miss for the readmission's sake; an expired entry is never
//! displaced, the duel reclaims it first). It takes a credit away and
//! halves the rate of exploration (down to one returning key in `EXPLORE_EVERY` ×
//! 2^[`MAX_BACKOFF`]) until a readmitted entry is hit again. Without it, a warm hot set whose
//! counts are low lost a hit in sixteen to a scan whose keys each return once (`shard.rs`,
//! `a_scan_of_returning_keys_costs_a_warm_hot_set_few_hits`).

use super::ghost::Ghost;

/// The rejected ghost holds the hashes of this fraction (1/2) of the shard's entry count:
/// on the P3 trace at 131,072 entries a half measured higher than a third or a whole, and the
/// small Zipf rows did not move.
const REJECTED_DIVISOR: usize = 2;
/// The smallest rejected ghost, for small shards.
const REJECTED_MIN: usize = 16;
/// The credit's bound either way: how many outcomes readmission remembers.
const CREDIT_BOUND: i32 = 32;
/// While the credit is negative, one returning key in this many is still readmitted.
const EXPLORE_EVERY: u32 = 32;
/// How many times exploration may halve its rate: to one returning key in 1,024.
const MAX_BACKOFF: u32 = 5;
/// Returning keys remembered between their misses and their inserts: as many misses of other
/// returning keys as may come between one key's miss and its insert.
const RETURNING_MAX: usize = 64;

/// The shard's readmission state.
#[derive(Debug, Default)]
pub(crate) struct Readmission {
    /// Keys the duel rejected recently.
    rejected: Ghost,
    /// Keys missed while in the rejected ghost, until their inserts (the last
    /// [`RETURNING_MAX`]).
    returning: Ghost,
    /// Entries a readmission displaced (the last [`RETURNING_MAX`]).
    displaced: Ghost,
    /// Readmitted entries hit in the main space minus those evicted unhit, within bounds.
    credit: i32,
    /// Returning keys refused while the credit was negative, counted for exploration.
    refused: u32,
    /// Exploration readmits one returning key in `EXPLORE_EVERY << backoff`.
    backoff: u32,
}

impl Readmission {
    /// Remembers a key the admission duel rejected, in a shard of `entries` entries.
    pub(crate) fn on_rejected(&mut self, hash: u64, entries: usize) {
        let capacity = (entries / REJECTED_DIVISOR).max(REJECTED_MIN);
        self.rejected.push(hash, capacity);
    }

    /// Notes a miss: a key in the rejected ghost is returning; a key a readmission displaced
    /// that is asked for again shows readmission cost a hit.
    pub(crate) fn on_miss(&mut self, hash: u64) {
        if self.rejected.take(hash) {
            self.returning.push(hash, RETURNING_MAX);
        }
        if self.displaced.take(hash) {
            self.credit = (self.credit - 1).max(-CREDIT_BOUND);
            self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
        }
    }

    /// Notes the main entry a readmission displaced.
    pub(crate) fn on_displaced(&mut self, hash: u64) {
        self.displaced.push(hash, RETURNING_MAX);
    }

    /// Forgets that a readmission displaced the key: it was stored again or removed, so its
    /// next miss is not a hit the readmission cost.
    pub(crate) fn forget_displaced(&mut self, hash: u64) {
        self.displaced.take(hash);
    }

    /// Whether the key being inserted missed while in the rejected ghost; it is returning once.
    pub(crate) fn take_returning(&mut self, hash: u64) -> bool {
        self.returning.take(hash)
    }

    /// Whether a returning key that lost the duel enters the main space anyway.
    pub(crate) fn allow(&mut self) -> bool {
        if self.credit >= 0 {
            return true;
        }
        self.refused = self.refused.wrapping_add(1);
        self.refused.is_multiple_of(EXPLORE_EVERY << self.backoff)
    }

    /// A readmitted entry was hit in the main space: readmission paid, and exploration
    /// returns to its full rate.
    pub(crate) fn on_readmitted_hit(&mut self) {
        self.credit = (self.credit + 1).min(CREDIT_BOUND);
        self.backoff = 0;
    }

    /// The credit, for tests of the shard's accounting.
    #[cfg(test)]
    pub(crate) fn credit(&self) -> i32 {
        self.credit
    }

    /// A readmitted entry left the main space without a hit there: its victim was lost for
    /// nothing.
    pub(crate) fn on_readmitted_left_unhit(&mut self) {
        self.credit = (self.credit - 1).max(-CREDIT_BOUND);
    }
}

#[cfg(test)]
mod tests {
    use super::{CREDIT_BOUND, EXPLORE_EVERY, MAX_BACKOFF, RETURNING_MAX, Readmission};

    /// How many of `returning` returning keys readmission allows.
    fn allowed(readmission: &mut Readmission, returning: u32) -> u32 {
        (0..returning).map(|_| u32::from(readmission.allow())).sum()
    }

    #[test]
    fn a_displaced_key_asked_for_again_costs_credit_and_slows_exploration() {
        let mut readmission = Readmission::default();
        readmission.on_displaced(5);
        readmission.on_miss(6);
        assert_eq!(readmission.credit(), 0, "only a displaced key counts");
        readmission.on_miss(5);
        assert_eq!(readmission.credit(), -1);
        readmission.on_miss(5);
        assert_eq!(readmission.credit(), -1, "each displacement counts once");
        // One harm seen: exploration at half its rate.
        assert_eq!(allowed(&mut readmission, 64 * EXPLORE_EVERY), 32);
        // Each further harm halves it again, down to a floor.
        for hash in 100..120 {
            readmission.on_displaced(hash);
            readmission.on_miss(hash);
        }
        let slowest = EXPLORE_EVERY << MAX_BACKOFF;
        assert_eq!(allowed(&mut readmission, 4 * slowest), 4);
        // A readmitted hit restores the full rate (the credit is still negative).
        readmission.on_readmitted_hit();
        assert!(readmission.credit() < 0);
        assert_eq!(allowed(&mut readmission, 4 * EXPLORE_EVERY), 4);
    }

    #[test]
    fn only_a_rejected_key_missed_again_is_returning() {
        let mut readmission = Readmission::default();
        readmission.on_rejected(7, 300);
        readmission.on_miss(8);
        assert!(!readmission.take_returning(8));
        readmission.on_miss(7);
        // Another key's insert does not clear the note; the key's own insert takes it.
        assert!(!readmission.take_returning(9));
        assert!(readmission.take_returning(7));
        assert!(!readmission.take_returning(7));
        // The ghost gave the hash up when it was missed.
        readmission.on_miss(7);
        assert!(!readmission.take_returning(7));
    }

    #[test]
    fn the_last_returning_keys_are_remembered_until_their_inserts() {
        let mut readmission = Readmission::default();
        let keys = RETURNING_MAX as u64 + 1;
        for hash in 0..keys {
            readmission.on_rejected(hash, 1_000);
        }
        for hash in 0..keys {
            readmission.on_miss(hash);
        }
        // The oldest note is gone; the other misses are all still returning.
        assert!(!readmission.take_returning(0));
        assert!((1..keys).all(|hash| readmission.take_returning(hash)));
    }

    #[test]
    fn the_rejected_ghost_holds_half_the_entry_count() {
        let mut readmission = Readmission::default();
        for hash in 0..200 {
            readmission.on_rejected(hash, 300);
        }
        readmission.on_miss(49);
        assert!(!readmission.take_returning(49));
        readmission.on_miss(50);
        assert!(readmission.take_returning(50));
    }

    #[test]
    fn failures_make_readmission_rare_until_it_pays_again() {
        let mut readmission = Readmission::default();
        assert!(readmission.allow());
        readmission.on_readmitted_left_unhit();
        let allowed = (0..EXPLORE_EVERY * 4)
            .filter(|_| readmission.allow())
            .count();
        assert_eq!(allowed, 4);
        readmission.on_readmitted_hit();
        assert!(readmission.allow());
        for _ in 0..CREDIT_BOUND * 3 {
            readmission.on_readmitted_hit();
        }
        // The credit is bounded: as many failures as the bound turn it negative again.
        for _ in 0..=CREDIT_BOUND {
            readmission.on_readmitted_left_unhit();
        }
        assert!((0..EXPLORE_EVERY - 1).any(|_| !readmission.allow()));
    }
}
