//! Redlock against real `redis-server`s: exclusion with fencing from many threads on 3 and 5
//! servers, a lost minority and a lost majority, the raise that keeps tokens growing across
//! servers, the validity check, restarts that lost the data, servers that do not answer,
//! owner-only release, the attempt's nonce that tells its keys from another grant's holding
//! the same number, and a fenced balance under a slow link, cut connections and a paused
//! server.
#![cfg(all(feature = "redis", not(infra_loom)))]

use std::time::{Duration, Instant};

use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_common::{Clock, SystemClock};
use infra_dlock::redis::{RedisLocks, RedisOptions};
use infra_dlock::redlock::Redlock;
use infra_dlock::{Access, Error, FencingToken, Locks, MemoryLocks, Wait};
use infra_testkit::{FaultProxy, RedisServer};

// The shared test helpers; this file uses the fenced account and the fault worker, not the
// process signals.
#[allow(dead_code)]
mod common;
use common::{
    Account, FaultOutcomes, SteppingClock, assert_fault_run, fault_worker, increment_from_threads,
};

const LOCK: &str = "account-7";
/// The lock key of [`LOCK`] on each server.
const KEY: &str = "dlock:{account-7}";
/// The nonce of the request that holds it, on each server.
const REQUEST: &str = "dlock:{account-7}:request";
/// Its token counter on each server.
const COUNTER: &str = "dlock:{account-7}:token";
const LEASE: Duration = Duration::from_secs(30);

/// `n` servers, or `None` (the test skips) without `redis-server`.
fn servers(n: usize) -> Option<Vec<RedisServer>> {
    (0..n).map(|_| RedisServer::start()).collect()
}

fn options() -> RedisOptions {
    RedisOptions::default().timeout(Duration::from_secs(2))
}

fn redlock(servers: &[RedisServer]) -> Redlock {
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    Redlock::new(&urls, options()).unwrap()
}

fn client(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut client(server))
        .unwrap()
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<u64>(&mut client(server))
        .unwrap()
        == 1
}

/// Kills the server, deletes its append-only file and starts it again: a Redis that lost
/// everything, its token counter included.
fn restart_without_data(server: &mut RedisServer) {
    server.kill();
    std::fs::remove_dir_all(server.data_dir().join("appendonlydir")).unwrap();
    server.restart().unwrap();
    assert!(!exists(server, COUNTER), "the counter is gone");
}

/// Acquires [`LOCK`], checks its token is above `last` and that a majority of `servers` hold
/// it under that token, releases it, and returns the token.
fn grant_above(
    locks: &Redlock,
    servers: &[RedisServer],
    last: FencingToken,
    when: &str,
) -> FencingToken {
    let guard = locks.acquire(LOCK, LEASE).unwrap();
    let token = guard.token();
    assert!(token > last, "{when}: token {token} after {last}");
    let holding = servers
        .iter()
        .filter(|server| get(server, KEY) == Some(token.get().to_string()))
        .count();
    assert!(
        holding >= locks.majority(),
        "{when}: {holding} servers hold {token}"
    );
    guard.release().unwrap();
    token
}

#[test]
fn threads_on_three_and_five_servers_exclude_each_other_and_the_fence_refuses_nothing() {
    for n in [3, 5] {
        let Some(servers) = servers(n) else {
            return;
        };
        let locks = Arc::new(redlock(&servers));
        let account = Arc::new(Account::new(LOCK));
        let (overlaps, mut tokens) = increment_from_threads(&locks, &account, (4, 25), LEASE);
        let ledger = account.ledger();
        assert_eq!(overlaps, 0, "{n} servers");
        assert_eq!(ledger.balance, 100, "{n} servers");
        assert_eq!(ledger.accepted_writes, 100, "{n} servers");
        assert_eq!(ledger.refused, 0, "{n} servers");
        assert_eq!(ledger.stale_accepted, 0, "{n} servers");
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 100, "every grant has a token of its own");
        // After the raise every server holds the grant under the one token T.
        let guard = locks.acquire(LOCK, LEASE).unwrap();
        for server in &servers {
            assert_eq!(get(server, KEY), Some(guard.token().get().to_string()));
        }
    }
}

#[test]
fn one_server_of_three_down_still_grants_two_down_fail_and_leave_nothing_held() {
    let Some(mut servers) = servers(3) else {
        return;
    };
    let locks = redlock(&servers);
    let first = grant_above(&locks, &servers, FencingToken::new(0), "all up");
    servers[0].kill();
    let second = grant_above(&locks, &servers[1..], first, "one down");
    servers[1].kill();
    for wait in [Wait::No, Wait::Forever] {
        let refused = locks.grant(LOCK, Access::Exclusive, LEASE, wait);
        let Err(Error::Backend { reason }) = &refused else {
            panic!("{wait:?}: granted on one server of three: {refused:?}");
        };
        assert!(reason.contains("1 of 3 servers answered"), "{reason}");
    }
    // The live server granted each attempt; each gave it back.
    assert!(!exists(&servers[2], KEY), "a partial grant was left behind");
    let single = RedisLocks::new(&servers[2].url(), options()).unwrap();
    assert!(single.try_acquire(LOCK, LEASE).unwrap().is_some());
    drop(single);
    servers[0].restart().unwrap();
    servers[1].restart().unwrap();
    grant_above(&locks, &servers, second, "two up again");
}

/// One server's counter far ahead makes T far ahead; the raise lifts the other two counters
/// to T, so once that server is gone the other two still give larger tokens.
#[test]
fn the_raise_keeps_tokens_growing_when_the_server_that_gave_t_is_gone() {
    let Some(mut servers) = servers(3) else {
        return;
    };
    let locks = redlock(&servers);
    let ahead: u64 = 9_000_000_000_000_000_000;
    let () = redis::cmd("SET")
        .arg(COUNTER)
        .arg(ahead)
        .query(&mut client(&servers[2]))
        .unwrap();
    let first = grant_above(&locks, &servers, FencingToken::new(0), "one counter ahead");
    assert_eq!(first.get(), ahead + 1, "T is the largest server's token");
    for server in &servers[..2] {
        let raised: u64 = get(server, COUNTER).unwrap().parse().unwrap();
        assert!(raised >= first.get(), "raised to {raised}");
    }
    servers[2].stop();
    let after = locks.acquire(LOCK, LEASE).unwrap();
    assert!(
        after.token() > first,
        "without the server that gave T: {} after {first}",
        after.token()
    );
}

/// With every clock reading 50 ms apart, a grant of 80 ms (77.2 ms after the allowance) is
/// spent after its two rounds: refused, not retried, and held nowhere. A long lease on the
/// same clock is granted.
#[test]
fn a_grant_whose_rounds_eat_the_lease_fails_and_leaves_nothing_held() {
    let Some(servers) = servers(3) else {
        return;
    };
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let clock = SteppingClock::new(Duration::from_millis(50));
    let locks = Redlock::with_clock(&urls, options(), clock).unwrap();
    for wait in [Wait::No, Wait::Forever] {
        let granted = locks.grant(LOCK, Access::Exclusive, Duration::from_millis(80), wait);
        assert!(
            matches!(granted, Err(Error::LeaseSpentOnArrival { .. })),
            "{wait:?}: {granted:?}"
        );
        for server in &servers {
            assert!(!exists(server, KEY), "the spent grant was given back");
        }
    }
    let long = locks.try_acquire(LOCK, LEASE).unwrap();
    assert!(
        long.is_some(),
        "the same clock grants a lease it does not eat"
    );
}

/// The system clock, with `hook` run at its `at`-th reading.
struct HookedClock<F> {
    readings: AtomicU64,
    at: u64,
    hook: F,
}

impl<F> std::fmt::Debug for HookedClock<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedClock").field("at", &self.at).finish()
    }
}

impl<F: Fn() + Send + Sync> Clock for HookedClock<F> {
    fn now_nanos(&self) -> u64 {
        if self.readings.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            (self.hook)();
        }
        SystemClock::new().now_nanos()
    }

    fn wall_time(&self) -> std::time::SystemTime {
        SystemClock::new().wall_time()
    }
}

/// Two of three servers lose the grant's key between the rounds (the third reading of the
/// clock: after the start of the call and the sending of round one, when round one's answers
/// are checked against the lease): the raise, which acts only where the key still holds this
/// grant, reaches one server, and the grant is not confirmed but given back.
#[test]
fn a_grant_whose_keys_vanish_before_the_raise_is_not_confirmed() {
    let Some(servers) = servers(3) else {
        return;
    };
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let clock = HookedClock {
        readings: AtomicU64::new(0),
        at: 3,
        hook: || {
            for server in &servers[..2] {
                let () = redis::cmd("DEL")
                    .arg(KEY)
                    .query(&mut client(server))
                    .unwrap();
            }
        },
    };
    let locks = Redlock::with_clock(&urls, options(), clock).unwrap();
    let granted = locks.try_acquire(LOCK, LEASE).unwrap();
    assert!(
        granted.is_none(),
        "confirmed on one server of three: {granted:?}"
    );
    assert!(
        !exists(&servers[2], KEY),
        "the one raised server was given back"
    );
}

/// Tokens grow over many grants while servers go down, come back empty (the clock rule), and
/// the majority moves between them.
#[test]
fn tokens_grow_while_servers_go_down_and_come_back_without_data() {
    let Some(mut servers) = servers(3) else {
        return;
    };
    let locks = redlock(&servers);
    let mut last = FencingToken::new(0);
    for round in 0..6 {
        let victim = round % 3;
        servers[victim].kill();
        let live: Vec<&RedisServer> = (0..3)
            .filter(|&i| i != victim)
            .map(|i| &servers[i])
            .collect();
        let guard = locks.acquire(LOCK, LEASE).unwrap();
        assert!(guard.token() > last, "round {round}, server {victim} down");
        for server in live {
            assert_eq!(get(server, KEY), Some(guard.token().get().to_string()));
        }
        last = guard.token();
        guard.release().unwrap();
        std::fs::remove_dir_all(servers[victim].data_dir().join("appendonlydir")).unwrap();
        servers[victim].restart().unwrap();
        assert!(!exists(&servers[victim], COUNTER));
        last = grant_above(&locks, &servers, last, &format!("round {round}, all up"));
        restart_without_data(&mut servers[(victim + 1) % 3]);
        last = grant_above(
            &locks,
            &servers,
            last,
            &format!("round {round}, one emptied"),
        );
    }
}

/// Two of five servers frozen (connections open, no answers): a grant waits for them at the
/// same time, not one after the other. What one frozen server costs is measured first, on a
/// single-server backend with the same timeout (a fresh connection's setup and the request
/// each wait for it).
#[cfg(unix)]
#[test]
fn servers_that_do_not_answer_are_waited_for_at_once_not_in_turn() {
    let Some(mut servers) = servers(5) else {
        return;
    };
    // A second: waiting in turn would cost a whole frozen server's wait more, so the bound
    // below leaves half of that (half a second or more) to a loaded machine.
    let options = RedisOptions::default().timeout(Duration::from_secs(1));
    servers[0].pause();
    servers[1].pause();
    let single = RedisLocks::new(&servers[0].url(), options.clone()).unwrap();
    let started = Instant::now();
    let frozen = single.try_acquire(LOCK, LEASE);
    let one_frozen = started.elapsed();
    assert!(matches!(frozen, Err(Error::Backend { .. })), "{frozen:?}");
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let locks = Redlock::new(&urls, options).unwrap();
    let started = Instant::now();
    let guard = locks.try_acquire(LOCK, LEASE).unwrap();
    let two_frozen = started.elapsed();
    assert!(guard.is_some(), "three of five servers answered");
    assert!(
        two_frozen < one_frozen * 3 / 2,
        "two frozen servers took {two_frozen:?}, one alone {one_frozen:?}: waited for in turn"
    );
    servers[0].resume();
    servers[1].resume();
}

/// Also: the expired holder's late write is refused by the fence.
#[test]
fn a_foreign_or_expired_grant_is_a_clear_error_and_leaves_the_holder_alone() {
    let Some(servers) = servers(3) else {
        return;
    };
    let ours = redlock(&servers);
    let theirs = redlock(&servers);
    let mut grant = ours.acquire(LOCK, LEASE).unwrap().into_grant();
    let foreign = theirs.extend(&mut grant, LEASE);
    assert!(
        matches!(foreign, Err(Error::ForeignGrant { .. })),
        "{foreign:?}"
    );
    let memory = MemoryLocks::new()
        .acquire(LOCK, LEASE)
        .unwrap()
        .into_grant();
    let foreign = ours.release(memory);
    assert!(
        matches!(foreign, Err(Error::ForeignGrant { .. })),
        "{foreign:?}"
    );
    assert!(ours.is_held(&grant));
    assert!(theirs.try_acquire(LOCK, LEASE).unwrap().is_none());

    // Expired: the servers let the short lease go, the next holder takes the lock.
    ours.extend(&mut grant, Duration::from_millis(200)).unwrap();
    ours.wait_lost(&grant);
    assert!(!ours.is_held(&grant));
    let next = theirs.acquire(LOCK, LEASE).unwrap();
    assert!(next.token() > grant.token());
    // The holder that slept past its lease writes after the next holder: refused.
    let account = Account::new(LOCK);
    account.write(next.token(), 1).unwrap();
    let stale = account.write(grant.token(), 2);
    assert!(matches!(stale, Err(Error::StaleToken { .. })), "{stale:?}");
    assert_eq!(account.ledger().balance, 1);
    let late = ours.extend(&mut grant, LEASE);
    assert!(matches!(late, Err(Error::LeaseExpired { .. })), "{late:?}");
    let late = ours.release(grant);
    assert!(matches!(late, Err(Error::LeaseExpired { .. })), "{late:?}");
    assert!(
        next.is_held(),
        "the late release left the next holder alone"
    );
    next.release().unwrap();
}

#[test]
fn readers_permits_and_bad_input_are_refused_before_any_round_trip() {
    // Nothing listens on port 1: a round trip would be a backend error.
    let locks = Redlock::new(&["redis://127.0.0.1:1"], options()).unwrap();
    let refused = |access, name: &str, lease| locks.grant(name, access, lease, Wait::No);
    assert!(matches!(
        refused(Access::Shared, LOCK, LEASE),
        Err(Error::UnsupportedAccess {
            access: Access::Shared,
            ..
        })
    ));
    let permit = Access::Permit { permits: 3 };
    assert!(matches!(
        refused(permit, LOCK, LEASE),
        Err(Error::UnsupportedAccess { access, .. }) if access == permit
    ));
    assert_eq!(refused(Access::Exclusive, "", LEASE), Err(Error::EmptyName));
    assert!(matches!(
        refused(Access::Exclusive, &"x".repeat(513), LEASE),
        Err(Error::NameTooLong { .. })
    ));
    assert_eq!(
        refused(Access::Exclusive, LOCK, Duration::ZERO),
        Err(Error::ZeroLease)
    );
    assert!(matches!(
        refused(Access::Exclusive, LOCK, Duration::MAX),
        Err(Error::LeaseTooLong { .. })
    ));
    assert!(matches!(
        refused(Access::Exclusive, LOCK, Duration::from_millis(2)),
        Err(Error::LeaseTooShort { .. })
    ));
    assert!(matches!(
        refused(Access::Permit { permits: 0 }, LOCK, LEASE),
        Err(Error::ZeroPermits)
    ));
    // A valid request does reach for the server, and says it could not.
    assert!(matches!(
        refused(Access::Exclusive, LOCK, LEASE),
        Err(Error::Backend { .. })
    ));
}

/// Sets [`COUNTER`] on `server` to `value`.
fn set_counter(server: &RedisServer, value: u64) {
    let () = redis::cmd("SET")
        .arg(COUNTER)
        .arg(value)
        .query(&mut client(server))
        .unwrap();
}

/// Servers whose counters agree give equal numbers to different grants. Here A is granted
/// the first server under `c + 1` and the second under `c`; between the rounds its key on the
/// second is removed (as the release of another grant under the number `c`, sent to every
/// server, removes it) and E is granted the second and third servers, under `c + 1` on both.
/// A's raise must not take E's key on the second server, which holds A's largest token, for
/// its own: both would hold the lock under one token, read the same balance, and the fence
/// would admit both writes.
#[test]
fn a_grant_is_not_confirmed_by_another_grants_key_that_holds_its_token() {
    let Some(servers) = servers(3) else {
        return;
    };
    // Far above the clock part of a token, so the tokens are these.
    let c: u64 = 1 << 62;
    set_counter(&servers[0], c);
    set_counter(&servers[1], c - 1);
    set_counter(&servers[2], c);
    // Someone else holds the third server during A's first round.
    let () = redis::cmd("SET")
        .arg(KEY)
        .arg(1)
        .arg("PX")
        .arg(30_000)
        .query(&mut client(&servers[2]))
        .unwrap();
    let e = redlock(&servers);
    let e_grant = Mutex::new(None);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let clock = HookedClock {
        readings: AtomicU64::new(0),
        at: 3,
        hook: || {
            for server in &servers[1..] {
                let () = redis::cmd("DEL")
                    .arg(KEY)
                    .query(&mut client(server))
                    .unwrap();
            }
            let granted = e.grant(LOCK, Access::Exclusive, LEASE, Wait::No).unwrap();
            *e_grant.lock() = granted;
        },
    };
    let a = Redlock::with_clock(&urls, options(), clock).unwrap();
    let a_guard = a.try_acquire(LOCK, LEASE).unwrap();
    let e_grant = e_grant.lock().take().expect("E holds the lock");
    assert_eq!(e_grant.token().get(), c + 1, "E's token is A's largest");
    if let Some(a_guard) = a_guard {
        let account = Account::new(LOCK);
        let read_by_a = account.read(a_guard.token()).unwrap();
        let read_by_e = account.read(e_grant.token()).unwrap();
        account.write(a_guard.token(), read_by_a + 1).unwrap();
        let e_write = account.write(e_grant.token(), read_by_e + 1);
        panic!(
            "A and E both hold the lock under token {}; the fence admitted E's write too \
             ({e_write:?}), and the balance is {} after two increments",
            a_guard.token(),
            account.ledger().balance
        );
    }
    assert!(e.is_held(&e_grant), "A's attempt left E's hold alone");
    e.release(e_grant).unwrap();
}

/// Deletes [`KEY`] on each of `servers`: a hold the server lost.
fn lose_key(servers: &[RedisServer]) {
    for server in servers {
        let () = redis::cmd("DEL")
            .arg(KEY)
            .query(&mut client(server))
            .unwrap();
    }
}

/// E holds the lock under `c + 1` on every server, then loses its key on the second and third
/// and those servers' counters fall back to `c` (as a restart from an older snapshot leaves
/// them). A's round one is granted there, under `c + 1` again: between A's rounds, E is
/// asked whether it holds the lock and released. E holds one server of three, so it does not
/// hold the lock; its extension and release must leave A's keys alone, so A's grant goes
/// through.
#[test]
fn is_held_extend_and_release_leave_another_attempts_key_with_the_same_number_alone() {
    let Some(servers) = servers(3) else {
        return;
    };
    let c: u64 = 1 << 62;
    for server in &servers {
        set_counter(server, c);
    }
    let e = redlock(&servers);
    let e_grant = e.grant(LOCK, Access::Exclusive, LEASE, Wait::No).unwrap();
    let e_grant = Mutex::new(e_grant);
    assert_eq!(e_grant.lock().as_ref().unwrap().token().get(), c + 1);
    lose_key(&servers[1..]);
    for server in &servers[1..] {
        set_counter(server, c);
    }
    let seen_by_e = Mutex::new(None);
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let clock = HookedClock {
        readings: AtomicU64::new(0),
        at: 3,
        hook: || {
            let mut e_grant = e_grant.lock().take().expect("E was granted");
            let held = e.is_held(&e_grant);
            let extended = e.extend(&mut e_grant, LEASE);
            *seen_by_e.lock() = Some((held, extended, e.release(e_grant)));
        },
    };
    let a = Redlock::with_clock(&urls, options(), clock).unwrap();
    let a_guard = a.try_acquire(LOCK, LEASE).unwrap();
    let (held, extended, released) = seen_by_e.lock().take().expect("the hook ran");
    assert!(
        !held,
        "E counted A's pending keys, which hold E's token, as its own: it holds 1 server of 3"
    );
    assert!(
        matches!(extended, Err(Error::LeaseExpired { .. })),
        "E's extension, held on 1 server of 3: {extended:?}"
    );
    assert!(
        matches!(released, Err(Error::LeaseExpired { .. })),
        "E's release, held on 1 server of 3: {released:?}"
    );
    let a_guard = a_guard.expect("E's release left A's keys alone, so A's grant goes through");
    assert_eq!(a_guard.token().get(), c + 1);
    assert!(a_guard.is_held());
    a_guard.release().unwrap();
}

/// The nonce kept beside the lock key is what release, extend and `is_held` compare, so an
/// extension renews it with the key: both outlive the lease the grant was made with.
#[test]
fn an_extension_renews_the_grants_nonce_with_its_key() {
    let Some(servers) = servers(3) else {
        return;
    };
    let locks = redlock(&servers);
    let mut grant = locks
        .grant(LOCK, Access::Exclusive, LEASE, Wait::No)
        .unwrap()
        .unwrap();
    locks.extend(&mut grant, LEASE * 2).unwrap();
    for (index, server) in servers.iter().enumerate() {
        for key in [KEY, REQUEST] {
            let left: u64 = redis::cmd("PTTL")
                .arg(key)
                .query(&mut client(server))
                .unwrap();
            assert!(
                left > duration_ms(LEASE),
                "server {index}: {key} expires in {left} ms after an extension to {} ms",
                duration_ms(LEASE * 2)
            );
        }
    }
    locks.release(grant).unwrap();
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}

/// Three workers, each with its own `Redlock` over three servers, increment a fenced balance
/// while the first server, reached through a fault proxy, is slowed (80 ms each way) and has
/// its connections cut, and the third is paused (SIGSTOP) for 600 ms; every fifth hold a
/// worker stalls past its lease between its read and its write, until another worker has
/// taken the lock.
#[test]
fn a_fenced_balance_survives_a_slow_link_cut_connections_and_a_paused_server() {
    let Some(mut servers) = servers(3) else {
        return;
    };
    let proxy = FaultProxy::start(servers[0].addr()).unwrap();
    let mut urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    urls[0] = format!("redis://{}", proxy.addr());
    let account = Arc::new(Account::new(LOCK));
    let outcomes = Arc::new(Mutex::new(FaultOutcomes::default()));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (account, outcomes, done) = (
                Arc::clone(&account),
                Arc::clone(&outcomes),
                Arc::clone(&done),
            );
            let options = RedisOptions::default().timeout(Duration::from_millis(200));
            let locks = Redlock::new(&urls, options).unwrap();
            thread::spawn(move || {
                let now = || locks.clock().now_nanos();
                let timing = (Duration::from_millis(600), Duration::from_secs(1), 10);
                fault_worker(&locks, &now, &account, &outcomes, &done, timing);
            })
        })
        .collect();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        proxy.set_latency(Duration::from_millis(80));
        std::thread::sleep(Duration::from_millis(600));
        proxy.heal();
        proxy.cut_connections();
        std::thread::sleep(Duration::from_millis(300));
        servers[2].pause();
        std::thread::sleep(Duration::from_millis(600));
        servers[2].resume();
    }
    done.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    // Six or more stalls past the lease: the fence refused at least one of them.
    let outcomes = *outcomes.lock();
    assert_fault_run(&account, outcomes.refused, &outcomes);
}
