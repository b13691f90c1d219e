//! Runs the `trace_axum` example's two services on loopback and checks that one request
//! makes one trace: the caller's trace id reaches `pricing` through `checkout`'s reqwest
//! client, every span has the right parent, and the log lines carry the trace id.

#[path = "../trace_axum/service.rs"]
mod service;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, Mutex};
use infra_trace_ctx::{
    MemoryExporter, SpanData, SpanKind, TraceLogLayer, TraceParent, Tracer, Value,
};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// Serves `router` on a free loopback port; its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// Log lines, shared with the log layer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The exporter's spans once it holds `count`: a server span ends when its response body
/// has been sent, which may be just after the client read it. Bounded by a deadline.
async fn spans(exporter: &MemoryExporter, count: usize) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.spans();
        if spans.len() >= count || Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn find(spans: &[SpanData], kind: SpanKind) -> &SpanData {
    spans
        .iter()
        .find(|span| span.kind == kind)
        .unwrap_or_else(|| panic!("a {kind:?} span in {spans:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_both_services() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(TraceLogLayer::from_writer(lines.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the test's only subscriber");

    let (checkout_spans, pricing_spans) = (MemoryExporter::new(), MemoryExporter::new());
    let tracer = |service: &'static str, exporter: &MemoryExporter| {
        Tracer::builder()
            .service(service)
            .exporter(exporter.clone())
            .build()
    };
    let pricing = serve(service::pricing(tracer("pricing", &pricing_spans))).await;
    let checkout = serve(service::checkout(
        tracer("checkout", &checkout_spans),
        pricing,
    ))
    .await;

    let response = reqwest::Client::new()
        .get(format!("{checkout}/checkout/7"))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .expect("checkout answers");
    assert_eq!(response.status(), 200);
    let traceresponse = response.headers()["traceresponse"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body = response.text().await.expect("a body");
    assert!(body.starts_with("7 costs 42\n"), "{body}");

    let checkout_spans = spans(&checkout_spans, 2).await;
    let pricing_spans = spans(&pricing_spans, 1).await;
    assert_eq!(checkout_spans.len(), 2, "{checkout_spans:?}");
    assert_eq!(pricing_spans.len(), 1, "{pricing_spans:?}");
    let server = find(&checkout_spans, SpanKind::Server);
    let client = find(&checkout_spans, SpanKind::Client);
    let downstream = find(&pricing_spans, SpanKind::Server);

    // One trace id everywhere, each span the child of the one before.
    for span in [server, client, downstream] {
        assert_eq!(span.context.trace_id().to_string(), TRACE, "{span:?}");
    }
    assert_eq!(
        server.parent_span_id.map(|id| id.to_string()).as_deref(),
        Some(CALLER)
    );
    assert_eq!(client.parent_span_id, Some(server.context.span_id()));
    assert_eq!(downstream.parent_span_id, Some(client.context.span_id()));

    // What crossed the wire: pricing received the client span as its parent.
    let received = body
        .lines()
        .find_map(|line| line.strip_prefix("traceparent: "))
        .expect("pricing echoes its traceparent");
    let received = TraceParent::parse(received).expect("a valid traceparent");
    assert_eq!(received.trace_id.to_string(), TRACE);
    assert_eq!(received.parent_id, client.context.span_id());

    // The caller learns checkout's server span from `traceresponse`.
    let answered = TraceParent::parse(&traceresponse).expect("a valid traceresponse");
    assert_eq!(answered.trace_id.to_string(), TRACE);
    assert_eq!(answered.parent_id, server.context.span_id());

    // Route-named spans with the HTTP conventions' attributes.
    assert_eq!(server.name, "GET /checkout/{cart}");
    assert_eq!(
        server.attribute("http.route"),
        Some(&Value::from("/checkout/{cart}"))
    );
    assert_eq!(downstream.name, "GET /price/{cart}");
    assert_eq!(client.name, "GET");
    assert_eq!(
        client.attribute("http.response.status_code"),
        Some(&Value::I64(200))
    );

    // Both handlers' log lines carry the trace id and their server span's id.
    let logs = String::from_utf8(lines.0.lock().clone()).expect("UTF-8");
    for (message, span) in [("checking out", server), ("pricing", downstream)] {
        let line = logs
            .lines()
            .find(|line| line.contains(&format!("\"message\":\"{message}\"")))
            .unwrap_or_else(|| panic!("a {message:?} line in {logs}"));
        assert!(
            line.contains(&format!("\"trace_id\":\"{TRACE}\"")),
            "{line}"
        );
        assert!(
            line.contains(&format!("\"span_id\":\"{}\"", span.context.span_id())),
            "{line}"
        );
    }
}
