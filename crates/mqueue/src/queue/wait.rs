//! The async face of a work queue (feature `tokio`): sends that wait for room and receives
//! that wait for a message on tokio's `Notify`, never by polling.

use std::future::Future;
use std::time::Duration;

use infra_common::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

use infra_common::sync::Arc;

use super::durable::{Durable, PoolShare};
use super::{Delivery, Leased, Message, Sent, UnreleasedSend, WorkQueue, Written, journal};
use crate::blocking::on_blocking_pool;
use crate::error::Error;

/// The wake-ups of async waiters.
#[derive(Debug, Default)]
pub(super) struct Notifiers {
    /// A message may have become available.
    pub(super) available: Waiters,
    /// Room may have been freed.
    pub(super) space: Waiters,
}

/// A `Notify` and how many tasks are registered to wait on it.
///
/// The count spares a queue that no task waits on a notification (an atomic write) per
/// message, and bounds a batch's wake-ups by the tasks there are. It misses no waiter: a task
/// registers before it looks at the queue under the state lock, and a waker changes the state
/// under that lock before it reads the count; so either the waker's read sees the
/// registration, or the task's look comes after the change and finds it.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    notify: Notify,
    registered: AtomicUsize,
}

impl Waiters {
    /// Wakes a registered task per item, oldest first, at most as many as are registered
    /// (`notify_one` each: one that finds nothing waiting leaves a permit for the next).
    pub(super) fn wake(&self, items: usize) {
        let registered = self.registered.load(Ordering::Relaxed);
        for _ in 0..items.min(registered) {
            self.notify.notify_one();
        }
    }

    /// Wakes every task waiting now.
    pub(super) fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    /// Counts the caller as a waiter until the registration is dropped.
    fn register(&self) -> Registration<'_> {
        self.registered.fetch_add(1, Ordering::Relaxed);
        Registration {
            waiters: self,
            owes_wake: false,
        }
    }
}

/// A task counted in [`Waiters`] while it waits (dropped with its future if cancelled).
struct Registration<'a> {
    waiters: &'a Waiters,
    /// The task took a wake-up and has not found what it was for: if it leaves now (its
    /// caller dropped it, say on a timeout), the wake-up goes on to another waiter, which
    /// may otherwise sleep past a message due later or beside room freed.
    owes_wake: bool,
}

impl Registration<'_> {
    /// Notes how the task's wait ended: `woken` by a notification, or by its own timer.
    fn waited(&mut self, woken: bool) {
        self.owes_wake |= woken;
    }

    /// The task found what it waited for: it leaves owing nothing.
    fn found(&mut self) {
        self.owes_wake = false;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.waiters.registered.fetch_sub(1, Ordering::Relaxed);
        if self.owes_wake {
            self.waiters.notify.notify_one();
        }
    }
}

impl WorkQueue {
    /// [`WorkQueue::send`] for async callers: waits for room, and on a durable queue for the
    /// fsync that makes the message durable, without blocking the thread.
    ///
    /// A durable queue writes the message on the calling task; under
    /// `FsyncPolicy::Always` the fsync runs on tokio's blocking pool, shared with every
    /// send (blocking or async) written before it began. A send journals nothing, so it
    /// never compacts the journal. A message that would fill the message log's segment is
    /// written only once the segment rolled on the blocking pool (the finished segment
    /// fsynced, the new one created and its header fsynced, the directory fsynced), once per
    /// `segment_bytes` of messages. A future dropped after the write
    /// leaves the message written but not acknowledged: the next receive makes it durable
    /// (running an fsync if none covered it yet) and available.
    pub async fn send_async(&self, message: impl Into<Message>) -> Result<Sent, Error> {
        let message = message.into();
        let mut registered = self.notify.space.register();
        let written = loop {
            let room = self.notify.space.notify.notified();
            tokio::pin!(room);
            // Registered before the check, so a wake-up between the two is not lost.
            room.as_mut().enable();
            let started = self.start_send_with(message.clone(), false, |durable, envelope| {
                let written = durable.write_message_unless_rolling(envelope)?;
                Ok(written.map_err(|roll| (durable, roll)))
            });
            match started {
                Err(Error::Full { .. }) => {
                    room.await;
                    registered.waited(true);
                }
                // The message would fill the log's segment: it is rolled on the blocking pool,
                // then the send starts over (its room was given back meanwhile).
                Ok(Err((durable, roll))) => durable.roll_messages_async(roll).await?,
                Ok(Ok(written)) => {
                    registered.found();
                    break written;
                }
                Err(error) => {
                    registered.found();
                    return Err(error);
                }
            }
        };
        drop(registered);
        match written {
            Written::Done(sent) => Ok(sent),
            Written::New(ticket) => {
                let send = UnreleasedSend::new(self, ticket.offset());
                let waited = ticket.wait_async().await.map(drop);
                send.end(waited)
            }
            Written::DuplicateOfWriting(durable, offset) => {
                durable.wait_durable_async(offset).await?;
                Ok(self.made_durable(offset, true))
            }
        }
    }

    /// [`WorkQueue::receive`] for async callers: waits for a send or a nack, or until the
    /// next delay or lease ends on the queue's clock, whichever comes first.
    ///
    /// On a durable queue, what runs where:
    ///
    /// - on the calling task: the lease, taken under the queue's state lock; the writes of the
    ///   journal record and of any dead letters (into the page cache); and, once per
    ///   `compact_after` records, a journal compaction's checkpoint (a walk of the lease table
    ///   in memory);
    /// - on tokio's blocking pool, never on the task's worker thread: the fsyncs (the journal
    ///   record's, a dead letter's, and that of a dropped `send_async`'s message), all of a
    ///   compaction's file work (the new journal generation written and fsynced, the
    ///   `JOURNAL` pointer written, fsynced and renamed, the directory fsynced, the old
    ///   generation and the settled message segments removed), the directory fsync that
    ///   a compaction which failed it after its rename left to the next journal record, and
    ///   a segment roll when the journal records or a dead letter would fill their log's
    ///   segment (the finished segment fsynced, the new one created and its header fsynced,
    ///   the directory fsynced, before the write that needs it). The receive returns once the
    ///   compaction it started has ended;
    /// - still on the calling task: the wait for a log's lock while a roll on the pool holds
    ///   it, and for the journal's lock while a compaction on the pool copies over the
    ///   records written since its checkpoint and renames the pointer.
    ///
    /// A future dropped while it waits for an fsync or a compaction hands nothing out and
    /// holds nothing: the message it leased is available again at once, as the same attempt
    /// (the delivery its caller never got does not count towards `max_deliveries`, nor as
    /// delivered, nor after a restart: a journal record withdrawing it is written as the
    /// future is dropped; an expired lease it took over is its holder's again), and a dead
    /// letter it
    /// wrote but did not settle is written again by a later receive. A compaction it started
    /// runs to its end on the pool.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_mqueue::log::SimulatedStorage;
    /// use infra_mqueue::queue::{QueueOptions, WorkQueue};
    /// use std::path::Path;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let disk = SimulatedStorage::new();
    /// let options = QueueOptions::default().compact_after(16);
    /// let queue = WorkQueue::open_with(Path::new("/q"), options, ManualClock::new(), disk)?;
    /// for job in 0..20u8 {
    ///     queue.send_async(vec![job]).await?;
    /// }
    /// for job in 0..20u8 {
    ///     // The 16th receive also compacts the journal, on the blocking pool.
    ///     let delivery = queue.receive_async().await?;
    ///     assert_eq!(delivery.payload(), [job]);
    /// }
    /// # Ok::<(), infra_mqueue::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn receive_async(&self) -> Result<Delivery, Error> {
        self.wait_async(|| async {
            let mut delivery = None;
            self.receive_into_async(1, |leased| delivery = Some(leased))
                .await?;
            Ok(delivery)
        })
        .await
    }

    /// [`WorkQueue::receive_many`] for async callers, without a timeout: waits as
    /// [`receive_async`](Self::receive_async) does for the first message, then returns every
    /// available one up to `max` (none at once if `max` is zero).
    pub async fn receive_many_async(&self, max: usize) -> Result<Vec<Delivery>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.wait_async(|| async move {
            let mut batch = Vec::with_capacity(max.min(64));
            self.receive_into_async(max, |delivery| batch.push(delivery))
                .await?;
            Ok((!batch.is_empty()).then_some(batch))
        })
        .await
    }

    /// [`WorkQueue::receive_into`] for async callers: the same steps, with the fsyncs on
    /// tokio's blocking pool. What it leased is given back if the future is dropped before
    /// the journal record is durable (see [`super::Leased`]).
    async fn receive_into_async(
        &self,
        max: usize,
        mut deliver: impl FnMut(Delivery),
    ) -> Result<(), Error> {
        let mut leased = Leased::new(self);
        leased.is_async = true;
        loop {
            while let Err(abandoned_end) = self.lease(max, &mut deliver, &mut leased) {
                self.release_abandoned_async(abandoned_end).await;
            }
            // A dead letter would have rolled its log's segment: rolled on the pool, the
            // batch goes on with it.
            let Some(roll) = leased.dead_roll.take() else {
                break;
            };
            if let Some(durable) = &self.durable {
                durable.roll_dead_letters_async(roll).await?;
            }
        }
        if let Some(durable) = &self.durable {
            let synced = match leased.dead_end {
                Some(end) => Some(durable.sync_dead_letters_async(end).await),
                None => None,
            };
            let entries = self.settle_dead_letters(&mut leased, synced);
            self.journal_async(durable, &entries).await?;
        }
        leased.reached_caller()
    }

    /// [`WorkQueue::journal`] for async callers: the fsync runs on tokio's blocking pool, and
    /// so do the file work of the compaction it may make due and the directory sync a
    /// compaction's failed one left to it.
    async fn journal_async(
        &self,
        durable: &Arc<Durable>,
        entries: &[journal::Entry],
    ) -> Result<(), Error> {
        if durable.pointer_unsynced() {
            let share = PoolShare::new(durable);
            // If another compaction fails the same way before the write, the write syncs the
            // directory itself.
            on_blocking_pool(durable.pool_work(), move || share.sync_pointer()).await?;
        }
        // A receive's deliveries leave `unjournaled` as their records are written, part by
        // part if a roll splits them: a receive dropped in between withdraws those only.
        let written = Durable::write_journal_async(durable, entries, |written| {
            let mut state = self.state.lock();
            for entry in written {
                if let journal::Entry::Received { offset, attempt } = *entry {
                    state.unjournaled.remove(&(offset, attempt));
                }
            }
        })
        .await?;
        if let Some(written) = written
            && written.wait_async().await?
        {
            self.compact_async(durable).await;
        }
        Ok(())
    }

    /// Takes a due compaction's checkpoint on this task (the lease table, in memory) and
    /// finishes it on tokio's blocking pool (outside a runtime, on this thread): it writes,
    /// fsyncs and renames files. It runs to the end even if this future is dropped; its
    /// failure is not the receive's (see [`WorkQueue::journal`]).
    async fn compact_async(&self, durable: &Arc<Durable>) {
        let Some(compaction) = Durable::begin_compaction(durable, || self.checkpoint()) else {
            return;
        };
        on_blocking_pool(durable.pool_work(), move || drop(compaction.finish())).await;
    }

    /// Runs `attempt` until it finds something, sleeping between attempts on the tokio
    /// `Notify` a send or a nack signals, or until the next delay or lease ends.
    async fn wait_async<T, F: Future<Output = Result<Option<T>, Error>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, Error> {
        let mut registered = self.notify.available.register();
        loop {
            let arrival = self.notify.available.notify.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if let Some(found) = attempt().await? {
                registered.found();
                return Ok(found);
            }
            let wait = {
                let mut state = self.state.lock();
                let now = self.clock.now_nanos();
                state
                    .leases
                    .next_due(now)
                    .map(|due| Duration::from_nanos(due.saturating_sub(now)))
            };
            // Either outcome means: look again.
            let woken = match wait {
                Some(wait) => tokio::time::timeout(wait, arrival).await.is_ok(),
                None => {
                    arrival.await;
                    true
                }
            };
            registered.waited(woken);
        }
    }
}
