//! The ketama mode against libmemcached's published known answers, and its disruption.
#![cfg(all(feature = "ketama", not(infra_loom)))]

use infra_ring_hash::Ketama;

/// `(servers, rows)` from `vectors/ketama.txt`: servers as `(name, weight)`, rows as
/// `(key, key hash, continuum point, server)`.
#[allow(clippy::type_complexity)]
fn known_answers() -> (Vec<(String, u32)>, Vec<(String, u32, u32, String)>) {
    let text = include_str!("../vectors/ketama.txt");
    let mut servers = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields[0] == "servers" {
            for server in fields[1].split(',') {
                let (name, weight) = server.split_once(' ').unwrap();
                servers.push((name.to_string(), weight.parse().unwrap()));
            }
        } else {
            let [key, hash, point, server] = fields[..] else {
                panic!("bad row {line:?}");
            };
            rows.push((
                key.to_string(),
                hash.parse().unwrap(),
                point.parse().unwrap(),
                server.to_string(),
            ));
        }
    }
    (servers, rows)
}

#[test]
fn libmemcached_known_answers() {
    let (servers, rows) = known_answers();
    assert_eq!(servers.len(), 8);
    assert_eq!(rows.len(), 99);
    let ketama = Ketama::new(servers).unwrap();
    for (key, hash, point, server) in &rows {
        assert_eq!(Ketama::<String>::key_hash(key), *hash, "{key}");
        let (found, owner) = ketama.point(key).unwrap();
        assert_eq!((found, owner), (*point, server), "{key}");
    }
    // libmemcached's wrap-around case: this key hashes past the largest point and lands on
    // the smallest.
    assert_eq!(Ketama::<String>::key_hash("VDEAAAAA"), 0xfffc_d1b5);
    assert_eq!(
        ketama.point("VDEAAAAA").map(|(point, _)| point),
        ketama.smallest_point()
    );
}

#[test]
fn adding_a_server_at_equal_weights_moves_keys_only_onto_it() {
    let names: Vec<String> = (1..=9).map(|i| format!("10.0.2.{i}")).collect();
    let before = Ketama::new(names[..8].iter().map(|name| (name.as_str(), 1))).unwrap();
    let after = Ketama::new(names.iter().map(|name| (name.as_str(), 1))).unwrap();
    let mut moved = 0;
    for key in 0..10_000u32 {
        let key = format!("key:{key}");
        let (old, new) = (before.node(&key).unwrap(), after.node(&key).unwrap());
        if old != new {
            assert_eq!(*new, "10.0.2.9", "{key} moved between old servers");
            moved += 1;
        }
    }
    // The new server's 160 of 1,440 points own about a ninth of the keys.
    assert!((500..2000).contains(&moved), "{moved} moved");
}
