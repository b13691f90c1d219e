//! Cache-line prefetch hints: a structure too large for the caches asks for the lines it will
//! touch next, so the processor fetches them side by side instead of one miss after another.
//!
//! A hint never dereferences its argument and cannot fault: any address, dangling or out of
//! bounds, is fine, and a wrong one costs only a useless fetch. The hints are emitted on x86_64
//! (outside Miri) and are no-ops elsewhere.
//!
//! ```
//! use infra_common::prefetch;
//!
//! let rows = vec![[0u64; 8]; 1_000];
//! let wanted = [17, 503, 911];
//! // Ask for all three rows first, then read them: their misses overlap.
//! for &row in &wanted {
//!     prefetch::read(&rows[row]);
//! }
//! let sum: u64 = wanted.iter().map(|&row| rows[row][0]).sum();
//! assert_eq!(sum, 0);
//! ```

#[cfg(all(target_arch = "x86_64", not(miri)))]
use std::arch::x86_64::{_MM_HINT_ET0 as WRITE, _MM_HINT_T0 as READ};
// Where no hint is emitted, any values do.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
const WRITE: i32 = 0;
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
const READ: i32 = 0;

/// The size of a cache line on the processors the hints are emitted for.
const LINE: usize = 64;

/// Asks for the line holding `ptr`, to be read soon.
#[inline(always)]
pub fn read<T>(ptr: *const T) {
    hint::<READ, T>(ptr);
}

/// Asks for the line holding `ptr`, to be written soon.
#[inline(always)]
pub fn write<T>(ptr: *const T) {
    hint::<WRITE, T>(ptr);
}

/// Asks for every line of `items`, to be read soon.
#[inline]
pub fn read_all<T>(items: &[T]) {
    let start = items.as_ptr().cast::<u8>();
    let len = std::mem::size_of_val(items);
    // The first line may start before `start`: stepping from the line's own start reaches the
    // last line exactly.
    let skew = start.addr() % LINE;
    let mut at = 0;
    while at < len + skew {
        read(start.wrapping_add(at).wrapping_sub(skew));
        at += LINE;
    }
}

/// Asks for the line holding `ptr` with `_mm_prefetch` hint `HINT`.
#[inline(always)]
fn hint<const HINT: i32, T>(ptr: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 target has. The instruction it emits
    // (`prefetchw` for the write hint where the target has it, `prefetcht0` otherwise) only
    // warms the cache: it reads no memory the program can observe and never faults, whatever
    // the address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(ptr.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = ptr;
}
