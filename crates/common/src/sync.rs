//! The single switch between real and [loom] concurrency primitives.
//!
//! Every crate in the workspace imports its `Arc`, atomics, locks, thread spawning,
//! thread-locals and `UnsafeCell` from here. A normal build gets `std` atomics and
//! `parking_lot` locks; a build with
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
//! Every type and function here is a wrapper, never a re-export, for two reasons: both arms
//! then have exactly the same API, so code that builds normally also builds under loom; and the
//! workspace `clippy.toml` can ban the `std`, `parking_lot` and `lock_api` originals everywhere
//! else (clippy sees a re-export as the banned item itself). This module is the one place that
//! names them. A wrapper exposes only what both backends have: the lock guards are
//! `Deref`/`DerefMut` and nothing more (no `parking_lot` `downgrade` or `map`), and
//! [`thread::JoinHandle`] has `join` alone (no `std` `is_finished`). Two items are not
//! wrappers: [`atomic::Ordering`], which loom itself takes from `std`, so it is one type in both
//! arms; and `model`, loom's own, which exists only under `infra_loom`, for the loom tests.
//!
//! [loom]: https://docs.rs/loom
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the switch itself is the one place that names the real primitives"
)]

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

#[cfg(not(infra_loom))]
use std::sync as arc_backend;

#[cfg(infra_loom)]
use loom::sync as arc_backend;

/// A thread-safe reference-counted pointer: `std::sync::Arc`, or loom's under `infra_loom`.
///
/// It offers what both backends offer. In particular it does not coerce to `Arc<dyn Trait>`
/// (unsizing a wrapper needs an unstable trait); store a `Box<dyn Trait>` inside instead.
///
/// ```
/// use infra_common::sync::Arc;
///
/// let first = Arc::new(String::from("shared"));
/// let second = Arc::clone(&first);
/// assert!(Arc::ptr_eq(&first, &second));
/// assert_eq!(Arc::strong_count(&first), 2);
/// drop(second);
/// assert_eq!(Arc::try_unwrap(first).unwrap(), "shared");
/// ```
pub struct Arc<T: ?Sized> {
    inner: arc_backend::Arc<T>,
}

impl<T> Arc<T> {
    /// Puts `value` behind a new reference count of one.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    pub fn new(value: T) -> Self {
        Self {
            inner: arc_backend::Arc::new(value),
        }
    }

    /// Returns the value if `this` is the only reference, or `this` back otherwise.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    pub fn try_unwrap(this: Self) -> Result<T, Self> {
        arc_backend::Arc::try_unwrap(this.inner).map_err(|inner| Self { inner })
    }
}

impl<T: ?Sized> Arc<T> {
    /// The number of `Arc`s pointing at this value.
    #[inline]
    pub fn strong_count(this: &Self) -> usize {
        arc_backend::Arc::strong_count(&this.inner)
    }

    /// A mutable reference to the value if `this` is the only reference.
    #[inline]
    pub fn get_mut(this: &mut Self) -> Option<&mut T> {
        arc_backend::Arc::get_mut(&mut this.inner)
    }

    /// Whether both point at the same allocation.
    #[inline]
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        arc_backend::Arc::ptr_eq(&this.inner, &other.inner)
    }

    /// A pointer to the value, valid while any `Arc` to it lives.
    #[inline]
    pub fn as_ptr(this: &Self) -> *const T {
        arc_backend::Arc::as_ptr(&this.inner)
    }

    /// Gives up `this` without decrementing the count; [`Arc::from_raw`] takes it back.
    #[inline]
    #[must_use = "the pointer owns a strong count, which leaks unless passed to `Arc::from_raw`"]
    pub fn into_raw(this: Self) -> *const T {
        arc_backend::Arc::into_raw(this.inner)
    }

    /// Takes back a strong count given up by [`Arc::into_raw`].
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`Arc::into_raw`] of this same `Arc` type and still own the count
    /// it was given; this call consumes that count.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: the caller guarantees `ptr` came from the backend's `into_raw` (ours passes
        // it through unchanged) and owns one strong count, which is the backend's contract.
        let inner = unsafe { arc_backend::Arc::from_raw(ptr) };
        Self { inner }
    }

    /// Adds one strong count to the allocation behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must come from [`Arc::into_raw`] of this same `Arc` type, and the allocation must
    /// still hold at least one strong count for the whole call.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    #[allow(unsafe_code)]
    pub unsafe fn increment_strong_count(ptr: *const T) {
        // SAFETY: the caller guarantees `ptr` came from the backend's `into_raw` and that its
        // allocation stays alive during the call, which is the backend's contract.
        unsafe { arc_backend::Arc::increment_strong_count(ptr) }
    }
}

impl<T: ?Sized> Clone for Arc<T> {
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    fn clone(&self) -> Self {
        Self {
            inner: arc_backend::Arc::clone(&self.inner),
        }
    }
}

impl<T: ?Sized> Deref for Arc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> AsRef<T> for Arc<T> {
    #[inline]
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: ?Sized> std::borrow::Borrow<T> for Arc<T> {
    #[inline]
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: Default> Default for Arc<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for Arc<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Arc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for Arc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized + PartialEq> PartialEq for Arc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Eq> Eq for Arc<T> {}

impl<T: ?Sized + PartialOrd> PartialOrd for Arc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Ord> Ord for Arc<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + std::hash::Hash> std::hash::Hash for Arc<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

/// Runs `f` under the loom model checker, once per possible interleaving.
///
/// Only present in `infra_loom` builds; loom tests call it instead of depending on loom.
#[cfg(infra_loom)]
pub use loom::model;

/// Atomic integers, pointers and fences.
///
/// ```
/// use infra_common::sync::atomic::{AtomicU64, Ordering};
///
/// let hits = AtomicU64::new(1);
/// assert_eq!(hits.fetch_add(2, Ordering::Relaxed), 1);
/// assert_eq!(hits.compare_exchange(3, 7, Ordering::AcqRel, Ordering::Acquire), Ok(3));
/// assert_eq!(hits.into_inner(), 7);
/// ```
pub mod atomic {
    use std::fmt;

    /// Memory orderings; the same type in both arms (loom re-exports `std`'s).
    pub use std::sync::atomic::Ordering;

    #[cfg(not(infra_loom))]
    use std::sync::atomic as backend;

    #[cfg(infra_loom)]
    use loom::sync::atomic as backend;

    /// A memory fence with the given ordering.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    pub fn fence(order: Ordering) {
        backend::fence(order);
    }

    /// The operations every atomic type shares, for a value type `$value`.
    macro_rules! common_operations {
        ($name:ident, $value:ty) => {
            impl $name {
                /// Creates the atomic holding `value`.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn new(value: $value) -> Self {
                    Self {
                        inner: backend::$name::new(value),
                    }
                }

                /// Reads the value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn load(&self, order: Ordering) -> $value {
                    self.inner.load(order)
                }

                /// Writes `value`.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn store(&self, value: $value, order: Ordering) {
                    self.inner.store(value, order);
                }

                /// Writes `value` and returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn swap(&self, value: $value, order: Ordering) -> $value {
                    self.inner.swap(value, order)
                }

                /// Writes `new` if the value is `current`; returns the previous value, `Ok`
                /// if the write happened.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn compare_exchange(
                    &self,
                    current: $value,
                    new: $value,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$value, $value> {
                    self.inner.compare_exchange(current, new, success, failure)
                }

                /// Like [`Self::compare_exchange`], but may fail spuriously; for retry loops.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn compare_exchange_weak(
                    &self,
                    current: $value,
                    new: $value,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$value, $value> {
                    self.inner
                        .compare_exchange_weak(current, new, success, failure)
                }

                /// Applies `f` in a compare-exchange loop until it returns `None` (giving
                /// `Err` with the value seen) or its result is written (giving `Ok` with the
                /// previous value).
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_update<F>(
                    &self,
                    set_order: Ordering,
                    fetch_order: Ordering,
                    f: F,
                ) -> Result<$value, $value>
                where
                    F: FnMut($value) -> Option<$value>,
                {
                    self.inner.fetch_update(set_order, fetch_order, f)
                }

                /// Consumes the atomic and returns its value.
                #[inline]
                pub fn into_inner(self) -> $value {
                    self.inner.into_inner()
                }
            }

            impl From<$value> for $name {
                fn from(value: $value) -> Self {
                    Self::new(value)
                }
            }

            impl fmt::Debug for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
                }
            }
        };
    }

    /// An atomic integer type with its arithmetic and bitwise read-modify-write operations.
    macro_rules! atomic_integer {
        ($name:ident, $value:ty) => {
            #[doc = concat!("An atomic `", stringify!($value), "`.")]
            #[derive(Default)]
            pub struct $name {
                inner: backend::$name,
            }

            common_operations!($name, $value);

            impl $name {
                /// Adds `value` (wrapping on overflow) and returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_add(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_add(value, order)
                }

                /// Subtracts `value` (wrapping on overflow) and returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_sub(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_sub(value, order)
                }

                /// Stores the maximum of the value and `value`; returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_max(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_max(value, order)
                }

                /// Stores the minimum of the value and `value`; returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_min(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_min(value, order)
                }

                /// Bitwise AND with `value`; returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_and(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_and(value, order)
                }

                /// Bitwise OR with `value`; returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_or(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_or(value, order)
                }

                /// Bitwise XOR with `value`; returns the previous value.
                #[inline]
                #[cfg_attr(infra_loom, track_caller)]
                pub fn fetch_xor(&self, value: $value, order: Ordering) -> $value {
                    self.inner.fetch_xor(value, order)
                }
            }
        };
    }

    atomic_integer!(AtomicU8, u8);
    atomic_integer!(AtomicU32, u32);
    atomic_integer!(AtomicU64, u64);
    atomic_integer!(AtomicUsize, usize);
    atomic_integer!(AtomicI32, i32);
    atomic_integer!(AtomicI64, i64);
    atomic_integer!(AtomicIsize, isize);

    /// An atomic `bool`.
    #[derive(Default)]
    pub struct AtomicBool {
        inner: backend::AtomicBool,
    }

    common_operations!(AtomicBool, bool);

    impl AtomicBool {
        /// Logical AND with `value`; returns the previous value.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn fetch_and(&self, value: bool, order: Ordering) -> bool {
            self.inner.fetch_and(value, order)
        }

        /// Logical OR with `value`; returns the previous value.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn fetch_or(&self, value: bool, order: Ordering) -> bool {
            self.inner.fetch_or(value, order)
        }

        /// Logical XOR with `value`; returns the previous value.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn fetch_xor(&self, value: bool, order: Ordering) -> bool {
            self.inner.fetch_xor(value, order)
        }
    }

    /// An atomic raw pointer.
    pub struct AtomicPtr<T> {
        inner: backend::AtomicPtr<T>,
    }

    impl<T> AtomicPtr<T> {
        /// Creates the atomic holding `value`.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn new(value: *mut T) -> Self {
            Self {
                inner: backend::AtomicPtr::new(value),
            }
        }

        /// Reads the pointer.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn load(&self, order: Ordering) -> *mut T {
            self.inner.load(order)
        }

        /// Writes `value`.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn store(&self, value: *mut T, order: Ordering) {
            self.inner.store(value, order);
        }

        /// Writes `value` and returns the previous pointer.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn swap(&self, value: *mut T, order: Ordering) -> *mut T {
            self.inner.swap(value, order)
        }

        /// Writes `new` if the pointer is `current`; returns the previous pointer, `Ok` if the
        /// write happened.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn compare_exchange(
            &self,
            current: *mut T,
            new: *mut T,
            success: Ordering,
            failure: Ordering,
        ) -> Result<*mut T, *mut T> {
            self.inner.compare_exchange(current, new, success, failure)
        }

        /// Consumes the atomic and returns its pointer.
        #[inline]
        pub fn into_inner(self) -> *mut T {
            self.inner.into_inner()
        }
    }

    impl<T> Default for AtomicPtr<T> {
        fn default() -> Self {
            Self::new(std::ptr::null_mut())
        }
    }

    impl<T> fmt::Debug for AtomicPtr<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Pointer::fmt(&self.load(Ordering::Relaxed), f)
        }
    }
}

/// Threads and thread-locals, for tests and for the few places that own a thread.
pub mod thread {
    use std::fmt;

    #[cfg(not(infra_loom))]
    use std::thread as backend;

    #[cfg(infra_loom)]
    use loom::thread as backend;

    /// Offers the rest of this thread's time slice to other threads (under loom: lets the
    /// scheduler run another thread).
    #[inline]
    pub fn yield_now() {
        backend::yield_now();
    }

    /// Owns a thread started with [`spawn`]; [`JoinHandle::join`] is its whole API in both arms.
    #[must_use = "dropping the handle detaches the thread"]
    pub struct JoinHandle<T> {
        inner: backend::JoinHandle<T>,
    }

    impl<T> JoinHandle<T> {
        /// Waits for the thread to finish; `Err` carries its panic payload if it panicked.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn join(self) -> std::thread::Result<T> {
            self.inner.join()
        }
    }

    impl<T> fmt::Debug for JoinHandle<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JoinHandle").finish_non_exhaustive()
        }
    }

    /// Declares thread-local statics that loom models as well.
    ///
    /// The syntax is `std::thread_local!`'s, `const { ... }` initializers included. Each static
    /// becomes a [`LocalKey`], whose [`LocalKey::with`] is the whole API in both arms.
    #[doc(inline)]
    pub use crate::__infra_thread_local as thread_local;

    /// Starts a thread running `f`.
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    pub fn spawn<F, T>(f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        JoinHandle {
            inner: backend::spawn(f),
        }
    }

    /// Starts a thread running `f` on a stack of at least `bytes`.
    ///
    /// Under loom each model thread runs on a small coroutine stack of its own; a model that
    /// runs deep code (opening files, replaying a log) spawns its threads with this.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start the thread (outside loom).
    #[cfg_attr(infra_loom, track_caller)]
    pub fn spawn_with_stack<F, T>(bytes: usize, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = backend::Builder::new()
            .stack_size(bytes)
            .spawn(f)
            .expect("the thread could not be started");
        JoinHandle { inner }
    }

    /// A number for the calling thread: 0 for the first thread that asks, 1 for the next, and
    /// so on; the same on every call from one thread, and never given to a second thread.
    ///
    /// For spreading threads over a fixed set of slots (say, striped counters, each on its own
    /// cache line): `ordinal() % SLOTS` gives the first `SLOTS` threads that ask a slot each,
    /// and later ones the slots in turn, where a hash of the thread id could put two threads on
    /// one slot. After the first call on a thread, it costs one thread-local read. Under loom
    /// the numbering restarts with every execution of the model, in the order the threads ask.
    ///
    /// ```
    /// use infra_common::sync::thread;
    ///
    /// let mine = thread::ordinal();
    /// assert_eq!(thread::ordinal(), mine);
    /// let theirs = thread::spawn(thread::ordinal).join().unwrap();
    /// assert_ne!(theirs, mine);
    /// ```
    #[inline]
    #[cfg_attr(infra_loom, track_caller)]
    pub fn ordinal() -> usize {
        crate::__infra_thread_local! {
            // Taken from the process-wide count on the thread's first call.
            static ORDINAL: usize = next_ordinal();
        }
        ORDINAL.with(|ordinal| *ordinal)
    }

    /// The next unused thread ordinal.
    #[cfg(not(infra_loom))]
    fn next_ordinal() -> usize {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The next unused thread ordinal of this execution of the model.
    #[cfg(infra_loom)]
    fn next_ordinal() -> usize {
        use loom::sync::atomic::AtomicUsize;
        loom::lazy_static! {
            static ref NEXT: AtomicUsize = AtomicUsize::new(0);
        }
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A thread-local value declared with [`thread_local!`](crate::sync::thread::thread_local).
    ///
    /// ```
    /// use infra_common::sync::thread::{self, thread_local};
    /// use std::cell::Cell;
    ///
    /// thread_local! {
    ///     /// Counts calls on this thread.
    ///     static CALLS: Cell<u32> = const { Cell::new(0) };
    /// }
    ///
    /// CALLS.with(|calls| calls.set(calls.get() + 1));
    /// let elsewhere = thread::spawn(|| CALLS.with(Cell::get)).join().unwrap();
    /// assert_eq!((CALLS.with(Cell::get), elsewhere), (1, 0));
    /// ```
    pub struct LocalKey<T: 'static> {
        inner: &'static backend::LocalKey<T>,
    }

    impl<T: 'static> LocalKey<T> {
        /// Wraps a key made by the backend's own macro; only `thread_local!` calls this.
        #[doc(hidden)]
        pub const fn __wrap(inner: &'static backend::LocalKey<T>) -> Self {
            Self { inner }
        }

        /// Runs `f` with this thread's value, initializing it on first use.
        ///
        /// # Panics
        ///
        /// If called while this thread's value is being destroyed (from another thread-local's
        /// destructor); [`LocalKey::try_with`] returns `None` instead.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn with<F, R>(&self, f: F) -> R
        where
            F: FnOnce(&T) -> R,
        {
            self.inner.with(f)
        }

        /// Like [`LocalKey::with`], but `None` once this thread's value has been destroyed.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn try_with<F, R>(&self, f: F) -> Option<R>
        where
            F: FnOnce(&T) -> R,
        {
            self.inner.try_with(f).ok()
        }
    }

    impl<T: 'static> fmt::Debug for LocalKey<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LocalKey").finish_non_exhaustive()
        }
    }

    /// The backend's own macro, for `thread_local!`'s expansion only.
    #[cfg(infra_loom)]
    #[doc(hidden)]
    pub use loom::thread_local as __backend_thread_local;

    /// The backend's own macro, for `thread_local!`'s expansion only.
    #[cfg(not(infra_loom))]
    #[doc(hidden)]
    pub use std::thread_local as __backend_thread_local;
}

/// Declares thread-locals through the backend's macro; see [`sync::thread::thread_local`].
///
/// The inner `std` key carries `allow(clippy::disallowed_types)`: that key type is banned
/// elsewhere, which is how a direct `std::thread_local!` gets caught.
///
/// [`sync::thread::thread_local`]: crate::sync::thread::thread_local
#[cfg(not(infra_loom))]
#[doc(hidden)]
#[macro_export]
macro_rules! __infra_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const $init:block $(; $($rest:tt)*)?) => {
        $(#[$attr])*
        $vis const $name: $crate::sync::thread::LocalKey<$t> = $crate::sync::thread::LocalKey::__wrap({
            $crate::sync::thread::__backend_thread_local! {
                #[allow(clippy::disallowed_types)]
                static INFRA_THREAD_LOCAL: $t = const $init;
            }
            &INFRA_THREAD_LOCAL
        });
        $($crate::__infra_thread_local!($($rest)*);)?
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr $(; $($rest:tt)*)?) => {
        $(#[$attr])*
        $vis const $name: $crate::sync::thread::LocalKey<$t> = $crate::sync::thread::LocalKey::__wrap({
            $crate::sync::thread::__backend_thread_local! {
                #[allow(clippy::disallowed_types)]
                static INFRA_THREAD_LOCAL: $t = $init;
            }
            &INFRA_THREAD_LOCAL
        });
        $($crate::__infra_thread_local!($($rest)*);)?
    };
}

/// Declares thread-locals through loom's macro; see [`sync::thread::thread_local`].
///
/// Loom's macro has no `const` form, so a `const` block is passed on as a plain initializer.
///
/// [`sync::thread::thread_local`]: crate::sync::thread::thread_local
#[cfg(infra_loom)]
#[doc(hidden)]
#[macro_export]
macro_rules! __infra_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const $init:block $(; $($rest:tt)*)?) => {
        $crate::__infra_thread_local!($(#[$attr])* $vis static $name: $t = $init $(; $($rest)*)?);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr $(; $($rest:tt)*)?) => {
        $(#[$attr])*
        $vis const $name: $crate::sync::thread::LocalKey<$t> = $crate::sync::thread::LocalKey::__wrap({
            $crate::sync::thread::__backend_thread_local! {
                static INFRA_THREAD_LOCAL: $t = $init;
            }
            &INFRA_THREAD_LOCAL
        });
        $($crate::__infra_thread_local!($($rest)*);)?
    };
}

/// `UnsafeCell` with loom's closure API in both arms, so loom checks every access.
///
/// Under loom, [`UnsafeCell::with`](cell::UnsafeCell::with) and
/// [`with_mut`](cell::UnsafeCell::with_mut) record a read or a write, and a model fails when two
/// threads' accesses to one cell are not ordered by synchronization (a write with any other
/// access). In a normal build they pass `std`'s raw pointer straight to the closure.
pub mod cell {
    use std::fmt;

    /// Interior mutability whose accesses loom can check; see the [module docs](self).
    ///
    /// ```
    /// use infra_common::sync::cell::UnsafeCell;
    ///
    /// let cell = UnsafeCell::new(1);
    /// // SAFETY: nothing else accesses `cell` while this closure runs.
    /// cell.with_mut(|value| unsafe { *value += 1 });
    /// // SAFETY: no writer exists while this closure runs.
    /// assert_eq!(cell.with(|value| unsafe { *value }), 2);
    /// ```
    pub struct UnsafeCell<T: ?Sized> {
        #[cfg(not(infra_loom))]
        inner: std::cell::UnsafeCell<T>,
        #[cfg(infra_loom)]
        inner: loom::cell::UnsafeCell<T>,
    }

    impl<T> UnsafeCell<T> {
        /// Creates a cell holding `value`.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn new(value: T) -> Self {
            #[cfg(not(infra_loom))]
            let inner = std::cell::UnsafeCell::new(value);
            #[cfg(infra_loom)]
            let inner = loom::cell::UnsafeCell::new(value);
            Self { inner }
        }

        /// Consumes the cell and returns its value.
        #[inline]
        pub fn into_inner(self) -> T {
            self.inner.into_inner()
        }
    }

    impl<T: ?Sized> UnsafeCell<T> {
        /// Runs `f` with a pointer for reading the value.
        ///
        /// Dereferencing it is sound only while no write to the cell can happen.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            #[cfg(not(infra_loom))]
            return f(self.inner.get());
            #[cfg(infra_loom)]
            return self.inner.with(f);
        }

        /// Runs `f` with a pointer for writing the value.
        ///
        /// Dereferencing it is sound only while no other access to the cell can happen.
        #[inline]
        #[cfg_attr(infra_loom, track_caller)]
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            #[cfg(not(infra_loom))]
            return f(self.inner.get());
            #[cfg(infra_loom)]
            return self.inner.with_mut(f);
        }
    }

    impl<T: Default> Default for UnsafeCell<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    impl<T: ?Sized> fmt::Debug for UnsafeCell<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("UnsafeCell").finish_non_exhaustive()
        }
    }
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

    /// Wakes up to `n` waiting threads, and stops at the first call that finds none waiting:
    /// what `n` calls of [`notify_one`](Self::notify_one) do, for a change that lets `n`
    /// waiters on, without paying a notification per item when nobody waits.
    pub fn notify_up_to(&self, n: usize) {
        for _ in 0..n {
            #[cfg(not(infra_loom))]
            if !self.inner.notify_one() {
                break;
            }
            // Loom's notification does not say whether it woke a thread: all `n` are made.
            #[cfg(infra_loom)]
            self.inner.notify_one();
        }
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
///
/// A thread must not take a read lock it already holds. The two arms fail differently, and
/// neither as the code would in production with no writer about: `parking_lot`'s lock is
/// fair, so the second [`RwLock::read`] waits behind a writer that queued after the first, a
/// deadlock that needs a writer to arrive at that moment; loom's lock counts each thread as a
/// reader once, so the inner guard's release frees the lock and the outer one's fails the
/// model with loom's `invalid internal loom state`.
#[derive(Default)]
pub struct RwLock<T> {
    inner: backend::RwLock<T>,
}

/// Shared access to an [`RwLock`] until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T> {
    inner: backend::RwLockReadGuard<'a, T>,
}

/// Exclusive access to an [`RwLock`] until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T> {
    inner: backend::RwLockWriteGuard<'a, T>,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T> RwLock<T> {
    /// Creates an unlocked lock holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: backend::RwLock::new(value),
        }
    }

    /// Blocks until shared access is granted. Not reentrant: see [`RwLock`].
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        #[cfg(not(infra_loom))]
        let inner = self.inner.read();
        #[cfg(infra_loom)]
        let inner = unpoison(self.inner.read());
        RwLockReadGuard { inner }
    }

    /// Takes shared access if it can be granted at once: `None` while a writer holds the lock
    /// or waits for it (so it never waits behind one). Not reentrant either: see [`RwLock`].
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        #[cfg(not(infra_loom))]
        let inner = self.inner.try_read()?;
        #[cfg(infra_loom)]
        let inner = match self.inner.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(RwLockReadGuard { inner })
    }

    /// Blocks until exclusive access is granted.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        #[cfg(not(infra_loom))]
        let inner = self.inner.write();
        #[cfg(infra_loom)]
        let inner = unpoison(self.inner.write());
        RwLockWriteGuard { inner }
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
    fn try_read_is_refused_while_a_writer_holds_the_lock() {
        let lock = RwLock::new(1);
        assert_eq!(lock.try_read().map(|value| *value), Some(1));
        let writer = lock.write();
        assert!(lock.try_read().is_none(), "a writer holds it");
        drop(writer);
        assert!(lock.try_read().is_some());
    }

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

    /// Three threads wait for tokens; `notify_up_to` lets on as many as there are tokens,
    /// and asking for more than are waiting is harmless. A waiter left asleep would report a
    /// timeout after a minute.
    #[test]
    fn notify_up_to_wakes_as_many_waiters_as_asked() {
        #[derive(Default)]
        struct Gate {
            waiting: usize,
            tokens: usize,
            passed: usize,
            timed_out: usize,
        }
        let gate = Arc::new((Mutex::new(Gate::default()), Condvar::new()));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let gate = Arc::clone(&gate);
                thread::spawn(move || {
                    let mut state = gate.0.lock();
                    state.waiting += 1;
                    while state.tokens == 0 {
                        if gate.1.wait_timeout(&mut state, Duration::from_secs(60)) {
                            state.timed_out += 1;
                        }
                    }
                    state.tokens -= 1;
                    state.waiting -= 1;
                    state.passed += 1;
                })
            })
            .collect();
        let wait_until = |done: &dyn Fn(&Gate) -> bool| {
            while !done(&gate.0.lock()) {
                thread::yield_now();
            }
        };
        wait_until(&|state| state.waiting == 3);
        gate.0.lock().tokens = 2;
        gate.1.notify_up_to(2);
        wait_until(&|state| state.passed == 2);
        gate.0.lock().tokens = 1;
        gate.1.notify_up_to(5);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(gate.0.lock().timed_out, 0, "a waiter was left asleep");
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

    thread::thread_local! {
        static LAZY: std::cell::Cell<u32> = std::cell::Cell::new(40 + 2);
        /// A constant initializer, documented like any static.
        static EAGER: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[test]
    fn thread_locals_start_fresh_on_every_thread() {
        LAZY.with(|value| value.set(value.get() + 1));
        EAGER.with(|values| values.borrow_mut().push(1));
        let seen_elsewhere = thread::spawn(|| {
            let lazy = LAZY.with(std::cell::Cell::get);
            let eager = EAGER.with(|values| values.borrow().len());
            (lazy, eager)
        })
        .join()
        .unwrap();
        assert_eq!(seen_elsewhere, (42, 0));
        assert_eq!(LAZY.with(std::cell::Cell::get), 43);
        assert_eq!(
            EAGER.try_with(|values| values.borrow().clone()),
            Some(vec![1])
        );
    }

    #[test]
    fn thread_ordinals_are_fixed_per_thread_and_never_shared() {
        let mine = thread::ordinal();
        let others: Vec<usize> = (0..4)
            .map(|_| {
                thread::spawn(|| {
                    let first = thread::ordinal();
                    assert_eq!(thread::ordinal(), first, "fixed for the thread's life");
                    first
                })
                .join()
                .unwrap()
            })
            .collect();
        assert_eq!(thread::ordinal(), mine);
        let mut all = others.clone();
        all.push(mine);
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            5,
            "five threads, five ordinals: {others:?} and {mine}"
        );
        // Threads started one after another get increasing numbers (other tests' threads may
        // take some in between).
        assert!(
            others.windows(2).all(|pair| pair[0] < pair[1]),
            "{others:?}"
        );
    }

    #[test]
    #[allow(unsafe_code)]
    fn unsafe_cell_hands_out_the_same_place_for_reads_and_writes() {
        let cell = cell::UnsafeCell::new(vec![1]);
        // SAFETY: the test is single-threaded and no other pointer to the cell is live.
        cell.with_mut(|values| unsafe { (*values).push(2) });
        // SAFETY: as above; the write has finished.
        let sum: i32 = cell.with(|values| unsafe { (*values).iter().sum() });
        assert_eq!(sum, 3);
        assert_eq!(cell.into_inner(), [1, 2]);
    }

    #[test]
    fn arc_compares_and_hashes_by_value_and_shares_by_pointer() {
        use std::hash::BuildHasher;
        let (a, b) = (Arc::new(String::from("x")), Arc::new(String::from("x")));
        assert_eq!(a, b);
        assert!(!Arc::ptr_eq(&a, &b));
        let hasher = std::hash::RandomState::new();
        assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
        let mut only = Arc::new(1);
        *Arc::get_mut(&mut only).expect("one reference") += 1;
        let other = Arc::clone(&only);
        assert!(Arc::get_mut(&mut only).is_none());
        assert_eq!(Arc::try_unwrap(only), Err(Arc::new(2)));
        assert_eq!(format!("{other} {other:?}"), "2 2");
    }

    #[test]
    #[allow(unsafe_code)]
    fn arc_raw_round_trip_keeps_the_count() {
        let value = Arc::new(5);
        let raw = Arc::into_raw(Arc::clone(&value));
        // SAFETY: `raw` came from `into_raw` and still owns the count it was given, so the
        // allocation is alive; the increment is balanced by the second `from_raw` below.
        unsafe { Arc::increment_strong_count(raw) };
        assert_eq!(Arc::strong_count(&value), 3);
        // SAFETY: each call takes back one of the two counts `raw` now owns.
        let (first, second) = unsafe { (Arc::from_raw(raw), Arc::from_raw(raw)) };
        assert!(Arc::ptr_eq(&first, &second) && Arc::ptr_eq(&first, &value));
        drop((first, second));
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn atomics_read_modify_write_and_report_the_previous_value() {
        use atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, Ordering};
        let number = AtomicI64::new(-3);
        assert_eq!(number.fetch_max(4, Ordering::Relaxed), -3);
        assert_eq!(number.fetch_min(1, Ordering::Relaxed), 4);
        assert_eq!(number.fetch_sub(2, Ordering::Relaxed), 1);
        assert_eq!(
            number.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n * 10)),
            Ok(-1)
        );
        assert_eq!(
            number.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed),
            Err(-10)
        );
        let bits = AtomicU32::new(0b1100);
        assert_eq!(bits.fetch_xor(0b0110, Ordering::Relaxed), 0b1100);
        assert_eq!(bits.fetch_and(0b0011, Ordering::Relaxed), 0b1010);
        assert_eq!(format!("{bits:?}"), "2");
        let flag = AtomicBool::default();
        assert!(!flag.fetch_or(true, Ordering::Relaxed));
        assert!(flag.swap(false, Ordering::Relaxed));
        let mut target = 9;
        let pointer = AtomicPtr::default();
        assert!(pointer.swap(&mut target, Ordering::AcqRel).is_null());
        assert_eq!(pointer.into_inner(), &raw mut target);
    }
}
