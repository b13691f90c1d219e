//! `SnapshotCell` at its edges, in a test binary of its own so that its one test thread is among
//! the first threads of the process and owns a reader stripe: a publish inside a read on that
//! stripe, and reads from thread-local destructors on every kind of stripe.
#![cfg(not(infra_loom))]

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_common::sync::thread::{self, thread_local};
use infra_ring_hash::SnapshotCell;

/// Threads that own a stripe: the cell's documented count.
const OWNED_STRIPES: usize = 16;

/// Reads `cell` when dropped, as a thread-local's destructor does at thread exit.
struct ReadsOnDrop {
    cell: Arc<SnapshotCell<u32>>,
    reads: Arc<AtomicUsize>,
}

impl Drop for ReadsOnDrop {
    fn drop(&mut self) {
        let value = self.cell.read(|value| *value);
        assert_eq!(value, 7);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    static HOLDER: RefCell<Option<ReadsOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn a_cell_at_its_edges() {
    // 1. This thread owns a stripe, whose own counters tell the cell that a publish comes from
    //    inside its read: it panics instead of waiting for itself.
    assert!(
        thread::ordinal() < OWNED_STRIPES,
        "the test thread should own a stripe"
    );
    let cell = Arc::new(SnapshotCell::new(Arc::new(7)));
    let inside = catch_unwind(AssertUnwindSafe(|| {
        cell.read(|_| drop(cell.publish(Arc::new(8))));
    }));
    assert!(inside.is_err(), "a publish inside its own read must panic");
    assert_eq!(cell.read(|value| *value), 7, "nothing was published");

    // 2. Reads from a thread-local destructor, after the thread's other thread-locals may be
    //    gone, on owned and overflow stripes alike. The holder is set before the thread's first
    //    read, so its destructor runs after the ones that read registered (an overflow reader
    //    used to abort the process here: its record of open reads was already destroyed).
    let reads = Arc::new(AtomicUsize::new(0));
    let threads = OWNED_STRIPES + 4;
    for _ in 0..threads {
        let (cell, reads) = (Arc::clone(&cell), Arc::clone(&reads));
        thread::spawn(move || {
            let holder = ReadsOnDrop {
                cell: Arc::clone(&cell),
                reads,
            };
            HOLDER.with(|slot| *slot.borrow_mut() = Some(holder));
            assert_eq!(cell.read(|value| *value), 7);
            thread::ordinal()
        })
        .join()
        .unwrap();
    }
    assert_eq!(reads.load(Ordering::Relaxed), threads);
}
