//! `AsyncLocks` on the FIFO in-process backend: a wait longer than a slice keeps its place in
//! the queue from slice to slice, so holders that hold longer than a slice and ask again at
//! once never overtake it.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::time::{Duration, Instant};

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_dlock::{Access, AsyncLocks, Error, Grant, Locks, MemoryLocks, Wait};

const LOCK: &str = "report";
const LEASE: Duration = Duration::from_secs(3600);
/// How long the test waits for a thread to reach a state: far beyond any scheduling delay.
const PATIENCE: Duration = Duration::from_secs(60);

/// Passes every call on to the shared backend and counts the grant calls (one per slice).
struct Counting {
    inner: Arc<MemoryLocks<ManualClock>>,
    grants: AtomicU64,
}

impl Locks for Counting {
    fn grant(&self, n: &str, a: Access, l: Duration, w: Wait) -> Result<Option<Grant>, Error> {
        self.grants.fetch_add(1, Ordering::SeqCst);
        self.inner.grant(n, a, l, w)
    }
    fn extend(&self, g: &mut Grant, l: Duration) -> Result<(), Error> {
        self.inner.extend(g, l)
    }
    fn release(&self, g: Grant) -> Result<(), Error> {
        self.inner.release(g)
    }
    fn is_held(&self, g: &Grant) -> bool {
        self.inner.is_held(g)
    }
    fn wait_lost(&self, g: &Grant) {
        self.inner.wait_lost(g);
    }
}

/// Moves the lock's clock on a second at a time, letting the waiters see it, until `cond`
/// holds: a slice that took its clock reading after a move ends one move later.
fn advance_until(
    clock: &ManualClock,
    locks: &MemoryLocks<ManualClock>,
    what: &str,
    cond: impl Fn() -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        clock.advance(Duration::from_secs(1));
        locks.expire_due();
        let settle = Instant::now() + Duration::from_millis(20);
        while !cond() && Instant::now() < settle {
            thread::yield_now();
        }
    }
}

/// Waits until `cond` holds (a thread reaching a state, not time passing); panics after
/// [`PATIENCE`], only against a hang.
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

/// The review's starvation: the async waiter queues first, a thread queues behind it, and the
/// holder holds for two slices at a time. The waiter's slices end three times while it waits;
/// when the holder releases and asks again at once, the lock goes to the async waiter, then
/// to the thread, then to the holder.
#[test]
fn an_async_waiter_keeps_its_place_across_its_slices() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let counting = Arc::new(Counting {
        inner: Arc::clone(&locks),
        grants: AtomicU64::new(0),
    });
    let order = Arc::new(Mutex::new(Vec::new()));
    let holder = locks.acquire(LOCK, LEASE).unwrap();

    let waiter = {
        let async_locks = AsyncLocks::new(Arc::clone(&counting));
        let order = Arc::clone(&order);
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let grant = async_locks.acquire(LOCK, LEASE).await.unwrap();
                order.lock().push("async");
                async_locks.release(grant).await.unwrap();
            });
        })
    };
    until("the async waiter queued", || locks.queue_len(LOCK) == 1);
    let behind = {
        let (locks, order) = (Arc::clone(&locks), Arc::clone(&order));
        thread::spawn(move || {
            let guard = locks.acquire(LOCK, LEASE).unwrap();
            order.lock().push("thread");
            guard.release().unwrap();
        })
    };
    until("the thread queued behind", || locks.queue_len(LOCK) == 2);

    for _ in 0..3 {
        // The holder works on while the waiter's slice (1 s on the lock's clock) ends.
        let asked = counting.grants.load(Ordering::SeqCst);
        advance_until(&clock, &locks, "the async waiter's next slice", || {
            counting.grants.load(Ordering::SeqCst) > asked
        });
        until("both queued", || locks.queue_len(LOCK) == 2);
    }
    // The holder releases and asks again at once.
    holder.release().unwrap();
    let again = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            let guard = locks.acquire(LOCK, LEASE).unwrap();
            guard.release().unwrap();
        })
    };
    waiter.join().unwrap();
    behind.join().unwrap();
    again.join().unwrap();
    assert_eq!(*order.lock(), ["async", "thread"]);
    assert_eq!(locks.queue_len(LOCK), 0);
}

/// A bounded wait of several slices keeps its place between them and leaves the queue when
/// the last one ends: nothing is left queued or held, and the lock is free once released.
#[test]
fn a_bounded_async_wait_leaves_the_queue_after_its_last_slice() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let counting = Arc::new(Counting {
        inner: Arc::clone(&locks),
        grants: AtomicU64::new(0),
    });
    let holder = locks.acquire(LOCK, LEASE).unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let waiter = {
        let async_locks = AsyncLocks::new(Arc::clone(&counting));
        let answered = Arc::clone(&answered);
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let timeout = Duration::from_secs(3);
            let granted = runtime.block_on(async_locks.acquire_timeout(LOCK, LEASE, timeout));
            answered.store(1, Ordering::SeqCst);
            granted
        })
    };
    until("the waiter queued", || locks.queue_len(LOCK) == 1);
    advance_until(&clock, &locks, "the wait timed out", || {
        answered.load(Ordering::SeqCst) == 1
    });
    assert_eq!(waiter.join().unwrap(), Ok(None));
    assert_eq!(
        counting.grants.load(Ordering::SeqCst),
        3,
        "one grant call per slice"
    );
    assert_eq!(locks.queue_len(LOCK), 0);
    holder.release().unwrap();
    assert!(locks.try_acquire(LOCK, LEASE).unwrap().is_some());
}
