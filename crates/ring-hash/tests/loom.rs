//! Model checks: snapshot publication while readers look up (on an owned or the overflow
//! reader stripe), and the bounded-load counters (including leases released and taken while their
//! node leaves).
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-ring-hash --test loom`
#![cfg(infra_loom)]

use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, model, thread};
use infra_ring_hash::{BoundedLoad, Jump, Member, Placement, SharedPlacement, SnapshotCell};

/// A published value that records when it is dropped, so a reader can tell whether it is
/// looking at freed memory's last contents.
struct Tracked {
    id: u32,
    dropped: Arc<[AtomicBool; 3]>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped[self.id as usize].store(true, Ordering::Release);
    }
}

fn flags() -> Arc<[AtomicBool; 3]> {
    Arc::new([
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    ])
}

#[test]
fn readers_never_see_a_released_snapshot() {
    model(|| {
        let dropped = flags();
        let cell = Arc::new(SnapshotCell::new(Arc::new(Tracked {
            id: 0,
            dropped: Arc::clone(&dropped),
        })));
        let reader = {
            let (cell, dropped) = (Arc::clone(&cell), Arc::clone(&dropped));
            thread::spawn(move || {
                let seen = cell.read(|value| {
                    assert!(!dropped[value.id as usize].load(Ordering::Acquire));
                    value.id
                });
                let held = cell.load();
                // Versions only go forward.
                assert!(held.id >= seen);
                assert!(!dropped[held.id as usize].load(Ordering::Acquire));
                held.id
            })
        };
        let old = cell.publish(Arc::new(Tracked {
            id: 1,
            dropped: Arc::clone(&dropped),
        }));
        assert_eq!(old.id, 0);
        drop(old);
        let seen = reader.join().unwrap();
        assert!(seen <= 1);
        // Once the reader let go, the first snapshot is gone and the second is current.
        assert!(dropped[0].load(Ordering::Acquire));
        assert!(!dropped[1].load(Ordering::Acquire));
        assert_eq!(cell.read(|value| value.id), 1);
    });
}

#[test]
fn a_reader_on_another_stripe_is_waited_for() {
    model(|| {
        let dropped = flags();
        let cell = Arc::new(SnapshotCell::new(Arc::new(Tracked {
            id: 0,
            dropped: Arc::clone(&dropped),
        })));
        // This thread reads first, so it owns the model's one owned stripe and the reader below
        // counts on the overflow stripe: the writer (this thread) must wait for a reader on a
        // stripe not its own, counted with atomic increments rather than its owner's stores.
        assert_eq!(cell.read(|value| value.id), 0);
        let reader = {
            let (cell, dropped) = (Arc::clone(&cell), Arc::clone(&dropped));
            thread::spawn(move || {
                cell.read(|value| {
                    assert!(!dropped[value.id as usize].load(Ordering::Acquire));
                    value.id
                })
            })
        };
        drop(cell.publish(Arc::new(Tracked {
            id: 1,
            dropped: Arc::clone(&dropped),
        })));
        assert!(dropped[0].load(Ordering::Acquire));
        assert!(reader.join().unwrap() <= 1);
    });
}

#[test]
fn two_writers_and_a_reader() {
    model(|| {
        let dropped = flags();
        let cell = Arc::new(SnapshotCell::new(Arc::new(Tracked {
            id: 0,
            dropped: Arc::clone(&dropped),
        })));
        let writer = {
            let (cell, dropped) = (Arc::clone(&cell), Arc::clone(&dropped));
            thread::spawn(move || {
                drop(cell.publish(Arc::new(Tracked { id: 1, dropped })));
            })
        };
        let reader = {
            let (cell, dropped) = (Arc::clone(&cell), Arc::clone(&dropped));
            thread::spawn(move || {
                cell.read(|value| assert!(!dropped[value.id as usize].load(Ordering::Acquire)));
            })
        };
        drop(cell.publish(Arc::new(Tracked {
            id: 2,
            dropped: Arc::clone(&dropped),
        })));
        writer.join().unwrap();
        reader.join().unwrap();
        let last = cell.read(|value| value.id);
        // Exactly the two replaced snapshots were released.
        let released = (0..3)
            .filter(|&i| dropped[i].load(Ordering::Acquire))
            .count();
        assert_eq!(released, 2);
        assert!(!dropped[last as usize].load(Ordering::Acquire));
    });
}

#[test]
fn lookups_see_the_old_or_the_new_membership() {
    model(|| {
        let placement = Placement::from_members(Jump::new(), [Member::new(1u32)]).unwrap();
        let shared = Arc::new(SharedPlacement::from_placement(placement));
        let reader = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let owners = shared.get_n(&7u64, 2);
                // A lookup sees one whole snapshot: one member before, two after.
                assert!(owners == [1] || owners.len() == 2);
                shared.node(&7u64).unwrap()
            })
        };
        shared.add(2, 1).unwrap();
        let owner = reader.join().unwrap();
        assert!(owner == 1 || owner == 2);
        assert_eq!(shared.snapshot().len(), 2);
    });
}

#[test]
fn bounded_load_counters_never_exceed_capacity() {
    model(|| {
        let placement =
            Placement::from_members(Jump::new(), [Member::new(1u32), Member::new(2)]).unwrap();
        let bounded = Arc::new(BoundedLoad::new(placement, 1.0).unwrap());
        let worker = {
            let bounded = Arc::clone(&bounded);
            thread::spawn(move || {
                let lease = bounded.take(&10u64).unwrap();
                // c = 1, at most two leases, two nodes: capacity ⌈m / 2⌉ = 1 per node.
                assert_eq!(bounded.load(lease.node()), 1);
                *lease.node()
            })
        };
        let lease = bounded.take(&10u64).unwrap();
        assert_eq!(bounded.load(lease.node()), 1);
        let mine = *lease.node();
        let theirs = worker.join().unwrap();
        // Both leases were live at once only if they went to different nodes; either way the
        // worker's lease is released by now.
        assert_eq!(bounded.total(), 1);
        assert_eq!(bounded.load(&mine), 1);
        assert!(theirs == 1 || theirs == 2);
        drop(lease);
        assert_eq!(bounded.total(), 0);
        assert_eq!(bounded.load(&1) + bounded.load(&2), 0);
    });
}

#[test]
fn a_lease_released_while_its_node_leaves_counts_once() {
    model(|| {
        let placement =
            Placement::from_members(Jump::new(), [Member::new(1u32), Member::new(2)]).unwrap();
        let bounded = Arc::new(BoundedLoad::new(placement, 2.0).unwrap());
        let lease = bounded.take(&10u64).unwrap();
        let node = *lease.node();
        let kept = bounded.take(&11u64).unwrap();
        // The lease is owned: it moves into the thread and is released there, while this
        // thread removes its node.
        let releaser = thread::spawn(move || drop(lease));
        bounded.remove(&node).unwrap();
        releaser.join().unwrap();
        // Whichever came first, the released lease left the total exactly once.
        let survivor = 3 - node;
        let expected = u64::from(*kept.node() == survivor);
        assert_eq!(bounded.total(), expected);
        assert_eq!(bounded.load(&survivor), expected);
        drop(kept);
        assert_eq!(bounded.total(), 0);
    });
}

#[test]
fn a_take_racing_a_removal_lands_on_a_member_or_stops_counting() {
    model(|| {
        let placement =
            Placement::from_members(Jump::new(), [Member::new(1u32), Member::new(2)]).unwrap();
        let bounded = Arc::new(BoundedLoad::new(placement, 1.0).unwrap());
        let taker = {
            let bounded = Arc::clone(&bounded);
            thread::spawn(move || bounded.take(&10u64).unwrap())
        };
        bounded.remove(&2).unwrap();
        let lease = taker.join().unwrap();
        // A lease on the removed node no longer counts; one on the member does.
        let expected = u64::from(*lease.node() == 1);
        assert_eq!(bounded.total(), expected);
        assert_eq!(bounded.load(&1), expected);
        drop(lease);
        assert_eq!(bounded.total(), 0);
        assert_eq!(bounded.load(&1), 0);
    });
}
