//! The reqwest middleware against a loopback HTTP server that echoes the headers it received:
//! what reaches the server, and the client spans recorded.
#![cfg(all(feature = "reqwest", not(infra_loom)))]

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use infra_trace_ctx::{
    B3Propagator, FutureExt, MemoryExporter, SpanData, SpanKind, Status, TraceContextPropagator,
    TraceMiddleware, TraceParent, Tracer, Value,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::net::TcpListener;

/// Serves on a free loopback port: every request is answered with its headers, one
/// `name: value` line each, and the status named by its path (`/status/503`), else 200.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|request: hyper::Request<_>| async move {
                let status = request
                    .uri()
                    .path()
                    .strip_prefix("/status/")
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(200);
                let mut body = String::new();
                for (name, value) in request.headers() {
                    body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                }
                let response = hyper::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid response");
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// The value of header `name` in an echoed body.
fn echoed<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

fn client(
    middleware: TraceMiddleware<impl infra_trace_ctx::Propagator + 'static>,
) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

fn text<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    match span.attribute(key)? {
        Value::Str(text) => Some(text),
        _ => None,
    }
}

#[tokio::test]
async fn requests_carry_the_client_span_and_record_the_http_conventions() {
    let addr = echo_server().await;
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let client = client(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer.clone()));
    let root = tracer.span("handler").start();
    let root_context = root.context().clone();
    let cx = infra_trace_ctx::Context::new().with_span(root_context.clone());

    let (ok, failed) = async {
        let ok = client
            .get(format!("http://{addr}/items?token=secret&page=2"))
            .send()
            .await
            .expect("the server answers");
        let ok = ok.text().await.expect("a body");
        let failed = client
            .post(format!("http://{addr}/status/503"))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(failed.status(), 503);
        (ok, failed.text().await.expect("a body"))
    }
    .with_context(cx)
    .await;

    let spans = exporter.spans();
    assert_eq!(spans.len(), 2, "one client span per request");
    let (get, post) = (&spans[0], &spans[1]);
    for (span, body) in [(get, &ok), (post, &failed)] {
        let sent = TraceParent::parse(echoed(body, "traceparent").expect("injected")).unwrap();
        assert_eq!(sent.trace_id, root_context.trace_id());
        assert_eq!(
            sent.parent_id,
            span.context.span_id(),
            "the client span is the parent"
        );
        assert_eq!(span.parent_span_id, Some(root_context.span_id()));
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(text(span, "server.address"), Some("127.0.0.1"));
        assert_eq!(
            span.attribute("server.port"),
            Some(&Value::I64(i64::from(addr.port())))
        );
    }
    assert_eq!(get.name, "GET");
    assert_eq!(text(get, "http.request.method"), Some("GET"));
    assert_eq!(
        text(get, "url.full"),
        Some(format!("http://{addr}/items?token=REDACTED&page=REDACTED").as_str())
    );
    assert_eq!(
        get.attribute("http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(get.status, Status::Unset);
    assert_eq!(get.attribute("error.type"), None);
    assert_eq!(post.name, "POST");
    assert_eq!(
        post.attribute("http.response.status_code"),
        Some(&Value::I64(503))
    );
    assert_eq!(text(post, "error.type"), Some("503"));
    assert_eq!(post.status, Status::Error("server error".into()));
}

#[tokio::test]
async fn without_a_tracer_the_current_span_is_the_parent_in_the_configured_format() {
    let addr = echo_server().await;
    let client = client(TraceMiddleware::new(B3Propagator::single_header()));
    let tracer = Tracer::builder().build();
    let root = tracer.span("handler").start();
    let cx = infra_trace_ctx::Context::new().with_span(root.context().clone());
    let body = async {
        let response = client.get(format!("http://{addr}/")).send().await;
        response.expect("the server answers").text().await
    }
    .with_context(cx)
    .await
    .expect("a body");
    let b3 = echoed(&body, "b3").expect("a b3 header");
    assert_eq!(
        b3,
        format!(
            "{}-{}-1",
            root.context().trace_id(),
            root.context().span_id()
        )
    );
    assert_eq!(
        echoed(&body, "traceparent"),
        None,
        "only the configured format"
    );

    // No current span: nothing to carry, and no header is invented.
    let body = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("the server answers")
        .text()
        .await
        .expect("a body");
    assert_eq!(echoed(&body, "b3"), None);
}

#[tokio::test]
async fn failed_requests_end_the_span_with_an_error_type() {
    // One listener closes every connection at once, the other never answers.
    let closing = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let closing_addr = closing.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = closing.accept().await {
            drop(stream);
        }
    });
    let silent = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let silent_addr = silent.local_addr().expect("bound address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });

    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let client = client(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer));
    let closed = client.get(format!("http://{closing_addr}/")).send().await;
    assert!(closed.is_err());
    // The timeout is what the test exercises, not a wait for something to happen.
    let timed_out = client
        .get(format!("http://{silent_addr}/"))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(timed_out.is_err());

    let spans = exporter.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(text(&spans[0], "error.type"), Some("_OTHER"));
    assert_eq!(text(&spans[1], "error.type"), Some("timeout"));
    for span in &spans {
        assert_eq!(span.status, Status::Error("the request failed".into()));
        assert_eq!(span.attribute("http.response.status_code"), None);
    }
}

/// Answers every request itself, so that a URL on a default port needs no server there.
struct AnswerLocally;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for AnswerLocally {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new("")))
    }
}

/// `server.port` is required on a client span: a URL without a port has its scheme's.
#[tokio::test]
async fn a_url_without_a_port_records_the_schemes_default() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer))
        .with(AnswerLocally)
        .build();
    for url in ["https://shop.example/cart", "http://shop.example/cart"] {
        client.get(url).send().await.expect("answered locally");
    }
    let spans = exporter.spans();
    assert_eq!(
        text(&spans[0], "url.full"),
        Some("https://shop.example/cart")
    );
    assert_eq!(spans[0].attribute("server.port"), Some(&Value::I64(443)));
    assert_eq!(spans[1].attribute("server.port"), Some(&Value::I64(80)));
}

/// Never answers: the request stays pending until its future is dropped.
struct NeverAnswer;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for NeverAnswer {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        std::future::pending().await
    }
}

/// A timeout around the call (`tokio::time::timeout`, a `select!`) drops the request future:
/// the call got no response, and its span must not read as a success.
#[tokio::test]
async fn a_request_dropped_before_its_response_ends_its_span_as_failed() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer))
        .with(NeverAnswer)
        .build();
    let mut call = Box::pin(client.get("http://shop.example/cart").send());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(call.as_mut().poll(&mut cx).is_pending());
    drop(call);
    let spans = exporter.spans();
    assert_eq!(spans.len(), 1, "the span ends when its request is dropped");
    assert_eq!(
        spans[0].status,
        Status::Error("the request was cancelled before its response".into())
    );
    assert_eq!(text(&spans[0], "error.type"), Some("_OTHER"));
    assert_eq!(spans[0].attribute("http.response.status_code"), None);
}
