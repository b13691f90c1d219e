//! Tower layers for HTTP services (feature `tower`).
//!
//! - [`ServerLayer`]: extracts the caller's context from the request headers, records a server
//!   span around the inner service, and runs the service with that context current, so spans
//!   and client calls made while handling the request join the caller's trace.
//! - [`ClientLayer`]: injects the current context into outgoing requests; with a tracer, it
//!   records a client span per request, so each call carries a new parent id.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use tower::{Layer, Service};

use crate::future::{FutureExt, WithContext};
use crate::{Context, Propagator, Span, SpanKind, Status, Tracer};

/// Wraps a service so each request runs in the caller's trace, inside a server span.
///
/// ```
/// use infra_trace_ctx::{ServerLayer, TraceContextPropagator, Tracer};
///
/// let layer = ServerLayer::new(Tracer::builder().service("cart").build(), TraceContextPropagator);
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer<P> {
    tracer: Tracer,
    propagator: P,
}

impl<P> ServerLayer<P> {
    /// Records spans with `tracer`, reads headers with `propagator`.
    pub fn new(tracer: Tracer, propagator: P) -> Self {
        Self { tracer, propagator }
    }
}

impl<S, P: Clone> Layer<S> for ServerLayer<P> {
    type Service = TracedServer<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedServer {
            inner,
            tracer: self.tracer.clone(),
            propagator: self.propagator.clone(),
        }
    }
}

/// The service built by [`ServerLayer`].
#[derive(Clone, Debug)]
pub struct TracedServer<S, P> {
    inner: S,
    tracer: Tracer,
    propagator: P,
}

impl<S, P, B, R> Service<http::Request<B>> for TracedServer<S, P>
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let remote = self.propagator.extract(request.headers());
        let name = format!("{} {}", request.method(), request.uri().path());
        let mut span = self
            .tracer
            .span(name)
            .kind(SpanKind::Server)
            .remote(&remote)
            .start();
        if span.is_recording() {
            span.set_attribute("http.request.method", request.method().to_string());
            span.set_attribute("url.path", request.uri().path().to_owned());
        }
        let context = remote.with_span(span.context().clone());
        let future = {
            let _current = context.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture {
            inner: future.with_context(context),
            span: Some(span),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TracedServer`] and [`TracedClient`]: ends the span when the
    /// response arrives, with the status code as an attribute (5xx and errors mark it failed).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: WithContext<F>,
        span: Option<Span>,
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
            match &output {
                Ok(response) => {
                    let code = response.status().as_u16();
                    span.set_attribute("http.response.status_code", i64::from(code));
                    if response.status().is_server_error() {
                        span.set_status(Status::Error("server error".into()));
                    }
                }
                Err(_) => span.set_status(Status::Error("the service failed".into())),
            }
            span.end();
        }
        Poll::Ready(output)
    }
}

/// Wraps an HTTP client so every request carries the current context.
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
        let span = self.tracer.as_ref().map(|tracer| {
            let name = format!("{} {}", request.method(), request.uri().path());
            tracer.span(name).kind(SpanKind::Client).start()
        });
        if let Some(span) = &span {
            context.set_span(Some(span.context().clone()));
        }
        self.propagator.inject(&context, request.headers_mut());
        ResponseFuture {
            inner: self.inner.call(request).with_context(context),
            span,
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{MemoryExporter, SpanContext, TraceContextPropagator, TraceParent};
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
            let status = if request.uri().path() == "/fail" {
                503
            } else {
                200
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
                .starts_with("4bf92f3577b34da6a3ce929d0e0e4736|")
        );
        let failing = http::Request::builder().uri("/fail").body(()).unwrap();
        assert_eq!(service.call(failing).await.unwrap().status(), 503);

        let spans = exporter.spans();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "GET /cart");
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
}
