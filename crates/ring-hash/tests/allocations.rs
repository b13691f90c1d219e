//! `Placement::get_n_into` allocates nothing once its vector has room, on every engine.
//!
//! A counting global allocator tallies allocations made by the current thread only, so the
//! test harness's own threads do not disturb the count.
#![cfg(not(infra_loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use infra_common::sync::thread::thread_local;
use infra_ring_hash::{Engine, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement};
use infra_ring_hash::{Rendezvous, Ring};

struct Counting;

thread_local! {
    // `const` initialisation: reading it never allocates, so it is safe inside the allocator.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to the system allocator with the caller's arguments, which
// upholds GlobalAlloc's contract; counting touches only a thread-local integer.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same layout as given to us, per GlobalAlloc::alloc's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (we allocate nothing else).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Asks 500 keys for 3 replicas through `get_n_into`, counting allocations, and checks the
/// answers against `get_n`.
fn check<E: Engine>(engine: E) {
    let mut placement = Placement::from_members(engine, (0..12u32).map(Member::new)).unwrap();
    placement.remove(&4).unwrap();
    let name = placement.engine().name();
    let mut out = Vec::with_capacity(3);
    let mut answers = Vec::new();
    let count = allocations_in(|| {
        for key in 0..500u32 {
            placement.get_n_into(&key, 3, &mut out);
            answers.push([*out[0], *out[1], *out[2]]);
        }
    });
    // `answers` grew (its own reallocations are counted); nothing else may allocate.
    let answers_growth = allocations_in(|| {
        let mut probe: Vec<[u32; 3]> = Vec::new();
        for _ in 0..500 {
            probe.push([0; 3]);
        }
    });
    assert_eq!(count, answers_growth, "{name}: get_n_into allocated");
    for (key, answer) in (0..500u32).zip(&answers) {
        let expected: Vec<u32> = placement.get_n(&key, 3).into_iter().copied().collect();
        assert_eq!(&expected[..], answer, "{name}: key {key}");
    }
}

#[test]
fn the_counter_sees_allocations() {
    assert_eq!(allocations_in(|| drop(vec![1u8; 32])), 1);
}

#[test]
fn get_n_into_allocates_nothing() {
    check(Ring::new());
    check(Rendezvous::new());
    check(Jump::new());
    check(Flip::new());
    check(Memento::new());
    check(
        Maglev::with_config(MaglevConfig {
            entries_per_node: 10,
            table_size: Some(1009),
        })
        .unwrap(),
    );
}
