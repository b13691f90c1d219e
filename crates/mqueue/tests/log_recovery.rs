//! Recovery of segment files the test damages by hand: torn tails are cut, zeros where the next
//! record would start end the log, anything else is `Error::Corrupt` with nothing deleted; plus
//! reads, rolls, preallocation, retention and options.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use infra_common::{ManualClock, SystemClock};
use infra_mqueue::Error;
use infra_mqueue::log::{FileStorage, FsyncPolicy, Log, LogOptions, Retention};

#[path = "support/failing_storage.rs"]
mod failing_storage;
#[path = "support/read_all.rs"]
mod read_all;

use failing_storage::FailingDirSyncs;
use read_all::all;

fn payload(i: u64) -> Vec<u8> {
    format!("message number {i}").into_bytes()
}

fn fill(dir: &Path, options: LogOptions, count: u64) {
    let log = Log::open(dir, options).unwrap();
    for i in 0..count {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
    }
}

/// Where a segment's records end: just past its last non-zero byte (every payload here ends
/// in a digit), before the preallocated zeros.
fn records_end(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)
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
    let end = records_end(&fs::read(&segment).unwrap()) as u64;
    assert!(
        fs::metadata(&segment).unwrap().len() > end,
        "the segment has zeros after its records"
    );
    // Half a record over the preallocated zeros: the length and part of a sixth append.
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&40u32.to_le_bytes(), end).unwrap();
    file.write_all_at(&[1, 2, 3, 4, 5, 6, 7], end + 4).unwrap();
    drop(file);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..5));
    // Cut where the records end (the zeros after the torn bytes go too); the next append
    // writes 1 MiB (the default) of zeros ahead again.
    assert_eq!(fs::metadata(&segment).unwrap().len(), end);
    assert_eq!(log.append(b"after").unwrap(), 5);
    let after = end + 12 + 5;
    assert_eq!(fs::metadata(&segment).unwrap().len(), after + (1 << 20));
    drop(log);

    // Without preallocation: half a record appended at the end of the file.
    let dir = tempfile::tempdir().unwrap();
    let unallocated = LogOptions {
        preallocate: 0,
        ..LogOptions::default()
    };
    fill(dir.path(), unallocated.clone(), 5);
    let segment = segments(dir.path()).pop().unwrap();
    let full = fs::metadata(&segment).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&40u32.to_le_bytes()).unwrap();
    file.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    drop(file);
    let log = Log::open(dir.path(), unallocated).unwrap();
    assert_eq!(all(&log), expected(0..5));
    assert_eq!(fs::metadata(&segment).unwrap().len(), full);
    assert_eq!(log.append(b"after").unwrap(), 5);
}

#[test]
fn a_tail_cut_at_every_byte_recovers_a_prefix_with_or_without_zeros_after_it() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 4);
    let segment = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&segment).unwrap();
    let end = records_end(&bytes);
    for cut in 40..=end {
        // The file cut there, and the same bytes followed by the preallocated zeros (a write
        // into preallocated space that got only partly to the disk).
        let mut zeroed = bytes[..cut].to_vec();
        zeroed.resize(bytes.len(), 0);
        for damaged in [&bytes[..cut], &zeroed[..]] {
            fs::write(&segment, damaged).unwrap();
            let log = Log::open(dir.path(), LogOptions::default()).unwrap();
            let got = all(&log);
            assert_eq!(got, expected(0..got.len() as u64), "cut at {cut}");
            assert_eq!(got.len() == 4, cut == end, "cut at {cut}");
            drop(log);
        }
    }
}

#[test]
fn zeros_after_the_last_record_end_the_log_and_keep_their_space() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        preallocate: 4096,
        ..LogOptions::default()
    };
    fill(dir.path(), options.clone(), 5);
    let segment = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&segment).unwrap();
    let end = records_end(&bytes) as u64;
    // The first append wrote 4096 zeros after itself; the next four went over them.
    let first_end = 40 + 12 + payload(0).len() as u64;
    assert_eq!(bytes.len() as u64, first_end + 4096);
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(all(&log), expected(0..5));
    let stats = log.stats();
    assert_eq!(
        (stats.bytes, stats.allocated_bytes),
        (end, first_end + 4096)
    );
    // The next record goes over the zeros too: the file does not grow.
    assert_eq!(log.append(b"after").unwrap(), 5);
    assert_eq!(fs::metadata(&segment).unwrap().len(), first_end + 4096);
    assert_eq!(log.stats().bytes, end + 12 + 5);
    assert_eq!(log.read(5, 1).unwrap()[0].payload, b"after");
}

#[test]
fn without_preallocation_and_under_never_the_files_hold_only_headers_and_records() {
    let unallocated = LogOptions {
        preallocate: 0,
        segment_bytes: 200,
        ..LogOptions::default()
    };
    let never = LogOptions {
        fsync: FsyncPolicy::Never,
        segment_bytes: 200,
        ..LogOptions::default()
    };
    for options in [unallocated, never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), options).unwrap();
        for i in 0..30 {
            log.append(&payload(i)).unwrap();
        }
        let stats = log.stats();
        assert!(stats.segments > 2, "{stats:?}");
        let on_disk: u64 = segments(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!((stats.bytes, stats.allocated_bytes), (on_disk, on_disk));
    }
}

/// A record framed the old way (`INFRAMQ1`): length, CRC-32C of the length bytes and the
/// payload, payload. Written here from the format, not by the crate.
fn old_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    let mut frame = len.to_vec();
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn a_torn_record_whose_payload_holds_whole_records_is_a_torn_tail() {
    // Whole records carried as a message's payload: one as another log framed it, one from an
    // older segment of this log, and one framed the old way.
    let other = tempfile::tempdir().unwrap();
    let unallocated = LogOptions {
        preallocate: 0,
        ..LogOptions::default()
    };
    let (header, from_other_log) = {
        let log = Log::open(other.path(), unallocated).unwrap();
        let segment = segments(other.path()).pop().unwrap();
        let header = fs::metadata(&segment).unwrap().len() as usize;
        log.append(&payload(0)).unwrap();
        (header, fs::read(&segment).unwrap()[header..].to_vec())
    };
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 300,
        ..LogOptions::default()
    };
    fill(dir.path(), options.clone(), 12);
    let paths = segments(dir.path());
    assert!(paths.len() > 1);
    // The oldest segment's first record, as long as the other log's (the same payload).
    let first_record = fs::read(&paths[0]).unwrap()[header..header + from_other_log.len()].to_vec();
    let newest = fs::read(&paths[paths.len() - 1]).unwrap();
    let mut carrier = from_other_log;
    carrier.extend_from_slice(&first_record);
    carrier.extend_from_slice(&old_frame(&payload(1)));
    carrier.extend_from_slice(&[7; 60]);

    let segment = paths[paths.len() - 1].clone();
    let end = records_end(&newest) as u64;
    {
        let log = Log::open(dir.path(), options.clone()).unwrap();
        assert_eq!(log.append(&carrier).unwrap(), 12);
        assert_eq!(
            segments(dir.path()).last(),
            Some(&segment),
            "in the same segment"
        );
    }
    // The carrier's write torn after the records inside it: its last bytes are zeros again.
    let carrier_end = records_end(&fs::read(&segment).unwrap()) as u64;
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0; 50], carrier_end - 50).unwrap();
    drop(file);
    // The carrier's append never returned: it is cut, every record before it kept.
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(all(&log), expected(0..12));
    assert_eq!(fs::metadata(&segment).unwrap().len(), end);
}

#[test]
fn zeros_over_a_record_in_the_middle_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 6);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // The second record (header 40, each frame 12 + 16 bytes) zeroed: valid records follow.
    bytes[40 + 28..40 + 56].fill(0);
    fs::write(&segment, &bytes).unwrap();
    match Log::open(dir.path(), LogOptions::default()).unwrap_err() {
        Error::Corrupt { position, .. } => assert_eq!(position, 40 + 28),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&segment).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 3);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let last = records_end(&bytes) - 2;
    bytes[last] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..2));
}

#[test]
fn a_flipped_bit_in_the_preallocated_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 3);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let end = records_end(&bytes);
    bytes[end + 1000] = 0x40;
    fs::write(&segment, &bytes).unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..3));
    assert_eq!(fs::metadata(&segment).unwrap().len(), end as u64);
}

#[test]
fn a_flipped_bit_in_the_middle_is_corruption_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), LogOptions::default(), 6);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    // Inside the second record's payload (header 40, each frame 12 + 16 bytes).
    bytes[40 + 28 + 10] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();
    let error = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    match error {
        Error::Corrupt {
            segment: path,
            position,
            ..
        } => {
            assert_eq!(path, segment);
            assert_eq!(position, 40 + 28);
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
    fs::write(&paths[0], &bytes[..records_end(&bytes) - 5]).unwrap();
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

/// A segment named for an offset no log reaches (a file made by hand, or a damaged name) would
/// leave no room to count appends: refused at open, nothing deleted.
#[test]
fn a_segment_whose_offsets_pass_two_to_the_sixty_third_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{:020}.seg", u64::MAX);
    fs::write(dir.path().join(&name), b"").unwrap();
    match Log::open(dir.path(), LogOptions::default()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("2^63"), "{reason}"),
        other => panic!("opened: {:?}", other.map(|_| ())),
    }
    assert!(dir.path().join(&name).exists());
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
fn every_record_acknowledged_after_a_failed_roll_is_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FailingDirSyncs::default();
    // A 40-byte header and four 52-byte records leave 32 bytes: room for a small record, not
    // for a fifth of these.
    let options = LogOptions {
        segment_bytes: 280,
        preallocate: 0,
        ..LogOptions::default()
    };
    let log = Log::open_with(
        dir.path(),
        options.clone(),
        SystemClock::new(),
        storage.clone(),
    )
    .unwrap();
    for i in 0..4 {
        assert_eq!(log.append(&[b'a'; 40]).unwrap(), i);
    }
    storage.set_failing(true);
    assert!(
        log.append(&[b'b'; 40]).is_err(),
        "the roll's directory sync fails"
    );
    storage.set_failing(false);
    // A record that fits where the refused one did not: the log may refuse it or take it, but
    // what it acknowledges must be there after a reopen.
    let acknowledged = match log.append(b"small") {
        Ok(offset) => offset + 1,
        Err(_) => 4,
    };
    drop(log);
    let log = Log::open_with(dir.path(), options, SystemClock::new(), storage).unwrap();
    assert_eq!(log.next_offset(), acknowledged);
    assert_eq!(log.read(0, 4).unwrap().len(), 4);
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
        LogOptions {
            preallocate: (1 << 30) + 1,
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

/// Segments of 300 bytes, and retention by size keeping 1,000 bytes of them.
fn keep_1000_bytes_in_300_byte_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 300,
        retention: Retention {
            max_bytes: Some(1000),
            max_age: None,
        },
        ..LogOptions::default()
    }
}

#[test]
fn retention_by_size_drops_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = keep_1000_bytes_in_300_byte_segments();
    let log = Log::open(dir.path(), options).unwrap();
    for i in 0..200 {
        log.append(&payload(i)).unwrap();
    }
    let stats = log.stats();
    assert!(stats.allocated_bytes <= 1000 + 300, "{stats:?}");
    assert!(stats.first_offset > 0);
    assert_eq!(stats.next_offset, 200);
    assert_eq!(stats.depth, 200 - stats.first_offset);
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, stats.allocated_bytes);
    assert!(
        stats.bytes < stats.allocated_bytes,
        "the newest segment has zeros ahead"
    );
    assert!(matches!(
        log.read(0, 1),
        Err(Error::OffsetTruncated { requested: 0, first }) if first == stats.first_offset
    ));
    let kept = all(&log);
    assert_eq!(kept, expected(stats.first_offset..200));
}

/// Retention is housekeeping: a segment that cannot be deleted now stays until the next roll
/// or `enforce_retention` (which reports why), and the append whose roll ran it still goes in.
#[test]
fn an_append_whose_roll_cannot_delete_an_old_segment_goes_in_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let options = keep_1000_bytes_in_300_byte_segments();
    let disk = FailingDirSyncs::default();
    let log = Log::open_with(dir.path(), options, ManualClock::new(), disk.clone()).unwrap();
    let mut appended = 0;
    while log.stats().first_offset == 0 {
        log.append(&payload(appended)).unwrap();
        appended += 1;
    }
    disk.set_failing_removes(true);
    let held = log.stats().first_offset;
    for _ in 0..100 {
        let offset = log.append(&payload(appended));
        assert_eq!(offset.ok(), Some(appended), "append {appended}");
        appended += 1;
    }
    assert_eq!(log.stats().first_offset, held, "nothing was deleted");
    assert!(matches!(log.enforce_retention(), Err(Error::Io { .. })));
    disk.set_failing_removes(false);
    assert!(log.enforce_retention().unwrap() > 0);
    let stats = log.stats();
    assert!(stats.allocated_bytes <= 1000 + 300, "{stats:?}");
    assert_eq!(stats.depth, appended - stats.first_offset);
    assert_eq!(all(&log), expected(stats.first_offset..appended));
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
/// A read bounded in bytes stops before the record that would take it past its bytes, and
/// returns the first record whatever its size.
#[test]
fn a_read_within_a_byte_budget_stops_before_the_record_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for i in 0..5u8 {
        log.append(&[i; 1_000]).unwrap();
    }
    let offsets = |records: Vec<infra_mqueue::log::Record>| -> Vec<u64> {
        records.iter().map(|r| r.offset).collect()
    };
    assert_eq!(offsets(log.read_within(0, 10, 2_500).unwrap()), [0, 1]);
    assert_eq!(offsets(log.read_within(1, 10, 3_000).unwrap()), [1, 2, 3]);
    assert_eq!(offsets(log.read_within(3, 10, 0).unwrap()), [3]);
    assert_eq!(offsets(log.read_within(0, 2, usize::MAX).unwrap()), [0, 1]);
    assert_eq!(log.read_within(5, 10, 0).unwrap(), []);
}
