//! Random operation sequences against the reference model of `support/model.rs`, written from
//! the documented rules and sharing no code with the queue: a `VecDeque` of every message ever
//! sent, scanned front to back. Run in memory and durably (with reopens standing in for
//! crashes, and a journal small enough to be compacted many times).
#![cfg(not(infra_loom))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_mqueue::log::{FsyncPolicy, LogOptions};
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, Receipt, WorkQueue};
use proptest::prelude::*;

#[path = "support/model.rs"]
mod model;
use model::{Model, Outcome, Rules, Status, outcome_of_send, outcome_of_settle};

const LEASE_SECS: u64 = 10;
const MAX_DELIVERIES: u32 = 3;
const CAPACITY: usize = 6;
const WINDOW: usize = 3;
const MAX_BYTES: usize = 64;

#[derive(Clone, Debug)]
enum Op {
    Send {
        byte: u8,
        id: Option<u8>,
        delay: u64,
    },
    /// `send_many` of no more messages than the room left (so it never waits).
    SendMany(Vec<(u8, Option<u8>, u64)>),
    Receive,
    /// `try_receive_many(max)`: the model receives up to `max` times in a row.
    ReceiveMany(usize),
    Ack(usize),
    /// `ack_many` of the receipts picked by these indices, in order.
    AckMany(Vec<usize>),
    Nack(usize, u64),
    Extend(usize, u64),
    Term(usize),
    Forged {
        offset: u64,
        attempt: u32,
    },
    Advance(u64),
    Reopen,
    /// This many messages sent, received and acked one after another: enough settled ones
    /// behind any message left unsettled that the queue moves it out of the lease table's
    /// front (a straggler), which no other op sequence of this length reaches.
    Burst(usize),
}

// `prop_oneof!` expands to a `std` `Arc`, a type the workspace clippy.toml keeps behind
// infra_common::sync; this is single-threaded test code.
#[allow(clippy::disallowed_types)]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), proptest::option::of(0..5u8), prop_oneof![Just(0), 1..30u64])
            .prop_map(|(byte, id, delay)| Op::Send { byte, id, delay }),
        2 => proptest::collection::vec((any::<u8>(), proptest::option::of(0..5u8), prop_oneof![Just(0), 1..30u64]), 0..5)
            .prop_map(Op::SendMany),
        5 => Just(Op::Receive),
        2 => (0..5usize).prop_map(Op::ReceiveMany),
        3 => (0..8usize).prop_map(Op::Ack),
        1 => proptest::collection::vec(0..8usize, 0..4).prop_map(Op::AckMany),
        2 => (0..8usize, 0..20u64).prop_map(|(i, d)| Op::Nack(i, d)),
        1 => (0..8usize, 1..30u64).prop_map(|(i, d)| Op::Extend(i, d)),
        1 => (0..8usize).prop_map(Op::Term),
        1 => (0..20u64, 0..6u32).prop_map(|(offset, attempt)| Op::Forged { offset, attempt }),
        3 => (1..15u64).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

// As `op`, with the occasional burst of round trips.
#[allow(clippy::disallowed_types)]
fn op_or_burst() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => op(),
        1 => (70..150usize).prop_map(Op::Burst),
    ]
}

fn rules() -> Rules {
    Rules {
        lease: LEASE_SECS,
        max_deliveries: MAX_DELIVERIES,
        capacity: CAPACITY,
        window: WINDOW,
        max_bytes: MAX_BYTES,
    }
}

/// What a restart does to the model: leases do not survive it.
fn reopen(model: &mut Model) {
    let now = model.now;
    for message in &mut model.messages {
        if let Status::Leased(..) = message.status {
            message.status = Status::Ready(now);
        }
    }
}

fn options() -> QueueOptions {
    QueueOptions::default()
        .visibility_timeout(Duration::from_secs(LEASE_SECS))
        .max_deliveries(MAX_DELIVERIES)
        .capacity(CAPACITY)
        .dedup(DedupWindow::new(WINDOW))
        .max_message_bytes(MAX_BYTES)
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
    let mut model = Model::new(rules());
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
                    vec![outcome_of_send(queue.try_send(message))],
                    vec![model.send(vec![byte], id, delay)],
                )
            }
            Op::SendMany(ref batch) => {
                let batch = &batch[..batch.len().min(CAPACITY - model.unsettled())];
                let message = |&(byte, id, delay): &(u8, Option<u8>, u64)| {
                    let message = Message::new(vec![byte]).delay(Duration::from_secs(delay));
                    match id {
                        Some(id) => message.id(vec![b'k', id]),
                        None => message,
                    }
                };
                let got = queue.send_many(batch.iter().map(message).collect::<Vec<_>>());
                let want = batch
                    .iter()
                    .map(|&(byte, id, delay)| model.send(vec![byte], id, delay));
                (
                    got.into_iter().map(outcome_of_send).collect(),
                    want.collect(),
                )
            }
            Op::Receive => {
                let got = queue.try_receive().unwrap().map(|d| {
                    receipts.push(d.receipt());
                    (d.offset(), d.attempt(), d.payload().to_vec())
                });
                (vec![Outcome::Got(got)], vec![model.receive()])
            }
            Op::ReceiveMany(max) => {
                let got = queue.try_receive_many(max).unwrap();
                let got = got.into_iter().map(|d| {
                    receipts.push(d.receipt());
                    Outcome::Got(Some((d.offset(), d.attempt(), d.payload().to_vec())))
                });
                let mut want = Vec::new();
                while want.len() < max {
                    match model.receive() {
                        Outcome::Got(None) => break,
                        outcome => want.push(outcome),
                    }
                }
                (got.collect(), want)
            }
            Op::AckMany(ref picks) => {
                let batch: Vec<Receipt> =
                    picks.iter().filter_map(|&i| pick(&receipts, i)).collect();
                let got = queue.ack_many(batch.iter().copied());
                let want = batch
                    .iter()
                    .map(|r| model.settle(r.offset(), r.attempt(), Status::Done));
                (
                    got.into_iter().map(outcome_of_settle).collect(),
                    want.collect(),
                )
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
                    vec![outcome_of_settle(got)],
                    vec![model.settle(offset, attempt, change)],
                )
            }
            Op::Forged { offset, attempt } => {
                let got = outcome_of_settle(queue.ack(Receipt::new(offset, attempt)));
                (vec![got], vec![model.settle(offset, attempt, Status::Done)])
            }
            Op::Advance(secs) => {
                clock.advance(Duration::from_secs(secs));
                model.now += secs;
                continue;
            }
            Op::Burst(round_trips) => {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                for _ in 0..round_trips {
                    got.push(outcome_of_send(queue.try_send(vec![0xb0])));
                    want.push(model.send(vec![0xb0], None, 0));
                    let delivery = queue.try_receive().unwrap();
                    got.push(Outcome::Got(
                        delivery
                            .as_ref()
                            .map(|d| (d.offset(), d.attempt(), d.payload().to_vec())),
                    ));
                    want.push(model.receive());
                    if let Some(d) = delivery {
                        got.push(outcome_of_settle(queue.ack(&d)));
                        want.push(model.settle(d.offset(), d.attempt(), Status::Done));
                    }
                }
                (got, want)
            }
            Op::Reopen => {
                if !durable {
                    continue;
                }
                drop(queue);
                queue = open();
                reopen(&mut model);
                continue;
            }
        };
        assert_eq!(got, want, "step {step}: {op:?}");
        let stats = queue.stats();
        assert_eq!(stats.unsettled, model.unsettled(), "step {step}: unsettled");
        assert_eq!(stats.in_flight, model.leased(), "step {step}: in flight");
    }
    let dead: Vec<(u64, u32, Vec<u8>)> = queue
        .dead_letters(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|letter| (letter.offset, letter.deliveries, letter.payload.to_vec()))
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_memory_queue_follows_the_model_behind_stragglers(ops in proptest::collection::vec(op_or_burst(), 1..80)) {
        run(&ops, false);
    }
}

proptest! {
    // Each burst compacts the journal (every 16 records) a dozen times, each with its fsyncs.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn the_durable_queue_follows_the_model_behind_stragglers(ops in proptest::collection::vec(op_or_burst(), 1..60)) {
        run(&ops, true);
    }
}
