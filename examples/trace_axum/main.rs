//! Two axum services in one trace: `checkout` calls `pricing` through reqwest, and every hop
//! carries the caller's trace id.
//!
//! ```text
//! cargo run -p examples --example trace_axum -- --port 3000
//! curl -i -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     http://127.0.0.1:3000/checkout/7
//! ```
//!
//! Spans (both services' server spans, the client span between them) and log lines are
//! written to standard output as JSON lines, all with the trace id of the `traceparent`
//! above. `service.rs` builds the routers and explains the order of the layers.

mod service;

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use infra_trace_ctx::{JsonLinesExporter, TraceLogLayer, Tracer};
use tokio::net::TcpListener;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};

fn port_from_args() -> Result<u16, Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mut port = 3000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?} (usage: --port N)").into()),
        }
    }
    Ok(port)
}

/// A tracer for `service` whose spans go to standard output as JSON lines. Without an
/// exporter, recorded spans would be dropped when they end.
fn tracer(service: &'static str) -> Tracer {
    Tracer::builder()
        .service(service)
        .exporter(JsonLinesExporter::new(std::io::stdout()))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port = port_from_args()?;
    // Log events at INFO and above, each stamped with the current trace and span ids.
    let logs = TraceLogLayer::new(std::io::stdout).with_filter(LevelFilter::INFO);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(logs))?;

    // pricing on a free loopback port, checkout on the one asked for.
    let pricing = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let pricing_url = format!("http://{}", pricing.local_addr()?);
    tokio::spawn(async move { axum::serve(pricing, service::pricing(tracer("pricing"))).await });
    let checkout = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("checkout on http://127.0.0.1:{port}/checkout/{{cart}}, pricing on {pricing_url}");
    axum::serve(checkout, service::checkout(tracer("checkout"), pricing_url)).await?;
    Ok(())
}
