//! infra-ring-hash's `SharedPlacement` against `arc-swap` holding the same `Placement`, on one
//! and on two threads.
//!
//! Each iteration looks up the same 1,024 string keys (those of `ring_hash.rs`) on a 100-node
//! ring and clones the owner, through three paths: `SharedPlacement::node` (a read section on
//! the shared cell per lookup), `ArcSwap::load` then `Placement::node` (arc-swap's guard per
//! lookup), and an `Arc` taken with `SharedPlacement::snapshot` once per 1,024 lookups (no
//! shared write in between: the floor both others are measured against).

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
// `arc-swap` hands out `std` `Arc`s, and the two-thread driver uses std's scoped threads and
// barrier outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::SocketAddr;

use arc_swap::ArcSwap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infra_ring_hash::{Member, Placement, Ring, SharedPlacement};

mod support;
use support::threads::two_threads;

const KEYS: usize = 1024;

type RingPlacement = Placement<SocketAddr, Ring>;

/// The keys of `ring_hash.rs`'s ring group.
fn string_keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i:08}")).collect()
}

/// The 100 nodes of `ring_hash.rs`'s ring group, 160 points each (the default).
fn placement() -> RingPlacement {
    let nodes = (0..100u32).map(|i| {
        let [_, a, b, c] = i.to_be_bytes();
        Member::new(SocketAddr::from(([10, a, b, c], 11211)))
    });
    Placement::from_members(Ring::new(), nodes).expect("100 distinct nodes")
}

/// The three ways to look up a key in a placement that another thread may replace.
struct Contenders {
    shared: SharedPlacement<SocketAddr, Ring>,
    swap: ArcSwap<RingPlacement>,
    keys: Vec<String>,
}

impl Contenders {
    fn new() -> Self {
        Self {
            shared: SharedPlacement::from_placement(placement()),
            swap: ArcSwap::from_pointee(placement()),
            keys: string_keys(),
        }
    }

    fn shared_node(&self) {
        for key in &self.keys {
            black_box(self.shared.node(key.as_str()));
        }
    }

    fn arc_swap_node(&self) {
        for key in &self.keys {
            black_box(self.swap.load().node(key.as_str()).cloned());
        }
    }

    /// One snapshot for the 1,024 lookups, as a thread that refreshes its copy that often.
    fn snapshot_node(&self) {
        let snapshot = self.shared.snapshot();
        for key in &self.keys {
            black_box(snapshot.node(key.as_str()).cloned());
        }
    }
}

fn one_thread(c: &mut Criterion) {
    let contenders = Contenders::new();
    let mut group = c.benchmark_group("ring_hash/shared/1thread");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("infra_shared_node", |b| {
        b.iter(|| contenders.shared_node());
    });
    group.bench_function("arc_swap_load_node", |b| {
        b.iter(|| contenders.arc_swap_node());
    });
    group.bench_function("infra_snapshot_node", |b| {
        b.iter(|| contenders.snapshot_node());
    });
    group.finish();
}

fn two_threads_group(c: &mut Criterion) {
    let contenders = Contenders::new();
    let mut group = c.benchmark_group("ring_hash/shared/2threads");
    // Both threads do the 1,024 lookups of an iteration.
    group.throughput(Throughput::Elements(2 * KEYS as u64));
    group.bench_function("infra_shared_node", |b| {
        b.iter_custom(|iters| two_threads(iters, &|_, _| contenders.shared_node()));
    });
    group.bench_function("arc_swap_load_node", |b| {
        b.iter_custom(|iters| two_threads(iters, &|_, _| contenders.arc_swap_node()));
    });
    group.bench_function("infra_snapshot_node", |b| {
        b.iter_custom(|iters| two_threads(iters, &|_, _| contenders.snapshot_node()));
    });
    group.finish();
}

criterion_group!(benches, one_thread, two_threads_group);
criterion_main!(benches);
