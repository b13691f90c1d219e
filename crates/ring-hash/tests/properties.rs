//! Property tests for every engine: determinism, membership, distinct replicas, disruption and
//! the moved fraction, plus exact agreement with simple reference models.
#![cfg(not(infra_loom))]

use std::collections::{BTreeMap, BTreeSet};

use infra_ring_hash::{
    Disruption, Engine, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement, Rendezvous,
    Ring, RingConfig, flip_hash, jump_hash,
};
use proptest::prelude::*;

mod spec;

use spec::{hash_of as key_hash, murmur_fmix, pair as mix, scale as reduce};

const KEYS: u64 = 3000;

fn build<E: Engine>(engine: E, members: &[(u32, u32)]) -> Placement<u32, E> {
    Placement::from_members(
        engine,
        members
            .iter()
            .map(|&(node, weight)| Member::weighted(node, weight)),
    )
    .expect("valid membership")
}

fn owners<E: Engine>(placement: &Placement<u32, E>) -> Vec<u32> {
    (0..KEYS)
        .map(|key| *placement.node(&key).expect("non-empty"))
        .collect()
}

/// Distinct node ids with weights (all 1 unless `weighted`).
fn members(max: usize, weighted: bool) -> impl Strategy<Value = Vec<(u32, u32)>> {
    (
        proptest::collection::btree_set(0u32..10_000, 1..max),
        proptest::collection::vec(1u32..5, max),
    )
        .prop_map(move |(nodes, weights)| {
            nodes
                .into_iter()
                .zip(weights)
                .map(|(node, weight)| (node, if weighted { weight } else { 1 }))
                .collect()
        })
}

/// The documented upper bound on the fraction of keys an add moves, as a multiple of the ideal
/// `weight / total_weight`, before sampling noise.
fn moved_factor(disruption: Disruption, name: &str) -> f64 {
    match (disruption, name) {
        // A node's 160 points give it a share within about ±25% of the ideal at 3σ.
        (_, "ring") => 1.5,
        (Disruption::NearMinimal, _) => 2.5,
        _ => 1.0,
    }
}

fn within_bound(moved: usize, ideal: f64, factor: f64) -> bool {
    let keys = KEYS as f64;
    let noise = 5.0 * (ideal * (1.0 - ideal) / keys).sqrt();
    (moved as f64 / keys) <= factor * ideal + noise + 0.005
}

/// Checks the properties every engine must have on one membership.
fn check_engine<E: Engine>(make: impl Fn() -> E, members: &[(u32, u32)], new_node: u32) {
    let placement = build(make(), members);
    let before = owners(&placement);
    let set: BTreeSet<u32> = members.iter().map(|m| m.0).collect();

    // Determinism: the same membership built again places every key the same way.
    assert_eq!(owners(&build(make(), members)), before);

    // Lookups return members; get_n returns distinct members, owner first.
    for key in 0..200u64 {
        let owner = *placement.node(&key).unwrap();
        assert!(set.contains(&owner));
        for n in [1, 2, 3, set.len(), set.len() + 2] {
            let replicas = placement.get_n(&key, n);
            assert_eq!(replicas.len(), n.min(set.len()));
            assert_eq!(*replicas[0], owner);
            let distinct: BTreeSet<u32> = replicas.iter().map(|n| **n).collect();
            assert_eq!(distinct.len(), replicas.len());
            assert!(distinct.is_subset(&set));
        }
    }

    // Adding a node: keys move only onto it (except for near-minimal engines), and the moved
    // fraction stays within the documented bound of the ideal.
    if set.contains(&new_node) {
        return;
    }
    let mut grown = placement.clone();
    grown.add(new_node, 1).unwrap();
    let after = owners(&grown);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let total_weight: u32 = members.iter().map(|m| m.1).sum::<u32>() + 1;
    let ideal = 1.0 / f64::from(total_weight);
    let engine = placement.engine();
    assert!(
        within_bound(
            moved,
            ideal,
            moved_factor(engine.disruption(), engine.name())
        ),
        "{}: add moved {moved} of {KEYS} keys, ideal {ideal}",
        engine.name()
    );
    if engine.disruption() != Disruption::NearMinimal {
        for (old, new) in before.iter().zip(&after) {
            assert!(
                new == old || *new == new_node,
                "{}: key moved between old nodes",
                engine.name()
            );
        }
        // Removing the node just added moves only its keys; an engine that keeps its slot
        // vacant (Memento) sends them to their next choice, any other restores every key.
        let mut shrunk = grown.clone();
        shrunk.remove(&new_node).unwrap();
        let restored = owners(&shrunk);
        if engine.keeps_vacant_slots() {
            for (grown, new) in after.iter().zip(&restored) {
                assert!(
                    new == grown || (*grown == new_node && set.contains(new)),
                    "{}: add then remove moved a key of another node",
                    engine.name()
                );
            }
        } else {
            assert_eq!(restored, before, "{}: add then remove", engine.name());
        }
    }

    // Removing an arbitrary node moves only its keys (minimal engines), or only its keys and
    // the keys of the node that takes its number (numbered buckets).
    let victim = members[members.len() / 2].0;
    if set.len() > 1 {
        let mut shrunk = placement.clone();
        let last = shrunk.members().last().map(|(n, _)| *n).unwrap();
        shrunk.remove(&victim).unwrap();
        let after = owners(&shrunk);
        for (old, new) in before.iter().zip(&after) {
            assert!(set.contains(new) && *new != victim);
            match engine.disruption() {
                Disruption::Minimal => assert!(old == new || *old == victim),
                Disruption::MinimalAtTheEnd => {
                    assert!(old == new || *old == victim || *old == last);
                }
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn ring_properties(members in members(30, true), new_node in 0u32..10_000) {
        check_engine(|| Ring::with_config(RingConfig { points_per_weight: 160 }).unwrap(), &members, new_node);
    }

    #[test]
    fn rendezvous_properties(members in members(30, true), new_node in 0u32..10_000) {
        check_engine(Rendezvous::new, &members, new_node);
    }

    #[test]
    fn jump_properties(members in members(40, false), new_node in 0u32..10_000) {
        check_engine(Jump::new, &members, new_node);
    }

    #[test]
    fn flip_properties(members in members(40, false), new_node in 0u32..10_000) {
        check_engine(Flip::new, &members, new_node);
    }

    #[test]
    fn maglev_properties(members in members(30, true), new_node in 0u32..10_000) {
        // The default table, which the 2.5x bound is documented for: a small table (4,099
        // entries) moved more than 2.5x the ideal on some weighted memberships.
        check_engine(Maglev::new, &members, new_node);
    }

    #[test]
    fn memento_properties(members in members(40, false), new_node in 0u32..10_000) {
        check_engine(Memento::new, &members, new_node);
    }

    /// Order-independent engines place keys the same whatever order nodes were added in.
    #[test]
    fn hash_ordered_engines_ignore_insertion_order(members in members(20, true)) {
        let mut reversed = members.clone();
        reversed.reverse();
        prop_assert_eq!(owners(&build(Ring::new(), &members)), owners(&build(Ring::new(), &reversed)));
        prop_assert_eq!(owners(&build(Maglev::new(), &members)), owners(&build(Maglev::new(), &reversed)));
        prop_assert_eq!(
            owners(&build(Rendezvous::new(), &members)),
            owners(&build(Rendezvous::new(), &reversed))
        );
    }

    /// Reweighting a node moves keys only onto or off it (ring and rendezvous).
    #[test]
    fn reweighting_moves_only_that_nodes_keys(members in members(20, true), weight in 1u32..6) {
        let node = members[0].0;
        for (before, after) in [
            {
                let mut p = build(Ring::new(), &members);
                let b = owners(&p);
                p.set_weight(&node, weight).unwrap();
                (b, owners(&p))
            },
            {
                let mut p = build(Rendezvous::new(), &members);
                let b = owners(&p);
                p.set_weight(&node, weight).unwrap();
                (b, owners(&p))
            },
        ] {
            for (old, new) in before.iter().zip(&after) {
                prop_assert!(old == new || *old == node || *new == node);
            }
        }
    }

    /// The ring's indexed lookup equals a linear scan over the documented points.
    #[test]
    fn ring_matches_a_linear_scan(members in members(12, true), keys in proptest::collection::vec(any::<u64>(), 50)) {
        let placement = build(Ring::with_config(RingConfig { points_per_weight: 20 }).unwrap(), &members);
        let mut points: Vec<(u64, u64, u32)> = Vec::new();
        for &(node, weight) in &members {
            let h = key_hash(&node);
            points.extend((0..u64::from(weight) * 20).map(|i| (mix(h, i), h, node)));
        }
        points.sort_unstable();
        for key in keys.into_iter().chain([0, u64::MAX]) {
            let expected = points.iter().find(|p| p.0 >= key).unwrap_or(&points[0]).2;
            prop_assert_eq!(*placement.node_for_hash(key).unwrap(), expected);
        }
    }

    /// Rendezvous picks the node with the best score, computed naively node by node from the
    /// definition: with equal weights the largest `mix(key, node)`; otherwise the smallest
    /// `-log2(u) / weight` with `u = (mix >> 1 + 1) / 2^63`, in double precision. The crate's
    /// fixed-point logarithm is within 3e-6 of the real one, so keys whose two best scores are
    /// closer than that are skipped.
    #[test]
    fn rendezvous_matches_the_documented_scores(members in members(12, true), keys in proptest::collection::vec(any::<u64>(), 50)) {
        let placement = build(Rendezvous::new(), &members);
        let uniform = members.iter().all(|m| m.1 == members[0].1);
        let mut checked = 0;
        for key in keys {
            let best = if uniform {
                members.iter().map(|&(node, _)| (mix(key, key_hash(&node)), std::cmp::Reverse(key_hash(&node)), node)).max().unwrap().2
            } else {
                let mut ranked: Vec<(f64, u32)> = members
                    .iter()
                    .map(|&(node, weight)| {
                        let u = ((mix(key, key_hash(&node)) >> 1) as f64 + 1.0) / 2f64.powi(63);
                        (-u.log2() / f64::from(weight), node)
                    })
                    .collect();
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
                if ranked.len() > 1 && ranked[1].0 - ranked[0].0 < 1e-5 {
                    continue;
                }
                ranked[0].1
            };
            checked += 1;
            prop_assert_eq!(*placement.node_for_hash(key).unwrap(), best);
        }
        prop_assert!(checked > 0);
    }

    /// Jump and FlipHash are consistent range hashes: growing the range by one moves a key
    /// only to the new bucket.
    #[test]
    fn range_hashes_are_consistent(key in any::<u64>(), buckets in 1u32..5000) {
        let j = jump_hash(key, buckets);
        prop_assert!(j < buckets);
        let j2 = jump_hash(key, buckets + 1);
        prop_assert!(j2 == j || j2 == buckets);
        let f = flip_hash(key, u64::from(buckets));
        prop_assert!(f < u64::from(buckets));
        let f2 = flip_hash(key, u64::from(buckets) + 1);
        prop_assert!(f2 == f || f2 == u64::from(buckets));
    }

    /// FlipHash across a power-of-two boundary and at large ranges.
    #[test]
    fn flip_hash_is_consistent_at_large_ranges(key in any::<u64>(), shift in 1u32..62) {
        let n = 1u64 << shift;
        for buckets in [n - 1, n, n + 1] {
            let before = flip_hash(key, buckets);
            let after = flip_hash(key, buckets + 1);
            prop_assert!(before < buckets);
            prop_assert!(after == before || after == buckets);
        }
    }

    /// Memento with no removal is exactly FlipHash; with removals it keeps every key on a working
    /// bucket and moves only the removed buckets' keys.
    #[test]
    fn memento_survives_arbitrary_removals(size in 2u32..60, removals in proptest::collection::vec(any::<prop::sample::Index>(), 1..20), restore in 0usize..5) {
        let members: Vec<(u32, u32)> = (0..size).map(|n| (n, 1)).collect();
        let mut memento = build(Memento::new(), &members);
        let flip = build(Flip::new(), &members);
        prop_assert_eq!(owners(&memento), owners(&flip));
        let mut alive: BTreeSet<u32> = (0..size).collect();
        let mut before = owners(&memento);
        let mut removed = Vec::new();
        for index in removals {
            if alive.len() == 1 {
                break;
            }
            let victim = *alive.iter().nth(index.index(alive.len())).unwrap();
            memento.remove(&victim).unwrap();
            alive.remove(&victim);
            removed.push(victim);
            let after = owners(&memento);
            for (old, new) in before.iter().zip(&after) {
                prop_assert!(alive.contains(new));
                prop_assert!(old == new || *old == victim);
            }
            before = after;
        }
        // Restoring (adding a node) moves keys only onto the new node.
        for i in 0..restore {
            let node = 100_000 + i as u32;
            memento.add(node, 1).unwrap();
            let after = owners(&memento);
            for (old, new) in before.iter().zip(&after) {
                prop_assert!(old == new || *new == node);
            }
            before = after;
        }
    }

    /// Membership changes behave like a map: the same errors, the same members.
    #[test]
    fn membership_matches_a_map(ops in proptest::collection::vec((0u8..3, 0u32..12, 0u32..4), 1..60)) {
        let mut placement = Placement::new(Ring::with_config(RingConfig { points_per_weight: 4 }).unwrap());
        let mut model: BTreeMap<u32, u32> = BTreeMap::new();
        for (op, node, weight) in ops {
            match op {
                0 => {
                    let result = placement.add(node, weight);
                    let expected_ok = weight > 0 && !model.contains_key(&node);
                    prop_assert_eq!(result.is_ok(), expected_ok);
                    if expected_ok {
                        model.insert(node, weight);
                    }
                }
                1 => {
                    let result = placement.remove(&node);
                    prop_assert_eq!(result.ok(), model.remove(&node));
                }
                _ => {
                    let result = placement.set_weight(&node, weight);
                    let expected_ok = weight > 0 && model.contains_key(&node);
                    prop_assert_eq!(result.is_ok(), expected_ok);
                    if expected_ok {
                        model.insert(node, weight);
                    }
                }
            }
            let members: BTreeMap<u32, u32> = placement.members().map(|(n, w)| (*n, w)).collect();
            prop_assert_eq!(&members, &model);
            if let Some(owner) = placement.node(&node) {
                prop_assert!(model.contains_key(owner));
            } else {
                prop_assert!(model.is_empty());
            }
        }
    }
}

/// The Maglev table of the paper, populated naively for unit weights.
fn reference_maglev(nodes: &[u32], size: u64) -> Vec<u32> {
    let mut sorted: Vec<(u64, u32)> = nodes.iter().map(|&n| (key_hash(&n), n)).collect();
    sorted.sort_unstable();
    let permutation: Vec<Vec<u64>> = sorted
        .iter()
        .map(|&(h, _)| {
            let offset = reduce(mix(h, 1), size);
            let skip = reduce(mix(h, 2), size - 1) + 1;
            (0..size).map(|j| (offset + j * skip) % size).collect()
        })
        .collect();
    let mut next = vec![0usize; sorted.len()];
    let mut table = vec![None; size as usize];
    let mut filled = 0;
    while filled < size {
        for (i, &(_, node)) in sorted.iter().enumerate() {
            let mut c = permutation[i][next[i]];
            while table[c as usize].is_some() {
                next[i] += 1;
                c = permutation[i][next[i]];
            }
            table[c as usize] = Some(node);
            next[i] += 1;
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    table.into_iter().map(Option::unwrap).collect()
}

#[test]
fn maglev_matches_the_papers_population() {
    let nodes: Vec<u32> = (0..13).map(|n| n * 7 + 1).collect();
    // 2053 is prime, so the engine uses it as it is.
    let table = reference_maglev(&nodes, 2053);
    let engine = Maglev::with_config(MaglevConfig {
        entries_per_node: 1,
        table_size: Some(2053),
    })
    .unwrap();
    let placement = build(engine, &nodes.iter().map(|&n| (n, 1)).collect::<Vec<_>>());
    for key in 0..5000u64 {
        let hash = murmur_fmix(key ^ 0x9e3779b97f4a7c15);
        let expected = table[reduce(hash, table.len() as u64) as usize];
        assert_eq!(*placement.node_for_hash(hash).unwrap(), expected);
    }
}

#[test]
fn maglev_shares_entries_within_two_percent_at_1000_nodes() {
    let members: Vec<(u32, u32)> = (0..1000).map(|n| (n, 1)).collect();
    let placement = build(Maglev::new(), &members);
    let counts = placement.engine().entry_counts();
    let size = placement.engine().table_size() as f64;
    assert!(size >= 100_000.0);
    let peak = *counts.iter().max().unwrap() as f64;
    assert!(peak / (size / 1000.0) <= 1.02, "peak {peak} of {size}");
}

/// Keys moved by adding one node, bounded from below (the new node gets about its share: an
/// engine that gave it nothing would fail) and from above (little moves between old nodes),
/// across node counts that cross every internal size step: FlipHash's and Memento's powers of
/// two, the ring index's powers of two, and the table sizes Maglev's default once changed at
/// (11, 21, 41 nodes).
#[test]
fn adding_a_node_moves_about_its_share_at_every_size() {
    const MANY: u64 = 20_000;
    fn check<E: Engine>(make: impl Fn() -> E, upper_factor: f64, lower_factor: f64) {
        let keys: Vec<u64> = (0..MANY).map(|k| key_hash(&k)).collect();
        for n in [
            1u32, 2, 3, 5, 7, 8, 10, 11, 15, 16, 20, 21, 31, 32, 40, 41, 63, 64,
        ] {
            let placement = build(make(), &(0..n).map(|node| (node, 1)).collect::<Vec<_>>());
            let mut grown = placement.clone();
            grown.add(n, 1).unwrap();
            let (mut moved, mut onto_new) = (0u64, 0u64);
            for &key in &keys {
                let (old, new) = (placement.node_for_hash(key), grown.node_for_hash(key));
                if old != new {
                    moved += 1;
                    onto_new += u64::from(*new.unwrap() == n);
                }
            }
            let ideal = 1.0 / f64::from(n + 1);
            // Five standard deviations of a binomial share of MANY keys.
            let noise = 5.0 * (ideal * (1.0 - ideal) * MANY as f64).sqrt();
            let expected = ideal * MANY as f64;
            let name = placement.engine().name();
            assert!(
                onto_new as f64 >= lower_factor * expected - noise,
                "{name}, {n} -> {}: only {onto_new} keys onto the new node, ideal {expected:.0}",
                n + 1
            );
            assert!(
                moved as f64 <= upper_factor * expected + noise,
                "{name}, {n} -> {}: {moved} keys moved, ideal {expected:.0}",
                n + 1
            );
        }
    }
    // The ring gives a node a share within about ±40% of ideal at 5σ of its 160 points.
    check(Ring::new, 1.5, 0.6);
    check(Rendezvous::new, 1.0, 1.0);
    check(Jump::new, 1.0, 1.0);
    check(Flip::new, 1.0, 1.0);
    check(Memento::new, 1.0, 1.0);
    check(Maglev::new, 1.5, 1.0);
}

/// The README's figures for the default Maglev table: keys 0..100,000 moved by adding node `n`
/// to nodes `0..n`, in hundredths of a percent, against the ideal `1 / (n + 1)`.
#[test]
fn maglev_default_moves_near_the_ideal() {
    for (from, at_most) in [
        (2u32, 3340u64),
        (5, 1660),
        (40, 255),
        (100, 115),
        (1000, 43),
    ] {
        let members: Vec<(u32, u32)> = (0..from).map(|n| (n, 1)).collect();
        let placement = build(Maglev::new(), &members);
        let mut grown = placement.clone();
        grown.add(from, 1).unwrap();
        let moved = (0..100_000u64)
            .filter(|k| placement.node(k) != grown.node(k))
            .count() as u64;
        let ideal = 100_000 / u64::from(from + 1);
        assert!(
            moved >= ideal * 95 / 100,
            "{from}: {moved} moved, ideal {ideal}"
        );
        // Rounded to the README's precision.
        assert!(
            (moved + 5) / 10 <= at_most,
            "{from}: {moved} of 100,000 moved"
        );
    }
}

/// The README's promise for a table sized for 1,000 nodes: adding node 1,000 to nodes
/// `0..1000` moves at most twice the ideal `1 / 1001` of keys `0..1,000,000`. The ideal is
/// 999 keys; a binomial count of that size has a standard deviation of about 32 keys at the
/// ideal and 42 at the 1.74× the table's entries move, so the 1,998-key bound sits six
/// standard deviations above what the entries predict and the test cannot pass by chance.
/// 1,803 keys moved (1.80×) when this was written.
#[test]
fn maglev_sized_for_1000_nodes_moves_within_twice_the_ideal() {
    const MANY: u64 = 1_000_000;
    let config = MaglevConfig::for_max_nodes(1000).unwrap();
    let members: Vec<(u32, u32)> = (0..1000).map(|n| (n, 1)).collect();
    let placement = build(Maglev::with_config(config).unwrap(), &members);
    let mut grown = placement.clone();
    grown.add(1000, 1).unwrap();
    let (mut moved, mut onto_new) = (0u64, 0u64);
    for key in 0..MANY {
        let (old, new) = (placement.node(&key), grown.node(&key));
        if old != new {
            moved += 1;
            onto_new += u64::from(new == Some(&1000));
        }
    }
    let ideal = MANY / 1001;
    assert!(moved <= 2 * ideal, "{moved} of {MANY} moved, ideal {ideal}");
    // The new node gets its share, less five standard deviations.
    assert!(
        onto_new >= ideal - 160,
        "{onto_new} onto the new node, ideal {ideal}"
    );
}

/// Maglev's table never changes size on its own: a full table refuses a node, and only an
/// explicit resize makes room, moving nearly every key.
#[test]
fn maglev_table_resizes_only_when_asked() {
    use infra_ring_hash::{Error, MAX_TABLE_SIZE};
    assert_eq!(
        build(Maglev::new(), &[(1, 1)]).engine().table_size(),
        655_373
    );
    let small = MaglevConfig {
        entries_per_node: 10,
        table_size: Some(1009),
    };
    let members: Vec<(u32, u32)> = (0..100).map(|n| (n, 1)).collect();
    let mut placement = build(Maglev::with_config(small).unwrap(), &members);
    let before = owners(&placement);
    assert_eq!(
        placement.add(100, 1),
        Err(Error::TooManyNodes { engine: "maglev" })
    );
    assert_eq!(owners(&placement), before);
    // Too small for the members, or out of range: refused, nothing changes.
    assert_eq!(
        placement.resize_table(500),
        Err(Error::TooManyNodes { engine: "maglev" })
    );
    assert!(matches!(
        placement.resize_table(MAX_TABLE_SIZE + 1),
        Err(Error::SettingOutOfRange { .. })
    ));
    assert_eq!(placement.engine().table_size(), 1009);
    assert_eq!(owners(&placement), before);
    // 2000 rounds up to the prime 2003.
    placement.resize_table(2000).unwrap();
    assert_eq!(placement.engine().table_size(), 2003);
    assert_eq!(placement.engine().max_nodes(), 200);
    let moved = before
        .iter()
        .zip(&owners(&placement))
        .filter(|(a, b)| a != b)
        .count();
    // 88% when this run was written: a new permutation for every node over a new table.
    assert!(moved as u64 > KEYS * 8 / 10, "{moved} of {KEYS} moved");
    placement.add(100, 1).unwrap();
}

#[test]
fn weights_shift_shares() {
    let members = [(1u32, 1u32), (2, 3)];
    // The heavy node's share of 20,000 keys is binomial around 3/4: sigma =
    // sqrt(0.75 × 0.25 / 20,000) = 0.0031, and five sigma is 0.0153.
    let sampling = 5.0 * (0.75f64 * 0.25 / 20_000.0).sqrt();
    for (name, share) in [
        (
            "rendezvous",
            share_of_two(&build(Rendezvous::new(), &members)),
        ),
        ("maglev", share_of_two(&build(Maglev::new(), &members))),
    ] {
        assert!(
            (share - 0.75).abs() <= sampling,
            "{name}: heavy node got {share}"
        );
    }
    // The ring's arcs add their own spread: the light node's share is the sum of its 160 arcs
    // out of 800, each about exponential with mean 1/800, so its variance is 160 / 800² and
    // sigma 0.0158; five sigma of both together is 0.081.
    let arcs = (160.0f64 / (800.0 * 800.0)).sqrt();
    let ring = share_of_two(&build(Ring::new(), &members));
    let both = 5.0 * (arcs * arcs + (sampling / 5.0).powi(2)).sqrt();
    assert!((ring - 0.75).abs() <= both, "ring: heavy node got {ring}");
}

fn share_of_two<E: Engine>(placement: &Placement<u32, E>) -> f64 {
    let heavy = (0..20_000u64)
        .filter(|k| *placement.node(k).unwrap() == 2)
        .count();
    heavy as f64 / 20_000.0
}

#[test]
fn unweighted_engines_reject_weights_and_everyone_rejects_bad_input() {
    use infra_ring_hash::Error;
    let mut jump = Placement::new(Jump::new());
    assert!(matches!(
        jump.add(1u32, 2),
        Err(Error::WeightNotSupported {
            engine: "jump",
            weight: 2
        })
    ));
    assert!(matches!(
        Placement::new(Memento::new()).add(1u32, 3),
        Err(Error::WeightNotSupported { .. })
    ));
    assert!(matches!(
        Placement::new(Flip::new()).add(1u32, 3),
        Err(Error::WeightNotSupported { .. })
    ));
    assert!(jump.is_empty());
    assert_eq!(jump.try_node("k"), Err(Error::EmptyMembership));
    assert_eq!(jump.get_n("k", 3), Vec::<&u32>::new());
    let mut ring = Placement::new(Ring::new());
    assert!(matches!(ring.add("a", 0), Err(Error::ZeroWeight { .. })));
    ring.add("a", 1).unwrap();
    assert_eq!(
        ring.add("a", 1),
        Err(Error::DuplicateNode {
            node: "\"a\"".into()
        })
    );
    assert_eq!(
        ring.remove(&"b"),
        Err(Error::UnknownNode {
            node: "\"b\"".into()
        })
    );
    assert!(matches!(
        ring.set_weight(&"a", 0),
        Err(Error::ZeroWeight { .. })
    ));
    assert_eq!(ring.len(), 1);
    let message = Error::EmptyMembership.to_string();
    assert!(message.contains("add a node"));
}

/// Pinned placements: these must never change, or every deployed cluster would reshuffle.
#[test]
fn placements_are_pinned() {
    let members: Vec<(u32, u32)> = (0..10).map(|n| (n, 1)).collect();
    let sample = |owners: Vec<u32>| owners.into_iter().take(12).collect::<Vec<_>>();
    let pinned = [
        sample(owners(&build(Ring::new(), &members))),
        sample(owners(&build(Rendezvous::new(), &members))),
        sample(owners(&build(Jump::new(), &members))),
        sample(owners(&build(Flip::new(), &members))),
        sample(owners(&build(Maglev::new(), &members))),
        sample(owners(&build(Memento::new(), &members))),
    ];
    let expected: [Vec<u32>; 6] = [
        vec![9, 5, 9, 9, 6, 5, 9, 2, 5, 5, 1, 6],
        vec![3, 7, 8, 7, 9, 2, 2, 3, 5, 1, 2, 4],
        vec![3, 1, 3, 1, 8, 9, 7, 8, 1, 3, 4, 2],
        vec![6, 5, 1, 2, 6, 9, 7, 4, 5, 6, 0, 0],
        // Changed once, when Maglev's default table became a fixed 655,373 entries.
        vec![6, 1, 4, 2, 5, 1, 9, 9, 8, 0, 0, 1],
        vec![6, 5, 1, 2, 6, 9, 7, 4, 5, 6, 0, 0],
    ];
    assert_eq!(pinned, expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Bounded load against a model: every take goes to the first node in the key's `get_n`
    /// order whose load stays within ⌈c · m · w / W⌉, and releases give the room back.
    #[test]
    fn bounded_load_matches_a_model(
        members in members(8, true),
        factor_milli in 1000u64..2000,
        ops in proptest::collection::vec((any::<bool>(), any::<u64>()), 1..150),
    ) {
        use infra_ring_hash::BoundedLoad;
        let factor = factor_milli as f64 / 1000.0;
        let placement = build(Rendezvous::new(), &members);
        let bounded = BoundedLoad::new(placement.clone(), factor).unwrap();
        let total_weight: u64 = members.iter().map(|m| u64::from(m.1)).sum();
        let weight: BTreeMap<u32, u64> = members.iter().map(|&(n, w)| (n, u64::from(w))).collect();
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut leases = Vec::new();
        for (take, key) in ops {
            if take || leases.is_empty() {
                let held = leases.len() as u64 + 1;
                let expected = placement
                    .get_n(&key, members.len())
                    .into_iter()
                    .copied()
                    .find(|node| {
                        let capacity = (u128::from(bounded.factor_milli()) * u128::from(held) * u128::from(weight[node]))
                            .div_ceil(1000 * u128::from(total_weight));
                        u128::from(model.get(node).copied().unwrap_or(0)) < capacity
                    })
                    .unwrap();
                let lease = bounded.take(&key).unwrap();
                prop_assert_eq!(*lease.node(), expected);
                *model.entry(expected).or_default() += 1;
                leases.push(lease);
            } else {
                let lease = leases.swap_remove(key as usize % leases.len());
                *model.get_mut(lease.node()).unwrap() -= 1;
                drop(lease);
            }
            prop_assert_eq!(bounded.total(), leases.len() as u64);
            for (node, load) in bounded.loads() {
                prop_assert_eq!(load, model.get(&node).copied().unwrap_or(0));
            }
        }
    }

    /// Bounded load across membership changes, against a model kept in a map of node → (weight,
    /// count, generation): a take goes to the first node in the key's `get_n` order whose count
    /// stays within ⌈c · m · w / W⌉ (`m` counting leases on members, `W` the members' weight);
    /// an add starts a node at zero, a remove forgets its leases, and a lease released after
    /// its node left (even if the node came back since) changes no count. After every step the
    /// counts equal the model's, and no step lifts a node above the bound.
    #[test]
    fn bounded_load_across_membership_changes_matches_a_model(
        members in members(6, true),
        factor_milli in 1000u64..2000,
        ops in proptest::collection::vec((0u8..8, any::<u64>(), 1u32..4), 1..200),
    ) {
        use infra_ring_hash::{BoundedLoad, Error};
        use std::collections::HashMap;
        let factor = factor_milli as f64 / 1000.0;
        let mut reference = build(Rendezvous::new(), &members);
        let bounded = BoundedLoad::new(reference.clone(), factor).unwrap();
        // node → (weight, leases held, generation the node joined in)
        let mut model: HashMap<u32, (u64, u64, u64)> = members
            .iter()
            .map(|&(node, weight)| (node, (u64::from(weight), 0, 0)))
            .collect();
        let mut generation = 0u64;
        let mut leases = Vec::new();
        let bound = |model: &HashMap<u32, (u64, u64, u64)>, weight: u64| {
            let held: u64 = model.values().map(|entry| entry.1).sum();
            let total_weight: u64 = model.values().map(|entry| entry.0).sum();
            (u128::from(factor_milli) * u128::from(held) * u128::from(weight))
                .div_ceil(1000 * u128::from(total_weight.max(1)))
        };
        for (op, key, weight) in ops {
            let before = model.clone();
            match op {
                // Takes are the most common step, so loads build up between changes.
                0..=3 => {
                    let order: Vec<u32> = reference.get_n(&key, model.len()).into_iter().copied().collect();
                    let mut trial = model.clone();
                    let expected = order.into_iter().find(|node| {
                        trial.get_mut(node).unwrap().1 += 1;
                        let fits = u128::from(trial[node].1) <= bound(&trial, trial[node].0);
                        trial.get_mut(node).unwrap().1 -= 1;
                        fits
                    });
                    match bounded.take(&key) {
                        Ok(lease) => {
                            let node = *lease.node();
                            prop_assert_eq!(Some(node), expected);
                            let entry = model.get_mut(&node).unwrap();
                            entry.1 += 1;
                            leases.push((lease, node, entry.2));
                        }
                        Err(error) => {
                            prop_assert_eq!(error, Error::EmptyMembership);
                            prop_assert!(model.is_empty());
                        }
                    }
                }
                4 | 5 if !leases.is_empty() => {
                    let (lease, node, joined) = leases.swap_remove(key as usize % leases.len());
                    if let Some(entry) = model.get_mut(&node).filter(|entry| entry.2 == joined) {
                        entry.1 -= 1;
                    }
                    drop(lease);
                }
                6 => {
                    let node = 20_000 + (key % 8) as u32;
                    let added = bounded.add(node, weight);
                    prop_assert_eq!(added.is_ok(), !model.contains_key(&node));
                    if added.is_ok() {
                        generation += 1;
                        reference.add(node, weight).unwrap();
                        model.insert(node, (u64::from(weight), 0, generation));
                    }
                }
                _ => {
                    let mut present: Vec<u32> = model.keys().copied().collect();
                    present.sort_unstable();
                    if !present.is_empty() {
                        let node = present[key as usize % present.len()];
                        bounded.remove(&node).unwrap();
                        reference.remove(&node).unwrap();
                        model.remove(&node);
                    }
                }
            }
            let counts: HashMap<u32, u64> = bounded.loads().into_iter().collect();
            let expected: HashMap<u32, u64> = model.iter().map(|(&node, entry)| (node, entry.1)).collect();
            prop_assert_eq!(&counts, &expected);
            prop_assert_eq!(bounded.total(), expected.values().sum::<u64>());
            for (node, entry) in &model {
                let grew = before.get(node).is_none_or(|old| entry.1 > old.1);
                prop_assert!(
                    !grew || u128::from(entry.1) <= bound(&model, entry.0),
                    "node {} rose to {} above the bound", node, entry.1
                );
            }
        }
        drop(leases);
        prop_assert_eq!(bounded.total(), 0);
        prop_assert!(bounded.loads().iter().all(|&(_, load)| load == 0));
    }
}
