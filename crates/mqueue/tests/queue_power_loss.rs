//! Power loss under a durable work queue: after a simulated power cut at any point and a
//! reopen, every message whose `send` returned is still there (delivered or deliverable),
//! every message whose `ack` or `term` returned is never delivered again, delivery counts
//! carry on where they were and the dead letters written before the cut are all kept.
//!
//! The queue runs on a simulated disk that drops everything not fsynced; every step is
//! checked against a reference model of the queue's documented semantics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use infra_common::ManualClock;
use infra_mqueue::log::{FsyncPolicy, LogOptions, SimulatedStorage};
use infra_mqueue::queue::{QueueOptions, Receipt, WorkQueue};
use proptest::prelude::*;

#[path = "support/failing_storage.rs"]
mod failing_storage;

use failing_storage::FailingDirSyncs;

const VISIBILITY: Duration = Duration::from_secs(10);
const MAX_DELIVERIES: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Send(Vec<u8>),
    Receive,
    /// Settles the receipt at this index (modulo how many the test holds).
    Ack(usize),
    Term(usize),
    Nack(usize),
    /// Moves the clock past every lease.
    Expire,
    /// Power cut keeping this many unsynced bytes per file (a torn write), then a reopen.
    PowerCut(usize),
    /// A clean close and reopen.
    Reopen,
}

#[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Op::Send),
        5 => Just(Op::Receive),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Term),
        2 => any::<usize>().prop_map(Op::Nack),
        2 => Just(Op::Expire),
        2 => (0usize..64).prop_map(Op::PowerCut),
        1 => Just(Op::Reopen),
    ]
}

/// Where one message stands in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Waiting for a receive (never delivered, given back, or its lease was lost).
    Ready,
    /// Leased as this attempt; `expired` once the clock passed the lease.
    Leased { attempt: u32, expired: bool },
    /// Acked, terminated or dead-lettered: never delivered again.
    Settled,
}

#[derive(Debug)]
struct Entry {
    payload: Vec<u8>,
    deliveries: u32,
    status: Status,
}

/// The reference model: messages by offset and the dead letters in the order written.
#[derive(Debug, Default)]
struct Model {
    messages: BTreeMap<u64, Entry>,
    dead: Vec<(u64, u32, Vec<u8>)>,
}

impl Model {
    /// What the next receive does: dead-letters every ready message at the front that used
    /// up its deliveries, then delivers the lowest-offset ready one (or nothing).
    fn receive(&mut self) -> Option<(u64, u32, Vec<u8>)> {
        let ready: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, entry)| {
                matches!(
                    entry.status,
                    Status::Ready | Status::Leased { expired: true, .. }
                )
            })
            .map(|(&offset, _)| offset)
            .collect();
        for offset in ready {
            let entry = self.messages.get_mut(&offset).expect("listed");
            if entry.deliveries >= MAX_DELIVERIES {
                entry.status = Status::Settled;
                self.dead
                    .push((offset, entry.deliveries, entry.payload.clone()));
                continue;
            }
            entry.deliveries += 1;
            entry.status = Status::Leased {
                attempt: entry.deliveries,
                expired: false,
            };
            return Some((offset, entry.deliveries, entry.payload.clone()));
        }
        None
    }

    /// Whether a settle call with `receipt` is accepted (and if so, what it leaves).
    fn settle(&mut self, receipt: Receipt, then: Status) -> bool {
        let Some(entry) = self.messages.get_mut(&receipt.offset()) else {
            return false;
        };
        match entry.status {
            Status::Leased { attempt, .. } if attempt == receipt.attempt() => {
                entry.status = then;
                true
            }
            _ => false,
        }
    }

    /// A restart: leases are gone, everything else stays.
    fn restart(&mut self) {
        for entry in self.messages.values_mut() {
            if matches!(entry.status, Status::Leased { .. }) {
                entry.status = Status::Ready;
            }
        }
    }

    fn unsettled(&self) -> usize {
        self.messages
            .values()
            .filter(|entry| entry.status != Status::Settled)
            .count()
    }
}

fn open(disk: &SimulatedStorage, clock: &ManualClock) -> WorkQueue {
    let log = LogOptions {
        // Small segments: the cuts also land around segment rolls.
        segment_bytes: 256,
        ..LogOptions::default()
    };
    let options = QueueOptions::default()
        .visibility_timeout(VISIBILITY)
        .max_deliveries(MAX_DELIVERIES)
        // The smallest allowed: the cuts also land around journal compactions.
        .compact_after(16)
        .log_options(log);
    WorkQueue::open_with(Path::new("/queue"), options, clock.clone(), disk.clone()).unwrap()
}

/// Opens the queue at `/queue` on `disk` with `options` and the fsync policy `Never`.
fn open_under_never(
    disk: &SimulatedStorage,
    clock: &ManualClock,
    options: QueueOptions,
) -> WorkQueue {
    let never = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    WorkQueue::open_with(
        Path::new("/queue"),
        options.log_options(never),
        clock.clone(),
        disk.clone(),
    )
    .unwrap()
}

/// Checks what a reopened queue reports against the model.
fn check_reopened(queue: &WorkQueue, model: &Model) {
    let stats = queue.stats();
    assert_eq!(stats.unsettled, model.unsettled(), "unsettled count");
    assert_eq!(stats.in_flight, 0, "leases do not survive a restart");
    let next = model.messages.keys().next_back().map_or(0, |last| last + 1);
    assert_eq!(stats.next_offset, next, "a sent message went missing");
    let dead: Vec<(u64, u32, Vec<u8>)> = queue
        .dead_letters(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|letter| (letter.offset, letter.deliveries, letter.payload.to_vec()))
        .collect();
    assert_eq!(dead, model.dead, "dead letters");
}

fn run(ops: &[Op]) {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let mut queue = open(&disk, &clock);
    let mut model = Model::default();
    let mut receipts: Vec<Receipt> = Vec::new();
    let pick = |receipts: &[Receipt], at: usize| receipts.get(at % receipts.len().max(1)).copied();
    let ops = ops.iter().chain([Op::PowerCut(0)].iter());
    for op in ops {
        match op {
            Op::Send(payload) => {
                let sent = queue.send(payload.clone()).unwrap();
                let offset = model.messages.keys().next_back().map_or(0, |last| last + 1);
                assert_eq!(sent.offset, offset);
                model.messages.insert(
                    offset,
                    Entry {
                        payload: payload.clone(),
                        deliveries: 0,
                        status: Status::Ready,
                    },
                );
            }
            Op::Receive => {
                let got = queue.try_receive().unwrap();
                let got = got.map(|d| (d.offset(), d.attempt(), d.payload().to_vec()));
                assert_eq!(got, model.receive(), "receive");
                if let Some((offset, attempt, _)) = got {
                    receipts.push(Receipt::new(offset, attempt));
                }
            }
            Op::Ack(at) | Op::Term(at) | Op::Nack(at) => {
                let Some(receipt) = pick(&receipts, *at) else {
                    continue;
                };
                let (result, then) = match op {
                    Op::Ack(_) => (queue.ack(receipt), Status::Settled),
                    Op::Term(_) => (queue.term(receipt), Status::Settled),
                    _ => (queue.nack(receipt, Duration::ZERO), Status::Ready),
                };
                let accepted = model.settle(receipt, then);
                assert_eq!(result.is_ok(), accepted, "{op:?} {receipt:?}: {result:?}");
            }
            Op::Expire => {
                clock.advance(VISIBILITY + Duration::from_secs(1));
                for entry in model.messages.values_mut() {
                    if let Status::Leased { expired, .. } = &mut entry.status {
                        *expired = true;
                    }
                }
            }
            Op::PowerCut(keep) => {
                drop(queue);
                disk.power_cut_keeping(*keep);
                queue = open(&disk, &clock);
                model.restart();
                check_reopened(&queue, &model);
            }
            Op::Reopen => {
                drop(queue);
                queue = open(&disk, &clock);
                model.restart();
                check_reopened(&queue, &model);
            }
        }
    }
    // After the final cut, drain: every unsettled message comes out (or is dead-lettered)
    // exactly as the model says, and nothing settled ever does.
    loop {
        let got = queue.try_receive().unwrap();
        let got = got.map(|d| (d.offset(), d.attempt(), d.payload().to_vec()));
        let want = model.receive();
        assert_eq!(got, want, "drain");
        let Some((offset, attempt, _)) = got else {
            break;
        };
        queue.ack(Receipt::new(offset, attempt)).unwrap();
        assert!(model.settle(Receipt::new(offset, attempt), Status::Settled));
    }
    assert_eq!(queue.stats().unsettled, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn nothing_acknowledged_is_lost_or_redelivered(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

#[test]
fn a_cut_during_compaction_keeps_the_settled_settled() {
    // Enough settles to compact the journal several times, a cut after each step.
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.extend([Op::Send(vec![i]), Op::Receive, Op::Ack(usize::MAX)]);
        if i % 3 == 0 {
            ops.push(Op::PowerCut(0));
        }
    }
    run(&ops);
}

#[test]
fn a_message_sent_after_a_power_loss_under_never_is_delivered_after_a_restart() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let open = || open_under_never(&disk, &clock, QueueOptions::default().compact_after(16));
    let queue = open();
    // Enough receives and acks to compact the journal, which syncs its checkpoint; the
    // message log is never synced.
    for i in 0..20u8 {
        queue.send(vec![i]).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
    }
    drop(queue);
    // The messages go (under `Never` a power loss takes everything since the log's open);
    // the journal's checkpoint stays.
    disk.power_cut();
    let queue = open();
    assert_eq!(queue.stats().unsettled, 0);
    queue.send(b"after the cut".as_slice()).unwrap();
    drop(queue);
    // A clean restart loses nothing.
    let queue = open();
    assert_eq!(queue.stats().unsettled, 1);
    let delivery = queue
        .try_receive()
        .unwrap()
        .expect("the message sent after the cut");
    assert_eq!(delivery.payload(), b"after the cut");
    queue.ack(&delivery).unwrap();
    drop(queue);
    assert_eq!(open().stats().unsettled, 0);
}

/// What the README says `Never` (and `Interval`, between fsyncs) gives up besides messages: a
/// power loss takes back the journal's record of a delivery, so the delivery is made again
/// under the same attempt number, and a receipt from before the loss settles it.
#[test]
fn a_power_loss_under_never_makes_a_delivery_again_under_the_same_attempt() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let open = || open_under_never(&disk, &clock, QueueOptions::default());
    let queue = open();
    queue.send(b"job".as_slice()).unwrap();
    drop(queue);
    // The open syncs what its logs hold, the message included.
    let queue = open();
    let before = queue
        .try_receive()
        .unwrap()
        .expect("the message, made durable");
    assert_eq!(before.attempt(), 1);
    drop(queue);
    disk.power_cut();
    let queue = open();
    let again = queue.try_receive().unwrap().expect("the message again");
    assert_eq!(
        again.attempt(),
        1,
        "the record of the first delivery was lost"
    );
    queue.ack(&before).unwrap();
    assert_eq!(
        queue.stats().unsettled,
        0,
        "the receipt from before settled it"
    );
}

#[test]
fn acks_that_returned_after_a_failed_compaction_survive_a_power_cut() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let open = |storage: FailingDirSyncs| {
        let options = QueueOptions::default()
            .visibility_timeout(VISIBILITY)
            .compact_after(16);
        WorkQueue::open_with(Path::new("/queue"), options, clock.clone(), storage).unwrap()
    };
    let failing = FailingDirSyncs::over(disk.clone());
    let queue = open(failing.clone());
    for n in 0..10u8 {
        queue.send(vec![n]).unwrap();
    }
    let mut acked = Vec::new();
    // Seven receives and acks: 14 journal records, two short of a compaction.
    for _ in 0..7 {
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
        acked.push(delivery.payload()[0]);
    }
    // The disk fails right after the compaction renames the JOURNAL pointer, so the rename
    // may not survive a power cut; calls may fail from then on, but what returned must hold.
    failing.fail_after_next_rename();
    for _ in 0..3 {
        if let Ok(Some(delivery)) = queue.try_receive()
            && queue.ack(&delivery).is_ok()
        {
            acked.push(delivery.payload()[0]);
        }
    }
    drop(queue);
    disk.power_cut();
    let queue = open(FailingDirSyncs::over(disk.clone()));
    while let Some(delivery) = queue.try_receive().unwrap() {
        let payload = delivery.payload()[0];
        assert!(!acked.contains(&payload), "acked {payload} came back");
        queue.ack(&delivery).unwrap();
    }
}

/// Under `Never` the dead-letter log is written without an fsync, and a compaction syncs a
/// checkpoint that counts a dead-lettered message settled (and may delete its segment): a
/// message that was on disk must still be in the queue or in its dead letters after a power
/// cut, never in neither.
#[test]
fn a_message_dead_lettered_before_a_compaction_survives_a_power_cut_under_never() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let options = QueueOptions::default()
        .visibility_timeout(VISIBILITY)
        .max_deliveries(1)
        .compact_after(16);
    let open = || open_under_never(&disk, &clock, options.clone());
    open().send("poison").unwrap();
    // The open syncs the message log: "poison" is on disk from here on.
    let queue = open();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.nack(&delivery, Duration::ZERO).unwrap();
    assert!(queue.try_receive().unwrap().is_none(), "dead-lettered");
    assert_eq!(queue.dead_letters(0, 10).unwrap().len(), 1);
    // Three journal records so far; eight more messages received and acked compact it.
    for n in 0..8u8 {
        queue.send(vec![n]).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
    }
    drop(queue);
    disk.power_cut();
    let queue = open();
    let redelivered = queue.try_receive().unwrap().is_some();
    let dead = queue.dead_letters(0, 10).unwrap();
    assert!(
        redelivered || dead.iter().any(|letter| letter.payload == "poison"),
        "the poison message is neither in the queue nor in its dead letters"
    );
}
