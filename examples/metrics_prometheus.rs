//! Every primitive's metrics, served by the Prometheus exporter.
//!
//! Installs the exporter's HTTP listener on 127.0.0.1 (port from the first argument, default
//! 9000), drives a rate limiter, a bounded-load placement and a tracer for a fixed number of
//! rounds, scrapes its own endpoint once over loopback, prints what Prometheus would read, and
//! exits.
//!
//! ```text
//! cargo run --release -p examples --example metrics_prometheus -- 9000
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use infra_common::ManualClock;
use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota, RateLimiter};
use infra_ring_hash::{BoundedLoad, Member, Placement, Ring};
use infra_trace_ctx::{TraceIdRatio, Tracer};
use metrics_exporter_prometheus::PrometheusBuilder;

const DEFAULT_PORT: u16 = 9000;
const ROUNDS: u64 = 1_000;

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|arg| arg.parse::<u16>()) {
        None => DEFAULT_PORT,
        Some(Ok(port)) => port,
        Some(Err(error)) => {
            eprintln!("usage: metrics_prometheus [PORT]  ({error})");
            return ExitCode::FAILURE;
        }
    };
    match run(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
        Ok(scrape) => {
            print!("{scrape}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("metrics_prometheus: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(address: SocketAddr) -> Result<String, Box<dyn std::error::Error>> {
    // The recorder first: every primitive registers its counters when it is built.
    PrometheusBuilder::new()
        .with_http_listener(address)
        .install()?;

    // A manual clock keeps the run short and its output the same every time.
    let clock = ManualClock::new();
    let api = RateLimiter::gcra(Quota::per_second(100)?.with_burst(10)?, clock.clone())?
        .with_metrics_name("api");
    let login = KeyedRateLimiter::<u64, Gcra, _>::with_clock(Quota::per_minute(5)?, clock.clone())?
        .with_metrics_name("login");

    let mut placement = Placement::from_members(
        Ring::new(),
        ["cache-a", "cache-b", "cache-c"].map(Member::new),
    )?
    .with_metrics_name("sessions");
    placement.add("cache-d", 1)?;
    placement.remove(&"cache-a")?;
    let sessions = BoundedLoad::new(placement, 1.25)?;

    let tracer = Tracer::builder()
        .service("checkout")
        .sampler(TraceIdRatio::new(0.25))
        .clock(clock.clone())
        .build();

    let mut leases = Vec::new();
    for round in 0..ROUNDS {
        clock.advance(Duration::from_millis(5));
        // Only the counters matter here, not the decisions themselves.
        let _ = api.check();
        let _ = login.check(&(round % 7))?;
        let _span = tracer.span("handle request").start();
        leases.push(sessions.take(&round)?);
        if leases.len() > 100 {
            drop(leases.swap_remove(0));
        }
    }
    drop(leases);

    Ok(scrape(address)?)
}

/// One `GET /metrics` over loopback; the body of the answer.
fn scrape(address: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("an HTTP answer without a body"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "the endpoint answered {}",
            head.lines().next().unwrap_or_default()
        )));
    }
    Ok(body.to_owned())
}
