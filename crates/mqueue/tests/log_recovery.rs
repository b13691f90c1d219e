//! Recovery of segment files the test damages by hand: torn tails are cut, anything else is
//! `Error::Corrupt` with nothing deleted; plus reads, rolls, retention and options.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{FileStorage, FsyncPolicy, Log, LogOptions, Retention};

fn payload(i: u64) -> Vec<u8> {
    format!("message number {i}").into_bytes()
}

fn fill(dir: &Path, options: LogOptions, count: u64) {
    let log = Log::open(dir, options).unwrap();
    for i in 0..count {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

fn all(log: &Log) -> Vec<Vec<u8>> {
    log.read(log.first_offset(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

#[test]
fn reopen_keeps_every_record_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 10);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), 10);
    assert_eq!(all(&log), expected(0..10));
    assert_eq!(log.append(b"next").unwrap(), 10);
    let range = log.append_batch(&[b"a", b"b", b""]).unwrap();
    assert_eq!(range, 11..14);
    let tail = log.read(12, 5).unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!((tail[0].offset, &tail[0].payload[..]), (12, &b"b"[..]));
    assert_eq!((tail[1].offset, tail[1].payload.len()), (13, 0));
    assert!(log.read(14, 5).unwrap().is_empty());
    assert!(log.read(1000, 5).unwrap().is_empty());
    assert!(log.read(0, 0).unwrap().is_empty());
}

#[test]
fn reads_across_many_segments_and_index_strides() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 1000,
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    fill(dir.path(), options.clone(), 500);
    let log = Log::open(dir.path(), options).unwrap();
    assert!(log.stats().segments > 10, "{:?}", log.stats());
    for from in [0, 1, 63, 64, 65, 127, 128, 250, 499] {
        for max in [1, 7, 64, 200, 1000] {
            let records = log.read(from, max).unwrap();
            let want: Vec<u64> = (from..500).take(max).collect();
            let got: Vec<u64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(got, want, "from {from} max {max}");
            for r in &records {
                assert_eq!(r.payload, payload(r.offset));
            }
        }
    }
}

#[test]
fn a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 5);
    let segment = segments(dir.path()).pop().unwrap();
    let full = fs::metadata(&segment).unwrap().len();
    // Half a record: the length and part of the payload of a sixth append.
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&40u32.to_le_bytes()).unwrap();
    file.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    drop(file);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..5));
    assert_eq!(fs::metadata(&segment).unwrap().len(), full);
    assert_eq!(log.append(b"after").unwrap(), 5);
}

#[test]
fn a_tail_cut_at_every_byte_recovers_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 4);
    let segment = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&segment).unwrap();
    for cut in 32..bytes.len() {
        fs::write(&segment, &bytes[..cut]).unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let got = all(&log);
        assert_eq!(got, expected(0..got.len() as u64), "cut at {cut}");
        drop(log);
    }
}

#[test]
fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 3);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..2));
}

#[test]
fn a_flipped_bit_in_the_middle_is_corruption_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 6);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // Inside the second record's payload (header 32, each frame 8 + 16 bytes).
    bytes[32 + 24 + 10] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();
    let error = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    match error {
        Error::Corrupt {
            segment: path,
            position,
            ..
        } => {
            assert_eq!(path, segment);
            assert_eq!(position, 32 + 24);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&segment).unwrap(), bytes, "nothing was cut");
}

#[test]
fn damage_in_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 200,
        ..LogOptions::default()
    };
    fill(dir.path(), options.clone(), 30);
    let paths = segments(dir.path());
    assert!(paths.len() >= 3);
    // Truncate the first segment: its last records vanish.
    let bytes = fs::read(&paths[0]).unwrap();
    fs::write(&paths[0], &bytes[..bytes.len() - 5]).unwrap();
    assert!(matches!(
        Log::open(dir.path(), options.clone()),
        Err(Error::Corrupt { .. })
    ));
    // Whole but missing a segment in the middle.
    fs::write(&paths[0], &bytes).unwrap();
    fs::remove_file(&paths[1]).unwrap();
    assert!(matches!(
        Log::open(dir.path(), options),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn a_damaged_header_is_corruption_unless_the_newest_segment_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 2);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    bytes[3] ^= 0xff;
    fs::write(&segment, &bytes).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Corrupt { position: 0, .. })
    ));
    // Only a torn header: the segment never held a record, so it is rewritten.
    fs::write(&segment, &bytes[..20]).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.append(b"x").unwrap(), 0);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Locked { .. })
    ));
    drop(log);
    Log::open(dir.path(), LogOptions::default()).unwrap();
}

#[test]
fn options_and_oversized_records_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        LogOptions {
            segment_bytes: 10,
            ..LogOptions::default()
        },
        LogOptions {
            max_record_bytes: 0,
            ..LogOptions::default()
        },
        LogOptions {
            max_record_bytes: u32::MAX,
            ..LogOptions::default()
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), bad),
            Err(Error::InvalidOptions { .. })
        ));
    }
    let log = Log::open(
        dir.path(),
        LogOptions {
            max_record_bytes: 10,
            ..LogOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        log.append(&[0; 11]),
        Err(Error::RecordTooLarge { len: 11, max: 10 })
    ));
    assert!(matches!(
        log.append_batch(&[b"ok", &[0; 11]]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(
        log.next_offset(),
        0,
        "nothing of a refused batch is written"
    );
    assert_eq!(log.append(&[7; 10]).unwrap(), 0);
}

#[test]
fn retention_by_size_drops_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 300,
        retention: Retention {
            max_bytes: Some(1000),
            max_age: None,
        },
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    for i in 0..200 {
        log.append(&payload(i)).unwrap();
    }
    let stats = log.stats();
    assert!(stats.bytes <= 1000 + 300, "{stats:?}");
    assert!(stats.first_offset > 0);
    assert_eq!(stats.next_offset, 200);
    assert_eq!(stats.depth, 200 - stats.first_offset);
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, stats.bytes);
    assert!(matches!(
        log.read(0, 1),
        Err(Error::OffsetTruncated { requested: 0, first }) if first == stats.first_offset
    ));
    let kept = all(&log);
    assert_eq!(kept, expected(stats.first_offset..200));
}

#[test]
fn retention_by_age_follows_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::with_wall_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30));
    let options = LogOptions {
        segment_bytes: 100,
        retention: Retention {
            max_bytes: None,
            max_age: Some(Duration::from_secs(60)),
        },
        ..LogOptions::default()
    };
    let log = Log::open_with(dir.path(), options, clock.clone(), FileStorage).unwrap();
    for i in 0..12 {
        log.append(&payload(i)).unwrap();
    }
    let segments_before = log.stats().segments;
    assert!(segments_before >= 3);
    assert_eq!(log.enforce_retention().unwrap(), 0, "nothing is old yet");
    clock.advance(Duration::from_secs(61));
    clock.set_wall_time(SystemTime::UNIX_EPOCH + Duration::from_secs((1 << 30) + 61));
    // Every segment but the newest was followed by one started over 60 s ago.
    assert_eq!(log.enforce_retention().unwrap(), segments_before - 1);
    assert_eq!(log.stats().segments, 1);
    assert_eq!(all(&log).len() as u64, log.stats().depth);
}

#[test]
fn interval_policy_syncs_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let disk = infra_mqueue::log::SimulatedStorage::new();
    let options = LogOptions {
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        ..LogOptions::default()
    };
    let log = Log::open_with(dir.path(), options, clock.clone(), disk.clone()).unwrap();
    let syncs = disk.file_syncs();
    log.append(b"a").unwrap();
    log.append(b"b").unwrap();
    assert_eq!(disk.file_syncs(), syncs, "no sync before the interval");
    clock.advance(Duration::from_millis(100));
    log.append(b"c").unwrap();
    assert_eq!(disk.file_syncs(), syncs + 1);
    log.append(b"d").unwrap();
    assert_eq!(disk.file_syncs(), syncs + 1);
    drop(log);
    disk.power_cut();
    let log = Log::open_with(dir.path(), LogOptions::default(), clock, disk).unwrap();
    assert_eq!(log.next_offset(), 4, "dropping an Interval log syncs");
}
