//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a log, a stream or a work queue.
///
/// I/O errors carry the operation and the file; corruption names the segment file and the
/// byte position where a record failed its checks, so an operator can inspect it. Nothing
/// is deleted when corruption is found: the log refuses to open until a person decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    Io {
        /// What was being done (`"open"`, `"append"`, `"fsync"`, ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A record or segment header failed its checks somewhere other than a torn tail: valid
    /// records follow it, or it sits in a segment that is no longer written. The log does not
    /// open (and nothing is deleted): restore the segment from a replica or backup, or move it
    /// away knowing its records are lost.
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// The byte position of the bad record (or header) in that file.
        position: u64,
        /// What check failed.
        reason: &'static str,
    },
    /// A payload is larger than [`LogOptions::max_record_bytes`](crate::log::LogOptions).
    RecordTooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The largest payload accepted.
        max: u32,
    },
    /// An option is out of range; the reason says which and why.
    InvalidOptions {
        /// Which option and its bounds.
        reason: &'static str,
    },
    /// The requested offset was removed by retention; read from
    /// [`Log::first_offset`](crate::log::Log::first_offset) instead.
    OffsetTruncated {
        /// The offset asked for.
        requested: u64,
        /// The oldest offset still kept.
        first: u64,
    },
    /// An earlier write, fsync or segment roll failed, so what is on disk is unknown (after a
    /// failed fsync the kernel may have dropped the dirty pages). The log refuses every further
    /// append; drop it and open it again, which recovers from what the disk really holds.
    Failed,
    /// Another open [`Log`](crate::log::Log) (in this process or another) holds the directory.
    Locked {
        /// The log's directory.
        dir: PathBuf,
    },
    /// A stream name, partition count or consumer group name is not usable; the reason says why.
    InvalidName {
        /// What is wrong with it.
        reason: &'static str,
    },
    // ---- work queue (mqwork) variants: add below this line ----
    /// No delivery of the message at `offset` was ever made as `attempt`: the offset is past
    /// the end of the queue, or the attempt is 0 (attempts start at 1) or newer than any
    /// delivery of it.
    UnknownDelivery {
        /// The message's offset.
        offset: u64,
        /// The attempt named.
        attempt: u32,
    },
    /// The message was already acked, terminated or dead-lettered; nothing is left to settle.
    AlreadySettled {
        /// The message's offset.
        offset: u64,
    },
    /// The lease of this attempt ran out and the message was received again (as attempt
    /// `current`): the late holder must stop, its ack or nack would settle someone else's work.
    Redelivered {
        /// The message's offset.
        offset: u64,
        /// The stale attempt named.
        attempt: u32,
        /// The attempt that holds or last held the message.
        current: u32,
    },
    /// This attempt already gave the message back with a nack; it is waiting for redelivery.
    NotLeased {
        /// The message's offset.
        offset: u64,
        /// The attempt named.
        attempt: u32,
    },
    /// The queue holds its capacity of unsettled messages; retry after consumers settle some,
    /// or use the blocking `send`.
    Full {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A message payload is larger than the queue's `max_message_bytes`.
    MessageTooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// A producer message id is empty or longer than `queue::MAX_ID_LEN` bytes.
    InvalidMessageId {
        /// The id's length in bytes.
        len: usize,
    },
    /// A delay, lease extension or timeout is longer than `queue::MAX_DURATION`.
    InvalidDuration {
        /// The duration given.
        duration: std::time::Duration,
    },
    /// No queue exists in this directory, and the options say not to create one.
    UnknownQueue {
        /// The directory asked for.
        dir: PathBuf,
    },
    /// No stream exists in this directory, and the options say not to create one.
    UnknownStream {
        /// The directory asked for.
        dir: PathBuf,
    },
    /// A record of a queue's state journal cannot be decoded: the journal was written by
    /// something else or damaged past what the log's checksums catch.
    CorruptJournal {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A stored message (or dead letter) cannot be decoded.
    CorruptMessage {
        /// Its offset in its log.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    // ---- end of work queue variants ----
    // ---- Redis backend (mqredis) variants ----
    /// The Redis server or the connection to it failed, or answered something unexpected. The
    /// outcome of the call is unknown: a send may or may not have been stored.
    Backend {
        /// What went wrong, as reported by the client or the server.
        reason: String,
    },
    /// The backend cannot do what was asked; the reason says what and why.
    Unsupported {
        /// What is not supported.
        reason: &'static str,
    },
    /// A Redis stream entry whose id is not one the queue gives (`0-N`), so it has no offset:
    /// another client added it by hand, with a time-based id. Named by its stream id, so an
    /// operator can find it.
    ForeignEntry {
        /// The entry's stream id (`<milliseconds>-<sequence>`).
        id: String,
        /// Where it was found and what is wrong with it.
        reason: &'static str,
    },
    // ---- end of Redis backend variants ----
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The same failure for a waiter other than the caller that got it: an `Io` error is rebuilt
    /// from its kind and message (an `io::Error` cannot be cloned), anything else is `Failed`.
    pub(crate) fn for_another_waiter(&self) -> Self {
        match self {
            Self::Io { op, path, source } => Self::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            _ => Self::Failed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { op, path, source } => {
                write!(f, "{op} failed on {}: {source}", path.display())
            }
            Self::Corrupt {
                segment,
                position,
                reason,
            } => write!(
                f,
                "corrupt log segment {} at byte {position}: {reason}",
                segment.display()
            ),
            Self::RecordTooLarge { len, max } => {
                write!(f, "record of {len} bytes is larger than the limit of {max}")
            }
            Self::InvalidOptions { reason } => write!(f, "invalid log options: {reason}"),
            Self::OffsetTruncated { requested, first } => write!(
                f,
                "offset {requested} was removed by retention; the oldest kept is {first}"
            ),
            Self::Failed => f.write_str(
                "an earlier write, fsync or segment roll failed; reopen the log to recover from what is on disk",
            ),
            Self::Locked { dir } => {
                write!(f, "the log in {} is already open", dir.display())
            }
            Self::InvalidName { reason } => write!(f, "invalid name: {reason}"),
            // ---- work queue (mqwork) variants, to the end of the match ----
            Self::UnknownDelivery { offset, attempt } => write!(
                f,
                "message {offset} was never delivered as attempt {attempt}"
            ),
            Self::AlreadySettled { offset } => write!(
                f,
                "message {offset} is already acked, terminated or dead-lettered"
            ),
            Self::Redelivered {
                offset,
                attempt,
                current,
            } => write!(
                f,
                "attempt {attempt} of message {offset} lost its lease: the message was redelivered as attempt {current}"
            ),
            Self::NotLeased { offset, attempt } => write!(
                f,
                "attempt {attempt} of message {offset} was already nacked"
            ),
            Self::Full { capacity } => write!(
                f,
                "the queue holds its capacity of {capacity} unsettled messages"
            ),
            Self::MessageTooLarge { len, max } => write!(
                f,
                "message of {len} bytes is larger than the limit of {max}"
            ),
            Self::InvalidMessageId { len } => {
                write!(f, "message id of {len} bytes: ids are 1 to 255 bytes")
            }
            Self::InvalidDuration { duration } => write!(
                f,
                "duration {duration:?} is longer than the one year accepted"
            ),
            Self::UnknownQueue { dir } => {
                write!(f, "no queue in {} (and create is off)", dir.display())
            }
            Self::UnknownStream { dir } => {
                write!(f, "no stream in {} (and create is off)", dir.display())
            }
            Self::CorruptJournal { reason } => write!(f, "corrupt queue journal: {reason}"),
            Self::CorruptMessage { offset, reason } => {
                write!(f, "corrupt stored message at offset {offset}: {reason}")
            }
            Self::Backend { reason } => write!(f, "the queue server failed: {reason}"),
            Self::Unsupported { reason } => write!(f, "not supported: {reason}"),
            Self::ForeignEntry { id, reason } => {
                write!(f, "stream entry {id} was not written by the queue: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
