//! Any backend's calls from tokio tasks, on tokio's blocking pool.

use std::fmt;
use std::time::Duration;

use infra_common::sync::Arc;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::grant::{Access, Grant, Wait};
use crate::locks::Locks;
use crate::memory::QueuePlace;

/// A [`Locks`] backend for tokio tasks: each call runs on tokio's blocking pool
/// (`spawn_blocking`), so a task waiting for a lock never stalls the runtime's threads.
///
/// Grants come back as plain [`Grant`]s: release them with [`AsyncLocks::release`], or hand
/// them to a [`Watchdog`](crate::Watchdog), which renews the lease while the work goes on and
/// releases it when released or dropped.
///
/// **Waiting in slices.** A blocking call cannot be interrupted, so a wait longer than the
/// wait slice (one second unless [`AsyncLocks::with_wait_slice`] says otherwise) is made of
/// bounded waits of one slice each, [`Wait::Up`] on the backend, asked again until granted.
/// Between two slices the blocking thread goes back to the pool, so waiters never hold every
/// thread for good (a release queued behind them runs when a slice ends). On
/// [`MemoryLocks`](crate::MemoryLocks) (by name, through a handle, or through a wrapper that
/// passes the call on) the slices run in one [`QueuePlace`]: the request keeps its place in
/// the queue between them, is handed the lock in its turn, and the next slice takes the grant
/// up, so arrival order holds for waits of any length; the last slice of a [`Wait::Up`] leaves
/// the queue. Other backends (`EtcdLocks` among them) leave their queue when a slice ends and
/// join it again at the back with the next: they keep arrival order only among waits shorter
/// than a slice, and a longer wait is overtaken by every request that arrives while it is
/// between two slices or queued ahead of where it joins again, for as long as that goes on
/// (choose a slice longer than the locks are held). On those backends each slice that ends
/// without a grant counts as a wait that timed out in the metrics. A [`Wait::Up`] timeout is
/// the sum of its slices, each measured on the backend's clock.
///
/// **Cancellation.** Dropping a waiting `grant` (or `acquire`, `try_acquire`, ...) future, for
/// example under `tokio::time::timeout`, leaves nothing held: a grant the backend makes after
/// the future is gone is released at once, on the blocking pool. Its blocking call ends with
/// the slice it is in, at most one slice later on the backend's clock, and gives its thread
/// and its place in the backend's queue back (with a grant handed to a kept place); no
/// further slice is asked for. A dropped
/// `release` still releases; a dropped `extend` may still extend the lease, while the
/// caller's grant keeps its earlier deadline (so the caller never believes it holds the lock
/// longer than it does).
///
/// ```
/// use infra_common::ManualClock;
/// use infra_common::sync::Arc;
/// use infra_dlock::{AsyncLocks, MemoryLocks};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), infra_dlock::Error> {
/// let backend = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
/// // A waiter whose future is dropped gives its thread back within 200 ms.
/// let locks = AsyncLocks::new(backend).with_wait_slice(Duration::from_millis(200));
/// let lease = Duration::from_secs(10);
/// let grant = locks.acquire("report", lease).await?;
/// assert!(locks.try_acquire("report", lease).await?.is_none());
/// locks.release(grant).await?;
/// assert!(locks.try_acquire("report", lease).await?.is_some());
/// # Ok(())
/// # }
/// ```
pub struct AsyncLocks<L: Locks + 'static> {
    locks: Arc<L>,
    /// The longest single wait on the blocking pool.
    slice: Duration,
}

/// The wait slice unless [`AsyncLocks::with_wait_slice`] says otherwise.
const DEFAULT_WAIT_SLICE: Duration = Duration::from_secs(1);

/// The shortest wait slice: a zero slice would ask the backend again and again without
/// waiting.
const MIN_WAIT_SLICE: Duration = Duration::from_millis(1);

impl<L: Locks + 'static> AsyncLocks<L> {
    /// Wraps a backend shared with the blocking pool, with waits in slices of one second.
    pub fn new(locks: Arc<L>) -> Self {
        Self {
            locks,
            slice: DEFAULT_WAIT_SLICE,
        }
    }

    /// Waits in slices of `slice` (at least 1 ms) on the backend's clock: a shorter slice
    /// gives an abandoned wait's thread back sooner, a longer one keeps a FIFO backend other
    /// than `MemoryLocks` in arrival order for longer waits (see the type's documentation).
    pub fn with_wait_slice(mut self, slice: Duration) -> Self {
        self.slice = slice.max(MIN_WAIT_SLICE);
        self
    }

    /// The backend.
    pub fn locks(&self) -> &Arc<L> {
        &self.locks
    }

    /// Asks for `access` to lock `name` for `lease`, waiting as `wait` says (see
    /// [`Locks::grant`]), in slices for a wait longer than one.
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`]; [`Error::Backend`] if the blocking call did not complete (it
    /// panicked, or the runtime is shutting down).
    pub async fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        // What is left of a bounded wait; `None` for an unbounded one.
        let mut left = match wait {
            Wait::Up(timeout) if timeout > self.slice => Some(timeout),
            Wait::No | Wait::Up(_) => {
                let once = self.grant_once(name, access, lease, wait, QueuePlace::new(), false);
                return once.await.map(|(granted, _)| granted);
            }
            Wait::Forever => None,
        };
        // Carried from slice to slice, so that a FIFO in-process backend keeps the waiter's
        // place in its queue between them; dropped with this future, it leaves the queue.
        let mut place = QueuePlace::new();
        loop {
            let slice = left.map_or(self.slice, |left| left.min(self.slice));
            // The last slice of a bounded wait leaves the queue when it ends.
            let keep = left.is_none_or(|left| left > self.slice);
            let (granted, kept) = self
                .grant_once(name, access, lease, Wait::Up(slice), place, keep)
                .await?;
            if granted.is_some() {
                return Ok(granted);
            }
            place = kept;
            // A slice that ended without a grant waited all of it on the backend's clock.
            if let Some(left) = &mut left {
                *left -= slice;
                if left.is_zero() {
                    return Ok(None);
                }
            }
        }
    }

    /// One blocking call to [`Locks::grant`] in `place` (keeping it if `keep` and the call
    /// ends without a grant), which comes back with the answer; a grant made after this
    /// future is dropped is released, and a place kept then is left.
    async fn grant_once(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
        mut place: QueuePlace,
        keep: bool,
    ) -> Result<(Option<Grant>, QueuePlace), Error> {
        let (sender, receiver) = oneshot::channel();
        let mut unclaimed = Unclaimed {
            locks: Arc::clone(&self.locks),
            receiver,
            claimed: false,
        };
        let locks = Arc::clone(&self.locks);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let ask = || locks.grant(&name, access, lease, wait);
            let granted = if keep {
                place.wait_keeping(ask)
            } else {
                place.wait_last(ask)
            };
            // The asking future is gone: nobody will ever release this grant but us. The
            // place, dropped here, leaves the queue.
            if let Err((Ok(Some(grant)), _)) = sender.send((granted, place)) {
                let _ = locks.release(grant);
            }
        });
        let answer = (&mut unclaimed.receiver).await;
        unclaimed.claimed = true;
        let (granted, place) = answer.map_err(|_| not_completed())?;
        Ok((granted?, place))
    }

    /// Takes lock `name` exclusively for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`AsyncLocks::grant`].
    pub async fn acquire(&self, name: &str, lease: Duration) -> Result<Grant, Error> {
        let grant = self
            .grant(name, Access::Exclusive, lease, Wait::Forever)
            .await?;
        // An unbounded wait that ends without a grant breaks the trait's contract; report
        // it as the one error a waiter could have seen, as `Locks::acquire` does.
        grant.ok_or(Error::TokensExhausted)
    }

    /// Takes lock `name` exclusively for `lease` if it is free now and nobody waits for it.
    ///
    /// # Errors
    ///
    /// As [`AsyncLocks::grant`].
    pub async fn try_acquire(&self, name: &str, lease: Duration) -> Result<Option<Grant>, Error> {
        self.grant(name, Access::Exclusive, lease, Wait::No).await
    }

    /// Takes lock `name` exclusively for `lease`, waiting at most `timeout` on the backend's
    /// clock.
    ///
    /// # Errors
    ///
    /// As [`AsyncLocks::grant`].
    pub async fn acquire_timeout(
        &self,
        name: &str,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Option<Grant>, Error> {
        self.grant(name, Access::Exclusive, lease, Wait::Up(timeout))
            .await
    }

    /// Takes the read side of read-write lock `name` for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`AsyncLocks::grant`].
    pub async fn read(&self, name: &str, lease: Duration) -> Result<Grant, Error> {
        let grant = self
            .grant(name, Access::Shared, lease, Wait::Forever)
            .await?;
        grant.ok_or(Error::TokensExhausted)
    }

    /// Takes one of the `permits` permits of semaphore `name` for `lease`, waiting as long as
    /// it takes.
    ///
    /// # Errors
    ///
    /// As [`AsyncLocks::grant`].
    pub async fn permit(&self, name: &str, permits: u32, lease: Duration) -> Result<Grant, Error> {
        let access = Access::Permit { permits };
        let grant = self.grant(name, access, lease, Wait::Forever).await?;
        grant.ok_or(Error::TokensExhausted)
    }

    /// Renews the grant's lease for `lease` from the moment the backend confirms (see
    /// [`Locks::extend`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::extend`]; [`Error::Backend`] if the blocking call did not complete.
    pub async fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        let locks = Arc::clone(&self.locks);
        let mut copy = grant.duplicate();
        let extended =
            tokio::task::spawn_blocking(move || locks.extend(&mut copy, lease).map(|()| copy))
                .await
                .map_err(|_| not_completed())??;
        *grant = extended;
        Ok(())
    }

    /// Gives the lock back (see [`Locks::release`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::release`]; [`Error::Backend`] if the blocking call did not complete.
    pub async fn release(&self, grant: Grant) -> Result<(), Error> {
        let locks = Arc::clone(&self.locks);
        tokio::task::spawn_blocking(move || locks.release(grant))
            .await
            .map_err(|_| not_completed())?
    }

    /// Whether the grant is still held (see [`Locks::is_held`]); `false` if the blocking call
    /// did not complete.
    pub async fn is_held(&self, grant: &Grant) -> bool {
        let locks = Arc::clone(&self.locks);
        let copy = grant.duplicate();
        tokio::task::spawn_blocking(move || locks.is_held(&copy))
            .await
            .unwrap_or(false)
    }
}

impl<L: Locks + 'static> Clone for AsyncLocks<L> {
    fn clone(&self) -> Self {
        Self {
            locks: Arc::clone(&self.locks),
            slice: self.slice,
        }
    }
}

impl<L: Locks + fmt::Debug + 'static> fmt::Debug for AsyncLocks<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncLocks")
            .field("locks", &*self.locks)
            .field("slice", &self.slice)
            .finish()
    }
}

/// The error for a blocking call that never reported back.
pub(crate) fn not_completed() -> Error {
    Error::Backend {
        reason:
            "the blocking lock call did not complete (it panicked, or the runtime is shutting down)"
                .to_owned(),
    }
}

/// The answer to a grant request, until the asking future has taken it.
///
/// If the future is dropped first, a grant already sent (or sent later: the sender then finds
/// the channel closed and releases it itself) is released here.
struct Unclaimed<L: Locks + 'static> {
    locks: Arc<L>,
    receiver: oneshot::Receiver<(Result<Option<Grant>, Error>, QueuePlace)>,
    claimed: bool,
}

impl<L: Locks + 'static> Drop for Unclaimed<L> {
    fn drop(&mut self) {
        if self.claimed {
            return;
        }
        // After `close`, the sender either fails (and releases) or has already sent.
        self.receiver.close();
        // A place that came with the answer leaves the queue as it is dropped.
        if let Ok((Ok(Some(grant)), _)) = self.receiver.try_recv() {
            release_in_background(Arc::clone(&self.locks), grant);
        }
    }
}

/// Releases `grant` on the blocking pool, or right here outside a runtime; the result is
/// dropped, since nobody is left to learn it.
pub(crate) fn release_in_background<L: Locks + 'static>(locks: Arc<L>, grant: Grant) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || locks.release(grant));
        }
        Err(_) => {
            let _ = locks.release(grant);
        }
    }
}
