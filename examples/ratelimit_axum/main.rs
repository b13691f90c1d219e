//! An axum service limited per client IP address, behind a proxy that appends the client's
//! address to `X-Forwarded-For`.
//!
//! ```text
//! cargo run -p examples --example ratelimit_axum -- --port 3000 --trusted-proxies 1
//! curl -i -H 'x-forwarded-for: 192.0.2.7' http://127.0.0.1:3000/
//! # RateLimit-Policy: "default";q=20;w=10
//! # RateLimit: "default";r=19;t=1
//! for i in 1 2 3 4 5 6; do curl -s -X POST -H 'x-forwarded-for: 192.0.2.7' \
//!     http://127.0.0.1:3000/login -o /dev/null -w '%{http_code}\n'; done
//! # 200 five times, then 429 with an application/problem+json body and Retry-After
//! ```
//!
//! `--trusted-proxies 0` serves clients directly and keys them by the connection's address.
//! `service.rs` states the limits.

mod service;

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use infra_common::SystemClock;
use tokio::net::TcpListener;

fn args() -> Result<(u16, usize), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut trusted_proxies) = (3000, 1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse()?,
            "--trusted-proxies" => trusted_proxies = value()?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (usage: --port N --trusted-proxies N)"
                )
                .into());
            }
        }
    }
    Ok((port, trusted_proxies))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (port, trusted_proxies) = args()?;
    let app = service::app(SystemClock::new(), trusted_proxies)?;
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("limited per client IP on http://127.0.0.1:{port}/ behind {trusted_proxies} proxies");
    // Connection info puts each connection's peer address in its requests: the client's
    // address when no proxy is trusted.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
