//! infra-mqueue's log, durable appends of 100-byte messages, beside the floor and a peer, all in
//! one run on the same disk (the system temp directory):
//!
//! - `infra always/N` — `FsyncPolicy::Always` with N producer threads sharing one log: every
//!   append returns after an fsync covering it; concurrent appends share fsyncs (group commit).
//! - `write+fdatasync/1` — the floor of one-fsync-per-message: a plain loop of `write_all` and
//!   `sync_data` on one file.
//! - `infra never/1` and `yaque/1` — equal durability without fsync: yaque's `try_send` writes
//!   and flushes to the OS (a process crash keeps the message, a power loss may not), which is
//!   what `FsyncPolicy::Never` promises.
//!
//! Each measurement appends `iters` messages in total and reports the time per message.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The drivers use std's threads and barrier outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions};

const MESSAGE: [u8; 100] = [b'm'; 100];

fn log_options(fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        fsync,
        ..LogOptions::default()
    }
}

/// `iters` appends spread over `producers` threads sharing one log; the wall time of them all.
fn infra_appends(fsync: FsyncPolicy, producers: u64, iters: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Log::open(dir.path(), log_options(fsync)).expect("open"));
    let barrier = Arc::new(Barrier::new(usize::try_from(producers).unwrap_or(1) + 1));
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
            let share = iters / producers + u64::from(p < iters % producers);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..share {
                    log.append(&MESSAGE).expect("append");
                }
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

fn durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqueue/durable");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for producers in [1, 8] {
        group.bench_function(format!("infra always/{producers}"), |b| {
            b.iter_custom(|iters| infra_appends(FsyncPolicy::Always, producers, iters));
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
    group.bench_function("infra never/1", |b| {
        b.iter_custom(|iters| infra_appends(FsyncPolicy::Never, 1, iters));
    });
    group.bench_function("yaque/1", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut sender = yaque::Sender::open(dir.path().join("q")).expect("open");
            let start = Instant::now();
            for _ in 0..iters {
                sender.try_send(MESSAGE).expect("send");
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, durable);
criterion_main!(benches);
