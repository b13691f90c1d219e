//! The Redis backend against a real `redis-server`: exact admission counts under threads,
//! tasks and processes, decisions equal to the local algorithms', the rounding of rates, error
//! replies, TTLs, batching, failure policies across a restart, and one round trip per check.
#![cfg(feature = "redis")]

mod redis_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, thread};
use infra_common::{Clock, ManualClock};
use infra_ratelimit::redis::{
    AsyncRedisRateLimiter, FailurePolicy, RedisOptions, RedisRateLimiter, RemoteAlgorithm,
    TimeSource,
};
use infra_ratelimit::{Algorithm, Decision, Error, Gcra, Quota, RateLimiter, SlidingWindowLog};
use infra_testkit::RedisServer;
use redis_support::{admin, calls, options, runtime, splitmix};

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
    let limiter = limiter(&url, algorithm, options().deny_cache_capacity(0));
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
    let limiter = Arc::new(limiter(&url, algorithm, options().deny_cache_capacity(0)));
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
            options().deny_cache_capacity(0).prefix(name),
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
        let evalsha = calls(&server.url(), "evalsha");
        let eval = calls(&server.url(), "eval");
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
            options().prefix(format!("cached-{name}")),
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
        options()
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

    // A checker keeps going across the outage: it must never panic. It publishes its checks
    // and failures, so the outage starts after its first check and ends after its first
    // failure, however the threads are scheduled.
    use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let background = {
        let (stop, seen, url) = (Arc::clone(&stop), Arc::clone(&seen), url.clone());
        thread::spawn(move || {
            let limiter = limiter(&url, RemoteAlgorithm::Gcra, options().prefix("bg"));
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = limiter.check("k").unwrap();
                checks += 1;
                seen.0.store(checks, Ordering::SeqCst);
                seen.1.store(limiter.stats().failures, Ordering::SeqCst);
            }
            (checks, limiter.stats())
        })
    };
    let await_count = |count: &AtomicU64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while count.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "the checker is stuck");
            thread::yield_now();
        }
    };

    await_count(&seen.0);
    server.stop();
    assert!(open.check("k").unwrap().is_allowed(), "fail-open admits");
    let denied = closed.check("k").unwrap();
    assert!(denied.is_denied(), "fail-closed denies");
    assert_eq!(denied.retry_after(), Duration::from_secs(1));
    assert!(matches!(strict.check("k"), Err(Error::Unavailable { .. })));
    assert_eq!(open.stats().failures, 1);

    await_count(&seen.1);
    server.restart().unwrap();
    // Back: decisions come from Redis again, with the state kept (append-only file).
    assert!(open.check("k").unwrap().is_allowed(), "the 100th cell");
    assert!(open.check("k").unwrap().is_denied(), "over the quota again");
    assert!(closed.check("k").unwrap().is_allowed());
    assert!(strict.check("k").unwrap().is_allowed());
    assert!(strict.check("k").unwrap().is_denied());
    stop.store(true, Ordering::Relaxed);
    let (checks, stats) = background.join().unwrap();
    assert!(
        stats.failures >= 1 && stats.failures < checks,
        "{checks} checks, {stats:?}"
    );
}

/// A limiter deciding on `clock`'s wall time (microseconds), with nothing answered locally.
fn client_timed(
    url: &str,
    algorithm: RemoteAlgorithm,
    quota: Quota,
    clock: &ManualClock,
    prefix: &str,
) -> RedisRateLimiter<ManualClock> {
    RedisRateLimiter::with_clock(
        url,
        quota,
        options()
            .algorithm(algorithm)
            .time_source(TimeSource::Client)
            // Manual time runs slower than Redis's clock here: keep keys for the whole test.
            .max_clock_skew(Duration::from_secs(3_600))
            .deny_cache_capacity(0)
            .timeout(Duration::from_secs(2))
            .prefix(prefix),
        clock.clone(),
    )
    .unwrap()
}

/// The comparable parts of a check's outcome.
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

/// Drives Redis and the local algorithm `A` with one manual clock through a long seeded
/// schedule of waits, checks of various sizes and quota changes, and compares every outcome.
fn matches_local<A: Algorithm>(
    server: &RedisServer,
    algorithm: RemoteAlgorithm,
    quotas: [Quota; 2],
) {
    let clock = ManualClock::new();
    let name = format!("{algorithm:?}");
    let remote = client_timed(&server.url(), algorithm, quotas[0], &clock, &name);
    let local = RateLimiter::<A, _>::with_clock(quotas[0], clock.clone()).unwrap();
    let capacity = local.capacity();
    let mut seed = 7;
    let (mut admitted, mut denied) = (0, 0);
    for step in 0..600 {
        // Waits in whole microseconds (the scripts' unit), from none to over a window, so the
        // state refills partly, fully, or not at all.
        let wait = splitmix(&mut seed) % 4 * (splitmix(&mut seed) % 400_000);
        clock.advance(Duration::from_micros(wait));
        if step % 150 == 149 {
            let quota = quotas[step / 150 % 2];
            remote.set_quota(quota).unwrap();
            local.set_quota(quota).unwrap();
        }
        let n = u32::try_from(splitmix(&mut seed) % u64::from(capacity + 2)).unwrap();
        let expected = outcome(local.check_n(n));
        let got = outcome(remote.check_n("k", n));
        assert_eq!(got, expected, "{algorithm:?}, step {step}: check_n({n})");
        match expected {
            Ok((true, ..)) => admitted += 1,
            Ok((false, ..)) => denied += 1,
            Err(_) => {}
        }
    }
    // The schedule exercised both answers many times.
    assert!(
        admitted > 100 && denied > 50,
        "{admitted} admitted, {denied} denied"
    );
}

/// A denial answered from the deny cache says what Redis would: when the request's cells are
/// all free again (for several, not only the first) and when the key is full again.
#[test]
fn a_cached_denial_states_what_redis_would() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Three cells per three seconds: GCRA one a second, three at once; the log three a window.
    let quota = Quota::new(3, Duration::from_secs(3)).unwrap();
    // The cells each algorithm is given before asking, one second apart: GCRA all three at
    // once, the log one a second, so that its cells leave the window one by one.
    let schedules = [
        (RemoteAlgorithm::Gcra, &[3][..]),
        (RemoteAlgorithm::SlidingWindowLog, &[1, 1, 1][..]),
    ];
    for (algorithm, cells) in schedules {
        let clock = ManualClock::new();
        let limiter = |cache: usize| {
            RedisRateLimiter::with_clock(
                &server.url(),
                quota,
                options()
                    .algorithm(algorithm)
                    .time_source(TimeSource::Client)
                    .max_clock_skew(Duration::from_secs(3_600))
                    .deny_cache_capacity(cache)
                    .prefix(format!("cached-answer-{algorithm:?}")),
                clock.clone(),
            )
            .unwrap()
        };
        let (cached, redis) = (limiter(100), limiter(0));
        for (second, &n) in cells.iter().enumerate() {
            if second > 0 {
                clock.advance(Duration::from_secs(1));
            }
            assert!(
                cached.check_n("k", n).unwrap().is_allowed(),
                "{algorithm:?}"
            );
        }
        for n in [1, 2] {
            let said = redis.check_n("k", n).unwrap();
            assert!(said.is_denied(), "{algorithm:?} {n}");
            let hits = cached.stats().cache_hits;
            assert_eq!(cached.check_n("k", n).unwrap(), said, "{algorithm:?} {n}");
            // The log's several cells come when older cells leave: only Redis knows when.
            let answered_locally = n == 1 || algorithm == RemoteAlgorithm::Gcra;
            let expected = hits + u64::from(answered_locally);
            assert_eq!(cached.stats().cache_hits, expected, "{algorithm:?} {n}");
        }
    }
}

/// The deny cache remembers a key that cannot get a cell for a while, as Redis computed it
/// under the quota of that check: a check under another quota (a per-key quota, or the
/// default after `set_quota`) is Redis's to decide, not the cache's.
#[test]
fn a_denial_cached_under_one_quota_never_answers_under_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let hourly = Quota::per_hour(1).unwrap();
    let limiter = RedisRateLimiter::with_clock(
        &server.url(),
        hourly,
        options()
            .algorithm(RemoteAlgorithm::SlidingWindowLog)
            .time_source(TimeSource::Client)
            .max_clock_skew(Duration::from_secs(3_600))
            .prefix("cached-quota"),
        clock.clone(),
    )
    .unwrap();
    assert!(limiter.check("k").unwrap().is_allowed());
    assert!(limiter.check("k").unwrap().is_denied());
    assert_eq!(limiter.stats().cache_hits, 1, "the hour's denial is cached");
    // The log holds one cell: ten a second admit this one at once.
    let per_second = Quota::per_second(10).unwrap();
    assert!(
        limiter
            .check_n_with("k", &per_second, 1)
            .unwrap()
            .is_allowed()
    );
    // Under ten a second both cells leave the log within a second.
    limiter.set_quota(per_second).unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(limiter.check("k").unwrap().is_allowed());
    // Back under the hourly quota, the hour's two cells deny it.
    limiter.set_quota(hourly).unwrap();
    assert!(limiter.check("k").unwrap().is_denied());
}

/// A clock on which every check's round trip takes `reply_takes` after its script ran: the
/// script reads the wall time (client time) as the check sends it, and that reading moves
/// the clock on, so the reply arrives `reply_takes` later.
#[derive(Clone, Debug)]
struct SlowReplies {
    clock: ManualClock,
    reply_takes: Duration,
}

impl Clock for SlowReplies {
    fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    fn wall_time(&self) -> std::time::SystemTime {
        let wall = self.clock.wall_time();
        self.clock.advance(self.reply_takes);
        wall
    }
}

/// What a limiter answers locally (from the deny cache, from a lease) it times from before
/// the check was sent, so a slow reply never stretches it: the cache denies no request that
/// Redis would admit, and a leased cell is spent at most the lease period after Redis granted
/// it.
#[test]
fn local_answers_are_timed_from_before_the_check_was_sent() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // One cell per 100 ms, one at once; each reply comes 50 ms after its script ran.
    let quota = Quota::new(1, Duration::from_millis(100)).unwrap();
    let reply_takes = Duration::from_millis(50);
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let clock = ManualClock::new();
        let slow = SlowReplies {
            clock: clock.clone(),
            reply_takes,
        };
        let limiter = RedisRateLimiter::with_clock(
            &server.url(),
            quota,
            options()
                .algorithm(algorithm)
                .time_source(TimeSource::Client)
                .max_clock_skew(Duration::from_secs(3_600))
                .prefix(format!("slow-reply-{algorithm:?}")),
            slow,
        )
        .unwrap();
        // Sent at 0 and answered at 50 ms: admitted, and no cell free until 100 ms.
        assert!(limiter.check("k").unwrap().is_allowed(), "{algorithm:?}");
        let at_50 = limiter.check("k").unwrap();
        assert!(at_50.is_denied(), "{algorithm:?}: {at_50:?}");
        assert_eq!(
            at_50.retry_after(),
            Duration::from_millis(50),
            "{algorithm:?}"
        );
        // At 100 ms Redis admits the key again: the cache may not say otherwise.
        clock.set(Duration::from_millis(100));
        let at_100 = limiter.check("k").unwrap();
        assert!(at_100.is_allowed(), "{algorithm:?}: {at_100:?}");
    }

    // Batches of four cells leased for 100 ms, out of eight at once: the first batch is granted
    // at 0 and answered at 50 ms.
    let clock = ManualClock::new();
    let slow = SlowReplies {
        clock: clock.clone(),
        reply_takes,
    };
    let burst = Quota::per_second(4).unwrap().with_burst(8).unwrap();
    let leasing = RedisRateLimiter::with_clock(
        &server.url(),
        burst,
        options()
            .time_source(TimeSource::Client)
            .max_clock_skew(Duration::from_secs(3_600))
            .batch(4, Duration::from_millis(100))
            .prefix("slow-reply-lease"),
        slow,
    )
    .unwrap();
    assert!(leasing.check("k").unwrap().is_allowed());
    let sent = leasing.stats().round_trips;
    // 100 ms after the grant the lease is over, whenever its reply came: Redis decides.
    clock.advance(Duration::from_millis(50));
    assert!(leasing.check("k").unwrap().is_allowed());
    assert_eq!(
        (leasing.stats().lease_hits, leasing.stats().round_trips),
        (0, sent + 1),
        "a cell spent 100 ms after Redis granted it"
    );
}

#[test]
fn decisions_equal_the_local_algorithms_over_refills_and_quota_changes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Emission intervals and windows in whole microseconds, so both sides compute alike.
    let gcra = [
        Quota::per_second(10).unwrap().with_burst(4).unwrap(),
        Quota::new(8, Duration::from_millis(400)).unwrap(),
    ];
    matches_local::<Gcra>(&server, RemoteAlgorithm::Gcra, gcra);
    let log = [
        Quota::new(6, Duration::from_millis(500)).unwrap(),
        Quota::new(3, Duration::from_millis(500)).unwrap(),
    ];
    matches_local::<SlidingWindowLog>(&server, RemoteAlgorithm::SlidingWindowLog, log);
}

#[test]
fn on_the_server_clock_admissions_stay_within_the_quota_over_real_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut plain = admin(&server.url());
    let server_micros = |plain: &mut redis::Connection| -> u64 {
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(plain).unwrap();
        seconds * 1_000_000 + micros
    };
    // 50 per 100 ms: a cell every 2 ms, 50 at once.
    let quota = Quota::new(50, Duration::from_millis(100)).unwrap();
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let limiter = RedisRateLimiter::new(
            &server.url(),
            quota,
            options()
                .algorithm(algorithm)
                .deny_cache_capacity(0)
                .timeout(Duration::from_secs(2))
                .prefix(format!("{algorithm:?}")),
        )
        .unwrap();
        let start = server_micros(&mut plain);
        let (mut admitted, mut checks) = (0u64, 0u64);
        // Checks for 300 ms of the server's time, read before and after (elapsed real time is
        // what the server's clock is for).
        while server_micros(&mut plain) - start < 300_000 {
            admitted += u64::from(limiter.check("k").unwrap().is_allowed());
            checks += 1;
        }
        let elapsed = server_micros(&mut plain) - start;
        // GCRA: the burst plus one cell per 2 ms. The log: 50 in every 100 ms window, so at
        // most 50 per started window.
        let most = match algorithm {
            RemoteAlgorithm::Gcra => 50 + elapsed / 2_000,
            _ => 50 * elapsed.div_ceil(100_000),
        };
        println!(
            "{algorithm:?}: {admitted} admitted in {elapsed} µs of server time (at most {most})"
        );
        assert!(admitted <= most, "{algorithm:?}: {admitted} > {most}");
        // The first burst is admitted whole, however few checks a loaded machine gets through.
        assert!(
            admitted >= checks.min(50),
            "{algorithm:?}: {admitted} of {checks} checks, at least the first burst"
        );
    }
}

#[test]
fn gcra_never_refills_faster_than_the_quota() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 600,000 per second is one cell per 1,666.67 ns: in whole nanoseconds, 1,667 (not 1,666,
    // which would be faster).
    let quota = Quota::per_second(600_000)
        .unwrap()
        .with_burst(1_000)
        .unwrap();
    let limiter = RedisRateLimiter::new(&server.url(), quota, options()).unwrap();
    let drained = limiter.check_n("k", 1_000).unwrap();
    assert!(drained.is_allowed());
    // Drained at once, the state is full again after the burst window, never sooner.
    assert!(
        drained.reset_after() >= quota.burst_duration(),
        "refills 1,000 cells in {:?}: faster than {:?}",
        drained.reset_after(),
        quota.burst_duration()
    );
    // 1,667,000 ns, said in whole microseconds.
    assert_eq!(drained.reset_after(), Duration::from_micros(1_667));
}

#[test]
fn error_replies_are_errors_under_every_policy_never_admissions() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut plain = admin(&url);
    let quota = Quota::per_minute(10).unwrap();
    for policy in [
        FailurePolicy::FailOpen,
        FailurePolicy::FailClosed,
        FailurePolicy::Error,
    ] {
        let build = |algorithm| {
            RedisRateLimiter::new(
                &url,
                quota,
                options()
                    .algorithm(algorithm)
                    .policy(policy)
                    .prefix(format!("{policy:?}-{algorithm:?}")),
            )
            .unwrap()
        };
        let gcra = build(RemoteAlgorithm::Gcra);
        let log = build(RemoteAlgorithm::SlidingWindowLog);
        let state = |algorithm, key: &str| format!("{policy:?}-{algorithm:?}:{{{key}}}");
        let rejected = |result: Result<Decision, Error>, what: &str| {
            assert!(
                matches!(&result, Err(Error::Backend { .. })),
                "{policy:?}, {what}: {result:?}"
            );
        };
        // WRONGTYPE: a list where GCRA keeps a string, a string where the log keeps a set.
        let _: () = redis::cmd("RPUSH")
            .arg(state(RemoteAlgorithm::Gcra, "list"))
            .arg("x")
            .query(&mut plain)
            .unwrap();
        rejected(gcra.check("list"), "a list at a GCRA key");
        let _: () = redis::cmd("SET")
            .arg(state(RemoteAlgorithm::SlidingWindowLog, "string"))
            .arg("x")
            .query(&mut plain)
            .unwrap();
        rejected(log.check("string"), "a string at a log key");
        // A GCRA key holding something that is not a time is no licence to admit.
        let _: () = redis::cmd("SET")
            .arg(state(RemoteAlgorithm::Gcra, "garbage"))
            .arg("not a number")
            .query(&mut plain)
            .unwrap();
        rejected(gcra.check("garbage"), "a GCRA key that is not a number");
        // A script error: the log's counter is not an integer, so its INCRBY fails.
        let _: () = redis::cmd("SET")
            .arg(format!(
                "{}:seq",
                state(RemoteAlgorithm::SlidingWindowLog, "seq")
            ))
            .arg("x")
            .query(&mut plain)
            .unwrap();
        rejected(log.check("seq"), "a script error");
        // OOM: no memory may be used for writes.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("noeviction")
            .query(&mut plain)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("1")
            .query(&mut plain)
            .unwrap();
        rejected(gcra.check("fresh"), "out of memory (GCRA)");
        rejected(log.check("fresh"), "out of memory (log)");
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("0")
            .query(&mut plain)
            .unwrap();
        assert!(gcra.check("fresh").unwrap().is_allowed());
        assert_eq!(gcra.stats().server_errors, 3);
        assert_eq!(gcra.stats().failures, 0, "none of this is an outage");

        // NOSCRIPT after a flush: the check is sent again with the script's source and Redis
        // decides, so a key over its limit stays denied.
        let full = RedisRateLimiter::new(
            &url,
            Quota::per_hour(1).unwrap(),
            options()
                .policy(policy)
                .deny_cache_capacity(0)
                .prefix(format!("{policy:?}-flush")),
        )
        .unwrap();
        assert!(full.check("k").unwrap().is_allowed());
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut plain).unwrap();
        let before = full.stats().round_trips;
        assert!(
            full.check("k").unwrap().is_denied(),
            "{policy:?}: decided by Redis"
        );
        assert_eq!(full.stats().round_trips, before + 2, "EVALSHA, then EVAL");
    }
}

/// 999,999 per second with a burst of 1,000, offered two checks every microsecond of the
/// client's clock for 2 ms: Redis admits the burst and then the rate, within 0.2 % (at whole
/// microseconds it admitted one per 2 µs after the burst, half the rate). A state of whole
/// microseconds, as earlier versions wrote it, reads as such.
#[test]
fn a_gcra_rate_near_a_million_per_second_runs_at_its_rate() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let quota = Quota::per_second(999_999)
        .unwrap()
        .with_burst(1_000)
        .unwrap();
    let limiter = client_timed(
        &server.url(),
        RemoteAlgorithm::Gcra,
        quota,
        &clock,
        "near-1m",
    );
    let mut admitted = 0_u32;
    for _ in 0..2_000 {
        clock.advance(Duration::from_micros(1));
        for _ in 0..2 {
            admitted += u32::from(limiter.check("k").unwrap().is_allowed());
        }
    }
    // The burst, and the rate over the 1,999 µs from the first check to the last.
    let ideal = 1_000.0 + 999_999.0 * 1_999e-6;
    let off = (f64::from(admitted) - ideal).abs();
    assert!(off <= ideal * 0.002, "{admitted} admitted, ideally {ideal}");

    // A key owing 1,006 µs in the old form, 5 µs past the burst's 1,001 µs: the next cell
    // 6.001 µs on, said in whole microseconds rounded up.
    let now = clock
        .wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("near-1m*")
        .query(&mut admin(&server.url()))
        .unwrap();
    let state = keys
        .iter()
        .find(|key| key.contains('k') && !key.contains("req"))
        .expect("the key's state");
    let _: () = redis::cmd("SET")
        .arg(state)
        .arg((now + 1_006).to_string())
        .query(&mut admin(&server.url()))
        .unwrap();
    let denied = limiter.check("k").unwrap();
    assert!(denied.is_denied());
    assert_eq!(denied.retry_after(), Duration::from_micros(7));
}

/// Every key under `pattern` with its time to live in milliseconds (-1: none).
fn ttls(plain: &mut redis::Connection, pattern: &str) -> Vec<(String, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(plain).unwrap();
    keys.into_iter()
        .map(|key| {
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(plain).unwrap();
            (key, ttl)
        })
        .collect()
}

#[test]
fn every_key_expires_once_its_state_says_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut plain = admin(&url);
    let timeout = Duration::from_millis(300);
    // GCRA: a second per cell, a burst of 5: full again at most 5 s after any write. (At
    // 100 ms per cell, a one-cell key could expire before a loaded machine read its TTL.)
    let gcra_quota = Quota::per_second(1).unwrap().with_burst(5).unwrap();
    // The log: a window of 2 s.
    let log_quota = Quota::new(5, Duration::from_secs(2)).unwrap();
    for (algorithm, quota, bound) in [
        (
            RemoteAlgorithm::Gcra,
            gcra_quota,
            quota_millis(gcra_quota.burst_duration()),
        ),
        (
            RemoteAlgorithm::SlidingWindowLog,
            log_quota,
            quota_millis(log_quota.period()),
        ),
    ] {
        let prefix = format!("{algorithm:?}");
        let limiter = RedisRateLimiter::new(
            &url,
            quota,
            options()
                .algorithm(algorithm)
                .timeout(timeout)
                .deny_cache_capacity(0)
                .prefix(&prefix),
        )
        .unwrap();
        // Admissions of one and several cells, a denial, a read: after each, every key has a
        // TTL no longer than its state lasts (records: two timeouts, at least a second).
        let steps: [(&str, u32); 6] = [("a", 1), ("a", 3), ("a", 5), ("a", 0), ("b", 5), ("", 2)];
        for (key, n) in steps {
            let _ = limiter.check_n(key, n).unwrap();
            let all = ttls(&mut plain, &format!("{prefix}:*"));
            assert!(!all.is_empty());
            for (redis_key, ttl) in all {
                let most = if redis_key.contains(":req:") {
                    1_000
                } else {
                    bound
                };
                // -2: the key expired between the listing and the reading, so it had a TTL;
                // -1 (no TTL) fails, as does one longer than the state lasts.
                assert!(
                    ttl == -2 || (ttl > 0 && ttl <= most),
                    "{algorithm:?}: {redis_key} expires in {ttl} ms (at most {most})"
                );
            }
        }
    }
}

/// A log's TTL is the window of the check that last wrote it: a quota with a longer window
/// counts its cells while the log lives, but a denial writes nothing, so a log that is not
/// written to again is gone one old window after its newest cell, however long the new window.
#[test]
fn a_log_outlives_its_last_admission_by_that_admissions_window_only() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut plain = admin(&server.url());
    // One cell per 5 s (long enough for a loaded machine to check again within it), then one
    // per hour.
    let limiter = RedisRateLimiter::new(
        &server.url(),
        Quota::new(1, Duration::from_secs(5)).unwrap(),
        options()
            .algorithm(RemoteAlgorithm::SlidingWindowLog)
            .deny_cache_capacity(0)
            .prefix("longer-window"),
    )
    .unwrap();
    assert!(limiter.check("k").unwrap().is_allowed());
    limiter.set_quota(Quota::per_hour(1).unwrap()).unwrap();
    assert!(
        limiter.check("k").unwrap().is_denied(),
        "the hour counts the cell"
    );
    let log = ttls(&mut plain, "longer-window:{k}");
    assert_eq!(log.len(), 1);
    let ttl = log[0].1;
    assert!(
        ttl == -2 || (ttl > 0 && ttl <= 5_000),
        "the log expires in {ttl} ms, with the old window"
    );
}

#[test]
fn denials_and_reads_write_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut plain = admin(&server.url());
    // Writes since the last save (none: the test server never saves), counted by Redis.
    let mut writes = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut plain)
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("rdb_changes_since_last_save:"))
            .map(|count| count.trim().parse().unwrap())
            .unwrap()
    };
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let limiter = limiter(
            &server.url(),
            algorithm,
            options()
                .deny_cache_capacity(0)
                .prefix(format!("{algorithm:?}")),
        );
        assert!(limiter.check_n("k", 100).unwrap().is_allowed());
        let before = writes();
        assert!(limiter.check("k").unwrap().is_denied());
        assert!(limiter.check_n("k", 0).unwrap().is_allowed());
        assert_eq!(writes(), before, "{algorithm:?}");
    }
}

fn quota_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap()
}

#[test]
fn the_sliding_log_adds_all_cells_of_a_check_in_one_command() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let limiter = limiter(&url, RemoteAlgorithm::SlidingWindowLog, options());
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin(&url))
        .unwrap();
    assert!(limiter.check_n("k", 60).unwrap().is_allowed());
    assert_eq!(calls(&url, "zadd"), 1, "60 cells, one ZADD");
    let wide = RedisRateLimiter::new(
        &url,
        Quota::new(2_500, QUOTA_PERIOD).unwrap(),
        options()
            .algorithm(RemoteAlgorithm::SlidingWindowLog)
            .timeout(Duration::from_secs(2))
            .prefix("wide"),
    )
    .unwrap();
    assert!(wide.check_n("k", 2_500).unwrap().is_allowed());
    assert_eq!(
        calls(&url, "zadd"),
        1 + 3,
        "2,500 cells: one ZADD per 1,000"
    );
    let members: u64 = redis::cmd("ZCARD")
        .arg("wide:{k}")
        .query(&mut admin(&url))
        .unwrap();
    assert_eq!(members, 2_500);
}

/// A timeout longer than a minute, or a clock skew longer than any key's life in Redis can be
/// given, is refused when the limiter is built: every admitted check leaves a request record
/// that lives two timeouts, so an absurd timeout would keep every record for centuries. The
/// longest accepted ones work, and the record of a check under the longest timeout expires
/// within two minutes.
#[test]
fn timeouts_past_a_minute_and_skews_past_what_redis_can_expire_are_refused() {
    let quota = Quota::per_second(100).unwrap();
    let url = "redis://127.0.0.1:1";
    let client_time = || options().time_source(TimeSource::Client);
    let longest_timeout = RedisOptions::MAX_TIMEOUT;
    let refused = [
        options().timeout(Duration::MAX),
        options().timeout(RedisOptions::MAX_DURATION),
        options().timeout(longest_timeout + Duration::from_nanos(1)),
        client_time().max_clock_skew(Duration::MAX),
        client_time().max_clock_skew(RedisOptions::MAX_DURATION + Duration::from_nanos(1)),
    ];
    for options in refused {
        let built = RedisRateLimiter::new(url, quota, options.clone());
        assert!(
            matches!(built, Err(Error::InvalidConfig { .. })),
            "{options:?}: {built:?}"
        );
    }
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut plain = admin(&server.url());
    for algorithm in [RemoteAlgorithm::Gcra, RemoteAlgorithm::SlidingWindowLog] {
        let prefix = format!("longest-{algorithm:?}");
        let options = client_time()
            .algorithm(algorithm)
            .timeout(longest_timeout)
            .max_clock_skew(RedisOptions::MAX_DURATION)
            .prefix(&prefix);
        let limiter = RedisRateLimiter::new(&server.url(), quota, options).unwrap();
        let decision = limiter.check("k");
        assert!(
            decision.as_ref().is_ok_and(Decision::is_allowed),
            "{algorithm:?}: {decision:?}"
        );
        let records = ttls(&mut plain, &format!("{prefix}:*:req:*"));
        assert_eq!(records.len(), 1, "{records:?}");
        for (record, ttl) in records {
            assert!(
                ttl > 0 && ttl <= 120_000,
                "{algorithm:?}: {record} expires in {ttl} ms"
            );
        }
    }
}

/// A runtime without tokio's timer (built without `enable_time`) cannot time a check out:
/// building an async limiter on it is refused with a clear error instead of a panic at the
/// first check.
#[test]
fn a_runtime_without_timers_is_refused_when_the_limiter_is_built() {
    let without_timers = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime");
    let built = without_timers.block_on(async {
        AsyncRedisRateLimiter::new(
            "redis://127.0.0.1:1",
            Quota::per_second(1).unwrap(),
            options(),
        )
    });
    let Err(Error::InvalidConfig { reason }) = built else {
        panic!("built on a runtime without timers: {built:?}");
    };
    assert!(reason.contains("enable_time"), "{reason}");
    let with_timers = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a runtime");
    let built = with_timers.block_on(async {
        AsyncRedisRateLimiter::new(
            "redis://127.0.0.1:1",
            Quota::per_second(1).unwrap(),
            options(),
        )
    });
    assert!(built.is_ok(), "{built:?}");
}

#[test]
fn keys_longer_than_the_cap_are_refused_before_any_round_trip() {
    let limiter = RedisRateLimiter::new(
        "redis://127.0.0.1:1",
        Quota::per_second(1).unwrap(),
        options().max_key_len(16),
    )
    .unwrap();
    let long = "k".repeat(17);
    assert!(matches!(
        limiter.check(&long),
        Err(Error::TooLarge {
            value: 17,
            max: 16,
            ..
        })
    ));
    assert_eq!(limiter.stats().round_trips, 0);
    assert!(matches!(
        RedisRateLimiter::new(
            "redis://127.0.0.1:1",
            Quota::per_second(1).unwrap(),
            options().prefix("a{b}"),
        ),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn async_tasks_share_one_connection_and_the_quota_exactly() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let runtime = runtime();
    let admitted = runtime.block_on(async {
        let limiter = Arc::new(
            AsyncRedisRateLimiter::new(
                &server.url(),
                Quota::new(QUOTA_LIMIT, QUOTA_PERIOD).unwrap(),
                options()
                    .deny_cache_capacity(0)
                    .timeout(Duration::from_secs(2)),
            )
            .unwrap(),
        );
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..40 {
                        admitted +=
                            usize::from(limiter.check("shared").await.unwrap().is_allowed());
                    }
                    admitted
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        // Eight tasks, one connection (the other client is this query's).
        let clients: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut admin(&server.url()))
            .unwrap();
        assert!(
            clients.lines().any(|line| line == "connected_clients:2"),
            "{clients}"
        );
        // A blocking limiter refuses to block a runtime's thread.
        let blocking =
            RedisRateLimiter::new(&server.url(), Quota::per_second(1).unwrap(), options()).unwrap();
        assert!(matches!(
            blocking.check("k"),
            Err(Error::InvalidConfig { .. })
        ));
        // Nor can it tell the runtime's blocking pool from its workers: refused there too, where
        // the async limiter's check can be blocked on instead.
        let async_limiter = Arc::clone(&limiter);
        let in_blocking_pool = tokio::task::spawn_blocking(move || {
            let refused = blocking.check("k");
            let blocked_on = tokio::runtime::Handle::current().block_on(async_limiter.check("k"));
            (refused, blocked_on)
        })
        .await
        .unwrap();
        assert!(
            matches!(in_blocking_pool.0, Err(Error::InvalidConfig { .. })),
            "{in_blocking_pool:?}"
        );
        assert!(in_blocking_pool.1.is_ok(), "{in_blocking_pool:?}");
        admitted
    });
    assert_eq!(admitted, 100);
}

/// Runs `schedule` (clock advance in µs, limiter index) against `limiters` on one key and
/// returns the clock reading of every admission, in µs.
fn admissions(
    limiters: &[RedisRateLimiter<ManualClock>],
    clock: &ManualClock,
    schedule: &[(u64, usize)],
) -> Vec<u64> {
    let mut admitted = Vec::new();
    for &(advance, index) in schedule {
        clock.advance(Duration::from_micros(advance));
        if limiters[index].check("k").unwrap().is_allowed() {
            admitted.push(clock.now_nanos() / 1_000);
        }
    }
    admitted
}

#[test]
fn batching_saves_round_trips_and_over_admits_at_most_b_minus_one_per_process() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    // 100 per second (a cell every 10 ms), 20 at once; 3 processes taking 8 cells per lease.
    let quota = Quota::per_second(100).unwrap().with_burst(20).unwrap();
    let (batch, processes) = (8u32, 3usize);
    let interval = 10_000u64;
    let clock = ManualClock::new();
    let build = |prefix: &str, batch: u32| {
        (0..processes)
            .map(|_| {
                RedisRateLimiter::with_clock(
                    &url,
                    quota,
                    options()
                        .time_source(TimeSource::Client)
                        // Manual time runs slower than Redis's clock here: keep keys for the whole test.
                        .max_clock_skew(Duration::from_secs(3_600))
                        .timeout(Duration::from_secs(2))
                        .batch(batch, Duration::from_millis(500))
                        .prefix(prefix),
                    clock.clone(),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    };
    // Phases of traffic under the limit (a check every 10 to 30 ms, 50 per second in all),
    // overload (a check every 0 to 1 ms), and quiet spells in which leases expire.
    let mut seed = 11;
    let schedule: Vec<(u64, usize)> = (0..3_000)
        .map(|step| {
            let mut advance = match step / 250 % 3 {
                1 => splitmix(&mut seed) % 1_000,
                _ => 10_000 + splitmix(&mut seed) % 20_000,
            };
            if step % 500 == 499 {
                advance += 300_000;
            }
            (advance, usize::try_from(splitmix(&mut seed) % 3).unwrap())
        })
        .collect();

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin(&url))
        .unwrap();
    let exact = build("exact", 1);
    let exact_times = admissions(&exact, &clock, &schedule);
    let exact_trips = calls(&url, "evalsha") + calls(&url, "eval");

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin(&url))
        .unwrap();
    let batched = build("batched", batch);
    let batched_times = admissions(&batched, &clock, &schedule);
    let batched_trips = calls(&url, "evalsha") + calls(&url, "eval");
    let lease_hits: u64 = batched.iter().map(|l| l.stats().lease_hits).sum();
    println!(
        "{} checks: exact {} admitted in {exact_trips} round trips; batched ({batch} per lease) \
         {} admitted in {batched_trips} round trips, {lease_hits} from leases",
        schedule.len(),
        exact_times.len(),
        batched_times.len()
    );
    assert!(
        batched_trips * 2 < exact_trips,
        "batching saves most round trips: {batched_trips} vs {exact_trips}"
    );
    // The schedule and the clock are fixed, so the counts are too: the README quotes them.
    assert_eq!((exact_trips, batched_trips), (2_225, 430));
    // In every interval [a, b]: at most burst + (b − a) / interval exactly, plus B − 1 per
    // process with batching.
    let slack = u64::from(batch - 1) * processes as u64;
    for (times, extra) in [(&exact_times, 0), (&batched_times, slack)] {
        for (first, &a) in times.iter().enumerate() {
            for (last, &b) in times.iter().enumerate().skip(first) {
                let count = (last - first + 1) as u64;
                let most = 20 + (b - a) / interval + extra;
                assert!(
                    count <= most,
                    "{count} admitted in [{a}, {b}] µs, at most {most}"
                );
            }
        }
    }
}

/// Each cell of a Redis log is a sorted-set member, and all the cells of one check are added
/// by one script, during which Redis serves no other client: a log limit past the cap is
/// refused wherever a quota enters (building, `set_quota`, a per-key quota), before any round
/// trip, and the largest accepted one works. GCRA keeps one number per key whatever its limit.
#[test]
fn log_limits_past_the_cap_are_refused_before_any_round_trip() {
    let cap = RemoteAlgorithm::MAX_LOG_LIMIT;
    let too_many = Quota::new(u64::from(cap) + 1, QUOTA_PERIOD).unwrap();
    let log = || options().algorithm(RemoteAlgorithm::SlidingWindowLog);
    let built = RedisRateLimiter::new("redis://127.0.0.1:1", too_many, log());
    assert!(matches!(built, Err(Error::TooLarge { .. })), "{built:?}");
    assert!(RedisRateLimiter::new("redis://127.0.0.1:1", too_many, options()).is_ok());
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let at_cap = Quota::new(u64::from(cap), QUOTA_PERIOD).unwrap();
    let limiter = RedisRateLimiter::new(&url, at_cap, log().prefix("capped")).unwrap();
    let changed = limiter.set_quota(too_many);
    assert!(
        matches!(changed, Err(Error::TooLarge { .. })),
        "{changed:?}"
    );
    assert_eq!(limiter.quota(), at_cap);
    let checked = limiter.check_n_with("k", &too_many, 1);
    assert!(
        matches!(checked, Err(Error::TooLarge { .. })),
        "{checked:?}"
    );
    assert_eq!(limiter.stats().round_trips, 0);
    assert!(limiter.check_n("k", cap).unwrap().is_allowed());
    let members: u64 = redis::cmd("ZCARD")
        .arg("capped:{k}")
        .query(&mut admin(&url))
        .unwrap();
    assert_eq!(members, u64::from(cap));
}

/// A lease holds cells Redis granted under one quota: a check under another (a per-key quota,
/// or the default after `set_quota`) asks Redis rather than spending them, so it gets Redis's
/// decision under its own quota, never a `remaining` beyond that quota's capacity.
#[test]
fn a_lease_is_spent_only_under_the_quota_it_was_taken_under() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Ten cells of 600 an hour owe a minute; one a day with a burst of one then has no cell
    // free for that minute, however slow the machine.
    let lax = Quota::per_hour(600).unwrap();
    let strict = Quota::new(1, Duration::from_secs(86_400)).unwrap();
    let limiter = RedisRateLimiter::new(
        &server.url(),
        lax,
        options().batch(10, Duration::from_secs(3_600)),
    )
    .unwrap();
    for key in ["per-key", "changed"] {
        let first = limiter.check(key).unwrap();
        assert!(first.is_allowed());
        assert_eq!(limiter.stats().lease_hits, 0, "{key}: the batch is taken");
    }
    let trips = limiter.stats().round_trips;
    let per_key = limiter.check_n_with("per-key", &strict, 1).unwrap();
    assert!(
        per_key.is_denied() && per_key.remaining() <= 1,
        "a per-key quota spent the default's lease: {per_key:?}"
    );
    limiter.set_quota(strict).unwrap();
    let changed = limiter.check("changed").unwrap();
    assert!(
        changed.is_denied() && changed.remaining() <= 1,
        "a new default quota spent the old one's lease: {changed:?}"
    );
    assert_eq!(limiter.stats().round_trips, trips + 2, "both asked Redis");
    assert_eq!(limiter.stats().lease_hits, 0);
}
