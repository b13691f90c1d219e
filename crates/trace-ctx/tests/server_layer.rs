//! The server layer's span when the exchange does not run to its end: a response future
//! dropped before the response (the client went away, or a timeout around the service fired),
//! a response body dropped before its end, and the bodies a server drops unread on purpose
//! (the answer to `HEAD`, `1xx`, `204` and `304`), which are complete as they are.
#![cfg(all(feature = "tower", not(infra_loom)))]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame};
use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_trace_ctx::{
    AlwaysOff, MemoryExporter, ServerLayer, SpanData, Status, TraceContextPropagator, TracedBody,
    TracedServer, Tracer, Value,
};
use tower::{Layer, Service};

/// Answers every request at once with the response its function builds.
#[derive(Clone)]
struct Answer<F>(F);

impl<F, B> Service<http::Request<()>> for Answer<F>
where
    F: Fn(&http::Request<()>) -> http::Response<B>,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<B>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        std::future::ready(Ok((self.0)(&request)))
    }
}

/// Never answers: its response future stays pending until dropped.
struct Silent;

impl Service<http::Request<()>> for Silent {
    type Response = http::Response<Frames>;
    type Error = Infallible;
    type Future = std::future::Pending<Result<http::Response<Frames>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        std::future::pending()
    }
}

/// A body of data frames, one per string; at its end once the last frame is taken.
struct Frames(VecDeque<&'static str>);

impl Frames {
    fn of(frames: &[&'static str]) -> Self {
        Self(frames.iter().copied().collect())
    }
}

impl Body for Frames {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        Poll::Ready(
            self.0
                .pop_front()
                .map(|text| Ok(Frame::data(text.as_bytes()))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A body that never yields a frame and reports its end when told to, without being polled:
/// a stream whose end arrived while nobody was reading.
struct EndedElsewhere(Arc<AtomicBool>);

impl Body for EndedElsewhere {
    type Data = &'static [u8];
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A server layer over `inner`, recording into a memory exporter on a manual clock.
fn traced<S>(
    inner: S,
) -> (
    TracedServer<S, TraceContextPropagator>,
    MemoryExporter,
    ManualClock,
) {
    let exporter = MemoryExporter::new();
    let clock = ManualClock::new();
    let tracer = Tracer::builder()
        .exporter(exporter.clone())
        .clock(clock.clone())
        .build();
    let service = ServerLayer::new(tracer, TraceContextPropagator).layer(inner);
    (service, exporter, clock)
}

fn request(method: http::Method) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri("/cart/7")
        .body(())
        .expect("valid request")
}

/// Calls `service` and polls its response future once; the response, if it was ready.
fn respond<S, B>(service: &mut S, request: http::Request<()>) -> Option<http::Response<B>>
where
    S: Service<http::Request<()>, Response = http::Response<B>, Error = Infallible>,
{
    let mut future = std::pin::pin!(service.call(request));
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(response)) => Some(response),
        Poll::Pending => None,
    }
}

/// What polling a body once gave.
#[derive(Debug, PartialEq)]
enum Next {
    Frame,
    Error,
    End,
    Pending,
}

/// Polls `body` once for its next frame.
fn next_frame<B: Body + Unpin>(body: &mut B) -> Next {
    match Pin::new(body).poll_frame(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(Some(Ok(_))) => Next::Frame,
        Poll::Ready(Some(Err(_))) => Next::Error,
        Poll::Ready(None) => Next::End,
        Poll::Pending => Next::Pending,
    }
}

/// The string value of attribute `key`, if it is one.
fn text<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    match span.attribute(key)? {
        Value::Str(text) => Some(text),
        _ => None,
    }
}

/// The one span exported, asserting there is exactly one.
fn only_span(exporter: &MemoryExporter) -> SpanData {
    let mut spans = exporter.spans();
    assert_eq!(spans.len(), 1, "one request, one span, ended once");
    spans.remove(0)
}

/// The traced body of a GET answered at once with `frames`, with the exporter and the clock.
fn served_body(
    frames: &'static [&'static str],
) -> (TracedBody<Frames>, MemoryExporter, ManualClock) {
    let (mut service, exporter, clock) = traced(Answer(move |_: &http::Request<()>| {
        http::Response::new(Frames::of(frames))
    }));
    let body = respond(&mut service, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    (body, exporter, clock)
}

/// Asserts that `span` ended failed with `description`, as a request cut short does.
fn assert_cut_short(span: &SpanData, description: &str) {
    assert_eq!(span.status, Status::Error(description.to_owned().into()));
    assert_eq!(text(span, "error.type"), Some("_OTHER"));
}

const BODY_DROPPED: &str = "the response body was dropped before its end";

#[test]
fn a_response_future_dropped_before_the_response_ends_the_server_span_as_failed() {
    let (mut service, exporter, clock) = traced(Silent);
    let mut future = Box::pin(service.call(request(http::Method::GET)));
    assert!(
        future
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
            .is_pending()
    );
    clock.advance(Duration::from_millis(30));
    assert!(exporter.spans().is_empty(), "still waiting for the service");
    drop(future);
    let span = only_span(&exporter);
    assert_cut_short(&span, "the request was cancelled before its response");
    assert_eq!(span.attribute("http.response.status_code"), None);
    assert_eq!(
        span.duration(),
        Duration::from_millis(30),
        "ended at the drop"
    );
}

#[test]
fn a_response_body_dropped_mid_stream_ends_the_server_span_as_failed() {
    let (mut body, exporter, clock) = served_body(&["a", "b", "c"]);
    assert_eq!(next_frame(&mut body), Next::Frame);
    clock.advance(Duration::from_millis(12));
    assert!(exporter.spans().is_empty(), "two frames still to send");
    drop(body);
    let span = only_span(&exporter);
    assert_cut_short(&span, BODY_DROPPED);
    assert_eq!(
        span.attribute("http.response.status_code"),
        Some(&Value::I64(200)),
        "the head was sent"
    );
    assert_eq!(
        span.duration(),
        Duration::from_millis(12),
        "ended at the drop"
    );
}

#[test]
fn a_response_body_dropped_before_its_first_frame_ends_the_server_span_as_failed() {
    let (body, exporter, _clock) = served_body(&["cart"]);
    drop(body);
    assert_cut_short(&only_span(&exporter), BODY_DROPPED);
}

#[test]
fn a_response_body_read_to_its_end_is_not_a_failure() {
    let (mut body, exporter, clock) = served_body(&["a", "b"]);
    assert_eq!(next_frame(&mut body), Next::Frame);
    clock.advance(Duration::from_millis(4));
    assert_eq!(next_frame(&mut body), Next::Frame);
    assert_eq!(next_frame(&mut body), Next::End);
    drop(body);
    let span = only_span(&exporter);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
    assert_eq!(
        span.duration(),
        Duration::from_millis(4),
        "ended at the last frame, which left the body at its end"
    );
}

/// A server stops reading a body once it reports its end, and drops it without asking for the
/// `None` that would follow.
#[test]
fn a_response_body_at_its_end_when_dropped_is_not_a_failure() {
    let (mut body, exporter, _clock) = served_body(&["a", "b"]);
    assert_eq!(next_frame(&mut body), Next::Frame);
    assert_eq!(next_frame(&mut body), Next::Frame);
    assert!(body.is_end_stream());
    drop(body);
    assert_eq!(only_span(&exporter).status, Status::Unset);

    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    let (mut service, exporter, _clock) = traced(Answer(move |_: &http::Request<()>| {
        http::Response::new(EndedElsewhere(flag.clone()))
    }));
    let mut body = respond(&mut service, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    assert_eq!(next_frame(&mut body), Next::Pending);
    ended.store(true, Ordering::Release);
    drop(body);
    let span = only_span(&exporter);
    assert_eq!(span.status, Status::Unset, "at its end when dropped");
    assert_eq!(span.attribute("error.type"), None);
}

#[test]
fn the_body_of_a_head_response_dropped_unread_is_not_a_failure() {
    let (mut service, exporter, _clock) = traced(Answer(|_: &http::Request<()>| {
        http::Response::new(Frames::of(&["the length a GET would send"]))
    }));
    let response = respond(&mut service, request(http::Method::HEAD)).expect("answered at once");
    assert!(!response.body().is_end_stream(), "a non-empty body");
    drop(response);
    let span = only_span(&exporter);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
    assert_eq!(text(&span, "http.request.method"), Some("HEAD"));

    // The same body dropped unread after a GET is a failure: only the method differs.
    let response = respond(&mut service, request(http::Method::GET)).expect("answered at once");
    drop(response);
    let spans = exporter.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(text(&spans[1], "error.type"), Some("_OTHER"));
}

#[test]
fn bodies_of_1xx_204_and_304_responses_dropped_unread_are_not_failures() {
    for status in [101, 103, 204, 304] {
        let (mut service, exporter, _clock) = traced(Answer(move |_: &http::Request<()>| {
            http::Response::builder()
                .status(status)
                .body(Frames::of(&["a body the server never sends"]))
                .expect("valid response")
        }));
        let response = respond(&mut service, request(http::Method::GET)).expect("answered at once");
        assert!(!response.body().is_end_stream(), "a non-empty body");
        drop(response);
        let span = only_span(&exporter);
        assert_eq!(span.status, Status::Unset, "{status}");
        assert_eq!(span.attribute("error.type"), None, "{status}");
        assert_eq!(
            span.attribute("http.response.status_code"),
            Some(&Value::I64(status.into())),
            "{status}"
        );
    }
}

/// A 2xx answer to `CONNECT` turns the connection into a tunnel right after its head (RFC 9110
/// §9.3.6): a server drops its body unread (hyper does, over HTTP/1.1 and HTTP/2 alike), and
/// the tunnel is the exchange's success. Any other answer to `CONNECT` sends its body.
#[test]
fn the_body_of_a_2xx_answer_to_connect_dropped_unread_is_not_a_failure() {
    let (mut service, exporter, _clock) = traced(Answer(|request: &http::Request<()>| {
        let status = if request.uri().path() == "/refused" {
            407
        } else {
            200
        };
        http::Response::builder()
            .status(status)
            .body(Frames::of(&["a body the tunnel never carries"]))
            .expect("valid response")
    }));
    let connect = |path: &str| {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(path)
            .body(())
            .expect("valid request")
    };
    let response = respond(&mut service, connect("/tunnel")).expect("answered at once");
    assert!(!response.body().is_end_stream(), "a non-empty body");
    drop(response);
    let span = only_span(&exporter);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
    assert_eq!(text(&span, "http.request.method"), Some("CONNECT"));

    // A refusal's body is sent: dropped unread, it was cut short.
    drop(respond(&mut service, connect("/refused")).expect("answered at once"));
    let spans = exporter.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(text(&spans[1], "error.type"), Some("_OTHER"));
}

/// Trailers are a body's last frame (`http_body::Frame`): a server sends them and drops the
/// body without asking for more, whether or not the body reports its end.
#[test]
fn a_body_dropped_after_its_trailers_is_not_a_failure() {
    struct WithTrailers(u8);

    impl Body for WithTrailers {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
            self.0 += 1;
            Poll::Ready(match self.0 {
                1 => Some(Ok(Frame::data(b"the data".as_slice()))),
                2 => Some(Ok(Frame::trailers(http::HeaderMap::new()))),
                _ => None,
            })
        }
    }

    let (mut service, exporter, _clock) = traced(Answer(|_: &http::Request<()>| {
        http::Response::new(WithTrailers(0))
    }));
    let mut body = respond(&mut service, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    assert_eq!(next_frame(&mut body), Next::Frame);
    assert_eq!(next_frame(&mut body), Next::Frame);
    drop(body);
    let span = only_span(&exporter);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.attribute("error.type"), None);
}

/// A server stops at a body's declared length, `Content-Length` or else an exact size hint
/// (which hyper sends as `Content-Length`), and drops the body without polling it further:
/// once that many bytes are taken, the body was sent in full.
#[test]
fn a_body_taken_to_its_declared_length_is_not_a_failure() {
    /// Endless frames of `FRAME`, with the size hint it is given; it never reports its end.
    struct Sized(Option<u64>);

    const FRAME: &[u8] = b"8 bytes!";

    impl Body for Sized {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
            Poll::Ready(Some(Ok(Frame::data(FRAME))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.0
                .map_or_else(http_body::SizeHint::new, http_body::SizeHint::with_exact)
        }
    }

    let (mut service, exporter, _clock) =
        traced(Answer(|request: &http::Request<()>| {
            match request.uri().path() {
                "/header" => http::Response::builder()
                    .header(http::header::CONTENT_LENGTH, "16")
                    .body(Sized(None))
                    .expect("valid response"),
                "/hint" => http::Response::new(Sized(Some(16))),
                _ => http::Response::new(Sized(None)),
            }
        }));
    for path in ["/header", "/hint", "/undeclared"] {
        let request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("valid request");
        let mut body = respond(&mut service, request)
            .expect("answered at once")
            .into_body();
        assert_eq!(next_frame(&mut body), Next::Frame);
        assert_eq!(next_frame(&mut body), Next::Frame);
        assert!(!body.is_end_stream(), "{path}");
        drop(body);
    }
    let spans = exporter.spans();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0].status, Status::Unset, "Content-Length");
    assert_eq!(spans[1].status, Status::Unset, "an exact size hint");
    // Without a declared length, the same 16 bytes may be a body cut short.
    assert_eq!(text(&spans[2], "error.type"), Some("_OTHER"));
}

/// A failure already recorded (a body error) is not recorded again when the body is dropped,
/// and the span is not ended twice.
#[test]
fn a_body_that_failed_is_not_failed_again_when_dropped() {
    struct Broken;

    impl Body for Broken {
        type Data = &'static [u8];
        type Error = &'static str;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(Some(Err("connection reset")))
        }
    }

    let (mut service, exporter, _clock) =
        traced(Answer(|_: &http::Request<()>| http::Response::new(Broken)));
    let mut body: TracedBody<Broken> = respond(&mut service, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    assert_eq!(next_frame(&mut body), Next::Error);
    drop(body);
    let span = only_span(&exporter);
    assert_eq!(
        span.status,
        Status::Error("the response body failed".into())
    );
}

/// A 5xx is the exchange's failure: a body cut short after it does not replace its
/// `error.type` (the status code) or its description.
#[test]
fn a_server_error_keeps_its_error_type_when_its_body_is_dropped_mid_stream() {
    let (mut service, exporter, _clock) = traced(Answer(|_: &http::Request<()>| {
        let mut response = http::Response::new(Frames::of(&["try", "later"]));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response
    }));
    let mut body = respond(&mut service, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    assert_eq!(next_frame(&mut body), Next::Frame);
    drop(body);
    let span = only_span(&exporter);
    assert_eq!(text(&span, "error.type"), Some("503"));
    assert_eq!(span.status, Status::Error("server error".into()));
}

/// An unsampled request records nothing, however it ends.
#[test]
fn unsampled_requests_cut_short_record_nothing() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder()
        .sampler(AlwaysOff)
        .exporter(exporter.clone())
        .build();
    let layer = ServerLayer::new(tracer, TraceContextPropagator);
    let mut silent = layer.clone().layer(Silent);
    let mut future = Box::pin(silent.call(request(http::Method::GET)));
    assert!(
        future
            .as_mut()
            .poll(&mut TaskContext::from_waker(Waker::noop()))
            .is_pending()
    );
    drop(future);
    let mut streaming = layer.layer(Answer(|_: &http::Request<()>| {
        http::Response::new(Frames::of(&["a", "b"]))
    }));
    let mut body = respond(&mut streaming, request(http::Method::GET))
        .expect("answered at once")
        .into_body();
    assert_eq!(next_frame(&mut body), Next::Frame);
    drop(body);
    assert!(exporter.spans().is_empty());
    assert!(exporter.record_only_spans().is_empty());
}
