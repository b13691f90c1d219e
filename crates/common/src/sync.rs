//! The single switch between real and [loom] concurrency primitives.
//!
//! Every crate in the workspace imports its `Arc`, atomics, locks and thread spawning from
//! here. A normal build gets `std` atomics and `parking_lot` locks; a build with
//! `RUSTFLAGS="--cfg infra_loom"` gets loom's instrumented versions, so
//!
//! ```text
//! RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p CRATE --test loom
//! ```
//!
//! explores every interleaving of a crate's loom tests without an edit to the code under test.
//! The cfg name is our own rather than plain `loom` because some dependencies change behaviour
//! under `cfg(loom)`, and we want to model-check only our code.
//!
//! The lock types wrap the backend so that both arms have exactly the same API: lock
//! poisoning does not exist here (a panic while holding a lock does not make the data
//! unusable), which matches `parking_lot` and keeps call sites free of `unwrap()`.
//!
//! Loom objects only work inside `model` (re-exported here under `infra_loom`); under `infra_loom`, tests that touch these types
//! outside a model are excluded by running only the `loom` test target.
//!
//! ```
//! use infra_common::sync::{Arc, Mutex, atomic::{AtomicU64, Ordering}, thread};
//!
//! let hits = Arc::new(AtomicU64::new(0));
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let worker = {
//!     let (hits, log) = (Arc::clone(&hits), Arc::clone(&log));
//!     thread::spawn(move || {
//!         hits.fetch_add(1, Ordering::Relaxed);
//!         log.lock().push("worker");
//!     })
//! };
//! worker.join().unwrap();
//! assert_eq!(hits.load(Ordering::Relaxed), 1);
//! assert_eq!(*log.lock(), ["worker"]);
//! ```
//!
//! [loom]: https://docs.rs/loom

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

#[cfg(not(infra_loom))]
pub use std::sync::Arc;

#[cfg(infra_loom)]
pub use loom::sync::Arc;

/// Runs `f` under the loom model checker, once per possible interleaving.
///
/// Only present in `infra_loom` builds; loom tests call it instead of depending on loom.
#[cfg(infra_loom)]
pub use loom::model;

/// Atomic integers, pointers and fences.
pub mod atomic {
    #[cfg(not(infra_loom))]
    pub use std::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };

    #[cfg(infra_loom)]
    pub use loom::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
}

/// Thread spawning and yielding, for tests and for the few places that own a thread.
pub mod thread {
    #[cfg(not(infra_loom))]
    pub use std::thread::{JoinHandle, spawn, yield_now};

    #[cfg(infra_loom)]
    pub use loom::thread::{JoinHandle, spawn, yield_now};
}

/// Tells the processor (or, under loom, the scheduler) that this thread is spinning.
///
/// Under loom a spin loop must yield, or the model would explore it forever.
#[inline]
pub fn spin_loop() {
    #[cfg(not(infra_loom))]
    std::hint::spin_loop();
    #[cfg(infra_loom)]
    loom::thread::yield_now();
}

#[cfg(not(infra_loom))]
use parking_lot as backend;

#[cfg(infra_loom)]
use loom::sync as backend;

/// Recovers the guard from a loom lock result: poisoning is not part of our API.
#[cfg(infra_loom)]
fn unpoison<G>(result: std::sync::LockResult<G>) -> G {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mutual-exclusion lock without poisoning.
#[derive(Default)]
pub struct Mutex<T> {
    inner: backend::Mutex<T>,
}

/// Holds a [`Mutex`] locked until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T> {
    // Loom's condition variable takes the guard by value, so that arm keeps it in an Option it
    // can move out of and back into while waiting; the guard is `Some` at every other moment.
    #[cfg(not(infra_loom))]
    inner: backend::MutexGuard<'a, T>,
    #[cfg(infra_loom)]
    inner: Option<backend::MutexGuard<'a, T>>,
}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: backend::Mutex::new(value),
        }
    }

    /// Blocks until the lock is acquired.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(infra_loom))]
        let inner = self.inner.lock();
        #[cfg(infra_loom)]
        let inner = Some(unpoison(self.inner.lock()));
        MutexGuard { inner }
    }

    /// Acquires the lock if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(infra_loom))]
        let inner = self.inner.try_lock()?;
        #[cfg(infra_loom)]
        let inner = Some(match self.inner.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        });
        Some(MutexGuard { inner })
    }

    /// Consumes the mutex and returns its value.
    pub fn into_inner(self) -> T {
        #[cfg(not(infra_loom))]
        return self.inner.into_inner();
        #[cfg(infra_loom)]
        return unpoison(self.inner.into_inner());
    }
}

impl<T: fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("Mutex").field("data", &*guard).finish(),
            None => f.debug_struct("Mutex").field("data", &"<locked>").finish(),
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        #[cfg(not(infra_loom))]
        return &self.inner;
        #[cfg(infra_loom)]
        return self
            .inner
            .as_ref()
            .expect("guard is present outside Condvar::wait");
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(infra_loom))]
        return &mut self.inner;
        #[cfg(infra_loom)]
        return self
            .inner
            .as_mut()
            .expect("guard is present outside Condvar::wait");
    }
}

impl<T: fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Default)]
pub struct Condvar {
    inner: backend::Condvar,
}

impl Condvar {
    /// Creates a condition variable with no waiters.
    pub fn new() -> Self {
        Self {
            inner: backend::Condvar::new(),
        }
    }

    /// Releases the guard's lock, blocks until notified, and re-acquires the lock.
    ///
    /// Wake-ups may be spurious: always re-check the condition in a loop.
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        #[cfg(not(infra_loom))]
        self.inner.wait(&mut guard.inner);
        #[cfg(infra_loom)]
        {
            let held = guard
                .inner
                .take()
                .expect("guard is present outside Condvar::wait");
            guard.inner = Some(unpoison(self.inner.wait(held)));
        }
    }

    /// Like [`Condvar::wait`], but gives up after `timeout`; returns whether it timed out.
    ///
    /// Wake-ups may be spurious and a timeout may race a notification: re-check the condition.
    /// Loom does not model time, so under `infra_loom` this waits for a notification exactly
    /// like [`Condvar::wait`] and never reports a timeout.
    pub fn wait_timeout<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) -> bool {
        #[cfg(not(infra_loom))]
        return self.inner.wait_for(&mut guard.inner, timeout).timed_out();
        #[cfg(infra_loom)]
        {
            let held = guard
                .inner
                .take()
                .expect("guard is present outside Condvar::wait");
            let (held, result) = unpoison(self.inner.wait_timeout(held, timeout));
            guard.inner = Some(held);
            result.timed_out()
        }
    }

    /// Wakes one waiting thread, if any.
    pub fn notify_one(&self) {
        self.inner.notify_one();
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&self) {
        self.inner.notify_all();
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

/// A reader-writer lock without poisoning.
#[derive(Default)]
pub struct RwLock<T> {
    inner: backend::RwLock<T>,
}

/// Shared access to an [`RwLock`] until dropped.
#[cfg(not(infra_loom))]
pub type RwLockReadGuard<'a, T> = backend::RwLockReadGuard<'a, T>;
/// Exclusive access to an [`RwLock`] until dropped.
#[cfg(not(infra_loom))]
pub type RwLockWriteGuard<'a, T> = backend::RwLockWriteGuard<'a, T>;
/// Shared access to an [`RwLock`] until dropped.
#[cfg(infra_loom)]
pub type RwLockReadGuard<'a, T> = backend::RwLockReadGuard<'a, T>;
/// Exclusive access to an [`RwLock`] until dropped.
#[cfg(infra_loom)]
pub type RwLockWriteGuard<'a, T> = backend::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    /// Creates an unlocked lock holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: backend::RwLock::new(value),
        }
    }

    /// Blocks until shared access is granted.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        #[cfg(not(infra_loom))]
        return self.inner.read();
        #[cfg(infra_loom)]
        return unpoison(self.inner.read());
    }

    /// Blocks until exclusive access is granted.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        #[cfg(not(infra_loom))]
        return self.inner.write();
        #[cfg(infra_loom)]
        return unpoison(self.inner.write());
    }

    /// Consumes the lock and returns its value.
    pub fn into_inner(self) -> T {
        #[cfg(not(infra_loom))]
        return self.inner.into_inner();
        #[cfg(infra_loom)]
        return unpoison(self.inner.into_inner());
    }
}

impl<T> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn condvar_hands_a_value_between_threads() {
        let slot = Arc::new((Mutex::new(None), Condvar::new()));
        let producer = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                *slot.0.lock() = Some(7);
                slot.1.notify_one();
            })
        };
        let mut guard = slot.0.lock();
        while guard.is_none() {
            slot.1.wait(&mut guard);
        }
        assert_eq!(*guard, Some(7));
        drop(guard);
        producer.join().unwrap();
    }

    #[test]
    fn condvar_wait_timeout_reports_a_timeout_and_a_notification() {
        let slot = Arc::new((Mutex::new(false), Condvar::new()));
        let mut guard = slot.0.lock();
        assert!(slot.1.wait_timeout(&mut guard, Duration::from_millis(1)));
        drop(guard);
        let notifier = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                *slot.0.lock() = true;
                slot.1.notify_one();
            })
        };
        let mut guard = slot.0.lock();
        while !*guard {
            slot.1.wait_timeout(&mut guard, Duration::from_secs(60));
        }
        drop(guard);
        notifier.join().unwrap();
    }

    #[test]
    fn try_lock_fails_while_held_and_succeeds_after() {
        let lock = Mutex::new(1);
        let held = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(held);
        *lock.try_lock().expect("lock is free") += 1;
        assert_eq!(lock.into_inner(), 2);
    }

    #[test]
    fn rwlock_allows_many_readers_and_one_writer() {
        let lock = RwLock::new(String::from("a"));
        {
            let (r1, r2) = (lock.read(), lock.read());
            assert_eq!((r1.as_str(), r2.as_str()), ("a", "a"));
        }
        lock.write().push('b');
        assert_eq!(lock.into_inner(), "ab");
    }

    #[test]
    fn a_panic_while_locked_does_not_poison() {
        let lock = Arc::new(Mutex::new(0));
        let clone = Arc::clone(&lock);
        let result = thread::spawn(move || {
            let _guard = clone.lock();
            panic!("boom");
        })
        .join();
        assert!(result.is_err());
        *lock.lock() += 1;
        assert_eq!(*lock.lock(), 1);
    }
}
