//! Power loss on a simulated disk: whatever the fsync policy, the log after a power cut holds a
//! prefix of what was appended, in order, with no corrupt record; under `Always` that prefix
//! contains every append that returned and every ticket whose `wait` returned, and under every
//! policy everything before the last `sync()`. With and without preallocated segments.

use std::collections::VecDeque;
use std::path::Path;

use infra_common::ManualClock;
use infra_common::sync::{Arc, thread};
use infra_mqueue::log::{
    AppendTicket, FsyncPolicy, Log, LogOptions, Retention, SimulatedStorage, Storage,
};
use proptest::prelude::*;

#[path = "support/dying_disk.rs"]
mod dying_disk;
#[path = "support/failing_storage.rs"]
mod failing_storage;
#[path = "support/unlink_noting_disk.rs"]
mod unlink_noting_disk;

use dying_disk::DyingDisk;
use failing_storage::FailingDirSyncs;
use unlink_noting_disk::UnlinkNotingDisk;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    /// `append_nowait`, keeping the ticket.
    AppendNowait(Vec<u8>),
    /// Waits on this many of the kept tickets (modulo how many are kept), oldest first.
    Wait(usize),
    Sync,
    /// Power cut keeping this many unsynced bytes per file (a torn write). Tickets not waited
    /// on are dropped.
    PowerCut(usize),
    Reopen,
}

#[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(Op::Append),
        3 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::AppendNowait),
        2 => any::<usize>().prop_map(Op::Wait),
        1 => Just(Op::Sync),
        2 => (0usize..120).prop_map(Op::PowerCut),
        1 => Just(Op::Reopen),
    ]
}

fn open(disk: &SimulatedStorage, fsync: FsyncPolicy, preallocate: u64) -> Log {
    let options = LogOptions {
        fsync,
        segment_bytes: 150,
        preallocate,
        ..LogOptions::default()
    };
    Log::open_with(Path::new("/log"), options, ManualClock::new(), disk.clone()).unwrap()
}

/// What a reopen must find.
enum Expect {
    /// At least the promised records, at most all appended, as a prefix (after a power cut).
    Prefix,
    /// Everything appended (after a clean close).
    All,
}

fn check(fsync: FsyncPolicy, preallocate: u64, ops: &[Op]) {
    let disk = SimulatedStorage::new();
    // What was appended, in order, and how much of it is promised to survive.
    let mut appended: Vec<Vec<u8>> = Vec::new();
    let mut promised = 0usize;
    let mut ops = ops.iter();
    let mut expect = None;
    loop {
        let log = open(&disk, fsync, preallocate);
        let recovered: Vec<Vec<u8>> = log
            .read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                assert_eq!(record.offset, i as u64);
                record.payload
            })
            .collect();
        match expect {
            Some(Expect::Prefix) => {
                let n = recovered.len();
                assert!(n >= promised, "lost promised records: {n} < {promised}");
                assert!(n <= appended.len());
                assert_eq!(recovered[..], appended[..n], "a recovered record differs");
                appended.truncate(n);
                promised = n;
            }
            Some(Expect::All) => assert_eq!(recovered, appended, "a clean reopen keeps all"),
            None => {}
        }
        assert_eq!(log.next_offset(), appended.len() as u64);
        let mut tickets: VecDeque<AppendTicket<'_>> = VecDeque::new();
        expect = None;
        for op in ops.by_ref() {
            match op {
                Op::Append(batch) => {
                    let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    let range = log.append_batch(&slices).unwrap();
                    assert_eq!(range.start, appended.len() as u64);
                    appended.extend(batch.iter().cloned());
                    if fsync == FsyncPolicy::Always {
                        promised = appended.len();
                    }
                }
                Op::AppendNowait(payload) => {
                    let ticket = log.append_nowait(payload).unwrap();
                    assert_eq!(ticket.offset(), appended.len() as u64);
                    appended.push(payload.clone());
                    tickets.push_back(ticket);
                }
                Op::Wait(n) => {
                    for _ in 0..n % (tickets.len() + 1) {
                        let offset = tickets.pop_front().unwrap().wait().unwrap();
                        if fsync == FsyncPolicy::Always {
                            promised = promised.max(offset as usize + 1);
                        }
                    }
                }
                Op::Sync => {
                    log.sync().unwrap();
                    promised = appended.len();
                }
                Op::PowerCut(keep) => {
                    drop(tickets);
                    drop(log);
                    disk.power_cut_keeping(*keep);
                    expect = Some(Expect::Prefix);
                    break;
                }
                Op::Reopen => {
                    expect = Some(Expect::All);
                    break;
                }
            }
        }
        if expect.is_none() {
            return;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn always_keeps_every_acknowledged_append(
        preallocate in prop::sample::select(vec![0u64, 40, 1000]),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        check(FsyncPolicy::Always, preallocate, &ops);
    }

    #[test]
    fn never_keeps_a_prefix_including_everything_synced(
        preallocate in prop::sample::select(vec![0u64, 40, 1000]),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        check(FsyncPolicy::Never, preallocate, &ops);
    }
}

#[test]
fn concurrent_appenders_share_fsyncs_and_survive_a_power_cut() {
    let disk = SimulatedStorage::new();
    let options = LogOptions::default(); // 64 MiB segments: no roll adds syncs here
    let log = Log::open_with(Path::new("/log"), options, ManualClock::new(), disk.clone());
    let log = Arc::new(log.unwrap());
    let before = disk.file_syncs();
    let producers = 8;
    let per_producer = 200;
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                (0..per_producer)
                    .map(|i| {
                        let payload = format!("{p}:{i}").into_bytes();
                        (log.append(&payload).unwrap(), payload)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(u64, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort();
    let syncs = disk.file_syncs() - before;
    // Never more than one sync per append; how many are shared depends on the scheduler (the
    // loom model `group_commit` checks the hand-off itself).
    let total = (producers * per_producer) as u64;
    assert!(syncs <= total, "{syncs} syncs for {total} appends");
    drop(log);
    disk.power_cut();
    let log = open(&disk, FsyncPolicy::Always, 0);
    let recovered = log.read(0, usize::MAX).unwrap();
    assert_eq!(recovered.len(), acked.len());
    for (record, (offset, payload)) in recovered.iter().zip(&acked) {
        assert_eq!((&record.offset, &record.payload), (offset, payload));
    }
    // Per producer, offsets grow in the order its appends returned.
    for p in 0..producers {
        let prefix = format!("{p}:");
        let mine: Vec<&[u8]> = recovered
            .iter()
            .filter(|r| r.payload.starts_with(prefix.as_bytes()))
            .map(|r| &r.payload[prefix.len()..])
            .collect();
        let want: Vec<Vec<u8>> = (0..per_producer)
            .map(|i| i.to_string().into_bytes())
            .collect();
        assert_eq!(mine, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }
}

#[test]
fn pipelined_producers_run_one_fsync_per_window_and_survive_a_power_cut() {
    let disk = SimulatedStorage::new();
    let options = LogOptions::default(); // 64 MiB segments: no roll adds syncs here
    let log = Log::open_with(Path::new("/log"), options, ManualClock::new(), disk.clone());
    let log = Arc::new(log.unwrap());
    let before = disk.file_syncs();
    let (producers, per_producer, window) = (4u64, 400u64, 16usize);
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut acked = Vec::new();
                let mut in_flight = VecDeque::new();
                for i in 0..per_producer {
                    if in_flight.len() == window {
                        let (ticket, payload): (AppendTicket<'_>, Vec<u8>) =
                            in_flight.pop_front().unwrap();
                        acked.push((ticket.wait().unwrap(), payload));
                    }
                    let payload = format!("{p}:{i}").into_bytes();
                    in_flight.push_back((log.append_nowait(&payload).unwrap(), payload));
                }
                for (ticket, payload) in in_flight {
                    acked.push((ticket.wait().unwrap(), payload));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<(u64, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort();
    // A producer leads an fsync only when the oldest of its `window` tickets is not durable,
    // so none of them is, and the fsync makes them all durable: at most one fsync per
    // `window` appends, plus one per producer for its last, partial window.
    let syncs = disk.file_syncs() - before;
    let total = producers * per_producer;
    let bound = total / window as u64 + producers;
    assert!(
        syncs <= bound,
        "{syncs} syncs for {total} appends (bound {bound})"
    );
    drop(log);
    disk.power_cut();
    let log = open(&disk, FsyncPolicy::Always, 1000);
    let recovered = log.read(0, usize::MAX).unwrap();
    assert_eq!(recovered.len(), acked.len());
    for (record, (offset, payload)) in recovered.iter().zip(&acked) {
        assert_eq!((&record.offset, &record.payload), (offset, payload));
    }
}

#[test]
fn under_always_a_reader_never_sees_a_record_a_power_cut_could_take() {
    let disk = SimulatedStorage::new();
    let log = open(&disk, FsyncPolicy::Always, 1000);
    log.append(b"durable").unwrap();
    let records = log.read(0, 10).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(log.stats().depth, 1);
    // A ticket's record is written but not durable: readers do not see it until its wait
    // (or any other fsync) covers it.
    let ticket = log.append_nowait(b"in flight").unwrap();
    assert_eq!(log.read(0, 10).unwrap().len(), 1);
    assert_eq!(ticket.wait().unwrap(), 1);
    assert_eq!(log.read(1, 10).unwrap()[0].payload, b"in flight");
    let dropped = log.append_nowait(b"dropped ticket").unwrap();
    drop(dropped);
    assert_eq!(log.read(0, 10).unwrap().len(), 2);
    log.append(b"later").unwrap();
    let payloads: Vec<Vec<u8>> = log
        .read(0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(
        payloads[2..],
        [b"dropped ticket".to_vec(), b"later".to_vec()]
    );
}

#[test]
fn a_failed_write_is_cut_back_and_a_failed_fsync_stops_the_log() {
    let disk = SimulatedStorage::new();
    let log = open(&disk, FsyncPolicy::Never, 1000);
    log.append(b"before").unwrap();
    disk.set_failing(true);
    assert!(matches!(
        log.append(b"half of this reaches the file"),
        Err(infra_mqueue::Error::Io { op: "append", .. })
    ));
    disk.set_failing(false);
    // The half-written record was cut back: the next one follows "before" directly.
    assert_eq!(log.append(b"after").unwrap(), 1);
    let payloads: Vec<Vec<u8>> = log
        .read(0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(payloads, [b"before".to_vec(), b"after".to_vec()]);
    drop(log);

    let log = open(&disk, FsyncPolicy::Never, 1000);
    assert_eq!(log.append(b"unsynced").unwrap(), 2);
    disk.set_failing(true);
    assert!(matches!(
        log.sync(),
        Err(infra_mqueue::Error::Io { op: "fsync", .. })
    ));
    disk.set_failing(false);
    // After a failed fsync nothing is promised any more, even once the disk works again.
    assert!(matches!(
        log.append(b"refused"),
        Err(infra_mqueue::Error::Failed)
    ));
    assert!(matches!(log.sync(), Err(infra_mqueue::Error::Failed)));
    drop(log);
    let log = open(&disk, FsyncPolicy::Always, 1000);
    assert_eq!(
        log.next_offset(),
        3,
        "a reopen recovers from what the disk holds"
    );
    assert_eq!(log.append(b"again").unwrap(), 3);
}

/// Retention that deletes several segments, cut off by the process dying at each of its
/// changes to the disk in turn, then a power cut after which the file system kept the newest
/// of the unlinks not yet made durable and none of the older ones (it may write directory
/// changes back out of order): the log reopens, never `Corrupt`, with every record from its
/// first one on. Retention syncs the directory after each unlink, oldest first, so at most one
/// is ever in doubt; with one directory sync after all of them, an older segment came back
/// beside a gap where a newer one was deleted.
#[test]
fn retention_cut_by_a_power_loss_that_keeps_a_later_unlink_leaves_no_gap() {
    check_retention_cut_by_a_power_loss(false);
}

/// The same after an earlier retention whose directory sync failed after its first unlink:
/// the next retention makes that unlink durable before it makes another, so that one still
/// in doubt is never joined by a later one.
#[test]
fn an_unlink_whose_directory_sync_failed_is_made_durable_before_the_next() {
    check_retention_cut_by_a_power_loss(true);
}

fn check_retention_cut_by_a_power_loss(first_sync_fails: bool) {
    let dir = Path::new("/log");
    let small = |retention| LogOptions {
        segment_bytes: 150,
        preallocate: 0,
        retention,
        ..LogOptions::default()
    };
    // Two 30-byte records a segment (40 bytes of header, 42 a record): ten segments.
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 30]).collect();
    let keep_three = Retention {
        max_bytes: Some(3 * 124),
        ..Retention::default()
    };
    let mut doubts = 0;
    for budget in 0..40 {
        let disk = SimulatedStorage::new();
        let log = Log::open_with(
            dir,
            small(Retention::default()),
            ManualClock::new(),
            disk.clone(),
        );
        let log = log.unwrap();
        for payload in &payloads {
            log.append(payload).unwrap();
        }
        drop(log);
        let failing = FailingDirSyncs::over(DyingDisk::new(&disk, budget));
        let noting = UnlinkNotingDisk::new(failing.clone());
        if let Ok(log) = Log::open_with(dir, small(keep_three), ManualClock::new(), noting.clone())
        {
            if first_sync_fails {
                failing.set_failing(true);
                assert!(log.enforce_retention().is_err(), "budget {budget}");
                failing.set_failing(false);
            }
            let _ = log.enforce_retention();
        }
        let unsynced = noting.unsynced_unlinks();
        disk.power_cut();
        if let Some(newest) = unsynced.last() {
            doubts += 1;
            disk.remove(newest).unwrap();
            disk.sync_dir(dir).unwrap();
        }
        let log = Log::open_with(dir, small(Retention::default()), ManualClock::new(), disk)
            .unwrap_or_else(|error| panic!("budget {budget}: {error}"));
        let first = usize::try_from(log.first_offset()).unwrap();
        let kept: Vec<Vec<u8>> = log
            .read(log.first_offset(), 100)
            .unwrap()
            .into_iter()
            .map(|record| record.payload)
            .collect();
        assert_eq!(kept, payloads[first..], "budget {budget}");
    }
    assert!(doubts > 0, "some cut left an unlink in doubt");
}
