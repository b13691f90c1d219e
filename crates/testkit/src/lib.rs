//! Real servers for the workspace's tests: `redis-server` and `etcd` on free loopback ports.
//!
//! Tests of the distributed backends run against the real engines, never a mock. Each
//! [`RedisServer`] or [`EtcdServer`] is a private process with its own temporary data directory,
//! listening on `127.0.0.1` only. It is stopped and its directory removed when the value is
//! dropped, also when the test panics. Fault tests can [`stop`](RedisServer::stop) and
//! [`restart`](RedisServer::restart) it on the same port and data, [`kill`](RedisServer::kill) it
//! as a crash would, and (on Unix) [`pause`](RedisServer::pause)/[`resume`](RedisServer::resume)
//! it (SIGSTOP/SIGCONT) to simulate a server that stops answering without closing connections.
//!
//! - [`RedisCluster`]: a Redis Cluster of several masters, slots split evenly.
//! - [`EtcdCluster`]: an etcd cluster of several members, with its leader found on request.
//! - [`FaultProxy`]: a TCP proxy in front of any server that adds latency, cuts connections
//!   or refuses new ones.
//! - [`LoopbackListener`]: a listener for a test's own stand-in server, on a port no server of
//!   the test binary holds.
//! - [`allocator`]: a counting global allocator, for tests that prove a path allocates nothing
//!   and benchmarks that measure the memory a structure holds.
//! - `metrics` (feature `metrics`): counters read back from a debugging `metrics` recorder.
//! - [`block_on`]: a future run to completion on the calling thread, sleeping on
//!   `infra_common::sync`'s condition variable (loom's under `--cfg infra_loom`).
//!
//! When the server binary is not installed, `start` prints one skip line and returns `None`, so
//! `cargo test --workspace` passes on a machine with only Rust. With `INFRA_REQUIRE_SERVERS=1`
//! (as in CI) a missing binary is a test failure instead.
//!
//! ```no_run
//! use infra_testkit::RedisServer;
//!
//! let Some(redis) = RedisServer::start() else { return };
//! assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
//! println!("connect to {}", redis.url());
//! ```

// Test infrastructure, not a shared-state primitive: it spawns and waits for real processes and
// sockets with std's threads and locks, outside the loom switch of `infra_common::sync`.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]

pub mod allocator;
mod block_on;
mod etcd;
mod etcd_cluster;
mod listener;
#[cfg(feature = "metrics")]
pub mod metrics;
mod orphans;
mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod server;

pub use block_on::block_on;
pub use etcd::{Etcd, EtcdServer};
pub use etcd_cluster::EtcdCluster;
pub use listener::LoopbackListener;
pub use proxy::FaultProxy;
pub use redis::{Redis, RedisServer};
pub use redis_cluster::RedisCluster;
pub use server::Server;

/// The environment variable that turns a missing server binary into a failure.
pub const REQUIRE_SERVERS_ENV: &str = "INFRA_REQUIRE_SERVERS";

// Compiles the README's examples as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
