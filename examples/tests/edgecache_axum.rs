//! Runs the `edgecache_axum` example's service on loopback in front of a loopback origin and
//! checks what a client sees: a miss then a hit (with `Age`), one cache entry whatever `Host`
//! the client sends, a purge endpoint that refuses callers without the token, and a purge that
//! sends the next request to the origin.

#[path = "../edgecache_axum/origin.rs"]
mod origin;
#[path = "../edgecache_axum/service.rs"]
mod service;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret-purge-token";
/// The longest one request may take before the test fails.
const ROUND_TRIP: Duration = Duration::from_secs(10);

/// Serves `router` on a free loopback port; its address.
async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// An origin whose `/items/{n}` is cacheable for a minute, tagged `items`, and whose body
/// counts the requests it has answered.
async fn origin(answered: Arc<AtomicU64>) -> SocketAddr {
    let router = Router::new().route(
        "/items/{n}",
        get(move || {
            let count = answered.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    [("cache-control", "max-age=60"), ("surrogate-key", "items")],
                    format!("answer {count}"),
                )
            }
        }),
    );
    serve(router).await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(
    client: &origin::HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send_body(client, method, url, headers, Bytes::new()).await
}

async fn send_body(
    client: &origin::HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).unwrap();
    let response = tokio::time::timeout(ROUND_TRIP, client.request(request))
        .await
        .expect("the edge answers in time")
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_hits_and_purges_by_tag_only_for_the_token_holder() {
    let answered = Arc::new(AtomicU64::new(0));
    let origin_address = origin(Arc::clone(&answered)).await;
    let client = origin::http_client();
    let clock = ManualClock::new();
    let backend = origin::HyperOrigin::new(client.clone(), origin_address.to_string());
    let cache = service::cache(backend, 16 << 20, clock.clone());
    let edge = serve(service::Edge::new(cache, "shop.example", Some(TOKEN)).router()).await;
    let page = format!("http://{edge}/items/1");
    let purge = format!("http://{edge}/_cache/purge/tag/items");

    let first = send(&client, Method::GET, &page, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header(service::X_CACHE), Some("MISS"));
    assert_eq!(first.body, "answer 1");
    assert_eq!(first.header("age"), None, "fresh from the origin");

    clock.advance(Duration::from_secs(3));
    let second = send(&client, Method::GET, &page, &[]).await;
    assert_eq!(second.header(service::X_CACHE), Some("HIT"));
    assert_eq!(second.header("age"), Some("3"));
    assert_eq!(second.body, "answer 1");
    // The client's Host does not make another cache entry.
    let other_host = send(&client, Method::GET, &page, &[("host", "attacker.example")]).await;
    assert_eq!(other_host.header(service::X_CACHE), Some("HIT"));
    assert_eq!(answered.load(Ordering::SeqCst), 1);

    // The purge endpoint: no token, a wrong one, a wrong scheme.
    let basic = format!("Basic {TOKEN}");
    let refusals: [&[(&str, &str)]; 3] = [
        &[],
        &[("authorization", "Bearer not-the-token")],
        &[("authorization", &basic)],
    ];
    for headers in refusals {
        let refused = send(&client, Method::POST, &purge, headers).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    let still = send(&client, Method::GET, &page, &[]).await;
    assert_eq!(
        still.header(service::X_CACHE),
        Some("HIT"),
        "nothing was purged"
    );

    let bearer = format!("Bearer {TOKEN}");
    let purged = send(&client, Method::POST, &purge, &[("authorization", &bearer)]).await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT);
    let after = send(&client, Method::GET, &page, &[]).await;
    assert_eq!(after.header(service::X_CACHE), Some("MISS"));
    assert_eq!(after.body, "answer 2");
    assert_eq!(answered.load(Ordering::SeqCst), 2);
    let again = send(&client, Method::GET, &page, &[]).await;
    assert_eq!(again.header(service::X_CACHE), Some("HIT"));
    assert_eq!(again.body, "answer 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_purge_endpoint_is_off_a_dead_origin_is_a_502_and_bodies_are_bounded() {
    // An origin address nothing listens on: bound, then closed.
    let closed = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = origin::http_client();
    let backend = origin::HyperOrigin::new(client.clone(), closed.to_string());
    let cache = service::cache(backend, 16 << 20, ManualClock::new());
    let edge = serve(service::Edge::new(cache, "shop.example", None).router()).await;

    let purge = send(
        &client,
        Method::POST,
        &format!("http://{edge}/_cache/purge/tag/items"),
        &[("authorization", "Bearer ")],
    )
    .await;
    assert_eq!(purge.status, StatusCode::NOT_FOUND);
    let page = send(&client, Method::GET, &format!("http://{edge}/items/1"), &[]).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert_eq!(page.body, "origin unavailable\n");

    let oversized = Bytes::from(vec![b'x'; service::MAX_REQUEST_BODY + 1]);
    let refused = send_body(
        &client,
        Method::POST,
        &format!("http://{edge}/orders"),
        &[],
        oversized,
    )
    .await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
}
