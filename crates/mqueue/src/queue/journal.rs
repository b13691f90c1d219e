//! The state journal: the compact records that let a durable queue rebuild its leases.
//!
//! Messages live in one log; what happened to them lives in a second one, a record per
//! receive, ack, term, nack and dead letter. Replay folds the records per offset in a way
//! that does not depend on their order in the journal (two consumers' records of different
//! messages interleave freely, and a nack's record may land after the next receive's):
//!
//! - deliveries = the highest attempt any `Received` record names;
//! - settled = any `Acked`, `Terminated` or `DeadLettered` record, or an offset below a
//!   `Checkpoint` watermark;
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

/// One journal record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `offset` was delivered as `attempt` (its delivery count is now `attempt`).
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
        }
        out
    }

    /// Parses one record; anything malformed is [`Error::CorruptJournal`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason| Error::CorruptJournal { reason };
        let (&tag, rest) = bytes.split_first().ok_or(bad("empty record"))?;
        let expected = match tag {
            RECEIVED => 12,
            ACKED | TERMINATED | DEAD_LETTERED | CHECKPOINT => 8,
            NACKED => 20,
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
            ACKED => Self::Acked { offset },
            TERMINATED => Self::Terminated { offset },
            DEAD_LETTERED => Self::DeadLettered { offset },
            NACKED => Self::Nacked {
                offset,
                attempt: u32_at(8),
                not_before_ms: u64_at(12),
            },
            _ => Self::Checkpoint { watermark: offset },
        })
    }
}

/// What replay learned about one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Its delivery count.
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
            Entry::Received { offset, attempt } => {
                let message = self.messages.entry(offset).or_default();
                message.deliveries = message.deliveries.max(attempt);
            }
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
        }
    }

    /// Drops what the watermark already covers.
    pub(crate) fn finish(&mut self) {
        let watermark = self.watermark;
        self.messages.retain(|&offset, _| offset >= watermark);
    }

    /// Forgets what the journal says of offsets at or past `end`, the message log's end, and
    /// returns whether it said anything. Under a policy other than `Always` a power loss can
    /// take back messages the journal outlives (a compaction syncs its checkpoint whatever
    /// the policy), and new sends reuse their offsets.
    pub(crate) fn forget_from(&mut self, end: u64) -> bool {
        let past_end = self.watermark > end || self.messages.range(end..).next().is_some();
        self.watermark = self.watermark.min(end);
        self.messages.split_off(&end);
        past_end
    }

    /// What replay knows about `offset` (nothing: never delivered, not settled).
    pub(crate) fn get(&self, offset: u64) -> Recovered {
        let mut message = self.messages.get(&offset).copied().unwrap_or_default();
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
