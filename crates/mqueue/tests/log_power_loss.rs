//! Power loss on a simulated disk: whatever the fsync policy, the log after a power cut holds a
//! prefix of what was appended, in order, with no corrupt record; under `Always` that prefix
//! contains every append that returned, and under every policy everything before the last
//! `sync()`.

use std::path::Path;

use infra_common::ManualClock;
use infra_common::sync::{Arc, thread};
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>),
    Sync,
    /// Power cut keeping this many unsynced bytes per file (a torn write).
    PowerCut(usize),
    Reopen,
}

#[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(Op::Append),
        1 => Just(Op::Sync),
        2 => (0usize..120).prop_map(Op::PowerCut),
        1 => Just(Op::Reopen),
    ]
}

fn open(disk: &SimulatedStorage, fsync: FsyncPolicy) -> Log {
    let options = LogOptions {
        fsync,
        segment_bytes: 150,
        ..LogOptions::default()
    };
    Log::open_with(Path::new("/log"), options, ManualClock::new(), disk.clone()).unwrap()
}

fn check(fsync: FsyncPolicy, ops: &[Op]) {
    let disk = SimulatedStorage::new();
    let mut log = open(&disk, fsync);
    // What was appended, in order, and how much of it is promised to survive.
    let mut appended: Vec<Vec<u8>> = Vec::new();
    let mut promised = 0usize;
    for op in ops {
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
            Op::Sync => {
                log.sync().unwrap();
                promised = appended.len();
            }
            Op::PowerCut(keep) => {
                drop(log);
                disk.power_cut_keeping(*keep);
                log = open(&disk, fsync);
                let recovered = log.read(0, usize::MAX).unwrap();
                let n = recovered.len();
                assert!(n >= promised, "lost promised records: {n} < {promised}");
                assert!(n <= appended.len());
                for (i, record) in recovered.iter().enumerate() {
                    assert_eq!(record.offset, i as u64);
                    assert_eq!(record.payload, appended[i], "record {i} differs");
                }
                assert_eq!(log.next_offset(), n as u64);
                appended.truncate(n);
                promised = n;
            }
            Op::Reopen => {
                drop(log);
                log = open(&disk, fsync);
                let recovered = log.read(0, usize::MAX).unwrap();
                let payloads: Vec<Vec<u8>> = recovered.into_iter().map(|r| r.payload).collect();
                assert_eq!(payloads, appended, "a clean reopen keeps everything");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn always_keeps_every_acknowledged_append(ops in prop::collection::vec(op(), 1..40)) {
        check(FsyncPolicy::Always, &ops);
    }

    #[test]
    fn never_keeps_a_prefix_including_everything_synced(ops in prop::collection::vec(op(), 1..40)) {
        check(FsyncPolicy::Never, &ops);
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
    let log = open(&disk, FsyncPolicy::Always);
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
fn under_always_a_reader_never_sees_a_record_a_power_cut_could_take() {
    let disk = SimulatedStorage::new();
    let log = open(&disk, FsyncPolicy::Always);
    log.append(b"durable").unwrap();
    let records = log.read(0, 10).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(log.stats().depth, 1);
}

#[test]
fn a_failed_write_is_cut_back_and_a_failed_fsync_stops_the_log() {
    let disk = SimulatedStorage::new();
    let log = open(&disk, FsyncPolicy::Never);
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

    let log = open(&disk, FsyncPolicy::Never);
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
    let log = open(&disk, FsyncPolicy::Always);
    assert_eq!(
        log.next_offset(),
        3,
        "a reopen recovers from what the disk holds"
    );
    assert_eq!(log.append(b"again").unwrap(), 3);
}
