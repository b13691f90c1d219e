//! The durable side of a work queue: three logs in one directory and the journal's upkeep.
//!
//! ```text
//! <dir>/messages/       the message log (envelopes, see `envelope`)
//! <dir>/journal-<N>/    the state journal, generation N (see `journal`)
//! <dir>/JOURNAL         the current generation's number, replaced atomically
//! <dir>/dead/           the dead-letter log
//! <dir>/LOCK            held while the queue is open: a second open is `Error::Locked`
//! ```
//!
//! Compaction takes the live state as a checkpoint, writes it into generation N+1 and syncs
//! it, copies over the records appended to generation N meanwhile, then renames a new
//! `JOURNAL` file over the old one and syncs the directory: a crash before the rename reopens
//! generation N (the half-written N+1 is removed), a crash after it opens N+1. The pointer
//! holds the number and its checksum (see [`pointer_text`]).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use infra_common::Clock;
use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::envelope::Envelope;
use super::journal::{Entry, Replay};
use super::lease::Leases;
use super::{DeadLetter, QueueOptions, SharedClock, wall_ms};
use crate::error::Error;
use crate::log::{AppendTicket, FsyncPolicy, Log, Storage};
#[cfg(feature = "tokio")]
use crate::log::{PoolJob, PoolWork, RollFirst, RollJob};

/// Records read from a log per call during replay.
const REPLAY_BATCH: usize = 4096;

/// The longest `JOURNAL` file read: a generation number, a space and its checksum.
const MAX_POINTER_BYTES: usize = 32;

/// A file layer the queue can hand to each of its three logs.
pub(super) trait QueueStorage: Storage {
    /// A handle on the same files.
    fn handle(&self) -> Box<dyn Storage>;
}

impl<S: Storage + Clone + 'static> QueueStorage for S {
    fn handle(&self) -> Box<dyn Storage> {
        Box::new(self.clone())
    }
}

/// What a reopened queue recovered.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) leases: Leases,
    /// `(id, offset, sent_at_ms)` of the last messages (as many as the dedup window holds),
    /// oldest first.
    pub(super) ids: Vec<(Option<Bytes>, u64, u64)>,
    /// The journal spoke of messages past the message log's end, which replay forgot: it must
    /// be rewritten (compacted) before a send reuses their offsets.
    pub(super) rewrite_journal: bool,
}

#[derive(Debug)]
struct Journal {
    /// Shared with the writes still waiting for their fsync, which may outlive its
    /// replacement by a compaction (whose checkpoint holds their effects, or which copied
    /// them over).
    log: Arc<Log>,
    generation: u64,
    /// A compaction took its checkpoint and has not ended: no other one starts.
    compacting: bool,
}

/// The logs of one durable queue.
#[derive(Debug)]
pub(super) struct Durable {
    dir: PathBuf,
    storage: Box<dyn QueueStorage>,
    messages: Log,
    /// Appenders share the read side; compaction takes the write side to swap the log.
    journal: RwLock<Journal>,
    /// Records in the current journal generation.
    journal_records: AtomicU64,
    /// The record count at which to compact: `compact_after` more than the last checkpoint
    /// held, so a large live state is not rewritten at every record.
    compact_at: AtomicU64,
    compact_after: u64,
    /// A compaction renamed the `JOURNAL` pointer but the directory sync after it failed: a
    /// power loss may still take the rename back, and the records since with it. Journal
    /// appends sync the directory first until one such sync succeeds.
    pointer_unsynced: AtomicBool,
    dead: Log,
    /// The queue's clock, which every log of the queue runs on.
    clock: SharedClock,
    /// How many of the latest messages the dedup window reads back on open, so compaction
    /// keeps their segments.
    dedup_ids: Option<u64>,
    /// The records taking back a dropped receive's deliveries (`Withdrawn`, and the
    /// `Received` of a pair naming an unwritten delivery as taken back) that it could not
    /// write at once (the journal's segment had to roll first), in their order, after those
    /// it wrote, or that it wrote none of because it could not take the journal's lock or the
    /// journal log's lock at once: the next journal write writes them ahead of its own
    /// records, and a compaction whose checkpoint (which holds their effect) replaces the
    /// generation drops them. Taken and put back under the journal's lock; a dropped receive
    /// that could not take that lock adds to them under their own lock, which a compaction
    /// holds while it takes its checkpoint. Lock order: the journal's, then this one, then the
    /// queue's state.
    withdrawals: Mutex<Vec<Entry>>,
    /// Serializes the writes of sends so the message log's offsets match the lease table's
    /// (held for the write only: the fsync that makes a send durable is shared).
    append: Mutex<()>,
    log_options: crate::log::LogOptions,
    /// The journal rolls, compactions and directory syncs running on tokio's blocking pool,
    /// each holding a [`PoolShare`]: the queue's drop waits for them (they keep the logs, and
    /// the directory's lock, until they end).
    #[cfg(feature = "tokio")]
    pool_work: PoolWork,
    /// The queue directory's `LOCK`, held while the queue is open.
    _lock: Box<dyn std::fmt::Debug + Send + Sync>,
}

/// A share of a durable queue held by work that may run on tokio's blocking pool, counted
/// until it is dropped (see [`Durable::wait_for_pool_work`]).
#[derive(Debug)]
pub(super) struct PoolShare {
    durable: Arc<Durable>,
    /// After `durable`: the count falls once the share is let go.
    #[cfg(feature = "tokio")]
    _running: PoolJob,
}

impl PoolShare {
    pub(super) fn new(durable: &Arc<Durable>) -> Self {
        Self {
            durable: Arc::clone(durable),
            #[cfg(feature = "tokio")]
            _running: durable.pool_work.start(),
        }
    }
}

impl std::ops::Deref for PoolShare {
    type Target = Durable;

    fn deref(&self) -> &Durable {
        &self.durable
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::io(op, path, source)
}

/// The log record limit a message of `max_message_bytes` needs: the envelope adds at most
/// 18 bytes and the id. A limit no record length can express is refused here; one above the
/// log's own limit is refused by the log.
fn record_bytes_needed(max_message_bytes: usize) -> Result<u32, Error> {
    max_message_bytes
        .checked_add(18 + super::MAX_ID_LEN)
        .and_then(|needed| u32::try_from(needed).ok())
        .ok_or(Error::InvalidOptions {
            reason: "max_message_bytes must fit the log's record limit (RECORD_LIMIT)",
        })
}

/// A dead letter's record: the message's offset, its delivery count, its payload.
fn dead_letter_record(offset: u64, deliveries: u32, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(12 + payload.len());
    record.extend_from_slice(&offset.to_le_bytes());
    record.extend_from_slice(&deliveries.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

fn journal_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}"))
}

/// What a `JOURNAL` pointer naming `generation` holds: the number in decimal, a space, and the
/// CRC-32C of those digits in eight hex digits. A crash after a compaction's rename can leave
/// the generation before it in the directory; without the checksum, damage turning the
/// number into that one would open the older generation (acks lost, acked messages delivered
/// again) as readily as any leftover.
fn pointer_text(generation: u64) -> String {
    let digits = generation.to_string();
    let check = checksum_of(&digits);
    format!("{digits} {check}")
}

/// The checksum a pointer writes after `digits`.
fn checksum_of(digits: &str) -> String {
    format!("{:08x}", crate::log::crc::append(0, digits.as_bytes()))
}

/// The generation named by the text of a `JOURNAL` pointer, if it is one [`pointer_text`]
/// writes, or a bare number (what versions before the checksum wrote, accepted as they
/// accepted it); `Err` with the reason otherwise.
fn parse_pointer(text: &str) -> Result<u64, &'static str> {
    let not_a_number = "the JOURNAL file does not hold a generation number below 2^64 - 1";
    let text = text.trim_ascii();
    let digits = match text.split_once(' ') {
        Some((digits, check)) => {
            if check != checksum_of(digits) {
                return Err("the JOURNAL file's checksum does not match the generation it names");
            }
            digits
        }
        None => text,
    };
    // Digits only: `parse` would also take a sign.
    Some(digits)
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        // A compaction moves to the next generation: the last number has none.
        .filter(|&generation| generation < u64::MAX)
        .ok_or(not_a_number)
}

/// The generation the `JOURNAL` pointer names, or `None` when there is no pointer (no
/// compaction has renamed one into place: generation 0).
fn read_generation(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>, Error> {
    let path = dir.join("JOURNAL");
    let file = match storage.open(&path, false) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("read", path, error)),
    };
    let bad = |reason| Error::CorruptJournal { reason };
    let len = file.len().map_err(io("read", &path))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_POINTER_BYTES)
        .ok_or_else(|| bad("the JOURNAL file is longer than a pointer"))?;
    let mut bytes = vec![0; len];
    let mut filled = 0;
    while filled < bytes.len() {
        let n = file
            .read_at(filled as u64, &mut bytes[filled..])
            .map_err(io("read", &path))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let text =
        std::str::from_utf8(&bytes[..filled]).map_err(|_| bad("the JOURNAL file is not text"))?;
    parse_pointer(text).map(Some).map_err(bad)
}

/// `Ok` if the log directory `dir` is there; [`Error::Corrupt`] naming it, for `reason`, if
/// it is not.
fn require_log_dir(storage: &dyn Storage, dir: &Path, reason: &'static str) -> Result<(), Error> {
    match storage.list(dir) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(Error::Corrupt {
            segment: dir.to_path_buf(),
            position: 0,
            reason,
        }),
        Err(error) => Err(Error::io("list", dir, error)),
    }
}

/// Whether the log directory `dir` holds a segment file (`false` when it is not there).
fn has_segment(storage: &dyn Storage, dir: &Path) -> Result<bool, Error> {
    match storage.list(dir) {
        Ok(names) => Ok(names
            .iter()
            .any(|name| crate::log::parse_segment_name(name).is_some())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(Error::io("list", dir, error)),
    }
}

/// [`Error::Corrupt`] naming the log directory `dir`, for `reason`.
fn corrupt_log(dir: PathBuf, reason: &'static str) -> Error {
    Error::Corrupt {
        segment: dir,
        position: 0,
        reason,
    }
}

/// The journal generations in `dir`, by number.
fn journal_generations(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>, Error> {
    Ok(storage
        .list(dir)
        .map_err(io("list", dir))?
        .iter()
        .filter_map(|name| {
            name.strip_prefix("journal-")
                .and_then(|digits| digits.parse::<u64>().ok())
        })
        .collect())
}

/// Checks that the generation to open is among `generations`, those in the queue's directory. A compaction makes its generation's
/// directory durable before it renames the pointer naming it, and removes the generation
/// before only after that rename is durable; so a pointer naming a generation that is not
/// there, or no pointer beside a generation after the first and none of the first, is
/// damage (a pointer whose digits were changed into another number, or a pointer lost), not
/// a crash's leftover. Taking it for one would delete the generation holding the acks and
/// start an empty journal: every acked message delivered again.
fn check_generation(pointer: Option<u64>, generations: &[u64]) -> Result<(), Error> {
    let generation = pointer.unwrap_or(0);
    if generations.contains(&generation) || (pointer.is_none() && generations.is_empty()) {
        return Ok(());
    }
    Err(Error::CorruptJournal {
        reason: match pointer {
            Some(_) => "the JOURNAL file names a journal generation that is not there",
            None => "no JOURNAL file, yet the journal was compacted (its first generation is gone)",
        },
    })
}

/// The records of `entries`.
fn encode<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Vec<u8>> {
    entries.into_iter().map(|entry| entry.encode()).collect()
}

/// Removes `dir` and the files in it (a log directory holds no subdirectories).
fn remove_log_dir(storage: &dyn Storage, dir: &Path) -> Result<(), Error> {
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("list", dir, error)),
    };
    for name in names {
        let path = dir.join(name);
        storage.remove(&path).map_err(io("remove", &path))?;
    }
    storage.remove_dir(dir).map_err(io("remove", dir))
}

fn remove_stale_journals(storage: &dyn Storage, dir: &Path, keep: u64) -> Result<(), Error> {
    for name in storage.list(dir).map_err(io("list", dir))? {
        let Some(generation) = name
            .strip_prefix("journal-")
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        if generation != keep {
            remove_log_dir(storage, &dir.join(name))?;
        }
    }
    Ok(())
}

impl Durable {
    pub(super) fn open(
        dir: &Path,
        options: &QueueOptions,
        clock: &SharedClock,
        storage: Box<dyn QueueStorage>,
    ) -> Result<(Self, Recovered), Error> {
        match storage.list(dir) {
            // An earlier open may have created the directory and died before its name was
            // durable: one fsync of the parent per open makes sure.
            Ok(_) => crate::log::sync_parent(&*storage, dir).map_err(io("sync directory", dir))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if !options.create {
                    return Err(Error::UnknownQueue {
                        dir: dir.to_path_buf(),
                    });
                }
                crate::log::create_dir_durably(&*storage, dir)
                    .map_err(io("create directory", dir))?;
            }
            Err(error) => return Err(Error::io("list", dir, error)),
        }
        // Before anything is read or removed: a second open of a queue in use (another
        // process) would otherwise take the generation its compaction is writing for the
        // leftover of a crashed one, and delete it.
        let lock = crate::log::take_dir_lock(&*storage, dir)?;
        let mut log_options = options.log.clone();
        log_options.max_record_bytes = log_options
            .max_record_bytes
            .max(record_bytes_needed(options.max_message_bytes)?);
        // Retention would delete unsettled messages and journal records: the queue decides
        // what it still needs, so its logs keep everything.
        log_options.retention = crate::log::Retention::default();

        let pointer = read_generation(&*storage, dir)?;
        let generations = journal_generations(&*storage, dir)?;
        check_generation(pointer, &generations)?;
        let messages_dir = dir.join("messages");
        // The message log's directory is made durable before the first journal is created:
        // a journal without it is a queue whose messages were taken away, not a crash's
        // leftover, and opening it would forget what the journal says and rewrite it.
        if !generations.is_empty() {
            require_log_dir(
                &*storage,
                &messages_dir,
                "the queue's message log is missing while its journal is there",
            )?;
        }
        let generation = pointer.unwrap_or(0);
        remove_stale_journals(&*storage, dir, generation)?;
        let open_log = |path: &Path| {
            Log::open_with(
                path,
                log_options.clone(),
                Arc::clone(clock),
                storage.handle(),
            )
        };
        // A log's open creates its first segment in a directory holding none, which is a
        // crash's leftover only for a log nothing was ever written to (a first open that died
        // between creating the directory and its first segment). Each log directory is listed
        // before it is opened, so a log whose segments were all taken away is refused with no
        // segment created in its place.
        let journal_path = journal_dir(dir, generation);
        let journal_lost = || {
            corrupt_log(
                journal_path.clone(),
                "the journal generation holds no segment, yet the JOURNAL file names it or the message log holds messages",
            )
        };
        let messages_have_segments = has_segment(&*storage, &messages_dir)?;
        let journal_has_segments = has_segment(&*storage, &journal_path)?;
        // The generation the pointer names always holds its compaction's checkpoint.
        if !journal_has_segments && pointer.is_some() {
            return Err(journal_lost());
        }
        let (messages, journal) = if !messages_have_segments && journal_has_segments {
            // The message log's directory is there (checked above). Compaction keeps its
            // newest segment, and the first open creates that before the journal: a journal
            // record speaks of messages that were taken away.
            let journal = open_log(&journal_path)?;
            if journal.next_offset() > 0 {
                return Err(corrupt_log(
                    messages_dir,
                    "the message log holds no segment while the journal holds records",
                ));
            }
            (open_log(&messages_dir)?, journal)
        } else {
            // The message log first, as on the first open: its directory is made durable
            // before the journal's is created.
            let messages = open_log(&messages_dir)?;
            // The first open creates generation 0's first segment before any send.
            if !journal_has_segments && messages.next_offset() > 0 {
                return Err(journal_lost());
            }
            (messages, open_log(&journal_path)?)
        };
        // The first open creates the dead-letter log before it returns, so before any send:
        // a message log holding a message without it lost its dead letters to something
        // other than a crash, and opening would start it empty.
        let dead_dir = dir.join("dead");
        if messages.next_offset() > 0 {
            require_log_dir(
                &*storage,
                &dead_dir,
                "the queue's dead-letter log is missing while it holds messages",
            )?;
        }
        let dead = open_log(&dead_dir)?;

        let mut replay = Replay::default();
        let mut at = journal.first_offset();
        let mut journal_records = 0;
        loop {
            let records = journal.read(at, REPLAY_BATCH)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for record in &records {
                replay.apply(Entry::decode(&record.payload)?);
                journal_records += 1;
            }
        }
        replay.finish();
        let rewrite_journal = replay.forget_from(messages.next_offset());

        let now = clock.now_nanos();
        let now_ms = wall_ms(&**clock);
        let to_nanos = |wall: u64| -> u64 {
            now.saturating_add(duration_to_nanos(std::time::Duration::from_millis(
                wall.saturating_sub(now_ms),
            )))
        };
        // Compaction deletes only message segments below its checkpoint's oldest unsettled
        // message, and the watermark replay finds is at least that: a message log starting
        // past it lost a segment holding unsettled messages to something other than the
        // queue, and starting from its first message would take them for settled.
        if messages.first_offset() > replay.watermark {
            return Err(Error::Corrupt {
                segment: messages_dir,
                position: 0,
                reason: "the message log starts past the oldest unsettled message: a segment it still needs is missing",
            });
        }
        let start = replay.watermark;
        let mut leases = Leases::new(start, options.max_deliveries);
        let dedup_from = options.dedup.map(|window| {
            messages
                .next_offset()
                .saturating_sub(window.max_ids() as u64)
        });
        let mut ids = Vec::new();
        // The dedup window may reach below the watermark: read from the lower of the two,
        // and rebuild leases only from the watermark on.
        let mut at = dedup_from
            .map_or(start, |from| from.min(start))
            .max(messages.first_offset());
        loop {
            let records = messages.read(at, REPLAY_BATCH)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for record in records {
                let envelope = Envelope::decode(record.offset, &record.payload)?;
                if dedup_from.is_some_and(|from| record.offset >= from) {
                    ids.push((envelope.id.clone(), record.offset, envelope.sent_at_ms));
                }
                if record.offset < start {
                    continue;
                }
                let known = replay.get(record.offset);
                let wait_until_ms = match known.nacked {
                    Some((_, until)) => Some(until),
                    None if known.deliveries == 0 => envelope.not_before_ms,
                    None => None,
                };
                leases.push(
                    envelope.payload,
                    now,
                    wait_until_ms.map(to_nanos),
                    known.deliveries,
                    known.settled,
                );
            }
        }
        let durable = Self {
            dir: dir.to_path_buf(),
            storage,
            messages,
            journal: RwLock::new(Journal {
                log: Arc::new(journal),
                generation,
                compacting: false,
            }),
            journal_records: AtomicU64::new(journal_records),
            pointer_unsynced: AtomicBool::new(false),
            // Zero when the journal must be rewritten: the next compaction is due at once.
            compact_at: AtomicU64::new(if rewrite_journal {
                0
            } else {
                options.compact_after
            }),
            compact_after: options.compact_after,
            dead,
            clock: Arc::clone(clock),
            dedup_ids: options.dedup.map(|window| window.max_ids() as u64),
            withdrawals: Mutex::new(Vec::new()),
            append: Mutex::new(()),
            log_options,
            #[cfg(feature = "tokio")]
            pool_work: PoolWork::default(),
            _lock: lock,
        };
        Ok((
            durable,
            Recovered {
                leases,
                ids,
                rewrite_journal,
            },
        ))
    }

    pub(super) fn append_lock(&self) -> MutexGuard<'_, ()> {
        self.append.lock()
    }

    /// Writes a message to the log; its ticket's wait makes it durable per the fsync policy.
    pub(super) fn write_message(&self, envelope: &Envelope) -> Result<AppendTicket<'_>, Error> {
        self.messages.append_nowait(&envelope.encode())
    }

    /// [`Self::write_message`] for async callers: writes nothing when the message would roll
    /// the log's segment, and says which, for [`Self::roll_messages_async`].
    #[cfg(feature = "tokio")]
    pub(super) fn write_message_unless_rolling(
        &self,
        envelope: &Envelope,
    ) -> Result<Result<AppendTicket<'_>, RollFirst>, Error> {
        let part = self.messages.write_unless_rolling(&[&envelope.encode()])?;
        Ok(match part.roll {
            Some(roll) => Err(roll),
            None => Ok(AppendTicket::written(
                &self.messages,
                part.written.start,
                part.sync_due,
            )),
        })
    }

    /// Rolls the message log's segment on tokio's blocking pool, as `roll` asks.
    #[cfg(feature = "tokio")]
    pub(super) async fn roll_messages_async(&self, roll: RollFirst) -> Result<(), Error> {
        self.messages.roll_async(roll).await
    }

    /// Whether the message log's fsync failed: it refuses sends from then on, and the
    /// messages written but not yet durable stay out of reach until a reopen.
    pub(super) fn refuses_sends(&self) -> bool {
        self.messages.sync_failed()
    }

    /// Returns once the message at `offset`, written by another send, is durable per the
    /// fsync policy (for a duplicate of a send still waiting for its fsync).
    pub(super) fn wait_durable(&self, offset: u64) -> Result<(), Error> {
        if self.log_options.fsync == FsyncPolicy::Always {
            self.messages.make_durable(offset + 1)?;
        }
        Ok(())
    }

    /// [`Self::wait_durable`] for async callers: the fsync runs on tokio's blocking pool.
    #[cfg(feature = "tokio")]
    pub(super) async fn wait_durable_async(&self, offset: u64) -> Result<(), Error> {
        if self.log_options.fsync == FsyncPolicy::Always {
            self.messages.make_durable_async(offset + 1).await?;
        }
        Ok(())
    }

    /// Appends journal records in one write, made durable per the policy by one fsync (a
    /// batch's receives or acks share it); `true` when the journal has grown enough to
    /// compact.
    pub(super) fn journal(&self, entries: &[Entry]) -> Result<bool, Error> {
        match self.write_journal(entries)? {
            Some(written) => written.wait(),
            None => Ok(false),
        }
    }

    /// Writes journal records in one write, not yet durable: the returned write's wait makes
    /// them so. `None` for no records.
    pub(super) fn write_journal(&self, entries: &[Entry]) -> Result<Option<JournalWrite>, Error> {
        if entries.is_empty() {
            return Ok(None);
        }
        let journal = self.journal.read();
        self.sync_pointer()?;
        let withdrawals = std::mem::take(&mut *self.withdrawals.lock());
        let encoded = encode(withdrawals.iter().chain(entries));
        let records: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let (written, sync_due) = journal.log.write(&records)?;
        Ok(Some(self.journal_written(
            &journal,
            records.len(),
            written.end,
            sync_due,
        )))
    }

    /// Takes back deliveries whose receive never reached its caller, after their `Received`
    /// records were written: `undeliver` gives them back in the lease table and returns the
    /// records that take them back (their `Withdrawn` records, and a `Received` record then
    /// a `Withdrawn` one for an unwritten delivery a withdrawn one handed its lease back to),
    /// which are written now, in that order (into the page cache:
    /// a crash before an fsync covers them counts those deliveries after the restart, as
    /// before). Both under the journal's read lock, so that a compaction's checkpoint sees
    /// the table before the withdrawals and their records after it, or neither.
    ///
    /// Never waits, since the future being dropped here may be on a runtime's thread: if the
    /// journal's lock cannot be had at once (a compaction holds it, to take its checkpoint or
    /// to copy the last records over and rename the pointer), both happen under the lock of
    /// the pending records instead, which a compaction holds while it takes its checkpoint
    /// and the records left to it; if the journal log's lock cannot be had at once (a roll of
    /// its segment holds it, or another writer), or the records would roll the segment, the
    /// records are left to the next journal write (an async one rolls it on tokio's blocking
    /// pool), or to the queue's drop. A failed write leaves them out: the journal has failed,
    /// and the queue's journaling with it.
    #[cfg(feature = "tokio")]
    pub(super) fn withdraw(durable: &Arc<Self>, undeliver: impl FnOnce() -> Vec<Entry>) {
        let Some(journal) = durable.journal.try_read() else {
            let mut pending = durable.withdrawals.lock();
            let withdrawn = undeliver();
            pending.extend(withdrawn);
            return;
        };
        let withdrawn = undeliver();
        if withdrawn.is_empty() {
            return;
        }
        let encoded = encode(&withdrawn);
        let records: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let Some(written) = journal.log.try_write_unless_rolling(&records) else {
            durable.withdrawals.lock().extend(withdrawn);
            return;
        };
        let Ok(part) = written else {
            return;
        };
        let count = usize::try_from(part.written.end - part.written.start).unwrap_or(records.len());
        durable
            .journal_records
            .fetch_add(count as u64, Ordering::Relaxed);
        if part.roll.is_some() {
            durable
                .withdrawals
                .lock()
                .extend_from_slice(&withdrawn[count..]);
        }
    }

    /// [`Self::write_journal`] for async callers: a roll of the journal's segment that the
    /// records need runs on tokio's blocking pool before they are written. `written` is
    /// called with each part of `entries` once it is written, under the journal's read lock
    /// (so no compaction's checkpoint comes between the write and the call).
    #[cfg(feature = "tokio")]
    pub(super) async fn write_journal_async(
        durable: &Arc<Self>,
        entries: &[Entry],
        mut written: impl FnMut(&[Entry]),
    ) -> Result<Option<JournalWrite>, Error> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut entries = entries;
        let mut sync_due = false;
        loop {
            // A batch split by a roll waits for the fsync of its last part's generation only:
            // if a compaction replaced the generation of an earlier part, its checkpoint or
            // the records it copied over (and synced) hold that part.
            // Withdrawals left to this write go first; those a roll kept out are put back,
            // under the same lock, for the next part or the next write (or a checkpoint).
            let (log, roll) = {
                let journal = durable.journal.read();
                durable.sync_pointer()?;
                let withdrawals = std::mem::take(&mut *durable.withdrawals.lock());
                let encoded = encode(withdrawals.iter().chain(entries));
                let records: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
                let part = journal.log.write_unless_rolling(&records)?;
                let count =
                    usize::try_from(part.written.end - part.written.start).unwrap_or(records.len());
                sync_due |= part.sync_due;
                let write = durable.journal_written(&journal, count, part.written.end, sync_due);
                let (entries_written, rest) =
                    entries.split_at(count.saturating_sub(withdrawals.len()).min(entries.len()));
                if !entries_written.is_empty() {
                    written(entries_written);
                }
                let Some(roll) = part.roll else {
                    return Ok(Some(write));
                };
                if let Some(unwritten) = withdrawals.get(count..) {
                    durable.withdrawals.lock().extend_from_slice(unwritten);
                }
                entries = rest;
                (Arc::clone(&journal.log), roll)
            };
            let job = JournalRoll {
                job: log.roll_job(roll),
                log: Arc::clone(&log),
                durable: PoolShare::new(durable),
            };
            crate::blocking::on_blocking_pool(&durable.pool_work, move || job.run()).await?;
        }
    }

    /// The write of `records` journal records, ending at `end`, made under `journal`'s lock.
    fn journal_written(
        &self,
        journal: &Journal,
        records: usize,
        end: u64,
        sync_due: bool,
    ) -> JournalWrite {
        let added = records as u64;
        let count = self.journal_records.fetch_add(added, Ordering::Relaxed) + added;
        JournalWrite {
            // Written under the read lock: if a compaction replaces this generation before
            // the fsync, its checkpoint holds these records' effects (taken after the write)
            // or it copied them over (taken before), and the fsync of the old generation
            // does no harm.
            log: Arc::clone(&journal.log),
            end,
            sync_due,
            compact: count >= self.compact_at.load(Ordering::Relaxed),
        }
    }

    /// Blocks until the work handed to tokio's blocking pool has ended (a journal roll, a
    /// compaction, a directory sync: at most a few file operations and fsyncs each). The
    /// queue's drop waits here, so that the directory's lock, which that work keeps, is let
    /// go with the queue: an open right after the drop finds the directory free.
    #[cfg(feature = "tokio")]
    pub(super) fn wait_for_pool_work(&self) {
        self.pool_work.wait_idle();
    }

    /// The work handed to tokio's blocking pool, for [`on_blocking_pool`](crate::blocking::on_blocking_pool).
    #[cfg(feature = "tokio")]
    pub(super) fn pool_work(&self) -> &PoolWork {
        &self.pool_work
    }

    /// Whether a compaction's directory sync failed after it renamed the pointer, so the
    /// next journal record must sync the directory first ([`Self::sync_pointer`]).
    #[cfg(feature = "tokio")]
    pub(super) fn pointer_unsynced(&self) -> bool {
        self.pointer_unsynced.load(Ordering::Acquire)
    }

    /// Syncs the directory if a compaction's sync of it failed after the pointer's rename:
    /// until then a power loss may take the rename back, and any record written since.
    pub(super) fn sync_pointer(&self) -> Result<(), Error> {
        if self.pointer_unsynced.load(Ordering::Acquire) {
            self.storage
                .sync_dir(&self.dir)
                .map_err(io("sync directory", &self.dir))?;
            self.pointer_unsynced.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Replaces the journal with `checkpoint()`'s records, if no one else just did: a
    /// [`Compaction`] begun and finished on this thread.
    pub(super) fn compact(
        durable: &Arc<Self>,
        checkpoint: impl FnOnce() -> Vec<Entry>,
    ) -> Result<(), Error> {
        match Self::begin_compaction(durable, checkpoint) {
            Some(compaction) => compaction.finish(),
            None => Ok(()),
        }
    }

    /// Takes `checkpoint()` for a compaction, if one is due and none is under way; the file
    /// work is left to [`Compaction::finish`], which may run on another thread.
    pub(super) fn begin_compaction(
        durable: &Arc<Self>,
        checkpoint: impl FnOnce() -> Vec<Entry>,
    ) -> Option<Compaction> {
        let mut journal = durable.journal.write();
        let records = durable.journal_records.load(Ordering::Relaxed);
        if journal.compacting || records < durable.compact_at.load(Ordering::Relaxed) {
            return None;
        }
        journal.compacting = true;
        // Under the lock of the pending records too: a receive dropped meanwhile that could
        // not take the journal's lock gives its deliveries back under that lock, so the
        // checkpoint sees both its lease table change and its records, or neither.
        let mut pending = durable.withdrawals.lock();
        // Taken under the write lock: every record appended before it is reflected in it
        // and ends before `carry_from`; every later one is copied to the new generation.
        let checkpoint = checkpoint();
        // The checkpoint holds their effect (the lease table took the deliveries back), so
        // they are not written unless the compaction does not replace the generation.
        let withdrawals = std::mem::take(&mut *pending);
        drop(pending);
        Some(Compaction {
            durable: PoolShare::new(durable),
            checkpoint,
            carry_from: journal.log.next_offset(),
            generation: journal.generation + 1,
            records,
            withdrawals,
        })
    }

    /// Deletes the message segments a reopen no longer reads: those below the watermark of
    /// the checkpoint just made durable, except the latest messages the dedup window reads
    /// back. Without this the message log would keep every message ever sent.
    fn remove_settled_messages(&self, checkpoint: &[Entry]) -> Result<(), Error> {
        let Some(watermark) = checkpoint.iter().find_map(|entry| match entry {
            Entry::Checkpoint { watermark } => Some(*watermark),
            _ => None,
        }) else {
            return Ok(());
        };
        let dedup_from = self.dedup_ids.map_or(u64::MAX, |ids| {
            self.messages.next_offset().saturating_sub(ids)
        });
        self.messages.remove_before(watermark.min(dedup_from))?;
        Ok(())
    }

    /// Writes a dead letter to its log, not yet durable; returns the log's end after it, for
    /// [`Self::sync_dead_letters`].
    pub(super) fn write_dead_letter(
        &self,
        offset: u64,
        deliveries: u32,
        payload: &[u8],
    ) -> Result<u64, Error> {
        let (written, _) = self
            .dead
            .write(&[&dead_letter_record(offset, deliveries, payload)])?;
        Ok(written.end)
    }

    /// [`Self::write_dead_letter`] for async callers: writes nothing when the dead letter
    /// would roll the log's segment, and says which, for [`Self::roll_dead_letters_async`].
    #[cfg(feature = "tokio")]
    pub(super) fn write_dead_letter_unless_rolling(
        &self,
        offset: u64,
        deliveries: u32,
        payload: &[u8],
    ) -> Result<Result<u64, RollFirst>, Error> {
        let record = dead_letter_record(offset, deliveries, payload);
        let part = self.dead.write_unless_rolling(&[&record])?;
        Ok(part.roll.map_or(Ok(part.written.end), Err))
    }

    /// Rolls the dead-letter log's segment on tokio's blocking pool, as `roll` asks.
    #[cfg(feature = "tokio")]
    pub(super) async fn roll_dead_letters_async(&self, roll: RollFirst) -> Result<(), Error> {
        self.dead.roll_async(roll).await
    }

    /// Makes the dead letters below `end` durable, whatever the policy, with one fsync for
    /// all of them (shared with any other in flight). It must return before their messages
    /// are settled: a checkpoint that counts one settled is synced by its compaction, and a
    /// journal record by a roll of its segment, either of which may reach the disk before an
    /// unsynced dead letter, and a power loss would then take the message from the queue and
    /// its dead letters both.
    pub(super) fn sync_dead_letters(&self, end: u64) -> Result<(), Error> {
        self.dead.make_durable(end)
    }

    /// [`Self::sync_dead_letters`] for async callers: the fsync runs on tokio's blocking pool.
    #[cfg(feature = "tokio")]
    pub(super) async fn sync_dead_letters_async(&self, end: u64) -> Result<(), Error> {
        self.dead.make_durable_async(end).await
    }

    pub(super) fn read_dead_letters(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<DeadLetter>, Error> {
        let from = from.max(self.dead.first_offset());
        self.dead
            .read(from, max)?
            .into_iter()
            .map(|record| {
                let bad = Error::CorruptMessage {
                    offset: record.offset,
                    reason: "dead letter shorter than its header",
                };
                let offset: [u8; 8] = record
                    .payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(bad)?;
                let deliveries: [u8; 4] = record
                    .payload
                    .get(8..12)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Error::CorruptMessage {
                        offset: record.offset,
                        reason: "dead letter shorter than its header",
                    })?;
                Ok(DeadLetter {
                    position: record.offset,
                    offset: u64::from_le_bytes(offset),
                    deliveries: u32::from_le_bytes(deliveries),
                    payload: Bytes::copy_from_slice(&record.payload[12..]),
                })
            })
            .collect()
    }
}

impl Drop for Durable {
    /// Writes the withdrawals no journal write took, then, under `Always`, makes the journal
    /// durable: the withdrawals a dropped receive wrote at once went into the page cache only,
    /// and a power loss after the queue was closed must not count a delivery no caller got
    /// (with `max_deliveries(1)` it would dead-letter the message). Best effort: a failure
    /// has no caller to tell, and costs only a delivery counted after the restart.
    fn drop(&mut self) {
        let withdrawals = std::mem::take(&mut *self.withdrawals.lock());
        let journal = self.journal.read();
        if !withdrawals.is_empty() {
            if self.sync_pointer().is_err() {
                return;
            }
            let encoded = encode(&withdrawals);
            let records: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
            let _ = journal.log.write(&records);
        }
        if self.log_options.fsync == FsyncPolicy::Always {
            let _ = journal.log.sync();
        }
    }
}

/// A compaction whose checkpoint is taken ([`Durable::begin_compaction`]), with its files
/// still to write. Owns what it needs, so it can run on tokio's blocking pool and finish
/// there even if the future that began it is dropped. Until it is dropped no other compaction
/// begins.
#[derive(Debug)]
pub(super) struct Compaction {
    durable: PoolShare,
    checkpoint: Vec<Entry>,
    /// The current generation's end when the checkpoint was taken: the records from here on
    /// are not in it, and go to the new generation after it.
    carry_from: u64,
    /// The generation it builds.
    generation: u64,
    /// The journal's record count when it began.
    records: u64,
    /// The withdrawals left to a journal write when it began, which its checkpoint holds.
    withdrawals: Vec<Entry>,
}

impl Compaction {
    /// Writes the new generation and moves the journal to it.
    ///
    /// A failure leaves a journal that a reopen reads whole: before the pointer's rename the
    /// current generation, after it the new one. A compaction that failed is tried again
    /// once `compact_after` more records are in, not at every record (it rewrites the whole
    /// live state).
    pub(super) fn finish(self) -> Result<(), Error> {
        let finished = self.write_generation();
        if finished.is_err() {
            self.durable.compact_at.fetch_max(
                self.records.saturating_add(self.durable.compact_after),
                Ordering::Relaxed,
            );
        }
        finished
    }

    fn write_generation(&self) -> Result<(), Error> {
        let durable = &*self.durable;
        let new_dir = journal_dir(&durable.dir, self.generation);
        remove_log_dir(&*durable.storage, &new_dir)?;
        let log = Log::open_with(
            &new_dir,
            durable.log_options.clone(),
            Arc::clone(&durable.clock),
            durable.storage.handle(),
        )?;
        let encoded: Vec<Vec<u8>> = self.checkpoint.iter().map(|entry| entry.encode()).collect();
        for chunk in encoded.chunks(REPLAY_BATCH) {
            let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            log.append_batch(&slices)?;
        }
        log.sync()?;
        // Appenders wait from here to the directory sync: what they append next goes to the
        // generation a reopen reads.
        let mut journal = durable.journal.write();
        let carried = carry_over(&journal.log, self.carry_from, &log)?;
        log.sync()?;
        let pointer = durable.dir.join("JOURNAL");
        let temporary = durable.dir.join("JOURNAL.tmp");
        match durable.storage.remove(&temporary) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io("remove", &temporary, error)),
        }
        {
            let file = durable
                .storage
                .open(&temporary, true)
                .map_err(io("create", &temporary))?;
            file.write_at(0, pointer_text(self.generation).as_bytes())
                .and_then(|()| file.sync())
                .map_err(io("write", &temporary))?;
        }
        durable
            .storage
            .rename(&temporary, &pointer)
            .map_err(io("rename", &pointer))?;
        // From the rename on, the pointer names the new generation, synced or not: the journal
        // moves to it before the directory sync, so that if the sync fails, later records go
        // where a reopen looks, and the next compaction builds the generation after it rather
        // than removing the one the pointer names.
        let old = std::mem::replace(
            &mut *journal,
            Journal {
                log: Arc::new(log),
                generation: self.generation,
                // Until this compaction is dropped.
                compacting: true,
            },
        );
        let live = self.checkpoint.len() as u64 + carried;
        durable.journal_records.store(live, Ordering::Relaxed);
        durable.compact_at.store(
            live.saturating_add(durable.compact_after),
            Ordering::Relaxed,
        );
        if let Err(error) = durable.storage.sync_dir(&durable.dir) {
            durable.pointer_unsynced.store(true, Ordering::Release);
            return Err(Error::io("sync directory", &durable.dir, error));
        }
        drop(journal);
        let old_dir = journal_dir(&durable.dir, old.generation);
        drop(old);
        remove_log_dir(&*durable.storage, &old_dir)?;
        durable.remove_settled_messages(&self.checkpoint)
    }
}

impl Drop for Compaction {
    /// Lets the next compaction begin; if this one failed or never ran before replacing the
    /// generation, gives its withdrawals back to the next journal write.
    fn drop(&mut self) {
        let mut journal = self.durable.journal.write();
        journal.compacting = false;
        if journal.generation != self.generation {
            self.durable
                .withdrawals
                .lock()
                .append(&mut self.withdrawals);
        }
    }
}

/// Appends to `to` the records of `from` from offset `start` on, after syncing `from` (a read
/// returns only what is durable, under `FsyncPolicy::Always`); returns how many.
fn carry_over(from: &Log, start: u64, to: &Log) -> Result<u64, Error> {
    from.sync()?;
    let mut at = start;
    loop {
        let records = from.read(at, REPLAY_BATCH)?;
        let Some(last) = records.last() else {
            return Ok(at - start);
        };
        at = last.offset + 1;
        let payloads: Vec<&[u8]> = records
            .iter()
            .map(|record| record.payload.as_slice())
            .collect();
        to.append_batch(&payloads)?;
    }
}

/// A roll of the journal's segment that an async write left to tokio's blocking pool.
#[cfg(feature = "tokio")]
struct JournalRoll {
    /// First, so that a roll never run (the runtime shut down) is dropped before `log`, which
    /// may be the last handle on a replaced generation: its drop waits for this roll.
    job: RollJob,
    /// The generation whose segment rolls.
    log: Arc<Log>,
    durable: PoolShare,
}

#[cfg(feature = "tokio")]
impl JournalRoll {
    /// Rolls under the journal's read lock, as a blocking write's roll does, and only if the
    /// segment's generation is still the journal's: a compaction that replaced it meanwhile
    /// removes its directory, where no new segment may appear.
    fn run(self) -> Result<(), Error> {
        let journal = self.durable.journal.read();
        if Arc::ptr_eq(&journal.log, &self.log) {
            self.job.run()
        } else {
            Ok(())
        }
    }
}

/// Journal records written and not yet waited for (see [`Durable::write_journal`]).
#[derive(Debug)]
pub(super) struct JournalWrite {
    log: Arc<Log>,
    /// The journal's end after the records.
    end: u64,
    /// Whether the policy wants an fsync for them (always under `Always`).
    sync_due: bool,
    /// Whether the journal has grown enough to compact.
    compact: bool,
}

impl JournalWrite {
    /// Returns once the records are durable per the policy; `true` when the journal has grown
    /// enough to compact.
    pub(super) fn wait(&self) -> Result<bool, Error> {
        if self.sync_due {
            self.log.make_durable(self.end)?;
        }
        Ok(self.compact)
    }

    /// [`Self::wait`] for async callers: the fsync runs on tokio's blocking pool.
    #[cfg(feature = "tokio")]
    pub(super) async fn wait_async(&self) -> Result<bool, Error> {
        if self.sync_due {
            self.log.make_durable_async(self.end).await?;
        }
        Ok(self.compact)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_names_the_generation_it_was_written_for() {
        for generation in [0, 1, 9, 10, 12_345, u64::MAX - 1] {
            let text = pointer_text(generation);
            assert!(text.len() <= MAX_POINTER_BYTES, "{text}");
            assert_eq!(parse_pointer(&text), Ok(generation));
        }
    }

    /// A pointer whose digits were changed into another number, or whose checksum was, is
    /// refused; one bit flipped anywhere never names the generation before it, the one a
    /// crash after a compaction's rename can leave behind.
    #[test]
    fn a_damaged_pointer_is_refused() {
        assert!(parse_pointer(&pointer_text(7).replacen('7', "6", 1)).is_err());
        assert!(parse_pointer("7 00000000").is_err());
        for generation in 1..2_000 {
            let text = pointer_text(generation);
            for at in 0..text.len() {
                for bit in 0..8 {
                    let mut bytes = text.clone().into_bytes();
                    bytes[at] ^= 1 << bit;
                    let Ok(flipped) = std::str::from_utf8(&bytes) else {
                        continue;
                    };
                    if let Ok(named) = parse_pointer(flipped) {
                        // Only a space flipped into a digit gets past the checksum, as a bare
                        // number of the older format: a number far above the generation.
                        assert!(
                            named > generation,
                            "{text:?} flipped to {flipped:?}: {named}"
                        );
                    }
                }
            }
        }
    }

    /// A bare number, as the versions before the checksum wrote it, still opens; text that is
    /// not a number below `u64::MAX`, or is one followed by something other than its checksum,
    /// does not.
    #[test]
    fn a_bare_number_of_the_older_format_is_accepted() {
        assert_eq!(parse_pointer("42"), Ok(42));
        assert_eq!(parse_pointer("42\n"), Ok(42));
        for text in [
            "",
            "x",
            "-1",
            "18446744073709551615",
            "42 abc",
            "42 0000000g",
        ] {
            assert!(parse_pointer(text).is_err(), "{text:?}");
        }
    }
}
