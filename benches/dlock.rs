//! infra-dlock's in-process backend against the floor of any lock: a `parking_lot::Mutex` and a
//! `tokio::sync::Mutex` (through `blocking_lock`, from plain threads). One acquire and release
//! with nobody else around, and two threads taking turns on one lock.
//!
//! Ours does more per acquisition than the floor, and the numbers should be read with that in
//! mind: it validates the name and lease, reads the clock, looks the name up in a map, issues a
//! fencing token, records the lease, and hands the grant its name; the release reads the clock
//! again to refuse an expired lease. The `infra handle` rows take the same lock through
//! `MemoryLocks::handle`, which resolves the name once (`coarse clock`: on a `CoarseClock`,
//! whose reading is one atomic load); the `infra+fence` row adds the resource's check of the
//! token.
//!
//! Against Redis: `dlock/redis`, one server, ours against `rslock`; `dlock/redlock`, three
//! servers, ours (`Redlock`) against `rslock`'s own Redlock over the same three.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The peers are measured as they are: `parking_lot::Mutex` is the floor this crate is compared
// against, and the two-thread driver uses std's scoped threads and barrier outside any code
// under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use infra_common::CoarseClock;
use infra_dlock::redis::{RedisLocks, RedisOptions};
use infra_dlock::redlock::Redlock;
use infra_dlock::{Fence, Locks, MemoryLocks};

const LEASE: Duration = Duration::from_secs(30);

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("dlock/uncontended");
    let ours = MemoryLocks::new();
    group.bench_function("infra", |b| {
        b.iter(|| {
            let guard = ours.acquire(black_box("account-42"), LEASE).expect("free");
            black_box(guard.token());
            guard.release().expect("held");
        });
    });
    // The same lock through a handle: the name resolved once, outside the loop.
    let account = ours.handle("account-42").expect("a valid name");
    group.bench_function("infra handle", |b| {
        b.iter(|| {
            let guard = black_box(&account).acquire(LEASE).expect("free");
            black_box(guard.token());
            guard.release().expect("held");
        });
    });
    // The same handle on a clock read from a cache: one atomic load per reading instead of
    // the time-stamp counter, leases coarse to a millisecond (see `MemoryLocks`' docs).
    let coarse = MemoryLocks::with_clock(CoarseClock::new());
    let coarse_account = coarse.handle("account-42").expect("a valid name");
    group.bench_function("infra handle, coarse clock", |b| {
        b.iter(|| {
            let guard = black_box(&coarse_account).acquire(LEASE).expect("free");
            black_box(guard.token());
            guard.release().expect("held");
        });
    });
    let fence = Fence::new();
    group.bench_function("infra+fence", |b| {
        b.iter(|| {
            let guard = ours.acquire(black_box("account-42"), LEASE).expect("free");
            fence
                .admit("balance/42", "account-42", guard.token())
                .expect("tokens grow");
            guard.release().expect("held");
        });
    });
    let parking = parking_lot::Mutex::new(0u64);
    group.bench_function("parking_lot", |b| {
        b.iter(|| {
            let mut guard = parking.lock();
            *guard += 1;
        });
    });
    let tokio = tokio::sync::Mutex::new(0u64);
    group.bench_function("tokio", |b| {
        b.iter(|| {
            let mut guard = tokio.blocking_lock();
            *guard += 1;
        });
    });
    group.finish();
}

/// Two threads each running `step` `iters` times; the time is the wall time of both.
fn two_threads(iters: u64, step: &(impl Fn() + Sync)) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    let started = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                if barrier.wait().is_leader() {
                    *started.lock().expect("not poisoned") = Some(Instant::now());
                }
                for _ in 0..iters {
                    step();
                }
            });
        }
    });
    let started = started
        .lock()
        .expect("not poisoned")
        .expect("set by the leader");
    started.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("dlock/contended");
    let ours = MemoryLocks::new();
    group.bench_function("infra", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                let guard = ours.acquire("account-42", LEASE).expect("granted");
                black_box(guard.token());
                guard.release().expect("held");
            })
        });
    });
    let account = ours.handle("account-42").expect("a valid name");
    group.bench_function("infra handle", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|| {
                let guard = account.acquire(LEASE).expect("granted");
                black_box(guard.token());
                guard.release().expect("held");
            })
        });
    });
    let parking = parking_lot::Mutex::new(0u64);
    group.bench_function("parking_lot", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| *parking.lock() += 1));
    });
    let tokio = tokio::sync::Mutex::new(0u64);
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| *tokio.blocking_lock() += 1));
    });
    group.finish();
}

/// A local `redis-server` for a group (started through infra-testkit; `None`, with a skip line
/// for `group`, when the binary is missing), its append-only file set to Redis's default
/// `appendfsync everysec`: fsyncing every write, as the test kit does, would measure the disk
/// (about 6 ms a pair on the machine of BENCHMARKS.md).
fn bench_server(group: &str) -> Option<infra_testkit::RedisServer> {
    let Some(server) = infra_testkit::RedisServer::start() else {
        println!("{group}: skipped, no redis-server");
        return None;
    };
    let reply = server
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .expect("the server answers");
    assert_eq!(reply, "+OK");
    Some(server)
}

/// Ours and `rslock`, each taking and giving back a free lock on the servers at `urls`.
fn acquire_and_release(c: &mut Criterion, group: &str, ours: &impl Locks, urls: Vec<String>) {
    let mut group = c.benchmark_group(group);
    group.bench_function("infra", |b| {
        b.iter(|| {
            let guard = ours.acquire(black_box("account-42"), LEASE).expect("free");
            black_box(guard.token());
            guard.release().expect("held");
        });
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let theirs = rslock::LockManager::new(urls);
    group.bench_function("rslock", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let lock = theirs
                    .lock(black_box("account-42"), LEASE)
                    .await
                    .expect("free");
                black_box(lock.validity_time);
                lock.release().await;
            });
        });
    });
    group.finish();
}

/// One acquire and release of a free lock on a local `redis-server` ([`bench_server`]): ours
/// (`RedisLocks`, one `EVALSHA` each way on a pooled connection) against `rslock` (Redlock on
/// one server, async, driven on a current-thread tokio runtime).
fn redis(c: &mut Criterion) {
    let Some(server) = bench_server("dlock/redis") else {
        return;
    };
    let ours = RedisLocks::new(&server.url(), RedisOptions::default()).expect("a valid URL");
    acquire_and_release(c, "dlock/redis", &ours, vec![server.url()]);
}

/// One acquire and release of a free lock on three local `redis-server`s: ours (`Redlock`: a
/// grant round and a raise round, each sent to the three servers at once, and a release round)
/// against `rslock`'s `LockManager` over the same three URLs.
fn redlock(c: &mut Criterion) {
    let Some(servers) = (0..3)
        .map(|_| bench_server("dlock/redlock"))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let urls: Vec<String> = servers
        .iter()
        .map(infra_testkit::RedisServer::url)
        .collect();
    let ours = Redlock::new(&urls, RedisOptions::default()).expect("valid URLs");
    acquire_and_release(c, "dlock/redlock", &ours, urls);
}

criterion_group!(benches, uncontended, contended, redis, redlock);
criterion_main!(benches);
