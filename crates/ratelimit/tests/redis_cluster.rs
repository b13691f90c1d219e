//! The Redis backend on a real Redis Cluster of three masters on loopback: checks of many keys
//! land on every master, every key (awkward ones included) keeps all its Redis keys in one
//! slot, decisions equal one server's, `MOVED` and `ASK` are followed while a slot moves,
//! with its state, and a master's connection that falls silent is replaced.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::{Duration, Instant};

use infra_common::ManualClock;
use infra_common::sync::{Arc, thread};
use infra_ratelimit::redis::{
    FailurePolicy, RedisOptions, RedisRateLimiter, RemoteAlgorithm, TimeSource,
};
use infra_ratelimit::{Decision, Error, Quota};
use infra_testkit::{FaultProxy, RedisCluster, RedisServer};
use redis_support::{admin, calls, splitmix};

/// 300 ordinary keys, and keys whose braces or emptiness would pick another slot for some of
/// their Redis keys if they went into the hash tag as they are.
fn user_keys() -> Vec<String> {
    let awkward = [
        "", "}", "}x", "{", "{}", "{a}", "a{b}c", "}{", "%", "%7D", "a}",
    ];
    awkward
        .iter()
        .map(ToString::to_string)
        .chain((0..300).map(|i| format!("user:{i}")))
        .collect()
}

fn outcome(result: Result<Decision, Error>) -> Result<(bool, u32, Duration, Duration), Error> {
    result.map(|d| {
        (
            d.is_allowed(),
            d.remaining(),
            d.retry_after(),
            d.reset_after(),
        )
    })
}

fn dbsize(url: &str) -> u64 {
    redis::cmd("DBSIZE").query(&mut admin(url)).unwrap()
}

#[test]
fn checks_spread_over_every_master_and_decide_as_one_server_does() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let Some(single) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(4).unwrap().with_burst(3).unwrap();
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let clock = ManualClock::new();
        // Client time: both backends see the same clock, so their decisions must be equal.
        let options = RedisOptions::default()
            .algorithm(algorithm)
            .time_source(TimeSource::Client)
            // Manual time runs slower than Redis's clock here: keep keys for the whole test.
            .max_clock_skew(Duration::from_secs(3_600))
            .deny_cache_capacity(0)
            .timeout(Duration::from_secs(5))
            .prefix(format!("{algorithm:?}"));
        let on_cluster = RedisRateLimiter::cluster_with_clock(
            &cluster.urls(),
            quota,
            options.clone(),
            clock.clone(),
        )
        .unwrap();
        let on_server =
            RedisRateLimiter::with_clock(&single.url(), quota, options, clock.clone()).unwrap();
        let mut seed = 3;
        let mut admitted = 0;
        for round in 0..4 {
            for key in user_keys().iter().cycle().take(3 * user_keys().len()) {
                let n = u32::try_from(splitmix(&mut seed) % 3).unwrap();
                let expected = outcome(on_server.check_n(key, n));
                let got = outcome(on_cluster.check_n(key, n));
                assert_eq!(got, expected, "{algorithm:?}, round {round}, key {key:?}");
                admitted += usize::from(matches!(got, Ok((true, ..))));
            }
            clock.advance(Duration::from_millis(300));
        }
        let stats = on_cluster.stats();
        assert_eq!(stats.failures + stats.server_errors, 0, "{stats:?}");
        println!("{algorithm:?}: {admitted} admitted, {stats:?}");
    }
    let sizes: Vec<u64> = cluster.urls().iter().map(|url| dbsize(url)).collect();
    println!("keys per master: {sizes:?}");
    assert!(
        sizes.iter().all(|&keys| keys > 50),
        "every master holds keys: {sizes:?}"
    );
}

/// The slot of `key` and the index of the master that owns it.
fn slot_of(cluster: &RedisCluster, key: &str) -> (u64, usize) {
    let slot: u64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut admin(&cluster.urls()[0]))
        .unwrap();
    (slot, cluster.node_for_key(key).unwrap())
}

fn node_id(url: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut admin(url))
        .unwrap()
}

fn setslot(url: &str, slot: u64, state: &str, node: &str) {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(node)
        .query(&mut admin(url))
        .unwrap();
}

/// Starts moving `slot` from master `from` to master `to` (`IMPORTING`, `MIGRATING`).
fn start_migration(cluster: &RedisCluster, slot: u64, from: usize, to: usize) {
    let urls = cluster.urls();
    setslot(&urls[to], slot, "IMPORTING", &node_id(&urls[from]));
    setslot(&urls[from], slot, "MIGRATING", &node_id(&urls[to]));
}

/// Moves every key of `slot` from `from` to `to`, then gives `to` the slot on every master.
fn finish_migration(cluster: &RedisCluster, slot: u64, from: usize, to: usize) {
    let urls = cluster.urls();
    let mut source = admin(&urls[from]);
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1_000)
        .query(&mut source)
        .unwrap();
    if !keys.is_empty() {
        let target = cluster.addrs()[to];
        let _: () = redis::cmd("MIGRATE")
            .arg(target.ip().to_string())
            .arg(target.port())
            .arg("")
            .arg(0)
            .arg(5_000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut source)
            .unwrap();
    }
    let owner = node_id(&urls[to]);
    for url in [&urls[to], &urls[from]].into_iter().chain(
        urls.iter()
            .enumerate()
            .filter(|&(index, _)| index != from && index != to)
            .map(|(_, url)| url),
    ) {
        setslot(url, slot, "NODE", &owner);
    }
}

#[test]
fn moved_and_ask_redirections_are_followed_and_state_moves_with_its_slot() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let limiter = Arc::new(
        RedisRateLimiter::cluster(
            &cluster.urls(),
            Quota::new(3, Duration::from_secs(36_000)).unwrap(),
            RedisOptions::default()
                .policy(FailurePolicy::Error)
                .deny_cache_capacity(0)
                .timeout(Duration::from_secs(5)),
        )
        .unwrap(),
    );

    // MOVED: the slot of a key with state moves while the client's slot map still names the
    // old master.
    assert!(limiter.check("moving").unwrap().is_allowed());
    assert!(limiter.check("moving").unwrap().is_allowed());
    let (slot, from) = slot_of(&cluster, "ratelimit:{moving}");
    let to = (from + 1) % 3;
    start_migration(&cluster, slot, from, to);
    finish_migration(&cluster, slot, from, to);
    assert!(
        limiter.check("moving").unwrap().is_allowed(),
        "the third of 3"
    );
    assert!(
        limiter.check("moving").unwrap().is_denied(),
        "the state came along"
    );
    let moved: u64 = redis::cmd("EXISTS")
        .arg("ratelimit:{moving}")
        .query(&mut admin(&cluster.urls()[to]))
        .unwrap();
    assert_eq!(moved, 1);

    // ASK: a new key whose slot is half-way to another master. The source answers ASK (none
    // of the script's keys is there); the importing master, asked, answers TRYAGAIN (Redis
    // runs no multi-key command on keys missing during a migration); the client waits and
    // retries, and once the migration ends the check goes through on the new master.
    let (slot, from) = slot_of(&cluster, "ratelimit:{asked}");
    let to = (from + 2) % 3;
    let importing = &cluster.urls()[to];
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin(importing))
        .unwrap();
    start_migration(&cluster, slot, from, to);
    let asked = {
        let limiter = Arc::clone(&limiter);
        thread::spawn(move || limiter.check("asked"))
    };
    // Waits (for the client, not for time) until the redirection reached the new master.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls(importing, "asking") == 0 {
        assert!(
            Instant::now() < deadline,
            "the client never followed the ASK"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    finish_migration(&cluster, slot, from, to);
    assert!(asked.join().unwrap().unwrap().is_allowed());
    let created: u64 = redis::cmd("EXISTS")
        .arg("ratelimit:{asked}")
        .query(&mut admin(importing))
        .unwrap();
    assert_eq!(created, 1, "created on the master the slot moved to");
    assert!(limiter.check("asked").unwrap().is_allowed());
    assert!(limiter.check("asked").unwrap().is_allowed());
    assert!(limiter.check("asked").unwrap().is_denied());
    let stats = limiter.stats();
    assert_eq!(stats.failures + stats.server_errors, 0, "{stats:?}");
}

/// The ports the masters announce to clients, as `CLUSTER SLOTS` on the master `node` is
/// connected to lists them.
fn announced_ports(node: &mut redis::Connection) -> Vec<i64> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(node).unwrap();
    let mut ports: Vec<i64> = slots
        .iter()
        .filter_map(|range| match range {
            redis::Value::Array(fields) => match fields.get(2) {
                Some(redis::Value::Array(master)) => match master.get(1) {
                    Some(redis::Value::Int(port)) => Some(*port),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    ports.sort_unstable();
    ports
}

/// Puts a `FaultProxy` in front of every master of `cluster` and makes the masters announce
/// the proxies as their addresses, so that a client reaches every node through its proxy; the
/// proxies, and their URLs.
fn behind_proxies(cluster: &RedisCluster) -> (Vec<FaultProxy>, Vec<String>) {
    let proxies: Vec<FaultProxy> = cluster
        .addrs()
        .into_iter()
        .map(|addr| FaultProxy::start(addr).unwrap())
        .collect();
    for (node, proxy) in cluster.nodes().iter().zip(&proxies) {
        let port = proxy.addr().port().to_string();
        let reply = node.command(&["CONFIG", "SET", "cluster-announce-port", &port]);
        assert_eq!(reply.unwrap(), "+OK");
    }
    let mut expected: Vec<i64> = proxies
        .iter()
        .map(|proxy| i64::from(proxy.addr().port()))
        .collect();
    expected.sort_unstable();
    let mut nodes: Vec<redis::Connection> = cluster.urls().iter().map(|url| admin(url)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes
        .iter_mut()
        .all(|node| announced_ports(node) == expected)
    {
        assert!(
            Instant::now() < deadline,
            "the masters never announced the proxies"
        );
        thread::yield_now();
    }
    let urls: Vec<String> = proxies
        .iter()
        .map(|proxy| format!("redis://{}", proxy.addr()))
        .collect();
    (proxies, urls)
}

/// A master's connection that stops answering without closing (a partition, a host that
/// died without a reset) is given up after a check times out on it, as a single server's is:
/// the cluster client alone would retry on it until TCP gives up. Each master is reached
/// through a `FaultProxy` it announces as its address.
#[test]
fn a_node_connection_that_stops_answering_is_replaced_after_a_timeout() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let (proxies, urls) = behind_proxies(&cluster);
    let limiter = RedisRateLimiter::cluster(
        &urls,
        Quota::new(2, Duration::from_secs(36_000)).unwrap(),
        RedisOptions::default()
            .policy(FailurePolicy::Error)
            .timeout(Duration::from_secs(2))
            .circuit_breaker(0, Duration::ZERO)
            .deny_cache_capacity(0),
    )
    .unwrap();
    let master = cluster.node_for_key("ratelimit:{k}").unwrap();
    assert!(limiter.check("k").unwrap().is_allowed(), "the first of two");
    // What is sent to that master on the open connection is held for a minute; a connection
    // opened after the timeout (the cluster client connects at once, in the background) is not.
    proxies[master].stall_open_connections(Duration::from_secs(60));
    let timed_out = limiter.check("k");
    assert!(
        matches!(timed_out, Err(Error::Unavailable { .. })),
        "{timed_out:?}"
    );
    proxies[master].heal();
    let decided = limiter.check("k");
    assert!(
        decided.as_ref().is_ok_and(Decision::is_allowed),
        "the second of two, on a new connection: {decided:?}"
    );
    assert!(limiter.check("k").unwrap().is_denied(), "decided by Redis");
}

/// A user key whose state lives on master `node` of `cluster`.
fn key_on(cluster: &RedisCluster, node: usize) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| {
            cluster
                .node_for_key(&format!("ratelimit:{{{key}}}"))
                .unwrap()
                == node
        })
        .expect("some key hashes to every master")
}

/// One master stops answering (every byte to it held for a minute) while the other keeps
/// serving: the dead master's checks open its own breaker after the threshold and then get the
/// failure policy at once, without asking it, although the live master's checks, interleaved
/// with them, keep succeeding; those keep getting Redis's decisions. When the cool-down ends,
/// one probe asks the dead master again, fails, and opens its breaker anew.
#[test]
fn a_dead_masters_breaker_opens_while_the_live_masters_keys_are_decided() {
    let Some(cluster) = RedisCluster::start(2) else {
        return;
    };
    let (proxies, urls) = behind_proxies(&cluster);
    let clock = ManualClock::new();
    let cool_down = Duration::from_secs(1);
    let limiter = RedisRateLimiter::cluster_with_clock(
        &urls,
        Quota::new(2, Duration::from_secs(36_000)).unwrap(),
        RedisOptions::default()
            .policy(FailurePolicy::Error)
            // A live master's check right after a timeout waits for a new cluster client,
            // which gives the dead master a quarter of this to connect: room enough for the
            // live check on a loaded machine.
            .timeout(Duration::from_secs(2))
            .circuit_breaker(2, cool_down)
            .deny_cache_capacity(0),
        clock.clone(),
    )
    .unwrap();
    let (live, dead) = (key_on(&cluster, 0), key_on(&cluster, 1));
    assert!(
        limiter.check(&live).unwrap().is_allowed(),
        "the first of two"
    );
    assert!(
        limiter.check(&dead).unwrap().is_allowed(),
        "the first of two"
    );
    proxies[1].set_latency(Duration::from_secs(60));
    let unavailable = |key: &str| matches!(limiter.check(key), Err(Error::Unavailable { .. }));
    let mut live_decisions = Vec::new();
    for _ in 0..4 {
        assert!(unavailable(&dead));
        let decided = limiter.check(&live);
        live_decisions.push(decided.as_ref().map(Decision::is_allowed).ok());
    }
    assert_eq!(
        live_decisions,
        [Some(true), Some(false), Some(false), Some(false)],
        "the live master decides: the second of two, then denials"
    );
    let stats = limiter.stats();
    assert_eq!(
        (stats.failures, stats.short_circuits),
        (2, 2),
        "two checks waited for the dead master, then its breaker answered: {stats:?}"
    );
    clock.advance(cool_down);
    assert!(unavailable(&dead), "the probe");
    assert!(unavailable(&dead), "open again");
    assert!(
        limiter.check(&live).unwrap().is_denied(),
        "decided by Redis"
    );
    let stats = limiter.stats();
    assert_eq!((stats.failures, stats.short_circuits), (3, 3), "{stats:?}");
}
