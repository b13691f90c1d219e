//! The crate's error types: why a request went unanswered, and why a purge was refused.

use std::fmt;
use std::time::Duration;

use super::origin::OriginError;

/// Why the cache could not answer a request (and had no stored response it was allowed to
/// serve instead).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The origin failed; retry later, or allow `stale-if-error` so a stored response can
    /// stand in.
    Origin(OriginError),
    /// The origin did not answer within the fetch timeout.
    Timeout(Duration),
    /// The fetch this request waited for ended without a result (its task panicked or its
    /// runtime shut down); retrying starts a new fetch.
    FetchAbandoned,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Origin(error) => error.fmt(f),
            Error::Timeout(after) => write!(f, "the origin did not answer within {after:?}"),
            Error::FetchAbandoned => f.write_str("the origin fetch ended without a result"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Origin(error) => Some(error),
            _ => None,
        }
    }
}

impl From<OriginError> for Error {
    fn from(error: OriginError) -> Self {
        Error::Origin(error)
    }
}

/// Why a purge by URL was refused (`HttpCache::purge_url`, feature `tokio`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PurgeError {
    /// The URI names no host (`/a.css`). Every stored response is keyed by the host its
    /// request named (requests without one are not stored), so a path alone names none of
    /// them; give the absolute URI the requests had (`http://example.com/a.css`).
    NoHost,
}

impl fmt::Display for PurgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PurgeError::NoHost => f.write_str(
                "a purge by URL needs the host the requests named (`http://host/path`), \
                 not a path alone",
            ),
        }
    }
}

impl std::error::Error for PurgeError {}
