//! What can go wrong between a finished span and the receiver that should store it.

use std::fmt;

/// Why spans could not be flushed, configured or delivered.
///
/// Kept apart from [`crate::Error`], which describes malformed trace context and is built
/// without allocating: an export failure carries what the network or the receiver said.
///
/// ```
/// use infra_trace_ctx::ExportError;
///
/// let error = ExportError::Rejected { status: 400 };
/// assert_eq!(error.to_string(), "the receiver rejected the spans with HTTP status 400");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportError {
    /// A flush or shutdown did not see every queued span handed to the exporter before its
    /// deadline. After a flush the spans stay queued and are still exported later; after a
    /// shutdown the exporter is told to give them up (see [`crate::ShutdownSignal`]).
    Timeout,
    /// A setting (builder value or environment variable) is invalid; nothing was started.
    InvalidConfig {
        /// The setting, for example `OTEL_EXPORTER_OTLP_TIMEOUT`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The receiver answered with a status that is neither success nor worth a retry.
    Rejected {
        /// The HTTP status code.
        status: u16,
    },
    /// The receiver could not be reached or did not answer in time.
    Transport(String),
    /// Retrying stopped: every attempt allowed failed with a retryable error, the receiver
    /// asked (`Retry-After`) to wait longer than the retry policy's `max_backoff`, or the batch
    /// processor's shutdown deadline passed while waiting to retry. The last error is kept.
    GaveUp {
        /// How many requests were sent.
        attempts: u32,
        /// Why the last one failed.
        last: Box<ExportError>,
    },
    /// Not sent: the batch processor's shutdown deadline had passed, so nobody waits for it.
    Abandoned,
    /// The receiver accepted the request but did not store `rejected` of its spans (OTLP's
    /// partial success). Not retried: the receiver decided about each span.
    PartiallyRejected {
        /// Spans the receiver did not store.
        rejected: u64,
        /// Why, in the receiver's words (may be empty).
        message: String,
    },
    /// A flush or shutdown saw every queued span handed to the exporter, but `spans` of those
    /// queued before it were not delivered (see [`crate::BatchStats::failed`]).
    NotDelivered {
        /// Spans queued before the flush or shutdown that were not delivered. A batch that
        /// also holds spans ended after the call counts only the call's; of a batch the
        /// receiver rejected in part, which spans were rejected is not known, so up to the
        /// call's are counted.
        spans: u64,
        /// The exporter's last error, or `None` if it panicked.
        last: Option<Box<ExportError>>,
    },
}

impl ExportError {
    pub(crate) fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            setting,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out before every queued span was exported"),
            Self::InvalidConfig { setting, reason } => write!(f, "invalid {setting}: {reason}"),
            Self::Rejected { status } => write!(
                f,
                "the receiver rejected the spans with HTTP status {status}"
            ),
            Self::Transport(reason) => write!(f, "could not reach the receiver: {reason}"),
            Self::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            Self::Abandoned => f.write_str("not sent: the shutdown deadline had passed"),
            Self::PartiallyRejected { rejected, message } => {
                write!(
                    f,
                    "the receiver rejected {rejected} of the spans: {message}"
                )
            }
            Self::NotDelivered { spans, last } => match last {
                Some(last) => write!(f, "{spans} spans were not delivered: {last}"),
                None => write!(f, "{spans} spans were not delivered: the exporter panicked"),
            },
        }
    }
}

impl std::error::Error for ExportError {}
