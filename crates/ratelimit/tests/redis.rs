//! The Redis backend against a real `redis-server`: exact admission counts under threads and
//! processes, failure policies across a restart, and one round trip per check.
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, thread};
use infra_ratelimit::redis::{FailurePolicy, RedisOptions, RedisRateLimiter, RemoteAlgorithm};
use infra_ratelimit::{Error, Quota};
use infra_testkit::RedisServer;

const WORKER_URL: &str = "INFRA_RATELIMIT_WORKER_URL";
const WORKER_ALGORITHM: &str = "INFRA_RATELIMIT_WORKER_ALGORITHM";
const WORKER_ATTEMPTS: usize = 300;
/// 100 per ten hours (one cell every six minutes): nothing refills during a test, however
/// slow the machine, so exactly 100 are admitted.
const QUOTA_LIMIT: u64 = 100;
const QUOTA_PERIOD: Duration = Duration::from_secs(36_000);

fn algorithm_name(algorithm: RemoteAlgorithm) -> &'static str {
    match algorithm {
        RemoteAlgorithm::SlidingWindowLog => "log",
        _ => "gcra",
    }
}

fn limiter(url: &str, algorithm: RemoteAlgorithm, options: RedisOptions) -> RedisRateLimiter {
    RedisRateLimiter::new(
        url,
        Quota::new(QUOTA_LIMIT, QUOTA_PERIOD).unwrap(),
        options.algorithm(algorithm).timeout(Duration::from_secs(2)),
    )
    .unwrap()
}

/// Tries `attempts` times on the shared key; returns how many were admitted.
fn hammer(limiter: &RedisRateLimiter, attempts: usize) -> usize {
    (0..attempts)
        .filter(|_| limiter.check("shared").unwrap().is_allowed())
        .count()
}

/// The worker half of the multi-process test: started by it as a separate OS process.
#[test]
#[ignore = "worker process of one_key_is_shared_exactly_by_threads_and_processes"]
fn redis_worker_process() {
    let url = std::env::var(WORKER_URL).expect("started by the multi-process test");
    let algorithm = match std::env::var(WORKER_ALGORITHM).as_deref() {
        Ok("log") => RemoteAlgorithm::SlidingWindowLog,
        _ => RemoteAlgorithm::Gcra,
    };
    let limiter = limiter(
        &url,
        algorithm,
        RedisOptions::default().deny_cache_capacity(0),
    );
    println!("admitted={}", hammer(&limiter, WORKER_ATTEMPTS));
}

fn spawn_worker(url: &str, algorithm: RemoteAlgorithm) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "redis_worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_URL, url)
        .env(WORKER_ALGORITHM, algorithm_name(algorithm))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn worker_admitted(child: std::process::Child) -> usize {
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "worker failed: {output:?}");
    BufReader::new(output.stdout.as_slice())
        .lines()
        .map_while(Result::ok)
        // The harness may print its "test ... " prefix on the same line.
        .find_map(|line| {
            let (_, count) = line.split_once("admitted=")?;
            count.split_whitespace().next()?.parse().ok()
        })
        .expect("worker printed its count")
}

fn shared_exactly(algorithm: RemoteAlgorithm) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let workers: Vec<_> = (0..2).map(|_| spawn_worker(&url, algorithm)).collect();
    let limiter = Arc::new(limiter(
        &url,
        algorithm,
        RedisOptions::default().deny_cache_capacity(0),
    ));
    let started = Instant::now();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || hammer(&limiter, WORKER_ATTEMPTS))
        })
        .collect();
    let in_threads: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = started.elapsed();
    let in_processes: usize = workers.into_iter().map(worker_admitted).sum();
    let checks = 6 * WORKER_ATTEMPTS;
    println!(
        "{algorithm:?}: threads admitted {in_threads}, processes {in_processes}; \
         {checks} checks from 6 threads in {elapsed:?} ({:.0} checks/s)",
        checks as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        in_threads + in_processes,
        usize::try_from(QUOTA_LIMIT).unwrap(),
        "the quota is admitted exactly once across threads and processes"
    );
}

#[test]
fn one_key_is_shared_exactly_by_threads_and_processes_gcra() {
    shared_exactly(RemoteAlgorithm::Gcra);
}

#[test]
fn one_key_is_shared_exactly_by_threads_and_processes_sliding_log() {
    shared_exactly(RemoteAlgorithm::SlidingWindowLog);
}

fn info_calls(server: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[test]
fn each_check_is_one_round_trip_and_denials_are_cached() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        server.command(&["SCRIPT", "FLUSH"]).unwrap();
        server.command(&["CONFIG", "RESETSTAT"]).unwrap();
        let name = algorithm_name(algorithm);
        let uncached = limiter(
            &server.url(),
            algorithm,
            RedisOptions::default().deny_cache_capacity(0).prefix(name),
        );
        let checks = 250;
        let started = Instant::now();
        let admitted = (0..checks)
            .filter(|i| uncached.check(&format!("k{}", i % 2)).unwrap().is_allowed())
            .count();
        let with_writes = started.elapsed();
        assert_eq!(admitted, 200, "{algorithm:?}: 100 per key");
        let started = Instant::now();
        for _ in 0..500 {
            assert!(uncached.check("k0").unwrap().is_denied());
        }
        let read_only = started.elapsed();
        println!(
            "{algorithm:?}, one thread: {:?} per admitted check (a write; the test server fsyncs \
             every write), {:?} per denied check",
            with_writes / 250,
            read_only / 500
        );
        let evalsha = info_calls(&server, "evalsha");
        let eval = info_calls(&server, "eval");
        // The first EVALSHA finds no script (NOSCRIPT) and the check is resent once as EVAL.
        assert_eq!(eval, 1, "{algorithm:?}");
        assert_eq!(
            evalsha + eval,
            checks + 500 + 1,
            "{algorithm:?}: evalsha {evalsha}, eval {eval}"
        );
        assert_eq!(uncached.stats().round_trips, checks + 500 + 1);

        // With the cache, a key over its limit stops costing round trips.
        let cached = limiter(
            &server.url(),
            algorithm,
            RedisOptions::default().prefix(format!("cached-{name}")),
        );
        let started = Instant::now();
        let admitted = (0..1_000)
            .filter(|_| cached.check("k").unwrap().is_allowed())
            .count();
        let elapsed = started.elapsed();
        let stats = cached.stats();
        assert_eq!(admitted, 100);
        // The 100th admission already tells that no cell is left: the 900 checks after it
        // are answered locally.
        assert_eq!(stats.round_trips, 100, "{algorithm:?}: {stats:?}");
        assert_eq!(stats.cache_hits, 900);
        println!(
            "{algorithm:?}: 1000 checks, {} round trips, in {elapsed:?}",
            stats.round_trips
        );
    }
}

#[test]
fn a_restart_applies_the_policy_and_the_limiter_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let options = || {
        RedisOptions::default()
            .timeout(Duration::from_millis(200))
            .deny_cache_capacity(0)
    };
    let open = limiter(&url, RemoteAlgorithm::Gcra, options());
    let closed = limiter(
        &url,
        RemoteAlgorithm::Gcra,
        options().policy(FailurePolicy::FailClosed).prefix("closed"),
    );
    let strict = limiter(
        &url,
        RemoteAlgorithm::SlidingWindowLog,
        options().policy(FailurePolicy::Error).prefix("strict"),
    );
    for limiter in [&open, &closed, &strict] {
        assert!(limiter.check_n("k", 99).unwrap().is_allowed());
    }

    // A checker keeps going across the outage: it must never panic.
    let stop = Arc::new(infra_common::sync::atomic::AtomicBool::new(false));
    let background = {
        let (stop, url) = (Arc::clone(&stop), url.clone());
        thread::spawn(move || {
            let limiter = limiter(&url, RemoteAlgorithm::Gcra, options().prefix("bg"));
            let mut checks = 0u64;
            while !stop.load(infra_common::sync::atomic::Ordering::Relaxed) {
                let _ = limiter.check("k").unwrap();
                checks += 1;
            }
            (checks, limiter.stats())
        })
    };

    server.stop();
    assert!(open.check("k").unwrap().is_allowed(), "fail-open admits");
    let denied = closed.check("k").unwrap();
    assert!(denied.is_denied(), "fail-closed denies");
    assert_eq!(denied.retry_after(), Duration::from_secs(1));
    assert!(matches!(strict.check("k"), Err(Error::Unavailable { .. })));
    assert_eq!(open.stats().failures, 1);

    server.restart().unwrap();
    // Back: decisions come from Redis again, with the state kept (append-only file).
    assert!(open.check("k").unwrap().is_allowed(), "the 100th cell");
    assert!(open.check("k").unwrap().is_denied(), "over the quota again");
    assert!(closed.check("k").unwrap().is_allowed());
    assert!(strict.check("k").unwrap().is_allowed());
    assert!(strict.check("k").unwrap().is_denied());
    stop.store(true, infra_common::sync::atomic::Ordering::Relaxed);
    let (checks, stats) = background.join().unwrap();
    assert!(
        stats.failures >= 1 && stats.failures < checks,
        "{checks} checks, {stats:?}"
    );
}
