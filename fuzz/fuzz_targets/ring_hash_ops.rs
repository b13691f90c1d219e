//! Arbitrary add / remove / reweight / lookup / get_n sequences on every engine, checked against
//! a map of members: errors, membership, lookups, distinct replicas and key movement.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use infra_ring_hash::{
    Disruption, Engine, Error, Flip, Jump, Maglev, MaglevConfig, Member, Memento, Placement,
    Rendezvous, Ring, RingConfig,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum EngineKind {
    Ring,
    Rendezvous,
    Jump,
    Flip,
    Maglev,
    Memento,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Add { node: u8, weight: u8 },
    Remove { node: u8 },
    Reweight { node: u8, weight: u8 },
    Lookup { key: u64 },
    GetN { key: u64, n: u8 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    engine: EngineKind,
    ops: Vec<Op>,
}

/// Keys whose owners are compared before and after every membership change.
const PROBES: u64 = 48;

fn owners<E: Engine>(placement: &Placement<u8, E>) -> Vec<Option<u8>> {
    (0..PROBES)
        .map(|key| placement.node(&key).copied())
        .collect()
}

fn run<E: Engine>(engine: E, weighted: bool, ops: &[Op]) -> Placement<u8, E> {
    let fresh = engine.clone();
    let mut placement = Placement::new(engine);
    let mut model: BTreeMap<u8, u32> = BTreeMap::new();
    for op in ops.iter().take(64) {
        let before = owners(&placement);
        let last_slot = placement.members().last().map(|(node, _)| *node);
        let mut changed: Option<(u8, bool)> = None; // (node, added)
        match *op {
            Op::Add { node, weight } => {
                let weight = u32::from(weight % 4);
                let result = placement.add(node, weight);
                let expected = if weight == 0 {
                    Err(Error::ZeroWeight {
                        node: format!("{node:?}"),
                    })
                } else if model.contains_key(&node) {
                    Err(Error::DuplicateNode {
                        node: format!("{node:?}"),
                    })
                } else if !weighted && weight != 1 {
                    Err(Error::WeightNotSupported {
                        engine: placement.engine().name(),
                        weight,
                    })
                } else {
                    Ok(())
                };
                assert_eq!(result, expected);
                if result.is_ok() {
                    model.insert(node, weight);
                    changed = Some((node, true));
                }
            }
            Op::Remove { node } => {
                let result = placement.remove(&node);
                match model.remove(&node) {
                    Some(weight) => {
                        assert_eq!(result, Ok(weight));
                        changed = Some((node, false));
                    }
                    None => assert_eq!(
                        result,
                        Err(Error::UnknownNode {
                            node: format!("{node:?}")
                        })
                    ),
                }
            }
            Op::Reweight { node, weight } => {
                let weight = u32::from(weight % 4);
                let result = placement.set_weight(&node, weight);
                match model.get_mut(&node) {
                    None => assert!(matches!(result, Err(Error::UnknownNode { .. }))),
                    Some(_) if weight == 0 => {
                        assert!(matches!(result, Err(Error::ZeroWeight { .. })));
                    }
                    Some(_) if !weighted && weight != 1 => {
                        assert!(matches!(result, Err(Error::WeightNotSupported { .. })));
                    }
                    Some(current) => {
                        assert_eq!(result, Ok(()));
                        *current = weight;
                    }
                }
            }
            Op::Lookup { key } => {
                let owner = placement.node(&key);
                assert_eq!(owner.is_some(), !model.is_empty());
                if let Some(owner) = owner {
                    assert!(model.contains_key(owner));
                }
            }
            Op::GetN { key, n } => {
                let n = usize::from(n % 24);
                let replicas = placement.get_n(&key, n);
                assert_eq!(replicas.len(), n.min(model.len()));
                let distinct: BTreeSet<u8> = replicas.iter().map(|node| **node).collect();
                assert_eq!(distinct.len(), replicas.len());
                assert!(distinct.iter().all(|node| model.contains_key(node)));
                if let Some(first) = replicas.first() {
                    assert_eq!(Some(*first), placement.node(&key));
                }
            }
        }

        // Membership equals the model.
        let members: BTreeMap<u8, u32> = placement.members().map(|(n, w)| (*n, w)).collect();
        assert_eq!(members, model);

        // Key movement allowed by the engine's disruption guarantee.
        if let Some((node, added)) = changed {
            let after = owners(&placement);
            for (old, new) in before.iter().zip(&after) {
                let (Some(old), Some(new)) = (old, new) else {
                    continue;
                };
                let allowed = match placement.engine().disruption() {
                    Disruption::Minimal => {
                        old == new || (added && *new == node) || (!added && *old == node)
                    }
                    Disruption::MinimalAtTheEnd => {
                        old == new
                            || (added && *new == node)
                            || (!added && (*old == node || Some(*old) == last_slot))
                    }
                    _ => true,
                };
                assert!(
                    allowed,
                    "key moved from {old} to {new} after changing {node}"
                );
            }
        }
    }

    // Hash-ordered engines depend only on the membership, not on its history.
    if weighted {
        let rebuilt = Placement::from_members(
            fresh,
            model
                .iter()
                .map(|(&node, &weight)| Member::weighted(node, weight)),
        )
        .expect("the model is a valid membership");
        assert_eq!(owners(&rebuilt), owners(&placement));
    }
    placement
}

fuzz_target!(|input: Input| {
    match input.engine {
        EngineKind::Ring => drop(run(
            Ring::with_config(RingConfig {
                points_per_weight: 8,
            })
            .expect("settings in range"),
            true,
            &input.ops,
        )),
        EngineKind::Rendezvous => drop(run(Rendezvous::new(), true, &input.ops)),
        EngineKind::Jump => drop(run(Jump::new(), false, &input.ops)),
        EngineKind::Flip => drop(run(Flip::new(), false, &input.ops)),
        EngineKind::Maglev => drop(run(
            // 2053 / 8: room for all 256 nodes an input can name.
            Maglev::with_config(MaglevConfig {
                entries_per_node: 8,
                table_size: Some(2053),
            })
            .expect("settings in range"),
            true,
            &input.ops,
        )),
        EngineKind::Memento => {
            // Whatever the history, the saved bucket layout reproduces every key's owner.
            let placement = run(Memento::new(), false, &input.ops);
            let reloaded =
                Placement::from_buckets(placement.buckets()).expect("a saved layout reloads");
            assert_eq!(owners(&reloaded), owners(&placement));
            assert_eq!(reloaded.buckets(), placement.buckets());
        }
    }
});
