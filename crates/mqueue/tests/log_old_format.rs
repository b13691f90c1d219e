//! Logs whose segments were written in the earlier format (`INFRAMQ1`), framed here by hand from
//! that format's definition: they open, read back and recover as before, and appends go to a
//! new segment in the current format (`INFRAMQ2`).

#[path = "support/dying_disk.rs"]
mod dying_disk;
#[path = "support/read_all.rs"]
mod read_all;

use std::fs;
use std::path::{Path, PathBuf};

use dying_disk::DyingDisk;
use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{Log, LogOptions, SimulatedStorage, Storage};
use read_all::all;

fn payload(i: u64) -> Vec<u8> {
    format!("old message {i}").into_bytes()
}

/// An `INFRAMQ1` segment header: magic, base offset, creation time, four zero bytes, and the
/// CRC-32C of those 28 bytes.
fn old_header(base: u64) -> Vec<u8> {
    let mut bytes = b"INFRAMQ1".to_vec();
    bytes.extend_from_slice(&base.to_le_bytes());
    bytes.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// An `INFRAMQ1` record: length, CRC-32C of the length bytes and the payload, payload.
fn old_frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    let mut frame = len.to_vec();
    frame.extend_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// Writes an old-format segment holding records `offsets`, followed by `zeros` zero bytes (the
/// space the earlier version preallocated); returns its bytes.
fn write_old_segment(dir: &Path, offsets: std::ops::Range<u64>, zeros: usize) -> Vec<u8> {
    let mut bytes = old_header(offsets.start);
    for i in offsets.clone() {
        bytes.extend_from_slice(&old_frame(&payload(i)));
    }
    bytes.resize(bytes.len() + zeros, 0);
    fs::write(segment_path(dir, offsets.start), &bytes).unwrap();
    bytes
}

fn expected(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

#[test]
fn old_format_segments_open_read_back_and_appends_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_old_segment(dir.path(), 0..3, 0);
    let second = write_old_segment(dir.path(), 3..5, 4096);

    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..5));
    assert_eq!(log.next_offset(), 5);
    assert_eq!(log.read(3, 1).unwrap()[0].payload, payload(3));
    // The newest old-format segment was sealed: the next record starts a segment of its own.
    assert_eq!(log.stats().segments, 3);
    assert_eq!(log.append(&payload(5)).unwrap(), 5);
    drop(log);

    let new = fs::read(segment_path(dir.path(), 5)).unwrap();
    assert_eq!(&new[..8], b"INFRAMQ2");
    assert_eq!(fs::read(segment_path(dir.path(), 0)).unwrap(), first);
    assert_eq!(fs::read(segment_path(dir.path(), 3)).unwrap(), second);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..6));
    assert_eq!(log.stats().segments, 3);
}

#[test]
fn a_mixed_log_of_old_then_new_segments_keeps_every_record_across_rolls_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    write_old_segment(dir.path(), 0..4, 0);
    write_old_segment(dir.path(), 4..6, 0);
    let options = LogOptions {
        segment_bytes: 200,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    for i in 6..30 {
        assert_eq!(log.append(&payload(i)).unwrap(), i);
    }
    assert!(log.stats().segments > 5, "{:?}", log.stats());
    drop(log);

    let log = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(all(&log), expected(0..30));
    for from in [0, 3, 4, 5, 6, 7, 29] {
        assert_eq!(log.read(from, 2).unwrap()[0].payload, payload(from));
    }
    drop(log);
    // A torn tail in the newest (new-format) segment is still cut.
    let newest = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    let bytes = fs::read(&newest).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    fs::write(&newest, &bytes[..end - 3]).unwrap();
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(all(&log), expected(0..29));
}

#[test]
fn an_old_format_newest_segment_keeps_its_recovery_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let whole = write_old_segment(dir.path(), 0..3, 0);
    let mut torn = whole.clone();
    torn.extend_from_slice(&old_frame(&payload(3))[..10]);
    torn.resize(torn.len() + 100, 0);
    fs::write(segment_path(dir.path(), 0), &torn).unwrap();

    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..3));
    assert_eq!(fs::read(segment_path(dir.path(), 0)).unwrap(), whole);
    assert_eq!(log.append(&payload(3)).unwrap(), 3);
    drop(log);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..4));
}

#[test]
fn an_old_format_newest_segment_without_records_is_started_over_in_the_new_format() {
    let dir = tempfile::tempdir().unwrap();
    write_old_segment(dir.path(), 0..2, 0);
    write_old_segment(dir.path(), 2..2, 0);
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.stats().segments, 2);
    assert_eq!(log.append(&payload(2)).unwrap(), 2);
    drop(log);
    assert_eq!(
        &fs::read(segment_path(dir.path(), 2)).unwrap()[..8],
        b"INFRAMQ2"
    );
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(all(&log), expected(0..3));
}

#[test]
fn damage_in_an_old_format_segment_is_still_corruption_and_nothing_is_deleted() {
    // A flipped bit in the middle of the newest segment, valid records after it.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = write_old_segment(dir.path(), 0..4, 0);
    let second = 32 + old_frame(&payload(0)).len();
    bytes[second + 10] ^= 1;
    fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
    match Log::open(dir.path(), LogOptions::default()).unwrap_err() {
        Error::Corrupt { position, .. } => assert_eq!(position, second as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(segment_path(dir.path(), 0)).unwrap(), bytes);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "the segment and LOCK"
    );

    // A torn last record in an older segment.
    let dir = tempfile::tempdir().unwrap();
    let older = write_old_segment(dir.path(), 0..3, 0);
    write_old_segment(dir.path(), 3..5, 0);
    fs::write(segment_path(dir.path(), 0), &older[..older.len() - 2]).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Corrupt { .. })
    ));
    assert!(
        !segment_path(dir.path(), 5).exists(),
        "no segment was added"
    );
}

/// Puts old-format segments (records `range`, then `zeros` zero bytes, for each) durably on a
/// simulated disk under `dir`.
fn put_old_segments(
    disk: &SimulatedStorage,
    dir: &Path,
    segments: &[(std::ops::Range<u64>, usize)],
) {
    disk.create_dir_all(dir).unwrap();
    for (offsets, zeros) in segments {
        let mut bytes = old_header(offsets.start);
        for i in offsets.clone() {
            bytes.extend_from_slice(&old_frame(&payload(i)));
        }
        bytes.resize(bytes.len() + zeros, 0);
        let file = disk.open(&segment_path(dir, offsets.start), true).unwrap();
        file.write_at(0, &bytes).unwrap();
        file.sync().unwrap();
    }
    for ancestor in dir.ancestors().skip(1) {
        disk.sync_dir(ancestor).unwrap();
    }
    disk.sync_dir(dir).unwrap();
}

/// The first open of an old-format log by this version dies at each of its changes to the disk
/// in turn (sealing the newest old segment and starting a new one, or starting an empty one
/// over in place), then the power goes with some of its unsynced bytes kept or none: the next
/// open keeps every record and takes appends.
#[test]
fn an_upgrade_open_that_died_at_any_change_loses_nothing_and_the_next_open_succeeds() {
    let dir = Path::new("/log");
    // The newest old segment: with records and space preallocated after them; without records
    // (rolled to, or whose records were lost) and with zeros after its header; without either.
    let layouts: [&[(std::ops::Range<u64>, usize)]; 3] = [
        &[(0..3, 0), (3..5, 4096)],
        &[(0..3, 0), (3..3, 4096)],
        &[(0..3, 0), (3..3, 0)],
    ];
    for layout in layouts {
        let held = layout.last().unwrap().0.end;
        'budgets: for budget in 0.. {
            for kept in [None, Some(0), Some(1), Some(20), Some(100)] {
                let disk = SimulatedStorage::new();
                put_old_segments(&disk, dir, layout);
                let dying = DyingDisk::new(&disk, budget);
                let first = Log::open_with(
                    dir,
                    LogOptions::default(),
                    ManualClock::new(),
                    dying.clone(),
                );
                if !dying.died() {
                    assert!(first.is_ok(), "{layout:?}: {first:?}");
                    break 'budgets;
                }
                drop(first);
                if let Some(bytes) = kept {
                    disk.power_cut_keeping(bytes);
                }
                let context =
                    format!("{layout:?}, died at change {budget}, power cut keeping {kept:?}");
                let log =
                    Log::open_with(dir, LogOptions::default(), ManualClock::new(), disk.clone())
                        .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(all(&log), expected(0..held), "{context}");
                assert_eq!(log.append(&payload(held)).unwrap(), held, "{context}");
                drop(log);
                disk.power_cut();
                let log = Log::open_with(dir, LogOptions::default(), ManualClock::new(), disk)
                    .unwrap_or_else(|e| panic!("{context}, reopened: {e}"));
                assert_eq!(all(&log), expected(0..held + 1), "{context}");
            }
            if budget > 100 {
                panic!("{layout:?}: the open never finished");
            }
        }
    }
}

#[test]
fn a_torn_record_carrying_an_old_format_record_in_an_old_newest_segment_is_corruption() {
    // The earlier format has no salt: a whole record of that format inside a torn record's
    // payload is taken for one appended after it, so the tail is not cut.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = write_old_segment(dir.path(), 0..3, 0);
    let mut carried = old_frame(&payload(9));
    carried.extend_from_slice(&[7; 40]);
    let torn = old_frame(&carried);
    bytes.extend_from_slice(&torn[..torn.len() - 10]);
    fs::write(segment_path(dir.path(), 0), &bytes).unwrap();
    match Log::open(dir.path(), LogOptions::default()).unwrap_err() {
        Error::Corrupt { position, .. } => {
            assert_eq!(position, bytes.len() as u64 - (torn.len() as u64 - 10));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(segment_path(dir.path(), 0)).unwrap(), bytes);
}
