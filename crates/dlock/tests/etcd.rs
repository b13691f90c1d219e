//! The etcd backend against real `etcd` members: exclusion with fencing from threads and OS
//! processes, FIFO hand-over, owner-only release and extend, readers and semaphores, the
//! lease check at hand-over (etcd issue 11456), tokens across restarts, round trips per call,
//! and a fenced store under leader kills, paused members, cut and slow connections and
//! holders that pause past their leases, on a 3-member cluster.
#![cfg(all(feature = "etcd", not(infra_loom)))]

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_common::{Clock, ManualClock};
use infra_dlock::etcd::{EtcdLocks, EtcdOptions};
use infra_dlock::{Access, Error, FencingToken, Grant, Locks, MemoryLocks, Wait};
use infra_testkit::{EtcdCluster, EtcdServer, FaultProxy};

// The shared test helpers; this file has a fault test of its own (a cluster, a stall until
// another worker reads), not the Redis tests' fault worker.
#[allow(dead_code)]
mod common;
use common::{Account, SteppingClock, assert_fault_run};

const LOCK: &str = "account-7";

fn options() -> EtcdOptions {
    EtcdOptions::default().timeout(Duration::from_secs(2))
}

fn locks(endpoints: &[String]) -> EtcdLocks {
    EtcdLocks::new(endpoints, options()).unwrap()
}

/// Connects `locks` with a grant on another name, so a short lease asked for next is not spent
/// on connecting before its grant arrives.
fn warm_up(locks: &EtcdLocks) {
    locks
        .acquire("warm-up", Duration::from_secs(30))
        .unwrap()
        .release()
        .unwrap();
}

/// A plain etcd client on a runtime of its own, to look at and change what the backend wrote.
struct Raw {
    runtime: tokio::runtime::Runtime,
    client: etcd_client::Client,
}

impl Raw {
    fn new(endpoints: &[String]) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(etcd_client::Client::connect(endpoints, None))
            .unwrap();
        Self { runtime, client }
    }

    /// The keys under `prefix`, with their create revisions, in creation order.
    /// Retried for up to 20 s: after a member is killed, its connection fails once.
    fn keys(&self, prefix: &str) -> Vec<(String, i64)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let response = loop {
            let mut client = self.client.clone();
            let options = GetOptions::new().with_prefix();
            match self.runtime.block_on(client.get(prefix, Some(options))) {
                Ok(response) => break response,
                Err(error) => assert!(Instant::now() < deadline, "{error}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut keys: Vec<(String, i64)> = response
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_owned(), kv.create_revision()))
            .collect();
        keys.sort_by_key(|(_, revision)| *revision);
        keys
    }

    /// Waits (up to 20 s) until `prefix` has `count` keys.
    fn await_keys(&self, prefix: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.keys(prefix).len() != count {
            assert!(
                Instant::now() < deadline,
                "{prefix}: {:?}, not {count} keys",
                self.keys(prefix)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn value(&self, key: &str) -> String {
        let mut client = self.client.clone();
        let response = self.runtime.block_on(client.get(key, None)).unwrap();
        response.kvs()[0].value_str().unwrap().to_owned()
    }

    fn txn(&self, txn: Txn) -> etcd_client::TxnResponse {
        let mut client = self.client.clone();
        self.runtime.block_on(client.txn(txn)).unwrap()
    }

    /// The lease `key` is attached to (0 for none).
    fn lease_of(&self, key: &str) -> i64 {
        let mut client = self.client.clone();
        let response = self.runtime.block_on(client.get(key, None)).unwrap();
        response.kvs()[0].lease()
    }

    /// Moves `key` off its lease, keeping its value and create revision, and revokes the
    /// lease: the lease is gone while the key stays in its place in the queue.
    fn detach_and_revoke(&self, key: &str) {
        let lease = self.lease_of(key);
        let value = self.value(key);
        self.txn(Txn::new().and_then([TxnOp::put(key, value, None)]));
        let mut client = self.client.clone();
        self.runtime.block_on(client.lease_revoke(lease)).unwrap();
    }
}

/// `grpc_server_started_total` per method, from the member's `/metrics`.
fn requests(server: &EtcdServer) -> Vec<(String, u64)> {
    let (status, body) = server.http("GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    body.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("grpc_server_started_total{")?;
            let (labels, count) = rest.split_once("} ")?;
            let method = labels
                .split(',')
                .find_map(|label| label.strip_prefix("grpc_method=\""))?
                .trim_end_matches('"');
            Some((method.to_owned(), count.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Requests per method between two [`requests`] readings, without the methods not sent.
fn sent_between(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut sent: Vec<(String, u64)> = after
        .iter()
        .map(|(method, count)| {
            let earlier = before
                .iter()
                .find(|(m, _)| m == method)
                .map_or(0, |(_, c)| *c);
            (method.clone(), count - earlier)
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    sent.sort();
    sent
}

#[test]
fn threads_exclude_each_other_and_the_fenced_balance_counts_every_write() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = Arc::new(locks(&[server.url()]));
    let account = Arc::new(Account::new(LOCK));
    let inside = Arc::new(Mutex::new(0u32));
    let overlaps = Arc::new(Mutex::new(0u32));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (locks, account) = (Arc::clone(&locks), Arc::clone(&account));
            let (inside, overlaps) = (Arc::clone(&inside), Arc::clone(&overlaps));
            thread::spawn(move || {
                let mut tokens = Vec::new();
                for _ in 0..25 {
                    let guard = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
                    {
                        let mut inside = inside.lock();
                        *inside += 1;
                        if *inside != 1 {
                            *overlaps.lock() += 1;
                        }
                    }
                    let balance = account.read(guard.token()).unwrap();
                    account.write(guard.token(), balance + 1).unwrap();
                    tokens.push(guard.token());
                    *inside.lock() -= 1;
                    guard.release().unwrap();
                }
                tokens
            })
        })
        .collect();
    let mut tokens: Vec<FencingToken> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ledger = account.ledger();
    assert_eq!(*overlaps.lock(), 0);
    assert_eq!((ledger.balance, ledger.accepted_writes), (100, 100));
    assert_eq!((ledger.refused, ledger.stale_accepted), (0, 0));
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 100, "every grant has a token of its own");
    // Every key went with its release.
    assert!(Raw::new(&[server.url()]).keys("dlock/").is_empty());
}

#[test]
fn waiters_are_served_in_arrival_order_and_try_acquire_never_overtakes() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let locks = Arc::new(locks(&endpoints));
    let lease = Duration::from_secs(30);
    let holder = locks.acquire(LOCK, lease).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let (locks, order) = (Arc::clone(&locks), Arc::clone(&order));
        waiters.push(thread::spawn(move || {
            let guard = locks.acquire(LOCK, lease).unwrap();
            order.lock().push((i, guard.token()));
            guard.release().unwrap();
        }));
        // The next waiter arrives only once this one has its key in the queue.
        raw.await_keys(&format!("dlock/{LOCK}/"), i + 2);
    }
    // A try_acquire joins the queue behind the waiters and leaves it: it gets nothing.
    assert!(locks.try_acquire(LOCK, lease).unwrap().is_none());
    assert_eq!(raw.keys(&format!("dlock/{LOCK}/")).len(), 4);
    let first = holder.token();
    holder.release().unwrap();
    for waiter in waiters {
        waiter.join().unwrap();
    }
    let order = order.lock().clone();
    let arrival: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(arrival, [0, 1, 2], "{order:?}");
    assert!(order.windows(2).all(|pair| pair[0].1 < pair[1].1));
    assert!(order[0].1 > first);
}

#[test]
fn only_the_owner_releases_or_extends_and_an_expired_lock_goes_on_with_a_larger_token() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let ours = locks(&endpoints);
    let theirs = locks(&endpoints);
    let lease = Duration::from_secs(30);

    let mut grant = ours.acquire(LOCK, lease).unwrap().into_grant();
    let foreign = theirs.extend(&mut grant, lease);
    assert!(
        matches!(foreign, Err(Error::ForeignGrant { .. })),
        "{foreign:?}"
    );
    let mut memory_grant = MemoryLocks::new()
        .acquire(LOCK, lease)
        .unwrap()
        .into_grant();
    assert!(matches!(
        ours.extend(&mut memory_grant, lease),
        Err(Error::ForeignGrant { .. })
    ));
    assert!(ours.is_held(&grant));
    assert!(theirs.try_acquire(LOCK, lease).unwrap().is_none());

    // Extending for longer than the key's TTL moves it to a new lease, token unchanged.
    let token = grant.token();
    ours.extend(&mut grant, Duration::from_secs(90)).unwrap();
    assert_eq!(grant.token(), token);
    assert_eq!(grant.lease(), Duration::from_secs(90));
    let raw = Raw::new(&endpoints);
    let keys = raw.keys(&format!("dlock/{LOCK}/"));
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].1, i64::try_from(token.get()).unwrap());

    // A short extension: the client counts 300 ms; etcd keeps the key for the key's TTL.
    ours.extend(&mut grant, Duration::from_millis(300)).unwrap();
    assert_eq!(grant.lease(), Duration::from_millis(300));
    ours.wait_lost(&grant);
    assert!(!ours.is_held(&grant));
    assert!(matches!(
        ours.extend(&mut grant, lease),
        Err(Error::LeaseExpired { .. })
    ));
    // The key is still there (its TTL is 91 s): only its owner's release removes it.
    assert_eq!(raw.keys(&format!("dlock/{LOCK}/")).len(), 1);
    ours.release(grant).unwrap();

    // A lease that runs out on the server hands the lock on, with a larger token.
    let first = ours
        .acquire(LOCK, Duration::from_millis(500))
        .unwrap()
        .into_grant();
    let started = Instant::now();
    let next = theirs.acquire(LOCK, lease).unwrap();
    // Not handed on after the 500 ms lease but once etcd ended the key: its TTL is 2 s.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "{waited:?}");
    assert!(next.token() > first.token());
    assert!(!ours.is_held(&first));
    assert!(next.is_held());
    let late = ours.release(first);
    assert!(matches!(late, Err(Error::LeaseExpired { .. })), "{late:?}");
    assert!(
        next.is_held(),
        "the late release left the next holder alone"
    );
    // The grant's lease is the one asked for, counted by the client.
    assert_eq!(next.grant().lease(), lease);
    next.release().unwrap();
}

#[test]
fn readers_share_and_a_waiting_writer_is_not_overtaken_by_later_readers() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let locks = Arc::new(locks(&endpoints));
    let lease = Duration::from_secs(30);
    let first = locks.read("config", lease).unwrap();
    let second = locks.read("config", lease).unwrap();
    assert!(second.token() > first.token());
    assert!(locks.try_acquire("config", lease).unwrap().is_none());
    let writer = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            let guard = locks.acquire("config", lease).unwrap();
            let token = guard.token();
            guard.release().unwrap();
            token
        })
    };
    raw.await_keys("dlock/config/", 3);
    let late = locks
        .grant("config", Access::Shared, lease, Wait::No)
        .unwrap();
    assert!(late.is_none(), "a later reader overtook the waiting writer");
    let last_reader = second.token();
    first.release().unwrap();
    second.release().unwrap();
    let written = writer.join().unwrap();
    assert!(written > last_reader);
    let after = locks.read("config", lease).unwrap();
    assert!(after.token() > written);
    // A semaphore on a name with readers, and readers on a semaphore's name, are refused.
    let kind = |result: Result<(), Error>| matches!(result, Err(Error::KindMismatch { .. }));
    assert!(kind(locks.permit("config", 2, lease).map(drop)));
    let permit = locks.permit("pool", 2, lease).unwrap();
    assert!(kind(locks.read("pool", lease).map(drop)));
    permit.release().unwrap();
    after.release().unwrap();
    // The refused requests left no key behind.
    assert!(raw.keys("dlock/").is_empty(), "{:?}", raw.keys("dlock/"));
}

#[test]
fn a_semaphore_admits_up_to_its_permits_in_arrival_order() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let locks = Arc::new(locks(&endpoints));
    let lease = Duration::from_secs(30);
    let two = Access::Permit { permits: 2 };
    let a = locks.permit("pool", 2, lease).unwrap();
    let b = locks.permit("pool", 2, lease).unwrap();
    assert!(b.token() > a.token());
    assert!(
        locks.grant("pool", two, lease, Wait::No).unwrap().is_none(),
        "both permits are out"
    );
    let kind = |result: Result<(), Error>| matches!(result, Err(Error::KindMismatch { .. }));
    assert!(kind(
        locks
            .grant("pool", Access::Permit { permits: 3 }, lease, Wait::No)
            .map(drop)
    ));
    assert!(kind(locks.try_acquire("pool", lease).map(drop)));
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || locks.permit("pool", 2, lease).unwrap().into_grant())
    };
    raw.await_keys("dlock/pool/", 3);
    let mut a = a.into_grant();
    locks.extend(&mut a, lease).unwrap();
    locks.release(a).unwrap();
    let c = waiter.join().unwrap();
    assert!(c.token() > b.token());
    assert!(locks.is_held(&c) && b.is_held());
    locks.release(c).unwrap();
    b.release().unwrap();
    // With every permit back, the name can be a mutex.
    assert!(locks.try_acquire("pool", lease).unwrap().is_some());
}

#[test]
fn bad_input_is_refused_before_any_round_trip() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = locks(&[server.url()]);
    // A grant made first, so the connection is open.
    let held = locks.acquire("held", Duration::from_secs(30)).unwrap();
    let before = requests(&server);
    let lease = Duration::from_secs(1);
    assert_eq!(locks.try_acquire("", lease).unwrap_err(), Error::EmptyName);
    assert!(matches!(
        locks.try_acquire(&"x".repeat(513), lease),
        Err(Error::NameTooLong { .. })
    ));
    assert_eq!(
        locks.try_acquire("a", Duration::ZERO).unwrap_err(),
        Error::ZeroLease
    );
    assert!(matches!(
        locks.try_acquire("a", Duration::MAX),
        Err(Error::LeaseTooLong { .. })
    ));
    assert_eq!(locks.permit("a", 0, lease).unwrap_err(), Error::ZeroPermits);
    let mut foreign = MemoryLocks::new().acquire("a", lease).unwrap().into_grant();
    assert!(matches!(
        locks.extend(&mut foreign, lease),
        Err(Error::ForeignGrant { .. })
    ));
    assert!(!locks.is_held(&foreign));
    assert_eq!(sent_between(&before, &requests(&server)), []);
    assert!(held.is_held());
    held.release().unwrap();
    // Bad endpoints are refused when the backend is made; an unreachable one on the call.
    assert!(matches!(
        EtcdLocks::new(&[] as &[&str], options()),
        Err(Error::Backend { .. })
    ));
    assert!(matches!(
        EtcdLocks::new(&["http://[::1"], options()),
        Err(Error::Backend { .. })
    ));
    let addr = server.addr();
    drop(server);
    let unreachable = EtcdLocks::new(
        &[format!("http://{addr}")],
        options().timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let failed = unreachable.try_acquire("a", lease);
    assert!(matches!(failed, Err(Error::Backend { .. })), "{failed:?}");
}

#[test]
fn a_garbled_or_nested_key_in_the_range_is_ignored() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let locks = locks(&endpoints);
    // A stranger's garbled key in name `a`'s range.
    raw.txn(Txn::new().and_then([TxnOp::put("dlock/a/0", "not a lock", None)]));
    // A lock held under prefix `dlock/a`: its keys lie in name `a`'s range under `dlock`.
    let nested = EtcdLocks::new(&endpoints, options().prefix("dlock/a")).unwrap();
    let lease = Duration::from_secs(5);
    let other = nested.acquire("b", lease).unwrap();
    assert_eq!(raw.keys("dlock/a/b/").len(), 1);
    // Neither stops nor queues name `a`.
    let guard = locks
        .try_acquire("a", lease)
        .unwrap()
        .expect("name `a` is free");
    assert!(guard.is_held());
    guard.release().unwrap();
    other.release().unwrap();
    assert_eq!(
        raw.keys("dlock/a/").len(),
        1,
        "only the stranger's key is left"
    );
}

#[test]
fn a_lease_no_longer_than_a_round_trip_is_refused_instead_of_requeued() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let clock = SteppingClock::new(Duration::from_millis(50));
    let locks = EtcdLocks::with_clock(&endpoints, options(), clock).unwrap();
    let lease = Duration::from_millis(20);
    for wait in [Wait::No, Wait::Forever] {
        let started = Instant::now();
        let granted = locks.grant("short", Access::Exclusive, lease, wait);
        assert!(
            matches!(granted, Err(Error::LeaseSpentOnArrival { .. })),
            "{wait:?}: {granted:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert!(
        raw.keys("dlock/short/").is_empty(),
        "the spent grant was revoked"
    );
}

/// The leases of the keys under `prefix`.
fn leases(raw: &Raw, prefix: &str) -> Vec<i64> {
    let mut client = raw.client.clone();
    let options = GetOptions::new().with_prefix();
    match raw.runtime.block_on(client.get(prefix, Some(options))) {
        Ok(response) => response
            .kvs()
            .iter()
            .map(etcd_client::KeyValue::lease)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn an_extend_whose_lease_move_answer_is_lost_never_leaves_the_holder_without_its_key() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let proxy = Arc::new(FaultProxy::start(server.addr()).unwrap());
    let locks = locks(&[format!("http://{}", proxy.addr())]);
    // Long enough to still run when the extension's answer is lost.
    let mut grant = locks
        .acquire(LOCK, Duration::from_secs(5))
        .unwrap()
        .into_grant();
    let dir = format!("dlock/{LOCK}/");
    let direct = [server.url()];
    let old_lease = leases(&Raw::new(&direct), &dir)[0];
    // Every answer now crosses the proxy 300 ms late. A watcher talking to etcd directly sees
    // the key move to a new lease (the transaction committed) and cuts the connection while
    // the transaction's answer is still on its way back, refusing new connections for a while:
    // the client cannot learn what happened.
    proxy.set_latency(Duration::from_millis(300));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (proxy, done, dir) = (Arc::clone(&proxy), Arc::clone(&done), dir.clone());
        thread::spawn(move || {
            let raw = Raw::new(&direct);
            while !done.load(Ordering::SeqCst) {
                if leases(&raw, &dir).iter().any(|&lease| lease != old_lease) {
                    proxy.refuse_new(true);
                    proxy.cut_connections();
                    std::thread::sleep(Duration::from_millis(500));
                    proxy.heal();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // The extension returned before this thread saw the move (a slow machine): the
            // answer was not lost, which the match below accepts, but the key did move.
            leases(&raw, &dir).iter().any(|&lease| lease != old_lease)
        })
    };
    // A lease longer than the key's TTL: the key moves to a new lease.
    let extended = locks.extend(&mut grant, Duration::from_secs(30));
    done.store(true, Ordering::SeqCst);
    assert!(watcher.join().unwrap(), "the key never moved: {extended:?}");
    proxy.heal();
    let keys = leases(&Raw::new(&[server.url()]), &dir);
    let believes_held = locks.clock().now_nanos() < grant.deadline_nanos();
    println!("extend after a lost move answer: {extended:?}; keys' leases: {keys:?}");
    // The holder never goes on believing it holds a lock whose key is gone.
    assert!(
        !believes_held || keys.len() == 1,
        "{extended:?}: the key is gone while the holder's deadline runs"
    );
    match extended {
        // The key was read again and found on its new lease.
        Ok(()) => assert!(locks.is_held(&grant)),
        // Still unknown: the holder's lease ended at once, so it stops.
        Err(Error::Backend { .. }) => {
            assert!(!believes_held, "the holder still counts its old lease");
            assert!(!locks.is_held(&grant));
        }
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn calls_from_async_code_complete_through_spawn_blocking_or_directly() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = Arc::new(locks(&[server.url()]));
    let lease = Duration::from_secs(30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Through the blocking pool, as `AsyncLocks` calls a backend.
    let pooled = {
        let locks = Arc::clone(&locks);
        runtime.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let guard = locks.acquire(LOCK, lease)?;
                let token = guard.token();
                guard.release().map(|()| token)
            })
            .await
            .unwrap()
        })
    }
    .unwrap();
    // On the runtime's own thread: it stalls that thread while it waits, but completes.
    let direct = runtime.block_on(async {
        let guard = locks.acquire(LOCK, lease)?;
        assert!(guard.is_held());
        let token = guard.token();
        guard.release().map(|()| token)
    });
    assert!(direct.unwrap() > pooled);
}

/// The `tokio` feature's `AsyncLocks` runs backend calls on the blocking pool: with this
/// backend underneath, tasks acquire, extend and release on a current-thread runtime.
#[cfg(feature = "tokio")]
#[test]
fn async_locks_drive_the_etcd_backend() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = infra_dlock::AsyncLocks::new(Arc::new(locks(&[server.url()])));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lease = Duration::from_secs(30);
    runtime.block_on(async {
        let mut first = locks.acquire(LOCK, lease).await.unwrap();
        assert!(locks.try_acquire(LOCK, lease).await.unwrap().is_none());
        locks.extend(&mut first, lease).await.unwrap();
        assert!(locks.is_held(&first).await);
        let token = first.token();
        locks.release(first).await.unwrap();
        let next = locks.acquire(LOCK, lease).await.unwrap();
        assert!(next.token() > token);
        locks.release(next).await.unwrap();
    });
}

#[test]
fn an_uncontended_acquire_and_release_cost_two_round_trips_each() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = locks(&[server.url()]);
    let lease = Duration::from_secs(30);
    locks.acquire("warm-up", lease).unwrap().release().unwrap();
    let before = requests(&server);
    let rounds = 20;
    for _ in 0..rounds {
        let mut guard = locks.acquire(LOCK, lease).unwrap();
        guard.extend(lease).unwrap();
        assert!(guard.is_held());
        guard.release().unwrap();
    }
    let sent = sent_between(&before, &requests(&server));
    // acquire: LeaseGrant + Txn; extend: Range + LeaseKeepAlive; is_held: Range;
    // release: Range + LeaseRevoke.
    let expected: Vec<(String, u64)> = [
        ("LeaseGrant", rounds),
        ("LeaseKeepAlive", rounds),
        ("LeaseRevoke", rounds),
        ("Range", 3 * rounds),
        ("Txn", rounds),
    ]
    .iter()
    .map(|(method, count)| ((*method).to_owned(), *count))
    .collect();
    assert_eq!(sent, expected);
}

#[test]
fn a_holder_paused_past_its_lease_has_its_write_refused() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let locks = locks(&[server.url()]);
    let account = Account::new(LOCK);
    warm_up(&locks);
    let paused = locks
        .acquire(LOCK, Duration::from_millis(500))
        .unwrap()
        .into_grant();
    let balance = account.read(paused.token()).unwrap();
    locks.wait_lost(&paused); // the holder stalls past its lease
    // Granted once etcd has ended the paused holder's key (its TTL, at least 1 s).
    let next = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    let next_balance = account.read(next.token()).unwrap();
    assert!(matches!(
        account.write(paused.token(), balance + 1),
        Err(Error::StaleToken { .. })
    ));
    account.write(next.token(), next_balance + 1).unwrap();
    let ledger = account.ledger();
    assert_eq!(
        (ledger.balance, ledger.accepted_writes, ledger.refused),
        (1, 1, 1)
    );
    assert_eq!(ledger.stale_accepted, 0);
}

#[test]
fn tokens_keep_growing_across_restarts_of_the_member() {
    let Some(mut server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let locks = locks(&endpoints);
    let lease = Duration::from_secs(30);
    let mut last = FencingToken::new(0);
    for round in 0..2 {
        for _ in 0..3 {
            let guard = locks.acquire(LOCK, lease).unwrap();
            assert!(guard.token() > last, "round {round}");
            last = guard.token();
            guard.release().unwrap();
        }
        server.kill();
        server.restart().unwrap();
    }
    // The backend reconnects by itself; the first call may still find the old connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    let guard = loop {
        match locks.acquire_timeout(LOCK, lease, Duration::from_secs(5)) {
            Ok(Some(guard)) => break guard,
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
    };
    assert!(guard.token() > last);
}

#[test]
fn a_waiter_renews_its_lease_and_keeps_its_place() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let queue = format!("dlock/{LOCK}/");
    let locks = Arc::new(locks(&endpoints));
    let holder = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    let waiter = {
        let locks = Arc::clone(&locks);
        // A 500 ms lease: etcd raises the TTL to its minimum, 2 s with default settings.
        thread::spawn(move || {
            locks
                .acquire(LOCK, Duration::from_millis(500))
                .unwrap()
                .into_grant()
        })
    };
    raw.await_keys(&queue, 2);
    let (key, revision) = raw.keys(&queue)[1].clone();
    let value = raw.value(&key);
    assert_eq!(value, "exclusive ttl=2", "the server's minimum TTL");
    // Three TTLs later the waiter still has its key, kept by its renewals.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(raw.keys(&queue)[1], (key, revision));
    holder.release().unwrap();
    let grant = waiter.join().unwrap();
    assert_eq!(grant.token().get(), u64::try_from(revision).unwrap());
    locks.release(grant).unwrap();
}

/// Locks whose leases run on a manual clock: a waiter on it renews its lease only when the
/// test moves the clock on by a third of the lease's TTL, which these tests never do.
fn locks_on(endpoints: &[String], clock: &ManualClock) -> EtcdLocks<ManualClock> {
    EtcdLocks::with_clock(endpoints, options(), clock.clone()).unwrap()
}

/// A thread waiting for `LOCK`.
struct Waiter {
    thread: thread::JoinHandle<Grant>,
    granted: Arc<AtomicBool>,
}

impl Waiter {
    fn spawn<C: Clock + Send + Sync + 'static>(locks: &Arc<EtcdLocks<C>>, lease: Duration) -> Self {
        let locks = Arc::clone(locks);
        let granted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&granted);
        let thread = thread::spawn(move || {
            let grant = locks.acquire(LOCK, lease).unwrap().into_grant();
            flag.store(true, Ordering::SeqCst);
            grant
        });
        Self { thread, granted }
    }

    fn is_granted(&self) -> bool {
        self.granted.load(Ordering::SeqCst)
    }

    fn grant(self) -> Grant {
        self.thread.join().unwrap()
    }
}

/// A waiter's lease counts from the hand-over (the renewal that checked its lease), not from
/// when it queued: it queues at 0 s, is handed the lock at 5 s, and is not renewed between
/// (a 30 s lease renews every third of its 31 s TTL), so only the hand-over's renewal can
/// start its lease at 5 s.
#[test]
fn a_waiters_lease_starts_at_the_hand_over() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let clock = ManualClock::new();
    let locks = Arc::new(locks_on(&endpoints, &clock));
    let lease = Duration::from_secs(30);
    let holder = locks.acquire(LOCK, lease).unwrap();
    let waiter = Waiter::spawn(&locks, lease);
    raw.await_keys(&format!("dlock/{LOCK}/"), 2);
    clock.advance(Duration::from_secs(5));
    holder.release().unwrap();
    let grant = waiter.grant();
    assert_eq!(
        Duration::from_nanos(grant.granted_at_nanos()),
        Duration::from_secs(5),
        "the lease counts from the hand-over"
    );
    assert_eq!(grant.lease(), lease);
    locks.release(grant).unwrap();
}

/// etcd issue 11456, at the hand-over itself: a waiter may read the queue with its key first
/// while its lease is already gone, when its read came before etcd revoked the lease and its
/// next request after. etcd deletes a lease's keys in the step that revokes it, so that state
/// lasts only between two of the waiter's requests; the test holds it still by taking the
/// waiter's key off its lease (keeping the key's place) before revoking the lease. The waiter
/// must not be handed that key: nothing it renews keeps the key, and nothing ends it with its
/// lease. It queues again under a new lease, and is granted once the key ahead is gone.
#[test]
fn a_waiter_whose_lease_is_gone_while_its_key_is_first_is_not_handed_the_lock() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let queue = format!("dlock/{LOCK}/");
    // The clock stands still, so the waiter never renews while it waits: the first request to
    // its lost lease is the hand-over's.
    let clock = ManualClock::new();
    let locks = Arc::new(locks_on(&endpoints, &clock));
    let lease = Duration::from_secs(30);
    let holder = locks.acquire(LOCK, lease).unwrap();
    let waiter = Waiter::spawn(&locks, lease);
    raw.await_keys(&queue, 2);
    let (stranded, stranded_revision) = raw.keys(&queue)[1].clone();
    raw.detach_and_revoke(&stranded);
    holder.release().unwrap();
    // Either the waiter returns, or it queues again behind its stranded key, which is then
    // deleted to let it in.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waiter.is_granted() {
        if raw.keys(&queue).len() == 2 {
            raw.txn(Txn::new().and_then([TxnOp::delete(stranded.as_str(), None)]));
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", raw.keys(&queue));
        std::thread::sleep(Duration::from_millis(10));
    }
    let grant = waiter.grant();
    assert_ne!(
        i64::try_from(grant.token().get()).unwrap(),
        stranded_revision,
        "the waiter was handed the key whose lease was gone"
    );
    // The grant is a key on a lease of the waiter's own: the only key, at the token's revision,
    // and releasing the grant (revoking that lease) deletes it.
    let keys = raw.keys(&queue);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].1, i64::try_from(grant.token().get()).unwrap());
    assert_ne!(raw.lease_of(&keys[0].0), 0);
    locks.release(grant).unwrap();
    assert!(raw.keys(&queue).is_empty());
}

#[test]
fn a_waiter_rides_out_failures_for_its_ttl_then_gives_up() {
    let Some(mut server) = EtcdServer::start() else {
        return;
    };
    let endpoints = [server.url()];
    let raw = Raw::new(&endpoints);
    let locks = Arc::new(
        EtcdLocks::new(&endpoints, options().timeout(Duration::from_millis(300))).unwrap(),
    );
    let holder = locks
        .acquire(LOCK, Duration::from_secs(30))
        .unwrap()
        .into_grant();
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            let waited = Instant::now();
            // A 1.5 s lease: a TTL of 2 s.
            let outcome = locks.acquire(LOCK, Duration::from_millis(1_500)).map(drop);
            (outcome, waited.elapsed())
        })
    };
    raw.await_keys(&format!("dlock/{LOCK}/"), 2);
    drop(raw);
    let killed = Instant::now();
    server.kill();
    let (outcome, _) = waiter.join().unwrap();
    let gave_up_after = killed.elapsed();
    assert!(matches!(outcome, Err(Error::Backend { .. })), "{outcome:?}");
    // It kept trying for the TTL (2 s) and not for many TTLs (about 3 s when the machine is
    // quiet: the TTL, a watch that sees the failure, the give-up's own timeout).
    assert!(gave_up_after >= Duration::from_secs(2), "{gave_up_after:?}");
    assert!(gave_up_after < Duration::from_secs(8), "{gave_up_after:?}");
    drop(holder);
}

/// A balance kept in etcd whose reads and writes present a token, fenced in one transaction,
/// so that holders in different processes share one resource and one fence. The fence is
/// the highest token seen, as a zero-padded decimal (so etcd's byte-wise comparison orders
/// it); each accepted write adds a key of its own, so the writes can be counted.
struct SharedAccount {
    raw: Raw,
}

impl SharedAccount {
    fn new(endpoints: &[String]) -> Self {
        Self {
            raw: Raw::new(endpoints),
        }
    }

    /// `Some(balance)` if the fence admitted the token; a write also sets the balance.
    fn call(&mut self, token: FencingToken, write: Option<u64>) -> Option<u64> {
        let mark = format!("{:020}", token.get());
        let mut admitted = vec![TxnOp::put("account/fence", mark.clone(), None)];
        if let Some(balance) = write {
            admitted.push(TxnOp::put("account/balance", balance.to_string(), None));
            admitted.push(TxnOp::put(
                format!("account/writes/{mark}-{balance}"),
                "",
                None,
            ));
        }
        admitted.push(TxnOp::get("account/balance", None));
        // A missing fence key fails the comparison, which admits the first token.
        let txn = Txn::new()
            .when([Compare::value("account/fence", CompareOp::Greater, mark)])
            .and_then([])
            .or_else(admitted);
        let response = self.raw.txn(txn);
        if response.succeeded() {
            return None;
        }
        let balance = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => Some(
                    get.kvs()
                        .first()
                        .map_or(0, |kv| kv.value_str().unwrap().parse().unwrap()),
                ),
                _ => None,
            })
            .unwrap();
        Some(balance)
    }

    fn read(&mut self, token: FencingToken) -> Option<u64> {
        self.call(token, None)
    }

    fn write(&mut self, token: FencingToken, balance: u64) -> bool {
        self.call(token, Some(balance)).is_some()
    }

    /// The balance and the number of accepted writes.
    fn totals(&mut self) -> (u64, u64) {
        let mut client = self.raw.client.clone();
        let response = self
            .raw
            .runtime
            .block_on(client.get("account/balance", None))
            .unwrap();
        let balance = response
            .kvs()
            .first()
            .map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
        let writes = self.raw.keys("account/writes/").len() as u64;
        (balance, writes)
    }
}

const WORKER_ENDPOINTS: &str = "INFRA_DLOCK_ETCD_ENDPOINTS";
const WORKER_ROLE: &str = "INFRA_DLOCK_ETCD_ROLE";
/// How long each worker of the multi-process test increments.
const WORKER_TIME: Duration = Duration::from_secs(3);

/// Increments the shared balance under the lock for `time`; returns the increments tried and
/// the writes the fenced store accepted.
fn increment_shared(endpoints: &[String], time: Duration) -> (u64, u64) {
    let locks = locks(endpoints);
    let mut account = SharedAccount::new(endpoints);
    let (mut tried, mut accepted) = (0, 0);
    let until = Instant::now() + time;
    while Instant::now() < until {
        let guard = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
        tried += 1;
        if let Some(balance) = account.read(guard.token())
            && account.write(guard.token(), balance + 1)
        {
            accepted += 1;
        }
        guard.release().unwrap();
    }
    (tried, accepted)
}

#[test]
#[ignore = "worker process of the multi-process tests"]
fn etcd_worker_process() {
    let endpoints: Vec<String> = std::env::var(WORKER_ENDPOINTS)
        .expect("started by a multi-process test")
        .split(',')
        .map(str::to_owned)
        .collect();
    match std::env::var(WORKER_ROLE).as_deref() {
        Ok("stalled") => {
            // Take the lock, read, then wait for the parent's word (sent while this process
            // is frozen) and write what was read.
            let locks = locks(&endpoints);
            let mut account = SharedAccount::new(&endpoints);
            warm_up(&locks);
            let guard = locks.acquire(LOCK, Duration::from_millis(500)).unwrap();
            let balance = account.read(guard.token()).expect("the first read");
            println!("read-done");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let written = account.write(guard.token(), balance + 100);
            println!("written={written} held={}", guard.is_held());
        }
        Ok("waiter") => {
            // Wait for the lock (frozen by the parent meanwhile); say when it is granted.
            let locks = locks(&endpoints);
            let guard = locks.acquire(LOCK, Duration::from_millis(500)).unwrap();
            println!("granted={}", guard.token().get());
            // The parent checks the key of the grant before this process lets go.
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        }
        _ => {
            let (tried, accepted) = increment_shared(&endpoints, WORKER_TIME);
            println!("tried={tried} accepted={accepted}");
        }
    }
}

fn spawn_worker(endpoints: &[String], role: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "etcd_worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENDPOINTS, endpoints.join(","))
        .env(WORKER_ROLE, role)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The value after `key=` on the first line that has it.
fn printed(output: &str, key: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (_, rest) = line.split_once(&format!("{key}="))?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

#[test]
fn processes_and_threads_share_one_lock_and_one_fenced_balance() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = vec![server.url()];
    let children: Vec<_> = (0..2)
        .map(|_| spawn_worker(&endpoints, "increment"))
        .collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let endpoints = endpoints.clone();
            thread::spawn(move || increment_shared(&endpoints, WORKER_TIME))
        })
        .collect();
    let mut counts: Vec<(u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "worker failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let count = |key| printed(&stdout, key).unwrap().parse::<u64>().unwrap();
        counts.push((count("tried"), count("accepted")));
    }
    println!("workers (tried, accepted), threads first: {counts:?}");
    // Every worker, thread or process, got the lock, and every holder's write was accepted.
    assert!(counts.iter().all(|&(tried, _)| tried > 0), "{counts:?}");
    let tried: u64 = counts.iter().map(|(tried, _)| tried).sum();
    let accepted: u64 = counts.iter().map(|(_, accepted)| accepted).sum();
    assert_eq!(tried, accepted, "no holder's write was refused: {counts:?}");
    // The store's final balance is the number of writes it accepted, and each worker's count.
    assert_eq!(
        SharedAccount::new(&endpoints).totals(),
        (accepted, accepted)
    );
}

/// Reads the child's stdout lines on a thread of their own, so the test can wait for one
/// with a deadline.
fn lines_of(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    // Detached: it ends with the child's stdout.
    drop(thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            sink.lock().push(line);
        }
    }));
    lines
}

fn await_line(lines: &Mutex<Vec<String>>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = lines.lock().iter().find(|line| line.contains(prefix)) {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} in {:?}",
            lines.lock()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A worker process that is killed if the test fails while it is frozen, so no stopped
/// process outlives the test.
#[cfg(unix)]
struct Frozen(std::process::Child);

#[cfg(unix)]
impl Drop for Frozen {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(unix)]
#[test]
fn a_holder_process_frozen_past_its_lease_is_refused_by_the_fence() {
    use std::io::Write;

    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = vec![server.url()];
    let mut worker = Frozen(spawn_worker(&endpoints, "stalled"));
    let child = &mut worker.0;
    let lines = lines_of(child);
    await_line(&lines, "read-done");
    common::freeze(child);
    // Its word to go on waits in the pipe until the process is thawed.
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // The lease runs out while the holder is frozen; the next holder reads and writes.
    let locks = locks(&endpoints);
    let next = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    let mut account = SharedAccount::new(&endpoints);
    let balance = account.read(next.token()).unwrap();
    assert!(account.write(next.token(), balance + 1));
    common::thaw(child);
    let outcome = await_line(&lines, "written=");
    assert!(child.wait().unwrap().success());
    assert_eq!(printed(&outcome, "written").as_deref(), Some("false"));
    assert_eq!(printed(&outcome, "held").as_deref(), Some("false"));
    assert_eq!(
        account.totals(),
        (1, 1),
        "only the next holder's write landed"
    );
    next.release().unwrap();
}

/// etcd issue 11456: a waiter whose lease ran out while it waited must not be told that it
/// holds the lock. The waiter process is frozen while it waits until its key has expired; a
/// third party then takes the lock. Thawed, the waiter must wait behind it, and its grant must
/// be a live key.
#[cfg(unix)]
#[test]
fn a_waiter_frozen_past_its_lease_is_not_told_it_holds_the_lock() {
    use std::io::Write;

    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoints = vec![server.url()];
    let raw = Raw::new(&endpoints);
    let queue = format!("dlock/{LOCK}/");
    let locks = locks(&endpoints);
    let lease = Duration::from_secs(30);
    let first = locks.acquire(LOCK, lease).unwrap();
    let mut worker = Frozen(spawn_worker(&endpoints, "waiter"));
    let child = &mut worker.0;
    let lines = lines_of(child);
    raw.await_keys(&queue, 2);
    let frozen_key = raw.keys(&queue)[1].clone();
    common::freeze(child);
    // etcd ends the frozen waiter's lease (TTL 1 s, or the server's minimum) and its key.
    raw.await_keys(&queue, 1);
    first.release().unwrap();
    let third = locks.acquire(LOCK, lease).unwrap();
    common::thaw(child);
    // Thawed, the waiter finds its key gone and queues again, behind the third holder.
    raw.await_keys(&queue, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !lines.lock().iter().any(|line| line.contains("granted=")),
        "the waiter was granted while the third holder held the lock: {:?}",
        lines.lock()
    );
    let third_token = third.token();
    third.release().unwrap();
    let granted = await_line(&lines, "granted=");
    let token: u64 = printed(&granted, "granted").unwrap().parse().unwrap();
    assert!(token > third_token.get(), "{token} after {third_token}");
    assert_ne!(i64::try_from(token).unwrap(), frozen_key.1);
    // The grant is a live key: the only one in the queue, created at the token's revision.
    let keys = raw.keys(&queue);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].1, i64::try_from(token).unwrap());
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(child.wait().unwrap().success());
}

/// Retries `call` on `Error::Backend` (a leader election under way) for up to 20 s.
fn retried<T>(mut call: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call() {
            Err(Error::Backend { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[test]
fn a_held_lock_and_its_waiters_survive_the_leader_being_killed() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let raw = Raw::new(&endpoints);
    let queue = format!("dlock/{LOCK}/");
    let locks = Arc::new(locks(&endpoints));
    // Long enough to outlast an election on a loaded machine, as the test asks it to.
    let lease = Duration::from_secs(30);
    let mut held = locks.acquire(LOCK, lease).unwrap().into_grant();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..2 {
        let (locks, order) = (Arc::clone(&locks), Arc::clone(&order));
        waiters.push(thread::spawn(move || {
            let guard = locks
                .acquire_timeout(LOCK, lease, Duration::from_secs(60))
                .unwrap()
                .expect("granted within the wait");
            order.lock().push((i, guard.token()));
            guard.release().unwrap();
        }));
        raw.await_keys(&queue, i + 2);
    }
    let old = cluster.leader().unwrap();
    cluster.member_mut(old).kill();
    let new = cluster.leader().unwrap();
    assert_ne!(old, new);
    // The hold outlived the election: the holder still holds, extends and releases it.
    let before = held.token();
    retried(|| locks.extend(&mut held, lease)).unwrap();
    assert_eq!(held.token(), before);
    assert!(locks.is_held(&held));
    assert_eq!(raw.keys(&queue).len(), 3, "both waiters kept their places");
    locks.release(held).unwrap();
    for waiter in waiters {
        waiter.join().unwrap();
    }
    let order = order.lock().clone();
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1],
        "{order:?}"
    );
    assert!(order[0].1 > before && order[1].1 > order[0].1);
    // The killed member comes back and tokens keep growing.
    cluster.member_mut(old).restart().unwrap();
    let after = retried(|| locks.acquire(LOCK, lease)).unwrap();
    assert!(after.token() > order[1].1);
}

/// What the workers of the fault test saw.
#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    grants: u64,
    /// Acquisitions that ended in `Error::Backend`: a grant, if made, was lost and ran out.
    failed_acquires: u64,
    timed_out_waits: u64,
    /// Reads or writes the fence refused.
    refused: u64,
    /// Holds that stalled on purpose past their lease, and of those, the ones whose release
    /// found the key gone.
    stalls: u64,
    stalls_expired: u64,
    /// Holds that did not stall but whose release found the key gone: grants the faults took.
    grants_lost: u64,
    failed_releases: u64,
    /// Grants whose 500 ms lease was spent by the time the answers crossed the slowed links:
    /// revoked and reported, not queued again.
    spent_on_arrival: u64,
}

/// Three workers increment a fenced balance on a 3-member cluster, each through its own fault
/// proxies, while the main thread slows and cuts the connections, pauses the leader and kills
/// and restarts it; a worker's second hold and every fourth after it stall past their lease
/// between the read and the write, until another worker has read (or 6 s). The workers go on
/// after the faults until the fence has refused a stale write (at most 60 s from the start),
/// so a slow machine that granted few holds during the faults still shows the refusal.
#[test]
fn a_fenced_balance_survives_leader_kills_pauses_cuts_and_slow_links() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let proxies: Vec<FaultProxy> = cluster
        .members()
        .iter()
        .map(|member| FaultProxy::start(member.addr()).unwrap())
        .collect();
    let endpoints: Vec<String> = proxies
        .iter()
        .map(|proxy| format!("http://{}", proxy.addr()))
        .collect();
    let account = Arc::new(Account::new(LOCK));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let done = Arc::new(AtomicBool::new(false));
    let lease = Duration::from_millis(500);
    let hard_stop = Instant::now() + Duration::from_secs(60);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (account, outcomes, done) = (
                Arc::clone(&account),
                Arc::clone(&outcomes),
                Arc::clone(&done),
            );
            let options = EtcdOptions::default().timeout(Duration::from_millis(300));
            let locks = EtcdLocks::new(&endpoints, options).unwrap();
            thread::spawn(move || {
                let mut holds = 0u32;
                let finished = || {
                    done.load(Ordering::SeqCst)
                        && (account.ledger().refused > 0 || Instant::now() > hard_stop)
                };
                while !finished() {
                    let wait = Duration::from_secs(3);
                    let guard = match locks.acquire_timeout(LOCK, lease, wait) {
                        Ok(Some(guard)) => guard,
                        Ok(None) => {
                            outcomes.lock().timed_out_waits += 1;
                            continue;
                        }
                        Err(Error::Backend { .. }) => {
                            outcomes.lock().failed_acquires += 1;
                            continue;
                        }
                        Err(Error::LeaseSpentOnArrival { .. }) => {
                            outcomes.lock().spent_on_arrival += 1;
                            continue;
                        }
                        Err(other) => panic!("{other}"),
                    };
                    outcomes.lock().grants += 1;
                    let token = guard.token();
                    let stalls = holds % 4 == 1;
                    holds += 1;
                    if stalls {
                        outcomes.lock().stalls += 1;
                    }
                    let written = account.read(token).and_then(|balance| {
                        if stalls {
                            // A pause past the lease, until another worker has read.
                            guard.wait_lost();
                            account.wait_for_newer(token, Duration::from_secs(6));
                        }
                        account.write(token, balance + 1)
                    });
                    if written.is_err() {
                        outcomes.lock().refused += 1;
                    }
                    match guard.release() {
                        Ok(()) => {}
                        Err(Error::LeaseExpired { .. }) if stalls => {
                            outcomes.lock().stalls_expired += 1;
                        }
                        Err(Error::LeaseExpired { .. }) => outcomes.lock().grants_lost += 1,
                        Err(Error::Backend { .. }) => outcomes.lock().failed_releases += 1,
                        Err(other) => panic!("{other}"),
                    }
                }
            })
        })
        .collect();

    let all = |act: &dyn Fn(&FaultProxy)| proxies.iter().for_each(act);
    std::thread::sleep(Duration::from_millis(1_500));
    all(&|proxy| proxy.set_latency(Duration::from_millis(100)));
    std::thread::sleep(Duration::from_millis(1_500));
    all(&|proxy| proxy.heal());
    all(&|proxy| proxy.cut_connections());
    std::thread::sleep(Duration::from_millis(1_500));
    let leader = cluster.leader().unwrap();
    cluster.member_mut(leader).pause();
    std::thread::sleep(Duration::from_millis(2_500));
    cluster.member_mut(leader).resume();
    std::thread::sleep(Duration::from_millis(1_500));
    let leader = cluster.leader().unwrap();
    cluster.member_mut(leader).kill();
    std::thread::sleep(Duration::from_millis(2_500));
    cluster.member_mut(leader).restart().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    done.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let outcomes = *outcomes.lock();
    assert_fault_run(&account, outcomes.refused, &outcomes);
}

/// Grants, a timed-out wait, a lease found over at renewal and a cluster that cannot be
/// reached, each counted once under the instance's name.
#[cfg(feature = "metrics")]
#[test]
fn grants_timeouts_lease_losses_and_backend_errors_are_counted() {
    use metrics_util::debugging::DebuggingRecorder;

    let Some(mut server) = EtcdServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let locks = metrics::with_local_recorder(&recorder, || {
        EtcdLocks::new(
            &[server.url()],
            options().timeout(Duration::from_millis(500)),
        )
        .unwrap()
        .with_metrics_name("fleet")
    });
    let lease = Duration::from_secs(30);
    let mut held = locks.acquire(LOCK, lease).unwrap().into_grant();
    let permit = locks.permit("pool", 2, lease).unwrap();
    assert!(
        locks
            .acquire_timeout(LOCK, lease, Duration::from_millis(50))
            .unwrap()
            .is_none()
    );
    permit.release().unwrap();
    // The client counts 300 ms; a renewal after that finds the lease over.
    locks.extend(&mut held, Duration::from_millis(300)).unwrap();
    locks.wait_lost(&held);
    assert!(matches!(
        locks.extend(&mut held, lease),
        Err(Error::LeaseExpired { .. })
    ));
    locks.release(held).unwrap();
    server.stop();
    let failed = locks.try_acquire("elsewhere", lease);
    assert!(matches!(failed, Err(Error::Backend { .. })), "{failed:?}");

    common::assert_server_counts(&snapshotter, &[("exclusive", 1), ("permit", 1)]);
}

/// A lock renewed by a watchdog (feature `tokio`) while the cluster's leader is killed: the
/// watchdog goes on renewing through the election and the lock stays held, or it reports the
/// loss. At no moment does another client get the lock while the watchdog says it is held.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn a_renewed_lock_stays_held_or_reports_its_loss_across_a_leader_change() {
    use infra_common::SystemClock;
    use infra_dlock::{Loss, Renewal, Watchdog};
    use tokio::task::spawn_blocking;

    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let other = Arc::new(locks(&endpoints));
    let locks = Arc::new(locks(&endpoints));
    let lease = Duration::from_secs(6);
    let grant = {
        let locks = Arc::clone(&locks);
        spawn_blocking(move || {
            locks
                .acquire(LOCK, lease)
                .map(infra_dlock::LockGuard::into_grant)
        })
        .await
        .unwrap()
        .unwrap()
    };
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        SystemClock::new(),
        Renewal::new(lease),
    )
    .unwrap();
    let token = watchdog.token();
    // Whether another client gets the lock (given back at once), asked on the blocking pool
    // so that the renewals go on; `None` while the cluster cannot answer.
    let taken_by_other = || {
        let other = Arc::clone(&other);
        async move {
            spawn_blocking(
                move || match other.grant(LOCK, Access::Exclusive, lease, Wait::No) {
                    Ok(Some(grant)) => {
                        let _ = other.release(grant);
                        Some(true)
                    }
                    Ok(None) => Some(false),
                    Err(_) => None,
                },
            )
            .await
            .unwrap()
        }
    };
    // The same, asked again (for up to 20 s) until the cluster answers.
    let answered_by_other = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = taken_by_other().await;
            if answer.is_some() || Instant::now() >= deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(answered_by_other().await, Some(false));
    let (cluster, old, new) = spawn_blocking(move || {
        let old = cluster.leader().unwrap();
        cluster.member_mut(old).kill();
        let new = cluster.leader().unwrap();
        (cluster, old, new)
    })
    .await
    .unwrap();
    assert_ne!(old, new);
    // Watched for three leases after the election, and through every renewal in them.
    let until = Instant::now() + lease * 3;
    let mut checks = 0;
    while Instant::now() < until && watchdog.is_held() {
        if taken_by_other().await == Some(true) {
            assert!(
                !watchdog.is_held(),
                "another client got the lock while the watchdog said it was held"
            );
            break;
        }
        checks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if answered_by_other().await == Some(true) {
        assert!(
            !watchdog.is_held(),
            "another client got the lock while the watchdog said it was held"
        );
    }
    match watchdog.loss() {
        None => match watchdog.release().await {
            Ok(()) => println!("held through the election ({checks} checks), then released"),
            // The loss, reported by the release: not silent either.
            Err(error) => println!("the release reported the loss: {error}"),
        },
        Some(loss) => {
            assert!(
                matches!(loss, Loss::RenewalFailed(_) | Loss::Expired),
                "{loss:?}"
            );
            println!("the watchdog reported the loss after {checks} checks: {loss}");
        }
    }
    // Either way the lock is free within a lease, with a larger token.
    let next = spawn_blocking(move || {
        retried(|| other.acquire_timeout(LOCK, lease, lease * 2))
            .unwrap()
            .expect("free within two leases")
            .token()
    })
    .await
    .unwrap();
    assert!(next > token);
    drop(cluster);
}

/// All three members stopped and started again on their data: the locks answer again, and
/// every token after each restart is above every token before it.
#[test]
fn tokens_keep_growing_across_restarts_of_the_whole_cluster() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let locks = locks(&cluster.endpoints());
    let lease = Duration::from_secs(10);
    let mut tokens: Vec<FencingToken> = Vec::new();
    for round in 0..3 {
        if round > 0 {
            cluster.restart_all().unwrap();
        }
        for _ in 0..3 {
            let guard = retried(|| locks.acquire(LOCK, lease)).unwrap();
            if let Some(&last) = tokens.last() {
                assert!(
                    guard.token() > last,
                    "token {} after {last} (round {round})",
                    guard.token()
                );
            }
            tokens.push(guard.token());
            // A release the cluster cannot answer leaves the key to its lease: the next
            // acquire waits it out.
            if let Err(error) = locks.release(guard.into_grant()) {
                assert!(matches!(error, Error::Backend { .. }), "{error:?}");
            }
        }
    }
    assert_eq!(tokens.len(), 9);
}
