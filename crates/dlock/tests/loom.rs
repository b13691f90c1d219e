//! Model-checked concurrency: every interleaving of a few threads on the lock manager and the
//! fence.
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-dlock --test loom`
#![cfg(infra_loom)]

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use infra_common::sync::{Arc, Mutex, model, thread};
use infra_dlock::{
    Access, Error, Fence, FencingToken, Grant, Locks, MemoryLocks, QueuePlace, Wait,
};

const LEASE: Duration = Duration::from_secs(10);
/// A lease that runs out within a model: the clock is advanced by this much.
const SHORT: Duration = Duration::from_secs(1);

/// Who held lock `m` with which token, the exclusive holders' writes admitted by one fence
/// under the store's lock: the token models look for one token held by two holders, which
/// the fence cannot tell apart and admits both.
struct Ledger {
    fence: Fence,
    held: Mutex<Vec<Held>>,
}

#[derive(Debug)]
struct Held {
    holder: &'static str,
    token: FencingToken,
    /// Whether the fence admitted a write with it (exclusive holders only).
    admitted: bool,
}

impl Ledger {
    fn new() -> Self {
        Self {
            fence: Fence::new(),
            held: Mutex::new(Vec::new()),
        }
    }

    /// An exclusive holder writes to the store with its token, if the fence admits it.
    fn write(&self, holder: &'static str, token: FencingToken) {
        let mut held = self.held.lock();
        let admitted = self.fence.admit("r", "m", token).is_ok();
        held.push(Held {
            holder,
            token,
            admitted,
        });
    }

    /// A reader or a permit holder notes its token; it writes nothing.
    fn note(&self, holder: &'static str, token: FencingToken) {
        self.held.lock().push(Held {
            holder,
            token,
            admitted: false,
        });
    }

    /// Panics if two holders held one token.
    fn assert_no_token_held_twice(&self) {
        let held = self.held.lock();
        for (index, first) in held.iter().enumerate() {
            for second in &held[index + 1..] {
                assert!(
                    first.holder == second.holder || first.token != second.token,
                    "{} and {} held token {} (written through the fence: {} and {}): {held:?}",
                    first.holder,
                    second.holder,
                    first.token.get(),
                    first.admitted,
                    second.admitted
                );
            }
        }
    }
}

/// Two threads take the same lock; neither is ever inside while the other is.
///
/// Guards: the name's mutex held from the free check to the grant.
#[test]
fn two_threads_never_hold_the_lock_together() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
                thread::spawn(move || {
                    let guard = locks.acquire("m", LEASE).unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    inside.fetch_sub(1, Ordering::SeqCst);
                    let token = guard.token();
                    guard.release().unwrap();
                    token
                })
            })
            .collect();
        let tokens: Vec<FencingToken> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_ne!(tokens[0], tokens[1]);
    });
}

/// A queued waiter gets the lock at the release: a try right after the release finds it taken.
///
/// Guards: the hand-off to the queue's head when the lock is freed (without it the waiter is
/// never granted, and loom reports the deadlock). The try is refused because the lock was
/// handed to the waiter and is held; the queue check is modelled by
/// `a_reader_never_overtakes_a_queued_writer`.
#[test]
fn a_release_hands_the_lock_to_the_queued_waiter() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let holder = locks.acquire("m", LEASE).unwrap();
        let first = holder.token();
        let waiter = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.acquire("m", LEASE).unwrap().into_grant())
        };
        while locks.queue_len("m") == 0 {
            thread::yield_now();
        }
        holder.release().unwrap();
        assert!(locks.try_acquire("m", LEASE).unwrap().is_none(), "barged");
        let next = waiter.join().unwrap();
        assert!(next.token() > first);
        locks.release(next).unwrap();
    });
}

/// The holder releases while its lease runs out and another thread takes the lock: however
/// they interleave, the release never frees the new holder's grant.
///
/// Guards: the token compare in `release`.
#[test]
fn a_release_racing_its_expiry_never_frees_the_next_holder() {
    model(|| {
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let old = locks.acquire("m", LEASE).unwrap().into_grant();
        let releaser = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.release(old))
        };
        clock.advance(LEASE);
        let next = locks.try_acquire("m", LEASE).unwrap();
        let released = releaser.join().unwrap();
        assert!(
            matches!(released, Ok(()) | Err(Error::LeaseExpired { .. })),
            "{released:?}"
        );
        let next = next.expect("the lock was released or had expired");
        assert!(
            next.is_held(),
            "the old grant's release freed the new holder"
        );
    });
}

/// Two writers write to one store, each admitting its token through the fence inside the
/// store's critical section, as the fence's docs require; a third wrote before them. However
/// they interleave, the store's log of admitted writes never goes back in token order, and a
/// token below the highest is refused afterwards.
///
/// Guards: the admit and the write in one critical section of the store, as the fence's docs
/// require (with the write moved after the store's lock is let go, the log goes back). Under
/// the store's lock, admits never run at once, so the model does not depend on `admit`'s own
/// check and raise being one step: a fence that checked and then raised to the larger of the
/// two in two steps would pass it too, and would be linearizable on its own.
#[test]
fn the_fence_never_moves_back() {
    model(|| {
        let fence = Arc::new(Fence::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let write = |fence: &Fence, log: &Mutex<Vec<u64>>, token: u64| {
            let mut log = log.lock();
            let admitted = fence.admit("r", "m", FencingToken::new(token));
            if admitted.is_ok() {
                log.push(token);
            }
            admitted
        };
        write(&fence, &log, 1).unwrap();
        let threads: Vec<_> = [2, 3]
            .into_iter()
            .map(|token| {
                let (fence, log) = (Arc::clone(&fence), Arc::clone(&log));
                thread::spawn(move || write(&fence, &log, token))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results[1], Ok(()), "the newest token was refused");
        assert!(matches!(results[0], Ok(()) | Err(Error::StaleToken { .. })));
        let written = log.lock().clone();
        assert!(
            written.windows(2).all(|pair| pair[0] <= pair[1]),
            "an older write after a newer one: {written:?}"
        );
        assert_eq!(written.last(), Some(&3));
        assert_eq!(fence.highest("r"), Some(FencingToken::new(3)));
        assert!(
            write(&fence, &log, 2).is_err(),
            "a token below the highest was admitted"
        );
    });
}

/// Two writers admit at once with no lock of the store around them: the fence alone must
/// keep its mark from going back.
///
/// Guards: `admit`'s check and raise in one critical section of the fence (split into two,
/// the older token's raise can land after the newer one's and lower the mark, which then
/// admits the older token again).
#[test]
fn the_fences_check_and_raise_are_one_step() {
    model(|| {
        let fence = Arc::new(Fence::new());
        fence.admit("r", "m", FencingToken::new(1)).unwrap();
        let threads: Vec<_> = [2, 3]
            .into_iter()
            .map(|token| {
                let fence = Arc::clone(&fence);
                thread::spawn(move || fence.admit("r", "m", FencingToken::new(token)))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results[1], Ok(()), "the newest token was refused");
        assert_eq!(
            fence.highest("r"),
            Some(FencingToken::new(3)),
            "the mark went back"
        );
    });
}

/// A reader holds the lock and a writer waits in the queue: a reader that asks without
/// waiting is refused, though it would fit beside the holder.
///
/// Guards: the queue check on arrival (without it the second reader overtakes the writer).
#[test]
fn a_reader_never_overtakes_a_queued_writer() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let reader = locks
            .grant("m", Access::Shared, LEASE, Wait::No)
            .unwrap()
            .unwrap();
        let writer = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.acquire("m", LEASE).unwrap().into_grant())
        };
        while locks.queue_len("m") == 0 {
            thread::yield_now();
        }
        let second = locks.grant("m", Access::Shared, LEASE, Wait::No).unwrap();
        assert!(second.is_none(), "a reader overtook the queued writer");
        locks.release(reader).unwrap();
        let granted = writer.join().unwrap();
        locks.release(granted).unwrap();
    });
}

/// A handle and the name are one lock, even when `expire_due` sweeps idle names meanwhile:
/// one thread takes the lock through a handle made while the name was idle, the other sweeps
/// and takes it by name; they are never inside together.
///
/// Guards: a sweep keeps a name whose state a handle still points at.
#[test]
fn a_handle_and_the_name_stay_one_lock_across_a_sweep() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let inside = Arc::new(AtomicUsize::new(0));
        let by_name = {
            let (locks, inside) = (Arc::clone(&locks), Arc::clone(&inside));
            thread::spawn(move || {
                locks.expire_due();
                let guard = locks.acquire("m", LEASE).unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().unwrap();
            })
        };
        let handle = locks.handle("m").unwrap();
        let guard = handle.acquire(LEASE).unwrap();
        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
        inside.fetch_sub(1, Ordering::SeqCst);
        guard.release().unwrap();
        by_name.join().unwrap();
    });
}

/// A waiter queues behind a holder granted on the fast path; the holder releases on the fast
/// path's terms; a fast acquire right after the release finds the lock handed to the waiter.
///
/// Guards: a waiter takes the state word over (the waiter bit) before it queues. Without it
/// the holder's release frees the word without seeing the waiter, and either the try barges
/// in ahead of it or nobody wakes it (loom reports the deadlock).
#[test]
fn a_fast_acquire_never_overtakes_a_waiter_that_queued_behind_a_fast_holder() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let handle = locks.handle("m").unwrap();
        let holder = handle.acquire(LEASE).unwrap().into_grant();
        let first = holder.token();
        let waiter = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || {
                let handle = locks.handle("m").unwrap();
                handle.acquire(LEASE).unwrap().into_grant()
            })
        };
        while handle.queue_len() == 0 {
            thread::yield_now();
        }
        handle.release(holder).unwrap();
        assert!(handle.try_acquire(LEASE).unwrap().is_none(), "barged");
        let next = waiter.join().unwrap();
        assert!(next.token() > first);
        handle.release(next).unwrap();
    });
}

/// A fast holder's release races its expiry: another thread takes the expired lock over,
/// frees it, and takes it again on the fast path. However they interleave, the old release
/// never frees the newest hold.
///
/// Guards: the token in the word the release compares. Without it (any fast hold freed) the
/// old holder, which read the clock before its lease ran out, frees the third grant.
#[test]
fn an_expired_fast_holder_never_frees_a_later_fast_hold() {
    model(|| {
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let old = locks.acquire("m", LEASE).unwrap().into_grant();
        let releaser = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.release(old))
        };
        clock.advance(LEASE);
        let handle = locks.handle("m").unwrap();
        if let Some(taken_over) = handle.try_acquire(LEASE).unwrap() {
            taken_over.release().unwrap();
        }
        let newest = handle.try_acquire(LEASE).unwrap();
        let released = releaser.join().unwrap();
        assert!(
            matches!(released, Ok(()) | Err(Error::LeaseExpired { .. })),
            "{released:?}"
        );
        let newest = newest.expect("the lock was released, expired or taken over and freed");
        assert!(
            newest.is_held(),
            "the old grant's release freed a later hold"
        );
    });
}

/// Two threads take turns on the fast path and each adds one to a counter while it holds the
/// lock, with a relaxed load and a relaxed store (no read-modify-write): each holder sees the
/// previous holder's write, so none is lost.
///
/// Guards: the Release on the fast release's swap and the Acquire on the fast acquire's.
/// With both Relaxed, the second holder can read the counter as it was before the first
/// holder's write, and the total comes out 1.
#[test]
fn a_fast_holder_sees_what_the_previous_one_wrote() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let counter = Arc::new(AtomicU64::new(0));
        let add_one = |locks: &MemoryLocks<ManualClock>, counter: &AtomicU64| {
            let handle = locks.handle("m").unwrap();
            let guard = handle.acquire(LEASE).unwrap();
            let seen = counter.load(Ordering::Relaxed);
            counter.store(seen + 1, Ordering::Relaxed);
            guard.release().unwrap();
        };
        let other = {
            let (locks, counter) = (Arc::clone(&locks), Arc::clone(&counter));
            thread::spawn(move || add_one(&locks, &counter))
        };
        add_one(&locks, &counter);
        other.join().unwrap();
        assert_eq!(
            counter.load(Ordering::Relaxed),
            2,
            "a holder's write was lost"
        );
    });
}

/// A waiter is handed the lock at the holder's release, and that grant's lease runs out
/// before the waiter wakes to take it: `expire_due` ends it, the name is idle, and a fast
/// acquire takes it. However they interleave, no token goes to two holders, whether the
/// waiter waits as long as it takes or gives up when its timeout passes (then it gives up
/// right after the race, behind the fast holder).
///
/// Guards: a waiter takes the state word over again after every sleep. Without it the
/// waiter, queued again, counts on from the entry's last token, which the fast acquire has
/// issued since, and the fence admits both holders' writes with one token.
fn a_hand_off_that_expired_before_the_waiter_woke(wait: Wait) {
    model(move || {
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let ledger = Arc::new(Ledger::new());
        let holder = locks.acquire("m", LEASE).unwrap();
        let waiter = {
            let (locks, ledger) = (Arc::clone(&locks), Arc::clone(&ledger));
            thread::spawn(move || {
                let granted = locks.grant("m", Access::Exclusive, SHORT, wait).unwrap();
                if let Some(grant) = &granted {
                    ledger.write("waiter", grant.token());
                }
                granted.is_some()
            })
        };
        while locks.queue_len("m") == 0 {
            thread::yield_now();
        }
        // Hands the lock to the waiter, for SHORT from now; it may not wake until later.
        holder.release().unwrap();
        clock.advance(SHORT);
        locks.expire_due();
        if let Some(fast) = locks.try_acquire("m", LEASE).unwrap() {
            ledger.write("fast", fast.token());
            fast.release().unwrap();
        }
        let granted = waiter.join().unwrap();
        ledger.assert_no_token_held_twice();
        assert!(
            granted || wait != Wait::Forever,
            "an unbounded wait ended ungranted"
        );
    });
}

#[test]
fn a_hand_off_that_expired_before_the_waiter_woke_never_reissues_a_fast_token() {
    a_hand_off_that_expired_before_the_waiter_woke(Wait::Forever);
}

#[test]
fn a_waiter_that_gives_up_after_its_hand_off_expired_never_reissues_a_fast_token() {
    a_hand_off_that_expired_before_the_waiter_woke(Wait::Up(SHORT));
}

/// A thread waits for a fast holder's grant to end (`wait_lost`); the grant expires, the lock
/// is taken over it and freed, and taken again on the fast path, while the waiting thread may
/// still be asleep. However they interleave, no token goes to two holders.
///
/// Guards: `wait_lost` takes the state word over again after every sleep, as a queued waiter
/// does. Taken over once, before its first sleep, the waiting thread wakes to an entry that
/// has lost track of the word and, leaving it idle, gives the word back to the fast path with
/// the entry's older token, over the newer fast hold: a fast acquire then issues that hold's
/// token again.
#[test]
fn a_wait_for_a_lost_grant_never_makes_the_fast_path_reissue_a_token() {
    model(|| {
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let ledger = Arc::new(Ledger::new());
        let first = locks.acquire("m", SHORT).unwrap().into_grant();
        ledger.write("first", first.token());
        let watcher = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.wait_lost(&first))
        };
        clock.advance(SHORT);
        // Taken over the expired grant, under the mutex, then freed.
        let second = locks.try_acquire("m", LEASE).unwrap().expect("expired");
        ledger.write("second", second.token());
        second.release().unwrap();
        let third = locks.try_acquire("m", LEASE).unwrap().expect("freed");
        ledger.write("third", third.token());
        if let Some(fourth) = locks.try_acquire("m", LEASE).unwrap() {
            ledger.write("fourth", fourth.token());
        }
        watcher.join().unwrap();
        ledger.assert_no_token_held_twice();
        third.release().unwrap();
    });
}

/// A grant made under the mutex (a reader's, or a permit's on a name also taken exclusively)
/// and its release race two fast acquires of the same name. However they interleave, no token
/// goes to two holders.
///
/// Guards: a request under the mutex takes the state word over before it counts a token, and
/// so counts on from the fast path's last token. Without it the request counts from the
/// entry's own last token, which the fast path has issued since.
fn a_grant_under_the_mutex_racing_fast_acquires(access: Access) {
    model(move || {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let ledger = Arc::new(Ledger::new());
        // A semaphore and a mutex share no holders: either may be refused while the other holds.
        let refused = |result: &Result<Option<Grant>, Error>| {
            matches!(result, Ok(None) | Err(Error::KindMismatch { .. }))
        };
        let other = {
            let (locks, ledger) = (Arc::clone(&locks), Arc::clone(&ledger));
            thread::spawn(move || {
                let granted = locks.grant("m", access, LEASE, Wait::No);
                if let Ok(Some(grant)) = granted {
                    ledger.note("under the mutex", grant.token());
                    locks.release(grant).unwrap();
                } else {
                    assert!(refused(&granted), "{granted:?}");
                }
            })
        };
        for holder in ["fast 1", "fast 2"] {
            let granted = locks.grant("m", Access::Exclusive, LEASE, Wait::No);
            if let Ok(Some(grant)) = granted {
                ledger.write(holder, grant.token());
                locks.release(grant).unwrap();
            } else {
                assert!(refused(&granted), "{granted:?}");
            }
        }
        other.join().unwrap();
        ledger.assert_no_token_held_twice();
    });
}

#[test]
fn a_reader_racing_fast_acquires_never_shares_their_tokens() {
    a_grant_under_the_mutex_racing_fast_acquires(Access::Shared);
}

#[test]
fn a_permit_racing_fast_acquires_never_shares_their_tokens() {
    a_grant_under_the_mutex_racing_fast_acquires(Access::Permit { permits: 2 });
}

/// A fast holder extends its lease to a short one, and its release comes after that lease may
/// have run out; meanwhile another thread takes the lock twice. However they interleave, no
/// token goes to two holders, the extension of the live grant succeeds, and the late release
/// is accepted or refused as expired.
///
/// Guards: `extend` and `release` take the state word over before they look for the grant
/// under the mutex. Without it `extend` misses the fast holder, and on leaving the entry idle
/// gives the word back to the fast path with the entry's older token, over the live hold: the
/// next fast acquire issues that hold's token again.
#[test]
fn an_extension_and_a_late_release_never_make_the_fast_path_reissue_a_token() {
    model(|| {
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let ledger = Arc::new(Ledger::new());
        let mut first = locks.acquire("m", LEASE).unwrap().into_grant();
        ledger.write("first", first.token());
        let holder = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || {
                let extended = locks.extend(&mut first, SHORT);
                (extended, locks.release(first))
            })
        };
        clock.advance(SHORT);
        for taker in ["second", "third"] {
            if let Some(grant) = locks.try_acquire("m", LEASE).unwrap() {
                ledger.write(taker, grant.token());
                grant.release().unwrap();
            }
        }
        let (extended, released) = holder.join().unwrap();
        ledger.assert_no_token_held_twice();
        assert_eq!(extended, Ok(()), "the live grant was not extended");
        assert!(
            matches!(released, Ok(()) | Err(Error::LeaseExpired { .. })),
            "{released:?}"
        );
    });
}

/// A place kept in the queue by a wait that timed out (as between two slices of an async
/// wait), with no thread waiting for it.
fn kept_place(locks: &MemoryLocks<ManualClock>) -> QueuePlace {
    let mut place = QueuePlace::new();
    let slice = || locks.grant("m", Access::Exclusive, LEASE, Wait::Up(Duration::ZERO));
    assert!(place.wait_keeping(slice).unwrap().is_none());
    assert!(place.is_kept());
    place
}

/// A release racing a request that arrives while the queue's head is a kept place, and the
/// place taken up again: the lock goes to the place, never to the later arrival.
///
/// Guards: a wait that times out inside a `QueuePlace` stays queued. Without it the place has
/// left the queue, and the late arrival takes the freed lock.
#[test]
fn a_kept_place_is_handed_the_lock_before_a_later_arrival() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let holder = locks.acquire("m", LEASE).unwrap().into_grant();
        let mut place = kept_place(&locks);
        let releaser = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.release(holder).unwrap())
        };
        let late = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || {
                locks
                    .grant("m", Access::Exclusive, LEASE, Wait::No)
                    .unwrap()
            })
        };
        let resumed = || locks.grant("m", Access::Exclusive, LEASE, Wait::Forever);
        let granted = place.wait_last(resumed).unwrap();
        releaser.join().unwrap();
        assert!(late.join().unwrap().is_none(), "a later arrival overtook");
        assert!(granted.is_some() && !place.is_kept());
    });
}

/// A kept place dropped while the holder releases: whether the lock was handed to the place
/// first or not, nothing is left queued or held.
///
/// Guards: dropping a `QueuePlace` leaves the queue and gives back a grant handed to it.
/// Without it the place stays at the head of the queue (or holds the lock), and the lock is
/// never free again.
#[test]
fn a_kept_place_dropped_while_the_holder_releases_leaves_the_lock_free() {
    model(|| {
        let locks = Arc::new(MemoryLocks::with_clock(ManualClock::new()));
        let holder = locks.acquire("m", LEASE).unwrap().into_grant();
        let place = kept_place(&locks);
        let releaser = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.release(holder).unwrap())
        };
        drop(place);
        releaser.join().unwrap();
        assert_eq!(locks.queue_len("m"), 0);
        assert!(locks.try_acquire("m", LEASE).unwrap().is_some());
    });
}
