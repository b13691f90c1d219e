//! A scripted origin for the HTTP cache's tests: counts calls, records what it was sent,
//! answers from a script, and holds its answers behind a gate the test opens.

use std::future::pending;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use infra_common::ManualClock;
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_edgecache::http::{CacheStatus, HttpCache, Origin, OriginError};
use tokio::sync::watch;

/// What the origin does with the next request.
#[allow(dead_code, reason = "each test file uses some of the replies")]
pub(crate) enum Reply {
    /// Answers once the gate is open.
    Response(Response<Bytes>),
    /// Answers at once, whether the gate is open or not.
    Ungated(Response<Bytes>),
    /// Answers after a wait on tokio's clock, once the gate is open.
    Delayed(Duration, Response<Bytes>),
    Fail,
    Hang,
    Panic,
}

type Script = Box<dyn FnMut(&Request<Bytes>) -> Reply + Send>;

pub(crate) struct TestOrigin {
    calls: AtomicUsize,
    seen: Mutex<Vec<(http::Method, HeaderMap)>>,
    script: Mutex<Script>,
    gate: watch::Sender<bool>,
}

#[allow(dead_code, reason = "each test file uses some of the helpers")]
impl TestOrigin {
    /// An origin answering through `script`, with its gate open.
    pub(crate) fn new(script: impl FnMut(&Request<Bytes>) -> Reply + Send + 'static) -> Self {
        Self {
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
            gate: watch::channel(true).0,
        }
    }

    /// Replaces the script.
    pub(crate) fn set_script(&self, script: impl FnMut(&Request<Bytes>) -> Reply + Send + 'static) {
        *self.script.lock() = Box::new(script);
    }

    /// Holds (false) or releases (true) every answer.
    pub(crate) fn set_open(&self, open: bool) {
        self.gate.send_replace(open);
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The method and header fields of every request received, in order.
    pub(crate) fn seen(&self) -> Vec<(http::Method, HeaderMap)> {
        self.seen.lock().clone()
    }
}

impl Origin for TestOrigin {
    async fn fetch(&self, request: Request<Bytes>) -> Result<Response<Bytes>, OriginError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .push((request.method().clone(), request.headers().clone()));
        let reply = (self.script.lock())(&request);
        if let Reply::Ungated(response) = reply {
            return Ok(response);
        }
        let mut open = self.gate.subscribe();
        if open.wait_for(|open| *open).await.is_err() {
            return Err(OriginError::new("gate dropped"));
        }
        match reply {
            Reply::Response(response) | Reply::Ungated(response) => Ok(response),
            Reply::Delayed(wait, response) => {
                tokio::time::sleep(wait).await;
                Ok(response)
            }
            Reply::Fail => Err(OriginError::new("connection refused")),
            Reply::Hang => pending().await,
            Reply::Panic => panic!("the origin client panicked"),
        }
    }
}

/// A 200 with `headers` and `body`.
pub(crate) fn response(headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    status(200, headers, body)
}

/// A response of `code` with `headers` and `body`.
pub(crate) fn status(code: u16, headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    let mut builder = Response::builder().status(code);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::from(body.to_owned())).unwrap()
}

/// A GET of `url` with `headers`.
pub(crate) fn get(url: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::new()).unwrap()
}

/// A cache of 64 MiB in front of `origin`, on `clock`.
#[allow(dead_code, reason = "each test file uses some of the helpers")]
pub(crate) fn cache(origin: TestOrigin, clock: &ManualClock) -> HttpCache<TestOrigin> {
    HttpCache::builder(origin, 64 << 20)
        .clock(clock.clone())
        .build()
}

/// A GET of `url` with `headers` through `cache`: how it was served, and the body.
#[allow(dead_code, reason = "each test file uses some of the helpers")]
pub(crate) async fn fetch_with(
    cache: &HttpCache<TestOrigin>,
    url: &str,
    headers: &[(&str, &str)],
) -> (CacheStatus, String) {
    let response = cache.serve(get(url, headers)).await.unwrap();
    let status = *response.extensions().get::<CacheStatus>().unwrap();
    (
        status,
        String::from_utf8(response.into_body().to_vec()).unwrap(),
    )
}
