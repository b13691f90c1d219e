//! The async surface and the renewal watchdog, on tokio's paused time with leases on a
//! `ManualClock`: renewals keep a lease alive, a failed renewal is reported, release and drop
//! stop the renewals, and a cancelled acquisition leaves nothing held.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use infra_common::sync::thread;
use infra_dlock::{
    Access, AsyncLocks, Error, Grant, Locks, Loss, MemoryLocks, Renewal, Wait, Watchdog,
};

const LEASE: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(10);

/// A backend that counts renewals and fails them on demand.
struct Flaky {
    inner: MemoryLocks<ManualClock>,
    extends: AtomicUsize,
    fail_extends: AtomicBool,
}

impl Flaky {
    fn new(clock: &ManualClock) -> Self {
        Self {
            inner: MemoryLocks::with_clock(clock.clone()),
            extends: AtomicUsize::new(0),
            fail_extends: AtomicBool::new(false),
        }
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
        self.inner.grant(name, access, lease, wait)
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        if self.fail_extends.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                reason: "injected".into(),
            });
        }
        self.inner.extend(grant, lease)
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
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
    let injected = Error::Backend {
        reason: "injected".into(),
    };
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
    async_locks.release(first).await.unwrap();
    let mut again = None;
    while again.is_none() {
        thread::yield_now();
        again = async_locks.try_acquire("job", LEASE).await.unwrap();
    }
    let again = again.unwrap();
    assert!(locks.is_held(&again));
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
