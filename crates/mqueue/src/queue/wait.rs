//! The async face of a work queue (feature `tokio`): sends that wait for room and receives
//! that wait for a message on tokio's `Notify`, never by polling.

use std::time::Duration;

use tokio::sync::Notify;

use super::{Delivery, Message, Sent, UnreleasedSend, WorkQueue, Written};
use crate::error::Error;

/// The wake-ups of async waiters.
#[derive(Debug, Default)]
pub(super) struct Notifiers {
    /// A message may have become available.
    pub(super) available: Notify,
    /// Room may have been freed.
    pub(super) space: Notify,
}

/// Wakes the async waiters for `items` made available (messages, or room for them): for one,
/// a waiter (or a permit for the next, if none waits), as `notify_one` does; for more, every
/// waiter, once, rather than a notification per item. Each woken waiter looks again, and one
/// that finds nothing waits again; a waiter always registers before it looks, so none misses a
/// wake-up that `notify_waiters` gives without a permit.
pub(super) fn wake(notify: &Notify, items: usize) {
    match items {
        0 => {}
        1 => notify.notify_one(),
        _ => notify.notify_waiters(),
    }
}

impl WorkQueue {
    /// [`WorkQueue::send`] for async callers: waits for room, and on a durable queue for the
    /// fsync that makes the message durable, without blocking the thread.
    ///
    /// A durable queue writes the message on the calling task; under
    /// `FsyncPolicy::Always` the fsync runs on tokio's blocking pool, shared with every
    /// send (blocking or async) written before it began. A future dropped after the write
    /// leaves the message written but not acknowledged: the next receive makes it durable
    /// (running an fsync if none covered it yet) and available.
    pub async fn send_async(&self, message: impl Into<Message>) -> Result<Sent, Error> {
        let message = message.into();
        let written = loop {
            let room = self.notify.space.notified();
            tokio::pin!(room);
            // Registered before the check, so a wake-up between the two is not lost.
            room.as_mut().enable();
            match self.start_send(message.clone(), false) {
                Err(Error::Full { .. }) => room.await,
                other => break other?,
            }
        };
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
    pub async fn receive_async(&self) -> Result<Delivery, Error> {
        self.wait_async(|| self.try_receive()).await
    }

    /// [`WorkQueue::receive_many`] for async callers, without a timeout: waits as
    /// [`receive_async`](Self::receive_async) does for the first message, then returns every
    /// available one up to `max` (none at once if `max` is zero).
    pub async fn receive_many_async(&self, max: usize) -> Result<Vec<Delivery>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.wait_async(|| {
            let batch = self.try_receive_many(max)?;
            Ok((!batch.is_empty()).then_some(batch))
        })
        .await
    }

    /// Runs `attempt` until it finds something, sleeping between attempts on the tokio
    /// `Notify` a send or a nack signals, or until the next delay or lease ends.
    async fn wait_async<T>(
        &self,
        mut attempt: impl FnMut() -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        loop {
            let arrival = self.notify.available.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            if let Some(found) = attempt()? {
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
            match wait {
                // Either outcome means: look again.
                Some(wait) => drop(tokio::time::timeout(wait, arrival).await),
                None => arrival.await,
            }
        }
    }
}
