//! Consistent hashing: place keys on nodes so that membership changes move as few keys as
//! possible.
//!
//! Six engines sit behind one [`Engine`] trait; a [`Placement`] holds node values and weights
//! over an engine, [`SharedPlacement`] shares one between threads with wait-free lookups, and
//! [`BoundedLoad`] caps every node's share of the keys currently assigned, keeping its loads
//! across membership changes (over a placement of its own, or over an existing
//! [`SharedPlacement`] whose changes it follows).
//!
//! | engine | lookup | weights | replicas (`get_n`) | disruption |
//! | --- | --- | --- | --- | --- |
//! | [`Ring`] | O(1) expected (direct index) | yes | walk clockwise | minimal |
//! | [`Rendezvous`] | O(n) | yes | natural top-k | minimal |
//! | [`Jump`] | O(log n) | no | salted re-hash | minimal at the end |
//! | [`Flip`] | O(1) expected | no | salted re-hash | minimal at the end |
//! | [`Maglev`] | O(1) | yes | walk the table | near-minimal |
//! | [`Memento`] | `n / working` draws expected (O(1) while few buckets are vacant), at most `max(64, √n)` + one per working bucket | no | salted re-hash | minimal |
//!
//! # Quick start
//!
//! ```
//! use infra_ring_hash::{Placement, Ring};
//!
//! let mut placement = Placement::new(Ring::new());
//! for node in ["cache-a", "cache-b", "cache-c"] {
//!     placement.add(node, 1)?;
//! }
//! let owner = placement.node("user:42").expect("three members");
//! let replicas = placement.get_n("user:42", 2); // two distinct nodes, owner first
//! assert_eq!(replicas[0], owner);
//!
//! // Adding a node only moves keys onto it.
//! let before: Vec<&str> = (0..1000).map(|k| *placement.node(&k).unwrap()).collect();
//! placement.add("cache-d", 1)?;
//! for (k, old) in before.iter().enumerate() {
//!     let new = *placement.node(&(k as i32)).unwrap();
//!     assert!(new == *old || new == "cache-d");
//! }
//! # Ok::<(), infra_ring_hash::Error>(())
//! ```
//!
//! Placements are reproducible: the same membership puts the same key on the same node in
//! every process, on every platform, in every release. Keys and nodes hash through
//! [`StableHash`](infra_common::hash::StableHash), an encoding this workspace defines (not std's
//! `Hash`); the exact functions are in [`hashing`], and the known-answer file
//! `vectors/placements.txt`, checked by the crate's tests, pins every engine's placements.
//!
//! # Features
//!
//! * `serde`: `Serialize`/`Deserialize` for [`Member`], [`Membership`], [`BucketLayout`],
//!   [`RingConfig`] and [`MaglevConfig`], so memberships can be loaded from a file.
//! * `ketama`: `Ketama`, the MD5 continuum of libketama and libmemcached's weighted ketama
//!   mode, checked against libmemcached's known answers.
//! * `metrics`: membership changes and bounded-load spill-overs through the `metrics`
//!   facade; names in the `metrics` module.

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod bounded;
mod engine;
mod error;
pub mod hashing;
#[cfg(feature = "ketama")]
mod ketama;
mod maglev;
mod memento;
#[cfg(feature = "metrics")]
pub mod metrics;
mod numbered;
mod placement;
mod reentry;
mod rendezvous;
mod ring;
mod shared;
mod snapshot;

pub use bounded::{BoundedLoad, Lease, MAX_CAPACITY_FACTOR};
pub use engine::{Disruption, Engine, MAX_NODES, Relocation};
pub use error::Error;
#[cfg(feature = "ketama")]
pub use ketama::{Ketama, MAX_KETAMA_SERVERS};
pub use maglev::{
    DEFAULT_ENTRIES_PER_NODE, DEFAULT_TABLE_SIZE, MAX_MAGLEV_WEIGHT_RATIO, MAX_TABLE_SIZE, Maglev,
    MaglevConfig,
};
pub use memento::{Bucket, BucketLayout, Memento};
pub use numbered::{
    Flip, FlipHash, Jump, JumpHash, NumberedBuckets, RangeHash, flip_hash, jump_hash,
};
pub use placement::{Member, Membership, Placement};
pub use rendezvous::Rendezvous;
pub use ring::{
    DEFAULT_POINTS_PER_WEIGHT, MAX_POINTS_PER_WEIGHT, MAX_RING_POINTS, Ring, RingConfig,
};
pub use shared::SharedPlacement;
pub use snapshot::SnapshotCell;
