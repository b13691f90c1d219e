//! `EtcdCluster` against the real `etcd`: a leader is found, writes survive its death, a new
//! one is elected, a killed member catches up, a paused follower does not stop the cluster.

use std::io;
use std::time::{Duration, Instant};

use infra_testkit::{EtcdCluster, EtcdServer};

/// Generous: an election on a loaded machine can take seconds.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// etcd's JSON gateway takes base64: "k1" = "azE=", "k2" = "azI=", "v1" = "djE=", "v2" = "djI=".
fn put(member: &EtcdServer, key: &str, value: &str) -> io::Result<()> {
    let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
    match member.http("POST", "/v3/kv/put", &body)? {
        (200, _) => Ok(()),
        (status, body) => Err(io::Error::other(format!("put: {status} {body}"))),
    }
}

fn get(member: &EtcdServer, key: &str) -> io::Result<String> {
    match member.http("POST", "/v3/kv/range", &format!(r#"{{"key":"{key}"}}"#))? {
        (200, body) => Ok(body),
        (status, body) => Err(io::Error::other(format!("range: {status} {body}"))),
    }
}

/// Retries `attempt` while the cluster recovers; returns its first success.
fn eventually<T>(mut attempt: impl FnMut() -> io::Result<T>) -> T {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(error) => assert!(Instant::now() < deadline, "gave up: {error}"),
        }
        #[allow(clippy::disallowed_methods)] // waiting for an election, not for time to pass
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_cluster_keeps_serving_writes_after_its_leader_is_killed() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(
        endpoints
            .iter()
            .all(|url| url.starts_with("http://127.0.0.1:"))
    );
    let old = cluster.leader().unwrap();
    put(&cluster.members()[old], "azE=", "djE=").unwrap();

    cluster.member_mut(old).kill();
    let new = cluster.leader().unwrap();
    assert_ne!(new, old, "a killed member cannot lead");
    eventually(|| put(&cluster.members()[new], "azI=", "djI="));
    let reader = (0..3).find(|&i| i != old && i != new).unwrap();
    let body = eventually(|| get(&cluster.members()[reader], "azE="));
    assert!(body.contains("djE="), "write before the kill lost: {body}");

    cluster.member_mut(old).restart().unwrap();
    let body = eventually(|| get(&cluster.members()[old], "azI="));
    assert!(
        body.contains("djI="),
        "the restarted member missed a write: {body}"
    );
}

#[cfg(unix)]
#[test]
fn a_paused_follower_does_not_stop_the_cluster() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let leader = cluster.leader().unwrap();
    let follower = (leader + 1) % 3;
    cluster.member_mut(follower).pause();
    eventually(|| put(&cluster.members()[leader], "azE=", "djE="));
    cluster.member_mut(follower).resume();
    let body = eventually(|| get(&cluster.members()[follower], "azE="));
    assert!(body.contains("djE="), "{body}");
}

#[test]
fn the_whole_cluster_restarted_on_its_data_keeps_its_writes() {
    let Some(mut cluster) = EtcdCluster::start(3) else {
        return;
    };
    let leader = cluster.leader().unwrap();
    eventually(|| put(&cluster.members()[leader], "azE=", "djE="));
    cluster.restart_all().unwrap();
    cluster.leader().unwrap();
    for member in cluster.members() {
        let body = eventually(|| get(member, "azE="));
        assert!(body.contains("djE="), "write lost in the restart: {body}");
    }
}
