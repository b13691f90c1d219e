//! Cache-line prefetch hints, so a query asks for the lines it will read next all at once and
//! the processor waits for them side by side rather than one after another.
//!
//! A hint never dereferences its argument and cannot fault: any address, even a dangling or
//! out-of-bounds one, is fine, and a wrong one costs only a useless fetch. A no-op where no
//! stable intrinsic exists, and under Miri.

/// The size of a cache line on the processors the hints are emitted for.
const LINE: usize = 64;

/// Asks for the line holding `ptr`, to be read soon.
#[inline(always)]
pub(crate) fn read<T>(ptr: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 target has. The `prefetcht0` it
    // emits only warms the cache: it reads no memory the program can observe and never
    // faults, whatever the address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = ptr;
}

/// Asks for every line of `items`, to be read soon.
#[inline]
pub(crate) fn read_all<T>(items: &[T]) {
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
