//! A server that speaks the W3C trace-context test-harness protocol, for running the official
//! conformance suite (w3c/trace-context `test/test.py`, `SPEC_LEVEL=2`) against this crate.
//!
//! ```text
//! cargo run --release -p examples --example w3c_server -- --port 7777
//! # in a checkout of w3c/trace-context/test:
//! SPEC_LEVEL=2 python3 test.py http://127.0.0.1:7777/test
//! ```
//!
//! The request handling lives in `service.rs`; `tests/w3c_protocol.rs` drives it through the
//! same protocol with a table of cases taken from the spec's rules.

mod service;

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

fn port_from_args() -> Result<u16, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut port = 7777;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?} (usage: --port N)").into()),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port = port_from_args()?;
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("w3c trace-context test server on http://127.0.0.1:{port}/test");
    service::serve(listener).await?;
    Ok(())
}
