//! The lease state machine: which message is ready, who holds which attempt, what is settled.
//!
//! Pure bookkeeping with no locking, no I/O and no clock of its own: every call takes the
//! current monotonic reading, so the rules can be read (and tested) apart from the plumbing.
//! [`WorkQueue`](super::WorkQueue) keeps one of these behind its mutex.
//!
//! Messages are numbered by offset. Slots for every offset from `base` up to `next` live in a
//! deque; settled slots at the front are dropped, and a slot settled behind an unsettled one
//! lets go of its payload, so the payloads held follow the unsettled messages, not the
//! history. An unsettled message left at the front while the deque fills with settled slots
//! behind it (a long delay, a lease never settled) moves out to a map of stragglers below
//! `base`, so the slots held follow the unsettled messages too: at most
//! `2 × unsettled + STRAGGLER_SLACK` in the deque (at most 72 bytes each on a 64-bit target).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use bytes::Bytes;

use crate::error::Error;

/// Stale entries the lease indexes may hold beyond two per lease held before they are pruned.
const STALE_LEASE_SLACK: usize = 64;

/// Slots the deque may hold beyond two per unsettled message before its front moves out to
/// the stragglers: enough that a queue whose oldest messages are settled a little out of
/// order never moves one.
const STRAGGLER_SLACK: usize = 64;

/// How a message left the queue for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acknowledged by the holder of its current attempt.
    Acked,
    /// Terminated by the holder of its current attempt: not redelivered, not dead-lettered.
    Terminated,
    /// Moved to the dead-letter topic after `max_deliveries` deliveries.
    DeadLettered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Available now (or since its not-before time passed).
    Ready,
    /// Not available before this monotonic reading (a delayed send or a delayed nack).
    Waiting { not_before: u64 },
    /// Held by `attempt` until `deadline`; after the deadline it may be received again, but
    /// until then the holder may still settle it.
    Leased { attempt: u32, deadline: u64 },
    /// Gone for good.
    Settled(Outcome),
    /// Written to a durable queue's log but not yet durable: its send has not returned, so
    /// it is counted but not handed out; then available at `not_before` (or at once).
    Writing { not_before: Option<u64> },
    /// Handed out to be dead-lettered, not yet settled (a durable queue settles it once the
    /// dead letter is fsynced, without the queue's lock): out of reach of receives and of
    /// settle calls until [`Leases::dead_lettered`] or [`Leases::dead_letter_failed`].
    DeadLettering,
}

#[derive(Debug)]
struct Slot {
    payload: Bytes,
    /// Deliveries so far; the attempt number of the latest one.
    deliveries: u32,
    state: State,
    /// Monotonic reading when the message became known to this queue (for the oldest age).
    enqueued_at: u64,
}

/// What to do with a message the queue hands out.
#[derive(Debug)]
pub(crate) enum Handout {
    /// Deliver it as `attempt`, leased until `deadline`.
    Deliver {
        offset: u64,
        attempt: u32,
        payload: Bytes,
        /// The deadline of the expired lease this delivery took over, if it did: what
        /// [`Leases::undeliver`] gives back to that lease's holder.
        took_over: Option<u64>,
    },
    /// It reached `max_deliveries`: it must be written to the dead-letter topic, and then
    /// settled with [`Leases::dead_lettered`], or given back with
    /// [`Leases::dead_letter_failed`] if the write failed. Until either, it is out of reach
    /// of receives and counted as unsettled.
    DeadLetter {
        offset: u64,
        deliveries: u32,
        payload: Bytes,
        /// The deadline of the expired lease it ends, if it does: what
        /// [`Leases::dead_letter_failed`] gives back to that lease's holder.
        took_over: Option<u64>,
    },
}

/// The lease table of one queue.
#[derive(Debug)]
pub(crate) struct Leases {
    /// Offset of `slots[0]`: every message below it is settled or a straggler.
    base: u64,
    slots: VecDeque<Slot>,
    /// Unsettled messages below `base`, moved out of the deque's front so that the settled
    /// slots behind them could be dropped; a straggler settled leaves the map.
    stragglers: BTreeMap<u64, Slot>,
    /// One past the highest offset ever moved to the stragglers: every offset from it up to
    /// `base` is settled, which a lookup answers without searching the map.
    stragglers_end: u64,
    /// Never-delivered messages available now, in increasing offset order.
    fresh: VecDeque<u64>,
    /// Messages available again (expired lease, nack, delay over); may hold stale entries,
    /// which are checked against the slot when popped.
    retry: BinaryHeap<Reverse<u64>>,
    /// Waiting messages by not-before time: `(not_before, offset)`; stale entries allowed.
    delayed: BinaryHeap<Reverse<(u64, u64)>>,
    /// Leases in the order they were granted, whose deadlines never decrease (one visibility
    /// timeout, a monotonic clock): `(deadline, offset, attempt)`.
    leases: VecDeque<(u64, u64, u32)>,
    /// Leases with a deadline out of that order (extended ones).
    other_leases: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// The deadline of the latest entry in `leases`, to keep that deque sorted.
    last_lease_deadline: u64,
    unsettled: usize,
    in_flight: usize,
    max_deliveries: u32,
    /// Every message below this offset is durable; those from it to [`Self::next_offset`]
    /// are [`State::Writing`] (sends are written in offset order and made durable in it).
    durable_end: u64,
}

/// Why a settle call (ack, nack, extend, term) was refused. Cold: kept out of the settle
/// calls' path, which succeeds nearly always.
#[cold]
fn refuse(offset: u64, attempt: u32, slot: Option<&Slot>) -> Error {
    let Some(slot) = slot else {
        return Error::AlreadySettled { offset };
    };
    match slot.state {
        State::Settled(_) => Error::AlreadySettled { offset },
        // Attempts start at 1: attempt 0 was never made, whatever the deliveries.
        _ if attempt == 0 || attempt > slot.deliveries => {
            Error::UnknownDelivery { offset, attempt }
        }
        _ if attempt < slot.deliveries => Error::Redelivered {
            offset,
            attempt,
            current: slot.deliveries,
        },
        // The same attempt, but no longer leased: it was nacked.
        _ => Error::NotLeased { offset, attempt },
    }
}

impl Leases {
    /// An empty table whose first message will be `first_offset`.
    pub(crate) fn new(first_offset: u64, max_deliveries: u32) -> Self {
        Self {
            base: first_offset,
            slots: VecDeque::new(),
            stragglers: BTreeMap::new(),
            stragglers_end: 0,
            fresh: VecDeque::new(),
            retry: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            leases: VecDeque::new(),
            other_leases: BinaryHeap::new(),
            last_lease_deadline: 0,
            unsettled: 0,
            in_flight: 0,
            max_deliveries,
            durable_end: first_offset,
        }
    }

    /// The offset the next message will get.
    pub(crate) fn next_offset(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// The oldest unsettled offset (or [`Self::next_offset`] when all are settled).
    pub(crate) fn watermark(&self) -> u64 {
        self.stragglers
            .first_key_value()
            .map_or(self.base, |(&offset, _)| offset)
    }

    /// Messages not yet settled: ready, waiting, leased or still being written.
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Messages under a lease, expired or not, that no one has received again yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The monotonic reading at which the oldest unsettled message was enqueued.
    pub(crate) fn oldest_enqueued_at(&self) -> Option<u64> {
        self.stragglers
            .first_key_value()
            .map(|(_, slot)| slot)
            .or(self.slots.front())
            .map(|slot| slot.enqueued_at)
    }

    // Below `base`, the offsets looked up most (a stale lease entry, a slot just dropped) are
    // above every straggler: one comparison answers them.
    fn slot(&self, offset: u64) -> Option<&Slot> {
        match offset.checked_sub(self.base) {
            Some(index) => self.slots.get(usize::try_from(index).ok()?),
            None if offset >= self.stragglers_end => None,
            None => self.straggler(offset),
        }
    }

    fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        match offset.checked_sub(self.base) {
            Some(index) => self.slots.get_mut(usize::try_from(index).ok()?),
            None if offset >= self.stragglers_end => None,
            None => self.straggler_mut(offset),
        }
    }

    // Out of line: the deque's index is the path every receive and settle takes.
    #[cold]
    fn straggler(&self, offset: u64) -> Option<&Slot> {
        self.stragglers.get(&offset)
    }

    #[cold]
    fn straggler_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        self.stragglers.get_mut(&offset)
    }

    /// Appends the message at [`Self::next_offset`], available at `not_before` (or now).
    ///
    /// `deliveries` is the count a restart recovered (zero for a new message); a recovered
    /// message may also be already settled (`settled`), which keeps the offsets dense.
    pub(crate) fn push(
        &mut self,
        payload: Bytes,
        now: u64,
        not_before: Option<u64>,
        deliveries: u32,
        settled: Option<Outcome>,
    ) -> u64 {
        debug_assert_eq!(
            self.durable_end,
            self.next_offset(),
            "a message available at once is never pushed behind one still being written"
        );
        let offset = self.next_offset();
        self.durable_end = offset + 1;
        let state = match (settled, not_before) {
            (Some(outcome), _) => State::Settled(outcome),
            (None, Some(not_before)) if not_before > now => {
                self.delayed.push(Reverse((not_before, offset)));
                State::Waiting { not_before }
            }
            (None, _) => {
                if deliveries == 0 {
                    self.fresh.push_back(offset);
                } else {
                    self.retry.push(Reverse(offset));
                }
                State::Ready
            }
        };
        if settled.is_none() {
            self.unsettled += 1;
        }
        self.slots.push_back(Slot {
            // A settled message is never handed out again: its bytes are not kept.
            payload: if settled.is_some() {
                Bytes::new()
            } else {
                payload
            },
            deliveries,
            state,
            enqueued_at: now,
        });
        self.drop_settled_front();
        offset
    }

    /// Appends a message written to the log but not yet durable at [`Self::next_offset`]:
    /// counted from now on, handed out only once [`Self::made_durable`] covers it, then
    /// available at `not_before` (or at once).
    pub(crate) fn push_writing(
        &mut self,
        payload: Bytes,
        now: u64,
        not_before: Option<u64>,
    ) -> u64 {
        let offset = self.next_offset();
        self.unsettled += 1;
        self.slots.push_back(Slot {
            payload,
            deliveries: 0,
            state: State::Writing { not_before },
            enqueued_at: now,
        });
        offset
    }

    /// Whether the message at `offset` is durable (or was never written here).
    pub(crate) fn is_durable(&self, offset: u64) -> bool {
        offset < self.durable_end || offset >= self.next_offset()
    }

    /// Every message below `end` is durable now: those still being written become available
    /// (or wait for their delay), in offset order. Returns how many did.
    pub(crate) fn made_durable(&mut self, end: u64, now: u64) -> usize {
        let end = end.min(self.next_offset());
        let mut released = 0;
        while self.durable_end < end {
            let offset = self.durable_end;
            self.durable_end += 1;
            let Some(slot) = self.slot_mut(offset) else {
                continue;
            };
            let State::Writing { not_before } = slot.state else {
                continue;
            };
            released += 1;
            match not_before {
                Some(not_before) if not_before > now => {
                    slot.state = State::Waiting { not_before };
                    self.delayed.push(Reverse((not_before, offset)));
                }
                _ => {
                    slot.state = State::Ready;
                    // In offset order: everything in `fresh` is below `durable_end`.
                    self.fresh.push_back(offset);
                }
            }
        }
        released
    }

    /// Drops the settled slots at the deque's front, and moves an unsettled front slot out to
    /// the stragglers while the deque holds more settled slots than the bound allows.
    ///
    /// Inline: every settle calls it, and the bound nearly always holds.
    #[inline]
    fn drop_settled_front(&mut self) {
        while let Some(slot) = self.slots.front() {
            if !matches!(slot.state, State::Settled(_)) {
                break;
            }
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.len() > 2 * self.unsettled + STRAGGLER_SLACK {
            self.move_out_stragglers();
        }
    }

    /// Each slot leaves the deque once, so the cost is paid by the settled slots it drops.
    #[cold]
    fn move_out_stragglers(&mut self) {
        while self.slots.len() > 2 * self.unsettled + STRAGGLER_SLACK {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if !matches!(slot.state, State::Settled(_)) {
                self.stragglers.insert(self.base, slot);
                self.stragglers_end = self.base + 1;
            }
            self.base += 1;
        }
    }

    /// Forgets the slot of a straggler just settled: below `base` and out of the map reads as
    /// settled.
    #[inline]
    fn forget_settled_straggler(&mut self, offset: u64) {
        if offset < self.stragglers_end.min(self.base) {
            self.forget_straggler(offset);
        }
    }

    #[cold]
    fn forget_straggler(&mut self, offset: u64) {
        self.stragglers.remove(&offset);
    }

    /// Moves what the clock made available (delays over, leases expired) into `retry`.
    fn promote(&mut self, now: u64) {
        while let Some(&Reverse((due, offset))) = self.delayed.peek() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if let Some(slot) = self.slot_mut(offset)
                && slot.state == (State::Waiting { not_before: due })
            {
                slot.state = State::Ready;
                self.retry.push(Reverse(offset));
            }
        }
        // Stale entries (settled, nacked or re-leased since) at the front are dropped here;
        // those behind a lease still held, by `prune_stale_leases`.
        while let Some(&(deadline, offset, attempt)) = self.leases.front() {
            let current = self.lease_is_current(offset, attempt, deadline);
            if current && deadline > now {
                break;
            }
            self.leases.pop_front();
            if current {
                self.retry.push(Reverse(offset));
            }
        }
        while let Some(&Reverse((deadline, offset, attempt))) = self.other_leases.peek() {
            if deadline > now {
                break;
            }
            self.other_leases.pop();
            if self.lease_is_current(offset, attempt, deadline) {
                self.retry.push(Reverse(offset));
            }
        }
    }

    fn lease_is_current(&self, offset: u64, attempt: u32, deadline: u64) -> bool {
        self.slot(offset)
            .is_some_and(|slot| slot.state == State::Leased { attempt, deadline })
    }

    /// Whether the message at `offset` may be handed out at `now`.
    fn is_available(&self, offset: u64, now: u64) -> bool {
        self.slot(offset).is_some_and(|slot| match slot.state {
            State::Ready => true,
            State::Leased { deadline, .. } => deadline <= now,
            State::Waiting { .. }
            | State::Settled(_)
            | State::Writing { .. }
            | State::DeadLettering => false,
        })
    }

    /// Hands out the available message with the lowest offset, leasing it until
    /// `now + visibility`; a message that already had `max_deliveries` deliveries is
    /// dead-lettered instead (the caller asks again). `None` when nothing is available.
    pub(crate) fn receive(&mut self, now: u64, visibility: u64) -> Option<Handout> {
        self.promote(now);
        self.receive_again(now, visibility)
    }

    /// [`Self::receive`] once more at the same `now`, for the rest of a batch: what the clock
    /// made available by `now` was promoted by the batch's first receive, and a receive makes
    /// nothing due at `now` (a lease lasts at least a millisecond), so it is not looked for
    /// again.
    pub(crate) fn receive_again(&mut self, now: u64, visibility: u64) -> Option<Handout> {
        debug_assert!(
            visibility > 0,
            "a lease that ends when it starts is due at once"
        );
        while let Some(&Reverse(offset)) = self.retry.peek() {
            if self.is_available(offset, now) {
                break;
            }
            self.retry.pop();
        }
        let from_retry = self.retry.peek().map(|&Reverse(offset)| offset);
        let offset = match (self.fresh.front().copied(), from_retry) {
            (Some(fresh), Some(retry)) if retry < fresh => self.retry.pop()?.0,
            (Some(_), _) => self.fresh.pop_front()?,
            (None, Some(_)) => self.retry.pop()?.0,
            (None, None) => return None,
        };
        let max_deliveries = self.max_deliveries;
        let slot = self.slot_mut(offset)?;
        let took_over = match slot.state {
            State::Leased { deadline, .. } => Some(deadline),
            _ => None,
        };
        let was_leased = took_over.is_some();
        if slot.deliveries >= max_deliveries {
            slot.state = State::DeadLettering;
            let handout = Handout::DeadLetter {
                offset,
                deliveries: slot.deliveries,
                payload: slot.payload.clone(),
                took_over,
            };
            if was_leased {
                // An expired lease: no longer held by its last attempt.
                self.in_flight -= 1;
            }
            return Some(handout);
        }
        slot.deliveries += 1;
        let attempt = slot.deliveries;
        let deadline = now.saturating_add(visibility);
        slot.state = State::Leased { attempt, deadline };
        let payload = slot.payload.clone();
        if !was_leased {
            self.in_flight += 1;
        }
        self.record_lease(offset, attempt, deadline);
        Some(Handout::Deliver {
            offset,
            attempt,
            payload,
            took_over,
        })
    }

    /// Settles a message handed out as [`Handout::DeadLetter`], now in the dead-letter topic.
    pub(crate) fn dead_lettered(&mut self, offset: u64) {
        let Some(slot) = self.slot_mut(offset) else {
            return;
        };
        debug_assert_eq!(slot.state, State::DeadLettering);
        slot.state = State::Settled(Outcome::DeadLettered);
        slot.payload = Bytes::new();
        self.unsettled -= 1;
        self.forget_settled_straggler(offset);
        self.drop_settled_front();
    }

    /// Takes back the delivery `attempt` of `offset` whose receive never reached its caller
    /// (handed out with `took_over`): the message is available again at once and the
    /// delivery is not counted, so the next receive gets the same attempt number (no one
    /// holds a receipt for it). An expired lease it took over is its holder's again, who may
    /// still settle it as before. Does nothing if the lease ran out and the message was
    /// received again since. Returns whether it took the delivery back.
    pub(crate) fn undeliver(&mut self, offset: u64, attempt: u32, took_over: Option<u64>) -> bool {
        let Some(slot) = self.slot_mut(offset) else {
            return false;
        };
        if !slot.state_is_leased_by(attempt) {
            return false;
        }
        slot.deliveries -= 1;
        match took_over {
            // Still counted in flight: the delivery taking it over did not count itself.
            Some(deadline) => {
                slot.state = State::Leased {
                    attempt: attempt - 1,
                    deadline,
                };
            }
            None => {
                slot.state = State::Ready;
                self.in_flight -= 1;
            }
        }
        // Available either way: the lease given back had run out.
        self.retry.push(Reverse(offset));
        true
    }

    /// Gives back a message handed out as [`Handout::DeadLetter`] with `took_over` whose
    /// write failed (or whose receive was dropped before settling it): a later receive hands
    /// it out to be dead-lettered again, and until then an expired lease it was to end is its
    /// holder's again, who may still settle it as before.
    pub(crate) fn dead_letter_failed(&mut self, offset: u64, took_over: Option<u64>) {
        let Some(slot) = self.slot_mut(offset) else {
            return;
        };
        debug_assert_eq!(slot.state, State::DeadLettering);
        match took_over {
            Some(deadline) => {
                slot.state = State::Leased {
                    attempt: slot.deliveries,
                    deadline,
                };
                // Let go of when it was handed out.
                self.in_flight += 1;
            }
            None => slot.state = State::Ready,
        }
        // Available either way: the lease given back had run out.
        self.retry.push(Reverse(offset));
    }

    fn record_lease(&mut self, offset: u64, attempt: u32, deadline: u64) {
        if deadline >= self.last_lease_deadline {
            self.last_lease_deadline = deadline;
            self.leases.push_back((deadline, offset, attempt));
        } else {
            self.other_leases.push(Reverse((deadline, offset, attempt)));
        }
        self.prune_stale_leases();
    }

    /// Drops the entries of leases settled, nacked, extended or received again since, once
    /// they outnumber the leases held: otherwise one lease held at the front of `leases`
    /// (or a lease extended over and over) would keep every later entry until its deadline,
    /// and memory would follow the history of receives rather than the leases held. Pruning
    /// leaves at most one entry per lease held, so its cost is paid by the entries it drops.
    ///
    /// Inline: every receive asks, and the answer is nearly always no.
    #[inline]
    fn prune_stale_leases(&mut self) {
        let limit = 2 * self.in_flight + STALE_LEASE_SLACK;
        if self.leases.len() > limit {
            self.prune_leases();
        }
        if self.other_leases.len() > limit {
            self.prune_other_leases();
        }
    }

    #[cold]
    fn prune_leases(&mut self) {
        let mut leases = std::mem::take(&mut self.leases);
        leases.retain(|&(deadline, offset, attempt)| {
            self.lease_is_current(offset, attempt, deadline)
        });
        self.leases = leases;
    }

    #[cold]
    fn prune_other_leases(&mut self) {
        let mut other = std::mem::take(&mut self.other_leases).into_sorted_vec();
        // A lease extended back to an earlier deadline can be listed twice.
        other.dedup();
        other.retain(|&Reverse((deadline, offset, attempt))| {
            self.lease_is_current(offset, attempt, deadline)
        });
        self.other_leases = other.into();
    }

    /// Checks that `attempt` is the current lease of `offset`: the one rule every settle
    /// call goes through. A lease past its deadline still counts until someone receives the
    /// message again.
    fn current_lease(&mut self, offset: u64, attempt: u32) -> Result<&mut Slot, Error> {
        if offset >= self.next_offset() {
            return Err(Error::UnknownDelivery { offset, attempt });
        }
        match self.slot_mut(offset) {
            Some(slot) if slot.state_is_leased_by(attempt) => Ok(slot),
            other => Err(refuse(offset, attempt, other.as_deref())),
        }
    }

    /// Settles the message held by `attempt` for good (ack or term).
    pub(crate) fn settle(
        &mut self,
        offset: u64,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let slot = self.current_lease(offset, attempt)?;
        slot.state = State::Settled(outcome);
        // Its bytes go now, also when its slot stays behind an older unsettled message (a
        // delay, a long lease): only the unsettled messages, which `capacity` bounds, hold
        // their bytes.
        slot.payload = Bytes::new();
        self.unsettled -= 1;
        self.in_flight -= 1;
        self.forget_settled_straggler(offset);
        self.drop_settled_front();
        Ok(())
    }

    /// Gives the message back: available again at `not_before` (now if not later).
    pub(crate) fn nack(
        &mut self,
        offset: u64,
        attempt: u32,
        now: u64,
        not_before: u64,
    ) -> Result<(), Error> {
        let slot = self.current_lease(offset, attempt)?;
        if not_before > now {
            slot.state = State::Waiting { not_before };
            self.delayed.push(Reverse((not_before, offset)));
        } else {
            slot.state = State::Ready;
            self.retry.push(Reverse(offset));
        }
        self.in_flight -= 1;
        Ok(())
    }

    /// Moves the lease's deadline to `deadline`.
    pub(crate) fn extend(&mut self, offset: u64, attempt: u32, deadline: u64) -> Result<(), Error> {
        let slot = self.current_lease(offset, attempt)?;
        slot.state = State::Leased { attempt, deadline };
        self.other_leases.push(Reverse((deadline, offset, attempt)));
        self.prune_stale_leases();
        Ok(())
    }

    /// The earliest monotonic reading at which a message not available now becomes
    /// available (a delay ends or a lease expires), for a receiver deciding how long to wait.
    pub(crate) fn next_due(&mut self, now: u64) -> Option<u64> {
        self.promote(now);
        let delayed = self.delayed.peek().map(|&Reverse((due, _))| due);
        let leased = self.leases.front().map(|&(deadline, _, _)| deadline);
        let other = self
            .other_leases
            .peek()
            .map(|&Reverse((deadline, _, _))| deadline);
        [delayed, leased, other].into_iter().flatten().min()
    }

    /// Whether a receive at `now` would find a message (or a dead letter to move).
    pub(crate) fn has_available(&mut self, now: u64) -> bool {
        self.promote(now);
        if !self.fresh.is_empty() {
            return true;
        }
        while let Some(&Reverse(offset)) = self.retry.peek() {
            if self.is_available(offset, now) {
                return true;
            }
            self.retry.pop();
        }
        false
    }

    /// What a checkpoint of this table must say about each message it holds, in offset
    /// order: `(offset, deliveries, settled, waiting until)`. The stragglers come first, with
    /// gaps between them and up to the deque: every offset in a gap is settled.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = (u64, u32, bool, Option<u64>)> + '_ {
        let stragglers = self.stragglers.iter().map(|(&offset, slot)| (offset, slot));
        let deque = (self.base..).zip(self.slots.iter());
        stragglers.chain(deque).map(|(offset, slot)| {
            let waiting = match slot.state {
                State::Waiting { not_before } => Some(not_before),
                _ => None,
            };
            (
                offset,
                slot.deliveries,
                matches!(slot.state, State::Settled(_)),
                waiting,
            )
        })
    }
}

#[cfg(test)]
impl Leases {
    /// Slots held, in the deque and among the stragglers.
    fn slots_held(&self) -> usize {
        self.slots.len() + self.stragglers.len()
    }
}

impl Slot {
    fn state_is_leased_by(&self, attempt: u32) -> bool {
        matches!(self.state, State::Leased { attempt: current, .. } if current == attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 1_000;

    fn delivered(handout: Option<Handout>) -> Option<u64> {
        match handout? {
            Handout::Deliver { offset, .. } => Some(offset),
            Handout::DeadLetter { .. } => panic!("nothing here reaches max_deliveries"),
        }
    }

    #[test]
    fn messages_still_being_written_are_counted_but_handed_out_only_once_durable() {
        let mut leases = Leases::new(10, 3);
        let offsets: Vec<u64> = (0..3)
            .map(|_| leases.push_writing(Bytes::from_static(b"m"), 0, None))
            .collect();
        assert_eq!(offsets, [10, 11, 12]);
        assert_eq!(leases.unsettled(), 3);
        assert!(!leases.is_durable(10) && !leases.is_durable(12));
        assert!(leases.is_durable(9) && leases.is_durable(13));
        assert!(!leases.has_available(0));
        assert!(leases.receive(0, LEASE).is_none());
        // The second send's fsync covers the first message too.
        assert_eq!(leases.made_durable(12, 0), 2);
        assert_eq!(leases.made_durable(11, 0), 0, "already durable");
        assert!(leases.is_durable(11) && !leases.is_durable(12));
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(10));
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(11));
        assert_eq!(delivered(leases.receive(0, LEASE)), None);
        assert_eq!(
            leases.made_durable(u64::MAX, 0),
            1,
            "bounded by the messages written"
        );
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(12));
    }

    /// A batch leased with one `receive` and then `receive_again` at the same reading hands
    /// out what as many `receive`s would: the lowest offsets first, among fresh messages,
    /// delays just over, expired and nacked leases, and a dead letter.
    #[test]
    fn a_batch_received_again_at_one_reading_matches_receives_one_by_one() {
        fn table() -> Leases {
            let mut leases = Leases::new(0, 2);
            for (offset, delay) in [(0, None), (1, Some(50)), (2, None), (3, Some(500))] {
                assert_eq!(
                    leases.push(Bytes::from_static(b"m"), 0, delay, 0, None),
                    offset
                );
            }
            // 0: leased, then its lease expires at 20; 2: leased and nacked, delivered once.
            assert_eq!(delivered(leases.receive(10, 10)), Some(0));
            assert_eq!(delivered(leases.receive(10, 10_000)), Some(2));
            leases.nack(2, 1, 10, 10).unwrap();
            for _ in 4..8 {
                leases.push(Bytes::from_static(b"m"), 10, None, 0, None);
            }
            // 8: recovered with its two deliveries made: the next receive dead-letters it.
            leases.push(Bytes::from_static(b"poison"), 10, None, 2, None);
            leases
        }
        fn handed(handout: Option<Handout>) -> Option<(u64, bool)> {
            match handout? {
                Handout::Deliver { offset, .. } => Some((offset, false)),
                Handout::DeadLetter { offset, .. } => Some((offset, true)),
            }
        }
        let now = 100;
        let mut one_by_one = table();
        let expected: Vec<_> = std::iter::from_fn(|| handed(one_by_one.receive(now, LEASE)))
            .take(20)
            .collect();
        let mut batch = table();
        let mut got = vec![handed(batch.receive(now, LEASE)).expect("a first message")];
        got.extend(std::iter::from_fn(|| handed(batch.receive_again(now, LEASE))).take(19));
        assert_eq!(got, expected);
        assert_eq!(
            expected,
            [
                (0, false),
                (1, false),
                (2, false),
                (4, false),
                (5, false),
                (6, false),
                (7, false),
                (8, true)
            ],
            "delay 3 is not over; every other message is handed out once, in offset order"
        );
    }

    #[test]
    fn a_delayed_send_made_durable_waits_for_its_delay() {
        let mut leases = Leases::new(0, 3);
        leases.push_writing(Bytes::from_static(b"later"), 0, Some(500));
        leases.push_writing(Bytes::from_static(b"now"), 0, None);
        assert_eq!(leases.made_durable(2, 100), 2);
        assert_eq!(delivered(leases.receive(100, LEASE)), Some(1));
        assert_eq!(delivered(leases.receive(100, LEASE)), None);
        assert_eq!(leases.next_due(100), Some(500));
        assert_eq!(delivered(leases.receive(500, LEASE)), Some(0));
    }

    #[test]
    fn settled_leases_behind_a_held_one_are_not_kept_until_its_deadline() {
        let year = 365 * 24 * 3600 * 1_000_000_000;
        let mut leases = Leases::new(0, 3);
        leases.push(Bytes::from_static(b"stuck"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, year)), Some(0));
        // Every later message is received and acked at once, while the first stays leased.
        for offset in 1..10_001 {
            leases.push(Bytes::from_static(b"quick"), 0, None, 0, None);
            assert_eq!(delivered(leases.receive(0, year)), Some(offset));
            leases.settle(offset, 1, Outcome::Acked).unwrap();
        }
        assert_eq!(leases.in_flight(), 1);
        assert!(
            leases.leases.len() <= 2 * leases.in_flight() + STALE_LEASE_SLACK,
            "{} lease entries kept for 1 lease held",
            leases.leases.len()
        );
        assert_eq!(
            leases.next_due(0),
            Some(year),
            "the held lease still expires"
        );
    }

    #[test]
    fn slots_behind_one_held_message_follow_the_unsettled_messages_not_the_history() {
        let hour = 3600 * 1_000_000_000;
        let mut leases = Leases::new(0, 3);
        leases.push(Bytes::from_static(b"held"), 0, Some(hour), 0, None);
        for offset in 1..100_001 {
            leases.push(Bytes::from_static(b"quick"), 0, None, 0, None);
            assert_eq!(delivered(leases.receive(0, LEASE)), Some(offset));
            leases.settle(offset, 1, Outcome::Acked).unwrap();
        }
        assert_eq!(leases.unsettled(), 1);
        assert!(
            leases.slots_held() <= 2 + STRAGGLER_SLACK,
            "{} slots held for 1 unsettled message",
            leases.slots_held()
        );
        assert_eq!(
            leases.watermark(),
            0,
            "the held message is the oldest unsettled"
        );
        assert_eq!(leases.next_offset(), 100_001);
        assert_eq!(
            leases.snapshot().next(),
            Some((0, 0, false, Some(hour))),
            "a checkpoint lists the held message first"
        );
        assert!(leases.receive(hour - 1, LEASE).is_none());
        assert_eq!(delivered(leases.receive(hour, LEASE)), Some(0));
        assert!(matches!(
            leases.settle(7, 1, Outcome::Acked),
            Err(Error::AlreadySettled { offset: 7 })
        ));
        leases.settle(0, 1, Outcome::Acked).unwrap();
        assert_eq!(leases.watermark(), 100_001, "everything is settled");
        assert_eq!(leases.slots_held(), 0);
    }

    /// Behind `held` (leased as attempt 1 at time 0 until `LEASE`), enough quick messages
    /// received and acked that `held` moves out to the stragglers.
    fn table_with_a_straggler(max_deliveries: u32) -> Leases {
        let mut leases = Leases::new(0, max_deliveries);
        leases.push(Bytes::from_static(b"held"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(0));
        for offset in 1..1_000 {
            leases.push(Bytes::from_static(b"quick"), 0, None, 0, None);
            assert_eq!(delivered(leases.receive(0, LEASE)), Some(offset));
            leases.settle(offset, 1, Outcome::Acked).unwrap();
        }
        assert_eq!(leases.stragglers.keys().copied().collect::<Vec<_>>(), [0]);
        leases
    }

    #[test]
    fn a_straggler_is_leased_refused_redelivered_and_settled_by_the_same_rules() {
        let mut leases = table_with_a_straggler(3);
        assert_eq!(leases.in_flight(), 1);
        assert_eq!(leases.oldest_enqueued_at(), Some(0));
        leases.extend(0, 1, 2 * LEASE).unwrap();
        assert!(leases.receive(2 * LEASE - 1, LEASE).is_none(), "extended");
        leases.nack(0, 1, 2 * LEASE - 1, 3 * LEASE).unwrap();
        assert!(matches!(
            leases.settle(0, 1, Outcome::Acked),
            Err(Error::NotLeased { .. })
        ));
        assert_eq!(leases.next_due(2 * LEASE), Some(3 * LEASE));
        assert_eq!(
            leases.snapshot().next(),
            Some((0, 1, false, Some(3 * LEASE)))
        );
        // The lease of attempt 2 expires and attempt 3 takes over.
        assert_eq!(delivered(leases.receive(3 * LEASE, LEASE)), Some(0));
        assert_eq!(delivered(leases.receive(4 * LEASE, LEASE)), Some(0));
        assert!(matches!(
            leases.settle(0, 2, Outcome::Acked),
            Err(Error::Redelivered { current: 3, .. })
        ));
        leases.settle(0, 3, Outcome::Terminated).unwrap();
        assert!(matches!(
            leases.settle(0, 3, Outcome::Acked),
            Err(Error::AlreadySettled { offset: 0 })
        ));
        assert_eq!(leases.watermark(), leases.next_offset());
        assert_eq!((leases.unsettled(), leases.in_flight()), (0, 0));
        assert_eq!(leases.slots_held(), leases.slots.len());
    }

    #[test]
    fn a_straggler_past_its_deliveries_is_dead_lettered_or_given_back() {
        let mut leases = table_with_a_straggler(1);
        let Some(Handout::DeadLetter {
            offset, took_over, ..
        }) = leases.receive(LEASE, LEASE)
        else {
            panic!("the expired straggler has had its one delivery");
        };
        assert_eq!((offset, took_over), (0, Some(LEASE)));
        assert!(leases.receive(LEASE, LEASE).is_none(), "out of reach");
        leases.dead_letter_failed(0, took_over);
        assert!(
            leases.settle(0, 1, Outcome::Acked).is_ok(),
            "its holder's again"
        );
        let mut leases = table_with_a_straggler(1);
        assert!(matches!(
            leases.receive(LEASE, LEASE),
            Some(Handout::DeadLetter { offset: 0, .. })
        ));
        leases.dead_lettered(0);
        assert_eq!(leases.unsettled(), 0);
        assert_eq!(leases.watermark(), leases.next_offset());
    }

    #[test]
    fn a_straggler_s_delivery_taken_back_is_not_counted() {
        let mut leases = table_with_a_straggler(3);
        let Some(Handout::Deliver {
            offset,
            attempt,
            took_over,
            ..
        }) = leases.receive(LEASE, LEASE)
        else {
            panic!("the expired straggler is delivered again");
        };
        assert_eq!((offset, attempt), (0, 2));
        leases.undeliver(0, 2, took_over);
        assert!(
            leases.settle(0, 1, Outcome::Acked).is_ok(),
            "attempt 1 holds it again"
        );
    }

    #[test]
    fn extending_one_lease_over_and_over_keeps_one_entry_per_lease() {
        let mut leases = Leases::new(0, 3);
        leases.push(Bytes::from_static(b"long job"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(0));
        for deadline in 0..10_000 {
            leases.extend(0, 1, 2 * LEASE + deadline).unwrap();
        }
        assert!(
            leases.other_leases.len() <= 2 * leases.in_flight() + STALE_LEASE_SLACK,
            "{} extension entries kept for 1 lease held",
            leases.other_leases.len()
        );
        assert!(leases.receive(2 * LEASE + 9_998, LEASE).is_none());
        assert_eq!(delivered(leases.receive(2 * LEASE + 9_999, LEASE)), Some(0));
    }

    #[test]
    fn a_message_settled_or_recovered_settled_behind_an_unsettled_one_keeps_no_payload() {
        let mut leases = Leases::new(0, 3);
        leases.push(Bytes::from_static(b"delayed"), 0, Some(LEASE), 0, None);
        leases.push(
            Bytes::from_static(b"acked"),
            0,
            None,
            1,
            Some(Outcome::Acked),
        );
        leases.push(Bytes::from_static(b"quick"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(2));
        leases.settle(2, 1, Outcome::Acked).unwrap();
        let kept: Vec<usize> = leases.slots.iter().map(|slot| slot.payload.len()).collect();
        assert_eq!(
            kept,
            [7, 0, 0],
            "only the unsettled message keeps its bytes"
        );
        // What every offset from the oldest unsettled message on still costs (the crate
        // README's figure).
        let slot = std::mem::size_of::<Slot>();
        assert!(slot <= 72, "{slot} bytes per slot");
    }

    /// A durable queue settles a dead letter only after its fsync, without the queue's lock:
    /// until then the message is out of reach of every other receive (also through a stale
    /// second `retry` entry, left by a nack of an expired lease) and of settle calls, and it
    /// is settled once.
    #[test]
    fn a_message_handed_out_to_be_dead_lettered_is_out_of_reach_until_settled() {
        let mut leases = Leases::new(0, 1);
        leases.push(Bytes::from_static(b"poison"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(0));
        // The lease runs out (the message goes to `retry`), then its holder nacks it, which
        // the expired lease still may: a second `retry` entry.
        assert!(leases.has_available(LEASE));
        leases.nack(0, 1, LEASE, LEASE).unwrap();
        let Some(Handout::DeadLetter { offset: 0, .. }) = leases.receive(LEASE, LEASE) else {
            panic!("the message is due to be dead-lettered");
        };
        assert!(
            leases.receive(LEASE, LEASE).is_none(),
            "a second receive took the message being dead-lettered"
        );
        assert!(matches!(
            leases.settle(0, 1, Outcome::Acked),
            Err(Error::NotLeased { .. })
        ));
        assert_eq!((leases.unsettled(), leases.in_flight()), (1, 0));
        leases.dead_letter_failed(0, None);
        let Some(Handout::DeadLetter { offset: 0, .. }) = leases.receive(LEASE, LEASE) else {
            panic!("a failed dead letter is handed out again");
        };
        leases.dead_lettered(0);
        assert_eq!((leases.unsettled(), leases.in_flight()), (0, 0));
        assert!(leases.receive(LEASE, LEASE).is_none());
    }

    /// A delivery taken back is not counted: the next receive hands out the same attempt.
    #[test]
    fn a_delivery_taken_back_is_not_counted() {
        let mut leases = Leases::new(0, 1);
        leases.push(Bytes::from_static(b"job"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(0));
        leases.undeliver(0, 1, None);
        assert_eq!((leases.unsettled(), leases.in_flight()), (1, 0));
        let Some(Handout::Deliver { attempt: 1, .. }) = leases.receive(0, LEASE) else {
            panic!("delivered again as attempt 1, not dead-lettered");
        };
        leases.settle(0, 1, Outcome::Acked).unwrap();
        leases.undeliver(0, 1, None);
        assert_eq!(leases.unsettled(), 0, "a settled message is not taken back");
    }

    /// Taking back a delivery that took over an expired lease gives that lease back to its
    /// holder, expired and still settleable, with the message available.
    #[test]
    fn a_delivery_taken_back_gives_the_expired_lease_it_took_over_back() {
        let mut leases = Leases::new(0, 3);
        leases.push(Bytes::from_static(b"job"), 0, None, 0, None);
        assert_eq!(delivered(leases.receive(0, LEASE)), Some(0));
        let Some(Handout::Deliver {
            attempt: 2,
            took_over: Some(LEASE),
            ..
        }) = leases.receive(LEASE, LEASE)
        else {
            panic!("attempt 2 takes over the lease that ended at LEASE");
        };
        leases.undeliver(0, 2, Some(LEASE));
        assert_eq!((leases.unsettled(), leases.in_flight()), (1, 1));
        assert!(leases.has_available(LEASE));
        leases.settle(0, 1, Outcome::Acked).unwrap();
        assert_eq!((leases.unsettled(), leases.in_flight()), (0, 0));
        assert!(leases.receive(LEASE, LEASE).is_none());
    }

    #[test]
    fn a_checkpoint_lists_a_message_still_being_written_as_a_new_one() {
        let mut leases = Leases::new(0, 3);
        leases.push_writing(Bytes::from_static(b"m"), 0, Some(500));
        assert_eq!(leases.snapshot().collect::<Vec<_>>(), [(0, 0, false, None)]);
        assert_eq!(leases.watermark(), 0);
    }
}
