//! What the Redis test files share: limiter options for tests, a plain connection for poking
//! the server, command counts, and a seeded sequence of numbers for schedules.
// Each test file uses its own subset.
#![allow(dead_code)]

use infra_ratelimit::redis::RedisOptions;
use std::time::Duration;

/// The default options with a timeout no loaded test machine reaches: a check that timed out
/// would get the failure policy's answer instead of Redis's, and the tests compare Redis's.
/// Tests of the timeout itself set their own.
pub(crate) fn options() -> RedisOptions {
    RedisOptions::default().timeout(Duration::from_secs(5))
}

/// A single-threaded runtime for a test that drives async limiters from a plain `#[test]`.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A plain blocking connection to `url`, for commands the limiter does not send.
pub(crate) fn admin(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .expect("the test server answers")
}

/// How many times the server at `url` ran `command` since its last `CONFIG RESETSTAT`,
/// commands run by scripts included (`INFO commandstats`).
pub(crate) fn calls(url: &str, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin(url))
        .expect("INFO answers");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"))
}

/// SplitMix64: the next number of the sequence `state` is at.
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
