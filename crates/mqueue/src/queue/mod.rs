//! The work queue: leases, acks, redelivery and dead letters.
//!
//! A [`WorkQueue`] hands each message to one consumer at a time under a **lease** (the
//! visibility timeout). The consumer settles it with the [`Delivery`] it got:
//!
//! - [`ack`](WorkQueue::ack): done, never delivered again;
//! - [`nack`](WorkQueue::nack): give it back now or after a delay;
//! - [`extend`](WorkQueue::extend): keep the lease longer;
//! - [`term`](WorkQueue::term): give up on it for good, without a dead letter.
//!
//! A lease that runs out before the message is settled makes it available again, and the
//! next [`receive`](WorkQueue::receive) gets it as a new **attempt**. Until that happens the
//! holder of the expired lease may still settle it; once it has happened, every call with the
//! older attempt is refused with [`Error::Redelivered`], so a consumer that stalled past its
//! lease can never ack work that someone else is now doing. A message delivered
//! `max_deliveries` times and then given back (nacked, or its lease expired) is moved to the
//! **dead-letter** topic by the next receive that reaches it, instead of being delivered again.
//!
//! Delivery is **at least once**: a message is delivered again whenever its lease runs out
//! or is given back before an ack, and after a restart every unsettled message is available
//! again at once (leases do not survive a restart; delivery counts do). Receives hand out the
//! available message with the **lowest offset**, so messages are delivered in send order
//! except where a redelivery or a delay puts an older one back in front.
//!
//! [`WorkQueue::in_memory`] keeps everything in memory; [`WorkQueue::open`] stores the
//! messages in a [`Log`](crate::log::Log) and the lease history in a second, compact log,
//! both in one directory (see the crate README for exactly what survives which crash).
//!
//! ```
//! use infra_common::ManualClock;
//! use infra_mqueue::queue::{QueueOptions, WorkQueue};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let options = QueueOptions::default().visibility_timeout(Duration::from_secs(30));
//! let queue = WorkQueue::in_memory_with_clock(options, clock.clone())?;
//!
//! queue.send(b"resize image 17".as_slice())?;
//! let first = queue.try_receive()?.expect("a message is ready");
//! // The worker stalls past its lease; the message goes to someone else.
//! clock.advance(Duration::from_secs(31));
//! let second = queue.try_receive()?.expect("redelivered");
//! assert_eq!((second.offset(), second.attempt()), (first.offset(), 2));
//! assert!(queue.ack(&first).is_err()); // the late ack is refused
//! queue.ack(&second)?;
//! # Ok::<(), infra_mqueue::Error>(())
//! ```

mod dedup;
mod durable;
mod envelope;
mod journal;
mod lease;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "tokio")]
mod wait;

use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use infra_common::clock::duration_to_nanos;
use infra_common::sync::{Arc, Condvar, Mutex, MutexGuard};
use infra_common::{Clock, SystemClock};

use crate::error::Error;
use crate::log::{AppendTicket, FileStorage, LogOptions, Storage};

pub use dedup::DedupWindow;
pub use envelope::MAX_ID_LEN;

use durable::Durable;
use envelope::Envelope;
use lease::{Handout, Leases, Outcome};

/// How a [`WorkQueue`] behaves. Every field has a sensible default; set what you need.
///
/// ```
/// use infra_mqueue::queue::{DedupWindow, QueueOptions};
/// use std::time::Duration;
///
/// let options = QueueOptions::default()
///     .visibility_timeout(Duration::from_secs(60))
///     .max_deliveries(3)
///     .capacity(50_000)
///     .dedup(DedupWindow::new(10_000));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct QueueOptions {
    visibility_timeout: Duration,
    max_deliveries: u32,
    capacity: usize,
    max_message_bytes: usize,
    dedup: Option<DedupWindow>,
    create: bool,
    compact_after: u64,
    log: LogOptions,
    #[cfg(feature = "metrics")]
    metrics_name: Option<String>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            capacity: 100_000,
            max_message_bytes: 1 << 20,
            dedup: None,
            create: true,
            compact_after: 100_000,
            log: LogOptions::default(),
            #[cfg(feature = "metrics")]
            metrics_name: None,
        }
    }
}

/// The longest visibility timeout or delay accepted: one year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl QueueOptions {
    /// How long a receive leases a message (default 30 s; 1 ms to [`MAX_DURATION`]).
    #[must_use]
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Deliveries after which a message given back (nacked or expired) is dead-lettered
    /// instead of delivered again (default 5; at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries;
        self
    }

    /// Unsettled messages (ready, delayed or leased) the queue holds before a send waits or a
    /// `try_send` fails with [`Error::Full`] (default 100,000; at least 1).
    #[must_use]
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// The largest payload accepted (default 1 MiB); a durable queue also needs it, with the
    /// envelope and the longest id, to fit the log's record limit
    /// ([`RECORD_LIMIT`](crate::log::RECORD_LIMIT)): `open` refuses a larger one with
    /// [`Error::InvalidOptions`].
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Deduplicates sends that carry a message id over this window (default: off).
    #[must_use]
    pub fn dedup(mut self, window: DedupWindow) -> Self {
        self.dedup = Some(window);
        self
    }

    /// Whether [`WorkQueue::open`] creates a missing queue directory (default `true`); when
    /// `false`, opening a missing queue fails with [`Error::UnknownQueue`].
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Journal records after which a durable queue rewrites its journal as one checkpoint of
    /// the live state (default 100,000; at least 16).
    #[must_use]
    pub fn compact_after(mut self, records: u64) -> Self {
        self.compact_after = records;
        self
    }

    /// The options of the logs a durable queue opens (fsync policy, segment size). The logs
    /// run on the queue's clock: an `Interval` policy's time is that clock's.
    #[must_use]
    pub fn log_options(mut self, log: LogOptions) -> Self {
        self.log = log;
        self
    }

    /// The `queue` label of this queue's metrics (feature `metrics`; default `default`).
    /// The queue registers its series when it is built: install the recorder first.
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics_name(mut self, name: impl Into<String>) -> Self {
        self.metrics_name = Some(name.into());
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| Err(Error::InvalidOptions { reason });
        if self.visibility_timeout < Duration::from_millis(1)
            || self.visibility_timeout > MAX_DURATION
        {
            return invalid("visibility_timeout must be between 1 ms and one year");
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1");
        }
        if self.capacity == 0 {
            return invalid("capacity must be at least 1");
        }
        if self.compact_after < 16 {
            return invalid("compact_after must be at least 16 records");
        }
        Ok(())
    }
}

/// A message to send: a payload, and optionally a producer id and a delay.
///
/// ```
/// use infra_mqueue::queue::Message;
/// use std::time::Duration;
///
/// let message = Message::new(b"charge card 42".to_vec())
///     .id(b"payment-42".to_vec())
///     .delay(Duration::from_secs(5));
/// assert_eq!(message.payload(), b"charge card 42");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    payload: Bytes,
    id: Option<Bytes>,
    delay: Duration,
}

impl Message {
    /// A message with this payload, no id, no delay.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            id: None,
            delay: Duration::ZERO,
        }
    }

    /// A producer id (at most [`MAX_ID_LEN`] bytes): with a [`DedupWindow`], a second send of
    /// the same id within the window is not stored again.
    #[must_use]
    pub fn id(mut self, id: impl Into<Bytes>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Not delivered before this much time has passed (at most [`MAX_DURATION`]).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, the id and the delay, for another backend of the same API.
    #[cfg(feature = "redis")]
    pub(crate) fn into_parts(self) -> (Bytes, Option<Bytes>, Duration) {
        (self.payload, self.id, self.delay)
    }
}

impl From<Vec<u8>> for Message {
    fn from(payload: Vec<u8>) -> Self {
        Self::new(payload)
    }
}

impl From<Bytes> for Message {
    fn from(payload: Bytes) -> Self {
        Self::new(payload)
    }
}

impl From<&[u8]> for Message {
    fn from(payload: &[u8]) -> Self {
        Self::new(Bytes::copy_from_slice(payload))
    }
}

impl From<&str> for Message {
    fn from(payload: &str) -> Self {
        Self::new(Bytes::copy_from_slice(payload.as_bytes()))
    }
}

/// What a send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The message's offset (for a duplicate: the offset of the first send).
    pub offset: u64,
    /// Whether the id was already in the dedup window, so nothing was stored.
    pub duplicate: bool,
}

/// Which delivery of which message: what ack, nack, extend and term are checked against.
///
/// Take it from a [`Delivery`] (`&delivery` converts); it is `Copy`, so a worker can keep it
/// after handing the payload on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    offset: u64,
    attempt: u32,
}

impl Receipt {
    /// The receipt of delivery number `attempt` (1 for the first) of the message at `offset`.
    pub fn new(offset: u64, attempt: u32) -> Self {
        Self { offset, attempt }
    }

    /// The message's offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Which delivery of the message this is: 1 for the first, 2 after one redelivery, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A received message under lease: settle it with [`WorkQueue::ack`], [`WorkQueue::nack`],
/// [`WorkQueue::extend`] or [`WorkQueue::term`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    receipt: Receipt,
    payload: Bytes,
}

impl Delivery {
    /// Delivery number `attempt` of the message at `offset`, for another backend of the same
    /// API.
    #[cfg(feature = "redis")]
    pub(crate) fn new(offset: u64, attempt: u32, payload: Bytes) -> Self {
        Self {
            receipt: Receipt { offset, attempt },
            payload,
        }
    }

    /// The message's offset.
    pub fn offset(&self) -> u64 {
        self.receipt.offset
    }

    /// Which delivery of the message this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.receipt.attempt
    }

    /// The receipt to settle it with.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, without a copy.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
}

impl From<&Delivery> for Receipt {
    fn from(delivery: &Delivery) -> Self {
        delivery.receipt
    }
}

/// A message that was moved to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its position in the dead-letter topic.
    pub position: u64,
    /// Its offset in the queue.
    pub offset: u64,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// The payload.
    pub payload: Bytes,
}

/// Counts and gauges of one queue, since it was built or opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Unsettled messages: ready, delayed, leased, or still being written by a durable send.
    pub unsettled: usize,
    /// Leased messages (including expired leases not yet received again).
    pub in_flight: usize,
    /// The offset the next message gets.
    pub next_offset: u64,
    /// Every offset below it is settled.
    pub watermark: u64,
    /// Deliveries handed out, first ones and redeliveries.
    pub delivered: u64,
    /// Deliveries with an attempt above 1.
    pub redelivered: u64,
    /// Acks accepted.
    pub acked: u64,
    /// Nacks accepted.
    pub nacked: u64,
    /// Terms accepted.
    pub terminated: u64,
    /// Messages moved to the dead-letter topic.
    pub dead_lettered: u64,
    /// Sends that were duplicates of an id in the window.
    pub duplicates: u64,
    /// Settle calls refused because the delivery was stale, settled or unknown.
    pub refused: u64,
    /// Dead letters an in-memory queue dropped because it already held `capacity` of them.
    pub dead_letters_dropped: u64,
    /// How long the oldest unsettled message has been in the queue.
    pub oldest_age: Option<Duration>,
}

/// Everything behind the queue's one mutex.
#[derive(Debug)]
struct State {
    leases: Leases,
    dedup: Option<dedup::Dedup>,
    /// Sends reserved but not yet stored (durable queues store outside this lock).
    reserved: usize,
    /// The end (last offset + 1) of the messages written by sends dropped before they were
    /// made available (a cancelled `send_async`): the next receive makes them durable.
    abandoned_end: Option<u64>,
    /// An in-memory queue's dead letters (a durable one writes them to its dead-letter log).
    dead: std::collections::VecDeque<DeadLetter>,
    dead_next: u64,
    /// The deliveries `(offset, attempt)` leased by async receives of a durable queue whose
    /// `Received` records are not written yet. A compaction's checkpoint does not count them:
    /// their records follow it, and a checkpoint that counted them too would leave two
    /// records of one delivery for a `Withdrawn` record to take back only one of. Listed too
    /// while noted in `orphaned`: the delivery of a receive dropped before its record was
    /// written, which a checkpoint must not count either, since no `Withdrawn` record will
    /// take it back when the note is followed.
    #[cfg(feature = "tokio")]
    unjournaled: std::collections::BTreeSet<(u64, u32)>,
    /// Deliveries `(offset, attempt)` of async receives dropped while a later delivery held
    /// the expired lease they had taken: each with the deadline of the lease it had itself
    /// taken over, if any, and whether its `Received` record was written. When that later
    /// delivery is given back in turn, the lease it would hand back belongs to no one, so it
    /// is given back too. Left when the later delivery reaches its caller.
    #[cfg(feature = "tokio")]
    orphaned: std::collections::BTreeMap<(u64, u32), (Option<u64>, bool)>,
    /// Deliveries `(offset, attempt)` of a durable queue that took over an expired lease,
    /// until their receive reaches its caller or gives them back: only while one is listed
    /// can the receive it took the lease from leave a note in `orphaned` for it to find.
    /// A dead letter that took over a lease is listed the same way, under the attempt after
    /// the one whose lease it ends, until it is settled or given back.
    #[cfg(feature = "tokio")]
    taking_over: std::collections::BTreeSet<(u64, u32)>,
    stats: QueueStats,
}

/// What a send left to do once stored (in memory) or written (to a durable queue's log).
enum Written<'q> {
    /// Written: durable once the ticket's wait returns.
    New(AppendTicket<'q>),
    /// Sent: in memory, or a duplicate of a durable send. Nothing to wait for.
    Done(Sent),
    /// A duplicate of the send at this offset, which still waits for its fsync: this one
    /// returns only once it is durable too.
    DuplicateOfWriting(&'q Durable, u64),
}

/// A durable send whose message is written but not yet made available to receivers.
///
/// Dropped before [`UnreleasedSend::end`] (a `send_async` future cancelled while it waits for
/// its fsync, or a panic), it leaves its message to the next receive, which makes it durable
/// and available: no later send may come to do so, since the queue may be full.
struct UnreleasedSend<'q> {
    queue: &'q WorkQueue,
    offset: u64,
}

impl<'q> UnreleasedSend<'q> {
    fn new(queue: &'q WorkQueue, offset: u64) -> Self {
        Self { queue, offset }
    }

    /// Ends the send once its wait for durability returned `waited`: makes its message (and
    /// those written before it) available, or reports the failure.
    fn end(self, waited: Result<(), Error>) -> Result<Sent, Error> {
        let (queue, offset) = (self.queue, self.offset);
        std::mem::forget(self);
        match waited {
            Ok(()) => Ok(queue.made_durable(offset, false)),
            Err(error) => {
                queue.send_failed();
                Err(error)
            }
        }
    }
}

impl Drop for UnreleasedSend<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.queue.state.lock();
            let end = self.offset + 1;
            state.abandoned_end = Some(state.abandoned_end.map_or(end, |at| at.max(end)));
        }
        // A receiver waiting for a message looks again, and finds this one.
        self.queue.wake_receivers(1);
    }
}

/// What a receive leased under the state lock and has not yet handed to its caller (a
/// durable queue's journal record, and its dead letters' fsync, come first).
///
/// Dropped before [`Leased::reached_caller`] (the journal write failed, or a
/// `receive_async` future was dropped while it waited for an fsync), it gives every message
/// back at once: its deliveries are taken back uncounted (the next receive gets the same
/// attempt number: no one holds a receipt for it; an expired lease one took over is its
/// holder's again, or given back too if its holder was a receive dropped meanwhile;
/// `stats()` and the metrics do not count them as delivered; if their `Received` records
/// were written, `Withdrawn` records follow, so that a restart does not count them either),
/// its dead letters not yet settled to a later receive, which writes them
/// again (with, for one that took over the expired lease of a receive dropped meanwhile, that
/// receive's delivery, given back as well). No message stays held by a receive whose caller never got it.
struct Leased<'q> {
    queue: &'q WorkQueue,
    /// The deliveries of a durable queue, to journal (in memory: none, nothing to wait for),
    /// each with the deadline of the expired lease it took over, if it did.
    received: Vec<(Receipt, Option<u64>)>,
    /// Dead letters written to a durable queue's dead-letter log, not yet settled: each
    /// message's offset, its deliveries, and the deadline of the expired lease it ends (that
    /// of its last delivery), if it does.
    dead: Vec<(u64, u32, Option<u64>)>,
    /// The dead-letter log's end after them.
    dead_end: Option<u64>,
    /// The error that ended the batch early: a dead letter's failed write or fsync.
    failed: Option<Error>,
    /// Deliveries handed to the caller's `deliver`.
    count: usize,
    /// Set by an async receive. A dead letter that would roll the dead-letter log's segment
    /// is not written: the roll is noted in `dead_roll`, for the receive to run on tokio's
    /// blocking pool, and the message left to its next lease. And its deliveries are listed
    /// in `State::unjournaled` until their `Received` records are written.
    #[cfg(feature = "tokio")]
    is_async: bool,
    #[cfg(feature = "tokio")]
    dead_roll: Option<crate::log::RollFirst>,
}

impl<'q> Leased<'q> {
    /// Nothing leased yet.
    #[inline]
    fn new(queue: &'q WorkQueue) -> Self {
        Self {
            queue,
            received: Vec::new(),
            dead: Vec::new(),
            dead_end: None,
            failed: None,
            count: 0,
            #[cfg(feature = "tokio")]
            is_async: false,
            #[cfg(feature = "tokio")]
            dead_roll: None,
        }
    }

    /// The batch reached its caller: it keeps its leases. The error that ended it early is
    /// returned only if it leased nothing. (By reference: a move would copy the whole.)
    fn reached_caller(&mut self) -> Result<(), Error> {
        #[cfg(feature = "metrics")]
        for (receipt, _) in &self.received {
            if receipt.attempt > 1 {
                self.queue.metrics.redelivered();
            }
        }
        #[cfg(feature = "tokio")]
        if self
            .received
            .iter()
            .any(|(_, took_over)| took_over.is_some())
        {
            self.keep_taken_over_leases();
        }
        self.received.clear();
        match self.failed.take() {
            Some(error) if self.count == 0 => Err(error),
            _ => Ok(()),
        }
    }
}

impl Leased<'_> {
    /// A delivery that took over a lease keeps it: its holder, if dropped meanwhile, stays
    /// counted (its attempt number is taken). Out of line: few receives take a lease over.
    #[cfg(feature = "tokio")]
    #[cold]
    fn keep_taken_over_leases(&self) {
        let mut state = self.queue.state.lock();
        for &(Receipt { offset, attempt }, took_over) in &self.received {
            if took_over.is_some() {
                state.taking_over.remove(&(offset, attempt));
                state.take_note(offset, attempt.saturating_sub(1));
            }
        }
    }
}

impl Drop for Leased<'_> {
    /// Inline, with the giving back out of line: nearly every receive reaches its caller, and
    /// this runs on every receive, in memory too.
    #[inline]
    fn drop(&mut self) {
        if !(self.received.is_empty() && self.dead.is_empty()) {
            self.give_back();
        }
    }
}

impl Leased<'_> {
    #[cold]
    fn give_back(&mut self) {
        let queue = self.queue;
        // A delivery that reached no caller may be behind a note, and its record written,
        // whichever way the receive that gives its lease back went.
        #[cfg(feature = "tokio")]
        if let Some(durable) = &queue.durable {
            Durable::withdraw(durable, || self.take_back());
            queue.wake_receivers(self.received.len() + self.dead.len());
            return;
        }
        self.take_back();
        queue.wake_receivers(self.received.len() + self.dead.len());
    }

    /// Gives back in the lease table what the batch leased; returns the journal records that
    /// take back its deliveries: `Withdrawn` records of those it took back whose `Received`
    /// records an async receive wrote (not those whose lease ran out and went to another
    /// receive since; a batch whose records a segment roll split has written some and not
    /// others), and a `Received` and a `Withdrawn` record of an unwritten delivery below one
    /// of those, whose lease it handed back (`State::name_unwritten`).
    fn take_back(&self) -> Vec<journal::Entry> {
        let mut withdrawn = Vec::new();
        let mut state = self.queue.state.lock();
        for &(Receipt { offset, attempt }, took_over) in &self.received {
            // Listed until its record is written; only async receives list theirs.
            #[cfg(feature = "tokio")]
            let journaled = self.is_async && !state.unjournaled.remove(&(offset, attempt));
            #[cfg(not(feature = "tokio"))]
            let journaled = false;
            #[cfg(feature = "tokio")]
            if took_over.is_some() {
                state.taking_over.remove(&(offset, attempt));
            }
            #[cfg(feature = "tokio")]
            let is_async = self.is_async;
            #[cfg(not(feature = "tokio"))]
            let is_async = false;
            state.undeliver(
                offset,
                attempt,
                took_over,
                journaled,
                is_async,
                &mut withdrawn,
            );
            // Never handed out.
            state.stats.delivered -= 1;
            if attempt > 1 {
                state.stats.redelivered -= 1;
            }
        }
        for &(offset, deliveries, took_over) in &self.dead {
            state.dead_letter_failed(offset, deliveries, took_over, &mut withdrawn);
        }
        withdrawn
    }
}

impl State {
    /// Takes back the delivery `attempt` of `offset` (handed out with `took_over`, its
    /// `Received` record written if `journaled`) whose receive never reached its caller,
    /// pushing the records that take it back in the journal to `withdrawn`: its `Withdrawn`
    /// record if it needs one, and a `Received` and a `Withdrawn` record of the attempt
    /// below it if that one's own record is not written (see [`State::name_unwritten`]). A
    /// receive dropped before this one, whose expired lease this one had taken over and now
    /// hands back, is taken back too (it left a note). If a later delivery holds the lease
    /// instead, an async receive leaves a note for it, so that giving that delivery back
    /// gives this one back.
    fn undeliver(
        &mut self,
        offset: u64,
        attempt: u32,
        took_over: Option<u64>,
        journaled: bool,
        is_async: bool,
        withdrawn: &mut Vec<journal::Entry>,
    ) {
        // Whether a record in the journal names the attempt being taken back.
        #[cfg(feature = "tokio")]
        let mut named = journaled;
        let mut next = Some((attempt, took_over, journaled));
        while let Some((attempt, took_over, journaled)) = next.take() {
            if self.leases.undeliver(offset, attempt, took_over) {
                if journaled {
                    withdrawn.push(journal::Entry::Withdrawn { offset, attempt });
                }
                // The lease handed back may be that of a receive dropped before this one.
                #[cfg(feature = "tokio")]
                if took_over.is_some()
                    && let Some(below) = attempt.checked_sub(1).filter(|&below| below > 0)
                {
                    named = self.name_unwritten(offset, below, named, withdrawn);
                    if let Some((took_over, journaled)) = self.take_note(offset, below) {
                        next = Some((below, took_over, journaled));
                    }
                }
            } else {
                // A later delivery (or dead letter) took over the expired lease: given back,
                // it gives this one back too.
                #[cfg(feature = "tokio")]
                if is_async
                    && let Some(later) = attempt.checked_add(1)
                    && self.taking_over.contains(&(offset, later))
                {
                    self.orphaned
                        .insert((offset, attempt), (took_over, journaled));
                    if !journaled {
                        self.unjournaled.insert((offset, attempt));
                    }
                }
                #[cfg(not(feature = "tokio"))]
                let _ = is_async;
            }
        }
    }

    /// Gives back a dead letter of a message with `deliveries` handed out with `took_over`
    /// and not settled (its write or fsync failed, or its receive was dropped first). The
    /// expired lease it was to end is its holder's again, unless that holder was a receive
    /// dropped meanwhile (it left a note): then that delivery is taken back as well, its
    /// `Withdrawn` record pushed to `withdrawn` if it needs one, so that no later receive
    /// dead-letters the message on the strength of a delivery no caller got.
    fn dead_letter_failed(
        &mut self,
        offset: u64,
        deliveries: u32,
        took_over: Option<u64>,
        withdrawn: &mut Vec<journal::Entry>,
    ) {
        self.leases.dead_letter_failed(offset, took_over);
        #[cfg(feature = "tokio")]
        if took_over.is_some()
            && let Some(ending) = deliveries.checked_add(1)
        {
            self.taking_over.remove(&(offset, ending));
            if let Some((took_over, journaled)) = self.take_note(offset, deliveries) {
                self.undeliver(offset, deliveries, took_over, journaled, false, withdrawn);
            }
        }
        #[cfg(not(feature = "tokio"))]
        let _ = (deliveries, withdrawn);
    }

    /// A dead letter that took over the expired lease of a message with `deliveries` was
    /// settled: the delivery whose lease it ended stays counted, so a note its dropped
    /// receive left is no longer needed.
    #[cfg(feature = "tokio")]
    fn dead_letter_settled(&mut self, offset: u64, deliveries: u32) {
        if let Some(ending) = deliveries.checked_add(1) {
            self.taking_over.remove(&(offset, ending));
            self.take_note(offset, deliveries);
        }
    }

    /// The lease of the delivery `below` of `offset` is handed back by the delivery above it,
    /// taken back; `above_named` says whether a record in the journal names that one. If so
    /// and `below`'s own `Received` record is not written (its receive has not written it
    /// yet, or was dropped before it did), replay would count `below` on the strength of the
    /// attempt above, withdrawn as often as received, and no record of its own would say
    /// otherwise. A `Received` and a `Withdrawn` record of `below`, pushed to `withdrawn` in
    /// that order, name it as taken back: they cancel each other out, so the receive's own
    /// record, if it comes, counts it again, and a crash that keeps only the first of them
    /// counts it, as before. Returns whether the journal names `below` then.
    #[cfg(feature = "tokio")]
    fn name_unwritten(
        &self,
        offset: u64,
        below: u32,
        above_named: bool,
        withdrawn: &mut Vec<journal::Entry>,
    ) -> bool {
        let unwritten = self.unjournaled.contains(&(offset, below));
        if above_named && unwritten {
            withdrawn.push(journal::Entry::Received {
                offset,
                attempt: below,
            });
            withdrawn.push(journal::Entry::Withdrawn {
                offset,
                attempt: below,
            });
        }
        above_named || !unwritten
    }

    /// Removes the note a dropped receive left for its delivery `attempt` of `offset`, if
    /// any: whose lease it had taken over, and whether its record was written (if not, it
    /// leaves `unjournaled` too).
    #[cfg(feature = "tokio")]
    fn take_note(&mut self, offset: u64, attempt: u32) -> Option<(Option<u64>, bool)> {
        let note = self.orphaned.remove(&(offset, attempt))?;
        if !note.1 {
            self.unjournaled.remove(&(offset, attempt));
        }
        Some(note)
    }
}

/// A work queue with leases, redelivery, dead letters, delays and producer dedup; in memory
/// or durable. Share it between threads by reference or in an `Arc`.
///
/// See the [module documentation](self) for the semantics and the crate README for what a
/// durable queue keeps across crashes. Dropping a durable queue waits for the file work its
/// async calls left on tokio's blocking pool (a segment roll, a journal compaction), which
/// holds the queue's directory until it ends: the directory can be opened again right after.
/// Under `FsyncPolicy::Always` the drop also makes the journal durable (a dropped receive's
/// withdrawal may not be yet), so a power loss after the drop counts no delivery that reached
/// no caller.
pub struct WorkQueue {
    state: Mutex<State>,
    /// Signalled when a message may have become available.
    available: Condvar,
    /// Signalled when capacity may have been freed.
    space: Condvar,
    clock: SharedClock,
    options: QueueOptions,
    visibility_nanos: u64,
    /// Shared with the blocking-pool task that finishes an async receive's compaction, which
    /// may outlive the future that began it.
    durable: Option<Arc<Durable>>,
    #[cfg(feature = "tokio")]
    notify: wait::Notifiers,
    #[cfg(feature = "metrics")]
    metrics: metrics::QueueMetrics,
}

impl fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("durable", &self.durable.is_some())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A durable queue's drop waits for the file work its async calls left on tokio's blocking
/// pool (a journal or segment roll, a compaction, a directory sync: a few file operations and
/// fsyncs each), which keeps the queue's directory until it ends: once the drop returns, an
/// open of the directory finds it free and every file as that work left it.
#[cfg(feature = "tokio")]
impl Drop for WorkQueue {
    fn drop(&mut self) {
        if let Some(durable) = &self.durable {
            durable.wait_for_pool_work();
        }
    }
}

/// Extra looks a receive takes at an empty queue, or a send at a full one, before it sleeps
/// (none under loom, where a spin is only more interleavings to explore).
const SPINS: u32 = if cfg!(infra_loom) { 0 } else { 10 };

/// The pause before extra look `round`: 2, 4, ... 64 spins, then yielding the processor, as a
/// channel's back-off does.
fn back_off(round: u32) {
    if round < 6 {
        for _ in 0..2u32 << round {
            infra_common::sync::spin_loop();
        }
    } else {
        infra_common::sync::thread::yield_now();
    }
}

/// The queue's clock, shared with the logs of a durable queue (for `Interval` fsyncs).
type SharedClock = Arc<Box<dyn Clock>>;

fn shared_clock(clock: impl Clock + 'static) -> SharedClock {
    Arc::new(Box::new(clock))
}

fn wall_ms(clock: &dyn Clock) -> u64 {
    clock
        .wall_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn check_duration(duration: Duration) -> Result<u64, Error> {
    if duration > MAX_DURATION {
        return Err(Error::InvalidDuration { duration });
    }
    Ok(duration_to_nanos(duration))
}

impl WorkQueue {
    /// An in-memory queue on the system clock: nothing survives the process.
    pub fn in_memory(options: QueueOptions) -> Result<Self, Error> {
        Self::in_memory_with_clock(options, SystemClock::new())
    }

    /// An in-memory queue on `clock` (a `ManualClock` in tests).
    pub fn in_memory_with_clock(
        options: QueueOptions,
        clock: impl Clock + 'static,
    ) -> Result<Self, Error> {
        options.validate()?;
        let leases = Leases::new(0, options.max_deliveries);
        Ok(Self::build(options, shared_clock(clock), leases, None))
    }

    /// Opens (or creates) the durable queue in `dir`, on the system clock.
    ///
    /// Replays the journal: acked, terminated and dead-lettered messages stay settled, every
    /// other message is available again at once (or when its delay ends) with its delivery
    /// count kept. While the queue is open, another open of `dir` is [`Error::Locked`].
    pub fn open(dir: &Path, options: QueueOptions) -> Result<Self, Error> {
        Self::open_with_clock(dir, options, SystemClock::new())
    }

    /// [`WorkQueue::open`] on `clock`.
    pub fn open_with_clock(
        dir: &Path,
        options: QueueOptions,
        clock: impl Clock + 'static,
    ) -> Result<Self, Error> {
        Self::open_with(dir, options, clock, FileStorage)
    }

    /// [`WorkQueue::open`] on `clock` and the file layer `storage` (a [`SimulatedStorage`]
    /// in power-loss tests): the directory, its three logs and the `JOURNAL` pointer all go
    /// through it.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_mqueue::log::SimulatedStorage;
    /// use infra_mqueue::queue::{QueueOptions, WorkQueue};
    /// use std::path::Path;
    ///
    /// let disk = SimulatedStorage::new();
    /// let open = || WorkQueue::open_with(Path::new("/q"), QueueOptions::default(), ManualClock::new(), disk.clone());
    /// let queue = open()?;
    /// queue.send(b"kept".as_slice())?; // fsynced before `send` returns
    /// drop(queue);
    /// disk.power_cut();
    /// let delivery = open()?.try_receive()?.expect("the message survived");
    /// assert_eq!(delivery.payload(), b"kept");
    /// # Ok::<(), infra_mqueue::Error>(())
    /// ```
    ///
    /// [`SimulatedStorage`]: crate::log::SimulatedStorage
    pub fn open_with(
        dir: &Path,
        options: QueueOptions,
        clock: impl Clock + 'static,
        storage: impl Storage + Clone + 'static,
    ) -> Result<Self, Error> {
        options.validate()?;
        let clock = shared_clock(clock);
        let (durable, recovered) = Durable::open(dir, &options, &clock, Box::new(storage))?;
        let rewrite_journal = recovered.rewrite_journal;
        let queue = Self::build(options, clock, recovered.leases, Some(Arc::new(durable)));
        {
            let mut state = queue.state.lock();
            if let Some(dedup) = &mut state.dedup {
                for (id, offset, sent_at_ms) in recovered.ids {
                    dedup.remember(id, offset, sent_at_ms);
                }
            }
        }
        if rewrite_journal && let Some(durable) = &queue.durable {
            // Before any send: a journal that still spoke of the lost messages would settle or
            // count the new messages that take their offsets at the next open.
            Durable::compact(durable, || queue.checkpoint())?;
        }
        Ok(queue)
    }

    fn build(
        options: QueueOptions,
        clock: SharedClock,
        leases: Leases,
        durable: Option<Arc<Durable>>,
    ) -> Self {
        let visibility_nanos = duration_to_nanos(options.visibility_timeout);
        Self {
            state: Mutex::new(State {
                leases,
                dedup: options.dedup.map(dedup::Dedup::new),
                reserved: 0,
                abandoned_end: None,
                dead: std::collections::VecDeque::new(),
                dead_next: 0,
                #[cfg(feature = "tokio")]
                unjournaled: std::collections::BTreeSet::new(),
                #[cfg(feature = "tokio")]
                orphaned: std::collections::BTreeMap::new(),
                #[cfg(feature = "tokio")]
                taking_over: std::collections::BTreeSet::new(),
                stats: QueueStats::default(),
            }),
            available: Condvar::new(),
            space: Condvar::new(),
            clock,
            visibility_nanos,
            durable,
            #[cfg(feature = "tokio")]
            notify: wait::Notifiers::default(),
            #[cfg(feature = "metrics")]
            metrics: metrics::QueueMetrics::new(options.metrics_name.as_deref()),
            options,
        }
    }

    /// Sends a message, waiting while the queue holds `capacity` unsettled messages.
    ///
    /// A durable queue returns once the message is in the log as durably as the log's fsync
    /// policy makes it; only then can it be received.
    pub fn send(&self, message: impl Into<Message>) -> Result<Sent, Error> {
        self.send_message(message.into(), true)
    }

    /// Sends a message, or fails with [`Error::Full`] at once if the queue is at capacity.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<Sent, Error> {
        self.send_message(message.into(), false)
    }

    fn validate_message(&self, message: &Message) -> Result<Option<u64>, Error> {
        if message.payload.len() > self.options.max_message_bytes {
            return Err(Error::MessageTooLarge {
                len: message.payload.len(),
                max: self.options.max_message_bytes,
            });
        }
        if let Some(id) = &message.id
            && (id.is_empty() || id.len() > MAX_ID_LEN)
        {
            return Err(Error::InvalidMessageId { len: id.len() });
        }
        let delay = check_duration(message.delay)?;
        Ok((delay > 0).then_some(delay))
    }

    /// Waits for room (or fails with `Full`); `Ok(Some(offset))` if the id is a duplicate.
    /// After a wait `now_ms` is read again: the send is dated when it is stored, so that its
    /// id's window counts from then, however long it waited.
    fn admit(
        &self,
        state: &mut MutexGuard<'_, State>,
        id: Option<&Bytes>,
        now_ms: &mut u64,
        wait: bool,
    ) -> Result<Option<u64>, Error> {
        loop {
            if let Some(offset) = self.find_duplicate(state, id, *now_ms) {
                return Ok(Some(offset));
            }
            // The messages a failed fsync was to cover stay counted: at capacity, waiting
            // for room would wait for good, and `Full` would hide why.
            if self.durable.as_deref().is_some_and(Durable::refuses_sends) {
                return Err(Error::Failed);
            }
            if state.leases.unsettled() + state.reserved < self.options.capacity {
                return Ok(None);
            }
            if !wait {
                return Err(Error::Full {
                    capacity: self.options.capacity,
                });
            }
            self.space.wait(state);
            *now_ms = self.send_now_ms();
        }
    }

    /// The offset of the id's first send if the id is in the dedup window (counted as a
    /// duplicate).
    fn find_duplicate(&self, state: &mut State, id: Option<&Bytes>, now_ms: u64) -> Option<u64> {
        let offset = state.dedup.as_mut()?.lookup(id?, now_ms)?;
        state.stats.duplicates += 1;
        #[cfg(feature = "metrics")]
        self.metrics.duplicate();
        Some(offset)
    }

    /// The state, locked with room for one more send, and the offset of the id's first send
    /// if it is a duplicate: [`WorkQueue::admit`], where a waiting sender at a full queue
    /// first looks again a few times, spinning then yielding, before it sleeps (room is often
    /// a moment away: a consumer between two acks).
    fn lock_admitted(
        &self,
        id: Option<&Bytes>,
        now_ms: &mut u64,
        wait: bool,
    ) -> Result<(MutexGuard<'_, State>, Option<u64>), Error> {
        if wait {
            for round in 0..SPINS {
                let mut state = self.state.lock();
                match self.admit(&mut state, id, now_ms, false) {
                    Err(Error::Full { .. }) => {
                        drop(state);
                        back_off(round);
                    }
                    admitted => return admitted.map(|duplicate| (state, duplicate)),
                }
            }
        }
        let mut state = self.state.lock();
        let duplicate = self.admit(&mut state, id, now_ms, wait)?;
        Ok((state, duplicate))
    }

    /// Sends several messages, each as [`send`](Self::send) would (waiting for room, and on a
    /// durable queue for durability), with the result for each in order: a refused message
    /// (too large, a bad id) does not stop the others.
    ///
    /// In memory the batch is stored under one lock (a sender that must wait for room first
    /// wakes receivers for what it stored). A durable queue writes the messages in order and
    /// waits once for an fsync covering them all (the log's group commit); before waiting for
    /// room it makes what it wrote durable and receivable, since its own messages may be what
    /// fills the queue.
    ///
    /// ```
    /// # use infra_mqueue::queue::{QueueOptions, WorkQueue};
    /// let queue = WorkQueue::in_memory(QueueOptions::default().max_message_bytes(8))?;
    /// let sent = queue.send_many(["one", "a message too large", "two"]);
    /// assert_eq!(sent[0].as_ref().unwrap().offset, 0);
    /// assert!(sent[1].is_err());
    /// assert_eq!(sent[2].as_ref().unwrap().offset, 1);
    /// # Ok::<(), infra_mqueue::Error>(())
    /// ```
    pub fn send_many(
        &self,
        messages: impl IntoIterator<Item = impl Into<Message>>,
    ) -> Vec<Result<Sent, Error>> {
        let messages = messages.into_iter().map(Into::into);
        if self.durable.is_none() {
            return self.store_many(messages);
        }
        let mut sent = Vec::new();
        let mut written = Vec::new();
        for message in messages {
            let attempt = match self.start_send(message.clone(), false) {
                Err(Error::Full { .. }) => {
                    self.finish_sends(&mut written, &mut sent);
                    self.start_send(message, true)
                }
                attempt => attempt,
            };
            written.push(attempt);
        }
        self.finish_sends(&mut written, &mut sent);
        sent
    }

    /// Ends every started send of `written`, in order, into `sent`: the first wait for
    /// durability runs (or joins) an fsync that covers the rest.
    fn finish_sends<'q>(
        &'q self,
        written: &mut Vec<Result<Written<'q>, Error>>,
        sent: &mut Vec<Result<Sent, Error>>,
    ) {
        for started in written.drain(..) {
            sent.push(started.and_then(|written| self.finish_send(written)));
        }
    }

    /// [`send_many`](Self::send_many) in memory: one lock for the batch, woken receivers
    /// for what it stored before any wait for room, and after it.
    fn store_many(&self, messages: impl Iterator<Item = Message>) -> Vec<Result<Sent, Error>> {
        // Taken from the caller before the lock: pulling them may take time, or call the queue.
        let messages: Vec<Message> = messages.collect();
        // Dates ids for deduplication: once for the batch, again after every wait for room.
        let mut now_ms = self.send_now_ms();
        let mut sent = Vec::with_capacity(messages.len());
        let mut stored = 0;
        let mut state = self.state.lock();
        let mut now = self.clock.now_nanos();
        for message in messages {
            let delay = match self.validate_message(&message) {
                Ok(delay) => delay,
                Err(error) => {
                    sent.push(Err(error));
                    continue;
                }
            };
            let id = message.id.as_ref();
            let admitted = match self.admit(&mut state, id, &mut now_ms, false) {
                Err(Error::Full { .. }) => {
                    // Receivers must hear of what this batch stored before it sleeps, or a
                    // queue full of it would never drain.
                    drop(state);
                    self.wake_receivers(std::mem::take(&mut stored));
                    let (locked, admitted) = match self.lock_admitted(id, &mut now_ms, true) {
                        Ok((locked, duplicate)) => (locked, Ok(duplicate)),
                        Err(error) => (self.state.lock(), Err(error)),
                    };
                    state = locked;
                    now = self.clock.now_nanos();
                    now_ms = self.send_now_ms();
                    admitted
                }
                admitted => admitted,
            };
            let offset = match admitted {
                Ok(Some(first)) => {
                    sent.push(Ok(Sent {
                        offset: first,
                        duplicate: true,
                    }));
                    continue;
                }
                Ok(None) => Self::store(&mut state, message, delay, now, now_ms),
                Err(error) => {
                    sent.push(Err(error));
                    continue;
                }
            };
            stored += 1;
            sent.push(Ok(Sent {
                offset,
                duplicate: false,
            }));
        }
        drop(state);
        self.wake_receivers(stored);
        sent
    }

    fn send_message(&self, message: Message, wait: bool) -> Result<Sent, Error> {
        let written = self.start_send(message, wait)?;
        self.finish_send(written)
    }

    /// Waits for a started send to be durable (for a durable queue) and makes it receivable.
    fn finish_send(&self, written: Written<'_>) -> Result<Sent, Error> {
        match written {
            Written::Done(sent) => Ok(sent),
            Written::New(ticket) => {
                let send = UnreleasedSend::new(self, ticket.offset());
                let waited = ticket.wait().map(drop);
                send.end(waited)
            }
            Written::DuplicateOfWriting(durable, offset) => {
                durable.wait_durable(offset)?;
                Ok(self.made_durable(offset, true))
            }
        }
    }

    /// Stores a send in memory, or writes it to the durable queue's log (rolling its segment
    /// on this thread if the message fills it).
    fn start_send(&self, message: Message, wait: bool) -> Result<Written<'_>, Error> {
        let written = self.start_send_with(message, wait, |durable, envelope| {
            durable.write_message(envelope).map(Ok::<_, Infallible>)
        })?;
        match written {
            Ok(written) => Ok(written),
            Err(never) => match never {},
        }
    }

    /// [`Self::start_send`], with a durable send's message written by `write`, which may
    /// decline to write it (`Ok(Err(_))`, an async send's segment roll left to the blocking
    /// pool): the send then gives back the room it took and returns what `write` said.
    fn start_send_with<'q, Declined>(
        &'q self,
        message: Message,
        wait: bool,
        write: impl FnOnce(&'q Durable, &Envelope) -> Result<Result<AppendTicket<'q>, Declined>, Error>,
    ) -> Result<Result<Written<'q>, Declined>, Error> {
        let delay = self.validate_message(&message)?;
        let Some(durable) = &self.durable else {
            let mut now_ms = self.send_now_ms();
            let (mut state, duplicate) =
                self.lock_admitted(message.id.as_ref(), &mut now_ms, wait)?;
            if let Some(offset) = duplicate {
                return Ok(Ok(Written::Done(Sent {
                    offset,
                    duplicate: true,
                })));
            }
            let offset = Self::store(&mut state, message, delay, self.clock.now_nanos(), now_ms);
            drop(state);
            self.wake_receivers(1);
            return Ok(Ok(Written::Done(Sent {
                offset,
                duplicate: false,
            })));
        };
        self.write_durable(durable, message, delay, wait, write)
    }

    /// The wall-clock time that dates a send: a durable send's envelope always carries it, an
    /// in-memory send needs it only for deduplication (0 without a window: then the send
    /// reads no clock, a system call on some platforms).
    fn send_now_ms(&self) -> u64 {
        if self.durable.is_some() || self.options.dedup.is_some() {
            wall_ms(self.clock.as_ref())
        } else {
            0
        }
    }

    /// Stores an admitted in-memory send at `now` (its delay counted from then), remembering
    /// its id at `now_ms`; returns its offset.
    fn store(
        state: &mut State,
        message: Message,
        delay: Option<u64>,
        now: u64,
        now_ms: u64,
    ) -> u64 {
        let not_before = delay.map(|delay| now.saturating_add(delay));
        let offset = state.leases.push(message.payload, now, not_before, 0, None);
        if let Some(dedup) = &mut state.dedup {
            dedup.remember(message.id, offset, now_ms);
        }
        offset
    }

    /// Writes a send to the durable queue's log, or finds it a duplicate; what is written
    /// is not handed out before [`Self::made_durable`] says it is durable.
    ///
    /// Writes are made one at a time, in offset order, under the append lock, so the log's
    /// offsets and the lease table's stay the same; the lock is taken only once there is
    /// room, and let go before the fsync, so concurrent sends share one (the log's group
    /// commit). The state lock is not held across the write, which `write` makes (see
    /// [`Self::start_send_with`]).
    fn write_durable<'q, Declined>(
        &self,
        durable: &'q Durable,
        message: Message,
        delay: Option<u64>,
        wait: bool,
        write: impl FnOnce(&'q Durable, &Envelope) -> Result<Result<AppendTicket<'q>, Declined>, Error>,
    ) -> Result<Result<Written<'q>, Declined>, Error> {
        let mut now_ms = self.send_now_ms();
        // Room is waited for before the append lock is taken, so that a send waiting for room
        // holds up no other (a `try_send` still fails at once, a duplicate still returns).
        {
            let (mut state, duplicate) =
                self.lock_admitted(message.id.as_ref(), &mut now_ms, wait)?;
            if let Some(offset) = duplicate {
                return Ok(Ok(Self::duplicate_of(&state, durable, offset)));
            }
            state.reserved += 1;
        }
        let _append = durable.append_lock();
        {
            // A send with the same id may have been written while this one waited for the
            // lock: the id is checked again where writes are ordered.
            let mut state = self.state.lock();
            if let Some(offset) = self.find_duplicate(&mut state, message.id.as_ref(), now_ms) {
                state.reserved -= 1;
                let written = Self::duplicate_of(&state, durable, offset);
                drop(state);
                self.wake_senders(1);
                return Ok(Ok(written));
            }
        }
        let envelope = Envelope {
            id: message.id,
            sent_at_ms: now_ms,
            not_before_ms: delay.map(|delay| now_ms.saturating_add(delay / 1_000_000)),
            payload: message.payload,
        };
        let written = write(durable, &envelope);
        let mut state = self.state.lock();
        state.reserved -= 1;
        let ticket = match written {
            Ok(Ok(ticket)) => ticket,
            Ok(Err(declined)) => {
                drop(state);
                self.wake_senders(1);
                return Ok(Err(declined));
            }
            Err(error) => {
                drop(state);
                self.wake_senders(1);
                return Err(error);
            }
        };
        let now = self.clock.now_nanos();
        let not_before = delay.map(|delay| now.saturating_add(delay));
        let pushed = state.leases.push_writing(envelope.payload, now, not_before);
        debug_assert_eq!(
            pushed,
            ticket.offset(),
            "the log and the lease table agree on offsets"
        );
        if let Some(dedup) = &mut state.dedup {
            dedup.remember(envelope.id, pushed, now_ms);
        }
        Ok(Ok(Written::New(ticket)))
    }

    /// What a duplicate of the send at `offset` has left to do: nothing if that send is
    /// durable, else wait for it to be.
    fn duplicate_of<'q>(state: &State, durable: &'q Durable, offset: u64) -> Written<'q> {
        if state.leases.is_durable(offset) {
            Written::Done(Sent {
                offset,
                duplicate: true,
            })
        } else {
            Written::DuplicateOfWriting(durable, offset)
        }
    }

    /// The send at `offset` is durable, and so is every one written before it: they become
    /// available to receivers.
    fn made_durable(&self, offset: u64, duplicate: bool) -> Sent {
        let released = {
            let mut state = self.state.lock();
            let now = self.clock.now_nanos();
            state.leases.made_durable(offset + 1, now)
        };
        self.wake_receivers(released);
        Sent { offset, duplicate }
    }

    /// An fsync of the message log failed: wakes every sender waiting for room, which the
    /// messages it was to cover may hold for good, to find the log refusing sends.
    fn send_failed(&self) {
        self.space.notify_all();
        #[cfg(feature = "tokio")]
        self.notify.space.wake_all();
    }

    /// Makes the messages of abandoned sends, below `end`, durable and available. If the
    /// fsync fails they stay out of reach, as those of sends that failed do.
    fn release_abandoned(&self, end: u64) {
        // Only durable sends are abandoned: an in-memory queue has nothing to wait for.
        let durable = self
            .durable
            .as_ref()
            .is_none_or(|durable| durable.wait_durable(end - 1).is_ok());
        self.abandoned_released(end, durable);
    }

    /// [`Self::release_abandoned`] for async callers: the fsync runs on tokio's blocking pool.
    #[cfg(feature = "tokio")]
    async fn release_abandoned_async(&self, end: u64) {
        let durable = match &self.durable {
            Some(durable) => durable.wait_durable_async(end - 1).await.is_ok(),
            None => true,
        };
        self.abandoned_released(end, durable);
    }

    /// The fsync for the abandoned sends' messages below `end` ended: they are `durable`
    /// and available now, or the message log failed and they never will be.
    fn abandoned_released(&self, end: u64, durable: bool) {
        if durable {
            self.made_durable(end - 1, false);
        } else {
            self.send_failed();
        }
        self.forget_abandoned(end);
    }

    /// Wakes receivers for `messages` made available: a waiting thread, and a registered
    /// task, per message while there are any.
    fn wake_receivers(&self, messages: usize) {
        self.available.notify_up_to(messages);
        #[cfg(feature = "tokio")]
        self.notify.available.wake(messages);
    }

    /// Wakes senders for room freed for `messages`, as [`Self::wake_receivers`] does.
    fn wake_senders(&self, messages: usize) {
        self.space.notify_up_to(messages);
        #[cfg(feature = "tokio")]
        self.notify.space.wake(messages);
    }

    /// Leases the available message with the lowest offset, if any, without waiting for one.
    ///
    /// A durable queue's receive may wait for fsyncs: its journal record's, its dead letters'
    /// (one for all it met), and first, if a `send_async` future was dropped after its write,
    /// the one that makes that message durable and available. If the journal write fails,
    /// the message it leased is available again at once, its delivery not counted.
    pub fn try_receive(&self) -> Result<Option<Delivery>, Error> {
        let mut delivery = None;
        self.receive_into(1, |leased| delivery = Some(leased))?;
        Ok(delivery)
    }

    /// Leases up to `max` available messages, lowest offsets first, without waiting: what
    /// `max` calls of [`try_receive`](Self::try_receive) would lease, under one lock. Each
    /// delivery is leased, counted and settled on its own, exactly as if received alone; a
    /// durable queue journals them in one write, covered by one fsync.
    ///
    /// ```
    /// # use infra_mqueue::queue::{QueueOptions, WorkQueue};
    /// let queue = WorkQueue::in_memory(QueueOptions::default())?;
    /// for order in ["a", "b", "c"] {
    ///     queue.send(order.as_bytes().to_vec())?;
    /// }
    /// let batch = queue.try_receive_many(2)?;
    /// assert_eq!(batch.len(), 2);
    /// assert_eq!(batch[0].payload(), b"a");
    /// for result in queue.ack_many(batch.iter().map(|delivery| delivery.receipt())) {
    ///     result?;
    /// }
    /// assert_eq!(queue.try_receive_many(10)?.len(), 1);
    /// # Ok::<(), infra_mqueue::Error>(())
    /// ```
    pub fn try_receive_many(&self, max: usize) -> Result<Vec<Delivery>, Error> {
        // Room for the usual small batch; a large `max` grows only as messages come.
        let mut deliveries = Vec::with_capacity(max.min(64));
        self.receive_into(max, |delivery| deliveries.push(delivery))?;
        Ok(deliveries)
    }

    /// Leases up to `max` available messages, lowest offsets first, handing each to `deliver`
    /// (under the state lock: it only stores it), then, on a durable queue, makes its dead
    /// letters durable, settles them and journals the batch. A dead letter whose write fails
    /// stays unsettled and ends the batch; its error is returned only if the batch leased
    /// nothing, since what it leased must reach the caller.
    fn receive_into(&self, max: usize, mut deliver: impl FnMut(Delivery)) -> Result<(), Error> {
        // Filled in place, not returned: it is large enough for the move to cost a copy.
        let mut leased = Leased::new(self);
        while let Err(abandoned_end) = self.lease(max, &mut deliver, &mut leased) {
            self.release_abandoned(abandoned_end);
        }
        if let Some(durable) = &self.durable {
            let synced = leased.dead_end.map(|end| durable.sync_dead_letters(end));
            let entries = self.settle_dead_letters(&mut leased, synced);
            self.journal(durable, &entries)?;
        }
        leased.reached_caller()
    }

    /// The messages of abandoned sends below `end` were released (or their fsync failed).
    fn forget_abandoned(&self, end: u64) {
        let mut state = self.state.lock();
        if state.abandoned_end.is_some_and(|at| at <= end) {
            state.abandoned_end = None;
        }
    }

    /// The part of a receive made under the state lock: leases up to `max` messages for
    /// `deliver`; an in-memory queue also settles its dead letters here, a durable one only
    /// writes them (not yet durable: [`Self::settle_dead_letters`] settles them after their
    /// fsync, which runs without the lock).
    ///
    /// `Err(end)` first if abandoned sends left messages below `end` for receives to make
    /// durable: the caller does ([`Self::release_abandoned`]) and asks again. The end stays
    /// set until they are, so a receive dropped meanwhile (an async one) leaves them to the
    /// next.
    fn lease(
        &self,
        max: usize,
        deliver: &mut impl FnMut(Delivery),
        leased: &mut Leased<'_>,
    ) -> Result<(), u64> {
        let mut state = self.state.lock();
        if let Some(end) = state.abandoned_end {
            return Err(end);
        }
        if max == 0 || state.leases.unsettled() == 0 {
            // Nothing to hand out at any time: a consumer polling an empty queue (as a
            // receive does before it sleeps) pays no clock reading, unless gauges need one.
            #[cfg(feature = "metrics")]
            self.metrics.gauges(&state.leases, self.clock.now_nanos());
            return Ok(());
        }
        let now = self.clock.now_nanos();
        let mut freed = 0;
        let mut first = true;
        while leased.count < max {
            // Once per batch: what the clock made available by `now`.
            let handout = if std::mem::take(&mut first) {
                state.leases.receive(now, self.visibility_nanos)
            } else {
                state.leases.receive_again(now, self.visibility_nanos)
            };
            match handout {
                None => break,
                Some(Handout::Deliver {
                    offset,
                    attempt,
                    payload,
                    took_over,
                }) => {
                    state.stats.delivered += 1;
                    if attempt > 1 {
                        state.stats.redelivered += 1;
                        // A durable queue's delivery is counted once it reaches its caller
                        // (`Leased::reached_caller`): a counter cannot take back one that
                        // does not.
                        #[cfg(feature = "metrics")]
                        if self.durable.is_none() {
                            self.metrics.redelivered();
                        }
                    }
                    let receipt = Receipt { offset, attempt };
                    if self.durable.is_some() {
                        leased.received.push((receipt, took_over));
                        #[cfg(feature = "tokio")]
                        if leased.is_async {
                            state.unjournaled.insert((offset, attempt));
                        }
                        #[cfg(feature = "tokio")]
                        if took_over.is_some() {
                            state.taking_over.insert((offset, attempt));
                        }
                    }
                    deliver(Delivery { receipt, payload });
                    leased.count += 1;
                }
                Some(Handout::DeadLetter {
                    offset,
                    deliveries,
                    payload,
                    took_over,
                }) => {
                    let Some(durable) = &self.durable else {
                        self.keep_dead_letter(&mut state, offset, deliveries, payload);
                        state.leases.dead_lettered(offset);
                        state.stats.dead_lettered += 1;
                        freed += 1;
                        #[cfg(feature = "metrics")]
                        self.metrics.dead_lettered();
                        continue;
                    };
                    // Only written: the message stays unsettled, out of reach of receives,
                    // until its dead letter is durable. A compaction meanwhile (which reads
                    // the state under this lock) records it as unsettled, so a crash before
                    // the fsync brings it back to be dead-lettered again.
                    match Self::write_dead_letter(durable, leased, offset, deliveries, &payload) {
                        Ok(Some(end)) => {
                            leased.dead.push((offset, deliveries, took_over));
                            leased.dead_end = Some(end);
                            // Listed like a delivery that took a lease over: the receive of
                            // the delivery whose lease it ends, dropped meanwhile, leaves a
                            // note for it.
                            #[cfg(feature = "tokio")]
                            if took_over.is_some()
                                && let Some(ending) = deliveries.checked_add(1)
                            {
                                state.taking_over.insert((offset, ending));
                            }
                        }
                        Ok(None) => {
                            // Its segment rolls first: the batch ends, and the message waits
                            // for the lease after the roll. (Not listed yet, and the lock
                            // held since the handout: no receive left a note for it.)
                            state.leases.dead_letter_failed(offset, took_over);
                            break;
                        }
                        Err(error) => {
                            // Not settled: a later receive dead-letters it. The batch ends
                            // with what it leased, which goes to the caller; the error does
                            // if there is none.
                            state.leases.dead_letter_failed(offset, took_over);
                            leased.failed = Some(error);
                            break;
                        }
                    }
                }
            }
        }
        #[cfg(feature = "metrics")]
        self.metrics.gauges(&state.leases, now);
        drop(state);
        // Each dead letter settled freed room for one sender.
        self.wake_senders(freed);
        Ok(())
    }

    /// Writes a dead letter to its log, not yet durable; returns the log's end after it, or
    /// `None` when an async receive must first roll the log's segment (noted in `leased`).
    fn write_dead_letter(
        durable: &Durable,
        leased: &mut Leased<'_>,
        offset: u64,
        deliveries: u32,
        payload: &[u8],
    ) -> Result<Option<u64>, Error> {
        #[cfg(feature = "tokio")]
        if leased.is_async {
            let written = durable.write_dead_letter_unless_rolling(offset, deliveries, payload)?;
            return Ok(written.map_or_else(
                |roll| {
                    leased.dead_roll = Some(roll);
                    None
                },
                Some,
            ));
        }
        #[cfg(not(feature = "tokio"))]
        let _ = leased;
        durable
            .write_dead_letter(offset, deliveries, payload)
            .map(Some)
    }

    /// Settles the dead letters a durable receive wrote once `synced` (their fsync's outcome)
    /// says they are durable, or gives them back to a later receive if it failed; returns the
    /// batch's journal records: the dead letters settled, then the deliveries. One write and
    /// one fsync for the whole batch; a crash before it only writes the dead letters to their
    /// topic again after the restart.
    fn settle_dead_letters(
        &self,
        leased: &mut Leased<'_>,
        synced: Option<Result<(), Error>>,
    ) -> Vec<journal::Entry> {
        let dead = std::mem::take(&mut leased.dead);
        let settled = match synced {
            None | Some(Ok(())) => dead,
            Some(Err(error)) => {
                self.give_back_dead_letters(&dead);
                self.wake_receivers(dead.len());
                leased.failed.get_or_insert(error);
                Vec::new()
            }
        };
        if !settled.is_empty() {
            let mut state = self.state.lock();
            for &(offset, deliveries, took_over) in &settled {
                state.leases.dead_lettered(offset);
                #[cfg(feature = "tokio")]
                if took_over.is_some() {
                    state.dead_letter_settled(offset, deliveries);
                }
                #[cfg(not(feature = "tokio"))]
                let _ = (deliveries, took_over);
                state.stats.dead_lettered += 1;
                #[cfg(feature = "metrics")]
                self.metrics.dead_lettered();
            }
            #[cfg(feature = "metrics")]
            self.metrics.gauges(&state.leases, self.clock.now_nanos());
            drop(state);
            self.wake_senders(settled.len());
        }
        settled
            .into_iter()
            .map(|(offset, _, _)| journal::Entry::DeadLettered { offset })
            .chain(
                leased
                    .received
                    .iter()
                    .map(
                        |&(Receipt { offset, attempt }, _)| journal::Entry::Received {
                            offset,
                            attempt,
                        },
                    ),
            )
            .collect()
    }

    /// Gives back the dead letters of a receive whose dead-letter fsync failed; a delivery
    /// given back with one (see [`State::dead_letter_failed`]) is withdrawn in the journal,
    /// under its lock, as a dropped receive's is.
    #[cold]
    fn give_back_dead_letters(&self, dead: &[(u64, u32, Option<u64>)]) {
        let give_back = || {
            let mut withdrawn = Vec::new();
            let mut state = self.state.lock();
            for &(offset, deliveries, took_over) in dead {
                state.dead_letter_failed(offset, deliveries, took_over, &mut withdrawn);
            }
            withdrawn
        };
        #[cfg(feature = "tokio")]
        if let Some(durable) = &self.durable {
            Durable::withdraw(durable, give_back);
            return;
        }
        give_back();
    }

    fn keep_dead_letter(&self, state: &mut State, offset: u64, deliveries: u32, payload: Bytes) {
        if state.dead.len() >= self.options.capacity {
            state.dead.pop_front();
            state.stats.dead_letters_dropped += 1;
        }
        let position = state.dead_next;
        state.dead_next += 1;
        state.dead.push_back(DeadLetter {
            position,
            offset,
            deliveries,
            payload,
        });
    }

    /// Leases a message, waiting for one to be sent, given back or made due by its delay.
    pub fn receive(&self) -> Result<Delivery, Error> {
        loop {
            if let Some(delivery) = self.receive_timeout(MAX_DURATION)? {
                return Ok(delivery);
            }
        }
    }

    /// Leases a message, waiting at most `timeout` on the queue's clock; `None` if none came.
    ///
    /// The wait sleeps on a condition variable (no busy waiting) until a send or a nack
    /// signals it, or until the next delay or lease ends, whichever is first.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Option<Delivery>, Error> {
        self.wait_for(timeout, || self.try_receive())
    }

    /// Leases up to `max` messages, waiting at most `timeout` (on the queue's clock) for the
    /// first: returns as soon as at least one is available, with every available one up to
    /// `max` ([`try_receive_many`](Self::try_receive_many)); empty if none came in time or
    /// `max` is zero. One lock round trip for the whole batch where
    /// [`receive_timeout`](Self::receive_timeout) takes one per message.
    pub fn receive_many(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let batch = self.wait_for(timeout, || {
            let batch = self.try_receive_many(max)?;
            Ok((!batch.is_empty()).then_some(batch))
        })?;
        Ok(batch.unwrap_or_default())
    }

    /// Runs `attempt` until it finds something, for at most `timeout` on the queue's clock,
    /// sleeping between attempts on the condition variable a send or a nack signals, or until
    /// the next delay or lease ends.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        mut attempt: impl FnMut() -> Result<Option<T>, Error>,
    ) -> Result<Option<T>, Error> {
        if let Some(found) = attempt()? {
            return Ok(Some(found));
        }
        if !timeout.is_zero() {
            // A message is often a moment away (a producer between two sends): look again a
            // few times, spinning then yielding, before sleeping, since a sleep and its
            // wake-up cost two context switches. Bounded: at most `SPINS` more looks.
            for round in 0..SPINS {
                back_off(round);
                if let Some(found) = attempt()? {
                    return Ok(Some(found));
                }
            }
        }
        let deadline = self
            .clock
            .now_nanos()
            .saturating_add(duration_to_nanos(timeout));
        // Whether this receiver took a wake-up: one for a message due later (a delay), or
        // that another took first, leaves the other sleepers on their earlier reckoning.
        let mut woken = false;
        loop {
            if let Some(found) = attempt()? {
                return Ok(Some(found));
            }
            let mut state = self.state.lock();
            let now = self.clock.now_nanos();
            if now >= deadline {
                drop(state);
                if woken {
                    // Leaving without a message: another sleeper looks in its place.
                    self.available.notify_one();
                }
                return Ok(None);
            }
            // An abandoned send's message becomes available at the next look (which makes it
            // durable): its wake-up may have come before this receiver slept.
            if state.abandoned_end.is_some() || state.leases.has_available(now) {
                continue;
            }
            let until = state
                .leases
                .next_due(now)
                .map_or(deadline, |due| due.min(deadline));
            woken |= !self
                .available
                .wait_timeout(&mut state, Duration::from_nanos(until - now));
        }
    }

    /// Runs one settle call under the lock, counting refusals.
    ///
    /// The clock is read (before the lock) only for calls that look at the time, `TIMED` ones
    /// (nack, extend), and for the gauges; the others (ack, term) get zero.
    fn settle_call<const TIMED: bool>(
        &self,
        apply: impl FnOnce(&mut State, u64) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let now = if TIMED || cfg!(feature = "metrics") {
            self.clock.now_nanos()
        } else {
            0
        };
        let mut state = self.state.lock();
        let result = apply(&mut state, now);
        if result.is_err() {
            state.stats.refused += 1;
            #[cfg(feature = "metrics")]
            self.metrics.refused();
        }
        #[cfg(feature = "metrics")]
        self.metrics.gauges(&state.leases, now);
        result
    }

    /// Acknowledges the delivery: the message is settled and never delivered again.
    ///
    /// Refused if the message was redelivered since ([`Error::Redelivered`]), nacked
    /// ([`Error::NotLeased`]), already settled ([`Error::AlreadySettled`]) or never delivered
    /// as this attempt ([`Error::UnknownDelivery`]). A lease past its deadline still counts
    /// until the message is received again.
    pub fn ack(&self, receipt: impl Into<Receipt>) -> Result<(), Error> {
        let receipt = receipt.into();
        self.settle_call::<false>(|state, _| {
            state
                .leases
                .settle(receipt.offset, receipt.attempt, Outcome::Acked)?;
            state.stats.acked += 1;
            Ok(())
        })?;
        self.wake_senders(1);
        self.journal_settle(journal::Entry::Acked {
            offset: receipt.offset,
        })
    }

    /// Acknowledges several deliveries under one lock: the result for each receipt, in order,
    /// is what [`ack`](Self::ack) would have returned for it alone (a refused receipt does not
    /// stop the others). A durable queue journals the accepted acks in one write, covered by
    /// one fsync; if that fails, each of them gets the error.
    pub fn ack_many(
        &self,
        receipts: impl IntoIterator<Item = impl Into<Receipt>>,
    ) -> Vec<Result<(), Error>> {
        let receipts: Vec<Receipt> = receipts.into_iter().map(Into::into).collect();
        let mut results = Vec::with_capacity(receipts.len());
        #[cfg(feature = "metrics")]
        let now = self.clock.now_nanos();
        let mut state = self.state.lock();
        let mut acked = 0_usize;
        for receipt in &receipts {
            let settled = state
                .leases
                .settle(receipt.offset, receipt.attempt, Outcome::Acked);
            if settled.is_ok() {
                acked += 1;
            } else {
                state.stats.refused += 1;
                #[cfg(feature = "metrics")]
                self.metrics.refused();
            }
            results.push(settled);
        }
        state.stats.acked += acked as u64;
        #[cfg(feature = "metrics")]
        self.metrics.gauges(&state.leases, now);
        drop(state);
        self.wake_senders(acked);
        if let Some(durable) = &self.durable {
            // One write and one fsync for every ack accepted; if it fails, each of them
            // gets the error, as each would have alone.
            let entries: Vec<journal::Entry> = receipts
                .iter()
                .zip(&results)
                .filter(|(_, result)| result.is_ok())
                .map(|(receipt, _)| journal::Entry::Acked {
                    offset: receipt.offset,
                })
                .collect();
            if let Err(error) = self.journal(durable, &entries) {
                let mut accepted = results.iter_mut().filter(|result| result.is_ok());
                let first = accepted.next();
                for result in accepted {
                    *result = Err(error.for_another_waiter());
                }
                if let Some(first) = first {
                    *first = Err(error);
                }
            }
        }
        results
    }

    /// Terminates the delivery: the message is settled without being processed, never
    /// delivered again and not dead-lettered (for messages that can never succeed, which the
    /// consumer has dealt with itself). Refused like [`WorkQueue::ack`].
    pub fn term(&self, receipt: impl Into<Receipt>) -> Result<(), Error> {
        let receipt = receipt.into();
        self.settle_call::<false>(|state, _| {
            state
                .leases
                .settle(receipt.offset, receipt.attempt, Outcome::Terminated)?;
            state.stats.terminated += 1;
            Ok(())
        })?;
        self.wake_senders(1);
        self.journal_settle(journal::Entry::Terminated {
            offset: receipt.offset,
        })
    }

    /// Gives the message back, to be delivered again after `delay` (zero: at once). It
    /// counts as a delivery: after `max_deliveries` the next receive dead-letters it.
    /// Refused like [`WorkQueue::ack`].
    pub fn nack(&self, receipt: impl Into<Receipt>, delay: Duration) -> Result<(), Error> {
        let receipt = receipt.into();
        let delay_nanos = check_duration(delay)?;
        self.settle_call::<true>(|state, now| {
            state.leases.nack(
                receipt.offset,
                receipt.attempt,
                now,
                now.saturating_add(delay_nanos),
            )?;
            state.stats.nacked += 1;
            Ok(())
        })?;
        self.wake_receivers(1);
        let not_before_ms = wall_ms(self.clock.as_ref()).saturating_add(delay_nanos / 1_000_000);
        self.journal_settle(journal::Entry::Nacked {
            offset: receipt.offset,
            attempt: receipt.attempt,
            not_before_ms,
        })
    }

    /// Extends the lease to `by` from now (at most [`MAX_DURATION`]). Refused like
    /// [`WorkQueue::ack`]. Not journaled: leases do not survive a restart.
    pub fn extend(&self, receipt: impl Into<Receipt>, by: Duration) -> Result<(), Error> {
        let receipt = receipt.into();
        let by = check_duration(by)?;
        self.settle_call::<true>(|state, now| {
            state
                .leases
                .extend(receipt.offset, receipt.attempt, now.saturating_add(by))
        })
    }

    fn journal_settle(&self, entry: journal::Entry) -> Result<(), Error> {
        match &self.durable {
            Some(durable) => self.journal(durable, &[entry]),
            None => Ok(()),
        }
    }

    fn journal(&self, durable: &Arc<Durable>, entries: &[journal::Entry]) -> Result<(), Error> {
        if durable.journal(entries)? {
            // The records are journaled, so the calls they record have happened: a
            // compaction's failure is not theirs (a receive failing here would lease a message
            // its caller never gets, and count the delivery). The journal stays whole either
            // way, and a pointer left unsynced fails the next journal record instead
            // (`Compaction::finish`).
            let _ = Durable::compact(durable, || self.checkpoint());
        }
        Ok(())
    }

    /// The journal records that say everything the lease table knows: the watermark, each
    /// unsettled message's state, and one range per stretch of settled messages between them.
    fn checkpoint(&self) -> Vec<journal::Entry> {
        let state = self.state.lock();
        let now = self.clock.now_nanos();
        let now_ms = wall_ms(self.clock.as_ref());
        let mut records = vec![journal::Entry::Checkpoint {
            watermark: state.leases.watermark(),
        }];
        // The start of the stretch of settled offsets being walked, if any; `next` is the
        // offset after the last one listed, so a gap before the next one listed (the table
        // holds no slot for it) is settled too.
        let mut settled_from = None;
        let mut next = state.leases.watermark();
        for (offset, deliveries, settled, waiting) in state.leases.snapshot() {
            if offset > next {
                settled_from.get_or_insert(next);
            }
            next = offset + 1;
            if settled {
                settled_from.get_or_insert(offset);
                continue;
            }
            if let Some(from) = settled_from.take() {
                records.push(journal::Entry::SettledRange { from, end: offset });
            }
            // Deliveries whose own records are still to come are theirs to count.
            #[cfg(feature = "tokio")]
            let deliveries = {
                let mut journaled = deliveries;
                while journaled > 0 && state.unjournaled.contains(&(offset, journaled)) {
                    journaled -= 1;
                }
                journaled
            };
            if deliveries > 0 {
                records.push(journal::Entry::Received {
                    offset,
                    attempt: deliveries,
                });
            }
            if let Some(not_before) = waiting {
                let not_before_ms =
                    now_ms.saturating_add((not_before.saturating_sub(now)) / 1_000_000);
                records.push(journal::Entry::Nacked {
                    offset,
                    attempt: deliveries,
                    not_before_ms,
                });
            }
        }
        let end = state.leases.next_offset();
        if end > next {
            settled_from.get_or_insert(next);
        }
        if let Some(from) = settled_from {
            records.push(journal::Entry::SettledRange { from, end });
        }
        records
    }

    /// Dead letters from `position` on, at most `max`.
    ///
    /// A durable queue reads them from its dead-letter log, where they stay; an in-memory
    /// queue keeps the latest `capacity` of them.
    pub fn dead_letters(&self, position: u64, max: usize) -> Result<Vec<DeadLetter>, Error> {
        if let Some(durable) = &self.durable {
            return durable.read_dead_letters(position, max);
        }
        let state = self.state.lock();
        Ok(state
            .dead
            .iter()
            .filter(|letter| letter.position >= position)
            .take(max)
            .cloned()
            .collect())
    }

    /// The queue's counts and gauges.
    pub fn stats(&self) -> QueueStats {
        let now = self.clock.now_nanos();
        let state = self.state.lock();
        let mut stats = state.stats;
        stats.unsettled = state.leases.unsettled();
        stats.in_flight = state.leases.in_flight();
        stats.next_offset = state.leases.next_offset();
        stats.watermark = state.leases.watermark();
        stats.oldest_age = state
            .leases
            .oldest_enqueued_at()
            .map(|at| Duration::from_nanos(now.saturating_sub(at)));
        stats
    }
}
