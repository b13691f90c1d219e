//! infra-ring-hash: every engine beside the crate people use for it today, on identical keys.
//!
//! Each iteration looks up the same 1,024 keys; the group's throughput is in lookups.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hash::BuildHasherDefault;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use infra_common::hash::{StableHasher, stable_hash};
use infra_ring_hash::hashing::key_hash;
use infra_ring_hash::{
    BoundedLoad, Engine, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement, Rendezvous,
    Ring, flip_hash, jump_hash,
};
use maglev::ConsistentHasher;
use rendezvous_hash::Node;

const KEYS: usize = 1024;

fn string_keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i:08}")).collect()
}

fn int_keys() -> Vec<u64> {
    (0..KEYS as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect()
}

fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).expect("small node count");
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 11211))
}

/// Ring at 100 nodes × 160 points; string keys, each crate called the way its users call it
/// (`node(&str)` for ours), plus hashring with our hasher (XXH3) and our lookup on a
/// precomputed hash, for reference.
fn ring(c: &mut Criterion) {
    let keys = string_keys();
    let mut group = c.benchmark_group("ring_hash/ring/100");
    group.throughput(Throughput::Elements(KEYS as u64));

    let placement =
        Placement::from_members(Ring::new(), (0..100).map(|i| Member::new(addr(i)))).unwrap();
    group.bench_function("infra", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.node(key.as_str()));
            }
        });
    });
    group.bench_function("infra_prehashed", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.node_for_hash(stable_hash(key.as_bytes())));
            }
        });
    });

    // hashring has no virtual points: add the 160 points of each node as ring entries.
    let mut hashring = hashring::HashRing::new();
    hashring.batch_add(
        (0..100)
            .flat_map(|i| (0..160u32).map(move |point| (addr(i), point)))
            .collect(),
    );
    group.bench_function("hashring", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(hashring.get(&key.as_str()));
            }
        });
    });
    // The same ring with our hasher: XXH3-64 with our seed, through std's `Hash`.
    let mut hashring_xxh3 =
        hashring::HashRing::with_hasher(BuildHasherDefault::<StableHasher>::default());
    hashring_xxh3.batch_add(
        (0..100)
            .flat_map(|i| (0..160u32).map(move |point| (addr(i), point)))
            .collect(),
    );
    group.bench_function("hashring_xxh3", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(hashring_xxh3.get(&key.as_str()));
            }
        });
    });

    let buckets: Vec<pingora_ketama::Bucket> = (0..100)
        .map(|i| pingora_ketama::Bucket::new(addr(i), 1))
        .collect();
    let continuum = pingora_ketama::Continuum::new(&buckets);
    group.bench_function("pingora-ketama", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(continuum.node(key.as_bytes()));
            }
        });
    });
    group.finish();
}

/// Three distinct replicas of each key over the 100-node ring of `ring`: ours through
/// `get_n_into` with a reused `Vec` and through `node_iter().take(3)`, hashring's
/// `get_with_replicas` (the owner and the next two ring entries), pingora-ketama's `node_iter`
/// walked until it has given three distinct nodes.
fn get_n(c: &mut Criterion) {
    const REPLICAS: usize = 3;
    let keys = string_keys();
    let mut group = c.benchmark_group("ring_hash/get_n/100");
    group.throughput(Throughput::Elements(KEYS as u64));

    let placement =
        Placement::from_members(Ring::new(), (0..100).map(|i| Member::new(addr(i)))).unwrap();
    group.bench_function("infra_get_n_into", |b| {
        let mut replicas = Vec::with_capacity(REPLICAS);
        b.iter(|| {
            for key in &keys {
                placement.get_n_into(key.as_str(), REPLICAS, &mut replicas);
                black_box(&replicas);
            }
        });
    });
    group.bench_function("infra_node_iter", |b| {
        b.iter(|| {
            for key in &keys {
                for node in placement.node_iter(key.as_str()).take(REPLICAS) {
                    black_box(node);
                }
            }
        });
    });

    let buckets: Vec<pingora_ketama::Bucket> = (0..100)
        .map(|i| pingora_ketama::Bucket::new(addr(i), 1))
        .collect();
    let continuum = pingora_ketama::Continuum::new(&buckets);
    group.bench_function("pingora-ketama", |b| {
        let mut replicas: Vec<&SocketAddr> = Vec::with_capacity(REPLICAS);
        b.iter(|| {
            for key in &keys {
                replicas.clear();
                for node in continuum.node_iter(key.as_bytes()) {
                    if !replicas.contains(&node) {
                        replicas.push(node);
                        if replicas.len() == REPLICAS {
                            break;
                        }
                    }
                }
                black_box(&replicas);
            }
        });
    });
    // hashring's replicas are the next ring entries, not distinct nodes: with 160 entries per
    // node (as in `ring`), two of the three may be one node. It copies the whole ring (16,000
    // entries) on every call.
    let mut hashring = hashring::HashRing::new();
    hashring.batch_add(
        (0..100)
            .flat_map(|i| (0..160u32).map(move |point| (addr(i), point)))
            .collect(),
    );
    // At about 0.2 ms per call (180 ms per 1,024 keys when measured), 100 samples would take
    // minutes: this row (last) takes 10.
    group.sample_size(10);
    group.bench_function("hashring", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(hashring.get_with_replicas(&key.as_str(), REPLICAS - 1));
            }
        });
    });

    group.finish();
}

/// `Placement::node` over `buckets` numbered members: the engine as its users call it (the
/// bare function's work plus finding the member in the bucket's slot).
fn numbered_placement<E: Engine>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    engine: E,
    buckets: u32,
    keys: &[u64],
) {
    let placement =
        Placement::from_members(engine, (0..buckets).map(Member::new)).expect("numbered members");
    group.bench_function("infra_placement", |b| {
        b.iter(|| {
            for key in keys {
                black_box(placement.node(key));
            }
        });
    });
}

/// Jump and FlipHash on numbered buckets; u64 keys hashed by each crate its own way. `infra` is
/// the bare function, `infra_placement` the same engine through `Placement::node`.
fn numbered(c: &mut Criterion) {
    let keys = int_keys();
    let jumphash = jumphash::JumpHasher::new_with_keys(1, 2);
    // The same jump with our hasher: XXH3-64 with our seed, through std's `Hash`.
    let jumphash_xxh3 = jumphash::CustomJumpHasher::new(StableHasher::new());
    for buckets in [1_000u32, 1_000_000] {
        for (engine, function) in [
            ("jump", jump_hash as fn(u64, u32) -> u32),
            ("fliphash", |key, n| {
                u32::try_from(flip_hash(key, u64::from(n))).expect("below n")
            }),
        ] {
            let mut group = c.benchmark_group(format!("ring_hash/{engine}/{buckets}"));
            group.throughput(Throughput::Elements(KEYS as u64));
            group.bench_function("infra", |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(function(key_hash(key), black_box(buckets)));
                    }
                });
            });
            if engine == "jump" {
                numbered_placement(&mut group, Jump::new(), buckets, &keys);
            } else {
                numbered_placement(&mut group, Flip::new(), buckets, &keys);
            }
            group.bench_function("jumphash", |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(jumphash.slot(key, black_box(buckets)));
                    }
                });
            });
            group.bench_function("jumphash_xxh3", |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(jumphash_xxh3.slot(key, black_box(buckets)));
                    }
                });
            });
            group.finish();
        }
    }
}

/// Maglev at 1,000 nodes.
fn maglev(c: &mut Criterion) {
    let keys = int_keys();
    let mut group = c.benchmark_group("ring_hash/maglev/1000");
    group.throughput(Throughput::Elements(KEYS as u64));
    let placement = Placement::from_members(Maglev::new(), (0..1000u32).map(Member::new)).unwrap();
    group.bench_function("infra", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.node(key));
            }
        });
    });
    // The maglev crate materialises every node's whole permutation while building (nodes ×
    // table words), so it gets a 10,007-entry table here instead of 100 × nodes: 80 MB rather
    // than 800 MB of setup. Its lookup cost does not depend on the table size.
    let peer = maglev::Maglev::with_capacity(0..1000u32, 10_007);
    group.bench_function("maglev", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(peer.get(key));
            }
        });
    });
    // The same with our hasher: XXH3-64 with our seed, through std's `Hash`.
    let peer_xxh3 = maglev::Maglev::with_capacity_and_hasher(
        0..1000u32,
        10_007,
        BuildHasherDefault::<StableHasher>::default(),
    );
    group.bench_function("maglev_xxh3", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(peer_xxh3.get(key));
            }
        });
    });
    group.finish();
}

/// Building the default 655,373-entry Maglev table for 1,000 nodes: what every membership
/// change costs. No peer builds a table this size without materialising every permutation
/// (5 GB for the `maglev` crate), so this group measures ours alone, against the 50 ms goal;
/// `infra_sized_for_1000` is the 5,000,011-entry table `MaglevConfig::for_max_nodes(1000)`
/// picks to keep an add within 2× of the ideal, the price of that bound.
fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_hash/maglev_build/1000");
    group.sample_size(10);
    group.bench_function("infra", |b| {
        b.iter(|| {
            black_box(
                Placement::from_members(Maglev::new(), (0..1000u32).map(Member::new)).unwrap(),
            )
        });
    });
    let sized = MaglevConfig::for_max_nodes(1000).unwrap();
    group.bench_function("infra_sized_for_1000", |b| {
        b.iter(|| {
            let engine = Maglev::with_config(sized).unwrap();
            black_box(Placement::from_members(engine, (0..1000u32).map(Member::new)).unwrap())
        });
    });
    group.finish();
}

/// The removal-tolerant engine with half of its buckets removed.
fn removal_tolerant(c: &mut Criterion) {
    let keys = int_keys();
    for size in [100_000u32, 65_535] {
        let mut group = c.benchmark_group(format!("ring_hash/memento/{size}"));
        group.throughput(Throughput::Elements(KEYS as u64));
        let mut placement =
            Placement::from_members(Memento::new(), (0..size).map(Member::new)).unwrap();
        // Remove every other node, in a scattered order.
        for node in (0..size).filter(|n| n % 2 == 1) {
            placement.remove(&node).unwrap();
        }
        group.bench_function("infra", |b| {
            b.iter(|| {
                for key in &keys {
                    black_box(placement.node(key));
                }
            });
        });
        // anchorhash's capacity is a u16: it cannot hold 100,000 buckets, so it only runs at
        // its maximum, 65,535. Its removal is a linear search, so instead of removing half the
        // buckets one by one it starts with half the capacity working, which AnchorHash treats
        // exactly like removed buckets.
        if let Ok(capacity) = u16::try_from(size) {
            let anchor = half_working_anchor(
                capacity,
                BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(),
            );
            group.bench_function("anchorhash", |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(anchor.get_resource(*key));
                    }
                });
            });
            // The same with our hasher: XXH3-64 with our seed, through std's `Hash`.
            let anchor_xxh3 =
                half_working_anchor(capacity, BuildHasherDefault::<StableHasher>::default());
            group.bench_function("anchorhash_xxh3", |b| {
                b.iter(|| {
                    for key in &keys {
                        black_box(anchor_xxh3.get_resource(*key));
                    }
                });
            });
        }
        group.finish();
    }
}

/// An AnchorHash of `capacity` buckets with the lower half working, hashing keys with `hasher`.
fn half_working_anchor<B: std::hash::BuildHasher>(
    capacity: u16,
    hasher: B,
) -> anchorhash::AnchorHash<u64, u32, B> {
    anchorhash::Builder::with_hasher(hasher)
        .with_resources(0..u32::from(capacity).div_ceil(2))
        .build::<u64>(capacity)
}

/// `rendezvous_hash`'s scores through XXH3: the key, then the node, into one hasher.
struct Xxh3NodeHasher;

impl<N: std::hash::Hash> rendezvous_hash::NodeHasher<N> for Xxh3NodeHasher {
    fn hash<T: std::hash::Hash>(&self, node: &N, item: &T) -> u64 {
        use std::hash::Hasher;
        let mut hasher = StableHasher::new();
        item.hash(&mut hasher);
        node.hash(&mut hasher);
        hasher.finish()
    }
}

/// Rendezvous at 10 nodes, the same work on both sides: the owner alone (`infra`,
/// `rendezvous_hash_top1`), and the whole preference order of the 10 nodes (`infra_full_order`,
/// `rendezvous_hash_full_order`).
fn rendezvous(c: &mut Criterion) {
    let keys = int_keys();
    let names: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
    let mut group = c.benchmark_group("ring_hash/rendezvous/10");
    group.throughput(Throughput::Elements(KEYS as u64));
    let placement =
        Placement::from_members(Rendezvous::new(), names.iter().cloned().map(Member::new)).unwrap();
    group.bench_function("infra", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.node(key));
            }
        });
    });
    let mut peer = rendezvous_hash::RendezvousNodes::default();
    for name in &names {
        peer.insert(name.as_str());
    }
    // `rendezvous_hash` has no owner-only call (`calc_candidates` scores and sorts every node):
    // a user who wants only the owner scores each node with the crate's public
    // `Node::hash_code` and keeps the highest, ties going to the larger node id as in its sort
    // (a `(score, id)` maximum).
    let hasher = rendezvous_hash::DefaultNodeHasher::new();
    group.bench_function("rendezvous_hash_top1", |b| {
        b.iter(|| {
            for key in &keys {
                let scored = peer
                    .iter()
                    .map(|&node| (node.hash_code(&hasher, key), node));
                black_box(scored.max().map(|(_, node)| node));
            }
        });
    });
    // The same rows with the peer scoring through XXH3 (our key hash), as its `NodeHasher`
    // allows: the key and then the node written into one `StableHasher`.
    let mut peer_xxh3 = rendezvous_hash::RendezvousNodes::new(Xxh3NodeHasher);
    for name in &names {
        peer_xxh3.insert(name.as_str());
    }
    group.bench_function("rendezvous_hash_xxh3_top1", |b| {
        b.iter(|| {
            for key in &keys {
                let scored = peer_xxh3
                    .iter()
                    .map(|&node| (node.hash_code(&Xxh3NodeHasher, key), node));
                black_box(scored.max().map(|(_, node)| node));
            }
        });
    });
    group.bench_function("infra_full_order", |b| {
        let mut order = Vec::with_capacity(names.len());
        b.iter(|| {
            for key in &keys {
                placement.get_n_into(key, names.len(), &mut order);
                black_box(&order);
            }
        });
    });
    // The same order as a fresh vector per key, as `calc_candidates` returns one.
    group.bench_function("infra_full_order_get_n", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.get_n(key, names.len()));
            }
        });
    });
    group.bench_function("rendezvous_hash_full_order", |b| {
        b.iter(|| {
            for key in &keys {
                for node in peer.calc_candidates(key) {
                    black_box(node);
                }
            }
        });
    });
    group.bench_function("rendezvous_hash_xxh3_full_order", |b| {
        b.iter(|| {
            for key in &keys {
                for node in peer_xxh3.calc_candidates(key) {
                    black_box(node);
                }
            }
        });
    });
    group.finish();
}

/// Bounded load (c = 1.25) over the ring: a bounded lookup (`peek`) and a lease taken and
/// released, against the plain ring lookup.
fn bounded(c: &mut Criterion) {
    let keys = string_keys();
    let mut group = c.benchmark_group("ring_hash/bounded/100");
    group.throughput(Throughput::Elements(KEYS as u64));
    let placement =
        Placement::from_members(Ring::new(), (0..100).map(|i| Member::new(addr(i)))).unwrap();
    group.bench_function("infra_ring_lookup", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(placement.node(key.as_str()));
            }
        });
    });
    let bounded = BoundedLoad::new(placement, 1.25).unwrap();
    // Hold 10,000 leases so the bound is active, then time lookups and take + release on top.
    let held: Vec<_> = (0..10_000u64).map(|k| bounded.take(&k).unwrap()).collect();
    group.bench_function("infra", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(bounded.peek(key.as_str()));
            }
        });
    });
    // The same ring shared between threads (the layer's own `SharedPlacement`): the plain
    // lookup plus the read section and the clone of the owner that every lookup of a shared,
    // changing membership pays, and that the bounded lookup pays too.
    group.bench_function("infra_shared_lookup", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(bounded.shared().node(key.as_str()));
            }
        });
    });
    group.bench_function("infra_take_release", |b| {
        b.iter(|| {
            for key in &keys {
                let lease = bounded.take(key.as_str()).unwrap();
                black_box(lease.node());
            }
        });
    });
    drop(held);
    group.finish();
}

criterion_group!(
    benches,
    ring,
    get_n,
    numbered,
    maglev,
    maglev_build,
    removal_tolerant,
    rendezvous,
    bounded
);
criterion_main!(benches);
