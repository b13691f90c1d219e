//! Arbitrary sequences of try_send (with ids, delays, oversized payloads), try_receive, ack,
//! nack, extend, term (with real, stale and forged receipts) and clock advances on an
//! in-memory work queue agree step by step with a reference model written from the
//! documented rules: a `VecDeque` of every message, scanned front to back for the lowest
//! available offset. Checked after every step: the outcome, the refusal kind, the unsettled
//! and in-flight counts; at the end, the dead letters.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::Arbitrary;
use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, Receipt, WorkQueue};
use libfuzzer_sys::fuzz_target;

const LEASE: u64 = 8;
const MAX_DELIVERIES: u32 = 3;
const CAPACITY: usize = 5;
const WINDOW: usize = 4;
const MAX_BYTES: usize = 8;

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    Send { len: u8, id: Option<u8>, delay: u8 },
    Receive,
    Ack(u8),
    Nack(u8, u8),
    Extend(u8, u8),
    Term(u8),
    Forged { offset: u8, attempt: u8 },
    Advance(u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    Ready(u64),
    Leased(u32, u64),
    Done,
}

struct Entry {
    len: u8,
    id: Option<u8>,
    deliveries: u32,
    status: Status,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Sent(u64, bool),
    Full,
    TooLarge,
    Got(Option<(u64, u32, usize)>),
    Settled,
    Refused(&'static str),
}

#[derive(Default)]
struct Model {
    now: u64,
    messages: VecDeque<Entry>,
    dead: Vec<(u64, u32)>,
}

impl Model {
    fn unsettled(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.status != Status::Done)
            .count()
    }

    fn leased(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.status, Status::Leased(..)))
            .count()
    }

    fn send(&mut self, len: u8, id: Option<u8>, delay: u64) -> Outcome {
        if usize::from(len) > MAX_BYTES {
            return Outcome::TooLarge;
        }
        if let Some(id) = id {
            let from = self.messages.len().saturating_sub(WINDOW);
            for at in from..self.messages.len() {
                if self.messages[at].id == Some(id) {
                    return Outcome::Sent(at as u64, true);
                }
            }
        }
        if self.unsettled() >= CAPACITY {
            return Outcome::Full;
        }
        self.messages.push_back(Entry {
            len,
            id,
            deliveries: 0,
            status: Status::Ready(self.now + delay),
        });
        Outcome::Sent(self.messages.len() as u64 - 1, false)
    }

    fn receive(&mut self) -> Outcome {
        for offset in 0..self.messages.len() {
            let message = &mut self.messages[offset];
            let available = match message.status {
                Status::Ready(at) => at <= self.now,
                Status::Leased(_, until) => until <= self.now,
                Status::Done => false,
            };
            if !available {
                continue;
            }
            if message.deliveries >= MAX_DELIVERIES {
                message.status = Status::Done;
                self.dead.push((offset as u64, message.deliveries));
                // An in-memory queue keeps its latest `capacity` dead letters.
                if self.dead.len() > CAPACITY {
                    self.dead.remove(0);
                }
                continue;
            }
            message.deliveries += 1;
            message.status = Status::Leased(message.deliveries, self.now + LEASE);
            let len = usize::from(message.len);
            return Outcome::Got(Some((offset as u64, message.deliveries, len)));
        }
        Outcome::Got(None)
    }

    fn settle(&mut self, offset: u64, attempt: u32, change: Status) -> Outcome {
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
            _ if attempt < message.deliveries => Outcome::Refused("redelivered"),
            _ if attempt > message.deliveries => Outcome::Refused("unknown"),
            _ => Outcome::Refused("not leased"),
        }
    }
}

fn settled(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Settled,
        Err(Error::UnknownDelivery { .. }) => Outcome::Refused("unknown"),
        Err(Error::AlreadySettled { .. }) => Outcome::Refused("settled"),
        Err(Error::Redelivered { .. }) => Outcome::Refused("redelivered"),
        Err(Error::NotLeased { .. }) => Outcome::Refused("not leased"),
        Err(other) => panic!("unexpected refusal {other}"),
    }
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let clock = ManualClock::new();
    let options = QueueOptions::default()
        .visibility_timeout(Duration::from_secs(LEASE))
        .max_deliveries(MAX_DELIVERIES)
        .capacity(CAPACITY)
        .max_message_bytes(MAX_BYTES)
        .dedup(DedupWindow::new(WINDOW));
    let queue = WorkQueue::in_memory_with_clock(options, clock.clone()).expect("valid options");
    let mut model = Model::default();
    let mut receipts: Vec<Receipt> = Vec::new();
    for op in ops.iter().take(512) {
        let pick = |i: u8| {
            receipts
                .get(usize::from(i) % receipts.len().max(1))
                .copied()
        };
        let (got, want) = match *op {
            FuzzOp::Send { len, id, delay } => {
                let delay = u64::from(delay % 16);
                let mut message =
                    Message::new(vec![7; usize::from(len)]).delay(Duration::from_secs(delay));
                if let Some(id) = id {
                    message = message.id(vec![id]);
                }
                let got = match queue.try_send(message) {
                    Ok(sent) => Outcome::Sent(sent.offset, sent.duplicate),
                    Err(Error::Full { .. }) => Outcome::Full,
                    Err(Error::MessageTooLarge { .. }) => Outcome::TooLarge,
                    Err(other) => panic!("send failed: {other}"),
                };
                (got, model.send(len, id, delay))
            }
            FuzzOp::Receive => {
                let got = queue.try_receive().expect("in memory").map(|delivery| {
                    receipts.push(delivery.receipt());
                    (
                        delivery.offset(),
                        delivery.attempt(),
                        delivery.payload().len(),
                    )
                });
                (Outcome::Got(got), model.receive())
            }
            FuzzOp::Ack(i) | FuzzOp::Nack(i, _) | FuzzOp::Extend(i, _) | FuzzOp::Term(i) => {
                let Some(receipt) = pick(i) else { continue };
                let (offset, attempt, now) = (receipt.offset(), receipt.attempt(), model.now);
                let (got, change) = match *op {
                    FuzzOp::Nack(_, delay) => {
                        let delay = u64::from(delay % 16);
                        (
                            queue.nack(receipt, Duration::from_secs(delay)),
                            Status::Ready(now + delay),
                        )
                    }
                    FuzzOp::Extend(_, by) => {
                        let by = u64::from(by % 32);
                        (
                            queue.extend(receipt, Duration::from_secs(by)),
                            Status::Leased(attempt, now + by),
                        )
                    }
                    FuzzOp::Term(_) => (queue.term(receipt), Status::Done),
                    _ => (queue.ack(receipt), Status::Done),
                };
                (settled(got), model.settle(offset, attempt, change))
            }
            FuzzOp::Forged { offset, attempt } => {
                let (offset, attempt) = (u64::from(offset), u32::from(attempt));
                let got = settled(queue.ack(Receipt::new(offset, attempt)));
                (got, model.settle(offset, attempt, Status::Done))
            }
            FuzzOp::Advance(secs) => {
                let secs = u64::from(secs % 20);
                clock.advance(Duration::from_secs(secs));
                model.now += secs;
                continue;
            }
        };
        assert_eq!(got, want, "{op:?}");
        let stats = queue.stats();
        assert_eq!(stats.unsettled, model.unsettled(), "unsettled after {op:?}");
        assert_eq!(stats.in_flight, model.leased(), "in flight after {op:?}");
    }
    let dead: Vec<(u64, u32)> = queue
        .dead_letters(0, usize::MAX)
        .expect("in memory")
        .iter()
        .map(|letter| (letter.offset, letter.deliveries))
        .collect();
    assert_eq!(dead, model.dead);
});
