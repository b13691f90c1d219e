//! An `HttpCache` in front of a real HTTP origin, both over hyper on loopback.
//!
//! It starts an origin server (which counts the requests it answers), a cache server in front
//! of it whose `Origin` is a hyper client, then sends requests through the cache and prints
//! what each was: a miss, a hit, a revalidation, and how many requests reached the origin.
//! `PURGE /path` on the cache server purges a URL; `PURGE` with an `x-purge-tag` header purges
//! a surrogate key.
//!
//! ```text
//! cargo run -p examples --example edgecache_origin            # the demo, then exit
//! cargo run -p examples --example edgecache_origin -- --serve # keep serving on :8080
//! ```

#[path = "edgecache_axum/origin.rs"]
mod origin;

use std::convert::Infallible;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_edgecache::http::{CacheStatus, HttpCache, PurgeMode};
use origin::{HttpClient, HyperOrigin, http_client};
use tokio::net::TcpListener;

/// The origin server: `/item/N` is cacheable for 5 s, revalidatable by ETag, tagged.
async fn origin_server(listener: TcpListener, served: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let path = request.uri().path().to_owned();
                    let etag = format!("\"{}\"", path.len());
                    let not_modified = request
                        .headers()
                        .get("if-none-match")
                        .is_some_and(|value| value.as_bytes() == etag.as_bytes());
                    let builder = Response::builder()
                        .header(
                            "cache-control",
                            "max-age=5, stale-while-revalidate=30, stale-if-error=300",
                        )
                        .header("etag", etag.as_str())
                        .header("surrogate-key", "items");
                    let response = if not_modified {
                        builder
                            .status(StatusCode::NOT_MODIFIED)
                            .body(Full::new(Bytes::new()))
                    } else {
                        builder.body(Full::new(Bytes::from(format!(
                            "{path} (origin request {count})\n"
                        ))))
                    };
                    Ok::<_, Infallible>(response.unwrap_or_default())
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The cache server: answers through the cache, and purges on `PURGE`.
async fn cache_server(listener: TcpListener, cache: HttpCache<HyperOrigin>, authority: String) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (cache, authority) = (cache.clone(), authority.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (cache, authority) = (cache.clone(), authority.clone());
                async move { Ok::<_, Infallible>(handle(&cache, &authority, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    cache: &HttpCache<HyperOrigin>,
    authority: &str,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if parts.method.as_str() == "PURGE" {
        if let Some(tag) = parts
            .headers
            .get("x-purge-tag")
            .and_then(|v| v.to_str().ok())
        {
            cache.purge_tag(tag, PurgeMode::Soft);
        } else if let Ok(uri) = format!("http://{authority}{}", parts.uri.path()).parse()
            && let Err(refused) = cache.purge_url(&uri, PurgeMode::Hard)
        {
            return text(StatusCode::BAD_REQUEST, &format!("{refused}\n"));
        }
        return Response::new(Full::new(Bytes::from_static(b"purged\n")));
    }
    let Ok(body) = body.collect().await else {
        return text(StatusCode::BAD_REQUEST, "unreadable body\n");
    };
    match cache
        .serve(Request::from_parts(parts, body.to_bytes()))
        .await
    {
        Ok(response) => {
            let status = response.extensions().get::<CacheStatus>().copied();
            let (mut parts, body) = response.into_parts();
            if let Some(status) = status
                && let Ok(value) = format!("{status:?}").parse()
            {
                parts.headers.insert("x-cache", value);
            }
            Response::from_parts(parts, Full::new(body))
        }
        Err(error) => text(StatusCode::BAD_GATEWAY, &format!("{error}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

async fn get(
    client: &HttpClient,
    url: &str,
    method: Method,
) -> Result<(String, String), Box<dyn Error>> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))?;
    let response = client.request(request).await?;
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((cache, String::from_utf8_lossy(&body).trim_end().to_owned()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let serve = std::env::args().any(|arg| arg == "--serve");
    let origin_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let origin_address = origin_listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(origin_server(origin_listener, Arc::clone(&served)));

    let client = http_client();
    let origin = HyperOrigin::new(client.clone(), origin_address.to_string());
    let cache = HttpCache::builder(origin, 64 << 20).build();
    let port = if serve { 8080 } else { 0 };
    let cache_listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let cache_address = cache_listener.local_addr()?;
    tokio::spawn(cache_server(
        cache_listener,
        cache.clone(),
        cache_address.to_string(),
    ));
    println!("origin on http://{origin_address}, cache on http://{cache_address}");
    if serve {
        std::future::pending::<()>().await;
    }

    let url = format!("http://{cache_address}/item/1");
    for step in ["first request", "second request", "third request"] {
        let (status, body) = get(&client, &url, Method::GET).await?;
        println!("{step:>15}: {status:<11} {body}");
    }
    get(
        &client,
        &format!("http://{cache_address}/item/1"),
        Method::from_bytes(b"PURGE")?,
    )
    .await?;
    let (status, body) = get(&client, &url, Method::GET).await?;
    println!("{:>15}: {status:<11} {body}", "after a purge");
    println!(
        "origin answered {} of 4 requests; cache stats: {:?}",
        served.load(Ordering::SeqCst),
        cache.stats()
    );
    Ok(())
}
