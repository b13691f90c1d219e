//! Arbitrary sequences of try_send (with ids, delays, oversized payloads), try_receive, ack,
//! nack, extend, term (with real, stale and forged receipts), their batch forms (send_many
//! within the room left, try_receive_many, ack_many) and clock advances on an
//! in-memory work queue agree step by step with the reference model the crate's property
//! tests use (crates/mqueue/tests/support/model.rs, written from the documented rules: a
//! `VecDeque` of every message, scanned front to back for the lowest available offset).
//! Checked after every step: the outcome, the refusal kind, the unsettled and in-flight
//! counts; at the end, the dead letters.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use arbitrary::Arbitrary;
use infra_common::ManualClock;
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, Receipt, WorkQueue};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/mqueue/tests/support/model.rs"]
mod model;
use model::{Model, Outcome, Rules, Status, outcome_of_send, outcome_of_settle};

const LEASE: u64 = 8;
const MAX_DELIVERIES: u32 = 3;
const CAPACITY: usize = 5;
const WINDOW: usize = 4;
const MAX_BYTES: usize = 8;

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    Send { len: u8, id: Option<u8>, delay: u8 },
    Receive,
    ReceiveMany(u8),
    Ack(u8),
    AckMany(Vec<u8>),
    SendMany(Vec<(u8, Option<u8>, u8)>),
    Nack(u8, u8),
    Extend(u8, u8),
    Term(u8),
    Forged { offset: u8, attempt: u8 },
    Advance(u8),
}

/// A send's message from fuzz bytes, its payload and its delay in seconds, as the model takes
/// them.
fn message(len: u8, id: Option<u8>, delay: u8) -> (Message, Vec<u8>, u64) {
    let delay = u64::from(delay % 16);
    let payload = vec![7; usize::from(len)];
    let mut message = Message::new(payload.clone()).delay(Duration::from_secs(delay));
    if let Some(id) = id {
        message = message.id(vec![id]);
    }
    (message, payload, delay)
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
    let mut model = Model::new(Rules {
        lease: LEASE,
        max_deliveries: MAX_DELIVERIES,
        capacity: CAPACITY,
        window: WINDOW,
        max_bytes: MAX_BYTES,
    });
    let mut receipts: Vec<Receipt> = Vec::new();
    for op in ops.iter().take(512) {
        let pick = |i: u8| {
            receipts
                .get(usize::from(i) % receipts.len().max(1))
                .copied()
        };
        let (got, want) = match *op {
            FuzzOp::Send { len, id, delay } => {
                let (message, payload, delay) = message(len, id, delay);
                let got = outcome_of_send(queue.try_send(message));
                (vec![got], vec![model.send(payload, id, delay)])
            }
            FuzzOp::SendMany(ref batch) => {
                // No more than the room left, so that the batch never waits.
                let room = CAPACITY - model.unsettled();
                let batch = &batch[..batch.len().min(room)];
                let messages = batch
                    .iter()
                    .map(|&(len, id, delay)| message(len, id, delay).0);
                let got = queue.send_many(messages.collect::<Vec<_>>());
                let want = batch.iter().map(|&(len, id, delay)| {
                    let (_, payload, delay) = message(len, id, delay);
                    model.send(payload, id, delay)
                });
                let want: Vec<Outcome> = want.collect();
                (got.into_iter().map(outcome_of_send).collect(), want)
            }
            FuzzOp::ReceiveMany(max) => {
                let max = usize::from(max % 8);
                let batch = queue.try_receive_many(max).expect("in memory");
                let got = batch.iter().map(|delivery| {
                    receipts.push(delivery.receipt());
                    let payload = delivery.payload().to_vec();
                    Outcome::Got(Some((delivery.offset(), delivery.attempt(), payload)))
                });
                let got: Vec<Outcome> = got.collect();
                let mut want = Vec::new();
                while want.len() < max {
                    match model.receive() {
                        Outcome::Got(None) => break,
                        outcome => want.push(outcome),
                    }
                }
                (got, want)
            }
            FuzzOp::AckMany(ref picks) => {
                let batch: Vec<Receipt> = picks.iter().filter_map(|&i| pick(i)).collect();
                let got = queue.ack_many(batch.iter().copied());
                let want = batch
                    .iter()
                    .map(|r| model.settle(r.offset(), r.attempt(), Status::Done));
                let want: Vec<Outcome> = want.collect();
                (got.into_iter().map(outcome_of_settle).collect(), want)
            }
            FuzzOp::Receive => {
                let got = queue.try_receive().expect("in memory").map(|delivery| {
                    receipts.push(delivery.receipt());
                    (
                        delivery.offset(),
                        delivery.attempt(),
                        delivery.payload().to_vec(),
                    )
                });
                (vec![Outcome::Got(got)], vec![model.receive()])
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
                (
                    vec![outcome_of_settle(got)],
                    vec![model.settle(offset, attempt, change)],
                )
            }
            FuzzOp::Forged { offset, attempt } => {
                let (offset, attempt) = (u64::from(offset), u32::from(attempt));
                let got = outcome_of_settle(queue.ack(Receipt::new(offset, attempt)));
                (vec![got], vec![model.settle(offset, attempt, Status::Done)])
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
    let dead: Vec<(u64, u32, Vec<u8>)> = queue
        .dead_letters(0, usize::MAX)
        .expect("in memory")
        .iter()
        .map(|letter| (letter.offset, letter.deliveries, letter.payload.to_vec()))
        .collect();
    // An in-memory queue keeps its latest `capacity` dead letters.
    assert_eq!(
        dead,
        model.dead[model.dead.len().saturating_sub(CAPACITY)..]
    );
});
