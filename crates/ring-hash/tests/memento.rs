//! Memento placements survive saving and reloading, and a re-added node gets its own keys back.
#![cfg(not(infra_loom))]

use infra_ring_hash::{Bucket, BucketLayout, Error, Member, Memento, Placement};
use proptest::prelude::*;

const KEYS: u64 = 20_000;

fn owners<N: Clone + infra_common::hash::StableHash + std::hash::Hash + Eq + std::fmt::Debug>(
    placement: &Placement<N, Memento>,
    keys: u64,
) -> Vec<Option<N>> {
    (0..keys).map(|key| placement.node(&key).cloned()).collect()
}

fn ten_nodes() -> Placement<String, Memento> {
    Placement::from_members(
        Memento::new(),
        (0..10).map(|i| Member::new(format!("node-{i}"))),
    )
    .unwrap()
}

/// Saves the layout (through JSON when serde is on) and loads it back.
fn save_and_reload(placement: &Placement<String, Memento>) -> Placement<String, Memento> {
    let layout = placement.buckets();
    #[cfg(feature = "serde")]
    let layout: BucketLayout<String> =
        serde_json::from_str(&serde_json::to_string(&layout).unwrap()).unwrap();
    Placement::from_buckets(layout).unwrap()
}

#[test]
fn reloading_the_saved_layout_after_removals_keeps_every_key() {
    let mut placement = ten_nodes();
    for node in ["node-3", "node-7", "node-0"] {
        placement.remove(&node.to_string()).unwrap();
    }
    let reloaded = save_and_reload(&placement);
    let (before, after) = (owners(&placement, KEYS), owners(&reloaded, KEYS));
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(moved, 0, "{moved} of {KEYS} keys moved");
    // The reloaded placement remembers whose buckets are vacant, too.
    let mut restored = reloaded;
    restored.add("node-7".to_string(), 1).unwrap();
    assert_eq!(
        restored.buckets().buckets[7],
        Bucket {
            node: "node-7".to_string(),
            vacant: false
        }
    );
}

#[test]
fn a_re_added_node_gets_its_own_keys_back() {
    let mut placement = ten_nodes();
    let original = owners(&placement, KEYS);
    let (a, b) = ("node-2".to_string(), "node-5".to_string());
    placement.remove(&a).unwrap();
    placement.remove(&b).unwrap();
    let without_both = owners(&placement, KEYS);
    placement.add(a.clone(), 1).unwrap();
    let after = owners(&placement, KEYS);
    let mut b_keys_onto_a = 0;
    for key in 0..KEYS as usize {
        if original[key].as_ref() == Some(&a) {
            assert_eq!(
                after[key].as_ref(),
                Some(&a),
                "key {key} of the re-added node"
            );
        } else if after[key] != without_both[key] {
            // Nothing moves but onto the re-added node: some of B's keys, whose next choice
            // after B is A, as for a placement where only B ever failed.
            assert_eq!(original[key].as_ref(), Some(&b), "key {key} moved");
            assert_eq!(after[key].as_ref(), Some(&a), "key {key} moved");
            b_keys_onto_a += 1;
        }
    }
    // B's ~2,000 keys spread over the 9 working nodes: about 222 onto A (sigma ~14).
    assert!(
        (150..300).contains(&b_keys_onto_a),
        "{b_keys_onto_a} of B's keys went to A"
    );
    // The same placement as if A had never failed.
    let mut only_b = ten_nodes();
    only_b.remove(&b).unwrap();
    assert!(owners(&only_b, KEYS) == after);
}

/// The top bucket fails first, while nothing else is vacant: it stays its node's bucket, so when
/// that node returns it takes its own keys back and nobody else's.
#[test]
fn a_node_whose_top_bucket_failed_first_gets_its_own_keys_back() {
    let original_placement = ten_nodes();
    let original = owners(&original_placement, KEYS);
    let (top, other) = ("node-9".to_string(), "node-3".to_string());
    for returning_first in [&top, &other] {
        let mut placement = original_placement.clone();
        placement.remove(&top).unwrap();
        placement.remove(&other).unwrap();
        placement.add(returning_first.clone(), 1).unwrap();
        let still_out = if returning_first == &top {
            &other
        } else {
            &top
        };
        let mut only_one_failed = original_placement.clone();
        only_one_failed.remove(still_out).unwrap();
        let after = owners(&placement, KEYS);
        for (key, (old, new)) in original.iter().zip(&after).enumerate() {
            if old.as_ref() != Some(still_out) {
                assert_eq!(new, old, "key {key}, {returning_first} back first");
            }
        }
        assert!(after == owners(&only_one_failed, KEYS));
        placement.add(still_out.clone(), 1).unwrap();
        assert!(owners(&placement, KEYS) == original);
        assert_eq!(placement.buckets(), original_placement.buckets());
    }
}

/// Two clients that learn of the same failures in different orders agree on every key.
#[test]
fn the_order_of_removals_does_not_matter() {
    fn removed_in_order<N>(members: &[N], order: &[N]) -> Placement<N, Memento>
    where
        N: Clone + infra_common::hash::StableHash + std::hash::Hash + Eq + std::fmt::Debug,
    {
        let mut placement =
            Placement::from_members(Memento::new(), members.iter().cloned().map(Member::new))
                .unwrap();
        for node in order {
            placement.remove(node).unwrap();
        }
        placement
    }
    let (first, second) = (
        removed_in_order(&[0u32, 1, 2, 3], &[3, 1]),
        removed_in_order(&[0u32, 1, 2, 3], &[1, 3]),
    );
    assert_eq!(first.buckets(), second.buckets());
    assert!(owners(&first, KEYS) == owners(&second, KEYS));
    let names: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
    let (first, second) = (
        removed_in_order(&names, &[names[3].clone(), names[9].clone()]),
        removed_in_order(&names, &[names[9].clone(), names[3].clone()]),
    );
    assert_eq!(first.buckets(), second.buckets());
    assert!(owners(&first, KEYS) == owners(&second, KEYS));
}

/// Keys per working node after keeping `survivors` of 10,000 nodes, picked at random (so the
/// vacant runs between them have uneven lengths).
fn shares_after_heavy_removal(survivors: usize, keys: u64) -> Vec<u64> {
    const NODES: u32 = 10_000;
    let mut placement =
        Placement::from_members(Memento::new(), (0..NODES).map(Member::new)).unwrap();
    // xorshift64: any fixed spread of survivors will do, as long as it is irregular.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut keep = std::collections::BTreeSet::new();
    while keep.len() < survivors {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        keep.insert(u32::try_from(state % u64::from(NODES)).unwrap());
    }
    for node in 0..NODES {
        if !keep.contains(&node) {
            placement.remove(&node).unwrap();
        }
    }
    let mut counts = std::collections::BTreeMap::<u32, u64>::new();
    for key in 0..keys {
        *counts.entry(*placement.node(&key).unwrap()).or_default() += 1;
    }
    assert!(counts.keys().all(|node| keep.contains(node)));
    keep.iter()
        .map(|node| counts.get(node).copied().unwrap_or(0))
        .collect()
}

/// Every working node's share is a binomial count of `keys` draws with probability
/// `1 / working`; the peak and the minimum must stay within 5σ of the mean (a node strays that
/// far by luck about once in 1.7 million).
fn assert_binomially_balanced(counts: &[u64], keys: u64) {
    let working = counts.len() as f64;
    let mean = keys as f64 / working;
    let sigma = (keys as f64 * (1.0 / working) * (1.0 - 1.0 / working)).sqrt();
    let (peak, low) = (
        *counts.iter().max().unwrap() as f64,
        *counts.iter().min().unwrap() as f64,
    );
    let tolerance = 5.0 * sigma / mean;
    println!(
        "{working} working: peak/avg {:.3}, min/avg {:.3}, allowed ±{tolerance:.3}",
        peak / mean,
        low / mean
    );
    assert!(
        peak / mean <= 1.0 + tolerance,
        "peak/avg {:.3}",
        peak / mean
    );
    assert!(low / mean >= 1.0 - tolerance, "min/avg {:.3}", low / mean);
}

#[test]
fn shares_stay_uniform_with_95_percent_removed() {
    // 2,000 keys per node, σ ≈ 44.7: peak/avg and min/avg within ±0.112.
    let keys = 1_000_000;
    assert_binomially_balanced(&shares_after_heavy_removal(500, keys), keys);
}

#[test]
fn shares_stay_uniform_with_99_percent_removed() {
    // 4,000 keys per node, σ ≈ 62.9: within ±0.079.
    let keys = 400_000;
    assert_binomially_balanced(&shares_after_heavy_removal(100, keys), keys);
}

#[test]
fn a_new_node_takes_the_lowest_vacant_bucket_and_its_keys() {
    let mut placement = ten_nodes();
    let original = owners(&placement, KEYS);
    placement.remove(&"node-6".to_string()).unwrap();
    placement.remove(&"node-4".to_string()).unwrap();
    placement.add("spare".to_string(), 1).unwrap();
    let after = owners(&placement, KEYS);
    for (old, new) in original.iter().zip(&after) {
        match old.as_deref() {
            Some("node-4") => assert_eq!(new.as_deref(), Some("spare")),
            Some("node-6") => assert!(new.as_deref() != Some("node-6")),
            _ => assert_eq!(new, old),
        }
    }
}

#[test]
fn bad_layouts_are_refused() {
    let layout = |names: &[(&str, bool)]| BucketLayout {
        buckets: names
            .iter()
            .map(|&(node, vacant)| Bucket {
                node: node.to_string(),
                vacant,
            })
            .collect(),
    };
    assert!(matches!(
        Placement::from_buckets(layout(&[("a", false), ("a", true)])),
        Err(Error::DuplicateNode { .. })
    ));
    let empty = Placement::from_buckets(layout(&[("a", true), ("b", true)])).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.node("k"), None);
}

/// The bucket layout as documented, written as plainly as possible: a removed node's bucket
/// becomes vacant and keeps its name; a returning node takes the vacant bucket named after it;
/// a new node the lowest vacant bucket, or a new bucket at the end when none is vacant.
#[derive(Default)]
struct LayoutModel {
    buckets: Vec<(u32, bool)>,
}

impl LayoutModel {
    fn add(&mut self, node: u32) {
        if let Some(own) = self
            .buckets
            .iter()
            .position(|&(n, vacant)| n == node && vacant)
        {
            self.buckets[own].1 = false;
        } else if let Some(lowest) = self.buckets.iter().position(|&(_, vacant)| vacant) {
            self.buckets[lowest] = (node, false);
        } else {
            self.buckets.push((node, false));
        }
    }

    fn remove(&mut self, node: u32) {
        let at = self
            .buckets
            .iter()
            .position(|&(n, vacant)| n == node && !vacant)
            .unwrap();
        self.buckets[at].1 = true;
    }

    fn working(&self) -> Vec<u32> {
        self.buckets.iter().filter(|b| !b.1).map(|b| b.0).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random removals, re-adds and new nodes: the bucket layout follows the rules; every change
    /// moves only the keys it must; the owners equal those of a fresh placement of the same
    /// buckets with the vacant ones removed in another order (so the history does not matter);
    /// and the saved layout reproduces them.
    #[test]
    fn placement_depends_only_on_the_bucket_layout(
        size in 2u32..40,
        ops in proptest::collection::vec((0u8..3, any::<prop::sample::Index>()), 1..40),
        order_seed in any::<u64>(),
    ) {
        let mut model = LayoutModel::default();
        let mut placement = Placement::new(Memento::new());
        for node in 0..size {
            model.add(node);
            placement.add(node, 1).unwrap();
        }
        let mut removed: Vec<u32> = Vec::new();
        let mut next_new = 1000;
        let mut before = owners(&placement, 2000);
        for (op, index) in ops {
            let working = model.working();
            let changed = match op {
                0 if working.len() > 1 => {
                    let node = working[index.index(working.len())];
                    placement.remove(&node).unwrap();
                    model.remove(node);
                    removed.push(node);
                    node
                }
                1 if !removed.is_empty() => {
                    let node = removed.swap_remove(index.index(removed.len()));
                    placement.add(node, 1).unwrap();
                    model.add(node);
                    node
                }
                2 => {
                    next_new += 1;
                    placement.add(next_new, 1).unwrap();
                    model.add(next_new);
                    next_new
                }
                _ => continue,
            };
            let after = owners(&placement, 2000);
            for (old, new) in before.iter().zip(&after) {
                let (old, new) = (old.unwrap(), new.unwrap());
                prop_assert!(model.working().contains(&new));
                // Only keys of the removed node move, or only keys onto the added one.
                prop_assert!(old == new || old == changed || new == changed);
            }
            before = after;
        }
        let layout = placement.buckets();
        let expected: Vec<(u32, bool)> = layout.buckets.iter().map(|b| (b.node, b.vacant)).collect();
        prop_assert_eq!(&expected, &model.buckets);

        // A fresh placement of every bucket's node, the vacant ones removed in a shuffled order.
        let mut vacant: Vec<u32> = model.buckets.iter().filter(|b| b.1).map(|b| b.0).collect();
        for i in 0..vacant.len() {
            let j = i + (order_seed.rotate_left(i as u32) as usize) % (vacant.len() - i);
            vacant.swap(i, j);
        }
        let mut fresh = Placement::new(Memento::new());
        for &(node, _) in &model.buckets {
            fresh.add(node, 1).unwrap();
        }
        for node in &vacant {
            fresh.remove(node).unwrap();
        }
        prop_assert!(owners(&fresh, 2000) == before, "a fresh placement differs");
        let reloaded = Placement::from_buckets(layout).unwrap();
        prop_assert!(owners(&reloaded, 2000) == before, "the reloaded layout differs");
    }
}
