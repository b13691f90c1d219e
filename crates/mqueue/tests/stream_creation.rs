//! Creating a stream is crash-safe: a first open that dies at any of its file operations (a
//! process crash, or a power cut after it) leaves a directory the next open completes, and a
//! stream that holds records is never reshaped or emptied by it.

#[path = "support/dying_disk.rs"]
mod dying_disk;

use std::fmt;
use std::io;
use std::path::Path;

use dying_disk::DyingDisk;
use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Mutex};
use infra_mqueue::Error;
use infra_mqueue::log::{Log, LogOptions, SimulatedStorage, Storage, StorageFile};
use infra_mqueue::queue::{QueueOptions, WorkQueue};
use infra_mqueue::stream::{Stream, StreamOptions};

const DIR: &str = "/orders";
const PARTITIONS: u32 = 4;

fn options(partitions: u32) -> StreamOptions {
    StreamOptions {
        partitions,
        ..StreamOptions::default()
    }
}

/// Opens the stream on `disk` as a process that has not crashed.
fn reopen(disk: &SimulatedStorage, partitions: u32) -> Result<Stream, Error> {
    Stream::open_with(
        Path::new(DIR),
        options(partitions),
        ManualClock::new(),
        disk.clone(),
    )
}

/// The stream works: a record published to every partition is read back by a group.
fn assert_usable(stream: &Stream, context: &str) {
    assert_eq!(stream.partitions(), PARTITIONS, "{context}");
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0u32.. {
        let key = i.to_le_bytes().to_vec();
        if !keys
            .iter()
            .any(|k| stream.partition_for(k) == stream.partition_for(&key))
        {
            keys.push(key);
        }
        if keys.len() == PARTITIONS as usize {
            break;
        }
    }
    for key in &keys {
        stream.publish(key, key).expect(context);
    }
    let mut group = stream.group("check").expect(context);
    assert_eq!(
        group.poll(100).expect(context).len(),
        keys.len(),
        "{context}"
    );
    group.commit().expect(context);
}

/// Runs `first_open` on a disk that dies at its first change, then at its second, and so on,
/// until an open makes every change it needs: after each crash, `after_crash` gets the disk as
/// the crash left it, the crash point and what the dying open returned. Returns the crash
/// points tried and what the open that did not die returned.
fn walk_crash_points<T>(
    first_open: impl Fn(DyingDisk) -> T,
    mut after_crash: impl FnMut(&SimulatedStorage, u64, T),
) -> (u64, T) {
    for budget in 0.. {
        let disk = SimulatedStorage::new();
        let dying = DyingDisk::new(&disk, budget);
        let first = first_open(dying.clone());
        if !dying.died() {
            return (budget, first);
        }
        after_crash(&disk, budget, first);
    }
    unreachable!("the loop returns once an open does not die")
}

/// Every crash point of a first open, found by letting it make one more change each time
/// until it succeeds; after each, `after_crash` runs on the disk and a plain open must
/// complete the stream, which then takes records, survives another reopen with its records
/// and refuses another partition count. Returns the crash points tried.
fn every_crash_point_of_a_first_open(after_crash: impl Fn(&SimulatedStorage)) -> u64 {
    let first_open = |dying| {
        Stream::open_with(
            Path::new(DIR),
            options(PARTITIONS),
            ManualClock::new(),
            dying,
        )
    };
    let (budget, last) = walk_crash_points(first_open, |disk, budget, first| {
        assert!(first.is_err(), "crash at change {budget}: the open went on");
        after_crash(disk);
        let context = format!("reopened after a crash at change {budget}");
        let stream = reopen(disk, PARTITIONS).expect(&context);
        assert_usable(&stream, &context);
        drop(stream);
        let stream = reopen(disk, PARTITIONS).expect(&context);
        let held: u64 = (0..PARTITIONS)
            .map(|p| stream.partition(p).expect("a partition").next_offset())
            .sum();
        assert_eq!(held, u64::from(PARTITIONS), "{context}");
        drop(stream);
        assert!(
            matches!(
                reopen(disk, PARTITIONS + 1),
                Err(Error::InvalidOptions { .. })
            ),
            "{context}: another partition count"
        );
    });
    last.expect("an open that made every change it needed");
    budget
}

#[test]
fn a_first_open_that_crashed_at_any_change_is_completed_by_the_next() {
    let crash_points = every_crash_point_of_a_first_open(|_| {});
    // Four partitions of several changes each, and the stream's own.
    assert!(crash_points > 4 * 3, "{crash_points} crash points");
}

#[test]
fn a_first_open_cut_off_by_a_power_loss_at_any_change_is_completed_by_the_next() {
    let crash_points = every_crash_point_of_a_first_open(SimulatedStorage::power_cut);
    assert!(crash_points > 4 * 3, "{crash_points} crash points");
}

/// A stream without the mark of a finished creation whose partitions hold records (written
/// before streams were marked) keeps its partition count: asked for more partitions, the open
/// is refused and nothing is changed.
#[test]
fn an_unmarked_stream_with_records_is_not_reshaped() {
    let disk = SimulatedStorage::new();
    let stream = reopen(&disk, 2).unwrap();
    stream.publish(b"k", b"kept").unwrap();
    drop(stream);
    // As a stream written before the mark existed: no mark.
    let mark = disk
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .find(|name| !name.starts_with("partition-") && name != "groups")
        .expect("a mark beside the partitions");
    disk.remove(&Path::new(DIR).join(mark)).unwrap();
    assert!(matches!(
        reopen(&disk, PARTITIONS),
        Err(Error::InvalidOptions { .. })
    ));
    let stream = reopen(&disk, 2).unwrap();
    let held: u64 = (0..2)
        .map(|p| stream.partition(p).unwrap().next_offset())
        .sum();
    assert_eq!(held, 1);
}

/// A mark whose bytes were damaged (its count flipped) is `Corrupt`: the open neither trusts
/// the count nor takes the stream for an unfinished one, and deletes nothing; mended, the
/// stream opens with its record.
#[test]
fn a_damaged_mark_is_corrupt_and_nothing_is_deleted() {
    let disk = SimulatedStorage::new();
    let stream = reopen(&disk, 2).unwrap();
    stream.publish(b"k", b"kept").unwrap();
    drop(stream);
    let mark = Path::new(DIR).join("stream.mark");
    // The first byte of the count, after the 8-byte magic.
    assert!(disk.flip_bits(&mark, 8, 0b110));
    for partitions in [2, 4] {
        assert!(matches!(
            reopen(&disk, partitions),
            Err(Error::Corrupt { .. })
        ));
    }
    assert!(disk.flip_bits(&mark, 8, 0b110));
    let stream = reopen(&disk, 2).unwrap();
    let held: u64 = (0..2)
        .map(|p| stream.partition(p).unwrap().next_offset())
        .sum();
    assert_eq!(held, 1);
}

/// A finished stream whose partition directory is gone is corrupt, not recreated empty.
#[test]
fn a_finished_stream_missing_a_partition_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream::open(dir.path(), options(2)).unwrap();
    stream.publish(b"k", b"v").unwrap();
    drop(stream);
    let partition = dir.path().join("partition-00001");
    std::fs::remove_dir_all(&partition).unwrap();
    assert!(matches!(
        Stream::open(dir.path(), options(2)),
        Err(Error::Corrupt { .. })
    ));
    assert!(!partition.exists(), "nothing recreated");
}

/// A new stream in a new directory keeps an acknowledged record through a power loss: the
/// names of the directories it created (its own in its parent, not only the files in it) are
/// made durable.
#[test]
fn a_new_streams_acknowledged_record_survives_a_power_loss() {
    let disk = SimulatedStorage::new();
    let dir = Path::new("/data/orders");
    let stream = Stream::open_with(dir, options(2), ManualClock::new(), disk.clone()).unwrap();
    let (partition, offset) = stream.publish(b"order-1", b"paid").unwrap();
    disk.power_cut();
    drop(stream);
    let stream = Stream::open_with(dir, options(2), ManualClock::new(), disk.clone()).unwrap();
    let log = stream.partition(partition).unwrap();
    assert_eq!(
        log.next_offset(),
        offset + 1,
        "the acknowledged record was lost"
    );
    assert_eq!(log.read(offset, 1).unwrap()[0].payload, b"paid");
}

/// A first open that died at any change, then an open that completes the stream and takes
/// records, then a power loss: the records are there, because the completing open made
/// durable the names the dead one created and never synced (the stream directory's own).
#[test]
fn records_taken_after_a_crashed_creation_was_completed_survive_a_power_loss() {
    let first_open = |dying| {
        Stream::open_with(
            Path::new(DIR),
            options(PARTITIONS),
            ManualClock::new(),
            dying,
        )
    };
    walk_crash_points(first_open, |disk, budget, first| {
        drop(first);
        let context = format!("completed after a crash at change {budget}, then a power loss");
        let stream = reopen(disk, PARTITIONS).expect(&context);
        assert_usable(&stream, &context);
        disk.power_cut();
        drop(stream);
        let stream = reopen(disk, PARTITIONS).expect(&context);
        let held: u64 = (0..PARTITIONS)
            .map(|p| stream.partition(p).expect("a partition").next_offset())
            .sum();
        assert_eq!(held, u64::from(PARTITIONS), "{context}");
    })
    .1
    .expect("an open that made every change it needed");
}

/// The same for a plain log: its first open died at any change, the next open appended a
/// record, then a power loss; the record is there (the next open, finding no segment, synced
/// the directory's name the dead one had not).
#[test]
fn a_logs_record_after_its_crashed_first_open_survives_a_power_loss() {
    let dir = Path::new("/events");
    let first_open = |dying| Log::open_with(dir, LogOptions::default(), ManualClock::new(), dying);
    walk_crash_points(first_open, |disk, budget, first| {
        drop(first);
        let context = format!("a log reopened after a crash at change {budget}, then a power loss");
        let log = Log::open_with(dir, LogOptions::default(), ManualClock::new(), disk.clone())
            .expect(&context);
        log.append(b"kept").expect(&context);
        disk.power_cut();
        drop(log);
        let log = Log::open_with(dir, LogOptions::default(), ManualClock::new(), disk.clone())
            .expect(&context);
        assert_eq!(log.next_offset(), 1, "{context}");
    })
    .1
    .expect("an open that made every change it needed");
}

/// The same for a durable work queue: its first open died at any change, the next open
/// took a message, then a power loss; the message is there to receive.
#[test]
fn a_queues_message_after_its_crashed_first_open_survives_a_power_loss() {
    let dir = Path::new("/jobs");
    let first_open =
        |dying| WorkQueue::open_with(dir, QueueOptions::default(), ManualClock::new(), dying);
    walk_crash_points(first_open, |disk, budget, first| {
        drop(first);
        let context =
            format!("a queue reopened after a crash at change {budget}, then a power loss");
        let plain = || {
            WorkQueue::open_with(
                dir,
                QueueOptions::default(),
                ManualClock::new(),
                disk.clone(),
            )
        };
        let queue = plain().expect(&context);
        queue.send("kept").expect(&context);
        disk.power_cut();
        drop(queue);
        let queue = plain().expect(&context);
        let delivery = queue.try_receive().expect(&context).expect(&context);
        assert_eq!(delivery.payload(), b"kept", "{context}");
    })
    .1
    .expect("an open that made every change it needed");
}

/// A disk that, the first time the stream directory is listed after its mark was looked
/// for (the open reading the layout), runs `meanwhile` (another process's whole open) after
/// reading the list and before handing it back: the listing open then goes on from what it
/// read.
#[derive(Clone)]
struct RacingDisk {
    disk: SimulatedStorage,
    mark_looked_for: Arc<AtomicBool>,
    meanwhile: Arc<Mutex<Option<Meanwhile>>>,
}

/// What another process does while the racing open is between reading and acting.
type Meanwhile = Box<dyn FnOnce() + Send>;

impl fmt::Debug for RacingDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RacingDisk").finish_non_exhaustive()
    }
}

impl Storage for RacingDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let names = self.disk.list(dir)?;
        if dir == Path::new(DIR) && self.mark_looked_for.load(Ordering::SeqCst) {
            let meanwhile = self.meanwhile.lock().take();
            if let Some(meanwhile) = meanwhile {
                meanwhile();
            }
        }
        Ok(names)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        if path == Path::new(DIR).join("stream.mark") {
            self.mark_looked_for.store(true, Ordering::SeqCst);
        }
        self.disk.open(path, create)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}

/// Two processes create one stream at once with different partition counts: one finishes
/// (and publishes) while the other is between reading the layout and creating partitions.
/// At most one of them may succeed, or keys would go to partitions by two counts.
#[test]
fn two_opens_of_a_new_stream_at_once_do_not_both_succeed() {
    let disk = SimulatedStorage::new();
    let first_opened = Arc::new(Mutex::new(None));
    let meanwhile: Meanwhile = Box::new({
        let disk = disk.clone();
        let first_opened = Arc::clone(&first_opened);
        move || {
            let opened = reopen(&disk, PARTITIONS)
                .map(|stream| stream.publish(b"order-1", b"paid").map(drop));
            *first_opened.lock() = Some(opened.is_ok());
        }
    });
    let racing = RacingDisk {
        disk: disk.clone(),
        mark_looked_for: Arc::new(AtomicBool::new(false)),
        meanwhile: Arc::new(Mutex::new(Some(meanwhile))),
    };
    let second = Stream::open_with(
        Path::new(DIR),
        options(2 * PARTITIONS),
        ManualClock::new(),
        racing,
    );
    let first_opened = first_opened.lock().expect("the other open ran");
    assert!(
        !(first_opened && second.is_ok()),
        "both opens succeeded, with {PARTITIONS} and {} partitions",
        2 * PARTITIONS
    );
}

/// With `create` off, a stream that is not there (a mistyped topic) is an error and nothing
/// is created: not the directory, nor anything in an empty one. A stream that is there opens
/// as usual, and so does one whose creation was cut short (a partition, no mark yet).
#[test]
fn an_unknown_stream_is_refused_when_create_is_off() {
    let disk = SimulatedStorage::new();
    let open = |dir: &str| {
        Stream::open_with(
            Path::new(dir),
            StreamOptions {
                create: false,
                ..options(PARTITIONS)
            },
            ManualClock::new(),
            disk.clone(),
        )
    };
    let refused = open("/missing");
    assert!(
        matches!(&refused, Err(Error::UnknownStream { dir }) if dir == Path::new("/missing")),
        "{refused:?}"
    );
    assert!(disk.list(Path::new("/missing")).is_err(), "nothing created");

    disk.create_dir_all(Path::new("/empty")).unwrap();
    let refused = open("/empty");
    assert!(
        matches!(refused, Err(Error::UnknownStream { .. })),
        "{refused:?}"
    );
    assert_eq!(
        disk.list(Path::new("/empty")).unwrap(),
        Vec::<String>::new()
    );

    drop(reopen(&disk, PARTITIONS).unwrap());
    assert_usable(&open(DIR).unwrap(), "an existing stream");

    // A creation cut short: one partition made, no mark yet.
    disk.create_dir_all(Path::new("/cut/partition-00000"))
        .unwrap();
    assert_eq!(open("/cut").unwrap().partitions(), PARTITIONS);
}
