//! infra-mqueue's in-memory work queue against plain channels: one producer thread sends
//! 1,000,000 small messages, one consumer thread receives them (and, for the work queue,
//! acks each one). Every queue is bounded at the same capacity and carries the same 16-byte
//! `Bytes` payload, so no row pays for an allocation the others skip.
//!
//! A channel hands a message over and forgets it. The work queue does more for each one: it
//! keeps the message until the ack, leases it under a visibility timeout (a clock reading and
//! a deadline), counts its delivery, and checks the ack against the attempt. The `infra` row
//! is therefore a receive plus an ack per message, the call pair a consumer makes;
//! `infra_batched_consumer` receives what is there (up to 64) and acks it in one call;
//! `infra_batched` also sends in batches of 64 (15,625 batches).

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The driver runs the peers on std's scoped threads, outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infra_mqueue::queue::{Delivery, MAX_DURATION, QueueOptions, WorkQueue};

const MESSAGES: u64 = 1_000_000;
const CAPACITY: usize = 1024;
const PAYLOAD: &[u8; 16] = b"order:0000000042";
/// The most messages the batched consumer takes per call.
const BATCH: usize = 64;

/// Runs `iters` rounds of one producer and one consumer over `MESSAGES` messages.
fn rounds(iters: u64, mut round: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| round()).sum()
}

/// One round of a work queue whose consumer receives in batches of up to `BATCH` and acks each
/// batch in one call, while `produce` sends `MESSAGES` on another thread.
fn batched_round(produce: impl Fn(&WorkQueue) + Sync) -> Duration {
    let queue =
        WorkQueue::in_memory(QueueOptions::default().capacity(CAPACITY)).expect("valid options");
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| produce(&queue));
        let mut received = 0;
        while received < MESSAGES {
            let batch = queue.receive_many(BATCH, MAX_DURATION).expect("open");
            for delivery in &batch {
                black_box(delivery.payload());
            }
            for acked in queue.ack_many(batch.iter().map(Delivery::receipt)) {
                acked.expect("current lease");
            }
            received += batch.len() as u64;
        }
    });
    start.elapsed()
}

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqueue/memory");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(MESSAGES));
    let payload = Bytes::from_static(PAYLOAD);

    group.bench_function("infra", |b| {
        b.iter_custom(|iters| {
            rounds(iters, || {
                let queue = WorkQueue::in_memory(QueueOptions::default().capacity(CAPACITY))
                    .expect("valid options");
                let start = Instant::now();
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        for _ in 0..MESSAGES {
                            queue.send(payload.clone()).expect("open");
                        }
                    });
                    for _ in 0..MESSAGES {
                        let delivery = queue.receive().expect("open");
                        black_box(delivery.payload());
                        queue.ack(&delivery).expect("current lease");
                    }
                });
                start.elapsed()
            })
        });
    });

    // The consumer takes what is there, up to `BATCH`, and acks it in one call: one lock round
    // trip per batch on its side, where the `infra` row takes two per message.
    group.bench_function("infra_batched_consumer", |b| {
        b.iter_custom(|iters| {
            rounds(iters, || {
                batched_round(|queue| {
                    for _ in 0..MESSAGES {
                        queue.send(payload.clone()).expect("open");
                    }
                })
            })
        });
    });

    // Both sides in batches: the producer hands `BATCH` messages to one `send_many`.
    group.bench_function("infra_batched", |b| {
        b.iter_custom(|iters| {
            rounds(iters, || {
                batched_round(|queue| {
                    for _ in 0..MESSAGES / BATCH as u64 {
                        let batch = (0..BATCH).map(|_| payload.clone());
                        for sent in queue.send_many(batch) {
                            sent.expect("open");
                        }
                    }
                })
            })
        });
    });

    group.bench_function("crossbeam-channel", |b| {
        b.iter_custom(|iters| {
            rounds(iters, || {
                let (sender, receiver) = crossbeam::channel::bounded::<Bytes>(CAPACITY);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        for _ in 0..MESSAGES {
                            sender.send(payload.clone()).expect("open");
                        }
                    });
                    for _ in 0..MESSAGES {
                        black_box(receiver.recv().expect("open"));
                    }
                });
                start.elapsed()
            })
        });
    });

    group.bench_function("flume", |b| {
        b.iter_custom(|iters| {
            rounds(iters, || {
                let (sender, receiver) = flume::bounded::<Bytes>(CAPACITY);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    scope.spawn(|| {
                        for _ in 0..MESSAGES {
                            sender.send(payload.clone()).expect("open");
                        }
                    });
                    for _ in 0..MESSAGES {
                        black_box(receiver.recv().expect("open"));
                    }
                });
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
