//! Async appends (feature `tokio`): waiting for durability without blocking a runtime thread.
//!
//! The record is written on the calling task, as a blocking append writes it: a write into the
//! page cache under the log's lock. Only the fsync moves. A waiter that finds no fsync in
//! flight starts one on tokio's blocking pool (`spawn_blocking`) rather than on a syncer thread
//! of the log's own: the pool exists wherever a runtime does, a log nobody awaits costs no
//! thread, and the fsync must not run on the task's worker, where it would stall every task
//! scheduled there (all of them, on a current-thread runtime). The pool task owns what it needs
//! (the segment's file and the shared group commit), so the fsync completes and its outcome is
//! published even if the future that started it is dropped. Blocked `wait`ers and async ones
//! share the same fsyncs: see `commit.rs`.
//!
//! A segment roll moves too. An async write that finds it would fill the active segment
//! (which holds records) writes nothing yet: the whole roll runs on the blocking pool, in the
//! order a power loss needs (the finished segment fsynced, the new one created with its header
//! fsynced, the directory fsynced), under the log's lock as a blocking append's roll does, and
//! the write is tried again once it ended (a batch writes the records that fit first, and the
//! rest after the roll). Deferring only the old segment's fsync would not do: the new
//! segment's name could reach the disk before the old segment's last records, and a reopen
//! after a power loss would refuse the log as corrupt.

use std::future::poll_fn;
use std::ops::Range;

use infra_common::sync::{Arc, Mutex};

use super::commit::{AsyncWaiter, GroupCommit, SyncLeader};
use super::pool_work::PoolJob;
use super::roll::Files;
use super::{AppendTicket, Inner, Log, SEGMENT_HEADER, record, wall_millis};
use crate::Error;
use crate::blocking::on_blocking_pool;

/// The active segment an async write found too full for its records, named by its base
/// offset: it must roll (on the blocking pool) before they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "nothing was written: roll the segment, then write again"]
pub(crate) struct RollFirst(u64);

/// What [`Log::write_unless_rolling`] wrote: a prefix of the records, and the roll the rest
/// must wait for.
#[derive(Debug)]
pub(crate) struct Part {
    /// The offsets of the records written (none if the first one needs the roll).
    pub(crate) written: Range<u64>,
    /// Whether an fsync is due for them.
    pub(crate) sync_due: bool,
    /// The roll the records after them need first; `None` once every record is written.
    pub(crate) roll: Option<RollFirst>,
}

/// A segment roll that owns what it needs, so that it runs on tokio's blocking pool and ends
/// even if the future that asked for it is dropped.
#[derive(Debug)]
pub(crate) struct RollJob {
    inner: Arc<Mutex<Inner>>,
    files: Files,
    /// The segment to roll.
    base: u64,
    now_millis: u64,
    /// Counted by the log until the roll is dropped: last, so it falls once the rest is gone.
    _running: PoolJob,
}

impl RollJob {
    /// Rolls the segment, unless another writer rolled it since (then its records went to a
    /// newer one, and the write that asked finds room there or asks again).
    pub(crate) fn run(self) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        if inner.failed {
            return Err(Error::Failed);
        }
        if inner.active.base != self.base {
            return Ok(());
        }
        self.files.roll(&mut inner, self.now_millis)
    }
}

impl AppendTicket<'_> {
    /// [`wait`](Self::wait) for async callers: returns the record's offset once it is durable
    /// per the log's [`FsyncPolicy`](super::FsyncPolicy), without blocking the thread. Under
    /// `Always` the fsync that covers it runs on tokio's blocking pool (or is one already in
    /// flight for other appenders, blocked or async); the task is woken once when it ends.
    ///
    /// Dropping the future loses nothing and corrupts nothing: the record stays written, an
    /// fsync already started still completes (and may make it durable), and it is simply not
    /// acknowledged, like a ticket that was never waited on. Outside a tokio runtime the fsync
    /// runs on the polling thread.
    ///
    /// ```
    /// use infra_mqueue::log::{Log, LogOptions};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let log = Log::open(dir.path(), LogOptions::default())?; // fsync=Always
    /// let first = log.append_nowait(b"order 1")?;
    /// let second = log.append_nowait(b"order 2")?;
    /// assert_eq!(second.wait_async().await?, 1); // one fsync covered both
    /// assert_eq!(first.wait_async().await?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// A copy of the failed fsync's [`Error::Io`] for every waiter it was to cover;
    /// [`Error::Failed`] when the log had failed before.
    pub async fn wait_async(self) -> Result<u64, Error> {
        if self.pending {
            self.log.make_durable_async(self.offset + 1).await?;
        }
        Ok(self.offset)
    }
}

impl Log {
    /// [`append`](Self::append) for async callers: writes the record when first polled and
    /// returns its offset once it is durable per the [`FsyncPolicy`](super::FsyncPolicy),
    /// without blocking the thread for the fsync (see [`AppendTicket::wait_async`]) or for a
    /// segment roll, which runs on tokio's blocking pool before the record is written.
    ///
    /// Under `Always`, `Ok(offset)` means what `append`'s does: an fsync that began after the
    /// record was written has completed, so neither a crash nor a power loss takes it back.
    /// Concurrent async appends, blocking ones and tickets share fsyncs. Under `Interval`, a
    /// due fsync runs on the blocking pool too; if the future is dropped before it starts, the
    /// next due append runs it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use infra_mqueue::log::{Log, LogOptions};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let log = Arc::new(Log::open(dir.path(), LogOptions::default())?); // fsync=Always
    /// let producers: Vec<_> = (0..4u32)
    ///     .map(|i| {
    ///         let log = Arc::clone(&log);
    ///         tokio::spawn(async move { log.append_async(&i.to_le_bytes()).await })
    ///     })
    ///     .collect();
    /// for producer in producers {
    ///     producer.await.unwrap()?; // durable
    /// }
    /// assert_eq!(log.read(0, 10)?.len(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`Log::append`]; a failed fsync's error as [`AppendTicket::wait_async`] gives it.
    pub async fn append_async(&self, payload: &[u8]) -> Result<u64, Error> {
        let (range, sync_due) = self.write_async(&[payload]).await?;
        AppendTicket::written(self, range.start, sync_due)
            .wait_async()
            .await
    }

    /// [`Log::write`] for async callers: a roll the records need runs on tokio's blocking
    /// pool before they are written (see the module docs). Returns the first record's offset,
    /// the end after the last, and whether an fsync is due for them; a batch split by a roll
    /// may have other writers' records between its own.
    pub(crate) async fn write_async(
        &self,
        mut payloads: &[&[u8]],
    ) -> Result<(Range<u64>, bool), Error> {
        let mut first = None;
        let mut sync_due = false;
        loop {
            let part = self.write_unless_rolling(payloads)?;
            if !part.written.is_empty() {
                first.get_or_insert(part.written.start);
            }
            sync_due |= part.sync_due;
            let Some(roll) = part.roll else {
                let start = first.unwrap_or(part.written.start);
                return Ok((start..part.written.end, sync_due));
            };
            let count = part.written.end - part.written.start;
            payloads = &payloads[usize::try_from(count).unwrap_or(payloads.len())..];
            self.roll_async(roll).await?;
        }
    }

    /// [`Log::write`], except that it never rolls the active segment while it holds records:
    /// it writes the records that fit before such a roll, and returns the roll the rest need
    /// (for the caller to run, [`Log::roll_job`], and write them after).
    pub(crate) fn write_unless_rolling(&self, payloads: &[&[u8]]) -> Result<Part, Error> {
        let inner = self.lock_for_write(payloads)?;
        self.write_locked_unless_rolling(inner, payloads)
    }

    /// [`Log::write_unless_rolling`] if the log's lock can be taken at once: `None` while
    /// another writer, a roll or an fsync's bookkeeping holds it (for a caller that must not
    /// wait, such as a drop on a runtime's thread).
    pub(crate) fn try_write_unless_rolling(
        &self,
        payloads: &[&[u8]],
    ) -> Option<Result<Part, Error>> {
        let inner = self.try_lock_for_write(payloads)?;
        Some(inner.and_then(|inner| self.write_locked_unless_rolling(inner, payloads)))
    }

    /// The write of [`Log::write_unless_rolling`] once the lock is taken. Inlined into both
    /// callers, so that the async append path costs what it did before the non-waiting one
    /// shared its body.
    #[inline(always)]
    fn write_locked_unless_rolling(
        &self,
        mut inner: infra_common::sync::MutexGuard<'_, Inner>,
        payloads: &[&[u8]],
    ) -> Result<Part, Error> {
        let fitting = self.records_before_roll(&inner, payloads);
        if fitting == 0 && !payloads.is_empty() {
            let next = inner.next;
            return Ok(Part {
                written: next..next,
                sync_due: false,
                roll: Some(RollFirst(inner.active.base)),
            });
        }
        let (written, sync_due) = self.write_locked(&mut inner, &payloads[..fitting])?;
        let roll = (fitting < payloads.len()).then_some(RollFirst(inner.active.base));
        Ok(Part {
            written,
            sync_due,
            roll,
        })
    }

    /// How many of `payloads` go in the active segment before one would roll it: the same
    /// test as `Log::write_framed`'s, which rolls where the next record would not fit in a
    /// segment that holds records. (The first always fits in an empty segment.)
    fn records_before_roll(&self, inner: &Inner, payloads: &[&[u8]]) -> usize {
        let header = SEGMENT_HEADER as u64;
        let mut used = inner.active.len;
        for (at, payload) in payloads.iter().enumerate() {
            let framed = record::framed_len(payload.len());
            if used > header && used + framed > self.options.segment_bytes {
                return at;
            }
            used += framed;
        }
        payloads.len()
    }

    /// The roll `roll` asks for, to run on a thread that may block.
    pub(crate) fn roll_job(&self, roll: RollFirst) -> RollJob {
        RollJob {
            inner: Arc::clone(&self.inner),
            files: self.files.clone(),
            base: roll.0,
            now_millis: wall_millis(&*self.clock),
            _running: self.rolls.start(),
        }
    }

    /// Runs the roll `roll` asks for on tokio's blocking pool (on this thread if the runtime
    /// shut down before the pool ran it, or outside a runtime).
    pub(crate) async fn roll_async(&self, roll: RollFirst) -> Result<(), Error> {
        let job = self.roll_job(roll);
        on_blocking_pool(&self.rolls, move || job.run()).await
    }

    /// Returns once every record below `end` is durable, sharing fsyncs with every other
    /// caller, blocked or async.
    pub(crate) async fn make_durable_async(&self, end: u64) -> Result<(), Error> {
        let mut waiter = AsyncWaiter::default();
        poll_fn(|cx| {
            GroupCommit::poll_wait(&self.commit, end, &mut waiter, cx.waker(), |leader| {
                self.start_sync(leader);
            })
        })
        .await
    }

    /// Runs the fsync `leader` must end on tokio's blocking pool.
    fn start_sync(&self, leader: SyncLeader) {
        // Read here, before the fsync starts: the records it will cover.
        let sync = match self.pending_sync() {
            Ok(sync) => sync,
            Err(error) => return leader.finish(&Err(error)),
        };
        let run = move || leader.finish(&sync.run());
        match tokio::runtime::Handle::try_current() {
            // Not awaited: the outcome reaches the waiters through `leader`. If the runtime
            // shuts down before the task runs, dropping `leader` lets the next waiter lead.
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            // No runtime, so no pool to hand it to: this thread was going to wait anyway.
            Err(_) => run(),
        }
    }
}
