//! `RedisCluster` against the real `redis-server`: slots on every node, MOVED followed, a node
//! killed and restarted, a node paused.
// The strangers on freed ports are test scaffolding on std threads.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use infra_testkit::RedisCluster;

/// Keys until one lands on node `index`.
fn key_on(cluster: &RedisCluster, index: usize) -> String {
    (0..)
        .map(|n| format!("key-{n}"))
        .find(|key| cluster.node_for_key(key).unwrap() == index)
        .unwrap()
}

#[test]
fn keys_written_through_the_cluster_live_on_their_slot_owner() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let addrs = cluster.addrs();
    assert_eq!(addrs.len(), 3);
    assert!(addrs.iter().all(|addr| addr.ip().is_loopback()));
    assert_eq!(cluster.urls()[1], format!("redis://{}", addrs[1]));
    for index in 0..3 {
        let key = key_on(&cluster, index);
        assert_eq!(
            cluster.command(&["SET", &key, "hello-world"]).unwrap(),
            "+OK"
        );
        assert_eq!(cluster.command(&["GET", &key]).unwrap(), "$11");
        for (other, node) in cluster.nodes().iter().enumerate() {
            let reply = node.command(&["EXISTS", &key]).unwrap();
            if other == index {
                assert_eq!(reply, ":1", "{key} missing on its owner {index}");
            } else {
                assert!(reply.starts_with("-MOVED "), "node {other} said {reply}");
            }
        }
    }
    for node in cluster.nodes() {
        let info = node.command(&["CLUSTER", "INFO"]).unwrap();
        assert!(info.starts_with('$'), "{info}");
    }
}

#[test]
fn a_killed_node_comes_back_with_its_slots_and_data() {
    let Some(mut cluster) = RedisCluster::start(3) else {
        return;
    };
    let key = key_on(&cluster, 1);
    assert_eq!(cluster.command(&["SET", &key, "durable"]).unwrap(), "+OK");
    cluster.node_mut(1).kill();
    assert!(
        cluster.command(&["GET", &key]).is_err(),
        "a killed owner must not answer"
    );
    cluster.node_mut(1).restart().unwrap();
    cluster.wait_until_ok().unwrap();
    assert_eq!(cluster.command(&["GET", &key]).unwrap(), "$7");
}

#[cfg(unix)]
#[test]
fn a_paused_node_stops_answering_for_its_slots_only() {
    let Some(mut cluster) = RedisCluster::start(3) else {
        return;
    };
    let paused_key = key_on(&cluster, 2);
    let other_key = key_on(&cluster, 0);
    cluster.node_mut(2).pause();
    assert!(cluster.command(&["SET", &paused_key, "x"]).is_err());
    assert_eq!(cluster.command(&["SET", &other_key, "x"]).unwrap(), "+OK");
    cluster.node_mut(2).resume();
    assert_eq!(cluster.command(&["SET", &paused_key, "x"]).unwrap(), "+OK");
}

/// Binds `addr` and answers every read on every connection with `reply`, as some other
/// server that took a freed port would.
fn stranger_on(addr: SocketAddr, reply: &'static [u8]) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0; 4096];
                while let Ok(1..) = stream.read(&mut buffer) {
                    if stream.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

#[test]
fn commands_skip_down_nodes_and_never_reach_a_stranger_on_their_ports() {
    let Some(mut cluster) = RedisCluster::start(3) else {
        return;
    };
    let on_first = key_on(&cluster, 0);
    let on_second = key_on(&cluster, 1);
    let on_third = key_on(&cluster, 2);
    // Node 0, where commands start, and node 1 die; strangers take their ports.
    for index in [0, 1] {
        cluster.node_mut(index).kill();
        stranger_on(cluster.addrs()[index], b"+STRANGER\r\n");
    }
    // Node 2 alone is a minority: once the node timeout passes it answers CLUSTERDOWN, which
    // is its own answer, never the stranger's.
    let reply = cluster.command(&["SET", &on_third, "x"]).unwrap();
    assert!(
        reply == "+OK" || reply.starts_with("-CLUSTERDOWN"),
        "the command must start at a running node, got {reply}"
    );
    for key in [&on_first, &on_second] {
        match cluster.command(&["GET", key]) {
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::NotConnected, "{error}"),
            Ok(reply) => assert!(reply.starts_with("-CLUSTERDOWN"), "got {reply}"),
        }
    }
}
