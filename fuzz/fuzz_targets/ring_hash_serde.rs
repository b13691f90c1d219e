//! Arbitrary JSON read as a membership, a Memento bucket layout or engine settings (the `serde`
//! feature): decoding
//! never panics, what decodes re-encodes to the same value, a decoded membership is validated
//! exactly like members added one by one (Maglev refusing weights more than 64 times apart), a
//! decoded layout is refused only for a repeated node
//! and otherwise saves back as itself, decoded settings are within their documented ranges
//! and build engines that report them back and refuse tables beyond the largest with an error.
#![no_main]

use std::collections::BTreeSet;

use infra_ring_hash::{
    BucketLayout, Engine, Error, Jump, MAX_POINTS_PER_WEIGHT, MAX_TABLE_SIZE, Maglev, MaglevConfig,
    Membership, Placement, Rendezvous, Ring, RingConfig,
};
use libfuzzer_sys::fuzz_target;

/// Engines are built from decoded settings only up to this many table entries or ring points:
/// memory is the configuration's choice, and the fuzzer's memory limit is not a finding.
const MAX_BUILT_ENTRIES: u64 = 1 << 16;

/// The result `Placement::from_members` must give, from the documented rules alone.
fn expected(
    membership: &Membership<String>,
    weighted: bool,
    engine: &'static str,
) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    // The lightest and heaviest weights accepted so far: Maglev keeps members' weights within
    // 64 times each other.
    let mut weights: Option<(u64, u64)> = None;
    for member in &membership.members {
        let node = format!("{:?}", member.node);
        if member.weight == 0 {
            return Err(Error::ZeroWeight { node });
        }
        if !seen.insert(member.node.as_str()) {
            return Err(Error::DuplicateNode { node });
        }
        if !weighted && member.weight != 1 {
            return Err(Error::WeightNotSupported {
                engine,
                weight: member.weight,
            });
        }
        let weight = u64::from(member.weight);
        if engine == "maglev"
            && let Some((lightest, heaviest)) = weights
            && (weight > lightest * 64 || weight * 64 < heaviest)
        {
            return Err(Error::SettingOutOfRange {
                setting: "Maglev weight (within MAX_MAGLEV_WEIGHT_RATIO = 64 times every member's)",
                value: weight,
                min: heaviest.div_ceil(64),
                max: (lightest * 64).min(u64::from(u32::MAX)),
            });
        }
        weights = Some(weights.map_or((weight, weight), |(lightest, heaviest)| {
            (lightest.min(weight), heaviest.max(weight))
        }));
    }
    Ok(())
}

fn check_membership<E: Engine>(engine: E, weighted: bool, membership: &Membership<String>) {
    let name = engine.name();
    let want = expected(membership, weighted, name);
    let result = Placement::from_members(engine, membership.members.iter().cloned());
    assert_eq!(result.as_ref().err(), want.as_ref().err(), "{name}");
    let Ok(placement) = result else { return };
    assert_eq!(placement.len(), membership.members.len());
    let mut saved = placement.membership().members;
    let mut given = membership.members.clone();
    saved.sort_by(|a, b| a.node.cmp(&b.node));
    given.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(saved, given, "{name}: the placement holds what was decoded");
    for key in 0..8u64 {
        match placement.node(&key) {
            Some(node) => assert!(placement.contains(node)),
            None => assert!(placement.is_empty()),
        }
    }
}

fn check_ring_config(config: RingConfig) {
    assert!((1..=MAX_POINTS_PER_WEIGHT).contains(&config.points_per_weight));
    let ring = Ring::with_config(config).expect("decoded settings are in range");
    assert_eq!(ring.config(), config);
    if u64::from(config.points_per_weight) <= MAX_BUILT_ENTRIES {
        let placement = Placement::from_members(
            ring,
            ["a", "b"].map(|node| infra_ring_hash::Member::new(node.to_owned())),
        )
        .expect("two members of weight 1 fit any ring this small");
        assert_eq!(
            placement.engine().point_count() as u64,
            2 * u64::from(config.points_per_weight)
        );
    }
}

fn check_maglev_config(config: MaglevConfig) {
    assert!((1..=MAX_TABLE_SIZE).contains(&config.entries_per_node));
    assert!(
        config
            .table_size
            .is_none_or(|size| (1..=MAX_TABLE_SIZE).contains(&size))
    );
    let engine = Maglev::with_config(config).expect("decoded settings are in range");
    assert_eq!(engine.config(), config);
    // The documented table: the setting (default 655,373) rounded up to a prime, holding
    // `table / entries_per_node` nodes.
    let table = smallest_prime_from(config.table_size.unwrap_or(655_373));
    let capacity = table / config.entries_per_node;
    let mut placement = Placement::new(engine);
    if capacity == 0 {
        assert_eq!(
            placement.add("a".to_owned(), 1),
            Err(Error::TooManyNodes { engine: "maglev" }),
            "a table smaller than one node's entries is refused"
        );
        assert!(placement.is_empty());
    } else if table <= MAX_BUILT_ENTRIES {
        for (held, node) in (0u64..).zip(["a", "b", "c"]) {
            let result = placement.add(node.to_owned(), 1);
            if held < capacity {
                result.expect("the table has room");
            } else {
                assert_eq!(result, Err(Error::TooManyNodes { engine: "maglev" }));
            }
        }
        assert_eq!(placement.len() as u64, capacity.min(3));
        assert_eq!(placement.engine().table_size() as u64, table);
    }
}

/// The smallest prime at or above `n`, by trial division (`n` is at most 2^24).
fn smallest_prime_from(n: u64) -> u64 {
    (n.max(2)..)
        .find(|&c| (2..c).take_while(|d| d * d <= c).all(|d| c % d != 0))
        .expect("there is always a larger prime")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(membership) = serde_json::from_slice::<Membership<String>>(data) {
        let text = serde_json::to_string(&membership).expect("a membership encodes");
        let back: Membership<String> = serde_json::from_str(&text).expect("its encoding decodes");
        assert_eq!(back, membership);
        let total_weight: u64 = membership.members.iter().map(|m| u64::from(m.weight)).sum();
        check_membership(Rendezvous::new(), true, &membership);
        check_membership(Jump::new(), false, &membership);
        check_membership(
            Maglev::with_config(MaglevConfig {
                entries_per_node: 1,
                table_size: Some(8191),
            })
            .expect("settings in range"),
            true,
            &membership,
        );
        if total_weight <= MAX_BUILT_ENTRIES {
            check_membership(
                Ring::with_config(RingConfig {
                    points_per_weight: 1,
                })
                .expect("settings in range"),
                true,
                &membership,
            );
        }
    }
    if let Ok(layout) = serde_json::from_slice::<BucketLayout<String>>(data) {
        let text = serde_json::to_string(&layout).expect("a layout encodes");
        let back: BucketLayout<String> = serde_json::from_str(&text).expect("its encoding decodes");
        assert_eq!(back, layout);
        let distinct: BTreeSet<&str> = layout.buckets.iter().map(|b| b.node.as_str()).collect();
        match Placement::from_buckets(layout.clone()) {
            Ok(placement) => {
                assert_eq!(distinct.len(), layout.buckets.len());
                assert_eq!(placement.buckets(), layout);
                let working = layout.buckets.iter().filter(|b| !b.vacant).count();
                assert_eq!(placement.len(), working);
                for key in 0..8u64 {
                    match placement.node(&key) {
                        Some(node) => assert!(placement.contains(node)),
                        None => assert_eq!(working, 0),
                    }
                }
            }
            Err(Error::DuplicateNode { .. }) => assert!(distinct.len() < layout.buckets.len()),
            Err(error) => panic!("unexpected {error}"),
        }
    }
    // Settings out of range are refused while decoding (checked by the crate's tests); what
    // decodes is in range.
    if let Ok(config) = serde_json::from_slice::<RingConfig>(data) {
        let text = serde_json::to_string(&config).expect("settings encode");
        assert_eq!(serde_json::from_str::<RingConfig>(&text).ok(), Some(config));
        check_ring_config(config);
    }
    if let Ok(config) = serde_json::from_slice::<MaglevConfig>(data) {
        let text = serde_json::to_string(&config).expect("settings encode");
        assert_eq!(
            serde_json::from_str::<MaglevConfig>(&text).ok(),
            Some(config)
        );
        check_maglev_config(config);
    }
});
