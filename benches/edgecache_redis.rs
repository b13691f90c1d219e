//! The HTTP cache's shared tier (feature `redis`) against plain `redis` commands on the same
//! bytes.
//!
//! - `l2_hit`: an edge whose own store (L1) is empty serves a URL that another edge stored:
//!   the lookup misses L1, reads the record from Redis (one `EVALSHA` on the blocking pool,
//!   which checks the record's size and reads its `PTTL`), decodes it, checks it is fresh,
//!   stores it in L1 and answers. Peer `plain GET`: one `GET` of the record's key, the same
//!   bytes, on a connection of the bench thread.
//!
//! A local `redis-server` started through infra-testkit (the group is skipped with a line when
//! the binary is missing), at `appendfsync everysec` (the test kit's own setting, fsync on
//! every write, would measure the disk). The origin answers in-process at once.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// The bench thread waits for the background write by polling its counter.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use infra_edgecache::http::{CacheStatus, HttpCache, Origin, OriginError, SharedTier};
use tokio::runtime::{Builder, Runtime};

/// The answer body's size.
const BODY_BYTES: usize = 4096;
/// URLs stored in Redis before the `l2_hit` runs; each sample reads distinct ones.
const STORED_URLS: u64 = 20_000;

/// An origin that answers every URL at once with the same cacheable 4 KiB body.
struct InstantOrigin(Bytes);

impl Origin for InstantOrigin {
    async fn fetch(&self, _: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
        Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-type", "application/octet-stream")
            .body(self.0.clone())
            .map_err(OriginError::new)
    }
}

fn edge(redis_url: &str) -> HttpCache<InstantOrigin> {
    let origin = InstantOrigin(Bytes::from(vec![b'x'; BODY_BYTES]));
    let tier = SharedTier::open(redis_url, Duration::from_secs(2)).expect("a valid URL");
    HttpCache::builder(origin, 256 << 20)
        .shared_tier(tier)
        .build()
}

fn url(index: u64) -> String {
    format!("http://shop.example/item/{index}")
}

/// Serves a GET of `url` and returns how it was answered.
async fn serve(cache: &HttpCache<InstantOrigin>, url: &str) -> CacheStatus {
    let request = Request::get(url)
        .body(Bytes::new())
        .expect("a valid request");
    let response = cache.serve(request).await.expect("answered");
    black_box(response.body().len());
    *response
        .extensions()
        .get::<CacheStatus>()
        .expect("a status")
}

/// Writes acknowledged by Redis (or refused) so far.
fn writes_done(cache: &HttpCache<InstantOrigin>) -> u64 {
    let stats = cache.shared_stats().expect("a shared tier");
    stats.writes + stats.write_errors
}

/// Waits until `cache` has finished `expected` writes, none of them failed.
fn wait_for_writes(cache: &HttpCache<InstantOrigin>, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while writes_done(cache) < expected {
        assert!(Instant::now() < deadline, "the writes never finished");
        std::thread::yield_now();
    }
    assert_eq!(cache.shared_stats().expect("a shared tier").write_errors, 0);
}

fn edgecache_redis(c: &mut Criterion) {
    let Some(server) = infra_testkit::RedisServer::start() else {
        println!("edgecache/redis: skipped, no redis-server");
        return;
    };
    assert_eq!(
        server
            .command(&["CONFIG", "SET", "appendfsync", "everysec"])
            .expect("the server answers"),
        "+OK"
    );
    let runtime: Runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = redis::Client::open(server.url()).expect("a valid URL");
    let mut plain = client.get_connection().expect("connected");

    // One edge stores every URL the reading edges will ask for, a batch at a time (a cache
    // drops writes past 64 waiting ones).
    let writer = edge(&server.url());
    runtime.block_on(async {
        for index in 0..STORED_URLS {
            assert_eq!(serve(&writer, &url(index)).await, CacheStatus::Miss);
            if index % 32 == 31 {
                wait_for_writes(&writer, index + 1);
            }
        }
    });
    wait_for_writes(&writer, STORED_URLS);

    let mut group = c.benchmark_group("edgecache/redis");
    group.bench_function("l2_hit/infra", |b| {
        // Each read is of a URL this edge has not read yet, so its L1 never has it; a new edge
        // (made outside the timing) takes over when they run out.
        let mut reader = edge(&server.url());
        let mut next = 0u64;
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if next == STORED_URLS {
                    reader = edge(&server.url());
                    next = 0;
                }
                let batch = left.min(STORED_URLS - next);
                let hits_before = reader.shared_stats().expect("a shared tier").hits;
                elapsed += runtime.block_on(async {
                    let start = Instant::now();
                    for index in next..next + batch {
                        black_box(serve(&reader, &url(index)).await);
                    }
                    start.elapsed()
                });
                let hits = reader.shared_stats().expect("a shared tier").hits - hits_before;
                assert_eq!(hits, batch, "every timed read was an L2 hit");
                next += batch;
                left -= batch;
            }
            elapsed
        });
    });
    group.bench_function("l2_hit/plain GET", |b| {
        let mut index = 0u64;
        b.iter(|| {
            let key = format!("edgecache:r:GET shop.example/item/{}", index % STORED_URLS);
            index += 1;
            let bytes: Vec<u8> = redis::cmd("GET").arg(key).query(&mut plain).expect("found");
            black_box(bytes.len())
        });
    });

    group.finish();
}

criterion_group!(benches, edgecache_redis);
criterion_main!(benches);
