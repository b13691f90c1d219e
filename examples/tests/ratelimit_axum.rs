//! Runs the `ratelimit_axum` example's service on loopback and checks what clients see
//! through a real HTTP client: limits per client IP (behind a proxy, and directly by peer
//! address from distinct loopback addresses), the stricter `/login` policy, the cost of
//! `/search`, the `429` (status, `application/problem+json` body, `Retry-After`, the draft-11
//! fields parsed as structured fields), and that without connection info the keyless
//! requests are limited as one client rather than let through.
//!
//! The limiters run on a `ManualClock` that never moves, so no quota refills during a test.

#[path = "../ratelimit_axum/service.rs"]
mod service;
#[path = "../../crates/ratelimit/tests/support/structured_fields.rs"]
mod structured_fields;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use infra_common::ManualClock;
use reqwest::{Client, Method, StatusCode};
use structured_fields::{Bare, parse_list};
use tokio::net::TcpListener;

/// The longest one request may take before the test fails.
const ROUND_TRIP: Duration = Duration::from_secs(10);

/// How the test serves the router.
enum Serve {
    /// With each connection's peer address in its requests, as `main.rs` serves it.
    WithConnectInfo,
    /// Without it: a server set up without `into_make_service_with_connect_info`.
    Plain,
}

/// Serves the example behind `trusted_proxies` proxies on a free loopback port; its base URL.
async fn serve(trusted_proxies: usize, how: Serve) -> String {
    let app: Router = service::app(ManualClock::new(), trusted_proxies).expect("valid limits");
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    match how {
        Serve::WithConnectInfo => tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        }),
        Serve::Plain => tokio::spawn(async move { axum::serve(listener, app).await }),
    };
    url
}

/// A client whose connections come from `from` (any address of 127.0.0.0/8 is loopback).
fn client(from: Ipv4Addr) -> Client {
    Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(ROUND_TRIP)
        .build()
        .expect("a client")
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    /// The single member of List field `name`: its String name and its Integer parameters.
    fn field(&self, name: &str) -> (String, Vec<(String, i64)>) {
        let lines: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().expect("ASCII"))
            .collect();
        let members = parse_list(&lines).unwrap_or_else(|e| panic!("{name} {lines:?}: {e}"));
        assert_eq!(members.len(), 1, "{name}: {lines:?}");
        let Some(Bare::String(policy)) = members[0].item() else {
            panic!("{name}: {lines:?} names no policy");
        };
        let params = members[0]
            .params
            .iter()
            .map(|(key, value)| match value {
                Bare::Integer(n) => (key.clone(), *n),
                other => panic!("{name}: {key}={other:?}"),
            })
            .collect();
        (policy.clone(), params)
    }

    /// The `r` (what is left) of the `RateLimit` field, checking that it names `policy`.
    fn remaining(&self, policy: &str) -> i64 {
        let (name, params) = self.field("ratelimit");
        assert_eq!(name, policy);
        assert_eq!(params[0].0, "r");
        params[0].1
    }
}

async fn send(client: &Client, method: Method, url: &str, forwarded_for: Option<&str>) -> Reply {
    let mut request = client.request(method, url);
    if let Some(chain) = forwarded_for {
        request = request.header("x-forwarded-for", chain);
    }
    let response = request.send().await.expect("the service answers");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[tokio::test]
async fn behind_a_proxy_each_client_ip_has_its_own_limit() {
    let base = serve(1, Serve::WithConnectInfo).await;
    let proxy = client(LOCAL);
    let home = format!("{base}/");

    // 20 at once per client; the client's own X-Forwarded-For entries are ignored.
    for sent in 1..=20 {
        let forged = format!("10.9.9.{sent}, 198.51.100.1");
        let reply = send(&proxy, Method::GET, &home, Some(&forged)).await;
        assert_eq!(reply.status, StatusCode::OK, "request {sent}");
        assert_eq!(reply.remaining("default"), 20 - sent);
    }
    let refused = send(&proxy, Method::GET, &home, Some("198.51.100.1")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["content-type"], "application/problem+json");
    // One cell every 500 ms: retry in a second, and RateLimit's t is not earlier.
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        refused.field("ratelimit"),
        ("default".into(), vec![("r".into(), 0), ("t".into(), 1)])
    );
    assert_eq!(
        refused.field("ratelimit-policy"),
        ("default".into(), vec![("q".into(), 20), ("w".into(), 10)])
    );
    let problem: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["retry_after"], 1);
    assert_eq!(problem["violated-policies"], serde_json::json!(["default"]));
    assert!(
        !refused.body.contains("198.51.100"),
        "no request data echoed"
    );

    // Another client behind the same proxy is not affected.
    let other = send(&proxy, Method::GET, &home, Some("198.51.100.2")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.remaining("default"), 19);
    // Nor is the first client's /login, a policy of its own.
    let login = format!("{base}/login");
    for left in (0..5).rev() {
        let reply = send(&proxy, Method::POST, &login, Some("198.51.100.1")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.remaining("login"), left);
    }
    let refused = send(&proxy, Method::POST, &login, Some("198.51.100.1")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["retry-after"], "12");
    let problem: serde_json::Value = serde_json::from_str(&refused.body).expect("JSON");
    assert_eq!(problem["violated-policies"], serde_json::json!(["login"]));

    // A request that did not come through the proxy has no X-Forwarded-For entry: it is
    // limited with every other such request, not let through.
    let direct = send(&proxy, Method::GET, &home, None).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(direct.remaining("default"), 19);
}

#[tokio::test]
async fn search_costs_five_of_the_default_quota() {
    let base = serve(1, Serve::WithConnectInfo).await;
    let proxy = client(LOCAL);
    let search = format!("{base}/search");
    for left in [15, 10, 5, 0] {
        let reply = send(&proxy, Method::GET, &search, Some("203.0.113.4")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.remaining("default"), left);
    }
    let refused = send(&proxy, Method::GET, &search, Some("203.0.113.4")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // Five cells are 2.5 s away.
    assert_eq!(refused.headers["retry-after"], "3");
}

#[tokio::test]
async fn served_directly_each_peer_address_has_its_own_limit() {
    let base = serve(0, Serve::WithConnectInfo).await;
    let home = format!("{base}/");
    let (first, second) = (
        client(Ipv4Addr::new(127, 0, 0, 2)),
        client(Ipv4Addr::new(127, 0, 0, 3)),
    );
    for _ in 0..20 {
        assert_eq!(
            send(&first, Method::GET, &home, None).await.status,
            StatusCode::OK
        );
    }
    // A forged X-Forwarded-For changes nothing when no proxy is trusted.
    let refused = send(&first, Method::GET, &home, Some("192.0.2.1")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let other = send(&second, Method::GET, &home, None).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.remaining("default"), 19);
}

#[tokio::test]
async fn without_connect_info_keyless_requests_are_limited_not_passed() {
    let base = serve(0, Serve::Plain).await;
    let home = format!("{base}/");
    // Two different clients, but the server cannot tell them apart: one shared limit.
    let (first, second) = (
        client(Ipv4Addr::new(127, 0, 0, 2)),
        client(Ipv4Addr::new(127, 0, 0, 3)),
    );
    for sent in 1..=20 {
        let from = if sent % 2 == 0 { &first } else { &second };
        let reply = send(from, Method::GET, &home, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.remaining("default"), 20 - sent);
    }
    let refused = send(&first, Method::GET, &home, None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["retry-after"], "1");
}
