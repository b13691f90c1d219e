//! Figures that take real time and disk, ignored in normal test runs. Run them with
//!
//! ```text
//! cargo test --release -p infra-mqueue --test log_perf -- --ignored --nocapture
//! ```
//!
//! `INFRA_MQUEUE_PERF_DIR` chooses the directory (default: the system temp directory); the disk
//! under it is what is measured. Nothing here asserts a duration: the tests print figures and
//! check only counts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, thread};
use infra_mqueue::log::{AppendTicket, FsyncPolicy, Log, LogOptions};

fn scratch() -> tempfile::TempDir {
    let base =
        std::env::var_os("INFRA_MQUEUE_PERF_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// p50 and p99 latency of one 100-byte append under `Always`, with 1 and 8 producers.
#[test]
#[ignore = "takes real time and disk; run with --ignored to print the figures"]
fn append_latency_percentiles() {
    for producers in [1usize, 8] {
        let dir = scratch();
        let log = Arc::new(Log::open(dir.path(), LogOptions::default()).unwrap());
        let per_producer = 4000 / producers;
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let log = Arc::clone(&log);
                thread::spawn(move || {
                    (0..per_producer)
                        .map(|_| {
                            let start = Instant::now();
                            log.append(&[b'm'; 100]).unwrap();
                            start.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut latencies: Vec<Duration> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        latencies.sort();
        assert_eq!(latencies.len(), per_producer * producers);
        println!(
            "append latency, fsync=Always, {producers} producer(s), {} appends: p50 {:?}, p99 {:?}",
            latencies.len(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
    }
}

/// p50 and p99 latency from `append_nowait` to its ticket's `wait` returning (the record is
/// durable: the producer may acknowledge it), 8 producers each keeping 64 appends in flight.
#[test]
#[ignore = "takes real time and disk; run with --ignored to print the figures"]
fn pipelined_latency_percentiles() {
    let (producers, per_producer, window) = (8usize, 4000usize, 64usize);
    let dir = scratch();
    let log = Arc::new(Log::open(dir.path(), LogOptions::default()).unwrap());
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                let mut latencies = Vec::with_capacity(per_producer);
                let mut in_flight: VecDeque<(AppendTicket<'_>, Instant)> = VecDeque::new();
                for _ in 0..per_producer {
                    if in_flight.len() == window {
                        let (ticket, start) = in_flight.pop_front().unwrap();
                        ticket.wait().unwrap();
                        latencies.push(start.elapsed());
                    }
                    let start = Instant::now();
                    in_flight.push_back((log.append_nowait(&[b'm'; 100]).unwrap(), start));
                }
                for (ticket, start) in in_flight {
                    ticket.wait().unwrap();
                    latencies.push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    latencies.sort();
    assert_eq!(latencies.len(), producers * per_producer);
    println!(
        "append_nowait to durable, fsync=Always, {producers} producers x {window} in flight, {} appends: p50 {:?}, p99 {:?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
}

/// What writing the zeros ahead costs the append that does it under `Always` (it writes them
/// and its fsync carries them and the file's new size): the median latency of such appends
/// beside the median of the others, with 10 KiB records and the default 1 MiB of zeros.
#[test]
#[ignore = "takes real time and disk; run with --ignored to print the figures"]
fn preallocation_cost() {
    let dir = scratch();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let payload = vec![b'p'; 10 << 10];
    let (mut extending, mut others) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let before = log.stats().allocated_bytes;
        let start = Instant::now();
        log.append(&payload).unwrap();
        let took = start.elapsed();
        if log.stats().allocated_bytes > before {
            extending.push(took);
        } else {
            others.push(took);
        }
    }
    extending.sort();
    others.sort();
    assert!(
        extending.len() >= 9,
        "{} appends wrote zeros",
        extending.len()
    );
    println!(
        "fsync=Always, 10 KiB appends: {} that wrote 1 MiB of zeros ahead, median {:?}; {} others, median {:?}",
        extending.len(),
        percentile(&extending, 0.50),
        others.len(),
        percentile(&others, 0.50)
    );
}

/// How long `Log::open` takes to recover (check every record's CRC of) a 1 GiB log.
#[test]
#[ignore = "writes 1 GiB; run with --ignored to print the figure"]
fn recovery_time_of_one_gib() {
    let dir = scratch();
    let options = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let payload = vec![b'r'; 1000];
    let batch: Vec<&[u8]> = vec![&payload; 1000];
    let log = Log::open(dir.path(), options.clone()).unwrap();
    while log.stats().bytes < 1 << 30 {
        log.append_batch(&batch).unwrap();
    }
    log.sync().unwrap();
    let stats = log.stats();
    drop(log);
    let start = Instant::now();
    let log = Log::open(dir.path(), options).unwrap();
    let took = start.elapsed();
    assert_eq!(log.stats(), stats);
    println!(
        "recovery of {} bytes in {} segments ({} records of 1000 bytes): {took:?} (page cache warm)",
        stats.bytes, stats.segments, stats.depth
    );
}
