//! Leased locks that stay safe when a holder pauses: every grant carries a fencing token.
//!
//! A holder that stalls (a GC pause, swap, a slow network) past its lease still believes it
//! holds the lock; a lock alone cannot stop its late write. Here every grant carries a
//! [`FencingToken`] that grows with each grant of the lock, and the protected resource checks
//! it with a [`Fence`], which refuses a token older than one it has already seen.
//!
//! - [`Locks`]: the one trait of every backend — `acquire`, `try_acquire`, `acquire_timeout`,
//!   `read` (read-write locks), `permit` (counting semaphores), `extend`, `release`, `is_held`,
//!   `wait_lost`; [`LockGuard`] releases on drop.
//! - [`MemoryLocks`]: the in-process backend: FIFO-fair, leases on an
//!   [`infra_common::Clock`], no busy waiting, no background thread.
//!   [`MemoryLocks::handle`] resolves a lock name once: a [`LockHandle`] takes and releases
//!   that lock without looking the name up again, and its [`HandleGuard`] keeps only the
//!   token and the lease.
//! - [`Grant`], [`FencingToken`], [`Access`], [`Wait`]: what a grant is and how to ask for one.
//! - [`Fence`]: the resource's check-and-advance of the highest token seen.
//! - `redis::RedisLocks` (feature `redis`): the same three kinds of lock, shared by many
//!   processes through one Redis, with tokens that keep growing across a Redis that lost its data.
//! - `redlock::Redlock` (feature `redis`): mutexes held on a majority of several independent
//!   Redis servers, with a second round that makes tokens grow across the servers.
//! - `etcd::EtcdLocks` (feature `etcd`): the same three kinds of lock through an etcd cluster,
//!   FIFO, with the lock key's create revision as the token; held locks and waiters ride out
//!   a leader change, a waiter for as long as its lease's TTL.
//! - `AsyncLocks`, `Watchdog` (feature `tokio`): any backend's calls from tokio tasks, and a
//!   task that renews a held lease, with a loss signal (`is_held`, `lost().await`) that reports
//!   every failed renewal.
//! - `metrics` (feature `metrics`): grants, waits, lease losses, renewal failures and stale
//!   tokens through the `metrics` facade.
//! - [`Error`]: the crate's one error type.
//!
//! ```
//! use infra_common::ManualClock;
//! use infra_dlock::{Fence, Locks, MemoryLocks};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new(); // SystemClock (MemoryLocks::new()) in production
//! let locks = MemoryLocks::with_clock(clock.clone());
//! let fence = Fence::new();
//!
//! let guard = locks.acquire("account-42", Duration::from_secs(10))?;
//! fence.admit("balance/42", "account-42", guard.token())?; // the store's check
//! guard.release()?;
//! # Ok::<(), infra_dlock::Error>(())
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "tokio")]
mod async_locks;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod fence;
mod grant;
mod locks;
mod memory;
#[cfg(any(feature = "redis", feature = "etcd"))]
mod metered;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redlock;
#[cfg(feature = "tokio")]
mod watchdog;

#[cfg(any(test, fuzzing))]
pub mod reference;

#[cfg(feature = "tokio")]
pub use async_locks::AsyncLocks;
pub use error::Error;
pub use fence::Fence;
pub use grant::{Access, FencingToken, Grant, MAX_LEASE, MAX_NAME_LEN, Wait};
pub use locks::{LockGuard, Locks};
pub use memory::{HandleGuard, LockHandle, MemoryLocks, QueuePlace};
#[cfg(feature = "tokio")]
pub use watchdog::{Loss, Renewal, Watchdog};

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
