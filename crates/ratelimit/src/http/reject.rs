//! The response to a request the layer refuses: why it was refused, and the default
//! `application/problem+json` body (RFC 9457).

use std::fmt::{self, Write as _};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::fields::retry_after_secs;
use crate::{Decision, Error};

/// Why the layer refused a request, handed to the rejection function
/// ([`RateLimitLayerBuilder::reject`](super::RateLimitLayerBuilder::reject)).
///
/// Whatever response that function builds, the layer then adds the rate-limit fields and
/// `Retry-After` of [`Rejection::decision`] to it, so a custom body never loses them.
///
/// ```
/// use http::StatusCode;
/// use infra_ratelimit::Decision;
/// use infra_ratelimit::http::Rejection;
/// use std::time::Duration;
///
/// let denied = Decision::denied(10, 0, Duration::from_millis(1500), Duration::from_secs(6));
/// let rejection = Rejection::Limited { policy: "default", decision: denied };
/// assert_eq!(rejection.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(rejection.decision().and_then(|d| d.retry_after_secs()), Some(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// The limiter denied the request: the key has spent its quota for now.
    Limited {
        /// The policy that denied it.
        policy: &'a str,
        /// The denial.
        decision: Decision,
    },
    /// The request costs more than the policy ever admits at once: it will be refused
    /// however long the client waits. So the default answer is `400 Bad Request`, not a
    /// `429`, and carries no `Retry-After` (nor rate-limit fields): a `429` or a
    /// `Retry-After` tells a client that waiting helps, and one that obeys would retry
    /// forever. The body says what the request cost and what the policy admits.
    CostTooHigh {
        /// The policy.
        policy: &'a str,
        /// What the request costs.
        cost: u32,
        /// The most the policy admits at once.
        capacity: u32,
    },
    /// The key is new and the limiter's key table is full of active keys
    /// ([`Error::TooManyKeys`]): new clients are refused until the limiter finds a tracked
    /// key that has replenished, known ones keep their limits.
    KeyTableFull {
        /// The policy.
        policy: &'a str,
        /// What the response states: the policy's quota, nothing left, and when a slot may
        /// be reclaimed.
        decision: Decision,
    },
    /// The request has no key and [`MissingKey::Reject`](super::MissingKey::Reject) applies.
    MissingKey,
    /// The request carries an identity its extractor cannot use
    /// ([`NoKey::Unusable`](super::NoKey::Unusable)): a malformed or ambiguous header, or
    /// none where the trusted proxies write it; or one larger than the limiter accepts
    /// ([`Error::TooLarge`](crate::Error::TooLarge)). A client error, refused whatever the
    /// [`MissingKey`](super::MissingKey) policy, so that no client can leave its own limit
    /// by spoiling its identity.
    UnusableKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The limiter could not decide (a Redis limiter that cannot reach Redis under
    /// `FailurePolicy::Error`; under `FailClosed` it denies, a [`Rejection::Limited`]).
    Unavailable {
        /// The policy.
        policy: &'a str,
        /// What went wrong.
        error: &'a Error,
    },
}

impl Rejection<'_> {
    /// The status of the default response: `429 Too Many Requests` for the two refusals
    /// that end with time (limited, key table full), `400 Bad Request` for the client's
    /// errors (a cost that no wait makes admissible, an unusable key), `500 Internal Server
    /// Error` for a missing key (the server could not tell who is calling), `503 Service
    /// Unavailable` when the limiter could not decide.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Limited { .. } | Self::KeyTableFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::CostTooHigh { .. } | Self::UnusableKey { .. } => StatusCode::BAD_REQUEST,
            Self::MissingKey => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The decision whose fields (and `Retry-After`) the response carries, for the refusals
    /// that waiting ends.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Self::Limited { decision, .. } | Self::KeyTableFull { decision, .. } => Some(decision),
            Self::CostTooHigh { .. }
            | Self::MissingKey
            | Self::UnusableKey { .. }
            | Self::Unavailable { .. } => None,
        }
    }

    /// The policy that refused the request, if one did.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Self::Limited { policy, .. }
            | Self::CostTooHigh { policy, .. }
            | Self::KeyTableFull { policy, .. }
            | Self::Unavailable { policy, .. } => Some(policy),
            Self::MissingKey | Self::UnusableKey { .. } => None,
        }
    }
}

/// Builds the response for a refused request, with body type `B`.
///
/// Implemented by [`ProblemJson`] (the default) and by every
/// `Fn(&Rejection<'_>) -> Response<B>`.
pub trait RejectResponse<B>: Send + Sync + 'static {
    /// The response; the layer adds the rate-limit fields afterwards.
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B>;
}

impl<B, F> RejectResponse<B> for F
where
    F: Fn(&Rejection<'_>) -> Response<B> + Send + Sync + 'static,
{
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B> {
        self(rejection)
    }
}

/// The default rejection: an `application/problem+json` body (RFC 9457) with `type`,
/// `title`, `status`, `detail` and, when the client should come back, `retry_after`
/// (seconds, the same as `Retry-After`) and `violated-policies`
/// (draft-ietf-httpapi-ratelimit-headers-11 §5.1). A
/// refusal by quota has the draft's `quota-exceeded` type; the others `about:blank` with
/// their status's title. Nothing from the request is echoed.
///
/// ```
/// use infra_ratelimit::Decision;
/// use infra_ratelimit::http::{ProblemJson, RejectResponse, Rejection};
/// use std::time::Duration;
///
/// let denied = Decision::denied(10, 0, Duration::from_secs(2), Duration::from_secs(6));
/// let response: http::Response<String> =
///     ProblemJson.respond(&Rejection::Limited { policy: "default", decision: denied });
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// assert!(response.body().contains(r#""retry_after":2"#));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProblemJson;

/// The problem type draft 11 registers for a request over its quota.
const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

impl<B: From<String>> RejectResponse<B> for ProblemJson {
    fn respond(&self, rejection: &Rejection<'_>) -> Response<B> {
        let status = rejection.status();
        let body = problem_body(rejection, status);
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

fn problem_body(rejection: &Rejection<'_>, status: StatusCode) -> String {
    let (kind, title, detail) = match rejection {
        Rejection::Limited { .. } => (
            QUOTA_EXCEEDED,
            "Quota Exceeded",
            "too many requests: retry after the time given".to_owned(),
        ),
        Rejection::CostTooHigh { cost, capacity, .. } => (
            "about:blank",
            "Bad Request",
            format!(
                "this request costs {cost} units and the policy admits at most {capacity} at \
                 once: it can never be admitted, however long the client waits; split it"
            ),
        ),
        Rejection::KeyTableFull { .. } => (
            "about:blank",
            "Too Many Requests",
            "the server is limiting too many clients to admit a new one: retry shortly".to_owned(),
        ),
        Rejection::UnusableKey { reason } => (
            "about:blank",
            "Bad Request",
            format!("the request's client identity is unusable: {reason}"),
        ),
        Rejection::MissingKey => (
            "about:blank",
            "Internal Server Error",
            "the server could not identify the client to rate-limit the request".to_owned(),
        ),
        Rejection::Unavailable { .. } => (
            "about:blank",
            "Service Unavailable",
            "the rate limiter could not decide: retry later".to_owned(),
        ),
    };
    let mut body = String::with_capacity(256);
    // Writing to a `String` cannot fail.
    let _ = write!(
        body,
        r#"{{"type":{},"title":{},"status":{},"detail":{}"#,
        JsonString(kind),
        JsonString(title),
        status.as_u16(),
        JsonString(&detail)
    );
    if let Some(secs) = rejection.decision().and_then(retry_after_secs) {
        let _ = write!(body, r#","retry_after":{secs}"#);
    }
    if let Some(policy) = rejection
        .policy()
        .filter(|_| rejection.decision().is_some())
    {
        let _ = write!(body, r#","violated-policies":[{}]"#, JsonString(policy));
    }
    body.push('}');
    body
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters escaped.
struct JsonString<'a>(&'a str);

impl fmt::Display for JsonString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c < ' ' => write!(f, "\\u{:04x}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}
