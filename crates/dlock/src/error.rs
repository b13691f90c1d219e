//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use crate::grant::{Access, FencingToken};

/// Everything that can go wrong when asking for, keeping, releasing or checking a grant.
///
/// Bad input (an empty or oversized name, a zero or oversized lease, a semaphore without
/// permits) is refused before anything is locked. The lease errors say that the caller no
/// longer holds what it thinks it holds; the fence errors say that a write must not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The lock name is empty. Name the resource the lock protects.
    EmptyName,
    /// The lock name is longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes.
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// The lease is zero: the grant would expire the moment it was made.
    ZeroLease,
    /// The lease is longer than [`MAX_LEASE`](crate::MAX_LEASE). Hold the lock for less and
    /// [`extend`](crate::Locks::extend) it while the work goes on.
    LeaseTooLong {
        /// The lease asked for.
        lease: Duration,
        /// The longest lease accepted.
        max: Duration,
    },
    /// A semaphore was asked for with zero permits: nobody could ever hold it.
    ZeroPermits,
    /// The name is in use as another kind of lock: a semaphore with a different number of
    /// permits, or a semaphore where a mutex or read-write lock is held or awaited (or the
    /// other way round). One name is one lock; use a different name.
    KindMismatch {
        /// The lock name.
        name: String,
    },
    /// The grant was issued by another backend instance; only the issuer can act on it.
    ForeignGrant {
        /// The lock name the grant is for.
        name: String,
        /// The grant's token.
        token: FencingToken,
    },
    /// The grant's lease ran out before this call, so the lock may already belong to someone
    /// else: the caller must stop acting on the protected resource. Acquire the lock again.
    LeaseExpired {
        /// The lock name.
        name: String,
        /// The token of the grant that expired.
        token: FencingToken,
    },
    /// The backend does not grant this kind of hold, for the reason given: the locks it would
    /// hand out could not keep their promises (exclusion, growing tokens). Use a backend that
    /// does, or another kind of lock.
    UnsupportedAccess {
        /// The kind of hold asked for.
        access: Access,
        /// Why the backend refuses it.
        reason: &'static str,
    },
    /// The backend has issued the largest token it can represent and cannot grant again
    /// without breaking the promise that tokens grow.
    TokensExhausted,
    /// The lease is not longer than the backend's clock-drift allowance, so the grant would
    /// be over before it could be used. Ask for a longer lease.
    LeaseTooShort {
        /// The lease asked for.
        lease: Duration,
        /// The part of a lease the backend sets aside for clock drift.
        allowance: Duration,
    },
    /// The grant arrived with its lease already spent on the client's clock: the lease is not
    /// longer than the round trips a grant takes, so no attempt could ever be used. The grant
    /// was given back. Ask for a longer lease.
    LeaseSpentOnArrival {
        /// The lease asked for.
        lease: Duration,
        /// How long the attempt took, from sending the request to reading the answer.
        took: Duration,
    },
    /// A renewal interval that is zero or not shorter than the lease: renewals would spin,
    /// or come after the lease had run out. Renew well within the lease (by default, every
    /// third of it).
    RenewalInterval {
        /// The interval asked for.
        every: Duration,
        /// The lease it renews.
        lease: Duration,
    },
    /// The lock server could not be asked (refused, cut or timed-out connection) or answered
    /// something unexpected. After a timeout the outcome is unknown: a grant may have been
    /// made (it runs out with its lease) or a release may have happened. Retry, or give up.
    Backend {
        /// What went wrong, as reported by the client or the server.
        reason: String,
    },
    /// A [`Fence`](crate::Fence) refused a token older than one it has already admitted for
    /// the resource: the writer's grant was superseded, and its write must not happen.
    StaleToken {
        /// The resource the write was for.
        resource: String,
        /// The token presented.
        token: FencingToken,
        /// The highest token the fence has admitted for the resource.
        highest: FencingToken,
    },
    /// A [`Fence`](crate::Fence) was shown a token of a different lock than the one that
    /// guards the resource. Tokens of different locks are not comparable.
    WrongLock {
        /// The resource the write was for.
        resource: String,
        /// The lock whose tokens guard the resource.
        expected: String,
        /// The lock the presented token belongs to.
        got: String,
    },
    /// A [`Fence`](crate::Fence) was shown token 0, which no lock service issues: the token
    /// was never taken from a grant.
    ZeroToken,
    /// A [`Fence`](crate::Fence) was asked about a resource with an empty name. Name the
    /// resource the write or read is for.
    EmptyResource,
    /// A [`Fence`](crate::Fence) was asked about a resource whose name is longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes. The fence keeps every resource's name for
    /// its life, so it bounds them as the lock services bound lock names.
    ResourceTooLong {
        /// The resource name's length in bytes.
        len: usize,
        /// The longest resource name accepted.
        max: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => f.write_str("the lock name is empty"),
            Self::NameTooLong { len, max } => {
                write!(
                    f,
                    "the lock name is {len} bytes long; at most {max} are accepted"
                )
            }
            Self::ZeroLease => f.write_str("the lease is zero"),
            Self::LeaseTooLong { lease, max } => {
                write!(
                    f,
                    "the lease of {lease:?} is longer than the maximum of {max:?}"
                )
            }
            Self::ZeroPermits => f.write_str("a semaphore needs at least one permit"),
            Self::KindMismatch { name } => {
                write!(f, "lock {name:?} is in use as a different kind of lock")
            }
            Self::ForeignGrant { name, token } => write!(
                f,
                "grant {token} on lock {name:?} was issued by another backend instance"
            ),
            Self::LeaseExpired { name, token } => {
                write!(f, "the lease of grant {token} on lock {name:?} has expired")
            }
            Self::UnsupportedAccess { access, reason } => {
                write!(f, "this backend does not grant {access:?} holds: {reason}")
            }
            Self::TokensExhausted => f.write_str("the backend has no fencing tokens left"),
            Self::LeaseTooShort { lease, allowance } => write!(
                f,
                "the lease of {lease:?} is not longer than the clock-drift allowance of {allowance:?}"
            ),
            Self::LeaseSpentOnArrival { lease, took } => write!(
                f,
                "the lease of {lease:?} was spent before the grant arrived ({took:?}); ask for a longer lease"
            ),
            Self::RenewalInterval { every, lease } => write!(
                f,
                "a renewal every {every:?} cannot keep a lease of {lease:?}: renew more often than the lease, and not continuously"
            ),
            Self::Backend { reason } => write!(f, "the lock server failed: {reason}"),
            Self::StaleToken {
                resource,
                token,
                highest,
            } => write!(
                f,
                "stale token {token} for {resource:?}: token {highest} was already admitted"
            ),
            Self::WrongLock {
                resource,
                expected,
                got,
            } => write!(
                f,
                "{resource:?} is guarded by lock {expected:?}, not by lock {got:?}"
            ),
            Self::ZeroToken => {
                f.write_str("token 0 was presented to a fence; no lock service issues it")
            }
            Self::EmptyResource => f.write_str("the fenced resource's name is empty"),
            Self::ResourceTooLong { len, max } => {
                write!(
                    f,
                    "the fenced resource's name is {len} bytes long; at most {max} are accepted"
                )
            }
        }
    }
}

impl std::error::Error for Error {}
