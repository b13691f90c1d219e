//! infra-mqueue's log, durable appends of 100-byte messages, beside the floor and a peer, all in
//! one run on the same disk (the system temp directory):
//!
//! - `infra always/N` — `FsyncPolicy::Always` with N producer threads sharing one log, each
//!   calling `Log::append`: every append returns after an fsync covering it; concurrent appends
//!   share fsyncs (group commit), so one fsync covers at most N appends.
//! - `infra always/8-pipelined` — the same with `Log::append_nowait`: each of 8 producers keeps
//!   64 appends in flight and acknowledges each when its ticket's `wait` returns (after an
//!   fsync covering it), so one fsync can cover up to 512.
//! - `infra always/8-async` — 8 tasks on a multi-thread tokio runtime (one worker per core),
//!   each awaiting `Log::append_async`: every append returns after an fsync covering it, run on
//!   tokio's blocking pool and shared with the other tasks (group commit).
//! - `queue always/N` — the durable work queue: N threads each calling `WorkQueue::send`, which
//!   returns after an fsync covering the message (sends share fsyncs as appends do).
//! - `write+fdatasync/1` — the floor of one-fsync-per-message: a plain loop of `write_all` and
//!   `sync_data` on one file.
//! - `infra never/1` and `yaque/1` — equal durability without fsync: yaque's `try_send` writes
//!   and flushes to the OS (a process crash keeps the message, a power loss may not), which is
//!   what `FsyncPolicy::Never` promises. Both send from one spawned thread.
//!
//! Each measurement appends `iters` messages in total and reports the time per message.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The drivers use std's threads and barrier outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infra_mqueue::log::{AppendTicket, FsyncPolicy, Log, LogOptions};
use infra_mqueue::queue::{QueueOptions, WorkQueue};

const MESSAGE: [u8; 100] = [b'm'; 100];

/// Appends each pipelined producer keeps in flight.
const IN_FLIGHT: usize = 64;

/// How a producer appends.
#[derive(Clone, Copy)]
enum Producer {
    /// `Log::append`: one append in flight.
    Synchronous,
    /// `Log::append_nowait`, waiting on the oldest ticket when `IN_FLIGHT` are in flight.
    Pipelined,
}

/// What runs the producers.
#[derive(Clone, Copy)]
enum Driver {
    /// One thread per producer.
    Threads(Producer),
    /// One tokio task per producer, awaiting `Log::append_async`, on a multi-thread runtime.
    Tasks,
}

fn produce(log: &Log, producer: Producer, count: u64) {
    match producer {
        Producer::Synchronous => {
            for _ in 0..count {
                log.append(&MESSAGE).expect("append");
            }
        }
        Producer::Pipelined => {
            let mut in_flight: VecDeque<AppendTicket<'_>> = VecDeque::with_capacity(IN_FLIGHT);
            for _ in 0..count {
                if in_flight.len() == IN_FLIGHT
                    && let Some(oldest) = in_flight.pop_front()
                {
                    oldest.wait().expect("durable");
                }
                in_flight.push_back(log.append_nowait(&MESSAGE).expect("append"));
            }
            for ticket in in_flight {
                ticket.wait().expect("durable");
            }
        }
    }
}

fn log_options(fsync: FsyncPolicy, preallocate: bool) -> LogOptions {
    let defaults = LogOptions::default();
    LogOptions {
        fsync,
        preallocate: if preallocate { defaults.preallocate } else { 0 },
        ..defaults
    }
}

/// `iters` operations spread over `producers` threads started together, each running `work`
/// with its share; the wall time of them all.
fn timed_threads(
    producers: u64,
    iters: u64,
    work: impl Fn(u64) + Send + Sync + 'static,
) -> Duration {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(usize::try_from(producers).unwrap_or(1) + 1));
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let (work, barrier) = (Arc::clone(&work), Arc::clone(&barrier));
            let share = iters / producers + u64::from(p < iters % producers);
            std::thread::spawn(move || {
                barrier.wait();
                work(share);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("producer");
    }
    start.elapsed()
}

/// `iters` appends spread over `producers` threads sharing one log; the wall time of them all.
fn infra_appends(options: LogOptions, producers: u64, producer: Producer, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), options).expect("open");
    timed_threads(producers, iters, move |share| {
        produce(&log, producer, share);
    })
}

/// `iters` appends spread over `tasks` tokio tasks sharing one log on a multi-thread runtime;
/// the wall time of them all.
fn infra_async_appends(options: LogOptions, tasks: u64, iters: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Log::open(dir.path(), options).expect("open"));
    runtime.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let log = Arc::clone(&log);
                let share = iters / tasks + u64::from(t < iters % tasks);
                tokio::spawn(async move {
                    for _ in 0..share {
                        log.append_async(&MESSAGE).await.expect("append");
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("task");
        }
        start.elapsed()
    })
}

/// `iters` sends spread over `producers` threads sharing one durable work queue (fsync
/// `Always`); the wall time of them all.
fn queue_sends(producers: u64, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing is received: room for every send of the longest sample.
    let options = QueueOptions::default().capacity(usize::MAX);
    let queue = WorkQueue::open(dir.path(), options).expect("open");
    timed_threads(producers, iters, move |share| {
        for _ in 0..share {
            queue.send(&MESSAGE[..]).expect("send");
        }
    })
}

fn durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqueue/durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let synchronous = Driver::Threads(Producer::Synchronous);
    let rows = [
        ("always/1", FsyncPolicy::Always, 1, synchronous),
        ("always/8", FsyncPolicy::Always, 8, synchronous),
        (
            "always/8-pipelined",
            FsyncPolicy::Always,
            8,
            Driver::Threads(Producer::Pipelined),
        ),
        ("always/8-async", FsyncPolicy::Always, 8, Driver::Tasks),
        ("never/1", FsyncPolicy::Never, 1, synchronous),
    ];
    for (name, fsync, producers, driver) in rows {
        // `Never` writes no zeros ahead whatever the option says.
        let variants: &[(&str, bool)] = match fsync {
            FsyncPolicy::Never => &[("", true)],
            _ => &[("", true), (" no-prealloc", false)],
        };
        for &(suffix, preallocate) in variants {
            group.bench_function(format!("infra {name}{suffix}"), |b| {
                b.iter_custom(|iters| {
                    let options = log_options(fsync, preallocate);
                    match driver {
                        Driver::Threads(producer) => {
                            infra_appends(options, producers, producer, iters)
                        }
                        Driver::Tasks => infra_async_appends(options, producers, iters),
                    }
                });
            });
        }
    }
    for producers in [1, 8] {
        group.bench_function(format!("queue always/{producers}"), |b| {
            b.iter_custom(|iters| queue_sends(producers, iters));
        });
    }
    group.bench_function("write+fdatasync/1", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("plain"))
                .expect("open");
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all(&MESSAGE).expect("write");
                file.sync_data().expect("fdatasync");
            }
            start.elapsed()
        });
    });
    // From a thread of its own, as the rows above append: while a second thread shares the
    // process's file table, the kernel takes a reference on the file for every write, which a
    // single-threaded process skips (about 70 ns a write here).
    group.bench_function("yaque/1", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let sender =
                std::sync::Mutex::new(yaque::Sender::open(dir.path().join("q")).expect("open"));
            timed_threads(1, iters, move |share| {
                let mut sender = sender.lock().expect("one producer");
                for _ in 0..share {
                    sender.try_send(MESSAGE).expect("send");
                }
            })
        });
    });
    group.finish();
}

criterion_group!(benches, durable);
criterion_main!(benches);
