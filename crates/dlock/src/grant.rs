//! What a backend hands out: a grant with its fencing token and lease, and the words used to
//! ask for one.

use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;

use crate::error::Error;

/// The longest lease a backend accepts: one week.
///
/// A lock held longer should be extended while the work goes on, so that a holder that dies
/// frees it in reasonable time. The bound also keeps every deadline far from overflowing.
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 512;

/// A number that grows with every grant of a lock: the proof a protected resource checks.
///
/// For one lock name, every grant carries a token strictly greater than the token of every
/// earlier grant of that name, so a resource that remembers the highest token it has seen (a
/// [`Fence`](crate::Fence)) can refuse a write from a holder whose grant was superseded, even
/// if that holder still believes it holds the lock. Tokens of different lock names are not
/// comparable. Token 0 is never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token with value `value`, as received from a client that was granted it.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The token's value, to send along with a write.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What kind of hold a grant gives on its lock name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// The only holder: a mutex, or the writer of a read-write lock.
    Exclusive,
    /// One of any number of readers of a read-write lock; excludes [`Access::Exclusive`].
    ///
    /// Every reader gets a token of its own, from the same sequence as the writers', so a
    /// writer granted after a reader always has a greater token. A reader's token orders its
    /// grant but is not for writing: a fence admitting a reader's token would refuse the other
    /// readers' older tokens. Present it to [`Fence::check`](crate::Fence::check) instead,
    /// which refuses a reader older than the last admitted write and raises only the read
    /// mark, below which [`Fence::admit`](crate::Fence::admit) refuses a writer.
    Shared,
    /// One of `permits` holders of a counting semaphore.
    ///
    /// Each permit carries its own token; all permits of one name share one sequence. A fence
    /// cannot bound a semaphore's concurrency: permits do not exclude each other, so no later
    /// permit raises the mark of the resource a stalled permit holder writes to, and its late
    /// write is admitted. A semaphore limits concurrency only while no holder outlives its
    /// lease.
    Permit {
        /// How many permits the semaphore has. Every request for the name must agree.
        permits: u32,
    },
}

/// How long an acquisition may wait for its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wait {
    /// Do not wait: grant now or give up.
    No,
    /// Wait at most this long, measured on the backend's clock.
    Up(Duration),
    /// Wait until granted.
    Forever,
}

/// A lock name as a backend's record and its grants keep it: a short name is copied into the
/// grant, a longer one is shared.
///
/// A copy of a few bytes costs less than a shared count, which is an atomic read-modify-write
/// when the grant is made and another when it is dropped: on an uncontended in-process lock,
/// as much as the lock itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum LockName {
    /// A name of at most [`INLINE_NAME`] bytes; the bytes past `len` are zero.
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    /// A longer name.
    Shared(SharedName),
}

/// The longest name a [`LockName`] holds without sharing it: a grant's name then takes as
/// much room as a shared one's pointer and length plus eight bytes.
const INLINE_NAME: usize = 22;

// An immutable string behind std's `Arc`: nothing is synchronized through it, so there is
// nothing for loom to model, and loom's `Arc` cannot hold a `str`.
#[allow(clippy::disallowed_types)]
type SharedName = std::sync::Arc<str>;

impl From<&str> for LockName {
    fn from(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE_NAME => {
                let mut bytes = [0; INLINE_NAME];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(SharedName::from(name)),
        }
    }
}

impl std::ops::Deref for LockName {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied from a whole `str`")
            }
            Self::Shared(name) => name,
        }
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A lease on a lock: who holds it, with which token, until when.
///
/// A grant is data, not a handle: it does not release anything when dropped (a
/// [`LockGuard`](crate::LockGuard) does). It is not `Clone`, so releasing it consumes the one
/// copy. The lease is measured on the backend's monotonic [`Clock`](infra_common::Clock) from
/// the moment the grant was confirmed — for a server backend, when the request was sent, so
/// that the holder's lease never ends after the server's — and the grant is held during
/// `[granted_at_nanos, granted_at_nanos + lease)`.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    pub(crate) name: LockName,
    pub(crate) access: Access,
    pub(crate) token: FencingToken,
    pub(crate) granted_at: u64,
    pub(crate) lease: Duration,
    /// The identity of the backend instance that issued the grant.
    pub(crate) issuer: u64,
    /// Which of the issuer's records of the lock the grant was made in (the in-process
    /// backend's per-name state, so a handle knows its own grants by one compare; for a
    /// Redlock, the nonce of the grant request, kept beside the lock key on each server; 0 for
    /// the other server backends).
    pub(crate) record: u64,
}

impl Grant {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of hold.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The fencing token: send it with every write to the protected resource.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The clock reading the lease counts from: when the grant (or its latest extension) was
    /// made, for the in-process backend; for a lock server (Redis, etcd), when the request
    /// the server confirmed was sent, which is never later than the server starts counting.
    /// For a waiter, it is the hand-over, not the start of the wait.
    pub fn granted_at_nanos(&self) -> u64 {
        self.granted_at
    }

    /// The lease length, counted from [`Grant::granted_at_nanos`].
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The clock reading at which the lease runs out (saturating at `u64::MAX`).
    pub fn deadline_nanos(&self) -> u64 {
        self.granted_at.saturating_add(self.lease_nanos())
    }

    /// A copy for a call that must own its grant (a blocking call on another thread); the
    /// copy is not a second hold, only the same record, and is never handed to users.
    #[cfg(feature = "tokio")]
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            name: LockName::clone(&self.name),
            ..*self
        }
    }

    pub(crate) fn lease_nanos(&self) -> u64 {
        duration_to_nanos(self.lease)
    }
}

/// Checks a request for a hold: the lock's name, the lease and the kind of hold, as every
/// backend checks them before it asks for anything.
pub(crate) fn check_request(name: &str, lease: Duration, access: Access) -> Result<(), Error> {
    check_name(name)?;
    check_lease(lease)?;
    check_access(access)
}

/// Checks a lock name.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// Checks a lease length.
pub(crate) fn check_lease(lease: Duration) -> Result<(), Error> {
    if lease.is_zero() {
        return Err(Error::ZeroLease);
    }
    if lease > MAX_LEASE {
        return Err(Error::LeaseTooLong {
            lease,
            max: MAX_LEASE,
        });
    }
    Ok(())
}

/// Checks a kind of hold.
pub(crate) fn check_access(access: Access) -> Result<(), Error> {
    match access {
        Access::Permit { permits: 0 } => Err(Error::ZeroPermits),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_leases_are_refused() {
        assert_eq!(check_name(""), Err(Error::EmptyName));
        assert_eq!(check_name(&"x".repeat(MAX_NAME_LEN)), Ok(()));
        assert_eq!(
            check_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(Error::NameTooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
        assert_eq!(check_lease(Duration::ZERO), Err(Error::ZeroLease));
        assert_eq!(check_lease(MAX_LEASE), Ok(()));
        assert_eq!(
            check_lease(Duration::MAX),
            Err(Error::LeaseTooLong {
                lease: Duration::MAX,
                max: MAX_LEASE
            })
        );
        assert_eq!(
            check_access(Access::Permit { permits: 0 }),
            Err(Error::ZeroPermits)
        );
    }

    #[test]
    fn a_name_reads_back_the_same_copied_or_shared() {
        let (accents, over, longest) = ("é".repeat(11), "x".repeat(23), "y".repeat(512));
        for name in ["a", "account-42", &accents, &over, &longest] {
            let kept = LockName::from(name);
            assert_eq!(&*kept, name);
            assert_eq!(format!("{kept:?}"), format!("{name:?}"));
            assert_eq!(kept.clone(), kept);
            let inline = name.len() <= INLINE_NAME;
            assert_eq!(matches!(kept, LockName::Inline { .. }), inline, "{name}");
        }
        assert_ne!(LockName::from("ab"), LockName::from("a"));
        assert_ne!(LockName::from("a\0"), LockName::from("a"));
    }

    #[test]
    fn the_deadline_is_the_start_plus_the_lease_and_saturates() {
        let grant = Grant {
            name: "a".into(),
            access: Access::Exclusive,
            token: FencingToken::new(1),
            granted_at: 100,
            lease: Duration::from_nanos(10),
            issuer: 0,
            record: 0,
        };
        assert_eq!(grant.deadline_nanos(), 110);
        let late = Grant {
            granted_at: u64::MAX - 1,
            lease: MAX_LEASE,
            ..grant
        };
        assert_eq!(late.deadline_nanos(), u64::MAX);
    }
}
