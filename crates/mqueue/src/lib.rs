//! An embeddable durable queue that never loses an acknowledged message.
//!
//! - [`log`]: the storage: [`log::Log`], an append-only log of CRC-32C framed records in segment
//!   files, with an fsync policy ([`log::FsyncPolicy`]: `Always` with group commit, `Interval`,
//!   `Never`), pipelined appends acknowledged by ticket ([`log::Log::append_nowait`]),
//!   preallocated segments, crash recovery that cuts torn tails and refuses real corruption,
//!   retention by size and age, and a file layer ([`log::Storage`]) with a simulated disk that
//!   can lose power.
//! - [`stream`]: a topic of partition logs, keyed publishing (per-key order) and consumer groups
//!   with durably committed offsets (at-least-once).
//! - [`queue`]: the work queue: leases with visibility timeouts, acks, redelivery, dead letters.
//! - [`Error`]: the crate's one error type.
//! - feature `metrics`: appends, fsyncs, bytes and depth per log (and the queue's figures, and
//!   with `redis` the Redis queue's counters) through the `metrics` facade.
//! - feature `tokio`: async appends ([`log::Log::append_async`],
//!   [`log::AppendTicket::wait_async`], [`stream::Stream::publish_async`]), whose fsyncs and
//!   segment rolls run on tokio's blocking pool, never on the task's worker; and the work
//!   queue's `send_async` and `receive_async`, which wait on tokio's `Notify` instead of
//!   blocking a thread (a durable queue's `send_async` waits for its fsync on the blocking
//!   pool too).
//! - feature `redis`: [`redis::RedisQueue`], the same work-queue API over Redis Streams, one
//!   queue shared by many processes.
//!
//! ```
//! use infra_mqueue::log::{Log, LogOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), LogOptions::default())?; // fsync=Always
//! let offset = log.append(b"order 1 placed")?; // returns once on disk
//! assert_eq!(log.read(offset, 10)?[0].payload, b"order 1 placed");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// `unsafe_code` is denied workspace-wide; the one exception is `log::crc` handing short inputs
// to the CPU's CRC-32C instruction once it checked the CPU has it.

#[cfg(feature = "tokio")]
mod blocking;
mod error;
pub mod log;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod stream;

pub use error::Error;

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
