//! The async surface and the renewal watchdog, on tokio's paused time with leases on a
//! `ManualClock`: renewals keep a lease alive, a failed renewal or release is reported, a
//! renewal stuck past the deadline is reported at the deadline, release and drop stop the
//! renewals, and a cancelled acquisition leaves nothing held and gives its thread back.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use infra_common::sync::{Condvar, Mutex, thread};
use infra_dlock::{
    Access, AsyncLocks, Error, Grant, Locks, Loss, MemoryLocks, Renewal, Wait, Watchdog,
};

const LEASE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(10);

/// A backend that counts renewals, fails renewals or releases on demand, can hold back the
/// answer to a renewal it has made (a slow reply from a lock server), and can confirm less
/// lease than asked, as the Redis backend counts its clock-drift allowance off every grant
/// and extension.
struct Flaky {
    inner: MemoryLocks<ManualClock>,
    /// Taken off every lease asked for.
    shortfall: Duration,
    extends: AtomicUsize,
    fail_extends: AtomicBool,
    fail_releases: AtomicBool,
    /// While true, `extend` renews the lease at once but does not return.
    holding: Mutex<bool>,
    answer: Condvar,
    /// How each grant request asked to wait, in order.
    waits: Mutex<Vec<Wait>>,
}

impl Flaky {
    fn new(clock: &ManualClock) -> Self {
        Self {
            inner: MemoryLocks::with_clock(clock.clone()),
            shortfall: Duration::ZERO,
            extends: AtomicUsize::new(0),
            fail_extends: AtomicBool::new(false),
            fail_releases: AtomicBool::new(false),
            holding: Mutex::new(false),
            answer: Condvar::new(),
            waits: Mutex::new(Vec::new()),
        }
    }

    /// Holds back the answers to renewals from now on (`true`), or lets them go (`false`).
    fn hold_answers(&self, hold: bool) {
        *self.holding.lock() = hold;
        self.answer.notify_all();
    }
}

fn injected() -> Error {
    Error::Backend {
        reason: "injected".into(),
    }
}

impl Locks for Flaky {
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        self.waits.lock().push(wait);
        self.inner.grant(name, access, lease - self.shortfall, wait)
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        if self.fail_extends.load(Ordering::SeqCst) {
            self.extends.fetch_add(1, Ordering::SeqCst);
            return Err(injected());
        }
        let extended = self.inner.extend(grant, lease - self.shortfall);
        // Counted once the backend has renewed, so a test that sees the count sees the renewal.
        self.extends.fetch_add(1, Ordering::SeqCst);
        let mut holding = self.holding.lock();
        while *holding {
            self.answer.wait(&mut holding);
        }
        extended
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
        if self.fail_releases.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.inner.release(grant)
    }

    fn is_held(&self, grant: &Grant) -> bool {
        self.inner.is_held(grant)
    }

    fn wait_lost(&self, grant: &Grant) {
        self.inner.wait_lost(grant);
    }
}

/// Moves the lease clock and tokio's paused clock forward together by half a tick, so that
/// the test looks between renewals rather than at the instant one is due.
async fn half_tick(clock: &ManualClock) {
    clock.advance(TICK / 2);
    tokio::time::sleep(TICK / 2).await;
}

/// Moves the lease clock and tokio's paused clock forward together, one tick.
async fn tick(clock: &ManualClock) {
    clock.advance(TICK);
    tokio::time::sleep(TICK).await;
}

/// Waits, on paused time, until the watchdog's task has let go of `locks` (its last clone).
async fn until_task_ended<L>(locks: &Arc<L>) {
    // The sleep is virtual: paused time moves only when the runtime (and its blocking pool)
    // is idle, so each round lets the task and its blocking calls finish.
    for _ in 0..100 {
        if Arc::strong_count(locks) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the renewal task still holds the backend");
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_the_lease_alive_across_many_lease_lengths() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let token = grant.token();
    let unguarded = locks.acquire("unguarded", LEASE).unwrap().into_grant();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    half_tick(&clock).await;
    // Twenty leases long.
    for _ in 0..60 {
        tick(&clock).await;
        assert!(watchdog.is_held());
        assert!(watchdog.deadline_nanos() > clock_now(&clock));
    }
    assert!(locks.try_acquire("job", LEASE).unwrap().is_none(), "lost");
    assert_eq!(watchdog.loss(), None);
    assert_eq!(watchdog.token(), token);
    // One renewal per third of the lease.
    assert_eq!(locks.extends.load(Ordering::SeqCst), 60);
    // Without a watchdog, the same lease is long gone.
    assert!(!locks.is_held(&unguarded));
    watchdog.release().await.unwrap();
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
}

fn clock_now(clock: &ManualClock) -> u64 {
    infra_common::Clock::now_nanos(clock)
}

#[tokio::test(start_paused = true)]
async fn a_failed_renewal_resolves_lost_with_the_error_and_is_not_retried_silently() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    half_tick(&clock).await;
    tick(&clock).await;
    assert!(watchdog.is_held());
    locks.fail_extends.store(true, Ordering::SeqCst);
    clock.advance(TICK);
    let injected = injected();
    // Resolves at the next renewal: nothing else moves the time.
    assert_eq!(watchdog.lost().await, Loss::RenewalFailed(injected.clone()));
    assert!(!watchdog.is_held());
    assert_eq!(watchdog.loss(), Some(Loss::RenewalFailed(injected.clone())));
    // The watchdog gave up: no more renewals, and what it held was given back.
    for _ in 0..5 {
        tick(&clock).await;
    }
    assert_eq!(locks.extends.load(Ordering::SeqCst), 2);
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
    assert_eq!(watchdog.release().await, Err(injected));
}

#[tokio::test(start_paused = true)]
async fn a_lease_that_ran_out_and_was_taken_over_is_reported_expired_and_left_to_the_new_holder() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let token = grant.token();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    // The process stalls: the lease clock runs past the lease before the next renewal.
    clock.advance(LEASE + TICK);
    assert!(!watchdog.is_held(), "is_held reads the clock");
    let next = locks.acquire("job", LEASE).unwrap();
    assert!(next.token() > token);
    assert_eq!(watchdog.lost().await, Loss::Expired);
    assert_eq!(
        watchdog.release().await,
        Err(Error::LeaseExpired {
            name: "job".into(),
            token
        })
    );
    assert!(
        next.is_held(),
        "the watchdog touched the new holder's grant"
    );
}

#[tokio::test(start_paused = true)]
async fn release_stops_the_renewals() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE).every(Duration::from_secs(5)),
    )
    .unwrap();
    half_tick(&clock).await;
    for _ in 0..3 {
        tick(&clock).await;
    }
    let renewals = locks.extends.load(Ordering::SeqCst);
    assert_eq!(renewals, 6);
    assert_eq!(watchdog.loss(), None);
    watchdog.release().await.unwrap();
    for _ in 0..10 {
        tick(&clock).await;
    }
    assert_eq!(locks.extends.load(Ordering::SeqCst), renewals);
    until_task_ended(&locks).await;
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn every_waiter_sees_the_loss() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let token = grant.token();
    let watchdog = Arc::new(
        Watchdog::spawn(
            Arc::clone(&locks),
            grant,
            clock.clone(),
            Renewal::new(LEASE),
        )
        .unwrap(),
    );
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let watchdog = Arc::clone(&watchdog);
            tokio::spawn(async move { watchdog.lost().await })
        })
        .collect();
    half_tick(&clock).await;
    clock.advance(LEASE);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Loss::Expired);
    }
    let Ok(watchdog) = Arc::try_unwrap(watchdog) else {
        panic!("the waiters have ended");
    };
    let expired = Error::LeaseExpired {
        name: "job".into(),
        token,
    };
    assert_eq!(watchdog.release().await, Err(expired));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_watchdog_releases_the_grant_and_ends_its_task() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    tick(&clock).await;
    assert_eq!(Arc::strong_count(&locks), 2, "the task holds the backend");
    drop(watchdog);
    until_task_ended(&locks).await;
    // Released at once, not left to run out.
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
    let renewals = locks.extends.load(Ordering::SeqCst);
    for _ in 0..5 {
        tick(&clock).await;
    }
    assert_eq!(locks.extends.load(Ordering::SeqCst), renewals);
}

#[tokio::test(start_paused = true)]
async fn bad_renewal_settings_are_refused_and_the_grant_released() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    for (renewal, expected) in [
        (
            Renewal::new(LEASE).every(LEASE),
            Error::RenewalInterval {
                every: LEASE,
                lease: LEASE,
            },
        ),
        (
            Renewal::new(LEASE).every(Duration::ZERO),
            Error::RenewalInterval {
                every: Duration::ZERO,
                lease: LEASE,
            },
        ),
        (Renewal::new(Duration::ZERO), Error::ZeroLease),
        // A lease of 2 ns renewed every third of it: every 0 ns.
        (
            Renewal::new(Duration::from_nanos(2)),
            Error::RenewalInterval {
                every: Duration::ZERO,
                lease: Duration::from_nanos(2),
            },
        ),
    ] {
        let grant = locks.acquire("job", LEASE).unwrap().into_grant();
        let spawned = Watchdog::spawn(Arc::clone(&locks), grant, clock.clone(), renewal);
        assert_eq!(spawned.err(), Some(expected));
        assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
    }
}

#[tokio::test]
async fn async_calls_share_the_backend_and_a_cancelled_acquire_leaves_nothing_held() {
    let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
    let async_locks = AsyncLocks::new(Arc::clone(&locks));
    let mut first = async_locks.acquire("job", LEASE).await.unwrap();
    assert!(
        async_locks
            .try_acquire("job", LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(async_locks.is_held(&first).await);
    async_locks.extend(&mut first, LEASE * 2).await.unwrap();
    assert_eq!(first.lease(), LEASE * 2);

    // A waiting acquire whose future is dropped (its task aborted while queued).
    let waiting = {
        let async_locks = async_locks.clone();
        tokio::spawn(async move { async_locks.acquire("job", LEASE).await })
    };
    while locks.queue_len("job") == 0 {
        tokio::task::yield_now().await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    // The release hands the lock to the queued blocking call, whose future is gone: the
    // grant must come back rather than run out its lease.
    let first_token = first.token().get();
    async_locks.release(first).await.unwrap();
    let mut again = None;
    while again.is_none() {
        thread::yield_now();
        again = async_locks.try_acquire("job", LEASE).await.unwrap();
    }
    let again = again.unwrap();
    assert!(locks.is_held(&again));
    // The grant handed to the abandoned wait had the next token, given back under the mutex;
    // the fast path counts on past it.
    assert_eq!(again.token().get(), first_token + 2);
    assert_eq!(
        async_locks
            .grant("", Access::Exclusive, LEASE, Wait::No)
            .await,
        Err(Error::EmptyName)
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_after_the_lease_ran_out_reports_it_expired() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let token = grant.token();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    half_tick(&clock).await;
    // Between two renewals, the lease clock jumps past the lease; the release comes first.
    clock.advance(LEASE);
    let waiter = tokio::spawn(watchdog.lost());
    assert_eq!(
        watchdog.release().await,
        Err(Error::LeaseExpired {
            name: "job".into(),
            token
        })
    );
    assert_eq!(waiter.await.unwrap(), Loss::Expired);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_learns_of_a_release_and_of_a_drop() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    for drop_it in [false, true] {
        let grant = locks.acquire("job", LEASE).unwrap().into_grant();
        let watchdog = Watchdog::spawn(
            Arc::clone(&locks),
            grant,
            clock.clone(),
            Renewal::new(LEASE),
        )
        .unwrap();
        let waiter = tokio::spawn(watchdog.lost());
        half_tick(&clock).await;
        assert!(!waiter.is_finished());
        if drop_it {
            drop(watchdog);
        } else {
            watchdog.release().await.unwrap();
        }
        assert_eq!(waiter.await.unwrap(), Loss::Released);
        assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
    }
}

/// Lets the tasks and the blocking pool run until `locks` has made `count` renewals (or long
/// enough to say it will not), without moving any clock; returns how many it made.
async fn until_renewals(locks: &Flaky, count: usize) -> usize {
    for _ in 0..10_000 {
        if locks.extends.load(Ordering::SeqCst) >= count {
            break;
        }
        tokio::task::yield_now().await;
        thread::yield_now();
    }
    locks.extends.load(Ordering::SeqCst)
}

/// Lets the watchdog's task run until it has reported a loss, without moving any clock.
async fn until_lost(watchdog: &Watchdog<ManualClock>) -> Option<Loss> {
    for _ in 0..100 {
        if watchdog.loss().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    watchdog.loss()
}

#[tokio::test(start_paused = true)]
async fn a_renewal_whose_answer_comes_after_the_deadline_is_reported_expired_at_the_deadline() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let token = grant.token();
    let deadline = grant.deadline_nanos();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    // The renewal due at 10 s is made by the backend, but its answer does not come back.
    locks.hold_answers(true);
    tick(&clock).await;
    assert_eq!(until_renewals(&locks, 1).await, 1);
    // Both clocks reach the deadline of the last confirmed lease. (The blocked renewal keeps
    // paused time from moving by itself, so it is moved by hand.)
    clock.advance(LEASE - TICK);
    tokio::time::advance(LEASE - TICK).await;
    assert_eq!(clock_now(&clock), deadline);
    let loss = until_lost(&watchdog).await;
    let held = watchdog.is_held();
    let lost_now = tokio::time::timeout(Duration::ZERO, watchdog.lost()).await;
    // The answer comes at last (let go before asserting, so a failure cannot hang the test on
    // the blocked call): the renewal the holder no longer counts on is given back, not left
    // to run out its lease.
    locks.hold_answers(false);
    assert_eq!(loss, Some(Loss::Expired));
    assert!(!held);
    assert_eq!(lost_now, Ok(Loss::Expired));
    assert_eq!(
        watchdog.release().await,
        Err(Error::LeaseExpired {
            name: "job".into(),
            token
        })
    );
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
}

const ALLOWANCE: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn renewals_keep_a_lease_the_backend_confirms_shorter_than_asked() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky {
        shortfall: ALLOWANCE,
        ..Flaky::new(&clock)
    });
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    assert_eq!(grant.lease(), LEASE - ALLOWANCE);
    // Accepted (shorter than the lease asked) but longer than the lease confirmed: renewing
    // at this interval alone would come after every confirmed lease had run out.
    let every = LEASE - Duration::from_millis(100);
    let renewal = Renewal::new(LEASE).every(every);
    let watchdog = Watchdog::spawn(Arc::clone(&locks), grant, clock.clone(), renewal).unwrap();
    // Four leases' time.
    for _ in 0..24 {
        half_tick(&clock).await;
        assert_eq!(
            watchdog.loss(),
            None,
            "at {} s",
            clock_now(&clock) / 1_000_000_000
        );
    }
    assert!(watchdog.is_held());
    watchdog.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_grant_shorter_than_the_renewal_interval_is_renewed_within_its_own_lease() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    // Renewals every 10 s would come after this grant's 3 s had run out.
    let short = Duration::from_secs(3);
    let grant = locks.acquire("job", short).unwrap().into_grant();
    let watchdog = Watchdog::spawn(
        Arc::clone(&locks),
        grant,
        clock.clone(),
        Renewal::new(LEASE),
    )
    .unwrap();
    // The first renewal comes at a third of what is left of the grant's lease.
    clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(until_renewals(&locks, 1).await, 1);
    clock.advance(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(locks.extends.load(Ordering::SeqCst), 1);
    assert!(watchdog.is_held());
    assert_eq!(watchdog.loss(), None);
    // Renewed at 1 s for the renewal's lease.
    assert_eq!(watchdog.deadline_nanos(), 31_000_000_000);
    watchdog.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_release_that_fails_is_reported_with_its_error_not_as_released() {
    for drop_it in [false, true] {
        let clock = ManualClock::new();
        let locks = Arc::new(Flaky::new(&clock));
        let grant = locks.acquire("job", LEASE).unwrap().into_grant();
        let watchdog = Watchdog::spawn(
            Arc::clone(&locks),
            grant,
            clock.clone(),
            Renewal::new(LEASE),
        )
        .unwrap();
        let waiter = tokio::spawn(watchdog.lost());
        half_tick(&clock).await;
        locks.fail_releases.store(true, Ordering::SeqCst);
        if drop_it {
            drop(watchdog);
        } else {
            assert_eq!(watchdog.release().await, Err(injected()));
        }
        assert_eq!(waiter.await.unwrap(), Loss::ReleaseFailed(injected()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_extend_may_still_extend_the_lease_while_the_grant_keeps_its_deadline() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let async_locks = AsyncLocks::new(Arc::clone(&locks));
    let mut grant = async_locks.acquire("job", LEASE).await.unwrap();
    let deadline = grant.deadline_nanos();
    locks.hold_answers(true);
    // Polled once (the renewal starts on the blocking pool), then abandoned.
    tokio::select! {
        biased;
        _ = async_locks.extend(&mut grant, LEASE * 4) => panic!("the answer was held back"),
        () = std::future::ready(()) => {}
    }
    assert_eq!(until_renewals(&locks, 1).await, 1);
    locks.hold_answers(false);
    // The backend renewed; the caller's grant still says the earlier deadline.
    assert_eq!(grant.deadline_nanos(), deadline);
    clock.advance(LEASE);
    assert!(locks.is_held(&grant));
    assert!(
        async_locks
            .try_acquire("job", LEASE)
            .await
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_runtime_that_shuts_down_under_the_watchdog_resolves_lost_with_stopped() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let grant = locks.acquire("job", LEASE).unwrap().into_grant();
    let paused = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    let runtime = paused();
    let watchdog = runtime.block_on(async {
        let watchdog = Watchdog::spawn(
            Arc::clone(&locks),
            grant,
            clock.clone(),
            Renewal::new(LEASE),
        )
        .unwrap();
        half_tick(&clock).await;
        tick(&clock).await;
        watchdog
    });
    assert!(watchdog.is_held());
    let lost = watchdog.lost();
    drop(runtime);
    assert_eq!(paused().block_on(lost), Loss::Stopped);
    assert_eq!(watchdog.loss(), Some(Loss::Stopped));
    assert!(!watchdog.is_held());
    // Nobody released the grant: it runs out with its lease.
    assert!(locks.try_acquire("job", LEASE).unwrap().is_none());
    clock.advance(LEASE);
    assert!(locks.try_acquire("job", LEASE).unwrap().is_some());
}

/// How long the test that could deadlock waits, on real time, before it calls it one. It
/// passes without waiting: this bound is only reached if the blocking pool is stuck.
const STUCK: Duration = Duration::from_secs(10);

#[test]
fn cancelled_acquires_give_their_blocking_threads_back() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let async_locks = AsyncLocks::new(Arc::clone(&locks));
    let hour = Duration::from_secs(3600);
    let mut holder = Some(locks.acquire("job", hour).unwrap().into_grant());
    let free = runtime.block_on(async {
        // As many abandoned waits as the pool has threads, each polled once then dropped
        // (what a `timeout` around it does when it elapses).
        for _ in 0..4 {
            tokio::select! {
                biased;
                _ = async_locks.acquire("job", LEASE) => panic!("the lock is held"),
                () = std::future::ready(()) => {}
            }
        }
        while locks.queue_len("job") < 4 {
            tokio::task::yield_now().await;
        }
        // Each abandoned wait ends within one wait slice on the backend's clock (a minute is
        // longer than a slice); waking the waiters lets them see it.
        clock.advance(Duration::from_secs(60));
        locks.expire_due();
        tokio::time::timeout(STUCK, async_locks.try_acquire("other", LEASE)).await
    });
    if free.is_err() {
        // The pool is stuck: let the waiters in (each gives its grant back), so that the
        // runtime can shut down and the test fail rather than hang.
        let _ = locks.release(holder.take().unwrap());
    }
    assert!(
        matches!(free, Ok(Ok(Some(_)))),
        "a free lock could not be taken: {free:?}"
    );
    let holder = holder.take().unwrap();
    let released =
        runtime.block_on(async { tokio::time::timeout(STUCK, async_locks.release(holder)).await });
    assert_eq!(released, Ok(Ok(())));
    // The abandoned waits leave the queue (and give back a grant handed to one of them) on
    // their own blocking threads, which a loaded machine may not have run yet: wait for them,
    // on real time and bounded, then the lock is free.
    let deadline = std::time::Instant::now() + STUCK;
    loop {
        if locks.queue_len("job") == 0 && locks.try_acquire("job", LEASE).unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned waits still queued or holding: {} queued",
            locks.queue_len("job")
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn a_long_timeout_is_waited_in_slices_that_add_up_to_it() {
    let clock = ManualClock::new();
    let locks = Arc::new(Flaky::new(&clock));
    let slice = Duration::from_secs(1);
    let async_locks = AsyncLocks::new(Arc::clone(&locks)).with_wait_slice(slice);
    // Held for longer than the clock can move before the wait is found stuck.
    let hold = Duration::from_secs(24 * 3600);
    let _holder = locks.acquire("job", hold).unwrap();
    let waiting = {
        let async_locks = async_locks.clone();
        tokio::spawn(async move {
            async_locks
                .acquire_timeout("job", LEASE, Duration::from_millis(2500))
                .await
        })
    };
    // The lease clock moves in small steps, each followed by a wake-up, until the wait ends.
    // The waiter keeps its queue place between slices, so nothing outside tells when it has
    // read the clock for its next slice; stepping on until it is done needs no such signal.
    // Each slice waits its whole length on the clock, so the wait cannot end before the clock
    // has moved by the sum of the slices.
    let step = Duration::from_millis(100);
    let mut moved = Duration::ZERO;
    // Real time, only against a hang.
    let patience = std::time::Instant::now() + Duration::from_secs(60);
    while !waiting.is_finished() && std::time::Instant::now() < patience && moved < hold {
        clock.advance(step);
        moved += step;
        locks.inner.expire_due();
        for _ in 0..10 {
            tokio::task::yield_now().await;
            thread::yield_now();
        }
    }
    assert!(waiting.is_finished(), "the wait never ended");
    assert!(
        moved >= Duration::from_millis(2500),
        "the wait ended after {moved:?} on the clock"
    );
    assert_eq!(waiting.await.unwrap(), Ok(None));
    let short = Duration::from_millis(500);
    assert_eq!(
        *locks.waits.lock(),
        [
            Wait::Forever,
            Wait::Up(slice),
            Wait::Up(slice),
            Wait::Up(short)
        ]
    );
    // A wait within one slice is one call, as asked.
    assert_eq!(
        async_locks
            .acquire_timeout("job", LEASE, Duration::ZERO)
            .await,
        Ok(None)
    );
    assert_eq!(locks.waits.lock().last(), Some(&Wait::Up(Duration::ZERO)));
}
