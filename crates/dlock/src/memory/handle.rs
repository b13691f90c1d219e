//! [`LockHandle`]: one lock of a [`MemoryLocks`] with its name resolved once, and the
//! [`HandleGuard`] its calls return.

use std::fmt;
use std::mem::ManuallyDrop;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::Arc;
use infra_common::{Clock, SystemClock};

use super::{Held, MemoryLocks, Slot};
use crate::error::Error;
use crate::grant::{Access, FencingToken, Grant, Wait, check_access, check_lease};
use crate::locks::Locks;

/// A handle on one lock of a [`MemoryLocks`]: the name resolved once.
///
/// Made by [`MemoryLocks::handle`]. Its `acquire`, `try_acquire`, `acquire_timeout`, `read`
/// and `permit` take the lock without looking the name up; the [`HandleGuard`]s they return
/// release through the handle, again without a lookup. Everything else is as through the
/// [`MemoryLocks`] by name: the same holders, queue, leases and tokens.
///
/// A handle is also a [`Locks`]: for its own name it skips the lookup, and for any other
/// name it passes the call on to its [`MemoryLocks`].
///
/// ```
/// use infra_common::ManualClock;
/// use infra_dlock::{Fence, Locks, MemoryLocks};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let locks = MemoryLocks::with_clock(clock.clone());
/// let fence = Fence::new();
/// let account = locks.handle("account-7")?;
/// let lease = Duration::from_secs(5);
///
/// let paused = account.acquire(lease)?.into_grant();
/// clock.advance(Duration::from_secs(6)); // the holder stalls past its lease
/// let next = account.acquire(lease)?;
/// fence.admit("balance/7", "account-7", next.token())?;
/// assert!(fence.admit("balance/7", "account-7", paused.token()).is_err());
/// assert!(account.release(paused).is_err()); // its lease is over
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct LockHandle<'a, C: Clock = SystemClock> {
    pub(super) locks: &'a MemoryLocks<C>,
    pub(super) slot: Arc<Slot>,
}

impl<C: Clock> LockHandle<'_, C> {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// Asks for `access` to this lock for `lease`, waiting as `wait` says (see
    /// [`Locks::grant`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    pub fn grant_here(
        &self,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        let held = self.request(access, lease, wait)?;
        Ok(held.map(|held| self.locks.grant_of(&self.slot, held)))
    }

    #[inline(always)]
    fn request(&self, access: Access, lease: Duration, wait: Wait) -> Result<Option<Held>, Error> {
        check_lease(lease)?;
        check_access(access)?;
        self.locks
            .grant_in(&self.slot, access, duration_to_nanos(lease), wait)
    }

    /// A guard for what a request that waits as long as it takes was granted.
    fn guard_granted(&self, held: Option<Held>) -> Result<HandleGuard<'_, C>, Error> {
        match held {
            Some(held) => Ok(HandleGuard::new(self, held)),
            // An unbounded wait ends with a grant or an error; `None` cannot happen, and is
            // reported as the one error such a waiter could have seen rather than a panic.
            None => Err(Error::TokensExhausted),
        }
    }

    /// Takes this lock exclusively for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::acquire`].
    #[inline]
    pub fn acquire(&self, lease: Duration) -> Result<HandleGuard<'_, C>, Error> {
        let held = self.request(Access::Exclusive, lease, Wait::Forever)?;
        self.guard_granted(held)
    }

    /// Takes this lock exclusively for `lease` if it is free now and nobody waits for it.
    ///
    /// # Errors
    ///
    /// As [`Locks::try_acquire`].
    #[inline]
    pub fn try_acquire(&self, lease: Duration) -> Result<Option<HandleGuard<'_, C>>, Error> {
        let held = self.request(Access::Exclusive, lease, Wait::No)?;
        Ok(held.map(|held| HandleGuard::new(self, held)))
    }

    /// Takes this lock exclusively for `lease`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Locks::acquire_timeout`].
    pub fn acquire_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Option<HandleGuard<'_, C>>, Error> {
        let held = self.request(Access::Exclusive, lease, Wait::Up(timeout))?;
        Ok(held.map(|held| HandleGuard::new(self, held)))
    }

    /// Takes the read side of this read-write lock for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::read`].
    pub fn read(&self, lease: Duration) -> Result<HandleGuard<'_, C>, Error> {
        let held = self.request(Access::Shared, lease, Wait::Forever)?;
        self.guard_granted(held)
    }

    /// Takes one of the `permits` permits of this semaphore for `lease`, waiting as long as
    /// it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::permit`].
    pub fn permit(&self, permits: u32, lease: Duration) -> Result<HandleGuard<'_, C>, Error> {
        let held = self.request(Access::Permit { permits }, lease, Wait::Forever)?;
        self.guard_granted(held)
    }

    /// How many requests wait in this lock's queue right now.
    pub fn queue_len(&self) -> usize {
        self.slot.entry.lock().queue.len()
    }

    /// Whether `grant` was made in this handle's slot (and is of its instance, which the
    /// calls check). A grant of an earlier slot of the same name, swept after its lease ended,
    /// is not: it goes by name, which answers for it as for any grant of the name.
    fn is_mine(&self, grant: &Grant) -> bool {
        grant.record == self.slot.number
    }
}

impl<C: Clock> Locks for LockHandle<'_, C> {
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        if name == self.name() {
            self.grant_here(access, lease, wait)
        } else {
            self.locks.grant(name, access, lease, wait)
        }
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        if self.is_mine(grant) {
            self.locks.extend_in(&self.slot, grant, lease)
        } else {
            self.locks.extend(grant, lease)
        }
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
        if self.is_mine(&grant) {
            self.locks.release_in(&self.slot, &grant)
        } else {
            self.locks.release(grant)
        }
    }

    fn is_held(&self, grant: &Grant) -> bool {
        if self.is_mine(grant) {
            self.locks.is_held_in(&self.slot, grant)
        } else {
            self.locks.is_held(grant)
        }
    }

    fn wait_lost(&self, grant: &Grant) {
        if self.is_mine(grant) {
            self.locks.wait_lost_in(&self.slot, grant);
        } else {
            self.locks.wait_lost(grant);
        }
    }
}

impl<C: Clock> fmt::Debug for LockHandle<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockHandle")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// A lock held through a [`LockHandle`], released when dropped.
///
/// The handle's counterpart of [`LockGuard`](crate::LockGuard), with the same calls except
/// that the grant is not kept whole: the guard holds the token and the lease, and the handle
/// supplies the name. [`HandleGuard::into_grant`] gives the [`Grant`]. Dropping the guard
/// ignores a failed release (the lease had already run out); call [`HandleGuard::release`] to
/// learn about it.
///
/// ```
/// use infra_dlock::MemoryLocks;
/// use std::time::Duration;
///
/// let locks = MemoryLocks::new();
/// let account = locks.handle("account-42")?;
/// let mut guard = account.acquire(Duration::from_secs(10))?;
/// assert!(guard.is_held());
/// guard.extend(Duration::from_secs(20))?;
/// let token = guard.token(); // send it with every write
/// guard.release()?;
/// assert!(account.acquire(Duration::from_secs(10))?.token() > token);
/// # Ok::<(), infra_dlock::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct HandleGuard<'h, C: Clock = SystemClock> {
    handle: &'h LockHandle<'h, C>,
    held: Held,
}

impl<'h, C: Clock> HandleGuard<'h, C> {
    #[inline(always)]
    fn new(handle: &'h LockHandle<'h, C>, held: Held) -> Self {
        Self { handle, held }
    }

    /// The grant this guard holds, for the calls that take one.
    fn to_grant(&self) -> Grant {
        self.handle.locks.grant_of(&self.handle.slot, self.held)
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The kind of hold.
    pub fn access(&self) -> Access {
        self.held.access
    }

    /// The fencing token: send it with every write to the protected resource.
    #[inline]
    pub fn token(&self) -> FencingToken {
        FencingToken::new(self.held.token)
    }

    /// The clock reading at which the grant (or its latest extension) was confirmed: the
    /// lease counts from here.
    pub fn granted_at_nanos(&self) -> u64 {
        self.held.granted_at
    }

    /// The lease granted (or last extended to).
    pub fn lease(&self) -> Duration {
        Duration::from_nanos(self.held.lease)
    }

    /// The clock reading at which the lease runs out, unless extended.
    pub fn deadline_nanos(&self) -> u64 {
        let held = self.held;
        held.granted_at.saturating_add(held.lease)
    }

    /// Whether the lock is still held (see [`Locks::is_held`]).
    pub fn is_held(&self) -> bool {
        self.handle.locks.is_held_as(&self.handle.slot, self.held)
    }

    /// Blocks until the lock is no longer held (see [`Locks::wait_lost`]).
    pub fn wait_lost(&self) {
        self.handle
            .locks
            .wait_lost_in(&self.handle.slot, &self.to_grant());
    }

    /// Renews the lease for `lease` from now (see [`Locks::extend`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::extend`].
    pub fn extend(&mut self, lease: Duration) -> Result<(), Error> {
        let mut grant = self.to_grant();
        self.handle
            .locks
            .extend_in(&self.handle.slot, &mut grant, lease)?;
        self.held = Held::of_grant(&grant);
        Ok(())
    }

    /// Releases the lock, reporting whether the lease was still held.
    ///
    /// # Errors
    ///
    /// As [`Locks::release`].
    #[inline]
    pub fn release(self) -> Result<(), Error> {
        // Not dropped: dropping releases, and the release happens here.
        let this = ManuallyDrop::new(self);
        this.handle.locks.release_held(&this.handle.slot, this.held)
    }

    /// Gives up the guard without releasing: the grant stays held until released (through
    /// the handle, or the [`MemoryLocks`] by name) or expired.
    pub fn into_grant(self) -> Grant {
        ManuallyDrop::new(self).to_grant()
    }
}

impl<C: Clock> Drop for HandleGuard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // The guard has no way to report an error from drop; `release` does.
        let _ = self.handle.locks.release_held(&self.handle.slot, self.held);
    }
}

impl<C: Clock> fmt::Debug for HandleGuard<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleGuard")
            .field("name", &self.name())
            .field("access", &self.held.access)
            .field("token", &self.token())
            .field("granted_at", &self.held.granted_at)
            .field("lease", &self.lease())
            .finish()
    }
}
