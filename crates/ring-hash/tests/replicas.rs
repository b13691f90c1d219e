//! Replica lists: no position favours a node, and the lazy iterator and the allocation-free
//! form agree with `get_n`.
#![cfg(not(infra_loom))]

use infra_ring_hash::{Engine, Flip, Jump, Member, Memento, Placement};

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
