//! [`SnapshotCell`]: an atomically replaceable `Arc<T>` whose readers never wait.
//!
//! # Protocol
//!
//! The cell holds the current value as a raw `Arc` pointer. A reader announces itself on a
//! counter, issues a `SeqCst` fence, loads the pointer, uses the value (or takes a strong
//! count), and withdraws from the counter. That is a fixed sequence of atomic instructions:
//! readers are wait-free and never look at a lock. (A thread on an overflow stripe, below,
//! also records the cell in a thread-local list for the length of its read, so that a
//! `publish` inside the read is detected; the list's first use allocates.)
//!
//! The counters come in stripes, each stripe on a cache line of its own, with two counters
//! per stripe chosen by a parity bit. The first [`STRIPES`] threads of the process
//! ([`thread::ordinal`] below [`STRIPES`]) each own a stripe that no other thread writes, so
//! they count with a plain load and store instead of a locked read-modify-write; later threads
//! share the overflow stripes (ordinal modulo [`STRIPES`]) and count with atomic increments. A
//! reader uses the counter of the current parity. Readers on different threads therefore write
//! to different cache lines (up to the overflow's sharing); all they share is the pointer and
//! the parity bit, which they only read. (With one pair of counters for all readers, as this
//! cell had first, two threads' lookups fought over one cache line and lost to arc-swap on two
//! threads; see the `ring_hash/shared` benchmarks.)
//!
//! A writer (serialized with the other writers by a mutex) swaps the new pointer in, issues a
//! `SeqCst` fence, and then, twice: flips the parity bit so new readers go to the other
//! parity, and waits until the counter of the old parity drains to zero on every stripe. Only
//! then does it release the old value's strong count.
//!
//! Why this is enough: take a reader that loaded the *old* pointer, announced on some
//! stripe's counter. By the two fences (the store-buffering pattern), either the writer's
//! load of that counter sees the reader's announcement, or the reader's pointer load sees the
//! new pointer. In the first case the writer waits for the reader's `Release` withdrawal,
//! which its `Acquire` load synchronizes with, so the reader is done with the old value before
//! it is dropped. Every counter of every stripe, owned and overflow, is drained after the swap
//! (each parity in one of the two rounds), so it does not matter which counter the reader
//! picked, nor whether two threads share a stripe; the parity flip only keeps a stream of new
//! readers from starving the writer. An owned counter's plain store is as good as an
//! increment there because its thread is the only writer: its load reads its own last store,
//! and the writer's `Acquire` load of the withdrawing `Release` store (the last one of a
//! nested read) sees everything the thread did before it.
//!
//! The cost is on the writer, which waits for the few instructions of every in-flight read
//! and reads `2 × STRIPES` counters; a reader preempted inside its read section delays the
//! writer, never other readers.
//!
//! The protocol is model-checked by the crate's loom tests. The unit tests below drive the
//! unsafe pointer handling from real threads, so they are the ones to run under Miri:
//! `cargo +nightly miri test -p infra-ring-hash --lib snapshot`.

use std::fmt;

use infra_common::sync::atomic::{AtomicPtr, AtomicUsize, Ordering, fence};
use infra_common::sync::{Arc, Mutex, spin_loop, thread};

use crate::reentry::Section;

/// How many times a writer spins on a reader counter before it yields its time slice.
const SPINS_BEFORE_YIELD: u32 = 64;

/// How many owned stripes and how many overflow stripes a cell has: the first this many
/// threads of the process own a stripe each, later threads share the overflow ones, and a cell
/// takes `2 × STRIPES × 128` bytes for them.
#[cfg(not(infra_loom))]
pub(crate) const STRIPES: usize = 16;

/// One of each is enough for a model to put a reader on an owned stripe (the first thread to
/// read) and one on the overflow stripe (the next); more would only add states to explore.
#[cfg(infra_loom)]
pub(crate) const STRIPES: usize = 1;

/// A stripe's two reader counters (one per parity), alone on a cache line: 128 bytes, since
/// x86 processors fetch lines in adjacent pairs.
#[derive(Default)]
#[repr(align(128))]
struct Stripe {
    readers: [AtomicUsize; 2],
}

/// What readers only read, apart from the stripes they write to.
#[repr(align(128))]
struct Current<T> {
    /// Always a pointer obtained from `Arc::into_raw`, owning one strong count.
    value: AtomicPtr<T>,
    /// Which counter of each stripe new readers announce themselves on (only the low bit
    /// matters).
    parity: AtomicUsize,
}

/// An `Arc<T>` that can be replaced while readers use it, with wait-free reads.
///
/// Readers on different threads write to different cache lines (see the protocol in the
/// source of this module); a writer waits for the readers that may still see the value it
/// replaces.
///
/// ```
/// use infra_common::sync::Arc;
/// use infra_ring_hash::SnapshotCell;
///
/// let cell = SnapshotCell::new(Arc::new(vec!["a"]));
/// let held = cell.load();
/// let old = cell.publish(Arc::new(vec!["a", "b"]));
/// assert!(Arc::ptr_eq(&old, &held));
/// assert_eq!(cell.read(|nodes| nodes.len()), 2);
/// assert_eq!(held.len(), 1); // a loaded value outlives its replacement
/// ```
pub struct SnapshotCell<T> {
    current: Current<T>,
    /// Readers currently inside a read section, by stripe and by the parity they saw: the
    /// stripe a thread owns (written by it alone) ...
    owned: [Stripe; STRIPES],
    /// ... or, for threads past the first [`STRIPES`], a shared one.
    overflow: [Stripe; STRIPES],
    /// Serializes writers.
    writer: Mutex<()>,
}

// SAFETY: the cell hands out `&T` and `Arc<T>` to any thread, and moves `Arc<T>` values between
// threads on publication, exactly like `Arc<T>` itself, which is Send + Sync when T is.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Send for SnapshotCell<T> {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Sync for SnapshotCell<T> {}

/// A reader's announcement; withdrawing it on drop keeps the count right even if the reader's
/// closure panics.
struct ReadSection<'a> {
    counter: &'a AtomicUsize,
    /// Whether `counter` is on the stripe this thread owns (and no other thread writes).
    owned: bool,
    /// For a thread on an overflow stripe, the record that it is inside a read of this cell
    /// (an owned stripe's counters say so by themselves): see [`SnapshotCell::publish`].
    _overflow: Option<Section>,
}

impl ReadSection<'_> {
    /// Adds one reader to the counter this thread owns.
    #[inline]
    fn announce_owned(counter: &AtomicUsize) -> ReadSection<'_> {
        // This thread is the counter's only writer: a load and a store count without a locked
        // read-modify-write.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        ReadSection {
            counter,
            owned: true,
            _overflow: None,
        }
    }

    /// Adds one reader to a shared overflow `counter` of `cell`.
    #[inline]
    fn announce_shared<'a, T>(counter: &'a AtomicUsize, cell: &SnapshotCell<T>) -> ReadSection<'a> {
        let overflow = Section::enter(cell);
        counter.fetch_add(1, Ordering::Relaxed);
        ReadSection {
            counter,
            owned: false,
            _overflow: Some(overflow),
        }
    }
}

impl Drop for ReadSection<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: everything this reader did with the value happens before a writer's
        // Acquire load that sees the counter drop.
        if self.owned {
            let count = self.counter.load(Ordering::Relaxed);
            self.counter.store(count - 1, Ordering::Release);
        } else {
            self.counter.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Waits until no reader is announced on `counter`.
fn drain(counter: &AtomicUsize) {
    let mut spins = 0u32;
    while counter.load(Ordering::Acquire) != 0 {
        // A read section is a few instructions, so a short spin usually sees it end; a reader
        // that was preempted inside one needs the core, so after that, give it up rather than
        // burn it.
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

impl<T> SnapshotCell<T> {
    /// A cell holding `value`.
    pub fn new(value: Arc<T>) -> Self {
        Self {
            current: Current {
                value: AtomicPtr::new(Arc::into_raw(value).cast_mut()),
                parity: AtomicUsize::new(0),
            },
            owned: std::array::from_fn(|_| Stripe::default()),
            overflow: std::array::from_fn(|_| Stripe::default()),
            writer: Mutex::new(()),
        }
    }

    #[inline]
    fn enter(&self) -> (ReadSection<'_>, *const T) {
        let ordinal = thread::ordinal();
        let parity = self.current.parity.load(Ordering::Relaxed) & 1;
        let section = match self.owned.get(ordinal) {
            Some(stripe) => ReadSection::announce_owned(&stripe.readers[parity]),
            None => ReadSection::announce_shared(
                &self.overflow[ordinal % STRIPES].readers[parity],
                self,
            ),
        };
        // Pairs with the writer's fence: either the writer sees this announcement or this
        // reader sees the writer's new pointer (see the module documentation).
        fence(Ordering::SeqCst);
        let ptr = self.current.value.load(Ordering::Acquire);
        (section, ptr)
    }

    /// Runs `f` on the current value without touching its reference count.
    ///
    /// Keep `f` short: a writer waits for it before it releases the value `f` sees.
    #[inline]
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let (_section, ptr) = self.enter();
        // SAFETY: `ptr` came from `Arc::into_raw` and its strong count is not released while a
        // reader that may have loaded it is announced (module documentation); `_section` keeps
        // the announcement until `f` returns.
        #[allow(unsafe_code)]
        let value = unsafe { &*ptr };
        f(value)
    }

    /// The current value, as a strong reference that outlives later publications.
    pub fn load(&self) -> Arc<T> {
        let (_section, ptr) = self.enter();
        // SAFETY: as in `read`, the value is alive while announced; taking a strong count makes
        // the returned `Arc` own its own reference before the announcement is withdrawn.
        #[allow(unsafe_code)]
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }

    /// Makes `next` the current value and returns the previous one, once no reader can still
    /// be reading it through this cell.
    ///
    /// # Panics
    ///
    /// When called inside [`SnapshotCell::read`] (or a `Debug` print) of this same cell on the
    /// same thread: the publication would wait for that read to end, which waits for the
    /// publication, forever. A reentrant publish is a bug in the caller, so it panics, as
    /// `RefCell::borrow_mut` does inside a borrow, rather than hang.
    ///
    /// ```should_panic
    /// use infra_common::sync::Arc;
    /// use infra_ring_hash::SnapshotCell;
    ///
    /// let cell = SnapshotCell::new(Arc::new(1));
    /// cell.read(|_| cell.publish(Arc::new(2)));
    /// ```
    #[allow(unsafe_code)]
    pub fn publish(&self, next: Arc<T>) -> Arc<T> {
        assert!(
            !self.read_by_this_thread(),
            "SnapshotCell::publish inside a read of the same cell on the same thread would \
             wait for itself forever"
        );
        let _writer = self.writer.lock();
        let old = self
            .current
            .value
            .swap(Arc::into_raw(next).cast_mut(), Ordering::AcqRel);
        fence(Ordering::SeqCst);
        for _ in 0..2 {
            let drained = self.current.parity.fetch_xor(1, Ordering::Relaxed) & 1;
            for stripe in self.owned.iter().chain(&self.overflow) {
                drain(&stripe.readers[drained]);
            }
        }
        // SAFETY: `old` came from `Arc::into_raw` and owned one strong count, which the swap
        // transferred to us; no reader can still be using it without its own count.
        unsafe { Arc::from_raw(old) }
    }
}

impl<T> SnapshotCell<T> {
    /// Whether this thread is inside a read of this cell: its owned stripe's counters, which
    /// only it writes, are exact for it; a thread on the overflow stripes keeps a record.
    pub(crate) fn read_by_this_thread(&self) -> bool {
        match self.owned.get(thread::ordinal()) {
            Some(stripe) => stripe
                .readers
                .iter()
                .any(|counter| counter.load(Ordering::Relaxed) != 0),
            None => Section::is_open(self),
        }
    }
}

impl<T> Drop for SnapshotCell<T> {
    fn drop(&mut self) {
        let ptr = self.current.value.load(Ordering::Acquire);
        // SAFETY: `&mut self` means no reader or writer is active; the pointer owns one count.
        #[allow(unsafe_code)]
        let current = unsafe { Arc::from_raw(ptr) };
        drop(current);
    }
}

impl<T: fmt::Debug> fmt::Debug for SnapshotCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.read(|value| f.debug_tuple("SnapshotCell").field(value).finish())
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use infra_common::sync::atomic::AtomicBool;

    #[test]
    fn publish_returns_the_previous_value_and_readers_see_the_new_one() {
        let cell = SnapshotCell::new(Arc::new(1));
        assert_eq!(cell.read(|v| *v), 1);
        let old = cell.publish(Arc::new(2));
        assert_eq!(*old, 1);
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the cell let go of the old value"
        );
        assert_eq!(*cell.load(), 2);
        assert_eq!(format!("{cell:?}"), "SnapshotCell(2)");
    }

    /// Which counters of `cell` are nonzero, as (stripe, parity) pairs; stripes numbered
    /// owned first, then overflow.
    fn announced<T>(cell: &SnapshotCell<T>) -> Vec<(usize, usize)> {
        let mut seen = Vec::new();
        for (stripe, counters) in cell.owned.iter().chain(&cell.overflow).enumerate() {
            for (parity, counter) in counters.readers.iter().enumerate() {
                if counter.load(Ordering::Relaxed) != 0 {
                    seen.push((stripe, parity));
                }
            }
        }
        seen
    }

    /// The stripe (numbered as in `announced`) a thread of `ordinal` reads on.
    fn stripe_of(ordinal: usize) -> usize {
        if ordinal < STRIPES {
            ordinal
        } else {
            STRIPES + ordinal % STRIPES
        }
    }

    #[test]
    fn a_reader_announces_itself_on_its_threads_stripe_only() {
        let cell = Arc::new(SnapshotCell::new(Arc::new(0)));
        let here = cell.read(|_| cell.read(|_| announced(&cell)));
        assert_eq!(
            here,
            [(stripe_of(thread::ordinal()), 0)],
            "nested reads count on one counter"
        );
        assert_eq!(
            cell.owned
                .iter()
                .chain(&cell.overflow)
                .map(|s| s.readers[0].load(Ordering::Relaxed))
                .sum::<usize>(),
            0
        );
        // A publication flips the parity twice, so readers after it use the same counters.
        drop(cell.publish(Arc::new(1)));
        // Threads past the first `STRIPES` use the overflow stripes: start enough of them that
        // both kinds are exercised whatever ordinals earlier tests took.
        for _ in 0..=STRIPES {
            let theirs = {
                let cell = Arc::clone(&cell);
                thread::spawn(move || (thread::ordinal(), cell.read(|_| announced(&cell))))
                    .join()
                    .unwrap()
            };
            assert_eq!(theirs.1, [(stripe_of(theirs.0), 0)]);
        }
        assert!(announced(&cell).is_empty(), "every reader withdrew");
    }

    /// A publish inside a read of the same cell waited for itself forever; now it panics and
    /// leaves the cell usable. In a full test run every thread here is past the owned
    /// stripes; `tests/snapshot_edges.rs` checks an owned one.
    #[test]
    fn a_publish_inside_its_own_read_panics_instead_of_hanging() {
        let cell = Arc::new(SnapshotCell::new(Arc::new(0)));
        // Enough threads that some own a stripe and some share an overflow one, whatever
        // ordinals earlier tests took.
        let kinds: Vec<bool> = (0..=STRIPES)
            .map(|_| {
                let cell = Arc::clone(&cell);
                thread::spawn(move || {
                    let owned = thread::ordinal() < STRIPES;
                    let inside = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        cell.read(|_| drop(cell.publish(Arc::new(1))));
                    }));
                    assert!(inside.is_err(), "owned stripe: {owned}");
                    // Outside any read, and inside a read of another cell, it publishes.
                    let other = SnapshotCell::new(Arc::new(0));
                    other.read(|_| drop(cell.publish(Arc::new(2))));
                    assert_eq!(cell.read(|v| *v), 2);
                    owned
                })
                .join()
                .unwrap()
            })
            .collect();
        assert!(kinds.contains(&false), "no thread used an overflow stripe");
        assert!(announced(&cell).is_empty(), "every reader withdrew");
    }

    #[test]
    fn loaded_values_outlive_publication_and_nothing_leaks() {
        let first = Arc::new(String::from("first"));
        let cell = SnapshotCell::new(Arc::clone(&first));
        let held = cell.load();
        drop(cell.publish(Arc::new(String::from("second"))));
        assert_eq!(*held, "first");
        assert_eq!(Arc::strong_count(&first), 2); // `first` and `held`
        drop(cell);
        drop(held);
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn readers_and_writers_run_concurrently() {
        // Every published value is a pair of equal numbers; a torn or freed value would show.
        let cell = Arc::new(SnapshotCell::new(Arc::new((0u64, 0u64))));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (cell, stop) = (Arc::clone(&cell), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut last = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (a, b) = cell.read(|pair| *pair);
                        assert_eq!(a, b);
                        assert!(a >= last, "values go forward");
                        last = a;
                    }
                })
            })
            .collect();
        // Miri interprets every instruction; a few publications are enough for it.
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        for i in 1..=rounds {
            drop(cell.publish(Arc::new((i, i))));
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(cell.read(|pair| *pair), (rounds, rounds));
    }
}
