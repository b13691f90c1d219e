//! The Redis rate limiter against plain `EVALSHA` of the same script through the `redis`
//! crate, in checks per second from 1 and from 8 concurrent tokio tasks on one connection.
//!
//! - `infra`: `AsyncRedisRateLimiter::check(key).await` (GCRA, server time): the key's hash
//!   tag, a request id, the deny cache lookup, the breaker, one `EVALSHA` under the check's
//!   timeout, and the decision.
//! - `plain_evalsha`: the same `GCRA_SCRIPT` with the same keys and arguments (a fresh record
//!   key per call), sent as `EVALSHA` on the same kind of connection, a `ConnectionManager`:
//!   the floor a check through this script can reach.
//! - `infra_batch_10`: `infra` with batching of 10 cells per lease (1 s): about one round
//!   trip per ten checks of a key.
//!
//! Every check is admitted (1,000,000 per second, a burst of 1,000,000, over 1,000 keys), so
//! each round trip writes. One local `redis-server` started through infra-testkit (the group is
//! skipped with a line when the binary is missing), at Redis's default `appendfsync everysec`:
//! fsyncing every write, as the test kit does, would measure the disk. One current-thread
//! tokio runtime runs the tasks; each measurement splits its checks evenly among them.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The peer's request ids are counted in a plain atomic: no loom model runs benchmarks.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infra_ratelimit::Quota;
use infra_ratelimit::redis::{AsyncRedisRateLimiter, GCRA_SCRIPT, RedisOptions};
use redis::aio::ConnectionManager;
use tokio::runtime::Runtime;

const KEYS: u64 = 1_000;
const TASKS: [u64; 2] = [1, 8];

/// `plain_evalsha`: the script by hash, with the arguments `AsyncRedisRateLimiter` sends for a
/// one-cell check at 1,000,000 per second with a burst of 1,000,000 on the server's clock.
struct PlainEvalsha {
    connection: ConnectionManager,
    hash: String,
    requests: AtomicU64,
}

impl PlainEvalsha {
    async fn check(&self, key: u64) -> Vec<i64> {
        let request = self.requests.fetch_add(1, Ordering::Relaxed);
        let state = format!("plain:{{k{key}}}");
        redis::cmd("EVALSHA")
            .arg(&self.hash)
            .arg(2)
            .arg(&state)
            .arg(format!("{state}:req:{request:x}"))
            .arg(1_000) // interval, ns
            .arg(1_000_000_000) // tolerance, ns
            .arg(1) // n
            .arg(1) // want
            .arg("") // the server's TIME
            .arg(1_000) // record TTL, ms
            .arg(0) // no clock skew allowance
            .arg(1_000) // nanoseconds per microsecond: the interval's unit
            .query_async(&mut self.connection.clone())
            .await
            .expect("the script runs")
    }
}

/// Runs `iters` checks split among `tasks` tasks, `check(i)` each; returns the time taken.
fn run<F, Fut>(runtime: &Runtime, iters: u64, tasks: u64, check: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let check = Arc::new(check);
    runtime.block_on(async move {
        let started = Instant::now();
        let workers: Vec<_> = (0..tasks)
            .map(|task| {
                let check = Arc::clone(&check);
                tokio::spawn(async move {
                    let mut i = task;
                    while i < iters {
                        check(i % KEYS).await;
                        i += tasks;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("a task finished");
        }
        started.elapsed()
    })
}

fn infra_limiter(url: &str, prefix: &str, batch: u32) -> AsyncRedisRateLimiter {
    let quota = Quota::per_second(1_000_000)
        .and_then(|quota| quota.with_burst(1_000_000))
        .expect("a valid quota");
    AsyncRedisRateLimiter::new(
        url,
        quota,
        RedisOptions::default()
            .prefix(prefix)
            .timeout(Duration::from_secs(2))
            .batch(batch, Duration::from_secs(1)),
    )
    .expect("valid options")
}

fn ratelimit_redis(c: &mut Criterion) {
    let Some(server) = infra_testkit::RedisServer::start() else {
        println!("ratelimit/redis: skipped, no redis-server");
        return;
    };
    let reply = server
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .expect("the server answers");
    assert_eq!(reply, "+OK");
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (infra, batched, plain) = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).expect("a valid URL");
        let mut connection = ConnectionManager::new(client).await.expect("connected");
        let hash: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(GCRA_SCRIPT)
            .query_async(&mut connection)
            .await
            .expect("loaded");
        let plain = PlainEvalsha {
            connection,
            hash,
            requests: AtomicU64::new(0),
        };
        let infra = infra_limiter(&url, "infra", 1);
        let batched = infra_limiter(&url, "batched", 10);
        // The first checks connect and load the script.
        for limiter in [&infra, &batched] {
            assert!(limiter.check("warm").await.expect("checked").is_allowed());
        }
        (Arc::new(infra), Arc::new(batched), Arc::new(plain))
    });

    let mut group = c.benchmark_group("ratelimit/redis");
    group.throughput(Throughput::Elements(1));
    for tasks in TASKS {
        group.bench_with_input(BenchmarkId::new("infra", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let infra = Arc::clone(&infra);
                run(&runtime, iters, tasks, move |key| {
                    let infra = Arc::clone(&infra);
                    async move {
                        let decision = infra.check(&format!("k{key}")).await;
                        assert!(black_box(decision).expect("checked").is_allowed());
                    }
                })
            });
        });
        group.bench_with_input(
            BenchmarkId::new("plain_evalsha", tasks),
            &tasks,
            |b, &tasks| {
                b.iter_custom(|iters| {
                    let plain = Arc::clone(&plain);
                    run(&runtime, iters, tasks, move |key| {
                        let plain = Arc::clone(&plain);
                        async move {
                            let reply = plain.check(key).await;
                            assert_eq!(black_box(reply).first(), Some(&1));
                        }
                    })
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("infra_batch_10", tasks),
            &tasks,
            |b, &tasks| {
                b.iter_custom(|iters| {
                    let batched = Arc::clone(&batched);
                    run(&runtime, iters, tasks, move |key| {
                        let batched = Arc::clone(&batched);
                        async move {
                            let decision = batched.check(&format!("k{key}")).await;
                            assert!(black_box(decision).expect("checked").is_allowed());
                        }
                    })
                });
            },
        );
    }
    group.finish();
    let stats = batched.stats();
    println!(
        "ratelimit/redis: infra_batch_10 made {} round trips for {} lease hits",
        stats.round_trips, stats.lease_hits
    );
}

criterion_group!(benches, ratelimit_redis);
criterion_main!(benches);
