//! The shared driver index on Redis against the in-process index, on the calls a matcher
//! makes: a driver's position report (`update`) and the 10 nearest available drivers
//! (`nearest`), over the same 100,000 drivers in a city of 40 × 40 km.
//!
//! The Redis side runs on a local `redis-server` started through infra-testkit (the group is
//! skipped with a line when the binary is missing), with its append-only file at Redis's
//! default `appendfsync everysec`: fsyncing every write, as the test kit does, would measure
//! the disk.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use infra_geomatch::redis::{RedisIndex, RedisOptions};
use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Filter, Index, Point};

const DRIVERS: u64 = 100_000;
const K: usize = 10;

/// splitmix64, so both indexes and every run see the same fleet and queries.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A point in Berlin's 40 × 40 km square.
    fn point(&mut self) -> Point {
        #[allow(clippy::cast_precision_loss)]
        let mut unit = || (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (lat, lng) = (52.34 + 0.36 * unit(), 13.1 + 0.59 * unit());
        Point::new(lat, lng).expect("inside the square")
    }
}

fn geomatch_redis(c: &mut Criterion) {
    let Some(server) = infra_testkit::RedisServer::start() else {
        println!("geomatch/redis: skipped, no redis-server");
        return;
    };
    let reply = server
        .command(&["CONFIG", "SET", "appendfsync", "everysec"])
        .expect("the server answers");
    assert_eq!(reply, "+OK");
    let shared = RedisIndex::new(&server.url(), RedisOptions::default()).expect("a valid URL");
    let local = Index::new(Config::default()).expect("a valid configuration");
    let mut rng = Rng(1);
    for id in 0..DRIVERS {
        let at = rng.point();
        let profile = DriverProfile::default();
        shared.insert(DriverId(id), at, profile).expect("inserted");
        local.insert(DriverId(id), at, profile).expect("inserted");
        // A fifth of the fleet is on a trip: queries skip them.
        if id % 5 == 0 {
            shared
                .set_state(DriverId(id), DriverState::Busy)
                .expect("known");
            local
                .set_state(DriverId(id), DriverState::Busy)
                .expect("known");
        }
    }
    let moves: Vec<(DriverId, Point)> = (0..4_096)
        .map(|_| (DriverId(rng.next() % DRIVERS), rng.point()))
        .collect();
    let riders: Vec<Point> = (0..4_096).map(|_| rng.point()).collect();

    let mut group = c.benchmark_group("geomatch/redis");
    let mut turn = 0usize;
    group.bench_function("update/redis", |b| {
        b.iter(|| {
            let (id, at) = moves[turn % moves.len()];
            turn += 1;
            shared.update(black_box(id), black_box(at)).expect("known");
        });
    });
    group.bench_function("update/in-process", |b| {
        b.iter(|| {
            let (id, at) = moves[turn % moves.len()];
            turn += 1;
            local.update(black_box(id), black_box(at)).expect("known");
        });
    });
    group.bench_function("nearest_k10/redis", |b| {
        b.iter(|| {
            let rider = riders[turn % riders.len()];
            turn += 1;
            black_box(
                shared
                    .nearest(black_box(rider), K, &Filter::any())
                    .expect("valid"),
            );
        });
    });
    group.bench_function("nearest_k10/in-process", |b| {
        b.iter(|| {
            let rider = riders[turn % riders.len()];
            turn += 1;
            black_box(
                local
                    .nearest(black_box(rider), K, &Filter::any())
                    .expect("valid"),
            );
        });
    });
    group.finish();
}

criterion_group!(benches, geomatch_redis);
criterion_main!(benches);
