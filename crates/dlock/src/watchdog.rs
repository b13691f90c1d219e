//! Renewing a held lease in the background, with a loss signal that never stays silent.

use std::fmt;
use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use infra_common::Clock;
use infra_common::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::async_locks::not_completed;
use crate::error::Error;
use crate::grant::{FencingToken, Grant, check_lease};
use crate::locks::Locks;

/// How a [`Watchdog`] renews its lease: the lease each renewal asks for, and how often.
#[derive(Clone, Debug)]
pub struct Renewal {
    lease: Duration,
    every: Option<Duration>,
    #[cfg(feature = "metrics")]
    metrics_name: std::borrow::Cow<'static, str>,
}

impl Renewal {
    /// Renew for `lease` each time, every third of it: a renewal that is late by up to two
    /// thirds of the lease (a slow backend, a busy runtime) still lands in time. A renewal
    /// that fails is not retried: it ends the watchdog.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            every: None,
            #[cfg(feature = "metrics")]
            metrics_name: std::borrow::Cow::Borrowed(crate::metrics::DEFAULT_NAME),
        }
    }

    /// Renew every `every` instead of every third of the lease. It must be shorter than the
    /// lease, and not zero ([`Watchdog::spawn`] refuses it otherwise). Each renewal comes
    /// sooner if a third of what is left of the confirmed lease is shorter: a backend may
    /// confirm less than was asked (Redis counts a clock-drift allowance off it), and an
    /// interval just under the lease would otherwise always arrive too late.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = Some(every);
        self
    }

    /// Reports renewal failures under `name` (the `locks` label) instead of `default`. See
    /// the [`metrics`](crate::metrics) module: install the recorder before spawning.
    #[cfg(feature = "metrics")]
    pub fn metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics_name = name.into();
        self
    }

    fn interval(&self) -> Duration {
        self.every.unwrap_or(self.lease / 3)
    }
}

/// Why a [`Watchdog`]'s grant is no longer held.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loss {
    /// It was released through [`Watchdog::release`] (or the watchdog was dropped).
    Released,
    /// The lease ran out on the clock before a renewal was confirmed: a renewal came too
    /// late (a starved runtime, a clock that jumped) or its answer had not come back by the
    /// deadline. Reported at the deadline, at a renewal, or at the release.
    Expired,
    /// A renewal failed with this error; the watchdog stopped and released what it could.
    /// [`Error::LeaseExpired`] says the lock may already belong to someone else.
    RenewalFailed(Error),
    /// The renewal task ended without releasing (its runtime shut down): nobody renews the
    /// lease any more, and it runs out.
    Stopped,
    /// The release (through [`Watchdog::release`] or a drop) failed with this error, other
    /// than [`Error::LeaseExpired`]: whether the lock was given back is unknown, and at worst
    /// it stays taken until its lease runs out. Renewals stopped.
    ReleaseFailed(Error),
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Released => f.write_str("the grant was released"),
            Self::Expired => f.write_str("the lease ran out before it was renewed"),
            Self::RenewalFailed(error) => write!(f, "a renewal failed: {error}"),
            Self::Stopped => f.write_str("the renewal task stopped"),
            Self::ReleaseFailed(error) => write!(f, "the release failed: {error}"),
        }
    }
}

/// What the renewal task tells the watchdog.
#[derive(Clone, Debug)]
struct Status {
    /// The clock reading at which the lease runs out, as of the last renewal.
    deadline: u64,
    loss: Option<Loss>,
}

/// A held grant kept alive by a tokio task that renews its lease, and the signal that it is
/// lost.
///
/// [`Watchdog::spawn`] takes the grant and starts a task that extends its lease (every third
/// of it by default, see [`Renewal`]). The holder does its work and asks [`Watchdog::is_held`]
/// between steps, or races the work against [`Watchdog::lost`], which resolves with the
/// [`Loss`]:
///
/// - **A failed renewal is never silent.** The first renewal that fails ends the watchdog:
///   `lost()` resolves with [`Loss::RenewalFailed`] and the error, `is_held()` turns false,
///   [`Watchdog::release`] returns the error, and (feature `metrics`) the failure is counted.
/// - **The deadline is kept.** `lost()` resolves with [`Loss::Expired`] when the last
///   confirmed lease runs out on the clock, even while a renewal is still waiting for the
///   backend's answer (a renewal that is confirmed after that is given back). A renewal due
///   after the lease already ran out is not attempted. Each renewal comes after
///   [`Renewal`]'s interval or a third of what is left of the confirmed lease, whichever is
///   sooner, so a grant shorter than the renewal lease, or a lease the backend confirms
///   shorter than asked, is renewed in time.
/// - **Release stops the renewals** and gives the lock back; `lost()` resolves with
///   [`Loss::Released`] (or [`Loss::ReleaseFailed`] with the error if the backend could not
///   release).
/// - **Drop stops them too** and releases the grant in the background: the task ends once a
///   renewal in flight has returned (or at once between renewals), so a dropped watchdog
///   leaves no task behind.
///
/// `is_held()` also reads `clock`, which must be the backend's: it is false once the last
/// confirmed lease has run out, even if the task has not run yet. A holder that pauses past
/// its lease still must not write unfenced: the token goes with every write.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_common::sync::Arc;
/// use infra_dlock::{Locks, Loss, MemoryLocks, Renewal, Watchdog};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), infra_dlock::Error> {
/// let clock = ManualClock::new();
/// let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
/// let lease = Duration::from_secs(30);
/// let grant = locks.acquire("nightly-report", lease)?.into_grant();
/// let watchdog = Watchdog::spawn(Arc::clone(&locks), grant, clock.clone(), Renewal::new(lease))?;
///
/// // Ten leases of work: the watchdog renews every 10 s (both clocks move together here).
/// for _ in 0..30 {
///     clock.advance(Duration::from_secs(10));
///     tokio::time::sleep(Duration::from_secs(10)).await;
///     assert!(watchdog.is_held());
/// }
/// watchdog.release().await?;
/// assert!(locks.try_acquire("nightly-report", lease)?.is_some());
/// # Ok(())
/// # }
/// ```
#[must_use = "the lock is released as soon as the watchdog is dropped"]
pub struct Watchdog<C: Clock + 'static> {
    name: String,
    token: FencingToken,
    clock: C,
    status: watch::Receiver<Status>,
    /// Asks the task to release; dropping it (with the watchdog) does the same.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl<C: Clock + 'static> Watchdog<C> {
    /// Starts renewing `grant`, held from `locks`, whose leases run on `clock`.
    ///
    /// Must be called within a tokio runtime (it spawns the renewal task).
    ///
    /// # Errors
    ///
    /// A bad renewal lease ([`Error::ZeroLease`], [`Error::LeaseTooLong`]), or
    /// [`Error::RenewalInterval`] for an interval that is zero or not shorter than the
    /// lease. The grant is released before the error is returned.
    pub fn spawn<L: Locks + 'static>(
        locks: Arc<L>,
        grant: Grant,
        clock: C,
        renewal: Renewal,
    ) -> Result<Self, Error>
    where
        C: Clone,
    {
        let every = renewal.interval();
        let valid = check_lease(renewal.lease).and_then(|()| {
            if every.is_zero() || every >= renewal.lease {
                Err(Error::RenewalInterval {
                    every,
                    lease: renewal.lease,
                })
            } else {
                Ok(())
            }
        });
        if let Err(error) = valid {
            let _ = locks.release(grant);
            return Err(error);
        }
        let deadline = grant.deadline_nanos();
        let first = next_wait(every, deadline, clock.now_nanos());
        let (status_sender, status) = watch::channel(Status {
            deadline,
            loss: None,
        });
        let (stop, stopped) = oneshot::channel();
        let name = grant.name().to_owned();
        let token = grant.token();
        let task = Renewer {
            locks,
            name: name.clone(),
            token,
            clock: clock.clone(),
            lease: renewal.lease,
            every,
            status: status_sender,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::RenewalCounters::new(renewal.metrics_name),
        };
        let task = tokio::spawn(task.run(grant, first, stopped));
        Ok(Self {
            name,
            token,
            clock,
            status,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: send it with every write to the protected resource.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The clock reading at which the lease runs out unless renewed again.
    pub fn deadline_nanos(&self) -> u64 {
        self.status.borrow().deadline
    }

    /// Whether the grant is still held: no loss reported (nor the renewal task gone, see
    /// [`Loss::Stopped`]), and the last confirmed lease has not run out on the clock.
    pub fn is_held(&self) -> bool {
        if self.loss().is_some() {
            return false;
        }
        self.clock.now_nanos() < self.status.borrow().deadline
    }

    /// Why the grant was lost, if it was: the same answer [`Watchdog::lost`] resolves with.
    pub fn loss(&self) -> Option<Loss> {
        // Checked before the status is read: a task that reports a loss does so before it
        // ends, so a closed channel with no loss in it means the task ended without a word.
        let task_gone = self.status.has_changed().is_err();
        let loss = self.status.borrow().loss.clone();
        loss.or(task_gone.then_some(Loss::Stopped))
    }

    /// A future that resolves when the watchdog learns that the grant is lost, with the
    /// reason.
    ///
    /// The future does not borrow the watchdog: it can be moved to another task, and it still
    /// resolves (with [`Loss::Released`], or [`Loss::ReleaseFailed`]) after
    /// [`Watchdog::release`] or a drop. Cancel-safe: dropping it changes nothing, and any
    /// number of them can wait.
    pub fn lost(&self) -> impl Future<Output = Loss> + Send + 'static {
        let mut status = self.status.clone();
        async move {
            match status.wait_for(|status| status.loss.is_some()).await {
                Ok(status) => status.loss.clone().unwrap_or(Loss::Stopped),
                // The task is gone without a word: its runtime shut down.
                Err(_) => Loss::Stopped,
            }
        }
    }

    /// Stops the renewals and releases the grant.
    ///
    /// # Errors
    ///
    /// The error that ended the watchdog if it had already lost the grant (a failed
    /// renewal's error, or [`Error::LeaseExpired`]); otherwise as [`Locks::release`];
    /// [`Error::Backend`] if the renewal task did not complete (its runtime shut down).
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            // A task that already ended has dropped its receiver: its result says why.
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|_| not_completed())?,
            None => Ok(()),
        }
    }
}

impl<C: Clock + 'static> fmt::Debug for Watchdog<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// The renewal task's side.
struct Renewer<L: Locks + 'static, C: Clock> {
    locks: Arc<L>,
    /// The grant's name and token, for the error of a lease that ran out while the grant
    /// itself is away in a renewal (a renewal keeps the token).
    name: String,
    token: FencingToken,
    clock: C,
    lease: Duration,
    every: Duration,
    status: watch::Sender<Status>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::RenewalCounters,
}

/// When to renew a lease confirmed until `deadline`: after `every`, or after a third of what
/// is left if that is sooner. The confirmed lease may be shorter than the renewal lease (a
/// grant taken for less, a backend's clock-drift allowance), and `every` may be close to it.
fn next_wait(every: Duration, deadline: u64, now: u64) -> Duration {
    every.min(Duration::from_nanos(deadline.saturating_sub(now)) / 3)
}

impl<L: Locks + 'static, C: Clock> Renewer<L, C> {
    /// Renews `grant` until released, dropped or lost; the first renewal comes after `wait`.
    async fn run(
        self,
        mut grant: Grant,
        mut wait: Duration,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), Error> {
        loop {
            let deadline = grant.deadline_nanos();
            // A release asked for goes first; then the deadline, so that a renewal due at the
            // very moment the lease ends is not attempted.
            let due = first(self.until(deadline), tokio::time::sleep(wait));
            match first(&mut stop, due).await {
                // `Ok`: release asked; `Err`: the watchdog was dropped. Either way the grant
                // goes back now.
                First::A(_) => return self.release(grant).await,
                First::B(First::A(())) => return self.expire(grant).await,
                First::B(First::B(())) => {}
            }
            // The lease clock may have jumped past the deadline before tokio's timer did.
            if self.clock.now_nanos() >= deadline {
                return self.expire(grant).await;
            }
            let lease = self.lease;
            let locks = Arc::clone(&self.locks);
            let mut renewal = tokio::task::spawn_blocking(move || {
                let extended = locks.extend(&mut grant, lease);
                (grant, extended)
            });
            // A renewal whose answer is late must not keep the holder believing it holds the
            // lock past its deadline: the loss is reported at the deadline.
            let renewed = match first(&mut renewal, self.until(deadline)).await {
                First::A(renewed) => renewed.map_err(|_| not_completed()),
                First::B(()) => {
                    let error = self.expired();
                    // The grant is in the blocking call; once it returns, whatever it renewed
                    // goes back (the release compares tokens, so a new holder is untouched).
                    if let Ok((renewed, _)) = renewal.await {
                        let _ = self.blocking(move |locks| locks.release(renewed)).await;
                    }
                    return Err(error);
                }
            };
            let error = match renewed {
                Ok((renewed, Ok(()))) => {
                    grant = renewed;
                    let deadline = grant.deadline_nanos();
                    self.status.send_modify(|status| status.deadline = deadline);
                    wait = next_wait(self.every, deadline, self.clock.now_nanos());
                    continue;
                }
                Ok((renewed, Err(error))) => {
                    // Give back whatever is still held, so the next holder need not wait
                    // out the lease; its answer adds nothing to the renewal's error.
                    let _ = self.blocking(move |locks| locks.release(renewed)).await;
                    error
                }
                // The grant went down with the blocking call; its lease runs out.
                Err(error) => error,
            };
            #[cfg(feature = "metrics")]
            self.metrics.failed(&error);
            self.lose(Loss::RenewalFailed(error.clone()));
            return Err(error);
        }
    }

    /// Resolves once the clock has reached `deadline`. It sleeps on tokio's timer for what is
    /// left and reads the clock again on waking: the two clocks are separate (the lease clock
    /// may be a test's manual clock, or run at a slightly different rate).
    async fn until(&self, deadline: u64) {
        loop {
            let now = self.clock.now_nanos();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(deadline - now)).await;
        }
    }

    /// Releases the grant, as asked (or on drop), and reports how that went.
    async fn release(&self, grant: Grant) -> Result<(), Error> {
        let released = self
            .blocking(move |locks| locks.release(grant))
            .await
            .and_then(|released| released);
        self.lose(match &released {
            Ok(()) => Loss::Released,
            // A lease that ran out between two renewals was lost before the release.
            Err(Error::LeaseExpired { .. }) => Loss::Expired,
            Err(error) => Loss::ReleaseFailed(error.clone()),
        });
        released
    }

    /// Reports the lease run out on the clock, then gives the grant back in case the backend
    /// still holds it (its lease may end a little after ours, by its drift allowance).
    async fn expire(&self, grant: Grant) -> Result<(), Error> {
        let error = self.expired();
        let _ = self.blocking(move |locks| locks.release(grant)).await;
        Err(error)
    }

    /// Reports the loss of the grant to an expired lease, and returns the error for it.
    fn expired(&self) -> Error {
        let error = Error::LeaseExpired {
            name: self.name.clone(),
            token: self.token,
        };
        #[cfg(feature = "metrics")]
        self.metrics.failed(&error);
        self.lose(Loss::Expired);
        error
    }

    /// Runs `call` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&L) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let locks = Arc::clone(&self.locks);
        tokio::task::spawn_blocking(move || call(&locks))
            .await
            .map_err(|_| not_completed())
    }

    fn lose(&self, loss: Loss) {
        self.status.send_modify(|status| status.loss = Some(loss));
    }
}

/// Which of two futures finished first.
enum First<A, B> {
    A(A),
    B(B),
}

/// Runs `a` and `b` together until one finishes; `a` is polled first, so it wins a tie.
async fn first<A: Future, B: Future>(a: A, b: B) -> First<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(a) = a.as_mut().poll(cx) {
            return Poll::Ready(First::A(a));
        }
        b.as_mut().poll(cx).map(First::B)
    })
    .await
}
