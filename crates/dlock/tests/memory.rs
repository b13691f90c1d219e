//! The in-process backend end to end: exclusion with fencing, a paused holder, FIFO hand-off,
//! expiry against release, read-write locks, semaphores, and bad input.
#![cfg(not(infra_loom))]

use std::time::Duration;

use infra_common::sync::{Arc, Mutex, thread};
use infra_common::{Clock, CoarseClock, ManualClock, SystemClock};
use infra_dlock::{
    Access, Error, Fence, FencingToken, Locks, MAX_LEASE, MAX_NAME_LEN, MemoryLocks, QueuePlace,
    Wait,
};

const LOCK: &str = "account-7";

/// A bank balance whose reads and writes both present the caller's token to a fence.
///
/// Fencing the read as well as the write is what makes a read-modify-write safe: once a newer
/// holder has read, an older holder's write is refused even if the newer one has not written.
struct Account {
    fence: Fence,
    state: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    balance: i64,
    accepted_writes: u64,
    refused: u64,
    /// Tokens of accepted operations, in the order the store accepted them.
    log: Vec<FencingToken>,
}

impl Account {
    fn new(balance: i64) -> Self {
        Self {
            fence: Fence::new(),
            state: Mutex::new(Ledger {
                balance,
                ..Ledger::default()
            }),
        }
    }

    fn read(&self, token: FencingToken) -> Result<i64, Error> {
        let mut ledger = self.state.lock();
        match self.fence.admit("balance", LOCK, token) {
            Ok(()) => {
                ledger.log.push(token);
                Ok(ledger.balance)
            }
            Err(error) => {
                ledger.refused += 1;
                Err(error)
            }
        }
    }

    fn write(&self, token: FencingToken, balance: i64) -> Result<(), Error> {
        let mut ledger = self.state.lock();
        match self.fence.admit("balance", LOCK, token) {
            Ok(()) => {
                ledger.log.push(token);
                ledger.balance = balance;
                ledger.accepted_writes += 1;
                Ok(())
            }
            Err(error) => {
                ledger.refused += 1;
                Err(error)
            }
        }
    }
}

/// Waits until `n` requests are queued for `name` (a thread reaching a state, not time passing).
fn until_queued<C: Clock>(locks: &MemoryLocks<C>, name: &str, n: usize) {
    while locks.queue_len(name) != n {
        thread::yield_now();
    }
}

#[test]
fn threads_incrementing_through_a_fence_lose_nothing_while_leases_expire_under_them() {
    // Several rounds: a race between a waiter's expired hand-off and a fast acquire once made
    // about every other round lose an increment.
    for _ in 0..8 {
        increment_through_a_fence_while_leases_expire();
    }
}

fn increment_through_a_fence_while_leases_expire() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let account = Arc::new(Account::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (locks, account) = (Arc::clone(&locks), Arc::clone(&account));
            thread::spawn(move || {
                for _ in 0..300 {
                    let guard = locks.acquire(LOCK, Duration::from_micros(50)).unwrap();
                    if let Ok(balance) = account.read(guard.token()) {
                        // Widen the window for a lease to end between the read and the write.
                        for _ in 0..4 {
                            thread::yield_now();
                        }
                        let _ = account.write(guard.token(), balance + 1);
                    }
                    // Fails when the lease ended first; the fence already judged the write.
                    let _ = guard.release();
                }
            })
        })
        .collect();
    // Time moves on its own thread, so leases end in the middle of critical sections.
    let ticker = {
        let (clock, locks) = (clock.clone(), Arc::clone(&locks));
        thread::spawn(move || {
            for _ in 0..2_000 {
                clock.advance(Duration::from_micros(30));
                locks.expire_due();
                thread::yield_now();
            }
        })
    };
    ticker.join().unwrap();
    for worker in workers {
        worker.join().unwrap();
    }
    let ledger = account.state.lock();
    assert!(ledger.accepted_writes > 0);
    assert_eq!(
        u64::try_from(ledger.balance).unwrap(),
        ledger.accepted_writes,
        "an accepted increment was lost"
    );
    assert!(
        ledger.log.windows(2).all(|pair| pair[0] <= pair[1]),
        "the store accepted an older token after a newer one"
    );
}

#[test]
fn without_expiry_every_increment_is_accepted() {
    let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
    let account = Arc::new(Account::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (locks, account) = (Arc::clone(&locks), Arc::clone(&account));
            thread::spawn(move || {
                for _ in 0..500 {
                    let guard = locks.acquire(LOCK, Duration::from_secs(60)).unwrap();
                    let balance = account.read(guard.token()).unwrap();
                    account.write(guard.token(), balance + 1).unwrap();
                    guard.release().unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let ledger = account.state.lock();
    assert_eq!(
        (ledger.balance, ledger.accepted_writes, ledger.refused),
        (2000, 2000, 0)
    );
}

#[test]
fn a_holder_paused_past_its_lease_has_its_write_refused() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let account = Account::new(1000);
    let lease = Duration::from_secs(5);

    let first = locks.acquire(LOCK, lease).unwrap();
    let seen_by_first = account.read(first.token()).unwrap();
    clock.advance(Duration::from_secs(6)); // the first holder stalls here
    assert!(!first.is_held());

    let second = locks.acquire(LOCK, lease).unwrap();
    assert!(second.token() > first.token());
    let seen_by_second = account.read(second.token()).unwrap();
    account.write(second.token(), seen_by_second - 200).unwrap();

    // The first holder wakes up and writes what it computed before the pause.
    let refused = account.write(first.token(), seen_by_first - 100);
    assert_eq!(
        refused,
        Err(Error::StaleToken {
            resource: "balance".into(),
            token: first.token(),
            highest: second.token(),
        })
    );
    assert!(matches!(first.release(), Err(Error::LeaseExpired { .. })));
    assert!(
        second.is_held(),
        "the stale release left the new holder alone"
    );
    assert_eq!(account.state.lock().balance, 800);
}

#[test]
fn a_paused_thread_is_fenced_even_before_the_new_holder_writes() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let account = Arc::new(Account::new(1000));
    let lease = Duration::from_secs(5);
    let paused = {
        let (locks, account) = (Arc::clone(&locks), Arc::clone(&account));
        thread::spawn(move || {
            let guard = locks.acquire(LOCK, lease).unwrap();
            let balance = account.read(guard.token()).unwrap();
            // The thread stalls until its lease is gone and the next holder has read.
            guard.wait_lost();
            while account.fence.highest("balance") == Some(guard.token()) {
                thread::yield_now();
            }
            account.write(guard.token(), balance - 100)
        })
    };
    while account.fence.highest("balance").is_none() {
        thread::yield_now();
    }
    clock.advance(lease);
    locks.expire_due();
    let next = locks.acquire(LOCK, lease).unwrap();
    let balance = account.read(next.token()).unwrap();
    let stale = paused.join().unwrap();
    assert!(matches!(stale, Err(Error::StaleToken { .. })), "{stale:?}");
    account.write(next.token(), balance - 200).unwrap();
    assert_eq!(account.state.lock().balance, 800);
}

#[test]
fn waiters_are_granted_in_arrival_order_and_a_try_does_not_overtake() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let order = Arc::new(Mutex::new(Vec::new()));
    let holder = locks
        .acquire("q", Duration::from_secs(10))
        .unwrap()
        .into_grant();
    let mut waiters = Vec::new();
    for id in 1..=4 {
        let (shared, order) = (Arc::clone(&locks), Arc::clone(&order));
        waiters.push(thread::spawn(move || {
            let guard = shared.acquire("q", Duration::from_secs(60)).unwrap();
            order.lock().push((id, guard.token()));
            guard.release().unwrap();
        }));
        until_queued(&locks, "q", id);
    }
    // The holder's lease ends; the first to look at the lock is a try, and it must not take
    // the lock from the queue: it hands it to the first waiter instead.
    clock.advance(Duration::from_secs(10));
    assert!(
        locks
            .try_acquire("q", Duration::from_secs(1))
            .unwrap()
            .is_none()
    );
    for waiter in waiters {
        waiter.join().unwrap();
    }
    let order = order.lock();
    let ids: Vec<_> = order.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert!(order.windows(2).all(|pair| pair[0].1 < pair[1].1));
    assert!(order[0].1 > holder.token());
}

#[test]
fn an_expired_lease_lets_the_next_waiter_in_when_the_clock_is_observed() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let holder = locks
        .acquire("e", Duration::from_secs(5))
        .unwrap()
        .into_grant();
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            locks
                .acquire("e", Duration::from_secs(5))
                .unwrap()
                .into_grant()
        })
    };
    until_queued(&locks, "e", 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(locks.expire_due(), 1);
    let next = waiter.join().unwrap();
    assert!(next.token() > holder.token());
    assert_eq!(
        next.granted_at_nanos(),
        5_000_000_000,
        "the lease runs from the hand-off"
    );
    assert!(!locks.is_held(&holder) && locks.is_held(&next));
    assert!(matches!(
        locks.release(holder),
        Err(Error::LeaseExpired { .. })
    ));
    locks.release(next).unwrap();
}

#[test]
fn a_waiter_times_out_on_the_manual_clock_and_leaves_the_queue() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let _holder = locks.acquire("t", Duration::from_secs(60)).unwrap();
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            locks
                .acquire_timeout("t", Duration::from_secs(1), Duration::from_secs(2))
                .unwrap()
                .map(infra_dlock::LockGuard::into_grant)
        })
    };
    until_queued(&locks, "t", 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(locks.expire_due(), 0);
    assert!(waiter.join().unwrap().is_none());
    assert_eq!(locks.queue_len("t"), 0);
}

#[test]
fn with_the_system_clock_a_waiter_wakes_when_the_lease_ends() {
    // The one path that needs real time: nobody touches the lock, so only a wait timed by
    // the holder's deadline lets the waiter in.
    let locks = MemoryLocks::with_clock(SystemClock::new());
    let holder = locks
        .acquire("s", Duration::from_millis(20))
        .unwrap()
        .into_grant();
    let next = locks.acquire("s", Duration::from_secs(5)).unwrap();
    assert!(locks.clock().now_nanos() >= holder.deadline_nanos());
    assert!(next.token() > holder.token());
    let timed_out = locks
        .acquire_timeout("s", Duration::from_secs(1), Duration::from_millis(10))
        .unwrap();
    assert!(timed_out.is_none());
}

#[test]
fn release_after_expiry_is_an_error_and_frees_nothing_else() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let lease = Duration::from_secs(10);
    let old = locks.acquire("r", lease).unwrap().into_grant();
    clock.advance(lease);
    assert!(!locks.is_held(&old));
    let new = locks
        .try_acquire("r", lease)
        .unwrap()
        .expect("the lease has ended");
    let token = old.token();
    assert_eq!(
        locks.release(old),
        Err(Error::LeaseExpired {
            name: "r".into(),
            token
        })
    );
    assert!(new.is_held());
    assert!(locks.try_acquire("r", lease).unwrap().is_none());
}

#[test]
fn release_just_before_the_deadline_succeeds() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let guard = locks.acquire("d", Duration::from_nanos(100)).unwrap();
    clock.advance(Duration::from_nanos(99));
    assert!(guard.is_held());
    guard.release().unwrap();
}

#[test]
fn extend_restarts_the_lease_from_now_and_fails_once_it_ended() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let mut guard = locks.acquire("x", Duration::from_secs(10)).unwrap();
    clock.advance(Duration::from_secs(8));
    guard.extend(Duration::from_secs(10)).unwrap();
    assert_eq!(guard.deadline_nanos(), 18_000_000_000);
    clock.advance(Duration::from_secs(9));
    assert!(guard.is_held(), "held past the original deadline");
    assert_eq!(guard.extend(Duration::ZERO), Err(Error::ZeroLease));
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        guard.extend(Duration::from_secs(10)),
        Err(Error::LeaseExpired { .. })
    ));
}

#[test]
fn wait_lost_returns_when_the_lease_ends() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let grant = locks
        .acquire("w", Duration::from_secs(3))
        .unwrap()
        .into_grant();
    let watcher = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            locks.wait_lost(&grant);
            locks.is_held(&grant)
        })
    };
    clock.advance(Duration::from_secs(3));
    locks.expire_due();
    assert!(!watcher.join().unwrap());

    // With the system clock nobody needs to look: the watcher's wait is timed by the lease.
    let locks = MemoryLocks::with_clock(SystemClock::new());
    let guard = locks.acquire("w", Duration::from_millis(20)).unwrap();
    guard.wait_lost();
    assert!(locks.clock().now_nanos() >= guard.deadline_nanos());
    assert!(!guard.is_held());
}

#[test]
fn readers_share_and_a_waiting_writer_is_not_overtaken() {
    let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
    let lease = Duration::from_secs(60);
    let reader = locks.read("rw", lease).unwrap();
    let second_reader = locks.read("rw", lease).unwrap();
    assert!(second_reader.token() > reader.token());
    assert!(locks.try_acquire("rw", lease).unwrap().is_none());
    let writer = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || locks.acquire("rw", lease).unwrap().into_grant())
    };
    until_queued(&locks, "rw", 1);
    // A new reader would fit beside the readers, but the writer came first.
    assert!(
        locks
            .grant("rw", Access::Shared, lease, Wait::No)
            .unwrap()
            .is_none()
    );
    let late_reader = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || locks.read("rw", lease).unwrap().into_grant())
    };
    until_queued(&locks, "rw", 2);
    reader.release().unwrap();
    assert_eq!(locks.queue_len("rw"), 2, "one reader still holds");
    second_reader.release().unwrap();
    let writer = writer.join().unwrap();
    assert_eq!(locks.queue_len("rw"), 1);
    locks.release(writer).unwrap();
    let late = late_reader.join().unwrap();
    assert!(locks.is_held(&late));
}

#[test]
fn a_semaphore_grants_its_permits_each_with_a_token_and_they_expire() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let lease = Duration::from_secs(10);
    let permits: Vec<_> = (0..3)
        .map(|_| locks.permit("pool", 3, lease).unwrap())
        .collect();
    assert!(permits.windows(2).all(|p| p[0].token() < p[1].token()));
    let fourth = locks.grant("pool", Access::Permit { permits: 3 }, lease, Wait::No);
    assert!(fourth.unwrap().is_none());
    assert_eq!(
        locks.grant("pool", Access::Permit { permits: 4 }, lease, Wait::No),
        Err(Error::KindMismatch {
            name: "pool".into()
        })
    );
    assert!(matches!(
        locks.try_acquire("pool", lease),
        Err(Error::KindMismatch { .. })
    ));
    clock.advance(lease);
    let after = locks.permit("pool", 3, lease).unwrap();
    assert!(after.token() > permits[2].token());
    // Once every permit is gone, the name is free for any kind of lock.
    drop(after);
    drop(permits);
    assert!(locks.try_acquire("pool", lease).unwrap().is_some());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let lease = Duration::from_secs(1);
    assert!(matches!(locks.acquire("", lease), Err(Error::EmptyName)));
    assert!(matches!(
        locks.acquire(&"n".repeat(513), lease),
        Err(Error::NameTooLong { len: 513, max: 512 })
    ));
    assert!(matches!(
        locks.acquire("a", Duration::ZERO),
        Err(Error::ZeroLease)
    ));
    assert!(matches!(
        locks.acquire("a", Duration::MAX),
        Err(Error::LeaseTooLong { .. })
    ));
    assert!(matches!(
        locks.permit("p", 0, lease),
        Err(Error::ZeroPermits)
    ));
    assert!(matches!(
        locks.acquire_timeout("a", Duration::MAX, Duration::MAX),
        Err(Error::LeaseTooLong { .. })
    ));

    // A grant from another instance is refused and leaves this instance's lock alone.
    let other = MemoryLocks::with_clock(clock.clone());
    let mine = locks.acquire("a", lease).unwrap();
    let theirs = other.acquire("a", lease).unwrap().into_grant();
    let token = theirs.token();
    assert_eq!(
        locks.release(theirs),
        Err(Error::ForeignGrant {
            name: "a".into(),
            token
        })
    );
    assert!(mine.is_held());

    // The longest lease at the end of the clock's range neither overflows nor ends early.
    clock.advance(Duration::MAX);
    let late = locks.acquire("late", MAX_LEASE).unwrap();
    assert_eq!(late.deadline_nanos(), u64::MAX);
    assert!(late.is_held());
}

/// A kept place handed the lock whose hand-off ran out before it was taken up, the lock then
/// taken on the fast path, and the place dropped: the fast holder keeps the lock alone, and
/// the next grant has a larger token.
#[test]
fn a_kept_place_dropped_after_its_hand_off_expired_leaves_a_fast_holder_alone() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let lease = Duration::from_secs(1);
    let holder = locks.acquire(LOCK, lease).unwrap();
    let mut place = QueuePlace::new();
    let slice = || locks.grant(LOCK, Access::Exclusive, lease, Wait::Up(Duration::ZERO));
    assert!(place.wait_keeping(slice).unwrap().is_none());
    holder.release().unwrap(); // handed to the kept place
    clock.advance(Duration::from_secs(2));
    assert_eq!(locks.expire_due(), 1); // the hand-off's lease ran out untaken
    let fast = locks.acquire(LOCK, lease).unwrap();
    drop(place);
    let second = locks.try_acquire(LOCK, lease).unwrap();
    assert!(
        second.is_none(),
        "granted {:?} while {:?} holds the lock",
        second.as_ref().map(infra_dlock::LockGuard::token),
        fast.token()
    );
    assert!(fast.is_held());
    let token = fast.token();
    fast.release().unwrap();
    let next = locks.acquire(LOCK, lease).unwrap();
    assert!(next.token() > token, "{:?} after {token:?}", next.token());
}

/// A kept place whose hand-off ran out before it was taken up, then granted the free lock by
/// its next wait: the place is not kept any more, and a later wait through it joins the queue
/// at the back, behind a place that queued before it.
#[test]
fn a_kept_place_granted_after_its_hand_off_expired_is_not_kept_and_queues_at_the_back() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let lease = Duration::from_secs(1);
    let slice = || locks.grant(LOCK, Access::Exclusive, lease, Wait::Up(Duration::ZERO));
    let holder = locks.acquire(LOCK, lease).unwrap();
    let mut late = QueuePlace::new();
    assert!(late.wait_keeping(slice).unwrap().is_none());
    holder.release().unwrap(); // handed to the kept place
    clock.advance(Duration::from_secs(2));
    assert_eq!(locks.expire_due(), 1); // the hand-off's lease ran out untaken
    let granted = late.wait_last(slice).unwrap().expect("the lock is free");
    assert!(!late.is_kept(), "a place that was granted is still kept");
    // The lock is held; one place queues, then the other waits again.
    let mut first = QueuePlace::new();
    assert!(first.wait_keeping(slice).unwrap().is_none());
    assert!(late.wait_keeping(slice).unwrap().is_none());
    locks.release(granted).unwrap(); // handed to the head of the queue
    let head = first.wait_last(slice).unwrap();
    assert!(head.is_some(), "the place that queued first was overtaken");
    assert!(late.wait_last(slice).unwrap().is_none());
    locks.release(head.unwrap()).unwrap();
}

#[test]
fn tokens_never_wrap() {
    let locks = Arc::new(MemoryLocks::with_tokens_after(
        ManualClock::new(),
        FencingToken::new(u64::MAX - 1),
    ));
    let last = locks.acquire("a", Duration::from_secs(1)).unwrap();
    assert_eq!(last.token(), FencingToken::new(u64::MAX));
    // Each name counts its own tokens from the same start: "b" gets its last one too.
    let other = locks.acquire("b", Duration::from_secs(1)).unwrap();
    assert_eq!(other.token(), FencingToken::new(u64::MAX));
    other.release().unwrap();
    assert!(matches!(
        locks.acquire("b", Duration::from_secs(1)),
        Err(Error::TokensExhausted)
    ));

    // A waiter queued behind the last token is told, not left waiting forever.
    let waiter = {
        let locks = Arc::clone(&locks);
        thread::spawn(move || {
            locks
                .acquire("a", Duration::from_secs(1))
                .map(|guard| guard.token())
        })
    };
    until_queued(&locks, "a", 1);
    last.release().unwrap();
    assert_eq!(waiter.join().unwrap(), Err(Error::TokensExhausted));
    assert_eq!(locks.queue_len("a"), 0);
}

#[test]
fn a_handle_takes_the_same_lock_as_the_name_with_the_same_queue_and_tokens() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let lease = Duration::from_secs(10);
    let handle = locks.handle(LOCK).unwrap();
    assert_eq!(handle.name(), LOCK);

    // Exclusion both ways.
    let by_handle = handle.acquire(lease).unwrap();
    assert!(locks.try_acquire(LOCK, lease).unwrap().is_none());
    let first = by_handle.token();
    by_handle.release().unwrap();
    let by_name = locks.acquire(LOCK, lease).unwrap();
    assert!(handle.try_acquire(lease).unwrap().is_none());
    assert!(by_name.token() > first);

    // One FIFO queue: a waiter by name, then one through another handle, in that order.
    let order = Arc::new(Mutex::new(Vec::new()));
    let named = {
        let (locks, order) = (Arc::clone(&locks), Arc::clone(&order));
        thread::spawn(move || {
            let guard = locks.acquire(LOCK, lease).unwrap();
            order.lock().push("name");
            guard.token()
        })
    };
    until_queued(&locks, LOCK, 1);
    let handled = {
        let (locks, order) = (Arc::clone(&locks), Arc::clone(&order));
        thread::spawn(move || {
            let handle = locks.handle(LOCK).unwrap();
            let guard = handle.acquire(lease).unwrap();
            order.lock().push("handle");
            guard.token()
        })
    };
    until_queued(&locks, LOCK, 2);
    assert_eq!(handle.queue_len(), 2);
    assert!(
        handle.try_acquire(lease).unwrap().is_none(),
        "overtook the queue"
    );
    let held = by_name.token();
    by_name.release().unwrap();
    let (a, b) = (named.join().unwrap(), handled.join().unwrap());
    assert_eq!(*order.lock(), ["name", "handle"]);
    assert!(held < a && a < b);

    // A grant made by name is released through the handle, and the other way round; an
    // expired one is refused by either.
    let grant = locks.acquire(LOCK, lease).unwrap().into_grant();
    handle.release(grant).unwrap();
    let grant = handle.acquire(lease).unwrap().into_grant();
    clock.advance(lease);
    assert!(matches!(
        locks.release(grant),
        Err(Error::LeaseExpired { .. })
    ));
    // For another name, the handle passes the call on.
    let other = handle.grant("other", Access::Exclusive, lease, Wait::No);
    let other = other.unwrap().expect("free");
    assert!(locks.is_held(&other));
    assert!(handle.release(other).is_ok());
    assert!(matches!(locks.handle(""), Err(Error::EmptyName)));
    assert!(matches!(
        handle.acquire(Duration::ZERO),
        Err(Error::ZeroLease)
    ));
}

/// A handle's guard keeps only the token and the lease; everything a `LockGuard` answers it
/// answers the same, from the fast path and from the mutex.
#[test]
fn a_handle_guard_reports_extends_and_releases_as_a_lock_guard_does() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(100));
    let locks = MemoryLocks::with_clock(clock.clone());
    let handle = locks.handle(LOCK).unwrap();
    let lease = Duration::from_secs(5);

    let mut guard = handle.acquire(lease).unwrap();
    let start = clock.now_nanos();
    assert_eq!(guard.name(), LOCK);
    assert_eq!(guard.access(), Access::Exclusive);
    assert_eq!(guard.granted_at_nanos(), start);
    assert_eq!(guard.lease(), lease);
    assert_eq!(guard.deadline_nanos(), start + 5_000_000_000);
    assert!(guard.is_held());
    // An extension moves the lock into its mutex's hands and restarts the lease from now.
    clock.advance(Duration::from_secs(3));
    guard.extend(Duration::from_secs(10)).unwrap();
    assert_eq!(guard.granted_at_nanos(), start + 3_000_000_000);
    assert_eq!(guard.lease(), Duration::from_secs(10));
    clock.advance(Duration::from_secs(8)); // past the first lease, inside the extension
    assert!(guard.is_held());
    assert!(handle.try_acquire(lease).unwrap().is_none());
    clock.advance(Duration::from_secs(3)); // past the extension
    assert!(!guard.is_held());
    let expired_token = guard.token();
    assert!(matches!(
        guard.release(),
        Err(Error::LeaseExpired { token, .. }) if token == expired_token
    ));

    // A guard dropped releases; the next grant counts on.
    let token = {
        let guard = handle.acquire(lease).unwrap();
        guard.token()
    };
    assert!(token > expired_token);
    let next = handle
        .try_acquire(lease)
        .unwrap()
        .expect("released on drop");
    assert!(next.token() > token);

    // Detached, the grant stays held until released through the handle or by name.
    let grant = next.into_grant();
    assert!(handle.is_held(&grant));
    assert!(handle.try_acquire(lease).unwrap().is_none());
    assert_eq!(grant.name(), LOCK);
    locks.release(grant).unwrap();

    // A fast-path hold that ran out does not free the hold taken after it.
    let stale = handle.acquire(lease).unwrap();
    clock.advance(Duration::from_secs(6));
    let fresh = handle.acquire(lease).unwrap();
    assert!(stale.release().is_err());
    assert!(fresh.is_held());
    assert!(locks.try_acquire(LOCK, lease).unwrap().is_none());
    fresh.release().unwrap();

    // Readers and permits through the handle keep their kind.
    let (a, b) = (handle.read(lease).unwrap(), handle.read(lease).unwrap());
    assert_eq!(a.access(), Access::Shared);
    assert!(a.token() < b.token());
    assert!(handle.try_acquire(lease).unwrap().is_none());
    drop((a, b));
    let writer = handle.try_acquire(lease).unwrap().expect("readers gone");
    drop(writer);
    let permits = handle.permit(2, lease).unwrap();
    assert_eq!(permits.access(), Access::Permit { permits: 2 });
    assert!(format!("{permits:?}").contains(LOCK));
}

#[test]
fn a_handle_keeps_its_lock_through_sweeps_of_idle_names() {
    let locks = MemoryLocks::with_clock(ManualClock::new());
    let lease = Duration::from_secs(10);
    let handle = locks.handle(LOCK).unwrap();
    handle.acquire(lease).unwrap().release().unwrap();
    // The handle's name is idle now; many other names pass through, and the map is swept.
    for i in 0..1_000 {
        locks
            .acquire(&format!("passing-{i}"), lease)
            .unwrap()
            .release()
            .unwrap();
    }
    assert_eq!(locks.expire_due(), 0);
    // Were the name's state dropped and made anew, the handle and the name would be two locks.
    let guard = handle.acquire(lease).unwrap();
    assert!(locks.try_acquire(LOCK, lease).unwrap().is_none());
    drop(guard);
    let guard = locks.acquire(LOCK, lease).unwrap();
    assert!(handle.try_acquire(lease).unwrap().is_none());
    drop(guard);
}

#[test]
fn a_writer_stalled_past_its_lease_is_refused_after_a_reader_read() {
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let fence = Fence::new();
    let lease = Duration::from_secs(5);
    let writer = locks.acquire(LOCK, lease).unwrap().into_grant();
    fence.admit("balance", LOCK, writer.token()).unwrap();
    // The writer stalls past its lease; a reader is granted and reads.
    clock.advance(Duration::from_secs(6));
    let reader = locks.read(LOCK, lease).unwrap();
    fence.check("balance", LOCK, reader.token()).unwrap();
    // The writer wakes up and writes during the reader's shared hold: refused.
    assert_eq!(
        fence.admit("balance", LOCK, writer.token()),
        Err(Error::StaleToken {
            resource: "balance".into(),
            token: writer.token(),
            highest: reader.token(),
        })
    );
    reader.release().unwrap();
}

#[test]
fn a_fence_refuses_token_zero_and_an_empty_or_overlong_resource() {
    let fence = Fence::new();
    let never_issued = FencingToken::new(0);
    assert_eq!(
        fence.admit("balance", LOCK, never_issued),
        Err(Error::ZeroToken)
    );
    assert_eq!(
        fence.check("balance", LOCK, never_issued),
        Err(Error::ZeroToken)
    );
    let locks = MemoryLocks::with_clock(ManualClock::new());
    let guard = locks.acquire(LOCK, Duration::from_secs(5)).unwrap();
    assert_eq!(
        fence.admit("", LOCK, guard.token()),
        Err(Error::EmptyResource)
    );
    // The fence keeps every resource's name for good, so it bounds them as lock names are.
    let overlong = "r".repeat(MAX_NAME_LEN + 1);
    let refused = Error::ResourceTooLong {
        len: MAX_NAME_LEN + 1,
        max: MAX_NAME_LEN,
    };
    assert_eq!(
        fence.admit(&overlong, LOCK, guard.token()),
        Err(refused.clone())
    );
    assert_eq!(fence.check(&overlong, LOCK, guard.token()), Err(refused));
    assert_eq!(fence.highest(&overlong), None);
    fence
        .admit(&"r".repeat(MAX_NAME_LEN), LOCK, guard.token())
        .unwrap();
    assert_eq!(fence.highest("balance"), None);
}

/// On a coarse clock a grant's deadline is never later than the lease counted from a system
/// clock reading taken after the grant: a holder checking its deadline stops in time.
#[test]
fn on_a_coarse_clock_the_holders_deadline_is_never_late() {
    let locks = MemoryLocks::with_clock(CoarseClock::new());
    let system = SystemClock::new();
    let lease = Duration::from_millis(50);
    let handle = locks.handle("coarse").unwrap();
    for _ in 0..1_000 {
        let guard = handle.acquire(lease).unwrap();
        let after = system.now_nanos();
        assert!(guard.granted_at_nanos() <= after);
        assert!(guard.deadline_nanos() <= after + 50_000_000);
        guard.release().unwrap();
    }
}

/// Another instance's grant of the same name with the same token is not held here, asked
/// through a handle (whose fast check compares the token with the lock's word) or by name.
#[test]
fn another_instances_grant_with_the_same_token_is_not_held_here() {
    let clock = ManualClock::new();
    let (ours, theirs) = (
        MemoryLocks::with_clock(clock.clone()),
        MemoryLocks::with_clock(clock),
    );
    let lease = Duration::from_secs(10);
    let handle = ours.handle("same").unwrap();
    let held_here = handle.acquire(lease).unwrap();
    let their_handle = theirs.handle("same").unwrap();
    let foreign = their_handle.acquire(lease).unwrap().into_grant();
    assert_eq!(held_here.token(), foreign.token());
    assert!(!handle.is_held(&foreign));
    assert!(!ours.is_held(&foreign));
    assert!(held_here.is_held() && their_handle.is_held(&foreign));
}

/// CPU time (user + system) a thread of this process has used, in clock ticks.
#[cfg(target_os = "linux")]
fn cpu_ticks_of(thread: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{thread}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The calling thread's id, as `/proc/self/task` names it.
#[cfg(target_os = "linux")]
fn this_thread() -> String {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// A holder whose lease ends 50 ns from now on a manual clock that stands still: a waiter
/// queued behind it, and a thread waiting for its loss, nap between looks at the clock instead
/// of napping the 50 ns left again and again. Each thread's CPU time over one second of real
/// time is measured (no assertion on how fast anything runs): a thread that spins spends
/// nearly all of it, a sleeper nearly none.
#[cfg(target_os = "linux")]
#[test]
fn waiters_on_a_clock_that_stands_still_do_not_spin() {
    let clock = ManualClock::new();
    let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let lease = Duration::from_nanos(50);
    let grant = locks.acquire("still", lease).unwrap().into_grant();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let waiter = {
        let (locks, threads) = (Arc::clone(&locks), Arc::clone(&threads));
        thread::spawn(move || {
            threads.lock().push(this_thread());
            let guard = locks.acquire("still", Duration::from_secs(1)).unwrap();
            guard.release().unwrap();
        })
    };
    let watcher = {
        let (locks, threads) = (Arc::clone(&locks), Arc::clone(&threads));
        thread::spawn(move || {
            threads.lock().push(this_thread());
            locks.wait_lost(&grant);
        })
    };
    until_queued(&locks, "still", 1);
    while threads.lock().len() < 2 {
        thread::yield_now();
    }
    let threads = threads.lock().clone();
    let before: Vec<u64> = threads.iter().map(|t| cpu_ticks_of(t)).collect();
    // Real time passes for the measurement; the lock's clock stands still.
    std::thread::sleep(Duration::from_secs(1));
    let spent: Vec<u64> = threads
        .iter()
        .zip(&before)
        .map(|(t, before)| cpu_ticks_of(t) - before)
        .collect();
    clock.advance(lease);
    locks.expire_due();
    waiter.join().unwrap();
    watcher.join().unwrap();
    // A clock tick is 1/100 s on Linux: a spinning thread spends close to 100 of them.
    assert!(
        spent.iter().all(|&ticks| ticks < 20),
        "CPU ticks in one second of waiting (queue waiter, loss waiter): {spent:?}"
    );
}
