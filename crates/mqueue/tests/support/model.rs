//! The work queue's reference model, written from the documented rules in the plainest form
//! and sharing no code with the queue: a `VecDeque` of every message ever sent, scanned front
//! to back for the lowest available offset. One copy, used by the property tests
//! (`tests/queue_model.rs`) and by the fuzz target `mqueue_ops` (through `#[path]`).

use std::collections::VecDeque;

use infra_mqueue::Error;
use infra_mqueue::queue::Sent;

/// The options the queue under test was built with, in the model's units (seconds, messages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// The visibility timeout, in seconds.
    pub(crate) lease: u64,
    pub(crate) max_deliveries: u32,
    /// Unsettled messages held before a send is refused.
    pub(crate) capacity: usize,
    /// How many of the latest messages' ids are remembered.
    pub(crate) window: usize,
    pub(crate) max_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Status {
    /// Available from this second on.
    Ready(u64),
    /// Held by this attempt until this second.
    Leased(u32, u64),
    Done,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) payload: Vec<u8>,
    pub(crate) id: Option<u8>,
    pub(crate) deliveries: u32,
    pub(crate) status: Status,
}

/// What an operation returned, in a form both the queue and the model produce.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Sent(u64, bool),
    Full,
    TooLarge,
    /// Offset, attempt, payload.
    Got(Option<(u64, u32, Vec<u8>)>),
    Settled,
    Refused(&'static str),
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) rules: Rules,
    /// Seconds since the start.
    pub(crate) now: u64,
    pub(crate) messages: VecDeque<Entry>,
    /// Every dead letter: offset, deliveries, payload.
    pub(crate) dead: Vec<(u64, u32, Vec<u8>)>,
}

impl Model {
    pub(crate) fn new(rules: Rules) -> Self {
        Self {
            rules,
            now: 0,
            messages: VecDeque::new(),
            dead: Vec::new(),
        }
    }

    pub(crate) fn unsettled(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.status != Status::Done)
            .count()
    }

    pub(crate) fn leased(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.status, Status::Leased(..)))
            .count()
    }

    pub(crate) fn send(&mut self, payload: Vec<u8>, id: Option<u8>, delay: u64) -> Outcome {
        if payload.len() > self.rules.max_bytes {
            return Outcome::TooLarge;
        }
        if let Some(id) = id {
            let start = self.messages.len().saturating_sub(self.rules.window);
            if let Some(at) =
                (start..self.messages.len()).find(|&i| self.messages[i].id == Some(id))
            {
                return Outcome::Sent(at as u64, true);
            }
        }
        if self.unsettled() >= self.rules.capacity {
            return Outcome::Full;
        }
        self.messages.push_back(Entry {
            payload,
            id,
            deliveries: 0,
            status: Status::Ready(self.now + delay),
        });
        Outcome::Sent(self.messages.len() as u64 - 1, false)
    }

    pub(crate) fn receive(&mut self) -> Outcome {
        let now = self.now;
        for (offset, message) in self.messages.iter_mut().enumerate() {
            let available = match message.status {
                Status::Ready(from) => from <= now,
                Status::Leased(_, until) => until <= now,
                Status::Done => false,
            };
            if !available {
                continue;
            }
            if message.deliveries >= self.rules.max_deliveries {
                message.status = Status::Done;
                self.dead
                    .push((offset as u64, message.deliveries, message.payload.clone()));
                continue;
            }
            message.deliveries += 1;
            message.status = Status::Leased(message.deliveries, now + self.rules.lease);
            return Outcome::Got(Some((
                offset as u64,
                message.deliveries,
                message.payload.clone(),
            )));
        }
        Outcome::Got(None)
    }

    /// Checks the receipt; on success applies `change` to the message's status.
    pub(crate) fn settle(&mut self, offset: u64, attempt: u32, change: Status) -> Outcome {
        let Some(message) = usize::try_from(offset)
            .ok()
            .and_then(|at| self.messages.get_mut(at))
        else {
            return Outcome::Refused("unknown");
        };
        match message.status {
            Status::Done => Outcome::Refused("settled"),
            Status::Leased(holder, _) if holder == attempt => {
                message.status = change;
                Outcome::Settled
            }
            _ if attempt == 0 || attempt > message.deliveries => Outcome::Refused("unknown"),
            _ if attempt < message.deliveries => Outcome::Refused("redelivered"),
            _ => Outcome::Refused("not leased"),
        }
    }
}

/// A queue's answer to a send, as an [`Outcome`].
pub(crate) fn outcome_of_send(result: Result<Sent, Error>) -> Outcome {
    match result {
        Ok(sent) => Outcome::Sent(sent.offset, sent.duplicate),
        Err(Error::Full { .. }) => Outcome::Full,
        Err(Error::MessageTooLarge { .. }) => Outcome::TooLarge,
        Err(other) => panic!("send failed: {other}"),
    }
}

/// A queue's answer to a settle call, as an [`Outcome`].
pub(crate) fn outcome_of_settle(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Settled,
        Err(Error::UnknownDelivery { .. }) => Outcome::Refused("unknown"),
        Err(Error::AlreadySettled { .. }) => Outcome::Refused("settled"),
        Err(Error::Redelivered { .. }) => Outcome::Refused("redelivered"),
        Err(Error::NotLeased { .. }) => Outcome::Refused("not leased"),
        Err(other) => panic!("unexpected refusal {other}"),
    }
}
