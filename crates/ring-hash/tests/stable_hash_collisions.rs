//! Members that differ by `Eq` but share a stable encoding are refused: the engines see only
//! the stable hash, so one of the two would get no keys.
#![cfg(not(infra_loom))]

use std::net::{Ipv6Addr, SocketAddrV6};

use infra_ring_hash::{Bucket, BucketLayout, Error, Jump, Member, Memento, Placement};
use infra_ring_hash::{Rendezvous, Ring};

/// `fe80::1%scope:6379`: link-local addresses on different links are different hosts, but the
/// stable encoding leaves the scope id out.
fn link_local(scope: u32) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 6379, 0, scope)
}

fn collision(node: SocketAddrV6, member: SocketAddrV6) -> Error {
    Error::SameStableHash {
        node: format!("{node:?}"),
        member: format!("{member:?}"),
    }
}

#[test]
fn a_node_hashing_like_a_member_is_refused_on_every_path() {
    let (a, b) = (link_local(1), link_local(2));
    assert_ne!(a, b);

    let mut ring = Placement::new(Ring::new());
    ring.add(a, 1).unwrap();
    assert_eq!(ring.add(b, 1), Err(collision(b, a)));
    assert_eq!(
        ring.members().count(),
        1,
        "a refused add changed the placement"
    );

    let refused = Placement::from_members(Rendezvous::new(), [Member::new(a), Member::new(b)]);
    assert_eq!(refused.err(), Some(collision(b, a)));

    let layout = BucketLayout {
        buckets: vec![
            Bucket {
                node: a,
                vacant: true,
            },
            Bucket {
                node: b,
                vacant: false,
            },
        ],
    };
    assert_eq!(
        Placement::from_buckets(layout).err(),
        Some(collision(b, a)),
        "a vacant bucket is restored by its node's hash, so it collides too"
    );

    let message = collision(b, a).to_string();
    assert!(message.contains("same stable hash"), "{message}");
}

#[test]
fn a_removed_members_hash_is_free_again_and_follows_relocated_members() {
    let (a, b) = (link_local(1), link_local(2));
    let mut memento = Placement::from_members(Memento::new(), [Member::new(a)]).unwrap();
    memento.remove(&a).unwrap();
    memento.add(b, 1).unwrap();
    assert_eq!(memento.node(&"key"), Some(&b));

    // Removing bucket 0 of Jump moves the last node (`a`) into it; its hash moves along.
    let others = (0..3u16).map(|port| SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0));
    let mut jump = Placement::from_members(Jump::new(), others.clone().map(Member::new)).unwrap();
    jump.add(a, 1).unwrap();
    let first = others.clone().next().unwrap();
    jump.remove(&first).unwrap();
    assert_eq!(jump.add(b, 1), Err(collision(b, a)));
    jump.remove(&a).unwrap();
    jump.add(b, 1).unwrap();
    assert!(jump.contains(&b));
}
