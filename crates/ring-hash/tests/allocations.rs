//! `Placement::get_n_into` allocates nothing once its vector has room, on every engine.
//!
//! A counting global allocator tallies allocations made by the current thread only, so the
//! test harness's own threads do not disturb the count.
#![cfg(not(infra_loom))]

use infra_ring_hash::{Engine, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement};
use infra_ring_hash::{Rendezvous, Ring};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    allocator::allocations_in(f).0
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

/// Walks `node_iter` for 3 replicas of 500 keys, counting allocations, and checks the walk
/// against `get_n`, including one walk past the inline list (all 12 nodes).
fn check_node_iter<E: Engine>(engine: E) {
    let mut placement = Placement::from_members(engine, (0..13u32).map(Member::new)).unwrap();
    placement.remove(&4).unwrap();
    let name = placement.engine().name();
    let mut answers = Vec::with_capacity(500);
    let count = allocations_in(|| {
        for key in 0..500u32 {
            let mut walk = placement.node_iter(&key);
            let (a, b, c) = (walk.next(), walk.next(), walk.next());
            answers.push([*a.unwrap(), *b.unwrap(), *c.unwrap()]);
        }
    });
    assert_eq!(count, 0, "{name}: node_iter().take(3) allocated");
    for (key, answer) in (0..500u32).zip(&answers) {
        let expected: Vec<u32> = placement.get_n(&key, 3).into_iter().copied().collect();
        assert_eq!(&expected[..], answer, "{name}: key {key}");
        let all: Vec<u32> = placement.node_iter(&key).copied().collect();
        let expected: Vec<u32> = placement.get_n(&key, 12).into_iter().copied().collect();
        assert_eq!(all, expected, "{name}: key {key}, every node");
    }
}

#[test]
fn node_iter_allocates_nothing_for_a_few_replicas() {
    check_node_iter(Ring::new());
    check_node_iter(Rendezvous::new());
    check_node_iter(small_maglev());
    check_node_iter(Jump::new());
    check_node_iter(Flip::new());
    check_node_iter(Memento::new());
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
    check(small_maglev());
}

/// `get_n` for a long list (every one of 30 nodes) allocates its answer and nothing else: the
/// set of slots already taken lives on the stack up to 4,096 slots (it was a heap flag per
/// slot for lists past 16).
fn check_long_get_n<E: Engine>(engine: E) {
    let mut placement = Placement::from_members(engine, (0..31u32).map(Member::new)).unwrap();
    placement.remove(&4).unwrap();
    let name = placement.engine().name();
    for key in 0..50u32 {
        let mut replicas = Vec::new();
        let count = allocations_in(|| replicas = placement.get_n(&key, 30));
        assert_eq!(count, 1, "{name}: key {key}");
        let mut distinct: Vec<u32> = replicas.iter().map(|node| **node).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 30, "{name}: key {key}");
        let walk: Vec<&u32> = placement.node_iter(&key).collect();
        assert_eq!(replicas, walk, "{name}: key {key}");
    }
}

/// Past 32 nodes, a rendezvous list longer than 16 sorts the rest of the candidates in one
/// vector: two allocations, the answer's and that one (it reallocated as it grew: 5 at 33
/// nodes, 7 at 100).
#[test]
fn a_long_rendezvous_list_over_many_nodes_allocates_twice() {
    for members in [33u32, 100] {
        let placement =
            Placement::from_members(Rendezvous::new(), (0..members).map(Member::new)).unwrap();
        for key in 0..20u32 {
            let mut replicas = Vec::new();
            let count = allocations_in(|| replicas = placement.get_n(&key, 30));
            assert_eq!(count, 2, "{members} members, key {key}");
            let walk: Vec<&u32> = placement.node_iter(&key).take(30).collect();
            assert_eq!(replicas, walk);
        }
    }
}

/// Up to 32 rendezvous nodes, a whole `node_iter` walk allocates nothing: the engine scores and
/// sorts on the stack and never repeats a node, so the walk keeps no record of what it gave
/// (it allocated a flag per slot past its eighth node).
#[test]
fn a_whole_rendezvous_walk_of_up_to_32_nodes_allocates_nothing() {
    let placement =
        Placement::from_members(Rendezvous::new(), (0..32u32).map(Member::new)).unwrap();
    for key in 0..20u32 {
        let mut walked = 0;
        let count = allocations_in(|| walked = placement.node_iter(&key).count());
        assert_eq!((count, walked), (0, 32), "key {key}");
    }
}

#[test]
fn a_long_get_n_allocates_only_its_answer() {
    check_long_get_n(Ring::new());
    check_long_get_n(Rendezvous::new());
    check_long_get_n(Jump::new());
    check_long_get_n(Flip::new());
    check_long_get_n(Memento::new());
    check_long_get_n(small_maglev());
}

/// A Maglev engine with a 1,009-entry table, quick to build in a debug test.
fn small_maglev() -> Maglev {
    Maglev::with_config(MaglevConfig {
        entries_per_node: 10,
        table_size: Some(1009),
    })
    .unwrap()
}

/// A ring keeps 16 bytes per point and 4 per index entry, plus the placement's bookkeeping per
/// node: 1,000 nodes at the default 160 points hold 160,000 points and a 2^18-entry index.
#[test]
fn a_ring_holds_sixteen_bytes_per_point() {
    // The counter is process-wide: the smallest of three builds leaves out what the other
    // tests of this file allocate meanwhile.
    let (held, placement) = (0..3)
        .map(|_| {
            allocator::bytes_held_by(|| {
                Placement::from_members(Ring::new(), (0..1000u32).map(Member::new)).unwrap()
            })
        })
        .min_by_key(|(held, _)| *held)
        .unwrap();
    assert_eq!(placement.len(), 1000);
    let points = 16 * 160_000;
    let index = 4 * (1 << 18);
    // Node values, slots and the node-to-slot map: about 130 bytes per node when measured.
    let bookkeeping = 300 * 1000;
    assert!(
        held <= points + index + bookkeeping,
        "{held} bytes held, more than {}",
        points + index + bookkeeping
    );
}
