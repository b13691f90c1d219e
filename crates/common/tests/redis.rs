//! The shared Redis pool and script runner against a real `redis-server`: `NOSCRIPT` falls back
//! to the source, a dead pooled connection is replaced, and a request is sent twice only when
//! its script says that is harmless.
#![cfg(all(feature = "redis", not(infra_loom)))]

use std::time::Duration;

use infra_common::redis::{Connections, Script};
use infra_testkit::RedisServer;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Adds one to a counter: running it twice counts twice, so it must not be resent.
const INCREMENT: &str = "return redis.call('INCR', KEYS[1])";
/// Sets a value: running it twice leaves the same state.
const SET: &str = "return redis.call('SET', KEYS[1], ARGV[1])";

fn counter(connections: &Connections) -> i64 {
    connections
        .run(true, |connection| {
            redis::cmd("GET").arg("counter").query(connection)
        })
        .unwrap()
}

/// A script call without arguments.
const NO_ARGS: [&str; 0] = [];

#[test]
fn a_flushed_script_is_sent_again_as_source_and_counted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let connections = Connections::open(&server.url(), TIMEOUT, 4).unwrap();
    let increment = Script::new(INCREMENT, false);

    // First call: the server has never seen the script, so EVALSHA then EVAL.
    let first: i64 = connections
        .script(&increment, &["counter"], &NO_ARGS)
        .unwrap();
    assert_eq!((first, increment.commands_sent()), (1, 2));
    // Loaded now: one command.
    let second: i64 = connections
        .script(&increment, &["counter"], &NO_ARGS)
        .unwrap();
    assert_eq!((second, increment.commands_sent()), (2, 3));

    assert_eq!(server.command(&["SCRIPT", "FLUSH"]).unwrap(), "+OK");
    let third: i64 = connections
        .script(&increment, &["counter"], &NO_ARGS)
        .unwrap();
    assert_eq!((third, increment.commands_sent()), (3, 5));
    assert_eq!(counter(&connections), 3);
}

#[test]
fn a_dead_pooled_connection_resends_only_what_is_harmless_twice() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let connections = Connections::open(&server.url(), TIMEOUT, 4).unwrap();
    let increment = Script::new(INCREMENT, false);
    let set = Script::new(SET, true);
    let _: i64 = connections
        .script(&increment, &["counter"], &NO_ARGS)
        .unwrap();

    // The restart closes the pooled connection while it is idle.
    server.restart().unwrap();
    let lost = connections.script::<i64>(&increment, &["counter"], &NO_ARGS);
    assert!(
        lost.is_err(),
        "a non-resendable request on a dead connection is not retried"
    );
    // The failure emptied the pool: the next call connects afresh and succeeds.
    let again: i64 = connections
        .script(&increment, &["counter"], &NO_ARGS)
        .unwrap();
    assert_eq!(again, 2);

    server.restart().unwrap();
    let reply: String = connections.script(&set, &["greeting"], "hello").unwrap();
    assert_eq!(
        reply, "OK",
        "a resendable request rides out the dead pooled connection"
    );
}

#[test]
fn the_pool_keeps_no_more_idle_connections_than_asked() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let connections = Connections::open(&server.url(), TIMEOUT, 1).unwrap();
    let ping = |connections: &Connections| -> String {
        connections
            .run(true, |connection| redis::cmd("PING").query(connection))
            .unwrap()
    };
    // Two requests at once need two connections; only one goes back to the pool.
    let outer: String = connections
        .run(true, |connection| {
            let inner = ping(&connections);
            let outer: String = redis::cmd("PING").query(connection)?;
            Ok(format!("{outer}{inner}"))
        })
        .unwrap();
    assert_eq!(outer, "PONGPONG");
    assert!(
        format!("{connections:?}").contains("idle: 1"),
        "{connections:?}"
    );
}
