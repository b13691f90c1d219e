//! Heap memory of every infra-ring-hash engine and of each peer crate at 1,000 nodes, measured
//! with a counting global allocator and printed as a Markdown table.
//!
//! ```text
//! cargo run --release -p examples --example ring_hash_memory
//! ```
//!
//! Every structure holds the same 1,000 `SocketAddr` nodes (`10.0.x.y:11211`), each at its
//! default settings unless the table says otherwise. A figure is the heap the structure still
//! holds once built (what it costs to keep), not what building it used on the way.

use std::net::SocketAddr;

use infra_ring_hash::{Engine, Flip, Jump, Maglev, Member, Memento, Placement, Rendezvous, Ring};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const NODES: usize = 1000;

fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).expect("small node count");
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 11211))
}

fn addrs() -> impl Iterator<Item = SocketAddr> {
    (0..NODES).map(addr)
}

/// Heap bytes held by what `build` returns.
fn held<T>(build: impl FnOnce() -> T) -> isize {
    let (bytes, built) = allocator::bytes_held_by(build);
    drop(built);
    bytes
}

/// Heap bytes held by a placement of the 1,000 nodes on `engine`.
fn placement<E: Engine>(engine: E) -> isize {
    held(|| Placement::from_members(engine, addrs().map(Member::new)).expect("1,000 nodes fit"))
}

fn main() {
    let rows: Vec<(&str, &str, isize)> = vec![
        (
            "infra `Ring`",
            "160 points per node (default), 160,000 points",
            placement(Ring::new()),
        ),
        (
            "`hashring` 0.3.6",
            "160 entries per node as in the benchmark, 160,000 entries",
            held(|| {
                let mut ring = hashring::HashRing::new();
                ring.batch_add(
                    addrs()
                        .flat_map(|node| (0..160u32).map(move |point| (node, point)))
                        .collect(),
                );
                ring
            }),
        ),
        (
            "`pingora-ketama` 0.9.1",
            "weight 1: 160 points per node (its default)",
            held(|| {
                let buckets: Vec<pingora_ketama::Bucket> = addrs()
                    .map(|node| pingora_ketama::Bucket::new(node, 1))
                    .collect();
                pingora_ketama::Continuum::new(&buckets)
            }),
        ),
        (
            "infra `Maglev`",
            "default table, 655,373 entries",
            placement(Maglev::new()),
        ),
        (
            "`maglev` 0.2.1",
            "its default table: 100 entries per node, 100,003 entries",
            held(|| maglev::Maglev::new(addrs())),
        ),
        ("infra `Jump`", "", placement(Jump::new())),
        ("infra `Flip`", "", placement(Flip::new())),
        (
            "`jumphash` 0.1.9",
            "a hasher only: the caller keeps the node list",
            held(|| jumphash::JumpHasher::new_with_keys(1, 2)),
        ),
        (
            "infra `Memento`",
            "no bucket removed",
            placement(Memento::new()),
        ),
        (
            "`anchorhash` 0.2.2",
            "capacity 1,000, all working",
            held(|| {
                anchorhash::Builder::default()
                    .with_resources(addrs())
                    .build::<u64>(u16::try_from(NODES).expect("fits a u16"))
            }),
        ),
        ("infra `Rendezvous`", "", placement(Rendezvous::new())),
        (
            "`rendezvous_hash` 0.3.0",
            "",
            held(|| {
                let mut nodes = rendezvous_hash::RendezvousNodes::default();
                for node in addrs() {
                    nodes.insert(rendezvous_hash::IdNode::new(node));
                }
                nodes
            }),
        ),
    ];
    println!("| structure | settings | heap bytes | bytes per node |");
    println!("| --- | --- | --- | --- |");
    for (name, settings, bytes) in rows {
        println!(
            "| {name} | {settings} | {bytes} | {:.1} |",
            bytes as f64 / NODES as f64
        );
    }
}
