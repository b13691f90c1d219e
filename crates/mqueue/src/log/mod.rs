//! The append-only segment log: CRC-framed records, group commit, recovery and retention.
//!
//! A [`Log`] is one directory of segment files named by the offset of their first record
//! (`00000000000000000000.seg`). Appends go to the newest segment; when it reaches
//! [`LogOptions::segment_bytes`] a new one starts. Every record carries a CRC-32C over its
//! length and one over its length and payload (one over both, in a segment of the earlier
//! format), so a torn or flipped record is never delivered.
//!
//! # What each fsync policy can lose
//!
//! | [`FsyncPolicy`] | an append returns | a process crash loses | a power loss loses |
//! |---|---|---|---|
//! | `Always` (default) | after an fsync covering it (shared with concurrent appends) | nothing acknowledged | nothing acknowledged |
//! | `Interval(d)` | at once; an fsync runs on the first append `d` after the last | nothing acknowledged (the kernel holds it) | appends of the last `d` or more, up to the last fsync |
//! | `Never` | at once | nothing acknowledged | everything since the last [`Log::sync`] or segment roll |
//!
//! Under `Always`, [`Log::read`] only returns records already made durable, so no reader sees
//! a record that a power loss could take back. Under the other policies it returns everything
//! written.
//!
//! # Pipelined appends
//!
//! [`Log::append`] has one record in flight per calling thread, so one fsync covers at most as
//! many records as there are producers. [`Log::append_nowait`] writes a record and returns an
//! [`AppendTicket`] at once; the record is acknowledged when [`AppendTicket::wait`] returns,
//! which under `Always` is after an fsync that began once the record was written. A producer
//! that keeps many tickets in flight lets one fsync cover all of them. An append whose ticket
//! was not waited on was never acknowledged: a crash may keep it or lose it (and everything
//! after it), never a record before it that was acknowledged.
//!
//! # Async appends (feature `tokio`)
//!
//! `Log::append_async` and `AppendTicket::wait_async` are [`Log::append`] and
//! [`AppendTicket::wait`] for async callers: the record is written on the calling task and the
//! fsync runs on tokio's blocking pool, in the same group commit as blocking appends; the task
//! is woken once when an fsync covering its record ends. A segment roll the record needs runs
//! whole on the blocking pool before it is written. Their `Ok` means what the blocking calls'
//! does; a dropped future leaves its record written and unacknowledged.
//!
//! # Recovery
//!
//! [`Log::open`] checks every record of every segment. Zeros where the next record would start
//! end a segment: the space [`LogOptions::preallocate`] wrote ahead. A torn tail — incomplete or
//! failing records at the end of the newest segment with nothing valid after them — is cut off:
//! those appends never returned under `Always`. A bad record anywhere else (valid records after
//! it, or in an older segment) is [`Error::Corrupt`], and nothing is deleted. Every record's
//! checksums start from its segment's random salt, and its 12-byte header has a checksum of
//! its own: looking for a valid record after a bad one costs a header check per byte, and the
//! bytes of a record framed for another segment or log, carried in a torn record's payload,
//! are not taken for one appended after it. Segments in the earlier format (`INFRAMQ1`) are
//! still read; appends go to a new segment after one (an empty one is started over in the
//! current format). Their records carry one checksum and no salt.
//!
//! ```
//! use infra_mqueue::log::{Log, LogOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default())?;
//! let first = log.append(b"order 1")?;
//! let batch = log.append_batch(&[b"order 2", b"order 3"])?;
//! assert_eq!((first, batch), (0, 1..3));
//! drop(log);
//!
//! let log = Log::open(dir.path(), LogOptions::default())?; // recovers
//! let records = log.read(1, 10)?;
//! assert_eq!(records[1].payload, b"order 3");
//! assert_eq!(log.next_offset(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "tokio")]
mod async_append;
mod commit;
pub(crate) mod crc;
#[cfg(feature = "metrics")]
mod metrics;
mod pool_work;
mod record;
mod roll;
mod segment;
mod storage;
mod ticket;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use infra_common::sync::{Arc, Mutex};
use infra_common::{Clock, SystemClock};

// Public for the loom models in tests/loom.rs, which check the hand-off itself; not an API.
#[doc(hidden)]
pub use commit::{AsyncWaiter, GroupCommit, SyncLeader};
#[doc(hidden)]
pub use pool_work::{Handover, PoolJob, PoolWork};
pub use storage::{FileStorage, SimulatedStorage, Storage, StorageFile};
pub(crate) use storage::{create_dir_durably, sync_parent};

/// Takes `dir`'s lock, held until the returned guard is dropped: [`Error::Locked`] if another
/// open (in this process or another) holds it.
pub(crate) fn take_dir_lock(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Box<dyn fmt::Debug + Send + Sync>, Error> {
    storage
        .lock_dir(dir)
        .map_err(|e| Error::io("lock", dir, e))?
        .ok_or_else(|| Error::Locked {
            dir: dir.to_path_buf(),
        })
}
pub use ticket::AppendTicket;

#[cfg(feature = "tokio")]
pub(crate) use async_append::{RollFirst, RollJob};

use crate::Error;
use record::{Frame, Framing, SEGMENT_HEADER};
use roll::Files;
use segment::{INDEX_STRIDE, Reader, Segment};

/// The largest `max_record_bytes` accepted (256 MiB), and the limit recovery applies to a
/// record's length field whatever the options say, so lowering the option never turns valid
/// records into a "torn tail".
pub const RECORD_LIMIT: u32 = 1 << 28;

/// When appends are made durable. See the [module docs](self) for what each can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Every append returns only once an fsync covers it. Concurrent appends share one fsync
    /// (group commit).
    #[default]
    Always,
    /// Appends return at once; the first append at least this long after the last fsync runs
    /// one (on the log's [`Clock`]). Dropping the log syncs too.
    Interval(Duration),
    /// Appends return at once; data reaches the disk when the OS writes it back, at a segment
    /// roll, or at [`Log::sync`].
    Never,
}

/// Which old segments are deleted. The newest segment is always kept; whole segments go, oldest
/// first, when a new segment starts or [`Log::enforce_retention`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete the oldest segments while the log's files take more than this many bytes
    /// ([`LogStats::allocated_bytes`]).
    pub max_bytes: Option<u64>,
    /// Delete a segment once the segment after it was started at least this long ago (its
    /// newest record is then at least this old), on the clock's wall time.
    pub max_age: Option<Duration>,
}

/// How a [`Log`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// When appends are made durable. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// A new segment starts when the next record would take the current one past this size.
    /// Default 64 MiB; at least 64 bytes.
    pub segment_bytes: u64,
    /// The largest payload accepted, at most [`RECORD_LIMIT`]. Default 1 MiB.
    pub max_record_bytes: u32,
    /// Which old segments are deleted. Default: none.
    pub retention: Retention,
    /// Zeros written ahead of the newest record, so that appends overwrite space the file
    /// already has instead of growing it: an fsync after a write that grew the file must also
    /// commit the file's new size to the file system's journal. When an append passes the
    /// zeros, this many more are written (never past `segment_bytes`), so one append in every
    /// `preallocate` bytes writes them. Recovery takes zeros where the next record would start
    /// for the end of the log. Not done under [`FsyncPolicy::Never`], which has no fsync to
    /// make cheaper. 0 turns it off. Default 1 MiB; at most 1 GiB.
    pub preallocate: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            retention: Retention::default(),
            preallocate: 1 << 20,
        }
    }
}

impl LogOptions {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.segment_bytes < 64 || self.segment_bytes > 1 << 40 {
            return Err(Error::InvalidOptions {
                reason: "segment_bytes must be between 64 bytes and 1 TiB",
            });
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > RECORD_LIMIT {
            return Err(Error::InvalidOptions {
                reason: "max_record_bytes must be between 1 and RECORD_LIMIT (256 MiB)",
            });
        }
        if self.preallocate > 1 << 30 {
            return Err(Error::InvalidOptions {
                reason: "preallocate must be at most 1 GiB",
            });
        }
        Ok(())
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset: the number of records appended to the log before it.
    pub offset: u64,
    /// What was appended.
    pub payload: Vec<u8>,
}

/// A log's size and contents at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes of segment headers and records: what the log holds.
    pub bytes: u64,
    /// Bytes of all segment files: `bytes` plus the zeros written ahead of the newest record
    /// ([`LogOptions::preallocate`]). What the log takes on disk.
    pub allocated_bytes: u64,
    /// Records kept: `next_offset - first_offset`.
    pub depth: u64,
    /// Segment files.
    pub segments: usize,
    /// The oldest offset kept.
    pub first_offset: u64,
    /// The offset the next append gets.
    pub next_offset: u64,
}

/// An append-only log in one directory. `Send + Sync`: share it through an `Arc`.
///
/// Only one `Log` may have a directory open at a time (a lock file enforces it across
/// processes); a second [`Log::open`] gets [`Error::Locked`].
///
/// Dropping a log whose async appends left a segment roll running on tokio's blocking pool
/// waits for that roll to end, so that the directory is let go only once nothing of this log
/// changes it: an open right after the drop succeeds.
pub struct Log {
    /// The directory, the file layer, and the rolls and deletions done there.
    files: Files,
    options: LogOptions,
    clock: Box<dyn Clock>,
    /// Shared with the blocking-pool task that rolls a segment for an async append.
    inner: Arc<Mutex<Inner>>,
    /// Shared with the blocking-pool tasks that run async appenders' fsyncs, which may outlive
    /// the future that started them.
    commit: Arc<GroupCommit>,
    /// The segment rolls running on the blocking pool for async appends: the drop waits for
    /// them, so the directory is let go only once none of them changes it any more.
    #[cfg(feature = "tokio")]
    rolls: PoolWork,
    _lock: Box<dyn fmt::Debug + Send + Sync>,
}

#[derive(Debug)]
struct Inner {
    /// The segments before the newest, by base offset: only read and removed.
    sealed: BTreeMap<u64, Segment>,
    /// The newest segment, where appends go.
    active: Segment,
    next: u64,
    /// A write, a roll's fsync or its new segment failed: no more appends. (A failed group-commit fsync is
    /// recorded in [`GroupCommit`], which the blocking-pool task that ran it can reach.)
    failed: bool,
    last_sync_nanos: u64,
    /// Sums of the segments' `len` and `allocated`.
    bytes: u64,
    allocated: u64,
    /// A segment was deleted and the directory sync after it failed: the deletion may still
    /// be taken back by a power loss, so the next deletion syncs the directory first.
    unlink_in_doubt: bool,
    /// Reused by every append, so that an append allocates nothing: the framed records, and
    /// where each starts in its segment.
    scratch: Vec<u8>,
    positions: Vec<u64>,
}

impl Inner {
    fn first(&self) -> u64 {
        self.sealed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active.base)
    }

    /// The segment holding offset `at`, if one is kept.
    fn segment_with(&self, at: u64) -> Option<&Segment> {
        if at >= self.active.base {
            return Some(&self.active);
        }
        self.sealed
            .range(..=at)
            .next_back()
            .map(|(_, segment)| segment)
    }

    fn segments(&self) -> usize {
        self.sealed.len() + 1
    }
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.files.dir)
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The highest next offset a log opens with: more records than any log appends (292 years at
/// a billion a second), so counting appends from it never overflows.
const MAX_OFFSET: u64 = 1 << 63;

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system and the system
    /// clock, recovering from a crash: see the [module docs](self).
    ///
    /// # Errors
    /// [`Error::InvalidOptions`], [`Error::Locked`], [`Error::Corrupt`], [`Error::Io`].
    pub fn open(dir: &Path, options: LogOptions) -> Result<Self, Error> {
        Self::open_with(dir, options, SystemClock::new(), FileStorage)
    }

    /// Opens the log in `dir` with a chosen clock (for `Interval` syncs and age retention) and
    /// file layer ([`SimulatedStorage`] in power-loss tests).
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open_with(
        dir: &Path,
        options: LogOptions,
        clock: impl Clock + 'static,
        storage: impl Storage + 'static,
    ) -> Result<Self, Error> {
        options.validate()?;
        let storage: Box<dyn Storage> = Box::new(storage);
        create_dir_durably(&*storage, dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock = take_dir_lock(&*storage, dir)?;
        let mut bases: Vec<u64> = storage
            .list(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        bases.sort_unstable();

        let clock: Box<dyn Clock> = Box::new(clock);
        let now_millis = wall_millis(&*clock);
        let mut sealed = BTreeMap::new();
        let mut newest = None;
        let (mut bytes, mut allocated) = (0u64, 0u64);
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(base));
            let is_last = i + 1 == bases.len();
            let segment = Segment::recover(&*storage, path, base, is_last, now_millis)?;
            if let Some(&next_base) = bases.get(i + 1)
                && base.checked_add(segment.records) != Some(next_base)
            {
                return Err(Error::Corrupt {
                    segment: segment.path.clone(),
                    position: segment.len,
                    reason: "the segment's record count does not reach the next segment's base offset",
                });
            }
            bytes += segment.len;
            allocated += segment.allocated;
            if let Some(older) = newest.replace(segment) {
                sealed.insert(older.base, older);
            }
        }
        let mut active = match newest {
            Some(segment) => segment,
            None => {
                // A first open: an earlier one may have created the directory and died before
                // its name was durable. (A segment in it proves a first open got this far.)
                sync_parent(&*storage, dir).map_err(|e| Error::io("sync directory", dir, e))?;
                let segment = Segment::create(&*storage, dir, 0, now_millis)?;
                bytes += segment.len;
                allocated += segment.allocated;
                segment
            }
        };
        // What was recovered becomes the durable point, so make it so: under `Never` the last
        // process may have left it in the page cache only (older segments were synced when
        // they were rolled).
        active
            .file
            .sync()
            .map_err(|e| Error::io("fsync", &active.path, e))?;
        let next = active
            .base
            .checked_add(active.records)
            .filter(|&next| next <= MAX_OFFSET)
            .ok_or_else(|| Error::Corrupt {
                segment: active.path.clone(),
                position: 0,
                reason: "the segment's offsets pass 2^63, which no log reaches",
            })?;
        if active.framing == Framing::V1 {
            // Appends go to segments in the current format only. One in the old format with
            // no record is started over in place; one with records (synced above, its torn
            // tail cut) is sealed, and a new segment starts at the next offset.
            let old = active;
            active = if old.records == 0 {
                bytes -= old.len;
                allocated -= old.allocated;
                Segment::start_over(old.base, old.path, old.file, now_millis)?
            } else {
                sealed.insert(old.base, old);
                Segment::create(&*storage, dir, next, now_millis)?
            };
            bytes += active.len;
            allocated += active.allocated;
        }
        // And the segments' names: an open or a roll that died between creating a segment and
        // syncing the directory left a name the next power loss would take, with whatever was
        // appended to it since.
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        let last_sync_nanos = clock.now_nanos();
        Ok(Self {
            files: Files {
                dir: dir.to_path_buf(),
                storage: Arc::new(storage),
                retention: options.retention,
                #[cfg(feature = "metrics")]
                metrics: metrics::LogMetrics::register("default"),
            },
            options,
            clock,
            inner: Arc::new(Mutex::new(Inner {
                sealed,
                active,
                next,
                failed: false,
                last_sync_nanos,
                bytes,
                allocated,
                unlink_in_doubt: false,
                scratch: Vec::new(),
                positions: Vec::new(),
            })),
            commit: Arc::new(GroupCommit::new(next)),
            #[cfg(feature = "tokio")]
            rolls: PoolWork::default(),
            _lock: lock,
        })
    }

    /// Appends one record and returns its offset once it is durable per the [`FsyncPolicy`].
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`]; [`Error::Io`] when the write or fsync failed;
    /// [`Error::Failed`] when an earlier one did.
    pub fn append(&self, payload: &[u8]) -> Result<u64, Error> {
        Ok(self.append_batch(&[payload])?.start)
    }

    /// Appends records in order, in as few writes as possible, and returns their offsets once
    /// all are durable per the [`FsyncPolicy`]. On an error, a prefix of the batch may have been
    /// appended (it is then not promised durable).
    ///
    /// # Errors
    /// As [`Log::append`]; nothing is written when any payload is too large.
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<u64>, Error> {
        let (range, sync_due) = self.write(payloads)?;
        if sync_due {
            self.make_durable(range.end)?;
        }
        Ok(range)
    }

    /// Writes one record and returns at once with a ticket for it: a producer keeps many
    /// appends in flight and acknowledges each when [`AppendTicket::wait`] returns, so under
    /// [`FsyncPolicy::Always`] one fsync covers every record written before it began, however
    /// few producers there are.
    ///
    /// Under `Always` the record is not acknowledged yet: it is on its way to the disk, not
    /// durable, and [`Log::read`] does not return it until an fsync covers it (one run by any
    /// ticket's `wait`, an [`append`](Log::append) or [`sync`](Log::sync)); dropping the
    /// ticket does not take the record back. Under the other policies the ticket's `wait`
    /// returns at once, as [`append`](Log::append) would have.
    ///
    /// ```
    /// use std::collections::VecDeque;
    /// use infra_mqueue::log::{AppendTicket, Log, LogOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::open(dir.path(), LogOptions::default())?; // fsync=Always
    /// let mut in_flight = VecDeque::new();
    /// for i in 0..1000u32 {
    ///     if in_flight.len() == 64 {
    ///         let oldest: AppendTicket<'_> = in_flight.pop_front().unwrap();
    ///         oldest.wait()?; // durable now: acknowledge it
    ///     }
    ///     in_flight.push_back(log.append_nowait(&i.to_le_bytes())?);
    /// }
    /// for ticket in in_flight {
    ///     ticket.wait()?;
    /// }
    /// assert_eq!(log.read(0, usize::MAX)?.len(), 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Log::append`], except that the fsync's errors come from [`AppendTicket::wait`].
    pub fn append_nowait(&self, payload: &[u8]) -> Result<AppendTicket<'_>, Error> {
        let mut ticket = self.write_one(payload)?;
        if ticket.pending && self.options.fsync != FsyncPolicy::Always {
            // An `Interval` sync that is due runs now, as in `append`: it must not wait for a
            // ticket that may never be waited on.
            self.make_durable(ticket.offset + 1)?;
            ticket.pending = false;
        }
        Ok(ticket)
    }

    /// Writes one record; its ticket is pending when an fsync is due for it.
    fn write_one(&self, payload: &[u8]) -> Result<AppendTicket<'_>, Error> {
        let (range, sync_due) = self.write(&[payload])?;
        Ok(AppendTicket::written(self, range.start, sync_due))
    }

    /// Frames and writes `payloads`; returns their offsets and whether an fsync is due for them
    /// (the caller runs it, with [`Log::make_durable`] or its async form, if it is).
    pub(crate) fn write(&self, payloads: &[&[u8]]) -> Result<(Range<u64>, bool), Error> {
        let mut inner = self.lock_for_write(payloads)?;
        self.write_locked(&mut inner, payloads)
    }

    /// Checks `payloads`' sizes and takes the lock appends are written under, refusing them
    /// if the log failed.
    fn lock_for_write(
        &self,
        payloads: &[&[u8]],
    ) -> Result<infra_common::sync::MutexGuard<'_, Inner>, Error> {
        let max = self.options.max_record_bytes;
        if let Some(big) = payloads.iter().find(|p| p.len() > max as usize) {
            return Err(Error::RecordTooLarge {
                len: big.len(),
                max,
            });
        }
        let inner = self.inner.lock();
        if inner.failed || self.commit.failed() {
            return Err(Error::Failed);
        }
        Ok(inner)
    }

    /// [`Log::lock_for_write`] if the lock can be taken at once; `None` if not.
    #[cfg(feature = "tokio")]
    fn try_lock_for_write(
        &self,
        payloads: &[&[u8]],
    ) -> Option<Result<infra_common::sync::MutexGuard<'_, Inner>, Error>> {
        let max = self.options.max_record_bytes;
        if let Some(big) = payloads.iter().find(|p| p.len() > max as usize) {
            return Some(Err(Error::RecordTooLarge {
                len: big.len(),
                max,
            }));
        }
        let inner = self.inner.try_lock()?;
        if inner.failed || self.commit.failed() {
            return Some(Err(Error::Failed));
        }
        Some(Ok(inner))
    }

    /// [`Log::write`] once the lock is taken.
    fn write_locked(
        &self,
        inner: &mut Inner,
        payloads: &[&[u8]],
    ) -> Result<(Range<u64>, bool), Error> {
        let start = inner.next;
        let mut buf = std::mem::take(&mut inner.scratch);
        let mut positions = std::mem::take(&mut inner.positions);
        buf.clear();
        positions.clear();
        let written = self.write_framed(inner, payloads, &mut buf, &mut positions);
        inner.scratch = buf;
        inner.positions = positions;
        written?;
        let due = match self.options.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => {
                let now = self.clock.now_nanos();
                let due = now.saturating_sub(inner.last_sync_nanos)
                    >= infra_common::clock::duration_to_nanos(every);
                if due {
                    inner.last_sync_nanos = now;
                }
                due
            }
            FsyncPolicy::Never => false,
        };
        Ok((start..inner.next, due))
    }

    /// Frames `payloads` into `buf` and writes them, rolling to a new segment where the next
    /// record would not fit.
    fn write_framed(
        &self,
        inner: &mut Inner,
        payloads: &[&[u8]],
        buf: &mut Vec<u8>,
        positions: &mut Vec<u64>,
    ) -> Result<(), Error> {
        for payload in payloads {
            let framed = record::framed_len(payload.len());
            let used = inner.active.len + buf.len() as u64;
            // The active segment is always in the current format, whose header is
            // `SEGMENT_HEADER` bytes: `Log::open` starts a new one after an old-format segment.
            if used > SEGMENT_HEADER as u64 && used + framed > self.options.segment_bytes {
                self.flush(inner, buf, positions)?;
                buf.clear();
                positions.clear();
                self.roll(inner)?;
            }
            // Were the active segment in the old format, nothing would be written to it.
            let Framing::Salted { seed } = inner.active.framing else {
                return Err(Error::Failed);
            };
            positions.push(inner.active.len + buf.len() as u64);
            record::encode(seed, payload, buf);
        }
        self.flush(inner, buf, positions)
    }

    /// Writes `buf` (whose records start at `positions`) to the active segment.
    fn flush(&self, inner: &mut Inner, buf: &[u8], positions: &[u64]) -> Result<(), Error> {
        if positions.is_empty() {
            return Ok(());
        }
        let segment = &mut inner.active;
        let end = segment.len + buf.len() as u64;
        let preallocate = match self.options.fsync {
            FsyncPolicy::Never => 0,
            _ => self.options.preallocate,
        };
        let zeros_until = self
            .options
            .segment_bytes
            .min(end.saturating_add(preallocate));
        let allocated_before = segment.allocated;
        let written = segment.write_records(buf, positions, zeros_until);
        inner.allocated = inner.allocated - allocated_before + inner.active.allocated;
        if let Err(failure) = written {
            // The segment cut a partial write back, so later appends never follow a torn
            // record; if that failed too, what is on disk is unknown and the log stops.
            inner.failed |= !failure.cut_back;
            return Err(failure.error);
        }
        inner.bytes += buf.len() as u64;
        inner.next += positions.len() as u64;
        #[cfg(feature = "metrics")]
        self.files
            .metrics
            .appended(positions.len(), buf.len(), inner.next - inner.first());
        Ok(())
    }

    /// Syncs the active segment (and with it everything written before the call) and starts a
    /// new one at the next offset, then applies retention: see [`Files::roll`].
    fn roll(&self, inner: &mut Inner) -> Result<(), Error> {
        self.files.roll(inner, wall_millis(&*self.clock))
    }

    /// The leader's sync: everything written so far.
    fn sync_written(&self) -> Result<u64, Error> {
        self.pending_sync()?.run()
    }

    /// An fsync of everything written so far, through the active segment's file (older
    /// segments were synced when they were rolled). The end it covers is read now, before the
    /// fsync starts, so a record written meanwhile is never counted as covered.
    fn pending_sync(&self) -> Result<PendingSync, Error> {
        let inner = self.inner.lock();
        if inner.failed {
            return Err(Error::Failed);
        }
        let active = &inner.active;
        Ok(PendingSync {
            end: inner.next,
            file: Arc::clone(&active.file),
            path: active.path.clone(),
            #[cfg(feature = "metrics")]
            metrics: self.files.metrics.clone(),
        })
    }

    /// Makes every record appended so far durable, whatever the policy.
    ///
    /// # Errors
    /// [`Error::Io`] when the fsync fails, [`Error::Failed`] when an earlier one did.
    pub fn sync(&self) -> Result<(), Error> {
        let end = {
            let mut inner = self.inner.lock();
            inner.last_sync_nanos = self.clock.now_nanos();
            inner.next
        };
        self.make_durable(end)
    }

    /// Whether an fsync failed: the log then refuses appends, and records not yet durable
    /// never will be (in this process).
    pub(crate) fn sync_failed(&self) -> bool {
        self.commit.failed()
    }

    /// Returns once every record below `end` is durable, sharing fsyncs with every other
    /// caller (group commit).
    pub(crate) fn make_durable(&self, end: u64) -> Result<(), Error> {
        self.commit.wait(end, || self.sync_written())
    }

    /// Reads up to `max_records` records from offset `from` on, in order. Empty when `from` is
    /// at or past the end of what is readable (under `Always`: durable).
    ///
    /// # Errors
    /// [`Error::OffsetTruncated`] when retention removed `from`; [`Error::Corrupt`] when a
    /// record fails its checksum (the file changed under the log); [`Error::Io`].
    pub fn read(&self, from: u64, max_records: usize) -> Result<Vec<Record>, Error> {
        self.read_within(from, max_records, usize::MAX)
    }

    /// [`Log::read`], also stopping before a record that would take the payloads read past
    /// `max_bytes`: the first record is returned whatever its size (up to the log's
    /// `max_record_bytes`), so a reader always moves on. What a read holds in memory is then
    /// bounded by its caller rather than by `max_records` records of the largest size.
    ///
    /// # Errors
    /// As [`Log::read`].
    pub fn read_within(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, Error> {
        let mut out: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        let mut at = from;
        'segments: while out.len() < max_records {
            let (file, path, framing, mut position, mut offset, until, seg_len) = {
                let inner = self.inner.lock();
                let first = inner.first();
                if at < first {
                    if out.is_empty() {
                        return Err(Error::OffsetTruncated {
                            requested: at,
                            first,
                        });
                    }
                    break;
                }
                let visible = match self.options.fsync {
                    FsyncPolicy::Always => self.commit.durable().min(inner.next),
                    _ => inner.next,
                };
                if at >= visible {
                    break;
                }
                let Some(segment) = inner.segment_with(at) else {
                    break;
                };
                let base = segment.base;
                let stride = (at - base) / INDEX_STRIDE;
                let Some(&position) = usize::try_from(stride)
                    .ok()
                    .and_then(|i| segment.index.get(i))
                else {
                    break;
                };
                let wanted = u64::try_from(max_records - out.len()).unwrap_or(u64::MAX);
                let until = visible
                    .min(base + segment.records)
                    .min(at.saturating_add(wanted));
                (
                    Arc::clone(&segment.file),
                    segment.path.clone(),
                    segment.framing,
                    position,
                    base + stride * INDEX_STRIDE,
                    until,
                    segment.len,
                )
            };
            let mut reader = Reader::new(&**file, seg_len);
            while offset < until {
                let frame = reader
                    .frame_at(position, framing, RECORD_LIMIT)
                    .map_err(|e| Error::io("read", &path, e))?;
                let Frame::Record { payload, len } = frame else {
                    return Err(Error::Corrupt {
                        segment: path,
                        position,
                        reason: "a record changed on disk after it was written",
                    });
                };
                if offset >= at {
                    if !out.is_empty() && bytes.saturating_add(payload.len()) > max_bytes {
                        break 'segments;
                    }
                    bytes = bytes.saturating_add(payload.len());
                    out.push(Record {
                        offset,
                        payload: payload.to_vec(),
                    });
                }
                position += len as u64;
                offset += 1;
            }
            at = until;
        }
        Ok(out)
    }

    /// The oldest offset kept (retention raises it).
    pub fn first_offset(&self) -> u64 {
        self.inner.lock().first()
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> u64 {
        self.inner.lock().next
    }

    /// The log's size now.
    pub fn stats(&self) -> LogStats {
        let inner = self.inner.lock();
        let first = inner.first();
        LogStats {
            bytes: inner.bytes,
            allocated_bytes: inner.allocated,
            depth: inner.next - first,
            segments: inner.segments(),
            first_offset: first,
            next_offset: inner.next,
        }
    }

    /// Reports this log's metrics under `name` (the `log` label) instead of `default`. Install
    /// the recorder before calling it.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: &str) -> Self {
        self.files.metrics = metrics::LogMetrics::register(name);
        self.files.metrics.depth(self.stats().depth);
        self
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    /// Deletes the segments [`LogOptions::retention`] no longer keeps (it also runs at every
    /// segment roll) and returns how many went.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be removed or the directory synced.
    pub fn enforce_retention(&self) -> Result<usize, Error> {
        let mut inner = self.inner.lock();
        self.files.retain(&mut inner, wall_millis(&*self.clock))
    }

    /// Deletes the oldest segments all of whose records are below `offset` (never the newest)
    /// and returns how many went: for an owner that knows it needs none of them again.
    pub(crate) fn remove_before(&self, offset: u64) -> Result<usize, Error> {
        let mut inner = self.inner.lock();
        self.files.remove_oldest_while(&mut inner, |inner| {
            let next_base = inner.sealed.keys().nth(1).copied();
            next_base.unwrap_or(inner.active.base) <= offset
        })
    }
}

/// An fsync that owns what it needs, so it can run on any thread (`Log::pending_sync`).
#[derive(Debug)]
struct PendingSync {
    /// Every record below this is in `file` or in an older, already synced segment.
    end: u64,
    file: Arc<Box<dyn StorageFile>>,
    path: PathBuf,
    #[cfg(feature = "metrics")]
    metrics: metrics::LogMetrics,
}

impl PendingSync {
    /// Runs the fsync; returns the end it made durable. A failure is recorded by the group
    /// commit the outcome goes to, which then refuses further appends.
    fn run(self) -> Result<u64, Error> {
        self.file
            .sync()
            .map_err(|error| Error::io("fsync", self.path, error))?;
        #[cfg(feature = "metrics")]
        self.metrics.fsynced();
        Ok(self.end)
    }
}

impl Drop for Log {
    /// Waits for the segment rolls async appends left on the blocking pool (see
    /// [`PoolWork`]), then, under `Interval`, syncs what is written.
    fn drop(&mut self) {
        #[cfg(feature = "tokio")]
        self.rolls.wait_idle();
        if matches!(self.options.fsync, FsyncPolicy::Interval(_)) {
            // Best effort: a failure here has no caller to tell, and reopening recovers.
            let _ = self.sync();
        }
    }
}

fn wall_millis(clock: &dyn Clock) -> u64 {
    clock
        .wall_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Decodes `bytes` as consecutive records the way recovery does, for the fuzz target: framed
/// for an `INFRAMQ2` segment whose salt is `salt`, or for an `INFRAMQ1` one (`None`). Returns
/// each record's position and payload up to the first frame that is not a whole valid record.
#[cfg(fuzzing)]
pub fn fuzz_decode(bytes: &[u8], salt: Option<u64>, max_len: u32) -> Vec<(usize, &[u8])> {
    let framing = salt.map_or(Framing::V1, |salt| Framing::Salted {
        seed: record::seed(salt),
    });
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(rest) = bytes.get(at..) {
        match framing.decode(rest, max_len) {
            Frame::Record { payload, len } => {
                out.push((at, payload));
                at += len;
            }
            Frame::Incomplete { .. } | Frame::Invalid(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("0042.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.tmp"), None);
    }
}
