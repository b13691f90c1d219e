//! The two services of the `trace_axum` example: `checkout`, which answers
//! `GET /checkout/{cart}` by asking `pricing` for the cart's price, and `pricing`. Both are
//! traced the same way; `main.rs` runs them, `tests/trace_axum.rs` drives them.

use std::borrow::Cow;

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use infra_trace_ctx::{
    MethodName, RouteName, ServerLayer, TraceContextPropagator, TraceMiddleware, Tracer,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// Names a server span `{method} {route template}` (`GET /checkout/{cart}`), which also
/// gives it the `http.route` attribute. Axum puts the template it matched in the request's
/// extensions before the layers added with `Router::layer` run; a request that matched no
/// route is named by its method alone, never by its raw path.
fn route_name(request: &Request) -> Cow<'static, str> {
    match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()).into(),
        None => MethodName.route_name(request),
    }
}

/// Mounts the server layer on `router`. The layer goes on last, so it is the outermost of the
/// router's layers: its span covers every layer added before it (timeouts, auth, ...) and the
/// handler, and the context it extracts is current in all of them, so their logs and calls
/// join the caller's trace. `Router::layer` (not a layer around the whole router) keeps it
/// inside axum's routing, where the matched route is known.
fn traced(router: Router, tracer: Tracer) -> Router {
    router.layer(
        ServerLayer::new(tracer, TraceContextPropagator)
            .route(route_name)
            // Answers carry `traceresponse`, so a caller can look its request up.
            .trace_response(true),
    )
}

/// An HTTP client whose every request carries the current trace context, with a client
/// span per request (a child of the handler's server span).
pub(crate) fn traced_client(tracer: Tracer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(TraceMiddleware::new(TraceContextPropagator).with_tracer(tracer))
        .build()
}

#[derive(Clone)]
struct Checkout {
    client: ClientWithMiddleware,
    /// The pricing service's base URL (`http://127.0.0.1:port`).
    pricing: String,
}

/// The checkout service: `GET /checkout/{cart}` answers with the price `pricing` gives.
pub(crate) fn checkout(tracer: Tracer, pricing: String) -> Router {
    let state = Checkout {
        client: traced_client(tracer.clone()),
        pricing,
    };
    let router = Router::new()
        .route("/checkout/{cart}", get(checkout_cart))
        .with_state(state);
    traced(router, tracer)
}

async fn checkout_cart(
    State(state): State<Checkout>,
    Path(cart): Path<u64>,
) -> Result<String, StatusCode> {
    // Logged with the request's trace id and span id by the log layer.
    tracing::info!(cart, "checking out");
    let price = state
        .client
        .get(format!("{}/price/{cart}", state.pricing))
        .send()
        .await
        .and_then(|response| Ok(response.error_for_status()?))
        .map_err(|error| {
            tracing::warn!(%error, "pricing failed");
            StatusCode::BAD_GATEWAY
        })?;
    price.text().await.map_err(|_| StatusCode::BAD_GATEWAY)
}

/// The pricing service: `GET /price/{cart}` answers `{cart} costs 42` and, on a line of its
/// own, the `traceparent` it received (so a caller can see what crossed the wire).
pub(crate) fn pricing(tracer: Tracer) -> Router {
    let router = Router::new().route("/price/{cart}", get(price));
    traced(router, tracer)
}

async fn price(Path(cart): Path<u64>, headers: HeaderMap) -> String {
    tracing::info!(cart, "pricing");
    let received = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none");
    format!("{cart} costs 42\ntraceparent: {received}\n")
}
