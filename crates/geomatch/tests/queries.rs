//! Nearest and radius queries equal a brute-force scan, worldwide: random places, the
//! antimeridian, the poles and the neighbourhoods of the twelve pentagons, at several
//! resolutions, with states, filters and staleness in play.

use std::time::Duration;

use h3o::{LatLng, Resolution};
use infra_common::ManualClock;
use infra_geomatch::{
    Candidate, Config, DriverId, DriverProfile, DriverState, Error, Filter, Index, MAX_K, Point,
    VehicleClass,
};
use proptest::prelude::*;

/// The spherical Vincenty formula on the IUGG mean sphere, written from the formula: unlike the
/// haversine, well conditioned near the antipodes, where the coarse-resolution tests and the
/// queries from the far side of the globe reach.
fn vincenty_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
    let dl = (b.1 - a.1).to_radians();
    let y = ((p2.cos() * dl.sin()).powi(2)
        + (p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos()).powi(2))
    .sqrt();
    let x = p1.sin() * p2.sin() + p1.cos() * p2.cos() * dl.cos();
    6_371_008.8 * y.atan2(x)
}

fn tolerance(d: f64) -> f64 {
    (d * 1e-9).max(1e-6)
}

#[derive(Clone, Debug)]
struct Driver {
    at: (f64, f64),
    class: u8,
    capacity: u8,
    state: DriverState,
    /// Heard from at this many seconds after the start.
    seen_s: u64,
}

// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
/// Where a scenario's points cluster.
fn anchor() -> impl Strategy<Value = (f64, f64)> {
    let pentagons: Vec<(f64, f64)> = Resolution::Nine
        .pentagons()
        .map(|cell| {
            let ll = LatLng::from(cell);
            (ll.lat(), ll.lng())
        })
        .collect();
    prop_oneof![
        (-90.0f64..=90.0, -180.0f64..=180.0),
        (
            -80.0f64..80.0,
            prop_oneof![Just(180.0), Just(-180.0), Just(179.999)]
        )
            .prop_map(|(lat, lng)| (lat, lng)),
        (
            prop_oneof![Just(90.0), Just(-90.0), Just(89.995), Just(-89.99)],
            -180.0f64..=180.0
        ),
        proptest::sample::select(pentagons),
    ]
}

/// A point within about `spread` degrees of `anchor`, wrapped onto valid coordinates.
fn near(anchor: (f64, f64), spread: f64) -> impl Strategy<Value = (f64, f64)> {
    (-spread..=spread, -spread..=spread).prop_map(move |(dlat, dlng)| {
        let lat = (anchor.0 + dlat).clamp(-90.0, 90.0);
        let mut lng = anchor.1 + dlng;
        if lng > 180.0 {
            lng -= 360.0;
        } else if lng < -180.0 {
            lng += 360.0;
        }
        (lat, lng)
    })
}

// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
fn driver(anchor: (f64, f64), spread: f64) -> impl Strategy<Value = Driver> {
    (
        near(anchor, spread),
        0u8..3,
        1u8..8,
        prop_oneof![
            6 => Just(DriverState::Available),
            1 => Just(DriverState::Offered),
            1 => Just(DriverState::Busy),
            1 => Just(DriverState::Offline),
        ],
        0u64..60,
    )
        .prop_map(|(at, class, capacity, state, seen_s)| Driver {
            at,
            class,
            capacity,
            state,
            seen_s,
        })
}

#[derive(Clone, Debug)]
struct Scenario {
    resolution: Resolution,
    drivers: Vec<Driver>,
    query: (f64, f64),
    k: usize,
    radius_m: f64,
    class: Option<u8>,
    min_capacity: u8,
    /// The index's locator: the default, none, or one slot that every square shares, whose
    /// guess is whatever cell was found last, anywhere.
    locator_slots: usize,
}

// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
fn scenario() -> impl Strategy<Value = Scenario> {
    (
        anchor(),
        prop_oneof![Just(0.002), Just(0.02), Just(0.3), Just(3.0)],
        prop_oneof![
            4 => Just(Resolution::Nine),
            1 => Just(Resolution::Seven),
            1 => Just(Resolution::Ten),
            1 => Just(Resolution::Four),
        ],
        prop_oneof![
            2 => Just(Config::default().locator_slot_count()),
            1 => Just(0),
            1 => Just(1),
        ],
    )
        .prop_flat_map(|(anchor, spread, resolution, locator_slots)| {
            (
                proptest::collection::vec(driver(anchor, spread), 0..200),
                near(anchor, spread * 1.5),
                1usize..25,
                0.0f64..(spread * 150_000.0),
                proptest::option::of(0u8..3),
                0u8..5,
            )
                .prop_map(move |(drivers, query, k, radius_m, class, min_capacity)| {
                    Scenario {
                        resolution,
                        drivers,
                        query,
                        k,
                        radius_m,
                        class,
                        min_capacity,
                        locator_slots,
                    }
                })
        })
}

const WINDOW: Duration = Duration::from_secs(30);
/// The queries run at 70 s: drivers seen before 40 s are stale.
const QUERY_AT_S: u64 = 70;

/// Builds the index: each driver inserted at its `seen_s`, then put in its state.
fn build(s: &Scenario) -> Index<ManualClock> {
    let clock = ManualClock::new();
    let index = Index::with_clock(
        Config::default()
            .resolution(s.resolution)
            .staleness(WINDOW)
            .shards(8)
            .locator_slots(s.locator_slots),
        clock.clone(),
    )
    .unwrap();
    let mut order: Vec<usize> = (0..s.drivers.len()).collect();
    order.sort_by_key(|&i| s.drivers[i].seen_s);
    for i in order {
        let d = &s.drivers[i];
        clock.set(Duration::from_secs(d.seen_s));
        let profile = DriverProfile {
            class: VehicleClass(d.class),
            capacity: d.capacity,
        };
        index
            .insert(
                DriverId(i as u64),
                Point::new(d.at.0, d.at.1).unwrap(),
                profile,
            )
            .unwrap();
        if d.state != DriverState::Available {
            index.set_state(DriverId(i as u64), d.state).unwrap();
        }
    }
    clock.set(Duration::from_secs(QUERY_AT_S));
    index
}

/// Eligible drivers by the definitions, with their distances from the query.
fn eligible(s: &Scenario, class: Option<u8>, min_capacity: u8) -> Vec<(f64, u64)> {
    s.drivers
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.state == DriverState::Available
                && QUERY_AT_S - d.seen_s <= WINDOW.as_secs()
                && d.capacity >= min_capacity
                && class.is_none_or(|c| c == d.class)
        })
        .map(|(i, d)| (vincenty_m(s.query, d.at), i as u64))
        .collect()
}

fn filter(s: &Scenario) -> Filter {
    let f = Filter::any().min_capacity(s.min_capacity);
    match s.class {
        Some(c) => f.class(VehicleClass(c)),
        None => f,
    }
}

/// Every returned driver is eligible at the distance it reports, once, in order.
fn check_returned(found: &[Candidate], reference: &[(f64, u64)]) -> Result<(), TestCaseError> {
    for (i, c) in found.iter().enumerate() {
        let Some(&(d, _)) = reference.iter().find(|(_, id)| *id == c.driver.0) else {
            return Err(TestCaseError::fail(format!("{} is not eligible", c.driver)));
        };
        prop_assert!(
            (d - c.distance_m).abs() <= tolerance(d),
            "{}: {} vs {d}",
            c.driver,
            c.distance_m
        );
        prop_assert!(
            !found[..i].iter().any(|o| o.driver == c.driver),
            "{} twice",
            c.driver
        );
        if i > 0 {
            prop_assert!(found[i - 1].distance_m <= c.distance_m, "not nearest first");
        }
    }
    Ok(())
}

/// `nearest` returns the `k` nearest eligible drivers, at their distances.
fn check_nearest(s: &Scenario) -> Result<(), TestCaseError> {
    let index = build(s);
    let query = Point::new(s.query.0, s.query.1).unwrap();
    let found = index.nearest(query, s.k, &filter(s)).unwrap();
    let mut reference = eligible(s, s.class, s.min_capacity);
    check_returned(&found, &reference)?;
    reference.sort_by(|a, b| a.0.total_cmp(&b.0));
    reference.truncate(s.k);
    prop_assert_eq!(found.len(), reference.len());
    for (c, (d, _)) in found.iter().zip(&reference) {
        prop_assert!(
            (c.distance_m - d).abs() <= tolerance(*d),
            "{} at {} m, reference {d} m",
            c.driver,
            c.distance_m
        );
    }
    Ok(())
}

/// `nearest`, and `within` without a limit and with a limit of `k`, equal brute force.
fn check_nearest_and_within(s: &Scenario) -> Result<(), TestCaseError> {
    check_nearest(s)?;
    check_within(s, MAX_K)?;
    check_within(s, s.k)
}

/// `within` returns every eligible driver inside the radius and none outside it, or, when there
/// are more than `limit`, the `limit` nearest of them.
fn check_within(s: &Scenario, limit: usize) -> Result<(), TestCaseError> {
    let index = build(s);
    let query = Point::new(s.query.0, s.query.1).unwrap();
    let found = index.within(query, s.radius_m, limit, &filter(s)).unwrap();
    let reference = eligible(s, s.class, s.min_capacity);
    check_returned(&found, &reference)?;
    prop_assert!(
        found.len() <= limit,
        "{} for a limit of {limit}",
        found.len()
    );
    for c in &found {
        prop_assert!(c.distance_m <= s.radius_m + tolerance(s.radius_m));
    }
    // A full answer is the nearest: nothing nearer than its last may be missing.
    let (reach, slack) = match found.last() {
        // Nothing is wanted, and nothing came (checked above).
        _ if limit == 0 => return Ok(()),
        Some(last) if found.len() == limit && last.distance_m < s.radius_m => {
            (last.distance_m, tolerance(last.distance_m))
        }
        _ => (s.radius_m, tolerance(s.radius_m)),
    };
    for (d, id) in &reference {
        if *d < reach - slack {
            prop_assert!(
                found.iter().any(|c| c.driver.0 == *id),
                "{id} at {d} m missing (limit {limit})"
            );
        }
    }
    Ok(())
}

/// A point of the outline of `at`'s cell at `resolution`: its vertex `edge` (modulo their
/// number) when `along` is 0, else the point that far along the edge to the next vertex.
fn on_outline(at: (f64, f64), resolution: Resolution, edge: usize, along: f64) -> (f64, f64) {
    let cell = LatLng::new(at.0, at.1).unwrap().to_cell(resolution);
    let vertices: Vec<LatLng> = cell.boundary().iter().copied().collect();
    let unit = |ll: LatLng| {
        let (lat, lng) = (ll.lat_radians(), ll.lng_radians());
        [lat.cos() * lng.cos(), lat.cos() * lng.sin(), lat.sin()]
    };
    let (a, b) = (
        unit(vertices[edge % vertices.len()]),
        unit(vertices[(edge + 1) % vertices.len()]),
    );
    // The edge is a great-circle arc: the normalised chord point lies on it.
    let m: Vec<f64> = (0..3)
        .map(|i| a[i] * (1.0 - along) + b[i] * along)
        .collect();
    let norm = (m[0] * m[0] + m[1] * m[1] + m[2] * m[2]).sqrt();
    let lat = (m[2] / norm).clamp(-1.0, 1.0).asin().to_degrees();
    let lng = m[1].atan2(m[0]).to_degrees().clamp(-180.0, 180.0);
    (lat, lng)
}

/// The scenarios above at any resolution, 0 to 15, with about half the drivers on the
/// outlines of their cells (vertices and edges, where a point's cell and its neighbours' bounds
/// are decided by a rounding) and, half the time, the query on the first driver.
fn outline_scenario() -> impl Strategy<Value = Scenario> {
    (
        scenario(),
        0u8..=15,
        proptest::collection::vec((any::<bool>(), 0usize..10, 0.0f64..1.0, any::<bool>()), 200),
        any::<bool>(),
    )
        .prop_map(|(mut s, res, outline, query_on_driver)| {
            s.resolution = Resolution::try_from(res).unwrap();
            for (d, &(moved, edge, along, vertex)) in s.drivers.iter_mut().zip(&outline) {
                if moved {
                    let along = if vertex { 0.0 } else { along };
                    d.at = on_outline(d.at, s.resolution, edge, along);
                }
            }
            if query_on_driver && let Some(first) = s.drivers.first() {
                s.query = first.at;
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn nearest_equals_brute_force(s in scenario()) {
        check_nearest(&s)?;
    }

    #[test]
    fn within_equals_brute_force(s in scenario()) {
        check_within(&s, MAX_K)?;
    }

    #[test]
    fn within_up_to_a_limit_is_the_nearest_inside(s in scenario()) {
        check_within(&s, s.k)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn drivers_and_queries_on_cell_outlines_at_every_resolution(s in outline_scenario()) {
        check_nearest_and_within(&s)?;
    }
}

/// The antipode of `at`.
fn antipode(at: (f64, f64)) -> (f64, f64) {
    let lng = if at.1 > 0.0 {
        at.1 - 180.0
    } else {
        at.1 + 180.0
    };
    (-at.0, lng)
}

/// A cluster of drivers in a few cells at any resolution, 0 to 15, from a few millimeters to
/// a few hundred kilometers across, and a query anywhere: on the cluster, near its antipode, or
/// anywhere at all, so a bucket's drivers are looked at from every distance (and the walk
/// often ends in a pass over every bucket), with `k` and limits up to `MAX_K`.
// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
fn cluster_scenario() -> impl Strategy<Value = Scenario> {
    (
        anchor(),
        prop_oneof![Just(1e-7), Just(1e-5), Just(1e-3), Just(0.1), Just(3.0)],
        0u8..=15,
    )
        .prop_flat_map(|(anchor, spread, res)| {
            let query = prop_oneof![
                near(anchor, spread * 2.0),
                near(antipode(anchor), 0.01),
                (-90.0f64..=90.0, -180.0f64..=180.0),
            ];
            (
                proptest::collection::vec(driver(anchor, spread), 0..120),
                query,
                prop_oneof![1usize..30, Just(MAX_K)],
                0.0f64..21_000_000.0,
                proptest::option::of(0u8..3),
                0u8..5,
            )
                .prop_map(move |(drivers, query, k, radius_m, class, min_capacity)| {
                    Scenario {
                        resolution: Resolution::try_from(res).unwrap(),
                        drivers,
                        query,
                        k,
                        radius_m,
                        class,
                        min_capacity,
                        locator_slots: Config::default().locator_slot_count(),
                    }
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A bucket's coarse look never rules out a driver of the answer, from whatever distance
    /// it is taken and at whatever resolution.
    #[test]
    fn a_cluster_seen_from_anywhere_at_every_resolution(s in cluster_scenario()) {
        check_nearest_and_within(&s)?;
    }
}

/// Drivers at one point tie on distance: a nearest query takes them by id, passing over the
/// ones it may not return, however many of them the first bucket holds.
#[test]
fn ties_go_to_the_smallest_ids_that_qualify() {
    let index = Index::with_clock(Config::default(), ManualClock::new()).unwrap();
    let spot = Point::new(48.85, 2.35).unwrap();
    // Forty drivers on one spot, inserted out of id order; every third id busy.
    for i in 0..40u64 {
        let id = DriverId((i * 17) % 40);
        index.insert(id, spot, DriverProfile::default()).unwrap();
        if id.0.is_multiple_of(3) {
            index.set_state(id, DriverState::Busy).unwrap();
        }
    }
    // Twenty more a few meters apart, farther out one by one.
    for i in 40..60u64 {
        let at = Point::new(48.85, 2.35 + 0.00005 * (i - 39) as f64).unwrap();
        index
            .insert(DriverId(i), at, DriverProfile::default())
            .unwrap();
    }
    let free_on_the_spot: Vec<u64> = (0..40).filter(|id: &u64| !id.is_multiple_of(3)).collect();
    let ids = |found: Vec<Candidate>| found.iter().map(|c| c.driver.0).collect::<Vec<_>>();
    let found = index.nearest(spot, 10, &Filter::any()).unwrap();
    assert!(found.iter().all(|c| c.distance_m == 0.0));
    assert_eq!(ids(found), free_on_the_spot[..10]);
    let found = index.nearest(spot, 30, &Filter::any()).unwrap();
    let mut expected = free_on_the_spot.clone();
    expected.extend(40..44);
    assert_eq!(ids(found), expected);
}

/// Huge radii and sparse worlds take the every-bucket path; the answer is the same.
#[test]
fn a_sparse_world_and_a_huge_radius_are_exact() {
    let index = Index::new(Config::default()).unwrap();
    let places = [
        (0.0, 0.0),
        (89.9, 10.0),
        (-89.9, -170.0),
        (10.0, 179.9),
        (10.0, -179.9),
        (45.0, 90.0),
    ];
    for (i, (lat, lng)) in places.iter().enumerate() {
        index
            .insert(
                DriverId(i as u64),
                Point::new(*lat, *lng).unwrap(),
                DriverProfile::default(),
            )
            .unwrap();
    }
    let query = Point::new(10.0, 180.0).unwrap();
    let found = index.nearest(query, 3, &Filter::any()).unwrap();
    let ids: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
    assert_eq!(ids[..2], [3, 4]);
    assert!(
        (found[0].distance_m - 10_950.0).abs() < 100.0,
        "{}",
        found[0].distance_m
    );
    let all = index
        .within(query, 30_000_000.0, MAX_K, &Filter::any())
        .unwrap();
    assert_eq!(all.len(), places.len());
}

/// However large the radius a caller sends, `within` returns at most its limit, and those are
/// the nearest: a fleet larger than `MAX_K` inside a radius around the globe is not copied out.
#[test]
fn a_radius_around_the_globe_returns_the_limit_nearest() {
    let index = Index::new(Config::default()).unwrap();
    let fleet = MAX_K as u64 + 2_000;
    // A line of drivers about 11 m apart going east along the equator.
    for i in 0..fleet {
        let at = Point::new(0.0, 0.0001 * i as f64).unwrap();
        index
            .insert(DriverId(i), at, DriverProfile::default())
            .unwrap();
    }
    let rider = Point::new(0.0, 0.3).unwrap();
    let all = index
        .within(rider, 30_000_000.0, MAX_K, &Filter::any())
        .unwrap();
    assert_eq!(all.len(), MAX_K);
    let five = index
        .within(rider, 30_000_000.0, 5, &Filter::any())
        .unwrap();
    let ids: Vec<u64> = five.iter().map(|c| c.driver.0).collect();
    // Driver 3,000 is on the rider, then two on each side, 11 m and 22 m away.
    assert_eq!(ids[0], 3_000);
    let mut sides = ids[1..].to_vec();
    sides.sort_unstable();
    assert_eq!(sides, [2_998, 2_999, 3_001, 3_002]);
    for pair in five.windows(2) {
        assert!(pair[0].distance_m <= pair[1].distance_m);
    }
    assert!(five[4].distance_m < 25.0, "{} m", five[4].distance_m);
    assert_eq!(
        index
            .within(rider, 10.0, MAX_K + 1, &Filter::any())
            .unwrap_err(),
        Error::TooManyResults {
            k: MAX_K + 1,
            max: MAX_K
        }
    );
    assert!(
        index
            .within(rider, 1e7, 0, &Filter::any())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_query_input_is_an_error() {
    let index = Index::new(Config::default()).unwrap();
    let at = Point::new(0.0, 0.0).unwrap();
    for radius in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(index.within(at, radius, MAX_K, &Filter::any()).is_err());
    }
    assert!(index.nearest(at, MAX_K + 1, &Filter::any()).is_err());
    assert!(index.nearest(at, 0, &Filter::any()).unwrap().is_empty());
}

/// Every cell of resolutions 0 to 3 holds a driver at its center: the rings reach round the
/// globe, where a walk that does not track the cells it has seen meets some twice and misses
/// others. `nearest` up to `MAX_K` and `within` up to half the globe (its `MAX_K` nearest when
/// more are inside) equal a scan: each driver once, and the k-th distance exact.
#[test]
fn every_cell_occupied_at_coarse_resolutions() {
    for res in 0..=3u8 {
        let resolution = Resolution::try_from(res).unwrap();
        let index = Index::new(Config::default().resolution(resolution).shards(16)).unwrap();
        let mut drivers = Vec::new();
        for (i, cell) in h3o::CellIndex::base_cells()
            .flat_map(|base| base.children(resolution))
            .enumerate()
        {
            let c = LatLng::from(cell);
            index
                .insert(
                    DriverId(i as u64),
                    Point::new(c.lat(), c.lng()).unwrap(),
                    DriverProfile::default(),
                )
                .unwrap();
            drivers.push((c.lat(), c.lng()));
        }
        for query in [(0.0, 0.0), (45.0, 179.9), (-89.5, 30.0), (64.7, 10.536_199)] {
            let point = Point::new(query.0, query.1).unwrap();
            let mut reference: Vec<(f64, u64)> = drivers
                .iter()
                .enumerate()
                .map(|(i, at)| (vincenty_m(query, *at), i as u64))
                .collect();
            reference.sort_by(|a, b| a.0.total_cmp(&b.0));
            for k in [1, 7, 100, 500, 2_000, MAX_K] {
                let found = index.nearest(point, k, &Filter::any()).unwrap();
                let what = format!("res {res} from {query:?}, k = {k}");
                assert_eq!(found.len(), k.min(drivers.len()), "{what}");
                let mut ids: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), found.len(), "{what}: a driver twice");
                for (i, c) in found.iter().enumerate() {
                    let own = vincenty_m(query, drivers[c.driver.0 as usize]);
                    assert!((own - c.distance_m).abs() <= tolerance(own), "{what}: #{i}");
                    let d = reference[i].0;
                    assert!(
                        (c.distance_m - d).abs() <= tolerance(d),
                        "{what}: #{i} at {} m, scan {d} m",
                        c.distance_m
                    );
                }
            }
            for radius_m in [1_000_000.0, 5_000_000.0, 10_000_000.0] {
                let found = index
                    .within(point, radius_m, MAX_K, &Filter::any())
                    .unwrap();
                let what = format!("res {res} from {query:?}, within {radius_m} m");
                let mut ids: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), found.len(), "{what}: a driver twice");
                // Beyond `MAX_K` drivers inside (10,000 km at resolution 3), the nearest.
                let reach = match found.last() {
                    Some(last) if found.len() == MAX_K => last.distance_m,
                    _ => radius_m,
                };
                let inside = reference
                    .iter()
                    .filter(|(d, _)| *d < reach - tolerance(reach));
                for (d, id) in inside {
                    assert!(
                        ids.binary_search(id).is_ok(),
                        "{what}: {id} at {d} m missing"
                    );
                }
                assert!(
                    found
                        .iter()
                        .all(|c| c.distance_m <= radius_m + tolerance(radius_m)),
                    "{what}"
                );
            }
        }
    }
}

/// A claim made before the driver was removed and inserted again does not hold on the new
/// stay: the new claimer's offer is its own, and the old claimer cannot settle it.
#[test]
fn a_claim_does_not_survive_removal_and_reinsertion() {
    let index = Index::new(Config::default()).unwrap();
    let at = Point::new(52.52, 13.405).unwrap();
    let id = DriverId(1);
    index.insert(id, at, DriverProfile::default()).unwrap();
    let first = index.claim(id, index.driver(id).unwrap().version).unwrap();
    index.remove(id).unwrap();
    assert_eq!(
        index.accept(&first),
        Err(infra_geomatch::Error::UnknownDriver(id))
    );
    index.insert(id, at, DriverProfile::default()).unwrap();
    let second = index.claim(id, index.driver(id).unwrap().version).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        index.accept(&first),
        Err(infra_geomatch::Error::ClaimInvalid(id))
    );
    assert_eq!(index.driver(id).unwrap().state, DriverState::Offered);
    index.decline(second).unwrap();
    assert_eq!(index.driver(id).unwrap().state, DriverState::Available);
}

/// A position report is not a state change: a claim made with the version a query saw wins
/// after the driver moved, and the claimer reads where it is now from the index.
#[test]
fn a_claim_checks_the_state_version_not_the_position() {
    let index = Index::new(Config::default()).unwrap();
    let rider = Point::new(52.52, 13.405).unwrap();
    let id = DriverId(1);
    index
        .insert(
            id,
            Point::new(52.521, 13.405).unwrap(),
            DriverProfile::default(),
        )
        .unwrap();
    let seen = index.nearest(rider, 1, &Filter::any()).unwrap()[0];
    assert!(seen.distance_m < 200.0, "{seen:?}");
    let moved = Point::new(52.60, 13.50).unwrap();
    index.update(id, moved).unwrap();
    let claim = index.claim(id, seen.version).unwrap();
    let now = index.driver(id).unwrap();
    assert_eq!((now.state, now.point), (DriverState::Offered, moved));
    assert!(
        now.point.distance_m(rider) > 10_000.0,
        "the candidate's distance is out of date"
    );
    index.decline(claim).unwrap();
}

/// An index at resolution 2 holding `count` drivers, driver `i` at `off(i)` degrees north
/// and half that west of (-30, -140), the antipode of (30, 40); the drivers' places.
fn a_row_off_the_antipode(count: u32, off: fn(u32) -> f64) -> (Index, Vec<(f64, f64)>) {
    let index = Index::new(Config::default().resolution(Resolution::Two)).unwrap();
    let mut drivers = Vec::new();
    for i in 0..count {
        let at = (-30.0 + off(i), -140.0 - off(i) * 0.5);
        index
            .insert(
                DriverId(i.into()),
                Point::new(at.0, at.1).unwrap(),
                DriverProfile::default(),
            )
            .unwrap();
        drivers.push(at);
    }
    (index, drivers)
}

/// Distances to a driver near the query point's antipode are exact to well under a
/// millimeter (the arc from the chord is off by up to tenths of a meter there).
#[test]
fn near_antipodal_distances_are_exact() {
    let query = (30.0, 40.0);
    let (index, drivers) = a_row_off_the_antipode(50, |i| 1e-6 * f64::from(i + 1).powi(2));
    let found = index
        .within(
            Point::new(query.0, query.1).unwrap(),
            30_000_000.0,
            MAX_K,
            &Filter::any(),
        )
        .unwrap();
    assert_eq!(found.len(), drivers.len());
    for c in found {
        let at = drivers[c.driver.0 as usize];
        let exact = vincenty_m(query, at);
        assert!(
            (c.distance_m - exact).abs() < 1e-6,
            "{}: {} m vs {exact} m",
            c.driver,
            c.distance_m
        );
    }
}

/// Drivers about 1.2 cm apart in a row leaving the antipode of a query point, queried with
/// radii half-way between two neighbours' exact distances (millimeters from each) and the
/// limit `limit_of(drivers inside)`: every driver inside comes back, none beyond.
fn split_by_radii_near_the_antipode(limit_of: fn(usize) -> usize) {
    let query = (30.0, 40.0);
    let (index, drivers) = a_row_off_the_antipode(200, |i| 1e-7 * f64::from(i + 1));
    let distances: Vec<f64> = drivers.iter().map(|&at| vincenty_m(query, at)).collect();
    let mut sorted = distances.clone();
    sorted.sort_by(f64::total_cmp);
    for split in [5, 20, 60, 100, 150, 199] {
        let radius = (sorted[split - 1] + sorted[split]) / 2.0;
        let limit = limit_of(split);
        let found = index
            .within(
                Point::new(query.0, query.1).unwrap(),
                radius,
                limit,
                &Filter::any(),
            )
            .unwrap();
        let mut got: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
        got.sort_unstable();
        let expected: Vec<u64> = (0..distances.len() as u64)
            .filter(|&i| distances[i as usize] <= radius)
            .collect();
        assert_eq!(got, expected, "radius {radius} m, limit {limit}");
        assert!(found.iter().all(|c| c.distance_m <= radius), "{radius}");
    }
}

/// A radius reaching almost to the query point's antipode splits drivers a centimeter apart
/// there by their exact distances. Squared chords resolve only tenths of a meter so near the
/// antipode (a chord hardly changes with the arc there).
#[test]
fn a_radius_near_the_antipode_splits_drivers_by_their_exact_distances() {
    split_by_radii_near_the_antipode(|_| MAX_K);
}

/// A limit counts only drivers inside the radius, also near the query point's antipode, where
/// squared chords rank drivers a centimeter apart in any order: with as many drivers inside as
/// the limit, every one of them comes back, none beyond.
#[test]
fn a_limit_near_the_antipode_is_filled_from_inside_the_radius() {
    split_by_radii_near_the_antipode(|inside| inside);
}

/// Drivers about 1.2 cm apart in a row leaving the antipode of a query point: the `k`
/// nearest, with no radius or one reaching past them all, are the `k` nearest by exact
/// distance for every `k`. Squared chords resolve only tenths of a meter there, so they
/// cannot rank these drivers.
#[test]
fn the_k_nearest_near_the_antipode_go_by_exact_distance() {
    let query = (30.0, 40.0);
    let (index, drivers) = a_row_off_the_antipode(200, |i| 1e-7 * f64::from(i + 1));
    let mut by_distance: Vec<(f64, u64)> = drivers
        .iter()
        .zip(0u64..)
        .map(|(&at, id)| (vincenty_m(query, at), id))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rider = Point::new(query.0, query.1).unwrap();
    for k in [1, 2, 5, 20, 60, 100, 150, 199, 200] {
        let expected: Vec<u64> = by_distance[..k].iter().map(|&(_, id)| id).collect();
        let answers = [
            index.nearest(rider, k, &Filter::any()).unwrap(),
            index
                .within(rider, 30_000_000.0, k, &Filter::any())
                .unwrap(),
        ];
        for found in answers {
            let got: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
            assert_eq!(got, expected, "k {k}");
        }
    }
}

/// Drivers of one cell leave in an order that moves the others' rows (a leaving row's slot
/// is taken by the bucket's last row): every operation on a moved driver still reaches its
/// own row, never a neighbour's.
#[test]
fn drivers_whose_rows_moved_are_still_found_by_id() {
    let index = Index::with_clock(Config::default(), ManualClock::new()).unwrap();
    let at = |i: u32| Point::new(48.8566, 2.3522 + 1e-6 * f64::from(i)).unwrap();
    for i in 0..6u32 {
        index
            .insert(DriverId(u64::from(i)), at(i), DriverProfile::default())
            .unwrap();
    }
    assert_eq!(
        at(0).cell(Resolution::Nine),
        at(5).cell(Resolution::Nine),
        "one cell"
    );
    // Removing 0 moves 5 into slot 0; removing 1 moves 4 into slot 1.
    index.remove(DriverId(0)).unwrap();
    index.remove(DriverId(1)).unwrap();
    let moved_to = Point::new(48.8566, 2.3523).unwrap();
    index.update(DriverId(5), moved_to).unwrap();
    index.set_state(DriverId(4), DriverState::Busy).unwrap();
    for i in 2..6u32 {
        let record = index.driver(DriverId(u64::from(i))).unwrap();
        assert_eq!(record.id, DriverId(u64::from(i)));
        let expected = if i == 5 { moved_to } else { at(i) };
        assert_eq!(record.point, expected, "driver {i}");
        let state = if i == 4 {
            DriverState::Busy
        } else {
            DriverState::Available
        };
        assert_eq!(record.state, state, "driver {i}");
    }
    let claim = index
        .claim(DriverId(5), index.driver(DriverId(5)).unwrap().version)
        .unwrap();
    index.accept(&claim).unwrap();
    assert_eq!(index.driver(DriverId(5)).unwrap().state, DriverState::Busy);
    assert_eq!(
        index.driver(DriverId(3)).unwrap().state,
        DriverState::Available
    );
    let found = index.nearest(at(3), 10, &Filter::any()).unwrap();
    let ids: Vec<u64> = found.iter().map(|c| c.driver.0).collect();
    assert_eq!(ids, [3, 2]);
}

/// `remove_idle` takes out exactly the drivers whose last report is at least `idle` old,
/// whatever their state, returns their records, and leaves every other driver findable.
#[test]
fn remove_idle_takes_out_exactly_the_drivers_not_heard_from() {
    let clock = ManualClock::new();
    let index = Index::with_clock(Config::default(), clock.clone()).unwrap();
    let at = |i: u64| Point::new(52.52, 13.405 + 0.0001 * i as f64).unwrap();
    for i in 0..6 {
        index
            .insert(DriverId(i), at(i), DriverProfile::default())
            .unwrap();
    }
    // Driver 3 is offered to a rider, driver 4 is on a trip: both idle too.
    let offered = index
        .claim(DriverId(3), index.driver(DriverId(3)).unwrap().version)
        .unwrap();
    index.set_state(DriverId(4), DriverState::Busy).unwrap();
    // Driver 2 reports at 100 s, driver 1 a nanosecond later, driver 5 at 299 s; the sweep
    // runs at 300 s: driver 2 is exactly `idle` old, driver 1 a nanosecond short of it.
    clock.advance(Duration::from_secs(100));
    index.update(DriverId(2), at(2)).unwrap();
    clock.advance(Duration::from_nanos(1));
    index.update(DriverId(1), at(1)).unwrap();
    clock.advance(Duration::from_secs(199) - Duration::from_nanos(1));
    index.update(DriverId(5), at(5)).unwrap();
    clock.advance(Duration::from_secs(1));
    let idle = Duration::from_secs(200);
    let gone = index.remove_idle(idle);
    let summary: Vec<(u64, DriverState)> = gone.iter().map(|r| (r.id.0, r.state)).collect();
    assert_eq!(
        summary,
        [
            (0, DriverState::Available),
            (2, DriverState::Available),
            (3, DriverState::Offered),
            (4, DriverState::Busy),
        ]
    );
    assert!(gone.iter().all(|record| record.age >= idle));
    assert_eq!(index.len(), 2);
    let found: Vec<DriverId> = index
        .nearest(at(0), 10, &Filter::any())
        .unwrap()
        .iter()
        .map(|c| c.driver)
        .collect();
    // Driver 1 is stale for queries (past the default staleness window) but still held.
    assert_eq!(found, [DriverId(5)]);
    assert!(index.driver(DriverId(1)).is_ok());
    assert_eq!(
        index.accept(&offered),
        Err(infra_geomatch::Error::UnknownDriver(DriverId(3)))
    );
    assert!(index.remove_idle(idle).is_empty());
}
