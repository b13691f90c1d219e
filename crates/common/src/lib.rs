//! What every infra-primitives crate shares, and nothing more.
//!
//! - [`sync`]: the one place that chooses between real and [loom] concurrency primitives.
//!   Build with `RUSTFLAGS="--cfg infra_loom"` and every crate that imports its atomics, locks
//!   and threads from here is model-checked unchanged.
//! - [`clock`]: time as a parameter. [`SystemClock`] for production, [`ManualClock`] for tests
//!   that must be deterministic and instant, [`CoarseClock`] for hot paths that accept a
//!   reading up to a millisecond old in exchange for one atomic load.
//! - [`hash`]: a stable 64-bit hash that is the same in every process, platform and release
//!   ([`stable_hash`]), and a randomly seeded, flooding-resistant [`RandomState`] for in-process
//!   maps keyed by untrusted input.
//! - [`prefetch`]: cache-line hints, so a lookup in a structure larger than the caches can ask
//!   for the lines it reads next all at once.
//! - `redis` (feature `redis`): the connection pool and script runner every Redis backend
//!   shares, so each gets reconnects, resends and `NOSCRIPT` right the same way.
//!
//! A new item belongs here only once two primitives need it.
//!
//! ```
//! use infra_common::{Clock, ManualClock, stable_hash};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let start = clock.now_nanos();
//! clock.advance(Duration::from_millis(5));
//! assert_eq!(clock.now_nanos() - start, 5_000_000);
//!
//! // The same bytes hash to the same value everywhere, forever.
//! assert_eq!(stable_hash(b"user:42"), stable_hash(b"user:42"));
//! ```
//!
//! [loom]: https://docs.rs/loom

pub mod clock;
pub mod hash;
pub mod prefetch;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sync;

pub use clock::{Clock, CoarseClock, ManualClock, SystemClock};
pub use hash::{RandomState, StableHash, StableHasher, stable_hash, stable_hash_u64};

// Compiles the README's examples as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
