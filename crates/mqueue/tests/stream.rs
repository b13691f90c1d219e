//! Streams and consumer groups: per-key order, at-least-once delivery across restarts and power
//! cuts, durable commits, and clear errors.

#[path = "support/dying_disk.rs"]
mod dying_disk;

use std::collections::BTreeMap;
use std::path::Path;

use dying_disk::DyingDisk;
use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, thread};
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, LogOptions, Retention, SimulatedStorage};
use infra_mqueue::stream::{Stream, StreamOptions};

fn options(partitions: u32) -> StreamOptions {
    StreamOptions {
        partitions,
        ..StreamOptions::default()
    }
}

#[test]
fn each_key_is_read_in_publish_order_and_keys_spread() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream::open(dir.path(), options(4)).unwrap();
    let mut published: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..400u64 {
        let key = format!("key-{}", i % 13);
        let (partition, _) = stream
            .publish(key.as_bytes(), format!("{key}/{i}").as_bytes())
            .unwrap();
        assert_eq!(partition, stream.partition_for(key.as_bytes()));
        published.entry(key).or_default().push(i);
    }
    let used: std::collections::BTreeSet<u32> = (0..13)
        .map(|k| stream.partition_for(format!("key-{k}").as_bytes()))
        .collect();
    assert!(used.len() > 1, "13 keys all in one of 4 partitions");

    let mut group = stream.group("readers").unwrap();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    loop {
        let batch = group.poll(7).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        for message in batch {
            let text = String::from_utf8(message.payload).unwrap();
            let (key, i) = text.split_once('/').unwrap();
            seen.entry(key.to_owned())
                .or_default()
                .push(i.parse().unwrap());
        }
    }
    assert_eq!(seen, published);
}

#[test]
fn uncommitted_messages_come_back_committed_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stream = Stream::open(dir.path(), options(2)).unwrap();
        for i in 0..10u8 {
            stream.publish(&[i], &[i]).unwrap();
        }
        let mut group = stream.group("g").unwrap();
        assert_eq!(group.poll(4).unwrap().len(), 4);
        group.commit().unwrap();
        let unprocessed = group.poll(3).unwrap();
        assert_eq!(unprocessed.len(), 3);
        group.rewind();
        assert_eq!(group.poll(3).unwrap(), unprocessed, "rewind redelivers");
        // The consumer "dies" here: no commit.
    }
    let stream = Stream::open(dir.path(), options(2)).unwrap();
    let mut group = stream.group("g").unwrap();
    let rest = group.poll(100).unwrap();
    assert_eq!(rest.len(), 6, "the 4 committed are not redelivered");
    let mut payloads: Vec<u8> = rest.iter().map(|m| m.payload[0]).collect();
    payloads.sort_unstable();
    payloads.dedup();
    assert_eq!(payloads.len(), 6);
    // Groups are independent.
    assert_eq!(stream.group("other").unwrap().poll(100).unwrap().len(), 10);
}

#[test]
fn commits_survive_a_power_cut_and_never_pass_what_was_kept() {
    let disk = SimulatedStorage::new();
    let dir = Path::new("/stream");
    let open = |fsync| {
        let opts = StreamOptions {
            log: LogOptions {
                fsync,
                ..LogOptions::default()
            },
            ..options(3)
        };
        Stream::open_with(dir, opts, ManualClock::new(), disk.clone()).unwrap()
    };
    {
        let stream = open(FsyncPolicy::Always);
        for i in 0..30u8 {
            stream.publish(&[i], &[i]).unwrap();
        }
        let mut group = stream.group("g").unwrap();
        assert_eq!(group.poll(12).unwrap().len(), 12);
        group.commit().unwrap();
        assert_eq!(group.poll(5).unwrap().len(), 5); // not committed
    }
    disk.power_cut();
    let stream = open(FsyncPolicy::Always);
    let mut group = stream.group("g").unwrap();
    assert_eq!(group.poll(100).unwrap().len(), 18);

    // Under Never, records and a commit past them can be lost together; the group then reads
    // the records published after the cut rather than skipping them.
    drop(group);
    drop(stream);
    let stream = open(FsyncPolicy::Never);
    for i in 0..9u8 {
        stream.publish(&[i], &[i]).unwrap();
    }
    let mut group = stream.group("late").unwrap();
    let read = group.poll(100).unwrap();
    assert_eq!(read.len(), 39);
    group.commit().unwrap();
    drop(group);
    drop(stream);
    disk.power_cut();
    let stream = open(FsyncPolicy::Never);
    for i in 0..3u8 {
        stream.publish(&[i], &[i]).unwrap();
    }
    let mut group = stream.group("late").unwrap();
    let fresh = group.poll(100).unwrap();
    assert_eq!(
        fresh.len(),
        3,
        "records published after the cut are delivered"
    );
    // At the offsets of records lost in the cut, which the group had read and committed: an
    // offset names one record only under `Always`.
    for message in &fresh {
        assert!(
            read.iter()
                .any(|m| (m.partition, m.offset) == (message.partition, message.offset)),
            "{message:?}"
        );
    }
}

#[test]
fn bad_names_counts_records_and_offsets_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for partitions in [0, 5000] {
        assert!(matches!(
            Stream::open(dir.path(), options(partitions)),
            Err(Error::InvalidOptions { .. })
        ));
    }
    let stream = Stream::open(dir.path(), options(2)).unwrap();
    for bad in ["", "a/b", "..", "with space", &"x".repeat(65)] {
        assert!(
            matches!(stream.group(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let too_large = vec![0; LogOptions::default().max_record_bytes as usize + 1];
    assert!(matches!(
        stream.publish(b"k", &too_large),
        Err(Error::RecordTooLarge { .. })
    ));
    stream.publish(b"k", b"v").unwrap();
    let mut group = stream.group("ok-name_1").unwrap();
    group.poll(1).unwrap();
    group.commit().unwrap();
    drop(group);
    let offsets = dir.path().join("groups").join("ok-name_1.offsets");
    let mut bytes = std::fs::read(&offsets).unwrap();
    bytes[13] ^= 1;
    std::fs::write(&offsets, &bytes).unwrap();
    assert!(matches!(
        stream.group("ok-name_1"),
        Err(Error::Corrupt { .. })
    ));
    drop(stream);
    assert!(matches!(
        Stream::open(dir.path(), options(3)),
        Err(Error::InvalidOptions { .. })
    ));
}

#[test]
fn a_poll_racing_retention_skips_what_it_removed_instead_of_failing() {
    // Tiny segments under a tiny size limit: every few publishes a roll deletes the oldest
    // segment, while the group reads the oldest record again and again.
    let dir = tempfile::tempdir().unwrap();
    let log = LogOptions {
        fsync: FsyncPolicy::Never,
        segment_bytes: 64,
        preallocate: 0,
        retention: Retention {
            max_bytes: Some(200),
            max_age: None,
        },
        ..LogOptions::default()
    };
    let stream = Arc::new(Stream::open(dir.path(), StreamOptions { log, ..options(1) }).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stream, done) = (Arc::clone(&stream), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                stream.publish(b"key", b"a record of some size").unwrap();
            }
        })
    };
    let mut group = stream.group("readers").unwrap();
    let mut failed = None;
    // The race is narrow (between reading the oldest offset and reading from it): many
    // rounds make it likely to be hit at least once.
    for _ in 0..200_000 {
        group.rewind();
        if let Err(error) = group.poll(1) {
            failed = Some(error);
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(failed.is_none(), "{failed:?}");
}

/// A poll that fails (here a record of partition 1 damaged on disk after it was written) moves
/// no read position: the records it read from partition 0 before the failure never reached the
/// consumer, so a later poll returns them and a commit cannot skip them.
#[test]
fn a_poll_that_fails_moves_no_read_position() {
    let disk = SimulatedStorage::new();
    let dir = Path::new("/stream");
    let stream = Stream::open_with(dir, options(2), ManualClock::new(), disk.clone()).unwrap();
    let key_in = |partition| {
        (0..100u32)
            .map(|k| format!("key-{k}"))
            .find(|key| stream.partition_for(key.as_bytes()) == partition)
            .unwrap()
    };
    let (first, second) = (key_in(0), key_in(1));
    stream.publish(first.as_bytes(), b"in partition 0").unwrap();
    stream
        .publish(second.as_bytes(), b"in partition 1")
        .unwrap();
    // The byte after the segment header and the record's 12-byte frame: its payload.
    let segment = dir.join("partition-00001").join("00000000000000000000.seg");
    assert!(disk.flip_bits(&segment, 40 + 12, 0x01));
    let mut group = stream.group("readers").unwrap();
    assert!(matches!(group.poll(10), Err(Error::Corrupt { .. })));
    group.commit().unwrap();
    assert_eq!(
        group.committed(0),
        Some(0),
        "a record the consumer never got was committed"
    );
    // The damage repaired, the next poll reads both records.
    assert!(disk.flip_bits(&segment, 40 + 12, 0x01));
    let payloads: Vec<Vec<u8>> = group
        .poll(10)
        .unwrap()
        .into_iter()
        .map(|message| message.payload)
        .collect();
    assert_eq!(
        payloads,
        [b"in partition 0".to_vec(), b"in partition 1".to_vec()]
    );
}

/// The open lowers every group's commits to what the partitions hold, so it reads every
/// offsets file: one damaged file keeps the whole stream closed, not only its group, until it
/// is restored or moved away (and nothing is deleted).
#[test]
fn a_damaged_offsets_file_keeps_the_stream_from_opening_until_it_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stream = Stream::open(dir.path(), options(2)).unwrap();
        stream.publish(b"k", b"v").unwrap();
        let mut group = stream.group("g").unwrap();
        assert_eq!(group.poll(1).unwrap().len(), 1);
        group.commit().unwrap();
    }
    let offsets = dir.path().join("groups").join("g.offsets");
    let good = std::fs::read(&offsets).unwrap();
    let mut bad = good.clone();
    bad[13] ^= 1;
    std::fs::write(&offsets, &bad).unwrap();
    let opened = Stream::open(dir.path(), options(2));
    assert!(
        matches!(&opened, Err(Error::Corrupt { segment, .. }) if *segment == offsets),
        "{opened:?}"
    );
    assert_eq!(std::fs::read(&offsets).unwrap(), bad, "nothing rewritten");
    std::fs::write(&offsets, &good).unwrap();
    let stream = Stream::open(dir.path(), options(2)).unwrap();
    let mut group = stream.group("g").unwrap();
    assert!(group.poll(10).unwrap().is_empty(), "the commit holds");
}

/// One key per partition of `stream`, in partition order.
fn a_key_in_each_partition(stream: &Stream) -> Vec<Vec<u8>> {
    let mut keys: Vec<Option<Vec<u8>>> = vec![None; stream.partitions() as usize];
    for k in 0u32.. {
        let key = format!("key-{k}").into_bytes();
        let slot = &mut keys[stream.partition_for(&key) as usize];
        if slot.is_none() {
            *slot = Some(key);
        }
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().map(Option::unwrap).collect()
}

/// Polls of fewer records than there are partitions take from the partitions in turn across
/// polls: a backlog in one partition does not keep a group from ever reading the others.
#[test]
fn small_polls_take_from_every_partition_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream::open(dir.path(), options(4)).unwrap();
    for key in a_key_in_each_partition(&stream) {
        for i in 0..10u8 {
            stream.publish(&key, &[i]).unwrap();
        }
    }
    let mut group = stream.group("g").unwrap();
    let partitions: Vec<u32> = (0..8)
        .map(|_| {
            let batch = group.poll(1).unwrap();
            assert_eq!(batch.len(), 1);
            batch[0].partition
        })
        .collect();
    assert_eq!(partitions, [0, 1, 2, 3, 0, 1, 2, 3]);
    // Larger polls that do not divide evenly go on from where the last one stopped.
    let mut taken = [0usize; 4];
    for _ in 0..4 {
        for message in group.poll(5).unwrap() {
            taken[message.partition as usize] += 1;
        }
    }
    assert_eq!(
        taken,
        [5, 5, 5, 5],
        "20 records over 4 partitions with backlogs"
    );
}

/// A commit cut off at any of its changes to the disk (the temporary file created, written,
/// synced, renamed, the directory synced; a write that dies puts down half its bytes), with
/// or without a power cut after it, leaves the group's old offsets or its new ones, never a
/// mix, and never a damaged offsets file.
#[test]
fn a_commit_cut_off_at_any_change_leaves_the_old_or_the_new_offsets() {
    let dir = Path::new("/stream");
    let committed = |stream: &Stream| -> Vec<u64> {
        let group = stream.group("g").unwrap();
        (0..3).map(|p| group.committed(p).unwrap()).collect()
    };
    // A stream of 30 durable records whose group committed 7 of them.
    let prepared = || {
        let disk = SimulatedStorage::new();
        let stream = Stream::open_with(dir, options(3), ManualClock::new(), disk.clone()).unwrap();
        for i in 0..30u8 {
            stream.publish(&[i], &[i]).unwrap();
        }
        let mut group = stream.group("g").unwrap();
        assert_eq!(group.poll(7).unwrap().len(), 7);
        group.commit().unwrap();
        let old = committed(&stream);
        (disk, old)
    };
    let mut kept = [false; 2]; // some crash point kept the old offsets, some the new ones
    for power_cut in [false, true] {
        for budget in 0.. {
            let (disk, old) = prepared();
            let dying = DyingDisk::new(&disk, budget);
            let context = format!("commit cut at change {budget}, power cut {power_cut}");
            // The open makes changes of its own (an fsync of each newest segment): a crash
            // there leaves the old offsets too.
            let attempt = (|| -> Result<Vec<u64>, Error> {
                let stream = Stream::open_with(dir, options(3), ManualClock::new(), dying.clone())?;
                let mut group = stream.group("g")?;
                assert_eq!(group.poll(11)?.len(), 11, "{context}");
                let result = group.commit();
                let positions: Vec<u64> = (0..3).map(|p| group.committed(p).unwrap()).collect();
                if result.is_err() {
                    assert_eq!(
                        positions, old,
                        "{context}: a failed commit moved the offsets"
                    );
                }
                result.map(|()| positions)
            })();
            if power_cut {
                disk.power_cut();
            }
            let stream =
                Stream::open_with(dir, options(3), ManualClock::new(), disk.clone()).unwrap();
            let found = committed(&stream);
            // What the commit would have made the offsets: the same polls, by another group.
            let mut group = stream.group("fresh").unwrap();
            group.poll(7).unwrap();
            group.commit().unwrap();
            let mut group = stream.group("fresh").unwrap();
            group.poll(11).unwrap();
            group.commit().unwrap();
            let new: Vec<u64> = (0..3).map(|p| group.committed(p).unwrap()).collect();
            drop(group);
            assert!(
                found == old || found == new,
                "{context}: {found:?}, old {old:?}, new {new:?}"
            );
            kept[usize::from(found == new)] = true;
            match attempt {
                Ok(positions) => {
                    assert!(!dying.died(), "{context}");
                    assert_eq!(found, positions, "{context}");
                    break;
                }
                Err(_) => assert!(dying.died(), "{context}"),
            }
        }
    }
    assert_eq!(
        kept,
        [true, true],
        "no crash point kept the old, or the new, offsets"
    );
}

/// Options refused are refused before anything is created: no directory is left behind.
#[test]
fn refused_log_options_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stream_dir = dir.path().join("orders");
    let opened = Stream::open(
        &stream_dir,
        StreamOptions {
            log: LogOptions {
                max_record_bytes: 0,
                ..LogOptions::default()
            },
            ..options(2)
        },
    );
    assert!(
        matches!(opened, Err(Error::InvalidOptions { .. })),
        "{opened:?}"
    );
    assert!(
        !stream_dir.exists(),
        "a refused open created the stream's directory"
    );
}

/// A poll bounded in bytes returns payloads adding up to at most its bytes, and always at least
/// one record, so a consumer moves on past a record larger than its budget; the records a poll
/// leaves come with the next, none skipped and none twice.
#[test]
fn a_poll_within_a_byte_budget_holds_at_most_that_many_bytes_and_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream::open(dir.path(), options(2)).unwrap();
    let keys = a_key_in_each_partition(&stream);
    for i in 0..10u8 {
        stream
            .publish(&keys[usize::from(i % 2)], &[i; 1_000])
            .unwrap();
    }
    let mut group = stream.group("g").unwrap();
    let mut seen = Vec::new();
    let first = group.poll_within(100, 3_500).unwrap();
    assert_eq!(first.len(), 3, "3,000 bytes fit, a fourth record would not");
    seen.extend(first);
    let one = group.poll_within(100, 10).unwrap();
    assert_eq!(
        one.len(),
        1,
        "a record larger than the budget still comes, alone"
    );
    seen.extend(one);
    let exact = group.poll_within(100, 2_000).unwrap();
    assert_eq!(exact.len(), 2, "a budget met exactly");
    seen.extend(exact);
    seen.extend(group.poll(100).unwrap());
    let mut payloads: Vec<u8> = seen.iter().map(|m| m.payload[0]).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, (0..10).collect::<Vec<u8>>());
    assert!(seen.iter().all(|m| m.payload.len() == 1_000));
}
