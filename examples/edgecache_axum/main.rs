//! An axum service in front of an HTTP origin, answering through an `HttpCache`.
//!
//! ```text
//! EDGECACHE_PURGE_TOKEN=change-me \
//!   cargo run -p examples --example edgecache_axum -- 127.0.0.1:9000 127.0.0.1:8080 shop.example
//! curl -i http://127.0.0.1:8080/some/page                # X-Cache: MISS, then HIT
//! curl -i -X POST -H 'authorization: Bearer change-me' \
//!   http://127.0.0.1:8080/_cache/purge/tag/catalogue    # 204
//! ```
//!
//! Arguments: the origin's `host:port`, the address to listen on (default `127.0.0.1:8080`),
//! and the public host the cache keys requests under (default: the listen address). The purge
//! token comes from the environment, not the command line, which other users can read; without
//! it the purge endpoint is off. `service.rs` explains the layer order and the defaults.

mod origin;
mod service;

use std::error::Error;

use infra_common::SystemClock;
use tokio::net::TcpListener;

/// The cache's memory budget.
const CACHE_BYTES: u64 = 256 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let Some(origin_authority) = args.next() else {
        return Err("usage: edgecache_axum ORIGIN_HOST:PORT [LISTEN_ADDR] [PUBLIC_HOST]".into());
    };
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let public_host = args.next().unwrap_or_else(|| listen.clone());
    let purge_token = std::env::var("EDGECACHE_PURGE_TOKEN").ok();

    let origin = origin::HyperOrigin::new(origin::http_client(), origin_authority);
    let cache = service::cache(origin, CACHE_BYTES, SystemClock::new());
    let router = service::Edge::new(cache, &public_host, purge_token.as_deref()).router();
    let listener = TcpListener::bind(&listen).await?;
    println!(
        "caching on http://{} for {public_host}; purge endpoint {}",
        listener.local_addr()?,
        if purge_token.is_some() { "on" } else { "off" }
    );
    axum::serve(listener, router).await?;
    Ok(())
}
