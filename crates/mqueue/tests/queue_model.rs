//! Random operation sequences against a reference model written from the documented rules,
//! sharing no code with the queue: a `VecDeque` of every message ever sent, scanned front to
//! back. Run in memory and durably (with reopens standing in for crashes, and a journal small
//! enough to be compacted many times).
#![cfg(not(infra_loom))]

use std::collections::VecDeque;
use std::time::Duration;

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, LogOptions};
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, Receipt, WorkQueue};
use proptest::prelude::*;

const LEASE_SECS: u64 = 10;
const MAX_DELIVERIES: u32 = 3;
const CAPACITY: usize = 6;
const WINDOW: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Send {
        byte: u8,
        id: Option<u8>,
        delay: u64,
    },
    Receive,
    Ack(usize),
    Nack(usize, u64),
    Extend(usize, u64),
    Term(usize),
    Forged {
        offset: u64,
        attempt: u32,
    },
    Advance(u64),
    Reopen,
}

// `prop_oneof!` expands to a `std` `Arc`, a type the workspace clippy.toml keeps behind
// infra_common::sync; this is single-threaded test code.
#[allow(clippy::disallowed_types)]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), proptest::option::of(0..5u8), prop_oneof![Just(0), 1..30u64])
            .prop_map(|(byte, id, delay)| Op::Send { byte, id, delay }),
        5 => Just(Op::Receive),
        3 => (0..8usize).prop_map(Op::Ack),
        2 => (0..8usize, 0..20u64).prop_map(|(i, d)| Op::Nack(i, d)),
        1 => (0..8usize, 1..30u64).prop_map(|(i, d)| Op::Extend(i, d)),
        1 => (0..8usize).prop_map(Op::Term),
        1 => (0..20u64, 0..6u32).prop_map(|(offset, attempt)| Op::Forged { offset, attempt }),
        3 => (1..15u64).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Status {
    /// Available from this second on.
    Ready(u64),
    /// Held by this attempt until this second.
    Leased(u32, u64),
    Done,
}

#[derive(Debug)]
struct Entry {
    byte: u8,
    id: Option<u8>,
    deliveries: u32,
    status: Status,
}

/// The rules, as the README states them, in the plainest form.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    messages: VecDeque<Entry>,
    dead: Vec<(u64, u32, u8)>,
}

/// What an operation returned, in a form both sides produce.
#[derive(Debug, PartialEq)]
enum Outcome {
    Sent(u64, bool),
    Full,
    Got(Option<(u64, u32, u8)>),
    Settled,
    Refused(&'static str),
}

fn refusal(error: &Error) -> &'static str {
    match error {
        Error::UnknownDelivery { .. } => "unknown",
        Error::AlreadySettled { .. } => "settled",
        Error::Redelivered { .. } => "redelivered",
        Error::NotLeased { .. } => "not leased",
        other => panic!("unexpected error {other}"),
    }
}

impl Model {
    fn unsettled(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.status != Status::Done)
            .count()
    }

    fn send(&mut self, byte: u8, id: Option<u8>, delay: u64) -> Outcome {
        if let Some(id) = id {
            let start = self.messages.len().saturating_sub(WINDOW);
            if let Some(at) =
                (start..self.messages.len()).find(|&i| self.messages[i].id == Some(id))
            {
                return Outcome::Sent(at as u64, true);
            }
        }
        if self.unsettled() >= CAPACITY {
            return Outcome::Full;
        }
        self.messages.push_back(Entry {
            byte,
            id,
            deliveries: 0,
            status: Status::Ready(self.now + delay),
        });
        Outcome::Sent(self.messages.len() as u64 - 1, false)
    }

    fn receive(&mut self) -> Outcome {
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
            if message.deliveries >= MAX_DELIVERIES {
                message.status = Status::Done;
                self.dead
                    .push((offset as u64, message.deliveries, message.byte));
                continue;
            }
            message.deliveries += 1;
            message.status = Status::Leased(message.deliveries, now + LEASE_SECS);
            return Outcome::Got(Some((offset as u64, message.deliveries, message.byte)));
        }
        Outcome::Got(None)
    }

    /// Checks the receipt; on success applies `change` to the message's status.
    fn settle(&mut self, offset: u64, attempt: u32, change: Status) -> Outcome {
        let Some(message) = self.messages.get_mut(offset as usize) else {
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

    fn reopen(&mut self) {
        let now = self.now;
        for message in &mut self.messages {
            if let Status::Leased(..) = message.status {
                message.status = Status::Ready(now);
            }
        }
    }
}

fn outcome_of_send(result: Result<infra_mqueue::queue::Sent, Error>) -> Outcome {
    match result {
        Ok(sent) => Outcome::Sent(sent.offset, sent.duplicate),
        Err(Error::Full { .. }) => Outcome::Full,
        Err(other) => panic!("send failed: {other}"),
    }
}

fn outcome_of_settle(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Settled,
        Err(error) => Outcome::Refused(refusal(&error)),
    }
}

fn options() -> QueueOptions {
    QueueOptions::default()
        .visibility_timeout(Duration::from_secs(LEASE_SECS))
        .max_deliveries(MAX_DELIVERIES)
        .capacity(CAPACITY)
        .dedup(DedupWindow::new(WINDOW))
        .compact_after(16)
        .log_options(LogOptions {
            fsync: FsyncPolicy::Never,
            ..LogOptions::default()
        })
}

fn run(ops: &[Op], durable: bool) {
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        if durable {
            WorkQueue::open_with_clock(dir.path(), options(), clock.clone()).unwrap()
        } else {
            WorkQueue::in_memory_with_clock(options(), clock.clone()).unwrap()
        }
    };
    let mut queue = open();
    let mut model = Model::default();
    // Receipts handed out so far; settle ops pick one by index (stale ones included).
    let mut receipts: Vec<Receipt> = Vec::new();
    let pick = |receipts: &Vec<Receipt>, i: usize| receipts.get(i % receipts.len().max(1)).copied();
    for (step, op) in ops.iter().enumerate() {
        let (got, want) = match *op {
            Op::Send { byte, id, delay } => {
                let mut message = Message::new(vec![byte]).delay(Duration::from_secs(delay));
                if let Some(id) = id {
                    message = message.id(vec![b'k', id]);
                }
                (
                    outcome_of_send(queue.try_send(message)),
                    model.send(byte, id, delay),
                )
            }
            Op::Receive => {
                let got = queue.try_receive().unwrap().map(|d| {
                    receipts.push(d.receipt());
                    (d.offset(), d.attempt(), d.payload()[0])
                });
                (Outcome::Got(got), model.receive())
            }
            Op::Ack(i) | Op::Nack(i, _) | Op::Extend(i, _) | Op::Term(i) => {
                let Some(receipt) = pick(&receipts, i) else {
                    continue;
                };
                let (offset, attempt) = (receipt.offset(), receipt.attempt());
                let now = model.now;
                let (got, change) = match *op {
                    Op::Ack(_) => (queue.ack(receipt), Status::Done),
                    Op::Term(_) => (queue.term(receipt), Status::Done),
                    Op::Nack(_, delay) => (
                        queue.nack(receipt, Duration::from_secs(delay)),
                        Status::Ready(now + delay),
                    ),
                    Op::Extend(_, by) => (
                        queue.extend(receipt, Duration::from_secs(by)),
                        Status::Leased(attempt, now + by),
                    ),
                    _ => unreachable!("matched above"),
                };
                (
                    outcome_of_settle(got),
                    model.settle(offset, attempt, change),
                )
            }
            Op::Forged { offset, attempt } => {
                let got = outcome_of_settle(queue.ack(Receipt::new(offset, attempt)));
                (got, model.settle(offset, attempt, Status::Done))
            }
            Op::Advance(secs) => {
                clock.advance(Duration::from_secs(secs));
                model.now += secs;
                continue;
            }
            Op::Reopen => {
                if !durable {
                    continue;
                }
                drop(queue);
                queue = open();
                model.reopen();
                continue;
            }
        };
        assert_eq!(got, want, "step {step}: {op:?}");
        let stats = queue.stats();
        assert_eq!(stats.unsettled, model.unsettled(), "step {step}: unsettled");
        let leased = model
            .messages
            .iter()
            .filter(|m| matches!(m.status, Status::Leased(..)))
            .count();
        assert_eq!(stats.in_flight, leased, "step {step}: in flight");
    }
    let dead: Vec<(u64, u32, u8)> = queue
        .dead_letters(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|letter| (letter.offset, letter.deliveries, letter.payload[0]))
        .collect();
    // An in-memory queue keeps its latest `capacity` dead letters; a durable one keeps all.
    let kept = if durable {
        &model.dead[..]
    } else {
        &model.dead[model.dead.len().saturating_sub(CAPACITY)..]
    };
    assert_eq!(dead, kept);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_memory_queue_follows_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_durable_queue_follows_the_model_across_reopens(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops, true);
    }
}
