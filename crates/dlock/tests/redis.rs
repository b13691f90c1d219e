//! The Redis backend against a real `redis-server`: exclusion with fencing from many threads,
//! owner-only release and extend, expiry, tokens across a server that lost its data, one round
//! trip per call, and a fenced store under a paused server, cut and slow connections, a
//! restart that lost the data, and holders that pause past their leases.
#![cfg(all(feature = "redis", not(infra_loom)))]

use std::time::{Duration, Instant};

use infra_common::Clock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_dlock::redis::{COUNTER_IDLE, RedisLocks, RedisOptions};
use infra_dlock::{Access, Error, FencingToken, Locks, MemoryLocks, Wait};
use infra_testkit::{FaultProxy, RedisServer};

mod common;
use common::{
    Account, FaultOutcomes, SteppingClock, assert_fault_run, fault_worker, increment_from_threads,
};

const LOCK: &str = "account-7";

fn locks(url: &str) -> RedisLocks {
    let options = RedisOptions::default().timeout(Duration::from_secs(2));
    RedisLocks::new(url, options).unwrap()
}

fn client(server: &RedisServer) -> redis::Connection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_connection().unwrap()
}

/// `INFO commandstats` as (command, calls) pairs.
fn command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut client(server))
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (command, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((command.to_owned(), calls))
        })
        .collect()
}

/// How often `command` ran, from what [`command_calls`] read.
fn calls_to(calls: &[(String, u64)], command: &str) -> u64 {
    calls
        .iter()
        .find(|(name, _)| name == command)
        .map_or(0, |(_, calls)| *calls)
}

#[test]
fn threads_exclude_each_other_and_the_fenced_balance_counts_every_write() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = Arc::new(locks(&server.url()));
    let account = Arc::new(Account::new(LOCK));
    let (overlaps, mut tokens) =
        increment_from_threads(&locks, &account, (4, 50), Duration::from_secs(30));
    let ledger = account.ledger();
    assert_eq!(overlaps, 0);
    assert_eq!(ledger.balance, 200);
    assert_eq!(ledger.accepted_writes, 200);
    assert_eq!(ledger.refused, 0);
    assert_eq!(ledger.stale_accepted, 0);
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 200, "every grant has a token of its own");
}

#[test]
fn only_the_owner_releases_or_extends() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ours = locks(&server.url());
    let theirs = locks(&server.url());
    let lease = Duration::from_secs(30);

    let mut grant = ours.acquire(LOCK, lease).unwrap().into_grant();
    // Another instance, even on the same server, cannot act on it.
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

    // A holder whose lease ran out cannot release or extend the next holder's grant.
    let short = Duration::from_millis(200);
    ours.extend(&mut grant, short).unwrap();
    ours.wait_lost(&grant);
    assert!(!ours.is_held(&grant));
    let next = theirs.acquire(LOCK, lease).unwrap();
    assert!(next.token() > grant.token());
    assert!(matches!(
        ours.extend(&mut grant, lease),
        Err(Error::LeaseExpired { .. })
    ));
    let late = ours.release(grant);
    assert!(matches!(late, Err(Error::LeaseExpired { .. })), "{late:?}");
    assert!(
        next.is_held(),
        "the late release left the next holder alone"
    );
    next.release().unwrap();
}

#[test]
fn an_expired_lock_goes_to_the_next_with_a_larger_token() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    warm_up(&locks, Access::Exclusive);
    let first = locks
        .acquire(LOCK, Duration::from_millis(250))
        .unwrap()
        .into_grant();
    // Waits (with backoff, no busy spin) until Redis ends the first lease.
    let second = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    assert!(second.token() > first.token());
    assert!(!locks.is_held(&first));
    assert!(second.is_held());
    // A grant's lease is the one asked for minus the drift allowance (1 % + 2 ms).
    assert_eq!(
        second.grant().lease(),
        Duration::from_millis(30_000 - 300 - 2)
    );
}

/// Pools a connection and loads the script of `access`, so a short lease asked for next is
/// not spent on connecting and loading before its grant arrives (on a loaded machine that
/// took 88 ms).
fn warm_up(locks: &RedisLocks, access: Access) {
    let grant = locks
        .grant("warm-up", access, Duration::from_secs(30), Wait::No)
        .unwrap()
        .unwrap();
    locks.release(grant).unwrap();
}

/// A waiter's lease counts from the attempt that was granted, not from its first attempt: a
/// waiter that waited 300 ms keeps its whole lease after the hand-over.
#[test]
fn a_waiters_lease_starts_at_the_attempt_that_was_granted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = Arc::new(locks(&server.url()));
    let clock = *locks.clock();
    let lease = Duration::from_secs(30);
    let holder = locks.acquire(LOCK, lease).unwrap().into_grant();
    let started = clock.now_nanos();
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || locks.acquire(LOCK, lease).unwrap().into_grant())
    };
    std::thread::sleep(Duration::from_millis(300));
    locks.release(holder).unwrap();
    let grant = waiter.join().unwrap();
    let waited = grant.granted_at_nanos().saturating_sub(started);
    // Its attempts are at most 50 ms apart: the granted one was sent after the release.
    assert!(
        waited >= 250_000_000,
        "the lease counts from {waited} ns after the wait began"
    );
    assert_eq!(grant.lease(), Duration::from_millis(30_000 - 300 - 2));
    assert!(grant.deadline_nanos() >= started + 250_000_000 + 29_698_000_000);
}

/// Every key a name leaves in Redis expires: the holds with their leases, the token counter a
/// day after the last grant. A counter gone (as its expiry makes it) starts again above every
/// token it gave.
#[test]
fn every_key_of_a_name_expires_and_tokens_grow_across_the_counters_expiry() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let counter = format!("dlock:{{{LOCK}}}:token");
    let pttl = |key: &str| -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query(&mut client(&server))
            .unwrap()
    };
    let day = i64::try_from(COUNTER_IDLE.as_millis()).unwrap();
    let mut last = FencingToken::new(0);
    for access in [Access::Exclusive, Access::Shared, Access::Exclusive] {
        let grant = locks.grant(LOCK, access, lease, Wait::No).unwrap().unwrap();
        assert!(grant.token() > last);
        last = grant.token();
        let left = pttl(&counter);
        assert!(day - 60_000 < left && left <= day, "{left} ms left");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("dlock:{{{LOCK}}}*"))
            .query(&mut client(&server))
            .unwrap();
        assert!(keys.contains(&counter), "{keys:?}");
        for key in &keys {
            assert!(pttl(key) > 0, "{key} never expires");
        }
        locks.release(grant).unwrap();
    }
    let semaphore = locks.permit("pool", 2, lease).unwrap();
    assert!(pttl("dlock:{pool}:token") > day - 60_000);
    semaphore.release().unwrap();
    // The counter's expiry, brought forward: the next token is still above every earlier one.
    let _: () = redis::cmd("DEL")
        .arg(&counter)
        .query(&mut client(&server))
        .unwrap();
    let after = locks.acquire(LOCK, lease).unwrap();
    assert!(after.token() > last, "{} after {last}", after.token());
}

/// Kills the server, deletes its append-only file and starts it again: a Redis that lost
/// everything. Checks that it did.
fn lose_everything(server: &mut RedisServer, counter_key: &str) {
    server.kill();
    let dir = server.data_dir().join("appendonlydir");
    assert!(dir.exists(), "the server persisted to {dir:?}");
    std::fs::remove_dir_all(&dir).unwrap();
    server.restart().unwrap();
    let exists: u64 = redis::cmd("EXISTS")
        .arg(counter_key)
        .query(&mut client(server))
        .unwrap();
    assert_eq!(exists, 0, "the counter is gone");
}

fn run_id(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut client(server))
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn server_time_ms(server: &RedisServer) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut client(server)).unwrap();
    secs * 1000 + micros / 1000
}

#[test]
fn tokens_keep_growing_across_restarts_that_lost_the_data() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let counter = format!("dlock:{{{LOCK}}}:token");
    let lease = Duration::from_secs(30);
    let mut last = FencingToken::new(0);
    let mut run_ids = Vec::new();
    for round in 0..3 {
        run_ids.push(run_id(&server));
        let before = server_time_ms(&server);
        for i in 0..5 {
            let guard = locks.acquire(LOCK, lease).unwrap();
            assert!(
                guard.token() > last,
                "round {round}: {} after {last}",
                guard.token()
            );
            if i == 0 {
                // The clock rule: a fresh counter starts at the server's time in ms × 2^20.
                let after = server_time_ms(&server);
                let epoch = guard.token().get() >> 20;
                assert!(
                    before <= epoch && epoch <= after,
                    "{before} {epoch} {after}"
                );
                assert_eq!(guard.token().get() & ((1 << 20) - 1), 1);
            }
            last = guard.token();
            guard.release().unwrap();
        }
        lose_everything(&mut server, &counter);
    }
    // A grant still held when the data went is lost with it: the lock is free at once.
    let held = locks.acquire(LOCK, lease).unwrap().into_grant();
    lose_everything(&mut server, &counter);
    let after_loss = locks
        .try_acquire(LOCK, lease)
        .unwrap()
        .expect("the hold was lost");
    assert!(after_loss.token() > held.token());
    // FLUSHALL loses the counter as well; the next token is again above everything.
    let before_flush = after_loss.token();
    drop(after_loss);
    let _: () = redis::cmd("FLUSHALL").query(&mut client(&server)).unwrap();
    let after_flush = locks.acquire(LOCK, lease).unwrap();
    assert!(after_flush.token() > before_flush);
    run_ids.push(run_id(&server));
    run_ids.dedup();
    assert_eq!(
        run_ids.len(),
        4,
        "each restart was a new server: {run_ids:?}"
    );
}

/// A failover to a replica that missed the last grants, with real replication on loopback: the
/// replica copies the primary's first grants, is promoted (its link cut, as a failover cuts
/// it), the old primary grants more that it never receives, and a client sent to the promoted
/// replica once its clock has passed the last of those grants' millisecond (the README's
/// condition: the servers' clocks agree and the failover takes longer than a millisecond) is
/// given a token above every token the old primary gave, though the replica's counter is behind.
#[test]
fn a_replica_promoted_after_missing_the_last_grants_gives_larger_tokens() {
    let (Some(primary), Some(replica)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    // The primary sends its data at once rather than after the default delay.
    let reply = primary.command(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    assert_eq!(reply.unwrap(), "+OK");
    let port = primary.addr().port().to_string();
    assert_eq!(
        replica.command(&["REPLICAOF", "127.0.0.1", &port]).unwrap(),
        "+OK"
    );
    let on_primary = locks(&primary.url());
    let counter = format!("dlock:{{{LOCK}}}:token");
    let lease = Duration::from_secs(30);
    let grant = |locks: &RedisLocks| {
        let guard = locks.acquire(LOCK, lease).unwrap();
        let token = guard.token();
        guard.release().unwrap();
        token
    };
    let copied = (0..3).map(|_| grant(&on_primary)).last().unwrap();
    // `WAIT` counts the replicas that acknowledged the writes of its own connection, so this
    // connection writes a mark after the grants: its acknowledgement covers them (the first
    // calls may find the link still syncing: asked again until it counts one replica).
    let mut marking = client(&primary);
    let () = redis::cmd("SET")
        .arg("after-the-first-grants")
        .arg(1)
        .query(&mut marking)
        .unwrap();
    let acknowledged = (0..100).any(|_| {
        let replicas: u64 = redis::cmd("WAIT")
            .arg(1)
            .arg(100)
            .query(&mut marking)
            .unwrap();
        replicas == 1
    });
    assert!(
        acknowledged,
        "the replica never acknowledged the first grants"
    );
    assert_eq!(replica.command(&["REPLICAOF", "NO", "ONE"]).unwrap(), "+OK");

    let missed = (0..5).map(|_| grant(&on_primary)).last().unwrap();
    assert!(missed > copied);
    let behind: u64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut client(&replica))
        .unwrap();
    assert_eq!(
        behind,
        copied.get(),
        "the promoted replica's counter missed the last grants"
    );

    // The replica's clock reads past the millisecond of the last missed grant (the same
    // machine's clock: a few round trips at most).
    let last_ms = missed.get() >> 20;
    while server_time_ms(&replica) <= last_ms {}
    let on_replica = locks(&replica.url());
    let after_failover = grant(&on_replica);
    assert!(
        after_failover > missed,
        "{after_failover} after the old primary's {missed}"
    );
}

/// Copies the server's append-only files aside: a snapshot of its data as it is now.
fn snapshot(server: &RedisServer) -> std::path::PathBuf {
    let live = server.data_dir().join("appendonlydir");
    let copy = server.data_dir().join("snapshot");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir(&copy).unwrap();
    for file in std::fs::read_dir(&live).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), copy.join(file.file_name())).unwrap();
    }
    copy
}

/// Kills the server and starts it again from `snapshot`: a Redis that lost only its latest
/// writes, as after a restart from an older backup, an `appendfsync everysec` file that missed
/// its last second, or a failover to a replica that missed the last writes. Checks that the
/// counter went back to `counter_then`.
fn roll_back_to(
    server: &mut RedisServer,
    snapshot: &std::path::Path,
    counter_key: &str,
    counter_then: u64,
) {
    server.kill();
    let live = server.data_dir().join("appendonlydir");
    std::fs::remove_dir_all(&live).unwrap();
    std::fs::rename(snapshot, &live).unwrap();
    server.restart().unwrap();
    let counter: Option<u64> = redis::cmd("GET")
        .arg(counter_key)
        .query(&mut client(server))
        .unwrap();
    assert_eq!(
        counter,
        Some(counter_then),
        "the snapshot's counter is back"
    );
}

#[test]
fn tokens_keep_growing_after_a_restart_from_an_older_snapshot() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let counter = format!("dlock:{{{LOCK}}}:token");
    let lease = Duration::from_secs(30);
    let account = Account::new(LOCK);
    let mut handed_out = Vec::new();
    for round in 0..3 {
        let saved = locks.acquire(LOCK, lease).unwrap();
        let saved_token = saved.token();
        handed_out.push(saved_token);
        saved.release().unwrap();
        let snapshot = snapshot(&server);
        // Grants after the snapshot, the last one still held and admitted by the resource.
        for _ in 0..3 {
            let guard = locks.acquire(LOCK, lease).unwrap();
            handed_out.push(guard.token());
            guard.release().unwrap();
        }
        let stalled = locks.acquire(LOCK, lease).unwrap().into_grant();
        handed_out.push(stalled.token());
        account.write(stalled.token(), round).unwrap();
        roll_back_to(&mut server, &snapshot, &counter, saved_token.get());
        let next = locks.acquire(LOCK, lease).unwrap();
        let highest = handed_out.iter().max().copied().unwrap();
        assert!(
            next.token() > highest,
            "round {round}: {} after {highest}",
            next.token()
        );
        account.write(next.token(), round + 1).unwrap();
        // The stalled holder wakes up and writes: refused.
        assert!(matches!(
            account.write(stalled.token(), round + 100),
            Err(Error::StaleToken { .. })
        ));
        handed_out.push(next.token());
        next.release().unwrap();
    }
    assert_eq!(account.ledger().stale_accepted, 0);
}

#[test]
fn a_counter_at_its_end_or_garbled_is_an_error_not_a_panic() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let mut redis = client(&server);
    // At the end of the range, or set beyond it: no room to grow.
    let full = [
        i64::MAX.to_string(),
        "9223372036854775808".to_owned(),
        "99999999999999999999".to_owned(),
    ];
    // Not an integer as Redis spells one.
    let garbled = ["not a number", "", "007", "+5", "-0", " 5", "1.5", "1e9"];
    let cases = full
        .iter()
        .map(|value| (value.as_str(), true))
        .chain(garbled.iter().map(|value| (*value, false)));
    for (value, full) in cases {
        let _: () = redis::cmd("SET")
            .arg(format!("dlock:{{{LOCK}}}:token"))
            .arg(value)
            .query(&mut redis)
            .unwrap();
        let refused = locks.try_acquire(LOCK, lease);
        if full {
            assert!(
                matches!(refused, Err(Error::TokensExhausted)),
                "{value:?}: {refused:?}"
            );
        } else {
            assert!(
                matches!(refused, Err(Error::Backend { .. })),
                "{value:?}: {refused:?}"
            );
        }
        // No lock left behind, and the counter as it was.
        let held: u64 = redis::cmd("EXISTS")
            .arg(format!("dlock:{{{LOCK}}}"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(held, 0, "{value:?}");
        let counter: String = redis::cmd("GET")
            .arg(format!("dlock:{{{LOCK}}}:token"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(counter, value);
    }
}

/// A counter someone set to zero or below (a hand "reset", another program) is behind the
/// server's clock like a missing one: the next token starts again from the clock, above every
/// token given before (the reset coming a millisecond or more after the last grant, as the
/// README's rule asks), and the lock key holds that token (no hold nobody can release).
#[test]
fn a_counter_set_to_zero_or_below_starts_again_from_the_clock() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let counter = format!("dlock:{{{LOCK}}}:token");
    let mut redis = client(&server);
    let first = locks.acquire(LOCK, lease).unwrap();
    let mut last = first.token();
    first.release().unwrap();
    for reset in [
        "0",
        "-1",
        "-5",
        "-9223372036854775808",
        "-99999999999999999999",
    ] {
        // The rule holds for a counter lost once the server's clock reads a later millisecond
        // than the last token's (see the README), as any real loss does; a reset within that
        // millisecond would start again at the same clock value.
        let mut polls = 0;
        while server_time_ms(&server) <= last.get() >> 20 {
            polls += 1;
            assert!(polls < 10_000, "the server's clock does not move");
        }
        let _: () = redis::cmd("SET")
            .arg(&counter)
            .arg(reset)
            .query(&mut redis)
            .unwrap();
        let before = server_time_ms(&server);
        let guard = match locks.try_acquire(LOCK, lease) {
            Ok(Some(guard)) => guard,
            other => panic!("counter {reset}: {other:?}"),
        };
        let token = guard.token();
        assert!(token > last, "counter {reset}: {token} after {last}");
        assert!(
            token.get() >> 20 >= before,
            "counter {reset}: {token} is below the clock"
        );
        let held: String = redis::cmd("GET")
            .arg(format!("dlock:{{{LOCK}}}"))
            .query(&mut redis)
            .unwrap();
        assert_eq!(held, token.get().to_string());
        last = token;
        guard.release().unwrap();
    }
}

/// The counter is counted up on its decimal string inside the script: exact where a double
/// is not (near 2^63), carrying over trailing nines, with the day's expiry set each time, and
/// 2^63 − 1 itself is still given before the counter is exhausted.
#[test]
fn a_counter_ahead_of_the_clock_counts_up_exactly_to_its_end() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let counter = format!("dlock:{{{LOCK}}}:token");
    let mut redis = client(&server);
    let day = i64::try_from(COUNTER_IDLE.as_millis()).unwrap();
    // Each start is far ahead of the server's clock (ms × 2^20, about 1.9 × 10^18 today).
    for (start, next) in [
        (8_999_999_999_999_999_999_u64, 9_000_000_000_000_000_000_u64),
        (9_223_372_036_854_775_799, 9_223_372_036_854_775_800),
        (9_223_372_036_854_775_805, 9_223_372_036_854_775_806),
    ] {
        let _: () = redis::cmd("SET")
            .arg(&counter)
            .arg(start)
            .query(&mut redis)
            .unwrap();
        let guard = locks.try_acquire(LOCK, lease).unwrap().expect("free");
        assert_eq!(guard.token(), FencingToken::new(next));
        let stored: u64 = redis::cmd("GET").arg(&counter).query(&mut redis).unwrap();
        assert_eq!(stored, next);
        let left: i64 = redis::cmd("PTTL").arg(&counter).query(&mut redis).unwrap();
        assert!(day - 60_000 < left && left <= day, "{left} ms left");
        guard.release().unwrap();
    }
    let last = locks.try_acquire(LOCK, lease).unwrap().expect("free");
    assert_eq!(last.token(), FencingToken::new(i64::MAX.unsigned_abs()));
    last.release().unwrap();
    assert_eq!(
        locks.try_acquire(LOCK, lease).unwrap_err(),
        Error::TokensExhausted
    );
}

/// A mutex release moves the token to the released mark, which expires when the lease would
/// have: the lock key is gone, and the mark outlives it by no more than the lease's rest.
#[test]
fn a_release_leaves_its_token_marked_for_the_rest_of_the_lease() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let mut redis = client(&server);
    let guard = locks.acquire(LOCK, lease).unwrap();
    let token = guard.token();
    let held_left: i64 = redis::cmd("PTTL")
        .arg(format!("dlock:{{{LOCK}}}"))
        .query(&mut redis)
        .unwrap();
    guard.release().unwrap();
    let held: u64 = redis::cmd("EXISTS")
        .arg(format!("dlock:{{{LOCK}}}"))
        .query(&mut redis)
        .unwrap();
    assert_eq!(held, 0);
    let released = format!("dlock:{{{LOCK}}}:released");
    let marked: String = redis::cmd("GET").arg(&released).query(&mut redis).unwrap();
    assert_eq!(marked, token.get().to_string());
    let mark_left: i64 = redis::cmd("PTTL").arg(&released).query(&mut redis).unwrap();
    assert!(
        0 < mark_left && mark_left <= held_left,
        "{mark_left} of {held_left} ms"
    );
}

/// A zero timeout is a setting no call can work under: the sockets refuse it, so every call
/// failed as if the server were unreachable. It is refused when the locks are made, with a
/// reason that says so, before any connection.
#[test]
fn a_zero_timeout_is_refused_when_the_locks_are_made() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let options = RedisOptions::default().timeout(Duration::ZERO);
    let made = RedisLocks::new(&server.url(), options);
    assert!(
        matches!(&made, Err(Error::Backend { reason }) if reason.contains("timeout")),
        "{:?}",
        made.map(|locks| locks.try_acquire(LOCK, Duration::from_secs(5)).map(|_| ()))
    );
}

#[test]
fn bad_input_is_refused_before_any_round_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(1);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(locks.try_acquire("", lease).unwrap_err(), Error::EmptyName);
    assert!(matches!(
        locks.try_acquire(&"x".repeat(513), lease),
        Err(Error::NameTooLong { .. })
    ));
    assert_eq!(
        locks.try_acquire("a", Duration::ZERO).unwrap_err(),
        Error::ZeroLease
    );
    assert_eq!(
        locks
            .try_acquire("a", Duration::from_millis(2))
            .unwrap_err(),
        Error::LeaseTooShort {
            lease: Duration::from_millis(2),
            allowance: Duration::from_micros(2_020),
        }
    );
    assert_eq!(locks.permit("a", 0, lease).unwrap_err(), Error::ZeroPermits);
    let calls = command_calls(&server);
    assert!(
        calls
            .iter()
            .all(|(command, _)| command.starts_with("config")),
        "{calls:?}"
    );
    // An unreachable server is an error too.
    drop(server);
    let failed = locks.try_acquire("a", lease);
    assert!(matches!(failed, Err(Error::Backend { .. })), "{failed:?}");
}

#[test]
fn acquire_release_and_extend_are_one_round_trip_each() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    // Load the scripts (the first call of each finds NOSCRIPT and is resent as EVAL).
    let mut guard = locks.acquire("warm-up", lease).unwrap();
    guard.extend(lease).unwrap();
    guard.release().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut client(&server))
        .unwrap();

    let rounds = 100;
    for i in 0..rounds {
        let mut guard = locks.acquire(&format!("k{}", i % 3), lease).unwrap();
        guard.extend(lease).unwrap();
        assert!(
            locks
                .try_acquire(&format!("k{}", i % 3), lease)
                .unwrap()
                .is_none()
        );
        guard.release().unwrap();
    }
    let calls = command_calls(&server);
    let count = |name: &str| calls_to(&calls, name);
    // Acquire, extend, a refused try_acquire and release: four calls, four round trips.
    assert_eq!(count("evalsha"), 4 * rounds, "{calls:?}");
    assert_eq!(count("eval"), 0, "{calls:?}");
    // What the scripts ran inside: one token per grant (none for the refused attempt), read
    // against the server's clock (TIME), and no command sent on its own.
    assert_eq!(count("time"), rounds, "{calls:?}");
    // Per grant one SET each of the counter (counted up in the script, never by INCR while it
    // is a number with room to grow), the key and the nonce; the refused attempt writes none.
    assert_eq!(count("set"), 3 * rounds, "{calls:?}");
    assert_eq!(count("incr"), 0, "{calls:?}");
    // One read of the counter per grant, of the key by extend and release, and of the
    // holder's nonce by the refused attempt (a resend would find its own there).
    assert_eq!(count("get"), 4 * rounds, "{calls:?}");
    // A free name is checked with one EXISTS; the refused attempt checks the semaphore key and
    // the lock key on their own after it.
    assert_eq!(count("exists"), 4 * rounds, "{calls:?}");
    // The release renames the key to its released mark.
    assert_eq!(count("rename"), rounds, "{calls:?}");
    assert_eq!(count("del"), 0, "{calls:?}");
}

#[test]
fn a_holder_paused_past_its_lease_has_its_write_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let account = Account::new(LOCK);
    // Long enough that a loaded machine's first round trip (a fresh connection, the script
    // loaded) does not spend it on arrival; short enough that the test waits it out quickly.
    let paused = locks
        .acquire(LOCK, Duration::from_millis(300))
        .unwrap()
        .into_grant();
    let balance = account.read(paused.token()).unwrap();
    locks.wait_lost(&paused); // the holder stalls past its lease
    let next = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    let next_balance = account.read(next.token()).unwrap();
    // The stalled holder wakes up and writes what it computed: refused.
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

/// Three workers increment a fenced balance through a fault proxy while the main thread
/// slows and cuts the connections and pauses the server, then kills it and restarts it
/// without its data; every fifth hold a worker stalls past its lease between its read and
/// its write, until another worker has taken the lock.
#[test]
fn a_fenced_balance_survives_pauses_cuts_slow_links_and_a_restart_without_data() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let url = format!("redis://{}", proxy.addr());
    let account = Arc::new(Account::new(LOCK));
    let outcomes = Arc::new(Mutex::new(FaultOutcomes::default()));
    let done = Arc::new(AtomicBool::new(false));
    let lease = Duration::from_millis(150);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (account, outcomes, done) = (
                Arc::clone(&account),
                Arc::clone(&outcomes),
                Arc::clone(&done),
            );
            let options = RedisOptions::default().timeout(Duration::from_millis(200));
            let locks = RedisLocks::new(&url, options).unwrap();
            thread::spawn(move || {
                let now = || locks.clock().now_nanos();
                let timing = (lease, Duration::from_millis(500), 20);
                fault_worker(&locks, &now, &account, &outcomes, &done, timing);
            })
        })
        .collect();

    for cycle in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        proxy.set_latency(Duration::from_millis(60 + 20 * cycle));
        std::thread::sleep(Duration::from_millis(300));
        proxy.heal();
        proxy.cut_connections();
        std::thread::sleep(Duration::from_millis(150));
        server.pause();
        std::thread::sleep(Duration::from_millis(400));
        server.resume();
    }
    // The server dies under the workers and comes back without its data: the holds and the
    // token counter are gone, so the lock is granted again at once while its last holder may
    // still be inside its lease, and only the clock rule keeps the next token above its own.
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    std::fs::remove_dir_all(server.data_dir().join("appendonlydir")).unwrap();
    server.restart().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    // Twelve or more stalls past the lease: the fence refused at least one of them.
    let outcomes = *outcomes.lock();
    assert_fault_run(&account, outcomes.refused, &outcomes);
}

/// A balance kept in Redis whose reads and writes present a token, fenced by a Lua script, so
/// that holders in different processes share one resource and one fence.
struct SharedAccount {
    connection: redis::Connection,
}

/// Admits `ARGV[1]` if it is not below the highest token seen (decimal strings compared by
/// length, then digits, so no precision is lost to Lua's doubles), then reads or writes.
const FENCED_ACCOUNT: &str = r"
local token, high = ARGV[1], redis.call('GET', KEYS[2])
if high and (#token < #high or (#token == #high and token < high)) then return {0, 0} end
redis.call('SET', KEYS[2], token)
if ARGV[2] == 'write' then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('INCR', KEYS[3])
end
return {1, tonumber(redis.call('GET', KEYS[1]) or '0')}
";

impl SharedAccount {
    fn new(url: &str) -> Self {
        let connection = redis::Client::open(url).unwrap().get_connection().unwrap();
        Self { connection }
    }

    /// `Some(balance)` if the fence admitted the token.
    fn call(&mut self, token: FencingToken, op: &str, value: u64) -> Option<u64> {
        let (admitted, balance): (u8, u64) = redis::cmd("EVAL")
            .arg(FENCED_ACCOUNT)
            .arg(3)
            .arg(&["account:balance", "account:fence", "account:writes"][..])
            .arg(token.get().to_string())
            .arg(op)
            .arg(value)
            .query(&mut self.connection)
            .unwrap();
        (admitted == 1).then_some(balance)
    }

    fn read(&mut self, token: FencingToken) -> Option<u64> {
        self.call(token, "read", 0)
    }

    fn write(&mut self, token: FencingToken, balance: u64) -> bool {
        self.call(token, "write", balance).is_some()
    }

    fn totals(&mut self) -> (u64, u64) {
        let (balance, writes): (Option<u64>, Option<u64>) = redis::cmd("MGET")
            .arg(&["account:balance", "account:writes"][..])
            .query(&mut self.connection)
            .unwrap();
        (balance.unwrap_or(0), writes.unwrap_or(0))
    }
}

const WORKER_URL: &str = "INFRA_DLOCK_WORKER_URL";
const WORKER_ROUNDS: u64 = 40;

/// Increments the shared balance `rounds` times under the lock; returns the accepted writes.
fn increment_shared(url: &str, rounds: u64) -> u64 {
    let locks = locks(url);
    let mut account = SharedAccount::new(url);
    let mut accepted = 0;
    for _ in 0..rounds {
        let guard = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
        let balance = account.read(guard.token()).expect("the holder's read");
        if account.write(guard.token(), balance + 1) {
            accepted += 1;
        }
        guard.release().unwrap();
    }
    accepted
}

/// The worker half of the multi-process tests: started by them as a separate OS process.
#[test]
#[ignore = "worker process of the multi-process tests"]
fn redis_worker_process() {
    let url = std::env::var(WORKER_URL).expect("started by a multi-process test");
    match std::env::var("INFRA_DLOCK_WORKER_ROLE").as_deref() {
        Ok("stalled") => {
            // Take the lock, read, then wait for the parent's word (sent while this process
            // is frozen) and write what was read.
            let locks = locks(&url);
            let mut account = SharedAccount::new(&url);
            warm_up(&locks, Access::Exclusive);
            let guard = locks.acquire(LOCK, Duration::from_millis(300)).unwrap();
            let balance = account.read(guard.token()).expect("the first read");
            println!("read-done");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let written = account.write(guard.token(), balance + 100);
            println!("written={written} held={}", guard.is_held());
        }
        _ => println!("accepted={}", increment_shared(&url, WORKER_ROUNDS)),
    }
}

fn spawn_worker(url: &str, role: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "redis_worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_URL, url)
        .env("INFRA_DLOCK_WORKER_ROLE", role)
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
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let children: Vec<_> = (0..2).map(|_| spawn_worker(&url, "increment")).collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || increment_shared(&url, WORKER_ROUNDS))
        })
        .collect();
    let in_threads: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let in_children: u64 = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "worker failed: {output:?}");
            let stdout = String::from_utf8_lossy(&output.stdout);
            printed(&stdout, "accepted")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let (balance, writes) = SharedAccount::new(&url).totals();
    assert_eq!(
        in_threads + in_children,
        4 * WORKER_ROUNDS,
        "no write was refused"
    );
    assert_eq!((balance, writes), (4 * WORKER_ROUNDS, 4 * WORKER_ROUNDS));
}

#[cfg(unix)]
#[test]
fn a_holder_process_frozen_past_its_lease_is_refused_by_the_fence() {
    use std::io::{BufRead, BufReader, Write};

    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut child = spawn_worker(&url, "stalled");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("read-done") {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "the worker ended early"
        );
    }
    common::freeze(&child);
    // Its word to go on waits in the pipe until the process is thawed.
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // The lease runs out while the holder is frozen; the next holder reads and writes.
    let locks = locks(&url);
    let next = locks.acquire(LOCK, Duration::from_secs(30)).unwrap();
    let mut account = SharedAccount::new(&url);
    let balance = account.read(next.token()).unwrap();
    assert!(account.write(next.token(), balance + 1));
    common::thaw(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert_eq!(
        printed(&rest, "written").as_deref(),
        Some("false"),
        "{rest}"
    );
    assert_eq!(printed(&rest, "held").as_deref(), Some("false"), "{rest}");
    assert_eq!(
        account.totals(),
        (1, 1),
        "only the next holder's write landed"
    );
    next.release().unwrap();
}

/// A holder set (a semaphore's permits, a read-write lock's readers) whose holders have all
/// ended is no hold. Redis keeps the set until the millisecond after its last holder's end,
/// while the scripts count a holder as ended from that millisecond on: in between, a request
/// of the other kind found the set and was refused with `KindMismatch`. The test makes that
/// millisecond last, with a set whose only holder ended long ago and no expiry.
#[test]
fn holders_that_all_ended_leave_no_kind_behind() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let mut redis = client(&server);
    let lease = Duration::from_secs(30);
    let cases = [
        ("permits", Access::Exclusive),
        ("permits", Access::Shared),
        ("readers", Access::Permit { permits: 2 }),
    ];
    for (i, (set, access)) in cases.into_iter().enumerate() {
        let name = format!("ended-{i}");
        let _: () = redis::cmd("ZADD")
            .arg(format!("dlock:{{{name}}}:{set}"))
            .arg(1)
            .arg("5")
            .query(&mut redis)
            .unwrap();
        if set == "permits" {
            let _: () = redis::cmd("SET")
                .arg(format!("dlock:{{{name}}}:permits:count"))
                .arg(2)
                .query(&mut redis)
                .unwrap();
        }
        let granted = locks.grant(&name, access, lease, Wait::No);
        assert!(
            matches!(&granted, Ok(Some(grant)) if grant.token().get() > 5),
            "{access:?} after ended {set}: {granted:?}"
        );
        locks.release(granted.unwrap().unwrap()).unwrap();
    }
}

#[test]
fn a_semaphore_admits_up_to_its_permits_each_with_a_larger_token() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let two = Access::Permit { permits: 2 };
    let try_permit = |access| locks.grant("pool", access, lease, Wait::No);
    let a = locks.permit("pool", 2, lease).unwrap();
    let b = locks.permit("pool", 2, lease).unwrap();
    assert!(b.token() > a.token());
    assert!(try_permit(two).unwrap().is_none(), "both permits are out");
    // One name is one lock: another count, or a mutex, is refused while permits are held.
    let kind = |result: Result<(), Error>| matches!(result, Err(Error::KindMismatch { .. }));
    assert!(kind(try_permit(Access::Permit { permits: 3 }).map(drop)));
    assert!(kind(locks.try_acquire("pool", lease).map(drop)));
    let mutex = locks.acquire("mutex", lease).unwrap();
    assert!(kind(locks.grant("mutex", two, lease, Wait::No).map(drop)));
    mutex.release().unwrap();

    let mut a = a.into_grant();
    locks.extend(&mut a, lease).unwrap();
    assert!(locks.is_held(&a) && b.is_held());
    let first_a = a.token();
    locks.release(a).unwrap();
    let c = try_permit(two).unwrap().expect("a permit was given back");
    assert!(c.token() > b.token());
    locks.release(c).unwrap();
    b.release().unwrap();
    // With every permit back, the name can be a mutex again, on the same token sequence.
    let mutex = locks.try_acquire("pool", lease).unwrap().expect("free");
    assert!(mutex.token() > first_a);
}

#[test]
fn an_expired_permit_is_refused_and_its_place_goes_to_the_next() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    warm_up(&locks, Access::Permit { permits: 1 });
    let mut stale = locks
        .permit("pool", 1, Duration::from_millis(250))
        .unwrap()
        .into_grant();
    // Waits until Redis's clock ends the first permit's lease.
    let next = locks.permit("pool", 1, Duration::from_secs(30)).unwrap();
    assert!(next.token() > stale.token());
    assert!(!locks.is_held(&stale));
    assert!(matches!(
        locks.extend(&mut stale, Duration::from_secs(30)),
        Err(Error::LeaseExpired { .. })
    ));
    assert!(matches!(
        locks.release(stale),
        Err(Error::LeaseExpired { .. })
    ));
    assert!(
        next.is_held(),
        "the late release left the next holder alone"
    );
    next.release().unwrap();
}

#[test]
fn permits_cost_one_round_trip_per_call() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    let mut warm = locks.permit("warm-up", 2, lease).unwrap();
    warm.extend(lease).unwrap();
    warm.release().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut client(&server))
        .unwrap();
    let rounds = 50;
    let one = Access::Permit { permits: 1 };
    for _ in 0..rounds {
        let mut permit = locks.permit("pool", 1, lease).unwrap();
        permit.extend(lease).unwrap();
        assert!(locks.grant("pool", one, lease, Wait::No).unwrap().is_none());
        permit.release().unwrap();
    }
    let calls = command_calls(&server);
    let count = |name: &str| calls_to(&calls, name);
    assert_eq!(count("evalsha"), 4 * rounds, "{calls:?}");
    assert_eq!(count("eval"), 0, "{calls:?}");
    // One token per permit granted: the counter and the permit count are the only SETs, once
    // per permit granted, none for the refused one.
    assert_eq!(count("set"), 2 * rounds, "{calls:?}");
    assert_eq!(count("incr"), 0, "{calls:?}");
}

#[test]
fn readers_share_and_a_waiting_writer_is_not_overtaken_by_later_readers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // The writer's mark lasts 4 × the longest backoff: 4 s here, so a writer thread that the
    // loaded machine leaves unscheduled for a while still keeps its place.
    let options = RedisOptions::default()
        .timeout(Duration::from_secs(2))
        .max_backoff(Duration::from_secs(1));
    let locks = Arc::new(RedisLocks::new(&server.url(), options).unwrap());
    let lease = Duration::from_secs(30);
    let first = locks.read("config", lease).unwrap();
    let second = locks.read("config", lease).unwrap();
    assert!(second.token() > first.token());
    assert!(locks.try_acquire("config", lease).unwrap().is_none());
    // A semaphore on a name with readers, and readers on a semaphore's name, are refused.
    let kind = |result: Result<(), Error>| matches!(result, Err(Error::KindMismatch { .. }));
    assert!(kind(locks.permit("config", 2, lease).map(drop)));
    let permit = locks.permit("pool", 2, lease).unwrap();
    assert!(kind(locks.read("pool", lease).map(drop)));
    permit.release().unwrap();

    let writer = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            let guard = locks.acquire("config", lease).unwrap();
            let token = guard.token();
            guard.release().unwrap();
            token
        })
    };
    // Once the writer has asked, a new reader is kept out although only readers hold the lock.
    let mut redis = client(&server);
    loop {
        let waiting: u64 = redis::cmd("EXISTS")
            .arg("dlock:{config}:writer-waiting")
            .query(&mut redis)
            .unwrap();
        if waiting == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let late = locks
        .grant("config", Access::Shared, lease, Wait::No)
        .unwrap();
    assert!(late.is_none(), "a later reader overtook the waiting writer");
    let last_reader = second.token();
    first.release().unwrap();
    second.release().unwrap();
    let written = writer.join().unwrap();
    assert!(written > last_reader);
    // The writer's grant took its waiting mark down: readers are not kept out any longer.
    let marked: u64 = redis::cmd("EXISTS")
        .arg("dlock:{config}:writer-waiting")
        .query(&mut redis)
        .unwrap();
    assert_eq!(marked, 0);
    let after = locks.read("config", lease).unwrap();
    assert!(after.token() > written);
}

#[test]
fn a_writer_waits_for_readers_under_any_max_backoff() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_secs(30);
    for max_backoff in [Duration::from_secs(3_600 * 24 * 365 * 1_000), Duration::MAX] {
        let options = RedisOptions::default()
            .timeout(Duration::from_secs(2))
            .max_backoff(max_backoff);
        let locks = RedisLocks::new(&server.url(), options).unwrap();
        let reader = locks.read("config", lease).unwrap();
        // The writer's mark stays within what Redis accepts, so the wait times out cleanly.
        let writer = locks.grant(
            "config",
            Access::Exclusive,
            lease,
            Wait::Up(Duration::from_millis(30)),
        );
        assert!(matches!(writer, Ok(None)), "{max_backoff:?}: {writer:?}");
        let marked: i64 = redis::cmd("PTTL")
            .arg("dlock:{config}:writer-waiting")
            .query(&mut client(&server))
            .unwrap();
        assert!(marked > 0, "the waiting writer marked itself: {marked}");
        reader.release().unwrap();
        let _: () = redis::cmd("DEL")
            .arg("dlock:{config}:writer-waiting")
            .query(&mut client(&server))
            .unwrap();
    }
}

#[test]
fn a_reader_or_permit_cut_off_after_the_server_granted_it_is_not_granted_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let locks = Arc::new(locks(&format!("redis://{}", proxy.addr())));
    let lease = Duration::from_secs(30);
    let ask: [(&str, Access); 2] = [
        ("config", Access::Shared),
        ("pool", Access::Permit { permits: 5 }),
    ];
    for (name, access) in ask {
        // Pool a connection and load the script.
        let warm = locks.grant(name, access, lease, Wait::No).unwrap().unwrap();
        locks.release(warm).unwrap();
        // The request reaches the server, which grants it; the connection is cut before the
        // answer comes back.
        let set = if access == Access::Shared {
            "readers"
        } else {
            "permits"
        };
        let mut direct = client(&server);
        let mut holders = || -> u64 {
            redis::cmd("ZCARD")
                .arg(format!("dlock:{{{name}}}:{set}"))
                .query(&mut direct)
                .unwrap()
        };
        let outcome = cut_after_the_server_ran(&proxy, || holders() > 0, {
            let locks = Arc::clone(&locks);
            move || locks.grant(name, access, lease, Wait::No)
        });
        let holders = holders();
        assert_eq!(holders, 1, "{name}: {outcome:?}");
        assert!(matches!(outcome, Err(Error::Backend { .. })), "{outcome:?}");
    }
}

#[test]
fn an_expired_reader_is_refused_and_the_writer_gets_in() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    warm_up(&locks, Access::Shared);
    let mut stale = locks
        .read("config", Duration::from_millis(250))
        .unwrap()
        .into_grant();
    let writer = locks.acquire("config", Duration::from_secs(30)).unwrap();
    assert!(writer.token() > stale.token());
    assert!(!locks.is_held(&stale));
    assert!(matches!(
        locks.extend(&mut stale, Duration::from_secs(30)),
        Err(Error::LeaseExpired { .. })
    ));
    assert!(matches!(
        locks.release(stale),
        Err(Error::LeaseExpired { .. })
    ));
    assert!(writer.is_held());
}

#[test]
fn readers_cost_one_round_trip_per_call() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let locks = locks(&server.url());
    let lease = Duration::from_secs(30);
    // Load the scripts and start the name's counter.
    let mut warm = locks.read("config", lease).unwrap();
    warm.extend(lease).unwrap();
    warm.release().unwrap();
    locks.acquire("config", lease).unwrap().release().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut client(&server))
        .unwrap();
    let rounds = 50;
    for _ in 0..rounds {
        let mut reader = locks.read("config", lease).unwrap();
        reader.extend(lease).unwrap();
        assert!(locks.try_acquire("config", lease).unwrap().is_none());
        assert!(reader.is_held());
        reader.release().unwrap();
    }
    let calls = command_calls(&server);
    let count = |name: &str| calls_to(&calls, name);
    // read, extend, a refused writer and release are scripts; is_held is one ZSCORE.
    assert_eq!(count("evalsha"), 4 * rounds, "{calls:?}");
    assert_eq!(count("eval"), 0, "{calls:?}");
    // The refused try_acquire did not mark itself waiting, so it does not hold readers out:
    // the only SETs are the counter's, one token per read.
    assert_eq!(count("set"), rounds, "{calls:?}");
    assert_eq!(count("incr"), 0, "{calls:?}");
    let marked: u64 = redis::cmd("EXISTS")
        .arg("dlock:{config}:writer-waiting")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(marked, 0);
}

#[test]
fn a_lease_no_longer_than_a_round_trip_is_refused_instead_of_retried() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = SteppingClock::new(Duration::from_millis(50));
    let options = RedisOptions::default().timeout(Duration::from_secs(2));
    let locks = RedisLocks::with_clock(&server.url(), options, clock).unwrap();
    let lease = Duration::from_millis(20);
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut client(&server))
        .unwrap();
    for wait in [Wait::No, Wait::Forever] {
        let granted = locks.grant("short", Access::Exclusive, lease, wait);
        assert!(
            matches!(granted, Err(Error::LeaseSpentOnArrival { .. })),
            "{wait:?}: {granted:?}"
        );
    }
    // One grant per call (one token, one read of the clock), each given back at once.
    let calls = command_calls(&server);
    assert_eq!(calls_to(&calls, "time"), 2, "{calls:?}");
    assert_eq!(calls_to(&calls, "rename"), 2, "{calls:?}");
    let held: u64 = redis::cmd("EXISTS")
        .arg("dlock:{short}")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(held, 0, "the spent grant was given back");
}

#[test]
fn a_backend_error_ends_even_a_forever_wait() {
    let locks = locks("redis://127.0.0.1:1");
    let started = std::time::Instant::now();
    let granted = locks.grant(
        "a",
        Access::Exclusive,
        Duration::from_secs(1),
        Wait::Forever,
    );
    assert!(matches!(granted, Err(Error::Backend { .. })), "{granted:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Sends `request` on a pooled connection through `proxy` and cuts the connection after the
/// server ran it but before its answer came back; the client resends it on a new connection.
/// What Redis holds under `LOCK`'s key: the holder's token, or nothing.
fn lock_key(direct: &mut redis::Connection) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("dlock:{{{LOCK}}}"))
        .query(direct)
        .unwrap()
}

fn cut_after_the_server_ran<T: Send + 'static>(
    proxy: &FaultProxy,
    mut ran: impl FnMut() -> bool,
    request: impl FnOnce() -> T + Send + 'static,
) -> T {
    // The answer takes 500 ms to come back once the server has run the request: time enough
    // to see the request's effect and cut, however slow the machine.
    proxy.set_latency(Duration::from_millis(500));
    let asking = thread::spawn(request);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ran() {
        assert!(
            Instant::now() < deadline,
            "the server never ran the request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    proxy.cut_connections();
    let outcome = asking.join().unwrap();
    proxy.set_latency(Duration::ZERO);
    outcome
}

#[test]
fn a_mutex_grant_cut_off_after_the_server_granted_it_is_recovered_by_the_resend() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let locks = Arc::new(locks(&format!("redis://{}", proxy.addr())));
    let lease = Duration::from_secs(30);
    // Pool a connection and load the script.
    locks.acquire(LOCK, lease).unwrap().release().unwrap();
    let mut direct = client(&server);
    let key_set = || lock_key(&mut direct).is_some();
    let granted = cut_after_the_server_ran(&proxy, key_set, {
        let locks = Arc::clone(&locks);
        move || locks.grant(LOCK, Access::Exclusive, lease, Wait::No)
    });
    let grant = granted
        .unwrap()
        .expect("the resend recovers the grant its first run made");
    let held = lock_key(&mut client(&server));
    assert_eq!(held, Some(grant.token().get().to_string()));
    assert!(locks.is_held(&grant));
    // Another request is still refused: the nonce is the first request's own.
    assert!(locks.try_acquire(LOCK, lease).unwrap().is_none());
    locks.release(grant).unwrap();
}

#[test]
fn a_resent_release_whose_first_run_released_succeeds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let locks = Arc::new(locks(&format!("redis://{}", proxy.addr())));
    let lease = Duration::from_secs(30);
    // Pool a connection and load the scripts, so the release runs at its first sending.
    locks.acquire(LOCK, lease).unwrap().release().unwrap();
    let grant = locks.acquire(LOCK, lease).unwrap().into_grant();
    let token = grant.token();
    let mut direct = client(&server);
    let key_gone = || lock_key(&mut direct).is_none();
    let released = cut_after_the_server_ran(&proxy, key_gone, {
        let locks = Arc::clone(&locks);
        move || locks.release(grant)
    });
    assert_eq!(released, Ok(()));
    let next = locks.try_acquire(LOCK, lease).unwrap().expect("released");
    assert!(next.token() > token);
    next.release().unwrap();
}

/// Grants, a timed-out wait, a lease found over at release and a server that cannot be
/// reached, each counted once under the instance's name.
#[cfg(feature = "metrics")]
#[test]
fn grants_timeouts_lease_losses_and_backend_errors_are_counted() {
    use metrics_util::debugging::DebuggingRecorder;

    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let locks = metrics::with_local_recorder(&recorder, || {
        locks(&server.url()).with_metrics_name("fleet")
    });
    let lease = Duration::from_secs(30);
    let held = locks.acquire(LOCK, lease).unwrap();
    let reader = locks.read("config", lease).unwrap();
    assert!(
        locks
            .acquire_timeout(LOCK, lease, Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    held.release().unwrap();
    reader.release().unwrap();
    // A short lease that runs out before its release.
    let short = locks
        .acquire("short", Duration::from_millis(200))
        .unwrap()
        .into_grant();
    // Granted once Redis has ended the short lease.
    let next = locks.acquire("short", lease).unwrap();
    assert!(matches!(
        locks.release(short),
        Err(Error::LeaseExpired { .. })
    ));
    next.release().unwrap();
    server.stop();
    assert!(matches!(
        locks.try_acquire(LOCK, lease),
        Err(Error::Backend { .. })
    ));

    common::assert_server_counts(&snapshotter, &[("exclusive", 3), ("shared", 1)]);
}
