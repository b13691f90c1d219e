//! infra-edgecache: a user in Tokyo and an origin in Virginia. What the edge saves, a stampede
//! collapsed into one origin fetch, a stale copy served while the origin is down, and a purge
//! by tag.
//!
//! The ocean is simulated: every origin fetch is counted as a 300 ms round trip (and sleeps a
//! few real milliseconds, so concurrent requests overlap); the edge's own time is measured.

use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use infra_edgecache::http::{CacheStatus, HttpCache, Origin, OriginError, PurgeMode};

/// What one round trip from Tokyo to Virginia costs, counted rather than slept.
const OCEAN: Duration = Duration::from_millis(300);
/// What an origin fetch really sleeps, so the requests of a stampede overlap.
const FETCH_WORK: Duration = Duration::from_millis(20);

/// The origin in Virginia: a product page and a script, each with a freshness lifetime, stale
/// allowances and surrogate keys.
#[derive(Clone)]
struct Virginia(Arc<Servers>);

/// What the tour watches and switches on the origin.
#[derive(Default)]
struct Servers {
    fetches: AtomicU64,
    down: AtomicBool,
}

impl Origin for Virginia {
    async fn fetch(&self, request: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
        self.0.fetches.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(FETCH_WORK).await;
        if self.0.down.load(Ordering::Relaxed) {
            return Err(OriginError::new("connection refused"));
        }
        let (body, tags) = match request.uri().path() {
            "/products/42" => ("<h1>Espresso beans</h1>", "product-42 catalog"),
            _ => ("console.log('app')", "static"),
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(
                "cache-control",
                "public, max-age=60, stale-while-revalidate=30, stale-if-error=86400",
            )
            .header("surrogate-key", tags)
            .body(Bytes::from_static(body.as_bytes()))
            .map_err(OriginError::new)
    }
}

fn get(path: &str) -> Result<Request<Bytes>, http::Error> {
    Request::builder()
        .uri(format!("https://shop.example{path}"))
        .body(Bytes::new())
}

fn status(response: &Response<Bytes>) -> Option<CacheStatus> {
    response.extensions().get::<CacheStatus>().copied()
}

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?
        .block_on(tour())
}

async fn tour() -> Result<(), Box<dyn Error>> {
    let servers = Arc::new(Servers::default());
    let virginia = Virginia(Arc::clone(&servers));
    let clock = ManualClock::new();
    let edge = HttpCache::builder(virginia, 64 << 20)
        .clock(clock.clone())
        .build();

    // Twenty page views from Tokyo: without an edge each one crosses the ocean.
    let views = 20_u32;
    let started = Instant::now();
    for _ in 0..views {
        edge.serve(get("/app.js")?).await?;
    }
    let edge_time = started.elapsed();
    let fetches = servers.fetches.load(Ordering::Relaxed);
    let without = OCEAN * views;
    let with = OCEAN * u32::try_from(fetches)? + edge_time.saturating_sub(FETCH_WORK);
    println!(
        "{views} views of /app.js: {fetches} origin fetch; Tokyo waits {:.1} s without the edge, \
         {:.2} s with it",
        without.as_secs_f64(),
        with.as_secs_f64()
    );

    // A stampede: 100 requests for a page nobody has asked for yet, all at once.
    let before = servers.fetches.load(Ordering::Relaxed);
    let mut stampede = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let edge = edge.clone();
        let request = get("/products/42")?;
        stampede.spawn(async move { edge.serve(request).await });
    }
    let mut served = 0;
    while let Some(answer) = stampede.join_next().await {
        if answer??.status() == StatusCode::OK {
            served += 1;
        }
    }
    let stampede_fetches = servers.fetches.load(Ordering::Relaxed) - before;
    println!(
        "stampede: {served} concurrent requests for a cold page, {stampede_fetches} origin fetch \
         ({} waited for it)",
        edge.stats().coalesced_waits
    );
    if stampede_fetches != 1 {
        return Err("the stampede should cost one origin fetch".into());
    }

    // The price changed: purge everything tagged with the product.
    edge.purge_tag("product-42", PurgeMode::Hard);
    let after_purge = edge.serve(get("/products/42")?).await?;
    let untouched = edge.serve(get("/app.js")?).await?;
    println!(
        "purge of tag product-42: the page is fetched again ({:?}); /app.js, tagged static, is \
         still served from the edge ({:?})",
        status(&after_purge).ok_or("a cache status")?,
        status(&untouched).ok_or("a cache status")?,
    );
    // Two minutes later the page is stale, and Virginia is down.
    clock.advance(Duration::from_secs(120));
    servers.down.store(true, Ordering::Relaxed);
    let during_outage = edge.serve(get("/products/42")?).await?;
    println!(
        "origin down, page 60 s past its max-age: served {:?} from the edge (stale-if-error), \
         status {}, Cache-Status: {}",
        status(&during_outage).ok_or("a cache status")?,
        during_outage.status(),
        during_outage
            .headers()
            .get("cache-status")
            .ok_or("a Cache-Status field")?
            .to_str()?
    );
    servers.down.store(false, Ordering::Relaxed);

    let stats = edge.stats();
    println!(
        "edge totals: {} hits, {} misses, {} stale served, {} origin fetches",
        stats.hits,
        stats.misses,
        stats.stale_served,
        servers.fetches.load(Ordering::Relaxed)
    );
    Ok(())
}
