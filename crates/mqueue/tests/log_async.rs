//! Async appends (feature `tokio`) on current-thread and multi-thread runtimes, over the
//! simulated disk: concurrent async appends share fsyncs, every returned offset survives a
//! power cut, a failed fsync reaches every waiter it was to cover, a dropped future loses nothing
//! and leaves no later append stuck, and a current-thread runtime runs other tasks while an
//! fsync is in flight.
//!
//! Where a test needs an fsync to stay in flight, the disk's file syncs wait at a gate the
//! test opens; nothing waits for time to pass (a gate gives up after a long real-time timeout,
//! only so that a regression fails instead of hanging).
#![cfg(feature = "tokio")]

use std::future::{Future, poll_fn};
use std::path::Path;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, thread};
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage, Storage};
use infra_mqueue::stream::{Stream, StreamOptions};

#[path = "support/dying_disk.rs"]
mod dying_disk;
#[path = "support/gated_disk.rs"]
mod gated_disk;
#[path = "support/hooked_disk.rs"]
mod hooked_disk;
#[path = "support/thread_recording_disk.rs"]
mod thread_recording_disk;

use dying_disk::DyingDisk;
use gated_disk::{Gate, GatedDisk, HUNG};
use thread_recording_disk::{Op, ThreadRecordingDisk};

const DIR: &str = "/log";

/// Default options: 64 MiB segments, so no roll adds an fsync here.
fn open(disk: &SimulatedStorage) -> Log {
    Log::open_with(
        Path::new(DIR),
        LogOptions::default(),
        ManualClock::new(),
        disk.clone(),
    )
    .unwrap()
}

/// A log whose file syncs wait at the returned (open) gate, which counts from after the open.
fn open_gated(disk: &SimulatedStorage) -> (Log, Arc<Gate>) {
    open_gated_with(disk, LogOptions::default(), ManualClock::new())
}

fn open_gated_with(
    disk: &SimulatedStorage,
    options: LogOptions,
    clock: ManualClock,
) -> (Log, Arc<Gate>) {
    let (gated, gate) = GatedDisk::new(disk);
    let log = Log::open_with(Path::new(DIR), options, clock, gated).unwrap();
    gate.reset();
    (log, gate)
}

/// The payloads a log opened again on `disk` holds, in order.
fn payloads_after_reopen(disk: &SimulatedStorage) -> Vec<Vec<u8>> {
    let records = open(disk).read(0, usize::MAX).unwrap();
    records.into_iter().map(|record| record.payload).collect()
}

/// Polls `future` once, with this task's waker, so the wake-up it registers is this task's.
async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(move |cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// What a power cut now leaves of the (dropped) log: the disk loses everything not fsynced, and
/// the log is reopened on it.
fn after_power_cut(disk: &SimulatedStorage) -> Vec<(u64, Vec<u8>)> {
    disk.power_cut();
    let records = open(disk).read(0, usize::MAX).unwrap();
    records.into_iter().map(|r| (r.offset, r.payload)).collect()
}

/// An fsync held in flight while 32 more async appends write: the first append's fsync covers
/// only its own record, and the next one, led by one of the 32, covers all of them.
async fn appends_during_an_fsync_share_the_next() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated(&disk);
    let before = disk.file_syncs();
    gate.set_closed(true);
    let payloads: Vec<Vec<u8>> = (0..33u32)
        .map(|i| format!("order {i}").into_bytes())
        .collect();
    let mut appends: Vec<_> = payloads
        .iter()
        .map(|payload| Box::pin(log.append_async(payload)))
        .collect();
    for append in &mut appends {
        // The first writes its record and starts the fsync; the others write theirs behind it.
        assert!(poll_once(append.as_mut()).await.is_pending());
    }
    assert_eq!(log.next_offset(), 33);
    assert!(log.read(0, 1).unwrap().is_empty(), "nothing is durable yet");
    gate.set_closed(false);
    let mut offsets = Vec::new();
    for append in appends {
        offsets.push(append.await.unwrap());
    }
    assert_eq!(offsets, (0..33).collect::<Vec<u64>>());
    assert_eq!(
        disk.file_syncs() - before,
        2,
        "33 async appends, two fsyncs"
    );
    drop(log);
    let expected: Vec<(u64, Vec<u8>)> = (0..).zip(payloads).collect();
    assert_eq!(after_power_cut(&disk), expected);
}

#[tokio::test(flavor = "current_thread")]
async fn appends_during_an_fsync_share_the_next_on_a_current_thread_runtime() {
    appends_during_an_fsync_share_the_next().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_an_fsync_share_the_next_on_a_multi_thread_runtime() {
    appends_during_an_fsync_share_the_next().await;
}

/// 8 tasks × 25 async appends, free-running: every offset returned is distinct, readable, and
/// survives a power cut with its payload; per task, offsets grow in the order they returned.
async fn concurrent_appends_survive_a_power_cut() {
    let disk = SimulatedStorage::new();
    let log = Arc::new(open(&disk));
    let before = disk.file_syncs();
    let tasks: Vec<_> = (0..8u32)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25u32 {
                    let payload = format!("{task}:{i}").into_bytes();
                    let offset = log.append_async(&payload).await.unwrap();
                    acked.push((offset, payload));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|pair| pair[0].0 < pair[1].0));
        acked.extend(mine);
    }
    acked.sort();
    assert_eq!(acked.len(), 200);
    let syncs = disk.file_syncs() - before;
    // How many are shared depends on the scheduler; `appends_during_an_fsync_share_the_next`
    // and the loom models check the sharing itself.
    assert!((1..=200).contains(&syncs), "{syncs} fsyncs for 200 appends");
    let readable: Vec<(u64, Vec<u8>)> = (log.read(0, usize::MAX).unwrap().into_iter())
        .map(|r| (r.offset, r.payload))
        .collect();
    assert_eq!(readable, acked);
    drop(log); // the tasks' clones went with them
    assert_eq!(after_power_cut(&disk), acked);
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_appends_survive_a_power_cut_on_a_current_thread_runtime() {
    concurrent_appends_survive_a_power_cut().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_survive_a_power_cut_on_a_multi_thread_runtime() {
    concurrent_appends_survive_a_power_cut().await;
}

/// While an async append's fsync is held in flight, the (only) runtime thread runs another task
/// to completion; the append completes once the fsync does.
#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_runs_other_tasks_during_an_fsync() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated(&disk);
    gate.set_closed(true);
    let mut append = pin!(log.append_async(b"slow disk"));
    assert!(poll_once(append.as_mut()).await.is_pending());
    // The fsync is now inside the disk, on another thread, not on this one.
    gate.wait_until(|arrived, _| arrived == 1);
    let other = tokio::spawn(async { 6 * 7 });
    assert_eq!(other.await.unwrap(), 42);
    assert!(poll_once(append.as_mut()).await.is_pending());
    gate.set_closed(false);
    assert_eq!(append.await.unwrap(), 0);
    assert_eq!(log.read(0, 1).unwrap()[0].payload, b"slow disk");
}

/// A failed fsync reaches every async waiter held behind it, as the fsync's I/O error; later
/// appends, async or blocking, fail with `Failed`.
async fn a_failed_fsync_reaches_every_waiter() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated(&disk);
    gate.set_closed(true);
    let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 8]).collect();
    let mut appends: Vec<_> = payloads
        .iter()
        .map(|payload| Box::pin(log.append_async(payload)))
        .collect();
    for append in &mut appends {
        assert!(poll_once(append.as_mut()).await.is_pending());
    }
    disk.set_failing(true);
    gate.set_closed(false);
    for append in appends {
        match append.await {
            Err(Error::Io { op: "fsync", .. }) => {}
            other => panic!("a waiter of the failed fsync got {other:?}"),
        }
    }
    disk.set_failing(false);
    assert!(matches!(
        log.append_async(b"later").await,
        Err(Error::Failed)
    ));
    assert!(matches!(log.append(b"later"), Err(Error::Failed)));
    assert!(
        log.read(0, 10).unwrap().is_empty(),
        "nothing was acknowledged"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_fsync_reaches_every_waiter_on_a_current_thread_runtime() {
    a_failed_fsync_reaches_every_waiter().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_reaches_every_waiter_on_a_multi_thread_runtime() {
    a_failed_fsync_reaches_every_waiter().await;
}

/// An append whose future is dropped while its fsync is in flight: the fsync still runs and its
/// end is published, so the next append is not left waiting for a leader that went away, and
/// every record, acknowledged or not, survives a power cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_loses_nothing_and_blocks_nothing() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated(&disk);
    let before = disk.file_syncs();
    let first = log.append_async(b"acknowledged").await.unwrap();
    gate.set_closed(true);
    let mut dropped = Box::pin(log.append_async(b"dropped while syncing"));
    assert!(poll_once(dropped.as_mut()).await.is_pending());
    gate.wait_until(|arrived, _| arrived == 2);
    drop(dropped);
    gate.set_closed(false);
    let after = tokio::time::timeout(HUNG, log.append_async(b"after"))
        .await
        .expect("an append waited for the fsync of a dropped future forever");
    assert_eq!((first, after.unwrap()), (0, 2));
    // The first's fsync, the dropped one's (it ran), then one for "after", written later.
    assert_eq!(disk.file_syncs() - before, 3);
    drop(log);
    let expected: Vec<(u64, Vec<u8>)> = vec![
        (0, b"acknowledged".to_vec()),
        (1, b"dropped while syncing".to_vec()),
        (2, b"after".to_vec()),
    ];
    assert_eq!(after_power_cut(&disk), expected);
}

/// A thread blocked in `append` leads an fsync while an async append waits behind it: the end of
/// the blocked thread's fsync wakes the async waiter, which leads the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_append_waits_behind_a_blocking_appends_fsync() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated(&disk);
    let log = Arc::new(log);
    let before = disk.file_syncs();
    gate.set_closed(true);
    let blocking = {
        let log = Arc::clone(&log);
        tokio::task::spawn_blocking(move || log.append(b"blocking"))
    };
    gate.wait_until(|arrived, _| arrived == 1);
    let mut waiting = Box::pin(log.append_async(b"async"));
    assert!(poll_once(waiting.as_mut()).await.is_pending());
    assert_eq!(
        disk.file_syncs(),
        before,
        "the async append started no fsync of its own yet"
    );
    gate.set_closed(false);
    assert_eq!(blocking.await.unwrap().unwrap(), 0);
    let offset = tokio::time::timeout(HUNG, waiting)
        .await
        .expect("the end of the blocked thread's fsync never woke the async waiter");
    assert_eq!(offset.unwrap(), 1);
    assert_eq!(disk.file_syncs() - before, 2);
    assert_eq!(log.read(0, 10).unwrap().len(), 2);
}

/// `Stream::publish_async` publishes to the key's partition, durably, from tasks on a
/// multi-thread runtime (its future is `Send`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_async_is_durable_per_key() {
    let disk = SimulatedStorage::new();
    let options = StreamOptions {
        partitions: 4,
        ..StreamOptions::default()
    };
    let open_stream = || {
        Stream::open_with(
            Path::new("/s"),
            options.clone(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap()
    };
    let stream = Arc::new(open_stream());
    let tasks: Vec<_> = (0..4u32)
        .map(|user| {
            let stream = Arc::clone(&stream);
            tokio::spawn(async move {
                let key = format!("user-{user}");
                let mut published = Vec::new();
                for event in 0..10u32 {
                    let payload = format!("{user}:{event}").into_bytes();
                    let (partition, offset) = stream
                        .publish_async(key.as_bytes(), &payload)
                        .await
                        .unwrap();
                    assert_eq!(partition, stream.partition_for(key.as_bytes()));
                    published.push((partition, offset, payload));
                }
                published
            })
        })
        .collect();
    let mut published = Vec::new();
    for task in tasks {
        published.extend(task.await.unwrap());
    }
    drop(stream); // the tasks' clones went with them
    disk.power_cut();
    let stream = open_stream();
    for (partition, offset, payload) in published {
        let log = stream.partition(partition).unwrap();
        assert_eq!(log.read(offset, 1).unwrap()[0].payload, payload);
    }
}

/// Segments of a few records: how the tests of rolls open their logs.
fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 150,
        ..LogOptions::default()
    }
}

/// Async appends and `publish_async` that fill their segment roll it on the blocking pool:
/// nothing (no fsync, no new segment's creation, no directory fsync) runs on the thread of a
/// current-thread runtime, and every record is read back in order.
#[tokio::test(flavor = "current_thread")]
async fn async_appends_roll_segments_on_the_blocking_pool() {
    let disk = SimulatedStorage::new();
    let (recording, recorder) = ThreadRecordingDisk::new(&disk);
    let log = Log::open_with(
        Path::new(DIR),
        small_segments(),
        ManualClock::new(),
        recording.clone(),
    )
    .unwrap();
    let stream_options = StreamOptions {
        partitions: 1,
        log: small_segments(),
        ..StreamOptions::default()
    };
    let stream = Stream::open_with(
        Path::new("/s"),
        stream_options,
        ManualClock::new(),
        recording,
    )
    .unwrap();
    recorder.clear();
    for i in 0..30u32 {
        assert_eq!(
            log.append_async(&i.to_le_bytes()).await.unwrap(),
            u64::from(i)
        );
        let (_, offset) = stream
            .publish_async(b"key", &i.to_le_bytes())
            .await
            .unwrap();
        assert_eq!(offset, u64::from(i));
    }
    let ops = recorder.ops_off_this_thread();
    for dir in [DIR, "/s/partition-00000"] {
        let created = ops
            .iter()
            .filter(|op| op.op == Op::Create && op.path.parent() == Some(Path::new(dir)))
            .count();
        assert!(created >= 3, "{dir} rolled at least 3 times: {ops:?}");
    }
    let read: Vec<Vec<u8>> = log
        .read(0, 100)
        .unwrap()
        .into_iter()
        .map(|record| record.payload)
        .collect();
    let sent: Vec<Vec<u8>> = (0..30u32).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(read, sent);
}

/// A process whose disk dies at each of its changes in turn (a roll's fsync of the finished
/// segment, its creation of the new one, the new header's fsync, the directory's fsync, an
/// append's write or fsync), while three tasks append asynchronously and roll on the blocking
/// pool, then a power cut keeping part of what was not synced: the log reopens (never
/// `Corrupt`) with each task's records in order, and under `Always` with every acknowledged
/// one. (Under `Never` only a roll's fsync makes the finished segment durable before the next
/// one's name: without it the reopen would find a torn segment before a newer one.)
fn check_power_cuts_during_async_rolls(fsync: FsyncPolicy) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let options = LogOptions {
        fsync,
        ..small_segments()
    };
    let mut completed = false;
    for budget in 0..600u64 {
        let disk = SimulatedStorage::new();
        let dying = DyingDisk::new(&disk, budget);
        let Ok(log) = Log::open_with(Path::new(DIR), options.clone(), ManualClock::new(), dying)
        else {
            continue;
        };
        let log = Arc::new(log);
        let acknowledged: Vec<Vec<u8>> = runtime.block_on(async {
            let tasks: Vec<_> = (0..3u8)
                .map(|task| {
                    let log = Arc::clone(&log);
                    tokio::spawn(async move {
                        let mut acknowledged = Vec::new();
                        for i in 0..12u8 {
                            let payload = vec![task, i, 0xAB, 0xCD, 0xEF];
                            match log.append_async(&payload).await {
                                Ok(_) => acknowledged.push(payload),
                                Err(_) => break,
                            }
                        }
                        acknowledged
                    })
                })
                .collect();
            let mut acknowledged = Vec::new();
            for task in tasks {
                acknowledged.extend(task.await.unwrap());
            }
            acknowledged
        });
        completed = acknowledged.len() == 36;
        drop(log);
        disk.power_cut_keeping(usize::try_from(budget * 37 % 100).unwrap());
        let reopened = Log::open_with(
            Path::new(DIR),
            options.clone(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap_or_else(|error| panic!("budget {budget}: the log did not reopen: {error}"));
        let recovered: Vec<Vec<u8>> = reopened
            .read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|record| record.payload)
            .collect();
        let promised = if fsync == FsyncPolicy::Always {
            &acknowledged[..]
        } else {
            &[]
        };
        for payload in promised {
            assert!(
                recovered.contains(payload),
                "budget {budget}: lost acknowledged {payload:?}"
            );
        }
        for task in 0..3u8 {
            let order: Vec<u8> = recovered
                .iter()
                .filter(|payload| payload[0] == task)
                .map(|payload| payload[1])
                .collect();
            let expected: Vec<u8> = (0..order.len() as u8).collect();
            assert_eq!(
                order, expected,
                "budget {budget}: task {task}'s records in order"
            );
        }
        if completed {
            break;
        }
    }
    assert!(
        completed,
        "a budget large enough for every append was reached"
    );
}

#[test]
fn a_power_cut_at_any_point_of_async_appends_that_roll_keeps_every_acknowledged_one() {
    check_power_cuts_during_async_rolls(FsyncPolicy::Always);
}

#[test]
fn a_power_cut_at_any_point_of_async_rolls_under_never_leaves_a_log_that_opens() {
    check_power_cuts_during_async_rolls(FsyncPolicy::Never);
}

/// Under `Interval`, an async append whose fsync is due waits for it without blocking; one
/// that is not due returns at once.
#[tokio::test(flavor = "current_thread")]
async fn interval_appends_run_a_due_fsync_off_the_runtime_thread() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let every = Duration::from_secs(1);
    let options = LogOptions {
        fsync: FsyncPolicy::Interval(every),
        ..LogOptions::default()
    };
    let (log, gate) = open_gated_with(&disk, options, clock.clone());
    let before = disk.file_syncs();
    assert_eq!(log.append_async(b"not due").await.unwrap(), 0);
    assert_eq!(disk.file_syncs(), before);
    clock.advance(every);
    gate.set_closed(true);
    let mut due = pin!(log.append_async(b"due"));
    assert!(poll_once(due.as_mut()).await.is_pending());
    gate.set_closed(false);
    assert_eq!(due.await.unwrap(), 1);
    assert_eq!(disk.file_syncs(), before + 1);
}

/// A log dropped while an async append's segment roll is held on the blocking pool lets go of
/// its directory only once the roll ended: the drop waits for it. A log opened again right
/// after the drop, and appended to, then keeps its record: had the roll gone on behind the
/// new log's back, its new segment would have been written over the one the new log rolled
/// to, and the acknowledged record lost.
#[tokio::test(flavor = "current_thread")]
async fn a_log_dropped_during_an_async_roll_lets_go_of_its_directory_once_the_roll_ended() {
    let disk = SimulatedStorage::new();
    let (log, gate) = open_gated_with(&disk, small_segments(), ManualClock::new());
    // 40 bytes of header and three records of 32 bytes: a fourth one needs a roll.
    for fill in [[1u8; 20], [2; 20], [3; 20]] {
        log.append(&fill).unwrap();
    }
    gate.reset();
    gate.set_closed(true);
    {
        let mut append = pin!(log.append_async(&[4; 20]));
        assert!(
            poll_once(append.as_mut()).await.is_pending(),
            "the append waits for its roll"
        );
        let held = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || held.wait_until(|arrived, _| arrived >= 1))
            .await
            .unwrap();
    }
    let started = Arc::new(AtomicBool::new(false));
    let restart = thread::spawn({
        let (disk, started) = (disk.clone(), Arc::clone(&started));
        move || {
            started.store(true, Ordering::Release);
            drop(log);
            let log = open(&disk);
            log.append(b"after").unwrap()
        }
    });
    // Spinning rather than sleeping on a channel, which would let this thread take the
    // processor from the dropping one: a drop that did not wait had its reopen come first.
    while !started.load(Ordering::Acquire) {
        thread::yield_now();
    }
    for _ in 0..100 {
        thread::yield_now();
    }
    gate.set_closed(false);
    assert_eq!(restart.join().unwrap(), 3);
    // The roll's two file syncs (the finished segment's, the new header's) have passed.
    gate.wait_until(|_, passed| passed >= 2);
    let records = payloads_after_reopen(&disk);
    assert_eq!(
        records,
        [vec![1; 20], vec![2; 20], vec![3; 20], b"after".to_vec()]
    );
}

/// The last handle of a log dropped on the blocking pool's only thread, while an async
/// append's roll waits in the pool's queue behind that very thread: the drop runs the roll
/// itself rather than wait for a thread that cannot come, and the log opens again with the
/// roll's new segment.
#[test]
fn a_log_dropped_on_the_pools_only_thread_runs_the_roll_queued_behind_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let disk = SimulatedStorage::new();
    let log = Arc::new(
        Log::open_with(
            Path::new(DIR),
            small_segments(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap(),
    );
    // 40 bytes of header and three records of 32 bytes: a fourth one needs a roll.
    for fill in [[1u8; 20], [2; 20], [3; 20]] {
        log.append(&fill).unwrap();
    }
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let (dropped, done) = tokio::sync::oneshot::channel::<()>();
    runtime.block_on(async {
        // The pool's only thread waits for the signal, then drops the last handle.
        let last = Arc::clone(&log);
        drop(tokio::task::spawn_blocking(move || {
            wait.blocking_recv().unwrap();
            drop(last);
            dropped.send(()).unwrap();
        }));
        let mut append = pin!(log.append_async(&[4; 20]));
        assert!(
            poll_once(append.as_mut()).await.is_pending(),
            "the append waits for its roll, queued behind the pool's only thread"
        );
    });
    drop(log);
    go.send(()).unwrap();
    let outcome = runtime.block_on(async { tokio::time::timeout(HUNG, done).await });
    // A drop that waited would keep the pool's thread forever: let the runtime go without it.
    runtime.shutdown_background();
    assert!(
        outcome.is_ok_and(|dropped| dropped.is_ok()),
        "the drop waited for a roll that could not start"
    );
    let segments = disk.list(Path::new(DIR)).unwrap();
    let segments = segments
        .iter()
        .filter(|name| name.ends_with(".seg"))
        .count();
    assert_eq!(segments, 2, "the roll's new segment was made");
    let records = payloads_after_reopen(&disk);
    assert_eq!(records, [vec![1; 20], vec![2; 20], vec![3; 20]]);
}
