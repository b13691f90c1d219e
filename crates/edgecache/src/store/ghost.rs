//! Ghosts: the hashes of recently evicted keys, without their values.
//!
//! A request for a key that was just evicted is a mistake the policy can learn from, as ARC
//! (Megiddo and Modha, FAST 2003) does with its ghost lists. The shard keeps two ghosts: keys
//! the window let go (the admission duel rejected them) and keys the main space let go. A miss
//! on the first says the window is too small; a miss on the second says it is too large.

use std::collections::VecDeque;

use hashbrown::HashTable;

/// A bounded first-in first-out set of key hashes.
#[derive(Debug, Default)]
pub(crate) struct Ghost {
    /// Hash and the sequence number of its latest push; at most one row per hash.
    members: HashTable<(u64, u64)>,
    /// Pushes in order; a row whose sequence number is not its hash's latest is stale.
    order: VecDeque<(u64, u64)>,
    sequence: u64,
}

impl Ghost {
    /// The number of hashes held.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Remembers `hash`, forgetting the oldest hashes beyond `capacity`.
    pub(crate) fn push(&mut self, hash: u64, capacity: usize) {
        self.sequence += 1;
        let sequence = self.sequence;
        match self.members.find_mut(hash, |&(member, _)| member == hash) {
            Some(row) => row.1 = sequence,
            None => {
                self.members
                    .insert_unique(hash, (hash, sequence), |&(member, _)| member);
            }
        }
        self.order.push_back((hash, sequence));
        // Stale rows count against the bound too, so memory stays within `capacity` rows.
        while self.order.len() > capacity.max(1) {
            let Some((old, old_sequence)) = self.order.pop_front() else {
                break;
            };
            if let Ok(row) = self.members.find_entry(old, |&(member, latest)| {
                member == old && latest == old_sequence
            }) {
                row.remove();
            }
        }
    }

    /// Forgets `hash`, returning whether it was remembered.
    pub(crate) fn take(&mut self, hash: u64) -> bool {
        match self.members.find_entry(hash, |&(member, _)| member == hash) {
            Ok(row) => {
                row.remove();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ghost;

    #[test]
    fn remembers_the_most_recent_pushes_only() {
        let mut ghost = Ghost::default();
        for hash in 0..10 {
            ghost.push(hash, 4);
        }
        assert_eq!(ghost.len(), 4);
        assert!(!ghost.take(5));
        assert!(ghost.take(6));
        assert!(!ghost.take(6));
        assert!(ghost.take(9));
    }

    #[test]
    fn a_repeated_push_refreshes_a_hash() {
        let mut ghost = Ghost::default();
        ghost.push(1, 3);
        ghost.push(2, 3);
        ghost.push(1, 3);
        ghost.push(3, 3);
        ghost.push(4, 3);
        // The queue held 1, 2, 1, 3, 4: the first 1 and 2 are gone, the refreshed 1 stays.
        assert!(ghost.take(1));
        assert!(!ghost.take(2));
        assert_eq!(ghost.len(), 2);
    }
}
