//! The shared index against a real `redis-server`: the same answers as the in-process index on
//! random fleets (a city, and the whole GEO range), Redis's own distances within the
//! documented margin, states, filters and staleness, claims from many threads and from two
//! processes that never hand a driver out twice, bad input refused before any round trip, and
//! a server restart that gives errors, not panics; a batch of the matcher run on it, a claim
//! that does not outlive a remove and insert, and whole-fleet queries read page by page.
#![cfg(all(feature = "redis", not(infra_loom)))]

use std::collections::HashSet;
use std::time::Duration;

use infra_common::sync::{Arc, Mutex, thread};
use infra_geomatch::matching::{BatchConfig, BatchMatcher, BatchOutcome};
use infra_geomatch::redis::{
    GEO_MARGIN_M, MAX_GEO_LAT, REDIS_EARTH_RADIUS_M, REQUEST_MEMORY_MARGIN, RedisIndex,
    RedisOptions, SCAN_PAGE,
};
use infra_geomatch::{
    BackendFailure, Candidate, Config, DriverId, DriverProfile, DriverState, Drivers,
    EARTH_RADIUS_M, Error, Filter, Index, MAX_K, Point, VehicleClass,
};
use infra_testkit::RedisServer;

/// splitmix64: a small deterministic generator, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Long enough that no driver goes stale during a test (the differential tests compare two
/// clocks' verdicts otherwise).
const HOUR: Duration = Duration::from_secs(3_600);

/// A request timeout a loaded machine's round trips stay under (the test kit's Redis syncs
/// every write to disk, and a busy disk has taken hundreds of milliseconds), where the
/// default, 500 ms, is what a service wants.
const PATIENT: Duration = Duration::from_secs(5);

fn shared(server: &RedisServer, prefix: &str) -> RedisIndex {
    RedisIndex::new(&server.url(), shared_options(prefix)).expect("a valid URL")
}

fn shared_options(prefix: &str) -> RedisOptions {
    RedisOptions::default()
        .prefix(prefix)
        .staleness(HOUR)
        .timeout(PATIENT)
}

/// A shared index under `prefix` whose connections go through a fault proxy in front of
/// `server`, the proxy, and a direct connection to watch what the server holds meanwhile.
fn behind_a_proxy(
    server: &RedisServer,
    prefix: &str,
) -> (
    infra_testkit::FaultProxy,
    Arc<RedisIndex>,
    redis::Connection,
) {
    let proxy = infra_testkit::FaultProxy::start(server.addr()).unwrap();
    let url = format!("redis://{}", proxy.addr());
    let index = Arc::new(RedisIndex::new(&url, shared_options(prefix)).unwrap());
    let direct = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    (proxy, index, direct)
}

/// Runs `call` on a thread of its own while `proxy` delays each way by a second (time enough
/// to see the change and cut, however slow the machine), waits until `applied` shows the
/// server ran it, does `meanwhile`, then cuts the connection: the answer is lost, and the
/// client sends the request again on a new one. What the call returned.
fn with_its_answer_lost<R: Send + 'static>(
    proxy: &infra_testkit::FaultProxy,
    call: impl FnOnce() -> R + Send + 'static,
    mut applied: impl FnMut() -> bool,
    meanwhile: impl FnOnce(),
) -> R {
    proxy.set_latency(Duration::from_secs(1));
    let calling = thread::spawn(call);
    while !applied() {}
    meanwhile();
    proxy.cut_connections();
    proxy.set_latency(Duration::ZERO);
    calling.join().unwrap()
}

fn in_process() -> Index {
    in_process_at(Config::default().bucket_resolution())
}

/// An in-process index with cells of `resolution`: coarse cells for sparse drivers (the
/// answers do not depend on the resolution).
fn in_process_at(resolution: h3o::Resolution) -> Index {
    Index::new(Config::default().staleness(HOUR).resolution(resolution))
        .expect("a valid configuration")
}

fn point(lat: f64, lng: f64) -> Point {
    Point::new(lat, lng).expect("a valid point")
}

/// The same random fleet in both indexes, with the same state changes in the same order:
/// profiles of three classes and 2 to 7 seats; a fifth busy, a tenth
/// offline, a tenth offered by a claim.
fn populate(
    rng: &mut Rng,
    drivers: u64,
    place: &mut impl FnMut(&mut Rng) -> Point,
    both: &[&dyn Drivers],
) {
    for id in 0..drivers {
        let at = place(rng);
        let profile = DriverProfile {
            class: VehicleClass(u8::try_from(rng.below(3)).unwrap()),
            capacity: 2 + u8::try_from(rng.below(6)).unwrap(),
        };
        let roll = rng.below(10);
        for index in both {
            index.insert(DriverId(id), at, profile).unwrap();
            match roll {
                0 | 1 => {
                    index.set_state(DriverId(id), DriverState::Busy).unwrap();
                }
                2 => {
                    index.set_state(DriverId(id), DriverState::Offline).unwrap();
                }
                3 => {
                    let version = index.driver(DriverId(id)).unwrap().version;
                    let _offered = index.claim(DriverId(id), version).unwrap();
                }
                _ => {}
            }
        }
    }
}

fn filters(rng: &mut Rng) -> Filter {
    match rng.below(4) {
        0 => Filter::any(),
        1 => Filter::any().class(VehicleClass(1)),
        2 => Filter::any().min_capacity(5),
        _ => Filter::any().class(VehicleClass(2)).min_capacity(4),
    }
}

/// Equal answers (drivers and distances), or a short account of where they part. Versions
/// are left out: each backend numbers its own (both never repeat one for a driver, but
/// they count from different places).
#[track_caller]
fn assert_same(ours: &[Candidate], theirs: &[Candidate], context: &str) {
    let strip = |found: &[Candidate]| -> Vec<(DriverId, f64)> {
        found.iter().map(|c| (c.driver, c.distance_m)).collect()
    };
    let (ours, theirs) = (&strip(ours), &strip(theirs));
    if ours == theirs {
        return;
    }
    let at = ours.iter().zip(theirs).position(|(a, b)| a != b);
    let missing: Vec<_> = theirs
        .iter()
        .filter(|c| !ours.contains(c))
        .take(5)
        .collect();
    let extra: Vec<_> = ours
        .iter()
        .filter(|c| !theirs.contains(c))
        .take(5)
        .collect();
    panic!(
        "{context}: {} against {} found, first difference at {at:?}; missing {missing:?}; extra {extra:?}",
        ours.len(),
        theirs.len()
    );
}

/// Asks both indexes `queries` questions at places `place` draws, under random filters: the
/// `ks[q % ks.len()]` nearest drivers and every driver within `radii[q % radii.len()]` meters,
/// for the `q`th; each answered the same by both ([`assert_same`]).
fn assert_queries_agree(
    rng: &mut Rng,
    queries: usize,
    place: &mut impl FnMut(&mut Rng) -> Point,
    ks: &[usize],
    radii: &[f64],
    [redis, local]: [&dyn Drivers; 2],
) {
    for query in 0..queries {
        let at = place(rng);
        let filter = filters(rng);
        let k = ks[query % ks.len()];
        assert_same(
            &redis.nearest(at, k, &filter).unwrap(),
            &local.nearest(at, k, &filter).unwrap(),
            &format!("query {query} at {at:?}, k {k}, {filter:?}"),
        );
        let radius = radii[query % radii.len()];
        assert_same(
            &redis.within(at, radius, MAX_K, &filter).unwrap(),
            &local.within(at, radius, MAX_K, &filter).unwrap(),
            &format!("query {query} at {at:?}, radius {radius}"),
        );
    }
}

fn ids(found: &[Candidate]) -> Vec<u64> {
    found.iter().map(|c| c.driver.0).collect()
}

#[test]
fn nearest_and_within_answer_as_the_in_process_index_in_a_city() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{city}");
    let local = in_process();
    let mut rng = Rng(7);
    // Berlin, about 30 km across.
    let mut city = |rng: &mut Rng| point(rng.range(52.38, 52.65), rng.range(13.1, 13.7));
    populate(&mut rng, 3_000, &mut city, &[&local, &redis]);
    assert_eq!(redis.len().unwrap(), 3_000);
    for query in 0..300 {
        let at = city(&mut rng);
        let filter = filters(&mut rng);
        let k = [1, 3, 10, 50, 400][query % 5];
        let theirs = local.nearest(at, k, &filter).unwrap();
        let ours = redis.nearest(at, k, &filter).unwrap();
        // Exactly equal: ids in order, distances to the bit, versions.
        assert_same(
            &ours,
            &theirs,
            &format!("query {query} at {at:?}, k {k}, {filter:?}"),
        );
        assert_eq!(
            ours.len(),
            k,
            "the city holds enough drivers for every filter"
        );
        let radius = rng.range(0.0, 4_000.0);
        let theirs = local.within(at, radius, MAX_K, &filter).unwrap();
        let ours = redis.within(at, radius, MAX_K, &filter).unwrap();
        assert_same(
            &ours,
            &theirs,
            &format!("query {query} at {at:?}, radius {radius}"),
        );
    }
    // A radius exactly at a driver's distance includes it in both.
    let at = city(&mut rng);
    let nearest = local.nearest(at, 1, &Filter::any()).unwrap()[0];
    let on_the_edge = redis
        .within(at, nearest.distance_m, MAX_K, &Filter::any())
        .unwrap();
    assert_same(
        &on_the_edge,
        &local
            .within(at, nearest.distance_m, MAX_K, &Filter::any())
            .unwrap(),
        "a radius at a driver's distance",
    );
    assert_eq!(on_the_edge[0].driver, nearest.driver);
}

#[test]
fn nearest_and_within_answer_as_the_in_process_index_across_the_geo_range() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{world}");
    // Coarse cells for a sparse world: the answers do not depend on the resolution.
    let local = in_process_at(h3o::Resolution::Three);
    let mut rng = Rng(11);
    // Sparse and worldwide, a cluster on each side of the antimeridian, and drivers at the
    // very edge of Redis's latitudes: queries must widen far, and wrap.
    let mut world = |rng: &mut Rng| match rng.below(4) {
        0 => point(rng.range(-1.0, 1.0), rng.range(179.0, 180.0)),
        1 => point(rng.range(-1.0, 1.0), rng.range(-180.0, -179.0)),
        2 => point(rng.range(84.0, MAX_GEO_LAT), rng.range(-180.0, 180.0)),
        _ => point(
            rng.range(-MAX_GEO_LAT, MAX_GEO_LAT),
            rng.range(-180.0, 180.0),
        ),
    };
    populate(&mut rng, 400, &mut world, &[&local, &redis]);
    assert_queries_agree(
        &mut rng,
        200,
        &mut world,
        &[1, 7, 40, 400],
        &[50_000.0, 500_000.0, 997_000.0, 5_000_000.0, 30_000_000.0],
        [&redis, &local],
    );
    // Every available driver, from anywhere: the whole sphere.
    let all = redis
        .nearest(point(0.0, 0.0), MAX_K, &Filter::any())
        .unwrap();
    assert_same(
        &all,
        &local
            .nearest(point(0.0, 0.0), MAX_K, &Filter::any())
            .unwrap(),
        "every driver",
    );
    assert!(all.len() > 200, "{} available", all.len());
}

/// Redis's own distance (GEODIST, WITHDIST) against ours: on its larger sphere, 0.028 %
/// longer, and from the center of the driver's geohash cell, within half the documented
/// margin once scaled; which is why the index computes distances itself.
#[test]
fn redis_distances_differ_from_ours_as_documented() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut connection = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut rng = Rng(3);
    let (mut worst_offset, mut worst_ratio, mut least_ratio) = (0.0f64, 0.0f64, f64::MAX);
    for i in 0..2_000 {
        let a = point(rng.range(-80.0, 80.0), rng.range(-180.0, 180.0));
        // From a few meters to the far side of the Earth.
        let b = if i % 2 == 0 {
            point(
                (a.lat() + rng.range(-0.05, 0.05)).clamp(-MAX_GEO_LAT, MAX_GEO_LAT),
                (a.lng() + rng.range(-0.05, 0.05)).clamp(-180.0, 180.0),
            )
        } else {
            point(rng.range(-80.0, 80.0), rng.range(-180.0, 180.0))
        };
        let _: i64 = redis::cmd("GEOADD")
            .arg("distances")
            .arg(b.lng())
            .arg(b.lat())
            .arg(i)
            .query(&mut connection)
            .unwrap();
        let found: Vec<(String, f64)> = redis::cmd("GEOSEARCH")
            .arg("distances")
            .arg("FROMLONLAT")
            .arg(a.lng())
            .arg(a.lat())
            .arg("BYRADIUS")
            .arg(21_000_000)
            .arg("m")
            .arg("ASC")
            .arg("WITHDIST")
            .query(&mut connection)
            .unwrap();
        let theirs = found
            .iter()
            .find(|(member, _)| member == &i.to_string())
            .unwrap()
            .1;
        let ours = a.distance_m(b);
        let scaled = ours * (REDIS_EARTH_RADIUS_M / EARTH_RADIUS_M);
        worst_offset = worst_offset.max((theirs - scaled).abs());
        if ours > 10_000.0 {
            worst_ratio = worst_ratio.max(theirs / ours);
            least_ratio = least_ratio.min(theirs / ours);
        }
        let _: i64 = redis::cmd("DEL")
            .arg("distances")
            .query(&mut connection)
            .unwrap();
    }
    println!(
        "Redis's distance against ours scaled to its sphere: at most {worst_offset:.3} m apart; \
         ratio beyond 10 km {least_ratio:.6} to {worst_ratio:.6}"
    );
    assert!(
        worst_offset < GEO_MARGIN_M / 2.0,
        "Redis's distance is {worst_offset} m off ours, scaled"
    );
    assert!(
        worst_offset > 0.01,
        "the geohash moves drivers by centimeters at least"
    );
    // 6,372,797.560856 / 6,371,008.8 = 1.000281
    assert!(
        (1.00026..1.0003).contains(&least_ratio) && (1.00026..1.0003).contains(&worst_ratio),
        "{least_ratio}..{worst_ratio}"
    );
}

#[test]
fn bad_input_is_refused_before_any_round_trip() {
    // Nothing listens on port 1: any call that reached the network would fail as a backend
    // error, so these errors prove the input was checked first.
    let nowhere = RedisIndex::new("redis://127.0.0.1:1", RedisOptions::default()).unwrap();
    let here = point(52.5, 13.4);
    let polar = point(85.1, 0.0);
    let profile = DriverProfile::default();
    assert_eq!(
        nowhere.insert(DriverId(1), polar, profile),
        Err(Error::OutsideGeoRange {
            lat: 85.1,
            lng: 0.0
        })
    );
    assert!(matches!(
        nowhere.update(DriverId(1), point(-89.0, 10.0)),
        Err(Error::OutsideGeoRange { .. })
    ));
    assert!(matches!(
        nowhere.nearest(polar, 5, &Filter::any()),
        Err(Error::OutsideGeoRange { .. })
    ));
    assert!(matches!(
        nowhere.within(polar, 5.0, MAX_K, &Filter::any()),
        Err(Error::OutsideGeoRange { .. })
    ));
    assert_eq!(
        nowhere.nearest(here, MAX_K + 1, &Filter::any()),
        Err(Error::TooManyResults {
            k: MAX_K + 1,
            max: MAX_K
        })
    );
    assert_eq!(nowhere.nearest(here, 0, &Filter::any()), Ok(Vec::new()));
    for radius in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            nowhere.within(here, radius, MAX_K, &Filter::any()),
            Err(Error::InvalidRadius(_))
        ));
    }
    // A version read while the driver was offered cannot be claimed.
    let local = in_process();
    local.insert(DriverId(1), here, profile).unwrap();
    let offered = local
        .claim(DriverId(1), local.driver(DriverId(1)).unwrap().version)
        .unwrap();
    assert_eq!(
        nowhere.claim(DriverId(1), offered.version()),
        Err(Error::NotAvailable {
            driver: DriverId(1),
            state: DriverState::Offered
        })
    );
    // And the network is really not there.
    assert_eq!(
        nowhere.insert(DriverId(1), here, profile),
        Err(Error::Backend(BackendFailure::Connection))
    );
    assert!(Point::new(f64::NAN, 0.0).is_err());
    assert!(matches!(
        RedisIndex::new("redis://x", RedisOptions::default().search_radius(f64::NAN)),
        Err(Error::InvalidConfig(_))
    ));
}

/// A zero timeout is refused when the index is made: the socket calls behind it refuse a zero
/// timeout, so every call to a running server would otherwise fail as a lost connection, an
/// answer that says the command may have run and sends the caller into retries.
#[test]
fn a_zero_timeout_is_a_configuration_error() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let zero = RedisOptions::default()
        .prefix("test:{timeout}")
        .timeout(Duration::ZERO);
    match RedisIndex::new(&server.url(), zero) {
        Err(Error::InvalidConfig(_)) => {}
        Err(other) => panic!("{other:?}"),
        Ok(index) => panic!("accepted; a call to the running server: {:?}", index.len()),
    }
}

#[test]
fn the_edge_of_the_geo_range_is_held_and_unknown_drivers_are_errors() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let index = shared(&server, "test:{edge}");
    let north = point(MAX_GEO_LAT, 180.0);
    let south = point(-MAX_GEO_LAT, -180.0);
    index
        .insert(DriverId(1), north, DriverProfile::default())
        .unwrap();
    index
        .insert(DriverId(2), south, DriverProfile::default())
        .unwrap();
    assert_eq!(index.driver(DriverId(1)).unwrap().point, north);
    let found = index.nearest(north, 2, &Filter::any()).unwrap();
    assert_eq!(ids(&found), [1, 2]);
    assert_eq!(found[1].distance_m, north.distance_m(south));

    let ghost = DriverId(99);
    let unknown = Err(Error::UnknownDriver(ghost));
    assert_eq!(index.update(ghost, north), unknown);
    assert_eq!(index.driver(ghost).map(|_| ()), unknown);
    assert_eq!(index.remove(ghost).map(|_| ()), unknown);
    assert_eq!(
        index.set_state(ghost, DriverState::Busy).map(|_| ()),
        unknown
    );
    let version = index.driver(DriverId(1)).unwrap().version;
    assert_eq!(index.claim(ghost, version).map(|_| ()), unknown);
    let claim = index.claim(DriverId(1), version).unwrap();
    index.remove(DriverId(1)).unwrap();
    assert_eq!(index.accept(&claim), Err(Error::UnknownDriver(DriverId(1))));
}

/// Drivers and query points within a rounding of the top of Redis's latitudes or of
/// longitude 180 (where Redis computes a cell one past its last, which no search covers):
/// a driver there is found from a few meters away, ahead of a farther one, and a query from
/// there finds the driver a meter across the antimeridian, as on the in-process index.
#[test]
fn drivers_and_queries_at_the_top_edges_of_the_geo_range_are_found() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{top-edges}");
    let local = in_process();
    let below_180 = 180.0_f64.next_down();
    let below_top = MAX_GEO_LAT.next_down();
    let drivers = [
        // At the top latitude, and 111 m south of it.
        (1, point(MAX_GEO_LAT, 10.0)),
        (2, point(MAX_GEO_LAT - 0.001, 10.0)),
        (3, point(below_top, 30.0)),
        (4, point(below_top - 0.001, 30.0)),
        // At the last longitude below 180, and 110 m west of it.
        (5, point(10.0, below_180)),
        (6, point(10.0, 179.999)),
        // A meter east of the antimeridian, and a meter west of it.
        (7, point(-10.0, -179.99999)),
        (8, point(-10.0, 179.99999)),
    ];
    for (id, at) in drivers {
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(id), at, DriverProfile::default())
                .unwrap();
        }
    }
    let queries = [
        // A few meters from a driver at an edge: it comes first.
        (point(MAX_GEO_LAT - 0.000_05, 10.0), 1),
        (point(below_top - 0.000_05, 30.0), 3),
        (point(10.0, 179.999_95), 5),
        // From an edge: the driver across the antimeridian is as near as the other.
        (point(-10.0, below_180), 8),
        (point(MAX_GEO_LAT, 10.0), 1),
    ];
    for (at, first) in queries {
        let found = redis.nearest(at, 2, &Filter::any()).unwrap();
        assert_same(
            &found,
            &local.nearest(at, 2, &Filter::any()).unwrap(),
            &format!("nearest to {at:?}"),
        );
        assert_eq!(found[0].driver, DriverId(first), "nearest to {at:?}");
        assert_same(
            &redis.within(at, 50.0, MAX_K, &Filter::any()).unwrap(),
            &local.within(at, 50.0, MAX_K, &Filter::any()).unwrap(),
            &format!("within 50 m of {at:?}"),
        );
    }
}

/// One scenario, run on both backends: the same outcomes, step by step.
fn lifecycle(index: &dyn Drivers) -> Vec<String> {
    let mut log = Vec::new();
    let at = point(48.8566, 2.3522);
    let van = DriverProfile {
        class: VehicleClass(2),
        capacity: 6,
    };
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    index
        .insert(DriverId(2), point(48.857, 2.353), van)
        .unwrap();
    log.push(format!("{:?}", index.insert(DriverId(2), at, van)));
    let vans = Filter::any().class(VehicleClass(2)).min_capacity(5);
    log.push(format!("{:?}", ids(&index.nearest(at, 5, &vans).unwrap())));
    log.push(format!(
        "{:?}",
        ids(&index
            .nearest(at, 5, &Filter::any().min_capacity(7))
            .unwrap())
    ));
    let seen = index.nearest(at, 1, &Filter::any()).unwrap()[0];
    let won = index.claim(seen.driver, seen.version);
    log.push(format!("{:?}", won.map(|claim| claim.driver())));
    log.push(format!("{:?}", index.claim(seen.driver, seen.version)));
    let won = won.unwrap();
    log.push(format!(
        "{:?}",
        ids(&index.nearest(at, 5, &Filter::any()).unwrap())
    ));
    log.push(format!("{:?}", index.driver(DriverId(1)).unwrap().state));
    index.decline(won).unwrap();
    log.push(format!("{:?}", index.decline(won)));
    log.push(format!("{:?}", index.accept(&won)));
    let (candidate, claim) = index.claim_nearest(at, 5, &Filter::any()).unwrap().unwrap();
    log.push(format!("{:?} {:?}", candidate.driver, claim.driver()));
    index.accept(&claim).unwrap();
    log.push(format!(
        "{:?}",
        index.driver(candidate.driver).unwrap().state
    ));
    let version = index
        .set_state(candidate.driver, DriverState::Available)
        .unwrap();
    log.push(format!("{}", version > claim.version()));
    log.push(format!(
        "{:?}",
        index.claim(candidate.driver, claim.version())
    ));
    index.set_state(DriverId(2), DriverState::Offline).unwrap();
    let record = index.remove(DriverId(2)).unwrap();
    log.push(format!(
        "{:?} {:?} {:?} {:?}",
        record.id, record.point, record.profile, record.state
    ));
    index.restore(record).unwrap();
    let back = index.driver(DriverId(2)).unwrap();
    log.push(format!("{:?}", back.state));
    assert_eq!(
        (back.id, back.point, back.profile, back.state),
        (record.id, record.point, record.profile, record.state),
        "a record comes back as it left"
    );
    index.update(DriverId(1), point(48.86, 2.36)).unwrap();
    log.push(format!("{:?}", index.driver(DriverId(1)).unwrap().point));
    log
}

#[test]
fn states_claims_and_filters_go_as_in_the_in_process_index() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let local = lifecycle(&in_process());
    let shared = lifecycle(&shared(&server, "test:{lifecycle}"));
    assert_eq!(shared, local);
    // The log says what it checked, so an empty or trivial run cannot pass.
    assert_eq!(local.len(), 16);
    assert_eq!(local[0], "Err(DuplicateDriver(DriverId(2)))");
    assert_eq!(local[4], "Err(ClaimLost(DriverId(1)))");
}

/// The server's clock, in microseconds since 1970 (`TIME`).
fn server_time_us(connection: &mut redis::Connection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(connection).unwrap();
    seconds * 1_000_000 + micros
}

/// Staleness is judged from the last reports in `{prefix}:seen` against the server's clock:
/// drivers whose last report is set back past the window, as if they had stopped reporting
/// then, are left out of queries and claims until they report again, and a report is
/// stamped with the server's time.
#[test]
fn drivers_that_stop_reporting_go_stale_on_the_servers_clock() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut control = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    const WINDOW_US: u64 = 60_000_000;
    let options = RedisOptions::default()
        .prefix("test:{stale}")
        .staleness(Duration::from_micros(WINDOW_US))
        .timeout(PATIENT);
    let index = RedisIndex::new(&server.url(), options).unwrap();
    let at = point(40.7128, -74.006);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    index
        .insert(DriverId(2), point(40.72, -74.0), DriverProfile::default())
        .unwrap();
    let version = index.driver(DriverId(1)).unwrap().version;
    assert_eq!(index.nearest(at, 5, &Filter::any()).unwrap().len(), 2);
    // Last heard from a second past the window before now, on the server's clock.
    let silent_since = server_time_us(&mut control) - WINDOW_US - 1_000_000;
    let () = redis::cmd("ZADD")
        .arg("test:{stale}:seen")
        .arg(silent_since)
        .arg(1)
        .arg(silent_since)
        .arg(2)
        .query(&mut control)
        .unwrap();
    assert_eq!(
        index.driver(DriverId(1)).unwrap().seen_nanos,
        silent_since * 1_000
    );
    assert!(index.nearest(at, 5, &Filter::any()).unwrap().is_empty());
    assert!(
        index
            .within(at, 10_000.0, MAX_K, &Filter::any())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        index.claim(DriverId(1), version),
        Err(Error::Stale(DriverId(1)))
    );
    assert_eq!(
        index.claim_nearest(at, 5, &Filter::any()).unwrap(),
        None,
        "nothing fresh to claim"
    );
    let reported_after = server_time_us(&mut control);
    index.update(DriverId(1), at).unwrap();
    let reported_before = server_time_us(&mut control);
    let stamped = index.driver(DriverId(1)).unwrap().seen_nanos / 1_000;
    assert!(
        (reported_after..=reported_before).contains(&stamped),
        "stamped by the server's clock: {stamped} µs, not between {reported_after} and \
         {reported_before}"
    );
    assert_eq!(ids(&index.nearest(at, 5, &Filter::any()).unwrap()), [1]);
    let _offered = index.claim(DriverId(1), version).unwrap();
}

#[test]
fn concurrent_claims_never_hand_a_driver_out_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const DRIVERS: u64 = 300;
    let index = Arc::new(shared(&server, "test:{race}"));
    let mut rng = Rng(5);
    for id in 0..DRIVERS {
        let at = point(rng.range(35.6, 35.7), rng.range(139.65, 139.75));
        index
            .insert(DriverId(id), at, DriverProfile::default())
            .unwrap();
    }
    let won = Arc::new(Mutex::new(Vec::new()));
    let lost = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let (index, won, lost) = (Arc::clone(&index), Arc::clone(&won), Arc::clone(&lost));
            thread::spawn(move || {
                let mut rng = Rng(100 + worker);
                // Every worker asks near one spot, so they see the same candidates and race.
                let rider = point(35.65 + rng.range(0.0, 1e-4), 139.7);
                loop {
                    let found = index.nearest(rider, 4, &Filter::any()).unwrap();
                    if found.is_empty() {
                        return;
                    }
                    for candidate in found {
                        match index.claim(candidate.driver, candidate.version) {
                            Ok(claim) => won.lock().push(claim.driver()),
                            Err(Error::ClaimLost(_)) => *lost.lock() += 1,
                            Err(other) => panic!("unexpected {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let won = won.lock().clone();
    let distinct: HashSet<DriverId> = won.iter().copied().collect();
    assert_eq!(distinct.len(), won.len(), "a driver was claimed twice");
    assert_eq!(won.len() as u64, DRIVERS, "every driver was claimed once");
    assert!(*lost.lock() > 0, "the workers never raced");
    for id in 0..DRIVERS {
        assert_eq!(
            index.driver(DriverId(id)).unwrap().state,
            DriverState::Offered
        );
    }
}

const CHILD_URL: &str = "GEOMATCH_REDIS_CHILD_URL";
const CHILD_NUMBER: &str = "GEOMATCH_REDIS_CHILD_NUMBER";

/// Where child `number` publishes how many drivers it has won ([`CHILD_DONE`] once it found
/// none left).
fn child_progress(number: u64) -> String {
    format!("test:child-progress:{number}")
}

/// Above any count of wins: the child has stopped claiming.
const CHILD_DONE: u64 = 1 << 40;

/// Run only as a child of `two_processes_never_claim_one_driver`: claims nearest drivers
/// until none is left and prints each id won. The two children go in lockstep, neither more
/// than one win ahead of the other while both claim, so they race for the same drivers
/// however the machine schedules them (unpaced, a loaded machine once ran one child to the
/// end before the other started).
#[test]
#[ignore = "a child process of two_processes_never_claim_one_driver"]
fn claiming_child() {
    let url = std::env::var(CHILD_URL).expect("started by the parent test");
    let me: u64 = std::env::var(CHILD_NUMBER).unwrap().parse().unwrap();
    let mut control = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let options = RedisOptions::default()
        .prefix("test:{processes}")
        .timeout(PATIENT);
    let index = RedisIndex::new(&url, options).unwrap();
    let rider = point(-33.87, 151.21);
    let mut wins = 0u64;
    loop {
        let patience = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let other: Option<u64> = redis::cmd("GET")
                .arg(child_progress(1 - me))
                .query(&mut control)
                .unwrap();
            if wins <= other.unwrap_or(0) + 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < patience,
                "the other child won nothing for 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some((candidate, _claim)) = index.claim_nearest(rider, 4, &Filter::any()).unwrap()
        else {
            break;
        };
        println!("won {}", candidate.driver);
        wins += 1;
        let () = redis::cmd("SET")
            .arg(child_progress(me))
            .arg(wins)
            .query(&mut control)
            .unwrap();
    }
    let () = redis::cmd("SET")
        .arg(child_progress(me))
        .arg(CHILD_DONE)
        .query(&mut control)
        .unwrap();
}

#[test]
fn two_processes_never_claim_one_driver() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const DRIVERS: u64 = 400;
    let index = shared(&server, "test:{processes}");
    let mut rng = Rng(9);
    for id in 0..DRIVERS {
        let at = point(rng.range(-33.9, -33.84), rng.range(151.18, 151.24));
        index
            .insert(DriverId(id), at, DriverProfile::default())
            .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2u64)
        .map(|number| {
            std::process::Command::new(&exe)
                .args(["--exact", "claiming_child", "--ignored", "--nocapture"])
                .env(CHILD_URL, server.url())
                .env(CHILD_NUMBER, number.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut won = Vec::new();
    let mut per_child = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        let mine: Vec<u64> = text
            .lines()
            .filter_map(|line| line.strip_prefix("won "))
            .map(|id| id.parse().unwrap())
            .collect();
        per_child.push(mine.len());
        won.extend(mine);
    }
    let distinct: HashSet<u64> = won.iter().copied().collect();
    assert_eq!(distinct.len(), won.len(), "a driver was claimed by both");
    assert_eq!(won.len() as u64, DRIVERS);
    // Both really claimed, in lockstep: neither more than one win ahead of the other until the
    // drivers ran out.
    let (fewer, more) = (
        per_child[0].min(per_child[1]),
        per_child[0].max(per_child[1]),
    );
    assert!(fewer > 0 && more <= fewer + 2, "{per_child:?}");
}

#[test]
fn a_server_restart_gives_errors_then_service_again() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let index = shared(&server, "test:{restart}");
    let at = point(-23.55, -46.63);
    for id in 0..20u32 {
        let nearby = point(-23.55 + 1e-4 * f64::from(id), -46.63);
        index
            .insert(DriverId(u64::from(id)), nearby, DriverProfile::default())
            .unwrap();
    }
    let version = index.driver(DriverId(0)).unwrap().version;
    server.stop();
    let down = Err(Error::Backend(BackendFailure::Connection));
    assert_eq!(index.nearest(at, 3, &Filter::any()).map(|_| ()), down);
    assert_eq!(index.update(DriverId(0), at), down);
    assert_eq!(index.claim(DriverId(0), version).map(|_| ()), down);
    assert_eq!(index.len().map(|_| ()), down);
    server.restart().unwrap();
    // The server kept its data (its append-only file) but not its scripts: the first call of
    // each script is answered NOSCRIPT and sent again as EVAL.
    assert_eq!(index.len().unwrap(), 20);
    assert_eq!(
        ids(&index.nearest(at, 3, &Filter::any()).unwrap()),
        [0, 1, 2]
    );
    let _offered = index.claim(DriverId(0), version).unwrap();
    // Pooled connections that died with the server: the next call still works.
    server.stop();
    server.restart().unwrap();
    assert_eq!(
        ids(&index.nearest(at, 3, &Filter::any()).unwrap()),
        [1, 2, 3]
    );
}

/// After a restart every pooled connection is dead. A call that leaves what one run leaves if
/// run twice (a position update, a state set, a read, a removal) is sent again on a new
/// connection and succeeds; a claim and an insert are not (a second run would answer "lost"
/// or "duplicate" for what the first did), so each fails as a lost connection, and here, its
/// request having gone to the dead connection, without having run.
#[test]
fn after_a_restart_only_calls_harmless_twice_are_sent_again() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let restart = |server: &mut RedisServer| {
        server.stop();
        server.restart().unwrap();
    };
    let index = shared(&server, "test:{resend}");
    let at = point(41.39, 2.17);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    restart(&mut server);
    let moved = point(41.391, 2.17);
    index.update(DriverId(1), moved).unwrap();
    restart(&mut server);
    let version = index
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    restart(&mut server);
    assert_eq!(index.driver(DriverId(1)).unwrap().point, moved);

    let lost = Err(Error::Backend(BackendFailure::Connection));
    restart(&mut server);
    assert_eq!(index.claim(DriverId(1), version).map(|_| ()), lost);
    let after = index.driver(DriverId(1)).unwrap();
    assert_eq!(
        (after.state, after.version),
        (DriverState::Available, version)
    );
    restart(&mut server);
    assert_eq!(
        index.insert(DriverId(2), at, DriverProfile::default()),
        lost
    );
    assert_eq!(
        index.driver(DriverId(2)).map(|_| ()),
        Err(Error::UnknownDriver(DriverId(2)))
    );
    restart(&mut server);
    let removed = index.remove(DriverId(1)).unwrap();
    assert_eq!((removed.point, removed.version), (moved, version));
    assert_eq!(index.len().unwrap(), 0);
}

/// The state word of driver `id` under `prefix`, read from the server directly.
fn stored_word(direct: &mut redis::Connection, prefix: &str, id: u64) -> u64 {
    redis::cmd("HGET")
        .arg(format!("{prefix}:words"))
        .arg(id)
        .query(direct)
        .unwrap()
}

/// A state set whose first run changed the driver but whose answer was lost with its
/// connection is sent again on a new one; the second run recognises the first and leaves the
/// driver one version up, as one call does, and answers the first run's version.
#[test]
fn a_resent_state_set_whose_first_run_applied_moves_the_version_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{resent-state}";
    let (proxy, index, mut direct) = behind_a_proxy(&server, prefix);
    index
        .insert(DriverId(1), point(52.52, 13.4), DriverProfile::default())
        .unwrap();
    // Pools a connection and loads the script, so the next set runs at its first sending.
    index
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    let before = stored_word(&mut direct, prefix, 1);
    let scripts_before = scripts_run(&server);

    // The request reaches the server after the latency and its answer would come back one
    // latency later: the connection is cut as soon as the server shows the first run's change.
    let answered = with_its_answer_lost(
        &proxy,
        {
            let index = Arc::clone(&index);
            move || index.set_state(DriverId(1), DriverState::Busy)
        },
        || stored_word(&mut direct, prefix, 1) != before,
        || {},
    )
    .unwrap();

    assert_eq!(
        scripts_run(&server) - scripts_before,
        2,
        "sent, then resent"
    );
    // A word is `version × 4 + state`: one version up from available (0) to busy (2).
    assert_eq!(stored_word(&mut direct, prefix, 1), before + 4 + 2);
    let now = index.driver(DriverId(1)).unwrap();
    assert_eq!((now.state, now.version), (DriverState::Busy, answered));
    // Another state set is a new request: it moves the version again.
    index
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    assert_eq!(stored_word(&mut direct, prefix, 1), before + 4 + 4);
}

/// A removal whose answer was lost with its connection after the server ran it is sent again
/// on a new one; the second run recognises the first and answers the record the first run
/// took, so a hand-off that meets a dropped connection still has the driver's state and
/// version to restore on its new node, instead of a driver gone from every node.
#[test]
fn a_resent_removal_whose_first_run_applied_answers_the_record_it_took() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{resent-take}";
    let (proxy, index, mut direct) = behind_a_proxy(&server, prefix);
    let at = point(52.52, 13.4);
    for id in [1, 2] {
        index
            .insert(DriverId(id), at, DriverProfile::default())
            .unwrap();
    }
    let busy = index.set_state(DriverId(1), DriverState::Busy).unwrap();
    // Pools a connection and loads the script, so the next removal runs at its first sending.
    let _ = index.remove(DriverId(2)).unwrap();
    let mut held = || -> bool {
        redis::cmd("HEXISTS")
            .arg(format!("{prefix}:words"))
            .arg(1)
            .query(&mut direct)
            .unwrap()
    };
    assert!(held());
    let scripts_before = scripts_run(&server);

    // As for the state set: cut the connection once the server shows the first run's change.
    let record = with_its_answer_lost(
        &proxy,
        {
            let index = Arc::clone(&index);
            move || index.remove(DriverId(1))
        },
        || !held(),
        || {},
    )
    .expect("the record the first run took");

    assert_eq!(
        scripts_run(&server) - scripts_before,
        2,
        "sent, then resent"
    );
    assert_eq!(
        (record.id, record.point, record.state, record.version),
        (DriverId(1), at, DriverState::Busy, busy)
    );
    assert_eq!(index.len().unwrap(), 0);
    // The record restores elsewhere with its state.
    let other = shared(&server, "test:{resent-take-2}");
    other.restore(record).unwrap();
    assert_eq!(other.driver(DriverId(1)).unwrap().state, DriverState::Busy);
    // A new removal is a new request: the driver is unknown.
    assert_eq!(
        index.remove(DriverId(1)).map(|_| ()),
        Err(Error::UnknownDriver(DriverId(1)))
    );
}

/// The number of fields of the hash or members of the sorted set `key`.
fn entries(direct: &mut redis::Connection, key: &str) -> u64 {
    let kind: String = redis::cmd("TYPE").arg(key).query(direct).unwrap();
    let count = if kind == "zset" { "ZCARD" } else { "HLEN" };
    redis::cmd(count).arg(key).query(direct).unwrap()
}

/// The server forgets a state set once no resend of it can come: each set (and each removal)
/// drops up to two expired requests besides remembering its own, so the request keys do not
/// grow with every set ever made, and the set remembered expires after four timeouts and the
/// margin.
#[test]
fn forgotten_state_sets_leave_the_request_keys() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{forgotten}";
    let index = shared(&server, prefix);
    index
        .insert(DriverId(1), point(52.52, 13.4), DriverProfile::default())
        .unwrap();
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let (requests, expiry) = (
        format!("{prefix}:requests"),
        format!("{prefix}:request-expiry"),
    );
    // Requests of long ago, expired (at 0 µs).
    let plant_expired = |direct: &mut redis::Connection, olds: &[&str]| {
        for old in olds {
            let () = redis::cmd("HSET")
                .arg(&requests)
                .arg(old)
                .arg(4)
                .query(direct)
                .unwrap();
            let () = redis::cmd("ZADD")
                .arg(&expiry)
                .arg(0)
                .arg(old)
                .query(direct)
                .unwrap();
        }
    };
    plant_expired(&mut direct, &["1 a", "1 b", "1 c"]);
    index.set_state(DriverId(1), DriverState::Busy).unwrap();
    assert_eq!(entries(&mut direct, &requests), 3 - 2 + 1);
    assert_eq!(entries(&mut direct, &expiry), 3 - 2 + 1);
    index
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    assert_eq!(entries(&mut direct, &requests), 2);
    assert_eq!(entries(&mut direct, &expiry), 2);

    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut direct).unwrap();
    let newest: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(&expiry)
        .arg(-1)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut direct)
        .unwrap();
    let remembered_us = newest[0].1 - (secs * 1_000_000 + micros);
    // The index's timeout, four times.
    let memory = PATIENT * 4 + REQUEST_MEMORY_MARGIN;
    assert!(remembered_us <= memory.as_micros() as u64);
    assert!(remembered_us + 1_000_000 > memory.as_micros() as u64);

    // A removal forgets up to two expired requests too, and remembers its own.
    plant_expired(&mut direct, &["1 d", "1 e"]);
    index.remove(DriverId(1)).unwrap();
    assert_eq!(entries(&mut direct, &requests), 2 + 2 - 2 + 1);
    assert_eq!(entries(&mut direct, &expiry), 2 + 2 - 2 + 1);
}

/// A state set whose answer was lost, with another matcher's state set of the same driver
/// between its first run and its resend: the resend still finds its first run and changes
/// nothing, so the other matcher's later set stands and the driver moved one version per call.
#[test]
fn a_resent_state_set_finds_its_first_run_after_another_set_of_the_driver() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{resent-after-another}";
    let (proxy, cut_off, mut direct) = behind_a_proxy(&server, prefix);
    let other = shared(&server, prefix);
    cut_off
        .insert(DriverId(1), point(52.52, 13.4), DriverProfile::default())
        .unwrap();
    // Pools a connection and loads the script, so the next set runs at its first sending.
    cut_off
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    let before = stored_word(&mut direct, prefix, 1);
    let scripts_before = scripts_run(&server);

    with_its_answer_lost(
        &proxy,
        {
            let index = Arc::clone(&cut_off);
            move || index.set_state(DriverId(1), DriverState::Offline)
        },
        || stored_word(&mut direct, prefix, 1) != before,
        // The trip's matcher sets the driver available again while the first answer is on
        // its way.
        || {
            other
                .set_state(DriverId(1), DriverState::Available)
                .unwrap();
        },
    )
    .unwrap();

    assert_eq!(
        scripts_run(&server) - scripts_before,
        3,
        "sent, the other set, then resent"
    );
    // Available (0) to offline (3) one version up, then back to available one version up.
    assert_eq!(
        stored_word(&mut direct, prefix, 1),
        before + 4 + 3 + 4 - 3,
        "the resend ran the offline set a second time, over the later set"
    );
    assert_eq!(
        cut_off.driver(DriverId(1)).unwrap().state,
        DriverState::Available
    );
}

#[test]
fn records_another_program_wrote_are_errors_not_panics() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let index = shared(&server, "test:{garbage}");
    let at = point(1.0, 1.0);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let version = index.driver(DriverId(1)).unwrap().version;
    let malformed = Err(Error::Backend(BackendFailure::Malformed));
    for garbage in ["", "1 2 3", "x y 0 4", "91 0 0 4", "1 1 300 4", "1 1 0 4 5"] {
        server
            .command(&["HSET", "test:{garbage}:drivers", "1", garbage])
            .unwrap();
        assert_eq!(
            index.driver(DriverId(1)).map(|_| ()),
            malformed,
            "{garbage:?}"
        );
    }
    server
        .command(&["HSET", "test:{garbage}:words", "1", "seven"])
        .unwrap();
    assert_eq!(index.driver(DriverId(1)).map(|_| ()), malformed);
    assert!(matches!(
        index.set_state(DriverId(1), DriverState::Busy),
        Err(Error::Backend(_))
    ));
    // A key of another type under the prefix: the server refuses.
    server.command(&["DEL", "test:{garbage}:words"]).unwrap();
    server
        .command(&["SET", "test:{garbage}:words", "x"])
        .unwrap();
    assert_eq!(
        index.driver(DriverId(1)).map(|_| ()),
        Err(Error::Backend(BackendFailure::Refused))
    );
    assert_eq!(
        index.claim(DriverId(1), version),
        Err(Error::Backend(BackendFailure::Refused))
    );
}

/// Redis does not undo the writes of a script that fails midway, so a key of another type
/// under the prefix must fail an insert or a position update before it writes anything: a
/// driver left in the GEO set alone is taken out neither by `remove` (it has no state) nor
/// by `remove_idle` (it has no last report), and a position moved in the GEO set but not in
/// the record is searched at one place and ranked at another.
#[test]
fn a_key_of_another_type_fails_an_insert_or_update_before_it_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{wrong-type}";
    let index = shared(&server, prefix);
    let at = point(1.0, 1.0);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let mut direct = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys = ["geo", "seen", "drivers", "words", "versions"];
    let dump = |direct: &mut redis::Connection| -> Vec<Vec<u8>> {
        keys.iter()
            .map(|key| {
                redis::cmd("DUMP")
                    .arg(format!("{prefix}:{key}"))
                    .query::<Option<Vec<u8>>>(direct)
                    .unwrap()
                    .unwrap_or_default()
            })
            .collect()
    };
    let before = dump(&mut direct);
    for key in ["geo", "seen", "drivers", "versions"] {
        let name = format!("{prefix}:{key}");
        let saved: Vec<u8> = redis::cmd("DUMP").arg(&name).query(&mut direct).unwrap();
        let () = redis::cmd("DEL").arg(&name).query(&mut direct).unwrap();
        // A list: no command the scripts use reads or writes one.
        let () = redis::cmd("RPUSH")
            .arg(&name)
            .arg("x")
            .query(&mut direct)
            .unwrap();
        assert_eq!(
            index.insert(DriverId(2), point(1.0, 1.001), DriverProfile::default()),
            Err(Error::Backend(BackendFailure::Refused)),
            "{key}"
        );
        if key != "versions" {
            assert_eq!(
                index.update(DriverId(1), point(2.0, 2.0)),
                Err(Error::Backend(BackendFailure::Refused)),
                "{key}"
            );
        }
        let () = redis::cmd("DEL").arg(&name).query(&mut direct).unwrap();
        let () = redis::cmd("RESTORE")
            .arg(&name)
            .arg(0)
            .arg(saved)
            .query(&mut direct)
            .unwrap();
        assert_eq!(dump(&mut direct), before, "a failed call with {key} wrote");
    }
    // A version counter that is not a number: the insert fails, and writes nothing else.
    let name = format!("{prefix}:versions");
    let saved: Vec<u8> = redis::cmd("DUMP").arg(&name).query(&mut direct).unwrap();
    let () = redis::cmd("SET")
        .arg(&name)
        .arg("x")
        .query(&mut direct)
        .unwrap();
    assert_eq!(
        index.insert(DriverId(2), point(1.0, 1.001), DriverProfile::default()),
        Err(Error::Backend(BackendFailure::Refused))
    );
    let () = redis::cmd("DEL").arg(&name).query(&mut direct).unwrap();
    let () = redis::cmd("RESTORE")
        .arg(&name)
        .arg(0)
        .arg(saved)
        .query(&mut direct)
        .unwrap();
    assert_eq!(dump(&mut direct), before);
    // Then both work.
    index
        .insert(DriverId(2), point(1.0, 1.001), DriverProfile::default())
        .unwrap();
    index.update(DriverId(1), point(1.0, 0.999)).unwrap();
    assert_eq!(ids(&index.nearest(at, 5, &Filter::any()).unwrap()), [1, 2]);
}

#[test]
fn a_slow_server_is_a_timeout_and_the_driver_can_be_read_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = infra_testkit::FaultProxy::start(server.addr()).unwrap();
    let options = RedisOptions::default()
        .prefix("test:{slow}")
        .staleness(HOUR)
        .timeout(Duration::from_millis(100));
    let index = RedisIndex::new(&format!("redis://{}", proxy.addr()), options).unwrap();
    let at = point(19.43, -99.13);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let version = index.driver(DriverId(1)).unwrap().version;
    proxy.set_latency(Duration::from_millis(300));
    assert_eq!(
        index.claim(DriverId(1), version).map(|_| ()),
        Err(Error::Backend(BackendFailure::Timeout))
    );
    proxy.set_latency(Duration::ZERO);
    // Whether the claim reached the server is unknown: read the driver back, and set it
    // available again as the docs say. No wait is needed for the claim the proxy still holds:
    // reaching the server before the state is set, it is overwritten; after, its version is
    // spent.
    let now = index.driver(DriverId(1)).unwrap();
    assert!(
        [DriverState::Available, DriverState::Offered].contains(&now.state),
        "{now:?}"
    );
    index
        .set_state(DriverId(1), DriverState::Available)
        .unwrap();
    assert_eq!(
        index.claim(DriverId(1), version),
        Err(Error::ClaimLost(DriverId(1))),
        "the version read before is spent"
    );
    assert_eq!(ids(&index.nearest(at, 1, &Filter::any()).unwrap()), [1]);
}

/// A batch of the matcher runs on the shared index through `Drivers`, with the outcome it has
/// on the in-process index over the same drivers.
#[test]
fn a_batch_on_redis_matches_as_on_the_in_process_index() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{batch}");
    let local = in_process();
    let mut rng = Rng(5);
    let mut city = |rng: &mut Rng| point(rng.range(52.45, 52.55), rng.range(13.3, 13.5));
    populate(&mut rng, 300, &mut city, &[&local, &redis]);
    let requests: Vec<Point> = (0..120).map(|_| city(&mut rng)).collect();
    let matcher = BatchMatcher::new(BatchConfig::default()).unwrap();
    let summary = |outcome: &BatchOutcome| {
        let matches: Vec<(usize, DriverId, f64)> = outcome
            .matches
            .iter()
            .map(|m| (m.request, m.candidate.driver, m.cost))
            .collect();
        (matches, outcome.unmatched.clone(), outcome.claims_lost)
    };
    let on_redis = matcher
        .match_batch(&redis, &requests, &Filter::any())
        .unwrap();
    let on_local = matcher
        .match_batch(&local, &requests, &Filter::any())
        .unwrap();
    assert_eq!(summary(&on_redis), summary(&on_local));
    assert!(on_redis.matches.len() > 100, "{}", on_redis.matches.len());
    // The batch's claims hold on the server: each matched driver is offered and accepts.
    for matched in &on_redis.matches {
        assert_eq!(
            redis.driver(matched.candidate.driver).unwrap().state,
            DriverState::Offered
        );
        redis.accept(&matched.claim).unwrap();
    }
}

/// A driver removed and inserted again starts above every version it had: a claim from its
/// earlier stay no longer holds, though the id is the same.
#[test]
fn a_claim_from_before_a_remove_and_insert_does_not_hold() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{reinsert}");
    let at = point(48.85, 2.35);
    redis
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let old = redis
        .claim(DriverId(1), redis.driver(DriverId(1)).unwrap().version)
        .unwrap();
    let gone = redis.remove(DriverId(1)).unwrap();
    redis
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let fresh = redis.driver(DriverId(1)).unwrap();
    assert!(fresh.version > gone.version, "{fresh:?} after {gone:?}");
    let new = redis.claim(DriverId(1), fresh.version).unwrap();
    assert_eq!(redis.accept(&old), Err(Error::ClaimInvalid(DriverId(1))));
    assert_eq!(redis.decline(old), Err(Error::ClaimInvalid(DriverId(1))));
    assert_eq!(
        redis.driver(DriverId(1)).unwrap().state,
        DriverState::Offered
    );
    redis.accept(&new).unwrap();
    assert_eq!(redis.driver(DriverId(1)).unwrap().state, DriverState::Busy);
}

/// How many times the server has run the `commands` (lowercase names), from `INFO
/// commandstats`; a script's own calls count too.
fn calls(server: &RedisServer, commands: &[&str]) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            commands.contains(&name).then_some(stats)
        })
        .filter_map(|stats| {
            let calls = stats.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

/// Scripts (`EVAL` and `EVALSHA`) the server has run.
fn scripts_run(server: &RedisServer) -> u64 {
    calls(server, &["eval", "evalsha"])
}

/// A query that needs the whole fleet (a radius above `MAX_SEARCH_M`, or too few drivers
/// within it for a nearest query) reads it `SCAN_PAGE` drivers per script, so other calls run
/// between its pages, and still answers as the in-process index.
#[test]
fn a_query_over_the_whole_fleet_reads_it_page_by_page() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{pages}");
    let local = in_process();
    let mut rng = Rng(17);
    let drivers = 4 * SCAN_PAGE as u64;
    let mut world = |rng: &mut Rng| point(rng.range(-60.0, 60.0), rng.range(-180.0, 180.0));
    populate(&mut rng, drivers, &mut world, &[&local, &redis]);
    let at = point(10.0, 10.0);
    // Pages of about SCAN_PAGE drivers: HSCAN's COUNT is a hint, so at least two scripts
    // and in practice about four.
    let pages_of = |query: &dyn Fn() -> Vec<Candidate>| {
        let before = scripts_run(&server);
        let found = query();
        (found, scripts_run(&server) - before)
    };
    let (far, scripts) = pages_of(&|| {
        redis
            .within(at, 20_000_000.0, MAX_K, &Filter::any())
            .unwrap()
    });
    assert_same(
        &far,
        &local
            .within(at, 20_000_000.0, MAX_K, &Filter::any())
            .unwrap(),
        "the whole fleet by radius",
    );
    assert!(far.len() > 2_000, "{} found", far.len());
    assert!(scripts >= 3, "{scripts} scripts for {drivers} drivers");
    // Limited, the paged answer is the local index's: the nearest, kept across pages.
    for limit in [1, 7, 500] {
        assert_same(
            &redis
                .within(at, 20_000_000.0, limit, &Filter::any())
                .unwrap(),
            &local
                .within(at, 20_000_000.0, limit, &Filter::any())
                .unwrap(),
            &format!("the {limit} nearest of the whole fleet by radius"),
        );
    }
    // Only drivers of class 7, of which there are none: a nearest query finds nothing within
    // 1,000 km, and pages through the fleet to be sure.
    let nobody = Filter::any().class(VehicleClass(7));
    let (none, scripts) = pages_of(&|| redis.nearest(at, 5, &nobody).unwrap());
    assert!(none.is_empty());
    assert!(scripts >= 4, "{scripts} scripts for {drivers} drivers");
    let filter = Filter::any().class(VehicleClass(2)).min_capacity(7);
    assert_same(
        &redis.nearest(at, MAX_K, &filter).unwrap(),
        &local.nearest(at, MAX_K, &filter).unwrap(),
        "every driver of a filter",
    );
}

/// A claim names the kind of index that issued it: the shared index refuses a claim of an
/// in-process index, and the other way round, even when the versions happen to agree.
#[test]
fn claims_of_the_other_backend_are_foreign() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{foreign}");
    let local = in_process();
    let at = point(48.85, 2.35);
    for index in [&redis as &dyn Drivers, &local] {
        index
            .insert(DriverId(1), at, DriverProfile::default())
            .unwrap();
    }
    let ours = redis
        .claim(DriverId(1), redis.driver(DriverId(1)).unwrap().version)
        .unwrap();
    let theirs = local
        .claim(DriverId(1), local.driver(DriverId(1)).unwrap().version)
        .unwrap();
    assert_eq!(redis.accept(&theirs), Err(Error::ForeignClaim(DriverId(1))));
    assert_eq!(redis.decline(theirs), Err(Error::ForeignClaim(DriverId(1))));
    assert_eq!(local.accept(&ours), Err(Error::ForeignClaim(DriverId(1))));
    // Each settles its own.
    redis.accept(&ours).unwrap();
    local.accept(&theirs).unwrap();
    assert_eq!(redis.driver(DriverId(1)).unwrap().state, DriverState::Busy);
}

/// Five times `SCAN_PAGE` drivers of the default profile (4 seats) in a 20 km city, in both
/// indexes.
fn busy_city(server: &RedisServer, prefix: &str) -> (RedisIndex, Index) {
    let (redis, local) = (shared(server, prefix), in_process());
    let mut rng = Rng(23);
    for id in 0..5 * SCAN_PAGE as u64 {
        let at = point(rng.range(52.4, 52.58), rng.range(13.3, 13.6));
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(id), at, DriverProfile::default())
                .unwrap();
        }
    }
    (redis, local)
}

/// A nearest query whose `k` drivers are nowhere near (a filter no driver passes) stops
/// widening its search once one script has examined `SCAN_PAGE` drivers, and pages through
/// the fleet instead: no script reads the whole city. Each driver examined costs two `HGET`s
/// (its word, then its record, which fails the filter), so the query makes about two per
/// driver of the fleet (the pages) plus at most two per driver of the budget (the search);
/// a search that widened over the whole city first would make four per driver.
#[test]
fn a_nearest_query_with_nothing_near_examines_a_bounded_number_of_drivers_per_script() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (redis, local) = busy_city(&server, "test:{bounded}");
    let drivers = 5 * SCAN_PAGE as u64;
    let at = point(52.5, 13.45);
    let nobody = Filter::any().min_capacity(200);
    let before = calls(&server, &["hget"]);
    assert!(redis.nearest(at, 1, &nobody).unwrap().is_empty());
    let hgets = calls(&server, &["hget"]) - before;
    assert!(
        hgets < 3 * drivers,
        "{hgets} HGETs for {drivers} drivers: one script read the whole city"
    );
    // The answer is still the in-process index's, for a filter some drivers pass.
    let four_seats = Filter::any().min_capacity(4);
    assert_same(
        &redis.nearest(at, 3, &four_seats).unwrap(),
        &local.nearest(at, 3, &four_seats).unwrap(),
        "nearest after the bounded search",
    );
}

/// A radius query holding more drivers than one script examines (`SCAN_PAGE`) pages through
/// the fleet instead of examining them all in one script, with the in-process index's answer.
#[test]
fn a_radius_query_over_a_city_examines_a_bounded_number_of_drivers_per_script() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (redis, local) = busy_city(&server, "test:{bounded-radius}");
    let drivers = 5 * SCAN_PAGE as u64;
    let (at, four_seats) = (point(52.5, 13.45), Filter::any().min_capacity(4));
    // Pages of about SCAN_PAGE drivers (HSCAN's COUNT is a hint): several scripts, not one.
    let before = scripts_run(&server);
    let found = redis.within(at, 50_000.0, MAX_K, &four_seats).unwrap();
    let scripts = scripts_run(&server) - before;
    assert!(scripts >= 3, "{scripts} scripts for {drivers} drivers");
    assert_same(
        &found,
        &local.within(at, 50_000.0, MAX_K, &four_seats).unwrap(),
        "the whole city by radius",
    );
    assert_eq!(found.len() as u64, drivers);
    // A radius holding fewer drivers than the budget is one script.
    let before = scripts_run(&server);
    let near = redis.within(at, 300.0, MAX_K, &four_seats).unwrap();
    assert_eq!(scripts_run(&server) - before, 1);
    assert!(!near.is_empty());
    assert_same(
        &near,
        &local.within(at, 300.0, MAX_K, &four_seats).unwrap(),
        "a small radius",
    );
}

/// Scripts a query runs on the server, with its answer.
fn scripts_of(
    server: &RedisServer,
    query: impl FnOnce() -> Vec<Candidate>,
) -> (Vec<Candidate>, u64) {
    let before = scripts_run(server);
    let found = query();
    (found, scripts_run(server) - before)
}

/// `within(radius, limit)` in a busy city (more drivers than a page) answers as the local
/// index does, with no more scripts than `nearest(limit)`: it never reads the whole fleet page
/// by page (every admitted driver's record sent over the wire) to keep `limit` of them.
fn a_limited_radius_query_costs_what_nearest_costs(prefix: &str, radius_m: f64, limit: usize) {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (redis, local) = busy_city(&server, prefix);
    let (at, four_seats) = (point(52.5, 13.45), Filter::any().min_capacity(4));
    let (nearest, nearest_scripts) =
        scripts_of(&server, || redis.nearest(at, limit, &four_seats).unwrap());
    let (found, within_scripts) = scripts_of(&server, || {
        redis.within(at, radius_m, limit, &four_seats).unwrap()
    });
    assert_same(
        &found,
        &local.within(at, radius_m, limit, &four_seats).unwrap(),
        "the nearest by radius",
    );
    assert_eq!(ids(&found), ids(&nearest));
    assert!(
        within_scripts <= nearest_scripts,
        "{within_scripts} scripts for within({radius_m} m, limit {limit}) against \
         {nearest_scripts} for nearest({limit}): it paged through the {} drivers",
        5 * SCAN_PAGE
    );
}

#[test]
fn a_radius_query_with_a_small_limit_in_a_busy_city_does_not_read_the_fleet() {
    a_limited_radius_query_costs_what_nearest_costs("test:{limited-radius}", 50_000.0, 1);
}

/// A radius wider than `MAX_SEARCH_M` (a continent) with a small limit.
#[test]
fn a_continent_wide_radius_with_a_small_limit_does_not_read_the_fleet() {
    a_limited_radius_query_costs_what_nearest_costs("test:{continent-radius}", 3_000_000.0, 3);
}

/// Claims name the index (the prefix) that issued them: one city's claim is refused on
/// another city's index before any round trip, though the driver id and the version agree,
/// and another index on the same prefix settles it.
#[test]
fn a_claim_of_one_prefix_is_foreign_to_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let berlin = shared(&server, "test:{berlin}");
    let paris = shared(&server, "test:{paris}");
    berlin
        .insert(DriverId(1), point(52.52, 13.405), DriverProfile::default())
        .unwrap();
    paris
        .insert(DriverId(1), point(48.85, 2.35), DriverProfile::default())
        .unwrap();
    let berlins = berlin
        .claim(DriverId(1), berlin.driver(DriverId(1)).unwrap().version)
        .unwrap();
    let paris_claim = paris
        .claim(DriverId(1), paris.driver(DriverId(1)).unwrap().version)
        .unwrap();
    assert_eq!(
        paris.accept(&berlins),
        Err(Error::ForeignClaim(DriverId(1)))
    );
    assert_eq!(
        paris.decline(berlins),
        Err(Error::ForeignClaim(DriverId(1)))
    );
    assert_eq!(
        paris.driver(DriverId(1)).unwrap().state,
        DriverState::Offered
    );
    paris.accept(&paris_claim).unwrap();
    shared(&server, "test:{berlin}").accept(&berlins).unwrap();
    assert_eq!(berlin.driver(DriverId(1)).unwrap().state, DriverState::Busy);
}

/// A claim names its index by the prefix, not the server: an index on another server under
/// the same prefix does not refuse it as foreign but takes it to its own server (where the
/// driver's word differs, so it is invalid there, not settled).
#[test]
fn a_claim_names_its_prefix_not_its_server() {
    let (Some(first), Some(second)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let (here, there) = (
        shared(&first, "test:{region}"),
        shared(&second, "test:{region}"),
    );
    for index in [&here, &there] {
        index
            .insert(DriverId(1), point(52.52, 13.405), DriverProfile::default())
            .unwrap();
    }
    let claim = here
        .claim(DriverId(1), here.driver(DriverId(1)).unwrap().version)
        .unwrap();
    assert_eq!(there.accept(&claim), Err(Error::ClaimInvalid(DriverId(1))));
    here.accept(&claim).unwrap();
}

/// A restart that comes back from older persisted state rolls the driver's word back; the
/// claim made before it must not settle the offer made after it.
#[test]
fn a_claim_from_before_a_rollback_restart_does_not_hold() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{rollback}");
    redis
        .insert(DriverId(8), point(52.52, 13.405), DriverProfile::default())
        .unwrap();
    // From here on, writes are not persisted (as between two snapshots).
    server
        .command(&["CONFIG", "SET", "appendonly", "no"])
        .unwrap();
    let before = redis
        .claim(DriverId(8), redis.driver(DriverId(8)).unwrap().version)
        .unwrap();
    server.kill();
    server.restart().unwrap();
    let rolled_back = redis.driver(DriverId(8)).unwrap();
    assert_eq!(
        rolled_back.state,
        DriverState::Available,
        "the claim was lost"
    );
    let after = redis.claim(DriverId(8), rolled_back.version).unwrap();
    assert_eq!(redis.accept(&before), Err(Error::ClaimInvalid(DriverId(8))));
    assert_eq!(redis.decline(before), Err(Error::ClaimInvalid(DriverId(8))));
    redis.accept(&after).unwrap();
}

/// The same after the server lost everything (`FLUSHALL`, as a failover to an empty
/// replica leaves it): the version counter starts again, the claims do not repeat.
#[test]
fn a_claim_from_before_a_data_loss_does_not_hold_after_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{loss}");
    let at = point(52.52, 13.405);
    redis
        .insert(DriverId(8), at, DriverProfile::default())
        .unwrap();
    let before = redis
        .claim(DriverId(8), redis.driver(DriverId(8)).unwrap().version)
        .unwrap();
    server.command(&["FLUSHALL"]).unwrap();
    redis
        .insert(DriverId(8), at, DriverProfile::default())
        .unwrap();
    let after = redis
        .claim(DriverId(8), redis.driver(DriverId(8)).unwrap().version)
        .unwrap();
    assert_eq!(redis.accept(&before), Err(Error::ClaimInvalid(DriverId(8))));
    redis.accept(&after).unwrap();
}

/// `restore` refuses what `Index::restore` refuses: a record whose state is not the one its
/// version encodes.
#[test]
fn restore_refuses_an_inconsistent_record_as_the_in_process_index() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let from = shared(&server, "test:{restore-from}");
    let to = shared(&server, "test:{restore-to}");
    from.insert(DriverId(5), point(52.52, 13.405), DriverProfile::default())
        .unwrap();
    let mut record = from.remove(DriverId(5)).unwrap();
    record.state = DriverState::Busy;
    assert_eq!(
        in_process().restore(record),
        Err(Error::InconsistentRecord(DriverId(5)))
    );
    assert_eq!(
        to.restore(record),
        Err(Error::InconsistentRecord(DriverId(5)))
    );
    assert_eq!(
        to.driver(DriverId(5)),
        Err(Error::UnknownDriver(DriverId(5)))
    );
}

/// A restored record older than the driver's last stay gets a version above every version
/// the index issued it, as in `Index`: a claim from that stay does not hold.
#[test]
fn restoring_an_older_record_does_not_revive_an_old_claim() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{older}");
    let local = in_process();
    for index in [&redis as &dyn Drivers, &local] {
        index
            .insert(DriverId(3), point(52.52, 13.405), DriverProfile::default())
            .unwrap();
        let earlier = index.driver(DriverId(3)).unwrap();
        let old = index.claim(DriverId(3), earlier.version).unwrap();
        let left = index.remove(DriverId(3)).unwrap();
        index.restore(earlier).unwrap();
        let back = index.driver(DriverId(3)).unwrap();
        assert!(back.version > left.version, "{back:?} after {left:?}");
        assert_eq!(back.state, DriverState::Available);
        let new = index.claim(DriverId(3), back.version).unwrap();
        assert_eq!(index.accept(&old), Err(Error::ClaimInvalid(DriverId(3))));
        index.accept(&new).unwrap();
    }
}

/// A restored record's last report is placed by its age, never by its clock reading: one
/// ten years ahead of the server's clock (another clock's, a bad record) neither keeps the
/// driver fresh until then nor goes past the server's now.
#[test]
fn a_restored_record_goes_by_its_age_not_its_clock_reading() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{future}");
    redis
        .insert(DriverId(4), point(52.52, 13.405), DriverProfile::default())
        .unwrap();
    let mut record = redis.remove(DriverId(4)).unwrap();
    let ten_years_ns = 10 * 365 * 24 * 3_600 * 1_000_000_000;
    record.seen_nanos += ten_years_ns;
    redis.restore(record).unwrap();
    let restored = redis.driver(DriverId(4)).unwrap().seen_nanos;
    let client = redis::Client::open(server.url()).unwrap();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    let server_now_ns = (seconds * 1_000_000 + micros) * 1_000;
    assert!(
        restored <= server_now_ns,
        "last report {restored} ns, after the server's now {server_now_ns} ns"
    );
    let reported = record.seen_nanos - ten_years_ns;
    assert!(
        restored >= reported,
        "{restored} ns, before the last report {reported} ns"
    );
}

/// Two drivers at the same reported distance (their squared chords differ by a rounding)
/// come out by id, in the order the in-process index gives.
#[test]
fn drivers_at_the_same_reported_distance_come_out_by_id() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{ties}");
    let local = in_process();
    // Symmetric about the query's meridian, so their distances agree to the bit.
    let (lat, lng, offset) = (
        -0.412_919_348_221_493,
        -7.590_221_209_104_953_5,
        0.004_614_555_575_488_124,
    );
    for (id, at) in [(2, point(lat, lng + offset)), (1, point(lat, lng - offset))] {
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(id), at, DriverProfile::default())
                .unwrap();
        }
    }
    let found = redis.nearest(point(lat, lng), 2, &Filter::any()).unwrap();
    assert_eq!(found[0].distance_m, found[1].distance_m);
    assert_eq!(ids(&found), [1, 2]);
    assert_same(
        &found,
        &local.nearest(point(lat, lng), 2, &Filter::any()).unwrap(),
        "a tie",
    );
    assert_same(
        &redis
            .within(point(lat, lng), 1_000.0, MAX_K, &Filter::any())
            .unwrap(),
        &local
            .within(point(lat, lng), 1_000.0, MAX_K, &Filter::any())
            .unwrap(),
        "a tie within a radius",
    );
}

/// Drivers whose apps went silent without going offline leave with `remove_idle`, judged on
/// the server's clock by the sorted set of last reports, a page of `SCAN_PAGE` per script,
/// whatever their state; the fresh stay, and a driver inserted again starts above the
/// versions it had. Without it they stay in every key for ever, and a query near them passes
/// over them one by one.
#[test]
fn remove_idle_takes_out_the_drivers_not_heard_from_a_page_at_a_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = "test:{idle}";
    let index = shared(&server, prefix);
    let silent = SCAN_PAGE as u64 + 200;
    let mut rng = Rng(41);
    for id in 0..=silent {
        let at = point(rng.range(48.80, 48.90), rng.range(2.28, 2.42));
        index
            .insert(DriverId(id), at, DriverProfile::default())
            .unwrap();
    }
    index.set_state(DriverId(7), DriverState::Busy).unwrap();
    let old_version = index.driver(DriverId(7)).unwrap().version;
    // Every driver but the last went silent ten minutes ago: its last report is put back ten
    // minutes on the server's clock (the test cannot wait for the server's clock to move).
    let client = redis::Client::open(server.url()).unwrap();
    let mut direct = client.get_connection().unwrap();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(&mut direct).unwrap();
    let ten_minutes_ago = (seconds - 600) * 1_000_000 + micros;
    let mut backdate = redis::cmd("ZADD");
    backdate.arg(format!("{prefix}:seen"));
    for id in 0..silent {
        backdate.arg(ten_minutes_ago).arg(id);
    }
    let _: u64 = backdate.query(&mut direct).unwrap();

    // Nobody has been silent for an hour: nothing goes (and the server has the script).
    assert!(index.remove_idle(HOUR).unwrap().is_empty());
    let before = scripts_run(&server);
    let gone = index.remove_idle(Duration::from_secs(300)).unwrap();
    let scripts = scripts_run(&server) - before;
    let mut removed: Vec<u64> = gone.iter().map(|record| record.id.0).collect();
    removed.sort_unstable();
    assert_eq!(
        removed,
        (0..silent).collect::<Vec<_>>(),
        "exactly the silent drivers"
    );
    assert_eq!(
        scripts, 2,
        "one script per page of {SCAN_PAGE} idle drivers"
    );
    let busy = gone.iter().find(|record| record.id == DriverId(7)).unwrap();
    assert_eq!(busy.state, DriverState::Busy);
    assert_eq!(busy.seen_nanos, ten_minutes_ago * 1_000);
    assert!(busy.age >= Duration::from_secs(590), "age {:?}", busy.age);
    assert_eq!(index.len().unwrap(), 1);
    for key in ["geo", "seen"] {
        let members: u64 = redis::cmd("ZCARD")
            .arg(format!("{prefix}:{key}"))
            .query(&mut direct)
            .unwrap();
        assert_eq!(members, 1, "{key} still holds the removed drivers");
    }
    let records: u64 = redis::cmd("HLEN")
        .arg(format!("{prefix}:drivers"))
        .query(&mut direct)
        .unwrap();
    assert_eq!(records, 1);
    assert_eq!(
        ids(&index
            .nearest(point(48.85, 2.35), 5, &Filter::any())
            .unwrap()),
        [silent]
    );
    assert!(
        index
            .remove_idle(Duration::from_secs(300))
            .unwrap()
            .is_empty()
    );

    index
        .insert(DriverId(7), point(48.85, 2.35), DriverProfile::default())
        .unwrap();
    let again = index.driver(DriverId(7)).unwrap().version;
    assert!(
        again.to_bits() > old_version.to_bits(),
        "a driver inserted again after remove_idle took {again:?}, not above {old_version:?}"
    );
}

/// Claims lost to races are what a fleet of matcher processes on one Redis has most of: the
/// shared index counts its claims in `infra_geomatch_claims_total` as the in-process index
/// does, `won` and `lost` (the word changed since the query), under its `index` name.
#[cfg(feature = "metrics")]
#[test]
fn claims_on_the_shared_index_are_counted_by_outcome() {
    use infra_geomatch::metrics::{CLAIMS_TOTAL, DEFAULT_INDEX_NAME, INDEX_LABEL, OUTCOME_LABEL};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let index = metrics::with_local_recorder(&recorder, || shared(&server, "test:{counted}"));
    let at = point(45.46, 9.19);
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let seen = index.driver(DriverId(1)).unwrap().version;
    let won = index.claim(DriverId(1), seen).unwrap();
    assert_eq!(
        index.claim(DriverId(1), seen),
        Err(Error::ClaimLost(DriverId(1)))
    );
    index.decline(won).unwrap();
    // A snapshot of the debugging recorder resets its counters: one for both outcomes.
    let snapshot = recorder.snapshotter().snapshot().into_vec();
    let count = |outcome: &str| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let labelled = |name: &str, wanted: &str| {
                key.labels()
                    .any(|label| label.key() == name && label.value() == wanted)
            };
            (key.name() == CLAIMS_TOTAL
                && labelled(INDEX_LABEL, DEFAULT_INDEX_NAME)
                && labelled(OUTCOME_LABEL, outcome))
            .then_some(value)
        })
    };
    assert_eq!(count("won"), Some(&DebugValue::Counter(1)), "claims won");
    assert_eq!(count("lost"), Some(&DebugValue::Counter(1)), "claims lost");
}

/// A hand-off written against `Drivers` moves a driver from an in-process index to the shared
/// one as between two in-process indexes: the record's age says how long ago the driver
/// reported, not its `seen_nanos`, which is on the in-process index's clock (counted from
/// that clock's start). A driver that just reported arrives fresh; one silent for two hours
/// arrives stale, and idle for `remove_idle`.
#[test]
fn a_record_restored_on_the_shared_index_keeps_its_age() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{handed}");
    let clock = infra_common::ManualClock::new();
    let local = Index::with_clock(Config::default().staleness(HOUR), clock.clone()).unwrap();
    let at = point(41.39, 2.17);
    for id in [1, 2] {
        local
            .insert(DriverId(id), at, DriverProfile::default())
            .unwrap();
    }
    clock.advance(2 * HOUR);
    local.update(DriverId(1), at).unwrap();
    for id in [1, 2] {
        let record = Drivers::remove(&local, DriverId(id)).unwrap();
        Drivers::restore(&redis, record).unwrap();
    }
    assert_eq!(
        ids(&redis.nearest(at, 5, &Filter::any()).unwrap()),
        [1],
        "the driver that just reported arrives fresh, the one silent for two hours stale"
    );
    let ages: Vec<(u64, Duration)> = [1, 2]
        .map(|id| (id, redis.driver(DriverId(id)).unwrap().age))
        .into();
    assert!(ages[0].1 < Duration::from_secs(60), "{ages:?}");
    assert!(ages[1].1 >= 2 * HOUR - Duration::from_secs(60), "{ages:?}");
    let idle: Vec<DriverId> = redis
        .remove_idle(HOUR)
        .unwrap()
        .iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(idle, [DriverId(2)]);
}

/// Drivers at mirrored offsets from the query point are as near as each other to within a
/// rounding, or exactly: the shared index takes the nearer by the distance results report,
/// and of equals the smaller id; the in-process index, choosing by squared chords, sometimes
/// takes the other one, a nanometer or so farther or exactly as far.
#[test]
fn of_two_drivers_as_near_to_a_rounding_the_nearer_then_the_smaller_id_is_first() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{mirrored}");
    let mut rng = Rng(31);
    let mut parted = 0;
    for case in 0..300 {
        let local = in_process();
        let (lat, lng) = (rng.range(-60.0, 60.0), rng.range(-150.0, 150.0));
        let query = point(lat, lng);
        let (d_lat, d_lng) = (rng.range(0.0, 1.0), rng.range(0.0, 1.0));
        let drivers = [
            (1, point(lat + d_lat, lng - d_lng)),
            (2, point(lat + d_lat, lng + d_lng)),
            (3, point(lat - d_lat, lng + d_lng)),
        ];
        for (id, at) in drivers {
            for index in [&redis as &dyn Drivers, &local] {
                index
                    .insert(DriverId(id), at, DriverProfile::default())
                    .unwrap();
            }
        }
        let exact = drivers
            .iter()
            .map(|&(id, at)| (DriverId(id), query.distance_m(at)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .unwrap();
        let ours = redis.nearest(query, 1, &Filter::any()).unwrap();
        assert_eq!((ours[0].driver, ours[0].distance_m), exact, "case {case}");
        let theirs = local.nearest(query, 1, &Filter::any()).unwrap();
        let gap = theirs[0].distance_m - exact.1;
        assert!((0.0..1e-8).contains(&gap), "case {case}: {gap} m farther");
        if theirs[0].driver != exact.0 {
            parted += 1;
        }
        for (id, _) in drivers {
            redis.remove(DriverId(id)).unwrap();
        }
    }
    // The difference the docs describe: if the in-process index came to pick by exact
    // distance and id too, they should say the two agree here.
    assert!(parted > 0, "the two indexes agree in every case");
}

/// A shared index under `prefix`, and an in-process one of coarse cells (resolution 2) where
/// a query near the antipode of its drivers walks few cells.
fn shared_and_coarse(server: &RedisServer, prefix: &str) -> (RedisIndex, Index) {
    let local = in_process_at(h3o::Resolution::Two);
    (shared(server, prefix), local)
}

/// Near the query point's antipode, where squared chords resolve only tenths of a meter, both
/// indexes pick their `k` by the distances results report: on a cluster a few tens of
/// centimeters across at the antipode, each answers the exact `k` nearest (ties by id) for
/// every `k`, with or without a radius.
#[test]
fn near_the_antipode_the_k_th_place_goes_by_exact_distance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (redis, local) = shared_and_coarse(&server, "test:{antipode-k}");
    let query = point(30.0, 40.0);
    let mut rng = Rng(23);
    let mut exact = Vec::new();
    for id in 0..120u64 {
        // Within about 11 cm of the antipode, (-30, -140), each way.
        let at = point(
            -30.0 + rng.range(-1e-6, 1e-6),
            -140.0 + rng.range(-1e-6, 1e-6),
        );
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(id), at, DriverProfile::default())
                .unwrap();
        }
        exact.push((DriverId(id), query.distance_m(at)));
    }
    exact.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let strip = |found: &[Candidate]| -> Vec<(DriverId, f64)> {
        found.iter().map(|c| (c.driver, c.distance_m)).collect()
    };
    for k in 1..=exact.len() {
        let answers = [
            redis.nearest(query, k, &Filter::any()).unwrap(),
            redis
                .within(query, 30_000_000.0, k, &Filter::any())
                .unwrap(),
            local.nearest(query, k, &Filter::any()).unwrap(),
            local
                .within(query, 30_000_000.0, k, &Filter::any())
                .unwrap(),
        ];
        for (found, what) in answers.iter().zip([
            "shared",
            "shared, radius",
            "in-process",
            "in-process, radius",
        ]) {
            assert_eq!(strip(found), exact[..k], "{what}, k {k}");
        }
    }
}

/// A radius reaching almost to the query point's antipode splits drivers a centimeter apart
/// there by the distances the results report, as on the in-process index: squared chords
/// resolve only tenths of a meter so near the antipode, and decide nothing there.
#[test]
fn a_radius_near_the_antipode_answers_as_the_in_process_index() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (redis, local) = shared_and_coarse(&server, "test:{antipode}");
    let query = point(30.0, 40.0);
    let mut distances = Vec::new();
    for i in 0..200u32 {
        // About 1.2 cm a step away from the antipode.
        let off = 1e-7 * f64::from(i + 1);
        let at = point(-30.0 + off, -140.0 - off * 0.5);
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(i.into()), at, DriverProfile::default())
                .unwrap();
        }
        distances.push(query.distance_m(at));
    }
    let mut sorted = distances.clone();
    sorted.sort_by(f64::total_cmp);
    for split in [5, 60, 150, 199] {
        // Half-way between two drivers' distances, millimeters from each.
        let radius = (sorted[split - 1] + sorted[split]) / 2.0;
        let found = redis.within(query, radius, MAX_K, &Filter::any()).unwrap();
        assert!(
            found.iter().all(|c| c.distance_m <= radius),
            "a driver beyond {radius} m"
        );
        assert_eq!(found.len(), split, "radius {radius} m");
        assert_same(
            &found,
            &local.within(query, radius, MAX_K, &Filter::any()).unwrap(),
            &format!("radius {radius} m"),
        );
    }
}

/// Redis's radius search builds the box around its circle from the cosines of the latitudes
/// the circle reaches: past a pole the cosine turns negative, the box turns inside out and
/// Redis drops the cells east and west of the query point's (a search 600 km around
/// (-84.62, -150.94) found nothing where 550 km and 700 km found two drivers). Queries
/// whose circle reaches past a pole, on a fleet around both poles, answer as the in-process
/// index does.
#[test]
fn searches_reaching_past_a_pole_find_every_driver() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{poles}");
    let local = in_process();
    let mut rng = Rng(29);
    let mut polar = |rng: &mut Rng| {
        let lat = rng.range(75.0, MAX_GEO_LAT);
        point(
            if rng.below(2) == 0 { lat } else { -lat },
            rng.range(-180.0, 180.0),
        )
    };
    populate(&mut rng, 1000, &mut polar, &[&local, &redis]);
    for query in 0..120 {
        let at = polar(&mut rng);
        // A circle reaching a tenth of a degree to two degrees past the pole (Redis's
        // sphere), within the widest search.
        let past =
            (90.0 - at.lat().abs() + rng.range(0.1, 2.0)).to_radians() * REDIS_EARTH_RADIUS_M;
        let radius = past.min(990_000.0);
        let filter = filters(&mut rng);
        assert_same(
            &redis.within(at, radius, MAX_K, &filter).unwrap(),
            &local.within(at, radius, MAX_K, &filter).unwrap(),
            &format!("query {query} at {at:?}, radius {radius}"),
        );
        let k = [1, 5, 20][query % 3];
        assert_same(
            &redis.nearest(at, k, &filter).unwrap(),
            &local.nearest(at, k, &filter).unwrap(),
            &format!("query {query} at {at:?}, k {k}"),
        );
    }
    // The search that found nothing, with the two drivers it missed.
    let at = point(-84.617_202_386_932_99, -150.937_456_303_867_9);
    for (id, (lat, lng)) in [
        (1000, (-82.430_969_263_233_66, 175.334_771_769_007_94)),
        (1001, (-84.421_501_902_731_02, 153.605_517_194_601_93)),
    ] {
        for index in [&redis as &dyn Drivers, &local] {
            index
                .insert(DriverId(id), point(lat, lng), DriverProfile::default())
                .unwrap();
        }
    }
    let found = redis.within(at, 600_000.0, MAX_K, &Filter::any()).unwrap();
    assert!(
        ids(&found).contains(&1000) && ids(&found).contains(&1001),
        "{found:?}"
    );
    assert_same(
        &found,
        &local.within(at, 600_000.0, MAX_K, &Filter::any()).unwrap(),
        "600 km around (-84.62, -150.94)",
    );
}

/// The corners where Redis's grid ends twice: the northern and southern edges of its latitudes
/// (and the equator) on both sides of the antimeridian, with drivers within meters of the corner and queries from
/// anywhere in that corner, nearest and by radius: the in-process index's answers.
#[test]
fn the_corners_at_the_antimeridian_answer_as_the_in_process_index() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = shared(&server, "test:{corner}");
    let local = in_process_at(h3o::Resolution::Five);
    let mut rng = Rng(29);
    let mut corner = |rng: &mut Rng| {
        let lat = match rng.below(4) {
            0 => -MAX_GEO_LAT + rng.range(0.0, 1e-6),
            1 => -MAX_GEO_LAT + rng.range(0.0, 0.05),
            2 => rng.range(-MAX_GEO_LAT, -83.0),
            _ => 0.0,
        };
        let lat = if rng.below(2) == 0 { lat } else { -lat };
        let lng = match rng.below(4) {
            0 => 180.0 - rng.range(0.0, 1e-6),
            1 => -180.0 + rng.range(0.0, 1e-6),
            2 => 180.0 - rng.range(0.0, 2.0),
            _ => -180.0 + rng.range(0.0, 2.0),
        };
        point(lat, lng)
    };
    populate(&mut rng, 300, &mut corner, &[&local, &redis]);
    assert_queries_agree(
        &mut rng,
        200,
        &mut corner,
        &[1, 5, 30, 200],
        &[1.0, 100.0, 5_000.0, 60_000.0, 400_000.0],
        [&redis, &local],
    );
}
