//! The origin: where the cache gets what it does not hold.

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};

/// The server behind the cache. Implement it over your HTTP client (the examples package has
/// one over hyper) or, in tests, over a function.
///
/// For misses and revalidations the cache makes one [`Origin::fetch`] call per URL and method at a time
/// (per variant, for revalidations) and gives its answer to the requests waiting on it
/// (request coalescing); a waiting request that may not reuse the answer (another variant, a
/// response that was not stored) then calls the origin for itself. The shared call is bounded
/// by the fetch timeout and runs on a task of its own, so a requester that goes away does not
/// cancel a fetch others wait for.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use infra_edgecache::http::{Origin, OriginError};
///
/// struct Hello;
///
/// impl Origin for Hello {
///     async fn fetch(&self, _request: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
///         Response::builder()
///             .header("cache-control", "max-age=60")
///             .body(Bytes::from_static(b"hello"))
///             .map_err(OriginError::new)
///     }
/// }
/// ```
pub trait Origin: Send + Sync + 'static {
    /// Sends `request` to the origin and returns its complete response.
    fn fetch(
        &self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<Bytes>, OriginError>> + Send;
}

/// The origin could not answer (connection refused, reset, a malformed response).
///
/// A response with a 5xx status is not an `OriginError`: it is a response, which
/// `stale-if-error` may replace with a stored one all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginError {
    message: Box<str>,
}

impl OriginError {
    /// An error described by `cause`.
    ///
    /// ```
    /// use infra_edgecache::http::OriginError;
    /// assert_eq!(OriginError::new("connection refused").to_string(), "origin failed: connection refused");
    /// ```
    pub fn new(cause: impl fmt::Display) -> Self {
        Self {
            message: cause.to_string().into_boxed_str(),
        }
    }
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "origin failed: {}", self.message)
    }
}

impl std::error::Error for OriginError {}
