//! infra-edgecache's HTTP layer on its hit path: a fresh stored GET response (a dozen fields,
//! a 1 KiB body, `max-age=3600`) served by `HttpCache::serve`, with the `Cache-Status` field it
//! writes by default (`cache_status`) and without it (`without_cache_status`), and for a
//! request carrying the fields a browser sends (`cache_status+client fields`). The response has
//! been stored for a minute (manual clock), so it is served with `Age: 60`.
//!
//! A fresh hit never awaits: its future is polled once, outside any runtime, so no row pays for
//! a scheduler. Each iteration builds its request and drops the response, the same in every row.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_edgecache::http::{CacheStatus, HttpCache, HttpCacheBuilder, Origin, OriginError};

const URL: &str = "http://static.example.com/assets/app.css";

/// The origin: the same response every time, counting its fetches so the rows can show they
/// were hits.
#[derive(Default)]
struct Asset {
    fetches: AtomicUsize,
}

impl Origin for Asset {
    async fn fetch(&self, _: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::builder();
        // A CDN-fronted static asset's fields: twelve, with the 1 KiB body's length. The date
        // is the manual clock's starting wall time, so the response is received at age zero.
        for (name, value) in [
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("server", "nginx/1.24.0"),
            ("content-type", "text/css; charset=utf-8"),
            ("content-length", "1024"),
            ("last-modified", "Fri, 29 Dec 2023 09:30:00 GMT"),
            ("etag", "\"5f1a-65919c58-400\""),
            ("cache-control", "max-age=3600"),
            ("vary", "Accept-Encoding"),
            ("accept-ranges", "bytes"),
            ("x-content-type-options", "nosniff"),
            ("access-control-allow-origin", "*"),
            ("strict-transport-security", "max-age=31536000"),
        ] {
            response = response.header(name, value);
        }
        response
            .body(Bytes::from(vec![b'.'; 1024]))
            .map_err(OriginError::new)
    }
}

/// The fields a browser's request for a stylesheet carries.
fn client_fields() -> HeaderMap {
    let mut fields = HeaderMap::new();
    for (name, value) in [
        ("accept", "text/css,*/*;q=0.1"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
    ] {
        fields.insert(name, HeaderValue::from_static(value));
    }
    fields
}

fn request(uri: &Uri, fields: &HeaderMap) -> Request<Bytes> {
    let mut request = Request::new(Bytes::new());
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = fields.clone();
    request
}

/// One served hit: the future is ready at its first poll.
#[inline(never)]
fn serve_hit(cache: &HttpCache<Asset>, request: Request<Bytes>) -> Response<Bytes> {
    let mut served = pin!(cache.serve(request));
    match served
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(response) => response.expect("a stored response"),
        Poll::Pending => panic!("a fresh hit waited"),
    }
}

/// A row's cache configuration.
type Configure = fn(HttpCacheBuilder<Asset>) -> HttpCacheBuilder<Asset>;

/// A cache configured by `configure` holding the response for `fields`' variant, fetched once
/// through a runtime (a miss spawns its fetch).
fn primed_cache(configure: Configure, uri: &Uri, fields: &HeaderMap) -> HttpCache<Asset> {
    let clock = ManualClock::new();
    let builder = HttpCache::builder(Asset::default(), 64 << 20).clock(clock.clone());
    let cache = configure(builder).build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let first = runtime
        .block_on(cache.serve(request(uri, fields)))
        .expect("fetched");
    assert_eq!(
        first.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    // A hit is usually of a response stored a while ago, which is served with its `Age`.
    clock.advance(Duration::from_secs(60));
    let second = serve_hit(&cache, request(uri, fields));
    assert_eq!(
        second.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(second.headers()["age"], "60");
    cache
}

fn http_hit(c: &mut Criterion) {
    let uri: Uri = URL.parse().expect("a valid URL");
    let no_fields = HeaderMap::new();
    let browser = client_fields();
    let rows: [(&str, Configure, &HeaderMap); 3] = [
        ("cache_status", |builder| builder, &no_fields),
        (
            "without_cache_status",
            HttpCacheBuilder::without_cache_status,
            &no_fields,
        ),
        ("cache_status+client fields", |builder| builder, &browser),
    ];
    let mut group = c.benchmark_group("edgecache/http_hit");
    for (name, configure, fields) in rows {
        let cache = primed_cache(configure, &uri, fields);
        let served = serve_hit(&cache, request(&uri, fields));
        let expected = (name != "without_cache_status").then_some("edgecache; hit; ttl=3540");
        assert_eq!(
            served
                .headers()
                .get("cache-status")
                .map(|value| value.to_str().expect("ASCII")),
            expected,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(serve_hit(&cache, request(&uri, black_box(fields)))));
        });
        // Every served response came from storage.
        assert_eq!(cache.origin().fetches.load(Ordering::Relaxed), 1, "{name}");
    }
    group.finish();
}

criterion_group!(benches, http_hit);
criterion_main!(benches);
