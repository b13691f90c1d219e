//! The partition function: queries name every partition they must ask, and drivers crossing
//! partitions are handed from one node's index to the other's without loss.

use h3o::{LatLng, Resolution};
use infra_common::ManualClock;
use infra_geomatch::{
    Config, DriverId, DriverProfile, DriverState, Filter, Index, Partitioner, Point,
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
            let mut found: Vec<u64> = partitioner
                .nodes_to_ask(rider, radius)
                .unwrap()
                .into_iter()
                .flat_map(|n| {
                    nodes[*n as usize]
                        .within(rider, radius, &Filter::any())
                        .unwrap()
                })
                .map(|c| c.driver.0)
                .collect();
            found.sort_unstable();
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

/// A driver offered on one node and handed to another can still accept there, and a hand-off
/// of an unknown driver or into a node that already has it is refused.
#[test]
fn an_offer_survives_a_handoff() {
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
    to.accept(&claim).unwrap();
    assert_eq!(to.driver(DriverId(1)).unwrap().state, DriverState::Busy);
}
