//! The shared driver index on Redis against the in-process index, on the calls a matcher
//! makes: a driver's position report (`update`), the 10 nearest available drivers
//! (`nearest`) and a driver's state set (`set_state`, one driver alternating between offline
//! and available, so every call changes its state), over the same 100,000 drivers in a city of
//! 40 × 40 km. After the Redis state sets, the server's own time per script and the commands
//! each script ran are printed from `INFO commandstats`.
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
/// The driver whose state the `set_state` rows switch (an available one).
const SWITCHED: DriverId = DriverId(1);

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
    let mut offline = false;
    let mut flip = || {
        offline = !offline;
        if offline {
            DriverState::Offline
        } else {
            DriverState::Available
        }
    };
    reset_command_stats(&server.url());
    group.bench_function("set_state/redis", |b| {
        b.iter(|| {
            shared
                .set_state(black_box(SWITCHED), flip())
                .expect("known")
        });
    });
    print_script_stats("set_state/redis", &server.url());
    group.bench_function("set_state/in-process", |b| {
        b.iter(|| local.set_state(black_box(SWITCHED), flip()).expect("known"));
    });
    group.finish();
}

/// Zeroes the server's per-command counters.
fn reset_command_stats(url: &str) {
    let mut connection = connect(url);
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut connection)
        .expect("the server answers");
}

/// Prints, from `INFO commandstats`, the scripts (`EVALSHA`) run since the last reset, the
/// server's time per script, and the other commands counted, per script: those the scripts
/// ran, and any the client sent besides.
fn print_script_stats(row: &str, url: &str) {
    let mut connection = connect(url);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .expect("the server answers");
    let mut scripts = (0u64, 0.0f64);
    let mut others = Vec::new();
    for line in info.lines() {
        let Some((command, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|line| line.split_once(':'))
        else {
            continue;
        };
        let field = |name: &str| {
            stats
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("0")
        };
        let calls: u64 = field("calls").parse().expect("a count");
        match command {
            "evalsha" => scripts = (calls, field("usec_per_call").parse().expect("a number")),
            // The reset itself (`config|resetstat`), and this read.
            "info" => {}
            _ if command.starts_with("config") => {}
            _ => others.push((command, calls)),
        }
    }
    let (count, usec_per_script) = scripts;
    #[allow(clippy::cast_precision_loss)]
    let per_script: Vec<String> = others
        .iter()
        .map(|(command, calls)| format!("{command} {:.2}", *calls as f64 / count.max(1) as f64))
        .collect();
    println!(
        "{row}: the server ran {count} scripts, {usec_per_script:.2} µs each; per script: {}",
        per_script.join(", ")
    );
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .expect("the server accepts a connection")
}

criterion_group!(benches, geomatch_redis);
criterion_main!(benches);
