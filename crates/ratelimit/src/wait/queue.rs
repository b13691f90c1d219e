//! One line of waiters, oldest first, that a waiter can leave from anywhere cheaply.
//!
//! Callers give up all the time (a request's timeout, a client that disconnects), often many
//! at once: a line of `n` waiters whose every member is cancelled must not cost `O(n²)`.
//! Tickets grow with every arrival, so the line is sorted by ticket and a leaving waiter is
//! found by binary search; it leaves a hole (its wake-up signal dropped) instead of shifting
//! the ones behind it. Holes reaching the front are trimmed off at once, so the front is always
//! a live waiter, and the line is compacted when holes outnumber live waiters, so holes never
//! take more memory than the waiters themselves: a departure costs `O(log n)` plus `O(1)`
//! amortized.

use std::collections::VecDeque;

use infra_common::sync::Arc;
use tokio::sync::Notify;

/// The callers waiting in one line. A direct limiter has one line; a keyed limiter has one per
/// key with waiters.
#[derive(Debug, Default)]
pub(super) struct Queue {
    next_ticket: u64,
    /// By ticket, oldest first; never starts with a hole.
    slots: VecDeque<Slot>,
    /// Slots whose waiter left (`turn` is `None`).
    holes: usize,
}

/// A place in the line: its ticket, and the signal that it has reached the head, or `None`
/// once its waiter left.
#[derive(Debug)]
struct Slot {
    ticket: u64,
    turn: Option<Arc<Notify>>,
}

impl Queue {
    /// The heap memory of a line with one waiter: the smallest buffer a `VecDeque` of slots
    /// allocates holds four.
    pub(super) const FIRST_BUFFER_BYTES: usize = 4 * std::mem::size_of::<Slot>();

    /// Whether nobody waits.
    pub(super) fn is_empty(&self) -> bool {
        // The front is never a hole: a line of holes only is empty.
        self.slots.is_empty()
    }

    /// Callers waiting.
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    /// The ticket of the caller whose turn it is.
    pub(super) fn head(&self) -> Option<u64> {
        self.slots.front().map(|slot| slot.ticket)
    }

    /// Queues a caller at the back; returns its ticket.
    pub(super) fn push(&mut self, turn: Arc<Notify>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.slots.push_back(Slot {
            ticket,
            turn: Some(turn),
        });
        ticket
    }

    /// Takes back the caller just queued by [`Queue::push`] (it may not wait after all).
    pub(super) fn unpush(&mut self) {
        // The front stays what it was (or the line is empty): no hole reaches it.
        let last = self.slots.pop_back();
        debug_assert!(last.is_some_and(|slot| slot.turn.is_some()));
    }

    /// Removes the head, which has been admitted, and wakes the next.
    pub(super) fn pop_head(&mut self) {
        self.slots.pop_front();
        self.trim_front();
        self.compact_if_sparse();
        self.wake_head();
    }

    /// Removes `ticket`, whose caller gave up; wakes the next caller if it was the head.
    pub(super) fn leave(&mut self, ticket: u64) {
        let Ok(index) = self.slots.binary_search_by_key(&ticket, |slot| slot.ticket) else {
            return;
        };
        if index == 0 {
            self.pop_head();
            return;
        }
        if self.slots[index].turn.take().is_some() {
            self.holes += 1;
        }
        self.compact_if_sparse();
    }

    /// Drops every hole once they outnumber the waiters: each compaction follows as many
    /// departures as it has holes to drop, so it costs `O(1)` per departure, amortized.
    fn compact_if_sparse(&mut self) {
        if self.holes > self.len() {
            self.slots.retain(|slot| slot.turn.is_some());
            self.holes = 0;
        }
    }

    /// Drops holes from the front, so that the head is a live waiter.
    fn trim_front(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.turn.is_none()) {
            self.slots.pop_front();
            self.holes -= 1;
        }
    }

    /// Tells the caller now at the head that it is its turn, or, if it is asleep until its
    /// capacity is back, to check again (after a quota change). Only the head ever needs
    /// waking: the others cannot be served before it, so a departure wakes one waiter, not all
    /// of them.
    pub(super) fn wake_head(&self) {
        if let Some(turn) = self.slots.front().and_then(|slot| slot.turn.as_ref()) {
            // Stored as a permit if the head is not waiting yet, so the wake-up is never lost.
            turn.notify_one();
        }
    }

    /// Slots held, holes included: what the line's memory grows with.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a caller does to the line in the model test.
    #[derive(Clone, Debug)]
    enum Op {
        Push,
        /// The waiter at this position (modulo the line's length) leaves.
        Leave(usize),
        PopHead,
    }

    // `prop_oneof!` expands to std's `Arc`, which the workspace bans outside loom-aware code.
    #[allow(clippy::disallowed_types)]
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Push),
            3 => any::<usize>().prop_map(Op::Leave),
            1 => Just(Op::PopHead),
        ]
    }

    proptest! {
        /// The line against a plain vector of live tickets, where leaving removes the element:
        /// same order, same head, same length, and only a new head is woken.
        #[test]
        fn the_line_keeps_order_and_wakes_only_a_new_head(ops in prop::collection::vec(op(), 0..300)) {
            let mut queue = Queue::default();
            let mut model: Vec<(u64, Arc<Notify>)> = Vec::new();
            for op in ops {
                let head_before = model.first().map(|(ticket, _)| *ticket);
                match op {
                    Op::Push => {
                        let turn = Arc::new(Notify::new());
                        let ticket = queue.push(Arc::clone(&turn));
                        prop_assert!(model.last().is_none_or(|(last, _)| *last < ticket));
                        model.push((ticket, turn));
                    }
                    Op::Leave(at) if !model.is_empty() => {
                        let (ticket, _) = model.remove(at % model.len());
                        queue.leave(ticket);
                        // Leaving twice, or with a ticket never given, changes nothing.
                        queue.leave(ticket);
                        queue.leave(u64::MAX);
                    }
                    Op::PopHead if !model.is_empty() => {
                        model.remove(0);
                        queue.pop_head();
                    }
                    Op::Leave(_) | Op::PopHead => {}
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert_eq!(queue.is_empty(), model.is_empty());
                let head = model.first().map(|(ticket, _)| *ticket);
                prop_assert_eq!(queue.head(), head);
                prop_assert!(queue.slots() <= 2 * model.len() + 1, "holes outgrew the line");
                if let Some((_, turn)) = model.first() {
                    // A permit is stored for the head exactly when it became the head now (the
                    // check consumes it, so each wake-up is seen once).
                    let woken = has_permit(turn);
                    prop_assert_eq!(woken, head != head_before && head_before.is_some());
                }
            }
        }
    }

    /// Whether `turn` holds a stored permit (consumes it).
    fn has_permit(turn: &Notify) -> bool {
        let notified = turn.notified();
        let mut notified = std::pin::pin!(notified);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        notified.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_line_whose_waiters_all_leave_from_the_back_keeps_no_holes() {
        let mut queue = Queue::default();
        let tickets: Vec<u64> = (0..10_000)
            .map(|_| queue.push(Arc::new(Notify::new())))
            .collect();
        for ticket in tickets.iter().rev() {
            queue.leave(*ticket);
            assert!(queue.slots() <= 2 * queue.len() + 1);
        }
        assert!(queue.is_empty());
        assert_eq!(queue.slots(), 0);
    }
}
