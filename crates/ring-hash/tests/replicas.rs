//! Replica lists: no position favours a node, the lazy iterator and the allocation-free
//! form agree with `get_n`, a lookup that skips unhealthy nodes moves only their keys, and
//! zone-aware lists take distinct zones first.
#![cfg(not(infra_loom))]

use std::collections::BTreeMap;

use infra_ring_hash::{
    Engine, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement, Rendezvous, Ring,
};
use proptest::prelude::*;

/// How often each of `nodes` nodes comes last in `get_n(key, nodes)`, over `keys` keys.
fn last_position_counts<E: Engine>(engine: E, nodes: u32, keys: u64) -> Vec<u64> {
    let placement = Placement::from_members(engine, (0..nodes).map(Member::new)).unwrap();
    let mut counts = vec![0u64; nodes as usize];
    for key in 0..keys {
        let replicas = placement.get_n(&key, nodes as usize);
        assert_eq!(replicas.len(), nodes as usize);
        counts[*replicas[replicas.len() - 1] as usize] += 1;
    }
    counts
}

/// In a random order the last node of a full list has the higher number half the time; a
/// spill-over in bucket order would put the higher bucket last every time.
fn last_two_in_bucket_order<E: Engine>(engine: E, nodes: u32, keys: u64) -> f64 {
    let placement = Placement::from_members(engine, (0..nodes).map(Member::new)).unwrap();
    let ascending = (0..keys)
        .filter(|key| {
            let replicas = placement.get_n(key, nodes as usize);
            replicas[replicas.len() - 1] > replicas[replicas.len() - 2]
        })
        .count();
    ascending as f64 / keys as f64
}

#[test]
fn the_end_of_a_full_replica_list_is_not_in_bucket_order() {
    let (nodes, keys) = (48u32, 4800u64);
    // Binomial(4800, 1/2) / 4800: sigma 0.0072; five sigma.
    for (name, share) in [
        ("jump", last_two_in_bucket_order(Jump::new(), nodes, keys)),
        (
            "fliphash",
            last_two_in_bucket_order(Flip::new(), nodes, keys),
        ),
        (
            "memento",
            last_two_in_bucket_order(Memento::new(), nodes, keys),
        ),
    ] {
        assert!(
            (share - 0.5).abs() < 0.036,
            "{name}: {share} of the lists end in bucket order"
        );
    }
}

/// Every position of a full replica list is shared evenly: a node comes last for about
/// `keys / nodes` keys, as when the order is a random permutation.
#[test]
fn no_node_is_favoured_at_the_end_of_the_replica_list() {
    let (nodes, keys) = (48u32, 4800u64);
    // Binomial(4800, 1/48): mean 100, sigma 9.9; six sigma either side.
    let (low, high) = (40, 160);
    for (name, counts) in [
        ("jump", last_position_counts(Jump::new(), nodes, keys)),
        ("fliphash", last_position_counts(Flip::new(), nodes, keys)),
        ("memento", last_position_counts(Memento::new(), nodes, keys)),
    ] {
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *min >= low && *max <= high,
            "{name}: a node came last for {min} to {max} of {keys} keys"
        );
    }
}

/// The lazy walk gives `get_n`'s order, all members once each; skipping the nodes a caller
/// marks down gives the first healthy ones in that order.
#[test]
fn node_iter_is_get_n_lazily_and_skips_down_nodes() {
    fn check<E: Engine>(engine: E) {
        let mut placement = Placement::from_members(engine, (0..9u32).map(Member::new)).unwrap();
        placement.remove(&3).unwrap();
        let name = placement.engine().name();
        for key in 0..300u32 {
            let all = placement.get_n(&key, 8);
            let walked: Vec<&u32> = placement.node_iter(&key).collect();
            assert_eq!(walked, all, "{name}: key {key}");
            for n in 0..=8 {
                assert_eq!(placement.get_n(&key, n), all[..n], "{name}: prefix {n}");
            }
            let down = |node: &u32| node % 3 == 1;
            let healthy: Vec<&u32> = placement
                .node_iter(&key)
                .filter(|n| !down(n))
                .take(2)
                .collect();
            let expected: Vec<&u32> = all.iter().copied().filter(|n| !down(n)).take(2).collect();
            assert_eq!(healthy, expected, "{name}: key {key}");
        }
    }
    check(infra_ring_hash::Ring::new());
    check(infra_ring_hash::Rendezvous::new());
    check(Jump::new());
    check(Flip::new());
    check(Memento::new());
    check(infra_ring_hash::Maglev::new());
}

/// A Maglev engine with a small table, so that building one per case stays cheap.
fn small_maglev() -> Maglev {
    Maglev::with_config(MaglevConfig {
        entries_per_node: 10,
        table_size: Some(1009),
    })
    .unwrap()
}

/// Skipping unhealthy nodes: every other key stays, and a skipped node's key goes to the
/// first healthy node of its full `get_n` list.
fn check_skipping<E: Engine>(engine: E) {
    let placement = Placement::from_members(engine, (0..20u32).map(Member::new)).unwrap();
    let down = [3u32, 7, 11];
    let name = placement.engine().name();
    let mut moved = 0;
    for key in 0..3000u64 {
        let owner = *placement.node(&key).unwrap();
        let found = *placement
            .node_where(&key, |node| !down.contains(node))
            .unwrap();
        if down.contains(&owner) {
            let next = placement
                .get_n(&key, 20)
                .into_iter()
                .copied()
                .find(|node| !down.contains(node))
                .unwrap();
            assert_eq!(found, next, "{name}: key {key}");
            moved += 1;
        } else {
            assert_eq!(found, owner, "{name}: key {key} moved off a healthy node");
        }
    }
    // Three nodes of twenty own about 450 of the keys: the check above did run.
    assert!(moved > 200, "{name}: {moved}");
    assert_eq!(placement.node_where(&1u64, |_| false), None);
}

#[test]
fn skipping_unhealthy_nodes_moves_only_their_keys() {
    check_skipping(Ring::new());
    check_skipping(Rendezvous::new());
    check_skipping(Jump::new());
    check_skipping(Flip::new());
    check_skipping(small_maglev());
    check_skipping(Memento::new());
}

/// The zone-aware list, from its definition: walk the full preference order once taking each
/// node whose zone is new, then again taking the nodes left, until `n`.
fn zoned_model(order: &[u32], zone_of: &BTreeMap<u32, u8>, n: usize) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for &node in order {
        if out.len() < n && out.iter().all(|held| zone_of[held] != zone_of[&node]) {
            out.push(node);
        }
    }
    for &node in order {
        if out.len() < n && !out.contains(&node) {
            out.push(node);
        }
    }
    out
}

fn check_zones<E: Engine>(engine: E, zone_of: &BTreeMap<u32, u8>, n: usize, key: u64) {
    let placement =
        Placement::from_members(engine, zone_of.keys().copied().map(Member::new)).unwrap();
    let order: Vec<u32> = placement
        .get_n(&key, zone_of.len())
        .into_iter()
        .copied()
        .collect();
    let got: Vec<u32> = placement
        .get_n_across_zones(&key, n, |node| zone_of[node])
        .into_iter()
        .copied()
        .collect();
    assert_eq!(
        got,
        zoned_model(&order, zone_of, n),
        "{}",
        placement.engine().name()
    );
    let zones: std::collections::BTreeSet<u8> = zone_of.values().copied().collect();
    let got_zones: std::collections::BTreeSet<u8> = got.iter().map(|node| zone_of[node]).collect();
    assert_eq!(got_zones.len(), n.min(zones.len()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn zone_aware_lists_match_the_model(
        zone_of in proptest::collection::btree_map(0u32..1000, 0u8..5, 1..25),
        n in 0usize..30,
        key in any::<u64>(),
    ) {
        check_zones(Ring::new(), &zone_of, n, key);
        check_zones(Rendezvous::new(), &zone_of, n, key);
        check_zones(Jump::new(), &zone_of, n, key);
        check_zones(small_maglev(), &zone_of, n, key);
        check_zones(Memento::new(), &zone_of, n, key);
    }
}
