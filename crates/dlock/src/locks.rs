//! The one trait every backend implements, and the guard that releases on drop.

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::grant::{Access, FencingToken, Grant, Wait};

/// A lock service: grants leases on named locks, each with a fencing token.
///
/// Backends implement the five required methods; the acquisition helpers are built on
/// [`Locks::grant`]. The contract every backend keeps:
///
/// - **Tokens grow.** For one name, each grant's token is strictly greater than every earlier
///   grant's token of that name.
/// - **Leases run on the caller's clock, never past the backend's.** A grant's lease starts
///   when the backend confirmed it (for a server backend, when the request was sent, which is
///   never later than the server's own start of the lease, less an allowance for clock drift),
///   and is measured on the backend's monotonic clock. A holder that pauses past its lease
///   loses the lock without being told: that is why writes carry the token and the resource
///   checks it with a [`Fence`](crate::Fence).
/// - **Only the holder releases.** `extend` and `release` compare the grant's token with the
///   backend's record, so a grant that expired, was taken over, or came from another backend
///   is an error and never touches someone else's hold.
///
/// The in-process backend is [`MemoryLocks`](crate::MemoryLocks).
///
/// ```
/// use infra_common::ManualClock;
/// use infra_dlock::{Locks, MemoryLocks};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let locks = MemoryLocks::with_clock(clock.clone());
/// let lease = Duration::from_secs(10);
///
/// // A mutex: taken, then refused to a second caller until released or expired.
/// let mut job = locks.acquire("nightly-report", lease)?;
/// assert!(locks.try_acquire("nightly-report", lease)?.is_none());
/// clock.advance(Duration::from_secs(8));
/// job.extend(lease)?; // the work goes on: held for another 10 s from now
/// clock.advance(Duration::from_secs(8));
/// assert!(job.is_held());
/// job.release()?;
///
/// // A read-write lock: readers share, the writer waits for them.
/// let reader = locks.read("config", lease)?;
/// let other_reader = locks.read("config", lease)?;
/// assert!(locks.try_acquire("config", lease)?.is_none());
/// drop((reader, other_reader));
/// assert!(locks.try_acquire("config", lease)?.is_some());
///
/// // A semaphore: at most 2 holders of "db-pool" at once, each with its own token.
/// let a = locks.permit("db-pool", 2, lease)?;
/// let b = locks.permit("db-pool", 2, lease)?;
/// assert!(b.token() > a.token());
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub trait Locks: Send + Sync {
    /// Asks for `access` to lock `name` for `lease`, waiting as `wait` says.
    ///
    /// `Ok(None)` means the wait ended without a grant. Waiting is FIFO-fair per name where the
    /// backend says so.
    ///
    /// # Errors
    ///
    /// Bad input ([`Error::EmptyName`], [`Error::NameTooLong`], [`Error::ZeroLease`],
    /// [`Error::LeaseTooLong`], [`Error::ZeroPermits`]), a name in use as another kind of lock
    /// ([`Error::KindMismatch`]), a kind of hold the backend does not grant
    /// ([`Error::UnsupportedAccess`]), or a backend that cannot grant
    /// ([`Error::TokensExhausted`]).
    /// A server backend also refuses a lease not longer than its clock-drift allowance
    /// ([`Error::LeaseTooShort`]) or spent before the grant's answer arrived
    /// ([`Error::LeaseSpentOnArrival`]), and reports a server it cannot ask
    /// ([`Error::Backend`]).
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error>;

    /// Renews the grant's lease: it now runs for `lease` from the moment the backend confirms.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseExpired`] if the lease ran out first (the lock may belong to someone else),
    /// [`Error::ForeignGrant`] for another backend's grant, or a bad `lease`.
    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error>;

    /// Gives the lock back.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseExpired`] if the lease ran out first, so the release released nothing;
    /// [`Error::ForeignGrant`] for another backend's grant.
    fn release(&self, grant: Grant) -> Result<(), Error>;

    /// Whether the grant is still held: its lease runs on the backend's clock and the backend
    /// has not recorded it as released or taken over.
    fn is_held(&self, grant: &Grant) -> bool;

    /// Blocks until the grant is no longer held: its lease ran out, or it was released.
    ///
    /// Returns at once for a grant that is not held. A holder runs this beside its work (or
    /// checks [`Locks::is_held`] between steps) to learn that it must stop.
    fn wait_lost(&self, grant: &Grant);

    /// Takes lock `name` exclusively for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    fn acquire(&self, name: &str, lease: Duration) -> Result<LockGuard<'_, Self>, Error> {
        let grant = self.grant(name, Access::Exclusive, lease, Wait::Forever)?;
        // A backend that returns `None` from an unbounded wait breaks the trait's contract;
        // report it as the one error a waiter could have seen instead of panicking.
        let grant = grant.ok_or(Error::TokensExhausted)?;
        Ok(LockGuard::new(self, grant))
    }

    /// Takes lock `name` exclusively for `lease` if it is free now and nobody waits for it.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    fn try_acquire(
        &self,
        name: &str,
        lease: Duration,
    ) -> Result<Option<LockGuard<'_, Self>>, Error> {
        let grant = self.grant(name, Access::Exclusive, lease, Wait::No)?;
        Ok(grant.map(|grant| LockGuard::new(self, grant)))
    }

    /// Takes lock `name` exclusively for `lease`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    fn acquire_timeout(
        &self,
        name: &str,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_, Self>>, Error> {
        let grant = self.grant(name, Access::Exclusive, lease, Wait::Up(timeout))?;
        Ok(grant.map(|grant| LockGuard::new(self, grant)))
    }

    /// Takes the read side of read-write lock `name` for `lease`, waiting as long as it takes.
    ///
    /// Readers share the lock with each other; [`Locks::acquire`] on the same name is the
    /// writer. A waiting writer is not overtaken by later readers.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    fn read(&self, name: &str, lease: Duration) -> Result<LockGuard<'_, Self>, Error> {
        let grant = self.grant(name, Access::Shared, lease, Wait::Forever)?;
        let grant = grant.ok_or(Error::TokensExhausted)?;
        Ok(LockGuard::new(self, grant))
    }

    /// Takes one of the `permits` permits of semaphore `name` for `lease`, waiting as long as
    /// it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    fn permit(
        &self,
        name: &str,
        permits: u32,
        lease: Duration,
    ) -> Result<LockGuard<'_, Self>, Error> {
        let grant = self.grant(name, Access::Permit { permits }, lease, Wait::Forever)?;
        let grant = grant.ok_or(Error::TokensExhausted)?;
        Ok(LockGuard::new(self, grant))
    }
}

/// A held [`Grant`] that is released when dropped.
///
/// Dropping the guard ignores a failed release (the lease had already run out); call
/// [`LockGuard::release`] to learn about it.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a, L: Locks + ?Sized> {
    locks: &'a L,
    // `Some` until released or detached.
    grant: Option<Grant>,
}

impl<'a, L: Locks + ?Sized> LockGuard<'a, L> {
    /// Wraps a grant obtained from `locks`, to be released on drop.
    pub fn new(locks: &'a L, grant: Grant) -> Self {
        Self {
            locks,
            grant: Some(grant),
        }
    }

    /// The grant.
    pub fn grant(&self) -> &Grant {
        self.grant
            .as_ref()
            .expect("a guard holds its grant until release or drop")
    }

    /// The fencing token: send it with every write to the protected resource.
    pub fn token(&self) -> FencingToken {
        self.grant().token()
    }

    /// The clock reading at which the lease runs out, unless extended.
    pub fn deadline_nanos(&self) -> u64 {
        self.grant().deadline_nanos()
    }

    /// Whether the lock is still held (see [`Locks::is_held`]).
    pub fn is_held(&self) -> bool {
        self.locks.is_held(self.grant())
    }

    /// Blocks until the lock is no longer held (see [`Locks::wait_lost`]).
    pub fn wait_lost(&self) {
        self.locks.wait_lost(self.grant());
    }

    /// Renews the lease for `lease` from now (see [`Locks::extend`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::extend`].
    pub fn extend(&mut self, lease: Duration) -> Result<(), Error> {
        let grant = self
            .grant
            .as_mut()
            .expect("a guard holds its grant until release or drop");
        self.locks.extend(grant, lease)
    }

    /// Releases the lock, reporting whether the lease was still held.
    ///
    /// # Errors
    ///
    /// As [`Locks::release`].
    pub fn release(mut self) -> Result<(), Error> {
        let grant = self
            .grant
            .take()
            .expect("a guard holds its grant until release or drop");
        self.locks.release(grant)
    }

    /// Gives up the guard without releasing: the grant stays held until released or expired.
    pub fn into_grant(mut self) -> Grant {
        self.grant
            .take()
            .expect("a guard holds its grant until release or drop")
    }
}

impl<L: Locks + ?Sized> Drop for LockGuard<'_, L> {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            // The guard has no way to report an error from drop; `release` does.
            let _ = self.locks.release(grant);
        }
    }
}

impl<L: Locks + ?Sized> fmt::Debug for LockGuard<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}
