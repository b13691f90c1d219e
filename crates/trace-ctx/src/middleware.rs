//! Tower layers for HTTP services (feature `tower`).
//!
//! - [`ServerLayer`]: extracts the caller's context from the request headers, records a server
//!   span around the inner service, and runs the service with that context current, so spans
//!   and client calls made while handling the request join the caller's trace. The span is
//!   named by a [`RouteName`]: the method alone by default ([`MethodName`]), or a name built
//!   from a route template the application supplies. With [`ServerLayer::trace_response`],
//!   the response carries a `traceresponse` header naming that span.
//! - [`ClientLayer`]: injects the current context into outgoing requests; with a tracer, it
//!   records a client span per request, so each call carries a new parent id.
//!
//! Recorded spans carry OpenTelemetry's stable HTTP semantic-convention attributes (server:
//! `http.request.method`, `url.path`, `url.scheme`, `http.route`, `server.address`,
//! `server.port`; client: `http.request.method`, `url.full` with query values redacted,
//! `server.address`, `server.port`; both: `http.response.status_code`, and `error.type` on
//! failure). Unsampled spans get none, and cost no allocation for them.
//!
//! A propagator that is not `Clone`, such as [`CompositePropagator`](crate::CompositePropagator),
//! goes behind either layer in an [`Arc`](std::sync::Arc), which is a [`Propagator`] too.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tower::{Layer, Service};

use crate::future::{FutureExt, WithContext};
use crate::semconv::{self, AwaitedResponse};
use crate::{Context, Propagator, Span, SpanKind, TraceParent, TraceParentHeader, Tracer};

/// Names the server span of a request.
///
/// Name spans after the route template that matched (`GET /cart/{id}`), never the raw path:
/// a raw path holds ids, so it gives every request its own span name and overwhelms the
/// backend. Any `Fn(&http::Request<B>) -> impl Into<Cow<'static, str>>` is a `RouteName`;
/// returning a `&'static str` costs no allocation. A name of the form `{method} {route}`
/// (the conventions' form) also gives the span its `http.route` attribute.
///
/// ```
/// use infra_trace_ctx::{ServerLayer, TraceContextPropagator, Tracer};
///
/// let layer = ServerLayer::new(Tracer::builder().build(), TraceContextPropagator).route(
///     |request: &http::Request<()>| match request.uri().path() {
///         path if path.starts_with("/cart/") => "GET /cart/{id}",
///         _ => "GET",
///     },
/// );
/// # let _ = layer;
/// ```
pub trait RouteName<B> {
    /// The span name for `request`.
    fn route_name(&self, request: &http::Request<B>) -> Cow<'static, str>;
}

impl<B, F, N> RouteName<B> for F
where
    F: Fn(&http::Request<B>) -> N,
    N: Into<Cow<'static, str>>,
{
    fn route_name(&self, request: &http::Request<B>) -> Cow<'static, str> {
        self(request).into()
    }
}

/// The default [`RouteName`]: the request method alone (`GET`), or `HTTP` for a method
/// outside RFC 9110 and PATCH, as OpenTelemetry's HTTP conventions name spans without a
/// route. Never allocates.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodName;

impl<B> RouteName<B> for MethodName {
    fn route_name(&self, request: &http::Request<B>) -> Cow<'static, str> {
        Cow::Borrowed(semconv::method_span_name(request.method()))
    }
}

/// Wraps a service so each request runs in the caller's trace, inside a server span.
///
/// The span is named by [`MethodName`] unless [`ServerLayer::route`] supplies a name. It
/// ends when the response body finishes ([`TracedBody`]), at once when the service fails or
/// the response has no body to send, or when the request is given up before its response
/// (the response future is dropped: the client disconnected, or a timeout around the service
/// fired). A 5xx response, a service error, a body error, a request given up before its
/// response or a body dropped before its end sets its status to error (4xx is the client's
/// fault, not the server's).
///
/// With [`ServerLayer::trace_response`], each response carries `traceresponse:
/// 00-{trace id}-{server span id}-{flags}` (W3C Trace Context Level 2), so a caller can find
/// the trace its request started.
///
/// ```
/// use std::sync::Arc;
/// use infra_trace_ctx::{
///     B3Propagator, CompositePropagator, ServerLayer, TraceContextPropagator, Tracer,
/// };
///
/// let tracer = Tracer::builder().service("cart").build();
/// let layer = ServerLayer::new(tracer.clone(), TraceContextPropagator);
/// // A propagator that is not `Clone` goes in an `Arc`.
/// let both = Arc::new(CompositePropagator::new(vec![
///     Box::new(TraceContextPropagator),
///     Box::new(B3Propagator::single_header()),
/// ]));
/// let composite = ServerLayer::new(tracer, both);
/// # let _ = (layer, composite);
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer<P, N = MethodName> {
    tracer: Tracer,
    propagator: P,
    route: N,
    trace_response: bool,
}

impl<P> ServerLayer<P> {
    /// Records spans with `tracer`, reads headers with `propagator`, names spans with
    /// [`MethodName`].
    pub fn new(tracer: Tracer, propagator: P) -> Self {
        Self {
            tracer,
            propagator,
            route: MethodName,
            trace_response: false,
        }
    }
}

impl<P, N> ServerLayer<P, N> {
    /// Names server spans with `route` (see [`RouteName`]).
    pub fn route<R>(self, route: R) -> ServerLayer<P, R> {
        ServerLayer {
            tracer: self.tracer,
            propagator: self.propagator,
            route,
            trace_response: self.trace_response,
        }
    }

    /// Whether responses carry a `traceresponse` header naming the server span (off by
    /// default: it tells every caller, trusted or not, the trace and span ids).
    ///
    /// ```
    /// use infra_trace_ctx::{ServerLayer, TraceContextPropagator, Tracer};
    ///
    /// let layer = ServerLayer::new(Tracer::builder().build(), TraceContextPropagator)
    ///     .trace_response(true);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub const fn trace_response(mut self, enabled: bool) -> Self {
        self.trace_response = enabled;
        self
    }
}

impl<S, P: Clone, N: Clone> Layer<S> for ServerLayer<P, N> {
    type Service = TracedServer<S, P, N>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedServer {
            inner,
            tracer: self.tracer.clone(),
            propagator: self.propagator.clone(),
            route: self.route.clone(),
            trace_response: self.trace_response,
        }
    }
}

/// The service built by [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct TracedServer<S, P, N = MethodName> {
    inner: S,
    tracer: Tracer,
    propagator: P,
    route: N,
    trace_response: bool,
}

impl<S, P, N, B, R> Service<http::Request<B>> for TracedServer<S, P, N>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    P: Propagator,
    N: RouteName<B>,
    R: http_body::Body,
{
    type Response = http::Response<TracedBody<R>>;
    type Error = S::Error;
    type Future = ServerResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let remote = self.propagator.extract(request.headers());
        let name = self.route.route_name(&request);
        let mut span = self
            .tracer
            .span(name)
            .kind(SpanKind::Server)
            .remote(&remote)
            .start();
        if span.is_recording() {
            semconv::record_server_request(&mut span, &request);
        }
        // Formatted on the stack now; copied into a header value only if enabled.
        let trace_response = self
            .trace_response
            .then(|| TraceParent::of(span.context()).encode());
        let method = BodyRule::of(request.method());
        let context = remote.with_span(span.context().clone());
        let future = {
            let _current = context.clone().attach();
            self.inner.call(request)
        };
        ServerResponseFuture {
            inner: future.with_context(context),
            span: AwaitedResponse::new(Some(span)),
            trace_response,
            method,
        }
    }
}

/// Records the response status on `span`: an error from the service, a 5xx, or (for a client
/// span) a 4xx marks it failed.
fn record_status<R, E>(span: &mut Span, output: &Result<http::Response<R>, E>, client: bool) {
    if !span.is_recording() {
        return;
    }
    match output {
        Ok(response) => semconv::record_response(span, response.status(), client),
        Err(_) => semconv::record_failure(span, "_OTHER", "the service failed"),
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TracedServer`]: records the status code on the server span
    /// (a 5xx or an error from the service marks it failed) and hands the span to the
    /// response body, which ends it when the body finishes ([`TracedBody`]). An error from
    /// the service, or a response without a body to send, ends the span at once; so does
    /// dropping the future before the response (the client disconnected, or a timeout around
    /// the service fired), which marks it failed.
    #[derive(Debug)]
    pub struct ServerResponseFuture<F> {
        #[pin]
        inner: WithContext<F>,
        span: AwaitedResponse,
        trace_response: Option<TraceParentHeader>,
        // What the request's method says of the response body's fate.
        method: BodyRule,
    }
}

/// What a request's method says of whether its response body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyRule {
    /// `HEAD`: the response body is never sent.
    Head,
    /// `CONNECT`: a 2xx response turns the connection into a tunnel after its head.
    Connect,
    /// Any other method: the status decides.
    Other,
}

impl BodyRule {
    fn of(method: &http::Method) -> Self {
        if method == http::Method::HEAD {
            Self::Head
        } else if method == http::Method::CONNECT {
            Self::Connect
        } else {
            Self::Other
        }
    }
}

/// Whether a server sends this response's body: never in answer to `HEAD`, nor with a `1xx`,
/// `204 No Content` or `304 Not Modified` status, nor with a 2xx answer to `CONNECT`, after
/// which the connection is a tunnel (RFC 9112, section 6.3); a server drops such a body
/// unread, and that is no failure.
fn sends_body(method: BodyRule, status: http::StatusCode) -> bool {
    !(method == BodyRule::Head
        || (method == BodyRule::Connect && status.is_success())
        || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED)
}

impl<F, R, E> Future for ServerResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    R: http_body::Body,
{
    type Output = Result<http::Response<TracedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        let mut span = this.span.take();
        if let Some(span) = &mut span {
            record_status(span, &output, false);
        }
        let trace_response = this.trace_response.take();
        let method = *this.method;
        Poll::Ready(output.map(|mut response| {
            if let Some(header) = trace_response {
                // A formatted traceparent is visible ASCII: always a valid header value.
                if let Ok(value) = http::HeaderValue::from_str(header.as_str()) {
                    response.headers_mut().insert(TRACERESPONSE, value);
                }
            }
            let (parts, body) = response.into_parts();
            // Only a recorded span can be failed: an unsampled one skips the look-up.
            let unsent = if span.as_ref().is_some_and(Span::is_recording) {
                declared_length(&parts.headers, &body)
            } else {
                None
            };
            if (body.is_end_stream() || unsent == Some(0) || !sends_body(method, parts.status))
                && let Some(mut span) = span.take()
            {
                span.end();
            }
            let body = TracedBody {
                inner: body,
                span: AwaitedResponse::body_end(span),
                unsent,
            };
            http::Response::from_parts(parts, body)
        }))
    }
}

/// The length of a response's body as the server sends it: `Content-Length`, or else an exact
/// size hint, which hyper sends as one. A server stops there, and drops the body without
/// polling it further, whether or not the body reports its end.
fn declared_length(headers: &http::HeaderMap, body: &impl http_body::Body) -> Option<u64> {
    match headers.get(http::header::CONTENT_LENGTH) {
        Some(value) => value.to_str().ok()?.parse().ok(),
        None => body.size_hint().exact(),
    }
}

/// The W3C Trace Context Level 2 response header: the callee's trace and span.
const TRACERESPONSE: http::HeaderName = http::HeaderName::from_static("traceresponse");

pin_project_lite::pin_project! {
    /// A response body that ends its server span when the body finishes: at its last frame
    /// (its trailers, the frame that completes its declared length, or any frame after which
    /// the body reports its end), at an error (which marks the
    /// span failed), or when it is dropped. Dropped before its end, the body was not all
    /// sent (the client went away mid-stream): that marks the span failed. A body that
    /// reports its end when dropped is complete, and a server drops it without asking for
    /// the `None` that would follow.
    #[derive(Debug)]
    pub struct TracedBody<B: http_body::Body> {
        #[pin]
        inner: B,
        span: AwaitedResponse,
        // The bytes left to send by the body's declared length (`Content-Length`), if it has
        // one and the span is recorded.
        unsent: Option<u64>,
    }

    impl<B: http_body::Body> PinnedDrop for TracedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_end_stream()
                && let Some(mut span) = this.span.take()
            {
                span.end();
            }
            // Otherwise the span, still awaited, ends failed as the fields drop.
        }
    }
}

impl<B: http_body::Body> TracedBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: http_body::Body> http_body::Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let finished = match &frame {
            None | Some(Err(_)) => true,
            // Trailers are a body's last frame, after which a server asks for no more.
            Some(Ok(frame)) => {
                if let (Some(unsent), Some(data)) = (this.unsent.as_mut(), frame.data_ref()) {
                    let sent = u64::try_from(bytes::Buf::remaining(data)).unwrap_or(u64::MAX);
                    *unsent = unsent.saturating_sub(sent);
                }
                frame.is_trailers() || *this.unsent == Some(0) || this.inner.is_end_stream()
            }
        };
        if finished && let Some(mut span) = this.span.take() {
            if matches!(frame, Some(Err(_))) && span.is_recording() {
                semconv::record_failure(&mut span, "_OTHER", "the response body failed");
            }
            span.end();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TracedClient`]: ends the client span when the response
    /// arrives, with the status code as an attribute. An error from the service, a 4xx or a
    /// 5xx marks the span failed, per OpenTelemetry's HTTP conventions for clients; so does
    /// dropping the future before the response (a timeout around the call).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: WithContext<F>,
        span: AwaitedResponse,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(mut span) = this.span.take() {
            record_status(&mut span, &output, true);
            span.end();
        }
        Poll::Ready(output)
    }
}

/// Wraps an HTTP client so every request carries the current context.
///
/// With a tracer, a 4xx or 5xx response, a client error, or a call dropped before its
/// response (a timeout around it) sets the client span's status to error.
///
/// ```
/// use infra_trace_ctx::{ClientLayer, TraceContextPropagator, Tracer};
///
/// // Inject only:
/// let plain = ClientLayer::new(TraceContextPropagator);
/// // Or record a client span per call (each call gets its own parent id):
/// let spanned = ClientLayer::new(TraceContextPropagator).with_tracer(Tracer::builder().build());
/// # let _ = (plain, spanned);
/// ```
#[derive(Clone, Debug)]
pub struct ClientLayer<P> {
    propagator: P,
    tracer: Option<Tracer>,
}

impl<P> ClientLayer<P> {
    /// Injects with `propagator`.
    pub fn new(propagator: P) -> Self {
        Self {
            propagator,
            tracer: None,
        }
    }

    /// Also records a client span per request, as a child of the current span.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(tracer);
        self
    }
}

impl<S, P: Clone> Layer<S> for ClientLayer<P> {
    type Service = TracedClient<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedClient {
            inner,
            propagator: self.propagator.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

/// The service built by [`ClientLayer`].
#[derive(Clone, Debug)]
pub struct TracedClient<S, P> {
    inner: S,
    propagator: P,
    tracer: Option<Tracer>,
}

impl<S, P, B, R> Service<http::Request<B>> for TracedClient<S, P>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    P: Propagator,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let mut context = Context::current();
        // Named by the method alone, as the conventions name a client span without a route
        // template: a static name, so an unsampled call allocates nothing, and a bounded one.
        let span = self.tracer.as_ref().map(|tracer| {
            let mut span = tracer
                .span(semconv::method_span_name(request.method()))
                .kind(SpanKind::Client)
                .start();
            if span.is_recording() {
                semconv::record_client_http_request(&mut span, &request);
            }
            span
        });
        if let Some(span) = &span {
            context.set_span(Some(span.context().clone()));
        }
        self.propagator.inject(&context, request.headers_mut());
        ResponseFuture {
            inner: self.inner.call(request).with_context(context),
            span: AwaitedResponse::new(span),
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{MemoryExporter, SpanContext, Status, TraceContextPropagator, TraceParent};
    use std::convert::Infallible;
    use std::future::Ready;

    /// Answers with the current trace id (or "none") and the status in the request's path.
    #[derive(Clone)]
    struct Echo;

    impl Service<http::Request<()>> for Echo {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let seen = Context::map_current(|cx| cx.span().map(SpanContext::trace_id));
            let status = match request.uri().path() {
                "/fail" => 503,
                "/missing" => 404,
                _ => 200,
            };
            let header = request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let body = format!(
                "{}|{header}",
                seen.map_or_else(|| "none".to_owned(), |id| id.to_string())
            );
            std::future::ready(Ok(http::Response::builder()
                .status(status)
                .body(body)
                .unwrap()))
        }
    }

    #[tokio::test]
    async fn server_layer_joins_the_callers_trace_and_records_a_span() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder()
            .service("cart")
            .exporter(exporter.clone())
            .build();
        let mut service = ServerLayer::new(tracer, TraceContextPropagator).layer(Echo);
        let request = http::Request::builder()
            .method("GET")
            .uri("/cart")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(())
            .unwrap();
        let response = service.call(request).await.unwrap();
        assert!(
            response
                .body()
                .get_ref()
                .starts_with("4bf92f3577b34da6a3ce929d0e0e4736|")
        );
        read_to_end(response.into_body()).await;
        let failing = http::Request::builder().uri("/fail").body(()).unwrap();
        let response = service.call(failing).await.unwrap();
        assert_eq!(response.status(), 503);
        read_to_end(response.into_body()).await;

        let spans = exporter.spans();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "GET", "the method alone without a route");
        assert_eq!(spans[0].kind, SpanKind::Server);
        assert_eq!(
            spans[0].parent_span_id.map(|id| id.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(
            spans[0].attribute("http.response.status_code"),
            Some(&crate::Value::I64(200))
        );
        assert_eq!(spans[1].parent_span_id, None, "no traceparent: a new trace");
        assert_eq!(spans[1].status, Status::Error("server error".into()));
    }

    #[tokio::test]
    async fn client_layer_injects_a_new_parent_id_per_call() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer.clone())
            .layer(Echo);
        let mut plain = ClientLayer::new(TraceContextPropagator).layer(Echo);
        let request = || http::Request::builder().uri("/next").body(()).unwrap();

        let root = tracer.span("handler").start();
        let _guard = root.attach();
        let first = client.call(request()).await.unwrap().into_body();
        let second = client.call(request()).await.unwrap().into_body();
        let third = plain.call(request()).await.unwrap().into_body();
        let parent = |body: &str| TraceParent::parse(body.split('|').nth(1).unwrap()).unwrap();
        let (a, b, c) = (parent(&first), parent(&second), parent(&third));
        assert_eq!(a.trace_id, root.context().trace_id());
        assert_eq!(b.trace_id, root.context().trace_id());
        assert_ne!(
            a.parent_id, b.parent_id,
            "each call has its own client span"
        );
        assert_eq!(
            c.parent_id,
            root.context().span_id(),
            "without a tracer, the current span"
        );
        let spans = exporter.spans();
        assert_eq!(spans.len(), 2);
        assert!(
            spans.iter().all(|s| s.kind == SpanKind::Client
                && s.parent_span_id == Some(root.context().span_id()))
        );
    }

    /// A proxy that received `b3: 0` alone and keeps that context current while it calls on:
    /// its client span follows the caller's "do not sample" instead of starting a sampled
    /// trace that every service after it would record.
    #[tokio::test]
    async fn a_client_span_follows_a_decision_received_alone_in_the_current_context() {
        use crate::{B3Propagator, Propagator};
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer)
            .layer(Echo);
        let received = B3Propagator::single_header().extract(&vec![("b3", "0")]);
        let _guard = received.attach();
        let request = http::Request::builder().uri("/next").body(()).unwrap();
        let body = client.call(request).await.unwrap().into_body();
        let sent = TraceParent::parse(body.split('|').nth(1).unwrap()).unwrap();
        assert!(!sent.flags.is_sampled(), "the caller's deny is passed on");
        assert!(exporter.spans().is_empty(), "and nothing is recorded");
    }

    /// Reads `body` frame by frame to its end; the number of data frames.
    async fn read_to_end<B: http_body::Body + Unpin>(mut body: B) -> usize {
        let mut frames = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            assert!(frame.is_ok(), "the test bodies never fail");
            frames += 1;
        }
        frames
    }

    #[tokio::test]
    async fn a_server_span_ends_when_the_response_body_finishes() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut service = ServerLayer::new(tracer, TraceContextPropagator).layer(Echo);
        let request = || http::Request::builder().uri("/cart").body(()).unwrap();

        let response = service.call(request()).await.unwrap();
        assert!(exporter.spans().is_empty(), "the body is still unread");
        assert_eq!(read_to_end(response.into_body()).await, 1);
        assert_eq!(exporter.spans().len(), 1, "read to the end");

        let unread = service.call(request()).await.unwrap();
        assert_eq!(exporter.spans().len(), 1);
        drop(unread);
        assert_eq!(exporter.spans().len(), 2, "dropped unfinished");
    }

    /// A body whose first frame is an error.
    struct FailingBody;

    impl http_body::Body for FailingBody {
        type Data = &'static [u8];
        type Error = &'static str;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(Some(Err("connection reset")))
        }
    }

    /// Answers with a [`FailingBody`].
    struct Failing;

    impl Service<http::Request<()>> for Failing {
        type Response = http::Response<FailingBody>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(FailingBody)))
        }
    }

    #[tokio::test]
    async fn a_body_error_ends_the_server_span_as_failed() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut service = ServerLayer::new(tracer, TraceContextPropagator).layer(Failing);
        let request = http::Request::builder().uri("/cart").body(()).unwrap();
        let mut body = service.call(request).await.unwrap().into_body();
        assert!(exporter.spans().is_empty());
        let frame =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await;
        assert!(matches!(frame, Some(Err("connection reset"))));
        let spans = exporter.spans();
        assert_eq!(
            spans.len(),
            1,
            "ended at the error, before the body is dropped"
        );
        assert_eq!(
            spans[0].status,
            Status::Error("the response body failed".into())
        );
        assert_eq!(
            text(&spans[0], "error.type"),
            Some("_OTHER"),
            "a failure carries its error.type, as the conventions require"
        );
        drop(body);
        assert_eq!(exporter.spans().len(), 1);
    }

    #[allow(clippy::disallowed_types)] // users share a composite in `std`'s `Arc`
    fn composite() -> std::sync::Arc<crate::CompositePropagator> {
        std::sync::Arc::new(crate::CompositePropagator::new(vec![
            Box::new(crate::B3Propagator::single_header()),
            Box::new(TraceContextPropagator),
        ]))
    }

    #[tokio::test]
    async fn a_composite_propagator_works_behind_both_layers() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut server = ServerLayer::new(tracer.clone(), composite()).layer(Echo);
        let request = http::Request::builder()
            .uri("/cart")
            .header("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
            .body(())
            .unwrap();
        let response = server.call(request).await.unwrap();
        let body = response.body().get_ref();
        assert!(
            body.starts_with("80f198ee56343ba864fe8b2a57d3eff7|"),
            "{body}"
        );

        let mut client = ClientLayer::new(composite())
            .with_tracer(tracer.clone())
            .layer(Echo);
        let root = tracer.span("handler").start();
        let _guard = root.attach();
        let request = http::Request::builder().uri("/next").body(()).unwrap();
        let body = client.call(request).await.unwrap().into_body();
        let sent = TraceParent::parse(body.split('|').nth(1).unwrap()).unwrap();
        assert_eq!(sent.trace_id, root.context().trace_id());
    }

    #[tokio::test]
    async fn client_4xx_and_5xx_are_errors_server_4xx_is_not() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer.clone())
            .layer(Echo);
        let mut server = ServerLayer::new(tracer, TraceContextPropagator).layer(Echo);
        let request = |path: &str| http::Request::builder().uri(path).body(()).unwrap();
        for path in ["/next", "/missing", "/fail"] {
            client.call(request(path)).await.unwrap();
        }
        // Sent in full: a body dropped before its end would fail the span on its own.
        read_to_end(server.call(request("/missing")).await.unwrap().into_body()).await;
        let statuses: Vec<(SpanKind, Status)> = exporter
            .spans()
            .into_iter()
            .map(|span| (span.kind, span.status))
            .collect();
        assert_eq!(
            statuses,
            [
                (SpanKind::Client, Status::Unset),
                (SpanKind::Client, Status::Error("client error".into())),
                (SpanKind::Client, Status::Error("server error".into())),
                (SpanKind::Server, Status::Unset),
            ]
        );
    }

    /// Never answers: its future stays pending until dropped.
    struct Silent;

    impl Service<http::Request<()>> for Silent {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::pending()
        }
    }

    /// A timeout around the call (or a caller that gives up) drops the response future: the
    /// call got no response, and its span must not read as a success.
    #[tokio::test]
    async fn a_client_call_dropped_before_its_response_ends_its_span_as_failed() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer)
            .layer(Silent);
        let mut call = Box::pin(client.call(http::Request::get("/slow").body(()).unwrap()));
        let waker = std::task::Waker::noop();
        assert!(
            call.as_mut()
                .poll(&mut TaskContext::from_waker(waker))
                .is_pending()
        );
        drop(call);
        let spans = exporter.spans();
        assert_eq!(spans.len(), 1, "the span ends when its call is dropped");
        assert_eq!(
            spans[0].status,
            Status::Error("the request was cancelled before its response".into())
        );
        assert_eq!(text(&spans[0], "error.type"), Some("_OTHER"));
        assert_eq!(spans[0].attribute("http.response.status_code"), None);
    }

    /// The string value of attribute `key`, if it is one.
    fn text<'a>(span: &'a crate::SpanData, key: &str) -> Option<&'a str> {
        match span.attribute(key)? {
            crate::Value::Str(text) => Some(text),
            _ => None,
        }
    }

    #[tokio::test]
    async fn server_spans_carry_the_http_conventions() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let route = |request: &http::Request<()>| {
            if request.uri().path().starts_with("/cart/") {
                "GET /cart/{id}"
            } else {
                "GET"
            }
        };
        let mut service = ServerLayer::new(tracer, TraceContextPropagator)
            .route(route)
            .layer(Echo);
        let requests = [
            ("GET", "/cart/7?user=1", "shop.example:8080"),
            ("PURGE", "/fail", "[::1]"),
        ];
        for (method, uri, host) in requests {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .header("host", host)
                .body(())
                .unwrap();
            read_to_end(service.call(request).await.unwrap().into_body()).await;
        }
        let spans = exporter.spans();
        let (cart, purge) = (&spans[0], &spans[1]);
        assert_eq!(text(cart, "http.request.method"), Some("GET"));
        assert_eq!(text(cart, "url.path"), Some("/cart/7"));
        assert_eq!(text(cart, "url.scheme"), Some("http"));
        assert_eq!(text(cart, "http.route"), Some("/cart/{id}"));
        assert_eq!(text(cart, "server.address"), Some("shop.example"));
        assert_eq!(
            cart.attribute("server.port"),
            Some(&crate::Value::I64(8080))
        );
        assert_eq!(cart.attribute("error.type"), None);
        assert_eq!(
            purge.name, "GET",
            "the route function's name for other paths"
        );
        assert_eq!(text(purge, "http.request.method"), Some("_OTHER"));
        assert_eq!(text(purge, "http.request.method_original"), Some("PURGE"));
        assert_eq!(
            purge.attribute("http.route"),
            None,
            "not named {{method}} {{route}}"
        );
        assert_eq!(text(purge, "server.address"), Some("::1"));
        assert_eq!(purge.attribute("server.port"), None);
        assert_eq!(text(purge, "error.type"), Some("503"));
        assert_eq!(
            purge.attribute("http.response.status_code"),
            Some(&crate::Value::I64(503))
        );
    }

    #[tokio::test]
    async fn traceresponse_names_the_server_span_only_when_enabled() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let layer = ServerLayer::new(tracer, TraceContextPropagator);
        let mut plain = layer.clone().layer(Echo);
        let mut answering = layer.trace_response(true).layer(Echo);
        let request = || {
            http::Request::builder()
                .uri("/cart")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(())
                .unwrap()
        };
        let response = plain.call(request()).await.unwrap();
        assert_eq!(response.headers().get("traceresponse"), None);
        read_to_end(response.into_body()).await;
        let response = answering.call(request()).await.unwrap();
        let header = response.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .to_owned();
        read_to_end(response.into_body()).await;

        let spans = exporter.spans();
        let server = &spans[1].context;
        let parsed = TraceParent::parse(&header).unwrap();
        assert_eq!(parsed.trace_id, server.trace_id());
        assert_eq!(
            parsed.parent_id,
            server.span_id(),
            "the child id is the server span's"
        );
        assert_ne!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parsed.flags.is_sampled());
        assert_eq!(header, TraceParent::of(server).encode().as_str());
    }

    #[tokio::test]
    async fn client_spans_are_named_by_the_method_and_carry_the_http_conventions() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer)
            .layer(Echo);
        let calls = [
            (
                "POST",
                "https://user:secret@pay.example:8443/fail?sig=abc&n=1",
            ),
            ("GET", "/missing"),
        ];
        for (method, uri) in calls {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .header("host", "inventory:9000")
                .body(())
                .unwrap();
            client.call(request).await.unwrap();
        }
        let spans = exporter.spans();
        let (pay, missing) = (&spans[0], &spans[1]);
        assert_eq!(pay.name, "POST", "the method alone, never the path");
        assert_eq!(text(pay, "http.request.method"), Some("POST"));
        assert_eq!(
            text(pay, "url.full"),
            Some("https://REDACTED:REDACTED@pay.example:8443/fail?sig=REDACTED&n=REDACTED")
        );
        assert_eq!(text(pay, "server.address"), Some("pay.example"));
        assert_eq!(pay.attribute("server.port"), Some(&crate::Value::I64(8443)));
        assert_eq!(text(pay, "error.type"), Some("503"));
        assert_eq!(missing.name, "GET");
        assert_eq!(
            missing.attribute("url.full"),
            None,
            "a relative URI is no full URL"
        );
        assert_eq!(text(missing, "server.address"), Some("inventory"));
        assert_eq!(
            missing.attribute("server.port"),
            Some(&crate::Value::I64(9000))
        );
        assert_eq!(text(missing, "error.type"), Some("404"));
        assert_eq!(
            missing.attribute("http.response.status_code"),
            Some(&crate::Value::I64(404))
        );
    }

    /// `server.port` is required on a client span: a URL without a port has its scheme's.
    #[tokio::test]
    async fn client_spans_name_the_default_port_of_a_url_without_one() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let mut client = ClientLayer::new(TraceContextPropagator)
            .with_tracer(tracer)
            .layer(Echo);
        for uri in ["https://pay.example/charge", "http://[::1]/stock"] {
            let request = http::Request::get(uri).body(()).unwrap();
            client.call(request).await.unwrap();
        }
        let spans = exporter.spans();
        assert_eq!(
            text(&spans[0], "url.full"),
            Some("https://pay.example/charge")
        );
        assert_eq!(
            spans[0].attribute("server.port"),
            Some(&crate::Value::I64(443))
        );
        assert_eq!(text(&spans[1], "server.address"), Some("::1"));
        assert_eq!(
            spans[1].attribute("server.port"),
            Some(&crate::Value::I64(80))
        );
    }

    #[tokio::test]
    async fn server_spans_are_named_by_the_route() {
        let exporter = MemoryExporter::new();
        let tracer = Tracer::builder().exporter(exporter.clone()).build();
        let route = |request: &http::Request<()>| -> Cow<'static, str> {
            if request.uri().path().starts_with("/cart/") {
                Cow::Borrowed("GET /cart/{id}")
            } else {
                Cow::Owned(format!("{} other", request.method()))
            }
        };
        let mut service = ServerLayer::new(tracer, TraceContextPropagator)
            .route(route)
            .layer(Echo);
        let mut unnamed = ServerLayer::new(
            Tracer::builder().exporter(exporter.clone()).build(),
            TraceContextPropagator,
        )
        .layer(Echo);
        for (method, path) in [("GET", "/cart/1"), ("GET", "/cart/2"), ("POST", "/pay")] {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            service.call(request).await.unwrap();
        }
        for method in ["DELETE", "PATCH", "PURGE"] {
            let request = http::Request::builder()
                .method(method)
                .uri("/x")
                .body(())
                .unwrap();
            unnamed.call(request).await.unwrap();
        }
        let names: Vec<String> = exporter
            .spans()
            .into_iter()
            .map(|s| s.name.into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "GET /cart/{id}",
                "GET /cart/{id}",
                "POST other",
                "DELETE",
                "PATCH",
                "HTTP"
            ]
        );
    }
}
