//! Memberships and engine settings load from configuration files.
#![cfg(all(feature = "serde", not(infra_loom)))]

use infra_ring_hash::{MaglevConfig, Member, Membership, Placement, Ring, RingConfig};

#[test]
fn membership_loads_from_json_with_default_weights() {
    let text = r#"{ "members": [ { "node": "cache-a", "weight": 2 }, { "node": "cache-b" } ] }"#;
    let membership: Membership<String> = serde_json::from_str(text).unwrap();
    assert_eq!(
        membership.members,
        [
            Member::weighted("cache-a".to_string(), 2),
            Member::new("cache-b".to_string())
        ]
    );
    let placement = Placement::from_members(Ring::new(), membership.members.clone()).unwrap();
    assert_eq!(placement.weight(&"cache-a".to_string()), Some(2));
    let saved = serde_json::to_string(&placement.membership()).unwrap();
    let reloaded: Membership<String> = serde_json::from_str(&saved).unwrap();
    let mut sorted = reloaded.members;
    sorted.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(sorted, membership.members);
}

#[test]
fn unknown_fields_and_bad_types_are_rejected() {
    assert!(
        serde_json::from_str::<Membership<String>>(
            r#"{ "members": [ { "node": "a", "wieght": 2 } ] }"#
        )
        .is_err()
    );
    assert!(
        serde_json::from_str::<Membership<String>>(
            r#"{ "members": [ { "node": "a", "weight": -1 } ] }"#
        )
        .is_err()
    );
}

#[test]
fn engine_settings_round_trip_and_default() {
    let ring: RingConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(ring, RingConfig::default());
    let maglev: MaglevConfig = serde_json::from_str(r#"{ "table_size": 65537 }"#).unwrap();
    assert_eq!(maglev.table_size, Some(65537));
    assert_eq!(maglev.entries_per_node, 100);
    let text = serde_json::to_string(&maglev).unwrap();
    assert_eq!(serde_json::from_str::<MaglevConfig>(&text).unwrap(), maglev);
}

#[test]
fn settings_out_of_range_are_refused_when_loaded() {
    for (text, setting) in [
        (
            r#"{"table_size": 18446744073709551615}"#,
            "MaglevConfig.table_size",
        ),
        (
            r#"{"table_size": 2999919999999999996}"#,
            "MaglevConfig.table_size",
        ),
        (
            r#"{"entries_per_node": 18446744073709551615}"#,
            "MaglevConfig.entries_per_node",
        ),
        (
            r#"{"entries_per_node": 0}"#,
            "MaglevConfig.entries_per_node",
        ),
    ] {
        let error = serde_json::from_str::<MaglevConfig>(text).unwrap_err();
        assert!(error.to_string().contains(setting), "{text}: {error}");
    }
    for text in [
        r#"{"points_per_weight": 0}"#,
        r#"{"points_per_weight": 4294967295}"#,
    ] {
        let error = serde_json::from_str::<RingConfig>(text).unwrap_err();
        assert!(
            error.to_string().contains("RingConfig.points_per_weight"),
            "{text}: {error}"
        );
    }
    assert!(serde_json::from_str::<MaglevConfig>(r#"{"tablesize": 5}"#).is_err());
    assert!(serde_json::from_str::<RingConfig>(r#"{"points": 5}"#).is_err());
    let ring: RingConfig = serde_json::from_str(r#"{"points_per_weight": 65536}"#).unwrap();
    assert_eq!(ring.points_per_weight, 65536);
}
