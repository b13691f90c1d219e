//! infra-geomatch's driver index against an R*-tree (rstar) and a k-d tree (kiddo), on one
//! million drivers spread uniformly over a 50 km × 50 km city.
//!
//! - `geomatch/update`: one driver reports a position up to about 30 m from its last one (a
//!   GPS ping), round-robin over every driver. rstar removes the old point and inserts the new.
//! - `geomatch/knn`: the 10 nearest drivers to a random point in the city. rstar walks
//!   `nearest_neighbor_iter` for 10 items; kiddo answers `nearest_n(10)` from an immutable tree
//!   (it is the peer for queries only).
//! - `geomatch/knn_stream`: the same query, each point new, from a stream of 2^20 points:
//!   spread uniformly over the city (`uniform`: the worst case for anything keyed by place), or
//!   around 20 hot spots, most within a kilometer of one (`hotspots`: riders as a city has
//!   them). `knn` cycles through 4,096 points, whose places a cache remembers after a pass.
//! - `geomatch/concurrent`: one thread updating and one thread querying at once, `iters` of
//!   each; the time is the wall time of both. rstar's tree sits behind a read-write lock.
//!
//! The peers work on local planar coordinates in meters (an equirectangular projection at the
//! city's latitude), which is what a user of a planar index does; ours measures great-circle
//! distance on the sphere. The `/3d` rows give the peers our configuration: points on the
//! sphere as 3D vectors in meters, whose straight-line distance orders drivers exactly as the
//! great-circle distance does (the same metric as ours, on either side of the antimeridian).
//! Every driver is built once per run and shared by the groups.

// `criterion_group!`-style entry points cannot carry docs.
#![allow(missing_docs)]
// The peers are measured as they are: rstar's tree behind a `std` lock, and the two-thread
// driver uses std's scoped threads and barrier outside any code under test.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::num::NonZero;
use std::time::{Duration, Instant};

use criterion::Criterion;
use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
use kiddo::{ImmutableKdTree, SquaredEuclidean};
use rstar::RTree;

const DRIVERS: usize = 1_000_000;
const SOUTH: f64 = 40.55;
const WEST: f64 = -74.15;
/// 50 km of latitude and of longitude at the city's latitude, in degrees.
const LAT_SPAN: f64 = 50_000.0 / 111_195.0;
const LNG_SPAN: f64 = 50_000.0 / (111_195.0 * 0.759_3);
const QUERIES: usize = 4_096;
/// Points in each stream of `geomatch/knn_stream`.
const STREAM: usize = 1 << 20;
const HOT_SPOTS: usize = 20;
const K: usize = 10;

/// A small deterministic generator, so every run and every peer sees the same inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn planar(lat: f64, lng: f64) -> [f64; 2] {
    [
        (lng - WEST) * 111_195.0 * 0.759_3,
        (lat - SOUTH) * 111_195.0,
    ]
}

/// A point of the sphere of radius 6,371,008.8 m as a 3D vector.
fn spherical(lat: f64, lng: f64) -> [f64; 3] {
    const R: f64 = 6_371_008.8;
    let (lat, lng) = (lat.to_radians(), lng.to_radians());
    [
        R * lat.cos() * lng.cos(),
        R * lat.cos() * lng.sin(),
        R * lat.sin(),
    ]
}

struct World {
    positions: Vec<(f64, f64)>,
    /// Per update step: the driver and its offset in degrees, about 30 m at most.
    moves: Vec<(usize, f64, f64)>,
    queries: Vec<(f64, f64)>,
}

impl World {
    fn new() -> Self {
        let mut rng = SplitMix(42);
        let positions = (0..DRIVERS)
            .map(|_| (SOUTH + rng.unit() * LAT_SPAN, WEST + rng.unit() * LNG_SPAN))
            .collect();
        let moves = (0..DRIVERS)
            .map(|i| {
                let step = 30.0 / 111_195.0;
                (i, (rng.unit() - 0.5) * step, (rng.unit() - 0.5) * step)
            })
            .collect();
        let queries = (0..QUERIES)
            .map(|_| (SOUTH + rng.unit() * LAT_SPAN, WEST + rng.unit() * LNG_SPAN))
            .collect();
        Self {
            positions,
            moves,
            queries,
        }
    }

    fn index(&self) -> Index {
        // Default layout (resolution 9, 256 shards), with a staleness window longer than the
        // run: the drivers not moved by `update` must stay fresh for `knn`, as in a city where
        // every driver pings every few seconds.
        let config = Config::default().staleness(Duration::from_secs(24 * 3600));
        let index = Index::new(config).expect("valid configuration");
        for (i, &(lat, lng)) in self.positions.iter().enumerate() {
            index
                .insert(
                    DriverId(i as u64),
                    Point::new(lat, lng).expect("in the city"),
                    DriverProfile::default(),
                )
                .expect("new driver");
        }
        index
    }

    fn rtree(&self) -> RTree<[f64; 2]> {
        RTree::bulk_load(
            self.positions
                .iter()
                .map(|&(lat, lng)| planar(lat, lng))
                .collect(),
        )
    }

    fn rtree_3d(&self) -> RTree<[f64; 3]> {
        RTree::bulk_load(
            self.positions
                .iter()
                .map(|&(lat, lng)| spherical(lat, lng))
                .collect(),
        )
    }
}

/// Moves driver `step % DRIVERS` back and forth by its offset: odd passes undo even ones,
/// so positions stay in the city however long criterion runs.
fn moved(
    world: &World,
    current: &mut [(f64, f64)],
    step: usize,
) -> (usize, (f64, f64), (f64, f64)) {
    let (driver, dlat, dlng) = world.moves[step % DRIVERS];
    let sign = if (step / DRIVERS).is_multiple_of(2) {
        1.0
    } else {
        -1.0
    };
    let old = current[driver];
    let new = (old.0 + sign * dlat, old.1 + sign * dlng);
    current[driver] = new;
    (driver, old, new)
}

/// The positions a peer's tree holds and how many moves it has made.
struct Tracker {
    current: Vec<(f64, f64)>,
    step: usize,
}

fn update(
    c: &mut Criterion,
    world: &World,
    index: &Index,
    rtree: &mut RTree<[f64; 2]>,
    tracker: &mut Tracker,
) {
    let mut group = c.benchmark_group("geomatch/update");
    let mut current = world.positions.clone();
    let mut step = 0;
    group.bench_function("infra", |b| {
        b.iter(|| {
            let (driver, _, (lat, lng)) = moved(world, &mut current, step);
            step += 1;
            index
                .update(
                    DriverId(driver as u64),
                    Point::new(lat, lng).expect("in the city"),
                )
                .expect("known driver");
        });
    });
    // rstar removes by the exact old point, so it keeps its own record of where they are.
    group.bench_function("rstar", |b| {
        b.iter(|| {
            let (_, old, new) = moved(world, &mut tracker.current, tracker.step);
            tracker.step += 1;
            black_box(rtree.remove(&planar(old.0, old.1)));
            rtree.insert(planar(new.0, new.1));
        });
    });
    let mut rtree_3d = world.rtree_3d();
    let mut tracker_3d = Tracker {
        current: world.positions.clone(),
        step: 0,
    };
    group.bench_function("rstar/3d", |b| {
        b.iter(|| {
            let (_, old, new) = moved(world, &mut tracker_3d.current, tracker_3d.step);
            tracker_3d.step += 1;
            black_box(rtree_3d.remove(&spherical(old.0, old.1)));
            rtree_3d.insert(spherical(new.0, new.1));
        });
    });
    group.finish();
}

/// Our query: the `K` nearest available drivers to the point.
fn infra_knn(index: &Index, filter: &Filter, (lat, lng): (f64, f64)) {
    let point = Point::new(lat, lng).expect("in the city");
    black_box(index.nearest(point, K, filter).expect("valid query"));
}

/// rstar's on points of the sphere: the first `K` of its nearest-neighbour walk.
fn rstar_3d_knn(tree: &RTree<[f64; 3]>, (lat, lng): (f64, f64)) {
    for neighbour in tree.nearest_neighbor_iter(spherical(lat, lng)).take(K) {
        black_box(neighbour);
    }
}

fn knn(c: &mut Criterion, world: &World, index: &Index, rtree: &RTree<[f64; 2]>) {
    let mut group = c.benchmark_group("geomatch/knn");
    let filter = Filter::any();
    let mut q = 0;
    group.bench_function("infra", |b| {
        b.iter(|| {
            infra_knn(index, &filter, world.queries[q % QUERIES]);
            q += 1;
        });
    });
    let mut q = 0;
    group.bench_function("rstar", |b| {
        b.iter(|| {
            let (lat, lng) = world.queries[q % QUERIES];
            q += 1;
            for neighbour in rtree.nearest_neighbor_iter(planar(lat, lng)).take(K) {
                black_box(neighbour);
            }
        });
    });
    let points: Vec<[f64; 2]> = world
        .positions
        .iter()
        .map(|&(lat, lng)| planar(lat, lng))
        .collect();
    let kdtree = ImmutableKdTree::new_from_slice(&points).expect("a million points");
    let k = NonZero::new(K).expect("K > 0");
    let mut q = 0;
    group.bench_function("kiddo", |b| {
        b.iter(|| {
            let (lat, lng) = world.queries[q % QUERIES];
            q += 1;
            black_box(
                kdtree
                    .query(&planar(lat, lng))
                    .nearest_n::<SquaredEuclidean<f64>>(k)
                    .execute(),
            );
        });
    });
    let rtree_3d = world.rtree_3d();
    let mut q = 0;
    group.bench_function("rstar/3d", |b| {
        b.iter(|| {
            rstar_3d_knn(&rtree_3d, world.queries[q % QUERIES]);
            q += 1;
        });
    });
    drop(rtree_3d);
    let points_3d: Vec<[f64; 3]> = world
        .positions
        .iter()
        .map(|&(lat, lng)| spherical(lat, lng))
        .collect();
    let kdtree_3d = ImmutableKdTree::new_from_slice(&points_3d).expect("a million points");
    let mut q = 0;
    group.bench_function("kiddo/3d", |b| {
        b.iter(|| {
            let (lat, lng) = world.queries[q % QUERIES];
            q += 1;
            black_box(
                kdtree_3d
                    .query(&spherical(lat, lng))
                    .nearest_n::<SquaredEuclidean<f64>>(k)
                    .execute(),
            );
        });
    });
    group.finish();
}

/// `STREAM` query points, each new: uniform over the city, or around hot spots.
fn streams() -> [(&'static str, Vec<(f64, f64)>); 2] {
    let mut rng = SplitMix(7);
    let uniform = (0..STREAM)
        .map(|_| (SOUTH + rng.unit() * LAT_SPAN, WEST + rng.unit() * LNG_SPAN))
        .collect();
    // Spots in the inner 80 % of the city; a point's offset in each axis is a sum of three
    // uniform draws of ±1 km, so most points are within a kilometer of their spot.
    let spots: Vec<(f64, f64)> = (0..HOT_SPOTS)
        .map(|_| {
            (
                SOUTH + (0.1 + 0.8 * rng.unit()) * LAT_SPAN,
                WEST + (0.1 + 0.8 * rng.unit()) * LNG_SPAN,
            )
        })
        .collect();
    let offset_m = |rng: &mut SplitMix| (0..3).map(|_| 2_000.0 * rng.unit() - 1_000.0).sum::<f64>();
    let hotspots = (0..STREAM)
        .map(|_| {
            let (lat, lng) = spots[(rng.next() % HOT_SPOTS as u64) as usize];
            (
                lat + offset_m(&mut rng) / 111_195.0,
                lng + offset_m(&mut rng) / (111_195.0 * 0.759_3),
            )
        })
        .collect();
    [("uniform", uniform), ("hotspots", hotspots)]
}

fn knn_stream(c: &mut Criterion, world: &World, index: &Index) {
    let mut group = c.benchmark_group("geomatch/knn_stream");
    let filter = Filter::any();
    let rtree_3d = world.rtree_3d();
    for (name, points) in streams() {
        let mut q = 0;
        group.bench_function(format!("infra/{name}"), |b| {
            b.iter(|| {
                infra_knn(index, &filter, points[q % STREAM]);
                q += 1;
            });
        });
        let mut q = 0;
        group.bench_function(format!("rstar/3d/{name}"), |b| {
            b.iter(|| {
                rstar_3d_knn(&rtree_3d, points[q % STREAM]);
                q += 1;
            });
        });
    }
    group.finish();
}

/// One thread runs `writer` and another `reader`, `iters` times each; the wall time of both.
fn writer_and_reader(
    iters: u64,
    writer: &mut (impl FnMut() + Send),
    reader: &(impl Fn(u64) + Sync),
) -> Duration {
    let barrier = std::sync::Barrier::new(2);
    let start = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if barrier.wait().is_leader() {
                *start.lock().expect("not poisoned") = Some(Instant::now());
            }
            for i in 0..iters {
                reader(i);
            }
        });
        if barrier.wait().is_leader() {
            *start.lock().expect("not poisoned") = Some(Instant::now());
        }
        for _ in 0..iters {
            writer();
        }
    });
    let start = start
        .lock()
        .expect("not poisoned")
        .expect("set by the leader");
    start.elapsed()
}

fn concurrent(
    c: &mut Criterion,
    world: &World,
    index: &Index,
    rtree: RTree<[f64; 2]>,
    tracker: &mut Tracker,
) {
    let mut group = c.benchmark_group("geomatch/concurrent");
    let filter = Filter::any();
    // Continues the update pass where `update` left it: positions were moved back and forth,
    // so start from where the index's drivers are now.
    let mut current: Vec<(f64, f64)> = (0..DRIVERS)
        .map(|i| {
            let p = index.driver(DriverId(i as u64)).expect("known").point;
            (p.lat(), p.lng())
        })
        .collect();
    let mut step = 0;
    group.bench_function("infra", |b| {
        b.iter_custom(|iters| {
            writer_and_reader(
                iters,
                &mut || {
                    let (driver, _, (lat, lng)) = moved(world, &mut current, step);
                    step += 1;
                    index
                        .update(
                            DriverId(driver as u64),
                            Point::new(lat, lng).expect("in the city"),
                        )
                        .expect("known driver");
                },
                &|i| infra_knn(index, &filter, world.queries[i as usize % QUERIES]),
            )
        });
    });
    let rtree = std::sync::RwLock::new(rtree);
    group.bench_function("rstar", |b| {
        b.iter_custom(|iters| {
            writer_and_reader(
                iters,
                &mut || {
                    let (_, old, new) = moved(world, &mut tracker.current, tracker.step);
                    tracker.step += 1;
                    let mut tree = rtree.write().expect("not poisoned");
                    black_box(tree.remove(&planar(old.0, old.1)));
                    tree.insert(planar(new.0, new.1));
                },
                &|i| {
                    let (lat, lng) = world.queries[i as usize % QUERIES];
                    let tree = rtree.read().expect("not poisoned");
                    for neighbour in tree.nearest_neighbor_iter(planar(lat, lng)).take(K) {
                        black_box(neighbour);
                    }
                },
            )
        });
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let world = World::new();
    let index = world.index();
    let mut rtree = world.rtree();
    let mut tracker = Tracker {
        current: world.positions.clone(),
        step: 0,
    };
    update(&mut c, &world, &index, &mut rtree, &mut tracker);
    knn(&mut c, &world, &index, &rtree);
    knn_stream(&mut c, &world, &index);
    concurrent(&mut c, &world, &index, rtree, &mut tracker);
    c.final_summary();
}
