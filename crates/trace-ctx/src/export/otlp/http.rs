//! The POST itself, with the OTLP/HTTP retry rules: 429, 502, 503, 504 and connection
//! failures are retried with exponential back-off and jitter (or after the receiver's
//! `Retry-After`, in seconds or as an HTTP-date), everything else is final here (the exporter
//! splits a batch a receiver finds too large: `413`).
//!
//! The client is ureq without default features: blocking, which is what the batch
//! processor's background thread wants (no async runtime to bring along), small, and with
//! no TLS stack, since the usual target is a collector on the same host or pod.

use std::time::{Duration, SystemTime};

use infra_common::Clock;
use infra_common::sync::Arc;

use super::response;
use super::{ExportError, ShutdownSignal};

/// How an [`OtlpExporter`](super::OtlpExporter) retries a request that failed for a reason
/// worth retrying (HTTP 429, 502, 503, 504, or no connection or answer).
///
/// The wait before retry `n` (from 1) is a random time between half and all of
/// `initial_backoff × 2^(n-1)`, capped at `max_backoff`. A `Retry-After` from the receiver
/// replaces it: in seconds, or an HTTP-date measured from the wall time of the exporter's
/// clock (a date already past means "retry now"). A receiver that asks for more than
/// `max_backoff` is not retried early: the batch is given up at once
/// ([`ExportError::GaveUp`]), so a throttling collector is never asked again before the time
/// it named, and the exporter's thread is not held for longer than `max_backoff`. A
/// `Retry-After` that is neither form leaves the back-off. One request therefore takes at
/// most `max_attempts × (timeout + max_backoff)`; a batch the receiver finds too large (`413`)
/// is sent again in halves, each a request of its own (up to 2n − 1 for n spans).
///
/// ```
/// use std::time::Duration;
/// use infra_trace_ctx::RetryPolicy;
///
/// let patient = RetryPolicy { max_attempts: 8, ..RetryPolicy::default() };
/// assert_eq!(patient.initial_backoff, Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests sent at most per batch, the first included (0 counts as 1). Default 5.
    pub max_attempts: u32,
    /// The wait before the first retry. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `retry` (from 1), given a random `u64`.
    fn backoff(&self, retry: u32, random: u64) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(20));
        let ceiling = doubled.min(self.max_backoff);
        // Between half and all of the ceiling ("equal jitter").
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random % spread.saturating_add(1))
    }
}

/// What every request says it comes from, unless the user set a `User-Agent` header.
const USER_AGENT: &str = concat!(
    "infra-trace-ctx/",
    env!("CARGO_PKG_VERSION"),
    " (Rust; OTLP exporter)"
);

#[derive(Debug)]
pub(super) struct Sender {
    agent: ureq::Agent,
    url: ::http::Uri,
    headers: Vec<(::http::HeaderName, ::http::HeaderValue)>,
    retry: RetryPolicy,
    /// Its wall time is what a `Retry-After` date is measured from.
    clock: Arc<Box<dyn Clock>>,
    /// Requests go as OTLP/JSON (else protobuf), and so come the answers.
    json: bool,
}

impl Sender {
    pub(super) fn new(
        url: &str,
        headers: &[(String, String)],
        content_type: &'static str,
        gzip: bool,
        timeout: Duration,
        retry: RetryPolicy,
        clock: Arc<Box<dyn Clock>>,
    ) -> Result<Self, ExportError> {
        const ENDPOINT: &str = "endpoint";
        let uri: ::http::Uri = url
            .parse()
            .map_err(|_| ExportError::invalid(ENDPOINT, format!("{url:?} is not a URL")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(ExportError::invalid(
                    ENDPOINT,
                    "https needs TLS, which this exporter does not include; send to a local collector over http",
                ));
            }
            _ => {
                return Err(ExportError::invalid(
                    ENDPOINT,
                    format!("{url:?} is not an http:// URL"),
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(ExportError::invalid(
                ENDPOINT,
                format!("{url:?} has no host"),
            ));
        }
        if timeout.is_zero() || timeout > Duration::from_millis(super::env::MAX_TIMEOUT_MS) {
            return Err(ExportError::invalid(
                "timeout",
                "must be more than zero and at most an hour",
            ));
        }
        let mut all = vec![(
            ::http::header::CONTENT_TYPE,
            ::http::HeaderValue::from_static(content_type),
        )];
        if gzip {
            all.push((
                ::http::header::CONTENT_ENCODING,
                ::http::HeaderValue::from_static("gzip"),
            ));
        }
        for (name, value) in headers {
            let name = ::http::HeaderName::try_from(name.as_str()).map_err(|_| {
                ExportError::invalid("headers", format!("bad header name {name:?}"))
            })?;
            // These describe the body the exporter encodes: a second value would contradict it.
            if [
                ::http::header::CONTENT_TYPE,
                ::http::header::CONTENT_ENCODING,
                ::http::header::CONTENT_LENGTH,
            ]
            .contains(&name)
            {
                return Err(ExportError::invalid(
                    "headers",
                    format!("{name} is set by the exporter"),
                ));
            }
            let value = ::http::HeaderValue::try_from(value.as_str()).map_err(|_| {
                ExportError::invalid("headers", format!("bad value for header {name}"))
            })?;
            all.push((name, value));
        }
        // The OTLP exporter specification asks for the exporter, its language and its version
        // here; a value the user configured wins.
        if !all
            .iter()
            .any(|(name, _)| name == ::http::header::USER_AGENT)
        {
            all.push((
                ::http::header::USER_AGENT,
                ::http::HeaderValue::from_static(USER_AGENT),
            ));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are read and classified here, not turned into errors.
            .http_status_as_error(false)
            // A proxy from the environment would send loopback traffic elsewhere.
            .proxy(None)
            .max_redirects(0)
            .build();
        Ok(Self {
            agent: config.into(),
            url: uri,
            headers: all,
            retry,
            clock,
            json: content_type.ends_with("json"),
        })
    }

    /// POSTs `body`, retrying what is worth retrying until `shutdown` is raised.
    pub(super) fn send(&self, body: &[u8], shutdown: &ShutdownSignal) -> Result<(), ExportError> {
        if shutdown.is_raised() {
            return Err(ExportError::Abandoned);
        }
        let attempts = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match self.post(body) {
                Attempt::Done => return Ok(()),
                Attempt::Final(error) => return Err(error),
                Attempt::Retryable { error, retry_after } => (error, retry_after),
            };
            let wait = if attempt < attempts {
                self.wait_before_retry(attempt, retry_after.as_deref())
            } else {
                None
            };
            match wait {
                Some(wait) if !shutdown.wait_timeout(wait) => attempt += 1,
                _ => {
                    return Err(ExportError::GaveUp {
                        attempts: attempt,
                        last: Box::new(error),
                    });
                }
            }
        }
    }

    /// The receiver's `Retry-After` if it is one, else the back-off; `None` when the receiver
    /// asks for more than `max_backoff` (the batch is then given up rather than retried early).
    fn wait_before_retry(&self, retry: u32, retry_after: Option<&str>) -> Option<Duration> {
        match retry_after.and_then(|value| parse_retry_after(value, self.clock.wall_time())) {
            Some(asked) if asked > self.retry.max_backoff => None,
            Some(asked) => Some(asked),
            None => Some(self.retry.backoff(retry, crate::id::next_random())),
        }
    }

    fn post(&self, body: &[u8]) -> Attempt {
        let mut request = self.agent.post(&self.url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut response = match request.send(body) {
            Ok(response) => response,
            Err(error) => {
                return match error {
                    ureq::Error::Timeout(_)
                    | ureq::Error::Io(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound
                    | ureq::Error::Protocol(_) => Attempt::Retryable {
                        error: ExportError::Transport(error.to_string()),
                        retry_after: None,
                    },
                    other => Attempt::Final(ExportError::Transport(other.to_string())),
                };
            }
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => self.read_partial_success(&mut response),
            429 | 502 | 503 | 504 => Attempt::Retryable {
                error: ExportError::Rejected { status },
                retry_after: response
                    .headers()
                    .get(::http::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned),
            },
            _ => Attempt::Final(ExportError::Rejected { status }),
        }
    }
}

impl Sender {
    /// A success, unless the body says the receiver rejected some of the spans. A body that
    /// cannot be read or decoded is a plain success: the receiver said `2xx`.
    fn read_partial_success(&self, response: &mut ::http::Response<ureq::Body>) -> Attempt {
        let Ok(body) = response
            .body_mut()
            .with_config()
            .limit(response::MAX_BODY)
            .read_to_vec()
        else {
            return Attempt::Done;
        };
        let answer = if self.json {
            response::decode_json(&body)
        } else {
            response::decode_protobuf(&body)
        };
        match answer {
            Some(partial) if partial.rejected > 0 => {
                Attempt::Final(ExportError::PartiallyRejected {
                    rejected: partial.rejected,
                    message: partial.message,
                })
            }
            _ => Attempt::Done,
        }
    }
}

enum Attempt {
    Done,
    Final(ExportError),
    Retryable {
        error: ExportError,
        /// The receiver's `Retry-After`, read when the wait starts.
        retry_after: Option<String>,
    },
}

/// How long `Retry-After` asks to wait (RFC 9110 §10.2.3): `<delay-seconds>`, or an HTTP-date
/// in any of the three forms §5.6.7 makes recipients accept, measured from `now` (zero once
/// past). `None` for anything else, so the normal back-off applies.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is "a very long time": the cap applies.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::time::UNIX_EPOCH;

    use infra_common::ManualClock;

    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_within_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        // (retry, the un-jittered ceiling)
        for (retry, ceiling_ms) in [(1, 100), (2, 200), (3, 400), (4, 500), (40, 500)] {
            let ceiling = Duration::from_millis(ceiling_ms);
            for random in [0, 1, 12_345, u64::MAX] {
                let wait = policy.backoff(retry, random);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{retry} {random} {wait:?}"
                );
            }
            assert_eq!(policy.backoff(retry, 0), ceiling / 2);
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_from_now() {
        // 2015-10-21T07:28:00Z
        let date = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let before = |secs| date - Duration::from_secs(secs);
        assert_eq!(parse_retry_after(" 3 ", date), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("99999999999999999999999", date),
            Some(Duration::from_secs(u64::MAX))
        );
        // The three HTTP-date forms, each naming the same instant.
        for form in [
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(
                parse_retry_after(form, before(90)),
                Some(Duration::from_secs(90)),
                "{form}"
            );
            assert_eq!(parse_retry_after(form, date), Some(Duration::ZERO));
            assert_eq!(
                parse_retry_after(form, date + Duration::from_secs(3600)),
                Some(Duration::ZERO),
                "a date already past means now: {form}"
            );
        }
        for bad in [
            "",
            "-1",
            "1.5",
            "+3",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:00",
            "tomorrow",
        ] {
            assert_eq!(parse_retry_after(bad, date), None, "{bad}");
        }
    }

    #[test]
    fn a_wait_longer_than_the_max_backoff_gives_the_batch_up() {
        let clock = ManualClock::with_wall_time(UNIX_EPOCH + Duration::from_secs(1_445_412_480));
        let sender = sender(clock.clone(), Duration::from_secs(5));
        let in_a_minute = httpdate::fmt_http_date(clock.wall_time() + Duration::from_secs(60));
        let in_two_seconds = httpdate::fmt_http_date(clock.wall_time() + Duration::from_secs(2));
        assert_eq!(
            sender.wait_before_retry(1, Some(&in_a_minute)),
            None,
            "retrying after 5 s would ask again 55 s before the receiver said"
        );
        assert_eq!(sender.wait_before_retry(1, Some("6")), None);
        assert_eq!(
            sender.wait_before_retry(1, Some("5")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            sender.wait_before_retry(1, Some(&in_two_seconds)),
            Some(Duration::from_secs(2))
        );
        // The date is read against the clock as it is when the answer arrives.
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            sender.wait_before_retry(1, Some(&in_two_seconds)),
            Some(Duration::from_secs(1))
        );
        // Garbage is the normal back-off: between half and all of 100 ms on the first retry.
        let wait = sender.wait_before_retry(1, Some("soon")).unwrap();
        assert!(
            wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    fn sender(clock: ManualClock, max_backoff: Duration) -> Sender {
        Sender::new(
            "http://127.0.0.1:9/v1/traces",
            &[],
            "application/x-protobuf",
            false,
            Duration::from_secs(1),
            RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(100),
                max_backoff,
            },
            Arc::new(Box::new(clock)),
        )
        .unwrap()
    }
}
