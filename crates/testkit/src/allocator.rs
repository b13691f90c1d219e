//! A global allocator that counts, for tests that prove a path allocates nothing and for
//! benchmarks that measure the memory a structure holds.
//!
//! Install it in the test, bench or example binary that needs it:
//!
//! ```
//! use infra_testkit::allocator::{self, CountingAllocator};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAllocator = CountingAllocator;
//!
//! fn main() {
//!     let (count, v) = allocator::allocations_in(|| vec![1u8; 32]);
//!     assert_eq!(count, 1);
//!     let (held, v) = allocator::bytes_held_by(|| v.repeat(2));
//!     assert_eq!(held, 64);
//!     assert_eq!(v.len(), 64);
//!     // A 1000-byte buffer built and dropped inside the closure: held at the peak, not after.
//!     let (peak, ()) = allocator::peak_bytes_during(|| drop(vec![0u8; 1000]));
//!     assert_eq!(peak, 1000);
//! }
//! ```
//!
//! Three counts are kept, because the uses need different ones:
//! - **allocations made by the current thread** ([`allocations_in`]): a test harness runs other
//!   tests on other threads, and their allocations must not disturb a zero-allocation assertion;
//! - **bytes currently allocated by the whole process** ([`live_bytes`], [`bytes_held_by`]): a
//!   structure's memory is what stays allocated after building it, whichever thread built it;
//! - **the most bytes the current thread held at once** ([`peak_bytes_during`]): what a
//!   computation needs while it runs, even if it frees it all before returning.
//!
//! Without the allocator installed, every count stays at zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting allocations per thread and live bytes per process.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

thread_local! {
    // `const` initialisation: reading it never allocates, so it is safe inside the allocator.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread allocated minus those it freed, and the most that reached since
    /// [`peak_bytes_during`] last reset it.
    static THREAD_NET_BYTES: Cell<isize> = const { Cell::new(0) };
    static THREAD_PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

fn count_allocation() {
    // `try_with`: during thread teardown the counter may already be gone; the count is then lost
    // for a thread no test is measuring any more.
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn count_thread_bytes(change: isize) {
    let _ = THREAD_NET_BYTES.try_with(|net| {
        let now = net.get().saturating_add(change);
        net.set(now);
        let _ = THREAD_PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so the caller's contract is upheld; counting touches only a thread-local integer and an atomic,
// never the memory handed out, and allocates nothing itself.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        count_thread_bytes(signed(layout.size()));
        LIVE_BYTES.fetch_add(signed(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_thread_bytes(-signed(layout.size()));
        LIVE_BYTES.fetch_sub(signed(layout.size()), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout` (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        count_thread_bytes(signed(new_size) - signed(layout.size()));
        LIVE_BYTES.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations (and reallocations) the current thread has made since it started.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Runs `f` and returns how many allocations (and reallocations) it made on this thread, with
/// its result.
pub fn allocations_in<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = thread_allocations();
    let result = f();
    (thread_allocations() - before, result)
}

/// Bytes the whole process holds allocated right now.
pub fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Runs `build` and returns how many more bytes the process holds afterwards (what the value
/// `build` returned keeps allocated, if nothing else runs meanwhile), with the value.
pub fn bytes_held_by<T>(build: impl FnOnce() -> T) -> (isize, T) {
    let before = live_bytes();
    let value = build();
    (live_bytes() - before, value)
}

/// Runs `f` and returns the most bytes this thread held allocated at once during it, beyond
/// what it held when `f` started, with `f`'s result: the peak memory of a single-threaded
/// computation, undisturbed by other threads. (A realloc counts its new size only, though
/// the old block lives until the copy is done.)
pub fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (isize, T) {
    let start = THREAD_NET_BYTES.with(Cell::get);
    THREAD_PEAK_BYTES.with(|peak| peak.set(start));
    let result = f();
    (THREAD_PEAK_BYTES.with(Cell::get) - start, result)
}
