//! The state journal: the compact records that let a durable queue rebuild its leases.
//!
//! Messages live in one log; what happened to them lives in a second one, a record per
//! receive, ack, term, nack and dead letter. Replay folds the records per offset in a way
//! that does not depend on their order in the journal (two consumers' records of different
//! messages interleave freely, and a nack's record may land after the next receive's):
//!
//! - deliveries = the highest attempt that more `Received` records name than `Withdrawn` ones
//!   (a `Withdrawn` record takes back a delivery whose receive never reached its caller, and
//!   that attempt is delivered again by the next receive); an attempt withdrawn as often as it
//!   was received still proves the one before it, which counts unless it too was withdrawn as
//!   often as received (a withdrawn receive of an attempt can have taken over the lease of a
//!   withdrawn one before it; and a delivery taken back before its own `Received` record
//!   was written, whose lease a withdrawn one handed back to it, is journaled as a
//!   `Received` and a `Withdrawn` record of its attempt, which cancel out and say that it
//!   does not count); or the highest attempt a `Nacked` record names if higher;
//! - settled = any `Acked`, `Terminated` or `DeadLettered` record, an offset below a
//!   `Checkpoint` watermark, or one inside a `SettledRange`;
//! - waiting until = the `Nacked` record of the latest attempt, if any.
//!
//! Every record is a tag byte and fixed-width little-endian fields, so decoding needs no
//! allocation and a wrong length is caught before anything is read.

use std::collections::BTreeMap;

use crate::error::Error;

const RECEIVED: u8 = 1;
const ACKED: u8 = 2;
const TERMINATED: u8 = 3;
const DEAD_LETTERED: u8 = 4;
const NACKED: u8 = 5;
const CHECKPOINT: u8 = 6;
const SETTLED_RANGE: u8 = 7;
const WITHDRAWN: u8 = 8;

/// One journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `offset` was delivered as `attempt` (its delivery count is now `attempt`). Followed by
    /// a `Withdrawn` record of the same attempt, it may instead name a delivery taken back
    /// before its own record was written, so that replay does not count it on the strength
    /// of a withdrawn attempt above it.
    Received { offset: u64, attempt: u32 },
    /// `offset` was acknowledged.
    Acked { offset: u64 },
    /// `offset` was terminated.
    Terminated { offset: u64 },
    /// `offset` was written to the dead-letter topic.
    DeadLettered { offset: u64 },
    /// `attempt` of `offset` was given back, not to be delivered before the wall-clock time
    /// `not_before_ms` (milliseconds since the Unix epoch).
    Nacked {
        offset: u64,
        attempt: u32,
        not_before_ms: u64,
    },
    /// Every offset below `watermark` is settled.
    Checkpoint { watermark: u64 },
    /// Every offset in `from..end` is settled (never empty). A checkpoint says so of each
    /// stretch of settled messages above its watermark in one record, not one per message,
    /// so its size follows the unsettled messages, not the history behind an old one.
    SettledRange { from: u64, end: u64 },
    /// The delivery `attempt` of `offset`, journaled by a `Received` record, never reached its
    /// caller (an async receive dropped while it waited for the record's fsync): it does not
    /// count, and the next receive delivers the same attempt again.
    Withdrawn { offset: u64, attempt: u32 },
}

impl Entry {
    /// The record's bytes.
    pub(crate) fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        match self {
            Self::Received { offset, attempt } => {
                out.push(RECEIVED);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
            }
            Self::Withdrawn { offset, attempt } => {
                out.push(WITHDRAWN);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
            }
            Self::Acked { offset } => {
                out.push(ACKED);
                out.extend_from_slice(&offset.to_le_bytes());
            }
            Self::Terminated { offset } => {
                out.push(TERMINATED);
                out.extend_from_slice(&offset.to_le_bytes());
            }
            Self::DeadLettered { offset } => {
                out.push(DEAD_LETTERED);
                out.extend_from_slice(&offset.to_le_bytes());
            }
            Self::Nacked {
                offset,
                attempt,
                not_before_ms,
            } => {
                out.push(NACKED);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&not_before_ms.to_le_bytes());
            }
            Self::Checkpoint { watermark } => {
                out.push(CHECKPOINT);
                out.extend_from_slice(&watermark.to_le_bytes());
            }
            Self::SettledRange { from, end } => {
                out.push(SETTLED_RANGE);
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
        }
        out
    }

    /// Parses one record; anything malformed is [`Error::CorruptJournal`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason| Error::CorruptJournal { reason };
        let (&tag, rest) = bytes.split_first().ok_or(bad("empty record"))?;
        let expected = match tag {
            RECEIVED | WITHDRAWN => 12,
            ACKED | TERMINATED | DEAD_LETTERED | CHECKPOINT => 8,
            NACKED => 20,
            SETTLED_RANGE => 16,
            _ => return Err(bad("unknown record tag")),
        };
        if rest.len() != expected {
            return Err(bad("record length does not match its tag"));
        }
        let u64_at = |at: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&rest[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |at: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&rest[at..at + 4]);
            u32::from_le_bytes(word)
        };
        let offset = u64_at(0);
        Ok(match tag {
            RECEIVED => Self::Received {
                offset,
                attempt: u32_at(8),
            },
            WITHDRAWN => Self::Withdrawn {
                offset,
                attempt: u32_at(8),
            },
            ACKED => Self::Acked { offset },
            TERMINATED => Self::Terminated { offset },
            DEAD_LETTERED => Self::DeadLettered { offset },
            NACKED => Self::Nacked {
                offset,
                attempt: u32_at(8),
                not_before_ms: u64_at(12),
            },
            SETTLED_RANGE => {
                let end = u64_at(8);
                if offset >= end {
                    return Err(bad("settled range is empty"));
                }
                Self::SettledRange { from: offset, end }
            }
            _ => Self::Checkpoint { watermark: offset },
        })
    }
}

/// What replay learned about one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Its delivery count (while replay folds records in: the highest attempt nacked).
    pub(crate) deliveries: u32,
    /// Whether it was settled, and how.
    pub(crate) settled: Option<super::lease::Outcome>,
    /// The latest attempt that was nacked, and until when (wall-clock milliseconds).
    pub(crate) nacked: Option<(u32, u64)>,
}

/// The fold of a whole journal.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// Every offset below it is settled.
    pub(crate) watermark: u64,
    /// Per-offset state at or above the watermark.
    pub(crate) messages: BTreeMap<u64, Recovered>,
    /// Settled stretches above the watermark, `from -> end`: disjoint and not touching (a
    /// range folded in merges with its neighbours), kept apart from `messages` so that replay
    /// holds one entry per stretch rather than one per settled message.
    settled_ranges: BTreeMap<u64, u64>,
    /// Per offset and attempt named by a `Received` or `Withdrawn` record, how many more
    /// `Received` records than `Withdrawn` ones name it: counted, not just seen, so that an
    /// attempt withdrawn and then delivered again counts whatever order the records come in.
    attempts: BTreeMap<(u64, u32), i64>,
}

impl Replay {
    /// Folds one record in.
    pub(crate) fn apply(&mut self, entry: Entry) {
        use super::lease::Outcome;
        let settle = |replay: &mut Self, offset, outcome| {
            replay
                .messages
                .entry(offset)
                .or_default()
                .settled
                .get_or_insert(outcome);
        };
        match entry {
            Entry::Received { offset, attempt } => self.count_attempt(offset, attempt, 1),
            Entry::Withdrawn { offset, attempt } => self.count_attempt(offset, attempt, -1),
            Entry::Acked { offset } => settle(self, offset, Outcome::Acked),
            Entry::Terminated { offset } => settle(self, offset, Outcome::Terminated),
            Entry::DeadLettered { offset } => settle(self, offset, Outcome::DeadLettered),
            Entry::Nacked {
                offset,
                attempt,
                not_before_ms,
            } => {
                let message = self.messages.entry(offset).or_default();
                message.deliveries = message.deliveries.max(attempt);
                if message.nacked.is_none_or(|(seen, _)| seen <= attempt) {
                    message.nacked = Some((attempt, not_before_ms));
                }
            }
            Entry::Checkpoint { watermark } => {
                self.watermark = self.watermark.max(watermark);
            }
            Entry::SettledRange { from, end } => self.add_settled_range(from, end),
        }
    }

    /// Counts a `Received` (`by` 1) or `Withdrawn` (`by` -1) record of `attempt`.
    fn count_attempt(&mut self, offset: u64, attempt: u32, by: i64) {
        // Listed in `messages` too, so that `forget_from` sees the record.
        self.messages.entry(offset).or_default();
        let balance = self.attempts.entry((offset, attempt)).or_insert(0);
        *balance = balance.saturating_add(by);
    }

    /// The deliveries the `Received` and `Withdrawn` records of `offset` prove: walking down
    /// from the highest attempt they name, the first that a receive of it still stands for,
    /// or the first that no record names (the receive of the attempt after it proves it).
    fn received_deliveries(&self, offset: u64) -> u32 {
        let mut proven = 0;
        for (&(_, attempt), &balance) in self.attempts.range((offset, 0)..=(offset, u32::MAX)).rev()
        {
            if proven != 0 && attempt != proven {
                break;
            }
            if balance > 0 {
                return attempt;
            }
            proven = attempt.saturating_sub(1);
            if proven == 0 {
                break;
            }
        }
        proven
    }

    /// Folds `from..end` into the settled ranges, merging it with every range it overlaps or
    /// touches, so that a lookup needs only the range starting at or before an offset.
    fn add_settled_range(&mut self, mut from: u64, mut end: u64) {
        if let Some((&before, &before_end)) = self.settled_ranges.range(..=from).next_back()
            && before_end >= from
        {
            from = before;
            end = end.max(before_end);
        }
        while let Some((&next, &next_end)) = self.settled_ranges.range(from..=end).next() {
            self.settled_ranges.remove(&next);
            end = end.max(next_end);
        }
        self.settled_ranges.insert(from, end);
    }

    /// Whether a settled range holds `offset`.
    fn in_settled_range(&self, offset: u64) -> bool {
        self.settled_ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// Drops what the watermark already covers, and raises the watermark over a settled range
    /// that starts at or below it.
    pub(crate) fn finish(&mut self) {
        if let Some((_, &end)) = self.settled_ranges.range(..=self.watermark).next_back() {
            self.watermark = self.watermark.max(end);
        }
        let watermark = self.watermark;
        self.messages.retain(|&offset, _| offset >= watermark);
        self.attempts.retain(|&(offset, _), _| offset >= watermark);
        self.settled_ranges = std::mem::take(&mut self.settled_ranges)
            .into_iter()
            .filter(|&(_, end)| end > watermark)
            .map(|(from, end)| (from.max(watermark), end))
            .collect();
    }

    /// Forgets what the journal says of offsets at or past `end`, the message log's end, and
    /// returns whether it said anything. Under a policy other than `Always` a power loss can
    /// take back messages the journal outlives (a compaction syncs its checkpoint whatever
    /// the policy), and new sends reuse their offsets.
    pub(crate) fn forget_from(&mut self, end: u64) -> bool {
        let range_past_end = self
            .settled_ranges
            .last_key_value()
            .is_some_and(|(_, &range_end)| range_end > end);
        let past_end =
            self.watermark > end || self.messages.range(end..).next().is_some() || range_past_end;
        self.watermark = self.watermark.min(end);
        self.messages.split_off(&end);
        self.attempts.split_off(&(end, 0));
        self.settled_ranges.split_off(&end);
        if let Some(range_end) = self.settled_ranges.values_mut().next_back() {
            *range_end = (*range_end).min(end);
        }
        past_end
    }

    /// What replay knows about `offset` (nothing: never delivered, not settled).
    pub(crate) fn get(&self, offset: u64) -> Recovered {
        let mut message = self.messages.get(&offset).copied().unwrap_or_default();
        message.deliveries = message.deliveries.max(self.received_deliveries(offset));
        if message.settled.is_none() && self.in_settled_range(offset) {
            message.settled = Some(super::lease::Outcome::Acked);
        }
        // A nack counts only if no later attempt was delivered after it.
        if message
            .nacked
            .is_some_and(|(attempt, _)| attempt < message.deliveries)
        {
            message.nacked = None;
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let entries = [
            Entry::Received {
                offset: 7,
                attempt: 3,
            },
            Entry::Acked { offset: u64::MAX },
            Entry::Terminated { offset: 0 },
            Entry::DeadLettered { offset: 9 },
            Entry::Nacked {
                offset: 1,
                attempt: 2,
                not_before_ms: 1_700_000_000_000,
            },
            Entry::Checkpoint { watermark: 42 },
            Entry::SettledRange {
                from: 43,
                end: u64::MAX,
            },
            Entry::Withdrawn {
                offset: 8,
                attempt: 4,
            },
        ];
        for entry in entries {
            assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        for bytes in [&[][..], &[0][..], &[ACKED, 1, 2][..], &[RECEIVED; 14][..]] {
            assert!(matches!(
                Entry::decode(bytes),
                Err(Error::CorruptJournal { .. })
            ));
        }
    }

    #[test]
    fn an_empty_or_backward_settled_range_is_corrupt() {
        for (from, end) in [(5u64, 5u64), (6, 5), (u64::MAX, 0)] {
            let mut bytes = vec![SETTLED_RANGE];
            bytes.extend_from_slice(&from.to_le_bytes());
            bytes.extend_from_slice(&end.to_le_bytes());
            assert!(
                matches!(Entry::decode(&bytes), Err(Error::CorruptJournal { .. })),
                "{from}..{end}"
            );
        }
    }

    fn replay(records: &[Entry]) -> Replay {
        let mut replay = Replay::default();
        records.iter().for_each(|&entry| replay.apply(entry));
        replay.finish();
        replay
    }

    fn settled(replay: &Replay, offsets: std::ops::Range<u64>) -> Vec<u64> {
        offsets
            .filter(|&offset| replay.get(offset).settled.is_some())
            .collect()
    }

    #[test]
    fn offsets_inside_a_settled_range_are_settled_and_its_ends_are_exact() {
        let replay = replay(&[
            Entry::Checkpoint { watermark: 2 },
            Entry::Received {
                offset: 2,
                attempt: 1,
            },
            Entry::SettledRange { from: 3, end: 6 },
            Entry::Received {
                offset: 6,
                attempt: 2,
            },
            Entry::SettledRange { from: 7, end: 9 },
            Entry::Acked { offset: 10 },
        ]);
        assert_eq!(replay.watermark, 2);
        assert_eq!(settled(&replay, 0..12), [3, 4, 5, 7, 8, 10]);
        assert_eq!(
            replay.get(4).settled,
            Some(super::super::lease::Outcome::Acked)
        );
        assert_eq!(replay.get(6).deliveries, 2);
        assert_eq!(replay.settled_ranges.len(), 2, "one entry per stretch");
    }

    #[test]
    fn overlapping_and_touching_ranges_merge_in_any_order() {
        let ranges = [(10, 12), (12, 15), (20, 25), (11, 21), (30, 31)];
        let forward: Vec<Entry> = ranges
            .iter()
            .map(|&(from, end)| Entry::SettledRange { from, end })
            .collect();
        let backward: Vec<Entry> = forward.iter().rev().copied().collect();
        for records in [forward, backward] {
            let replay = replay(&records);
            assert_eq!(
                replay
                    .settled_ranges
                    .iter()
                    .map(|(&f, &e)| (f, e))
                    .collect::<Vec<_>>(),
                [(10, 25), (30, 31)]
            );
            assert_eq!(
                settled(&replay, 0..40),
                [(10..25).collect(), vec![30]].concat()
            );
        }
    }

    #[test]
    fn the_watermark_clips_ranges_and_rises_over_one_that_starts_at_it() {
        let below = replay(&[
            Entry::SettledRange { from: 1, end: 4 },
            Entry::SettledRange { from: 6, end: 9 },
            Entry::Checkpoint { watermark: 7 },
            Entry::SettledRange { from: 11, end: 12 },
        ]);
        assert_eq!(below.watermark, 9, "6..9 reaches over the watermark");
        assert_eq!(settled(&below, 9..14), [11]);
        assert_eq!(below.settled_ranges.len(), 1);
        let apart = replay(&[
            Entry::Checkpoint { watermark: 5 },
            Entry::SettledRange { from: 6, end: 9 },
        ]);
        assert_eq!(apart.watermark, 5, "offset 5 is not settled");
    }

    #[test]
    fn forgetting_past_the_log_end_clips_ranges_and_asks_for_a_rewrite() {
        let records = [
            Entry::Checkpoint { watermark: 2 },
            Entry::SettledRange { from: 3, end: 6 },
            Entry::SettledRange { from: 8, end: 12 },
        ];
        let mut within = replay(&records);
        assert!(!within.forget_from(12), "nothing is said past offset 12");
        let mut cut = replay(&records);
        assert!(cut.forget_from(10), "8..12 reaches past offset 10");
        assert_eq!(settled(&cut, 0..20), [3, 4, 5, 8, 9]);
        let mut dropped = replay(&records);
        assert!(dropped.forget_from(7));
        assert_eq!(settled(&dropped, 0..20), [3, 4, 5]);
    }

    /// A journal as the versions before settled ranges wrote it: a checkpoint's settled
    /// messages one `Acked` record each, framed here byte by byte from that format.
    #[test]
    fn a_journal_of_the_format_before_settled_ranges_replays_as_before() {
        let mut records = vec![[&[CHECKPOINT][..], &3u64.to_le_bytes()].concat()];
        for offset in [4u64, 5, 7] {
            records.push([&[ACKED][..], &offset.to_le_bytes()].concat());
        }
        records.push([&[RECEIVED][..], &6u64.to_le_bytes(), &2u32.to_le_bytes()].concat());
        let entries: Vec<Entry> = records
            .iter()
            .map(|bytes| Entry::decode(bytes).unwrap())
            .collect();
        let replay = replay(&entries);
        assert_eq!(replay.watermark, 3);
        assert_eq!(settled(&replay, 0..10), [4, 5, 7]);
        assert_eq!(replay.get(6).deliveries, 2);
        assert_eq!(replay.get(3), Recovered::default());
    }

    /// Every order of `records`, for checks that a fold does not depend on it.
    fn orders(records: &[Entry]) -> Vec<Vec<Entry>> {
        if records.len() <= 1 {
            return vec![records.to_vec()];
        }
        let mut all = Vec::new();
        for (at, &first) in records.iter().enumerate() {
            let mut rest = records.to_vec();
            rest.remove(at);
            for mut order in orders(&rest) {
                order.insert(0, first);
                all.push(order);
            }
        }
        all
    }

    /// A withdrawn delivery does not count; one withdrawn and then made again does; a
    /// checkpoint's `Received` record of the attempt withdrawn after it is taken back the same
    /// way; in every order of the records.
    #[test]
    fn withdrawn_deliveries_do_not_count_in_any_order() {
        let received = |attempt| Entry::Received { offset: 3, attempt };
        let withdrawn = |attempt| Entry::Withdrawn { offset: 3, attempt };
        let nacked = Entry::Nacked {
            offset: 3,
            attempt: 1,
            not_before_ms: 5,
        };
        // The records, then the deliveries and the nack replay finds.
        type Case<'a> = (&'a [Entry], u32, Option<(u32, u64)>);
        let cases: [Case<'_>; 12] = [
            (&[received(1), withdrawn(1)], 0, None),
            (&[received(1), withdrawn(1), received(1)], 1, None),
            (&[received(1), received(2), withdrawn(2)], 1, None),
            (
                &[received(1), nacked, received(2), withdrawn(2)],
                1,
                Some((1, 5)),
            ),
            (
                &[received(1), withdrawn(1), received(1), withdrawn(1)],
                0,
                None,
            ),
            // The receive of attempt 2 took over attempt 1's expired lease, and both receives
            // were dropped: the second gave the lease back to the first, which gave it back.
            (
                &[received(1), received(2), withdrawn(2), withdrawn(1)],
                0,
                None,
            ),
            // The same, with attempt 1 received again since: it counts.
            (
                &[
                    received(1),
                    received(2),
                    withdrawn(2),
                    withdrawn(1),
                    received(1),
                ],
                1,
                None,
            ),
            // Attempt 1 was taken back before its own record was written, under attempt 2
            // that took its lease and was withdrawn: named as received and withdrawn both.
            (
                &[received(2), withdrawn(2), received(1), withdrawn(1)],
                0,
                None,
            ),
            // The same while the receive of attempt 1 goes on, and writes its own record.
            (
                &[
                    received(2),
                    withdrawn(2),
                    received(1),
                    withdrawn(1),
                    received(1),
                ],
                1,
                None,
            ),
            // A checkpoint said 2 (the lease table with the unwritten attempt 1 below it).
            (
                &[
                    Entry::Checkpoint { watermark: 2 },
                    received(2),
                    withdrawn(2),
                    received(1),
                    withdrawn(1),
                ],
                0,
                None,
            ),
            // A withdrawn attempt 3 proves attempt 2, which no record names.
            (&[received(1), received(3), withdrawn(3)], 2, None),
            // A checkpoint said 2 (the lease table before the withdrawal); the receive's own
            // record was in the generation it replaced.
            (
                &[
                    Entry::Checkpoint { watermark: 2 },
                    received(2),
                    withdrawn(2),
                ],
                1,
                None,
            ),
        ];
        for (records, deliveries, nacked) in cases {
            for order in orders(records) {
                let replayed = replay(&order).get(3);
                assert_eq!(
                    (replayed.deliveries, replayed.nacked),
                    (deliveries, nacked),
                    "{order:?}"
                );
            }
        }
    }

    /// A journal written before `Withdrawn` records existed (tags 1 to 7, framed here byte by
    /// byte from that format), with a message received twice as the same attempt, replays as
    /// it did: a delivery counts once per attempt, the highest attempt is the count.
    #[test]
    fn a_journal_of_the_format_before_withdrawals_replays_as_before() {
        let received = |offset: u64, attempt: u32| {
            [
                &[RECEIVED][..],
                &offset.to_le_bytes(),
                &attempt.to_le_bytes(),
            ]
            .concat()
        };
        let records = [
            [&[CHECKPOINT][..], &1u64.to_le_bytes()].concat(),
            received(1, 1),
            received(1, 1),
            received(2, 1),
            received(2, 2),
            [
                &[NACKED][..],
                &2u64.to_le_bytes(),
                &2u32.to_le_bytes(),
                &9u64.to_le_bytes(),
            ]
            .concat(),
            [&[ACKED][..], &3u64.to_le_bytes()].concat(),
        ];
        let entries: Vec<Entry> = records
            .iter()
            .map(|bytes| Entry::decode(bytes).unwrap())
            .collect();
        let replay = replay(&entries);
        assert_eq!(replay.get(1).deliveries, 1);
        let nacked = replay.get(2);
        assert_eq!((nacked.deliveries, nacked.nacked), (2, Some((2, 9))));
        assert!(replay.get(3).settled.is_some());
        assert_eq!(replay.get(4), Recovered::default());
    }

    #[test]
    fn replay_does_not_depend_on_record_order() {
        let records = [
            Entry::Received {
                offset: 5,
                attempt: 1,
            },
            Entry::Nacked {
                offset: 5,
                attempt: 1,
                not_before_ms: 10,
            },
            Entry::Received {
                offset: 5,
                attempt: 2,
            },
        ];
        let mut forward = Replay::default();
        records.iter().for_each(|&entry| forward.apply(entry));
        let mut backward = Replay::default();
        records
            .iter()
            .rev()
            .for_each(|&entry| backward.apply(entry));
        for replay in [forward, backward] {
            let message = replay.get(5);
            assert_eq!(message.deliveries, 2);
            assert_eq!(message.nacked, None, "attempt 2 came after the nack");
        }
    }
}
