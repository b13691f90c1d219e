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
//! One fsync still runs on the calling task: a segment roll's, when an append fills the
//! segment (once per [`LogOptions::segment_bytes`](super::LogOptions::segment_bytes)).

use std::future::poll_fn;

use super::commit::{AsyncWaiter, GroupCommit, SyncLeader};
use super::{AppendTicket, Log};
use crate::Error;

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
    /// without blocking the thread for the fsync (see [`AppendTicket::wait_async`]).
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
        self.write_one(payload)?.wait_async().await
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
