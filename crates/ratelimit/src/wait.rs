//! Waiting for capacity on tokio's timer: fair, cancel-safe, without a background task, for a
//! direct limiter (here) or per key (`keyed`).

mod jitter;
mod keyed;
mod queue;

pub use jitter::Jitter;
pub use keyed::AsyncKeyedRateLimiter;
use queue::Queue;

use std::fmt;
use std::time::{Duration, SystemTime};

use infra_common::Clock;
use infra_common::clock::duration_to_nanos;
use infra_common::sync::{Arc, Mutex};
use tokio::sync::Notify;

use crate::algorithm::Algorithm;
use crate::{Decision, Error, Gcra, RateLimiter};

/// A clock that reads tokio's time, so limiters follow a paused test runtime
/// (`#[tokio::test(start_paused = true)]`) exactly as they follow real time in production.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_nanos(&self) -> u64 {
        duration_to_nanos(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }

    fn wall_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Where one limited thing's waiters queue: the direct limiter's single line, or one key's.
trait Line {
    /// Runs `f` on the queue under its lock, creating the queue if there is none yet; a queue
    /// `f` leaves empty may be dropped.
    ///
    /// # Errors
    ///
    /// When `f` queued a caller the line has no room for (a cap on waiters, or a keyed
    /// limiter's cap on waiting keys): that caller is taken back out, and `f`'s result dropped.
    fn join<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> Result<R, Error>;

    /// Runs `f` on the queue, which exists while a caller holds a ticket in it, under its lock;
    /// a queue `f` leaves empty may be dropped.
    fn locked<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R;
}

/// Where `join` left a caller: admitted, or queued with its ticket and its wake-up signal.
enum Joined {
    Admitted(Decision),
    Queued(u64, Arc<Notify>),
}

/// What a queued caller does next.
enum Step {
    Admitted(Decision),
    Sleep(Duration),
    AwaitTurn,
}

/// A queued caller's place: leaves the queue when its future is dropped before admission.
struct Place<'a, L: Line> {
    line: &'a L,
    ticket: u64,
    admitted: bool,
}

impl<L: Line> Drop for Place<'_, L> {
    fn drop(&mut self) {
        if !self.admitted {
            self.line.locked(|queue| queue.leave(self.ticket));
        }
    }
}

/// The waiting protocol of every waiter: decided at once when nobody waits in `line`, else
/// queued; only the head checks, sleeping until the check's `retry_after` (plus jitter), and
/// capacity is consumed only in the poll that returns it.
async fn wait_in_line<L: Line>(
    line: &L,
    jitter: Option<&Jitter>,
    check: impl Fn() -> Result<Decision, Error>,
) -> Result<Decision, Error> {
    let joined = line.join(|queue| -> Result<Joined, Error> {
        if queue.is_empty() {
            let decision = check()?;
            if decision.is_allowed() {
                return Ok(Joined::Admitted(decision));
            }
        }
        // Allocated only for a caller that waits: one admitted at once costs no allocation.
        let turn = Arc::new(Notify::new());
        Ok(Joined::Queued(queue.push(Arc::clone(&turn)), turn))
    })??;
    let (ticket, turn) = match joined {
        Joined::Admitted(decision) => return Ok(decision),
        Joined::Queued(ticket, turn) => (ticket, turn),
    };
    let mut place = Place {
        line,
        ticket,
        admitted: false,
    };
    loop {
        let step = line.locked(|queue| -> Result<Step, Error> {
            if queue.head() != Some(ticket) {
                return Ok(Step::AwaitTurn);
            }
            let decision = match check() {
                // A keyed limiter may forget the key while its head waiter sleeps (it is idle
                // once its capacity is back) and be full of active keys when the waiter
                // wakes: a caller let into the line waits on for room, as it waits for
                // capacity, rather than fail after waiting its turn.
                Err(Error::TooManyKeys { retry_after, .. }) => return Ok(Step::Sleep(retry_after)),
                checked => checked?,
            };
            if decision.is_allowed() {
                queue.pop_head();
                return Ok(Step::Admitted(decision));
            }
            Ok(Step::Sleep(decision.retry_after()))
        })?;
        match step {
            Step::Admitted(decision) => {
                place.admitted = true;
                return Ok(decision);
            }
            // Never sleep zero: a quota change could otherwise make this spin.
            Step::Sleep(wait) => {
                let jitter = jitter.map_or(Duration::ZERO, Jitter::next);
                let wait = wait.max(Duration::from_nanos(1)).saturating_add(jitter);
                sleep_unless_woken(wait, &turn).await;
            }
            Step::AwaitTurn => turn.notified().await,
        }
    }
}

/// Sleeps for `duration`, or until `turn` is notified, whichever comes first. The head of a
/// line sleeps so: a quota change through the waiting limiter wakes it (see
/// [`Queue::wake_head`]), since capacity may be back sooner than the old quota said. A stray
/// notification costs one more check, never an admission.
async fn sleep_unless_woken(duration: Duration, turn: &Notify) {
    let mut sleep = std::pin::pin!(tokio::time::sleep(duration));
    let mut woken = std::pin::pin!(turn.notified());
    std::future::poll_fn(|cx| {
        if sleep.as_mut().poll(cx).is_ready() || woken.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A direct limiter's line, and the most callers it lets wait.
#[derive(Debug)]
struct DirectLine {
    queue: Mutex<Queue>,
    max_waiters: usize,
}

impl Line for DirectLine {
    fn join<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> Result<R, Error> {
        let mut queue = self.queue.lock();
        let before = queue.len();
        let joined = f(&mut queue);
        if queue.len() > before && queue.len() > self.max_waiters {
            queue.unpush();
            return Err(Error::TooManyWaiters {
                max_waiters: self.max_waiters,
            });
        }
        Ok(joined)
    }

    fn locked<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        f(&mut self.queue.lock())
    }
}

/// A [`RateLimiter`] whose callers can wait for capacity instead of being denied.
///
/// - **FIFO-fair**: waiters are admitted in arrival order; a small request never overtakes a
///   larger one queued before it, so large requests cannot starve. A caller arriving while
///   nobody waits is decided at once.
/// - **Cancel-safe**: capacity is consumed only in the same poll that returns it; dropping a
///   waiting future takes nothing and lets the next waiter move up.
/// - **No background task**: the first waiter sleeps until the limiter's `retry_after`, the
///   others sleep until they reach the head of the queue. Each departure wakes only the new
///   head, so `n` waiters cost `O(n)` wake-ups in all, not `O(n²)`, and a waiter that gives up
///   leaves in `O(log n)` (amortized), wherever it stands in the line.
/// - **Bounded**: at most [`max_waiters`](AsyncRateLimiter::with_max_waiters) callers wait
///   (default [`AsyncRateLimiter::DEFAULT_MAX_WAITERS`]); one more that would have to wait gets
///   [`Error::TooManyWaiters`] at once, so a flood of waiters cannot grow memory without end.
/// - **Jitter** (optional, [`AsyncRateLimiter::with_jitter`]): each sleep until capacity is
///   back is lengthened by a random delay up to a bound, so callers across many limiters that
///   would all wake at the same instant (a thundering herd) are spread over that bound.
///
/// The limiter's clock must agree with tokio's timer: use [`TokioClock`] (or the system clock
/// outside tests).
///
/// ```
/// use infra_ratelimit::{AsyncRateLimiter, Quota, RateLimiter, TokioClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), infra_ratelimit::Error> {
/// let limiter = AsyncRateLimiter::new(RateLimiter::gcra(Quota::per_second(2)?, TokioClock::new())?);
/// let start = tokio::time::Instant::now();
/// for _ in 0..4 {
///     limiter.until_ready().await?;
/// }
/// assert_eq!(start.elapsed(), Duration::from_secs(1)); // 2 at once, then one per 500 ms
/// # Ok(())
/// # }
/// ```
pub struct AsyncRateLimiter<A: Algorithm = Gcra, C: Clock = TokioClock> {
    limiter: RateLimiter<A, C>,
    line: DirectLine,
    jitter: Option<Jitter>,
}

impl<A: Algorithm, C: Clock> AsyncRateLimiter<A, C> {
    /// The default cap on waiting callers: 100,000.
    pub const DEFAULT_MAX_WAITERS: usize = 100_000;

    /// Wraps a limiter.
    pub fn new(limiter: RateLimiter<A, C>) -> Self {
        Self {
            limiter,
            line: DirectLine {
                queue: Mutex::new(Queue::default()),
                max_waiters: Self::DEFAULT_MAX_WAITERS,
            },
            jitter: None,
        }
    }

    /// Lets at most `max` callers wait at once (at least 1); a caller that would be one more
    /// gets [`Error::TooManyWaiters`] instead of waiting.
    ///
    /// ```
    /// use infra_ratelimit::{AsyncRateLimiter, Error, Quota, RateLimiter, TokioClock};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Error> {
    /// let limiter = AsyncRateLimiter::new(RateLimiter::gcra(Quota::per_second(1)?, TokioClock::new())?)
    ///     .with_max_waiters(1);
    /// limiter.until_ready().await?; // admitted at once
    /// let first = limiter.until_ready(); // would wait: the one caller allowed to
    /// let mut first = std::pin::pin!(first);
    /// assert!(poll_once(first.as_mut()).is_none());
    /// assert!(matches!(
    ///     limiter.until_ready().await,
    ///     Err(Error::TooManyWaiters { max_waiters: 1 })
    /// ));
    /// first.await?; // the waiter in line is served as usual
    /// # Ok(())
    /// # }
    /// # fn poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     match f.poll(&mut cx) { std::task::Poll::Ready(v) => Some(v), std::task::Poll::Pending => None }
    /// # }
    /// ```
    #[must_use]
    pub fn with_max_waiters(self, max: usize) -> Self {
        Self {
            line: DirectLine {
                queue: Mutex::new(Queue::default()),
                max_waiters: max.max(1),
            },
            ..self
        }
    }

    /// Lengthens every sleep until capacity is back by a random delay up to `jitter`'s bound.
    ///
    /// ```
    /// use infra_ratelimit::{AsyncRateLimiter, Jitter, Quota, RateLimiter, TokioClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), infra_ratelimit::Error> {
    /// let limiter = AsyncRateLimiter::new(RateLimiter::gcra(Quota::per_second(1)?, TokioClock::new())?)
    ///     .with_jitter(Jitter::up_to(Duration::from_millis(100)));
    /// let start = tokio::time::Instant::now();
    /// limiter.until_ready().await?;
    /// limiter.until_ready().await?; // a second later, and up to 100 ms more
    /// assert!(start.elapsed() >= Duration::from_secs(1));
    /// assert!(start.elapsed() <= Duration::from_millis(1_100));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self {
            jitter: Some(jitter),
            ..self
        }
    }

    /// The wrapped limiter (for `check`, ...). Its direct checks do not queue.
    ///
    /// Change its quota with [`AsyncRateLimiter::set_quota`] rather than through this: a
    /// waiter asleep until the old quota's `retry_after` learns of a change made here only when
    /// it wakes (`a_quota_raise_on_the_wrapped_limiter_reaches_a_waiter_when_it_wakes`). Waking
    /// waiters from here would put a hook on the limiter itself, which does not know it is
    /// waited on.
    pub fn limiter(&self) -> &RateLimiter<A, C> {
        &self.limiter
    }

    /// Replaces the quota, as [`RateLimiter::set_quota`] does (states are kept), and has the
    /// waiter at the head of the line check again at once: under the new quota its capacity
    /// may be back sooner than the old one said.
    ///
    /// # Errors
    ///
    /// As [`RateLimiter::set_quota`]; the old quota then stays in force.
    ///
    /// ```
    /// use infra_ratelimit::{AsyncRateLimiter, FixedWindow, Quota, RateLimiter, TokioClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), infra_ratelimit::Error> {
    /// let limiter = std::sync::Arc::new(AsyncRateLimiter::new(
    ///     RateLimiter::<FixedWindow, _>::with_clock(Quota::per_hour(1)?, TokioClock::new())?,
    /// ));
    /// limiter.until_ready().await?;
    /// let waiter = tokio::spawn({
    ///     let limiter = limiter.clone();
    ///     async move { limiter.until_ready().await }
    /// });
    /// tokio::time::sleep(Duration::from_secs(1)).await; // the waiter sleeps till the hour ends
    /// let start = tokio::time::Instant::now();
    /// limiter.set_quota(Quota::per_hour(10)?)?;
    /// assert!(waiter.await.unwrap()?.is_allowed());
    /// assert_eq!(start.elapsed(), Duration::ZERO); // admitted as soon as the quota allowed it
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_quota(&self, quota: crate::Quota) -> Result<(), Error> {
        self.limiter.set_quota(quota)?;
        self.line.locked(|queue| queue.wake_head());
        Ok(())
    }

    /// Callers currently waiting.
    pub fn waiting(&self) -> usize {
        self.line.queue.lock().len()
    }

    /// Waits until one request is admitted and returns its decision.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyWaiters`] at once when the request would have to wait and the line is
    /// full ([`AsyncRateLimiter::with_max_waiters`]).
    pub async fn until_ready(&self) -> Result<Decision, Error> {
        self.until_n_ready(1).await
    }

    /// Waits until `n` cells are admitted at once and returns the decision. `n = 0` takes
    /// nothing and is answered at once, even behind waiters (a way to read `remaining`).
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] at once when `n` exceeds the capacity (it would wait
    /// forever); [`Error::TooManyWaiters`] as [`AsyncRateLimiter::until_ready`].
    pub async fn until_n_ready(&self, n: u32) -> Result<Decision, Error> {
        // Refused before joining the line: behind waiters, only the head checks, so it would
        // wait its turn to be refused.
        Error::within_capacity(n, self.limiter.capacity())?;
        if n == 0 {
            // Takes nothing, so it overtakes nobody: no reason to wait behind the line.
            return self.limiter.check_n(0);
        }
        wait_in_line(&self.line, self.jitter.as_ref(), || self.limiter.check_n(n)).await
    }
}

impl<A: Algorithm, C: Clock> fmt::Debug for AsyncRateLimiter<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRateLimiter")
            .field("limiter", &self.limiter)
            .field("waiting", &self.waiting())
            .field("jitter", &self.jitter)
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::Quota;
    use infra_common::sync::Arc;
    use tokio::time::Instant;

    fn limiter(per_second: u64, burst: u64) -> Arc<AsyncRateLimiter> {
        let quota = Quota::per_second(per_second)
            .unwrap()
            .with_burst(burst)
            .unwrap();
        Arc::new(AsyncRateLimiter::new(
            RateLimiter::gcra(quota, TokioClock::new()).unwrap(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn waits_exactly_until_capacity_is_back() {
        let limiter = limiter(1, 1);
        let start = Instant::now();
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(matches!(
            limiter.until_n_ready(2).await,
            Err(Error::InsufficientCapacity { .. })
        ));
    }

    /// A request larger than the capacity is refused at once even behind waiters: it would
    /// wait its turn only to be refused, holding a place in the line meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_request_above_the_capacity_is_refused_at_once_behind_waiters() {
        let limiter = limiter(1, 1);
        let _ = limiter.until_ready().await.unwrap();
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.until_ready().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting(), 1);
        let start = Instant::now();
        assert!(matches!(
            limiter.until_n_ready(2).await,
            Err(Error::InsufficientCapacity { .. })
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(waiter.await.unwrap().unwrap().is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let limiter = limiter(1, 2);
        let _ = limiter.until_n_ready(2).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, n) in [("big", 2), ("small", 1), ("small2", 1)] {
            let (limiter, order) = (Arc::clone(&limiter), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _ = limiter.until_n_ready(n).await.unwrap();
                order.lock().push((name, Instant::now()));
            }));
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock();
        let names: Vec<_> = order.iter().map(|(name, _)| *name).collect();
        // "small" could have had a cell after 1 s, but "big" arrived first and needs 2.
        assert_eq!(names, ["big", "small", "small2"]);
        let start = order[0].1 - Duration::from_secs(2);
        assert_eq!(order[1].1 - start, Duration::from_secs(3));
        assert_eq!(order[2].1 - start, Duration::from_secs(4));
    }

    /// A future that counts how often it is polled: each poll after the first is a wake-up.
    struct Polls<F> {
        inner: std::pin::Pin<Box<F>>,
        polls: Arc<infra_common::sync::atomic::AtomicUsize>,
    }

    impl<F: std::future::Future> std::future::Future for Polls<F> {
        type Output = F::Output;

        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<F::Output> {
            self.polls
                .fetch_add(1, infra_common::sync::atomic::Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_departure_wakes_only_the_next_waiter() {
        let limiter = limiter(1, 1);
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let waiters = 60;
        let polls = Arc::new(infra_common::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..waiters {
            let limiter = Arc::clone(&limiter);
            let future = Polls {
                inner: Box::pin(async move { limiter.until_ready().await }),
                polls: Arc::clone(&polls),
            };
            tasks.push(tokio::spawn(future));
            tokio::task::yield_now().await;
        }
        for task in tasks {
            assert!(task.await.unwrap().unwrap().is_allowed());
        }
        // Each waiter is polled when it queues, when it reaches the head and when its
        // retry-after elapses; waking every waiter on every departure would take ~n²/2 polls.
        let polls = polls.load(infra_common::sync::atomic::Ordering::Relaxed);
        assert!(polls <= 4 * waiters, "{polls} polls for {waiters} waiters");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_takes_nothing_and_lets_the_next_move_up() {
        let limiter = limiter(1, 2);
        let _ = limiter.until_n_ready(2).await.unwrap();
        let start = Instant::now();
        let first = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_n_ready(2).await })
        };
        tokio::task::yield_now().await;
        let second = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert!(second.await.unwrap().unwrap().is_allowed());
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "one cell back after 1 s"
        );
        assert_eq!(limiter.waiting(), 0);
        // The cancelled waiter consumed nothing: one more cell is back 1 s later.
        let d = limiter.limiter().check();
        assert!(d.is_denied());
        assert_eq!(d.retry_after(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_line_refuses_one_more_waiter_until_one_leaves() {
        let quota = Quota::per_second(1).unwrap();
        let limiter = Arc::new(
            AsyncRateLimiter::new(RateLimiter::gcra(quota, TokioClock::new()).unwrap())
                .with_max_waiters(2),
        );
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let spawn = || {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready().await })
        };
        let (first, second) = (spawn(), spawn());
        tokio::task::yield_now().await;
        assert_eq!(
            limiter.until_ready().await,
            Err(Error::TooManyWaiters { max_waiters: 2 })
        );
        assert_eq!(limiter.waiting(), 2);
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let third = spawn();
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting(), 2);
        let start = Instant::now();
        assert!(second.await.unwrap().unwrap().is_allowed());
        assert!(third.await.unwrap().unwrap().is_allowed());
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "one per second, in order"
        );
    }

    /// Asking for nothing (`until_n_ready(0)`, to read `remaining`) takes nothing, so it
    /// overtakes nobody: answered at once behind waiters, and the line is as it was.
    #[tokio::test(start_paused = true)]
    async fn asking_for_nothing_never_waits_in_line() {
        let limiter = limiter(1, 1);
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready().await })
        };
        settle(|| limiter.waiting() == 1).await;
        let start = Instant::now();
        let peek = limiter.until_n_ready(0).await.unwrap();
        assert!(peek.is_allowed() && peek.remaining() == 0, "{peek:?}");
        assert_eq!(start.elapsed(), Duration::ZERO, "answered at once");
        assert_eq!(limiter.waiting(), 1);
        assert!(waiter.await.unwrap().unwrap().is_allowed());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    /// A fixed window of one an hour whose one admission is taken, and a waiter that has
    /// slept a second of the hour it waits for the next window.
    async fn a_waiter_asleep_for_the_hour() -> (
        Arc<AsyncRateLimiter<crate::FixedWindow>>,
        tokio::task::JoinHandle<Result<Decision, Error>>,
    ) {
        let limiter = Arc::new(AsyncRateLimiter::new(
            RateLimiter::<crate::FixedWindow, _>::with_clock(
                Quota::per_hour(1).unwrap(),
                TokioClock::new(),
            )
            .unwrap(),
        ));
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready().await })
        };
        settle(|| limiter.waiting() == 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        (limiter, waiter)
    }

    /// A quota change that brings capacity back sooner wakes the head of the line: a raised
    /// limit admits a waiter at once, as it admits a direct check, instead of after the
    /// rest of the window the old quota had it sleep through.
    #[tokio::test(start_paused = true)]
    async fn a_quota_raise_admits_a_sleeping_waiter_at_once() {
        let (limiter, waiter) = a_waiter_asleep_for_the_hour().await;
        let start = Instant::now();
        limiter.set_quota(Quota::per_hour(10).unwrap()).unwrap();
        assert!(waiter.await.unwrap().unwrap().is_allowed());
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "admitted when the quota was raised"
        );
    }

    /// A quota change made on the wrapped limiter directly wakes nobody: the waiter asleep
    /// until the old quota's `retry_after` is admitted when that sleep ends, not at the change
    /// (only `AsyncRateLimiter::set_quota` wakes it, so the direct check path stays as it is).
    #[tokio::test(start_paused = true)]
    async fn a_quota_raise_on_the_wrapped_limiter_reaches_a_waiter_when_it_wakes() {
        let start = Instant::now();
        let (limiter, waiter) = a_waiter_asleep_for_the_hour().await;
        limiter
            .limiter()
            .set_quota(Quota::per_hour(10).unwrap())
            .unwrap();
        assert!(
            limiter.limiter().check().is_allowed(),
            "the raise is in force"
        );
        assert!(waiter.await.unwrap().unwrap().is_allowed());
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3_600),
            "admitted when the old window ended"
        );
    }

    /// Yields until `done` holds: spawned tasks run (and queue) in some later turns.
    pub(super) async fn settle(done: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the spawned tasks never got there");
    }

    #[tokio::test(start_paused = true)]
    async fn thousands_of_waiters_giving_up_in_any_order_leave_the_line_working() {
        let limiter = limiter(1, 1);
        assert!(limiter.until_ready().await.unwrap().is_allowed());
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.until_ready().await })
            })
            .collect();
        settle(|| limiter.waiting() == 10_000).await;
        // Every other waiter from the back, then the rest but the last from the front.
        let (kept, mut gone): (Vec<_>, Vec<_>) = tasks
            .into_iter()
            .enumerate()
            .partition(|(i, _)| *i == 9_999);
        gone.sort_by_key(|(i, _)| (i % 2 == 0, std::cmp::Reverse(*i)));
        for (_, task) in &gone {
            task.abort();
        }
        for (_, task) in gone {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert_eq!(limiter.waiting(), 1);
        let start = Instant::now();
        for (_, task) in kept {
            assert!(task.await.unwrap().unwrap().is_allowed());
        }
        assert!(
            start.elapsed() <= Duration::from_secs(1),
            "served when its cell is back"
        );
        assert_eq!(limiter.waiting(), 0);
    }
}
