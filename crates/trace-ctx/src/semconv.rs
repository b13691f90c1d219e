//! OpenTelemetry's stable HTTP semantic conventions, as the HTTP integrations record them.
//!
//! Every function here writes attributes on a span that is recording: callers check
//! [`Span::is_recording`] first, so an unsampled request allocates nothing for them.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::{Span, Status, Value};

/// The method as the conventions spell it: the RFC 9110 methods and PATCH; `None` for any
/// other (which the conventions record as `_OTHER`, and name spans `HTTP` for).
pub(crate) fn known_method(method: &http::Method) -> Option<&'static str> {
    Some(match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => return None,
    })
}

/// The span name the conventions give a request without a route: the method, or `HTTP`.
pub(crate) fn method_span_name(method: &http::Method) -> &'static str {
    known_method(method).unwrap_or("HTTP")
}

/// `http.request.method`, and `http.request.method_original` for a method the conventions
/// do not know.
fn record_method(span: &mut Span, method: &http::Method) {
    match known_method(method) {
        Some(known) => span.set_attribute("http.request.method", known),
        None => {
            span.set_attribute("http.request.method", "_OTHER");
            span.set_attribute("http.request.method_original", method.as_str().to_owned());
        }
    }
}

/// Splits `host[:port]` (a `Host` header or an authority without user info); an IPv6
/// literal loses its brackets, as `server.address` holds the bare address. `None` when the
/// port is not a number or the brackets do not close.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// `server.address` and `server.port`.
fn record_server(span: &mut Span, host: &str, port: Option<u16>) {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    span.set_attribute("server.address", host.to_owned());
    if let Some(port) = port {
        span.set_attribute("server.port", u32::from(port));
    }
}

/// The parts of a client request's URL that `url.full` is built from.
pub(crate) struct ClientUrl<'a> {
    pub(crate) scheme: &'a str,
    /// As the URL writes it (an IPv6 literal in brackets).
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
    /// Whether the URL carries a user name or password.
    pub(crate) credentials: bool,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
}

impl ClientUrl<'_> {
    /// `url.full` without credentials or query values: credentials become
    /// `REDACTED:REDACTED` (as the conventions require) and every query value becomes
    /// `REDACTED` (the conventions ask this for a list of signature keys; any value may be a
    /// token, so all are hidden, and the keys kept), as does a query part without `=`, which
    /// may be a token on its own. The fragment is never sent, so never recorded.
    pub(crate) fn redacted(&self) -> String {
        let mut url = String::with_capacity(
            self.scheme.len()
                + self.host.len()
                + self.path.len()
                + 32
                + self.query.map_or(0, str::len),
        );
        url.push_str(self.scheme);
        url.push_str("://");
        if self.credentials {
            url.push_str("REDACTED:REDACTED@");
        }
        url.push_str(self.host);
        if let Some(port) = self.port {
            // Writing to a String cannot fail.
            let _ = write!(url, ":{port}");
        }
        url.push_str(self.path);
        if let Some(query) = self.query {
            url.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    url.push('&');
                }
                match pair.split_once('=') {
                    Some((key, _)) => {
                        url.push_str(key);
                        url.push_str("=REDACTED");
                    }
                    // A part without `=` may be a token on its own (`?<api key>`).
                    None if !pair.is_empty() => url.push_str("REDACTED"),
                    None => {}
                }
            }
        }
        url
    }
}

/// A client request's attributes: `http.request.method`, `url.full`, `server.address`,
/// `server.port`. The conventions require `server.port` on a client span: a URL without a
/// port gets its scheme's default.
pub(crate) fn record_client_request(span: &mut Span, method: &http::Method, url: &ClientUrl<'_>) {
    record_method(span, method);
    span.set_attribute("url.full", url.redacted());
    record_server(
        span,
        url.host,
        url.port.or_else(|| default_port(url.scheme)),
    );
}

/// The port a URL of `scheme` means when it names none (RFC 9110 for HTTP, RFC 6455 for
/// WebSocket).
fn default_port(scheme: &str) -> Option<u16> {
    let is = |name: &str| scheme.eq_ignore_ascii_case(name);
    if is("http") || is("ws") {
        Some(80)
    } else if is("https") || is("wss") {
        Some(443)
    } else {
        None
    }
}

/// A client request whose URI may be relative (a tower client given a path): `url.full`
/// only for an absolute URI; the server from the URI or else the `Host` header.
pub(crate) fn record_client_http_request<B>(span: &mut Span, request: &http::Request<B>) {
    let uri = request.uri();
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => record_client_request(
            span,
            request.method(),
            &ClientUrl {
                scheme,
                host: authority.host(),
                port: authority.port_u16(),
                credentials: authority.as_str().contains('@'),
                path: uri.path(),
                query: uri.query(),
            },
        ),
        _ => {
            record_method(span, request.method());
            record_host_header(span, request);
        }
    }
}

/// `server.address` and `server.port` from the `Host` header, or from the URI's authority
/// (HTTP/2 carries the host there).
fn record_host_header<B>(span: &mut Span, request: &http::Request<B>) {
    let authority = request
        .headers()
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri().authority().map(http::uri::Authority::as_str));
    // User info never belongs in a Host header; an authority may carry it.
    if let Some((host, port)) = authority
        .map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host))
        .and_then(split_host_port)
    {
        record_server(span, host, port);
    }
}

/// A server request's attributes: `http.request.method`, `url.path`, `url.scheme` (the
/// request URI's, else `http`: a server behind TLS termination in another process sees
/// plain HTTP), `http.route` when the span is named `{method} {route}`, `server.address`
/// and `server.port` from `Host`.
pub(crate) fn record_server_request<B>(span: &mut Span, request: &http::Request<B>) {
    let route = span
        .recorded_name()
        .and_then(|name| route_in_name(name, request.method()))
        .map(str::to_owned);
    record_method(span, request.method());
    span.set_attribute("url.path", request.uri().path().to_owned());
    let scheme: Cow<'static, str> = match request.uri().scheme_str() {
        Some("https") => Cow::Borrowed("https"),
        Some("http") | None => Cow::Borrowed("http"),
        Some(other) => Cow::Owned(other.to_owned()),
    };
    span.set_attribute("url.scheme", Value::Str(scheme));
    if let Some(route) = route {
        span.set_attribute("http.route", route);
    }
    record_host_header(span, request);
}

/// The route template in a span name of the form `{method} {route}`, the conventions' name
/// for a request with a known route.
pub(crate) fn route_in_name<'a>(name: &'a str, method: &http::Method) -> Option<&'a str> {
    let route = name.strip_prefix(method.as_str())?.strip_prefix(' ')?;
    (!route.is_empty()).then_some(route)
}

/// The response's attributes and status: `http.response.status_code`, and for a failed
/// request `error.type` (the status code) and status error. A 5xx fails a server span; a
/// 4xx or 5xx fails a client span (the conventions' rule: a 4xx is the client's fault).
pub(crate) fn record_response(span: &mut Span, status: http::StatusCode, client: bool) {
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    let failed = status.is_server_error() || (client && status.is_client_error());
    if failed {
        span.set_attribute("error.type", status.as_str().to_owned());
        span.set_status(Status::Error(if status.is_server_error() {
            "server error".into()
        } else {
            "client error".into()
        }));
    }
}

/// A request that failed without a response: `error.type` (`_OTHER`, the conventions'
/// fallback, unless the caller knows better) and status error. A span already failed (a 5xx
/// whose body then broke or was dropped) keeps its first failure, the exchange's cause.
pub(crate) fn record_failure(span: &mut Span, error_type: &'static str, description: &'static str) {
    if span.has_failed() {
        return;
    }
    span.set_attribute("error.type", error_type);
    span.set_status(Status::Error(description.into()));
}

/// What a span held by an [`AwaitedResponse`] waits for: the outcome it was dropped without.
#[derive(Clone, Copy, Debug)]
enum Awaited {
    /// The response head: the request was given up (a timeout around the call fired, a
    /// `select!` took another branch, a server's client disconnected).
    Head,
    /// The response body's end: the body was dropped mid-stream (the client went away).
    BodyEnd,
}

impl Awaited {
    const fn description(self) -> &'static str {
        match self {
            Self::Head => "the request was cancelled before its response",
            Self::BodyEnd => "the response body was dropped before its end",
        }
    }
}

/// A span waiting for its exchange's outcome: a call's or a served request's response, or
/// the end of a served response's body. Dropped while it still holds the span, the exchange
/// was cut short: the span ends with `error.type` `_OTHER` and status error, since a request
/// that got no response, or a body that never reached its end, must not read as a success.
#[derive(Debug)]
pub(crate) struct AwaitedResponse {
    span: Option<Span>,
    awaited: Awaited,
}

impl AwaitedResponse {
    /// Waits for the response head.
    pub(crate) const fn new(span: Option<Span>) -> Self {
        Self {
            span,
            awaited: Awaited::Head,
        }
    }

    /// Waits for the end of the response body.
    pub(crate) const fn body_end(span: Option<Span>) -> Self {
        Self {
            span,
            awaited: Awaited::BodyEnd,
        }
    }

    /// The span, once the exchange has an outcome to record on it.
    pub(crate) fn take(&mut self) -> Option<Span> {
        self.span.take()
    }
}

impl Drop for AwaitedResponse {
    fn drop(&mut self) {
        if let Some(span) = &mut self.span
            && span.is_recording()
        {
            record_failure(span, "_OTHER", self.awaited.description());
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_by_the_authority_grammar() {
        type Case = (&'static str, Option<(&'static str, Option<u16>)>);
        let cases: &[Case] = &[
            ("example.com", Some(("example.com", None))),
            ("example.com:8080", Some(("example.com", Some(8080)))),
            ("127.0.0.1:80", Some(("127.0.0.1", Some(80)))),
            ("[::1]:8443", Some(("::1", Some(8443)))),
            ("[::1]", Some(("::1", None))),
            ("[::1", None),
            ("example.com:http", None),
            ("example.com:99999", None),
            (":80", None),
            ("", None),
        ];
        for (authority, expected) in cases {
            assert_eq!(split_host_port(authority), *expected, "{authority}");
        }
    }

    #[test]
    fn url_full_hides_query_values_and_credentials() {
        let url = |credentials, query| ClientUrl {
            scheme: "https",
            host: "[::1]",
            port: Some(8443),
            credentials,
            path: "/pay",
            query,
        };
        assert_eq!(url(false, None).redacted(), "https://[::1]:8443/pay");
        assert_eq!(
            url(true, Some("sig=abc&user=7&flag&=x")).redacted(),
            "https://REDACTED:REDACTED@[::1]:8443/pay?sig=REDACTED&user=REDACTED&REDACTED&=REDACTED"
        );
        // A bare part may be the secret itself; empty parts stay empty.
        assert_eq!(
            url(false, Some("AKIA5EXAMPLE5TOKEN&&x=1")).redacted(),
            "https://[::1]:8443/pay?REDACTED&&x=REDACTED"
        );
        assert_eq!(url(false, Some("")).redacted(), "https://[::1]:8443/pay?");
    }

    #[test]
    fn a_route_is_read_from_a_name_that_starts_with_the_method() {
        let get = http::Method::GET;
        assert_eq!(route_in_name("GET /cart/{id}", &get), Some("/cart/{id}"));
        assert_eq!(route_in_name("GET", &get), None);
        assert_eq!(route_in_name("GET ", &get), None);
        assert_eq!(route_in_name("POST /pay", &get), None);
        assert_eq!(route_in_name("GETX /a", &get), None);
    }
}
