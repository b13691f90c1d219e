//! The partition function: queries name every partition they must ask, and drivers crossing
//! partitions are handed from one node's index to the other's without loss.

use std::time::Duration;

use h3o::{LatLng, Resolution};
use infra_common::{Clock, ManualClock};
use infra_geomatch::{
    Config, DriverId, DriverProfile, DriverRecord, DriverState, Error, Filter, Index, MAX_K,
    MAX_PARTITIONS_ASKED, Partitioner, Point, VehicleClass, Version,
};
use infra_ring_hash::{Placement, Rendezvous};
use proptest::prelude::*;

fn haversine_m(a: Point, b: Point) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (a.lat().to_radians(), b.lat().to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((b.lng() - a.lng()).to_radians() / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

fn partitioner(resolution: Resolution, nodes: u32) -> Partitioner<u32, Rendezvous> {
    let mut placement = Placement::new(Rendezvous::new());
    for node in 0..nodes {
        placement.add(node, 1).unwrap();
    }
    Partitioner::new(resolution, placement)
}

/// The ids of the drivers within `radius` of `rider` that the nodes the partitioner names
/// answer, in id order: what a matcher near a partition edge sees.
fn found_by_asking<C: Clock>(
    partitioner: &Partitioner<u32, Rendezvous>,
    nodes: &[Index<C>],
    rider: Point,
    radius: f64,
) -> Vec<u64> {
    let mut found: Vec<u64> = partitioner
        .nodes_to_ask(rider, radius)
        .unwrap()
        .into_iter()
        .flat_map(|n| {
            nodes[*n as usize]
                .within(rider, radius, MAX_K, &Filter::any())
                .unwrap()
        })
        .map(|c| c.driver.0)
        .collect();
    found.sort_unstable();
    found
}

fn wrap(lat: f64, lng: f64) -> Point {
    let lng = if lng > 180.0 {
        lng - 360.0
    } else if lng < -180.0 {
        lng + 360.0
    } else {
        lng
    };
    Point::new(lat.clamp(-90.0, 90.0), lng).unwrap()
}

// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
fn anchor() -> impl Strategy<Value = (f64, f64)> {
    let pentagons: Vec<(f64, f64)> = Resolution::Four
        .pentagons()
        .map(|c| {
            let ll = LatLng::from(c);
            (ll.lat(), ll.lng())
        })
        .collect();
    prop_oneof![
        (-90.0f64..=90.0, -180.0f64..=180.0),
        (-60.0f64..60.0, Just(180.0)),
        (prop_oneof![Just(89.9), Just(-89.9)], -180.0f64..180.0),
        proptest::sample::select(pentagons),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every point within the radius lies in a partition the query names.
    #[test]
    fn queries_name_every_partition_within_reach(
        (lat, lng) in anchor(),
        radius_m in 0.0f64..60_000.0,
        offsets in proptest::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 50),
    ) {
        let partitioner = partitioner(Resolution::Four, 5);
        let query = wrap(lat, lng);
        let asked = partitioner.partitions_to_ask(query, radius_m).unwrap();
        prop_assert_eq!(asked[0], partitioner.partition_of(query));
        let nodes = partitioner.nodes_to_ask(query, radius_m).unwrap();
        for (dlat, dlng) in offsets {
            let p = wrap(lat + dlat, lng + dlng * 3.0);
            if haversine_m(query, p) <= radius_m {
                prop_assert!(asked.contains(&partitioner.partition_of(p)), "{p:?} missed");
                prop_assert!(nodes.contains(&partitioner.node_of(p).unwrap()));
            }
        }
    }
}

#[test]
fn partitions_map_through_the_placement() {
    let partitioner = partitioner(Resolution::Three, 4);
    let mut placement = Placement::new(Rendezvous::new());
    for node in 0..4u32 {
        placement.add(node, 1).unwrap();
    }
    for i in 0..500 {
        let p = Point::new(-80.0 + f64::from(i) * 0.32, -179.0 + f64::from(i) * 0.71).unwrap();
        let partition = p.cell(Resolution::Three);
        assert_eq!(partitioner.partition_of(p), partition);
        assert_eq!(
            partitioner.node_of(p).unwrap(),
            placement.node(&u64::from(partition)).unwrap()
        );
        assert_eq!(
            partitioner.node_of_partition(partition).unwrap(),
            partitioner.node_of(p).unwrap()
        );
    }
    for resolution in [Resolution::One, Resolution::Nine] {
        let cell = Point::new(0.0, 0.0).unwrap().cell(resolution);
        assert!(partitioner.node_of_partition(cell).is_err());
    }
}

/// Three nodes, each with its own index; drivers drive across partitions and each report goes
/// to the node owning the new position, with a hand-off when that node changes. Afterwards
/// every driver is on exactly the node that owns its position, with its state, and a query
/// that asks the named nodes finds what one global scan finds.
#[test]
fn drivers_crossing_partitions_are_handed_off() {
    let partitioner = partitioner(Resolution::Five, 3);
    let clock = ManualClock::new();
    let nodes: Vec<Index<ManualClock>> = (0..3)
        .map(|_| Index::with_clock(Config::default(), clock.clone()).unwrap())
        .collect();
    let drivers = 60u64;
    let start =
        |d: u64| Point::new(45.0 + (d % 6) as f64 * 0.02, 7.0 + (d / 6) as f64 * 0.02).unwrap();
    let mut positions: Vec<Point> = (0..drivers).map(start).collect();
    for (d, p) in positions.iter().enumerate() {
        let owner = *partitioner.node_of(*p).unwrap() as usize;
        nodes[owner]
            .insert(DriverId(d as u64), *p, DriverProfile::default())
            .unwrap();
        if d % 5 == 0 {
            nodes[owner]
                .set_state(DriverId(d as u64), DriverState::Busy)
                .unwrap();
        }
    }
    let mut handoffs = 0;
    let mut node_changes = 0;
    for step in 1..=200u64 {
        for d in 0..drivers {
            // Each driver heads east-north-east at its own pace: about 1-2 km per step.
            let old = positions[d as usize];
            let new =
                Point::new(old.lat() + 0.004, old.lng() + 0.01 + (d % 3) as f64 * 0.005).unwrap();
            let id = DriverId(d);
            match partitioner.handoff(old, new).unwrap() {
                Some(handoff) => {
                    handoffs += 1;
                    let (from, to) = (*handoff.from_node as usize, *handoff.to_node as usize);
                    if handoff.changes_node() {
                        node_changes += 1;
                        let record = nodes[from].remove(id).unwrap();
                        nodes[to].restore(record).unwrap();
                    }
                    nodes[to].update(id, new).unwrap();
                }
                None => {
                    nodes[*partitioner.node_of(old).unwrap() as usize]
                        .update(id, new)
                        .unwrap();
                }
            }
            positions[d as usize] = new;
        }
        clock.advance(std::time::Duration::from_secs(1));
        if step % 50 == 0 {
            for (d, p) in positions.iter().enumerate() {
                let owner = *partitioner.node_of(*p).unwrap() as usize;
                for (n, node) in nodes.iter().enumerate() {
                    let held = node.driver(DriverId(d as u64));
                    assert_eq!(
                        held.is_ok(),
                        n == owner,
                        "driver {d} on node {n}, owner {owner}"
                    );
                }
                let state = nodes[owner].driver(DriverId(d as u64)).unwrap().state;
                let expected = if d % 5 == 0 {
                    DriverState::Busy
                } else {
                    DriverState::Available
                };
                assert_eq!(state, expected);
            }
            // A rider among the drivers asks every node the partitioner names.
            let rider = positions[17];
            let radius = 5_000.0;
            let found = found_by_asking(&partitioner, &nodes, rider, radius);
            let expected: Vec<u64> = (0..drivers)
                .filter(|&d| d % 5 != 0 && haversine_m(rider, positions[d as usize]) <= radius)
                .collect();
            assert_eq!(found, expected);
        }
    }
    assert!(
        handoffs > 100 && node_changes > 30,
        "{handoffs} hand-offs, {node_changes} across nodes"
    );
}

/// A node joins: whole partitions change owner without any driver crossing a partition, so
/// `handoff` reports nothing. Each node lists its drivers (`Index::records`) and hands those
/// whose position another node now owns to that node; afterwards every driver is on its
/// owner with its state, and a query over the named nodes finds what a global scan finds.
#[test]
fn a_membership_change_rehomes_the_drivers_of_moved_partitions() {
    let mut partitioner = partitioner(Resolution::Five, 3);
    let mut nodes: Vec<Index> = (0..3)
        .map(|_| Index::new(Config::default()).unwrap())
        .collect();
    let drivers = 200u64;
    let position =
        |d: u64| Point::new(45.0 + (d % 10) as f64 * 0.05, 7.0 + (d / 10) as f64 * 0.05).unwrap();
    for d in 0..drivers {
        let owner = *partitioner.node_of(position(d)).unwrap() as usize;
        nodes[owner]
            .insert(DriverId(d), position(d), DriverProfile::default())
            .unwrap();
        if d % 5 == 0 {
            nodes[owner]
                .set_state(DriverId(d), DriverState::Busy)
                .unwrap();
        }
    }
    partitioner.placement_mut().add(3, 1).unwrap();
    nodes.push(Index::new(Config::default()).unwrap());
    let stranded = (0..drivers)
        .filter(|&d| *partitioner.node_of(position(d)).unwrap() == 3)
        .count();
    assert!(
        stranded > 10,
        "only {stranded} drivers in partitions that moved"
    );

    let mut moved = 0;
    for from in 0..nodes.len() {
        for record in nodes[from].records() {
            let owner = *partitioner.node_of(record.point).unwrap() as usize;
            if owner != from {
                let record = nodes[from].remove(record.id).unwrap();
                nodes[owner].restore(record).unwrap();
                moved += 1;
            }
        }
    }
    assert_eq!(moved, stranded);
    for d in 0..drivers {
        let owner = *partitioner.node_of(position(d)).unwrap() as usize;
        for (n, node) in nodes.iter().enumerate() {
            assert_eq!(
                node.driver(DriverId(d)).is_ok(),
                n == owner,
                "driver {d} on node {n}"
            );
        }
        let expected = if d % 5 == 0 {
            DriverState::Busy
        } else {
            DriverState::Available
        };
        assert_eq!(nodes[owner].driver(DriverId(d)).unwrap().state, expected);
    }
    let rider = position(55);
    let radius = 20_000.0;
    let found = found_by_asking(&partitioner, &nodes, rider, radius);
    let expected: Vec<u64> = (0..drivers)
        .filter(|&d| d % 5 != 0 && haversine_m(rider, position(d)) <= radius)
        .collect();
    assert_eq!(found, expected);
}

/// A driver offered on one node and handed to another arrives offered, but the claim made on
/// the first node does not hold on the second (a claim names its index); a hand-off of an
/// unknown driver or into a node that already has it is refused.
#[test]
fn an_offer_arrives_offered_and_its_claim_stays_home() {
    let (from, to) = (
        Index::new(Config::default()).unwrap(),
        Index::new(Config::default()).unwrap(),
    );
    let at = Point::new(45.0, 7.0).unwrap();
    from.insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let seen = from.driver(DriverId(1)).unwrap().version;
    let claim = from.claim(DriverId(1), seen).unwrap();
    let record = from.remove(DriverId(1)).unwrap();
    assert_eq!(record.state, DriverState::Offered);
    assert!(from.remove(DriverId(1)).is_err());
    to.restore(record).unwrap();
    assert!(to.restore(record).is_err());
    assert_eq!(to.accept(&claim), Err(Error::ForeignClaim(DriverId(1))));
    assert_eq!(to.driver(DriverId(1)).unwrap().state, DriverState::Offered);
    to.set_state(DriverId(1), DriverState::Busy).unwrap();
    assert_eq!(to.driver(DriverId(1)).unwrap().state, DriverState::Busy);
}

/// Two indexes each holding the same driver at the same version: a claim made on one is
/// refused by the other, which keeps its own offer.
#[test]
fn a_claim_is_settled_only_by_the_index_that_made_it() {
    let (a, b) = (
        Index::new(Config::default()).unwrap(),
        Index::new(Config::default()).unwrap(),
    );
    let at = Point::new(45.0, 7.0).unwrap();
    for index in [&a, &b] {
        index
            .insert(DriverId(1), at, DriverProfile::default())
            .unwrap();
    }
    let on_a = a
        .claim(DriverId(1), a.driver(DriverId(1)).unwrap().version)
        .unwrap();
    let on_b = b
        .claim(DriverId(1), b.driver(DriverId(1)).unwrap().version)
        .unwrap();
    assert_eq!(b.accept(&on_a), Err(Error::ForeignClaim(DriverId(1))));
    assert_eq!(a.decline(on_b), Err(Error::ForeignClaim(DriverId(1))));
    assert_eq!(b.driver(DriverId(1)).unwrap().state, DriverState::Offered);
    b.accept(&on_b).unwrap();
    a.accept(&on_a).unwrap();
}

/// Two nodes whose clocks read very differently (each `SystemClock` counts from its own
/// process's start): a record keeps its age across the hand-off, in both directions.
#[test]
fn a_restored_driver_keeps_its_age_across_clocks() {
    const WINDOW: Duration = Duration::from_secs(30);
    for (from_start, to_start) in [(1_000, 20), (20, 1_000)] {
        let (from_clock, to_clock) = (ManualClock::new(), ManualClock::new());
        from_clock.set(Duration::from_secs(from_start));
        to_clock.set(Duration::from_secs(to_start));
        let config = Config::default().staleness(WINDOW);
        let from = Index::with_clock(config, from_clock.clone()).unwrap();
        let to = Index::with_clock(config, to_clock.clone()).unwrap();
        let at = Point::new(45.0, 7.0).unwrap();
        from.insert(DriverId(1), at, DriverProfile::default())
            .unwrap();
        from_clock.advance(Duration::from_secs(10));
        let record = from.remove(DriverId(1)).unwrap();
        assert_eq!(record.age, Duration::from_secs(10));
        to.restore(record).unwrap();
        assert_eq!(to.driver(DriverId(1)).unwrap().age, Duration::from_secs(10));
        // Heard from 10 s ago: fresh for 20 s more, then stale.
        assert_eq!(
            to.nearest(at, 1, &Filter::any()).unwrap().len(),
            1,
            "{from_start} -> {to_start}"
        );
        to_clock.advance(Duration::from_secs(20));
        assert_eq!(
            to.nearest(at, 1, &Filter::any()).unwrap().len(),
            1,
            "{from_start} -> {to_start}"
        );
        to_clock.advance(Duration::from_secs(1));
        assert!(
            to.nearest(at, 1, &Filter::any()).unwrap().is_empty(),
            "{from_start} -> {to_start}"
        );
    }
}

/// A node that has just started (its clock near zero) receives a driver silent for longer
/// than the node has run: the driver's age is kept, so it is stale there at once and idle for
/// `remove_idle`, rather than fresh from the clock's zero.
#[test]
fn a_restored_driver_older_than_the_receiving_clock_is_stale_and_idle() {
    const WINDOW: Duration = Duration::from_secs(30);
    let config = Config::default().staleness(WINDOW);
    let from_clock = ManualClock::new();
    let from = Index::with_clock(config, from_clock.clone()).unwrap();
    let at = Point::new(45.0, 7.0).unwrap();
    from.insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    from_clock.advance(Duration::from_secs(600));
    let record = from.remove(DriverId(1)).unwrap();
    let version = record.version;

    let to_clock = ManualClock::new();
    to_clock.set(Duration::from_secs(5));
    let to = Index::with_clock(config, to_clock).unwrap();
    to.restore(record).unwrap();
    let restored = to.driver(DriverId(1)).unwrap();
    assert_eq!(restored.age, Duration::from_secs(600));
    // Before the receiving clock's zero: the clock has no reading for it.
    assert_eq!(restored.seen_nanos, 0);
    assert!(to.nearest(at, 1, &Filter::any()).unwrap().is_empty());
    assert_eq!(
        to.claim(DriverId(1), version),
        Err(Error::Stale(DriverId(1)))
    );
    let idle = to.remove_idle(Duration::from_secs(300));
    assert_eq!(idle.iter().map(|r| r.id).collect::<Vec<_>>(), [DriverId(1)]);
    assert_eq!(idle[0].age, Duration::from_secs(600));
}

/// A record whose state is not the one its version encodes is refused, not restored in
/// either state.
#[test]
fn an_inconsistent_record_is_refused() {
    let (from, to) = (
        Index::new(Config::default()).unwrap(),
        Index::new(Config::default()).unwrap(),
    );
    from.insert(
        DriverId(1),
        Point::new(45.0, 7.0).unwrap(),
        DriverProfile::default(),
    )
    .unwrap();
    let mut record = from.remove(DriverId(1)).unwrap();
    assert_eq!(record.state, DriverState::Available);
    record.state = DriverState::Busy;
    assert_eq!(
        to.restore(record),
        Err(Error::InconsistentRecord(DriverId(1)))
    );
    assert!(to.driver(DriverId(1)).is_err());
}

/// A hand-off between nodes that are separate processes: the record travels as plain
/// values (here, one line of text) and is rebuilt on the other side, version included, so the
/// receiving node keeps the driver's state, version and age as an in-process hand-off does.
#[test]
fn a_record_crosses_between_processes_as_plain_values() {
    let (from, to) = (
        Index::new(Config::default()).unwrap(),
        Index::new(Config::default()).unwrap(),
    );
    let at = Point::new(45.0, 7.0).unwrap();
    from.insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    from.set_state(DriverId(1), DriverState::Busy).unwrap();
    let sent = from.remove(DriverId(1)).unwrap();
    let states = [
        DriverState::Available,
        DriverState::Offered,
        DriverState::Busy,
        DriverState::Offline,
    ];
    let state_code = states.iter().position(|&s| s == sent.state).unwrap();
    let line = format!(
        "{} {} {} {} {} {} {} {}",
        sent.id.0,
        sent.point.lat(),
        sent.point.lng(),
        sent.profile.class.0,
        sent.profile.capacity,
        state_code,
        sent.version.to_bits(),
        sent.age.as_nanos(),
    );
    let fields: Vec<&str> = line.split(' ').collect();
    let received = DriverRecord {
        id: DriverId(fields[0].parse().unwrap()),
        point: Point::new(fields[1].parse().unwrap(), fields[2].parse().unwrap()).unwrap(),
        profile: DriverProfile {
            class: VehicleClass(fields[3].parse().unwrap()),
            capacity: fields[4].parse().unwrap(),
        },
        state: states[fields[5].parse::<usize>().unwrap()],
        version: Version::from_bits(fields[6].parse().unwrap()),
        seen_nanos: 0,
        age: Duration::from_nanos(fields[7].parse().unwrap()),
    };
    to.restore(received).unwrap();
    let there = to.driver(DriverId(1)).unwrap();
    assert_eq!(
        (there.point, there.state, there.version),
        (sent.point, DriverState::Busy, sent.version)
    );
}

/// A record from outside (another process, a message) may carry any version. One the index
/// could not count past without its versions wrapping to ones it has given before is refused,
/// and the largest one taken still moves on, through a removal and a new insert, without a
/// version repeating.
#[test]
fn a_record_whose_version_could_wrap_is_refused() {
    let index = Index::new(Config::default()).unwrap();
    let at = Point::new(45.0, 7.0).unwrap();
    let record = |bits: u64| DriverRecord {
        id: DriverId(1),
        point: at,
        profile: DriverProfile::default(),
        state: DriverState::Available,
        version: Version::from_bits(bits),
        seen_nanos: 0,
        age: Duration::ZERO,
    };
    for bits in [u64::MAX - 3, 1 << 63] {
        assert_eq!(
            index.restore(record(bits)),
            Err(Error::InconsistentRecord(DriverId(1))),
            "version bits {bits:#x}"
        );
    }
    let largest = (1 << 63) - 4;
    index.restore(record(largest)).unwrap();
    let claim = index
        .claim(DriverId(1), Version::from_bits(largest))
        .unwrap();
    index.remove(DriverId(1)).unwrap();
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let again = index.driver(DriverId(1)).unwrap().version;
    assert!(
        again > claim.version(),
        "{again:?} after {:?}",
        claim.version()
    );
    let second = index.claim(DriverId(1), again).unwrap();
    assert_ne!(second.version(), claim.version());
    assert_eq!(index.accept(&claim), Err(Error::ClaimInvalid(DriverId(1))));
    index.accept(&second).unwrap();
}

/// Restoring a record older than what the index has since issued gives the driver a new
/// version: a version seen before the record left cannot claim a later stay's state.
#[test]
fn an_old_record_does_not_bring_back_its_version() {
    let index = Index::new(Config::default()).unwrap();
    let at = Point::new(45.0, 7.0).unwrap();
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let old = index.remove(DriverId(1)).unwrap();
    index
        .insert(DriverId(1), at, DriverProfile::default())
        .unwrap();
    let newer = index.driver(DriverId(1)).unwrap().version;
    assert_ne!(newer, old.version);
    index.remove(DriverId(1)).unwrap();
    index.restore(old).unwrap();
    let restored = index.driver(DriverId(1)).unwrap().version;
    assert_ne!(restored, old.version);
    assert_ne!(restored, newer);
    assert_eq!(
        index.claim(DriverId(1), old.version),
        Err(Error::ClaimLost(DriverId(1)))
    );
    assert_eq!(
        index.claim(DriverId(1), newer),
        Err(Error::ClaimLost(DriverId(1)))
    );
    let claim = index.claim(DriverId(1), restored).unwrap();
    index.accept(&claim).unwrap();
}

/// The sphere distance between two points, from the haversine formula.
fn center_distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    haversine_m(Point::new(a.0, a.1).unwrap(), Point::new(b.0, b.1).unwrap())
}

/// `partitions_to_ask` against every cell of the coarse resolutions, for radii up to half the
/// globe: each partition once, every partition within the radius named, none named that is
/// clearly beyond it. A cell is taken to reach as far from its center as its farthest vertex.
#[test]
fn partitions_to_ask_equal_a_scan_of_every_cell() {
    for res in 0..=2u8 {
        let resolution = Resolution::try_from(res).unwrap();
        let partitioner = partitioner(resolution, 3);
        let cells: Vec<(h3o::CellIndex, (f64, f64), f64)> = h3o::CellIndex::base_cells()
            .flat_map(|base| base.children(resolution))
            .map(|cell| {
                let c = LatLng::from(cell);
                let center = (c.lat(), c.lng());
                let radius = cell
                    .boundary()
                    .iter()
                    .map(|v| center_distance_m(center, (v.lat(), v.lng())))
                    .fold(0.0, f64::max);
                (cell, center, radius)
            })
            .collect();
        for (lat, lng) in [(0.0, 0.0), (45.0, 179.9), (-89.0, 30.0), (64.7, 10.536_199)] {
            for radius_m in [500_000.0, 2_000_000.0, 8_000_000.0, 20_000_000.0] {
                let query = Point::new(lat, lng).unwrap();
                let asked = match partitioner.partitions_to_ask(query, radius_m) {
                    Ok(asked) => asked,
                    // Nearly the whole globe at resolution 2: more than 4,096 of its 5,882 cells.
                    Err(Error::TooManyPartitions { .. }) if res == 2 && radius_m > 1e7 => continue,
                    Err(e) => panic!("res {res} ({lat}, {lng}) {radius_m} m: {e}"),
                };
                let mut distinct = asked.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(
                    distinct.len(),
                    asked.len(),
                    "res {res} ({lat}, {lng}) {radius_m} m: duplicates"
                );
                for (cell, center, reach) in &cells {
                    let gap = center_distance_m((lat, lng), *center) - reach;
                    if gap <= radius_m - 1.0 {
                        assert!(
                            asked.contains(cell),
                            "res {res} ({lat}, {lng}) {radius_m} m: {cell} missed"
                        );
                    } else if gap > radius_m + 1.0 {
                        assert!(
                            !asked.contains(cell),
                            "res {res} ({lat}, {lng}) {radius_m} m: {cell} named"
                        );
                    }
                }
            }
        }
    }
}

/// More partitions than one call names is its own error, which says so.
#[test]
fn too_many_partitions_is_its_own_error() {
    let partitioner = partitioner(Resolution::Five, 2);
    let asked = partitioner.partitions_to_ask(Point::new(0.0, 0.0).unwrap(), 2_000_000.0);
    assert_eq!(
        asked,
        Err(Error::TooManyPartitions {
            max: MAX_PARTITIONS_ASKED
        })
    );
    let message = asked.unwrap_err().to_string();
    assert!(
        message.contains("partitions") && !message.contains("drivers"),
        "{message}"
    );
}

/// The unit vector of a position.
fn unit_of(ll: LatLng) -> [f64; 3] {
    let (lat, lng) = (ll.lat_radians(), ll.lng_radians());
    [lat.cos() * lng.cos(), lat.cos() * lng.sin(), lat.sin()]
}

/// The position of a (not necessarily unit) vector.
fn point_of(v: [f64; 3]) -> Point {
    let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let lat = (v[2] / norm).clamp(-1.0, 1.0).asin().to_degrees();
    Point::new(lat, v[1].atan2(v[0]).to_degrees()).unwrap()
}

/// Half the globe away, a partition is still named when one of its points is exactly at the
/// radius: a query from a few centimeters off the antipode of a coarse cell's center, through
/// one of its vertices, with the radius the distance to that vertex. (The bound is then the
/// difference of two angles near π and the circle's: an angle taken from the arc sine of the
/// chord loses half its digits there, tenths of a meter, far more than the slack.)
#[test]
fn a_partition_at_the_radius_half_the_globe_away_is_named() {
    let partitioner = partitioner(Resolution::Zero, 3);
    let mut missed = Vec::new();
    for cell in h3o::CellIndex::base_cells() {
        let center = unit_of(LatLng::from(cell));
        for vertex in cell.boundary().iter() {
            let vertex = unit_of(*vertex);
            // The unit tangent at the center toward the vertex.
            let along = vertex[0] * center[0] + vertex[1] * center[1] + vertex[2] * center[2];
            let tangent: Vec<f64> = (0..3).map(|i| vertex[i] - along * center[i]).collect();
            let norm = tangent.iter().map(|t| t * t).sum::<f64>().sqrt();
            // 1 cm to 30 cm short of the antipode, on the great circle through the vertex.
            for step in (0..16).step_by(3) {
                let angle = std::f64::consts::PI - 1.6e-9 * 1.25_f64.powi(step);
                let query = point_of(std::array::from_fn(|i| {
                    angle.cos() * center[i] + angle.sin() * tangent[i] / norm
                }));
                let corner = point_of(vertex);
                let radius_m = query.distance_m(corner);
                let asked = partitioner.partitions_to_ask(query, radius_m).unwrap();
                if !asked.contains(&partitioner.partition_of(corner)) {
                    missed.push((cell, step, radius_m));
                }
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(4)]
    );
}
