//! The request handling of the `w3c_server` example, kept apart from argument parsing so the
//! protocol test (`tests/w3c_protocol.rs`) can serve it on a loopback port of its own.
//!
//! `POST /test` extracts the context from the request's `traceparent`/`tracestate`, then for
//! each `{"url": ..., "arguments": ...}` of the JSON array body POSTs `arguments` to `url` with
//! the propagated headers (same trace id, a new parent id per call, the trace state carried
//! on), and answers 200 only after those calls complete.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use infra_trace_ctx::{
    AlwaysOn, Context, NoopExporter, ParentBased, Propagator, SpanKind, TraceContextPropagator,
    Tracer,
};
use tokio::net::TcpListener;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Answers the harness protocol on every connection `listener` accepts, until accepting fails.
pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    // A participant that follows its caller's sampled flag and records every new trace: the
    // harness then sees the sampled and random flags of a fresh trace set.
    let tracer = Tracer::builder()
        .service("w3c-test-server")
        .sampler(ParentBased::new(AlwaysOn))
        .exporter(NoopExporter)
        .build();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    loop {
        let (stream, _) = listener.accept().await?;
        let (tracer, client) = (tracer.clone(), client.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |request| handle(request, tracer.clone(), client.clone()));
            // A client that hangs up mid-request is not the server's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn handle(
    request: Request<Incoming>,
    tracer: Tracer,
    client: HttpClient,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/test" {
        return Ok(respond(StatusCode::NOT_FOUND, "POST /test only\n"));
    }
    // An invalid or missing traceparent yields no parent: the server span restarts the trace
    // (new trace id, random flag set, trace state dropped), as the spec requires.
    let remote = TraceContextPropagator.extract(request.headers());
    let mut builder = tracer.span("POST /test").kind(SpanKind::Server);
    if let Some(parent) = remote.span() {
        builder = builder.parent(parent);
    }
    let mut server = builder.start();

    let Ok(body) = request.into_body().collect().await else {
        return Ok(respond(StatusCode::BAD_REQUEST, "unreadable body\n"));
    };
    let Ok(serde_json::Value::Array(cases)) = serde_json::from_slice(&body.to_bytes()) else {
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            "the body is a JSON array\n",
        ));
    };
    for case in cases {
        let (Some(url), Some(arguments)) = (
            case.get("url").and_then(|u| u.as_str()),
            case.get("arguments"),
        ) else {
            continue;
        };
        // One client span per call: the callee sees a new parent id each time.
        let mut call = tracer
            .span("POST")
            .kind(SpanKind::Client)
            .parent(server.context())
            .start();
        let Ok(payload) = serde_json::to_vec(arguments) else {
            continue;
        };
        let Ok(mut outgoing) = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
        else {
            continue;
        };
        let cx = Context::new().with_span(call.context().clone());
        TraceContextPropagator.inject(&cx, outgoing.headers_mut());
        // The harness only checks what it received; a failed call must not fail the test run.
        if let Ok(response) = client.request(outgoing).await {
            let _ = response.into_body().collect().await;
        }
        call.end();
    }
    server.end();
    Ok(respond(StatusCode::OK, "ok\n"))
}
