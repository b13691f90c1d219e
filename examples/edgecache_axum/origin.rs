//! An `Origin` over hyper's client: the cache's misses and revalidations go to one backend.
//! Shared by the `edgecache_origin` and `edgecache_axum` examples and the latter's test.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use infra_edgecache::http::{Origin, OriginError};

/// The HTTP/1 client the origin (and the examples' own requests) use.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1 client.
pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The largest answer body read from the backend; a larger one is an origin error (a 502 to
/// the client) rather than unbounded memory. Bodies the cache passes through without storing
/// (over its `max_object_bytes`, uncacheable) are read whole too, so this bounds them.
pub(crate) const MAX_ORIGIN_BODY: usize = 64 << 20;

/// Sends every request to the backend at `authority`, keeping its path and query, and reads
/// the whole answer, up to [`MAX_ORIGIN_BODY`].
pub(crate) struct HyperOrigin {
    client: HttpClient,
    authority: String,
}

impl HyperOrigin {
    /// An origin forwarding to `authority` (`host:port`) with `client`.
    pub(crate) fn new(client: HttpClient, authority: impl Into<String>) -> Self {
        Self {
            client,
            authority: authority.into(),
        }
    }
}

impl Origin for HyperOrigin {
    async fn fetch(&self, request: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = format!("http://{}{path}", self.authority)
            .parse()
            .map_err(OriginError::new)?;
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(OriginError::new)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ORIGIN_BODY)
            .collect()
            .await
            .map_err(OriginError::new)?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}
