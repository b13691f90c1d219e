//! A [`reqwest_middleware`] middleware (feature `reqwest`): the tower [`ClientLayer`]'s work
//! for reqwest, whose requests are not `http::Request`s.
//!
//! [`ClientLayer`]: crate::ClientLayer

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::future::FutureExt;
use crate::semconv::{self, AwaitedResponse, ClientUrl};
use crate::{Context, Propagator, SpanKind, Tracer};

/// Carries the current context on every request a [`reqwest_middleware::ClientWithMiddleware`]
/// sends; with a tracer, records a client span per request.
///
/// The client span is a child of the current span, named by the method alone (`GET`, as
/// OpenTelemetry's HTTP conventions name a client span without a route template), current
/// while the rest of the middleware chain runs, and ended when the response head arrives or
/// the request fails. It carries `http.request.method`, `url.full` (credentials and every
/// query value replaced by `REDACTED`), `server.address`, `server.port`,
/// `http.response.status_code`, and `error.type` on failure: the status code for a 4xx or
/// 5xx, `timeout` for a timeout, `_OTHER` for any other error and for a request dropped
/// before its response (a timeout around the call), with status error for all of them.
/// An unsampled span records nothing: no attribute is built for it.
///
/// ```
/// use infra_trace_ctx::{TraceContextPropagator, TraceMiddleware, Tracer};
///
/// let tracer = Tracer::builder().service("cart").build();
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer))
///     .build();
/// # let _ = client;
/// ```
#[derive(Clone, Debug)]
pub struct TraceMiddleware<P> {
    propagator: P,
    tracer: Option<Tracer>,
}

impl<P> TraceMiddleware<P> {
    /// Injects the current context with `propagator` (no span of its own).
    pub const fn new(propagator: P) -> Self {
        Self {
            propagator,
            tracer: None,
        }
    }

    /// Also records a client span per request, as a child of the current span; the
    /// request carries the client span as its parent.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(tracer);
        self
    }
}

/// The conventions' `error.type` of a request that got no response.
fn error_type(error: &reqwest_middleware::Error) -> &'static str {
    match error {
        reqwest_middleware::Error::Reqwest(error) if error.is_timeout() => "timeout",
        _ => "_OTHER",
    }
}

#[async_trait::async_trait]
impl<P: Propagator + 'static> Middleware for TraceMiddleware<P> {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut context = Context::current();
        let span = self.tracer.as_ref().map(|tracer| {
            let mut span = tracer
                .span(semconv::method_span_name(request.method()))
                .kind(SpanKind::Client)
                .start();
            if span.is_recording() {
                let url = request.url();
                let client_url = ClientUrl {
                    scheme: url.scheme(),
                    host: url.host_str().unwrap_or(""),
                    port: url.port(),
                    credentials: !url.username().is_empty() || url.password().is_some(),
                    path: url.path(),
                    query: url.query(),
                };
                semconv::record_client_request(&mut span, request.method(), &client_url);
            }
            span
        });
        if let Some(span) = &span {
            context.set_span(Some(span.context().clone()));
        }
        self.propagator.inject(&context, request.headers_mut());
        // Held across the call, so a request dropped before its response (a timeout around
        // it) still ends the span as failed.
        let mut awaited = AwaitedResponse::new(span);
        let result = next.run(request, extensions).with_context(context).await;
        if let Some(mut span) = awaited.take()
            && span.is_recording()
        {
            match &result {
                Ok(response) => semconv::record_response(&mut span, response.status(), true),
                Err(error) => {
                    semconv::record_failure(&mut span, error_type(error), "the request failed");
                }
            }
        }
        result
    }
}
