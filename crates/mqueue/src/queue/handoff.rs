//! The in-memory queue's hand-off of new messages from senders to the lease table.
//!
//! Sends to an in-memory queue without a dedup window never take the queue's state lock:
//! they append to this inbox, under a lock of its own, and the next receive moves everything
//! the inbox holds into the lease table in one step. A producer and a consumer therefore meet
//! on the inbox's lock once per send and once per receive that finds arrivals, while acks
//! (the consumer's other call per message) stay on the state lock, which no sender takes.
//!
//! Capacity is counted here as well: offsets handed out minus messages settled. Settling
//! happens under the state lock, so the count of settled messages is an atomic the consumer
//! adds to; a sender reloads it only when its last reading says the queue is full, and sleeps
//! only after announcing it (`senders_waiting`), so a settle wakes senders only when one
//! waits. Receivers, likewise, are signalled only when the inbox counts one waiting.

use std::collections::VecDeque;

use bytes::Bytes;
use infra_common::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use infra_common::sync::{Condvar, Mutex, MutexGuard};

/// A message sent but not yet moved into the lease table.
#[derive(Debug)]
pub(super) struct Arrival {
    pub(super) payload: Bytes,
    /// The monotonic reading when it was sent.
    pub(super) enqueued_at: u64,
    /// Not available before this monotonic reading (a delayed send).
    pub(super) not_before: Option<u64>,
}

impl Arrival {
    /// A message sent at `now`, delayed by `delay` nanoseconds if any.
    pub(super) fn new(payload: Bytes, now: u64, delay: Option<u64>) -> Self {
        Self {
            payload,
            enqueued_at: now,
            not_before: delay.map(|delay| now.saturating_add(delay)),
        }
    }
}

/// What the inbox's lock guards.
#[derive(Debug)]
pub(super) struct Inbox {
    arrivals: VecDeque<Arrival>,
    /// The offset the next send gets: the lease table's next offset plus the arrivals.
    next_offset: u64,
    /// The settled count as this side last read it: room is `capacity` minus the offsets
    /// handed out since, so a sender reads the shared count only when that runs out.
    settled_seen: u64,
    /// Receivers asleep on the queue's `available` condition variable, which a send must
    /// wake (taking the state lock first, under which they decided to sleep), and async
    /// receives in progress, which a send must tell through their `Notify`.
    receivers_waiting: usize,
}

impl Inbox {
    /// Appends a message and returns its offset; the caller checked there is room.
    pub(super) fn push(&mut self, arrival: Arrival) -> u64 {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.arrivals.push_back(arrival);
        offset
    }

    /// How many receivers wait for a message (asleep, or async).
    pub(super) fn receivers_waiting(&self) -> usize {
        self.receivers_waiting
    }
}

/// The inbox and the capacity count of one in-memory queue.
#[derive(Debug)]
pub(super) struct Handoff {
    inbox: Mutex<Inbox>,
    /// Signalled (after taking `inbox`) when room was freed and a sender sleeps.
    space: Condvar,
    /// Messages settled (acked, terminated, dead-lettered) since the queue was built.
    settled: AtomicU64,
    /// Senders that may be asleep on `space`, or async sends that may wait on their `Notify`;
    /// a settle looks at it after adding to `settled`.
    senders_waiting: AtomicUsize,
    capacity: u64,
}

impl Handoff {
    /// The hand-off of an empty queue whose first message gets offset 0.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inbox: Mutex::new(Inbox {
                arrivals: VecDeque::new(),
                next_offset: 0,
                settled_seen: 0,
                receivers_waiting: 0,
            }),
            space: Condvar::new(),
            settled: AtomicU64::new(0),
            senders_waiting: AtomicUsize::new(0),
            capacity: capacity as u64,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock()
    }

    /// Whether the queue has room for one more message, reading the settled count again only
    /// when the last reading says it is full.
    pub(super) fn has_room(&self, inbox: &mut Inbox) -> bool {
        if inbox.next_offset - inbox.settled_seen < self.capacity {
            return true;
        }
        inbox.settled_seen = self.settled.load(Ordering::Acquire);
        inbox.next_offset - inbox.settled_seen < self.capacity
    }

    /// Sleeps until a settle may have made room (or spuriously): the caller looks again.
    pub(super) fn wait_for_room(&self, inbox: &mut MutexGuard<'_, Inbox>) {
        self.announce_sender();
        if !self.has_room(inbox) {
            self.space.wait(inbox);
        }
        self.senders_waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a sender as waiting for room; its next look at the room comes after this.
    fn announce_sender(&self) {
        self.senders_waiting.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `settled`: either that settle sees this sender announced,
        // or the sender's next look sees its count. Without both fences each side could read
        // the other's old value, and the sender would sleep through the only settle.
        fence(Ordering::SeqCst);
    }

    /// An async send, counted as waiting for room until the guard is dropped (the send
    /// returned or its future was dropped).
    #[cfg(feature = "tokio")]
    pub(super) fn sender_waits(&self) -> WaitingSender<'_> {
        self.announce_sender();
        WaitingSender(self)
    }

    /// Counts `count` messages settled, and wakes the senders if any sleeps for room;
    /// `true` if some sender waits (async ones are the caller's to tell).
    pub(super) fn settled(&self, count: u64) -> bool {
        self.settled.fetch_add(count, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.senders_waiting.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // Taken and let go so that a sender between its look and its sleep (which it does
        // holding the inbox's lock) is asleep before the signal.
        drop(self.inbox.lock());
        self.space.notify_all();
        true
    }

    /// Moves every arrival into `into` (empty; its buffer is handed to the inbox in return,
    /// so neither side allocates once both have grown).
    pub(super) fn take(&self, into: &mut VecDeque<Arrival>) {
        debug_assert!(into.is_empty());
        let mut inbox = self.inbox.lock();
        if !inbox.arrivals.is_empty() {
            std::mem::swap(&mut inbox.arrivals, into);
        }
    }

    /// Counts a receiver as asleep unless a message arrived: `false` if one did (the caller
    /// takes it rather than sleeping). Called under the state lock, held until the sleep.
    pub(super) fn receiver_sleeps(&self) -> bool {
        let mut inbox = self.inbox.lock();
        if !inbox.arrivals.is_empty() {
            return false;
        }
        inbox.receivers_waiting += 1;
        true
    }

    /// A receiver counted by [`Self::receiver_sleeps`] (or an async receive) stopped waiting.
    pub(super) fn receiver_woke(&self) {
        self.inbox.lock().receivers_waiting -= 1;
    }

    /// An async receive, counted as waiting until the guard is dropped. Counted under the
    /// inbox's lock before its first look: a send after that sees it, one before it is what
    /// the look finds.
    #[cfg(feature = "tokio")]
    pub(super) fn receiver_waits(&self) -> WaitingReceiver<'_> {
        self.inbox.lock().receivers_waiting += 1;
        WaitingReceiver(self)
    }
}

/// An async send counted in [`Handoff::senders_waiting`].
#[cfg(feature = "tokio")]
pub(super) struct WaitingSender<'h>(&'h Handoff);

#[cfg(feature = "tokio")]
impl Drop for WaitingSender<'_> {
    fn drop(&mut self) {
        self.0.senders_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An async receive counted in the inbox's waiting receivers.
#[cfg(feature = "tokio")]
pub(super) struct WaitingReceiver<'h>(&'h Handoff);

#[cfg(feature = "tokio")]
impl Drop for WaitingReceiver<'_> {
    fn drop(&mut self) {
        self.0.receiver_woke();
    }
}
