//! Model checks proving that `infra_common::sync` really hands out loom's primitives.
//!
//! Run with `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-common --test loom`.
//! If the shim silently fell back to std, loom would explore nothing, and the broken model
//! below would pass by luck instead of failing on the interleaving that loses an update.
#![cfg(infra_loom)]

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::cell::UnsafeCell;
use infra_common::sync::{Arc, Condvar, Mutex, RwLock, model, thread};
use infra_common::{Clock, CoarseClock, ManualClock};
use std::cell::Cell;
use std::time::Duration;

/// Two threads incrementing with `fetch_add` never lose an update.
#[test]
fn fetch_add_never_loses_an_update() {
    model(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || counter.fetch_add(1, Ordering::Relaxed))
        };
        counter.fetch_add(1, Ordering::Relaxed);
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    });
}

/// A load-then-store increment is a textbook race; loom must find the interleaving where one
/// update is lost. This test passes only if the model fails, which proves the shim is wired.
#[test]
#[should_panic(expected = "lost an update")]
fn load_then_store_race_is_found() {
    model(|| {
        let counter = Arc::new(AtomicU64::new(0));
        let racy_increment = |counter: &AtomicU64| {
            let seen = counter.load(Ordering::SeqCst);
            counter.store(seen + 1, Ordering::SeqCst);
        };
        let other = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || racy_increment(&counter))
        };
        racy_increment(&counter);
        other.join().unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 2, "lost an update");
    });
}

/// The Mutex/Condvar wrappers hand a value across threads in every interleaving.
#[test]
fn condvar_handoff_completes() {
    model(|| {
        let slot = Arc::new((Mutex::new(None), Condvar::new()));
        let producer = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                *slot.0.lock() = Some(1);
                slot.1.notify_one();
            })
        };
        let mut guard = slot.0.lock();
        while guard.is_none() {
            slot.1.wait(&mut guard);
        }
        assert_eq!(*guard, Some(1));
        drop(guard);
        producer.join().unwrap();
    });
}

/// Concurrent `advance` calls on a shared manual clock add up exactly.
#[test]
fn manual_clock_advances_add_up() {
    model(|| {
        let clock = ManualClock::new();
        let other = {
            let clock = clock.clone();
            thread::spawn(move || clock.advance(Duration::from_nanos(3)))
        };
        clock.advance(Duration::from_nanos(4));
        other.join().unwrap();
        assert_eq!(clock.now_nanos(), 7);
    });
}

/// A cell whose every access happens under one lock.
struct Locked {
    lock: Mutex<()>,
    value: UnsafeCell<u64>,
}

// SAFETY: `value` is only accessed while `lock` is held (see `add`), so accesses from
// different threads are ordered by the lock.
#[allow(unsafe_code)]
unsafe impl Sync for Locked {}

impl Locked {
    fn add(&self, amount: u64) {
        let _held = self.lock.lock();
        // SAFETY: `_held` excludes every other access to `value` until this closure returns.
        #[allow(unsafe_code)]
        self.value.with_mut(|value| unsafe { *value += amount });
    }
}

/// Writes to the shim's `UnsafeCell` under a lock are ordered; loom finds no race.
#[test]
fn unsafe_cell_writes_under_a_lock_are_ordered() {
    model(|| {
        let shared = Arc::new(Locked {
            lock: Mutex::new(()),
            value: UnsafeCell::new(0),
        });
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.add(1))
        };
        shared.add(2);
        other.join().unwrap();
        // SAFETY: the other thread has been joined; nothing else accesses the cell.
        #[allow(unsafe_code)]
        let total = shared.value.with(|value| unsafe { *value });
        assert_eq!(total, 3);
    });
}

/// The same cell without its lock. Loom must report the two unsynchronized writes as a race
/// (it panics with "Concurrent write accesses"); if the shim's `UnsafeCell` were `std`'s, this
/// would pass unnoticed.
#[test]
#[should_panic(expected = "Concurrent write accesses to `UnsafeCell`")]
fn unsafe_cell_writes_without_a_lock_are_found() {
    struct Unlocked(UnsafeCell<u64>);
    // SAFETY: deliberately unsound: this model exists to show that loom catches the
    // unsynchronized writes below.
    #[allow(unsafe_code)]
    unsafe impl Sync for Unlocked {}

    model(|| {
        let shared = Arc::new(Unlocked(UnsafeCell::new(0)));
        let racy_add = |shared: &Unlocked| {
            // SAFETY: none; the missing lock is the point of this model.
            #[allow(unsafe_code)]
            shared.0.with_mut(|value| unsafe { *value += 1 });
        };
        let other = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || racy_add(&shared))
        };
        racy_add(&shared);
        other.join().unwrap();
    });
}

thread::thread_local! {
    static VISITS: Cell<u32> = const { Cell::new(0) };
}

/// Each modelled thread sees its own, freshly initialized thread-local.
#[test]
fn thread_locals_are_per_thread_under_loom() {
    model(|| {
        VISITS.with(|visits| visits.set(visits.get() + 1));
        let other = thread::spawn(|| {
            VISITS.with(|visits| visits.set(visits.get() + 10));
            VISITS.with(Cell::get)
        });
        assert_eq!(other.join().unwrap(), 10);
        assert_eq!(VISITS.with(Cell::get), 1);
    });
}

/// The RwLock wrapper's guards: a reader sees either none or both of a writer's two pushes.
#[test]
fn rwlock_readers_see_whole_writes() {
    model(|| {
        let lock = Arc::new(RwLock::new(Vec::new()));
        let writer = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut values = lock.write();
                values.push(1);
                values.push(2);
            })
        };
        let seen = lock.read().len();
        assert!(seen == 0 || seen == 2, "saw {seen}");
        writer.join().unwrap();
        assert_eq!(*lock.read(), [1, 2]);
    });
}

/// A coarse clock's upkeep thread stops when the last of its handles drops, whichever thread
/// drops it and wherever the upkeep thread is in its loop. The stop flag is set under the lock
/// the thread checks it under before each wait, so the wake-up cannot fall between that check
/// and the wait; were it lost, the thread would wait forever (loom's timed waits never time
/// out) and the join in the last drop would deadlock, which loom reports.
#[test]
fn coarse_clock_upkeep_stops_with_the_last_handle() {
    model(|| {
        let clock = CoarseClock::new();
        let clone = clock.clone();
        let other = thread::spawn(move || {
            let _ = clone.now_nanos();
            drop(clone);
        });
        let _ = clock.now_nanos();
        drop(clock);
        other.join().unwrap();
    });
}
