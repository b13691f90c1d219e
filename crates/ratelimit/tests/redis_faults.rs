//! The Redis backend when the network fails, through the test kit's `FaultProxy`: the circuit
//! breaker stops paying for an unreachable server and probes back on the limiter's clock, and
//! a check whose reply is lost with its connection is sent again and counted once; a server
//! that cannot serve (busy with a script, demoted to replica, without the replicas it must write
//! with) gets the failure policy.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use infra_common::ManualClock;
use infra_common::sync::{Arc, thread};
use infra_ratelimit::redis::{FailurePolicy, RedisOptions, RedisRateLimiter, RemoteAlgorithm};
use infra_ratelimit::{Decision, Error, Quota};
use infra_testkit::{FaultProxy, RedisServer};

/// Two per ten hours: nothing refills during a test.
fn two_per_ten_hours() -> Quota {
    Quota::new(2, Duration::from_secs(36_000)).unwrap()
}

#[test]
fn the_breaker_stops_asking_an_unreachable_server_and_probes_back_on_its_clock() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let clock = ManualClock::new();
    let limiter = RedisRateLimiter::with_clock(
        &format!("redis://{}", proxy.addr()),
        two_per_ten_hours(),
        RedisOptions::default()
            .policy(FailurePolicy::Error)
            .timeout(Duration::from_secs(2))
            .circuit_breaker(3, Duration::from_secs(10))
            .deny_cache_capacity(0),
        clock.clone(),
    )
    .unwrap();
    let unavailable = |limiter: &RedisRateLimiter<ManualClock>| {
        let result = limiter.check("k");
        assert!(
            matches!(result, Err(Error::Unavailable { .. })),
            "{result:?}"
        );
    };
    assert!(limiter.check("k").unwrap().is_allowed(), "the first of two");

    proxy.refuse_new(true);
    proxy.cut_connections();
    for _ in 0..3 {
        unavailable(&limiter);
    }
    let stats = limiter.stats();
    assert_eq!((stats.failures, stats.short_circuits), (3, 0));
    let sent = stats.round_trips;

    // Open: the policy answers at once, and nothing is sent, for the whole cool-down.
    for _ in 0..5 {
        unavailable(&limiter);
    }
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    unavailable(&limiter);
    let stats = limiter.stats();
    assert_eq!((stats.failures, stats.short_circuits), (3, 6));
    assert_eq!(stats.round_trips, sent, "no command while open");

    // The cool-down is over: one probe, which fails (the proxy still refuses) and doubles it.
    clock.advance(Duration::from_nanos(1));
    unavailable(&limiter);
    let stats = limiter.stats();
    assert_eq!((stats.failures, stats.short_circuits), (4, 6));
    assert!(stats.round_trips > sent, "the probe asked");
    clock.advance(Duration::from_secs(20) - Duration::from_nanos(1));
    unavailable(&limiter);
    assert_eq!(limiter.stats().short_circuits, 7);

    // Healed: the next probe reconnects, and Redis decides again, with the state it kept.
    proxy.heal();
    clock.advance(Duration::from_nanos(1));
    assert!(
        limiter.check("k").unwrap().is_allowed(),
        "the second of two"
    );
    assert!(limiter.check("k").unwrap().is_denied(), "decided by Redis");
    let stats = limiter.stats();
    assert_eq!((stats.failures, stats.short_circuits), (4, 7));
}

/// Bytes received and not yet read by whoever holds the established TCP connections of local
/// port `port` (`/proc/net/tcp`'s `rx_queue`).
#[cfg(target_os = "linux")]
fn unread_bytes(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let established = *fields.get(3)? == "01";
            let unread = u64::from_str_radix(fields.get(4)?.split(':').nth(1)?, 16).ok()?;
            (local_port == port && established).then_some(unread)
        })
        .sum()
}

#[cfg(target_os = "linux")]
#[test]
fn a_check_whose_reply_is_lost_is_sent_again_and_counted_once() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let port = server.addr().port();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let limiter = Arc::new(
            RedisRateLimiter::new(
                &format!("redis://{}", proxy.addr()),
                two_per_ten_hours(),
                RedisOptions::default()
                    .algorithm(algorithm)
                    .policy(FailurePolicy::Error)
                    .timeout(Duration::from_secs(10))
                    .deny_cache_capacity(0)
                    .prefix(format!("{algorithm:?}")),
            )
            .unwrap(),
        );
        assert!(limiter.check("k").unwrap().is_allowed(), "the first of two");
        let sent = limiter.stats().round_trips;

        // The server stops reading; the check's request waits in its socket.
        server.pause();
        let check = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check("k"))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while unread_bytes(port) == 0 {
            assert!(
                Instant::now() < deadline,
                "the request never reached the server"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The connection is cut with the request delivered and its reply not yet written; the
        // resumed server runs it (and answers into a closed socket), and the client, having
        // lost the connection, sends the same request again on a new one.
        proxy.cut_connections();
        server.resume();
        let decision = check.join().unwrap().unwrap();
        assert!(
            decision.is_allowed(),
            "{algorithm:?}: the second of two, once"
        );
        assert_eq!(limiter.stats().round_trips, sent + 2, "sent twice");
        assert!(
            limiter.check("k").unwrap().is_denied(),
            "{algorithm:?}: two admitted in all"
        );
    }
}

#[cfg(unix)] // pausing the server
#[test]
fn a_cancelled_check_leaves_no_batch_half_taken() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = runtime.block_on(async {
        infra_ratelimit::redis::AsyncRedisRateLimiter::new(
            &server.url(),
            Quota::per_second(1_000).unwrap(),
            RedisOptions::default()
                .timeout(Duration::from_secs(10))
                .batch(5, Duration::from_secs(3_600)),
        )
        .unwrap()
    });
    assert!(
        runtime
            .block_on(limiter.check("warm"))
            .unwrap()
            .is_allowed()
    );
    // The first check of "k" takes a batch, but its caller gives up while the server is
    // paused: the check's future is dropped with its request in flight.
    server.pause();
    let gave_up = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), limiter.check("k")).await
    });
    assert!(gave_up.is_err(), "the caller gave up");
    server.resume();
    // The next check takes a batch itself (one round trip), and the three after it spend it.
    let sent = limiter.stats().round_trips;
    for _ in 0..4 {
        assert!(runtime.block_on(limiter.check("k")).unwrap().is_allowed());
    }
    let stats = limiter.stats();
    assert_eq!(stats.round_trips, sent + 1, "{stats:?}");
    assert_eq!(stats.lease_hits, 3, "{stats:?}");
}

/// The ids of the server's client connections whose last command was the limiter's script.
fn script_connections(url: &str) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis_support::admin(url))
        .expect("CLIENT LIST answers");
    list.lines()
        .filter(|line| line.contains(" cmd=evalsha ") || line.contains(" cmd=eval "))
        .filter_map(|line| line.strip_prefix("id="))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// Waits until the server at `url` has finished its first sync from the primary it was given,
/// so that what it answers is a replica's answer, not `LOADING`.
fn wait_for_replica_link(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admin = redis_support::admin(url);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut admin)
            .expect("INFO answers");
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never synced: {info}"
        );
        thread::yield_now();
    }
}

/// After a failover the old primary answers writes with `READONLY`. That is not the request's
/// fault: it is a server that cannot serve this limiter now, so the failure policy answers, the
/// breaker counts it, and the pooled connection is dropped so that the next check connects
/// again (to the new primary, when the URL names a proxy or a name that moved).
#[test]
fn a_primary_turned_replica_is_a_failure_that_drops_the_connection_and_recovers() {
    let (Some(server), Some(new_primary)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let url = server.url();
    let limiter = RedisRateLimiter::with_clock(
        &url,
        two_per_ten_hours(),
        RedisOptions::default()
            .policy(FailurePolicy::Error)
            .timeout(Duration::from_secs(5))
            .circuit_breaker(3, Duration::from_secs(10))
            .deny_cache_capacity(0),
        ManualClock::new(),
    )
    .unwrap();
    assert!(limiter.check("k").unwrap().is_allowed());
    let pooled = script_connections(&url);
    assert_eq!(pooled.len(), 1, "one multiplexed connection");

    // The new primary sends its (empty) data at once rather than after the default delay.
    assert_eq!(
        new_primary
            .command(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"])
            .unwrap(),
        "+OK"
    );
    let port = new_primary.addr().port().to_string();
    assert_eq!(
        server.command(&["REPLICAOF", "127.0.0.1", &port]).unwrap(),
        "+OK"
    );
    wait_for_replica_link(&url);
    let result = limiter.check("fresh");
    assert!(
        matches!(&result, Err(Error::Unavailable { reason }) if reason.contains("read only replica")),
        "the failure policy answers a read-only server: {result:?}"
    );
    let stats = limiter.stats();
    assert_eq!(
        (stats.failures, stats.server_errors),
        (1, 0),
        "the breaker counts it as a failure to reach a primary"
    );

    // Promoted again (as the failover's new primary would be): the next check connects afresh
    // and Redis decides.
    assert_eq!(server.command(&["REPLICAOF", "NO", "ONE"]).unwrap(), "+OK");
    assert!(limiter.check("fresh").unwrap().is_allowed());
    let now_pooled = script_connections(&url);
    assert!(
        now_pooled.iter().any(|id| !pooled.contains(id)),
        "the connection that got READONLY was replaced by a new one: {pooled:?}, then {now_pooled:?}"
    );
}

/// A limiter of two per ten hours under `policy` that asks Redis on every check: no breaker,
/// no deny cache, a timeout long enough for a busy server's answer.
fn unbroken(url: &str, policy: FailurePolicy) -> RedisRateLimiter {
    RedisRateLimiter::new(
        url,
        two_per_ten_hours(),
        RedisOptions::default()
            .policy(policy)
            .timeout(Duration::from_secs(5))
            .circuit_breaker(0, Duration::ZERO)
            .deny_cache_capacity(0),
    )
    .unwrap()
}

/// A server busy running another client's script past its time limit answers `BUSY` to
/// everything else: Redis cannot be asked, so the failure policy answers (not an error about
/// the request), and once the script is killed Redis decides again.
#[test]
fn a_server_busy_with_a_long_script_gets_the_failure_policy() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let limiter = |policy| unbroken(&url, policy);
    let (closed, error) = (
        limiter(FailurePolicy::FailClosed),
        limiter(FailurePolicy::Error),
    );
    assert!(closed.check("k").unwrap().is_allowed(), "the first of two");
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "busy-reply-threshold", "10"])
            .unwrap(),
        "+OK"
    );
    let spinning = thread::spawn({
        let url = url.clone();
        move || {
            let spin: Result<(), _> = redis::cmd("EVAL")
                .arg("while true do end")
                .arg(0)
                .query(&mut redis_support::admin(&url));
            spin.expect_err("the script runs until killed")
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // The test kit's own client reads `INFO` first, which a busy server refuses: ask plainly.
    let mut plain = redis_support::admin(&url);
    let busy = |plain: &mut redis::Connection| {
        let ping: Result<String, redis::RedisError> = redis::cmd("PING").query(plain);
        ping.is_err_and(|error| error.code() == Some("BUSY"))
    };
    while !busy(&mut plain) {
        assert!(
            Instant::now() < deadline,
            "the script never made the server busy"
        );
        thread::yield_now();
    }
    let refused = closed.check("k").unwrap();
    assert!(refused.is_denied(), "{refused:?}");
    assert_eq!(refused.retry_after(), Duration::from_secs(1));
    let unavailable = error.check("k");
    assert!(
        matches!(unavailable, Err(Error::Unavailable { .. })),
        "{unavailable:?}"
    );
    assert_eq!(
        (closed.stats().failures, closed.stats().server_errors),
        (1, 0)
    );
    let () = redis::cmd("SCRIPT").arg("KILL").query(&mut plain).unwrap();
    spinning.join().unwrap();
    assert!(closed.check("k").unwrap().is_allowed(), "the second of two");
    assert!(error.check("k").unwrap().is_denied(), "decided by Redis");
}

/// A connection that stops answering without closing (a host that died without a reset, a
/// partition, an address that moved away in a failover) is given up after a check times out
/// on it: once the network is back, the next check reaches Redis on a new connection instead
/// of timing out on the dead one until TCP gives up on it, many minutes later.
#[test]
fn a_connection_that_stops_answering_is_replaced_after_a_timeout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let url = format!("redis://{}", proxy.addr());
    let limiter = RedisRateLimiter::new(
        &url,
        two_per_ten_hours(),
        RedisOptions::default()
            .policy(FailurePolicy::Error)
            .timeout(Duration::from_secs(2))
            .circuit_breaker(0, Duration::ZERO)
            .deny_cache_capacity(0),
    )
    .unwrap();
    assert!(limiter.check("k").unwrap().is_allowed(), "the first of two");
    // Whatever is sent on the open connection now is held for a minute: it is dead to the
    // limiter, though neither end sees it close.
    proxy.stall_open_connections(Duration::from_secs(60));
    let timed_out = limiter.check("k");
    assert!(
        matches!(timed_out, Err(Error::Unavailable { .. })),
        "{timed_out:?}"
    );
    // The network is back for new connections; the old one still holds the request.
    proxy.heal();
    let decided = limiter.check("k");
    assert!(
        decided.as_ref().is_ok_and(Decision::is_allowed),
        "the second of two, on a new connection: {decided:?}"
    );
    assert!(limiter.check("k").unwrap().is_denied(), "decided by Redis");
}

/// A check of zero cells consumes nothing, so refusing it protects nothing: while Redis cannot
/// be asked, fail-closed still admits it (stating nothing left to spend), before and after the
/// breaker opens, as every limiter admits `check_n(0)` and the HTTP layer a request of cost 0.
#[test]
fn a_zero_cell_check_is_admitted_while_failing_closed() {
    // Nothing listens on port 1: every connection is refused.
    let limiter = RedisRateLimiter::new(
        "redis://127.0.0.1:1",
        two_per_ten_hours(),
        RedisOptions::default()
            .policy(FailurePolicy::FailClosed)
            .timeout(Duration::from_secs(2))
            .circuit_breaker(3, Duration::from_secs(10)),
    )
    .unwrap();
    for attempt in 0..6 {
        let read = limiter.check_n("k", 0).unwrap();
        assert!(read.is_allowed(), "attempt {attempt}: {read:?}");
        assert_eq!(read.remaining(), 0, "attempt {attempt}");
        assert!(limiter.check("k").unwrap().is_denied(), "attempt {attempt}");
    }
    let stats = limiter.stats();
    assert!(stats.short_circuits > 0, "the breaker opened: {stats:?}");
}

/// A primary told to write only with enough replicas in sync (`min-replicas-to-write`) answers
/// `NOREPLICAS` to every write while they are away: the server cannot serve admissions until
/// its replicas come back, which says nothing wrong about the request. So the failure policy
/// answers, as for `MASTERDOWN`, and fail-open keeps admitting instead of turning every
/// admission into an error; once a replica's absence no longer matters, Redis decides again.
#[test]
fn a_primary_without_its_replicas_gets_the_failure_policy() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let limiter = |policy| unbroken(&url, policy);
    let (open, error) = (
        limiter(FailurePolicy::FailOpen),
        limiter(FailurePolicy::Error),
    );
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "min-replicas-to-write", "1"])
            .unwrap(),
        "+OK"
    );
    let admitted = open.check("k");
    assert!(
        admitted.as_ref().is_ok_and(Decision::is_allowed),
        "fail-open admits: {admitted:?}"
    );
    let unavailable = error.check("k");
    assert!(
        matches!(unavailable, Err(Error::Unavailable { .. })),
        "{unavailable:?}"
    );
    assert_eq!((open.stats().failures, open.stats().server_errors), (1, 0));
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "min-replicas-to-write", "0"])
            .unwrap(),
        "+OK"
    );
    assert!(error.check("k").unwrap().is_allowed(), "the first of two");
    assert!(error.check("k").unwrap().is_allowed(), "the second of two");
    assert!(open.check("k").unwrap().is_denied(), "decided by Redis");
}
