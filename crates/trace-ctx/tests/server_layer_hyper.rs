//! The server layer behind hyper's HTTP/1 server on loopback: what a real server does with the
//! response body (reads it to its end, drops it unread after `HEAD`, `204` and `304`, drops it
//! mid-stream when the client goes away) and the server span each case leaves.
#![cfg(all(feature = "tower", not(infra_loom)))]

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http_body::{Body, Frame};
use infra_trace_ctx::{
    MemoryExporter, ServerLayer, SpanData, Status, TraceContextPropagator, Tracer,
};
use tokio::net::TcpListener;
use tower::{Layer, Service};

/// A bound on every step, so a broken server fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(30);

/// A body of `frames` data frames of `CHUNK`, or endless with `None`. Unless `reports_end`
/// is false (as a body made from a stream), it reports its end once the last frame is taken,
/// as most bodies do, so a server stops there and drops it without polling for the `None`
/// that would follow.
struct Chunks {
    frames: Option<u32>,
    reports_end: bool,
}

const CHUNK: &[u8] = &[b'x'; 16 * 1024];

impl Body for Chunks {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        match &mut self.frames {
            Some(0) => Poll::Ready(None),
            Some(left) => {
                *left -= 1;
                Poll::Ready(Some(Ok(Frame::data(CHUNK))))
            }
            None => Poll::Ready(Some(Ok(Frame::data(CHUNK)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reports_end && self.frames == Some(0)
    }
}

/// Answers every request with `status` and a body of `frames` frames, which reports its end
/// unless `declared` is set: then the response declares the body's length in
/// `Content-Length` instead.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    frames: Option<u32>,
    declared: bool,
}

impl Service<http::Request<()>> for Answer {
    type Response = http::Response<Chunks>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<Chunks>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let mut response = http::Response::builder().status(self.status);
        if self.declared
            && let Some(frames) = self.frames
        {
            let length = u64::from(frames) * CHUNK.len() as u64;
            response = response.header(http::header::CONTENT_LENGTH, length);
        }
        let body = Chunks {
            frames: self.frames,
            reports_end: !self.declared,
        };
        let response = response.body(body).expect("valid response");
        std::future::ready(Ok(response))
    }
}

/// How the client treats the response.
#[derive(Clone, Copy)]
enum Client {
    /// Reads it to the end of the connection.
    ReadsAll,
    /// Reads its first bytes, then closes the connection.
    LeavesEarly,
}

/// Serves one connection through the server layer, the response to every request having
/// `status` and a body of `frames` frames (`None`: endless); the client sends `request` and
/// reads as `client` says. The spans recorded once the connection is done.
async fn serve_one(
    status: u16,
    frames: Option<u32>,
    request: &'static str,
    client: Client,
) -> Vec<SpanData> {
    serve_answer(
        Answer {
            status,
            frames,
            declared: false,
        },
        request,
        client,
    )
    .await
}

/// [`serve_one`], answering with `answer`.
async fn serve_answer(answer: Answer, request: &'static str, client: Client) -> Vec<SpanData> {
    let status = answer.status;
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder().exporter(exporter.clone()).build();
    let traced = ServerLayer::new(tracer, TraceContextPropagator).layer(answer);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let peer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(BOUND)).expect("read timeout");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut received = Vec::new();
        match client {
            Client::ReadsAll => {
                stream
                    .read_to_end(&mut received)
                    .expect("read the response");
            }
            Client::LeavesEarly => {
                let mut start = [0; 64];
                stream
                    .read_exact(&mut start)
                    .expect("read the response's start");
                received.extend_from_slice(&start);
                // Closing with unread data resets the connection: the server's next write fails.
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    let (stream, _) = tokio::time::timeout(BOUND, listener.accept())
        .await
        .expect("the client connects in time")
        .expect("accept");
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            traced.clone().call(request.map(|_| ()))
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    // A reset connection ends in an error; either way, the connection and its body are gone.
    let _ = tokio::time::timeout(BOUND, connection)
        .await
        .expect("the connection ends in time");
    let received = peer.await.expect("the client ran");
    assert!(
        received.starts_with(&format!("HTTP/1.1 {status} ")),
        "{received:.80}"
    );
    exporter.spans()
}

fn only(spans: Vec<SpanData>) -> SpanData {
    assert_eq!(spans.len(), 1, "one request, one span, ended once");
    spans.into_iter().next().expect("one span")
}

const GET: &str = "GET /cart HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n";
const HEAD: &str = "HEAD /cart HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_body_hyper_sends_in_full_leaves_the_span_unfailed() {
    let span = only(serve_one(200, Some(3), GET, Client::ReadsAll).await);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
}

/// hyper stops at the length `Content-Length` declares and drops the body without polling it
/// further: a body that does not report its end (one made from a stream) was sent in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_body_sent_to_its_declared_length_leaves_the_span_unfailed() {
    let answer = Answer {
        status: 200,
        frames: Some(3),
        declared: true,
    };
    let span = only(serve_answer(answer, GET, Client::ReadsAll).await);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn bodies_hyper_drops_unread_on_purpose_leave_the_span_unfailed() {
    for (status, request) in [(200, HEAD), (204, GET), (304, GET)] {
        let span = only(serve_one(status, Some(3), request, Client::ReadsAll).await);
        assert_eq!(span.status, Status::Unset, "{status} {request:.4}");
        assert_eq!(span.attribute("error.type"), None, "{status} {request:.4}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_gone_mid_stream_fails_the_span() {
    let span = only(serve_one(200, None, GET, Client::LeavesEarly).await);
    assert_eq!(
        span.status,
        Status::Error("the response body was dropped before its end".into())
    );
    assert_eq!(
        span.attribute("error.type"),
        Some(&infra_trace_ctx::Value::from("_OTHER"))
    );
}
